//! `gain`: multiply every sample by a gain in dB, optionally per channel, ramped so that changes
//! never click.

use tapeline_plugin_api::prelude::*;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GainConfig {
    /// Gain in decibels applied to every channel.
    #[serde(default)]
    pub db: f32,
    /// Gain in decibels per channel, overriding `db` (one value per channel).
    #[serde(default)]
    pub channels_db: Option<Vec<f32>>,
    /// Length of the ramp from unity to the gain at start, in milliseconds (0 = none).
    #[serde(default)]
    pub ramp_ms: f32,
}

pub struct Gain {
    target: Vec<f32>,
    current: Vec<f32>,
    step: Vec<f32>,
    ramp_left: u32,
}

impl Describe for Gain {
    type Config = GainConfig;
    const NAME: &'static str = "gain";
    const DESCRIPTION: &'static str =
        "Multiplies each channel by a gain in dB, with a click-free ramp";
}

impl Processor for Gain {
    fn outputs(config: &GainConfig, ctx: &StageContext<'_>) -> PluginResult<Vec<OutputPort>> {
        let input = single_input(ctx)?;
        check(config, input.channels)?;
        Ok(vec![OutputPort::new("out", input)])
    }

    fn new(config: GainConfig, ctx: &StageContext<'_>) -> PluginResult<Self> {
        let channels = single_input(ctx)?.channels;
        check(&config, channels)?;
        let target: Vec<f32> = match &config.channels_db {
            Some(per) => per.iter().map(|db| db_to_gain(*db)).collect(),
            None => vec![db_to_gain(config.db); channels as usize],
        };
        let ramp = (config.ramp_ms.max(0.0) / 1000.0 * ctx.sample_rate() as f32) as u32;
        let (current, step) = if ramp == 0 {
            (target.clone(), vec![0.0; target.len()])
        } else {
            (
                vec![1.0; target.len()],
                target.iter().map(|t| (t - 1.0) / ramp as f32).collect(),
            )
        };
        Ok(Gain {
            target,
            current,
            step,
            ramp_left: ramp,
        })
    }

    fn process(
        &mut self,
        inputs: &[InputBlock<'_>],
        outputs: &mut [OutputBlock<'_>],
    ) -> PluginResult<()> {
        let input = inputs[0].samples();
        let out = outputs[0].samples_mut();
        let ch = self.target.len();
        if self.ramp_left == 0 {
            // One gain for every channel (the usual `db`): one flat loop, which vectorises.
            if ch == 1 || self.target.iter().all(|g| *g == self.target[0]) {
                let g = self.target[0];
                for (o, i) in out.iter_mut().zip(input) {
                    *o = i * g;
                }
            } else {
                for (of, inf) in out.chunks_exact_mut(ch).zip(input.chunks_exact(ch)) {
                    for ((o, i), g) in of.iter_mut().zip(inf).zip(&self.target) {
                        *o = i * g;
                    }
                }
            }
            return Ok(());
        }
        for (of, inf) in out.chunks_exact_mut(ch).zip(input.chunks_exact(ch)) {
            if self.ramp_left > 0 {
                for c in 0..ch {
                    self.current[c] += self.step[c];
                }
                self.ramp_left -= 1;
                if self.ramp_left == 0 {
                    self.current.copy_from_slice(&self.target);
                }
            }
            for ((o, i), g) in of.iter_mut().zip(inf).zip(&self.current) {
                *o = i * g;
            }
        }
        Ok(())
    }
}

fn check(config: &GainConfig, channels: u32) -> PluginResult<()> {
    if let Some(per) = &config.channels_db {
        if per.len() != channels as usize {
            return Err(PluginError::config(
                "channels_db",
                format!(
                    "has {} values but the input has {channels} channels",
                    per.len()
                ),
            ));
        }
    }
    Ok(())
}

export_plugin!(process: Gain);
