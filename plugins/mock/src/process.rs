//! `mock-process`: passes its input through unchanged, with faults.

use std::sync::Arc;

use tapeline_plugin_api::prelude::*;

use crate::crash::CrashSite;
use crate::faults::{mock_config, stage_state, Faults, StageState};

mock_config! {
    /// `mock-process` settings: only the fault keys.
    pub struct MockProcessConfig {}
}

pub struct MockProcess {
    faults: Faults,
    state: Arc<StageState>,
    crash: CrashSite,
}

impl Describe for MockProcess {
    type Config = MockProcessConfig;
    const NAME: &'static str = "mock-process";
    const DESCRIPTION: &'static str =
        "Test processor: passes audio through, with injectable faults";
}

impl Processor for MockProcess {
    fn outputs(
        config: &MockProcessConfig,
        ctx: &StageContext<'_>,
    ) -> PluginResult<Vec<OutputPort>> {
        config.faults()?;
        Ok(vec![OutputPort::new("out", single_input(ctx)?)])
    }

    fn new(config: MockProcessConfig, ctx: &StageContext<'_>) -> PluginResult<Self> {
        let faults = config.faults()?;
        single_input(ctx)?;
        let state = stage_state(Self::NAME, ctx.stage_id());
        faults.start(&state, Self::NAME)?;
        let crash = faults.crash_site(Self::NAME, ctx.stage_id())?;
        Ok(MockProcess {
            faults,
            state,
            crash,
        })
    }

    fn process(
        &mut self,
        inputs: &[InputBlock<'_>],
        outputs: &mut [OutputBlock<'_>],
    ) -> PluginResult<()> {
        self.faults
            .block(&self.state, &mut self.crash, Self::NAME)?;
        let input = &inputs[0];
        let out = &mut outputs[0];
        out.set_frames(input.frames());
        out.set_position(input.position());
        out.set_flags(input.flags());
        let n = out.samples_mut().len().min(input.samples().len());
        out.samples_mut()[..n].copy_from_slice(&input.samples()[..n]);
        Ok(())
    }
}
