//! A stage's edges, and the hand-off slot that lets the coordinator take them from a thread
//! stuck in a plugin call and give them to a fresh one.
//!
//! The stage thread owns its [`StageIo`] except while it is inside a plugin call: then the
//! edges wait in the stage's [`IoSlot`] (a lock-free pointer swap, no allocation). When the call
//! returns, the thread takes them back. If the watchdog gave the call up meanwhile, the slot is
//! empty and the thread ends without touching anything shared; the coordinator has already
//! handed the edges to a new thread with a new instance.

use crossbeam_utils::atomic::AtomicCell;
use tapeline_plugin_api::abi::StorageReport;

use crate::discipline::buffers::{Consumer, DropReason, Producer};

/// Everything a stage thread reads from and writes to, and where its output stands.
#[derive(Debug, Default)]
pub struct StageIo {
    /// One consumer per input, in `inputs` order.
    pub inputs: Vec<Consumer>,
    /// Per output port, one producer per consuming edge (fan-out).
    pub outputs: Vec<Vec<Producer>>,
    /// Per output port, the stream position of the next frame.
    pub positions: Vec<u64>,
    /// Frames taken off the inputs for the call in progress: lost if that call is given up.
    pub in_flight: u64,
    /// Storage: what instances that are gone (replaced by a restart, or given up in a stuck
    /// call) wrote, and what the current instance has written so far.
    pub written_before: StorageReport,
    pub written_now: u64,
}

impl StageIo {
    /// A block the stage took and will not pass on, counted on every output edge.
    pub fn count_dropped(&self, reason: DropReason, frames: u64) {
        for port in &self.outputs {
            for p in port {
                p.count_dropped(reason, 1, frames);
            }
        }
    }
}

/// Where a stage's edges wait while its thread is inside a plugin call.
pub struct IoSlot(AtomicCell<Option<Box<StageIo>>>);

impl std::fmt::Debug for IoSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IoSlot")
    }
}

impl IoSlot {
    pub fn new(io: Box<StageIo>) -> Self {
        IoSlot(AtomicCell::new(Some(io)))
    }

    /// Leave the edges here for the length of a plugin call.
    pub fn park(&self, io: Box<StageIo>) {
        self.0.store(Some(io));
    }

    /// Take the edges: the stage thread after its call, or the coordinator giving the call up.
    /// Exactly one of them gets them.
    pub fn take(&self) -> Option<Box<StageIo>> {
        self.0.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_is_lock_free_and_hands_the_edges_to_one_taker() {
        assert!(AtomicCell::<Option<Box<StageIo>>>::is_lock_free());
        let slot = std::sync::Arc::new(IoSlot::new(Box::default()));
        let io = slot.take().expect("the edges start in the slot");
        slot.park(io);
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let s = slot.clone();
                std::thread::spawn(move || s.take().is_some())
            })
            .collect();
        let winners = racers
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&won| won)
            .count();
        assert_eq!(winners, 1);
    }
}
