//! `resample`: convert to another sample rate with rubato's windowed-sinc resampler.
//!
//! The only stage that changes the sample rate, and so the only one whose output blocks hold a
//! different number of frames than its input blocks.

use rubato::{
    calculate_cutoff, Resampler, SincFixedIn, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};
use tapeline_plugin_api::prelude::*;

use crate::routing::check_channels;

/// Taps of the windowed-sinc filter. With this window and table, a 1 kHz tone taken from 48 to
/// 44.1 kHz comes out with everything more than 50 Hz from it 134 dB down (see the tests).
const SINC_LEN: usize = 256;
/// Sinc table points between two input samples; cubic interpolation between them.
const OVERSAMPLING: usize = 256;
const WINDOW: WindowFunction = WindowFunction::BlackmanHarris2;
/// Output rates accepted, inclusive.
const RATES: (u32, u32) = (1_000, 768_000);

#[derive(Deserialize, JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct ResampleConfig {
    /// Output sample rate in Hz (e.g. 44100).
    pub rate: u32,
}

/// Converts its input to `rate` Hz (a pass-through when the input already runs at that rate).
///
/// Filter: 256-tap windowed sinc (Blackman-Harris²), 256× oversampled table with cubic
/// interpolation, cutoff from rubato's `calculate_cutoff` for that length and window, relative
/// to the lower of the two Nyquist frequencies.
///
/// Timing: output frame `j` lines up with input time `j * rate_in / rate_out` to within one
/// output frame. rubato's `SincFixedIn` already trims its filter delay from the start of the
/// stream (what it reports as `output_delay` is the tail it holds back, not a shift of the
/// signal); the stage drops the few frames by which its output would still lead the input when
/// upsampling (`ratio * (1 - 1/OVERSAMPLING) - 1`, rounded: 5 frames for 8 → 48 kHz, none for
/// 44.1 ↔ 48 kHz).
///
/// End of stream ([`Processor::finish`], called by the host once every input has ended): the
/// held-back tail is pushed out, so the output holds `ceil(frames_in * rate_out / rate_in)`
/// frames in all, and a later block starts a new stream. Block sizes may vary freely (behind a
/// device or another `resample`); a short block is just a short block.
pub struct Resample {
    engine: Option<Engine>,
    /// Output frames produced so far: the position of the next output block.
    position: u64,
}

impl Describe for Resample {
    type Config = ResampleConfig;
    const NAME: &'static str = "resample";
    const DESCRIPTION: &'static str =
        "Converts to another sample rate (256-tap windowed sinc, time-aligned)";
}

/// What a configuration on a given input works out to.
struct Plan {
    channels: usize,
    rate_in: u32,
    rate_out: u32,
    /// Most input frames handed to rubato in one call; larger blocks are cut into chunks.
    chunk: usize,
}

impl Plan {
    fn new(config: &ResampleConfig, ctx: &StageContext<'_>) -> PluginResult<Plan> {
        let input = single_input(ctx)?;
        if !(RATES.0..=RATES.1).contains(&config.rate) {
            return Err(PluginError::config(
                "rate",
                format!(
                    "must be between {} and {} Hz, got {}",
                    RATES.0, RATES.1, config.rate
                ),
            ));
        }
        if input.sample_rate == 0 {
            return Err(PluginError::format("the input has a sample rate of 0 Hz"));
        }
        let block_frames = ctx.block_frames().max(1) as usize;
        let chunk = if input.sample_rate == ctx.sample_rate() {
            // Blocks at the pipeline rate come in at most `block_frames` frames.
            block_frames
        } else {
            // Behind a source at its own rate or another `resample`: blocks vary in size around
            // the nominal one. Leave room for that variation and an upstream flushed tail.
            let nominal = (block_frames as u64 * u64::from(input.sample_rate))
                .div_ceil(u64::from(ctx.sample_rate().max(1))) as usize;
            (2 * nominal).max(block_frames) + SINC_LEN
        };
        Ok(Plan {
            channels: input.channels as usize,
            rate_in: input.sample_rate,
            rate_out: config.rate,
            chunk,
        })
    }

    fn passes_through(&self) -> bool {
        self.rate_in == self.rate_out
    }

    fn resampler(&self) -> PluginResult<SincFixedIn<f32>> {
        let params = SincInterpolationParameters {
            sinc_len: SINC_LEN,
            f_cutoff: calculate_cutoff(SINC_LEN, WINDOW),
            interpolation: SincInterpolationType::Cubic,
            oversampling_factor: OVERSAMPLING,
            window: WINDOW,
        };
        let ratio = f64::from(self.rate_out) / f64::from(self.rate_in);
        SincFixedIn::new(ratio, 1.0, params, self.chunk, self.channels).map_err(|e| {
            PluginError::config(
                "rate",
                format!(
                    "cannot resample from {} Hz to {} Hz: {e}",
                    self.rate_in, self.rate_out
                ),
            )
        })
    }

    /// Output frames by which rubato's output leads the input (see [`Resample`]), to drop.
    fn lead(&self) -> usize {
        let ratio = f64::from(self.rate_out) / f64::from(self.rate_in);
        (ratio * (1.0 - 1.0 / OVERSAMPLING as f64) - 1.0)
            .round()
            .max(0.0) as usize
    }

    /// Most frames one output block can carry: one chunk's worth (rubato's
    /// `output_frames_max`), or the held-back tail (rubato's `output_delay`) flushed at the end
    /// of the stream, whichever is more.
    fn max_frames(&self, resampler: &SincFixedIn<f32>) -> usize {
        resampler
            .output_frames_max()
            .max(resampler.output_delay() + 2)
    }
}

struct Engine {
    resampler: SincFixedIn<f32>,
    channels: usize,
    chunk: usize,
    rate_in: u64,
    rate_out: u64,
    /// Deinterleaved input, `chunk` frames per channel.
    in_bufs: Vec<Vec<f32>>,
    /// Deinterleaved output of one rubato call, `output_frames_max` frames per channel.
    out_bufs: Vec<Vec<f32>>,
    /// Output frames dropped from the start of each stream (see [`Plan::lead`]).
    lead: usize,
    /// Output frames still to drop.
    skip: usize,
    /// Frames in and out since the stream (re)started, for the length of the flushed tail.
    frames_in: u64,
    frames_out: u64,
    /// Bound on the zero chunks pushed through to flush the tail.
    max_flush_chunks: usize,
}

impl Processor for Resample {
    fn outputs(config: &ResampleConfig, ctx: &StageContext<'_>) -> PluginResult<Vec<OutputPort>> {
        let plan = Plan::new(config, ctx)?;
        let format = PortFormat {
            channels: plan.channels as u32,
            sample_rate: plan.rate_out,
        };
        if plan.passes_through() {
            return Ok(vec![OutputPort::new("out", format)]);
        }
        let max_frames = plan.max_frames(&plan.resampler()?);
        Ok(vec![
            OutputPort::new("out", format).with_max_frames(max_frames as u32)
        ])
    }

    fn new(config: ResampleConfig, ctx: &StageContext<'_>) -> PluginResult<Self> {
        let plan = Plan::new(&config, ctx)?;
        if plan.passes_through() {
            return Ok(Resample {
                engine: None,
                position: 0,
            });
        }
        let resampler = plan.resampler()?;
        let lead = plan.lead();
        let tail = resampler.output_delay();
        let out_chunk = (plan.chunk as f64 * f64::from(plan.rate_out) / f64::from(plan.rate_in))
            .floor()
            .max(1.0) as usize;
        let engine = Engine {
            in_bufs: vec![vec![0.0; plan.chunk]; plan.channels],
            out_bufs: resampler.output_buffer_allocate(true),
            resampler,
            channels: plan.channels,
            chunk: plan.chunk,
            rate_in: u64::from(plan.rate_in),
            rate_out: u64::from(plan.rate_out),
            lead,
            skip: lead,
            frames_in: 0,
            frames_out: 0,
            max_flush_chunks: (tail + 2).div_ceil(out_chunk) + 2,
        };
        Ok(Resample {
            engine: Some(engine),
            position: 0,
        })
    }

    fn process(
        &mut self,
        inputs: &[InputBlock<'_>],
        outputs: &mut [OutputBlock<'_>],
    ) -> PluginResult<()> {
        let input = &inputs[0];
        let out = &mut outputs[0];
        let Some(engine) = &mut self.engine else {
            out.set_frames(input.frames());
            out.samples_mut().copy_from_slice(input.samples());
            return Ok(());
        };
        check_channels(input, engine.channels)?;
        let written = engine.process(input, out.buffer_mut())?;
        out.set_frames(written as u32);
        out.set_position(self.position);
        self.position += written as u64;
        Ok(())
    }

    fn finish(&mut self, outputs: &mut [OutputBlock<'_>]) -> PluginResult<()> {
        let out = &mut outputs[0];
        let written = match &mut self.engine {
            Some(engine) => engine.flush(out.buffer_mut(), 0)?,
            None => 0,
        };
        out.set_frames(written as u32);
        out.set_position(self.position);
        self.position += written as u64;
        Ok(())
    }
}

impl Engine {
    /// Resample one input block into `dst` (interleaved, its whole capacity); returns the
    /// frames written.
    fn process(&mut self, input: &InputBlock<'_>, dst: &mut [f32]) -> PluginResult<usize> {
        let ch = self.channels;
        let mut written = 0;
        for chunk in input.samples().chunks(self.chunk * ch) {
            let frames = chunk.len() / ch;
            for (c, buf) in self.in_bufs.iter_mut().enumerate() {
                for (d, frame) in buf.iter_mut().zip(chunk.chunks_exact(ch)) {
                    *d = frame[c];
                }
            }
            written = self.run(frames, dst, written, u64::MAX)?;
            self.frames_in += frames as u64;
        }
        Ok(written)
    }

    /// End of stream: push zeros through until the output covers every input frame, then
    /// start afresh for a stream that might follow.
    fn flush(&mut self, dst: &mut [f32], mut written: usize) -> PluginResult<usize> {
        let expected = (self.frames_in * self.rate_out).div_ceil(self.rate_in);
        self.in_bufs.iter_mut().for_each(|b| b.fill(0.0));
        for _ in 0..self.max_flush_chunks {
            if self.frames_out >= expected {
                break;
            }
            written = self.run(self.chunk, dst, written, expected - self.frames_out)?;
        }
        self.resampler.reset();
        self.skip = self.lead;
        self.frames_in = 0;
        self.frames_out = 0;
        Ok(written)
    }

    /// Resample the first `frames` frames of `in_bufs` and append at most `limit` of the
    /// result (after the leading frames still to drop) to `dst` at frame `written`.
    fn run(
        &mut self,
        frames: usize,
        dst: &mut [f32],
        written: usize,
        limit: u64,
    ) -> PluginResult<usize> {
        self.resampler
            .set_chunk_size(frames)
            .map_err(|e| PluginError::other(format!("resample: {e}")))?;
        let (_, produced) = self
            .resampler
            .process_into_buffer(&self.in_bufs, &mut self.out_bufs, None)
            .map_err(|e| PluginError::other(format!("resample: {e}")))?;
        let skip = self.skip.min(produced);
        self.skip -= skip;
        let take = ((produced - skip) as u64).min(limit) as usize;
        let ch = self.channels;
        let capacity = dst.len() / ch;
        if written + take > capacity {
            return Err(PluginError::other(format!(
                "resample: the output block holds {capacity} frames, {} needed; the input \
                 block was larger than this stage was set up for",
                written + take
            )));
        }
        let dst = &mut dst[written * ch..(written + take) * ch];
        for (c, buf) in self.out_bufs.iter().enumerate() {
            for (d, s) in dst
                .iter_mut()
                .skip(c)
                .step_by(ch)
                .zip(&buf[skip..skip + take])
            {
                *d = *s;
            }
        }
        self.frames_out += take as u64;
        Ok(written + take)
    }
}
