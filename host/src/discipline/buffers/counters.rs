//! An edge's counters (pushed, popped, dropped by reason, high-water mark) and the consistent
//! snapshot the monitor reads from them. See the module docs of `buffers` for the accounting.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64};

use crossbeam_channel::Receiver;
use crossbeam_utils::CachePadded;
use serde::{Deserialize, Serialize};

use super::wake_slot::WakeSlot;
use super::{Block, WhenFull, ORD};

/// Reads with a stable, consistent result before the snapshot gives up (see module docs).
const SNAPSHOT_SPINS: u32 = 64;
const SNAPSHOT_MAX_ATTEMPTS: u32 = 100_000;
#[derive(Default)]
pub(super) struct Counter {
    pub(super) blocks: AtomicU64,
    pub(super) frames: AtomicU64,
}

impl Counter {
    pub(super) fn add(&self, blocks: u64, frames: u64) {
        self.blocks.fetch_add(blocks, ORD);
        self.frames.fetch_add(frames, ORD);
    }
}

/// One reading of every monotonic counter, in a fixed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Reading {
    pushed: [u64; 2],
    popped: [u64; 2],
    dropped: [[u64; 2]; 3],
}

/// The counters of one edge, shared by its producer, its consumer and the monitor.
pub struct EdgeStats {
    pub(super) label: String,
    pub(super) channels: u32,
    pub(super) max_frames: u32,
    pub(super) capacity: u32,
    pub(super) when_full: WhenFull,
    /// Blocks (or room) a waiting end is woken for at once (see `EdgeSpec::wake_batch`).
    pub(super) wake_batch: u32,
    pub(super) pushed: Counter,
    /// Written by the consumer on every block, the counters above by the producer: on a cache
    /// line of its own, so the two threads do not take the line from each other per block.
    pub(super) popped: CachePadded<Counter>,
    pub(super) dropped: [Counter; 3],
    pub(super) high_water: AtomicU64,
    /// Set when the consumer is dropped.
    pub(super) closed: AtomicBool,
    /// Set when the producer is dropped: once the queue is empty, the consumer is done.
    pub(super) producer_gone: AtomicBool,
    /// Where the consumer waits for data.
    pub(super) consumer_wake: WakeSlot,
    /// Where a `Block` producer waits for room or for a pooled block.
    pub(super) producer_wake: WakeSlot,
    /// A receiver of the data channel: for measuring its length, and for the producer to evict
    /// (drop-oldest) or drain (after the consumer left). Holding it never keeps `recv` from
    /// seeing the producer's disconnection (that depends on senders only).
    pub(super) queue: Receiver<Block>,
}

impl fmt::Debug for EdgeStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdgeStats")
            .field("label", &self.label)
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl EdgeStats {
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn channels(&self) -> u32 {
        self.channels
    }

    pub fn when_full(&self) -> WhenFull {
        self.when_full
    }

    /// Blocks queued right now (measured, lock-free; may be stale by the time it returns).
    /// Close the edge from outside, as if its consumer were gone: a producer waiting for room
    /// returns `Closed` and later pushes fail. For a consumer stuck in a plugin call that will
    /// never take another block; what is queued stays counted as queued.
    pub fn close(&self) {
        self.closed.store(true, ORD);
        self.producer_wake.wake();
    }

    pub fn depth(&self) -> usize {
        self.queue.len()
    }

    fn read(&self) -> Reading {
        let pair = |c: &Counter| [c.blocks.load(ORD), c.frames.load(ORD)];
        Reading {
            pushed: pair(&self.pushed),
            popped: pair(&self.popped),
            dropped: [
                pair(&self.dropped[0]),
                pair(&self.dropped[1]),
                pair(&self.dropped[2]),
            ],
        }
    }

    fn build(&self, r: &Reading, depth: u64) -> EdgeSnapshot {
        let high_water = self.high_water.fetch_max(depth, ORD).max(depth);
        let dropped_frames: u64 = r.dropped.iter().map(|d| d[1]).sum();
        EdgeSnapshot {
            label: self.label.clone(),
            channels: self.channels,
            max_frames: self.max_frames,
            capacity: u64::from(self.capacity),
            depth,
            high_water,
            pushed: r.pushed[0],
            popped: r.popped[0],
            dropped_overflow: r.dropped[0][0],
            dropped_stage_error: r.dropped[1][0],
            dropped_shutdown: r.dropped[2][0],
            pushed_frames: r.pushed[1],
            popped_frames: r.popped[1],
            dropped_overflow_frames: r.dropped[0][1],
            dropped_stage_error_frames: r.dropped[1][1],
            dropped_shutdown_frames: r.dropped[2][1],
            queued_frames: r.pushed[1].saturating_sub(r.popped[1].saturating_add(dropped_frames)),
        }
    }

    /// A consistent reading of the edge (see the module docs). Allocates; not for the audio path.
    pub fn snapshot(&self) -> EdgeSnapshot {
        let mut attempt = 0;
        loop {
            let before = self.read();
            let depth = self.queue.len() as u64;
            let after = self.read();
            attempt += 1;
            if before == after {
                let snap = self.build(&after, depth);
                if snap.invariant_holds() || attempt >= SNAPSHOT_MAX_ATTEMPTS {
                    return snap;
                }
            } else if attempt >= SNAPSHOT_MAX_ATTEMPTS {
                return self.build(&after, depth);
            }
            if attempt < SNAPSHOT_SPINS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// A consistent reading of one edge's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeSnapshot {
    pub label: String,
    pub channels: u32,
    pub max_frames: u32,
    /// Most blocks queued at once.
    pub capacity: u64,
    /// Blocks queued at the snapshot's instant (measured channel length).
    pub depth: u64,
    /// Largest depth observed so far.
    pub high_water: u64,
    pub pushed: u64,
    pub popped: u64,
    pub dropped_overflow: u64,
    pub dropped_stage_error: u64,
    pub dropped_shutdown: u64,
    pub pushed_frames: u64,
    pub popped_frames: u64,
    pub dropped_overflow_frames: u64,
    pub dropped_stage_error_frames: u64,
    pub dropped_shutdown_frames: u64,
    /// Derived: `pushed_frames - popped_frames - dropped frames` (checked against `depth`).
    pub queued_frames: u64,
}

/// Frame counters of one channel of an edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelCounters {
    pub channel: u32,
    pub pushed_frames: u64,
    pub popped_frames: u64,
    pub dropped_overflow_frames: u64,
    pub dropped_stage_error_frames: u64,
    pub dropped_shutdown_frames: u64,
    pub queued_frames: u64,
}

impl EdgeSnapshot {
    pub fn dropped(&self) -> u64 {
        self.dropped_overflow + self.dropped_stage_error + self.dropped_shutdown
    }

    pub fn dropped_frames(&self) -> u64 {
        self.dropped_overflow_frames
            + self.dropped_stage_error_frames
            + self.dropped_shutdown_frames
    }

    /// `pushed = popped + dropped + depth` in blocks (depth measured), and the frame counters
    /// agree with it: no frames outstanding when nothing is queued, at most `depth * max_frames`
    /// otherwise, never more frames popped or dropped than pushed.
    pub fn invariant_holds(&self) -> bool {
        let blocks_ok = u128::from(self.pushed)
            == u128::from(self.popped) + u128::from(self.dropped()) + u128::from(self.depth);
        let out = u128::from(self.popped_frames) + u128::from(self.dropped_frames());
        let pushed_frames = u128::from(self.pushed_frames);
        let frames_ok = out <= pushed_frames && {
            let queued = pushed_frames - out;
            queued == u128::from(self.queued_frames)
                && if self.depth == 0 {
                    queued == 0
                } else {
                    queued <= u128::from(self.depth) * u128::from(self.max_frames)
                }
        };
        blocks_ok && frames_ok && self.depth <= self.capacity && self.high_water >= self.depth
    }

    /// The frame counters per channel index. Every block carries all of the edge's channels,
    /// so each channel's counters equal the edge's.
    pub fn per_channel(&self) -> Vec<ChannelCounters> {
        (0..self.channels)
            .map(|channel| ChannelCounters {
                channel,
                pushed_frames: self.pushed_frames,
                popped_frames: self.popped_frames,
                dropped_overflow_frames: self.dropped_overflow_frames,
                dropped_stage_error_frames: self.dropped_stage_error_frames,
                dropped_shutdown_frames: self.dropped_shutdown_frames,
                queued_frames: self.queued_frames,
            })
            .collect()
    }
}
