//! What outlives one instance of a stage: where its stream is and when its device was lost.
//!
//! The host recovers a lost device by building a new instance (`on_error = { policy =
//! "restart", ... }`). The new instance continues the old one's timeline: its first block's
//! position is the old position plus the time the device was away, flagged as a
//! discontinuity, so the host fills the gap with silence and counts it. Kept per stage id for
//! the life of the process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// One stage's record.
#[derive(Debug, Default)]
pub struct StageRecord {
    /// The next frame position the stage will deliver.
    pub next_position: AtomicU64,
    /// When the device was lost, in ns since [`epoch`] plus one; 0 while it is not.
    lost_at: AtomicU64,
}

impl StageRecord {
    /// Note a loss: the stream ended at `position`, at `at_ns` (since [`epoch`]). The first
    /// loss counts until a new instance resumes.
    pub fn mark_lost(&self, position: u64, at_ns: u64) {
        self.next_position.store(position, Ordering::Relaxed);
        if self
            .lost_at
            .compare_exchange(0, at_ns + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            // A loss is recorded already and not yet resumed from: that one keeps counting.
        }
    }

    /// When the device was lost (ns since [`epoch`]), if it was.
    pub fn lost_at_ns(&self) -> Option<u64> {
        match self.lost_at.load(Ordering::Acquire) {
            0 => None,
            t => Some(t - 1),
        }
    }

    /// The loss is accounted for.
    pub fn clear_lost(&self) {
        self.lost_at.store(0, Ordering::Release);
    }
}

/// The process-wide time origin of every timestamp here.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The record of stage `stage_id`, made on first use.
pub fn stage_record(stage_id: &str) -> Arc<StageRecord> {
    static RECORDS: OnceLock<Mutex<HashMap<String, Arc<StageRecord>>>> = OnceLock::new();
    let map = RECORDS.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(stage_id.to_string()).or_default().clone()
}
