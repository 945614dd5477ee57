//! `meter`: pass audio through untouched and measure it.

use tapeline_plugin_api::prelude::*;

use crate::routing::check_channels;

/// Longest RMS window accepted, in milliseconds.
const MAX_WINDOW_MS: f64 = 60_000.0;

#[derive(Deserialize, JsonSchema, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct MeterConfig {
    /// Length of the RMS window in milliseconds (a sliding window ending at each block's last
    /// frame). Leave out to measure RMS over each block alone.
    #[serde(default)]
    pub window_ms: Option<f64>,
}

/// Copies its input to its output bit for bit and reports, per channel, the peak and the RMS of
/// the last block, or with `window_ms` of the last window, both in dBFS: a full-scale square
/// wave reads 0 dB RMS, a full-scale sine -3.01 dB. Both cover the same audio, so the RMS never
/// reads above the peak. (The window's peak may also cover up to 1/64 of a window before it:
/// it is kept per 1/64 of the window, so that no block costs more than a block's work.)
pub struct Meter {
    channels: usize,
    levels: Vec<Level>,
    window: Option<Window>,
    /// Per-block sums of squares, per channel (used without a window).
    block_sums: Vec<f64>,
}

/// Chunks the window's peak is kept in, at most.
const PEAK_CHUNKS: usize = 64;

/// Sliding sum of squares and peak over the last `len` frames.
struct Window {
    len: usize,
    /// Squares of the last `len` frames, interleaved, as a ring.
    ring: Vec<f64>,
    pos: usize,
    filled: usize,
    sums: Vec<f64>,
    /// Frames per peak chunk; the chunks tile the ring.
    chunk: usize,
    /// Per chunk and channel (interleaved), the largest |x| written there in the ring's
    /// current lap (for a chunk not reached yet in this lap: the lap before, still in the
    /// window).
    chunk_peaks: Vec<f32>,
    /// Per channel, the largest |x| the current chunk held in the lap before: partly still in
    /// the window (the positions not yet overwritten).
    overwritten_peaks: Vec<f32>,
}

impl Window {
    fn new(len: usize, channels: usize) -> Window {
        let chunk = len.div_ceil(PEAK_CHUNKS).max(1);
        Window {
            len,
            ring: vec![0.0; len * channels],
            pos: 0,
            filled: 0,
            sums: vec![0.0; channels],
            chunk,
            chunk_peaks: vec![0.0; len.div_ceil(chunk) * channels],
            overwritten_peaks: vec![0.0; channels],
        }
    }

    fn push(&mut self, frame: &[f32]) {
        let ch = self.sums.len();
        let k = self.pos / self.chunk;
        let peaks = &mut self.chunk_peaks[k * ch..(k + 1) * ch];
        if self.pos % self.chunk == 0 {
            // A new lap over this chunk: what it held moves out of the window frame by frame.
            self.overwritten_peaks.copy_from_slice(peaks);
            peaks.iter_mut().for_each(|p| *p = 0.0);
        }
        for (p, x) in peaks.iter_mut().zip(frame) {
            *p = p.max(x.abs());
        }
        let slot = &mut self.ring[self.pos * ch..(self.pos + 1) * ch];
        for ((old, sum), x) in slot.iter_mut().zip(&mut self.sums).zip(frame) {
            let sq = f64::from(*x) * f64::from(*x);
            *sum += sq - *old;
            *old = sq;
        }
        self.pos += 1;
        self.filled = (self.filled + 1).min(self.len);
        if self.pos == self.len {
            self.pos = 0;
            // Recompute exactly once per window length so rounding errors do not accumulate.
            self.sums.iter_mut().for_each(|s| *s = 0.0);
            for f in self.ring.chunks_exact(ch) {
                for (s, sq) in self.sums.iter_mut().zip(f) {
                    *s += sq;
                }
            }
        }
    }

    /// The peak of channel `c` over the window (and at most one chunk before it).
    fn peak(&self, c: usize) -> f32 {
        let ch = self.sums.len();
        self.chunk_peaks
            .iter()
            .skip(c)
            .step_by(ch)
            .fold(self.overwritten_peaks[c], |m, p| m.max(*p))
    }
}

impl Describe for Meter {
    type Config = MeterConfig;
    const NAME: &'static str = "meter";
    const DESCRIPTION: &'static str =
        "Passes audio through unchanged and reports peak and RMS per channel in dBFS";
}

impl Processor for Meter {
    fn outputs(config: &MeterConfig, ctx: &StageContext<'_>) -> PluginResult<Vec<OutputPort>> {
        let input = single_input(ctx)?;
        window_frames(config, input.sample_rate)?;
        Ok(vec![OutputPort::new("out", input)])
    }

    fn new(config: MeterConfig, ctx: &StageContext<'_>) -> PluginResult<Self> {
        let input = single_input(ctx)?;
        let channels = input.channels as usize;
        let window =
            window_frames(&config, input.sample_rate)?.map(|len| Window::new(len, channels));
        let silent = Level {
            peak_db: gain_to_db(0.0),
            rms_db: gain_to_db(0.0),
        };
        Ok(Meter {
            channels,
            levels: vec![silent; channels],
            window,
            block_sums: vec![0.0; channels],
        })
    }

    fn process(
        &mut self,
        inputs: &[InputBlock<'_>],
        outputs: &mut [OutputBlock<'_>],
    ) -> PluginResult<()> {
        let input = &inputs[0];
        check_channels(input, self.channels)?;
        let out = &mut outputs[0];
        out.set_frames(input.frames());
        let src = input.samples();
        out.samples_mut().copy_from_slice(src);
        if input.frames() == 0 {
            return Ok(());
        }
        let ch = self.channels;
        match &mut self.window {
            Some(w) => {
                for frame in src.chunks_exact(ch) {
                    w.push(frame);
                }
                for (c, (level, sum)) in self.levels.iter_mut().zip(&w.sums).enumerate() {
                    level.peak_db = gain_to_db(w.peak(c));
                    level.rms_db = rms_db(*sum, w.filled);
                }
            }
            None => {
                for (c, level) in self.levels.iter_mut().enumerate() {
                    let peak = src
                        .iter()
                        .skip(c)
                        .step_by(ch)
                        .fold(0.0f32, |m, x| m.max(x.abs()));
                    level.peak_db = gain_to_db(peak);
                }
                self.block_sums.iter_mut().for_each(|s| *s = 0.0);
                for frame in src.chunks_exact(ch) {
                    for (s, x) in self.block_sums.iter_mut().zip(frame) {
                        *s += f64::from(*x) * f64::from(*x);
                    }
                }
                for (level, sum) in self.levels.iter_mut().zip(&self.block_sums) {
                    level.rms_db = rms_db(*sum, input.frames() as usize);
                }
            }
        }
        // The RMS of some audio cannot exceed its peak; only rounding could make it read above.
        for level in &mut self.levels {
            level.rms_db = level.rms_db.min(level.peak_db);
        }
        Ok(())
    }

    fn levels(&self) -> &[Level] {
        &self.levels
    }
}

fn rms_db(sum_of_squares: f64, frames: usize) -> f32 {
    gain_to_db((sum_of_squares.max(0.0) / frames.max(1) as f64).sqrt() as f32)
}

/// The RMS window in frames, `None` for per-block RMS.
fn window_frames(config: &MeterConfig, sample_rate: u32) -> PluginResult<Option<usize>> {
    let Some(ms) = config.window_ms else {
        return Ok(None);
    };
    let frames = (ms / 1000.0 * f64::from(sample_rate)).round();
    if !(ms.is_finite() && ms > 0.0 && ms <= MAX_WINDOW_MS && frames >= 1.0) {
        return Err(PluginError::config(
            "window_ms",
            format!(
                "must be at least one frame ({:.3} ms at {sample_rate} Hz) and at most \
                 {MAX_WINDOW_MS} ms, got {ms}",
                1000.0 / f64::from(sample_rate)
            ),
        ));
    }
    Ok(Some(frames as usize))
}
