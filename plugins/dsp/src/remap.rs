//! `remap`: mix input channels into output channels through a matrix.

use tapeline_plugin_api::prelude::*;

use crate::routing::check_channels;

/// Most output channels (the plugin's `CHANNELS` bound).
const MAX_CHANNELS: usize = 64;

#[derive(Deserialize, JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct RemapConfig {
    /// One row per output channel, each with one coefficient per input channel:
    /// `out[o] = sum over i of matrix[o][i] * in[i]`. E.g. stereo to mono: `[[0.5, 0.5]]`;
    /// swap left and right: `[[0, 1], [1, 0]]`.
    pub matrix: Vec<Vec<f32>>,
}

/// Output channel `o` is the sum over input channels `i` of `matrix[o][i] * in[i]`.
pub struct Remap {
    /// Row-major, `outputs × inputs`.
    matrix: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl Describe for Remap {
    type Config = RemapConfig;
    const NAME: &'static str = "remap";
    const DESCRIPTION: &'static str =
        "Mixes input channels into output channels through a coefficient matrix";
}

impl Processor for Remap {
    fn outputs(config: &RemapConfig, ctx: &StageContext<'_>) -> PluginResult<Vec<OutputPort>> {
        let input = single_input(ctx)?;
        check(config, input.channels as usize)?;
        let format = PortFormat {
            channels: config.matrix.len() as u32,
            sample_rate: input.sample_rate,
        };
        Ok(vec![OutputPort::new("out", format)])
    }

    fn new(config: RemapConfig, ctx: &StageContext<'_>) -> PluginResult<Self> {
        let inputs = single_input(ctx)?.channels as usize;
        check(&config, inputs)?;
        Ok(Remap {
            outputs: config.matrix.len(),
            matrix: config.matrix.into_iter().flatten().collect(),
            inputs,
        })
    }

    fn process(
        &mut self,
        inputs: &[InputBlock<'_>],
        outputs: &mut [OutputBlock<'_>],
    ) -> PluginResult<()> {
        let input = &inputs[0];
        check_channels(input, self.inputs)?;
        let out = &mut outputs[0];
        out.set_frames(input.frames());
        for (of, inf) in out
            .samples_mut()
            .chunks_exact_mut(self.outputs)
            .zip(input.samples().chunks_exact(self.inputs))
        {
            for (o, row) in of.iter_mut().zip(self.matrix.chunks_exact(self.inputs)) {
                *o = row.iter().zip(inf).map(|(m, x)| m * x).sum();
            }
        }
        Ok(())
    }
}

fn check(config: &RemapConfig, inputs: usize) -> PluginResult<()> {
    let rows = config.matrix.len();
    if rows == 0 {
        return Err(PluginError::config(
            "matrix",
            "needs at least one row (one row per output channel)",
        ));
    }
    if rows > MAX_CHANNELS {
        return Err(PluginError::config(
            "matrix",
            format!("has {rows} rows; remap produces at most {MAX_CHANNELS} output channels"),
        ));
    }
    for (r, row) in config.matrix.iter().enumerate() {
        if row.len() != inputs {
            return Err(PluginError::config(
                "matrix",
                format!(
                    "row {} of {rows} has {} coefficient(s) but the input has {inputs} \
                     channel(s): each row needs one coefficient per input channel",
                    r + 1,
                    row.len()
                ),
            ));
        }
        if let Some(v) = row.iter().find(|v| !v.is_finite()) {
            return Err(PluginError::config(
                "matrix",
                format!(
                    "row {} of {rows} holds {v}; coefficients must be finite",
                    r + 1
                ),
            ));
        }
    }
    Ok(())
}
