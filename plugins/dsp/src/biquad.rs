//! `biquad`: one second-order IIR filter per channel, coefficients from Robert
//! Bristow-Johnson's Audio EQ Cookbook, run as a transposed direct form II in `f64`.

use std::f64::consts::PI;

use tapeline_plugin_api::prelude::*;

use crate::routing::check_channels;

/// The filter shapes of the Audio EQ Cookbook.
#[derive(Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FilterType {
    /// 12 dB/octave low-pass.
    Lowpass,
    /// 12 dB/octave high-pass.
    Highpass,
    /// Band-pass with 0 dB gain at the centre frequency.
    Bandpass,
    /// Band-stop with a null at the centre frequency.
    Notch,
    /// Peaking EQ: `gain_db` at the centre frequency, 0 dB far from it.
    Peak,
    /// Low shelf: `gain_db` below the corner frequency, 0 dB above.
    Lowshelf,
    /// High shelf: `gain_db` above the corner frequency, 0 dB below.
    Highshelf,
}

impl FilterType {
    fn as_str(self) -> &'static str {
        match self {
            FilterType::Lowpass => "lowpass",
            FilterType::Highpass => "highpass",
            FilterType::Bandpass => "bandpass",
            FilterType::Notch => "notch",
            FilterType::Peak => "peak",
            FilterType::Lowshelf => "lowshelf",
            FilterType::Highshelf => "highshelf",
        }
    }

    fn uses_gain(self) -> bool {
        matches!(
            self,
            FilterType::Peak | FilterType::Lowshelf | FilterType::Highshelf
        )
    }
}

fn default_q() -> f64 {
    std::f64::consts::FRAC_1_SQRT_2
}

#[derive(Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct BiquadConfig {
    /// Filter shape: lowpass, highpass, bandpass, notch, peak, lowshelf or highshelf.
    #[serde(rename = "type")]
    pub kind: FilterType,
    /// Cutoff, centre or corner frequency in Hz; must be below half the input's sample rate.
    pub frequency: f64,
    /// Quality factor (0.7071 = Butterworth for lowpass/highpass); higher is narrower.
    #[serde(default = "default_q")]
    pub q: f64,
    /// Gain in dB at the centre (peak) or on the shelf (lowshelf, highshelf); required for
    /// those types and refused for the others.
    #[serde(default)]
    pub gain_db: Option<f64>,
}

/// Normalised biquad coefficients (`a0` divided out):
/// `y[n] = b0 x[n] + b1 x[n-1] + b2 x[n-2] - a1 y[n-1] - a2 y[n-2]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coefficients {
    pub b0: f64,
    pub b1: f64,
    pub b2: f64,
    pub a1: f64,
    pub a2: f64,
}

impl Coefficients {
    /// The Audio EQ Cookbook coefficients, with `alpha = sin(w0) / (2 Q)` for every type
    /// (bandpass: the constant 0 dB peak gain variant; shelves: the `2 sqrt(A) alpha` form).
    pub fn rbj(kind: FilterType, frequency: f64, q: f64, gain_db: f64, sample_rate: f64) -> Self {
        let w0 = 2.0 * PI * frequency / sample_rate;
        let (sin, cos) = w0.sin_cos();
        let alpha = sin / (2.0 * q);
        let a = 10f64.powf(gain_db / 40.0);
        let [b0, b1, b2, a0, a1, a2] = match kind {
            FilterType::Lowpass => [
                (1.0 - cos) / 2.0,
                1.0 - cos,
                (1.0 - cos) / 2.0,
                1.0 + alpha,
                -2.0 * cos,
                1.0 - alpha,
            ],
            FilterType::Highpass => [
                (1.0 + cos) / 2.0,
                -(1.0 + cos),
                (1.0 + cos) / 2.0,
                1.0 + alpha,
                -2.0 * cos,
                1.0 - alpha,
            ],
            FilterType::Bandpass => [alpha, 0.0, -alpha, 1.0 + alpha, -2.0 * cos, 1.0 - alpha],
            FilterType::Notch => [1.0, -2.0 * cos, 1.0, 1.0 + alpha, -2.0 * cos, 1.0 - alpha],
            FilterType::Peak => [
                1.0 + alpha * a,
                -2.0 * cos,
                1.0 - alpha * a,
                1.0 + alpha / a,
                -2.0 * cos,
                1.0 - alpha / a,
            ],
            FilterType::Lowshelf => {
                let k = 2.0 * a.sqrt() * alpha;
                [
                    a * ((a + 1.0) - (a - 1.0) * cos + k),
                    2.0 * a * ((a - 1.0) - (a + 1.0) * cos),
                    a * ((a + 1.0) - (a - 1.0) * cos - k),
                    (a + 1.0) + (a - 1.0) * cos + k,
                    -2.0 * ((a - 1.0) + (a + 1.0) * cos),
                    (a + 1.0) + (a - 1.0) * cos - k,
                ]
            }
            FilterType::Highshelf => {
                let k = 2.0 * a.sqrt() * alpha;
                [
                    a * ((a + 1.0) + (a - 1.0) * cos + k),
                    -2.0 * a * ((a - 1.0) + (a + 1.0) * cos),
                    a * ((a + 1.0) + (a - 1.0) * cos - k),
                    (a + 1.0) - (a - 1.0) * cos + k,
                    2.0 * ((a - 1.0) - (a + 1.0) * cos),
                    (a + 1.0) - (a - 1.0) * cos - k,
                ]
            }
        };
        Coefficients {
            b0: b0 / a0,
            b1: b1 / a0,
            b2: b2 / a0,
            a1: a1 / a0,
            a2: a2 / a0,
        }
    }

    /// `|H(e^jw)|` at `frequency` Hz, evaluated from the coefficients.
    pub fn magnitude(&self, frequency: f64, sample_rate: f64) -> f64 {
        let w = 2.0 * PI * frequency / sample_rate;
        // H(z) with z^-1 = e^{-jw}: numerator and denominator as (re, im).
        let (s1, c1) = (-w).sin_cos();
        let (s2, c2) = (-2.0 * w).sin_cos();
        let num = (
            self.b0 + self.b1 * c1 + self.b2 * c2,
            self.b1 * s1 + self.b2 * s2,
        );
        let den = (
            1.0 + self.a1 * c1 + self.a2 * c2,
            self.a1 * s1 + self.a2 * s2,
        );
        (num.0.hypot(num.1)) / (den.0.hypot(den.1))
    }
}

/// One RBJ biquad per channel.
pub struct Biquad {
    coefficients: Coefficients,
    /// Transposed direct form II state `(s1, s2)` per channel.
    state: Vec<(f64, f64)>,
}

impl Describe for Biquad {
    type Config = BiquadConfig;
    const NAME: &'static str = "biquad";
    const DESCRIPTION: &'static str =
        "Audio EQ Cookbook biquad: lowpass, highpass, bandpass, notch, peak, lowshelf, highshelf";
}

impl Processor for Biquad {
    fn outputs(config: &BiquadConfig, ctx: &StageContext<'_>) -> PluginResult<Vec<OutputPort>> {
        let input = single_input(ctx)?;
        check(config, input.sample_rate)?;
        Ok(vec![OutputPort::new("out", input)])
    }

    fn new(config: BiquadConfig, ctx: &StageContext<'_>) -> PluginResult<Self> {
        let input = single_input(ctx)?;
        let gain_db = check(&config, input.sample_rate)?;
        Ok(Biquad {
            coefficients: Coefficients::rbj(
                config.kind,
                config.frequency,
                config.q,
                gain_db,
                f64::from(input.sample_rate),
            ),
            state: vec![(0.0, 0.0); input.channels as usize],
        })
    }

    fn process(
        &mut self,
        inputs: &[InputBlock<'_>],
        outputs: &mut [OutputBlock<'_>],
    ) -> PluginResult<()> {
        let input = &inputs[0];
        let ch = self.state.len();
        check_channels(input, ch)?;
        let out = &mut outputs[0];
        out.set_frames(input.frames());
        let Coefficients { b0, b1, b2, a1, a2 } = self.coefficients;
        for (c, (s1, s2)) in self.state.iter_mut().enumerate() {
            let (mut z1, mut z2) = (*s1, *s2);
            for (o, i) in out.channel_mut(c).zip(input.channel(c)) {
                let x = f64::from(i);
                let y = b0 * x + z1;
                z1 = b1 * x - a1 * y + z2;
                z2 = b2 * x - a2 * y;
                *o = y as f32;
            }
            // Let a decayed tail reach zero instead of lingering in slow subnormals.
            *s1 = if z1.abs() < 1e-200 { 0.0 } else { z1 };
            *s2 = if z2.abs() < 1e-200 { 0.0 } else { z2 };
        }
        Ok(())
    }
}

/// Validate the config against the input's sample rate; returns the gain in dB to use.
fn check(config: &BiquadConfig, sample_rate: u32) -> PluginResult<f64> {
    let nyquist = f64::from(sample_rate) / 2.0;
    let f = config.frequency;
    if !(f.is_finite() && f > 0.0 && f < nyquist) {
        return Err(PluginError::config(
            "frequency",
            format!(
                "must be above 0 and below half the input's sample rate ({nyquist} Hz at \
                 {sample_rate} Hz), got {f} Hz"
            ),
        ));
    }
    if !(config.q.is_finite() && config.q > 0.0) {
        return Err(PluginError::config(
            "q",
            format!("must be a number above 0, got {}", config.q),
        ));
    }
    let kind = config.kind.as_str();
    match (config.kind.uses_gain(), config.gain_db) {
        (true, Some(g)) if g.is_finite() && g.abs() <= 60.0 => Ok(g),
        (true, Some(g)) => Err(PluginError::config(
            "gain_db",
            format!("must be between -60 and 60 dB, got {g}"),
        )),
        (true, None) => Err(PluginError::config(
            "gain_db",
            format!("is required for type = \"{kind}\""),
        )),
        (false, Some(_)) => Err(PluginError::config(
            "gain_db",
            format!(
                "does not apply to type = \"{kind}\"; only peak, lowshelf and highshelf take a gain"
            ),
        )),
        (false, None) => Ok(0.0),
    }
}
