//! `channel-split` and `channel-merge`: moving channels between ports without changing them.

use tapeline_plugin_api::prelude::*;

/// Most channels one port carries (the plugins' `CHANNELS` bound).
const MAX_CHANNELS: u32 = 64;

/// `channel-split` takes no settings.
#[derive(Deserialize, JsonSchema, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ChannelSplitConfig {}

/// One input of N channels → N mono outputs `0`..`N-1`; for stereo also named `left`/`right`.
pub struct ChannelSplit {
    channels: usize,
}

impl Describe for ChannelSplit {
    type Config = ChannelSplitConfig;
    const NAME: &'static str = "channel-split";
    const DESCRIPTION: &'static str = "Splits one input into one mono output per channel";
    const OUTPUTS: &'static str = "0..N-1 (also left/right for stereo)";
}

impl Processor for ChannelSplit {
    fn outputs(
        _config: &ChannelSplitConfig,
        ctx: &StageContext<'_>,
    ) -> PluginResult<Vec<OutputPort>> {
        let input = single_input(ctx)?;
        let mono = PortFormat {
            channels: 1,
            sample_rate: input.sample_rate,
        };
        Ok((0..input.channels)
            .map(|c| {
                let port = OutputPort::new(&c.to_string(), mono);
                match (input.channels, c) {
                    (2, 0) => port.with_alias("left"),
                    (2, 1) => port.with_alias("right"),
                    _ => port,
                }
            })
            .collect())
    }

    fn new(_config: ChannelSplitConfig, ctx: &StageContext<'_>) -> PluginResult<Self> {
        let input = single_input(ctx)?;
        Ok(ChannelSplit {
            channels: input.channels as usize,
        })
    }

    fn process(
        &mut self,
        inputs: &[InputBlock<'_>],
        outputs: &mut [OutputBlock<'_>],
    ) -> PluginResult<()> {
        let input = &inputs[0];
        check_channels(input, self.channels)?;
        for (c, out) in outputs.iter_mut().enumerate().take(self.channels) {
            out.set_frames(input.frames());
            for (d, s) in out.samples_mut().iter_mut().zip(input.channel(c)) {
                *d = s;
            }
        }
        Ok(())
    }
}

/// `channel-merge` takes no settings.
#[derive(Deserialize, JsonSchema, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ChannelMergeConfig {}

/// N inputs (any channel counts, one sample rate) → one output `out` holding their channels
/// concatenated in input order.
pub struct ChannelMerge {
    /// Channel count of each input, in order.
    widths: Vec<usize>,
    total: usize,
}

impl Describe for ChannelMerge {
    type Config = ChannelMergeConfig;
    const NAME: &'static str = "channel-merge";
    const DESCRIPTION: &'static str =
        "Merges several inputs into one output carrying all their channels, in input order";
}

impl Processor for ChannelMerge {
    const INPUTS: (u32, u32) = (2, 64);

    fn outputs(
        _config: &ChannelMergeConfig,
        ctx: &StageContext<'_>,
    ) -> PluginResult<Vec<OutputPort>> {
        Ok(vec![OutputPort::new("out", merged_format(ctx)?)])
    }

    fn new(_config: ChannelMergeConfig, ctx: &StageContext<'_>) -> PluginResult<Self> {
        let format = merged_format(ctx)?;
        Ok(ChannelMerge {
            widths: ctx.inputs().iter().map(|f| f.channels as usize).collect(),
            total: format.channels as usize,
        })
    }

    fn process(
        &mut self,
        inputs: &[InputBlock<'_>],
        outputs: &mut [OutputBlock<'_>],
    ) -> PluginResult<()> {
        let out = &mut outputs[0];
        let mut frames = out.frames();
        for (input, &width) in inputs.iter().zip(&self.widths) {
            check_channels(input, width)?;
            frames = frames.min(input.frames());
        }
        out.set_frames(frames);
        let dst = out.samples_mut();
        let mut offset = 0;
        for (input, &width) in inputs.iter().zip(&self.widths) {
            for (d, s) in dst
                .chunks_exact_mut(self.total)
                .zip(input.samples().chunks_exact(width))
            {
                d[offset..offset + width].copy_from_slice(s);
            }
            offset += width;
        }
        Ok(())
    }
}

/// The format of the merged output, or why the inputs cannot be merged.
fn merged_format(ctx: &StageContext<'_>) -> PluginResult<PortFormat> {
    let inputs = ctx.inputs();
    let Some(first) = inputs.first() else {
        return Err(PluginError::format(
            "channel-merge needs at least one input",
        ));
    };
    if let Some((i, other)) = inputs
        .iter()
        .enumerate()
        .find(|(_, f)| f.sample_rate != first.sample_rate)
    {
        return Err(PluginError::format(format!(
            "input 1 runs at {} Hz but input {} runs at {} Hz: channel-merge needs one sample \
             rate on all inputs; put a `resample` stage before the odd one",
            first.sample_rate,
            i + 1,
            other.sample_rate
        )));
    }
    let channels: u32 = inputs.iter().map(|f| f.channels).sum();
    if channels > MAX_CHANNELS {
        return Err(PluginError::format(format!(
            "the inputs have {channels} channels in all; channel-merge produces at most \
             {MAX_CHANNELS}"
        )));
    }
    Ok(PortFormat {
        channels,
        sample_rate: first.sample_rate,
    })
}

/// Refuse a block whose channel count is not the one the stage was built for.
pub(crate) fn check_channels(block: &InputBlock<'_>, expected: usize) -> PluginResult<()> {
    if block.channels() as usize == expected {
        Ok(())
    } else {
        Err(PluginError::format(format!(
            "got a block of {} channels; this stage was set up for {expected}",
            block.channels()
        )))
    }
}
