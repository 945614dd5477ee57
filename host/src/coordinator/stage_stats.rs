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
    /// Per channel, the highest peak published since the run started (a peak-hold over every
    /// block, whatever the monitoring interval), as [`ordered`] bits; 0: none yet.
    pub peak_hold: [AtomicU32; MAX_LEVELS],
    /// Per channel, the highest peak published since monitoring last took it
    /// ([`StageStats::take_levels`]), as [`ordered`] bits; 0: none since.
    pub peak_since: [AtomicU32; MAX_LEVELS],
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
    /// The plugin's own counters (`Describe::STATS`), read by the stage thread.
    pub plugin: super::plugin_stats::PublishedStats,
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
            peak_hold: std::array::from_fn(|_| AtomicU32::new(0)),
            peak_since: std::array::from_fn(|_| AtomicU32::new(0)),
            gap_frames: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
            latency_max_us: AtomicU64::new(0),
            latency_blocks: AtomicU64::new(0),
            dropped_frames: AtomicU64::new(0),
            length_frames: AtomicU64::new(u64::MAX),
            thread_id: AtomicU32::new(0),
            flush_failures: AtomicU64::new(0),
            plugin: Default::default(),
        }
    }
}

impl StageStats {
    /// Entering a plugin call: the watchdog measures from here.
    pub(crate) fn enter(&self, call: Call, epoch: Instant) {
        self.enter_at(call, epoch.elapsed());
    }

    /// [`enter`](Self::enter) at `since_epoch` after the run started (a time already read).
    pub(crate) fn enter_at(&self, call: Call, since_epoch: Duration) {
        self.call.store(call as u8, Ordering::Relaxed);
        // At least 1: 0 means "not in a call".
        let now = since_epoch.as_micros() as u64 + 1;
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

    /// Publish a processor's meter levels after a block, and fold each peak into the
    /// peak-holds (no allocation, no lock: fixed slots, `fetch_max`).
    pub(crate) fn publish_levels(&self, levels: &[tapeline_plugin_api::Level]) {
        let n = levels.len().min(MAX_LEVELS);
        for (i, l) in levels[..n].iter().enumerate() {
            if !l.peak_db.is_nan() {
                let peak = ordered(l.peak_db);
                self.peak_hold[i].fetch_max(peak, Ordering::Relaxed);
                self.peak_since[i].fetch_max(peak, Ordering::Relaxed);
            }
            self.levels[2 * i].store(l.peak_db.to_bits(), Ordering::Relaxed);
            // Release: whoever reads this RMS sees the peaks folded above.
            self.levels[2 * i + 1].store(l.rms_db.to_bits(), Ordering::Release);
        }
        self.levels_len.store(n as u32, Ordering::Release);
    }

    /// The levels per channel for one monitoring snapshot: the highest peak published since
    /// the previous call (the last block's, if none was since), the last RMS (never above that
    /// peak) and the highest peak of the run. Only the monitor calls it: it resets the
    /// since-last-call peaks.
    pub fn take_levels(&self) -> Vec<TakenLevel> {
        let n = self.levels_len.load(Ordering::Acquire) as usize;
        (0..n)
            .map(|i| {
                // The RMS first: the peaks taken after it include the peak of its block.
                let rms_db = f32::from_bits(self.levels[2 * i + 1].load(Ordering::Acquire));
                let last = f32::from_bits(self.levels[2 * i].load(Ordering::Relaxed));
                let since = unordered(self.peak_since[i].swap(0, Ordering::AcqRel));
                let peak_db = since.map_or(last, |p| p.max(last));
                let hold_db = unordered(self.peak_hold[i].load(Ordering::Relaxed))
                    .map_or(peak_db, |h| h.max(peak_db));
                TakenLevel {
                    peak_db,
                    rms_db: rms_db.min(peak_db),
                    hold_db,
                }
            })
            .collect()
    }

    /// The loudest peak published on any channel since the run started, in dBFS.
    pub fn max_peak_db(&self) -> Option<f32> {
        let n = self.levels_len.load(Ordering::Acquire) as usize;
        self.peak_hold[..n.min(MAX_LEVELS)]
            .iter()
            .filter_map(|p| unordered(p.load(Ordering::Relaxed)))
            .reduce(f32::max)
    }

    pub(crate) fn record_latency(&self, us: u64) {
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        self.latency_max_us.fetch_max(us, Ordering::Relaxed);
        self.latency_blocks.fetch_add(1, Ordering::Relaxed);
    }

    /// One call that took a block (counted in `blocks`).
    pub(crate) fn record_busy(&self, busy: Duration, frames_in: u64, frames_out: u64) {
        self.blocks.fetch_add(1, Ordering::Relaxed);
        self.record_call(busy, frames_in, frames_out);
    }

    /// One call that took no block (a processor's tail): its time and frames, not a block.
    pub(crate) fn record_call(&self, busy: Duration, frames_in: u64, frames_out: u64) {
        let ns = busy.as_nanos() as u64;
        self.frames_in.fetch_add(frames_in, Ordering::Relaxed);
        self.frames_out.fetch_add(frames_out, Ordering::Relaxed);
        self.busy_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_block_ns.fetch_max(ns, Ordering::Relaxed);
    }
}

/// One channel's levels as [`StageStats::take_levels`] gives them, in dBFS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TakenLevel {
    /// The highest peak since the previous snapshot.
    pub peak_db: f32,
    /// The last RMS, never above `peak_db`.
    pub rms_db: f32,
    /// The highest peak since the run started.
    pub hold_db: f32,
}

/// `x`'s bits mapped so that unsigned order is the order of the floats (not NaN), and never
/// 0 (which stands for "none").
fn ordered(x: f32) -> u32 {
    let bits = x.to_bits();
    let key = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    };
    key.max(1)
}

/// The float [`ordered`] made `key` from; `None` for 0.
fn unordered(key: u32) -> Option<f32> {
    if key == 0 {
        return None;
    }
    let bits = if key >> 31 == 1 {
        key & !(1 << 31)
    } else {
        !key
    };
    Some(f32::from_bits(bits))
}

impl StageStats {
    /// A capture's source skipped `frames` (a device gap), filled with silence or skipped.
    pub(crate) fn count_gap(&self, frames: u64) {
        self.gaps.fetch_add(1, Ordering::Relaxed);
        self.gap_frames.fetch_add(frames, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapeline_plugin_api::Level;

    fn level(peak_db: f32, rms_db: f32) -> Level {
        Level { peak_db, rms_db }
    }

    #[test]
    fn ordered_keys_sort_like_the_floats_and_round_trip() {
        let xs = [
            f32::NEG_INFINITY,
            -200.0,
            -40.0,
            -1.0,
            -f32::MIN_POSITIVE,
            -0.0,
            0.0,
            f32::MIN_POSITIVE,
            6.0,
            f32::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(ordered(w[0]) <= ordered(w[1]), "{} {}", w[0], w[1]);
        }
        for x in xs {
            assert_eq!(unordered(ordered(x)).map(f32::to_bits), Some(x.to_bits()));
        }
        assert_eq!(unordered(0), None);
    }

    #[test]
    fn peaks_are_held_over_every_block_between_snapshots_and_over_the_run() {
        let s = StageStats::default();
        assert_eq!(s.max_peak_db(), None);
        s.publish_levels(&[level(-1.0, -4.0), level(-50.0, -53.0)]);
        s.publish_levels(&[level(-40.0, -43.0), level(-10.0, -13.0)]);
        s.publish_levels(&[level(-40.0, -43.0), level(-60.0, -63.0)]);
        let taken = s.take_levels();
        assert_eq!(
            (taken[0].peak_db, taken[0].rms_db, taken[0].hold_db),
            (-1.0, -43.0, -1.0)
        );
        assert_eq!(
            (taken[1].peak_db, taken[1].rms_db, taken[1].hold_db),
            (-10.0, -63.0, -10.0)
        );
        // Nothing new: the last block's peak; the run's peak is still held.
        let taken = s.take_levels();
        assert_eq!((taken[0].peak_db, taken[0].hold_db), (-40.0, -1.0));
        s.publish_levels(&[level(-30.0, -20.0), level(-70.0, -73.0)]);
        let taken = s.take_levels();
        // An RMS above its peak (a plugin's rounding, or its own windows) reads as the peak.
        assert_eq!((taken[0].peak_db, taken[0].rms_db), (-30.0, -30.0));
        assert_eq!(s.max_peak_db(), Some(-1.0));
    }
}
