//! Per-stage counters: written by the stage thread with plain atomics, read by the watchdog,
//! monitoring and the summary. The stage thread never waits for a reader.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Most level meters (channels) a stage publishes to monitoring.
pub const MAX_LEVELS: usize = 64;

/// The plugin call a stage thread is in, for the watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Call {
    None = 0,
    Read = 1,
    Process = 2,
    Finish = 3,
    Write = 4,
    Flush = 5,
}

impl Call {
    pub fn as_str(self) -> &'static str {
        match self {
            Call::None => "none",
            Call::Read => "read",
            Call::Process => "process",
            Call::Finish => "finish",
            Call::Write => "write",
            Call::Flush => "flush",
        }
    }
    fn from_u8(v: u8) -> Call {
        match v {
            1 => Call::Read,
            2 => Call::Process,
            3 => Call::Finish,
            4 => Call::Write,
            5 => Call::Flush,
            _ => Call::None,
        }
    }
}

/// Per-stage counters, written by the stage thread, read by monitoring and the summary. All
/// plain atomics: the stage thread never waits for a reader.
#[derive(Debug)]
pub struct StageStats {
    pub blocks: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub busy_ns: AtomicU64,
    pub max_block_ns: AtomicU64,
    pub errors: AtomicU64,
    pub restarts: AtomicU32,
    /// Microseconds since the run started at which the current plugin call began (0: none).
    pub call_since_us: AtomicU64,
    /// Which plugin call (a [`Call`]).
    pub call: AtomicU8,
    /// Set by the watchdog when the current call overran `stall_timeout_ms` under
    /// `on_error = restart`: the stage rebuilds its instance once the call returns.
    pub restart_after_stall: AtomicBool,
    /// Meter levels (peak, RMS in dBFS as f32 bits), `levels_len` pairs, from `levels()`.
    pub levels: [AtomicU32; 2 * MAX_LEVELS],
    pub levels_len: AtomicU32,
    /// Frames a capture's source skipped (a device gap), and silence inserted for them.
    pub gap_frames: AtomicU64,
    pub gaps: AtomicU64,
    /// Capture to storage latency of the blocks this storage stage wrote, in microseconds.
    pub latency_sum_us: AtomicU64,
    pub latency_max_us: AtomicU64,
    pub latency_blocks: AtomicU64,
    /// Frames a storage stage took off its input and could not write (its plugin failed on
    /// them, or the stage had failed): the stage's own drops, as it has no output edge.
    pub dropped_frames: AtomicU64,
    /// The kernel's id of the stage's thread, for the crash note.
    pub thread_id: AtomicU32,
    /// Frames a finite capture will produce in all (`u64::MAX`: unknown or endless).
    pub length_frames: AtomicU64,
    /// Idle-time flushes of a storage stage that failed (finalise reports for good).
    pub flush_failures: AtomicU64,
}

impl Default for StageStats {
    fn default() -> Self {
        StageStats {
            blocks: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            max_block_ns: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            restarts: AtomicU32::new(0),
            call_since_us: AtomicU64::new(0),
            call: AtomicU8::new(0),
            restart_after_stall: AtomicBool::new(false),
            levels: std::array::from_fn(|_| AtomicU32::new(0)),
            levels_len: AtomicU32::new(0),
            gap_frames: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
            latency_max_us: AtomicU64::new(0),
            latency_blocks: AtomicU64::new(0),
            dropped_frames: AtomicU64::new(0),
            length_frames: AtomicU64::new(u64::MAX),
            thread_id: AtomicU32::new(0),
            flush_failures: AtomicU64::new(0),
        }
    }
}

impl StageStats {
    /// Entering a plugin call: the watchdog measures from here.
    pub(crate) fn enter(&self, call: Call, epoch: Instant) {
        self.call.store(call as u8, Ordering::Relaxed);
        // At least 1: 0 means "not in a call".
        let now = epoch.elapsed().as_micros() as u64 + 1;
        self.call_since_us.store(now, Ordering::Release);
    }

    /// Back from the plugin call (or, for a call given up, the coordinator forgets it).
    pub(crate) fn leave(&self) {
        self.call_since_us.store(0, Ordering::Release);
        self.call.store(Call::None as u8, Ordering::Relaxed);
    }

    /// The plugin call in progress and since when (µs since the run started), if any.
    pub fn in_call(&self) -> Option<(Call, u64)> {
        let since = self.call_since_us.load(Ordering::Acquire);
        (since != 0).then(|| (Call::from_u8(self.call.load(Ordering::Relaxed)), since - 1))
    }

    /// Publish a processor's meter levels (no allocation: fixed slots).
    pub(crate) fn publish_levels(&self, levels: &[tapeline_plugin_api::Level]) {
        let n = levels.len().min(MAX_LEVELS);
        for (i, l) in levels[..n].iter().enumerate() {
            self.levels[2 * i].store(l.peak_db.to_bits(), Ordering::Relaxed);
            self.levels[2 * i + 1].store(l.rms_db.to_bits(), Ordering::Relaxed);
        }
        self.levels_len.store(n as u32, Ordering::Release);
    }

    /// The last published levels as (peak dBFS, RMS dBFS) per channel.
    pub fn levels(&self) -> Vec<(f32, f32)> {
        let n = self.levels_len.load(Ordering::Acquire) as usize;
        (0..n)
            .map(|i| {
                (
                    f32::from_bits(self.levels[2 * i].load(Ordering::Relaxed)),
                    f32::from_bits(self.levels[2 * i + 1].load(Ordering::Relaxed)),
                )
            })
            .collect()
    }

    pub(crate) fn record_latency(&self, us: u64) {
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        self.latency_max_us.fetch_max(us, Ordering::Relaxed);
        self.latency_blocks.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record(&self, started: Instant, frames_in: u64, frames_out: u64) {
        self.record_busy(started.elapsed(), frames_in, frames_out);
    }

    pub(crate) fn record_busy(&self, busy: Duration, frames_in: u64, frames_out: u64) {
        let ns = busy.as_nanos() as u64;
        self.blocks.fetch_add(1, Ordering::Relaxed);
        self.frames_in.fetch_add(frames_in, Ordering::Relaxed);
        self.frames_out.fetch_add(frames_out, Ordering::Relaxed);
        self.busy_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_block_ns.fetch_max(ns, Ordering::Relaxed);
    }
}

impl StageStats {
    /// A capture's source skipped `frames` (a device gap), filled with silence or skipped.
    pub(crate) fn count_gap(&self, frames: u64) {
        self.gaps.fetch_add(1, Ordering::Relaxed);
        self.gap_frames.fetch_add(frames, Ordering::Relaxed);
    }
}
