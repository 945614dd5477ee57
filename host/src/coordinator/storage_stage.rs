//! What a storage stage does in the stage loop: write every block; flush when idle; finalise
//! at the end, always. Having no output edge, it counts its own drops (`dropped_frames`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use abi_stable::std_types::{ROption, RSlice, RStr};
use tapeline_plugin_api::abi::{
    InputBlock, PluginError, PortFormat, RawExtension, StorageBox, StorageReport,
    FLAG_END_OF_STREAM,
};

use super::component::Component;
use super::factory::Factory;
use super::stage_io::StageIo;
use super::stage_loop::{CallTime, Flow, StageExit, StageWork, Take};
use super::stage_stats::Call;
use crate::discipline::buffers::{DropReason, Received, RecvTimeoutError};
use crate::discipline::state_machine::State;
use crate::isolation::proxy::Isolation;

/// How long the stage waits for a block before it flushes.
const IDLE: Duration = Duration::from_millis(250);

pub struct StorageStage {
    format: PortFormat,
    block: Option<Received>,
    /// An isolated storage's writes still in flight when its input ends: waited for by calls
    /// of their own (`Drain::Call`), so that a write failing then meets the stage's policy
    /// like any other; each failed wait is followed by another, up to a bound.
    drain: Drain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// Input still comes (or the stage is in the host: nothing is in flight).
    No,
    /// The next call waits for the writes in flight; `left` more tries after this one.
    Call {
        left: u32,
    },
    Done,
}

impl StorageStage {
    pub fn new(format: PortFormat) -> Self {
        StorageStage {
            format,
            block: None,
            drain: Drain::No,
        }
    }

    /// The input ended: an isolated storage first waits for its writes in flight (a call of
    /// its own), unless its policy gave it up or it already did.
    fn ended(&mut self, io: &mut StageIo, c: &Component, given_up: bool) -> Take {
        let Some(iso) = c.isolation() else {
            return Take::Ended;
        };
        self.drain = match self.drain {
            _ if given_up => Drain::Done,
            Drain::No => Drain::Call {
                left: iso.slots as u32 + 2,
            },
            Drain::Call { left: 0 } | Drain::Done => Drain::Done,
            Drain::Call { left } => Drain::Call { left: left - 1 },
        };
        if self.drain == Drain::Done {
            return Take::Ended;
        }
        io.in_flight = 0;
        Take::Ready
    }
}

impl StageWork for StorageStage {
    type Instance = StorageBox;
    type Factory = Factory;
    const CALL: Call = Call::Write;
    const DRAINS_AFTER_GIVING_UP: bool = true;

    fn build(f: &Factory) -> Result<StorageBox, PluginError> {
        f.storage()
    }

    fn take(&mut self, io: &mut StageIo, c: &Component, given_up: bool) -> Take {
        let input = &io.inputs[0];
        match input.recv_timeout(IDLE) {
            Ok(b) if given_up => {
                // Taken off the edge, never written: the stage's own drops.
                c.stats
                    .dropped_frames
                    .fetch_add(u64::from(b.frames), Ordering::Relaxed);
                Take::Skip
            }
            Ok(b) => {
                io.in_flight = u64::from(b.frames);
                self.block = Some(b);
                Take::Ready
            }
            Err(RecvTimeoutError::Timeout) if c.stop().is_abandoned() => Take::Ended,
            Err(RecvTimeoutError::Timeout) => Take::Idle,
            Err(RecvTimeoutError::Disconnected) => self.ended(io, c, given_up),
        }
    }

    fn call(&mut self, instance: &mut StorageBox, _c: &Component) -> Result<(), PluginError> {
        if let Drain::Call { .. } = self.drain {
            // A zero-frame end-of-stream block: an isolated storage waits for its writes.
            let end = InputBlock {
                samples: RSlice::from_slice(&[]),
                frames: 0,
                channels: self.format.channels,
                position: 0,
                flags: FLAG_END_OF_STREAM,
            };
            return instance.write(&end).into_result();
        }
        let Some(b) = &self.block else {
            return Ok(());
        };
        let block = InputBlock {
            samples: RSlice::from_slice(b.data()),
            frames: b.frames,
            channels: self.format.channels,
            position: b.position,
            flags: b.flags,
        };
        instance.write(&block).into_result()
    }

    fn deliver(&mut self, io: &mut StageIo, c: &Component, t: CallTime) -> Flow {
        if let Some(b) = self.block.take() {
            if b.stamp_us != 0 {
                c.stats.record_latency(t.end_us.saturating_sub(b.stamp_us));
            }
            // An isolated storage's write returns before it is made: what it took is what the
            // writes answered so far took.
            let frames = c
                .isolation()
                .map_or(u64::from(b.frames), |iso| iso.take_done());
            c.stats.record_busy(t.busy, frames, 0);
            io.written_now += frames;
        }
        if let (Drain::Call { .. }, Some(iso)) = (self.drain, c.isolation()) {
            // Every write in flight is made.
            self.drain = Drain::Done;
            count_done(iso, io, c);
        }
        io.in_flight = 0;
        Flow::Continue
    }

    fn lost(&mut self, io: &mut StageIo, c: &Component) {
        // The block it failed on is not in its output: the stage's own drop. An isolated
        // storage has writes in flight: it says which failed.
        let block = self.block.take().map_or(0, |b| u64::from(b.frames));
        let frames = c.isolation().map_or(block, |iso| {
            count_done(iso, io, c);
            iso.take_lost()
        });
        c.stats.dropped_frames.fetch_add(frames, Ordering::Relaxed);
        io.in_flight = 0;
    }

    fn idle(&mut self, instance: &mut StorageBox, c: &Component) {
        c.stats.enter(Call::Flush, c.epoch());
        let flushed = instance.flush().into_result();
        c.stats.leave();
        // A failed flush is retried at the next idle moment and by finalise, which reports.
        if flushed.is_err() {
            c.stats.flush_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn replaced(&mut self, mut old: StorageBox, io: &mut StageIo) {
        // Keep what the old instance recorded, and count it. Without its report (a process
        // that died, a failing finalise) what its writes took is still counted as written.
        match old.finalize().into_result() {
            Ok(r) => merge(&mut io.written_before, r),
            Err(_) => io.written_before.frames_written += io.written_now,
        }
        io.written_now = 0;
    }

    fn extension(instance: &StorageBox, name: RStr<'_>, version: u32) -> ROption<RawExtension> {
        instance.extension(name, version)
    }

    fn finish(&mut self, mut instance: StorageBox, io: &mut StageIo, c: &Component) -> StageExit {
        // After a fast stop what is still queued is dropped (counted); normally nothing is.
        io.inputs[0].discard_all(DropReason::Shutdown);
        c.wind_down(State::Stopping, "input ended");
        c.wind_down(State::Flushing, "finalising");
        let report = instance.finalize().into_result().map(|mut last| {
            merge(&mut last, std::mem::take(&mut io.written_before));
            last
        });
        if let Some(iso) = c.isolation() {
            // Writes made while finalising; those that failed, or that no process was left to
            // make.
            count_done(iso, io, c);
            let frames = iso.take_lost() + iso.take_held();
            c.stats.dropped_frames.fetch_add(frames, Ordering::Relaxed);
        }
        StageExit {
            instance: Some(Box::new(instance)),
            report: Some(report),
            abandoned: false,
        }
    }
}

/// What an isolated storage's answered writes took, counted as taken (and written).
fn count_done(iso: &Isolation, io: &mut StageIo, c: &Component) {
    let frames = iso.take_done();
    c.stats.frames_in.fetch_add(frames, Ordering::Relaxed);
    io.written_now += frames;
}

/// Add what `from` wrote to `into`.
fn merge(into: &mut StorageReport, from: StorageReport) {
    into.frames_written += from.frames_written;
    for f in from.files {
        if !into.files.contains(&f) {
            into.files.push(f);
        }
    }
}
