//! `resample`: convert to another sample rate with rubato: its FFT resampler for a ratio of
//! whole rates that reduces to one of sensible size (all the usual ones), its windowed-sinc
//! resampler for the others.
//!
//! The only stage that changes the sample rate, and so the only one whose output blocks hold a
//! different number of frames than its input blocks.

use rubato::{
    calculate_cutoff, FftFixedInOut, Resampler, Sample, SincFixedIn, SincInterpolationParameters,
    SincInterpolationType, WindowFunction,
};
use tapeline_plugin_api::prelude::*;
use tapeline_plugin_api::serde::Serialize;

use crate::routing::check_channels;

/// Window of every filter: the sinc engine's and the one rubato's FFT resampler builds.
const WINDOW: WindowFunction = WindowFunction::BlackmanHarris2;
/// Sinc table points between two input samples (sinc engine).
const OVERSAMPLING: usize = 256;
/// Output rates accepted, inclusive.
const RATES: (u32, u32) = (1_000, 768_000);
/// Largest FFT unit, in frames at the higher of the two rates.
const MAX_FFT_UNIT: usize = 1 << 15;
/// Most calls the FFT engine takes to give out what it holds back at the end of a stream (the
/// host makes up to 64).
const TAIL_CALLS: usize = 48;
/// Frames by which a block from an FFT engine upstream can exceed the nominal size: its
/// tail, when nominal blocks would take more than [`TAIL_CALLS`].
const UPSTREAM_TAIL: usize = (3 * MAX_FFT_UNIT / 2).div_ceil(TAIL_CALLS);

/// How long a filter `resample` runs and how precisely: the trade between its latency, its
/// cost and how close to the Nyquist frequency its pass band reaches. Timing and length of the
/// output are the same for every setting. Figures for 48 → 44.1 kHz.
// Serialize lets the schema show the default.
#[derive(Deserialize, Serialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Quality {
    /// FFT units of at least 256 frames at the lower rate, in f32: flat to 20 kHz, -3 dB at
    /// 20.8 kHz, 139 dB down from 22.05 kHz on; 10 ms held back.
    Fast,
    /// FFT units of at least 1024 frames at the lower rate, in f32: flat to 21.5 kHz, -3 dB
    /// at 21.7 kHz, 139 dB down from 22.05 kHz on; 40 ms held back.
    #[default]
    Balanced,
    /// FFT units of at least 4096 frames at the lower rate, in f64: flat to 21.8 kHz, -3 dB
    /// at 21.9 kHz, 153 dB down from 22.05 kHz on; 140 ms held back.
    Best,
}

impl Quality {
    /// Frames that an FFT unit must reach at the lower of the two rates: the length of its
    /// filter there.
    fn fft_frames(self) -> usize {
        match self {
            Quality::Fast => 256,
            Quality::Balanced => 1024,
            Quality::Best => 4096,
        }
    }

    /// Whether the engine computes in `f64` rather than `f32`: in `f32` the FFT engine's
    /// rounding leaves everything away from a 1 kHz tone about 135 dB down, in `f64` it does
    /// not show above the `f32` output's own (151 dB down).
    fn double(self) -> bool {
        self == Quality::Best
    }

    /// Taps and interpolation of the sinc engine.
    fn sinc(self) -> (usize, SincInterpolationType) {
        match self {
            Quality::Fast => (128, SincInterpolationType::Linear),
            Quality::Balanced => (256, SincInterpolationType::Cubic),
            Quality::Best => (512, SincInterpolationType::Cubic),
        }
    }
}

#[derive(Deserialize, JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct ResampleConfig {
    /// Output sample rate in Hz (e.g. 44100).
    pub rate: u32,
    /// Filter quality: "fast", "balanced" or "best". A longer filter reaches closer to the
    /// Nyquist frequency and holds more back; "best" also computes in f64. Timing and length
    /// of the output are the same for all three.
    #[serde(default)]
    pub quality: Quality,
}

/// Converts its input to `rate` Hz (a pass-through when the input already runs at that rate).
///
/// FFT engine (rubato's `FftFixedInOut`), for a ratio whose reduced form `p:q` (`rate_in /
/// gcd : rate_out / gcd`) allows units of sensible size: a unit is `k·p` frames in and `k·q`
/// out, `k` the smallest even number that gives at least the quality's length at the lower
/// rate (256, 1024 or 4096 frames: 294 → 320, 1176 → 1280 and 4116 → 4480 for 44.1 → 48
/// kHz). Each unit is transformed, multiplied by the filter's spectrum, cut or padded to the
/// new length and transformed back, overlapping the next by as much. The filter is a windowed
/// sinc (Blackman-Harris²) as long as the unit at the input rate, cut off by rubato's
/// `calculate_cutoff` for the unit's length at the lower rate, relative to the lower Nyquist
/// frequency. It computes in `f32` (fast, balanced: a 1 kHz tone comes out with everything
/// more than 50 Hz from it 135 dB down, the rounding of the transforms) or `f64` (best: 151
/// dB down, the rounding of the `f32` output).
///
/// Sinc engine (rubato's `SincFixedIn`), when that unit would be more than four times the
/// quality's length at the lower rate or more than 32768 frames at the higher one (44100 →
/// 44101 Hz: `p:q` = 44100:44101), so that no unit is absurdly long or late: a windowed sinc
/// (Blackman-Harris²) of 128 taps with linear interpolation (fast), 256 with cubic
/// (balanced) or 512 with cubic in `f64` (best) between the points of a table 256×
/// oversampled, cut off by `calculate_cutoff` for its length.
///
/// Timing: output frame `j` lines up with input time `j * rate_in / rate_out` to within one
/// output frame. The FFT engine's filter delays its output by half a unit (`k·q / 2` output
/// frames exactly, `k` being even), which the stage drops from the start of each stream.
/// rubato's `SincFixedIn` already trims its filter delay from the start of the stream (what it
/// reports as `output_delay` is the tail it holds back, not a shift of the signal); the stage
/// drops the few frames by which its output would still lead the input when upsampling
/// (`ratio * (1 - 1/256) - 1`, rounded: 5 frames for 8 → 48 kHz).
///
/// Blocks: the sinc engine gives out about `ratio` times the frames of each block. So does
/// the FFT engine, from a unit and a half it holds back (its latency: 1920 frames, 40 ms, for
/// 44.1 → 48 kHz at `balanced`), so that its blocks do not come in bursts of units.
///
/// End of stream ([`Processor::finish`], called by the host once every input has ended, and
/// again while it writes): the held-back tail is pushed out (by the FFT engine in blocks of
/// the nominal size, over several calls), so the output holds `ceil(frames_in * rate_out /
/// rate_in)` frames in all, and a later block starts a new stream. Block sizes may vary freely (behind a
/// device or another `resample`); a short block is just a short block.
pub struct Resample {
    engine: Option<Box<dyn Stream>>,
    /// Output frames produced so far: the position of the next output block.
    position: u64,
}

impl Describe for Resample {
    type Config = ResampleConfig;
    const NAME: &'static str = "resample";
    const DESCRIPTION: &'static str =
        "Converts to another sample rate (FFT or windowed sinc; fast, balanced, best; time-aligned)";
}

/// A resampling stream, whatever its engine.
trait Stream: Send {
    /// Resample one input block into `dst` (interleaved, its whole capacity); returns the
    /// frames written.
    fn process(&mut self, input: &InputBlock<'_>, dst: &mut [f32]) -> PluginResult<usize>;
    /// End of stream: write the rest into `dst`, then start afresh for a stream that might
    /// follow; returns the frames written.
    fn flush(&mut self, dst: &mut [f32]) -> PluginResult<usize>;
    /// Most frames one output block can carry.
    fn max_frames(&self) -> usize;
}

/// What a configuration on a given input works out to.
struct Plan {
    channels: usize,
    rate_in: u32,
    rate_out: u32,
    quality: Quality,
    /// Input frames of a block of the nominal size (`block_frames` at the pipeline's rate).
    nominal: usize,
    /// Most input frames in one block: the sinc engine cuts larger blocks into chunks, and
    /// the output port has room for what this many give.
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
        let nominal = (block_frames as u64 * u64::from(input.sample_rate))
            .div_ceil(u64::from(ctx.sample_rate().max(1))) as usize;
        let chunk = if input.sample_rate == ctx.sample_rate() {
            // Blocks at the pipeline rate come in at most `block_frames` frames (one more
            // from another `resample`, rounding), or an upstream FFT engine's tail blocks.
            block_frames.max(UPSTREAM_TAIL) + 1
        } else {
            // Behind a source at its own rate or another `resample`: blocks vary in size around
            // the nominal one. Leave room for that variation and an upstream flushed tail.
            (2 * nominal).max(block_frames) + UPSTREAM_TAIL
        };
        Ok(Plan {
            channels: input.channels as usize,
            rate_in: input.sample_rate,
            rate_out: config.rate,
            quality: config.quality,
            nominal,
            chunk,
        })
    }

    fn passes_through(&self) -> bool {
        self.rate_in == self.rate_out
    }

    fn engine(&self) -> PluginResult<Box<dyn Stream>> {
        let unit = fft_unit(self.rate_in, self.rate_out, self.quality);
        Ok(match (unit, self.quality.double()) {
            (Some(unit), false) => Box::new(FftEngine::<f32>::new(self, unit)?),
            (Some(unit), true) => Box::new(FftEngine::<f64>::new(self, unit)?),
            (None, false) => Box::new(SincEngine::<f32>::new(self)?),
            (None, true) => Box::new(SincEngine::<f64>::new(self)?),
        })
    }

    fn rate_error(&self, e: impl std::fmt::Display) -> PluginError {
        PluginError::config(
            "rate",
            format!(
                "cannot resample from {} Hz to {} Hz: {e}",
                self.rate_in, self.rate_out
            ),
        )
    }
}

/// Greatest common divisor.
fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Frames in and out of the FFT engine's unit for this ratio and quality, or `None` when the
/// ratio is too fine for it (see [`Resample`]).
pub(crate) fn fft_unit(rate_in: u32, rate_out: u32, quality: Quality) -> Option<(usize, usize)> {
    let g = gcd(u64::from(rate_in), u64::from(rate_out));
    let (p, q) = (
        (u64::from(rate_in) / g) as usize,
        (u64::from(rate_out) / g) as usize,
    );
    let target = quality.fft_frames();
    // Even, so that the unit's delay (half of it) is a whole number of frames on both sides.
    let k = target.div_ceil(p.min(q)).next_multiple_of(2);
    let (unit_in, unit_out) = (k * p, k * q);
    let fits = unit_in.min(unit_out) <= 4 * target && unit_in.max(unit_out) <= MAX_FFT_UNIT;
    fits.then_some((unit_in, unit_out))
}

fn rubato_error(e: impl std::fmt::Display) -> PluginError {
    PluginError::other(format!("resample: {e}"))
}

/// The error of an output block too small for what is due.
fn overflow(capacity: usize, needed: usize) -> PluginError {
    PluginError::other(format!(
        "resample: the output block holds {capacity} frames, {needed} needed; the input block \
         was larger than this stage was set up for"
    ))
}

/// A sample type an engine can compute in: one of rubato's, with conversions from and to the
/// pipeline's `f32`.
trait Float: Sample + Default {
    fn widen(v: f32) -> Self;
    fn narrow(self) -> f32;
}

impl Float for f32 {
    fn widen(v: f32) -> Self {
        v
    }
    fn narrow(self) -> f32 {
        self
    }
}

impl Float for f64 {
    fn widen(v: f32) -> Self {
        f64::from(v)
    }
    fn narrow(self) -> f32 {
        self as f32
    }
}

/// Copy interleaved `src` into the channels of `dst` from frame `at` on.
fn deinterleave<T: Float>(src: &[f32], dst: &mut [Vec<T>], at: usize) {
    match dst {
        [mono] => {
            for (d, s) in mono[at..].iter_mut().zip(src) {
                *d = T::widen(*s);
            }
        }
        [left, right] => {
            let pairs = left[at..].iter_mut().zip(&mut right[at..]);
            for ((l, r), s) in pairs.zip(src.chunks_exact(2)) {
                (*l, *r) = (T::widen(s[0]), T::widen(s[1]));
            }
        }
        _ => {
            let ch = dst.len();
            for (c, buf) in dst.iter_mut().enumerate() {
                for (d, s) in buf[at..].iter_mut().zip(src.iter().skip(c).step_by(ch)) {
                    *d = T::widen(*s);
                }
            }
        }
    }
}

/// Fill interleaved `dst` from the channels of `src`, from frame `from` on.
fn interleave<T: Float>(src: &[Vec<T>], from: usize, dst: &mut [f32]) {
    match src {
        [mono] => {
            for (d, s) in dst.iter_mut().zip(&mono[from..]) {
                *d = s.narrow();
            }
        }
        [left, right] => {
            let pairs = left[from..].iter().zip(&right[from..]);
            for (d, (l, r)) in dst.chunks_exact_mut(2).zip(pairs) {
                (d[0], d[1]) = (l.narrow(), r.narrow());
            }
        }
        _ => {
            let ch = src.len();
            for (c, buf) in src.iter().enumerate() {
                for (d, s) in dst.iter_mut().skip(c).step_by(ch).zip(&buf[from..]) {
                    *d = s.narrow();
                }
            }
        }
    }
}

/// rubato's FFT resampler, a unit at a time, its output given out evenly.
struct FftEngine<T: Float> {
    resampler: FftFixedInOut<T>,
    channels: usize,
    /// Reduced ratio `p:q`, and frames in and out of one unit (`k·p`, `k·q`).
    p: u64,
    q: u64,
    unit_in: usize,
    unit_out: usize,
    /// The unit being gathered, deinterleaved; `filled` frames of it so far.
    input: Vec<Vec<T>>,
    filled: usize,
    /// rubato's output for the last two units, deinterleaved; `newest` is the last one's.
    outputs: [Vec<Vec<T>>; 2],
    newest: usize,
    /// Output frames not given out yet: the last `pending` frames of the two units, oldest
    /// first (never more than a unit before a unit is run, so the older buffer is free).
    pending: usize,
    /// Output frames dropped from the start of each stream: the filter's delay, half a unit.
    lead: usize,
    /// No unit run yet in this stream.
    fresh: bool,
    /// Output frames held back: after `n` input frames, `n * q / p - hold` output frames are
    /// due. A unit and a half, so that what is due has always been computed.
    hold: u64,
    /// Frames in and out since the stream (re)started.
    frames_in: u64,
    frames_out: u64,
    /// Most frames given out by one call at the end of the stream.
    tail_block: usize,
    /// Most frames given out by any call.
    max_frames: usize,
}

impl<T: Float> FftEngine<T> {
    fn new(plan: &Plan, (unit_in, unit_out): (usize, usize)) -> PluginResult<Self> {
        let resampler = FftFixedInOut::<T>::new(
            plan.rate_in as usize,
            plan.rate_out as usize,
            unit_in,
            plan.channels,
        )
        .map_err(|e| plan.rate_error(e))?;
        if resampler.input_frames_max() != unit_in || resampler.output_frames_max() != unit_out {
            return Err(rubato_error(format!(
                "FFT units of {} → {} frames, not {unit_in} → {unit_out}",
                resampler.input_frames_max(),
                resampler.output_frames_max()
            )));
        }
        let g = gcd(u64::from(plan.rate_in), u64::from(plan.rate_out));
        let (p, q) = (u64::from(plan.rate_in) / g, u64::from(plan.rate_out) / g);
        let lead = unit_out / 2;
        let hold = (unit_out + lead) as u64;
        // A block gives out what its frames are worth (a frame of slack for rounding). What is
        // held back goes out at the end of the stream in blocks of the nominal size, unless
        // that would take more than `TAIL_CALLS` calls.
        let per_block = (plan.chunk as u64 * q).div_ceil(p) as usize + 1;
        let nominal_out = (plan.nominal as u64 * q).div_ceil(p) as usize;
        let tail_block = nominal_out.max((hold as usize + 1).div_ceil(TAIL_CALLS));
        Ok(FftEngine {
            outputs: [
                resampler.output_buffer_allocate(true),
                resampler.output_buffer_allocate(true),
            ],
            resampler,
            channels: plan.channels,
            p,
            q,
            unit_in,
            unit_out,
            input: vec![vec![T::default(); unit_in]; plan.channels],
            filled: 0,
            newest: 0,
            pending: 0,
            lead,
            fresh: true,
            hold,
            frames_in: 0,
            frames_out: 0,
            tail_block,
            max_frames: per_block.max(tail_block),
        })
    }

    /// Resample the gathered unit into the older output buffer.
    fn run(&mut self) -> PluginResult<()> {
        if self.pending > self.unit_out {
            return Err(rubato_error("output not given out would be overwritten"));
        }
        let target = 1 - self.newest;
        self.resampler
            .process_into_buffer(&self.input, &mut self.outputs[target], None)
            .map_err(rubato_error)?;
        self.newest = target;
        self.filled = 0;
        // The first unit of a stream starts with the filter's delay, which is dropped.
        self.pending += if self.fresh {
            self.unit_out - self.lead
        } else {
            self.unit_out
        };
        self.fresh = false;
        Ok(())
    }

    /// Give out pending frames into `dst` at frame `written` until `upto` frames have gone
    /// out since the stream began (or none is left); returns the frames in `dst` after it.
    fn give(&mut self, dst: &mut [f32], written: usize, upto: u64) -> PluginResult<usize> {
        let n = upto
            .saturating_sub(self.frames_out)
            .min(self.pending as u64) as usize;
        let ch = self.channels;
        let room = dst.len() / ch;
        if written + n > room {
            return Err(overflow(room, written + n));
        }
        let mut at = written;
        let mut left = n;
        while left > 0 {
            let (buf, from) = if self.pending > self.unit_out {
                (
                    &self.outputs[1 - self.newest],
                    2 * self.unit_out - self.pending,
                )
            } else {
                (&self.outputs[self.newest], self.unit_out - self.pending)
            };
            let run = left.min(self.unit_out - from);
            interleave(buf, from, &mut dst[at * ch..(at + run) * ch]);
            self.pending -= run;
            at += run;
            left -= run;
        }
        self.frames_out += n as u64;
        Ok(written + n)
    }

    /// Output frames due after `frames_in` input frames.
    fn due(&self) -> u64 {
        (self.frames_in * self.q / self.p).saturating_sub(self.hold)
    }
}

impl<T: Float> Stream for FftEngine<T>
where
    FftFixedInOut<T>: Send,
{
    fn process(&mut self, input: &InputBlock<'_>, dst: &mut [f32]) -> PluginResult<usize> {
        check_channels(input, self.channels)?;
        let ch = self.channels;
        let mut samples = input.samples();
        let mut written = 0;
        while !samples.is_empty() {
            let frames = (self.unit_in - self.filled).min(samples.len() / ch);
            let (head, rest) = samples.split_at(frames * ch);
            deinterleave(head, &mut self.input, self.filled);
            samples = rest;
            self.filled += frames;
            self.frames_in += frames as u64;
            if self.filled == self.unit_in {
                self.run()?;
                written = self.give(dst, written, self.due())?;
            }
        }
        self.give(dst, written, self.due())
    }

    /// A block at most per call (`tail_block` frames): what is held back can be longer than
    /// blocks behind this stage should get.
    fn flush(&mut self, dst: &mut [f32]) -> PluginResult<usize> {
        let expected = (self.frames_in * self.q).div_ceil(self.p);
        let upto = expected.min(self.frames_out + self.tail_block as u64);
        let mut written = self.give(dst, 0, upto)?;
        // What was left of the input, then the filter's delay: two units at most.
        for _ in 0..2 {
            if self.frames_out >= upto {
                break;
            }
            // Nothing is pending: give() stopped short.
            for buf in &mut self.input {
                buf[self.filled..].fill(T::default());
            }
            self.run()?;
            written = self.give(dst, written, upto)?;
        }
        if self.frames_out >= expected {
            self.resampler.reset();
            self.filled = 0;
            self.pending = 0;
            self.fresh = true;
            self.frames_in = 0;
            self.frames_out = 0;
        }
        Ok(written)
    }

    fn max_frames(&self) -> usize {
        self.max_frames
    }
}

/// rubato's windowed-sinc resampler, a chunk at a time.
struct SincEngine<T: Float> {
    resampler: SincFixedIn<T>,
    channels: usize,
    chunk: usize,
    rate_in: u64,
    rate_out: u64,
    /// Deinterleaved input, `chunk` frames per channel.
    in_bufs: Vec<Vec<T>>,
    /// Deinterleaved output of one rubato call, `output_frames_max` frames per channel.
    out_bufs: Vec<Vec<T>>,
    /// Output frames dropped from the start of each stream (see [`Resample`]).
    lead: usize,
    /// Output frames still to drop.
    skip: usize,
    /// Frames in and out since the stream (re)started, for the length of the flushed tail.
    frames_in: u64,
    frames_out: u64,
    /// Bound on the zero chunks pushed through to flush the tail.
    max_flush_chunks: usize,
    max_frames: usize,
}

impl<T: Float> SincEngine<T> {
    fn new(plan: &Plan) -> PluginResult<Self> {
        let (sinc_len, interpolation) = plan.quality.sinc();
        let params = SincInterpolationParameters {
            sinc_len,
            f_cutoff: calculate_cutoff(sinc_len, WINDOW),
            interpolation,
            oversampling_factor: OVERSAMPLING,
            window: WINDOW,
        };
        let ratio = f64::from(plan.rate_out) / f64::from(plan.rate_in);
        let resampler = SincFixedIn::new(ratio, 1.0, params, plan.chunk, plan.channels)
            .map_err(|e| plan.rate_error(e))?;
        // Output frames by which rubato's output leads the input (see [`Resample`]).
        let lead = (ratio * (1.0 - 1.0 / OVERSAMPLING as f64) - 1.0)
            .round()
            .max(0.0) as usize;
        let tail = resampler.output_delay();
        let out_chunk = (plan.chunk as f64 * ratio).floor().max(1.0) as usize;
        Ok(SincEngine {
            in_bufs: vec![vec![T::default(); plan.chunk]; plan.channels],
            out_bufs: resampler.output_buffer_allocate(true),
            // One chunk's worth (rubato's `output_frames_max`), or the held-back tail flushed
            // at the end of the stream, whichever is more.
            max_frames: resampler.output_frames_max().max(tail + 2),
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
        })
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
            .map_err(rubato_error)?;
        let (_, produced) = self
            .resampler
            .process_into_buffer(&self.in_bufs, &mut self.out_bufs, None)
            .map_err(rubato_error)?;
        let skip = self.skip.min(produced);
        self.skip -= skip;
        let take = ((produced - skip) as u64).min(limit) as usize;
        let ch = self.channels;
        let capacity = dst.len() / ch;
        if written + take > capacity {
            return Err(overflow(capacity, written + take));
        }
        interleave(
            &self.out_bufs,
            skip,
            &mut dst[written * ch..(written + take) * ch],
        );
        self.frames_out += take as u64;
        Ok(written + take)
    }
}

impl<T: Float> Stream for SincEngine<T>
where
    SincFixedIn<T>: Send,
{
    fn process(&mut self, input: &InputBlock<'_>, dst: &mut [f32]) -> PluginResult<usize> {
        check_channels(input, self.channels)?;
        let ch = self.channels;
        let mut written = 0;
        for chunk in input.samples().chunks(self.chunk * ch) {
            let frames = chunk.len() / ch;
            deinterleave(chunk, &mut self.in_bufs, 0);
            written = self.run(frames, dst, written, u64::MAX)?;
            self.frames_in += frames as u64;
        }
        Ok(written)
    }

    /// Push zeros through until the output covers every input frame.
    fn flush(&mut self, dst: &mut [f32]) -> PluginResult<usize> {
        let expected = (self.frames_in * self.rate_out).div_ceil(self.rate_in);
        self.in_bufs.iter_mut().for_each(|b| b.fill(T::default()));
        let mut written = 0;
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

    fn max_frames(&self) -> usize {
        self.max_frames
    }
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
        let max_frames = plan.engine()?.max_frames();
        Ok(vec![
            OutputPort::new("out", format).with_max_frames(max_frames as u32)
        ])
    }

    fn new(config: ResampleConfig, ctx: &StageContext<'_>) -> PluginResult<Self> {
        let plan = Plan::new(&config, ctx)?;
        let engine = if plan.passes_through() {
            None
        } else {
            Some(plan.engine()?)
        };
        Ok(Resample {
            engine,
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
        let written = engine.process(input, out.buffer_mut())?;
        out.set_frames(written as u32);
        out.set_position(self.position);
        self.position += written as u64;
        Ok(())
    }

    fn finish(&mut self, outputs: &mut [OutputBlock<'_>]) -> PluginResult<()> {
        let out = &mut outputs[0];
        let written = match &mut self.engine {
            Some(engine) => engine.flush(out.buffer_mut())?,
            None => 0,
        };
        out.set_frames(written as u32);
        out.set_position(self.position);
        self.position += written as u64;
        Ok(())
    }
}
