//! `null`: a storage stage that counts the frames it receives and keeps none of them, for
//! benchmarks and for pipelines under test that need a sink.

use tapeline_plugin_api::prelude::*;

/// `null` takes no settings.
#[derive(Deserialize, JsonSchema, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct NullConfig {}

pub struct Null {
    frames: u64,
}

impl Describe for Null {
    type Config = NullConfig;
    const NAME: &'static str = "null";
    const DESCRIPTION: &'static str = "Counts frames and discards them";
}

impl Storage for Null {
    fn check(_config: &NullConfig, ctx: &StageContext<'_>) -> PluginResult<()> {
        single_input(ctx).map(|_| ())
    }

    fn new(_config: NullConfig, ctx: &StageContext<'_>) -> PluginResult<Self> {
        single_input(ctx)?;
        Ok(Null { frames: 0 })
    }

    fn write(&mut self, block: &InputBlock<'_>) -> PluginResult<()> {
        self.frames += u64::from(block.frames());
        Ok(())
    }

    fn finalize(&mut self) -> PluginResult<StorageReport> {
        Ok(StorageReport::new().frames(self.frames))
    }
}

export_plugin!(storage: Null);

#[cfg(test)]
mod tests {
    use super::*;
    use tapeline_plugin_api::sdk::parse_config;
    use tapeline_plugin_api::testing::{context, input};

    #[test]
    fn counts_frames_and_rejects_keys() {
        let inputs = [PortFormat {
            channels: 2,
            sample_rate: 48_000,
        }];
        let stage = context(&inputs).with_stage_id("sink").with_base_dir("");
        let ctx = stage.get();
        Null::check(&NullConfig::default(), &ctx).unwrap();
        let mut n = Null::new(parse_config("{}").unwrap(), &ctx).unwrap();
        let samples = [0.25f32; 960];
        for frames in [480, 480, 100, 0] {
            n.write(&input(&samples[..frames * 2], 2)).unwrap();
        }
        let report = n.finalize().unwrap();
        assert_eq!(report.frames_written(), 1060);
        assert_eq!(report.files().len(), 0);
        assert!(parse_config::<NullConfig>(r#"{"path": "x"}"#).is_err());
    }
}
