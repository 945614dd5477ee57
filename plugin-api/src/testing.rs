//! Building blocks for a plugin's own unit tests, in plain Rust: a stage context, an input
//! block and an output buffer, without naming the ABI's types.
//!
//! ```ignore
//! use tapeline_plugin_api::testing::{audio_call, context, input, output};
//! let ctx = context(&[PortFormat { channels: 2, sample_rate: 48_000 }]);
//! let mut gain = MyGain::new(config, &ctx.get())?;
//! gain.process(&[input(&samples, 2)], &mut [output(&mut out, 2)])?;
//! // The same call, failing if it allocated, as the host's check in debug builds does:
//! audio_call("process", || gain.process(&[input(&samples, 2)], &mut [output(&mut out, 2)]))?;
//! ```
//!
//! Blocks take what a test needs to set on top: `input(..).with_position(4800)`,
//! `input(..).with_flags(FLAG_DISCONTINUITY)`, `output(..).with_frames(0)`.
//!
//! The library as the host sees it (its manifests, a config given as JSON text):
//! `export_plugin!` defines a hidden `__tapeline_library()` in the crate, a [`Library`].
//!
//! ```ignore
//! let ports = crate::__tapeline_library().layout("my-gain", r#"{"db": -6}"#, &ctx.get())?;
//! ```

use std::path::Path;

use abi_stable::std_types::{RSlice, RSliceMut, RStr};

use crate::abi::{
    ContextFields, ContextRef, InputBlock, OutputBlock, OutputPort, PluginError, PluginManifest,
    PortFormat,
};
use crate::export::{self, Entry};
use crate::sdk::{PluginResult, StageContext};

/// What a test's stage context is made of: stage `test`, 48 kHz, blocks of 480 frames, the
/// current folder as the pipeline's; the `with_` methods change each.
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
    pub fn get(&self) -> StageContext<'_> {
        StageContext::from_fields(ContextFields {
            stage_id: RStr::from_str(&self.id),
            sample_rate: self.sample_rate,
            block_frames: self.block_frames,
            base_dir: RStr::from_str(&self.base_dir),
            inputs: RSlice::from_slice(&self.inputs),
            #[cfg(tapeline_api_next)]
            host_tag: RStr::from_str("test"),
        })
    }

    /// The same context for the stage `id`.
    pub fn with_stage_id(mut self, id: &str) -> Self {
        self.id = id.to_string();
        self
    }

    /// The same context with `dir` as the pipeline file's folder (`""`: none, so
    /// `resolve` leaves relative paths as they are).
    ///
    /// # Panics
    ///
    /// If `dir` is not valid UTF-8 (the host passes the folder as text).
    pub fn with_base_dir(mut self, dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        self.base_dir = match dir.to_str() {
            Some(text) => text.to_string(),
            None => panic!("the base dir {} is not valid UTF-8", dir.display()),
        };
        self
    }

    /// The same context at the pipeline sample rate `rate`.
    pub fn with_sample_rate(mut self, rate: u32) -> Self {
        self.sample_rate = rate;
        self
    }

    /// The same context with blocks of `frames` frames.
    pub fn with_block_frames(mut self, frames: u32) -> Self {
        self.block_frames = frames;
        self
    }
}

/// An input block of interleaved `samples`, `channels` per frame, at position 0, no flags.
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

/// Run `f` as the host runs a call on the audio path (`read`, `process`, `finish`, `write`):
/// a panic becomes an error of kind `panicked`, and in debug builds of a crate that calls
/// `export_plugin!` the call fails if it allocated. `what` names the call in that error.
pub fn audio_call<T>(what: &str, f: impl FnOnce() -> PluginResult<T>) -> PluginResult<T> {
    export::guard_audio(what, f).into_result()
}

/// A plugin library as the host sees it: the plugins one `export_plugin!` lists, their
/// manifests, and their output ports for a config given as JSON text. `export_plugin!` makes
/// the crate's own as `__tapeline_library()`.
#[derive(Clone, Copy)]
pub struct Library {
    entries: &'static [Entry],
    version: &'static str,
}

impl Library {
    #[doc(hidden)]
    pub const fn new(entries: &'static [Entry], version: &'static str) -> Library {
        Library { entries, version }
    }

    /// The manifests of every plugin in the library, in `export_plugin!`'s order, as the host
    /// reads them (with the crate's version).
    pub fn manifests(&self) -> Vec<PluginManifest> {
        export::manifests(self.entries, self.version).into_vec()
    }

    /// The output ports plugin `name` declares for the config `json` (the JSON text the host
    /// sends: the stage's table without the host's keys) in context `ctx`, or its error.
    /// Validation only, as when the host checks a pipeline; a capture's or processor's
    /// `outputs`, a storage's `check` (no ports).
    pub fn layout(
        &self,
        name: &str,
        json: &str,
        ctx: &StageContext<'_>,
    ) -> Result<Vec<OutputPort>, PluginError> {
        export::layout(
            self.entries,
            name.into(),
            json.into(),
            ContextRef::new(ctx.fields()),
        )
        .into_result()
        .map(|ports| ports.into_vec())
    }
}
