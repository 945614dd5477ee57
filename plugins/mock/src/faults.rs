//! Faults every mock can inject, and the per-stage state that makes each fire once.
//!
//! State is kept per stage (plugin kind + stage id) for the life of the process, not per
//! instance: when the host restarts a failed stage it builds a new instance, and that instance
//! must neither fire the same fault again nor start the signal over. A test that builds several
//! instances in one process gives each stage its own id.
//!
//! The crash faults (`crash` + `crash_at_block`, see [`crate::crash`]) also persist "fired" in a
//! marker file, so that they fire once per stage even when each instance runs in a fresh process.
//! The other faults, the block count and the signal position are per process.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tapeline_plugin_api::prelude::*;

use crate::crash::{Crash, CrashSite};

/// The error kind `error_at_block` returns.
#[derive(Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    InvalidConfig,
    UnsupportedFormat,
    DeviceLost,
    Io,
    #[default]
    Other,
}

impl From<FaultKind> for ErrorKind {
    fn from(k: FaultKind) -> Self {
        match k {
            FaultKind::InvalidConfig => ErrorKind::InvalidConfig,
            FaultKind::UnsupportedFormat => ErrorKind::UnsupportedFormat,
            FaultKind::DeviceLost => ErrorKind::DeviceLost,
            FaultKind::Io => ErrorKind::Io,
            FaultKind::Other => ErrorKind::Other,
        }
    }
}

/// Adds the fault keys every mock accepts to a config struct. (`#[serde(flatten)]` cannot be
/// combined with `deny_unknown_fields`, so the keys are repeated by this macro instead.)
macro_rules! mock_config {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Deserialize, JsonSchema, Debug, Default)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fm])* pub $f: $t,)*
            /// Panic inside the call for this block (0 = the stage's first block). Fires once per
            /// stage.
            pub panic_at_block: Option<u64>,
            /// Return an error (of `error_kind`) from the call for this block. Fires once per
            /// stage.
            pub error_at_block: Option<u64>,
            /// Kind of the `error_at_block` error: "invalid-config", "unsupported-format",
            /// "device-lost", "io" or "other" (default).
            pub error_kind: Option<$crate::faults::FaultKind>,
            /// Block at which the call hangs for `stall_ms`. Fires once per stage.
            pub stall_at_block: Option<u64>,
            /// How long the `stall_at_block` call hangs, in milliseconds.
            pub stall_ms: Option<u64>,
            /// Sleep this many microseconds in every block's call, to make the stage slow.
            pub slow_us: Option<u64>,
            /// Fail this many times to start (capture: `start`; process and storage: the
            /// constructor) before succeeding; counted per stage across restarts.
            #[serde(default)]
            pub fail_start_times: u32,
            /// Crash in the call for block `crash_at_block`, for real: "segv" (a write through a
            /// null pointer: SIGSEGV), "abort" (SIGABRT), "stack-overflow" (endless recursion),
            /// "exit" (the process exits with code 3), "oom" (allocates and fills memory until
            /// the allocator fails or the system kills the process), "thread-panic" (a thread
            /// of the plugin's own panics; the call returns normally) or "hang" (the call never
            /// returns). In-process, all but "thread-panic" end or block the host. Fires once
            /// per stage, also when each instance runs in a fresh process (a marker file in the
            /// temp folder, per run and stage). Only with `crash_at_block`.
            pub crash: Option<$crate::crash::CrashKind>,
            /// Block whose call performs `crash` (0 = the stage's first block in this process).
            /// Only with `crash`.
            pub crash_at_block: Option<u64>,
        }

        impl $name {
            pub(crate) fn faults(&self) -> PluginResult<$crate::faults::Faults> {
                Ok($crate::faults::Faults::new(
                    self.panic_at_block,
                    self.error_at_block,
                    self.error_kind,
                    self.stall_at_block,
                    self.stall_ms,
                    self.slow_us,
                    self.fail_start_times,
                )?
                .with_crash($crate::crash::Crash::from_config(
                    self.crash,
                    self.crash_at_block,
                )?))
            }
        }
    };
}
pub(crate) use mock_config;

/// The validated fault settings of one stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    panic_at: Option<u64>,
    error_at: Option<(u64, ErrorKind)>,
    stall_at: Option<(u64, Duration)>,
    slow: Option<Duration>,
    fail_start_times: u32,
    crash: Option<Crash>,
}

impl Faults {
    pub fn new(
        panic_at_block: Option<u64>,
        error_at_block: Option<u64>,
        error_kind: Option<FaultKind>,
        stall_at_block: Option<u64>,
        stall_ms: Option<u64>,
        slow_us: Option<u64>,
        fail_start_times: u32,
    ) -> PluginResult<Faults> {
        let error_at = match (error_at_block, error_kind) {
            (Some(b), kind) => Some((b, kind.unwrap_or_default().into())),
            (None, Some(_)) => {
                return Err(PluginError::config(
                    "error_kind",
                    "only applies together with `error_at_block`",
                ))
            }
            (None, None) => None,
        };
        let stall_at = match (stall_at_block, stall_ms) {
            (Some(b), Some(ms)) => Some((b, Duration::from_millis(ms))),
            (Some(_), None) => {
                return Err(PluginError::config(
                    "stall_ms",
                    "`stall_at_block` needs `stall_ms`, how long the call hangs",
                ))
            }
            (None, Some(_)) => {
                return Err(PluginError::config(
                    "stall_ms",
                    "only applies together with `stall_at_block`",
                ))
            }
            (None, None) => None,
        };
        Ok(Faults {
            panic_at: panic_at_block,
            error_at,
            stall_at,
            slow: slow_us.map(Duration::from_micros),
            fail_start_times,
            crash: None,
        })
    }

    /// Add a crash fault (`crash` + `crash_at_block`).
    pub fn with_crash(self, crash: Option<Crash>) -> Faults {
        Faults { crash, ..self }
    }

    pub fn crash(&self) -> Option<Crash> {
        self.crash
    }

    /// What an instance of stage `stage_id` of mock `plugin` needs to perform the crash fault
    /// (nothing without one). For the constructor: it may allocate and start a thread.
    pub fn crash_site(&self, plugin: &'static str, stage_id: &str) -> PluginResult<CrashSite> {
        let once: Vec<Fired> = [
            (self.panic_at.is_some(), Fired::Panic),
            (self.error_at.is_some(), Fired::Error),
            (self.stall_at.is_some(), Fired::Stall),
        ]
        .into_iter()
        .filter_map(|(set, f)| set.then_some(f))
        .collect();
        Ok(CrashSite::for_stage(self.crash, plugin, stage_id)?.with_once(&once, plugin, stage_id))
    }

    /// Count a start attempt; fail while fewer than `fail_start_times` attempts have failed.
    pub fn start(&self, state: &StageState, name: &str) -> PluginResult<()> {
        let limit = self.fail_start_times;
        match state
            .start_failures
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            }) {
            Ok(failed) => Err(PluginError::io(format!(
                "{name}: injected start failure {} of {limit} (fail_start_times)",
                failed + 1
            ))),
            Err(_) => Ok(()),
        }
    }

    /// Run the faults due at the stage's next block and return that block's index. Allocates
    /// only when it fails (or crashes).
    pub fn block(&self, state: &StageState, site: &mut CrashSite, name: &str) -> PluginResult<u64> {
        let block = state.blocks.fetch_add(1, Ordering::Relaxed);
        if let Some(d) = self.slow {
            std::thread::sleep(d);
        }
        if let Some((at, d)) = self.stall_at {
            if at == block && state.fire(Fired::Stall) && site.first_in_run(Fired::Stall) {
                std::thread::sleep(d);
            }
        }
        if let Some(c) = self.crash {
            if c.at_block == block && state.fire(Fired::Crash) {
                site.fire(c.kind, name, block)?;
            }
        }
        if self.panic_at == Some(block)
            && state.fire(Fired::Panic)
            && site.first_in_run(Fired::Panic)
        {
            panic!("{name}: injected panic at block {block} (panic_at_block)");
        }
        if let Some((at, kind)) = self.error_at {
            if at == block && state.fire(Fired::Error) && site.first_in_run(Fired::Error) {
                return Err(PluginError::new(
                    kind,
                    format!(
                        "{name}: injected {} error at block {block} (error_at_block)",
                        kind.as_str()
                    ),
                ));
            }
        }
        Ok(block)
    }
}

/// Faults that fire once per stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    Panic = 1,
    Error = 2,
    Stall = 4,
    DeviceLost = 8,
    FinalizeFailed = 16,
    Crash = 32,
}

impl Fired {
    /// The fault's name in its marker file.
    pub fn name(self) -> &'static str {
        match self {
            Fired::Panic => "panic",
            Fired::Error => "error",
            Fired::Stall => "stall",
            Fired::DeviceLost => "device-lost",
            Fired::FinalizeFailed => "finalize-failed",
            Fired::Crash => "crash",
        }
    }
}

/// What one stage has done so far, shared by every instance built for it in this process.
/// Atomics only, so the audio path never locks.
#[derive(Default, Debug)]
pub struct StageState {
    pub blocks: AtomicU64,
    fired: AtomicU32,
    start_failures: AtomicU32,
    /// Capture: the next frame to produce. Storage: the next frame expected.
    pub next_frame: AtomicU64,
    /// Capture: milliseconds since [`epoch`] at which the device was lost, plus one; 0 = never.
    pub lost_at_ms: AtomicU64,
    /// Capture: the frame the device was lost at.
    pub lost_frame: AtomicU64,
    pub recovered: AtomicBool,
    /// Capture: some instance of the stage has called `read` in this process.
    pub read_once: AtomicBool,
    /// Storage totals over every instance of the stage.
    pub frames_written: AtomicU64,
    pub gaps: AtomicU64,
    pub missing_frames: AtomicU64,
    pub announced_gaps: AtomicU64,
    pub announced_missing_frames: AtomicU64,
    pub reordered: AtomicU64,
    pub corrupt_frames: AtomicU64,
    pub swapped_channels: AtomicU64,
}

impl StageState {
    /// Mark `fault` as fired; true the first time only.
    pub fn fire(&self, fault: Fired) -> bool {
        let bit = fault as u32;
        self.fired.fetch_or(bit, Ordering::Relaxed) & bit == 0
    }
}

/// The state of stage `id` of mock `plugin`, created on first use.
pub fn stage_state(plugin: &'static str, id: &str) -> Arc<StageState> {
    static STAGES: Mutex<Vec<(&'static str, String, Arc<StageState>)>> = Mutex::new(Vec::new());
    epoch();
    let mut stages = STAGES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, _, s)) = stages.iter().find(|(p, i, _)| *p == plugin && i == id) {
        return Arc::clone(s);
    }
    let s = Arc::new(StageState::default());
    stages.push((plugin, id.to_string(), Arc::clone(&s)));
    s
}

/// The instant time in this library is measured from.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since [`epoch`].
pub fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}
