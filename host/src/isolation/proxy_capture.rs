//! An isolated capture's reads, host side: the reads go into the ring as a processor's calls
//! do (calls with one output and no input), and the ring is kept full, so the stage's process
//! reads ahead of the host by up to a ring of blocks and a file job makes no round trip per
//! block. Behind a live source the ring has one slot: each read waits for its own block, as an
//! in-process read does.
//!
//! The process keeps the position itself from its first read on (the host's, put in each call,
//! does not count the reads in flight) and, once its source has finished or the host stops it
//! (`Ring::stopping`), answers the reads still in flight as finished without calling the
//! plugin. A read that failed produced nothing; reads a dead process never began are dropped
//! (they carry no data), and a fresh process reads on from where the stage is.

use std::sync::atomic::Ordering;

use abi_stable::std_types::{ROption, RResult, RStr};
use tapeline_plugin_api::abi::{CaptureObj, OutputBlock, PluginError, RawExtension, ReadStatus};

use super::protocol::tag;
use super::proxy::ChildStage;

impl CaptureObj for ChildStage {
    fn start(&mut self) -> RResult<(), PluginError> {
        self.started = true;
        self.request("start", tag::START, &[]).map(|_| ()).into()
    }

    fn read<'a>(&mut self, out: &mut OutputBlock<'a>) -> RResult<ReadStatus, PluginError> {
        self.read_ahead(out).into()
    }

    /// After the reads in flight (their blocks are not taken: the stage stops); the process
    /// makes none of them but the one it is in.
    fn stop(&mut self) -> RResult<(), PluginError> {
        if let Some(run) = &self.run {
            run.shm.ring().stopping.store(1, Ordering::SeqCst);
            self.ring_child();
        }
        self.settle_reads();
        if self.run.is_none() {
            return RResult::ROk(());
        }
        self.request("stop", tag::STOP, &[]).map(|_| ()).into()
    }

    fn length_frames(&self) -> ROption<u64> {
        self.length.into()
    }
    fn extension(&self, name: RStr<'_>, version: u32) -> ROption<RawExtension> {
        self.stats_extension(name, version)
    }
}

impl ChildStage {
    fn read_ahead(&mut self, out: &mut OutputBlock<'_>) -> Result<ReadStatus, PluginError> {
        drop(self.iso.orphans.take());
        self.ready()?;
        let slots = self.slots() as u64;
        while !self.flight.last_read.1 && self.flight.sent - self.flight.got < slots {
            self.submit(&[], std::slice::from_ref(out), 0);
        }
        // Wake a sleeping process for half a ring of reads; the oldest read's block is passed on
        // as soon as it is there (waiting for more would delay a slow source's blocks).
        if self.flight.sent - self.answered() >= (slots / 2).max(1) {
            self.ring_child();
        }
        self.next_answer(std::slice::from_mut(out))?;
        let (position, finished) = self.flight.last_read;
        out.position = position;
        Ok(if finished {
            ReadStatus::Finished
        } else {
            ReadStatus::More
        })
    }

    /// Take every read in flight and drop its block, so that the process can answer a request.
    fn settle_reads(&mut self) {
        while self.run.is_some() && self.flight.got < self.flight.sent {
            // A failed read waits to be told to go on; a dead process ends the loop.
            if self.next_answer(&mut []).is_err() && self.ready().is_err() {
                return;
            }
        }
    }
}
