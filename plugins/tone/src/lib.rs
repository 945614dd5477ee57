//! `tone`: a test-signal generator (sine, square, white noise, logarithmic sweep), the same
//! sample on every channel, endless or of a fixed length.

use std::f64::consts::TAU;

use tapeline_plugin_api::prelude::*;
use tapeline_plugin_api::serde::Serialize;

/// The shape of the generated signal.
// Serialize lets the schema show the default.
#[derive(Deserialize, Serialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Waveform {
    /// A sine at `frequency`.
    #[default]
    Sine,
    /// A naive (not band-limited) square wave at `frequency`.
    Square,
    /// Uniform white noise, the same for the same `seed`.
    Noise,
    /// A logarithmic sine sweep from `frequency` to `end_frequency` over the whole length.
    Sweep,
}

#[derive(Deserialize, JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct ToneConfig {
    /// Signal shape: "sine", "square", "noise" or "sweep".
    #[serde(default)]
    pub waveform: Waveform,
    /// Frequency in Hz (the start frequency of a sweep); below half the sample rate.
    #[serde(default = "default_frequency")]
    pub frequency: f64,
    /// Frequency in Hz a sweep ends at (sweep only).
    pub end_frequency: Option<f64>,
    /// Peak level in dBFS; 0 is full scale.
    #[serde(default = "default_amplitude_db")]
    pub amplitude_db: f64,
    /// Number of output channels, 1 to 64; each carries the same signal.
    #[serde(default = "default_channels")]
    pub channels: u32,
    /// Length in seconds. Without `seconds` or `frames` the tone never ends.
    pub seconds: Option<f64>,
    /// Length in frames, instead of `seconds`.
    pub frames: Option<u64>,
    /// Seed of the noise generator, so a noise run can be repeated exactly (noise only).
    pub seed: Option<u64>,
}

fn default_frequency() -> f64 {
    1000.0
}
fn default_amplitude_db() -> f64 {
    -6.0
}
fn default_channels() -> u32 {
    2
}

const DEFAULT_SEED: u64 = 0x7461_7065_6c69_6e65;

/// A validated configuration: what `outputs` checks and `new` builds from.
struct Plan {
    channels: u32,
    length: Option<u64>,
}

fn plan(c: &ToneConfig, sample_rate: u32) -> PluginResult<Plan> {
    if !(1..=64).contains(&c.channels) {
        return Err(PluginError::config(
            "channels",
            format!("must be between 1 and 64, got {}", c.channels),
        ));
    }
    let nyquist = f64::from(sample_rate) / 2.0;
    check_frequency("frequency", c.frequency, nyquist, sample_rate)?;
    match (c.waveform, c.end_frequency) {
        (Waveform::Sweep, Some(f)) => check_frequency("end_frequency", f, nyquist, sample_rate)?,
        (Waveform::Sweep, None) => {
            return Err(PluginError::config(
                "end_frequency",
                "a sweep needs `end_frequency` (Hz)",
            ))
        }
        (_, Some(_)) => {
            return Err(PluginError::config(
                "end_frequency",
                "only applies to waveform = \"sweep\"",
            ))
        }
        (_, None) => {}
    }
    if c.seed.is_some() && c.waveform != Waveform::Noise {
        return Err(PluginError::config(
            "seed",
            "only applies to waveform = \"noise\"",
        ));
    }
    if c.amplitude_db.is_nan() || c.amplitude_db > 0.0 {
        return Err(PluginError::config(
            "amplitude_db",
            format!(
                "must be at most 0 dBFS (full scale), got {}",
                c.amplitude_db
            ),
        ));
    }
    let length = match (c.seconds, c.frames) {
        (Some(_), Some(_)) => {
            return Err(PluginError::config(
                "frames",
                "set either `seconds` or `frames`, not both",
            ))
        }
        (Some(s), None) => {
            if !s.is_finite() || s < 0.0 {
                return Err(PluginError::config(
                    "seconds",
                    format!("must be a length of zero or more seconds, got {s}"),
                ));
            }
            Some((s * f64::from(sample_rate)).round() as u64)
        }
        (None, frames) => frames,
    };
    if c.waveform == Waveform::Sweep && matches!(length, None | Some(0)) {
        return Err(PluginError::config(
            "waveform",
            "a sweep needs a length above zero: set `seconds` or `frames`",
        ));
    }
    Ok(Plan {
        channels: c.channels,
        length,
    })
}

fn check_frequency(key: &str, f: f64, nyquist: f64, sample_rate: u32) -> PluginResult<()> {
    if !f.is_finite() || f <= 0.0 {
        return Err(PluginError::config(
            key,
            format!("must be a positive number of Hz, got {f}"),
        ));
    }
    if f >= nyquist {
        return Err(PluginError::config(
            key,
            format!(
                "must be below half the sample rate ({nyquist} Hz at {sample_rate} Hz), got {f} Hz"
            ),
        ));
    }
    Ok(())
}

pub struct Tone {
    waveform: Waveform,
    channels: usize,
    amplitude: f64,
    /// Position in the current cycle, in [0, 1): kept across blocks so the phase never jumps.
    phase: f64,
    /// Cycles per sample now; for a sweep, the start value is `inc0`.
    inc: f64,
    inc0: f64,
    /// ln(end / start) of a sweep.
    sweep_log_ratio: f64,
    rng: u64,
    produced: u64,
    length: Option<u64>,
}

impl Describe for Tone {
    type Config = ToneConfig;
    const NAME: &'static str = "tone";
    const DESCRIPTION: &'static str =
        "Generates a sine, square, white noise or log sweep test signal";
}

impl Capture for Tone {
    fn outputs(config: &ToneConfig, ctx: &StageContext<'_>) -> PluginResult<Vec<OutputPort>> {
        let plan = plan(config, ctx.sample_rate())?;
        Ok(vec![OutputPort::new("out", ctx.format(plan.channels))])
    }

    fn new(config: ToneConfig, ctx: &StageContext<'_>) -> PluginResult<Self> {
        let plan = plan(&config, ctx.sample_rate())?;
        let sr = f64::from(ctx.sample_rate());
        let inc0 = config.frequency / sr;
        let sweep_log_ratio = match config.end_frequency {
            Some(end) if config.waveform == Waveform::Sweep => (end / config.frequency).ln(),
            _ => 0.0,
        };
        Ok(Tone {
            waveform: config.waveform,
            channels: plan.channels as usize,
            amplitude: 10f64.powf(config.amplitude_db / 20.0),
            phase: 0.0,
            inc: inc0,
            inc0,
            sweep_log_ratio,
            rng: config.seed.unwrap_or(DEFAULT_SEED),
            produced: 0,
            length: plan.length,
        })
    }

    fn read(&mut self, out: &mut OutputBlock<'_>) -> PluginResult<ReadStatus> {
        if out.channels() as usize != self.channels {
            return Err(PluginError::format(format!(
                "the host passed a {}-channel buffer to a {}-channel tone",
                out.channels(),
                self.channels
            )));
        }
        let capacity = u64::from(out.capacity_frames());
        let frames = match self.length {
            Some(len) => capacity.min(len.saturating_sub(self.produced)),
            None => capacity,
        };
        out.set_frames(frames as u32);

        match self.waveform {
            Waveform::Sweep => {
                // Recompute the frequency from the closed form once per block so that rounding in
                // the per-sample multiplication cannot accumulate over a long sweep.
                let len = self.length.unwrap_or(1).max(1) as f64;
                self.inc = self.inc0 * (self.sweep_log_ratio * self.produced as f64 / len).exp();
                let step = (self.sweep_log_ratio / len).exp();
                for frame in out.samples_mut().chunks_exact_mut(self.channels) {
                    let s = ((self.phase * TAU).sin() * self.amplitude) as f32;
                    frame.fill(s);
                    self.advance();
                    self.inc *= step;
                }
            }
            Waveform::Sine => {
                // A rotating phasor: one complex multiplication a frame instead of a `sin`,
                // restarted from the exact phase every block so rounding cannot accumulate
                // (over a block it stays below 1e-13, far under the f32 output's resolution).
                let (mut im, mut re) = (self.phase * TAU).sin_cos();
                let (step_im, step_re) = (self.inc * TAU).sin_cos();
                for frame in out.samples_mut().chunks_exact_mut(self.channels) {
                    frame.fill((im * self.amplitude) as f32);
                    (re, im) = (re * step_re - im * step_im, im * step_re + re * step_im);
                }
                self.phase = (self.phase + self.inc * frames as f64).fract();
            }
            Waveform::Square => {
                for frame in out.samples_mut().chunks_exact_mut(self.channels) {
                    let s = if self.phase < 0.5 { 1.0 } else { -1.0 };
                    frame.fill((s * self.amplitude) as f32);
                    self.advance();
                }
            }
            Waveform::Noise => {
                for frame in out.samples_mut().chunks_exact_mut(self.channels) {
                    let s = next_uniform(&mut self.rng) * self.amplitude;
                    frame.fill(s as f32);
                }
            }
        }

        self.produced += frames;
        Ok(match self.length {
            Some(len) if self.produced >= len => ReadStatus::Finished,
            _ => ReadStatus::More,
        })
    }

    fn length_frames(&self) -> Option<u64> {
        self.length
    }
}

impl Tone {
    fn advance(&mut self) {
        self.phase += self.inc;
        if self.phase >= 1.0 {
            self.phase -= 1.0;
        }
    }
}

/// SplitMix64: tiny, fast, and good enough for test noise; any seed (even 0) works.
fn next_uniform(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // 53 random bits to [0, 1), then to [-1, 1).
    (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

export_plugin!(capture: Tone);

#[cfg(test)]
mod tests {
    use super::*;
    use tapeline_plugin_api::sdk::parse_config;
    use tapeline_plugin_api::testing::{audio_call, context, output, Context};

    fn ctx(sample_rate: u32) -> Context {
        context(&[])
            .with_stage_id("tone")
            .with_base_dir("")
            .with_sample_rate(sample_rate)
    }

    fn config(json: &str) -> ToneConfig {
        parse_config(json).expect("valid test config")
    }

    fn tone(json: &str) -> Tone {
        Tone::new(config(json), &ctx(48_000).get()).expect("valid tone")
    }

    /// Read blocks of `block` frames until `total` frames or the end; returns interleaved samples
    /// and the statuses per block.
    fn run(t: &mut Tone, block: usize, total: usize) -> (Vec<f32>, Vec<(u32, ReadStatus)>) {
        let ch = t.channels;
        let mut buf = vec![0.0f32; block * ch];
        let mut all = Vec::new();
        let mut statuses = Vec::new();
        while all.len() < total.saturating_mul(ch) {
            let mut out = output(&mut buf, ch as u32);
            // The same guard the host path uses: it fails the call if read() allocated.
            let status =
                audio_call("read", || t.read(&mut out)).expect("read succeeds without allocating");
            let frames = out.frames();
            all.extend_from_slice(out.samples());
            statuses.push((frames, status));
            if status == ReadStatus::Finished {
                break;
            }
        }
        all.truncate(total.saturating_mul(ch));
        (all, statuses)
    }

    fn err_key(json: &str) -> String {
        let e = plan(&config(json), 48_000)
            .err()
            .expect("config is rejected");
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        e.key().unwrap_or("").to_string()
    }

    #[test]
    fn defaults_are_a_stereo_1k_sine_at_minus_6() {
        let c = config("{}");
        assert_eq!(c.waveform, Waveform::Sine);
        assert_eq!(c.frequency, 1000.0);
        assert_eq!(c.amplitude_db, -6.0);
        let ports = Tone::outputs(&c, &ctx(48_000).get()).unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].name(), "out");
        assert_eq!(ports[0].format.channels, 2);
        assert_eq!(ports[0].format.sample_rate, 48_000);
    }

    #[test]
    fn sine_has_the_frequency_and_peak_asked_for() {
        let mut t = tone(r#"{"channels": 1, "frequency": 1000, "amplitude_db": -6}"#);
        let (s, _) = run(&mut t, 480, 48_000);
        let peak = s.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!((peak - db_to_gain(-6.0)).abs() < 1e-3, "peak {peak}");
        let rising = s.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
        assert!((999..=1001).contains(&rising), "{rising} cycles in 1 s");
    }

    #[test]
    fn phase_is_continuous_across_blocks_and_channels_match() {
        for wf in ["sine", "square", "noise"] {
            let json = format!(r#"{{"waveform": "{wf}", "frequency": 997, "channels": 3}}"#);
            let (small, _) = run(&mut tone(&json), 37, 4800);
            let (big, _) = run(&mut tone(&json), 4800, 4800);
            assert!(small == big, "{wf}: block size changed the signal");
            for f in small.chunks_exact(3) {
                assert!(f[0] == f[1] && f[1] == f[2], "{wf}: channels differ");
            }
        }
    }

    #[test]
    fn sweep_is_continuous_and_ends_near_end_frequency() {
        let json = r#"{"waveform": "sweep", "frequency": 20, "end_frequency": 20000,
                       "amplitude_db": 0, "channels": 1, "seconds": 1}"#;
        let mut t = tone(json);
        let (s, statuses) = run(&mut t, 480, usize::MAX);
        assert_eq!(s.len(), 48_000);
        assert_eq!(statuses.last().unwrap().1, ReadStatus::Finished);
        // No jump bigger than the steepest slope a 20 kHz sine can have at this rate.
        let max_step = (TAU * 20_000.0 / 48_000.0) as f32 + 1e-3;
        for w in s.windows(2) {
            assert!((w[1] - w[0]).abs() <= max_step);
        }
        // Few samples per cycle at the end: the last 480 samples cross zero often.
        let crossings = s[47_520..]
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count();
        assert!(crossings > 300, "{crossings}");
    }

    #[test]
    fn length_in_frames_finishes_on_the_block_that_reaches_it() {
        let mut t = tone(r#"{"frames": 1000}"#);
        assert_eq!(t.length_frames(), Some(1000));
        let (_, statuses) = run(&mut t, 480, usize::MAX);
        assert_eq!(
            statuses,
            vec![
                (480, ReadStatus::More),
                (480, ReadStatus::More),
                (40, ReadStatus::Finished)
            ]
        );
        let mut exact = tone(r#"{"frames": 960}"#);
        let (_, statuses) = run(&mut exact, 480, usize::MAX);
        assert_eq!(statuses.last(), Some(&(480, ReadStatus::Finished)));
    }

    #[test]
    fn length_in_seconds_and_endless() {
        let t = tone(r#"{"seconds": 0.5}"#);
        assert_eq!(t.length_frames(), Some(24_000));
        let mut endless = tone("{}");
        assert_eq!(endless.length_frames(), None);
        let (_, statuses) = run(&mut endless, 480, 48_000);
        assert!(statuses.iter().all(|s| *s == (480, ReadStatus::More)));
    }

    #[test]
    fn noise_is_repeatable_per_seed_and_within_amplitude() {
        let a = run(&mut tone(r#"{"waveform": "noise", "seed": 7}"#), 480, 4800).0;
        let b = run(&mut tone(r#"{"waveform": "noise", "seed": 7}"#), 480, 4800).0;
        let c = run(&mut tone(r#"{"waveform": "noise", "seed": 8}"#), 480, 4800).0;
        assert_eq!(a, b);
        assert_ne!(a, c);
        let amp = db_to_gain(-6.0) + 1e-6;
        assert!(a.iter().all(|x| x.abs() <= amp));
        let mean = a.iter().map(|x| f64::from(*x)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn square_alternates_at_full_amplitude() {
        let s = run(
            &mut tone(
                r#"{"waveform": "square", "frequency": 1200, "channels": 1, "amplitude_db": 0}"#,
            ),
            480,
            480,
        )
        .0;
        assert!(s.iter().all(|x| x.abs() == 1.0));
        assert_eq!(&s[..20], &[1.0; 20]);
        assert_eq!(&s[20..40], &[-1.0; 20]);
    }

    #[test]
    fn bad_configs_name_their_key() {
        assert_eq!(err_key(r#"{"frequency": 24000}"#), "frequency");
        assert_eq!(err_key(r#"{"frequency": 0}"#), "frequency");
        assert_eq!(err_key(r#"{"amplitude_db": 1}"#), "amplitude_db");
        assert_eq!(err_key(r#"{"channels": 0}"#), "channels");
        assert_eq!(err_key(r#"{"channels": 65}"#), "channels");
        assert_eq!(err_key(r#"{"seconds": 1, "frames": 10}"#), "frames");
        assert_eq!(err_key(r#"{"seconds": -1}"#), "seconds");
        assert_eq!(
            err_key(r#"{"waveform": "sweep", "seconds": 1}"#),
            "end_frequency"
        );
        assert_eq!(
            err_key(r#"{"waveform": "sweep", "end_frequency": 100}"#),
            "waveform"
        );
        assert_eq!(err_key(r#"{"end_frequency": 100}"#), "end_frequency");
        assert_eq!(err_key(r#"{"seed": 1}"#), "seed");
        let unknown = parse_config::<ToneConfig>(r#"{"freqency": 1}"#).unwrap_err();
        assert!(unknown.message().contains("freqency"), "{unknown}");
        let bad = parse_config::<ToneConfig>(r#"{"waveform": "saw"}"#).unwrap_err();
        assert_eq!(bad.key(), Some("waveform"));
    }
}
