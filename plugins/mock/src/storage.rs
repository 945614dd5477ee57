//! `mock-storage`: verifies the mock signal it receives and reports every gap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tapeline_plugin_api::prelude::*;
use tapeline_plugin_api::serde::Serialize;

use crate::crash::CrashSite;
use crate::faults::{mock_config, stage_state, Faults, Fired, StageState};
use crate::signal::{BlockCheck, Verifier, MAX_CHANNELS};

mock_config! {
    /// `mock-storage` settings.
    pub struct MockStorageConfig {
        /// Write a JSON report of what arrived (frames, gaps, missing frames, reordered and
        /// corrupt frames, frames with swapped channels, totals for the stage) to this file
        /// when finalised. Missing folders are created.
        pub report: Option<String>,
        /// Fail `write` at the first gap, reordering, corrupt frame or frame with swapped
        /// channels nobody announced.
        #[serde(default)]
        pub fail_on_gap: bool,
        /// Make `finalize` fail (after writing the report). Fires once per stage.
        #[serde(default)]
        pub fail_finalize: bool,
    }
}

pub struct MockStorage {
    faults: Faults,
    state: Arc<StageState>,
    crash: CrashSite,
    stage_id: String,
    report: Option<std::path::PathBuf>,
    fail_on_gap: bool,
    fail_finalize: bool,
    verifier: Verifier,
    frames_written: u64,
}

/// The report file, totals over every instance of the stage in this process.
#[derive(Serialize, Debug)]
#[serde(crate = "tapeline_plugin_api::serde")]
struct Report<'a> {
    stage: &'a str,
    frames_written: u64,
    gaps: u64,
    missing_frames: u64,
    announced_gaps: u64,
    announced_missing_frames: u64,
    reordered: u64,
    corrupt_frames: u64,
    swapped_channels: u64,
    next_expected_frame: u64,
}

impl Describe for MockStorage {
    type Config = MockStorageConfig;
    const NAME: &'static str = "mock-storage";
    const DESCRIPTION: &'static str =
        "Test sink: verifies the mock-capture sequence and reports gaps, with injectable faults";
    const CHANNELS: (u32, u32) = (1, MAX_CHANNELS);
}

impl Storage for MockStorage {
    fn check(config: &MockStorageConfig, ctx: &StageContext<'_>) -> PluginResult<()> {
        config.faults()?;
        single_input(ctx).map(|_| ())
    }

    fn new(config: MockStorageConfig, ctx: &StageContext<'_>) -> PluginResult<Self> {
        let faults = config.faults()?;
        single_input(ctx)?;
        let state = stage_state(Self::NAME, ctx.stage_id());
        faults.start(&state, Self::NAME)?;
        let crash = faults.crash_site(Self::NAME, ctx.stage_id())?;
        Ok(MockStorage {
            faults,
            crash,
            stage_id: ctx.stage_id().to_string(),
            report: config.report.as_ref().map(|p| ctx.resolve(p)),
            fail_on_gap: config.fail_on_gap,
            fail_finalize: config.fail_finalize,
            // A restarted stage expects the frame the failed instance expected next.
            verifier: Verifier::new(state.next_frame.load(Ordering::Relaxed)),
            state,
            frames_written: 0,
        })
    }

    fn write(&mut self, block: &InputBlock<'_>) -> PluginResult<()> {
        self.faults
            .block(&self.state, &mut self.crash, Self::NAME)?;
        let expected = self.verifier.expected;
        let found = self.verifier.check(block);
        self.frames_written += u64::from(block.frames());
        self.publish(block.frames(), &found);
        if self.fail_on_gap && found.is_bad() {
            return Err(PluginError::other(format!(
                "mock-storage: the sequence broke in the block at frame {expected}: \
                 {} gap(s), {} missing, {} reordered, {} corrupt frame(s), {} frame(s) with \
                 swapped channels",
                found.gaps,
                found.missing_frames,
                found.reordered,
                found.corrupt_frames,
                found.swapped_channels
            )));
        }
        Ok(())
    }

    fn finalize(&mut self) -> PluginResult<StorageReport> {
        let mut done = StorageReport::new().frames(self.frames_written);
        if let Some(path) = &self.report {
            let s = &self.state;
            let report = Report {
                stage: &self.stage_id,
                frames_written: s.frames_written.load(Ordering::Relaxed),
                gaps: s.gaps.load(Ordering::Relaxed),
                missing_frames: s.missing_frames.load(Ordering::Relaxed),
                announced_gaps: s.announced_gaps.load(Ordering::Relaxed),
                announced_missing_frames: s.announced_missing_frames.load(Ordering::Relaxed),
                reordered: s.reordered.load(Ordering::Relaxed),
                corrupt_frames: s.corrupt_frames.load(Ordering::Relaxed),
                swapped_channels: s.swapped_channels.load(Ordering::Relaxed),
                next_expected_frame: s.next_frame.load(Ordering::Relaxed),
            };
            let text = serde_json::to_string_pretty(&report)
                .map_err(|e| PluginError::other(e.to_string()))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    PluginError::io(format!(
                        "mock-storage: creating the folder {}: {e}",
                        dir.display()
                    ))
                })?;
            }
            std::fs::write(path, text + "\n").map_err(|e| {
                PluginError::io(format!("mock-storage: writing {}: {e}", path.display()))
            })?;
            done.push_file(path);
        }
        if self.fail_finalize && self.state.fire(Fired::FinalizeFailed) {
            return Err(PluginError::io(
                "mock-storage: injected finalize failure (fail_finalize)",
            ));
        }
        Ok(done)
    }
}

impl MockStorage {
    /// Add one block's findings to the stage totals (atomics: no lock on the audio path).
    fn publish(&self, frames: u32, found: &BlockCheck) {
        let s = &self.state;
        let add = |counter: &AtomicU64, n: u64| {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(&s.frames_written, u64::from(frames));
        add(&s.gaps, found.gaps);
        add(&s.missing_frames, found.missing_frames);
        add(&s.announced_gaps, found.announced_gaps);
        add(&s.announced_missing_frames, found.announced_missing_frames);
        add(&s.reordered, found.reordered);
        add(&s.corrupt_frames, found.corrupt_frames);
        add(&s.swapped_channels, found.swapped_channels);
        s.next_frame
            .store(self.verifier.expected, Ordering::Relaxed);
    }
}
