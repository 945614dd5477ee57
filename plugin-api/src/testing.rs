//! Building blocks for a plugin's own unit tests, in plain Rust: a stage context, an input
//! block and an output buffer, without naming the ABI's types.
//!
//! ```ignore
//! use tapeline_plugin_api::testing::{context, input, output};
//! let ctx = context(&[PortFormat { channels: 2, sample_rate: 48_000 }]);
//! let mut gain = MyGain::new(config, &ctx.get())?;
//! gain.process(&[input(&samples, 2)], &mut [output(&mut out, 2)])?;
//! ```

use abi_stable::std_types::{RSlice, RSliceMut, RStr};

use crate::abi::{InputBlock, OutputBlock, PortFormat, StageContext};

/// What a test's stage context is made of: stage `test`, 48 kHz, blocks of 480 frames, the
/// current folder as the pipeline's.
pub struct Context {
    id: String,
    base_dir: String,
    inputs: Vec<PortFormat>,
    pub sample_rate: u32,
    pub block_frames: u32,
}

/// A context for a stage with these inputs.
pub fn context(inputs: &[PortFormat]) -> Context {
    Context {
        id: "test".into(),
        base_dir: ".".into(),
        inputs: inputs.to_vec(),
        sample_rate: 48_000,
        block_frames: 480,
    }
}

impl Context {
    /// The context, as `new`, `outputs` and `check` take it.
    // `into`: the test fixture that proves layout drift is caught builds this with a wider
    // `block_frames`.
    #[allow(clippy::useless_conversion)]
    pub fn get(&self) -> StageContext<'_> {
        StageContext {
            stage_id: RStr::from_str(&self.id),
            sample_rate: self.sample_rate,
            block_frames: self.block_frames.into(),
            base_dir: RStr::from_str(&self.base_dir),
            inputs: RSlice::from_slice(&self.inputs),
        }
    }
}

/// An input block of interleaved `samples`, `channels` per frame, at position 0.
pub fn input(samples: &[f32], channels: u32) -> InputBlock<'_> {
    InputBlock {
        samples: RSlice::from_slice(samples),
        frames: (samples.len() / channels.max(1) as usize) as u32,
        channels,
        position: 0,
        flags: 0,
    }
}

/// An output buffer over `samples`, `channels` per frame, `frames` preset to its capacity.
pub fn output(samples: &mut [f32], channels: u32) -> OutputBlock<'_> {
    let frames = (samples.len() / channels.max(1) as usize) as u32;
    OutputBlock {
        samples: RSliceMut::from_mut_slice(samples),
        frames,
        channels,
        position: 0,
        flags: 0,
    }
}
