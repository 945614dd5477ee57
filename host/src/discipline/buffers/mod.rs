//! The BufferManager's edges: bounded queues between one producer thread and one consumer
//! thread, fed from a pool of blocks allocated when the edge is built.
//!
//! # Real-time rules
//!
//! After [`edge`] returns, [`Producer::push`], [`Producer::lend`], [`Producer::commit`],
//! [`Consumer::recv`], [`Consumer::recv_timeout`],
//! [`Consumer::discard_all`] and dropping a [`Received`] neither allocate, free, nor take a lock:
//! blocks (each owning a `Box<[f32]>` of `max_frames * channels` samples) circulate between a
//! bounded `data` channel and a bounded `free` channel (crossbeam's array flavour: a ring buffer
//! allocated once), plus a producer-side spare list whose capacity is reserved up front. Counters
//! are plain atomics. Only [`EdgeStats::snapshot`] allocates (the label and the snapshot itself);
//! it is meant for the monitor, never the audio path.
//!
//! Only the channels' non-blocking operations are used. Waiting (a consumer for data, a `Block`
//! producer for room or for a pooled block) is done here with `std::thread::park`, woken by the
//! other side through a [`WakeSlot`]: crossbeam's own blocking operations register the waiting
//! thread in a list that grows (allocates) the first time a thread waits on a channel, which can
//! happen at any moment of a run.
//!
//! # Pool
//!
//! `capacity_blocks + 2` blocks: up to `capacity_blocks` queued, one being filled by the
//! producer, one held by the consumer. If the consumer holds more than one [`Received`] at a
//! time the pool can run dry: the `Block` policy then waits for a block to come back, the drop
//! policies never wait — `DropOldest` recycles the oldest queued block, and if nothing is queued
//! either, the new block is discarded and counted as `overflow` (as `DropNewest` always does).
//!
//! # Accounting
//!
//! * `pushed` counts every block offered to the edge: queued ones, ones discarded on overflow,
//!   and ones the producing stage failed on ([`Producer::count_dropped`]), so that
//!   `pushed = popped + dropped(all reasons) + queued` holds.
//! * `popped` is counted when the consumer takes a block ([`Consumer::recv`]); the block goes
//!   back to the pool when the [`Received`] is dropped. A block the consumer holds is popped.
//! * Counters move *after* the queue operation they describe (push: enqueue, then `pushed`;
//!   pop/evict/discard: dequeue, then `popped`/`dropped`). A producer waiting for room has
//!   therefore changed nothing yet, and snapshots stay available while it waits.
//! * `queued` (the snapshot's `depth`) is measured: it is the channel's length, not derived from
//!   the counters. [`EdgeStats::snapshot`] reads all counters, the length, and all counters
//!   again; counters only grow, so equal reads mean they were constant while the length was
//!   read, i.e. the snapshot is one real instant. It retries (spinning, then yielding) until that
//!   instant also satisfies the invariant — which only fails inside the few instructions between
//!   a queue operation and its counter update. If it never gets there within its retry budget
//!   it returns the last reading, and [`EdgeSnapshot::invariant_holds`] says `false`.
//! * Frames: a queue's frame content cannot be measured without a lock, so `queued_frames` is
//!   derived (`pushed - popped - dropped`, in frames) and checked against the measured depth:
//!   zero when nothing is queued, at most `depth * max_frames` otherwise.
//! * Per channel: every block carries all channels of the edge interleaved, so each channel's
//!   frame counters equal the edge's; [`EdgeSnapshot::per_channel`] lists them per index.

mod counters;
mod lend;
mod wake_slot;

use counters::Counter;
pub use counters::{ChannelCounters, EdgeSnapshot, EdgeStats};
use crossbeam_utils::CachePadded;
use wake_slot::WakeSlot;

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crossbeam_channel::RecvTimeoutError;

/// Every counter and flag of an edge uses this ordering: the snapshot's consistency argument
/// relies on a single total order of counter updates and channel operations.
const ORD: std::sync::atomic::Ordering = std::sync::atomic::Ordering::SeqCst;

/// What a producer does when its edge's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    /// Lossless back-pressure: the producer waits for room.
    #[default]
    Block,
    /// Never wait: evict the oldest queued block (counted as dropped `overflow`).
    DropOldest,
    /// Never wait: discard the block being pushed (counted as dropped `overflow`).
    DropNewest,
}

impl WhenFull {
    /// Every policy's name, as pipeline files spell it.
    pub const NAMES: &'static [&'static str] = &["block", "drop-oldest", "drop-newest"];
    pub fn as_str(self) -> &'static str {
        match self {
            WhenFull::Block => "block",
            WhenFull::DropOldest => "drop-oldest",
            WhenFull::DropNewest => "drop-newest",
        }
    }
}

impl fmt::Display for WhenFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why blocks were dropped; each reason is counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropReason {
    /// The queue was full under a drop policy (or the pool ran dry).
    Overflow,
    /// The producing stage failed on the block and its `on_error` policy is `ignore`.
    StageError,
    /// Discarded while stopping (fast stop, or the consumer went away).
    Shutdown,
}

impl DropReason {
    pub const ALL: [DropReason; 3] = [
        DropReason::Overflow,
        DropReason::StageError,
        DropReason::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Overflow => "overflow",
            DropReason::StageError => "stage-error",
            DropReason::Shutdown => "shutdown",
        }
    }

    fn index(self) -> usize {
        match self {
            DropReason::Overflow => 0,
            DropReason::StageError => 1,
            DropReason::Shutdown => 2,
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to build one edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSpec {
    /// Name used in snapshots and logs (e.g. `mic.out -> gain.in`).
    pub label: String,
    pub channels: u32,
    /// Most frames one block can hold.
    pub max_frames: u32,
    /// Most blocks queued at once.
    pub capacity_blocks: u32,
    pub when_full: WhenFull,
    /// A consumer that waits for data is woken once this many blocks are queued, and a producer
    /// that waits for room once there is room for this many (or after [`BATCH_NAP`], whichever
    /// comes first), instead of at every block: a fast producer and a faster consumer then
    /// meet once per batch, not once per block. 1 wakes at every block (behind a live source,
    /// where a block must not wait). Clamped to the capacity.
    pub wake_batch: u32,
}

/// The longest a waiting end waits for a batch to fill before it takes what there is.
pub const BATCH_NAP: Duration = Duration::from_millis(1);

/// One block of interleaved audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// Storage for `max_frames * channels` samples; only the first `frames * channels` are valid.
    pub samples: Box<[f32]>,
    pub frames: u32,
    pub channels: u32,
    /// Frame index since the start of the stream.
    pub position: u64,
    pub flags: u32,
    /// When the audio in this block was captured, in microseconds since the run started (0:
    /// unknown). Carried through processing stages, for capture → storage latency.
    pub stamp_us: u64,
}

impl Block {
    fn with_capacity(channels: u32, max_frames: u32) -> Block {
        Block {
            samples: vec![0.0; max_frames as usize * channels as usize].into_boxed_slice(),
            frames: 0,
            channels,
            position: 0,
            flags: 0,
            stamp_us: 0,
        }
    }

    /// The valid samples: `frames * channels`, interleaved.
    pub fn data(&self) -> &[f32] {
        &self.samples[..self.frames as usize * self.channels as usize]
    }

    /// The valid samples, mutable (for in-place processing by the consumer).
    pub fn data_mut(&mut self) -> &mut [f32] {
        let n = self.frames as usize * self.channels as usize;
        &mut self.samples[..n]
    }
}

/// The consumer is gone; the edge accepts nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("edge closed: the consumer is gone")]
pub struct Closed;

/// What happened to a pushed block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued; nothing was lost.
    Queued,
    /// Queued after evicting the oldest queued block (`DropOldest`; one overflow drop counted).
    EvictedOldest,
    /// Not queued: this block was discarded (one overflow drop counted).
    Discarded,
}

/// The writing end of an edge. One producer thread.
pub struct Producer {
    stats: Arc<EdgeStats>,
    tx: Sender<Block>,
    free: Receiver<Block>,
    /// Blocks the producer got back by evicting or draining; capacity reserved for the whole pool.
    spares: Vec<Block>,
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("label", &self.stats.label)
            .finish_non_exhaustive()
    }
}

/// The reading end of an edge. One consumer thread.
pub struct Consumer {
    stats: Arc<EdgeStats>,
    rx: Receiver<Block>,
    free: Sender<Block>,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("label", &self.stats.label)
            .finish_non_exhaustive()
    }
}

/// Build an edge: allocates the queue, the free list and `capacity_blocks + 2` blocks.
///
/// # Panics
/// If `channels`, `max_frames` or `capacity_blocks` is 0 (the plan checks edges before this).
pub fn edge(spec: EdgeSpec) -> (Producer, Consumer, Arc<EdgeStats>) {
    assert!(
        spec.channels > 0,
        "edge `{}`: channels must be at least 1",
        spec.label
    );
    assert!(
        spec.max_frames > 0,
        "edge `{}`: max_frames must be at least 1",
        spec.label
    );
    assert!(
        spec.capacity_blocks > 0,
        "edge `{}`: capacity_blocks must be at least 1",
        spec.label
    );
    let capacity = spec.capacity_blocks as usize;
    let pool = capacity + 2;
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let (free_tx, free_rx) = crossbeam_channel::bounded(pool);
    for _ in 0..pool {
        free_tx
            .try_send(Block::with_capacity(spec.channels, spec.max_frames))
            .expect("free list holds the whole pool");
    }
    let stats = Arc::new(EdgeStats {
        label: spec.label,
        channels: spec.channels,
        max_frames: spec.max_frames,
        capacity: spec.capacity_blocks,
        when_full: spec.when_full,
        wake_batch: spec.wake_batch.clamp(1, spec.capacity_blocks),
        pushed: Counter::default(),
        popped: CachePadded::new(Counter::default()),
        dropped: Default::default(),
        high_water: AtomicU64::new(0),
        closed: AtomicBool::new(false),
        producer_gone: AtomicBool::new(false),
        consumer_wake: WakeSlot::default(),
        producer_wake: WakeSlot::default(),
        queue: rx.clone(),
    });
    let producer = Producer {
        stats: Arc::clone(&stats),
        tx,
        free: free_rx,
        spares: Vec::with_capacity(pool),
    };
    let consumer = Consumer {
        stats: Arc::clone(&stats),
        rx,
        free: free_tx,
    };
    (producer, consumer, stats)
}

impl Producer {
    pub fn stats(&self) -> &Arc<EdgeStats> {
        &self.stats
    }

    /// Copy `samples` (interleaved, `frames * channels`) into a pooled block and queue it per
    /// the edge's policy.
    ///
    /// `Block` waits for room (or for a pooled block); the drop policies never wait. Returns
    /// `Err(Closed)` once the consumer is gone (any policy); a block that raced with the
    /// consumer leaving is counted as dropped `shutdown`.
    ///
    /// # Panics
    /// If `samples.len() != frames * channels` or `frames > max_frames` — a host bug, and
    /// truncating silently would be an uncounted drop.
    pub fn push(
        &mut self,
        samples: &[f32],
        frames: u32,
        position: u64,
        flags: u32,
    ) -> Result<PushOutcome, Closed> {
        self.push_stamped(samples, frames, position, flags, 0)
    }

    /// [`Producer::push`] with the block's capture time (µs since the run started).
    pub fn push_stamped(
        &mut self,
        samples: &[f32],
        frames: u32,
        position: u64,
        flags: u32,
        stamp_us: u64,
    ) -> Result<PushOutcome, Closed> {
        // `self.stats` is borrowed afresh at each use: no reference count changes per push.
        assert!(
            frames <= self.stats.max_frames,
            "edge `{}`: block of {frames} frames exceeds max_frames {}",
            self.stats.label,
            self.stats.max_frames
        );
        assert_eq!(
            samples.len(),
            frames as usize * self.stats.channels as usize,
            "edge `{}`: {frames} frames of {} channels need that many samples",
            self.stats.label,
            self.stats.channels
        );
        if self.stats.closed.load(ORD) {
            return self.refuse(frames);
        }
        let (mut block, outcome) = match self.acquire(frames) {
            Ok(got) => got,
            Err(answer) => return answer,
        };
        block.samples[..samples.len()].copy_from_slice(samples);
        self.queue_filled(block, (frames, position, flags), stamp_us, outcome)
    }

    /// Queue a block whose samples are filled (pushed or lent) with its frames, position and
    /// flags, count it, and wake the consumer when its batch is there; refused (and counted) if
    /// the consumer left meanwhile.
    fn queue_filled(
        &mut self,
        mut block: Block,
        at: (u32, u64, u32),
        stamp_us: u64,
        outcome: PushOutcome,
    ) -> Result<PushOutcome, Closed> {
        let (frames, position, flags) = at;
        if self.stats.closed.load(ORD) {
            self.spares.push(block);
            return self.refuse(frames);
        }
        block.frames = frames;
        block.position = position;
        block.flags = flags;
        block.stamp_us = stamp_us;
        let outcome = self.enqueue(block, outcome)?;
        if outcome == PushOutcome::Discarded {
            // Counted as offered and dropped by `discard_newest`.
            return Ok(outcome);
        }
        self.stats.pushed.add(1, u64::from(frames));
        let depth = self.tx.len() as u64;
        // A plain read first: the locked maximum only when the mark moves.
        if depth > self.stats.high_water.load(Ordering::Relaxed) {
            self.stats.high_water.fetch_max(depth, ORD);
        }
        self.stats.consumer_wake.wake_if(|| self.tx.len());
        if self.stats.closed.load(ORD) {
            // The consumer left while we were queueing: nobody will read this any more.
            while let Ok(b) = self.stats.queue.try_recv() {
                self.stats.dropped[DropReason::Shutdown.index()].add(1, u64::from(b.frames));
                self.spares.push(b);
            }
            return Err(Closed);
        }
        Ok(outcome)
    }

    /// A pooled block to fill, per the edge's policy: `Block` waits for one; `DropOldest`
    /// recycles the oldest queued block; otherwise the new block is discarded (`Err` holds the
    /// push's answer then).
    #[allow(clippy::type_complexity)]
    fn acquire(
        &mut self,
        frames: u32,
    ) -> Result<(Block, PushOutcome), Result<PushOutcome, Closed>> {
        if let Some(b) = self.take_free() {
            return Ok((b, PushOutcome::Queued));
        }
        let stats = &self.stats;
        match stats.when_full {
            WhenFull::Block => {
                let free = &self.free;
                let batch = stats.wake_batch;
                stats.producer_wake.wait_batched(batch, BATCH_NAP, || {
                    free.len() >= batch as usize || stats.closed.load(ORD)
                });
                let got = stats.producer_wake.wait(None, || {
                    if stats.closed.load(ORD) {
                        return Some(None);
                    }
                    match free.try_recv() {
                        Ok(b) => Some(Some(b)),
                        Err(TryRecvError::Empty) => None,
                        Err(TryRecvError::Disconnected) => Some(None),
                    }
                });
                match got {
                    Some(Some(b)) => Ok((b, PushOutcome::Queued)),
                    _ => Err(self.refuse(frames)),
                }
            }
            WhenFull::DropOldest => match self.evict_oldest() {
                Some(b) => Ok((b, PushOutcome::EvictedOldest)),
                None => Err(Ok(self.discard_newest(frames))),
            },
            WhenFull::DropNewest => Err(Ok(self.discard_newest(frames))),
        }
    }

    /// Queue a filled block per the edge's policy.
    fn enqueue(&mut self, block: Block, outcome: PushOutcome) -> Result<PushOutcome, Closed> {
        let frames = block.frames;
        match self.stats.when_full {
            WhenFull::Block => self.enqueue_waiting(block).map(|()| outcome),
            WhenFull::DropOldest => self.enqueue_evicting(block, outcome),
            WhenFull::DropNewest => match self.tx.try_send(block) {
                Ok(()) => Ok(outcome),
                Err(TrySendError::Full(b)) => {
                    self.spares.push(b);
                    Ok(self.discard_newest(frames))
                }
                Err(TrySendError::Disconnected(b)) => {
                    self.spares.push(b);
                    self.refuse(frames)
                }
            },
        }
    }

    /// `Block`: wait for room. The data channel never disconnects while `stats.queue` lives:
    /// waiting ends when the block is queued or the consumer has left.
    fn enqueue_waiting(&mut self, block: Block) -> Result<(), Closed> {
        let stats = &self.stats;
        let frames = block.frames;
        let tx = &self.tx;
        let batch = stats.wake_batch as usize;
        stats
            .producer_wake
            .wait_batched(stats.wake_batch, BATCH_NAP, || {
                tx.capacity().unwrap_or(batch) - tx.len() >= batch || stats.closed.load(ORD)
            });
        let mut pending = Some(block);
        let sent = stats.producer_wake.wait(None, || {
            let b = pending.take().expect("the block is pending until sent");
            if stats.closed.load(ORD) {
                pending = Some(b);
                return Some(false);
            }
            match tx.try_send(b) {
                Ok(()) => Some(true),
                Err(TrySendError::Full(b)) => {
                    pending = Some(b);
                    None
                }
                Err(TrySendError::Disconnected(b)) => {
                    pending = Some(b);
                    Some(false)
                }
            }
        });
        if sent == Some(true) {
            return Ok(());
        }
        self.spares.extend(pending);
        self.refuse(frames).map(|_| ())
    }

    /// `DropOldest`: never wait; evict the oldest queued block until this one fits.
    fn enqueue_evicting(
        &mut self,
        mut block: Block,
        mut outcome: PushOutcome,
    ) -> Result<PushOutcome, Closed> {
        loop {
            match self.tx.try_send(block) {
                Ok(()) => return Ok(outcome),
                Err(TrySendError::Full(b)) => {
                    block = b;
                    if let Some(old) = self.evict_oldest() {
                        self.spares.push(old);
                        outcome = PushOutcome::EvictedOldest;
                    }
                }
                Err(TrySendError::Disconnected(b)) => {
                    let frames = b.frames;
                    self.spares.push(b);
                    return self.refuse(frames);
                }
            }
        }
    }

    /// Count blocks that never reached the edge because the producing stage failed on them
    /// (`on_error = ignore`): they count as pushed and as dropped for `reason`, so the
    /// invariant keeps holding.
    pub fn count_dropped(&self, reason: DropReason, blocks: u64, frames: u64) {
        self.stats.pushed.add(blocks, frames);
        self.stats.dropped[reason.index()].add(blocks, frames);
    }

    /// The edge is closed: the block is offered and dropped (`shutdown`), so that what a
    /// producer made after its consumer left is still accounted.
    fn refuse(&self, frames: u32) -> Result<PushOutcome, Closed> {
        self.count_dropped(DropReason::Shutdown, 1, u64::from(frames));
        Err(Closed)
    }

    fn take_free(&mut self) -> Option<Block> {
        self.spares.pop().or_else(|| self.free.try_recv().ok())
    }

    /// Dequeue the oldest queued block and count it as dropped `overflow`.
    fn evict_oldest(&self) -> Option<Block> {
        let old = self.stats.queue.try_recv().ok()?;
        self.stats.dropped[DropReason::Overflow.index()].add(1, u64::from(old.frames));
        Some(old)
    }

    fn discard_newest(&self, frames: u32) -> PushOutcome {
        self.count_dropped(DropReason::Overflow, 1, u64::from(frames));
        PushOutcome::Discarded
    }
}

impl Consumer {
    pub fn stats(&self) -> &Arc<EdgeStats> {
        &self.stats
    }

    fn take(&self, block: Block) -> Received {
        self.stats.popped.add(1, u64::from(block.frames));
        // Room in the queue for a producer waiting on it.
        let capacity = self.stats.capacity as usize;
        self.stats
            .producer_wake
            .wake_if(|| capacity.saturating_sub(self.rx.len()));
        Received {
            block: Some(block),
            free: self.free.clone(),
            stats: Arc::clone(&self.stats),
        }
    }

    /// The next block if one is queued, without waiting.
    pub fn try_recv(&self) -> Result<Received, TryRecvError> {
        // Read "gone" before looking at the queue: a producer pushes, then goes, so an empty
        // queue seen after "gone" is empty for good.
        let gone = self.stats.producer_gone.load(ORD);
        match self.rx.try_recv() {
            Ok(b) => Ok(self.take(b)),
            Err(TryRecvError::Empty) if gone => Err(TryRecvError::Disconnected),
            Err(e) => Err(e),
        }
    }

    fn wait(&self, deadline: Option<Instant>) -> Result<Received, RecvTimeoutError> {
        if let Ok(r) = self.try_recv() {
            return Ok(r);
        }
        let batch = self.stats.wake_batch;
        let nap = deadline.map_or(BATCH_NAP, |d| {
            BATCH_NAP.min(d.saturating_duration_since(Instant::now()))
        });
        self.stats.consumer_wake.wait_batched(batch, nap, || {
            self.rx.len() >= batch as usize || self.stats.producer_gone.load(ORD)
        });
        self.stats
            .consumer_wake
            .wait(deadline, || match self.try_recv() {
                Ok(r) => Some(Ok(r)),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => Some(Err(RecvTimeoutError::Disconnected)),
            })
            .unwrap_or(Err(RecvTimeoutError::Timeout))
    }

    /// The next block, waiting for it; `None` once the producer is dropped and the queue drained.
    pub fn recv(&self) -> Option<Received> {
        self.wait(None).ok()
    }

    /// The next block, waiting at most `d`.
    pub fn recv_timeout(&self, d: Duration) -> Result<Received, RecvTimeoutError> {
        // A queued block needs no deadline: no clock read.
        if let Ok(r) = self.try_recv() {
            return Ok(r);
        }
        self.wait(Some(Instant::now() + d))
    }

    /// Drain everything queued, counting it dropped for `reason` (fast stop). Returns blocks.
    pub fn discard_all(&self, reason: DropReason) -> u64 {
        let mut n = 0;
        while let Ok(b) = self.rx.try_recv() {
            self.stats.dropped[reason.index()].add(1, u64::from(b.frames));
            // The free list has room for the whole pool; if the producer is gone, this frees.
            self.free.try_send(b).ok();
            n += 1;
        }
        self.stats.producer_wake.wake();
        n
    }
}

impl Drop for Producer {
    /// Tells the consumer that nothing more will come (it ends once the queue is drained).
    fn drop(&mut self) {
        self.stats.producer_gone.store(true, ORD);
        self.stats.consumer_wake.wake();
    }
}

impl Drop for Consumer {
    /// Closes the edge: later pushes fail with `Closed`, and what is queued is dropped as
    /// `shutdown` (which also wakes a producer waiting for room).
    fn drop(&mut self) {
        self.stats.closed.store(true, ORD);
        self.discard_all(DropReason::Shutdown);
    }
}

/// A block taken by the consumer. Derefs to [`Block`]; dropping it returns the block to the pool.
pub struct Received {
    block: Option<Block>,
    free: Sender<Block>,
    stats: Arc<EdgeStats>,
}

impl fmt::Debug for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl Deref for Received {
    type Target = Block;
    fn deref(&self) -> &Block {
        self.block.as_ref().expect("block present until drop")
    }
}

impl DerefMut for Received {
    fn deref_mut(&mut self) -> &mut Block {
        self.block.as_mut().expect("block present until drop")
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        if let Some(b) = self.block.take() {
            // Room for the whole pool; fails only if the producer is gone (then the block frees).
            self.free.try_send(b).ok();
            self.stats.producer_wake.wake_if(|| self.free.len());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::thread;

    /// A two-channel edge of 4-frame blocks (also used by the lending and out-buffer tests).
    pub(crate) fn spec(when_full: WhenFull, capacity_blocks: u32) -> EdgeSpec {
        EdgeSpec {
            label: "a.out -> b.in".into(),
            channels: 2,
            max_frames: 4,
            capacity_blocks,
            when_full,
            wake_batch: 1,
        }
    }

    /// Two channels, `frames` frames, every sample tagged with the block number.
    fn samples(i: u64, frames: u32) -> Vec<f32> {
        vec![i as f32; frames as usize * 2]
    }

    fn batched(capacity_blocks: u32, wake_batch: u32) -> EdgeSpec {
        EdgeSpec {
            wake_batch,
            ..spec(WhenFull::Block, capacity_blocks)
        }
    }

    /// Ends that wake each other once per batch still pass every block, in order, whichever
    /// side is the faster, and whether the other pauses now and then (a partial batch is taken
    /// after the nap).
    #[test]
    fn buffers_batched_wakes_lose_nothing_and_keep_order() {
        const N: u64 = 20_000;
        for slow_producer in [true, false] {
            let (mut p, c, stats) = edge(batched(16, 8));
            let producer = thread::spawn(move || {
                for i in 0..N {
                    if slow_producer && i % 1000 == 999 {
                        thread::sleep(Duration::from_millis(3));
                    }
                    p.push(&samples(i, 2), 2, i, 0).unwrap();
                }
            });
            let mut expected = 0u64;
            while let Some(b) = c.recv() {
                assert_eq!(b.position, expected);
                expected += 1;
                if !slow_producer && expected % 1000 == 0 {
                    thread::sleep(Duration::from_millis(3));
                }
            }
            producer.join().unwrap();
            assert_eq!(expected, N);
            let s = stats.snapshot();
            assert!(s.invariant_holds(), "{s:?}");
            assert_eq!((s.pushed, s.popped, s.dropped()), (N, N, 0));
        }
    }

    /// Fewer blocks than a batch, and then nothing for a long while: the waiting consumer
    /// still takes them (after the nap), it does not wait for the batch to fill.
    #[test]
    fn buffers_a_partial_batch_is_not_stranded() {
        let (mut p, c, _stats) = edge(batched(64, 16));
        let consumer = thread::spawn(move || {
            let got: Vec<u64> = (0..3).map(|_| c.recv().unwrap().position).collect();
            (got, c)
        });
        // Let the consumer wait first, then push less than a batch and keep the edge open.
        thread::sleep(Duration::from_millis(20));
        for i in 0..3 {
            p.push(&samples(i, 2), 2, i, 0).unwrap();
        }
        let (got, _c) = consumer.join().unwrap();
        assert_eq!(got, vec![0, 1, 2]);
        drop(p);
    }

    #[test]
    fn buffers_block_policy_is_lossless_and_ordered_across_threads() {
        const N: u64 = 100_000;
        let (mut p, c, stats) = edge(spec(WhenFull::Block, 4));
        let producer = thread::spawn(move || {
            let buf = [0.0f32; 8];
            for i in 0..N {
                let frames = (i % 4 + 1) as u32;
                let mut s = buf;
                s.iter_mut().for_each(|x| *x = i as f32);
                let out = p.push(&s[..frames as usize * 2], frames, i, 0).unwrap();
                assert_eq!(out, PushOutcome::Queued);
            }
        });
        let mut expected = 0u64;
        let mut frames_total = 0u64;
        while let Some(b) = c.recv() {
            assert_eq!(b.position, expected);
            assert_eq!(b.frames, (expected % 4 + 1) as u32);
            assert!(b.data().iter().all(|&x| x == expected as f32));
            frames_total += u64::from(b.frames);
            expected += 1;
        }
        producer.join().unwrap();
        assert_eq!(expected, N);
        let s = stats.snapshot();
        assert!(s.invariant_holds(), "{s:?}");
        assert_eq!((s.pushed, s.popped, s.dropped(), s.depth), (N, N, 0, 0));
        assert_eq!(
            (s.pushed_frames, s.popped_frames),
            (frames_total, frames_total)
        );
        assert!(s.high_water <= 4);
    }

    #[test]
    fn buffers_drop_oldest_never_blocks_and_keeps_the_newest() {
        let (mut p, c, stats) = edge(spec(WhenFull::DropOldest, 8));
        // The consumer takes nothing; the producer runs on this thread, so blocking would hang.
        let mut evicted = 0;
        for i in 0..1000u64 {
            match p.push(&samples(i, 3), 3, i, 0).unwrap() {
                PushOutcome::Queued => assert!(i < 8),
                PushOutcome::EvictedOldest => evicted += 1,
                PushOutcome::Discarded => panic!("drop-oldest discarded the newest"),
            }
        }
        assert_eq!(evicted, 992);
        let s = stats.snapshot();
        assert!(s.invariant_holds(), "{s:?}");
        assert_eq!(
            (s.pushed, s.dropped_overflow, s.depth, s.high_water),
            (1000, 992, 8, 8)
        );
        assert_eq!(s.dropped_overflow_frames, 992 * 3);
        assert_eq!((s.dropped_stage_error, s.dropped_shutdown), (0, 0));
        drop(p);
        let got: Vec<u64> = std::iter::from_fn(|| c.recv().map(|b| b.position)).collect();
        assert_eq!(got, (992..1000).collect::<Vec<_>>());
        let s = stats.snapshot();
        assert!(s.invariant_holds(), "{s:?}");
        assert_eq!((s.popped, s.depth), (8, 0));
    }

    #[test]
    fn buffers_drop_oldest_with_consumer_hoarding_blocks_never_blocks() {
        // Pool of 4 blocks (capacity 2 + 2). The consumer holds 2 without releasing them: the
        // producer must recycle the oldest queued block and still deliver the newest.
        let (mut p, c, stats) = edge(spec(WhenFull::DropOldest, 2));
        let mut held = Vec::new();
        for i in 0..100u64 {
            p.push(&samples(i, 1), 1, i, 0).unwrap();
            if held.len() < 2 {
                held.push(c.try_recv().unwrap());
            }
            let s = stats.snapshot();
            assert!(s.invariant_holds(), "{s:?}");
        }
        let last: Vec<u64> = std::iter::from_fn(|| c.try_recv().ok().map(|b| b.position)).collect();
        assert_eq!(last, vec![98, 99], "the newest blocks are delivered");
        let s = stats.snapshot();
        assert_eq!(
            (s.pushed, s.popped, s.dropped_overflow, s.depth),
            (100, 4, 96, 0)
        );
        // Now the consumer hoards the whole pool: nothing to recycle, so new blocks are
        // discarded (counted as overflow) rather than waited for or allocated.
        held.extend(std::iter::from_fn(|| c.try_recv().ok()));
        p.push(&samples(100, 1), 1, 100, 0).unwrap();
        p.push(&samples(101, 1), 1, 101, 0).unwrap();
        held.push(c.try_recv().unwrap());
        held.push(c.try_recv().unwrap());
        assert_eq!(held.len(), 4);
        assert_eq!(
            p.push(&samples(102, 1), 1, 102, 0).unwrap(),
            PushOutcome::Discarded
        );
        let s = stats.snapshot();
        assert!(s.invariant_holds(), "{s:?}");
        assert_eq!(
            (s.pushed, s.popped, s.dropped_overflow, s.depth),
            (103, 6, 97, 0)
        );
        drop(held);
        assert_eq!(
            p.push(&samples(103, 1), 1, 103, 0).unwrap(),
            PushOutcome::Queued
        );
        assert_eq!(c.try_recv().unwrap().position, 103);
    }

    #[test]
    fn buffers_drop_newest_keeps_the_oldest() {
        let (mut p, c, stats) = edge(spec(WhenFull::DropNewest, 8));
        for i in 0..1000u64 {
            let out = p.push(&samples(i, 2), 2, i, 0).unwrap();
            assert_eq!(
                out,
                if i < 8 {
                    PushOutcome::Queued
                } else {
                    PushOutcome::Discarded
                }
            );
        }
        let s = stats.snapshot();
        assert!(s.invariant_holds(), "{s:?}");
        assert_eq!((s.pushed, s.dropped_overflow, s.depth), (1000, 992, 8));
        assert_eq!(s.dropped_overflow_frames, 992 * 2);
        drop(p);
        let got: Vec<u64> = std::iter::from_fn(|| c.recv().map(|b| b.position)).collect();
        assert_eq!(got, (0..8).collect::<Vec<_>>());
    }

    fn stress(when_full: WhenFull) {
        const N: u64 = 200_000;
        let (mut p, c, stats) = edge(spec(when_full, 3));
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (stats, done) = (Arc::clone(&stats), Arc::clone(&done));
            thread::spawn(move || {
                let mut n = 0u64;
                let mut last_pushed = 0;
                loop {
                    let finished = done.load(ORD);
                    let s = stats.snapshot();
                    assert!(s.invariant_holds(), "snapshot {n}: {s:?}");
                    assert!(s.pushed >= last_pushed);
                    last_pushed = s.pushed;
                    for ch in s.per_channel() {
                        assert_eq!(
                            ch.pushed_frames,
                            ch.popped_frames + s.dropped_frames() + ch.queued_frames
                        );
                    }
                    n += 1;
                    if finished {
                        return n;
                    }
                }
            })
        };
        let producer = thread::spawn(move || {
            let s = [1.0f32; 8];
            for i in 0..N {
                if i % 1000 == 999 {
                    p.count_dropped(DropReason::StageError, 1, 4);
                    continue;
                }
                p.push(&s, 4, i, 0).unwrap();
            }
        });
        let consumer = thread::spawn(move || {
            let mut until_discard = 5000u32;
            while let Some(b) = c.recv() {
                until_discard -= 1;
                if until_discard == 0 {
                    until_discard = 5000;
                    drop(b);
                    c.discard_all(DropReason::Shutdown);
                }
            }
        });
        producer.join().unwrap();
        consumer.join().unwrap();
        done.store(true, ORD);
        let snapshots = watcher.join().unwrap();
        assert!(snapshots > 0);
        let s = stats.snapshot();
        assert!(s.invariant_holds(), "{s:?}");
        assert_eq!(s.depth, 0);
        assert_eq!(s.pushed, N);
        assert_eq!(s.dropped_stage_error, N / 1000);
        assert_eq!(s.pushed_frames, N * 4);
        if when_full == WhenFull::Block {
            assert_eq!(s.dropped_overflow, 0);
        }
    }

    #[test]
    fn buffers_snapshots_are_consistent_under_load_block() {
        stress(WhenFull::Block);
    }

    #[test]
    fn buffers_snapshots_are_consistent_under_load_drop_oldest() {
        stress(WhenFull::DropOldest);
    }

    #[test]
    fn buffers_snapshots_are_consistent_under_load_drop_newest() {
        stress(WhenFull::DropNewest);
    }

    #[test]
    fn buffers_dropping_the_consumer_releases_a_blocked_producer() {
        let (mut p, c, stats) = edge(spec(WhenFull::Block, 2));
        let producer = thread::spawn(move || {
            let mut i = 0u64;
            while p.push(&samples(i, 1), 1, i, 0).is_ok() {
                i += 1;
            }
            assert!(p.push(&samples(i, 1), 1, i, 0).is_err());
            i
        });
        for _ in 0..10 {
            drop(c.recv().unwrap());
        }
        // The producer is (or soon will be) waiting for room; dropping the consumer frees it.
        drop(c);
        let accepted = producer.join().unwrap();
        // Ten blocks were taken, so ten were queued; the push of the tenth may still see the
        // consumer leave right after that block was taken, and report `Closed` for it.
        assert!(accepted >= 9, "{accepted}");
        let s = stats.snapshot();
        assert!(s.invariant_holds(), "{s:?}");
        assert_eq!(s.depth, 0);
        assert_eq!(s.popped, 10);
        assert_eq!(s.pushed, s.popped + s.dropped_shutdown);
    }

    #[test]
    fn buffers_drop_reasons_are_counted_separately() {
        let (mut p, c, stats) = edge(spec(WhenFull::DropNewest, 4));
        for i in 0..6u64 {
            p.push(&samples(i, 4), 4, i, 0).unwrap();
        }
        p.count_dropped(DropReason::StageError, 3, 12);
        assert_eq!(c.discard_all(DropReason::Shutdown), 4);
        let s = stats.snapshot();
        assert!(s.invariant_holds(), "{s:?}");
        assert_eq!(
            (
                s.dropped_overflow,
                s.dropped_stage_error,
                s.dropped_shutdown
            ),
            (2, 3, 4)
        );
        assert_eq!(
            (
                s.dropped_overflow_frames,
                s.dropped_stage_error_frames,
                s.dropped_shutdown_frames
            ),
            (8, 12, 16)
        );
        assert_eq!((s.pushed, s.pushed_frames), (9, 36));
        let chans = s.per_channel();
        assert_eq!(chans.len(), 2);
        assert_eq!(chans[1].channel, 1);
        assert_eq!(chans[1].dropped_stage_error_frames, 12);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["dropped_stage_error"], 3);
        // Pool blocks came back: pushing again works without waiting.
        assert_eq!(
            p.push(&samples(9, 1), 1, 9, 0).unwrap(),
            PushOutcome::Queued
        );
        assert_eq!(c.recv_timeout(Duration::from_secs(60)).unwrap().position, 9);
    }

    #[test]
    fn buffers_recv_ends_when_producer_dropped() {
        let (mut p, c, _stats) = edge(spec(WhenFull::Block, 4));
        p.push(&samples(0, 1), 1, 0, 7).unwrap();
        drop(p);
        let b = c.recv().unwrap();
        assert_eq!((b.position, b.flags, b.data().len()), (0, 7, 2));
        drop(b);
        assert!(c.recv().is_none());
        assert!(matches!(
            c.recv_timeout(Duration::from_secs(60)),
            Err(RecvTimeoutError::Disconnected)
        ));
    }
}
