//! `mock-capture`: the sequence-numbered signal, finite or endless, with faults and a simulated
//! device loss.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tapeline_plugin_api::prelude::*;
use tapeline_plugin_api::FLAG_DISCONTINUITY;

use crate::crash::CrashSite;
use crate::faults::{mock_config, now_ms, stage_state, Faults, Fired, StageState};
use crate::signal::{encode, MAX_CHANNELS};

fn default_channels() -> u32 {
    2
}

mock_config! {
    /// `mock-capture` settings.
    pub struct MockCaptureConfig {
        /// Number of output channels, 1 to 64.
        #[serde(default = "default_channels")]
        pub channels: u32,
        /// Length in frames; endless when absent.
        pub frames: Option<u64>,
        /// Block at which the device is lost: `read` returns a device-lost error, and so do
        /// `read` and `start` until `back_after_ms` have passed. Fires once per stage.
        pub device_lost_at_block: Option<u64>,
        /// Milliseconds after the loss at which the device is back. The frames of that span
        /// are skipped and the first block after it is flagged as a discontinuity. Without it the
        /// device never comes back.
        pub back_after_ms: Option<u64>,
    }
}

/// A validated `mock-capture` configuration.
struct Plan {
    channels: u32,
    faults: Faults,
    lost_at: Option<u64>,
    back_after_ms: Option<u64>,
}

fn plan(c: &MockCaptureConfig) -> PluginResult<Plan> {
    if !(1..=MAX_CHANNELS).contains(&c.channels) {
        return Err(PluginError::config(
            "channels",
            format!("must be between 1 and {MAX_CHANNELS}, got {}", c.channels),
        ));
    }
    if c.back_after_ms.is_some() && c.device_lost_at_block.is_none() {
        return Err(PluginError::config(
            "back_after_ms",
            "only applies together with `device_lost_at_block`",
        ));
    }
    Ok(Plan {
        channels: c.channels,
        faults: c.faults()?,
        lost_at: c.device_lost_at_block,
        back_after_ms: c.back_after_ms,
    })
}

pub struct MockCapture {
    plan: Plan,
    length: Option<u64>,
    sample_rate: u32,
    state: Arc<StageState>,
    crash: CrashSite,
    /// The next frame to produce.
    frame: u64,
    discontinuity: bool,
}

impl Describe for MockCapture {
    type Config = MockCaptureConfig;
    const NAME: &'static str = "mock-capture";
    const DESCRIPTION: &'static str =
        "Test source: a sequence-numbered signal, with injectable faults and device loss";
    const CHANNELS: (u32, u32) = (1, MAX_CHANNELS);
}

impl Capture for MockCapture {
    fn outputs(
        config: &MockCaptureConfig,
        ctx: &StageContext<'_>,
    ) -> PluginResult<Vec<OutputPort>> {
        let plan = plan(config)?;
        Ok(vec![OutputPort::new("out", ctx.format(plan.channels))])
    }

    fn new(config: MockCaptureConfig, ctx: &StageContext<'_>) -> PluginResult<Self> {
        let plan = plan(&config)?;
        let state = stage_state(Self::NAME, ctx.stage_id());
        let crash = plan.faults.crash_site(Self::NAME, ctx.stage_id())?;
        Ok(MockCapture {
            crash,
            plan,
            length: config.frames,
            sample_rate: ctx.sample_rate(),
            // A restarted stage continues the signal where the failed instance left it.
            frame: state.next_frame.load(Ordering::Relaxed),
            state,
            discontinuity: false,
        })
    }

    fn start(&mut self) -> PluginResult<()> {
        if self.device_gone() {
            return Err(self.gone_error());
        }
        self.plan.faults.start(&self.state, Self::NAME)
    }

    fn read(&mut self, out: &mut OutputBlock<'_>) -> PluginResult<ReadStatus> {
        if !self.state.read_once.swap(true, Ordering::Relaxed) {
            // The stage's first read in this process. Usually the host's position is 0 here; a
            // stage restarted in a fresh process (the host isolates it in a child and starts a
            // new one) continues the signal where the host's stream is. In-process restarts
            // continue from the stage state instead (they never get here).
            self.frame = out.position();
            self.state.next_frame.store(self.frame, Ordering::Relaxed);
        }
        if self.device_gone() {
            return Err(self.gone_error());
        }
        if self.length.is_some_and(|len| self.frame >= len) {
            out.set_frames(0);
            return Ok(ReadStatus::Finished);
        }
        let block = self
            .plan
            .faults
            .block(&self.state, &mut self.crash, Self::NAME)?;
        if self.plan.lost_at == Some(block) && self.state.fire(Fired::DeviceLost) {
            self.state.lost_frame.store(self.frame, Ordering::Relaxed);
            self.state.lost_at_ms.store(now_ms() + 1, Ordering::Relaxed);
            return Err(self.gone_error());
        }
        if out.channels() != self.plan.channels {
            return Err(PluginError::format(format!(
                "the host passed a {}-channel buffer to a {}-channel mock-capture",
                out.channels(),
                self.plan.channels
            )));
        }
        let capacity = u64::from(out.capacity_frames());
        let frames = match self.length {
            Some(len) => capacity.min(len - self.frame),
            None => capacity,
        };
        out.set_frames(frames as u32);
        let ch = self.plan.channels as usize;
        for (i, f) in out.samples_mut().chunks_exact_mut(ch).enumerate() {
            let frame = self.frame + i as u64;
            for (c, s) in f.iter_mut().enumerate() {
                *s = encode(frame, c as u32);
            }
        }
        out.set_position(self.frame);
        out.set_flags(if std::mem::take(&mut self.discontinuity) {
            FLAG_DISCONTINUITY
        } else {
            0
        });
        self.frame += frames;
        self.state.next_frame.store(self.frame, Ordering::Relaxed);
        Ok(match self.length {
            Some(len) if self.frame >= len => ReadStatus::Finished,
            _ => ReadStatus::More,
        })
    }

    fn length_frames(&self) -> Option<u64> {
        self.length
    }
}

impl MockCapture {
    /// True while the simulated device is lost. When it comes back, skips the frames of the
    /// outage (as a real device would lose them) and flags the next block.
    fn device_gone(&mut self) -> bool {
        let lost_at = self.state.lost_at_ms.load(Ordering::Relaxed);
        if lost_at == 0 || self.state.recovered.load(Ordering::Relaxed) {
            return false;
        }
        let Some(back_after) = self.plan.back_after_ms else {
            return true;
        };
        if now_ms() + 1 < lost_at + back_after {
            return true;
        }
        if !self.state.recovered.swap(true, Ordering::Relaxed) {
            let outage = back_after * u64::from(self.sample_rate) / 1000;
            self.frame = self.state.lost_frame.load(Ordering::Relaxed) + outage;
            self.state.next_frame.store(self.frame, Ordering::Relaxed);
            self.discontinuity = true;
        }
        false
    }

    fn gone_error(&self) -> PluginError {
        let when = match self.plan.back_after_ms {
            Some(ms) => format!("back {ms} ms after the loss"),
            None => "never back".to_string(),
        };
        PluginError::new(
            ErrorKind::DeviceLost,
            format!("mock-capture: the simulated device is lost ({when})"),
        )
    }
}
