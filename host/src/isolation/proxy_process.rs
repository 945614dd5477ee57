//! An isolated processor's calls, host side (and an isolated storage's writes, which are calls
//! without outputs, see `proxy`): each `process` call goes into the next slot of the
//! ring in shared memory ([`super::ring`]) and returns the oldest answer that is ready (or, while
//! the first calls are still in flight, no frames, as a processor with latency does). So host
//! and child work side by side and meet only when the ring is full, once per half ring, instead
//! of a round trip per block. Behind a live source the ring has one slot: every call waits for
//! its own answer and isolation adds no latency beyond the call; behind a paced source (a call
//! that comes long after the last one returned) a call waits for its own answer too. At the end
//! of the stream the tail calls (`FLAG_END_OF_STREAM`) return the calls still in flight first.
//!
//! Every frame is accounted for: a call the plugin failed is lost (`Isolation::take_lost`);
//! when the process dies, the answers it gave are still returned, the call it died in is lost,
//! and the calls it never began go to the next process of the stage (the same instance after
//! `ignore`, the fresh one after `restart`) in order; whatever is in flight when the stage
//! stops without its tail is `Isolation::held_frames`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use abi_stable::std_types::{ROption, RResult, RSlice, RSliceMut, RStr};
use arrayvec::ArrayVec;
use tapeline_plugin_api::abi::{
    ErrorKind, InputBlock, Level, OutputBlock, PluginError, ProcessorObj, RawExtension,
    FLAG_END_OF_STREAM,
};

use super::protocol::{decode_error, tag};
use super::proxy::{ChildStage, Orphans};
use super::ring::{self, Answer, Put, Woken};
use super::shm::MAX_PORTS;

/// Most slots in a processor's ring.
pub const MAX_SLOTS: usize = 64;

/// A call that comes this long after the last one returned waits for its own answer.
const RING_AFTER: Duration = Duration::from_millis(1);

/// The calls in flight, counted over the life of the stage instance (across its processes).
pub struct Flight {
    /// Calls put in a slot; calls answered (or lost) and returned.
    pub sent: u64,
    pub got: u64,
    /// `got` when the running process started: call `n` is in its slot `(n - base) % slots`.
    pub base: u64,
    /// Each slot's frames (the call's longest input), for the accounting.
    pub frames: [u32; MAX_SLOTS],
    /// A call failed and the process waits to be told to go on.
    pub paused: bool,
    /// The error of a failed call, read while waiting (its answer follows).
    pub error: Option<PluginError>,
    /// When the last call returned (a call that comes much later is behind a paced source).
    pub last_return: Option<Instant>,
    /// The process died after answering this many calls (global count), and how it ended.
    pub dead: Option<(u64, String, String)>,
    /// A capture's last read: the position its block starts at, and whether the source has
    /// finished (no more reads are put in the ring then; every answer after it says so too).
    pub last_read: (u64, bool),
}

impl Default for Flight {
    fn default() -> Self {
        Flight {
            sent: 0,
            got: 0,
            base: 0,
            frames: [0; MAX_SLOTS],
            paused: false,
            error: None,
            last_return: None,
            dead: None,
            last_read: (0, false),
        }
    }
}

impl ProcessorObj for ChildStage {
    fn process<'a, 'b>(
        &mut self,
        inputs: RSlice<'b, InputBlock<'a>>,
        mut outputs: RSliceMut<'b, OutputBlock<'a>>,
    ) -> RResult<(), PluginError> {
        self.call(inputs.as_slice(), outputs.as_mut_slice()).into()
    }

    fn levels(&self) -> RSlice<'_, Level> {
        RSlice::from_slice(&self.levels)
    }
    fn extension(&self, name: RStr<'_>, version: u32) -> ROption<RawExtension> {
        self.stats_extension(name, version)
    }
}

impl ChildStage {
    pub(super) fn call(
        &mut self,
        inputs: &[InputBlock<'_>],
        outputs: &mut [OutputBlock<'_>],
    ) -> Result<(), PluginError> {
        // Calls that come slowly (a paced source: the host waited for its input) wait for
        // their own answer, so that isolation adds no block of latency there.
        let paced = self
            .flight
            .last_return
            .is_none_or(|t| t.elapsed() >= RING_AFTER);
        let result = self.call_in_ring(inputs, outputs, paced);
        self.flight.last_return = Some(Instant::now());
        result
    }

    fn call_in_ring(
        &mut self,
        inputs: &[InputBlock<'_>],
        outputs: &mut [OutputBlock<'_>],
        paced: bool,
    ) -> Result<(), PluginError> {
        let frames = inputs.iter().map(|b| b.frames).max().unwrap_or(0);
        let eos = inputs
            .first()
            .is_some_and(|b| b.flags & FLAG_END_OF_STREAM != 0);
        if let Err(e) = self.ready() {
            self.iso.lose(u64::from(frames));
            return Err(e);
        }
        // The tail: first what is still in flight (skipping answers without frames).
        while eos && self.flight.got < self.flight.sent {
            if self.next_answer(outputs)? {
                return Ok(());
            }
        }
        self.submit(inputs, outputs, frames);
        if self.run.as_mut().is_some_and(|r| r.ended()) {
            // Its answers so far still come; then the crash.
            self.died();
        }
        let slots = self.slots() as u64;
        let in_flight = self.flight.sent - self.flight.got;
        if eos || slots == 1 || paced {
            self.wait(self.flight.sent);
        } else if in_flight >= slots {
            self.wait(self.flight.got + slots / 2);
        } else if self.flight.sent - self.answered() >= slots / 2 {
            // Wake a sleeping child for half a ring of work (a child faster than the host
            // would otherwise be woken for every block).
            self.ring_child();
        }
        if self.flight.got < self.answered() || self.flight.dead.is_some() {
            return self.next_answer(outputs).map(|_| ());
        }
        for o in outputs.iter_mut() {
            o.frames = 0;
        }
        Ok(())
    }

    pub(super) fn slots(&self) -> usize {
        self.run.as_ref().map_or(1, |r| r.shm.slots())
    }

    fn slot(&self, call: u64) -> usize {
        ((call - self.flight.base) % self.slots() as u64) as usize
    }

    /// A running process (a fresh one after a crash), with the calls a dead one left, going on
    /// after a failed call.
    pub(super) fn ready(&mut self) -> Result<(), PluginError> {
        self.ensure()?;
        if let Some(orphans) = self.iso.orphans.take() {
            self.adopt(*orphans);
        }
        if self.flight.paused && self.flight.dead.is_none() {
            self.flight.paused = false;
            let run = self.run.as_mut().expect("ensured");
            if run.ch.begin(tag::RESUME).send().is_err() {
                self.died();
            }
        }
        Ok(())
    }

    /// Put the calls a dead process never began in this one's ring, in order.
    fn adopt(&mut self, mut o: Orphans) {
        let old_slots = o.shm.slots() as u64;
        for n in o.calls.clone() {
            let from = ((n - o.base) % old_slots) as usize;
            let to = self.slot(self.flight.sent);
            let run = self.run.as_mut().expect("ensured");
            run.shm.copy_slot(to, &mut o.shm, from);
            self.flight.frames[to] = o.frames[from];
            self.flight.sent += 1;
        }
        self.publish();
    }

    /// Put one call in the next slot and publish it.
    pub(super) fn submit(
        &mut self,
        inputs: &[InputBlock<'_>],
        outputs: &[OutputBlock<'_>],
        frames: u32,
    ) {
        let s = self.slot(self.flight.sent);
        let shm = &mut self.run.as_mut().expect("ensured").shm;
        for (i, b) in inputs.iter().enumerate() {
            let region = shm.slot_input(s, i);
            let n = b.samples.len().min(region.len());
            region[..n].copy_from_slice(&b.samples[..n]);
        }
        let mut put = Put::new(shm.meta(s));
        put.u8(inputs.len() as u8);
        for b in inputs {
            put.u32(b.frames)
                .u32(b.flags)
                .u64(b.position)
                .u32(b.channels);
        }
        put.u8(outputs.len() as u8);
        for o in outputs {
            put.u32(o.frames)
                .u32(o.channels)
                .u64(o.position)
                .u32(o.flags);
        }
        self.flight.frames[s] = frames;
        self.flight.sent += 1;
        self.iso
            .held_frames
            .fetch_add(u64::from(frames), Ordering::Relaxed);
        self.publish();
    }

    fn publish(&mut self) {
        if self.flight.dead.is_none() {
            let run = self.run.as_ref().expect("ensured");
            let local = self.flight.sent - self.flight.base;
            run.shm.ring().submitted.store(local, Ordering::SeqCst);
        }
    }

    pub(super) fn ring_child(&mut self) {
        let run = self.run.as_mut().expect("ensured");
        if ring::ring_if_asleep(&run.shm.ring().child_sleeping, &mut run.ch).is_err() {
            self.died();
        }
    }

    /// Calls answered so far (global count).
    pub(super) fn answered(&self) -> u64 {
        match (&self.flight.dead, &self.run) {
            (Some((n, ..)), _) => *n,
            (None, Some(run)) => {
                self.flight.base + run.shm.ring().completed.load(Ordering::Acquire)
            }
            (None, None) => self.flight.got,
        }
    }

    /// Wait until `want` calls are answered or the process is gone. After a failed call the
    /// process answers nothing more until told to go on: then wait only for the next answer
    /// (the failed one is at most that far).
    pub(super) fn wait(&mut self, want: u64) {
        while self.flight.dead.is_none() {
            let want = if self.flight.error.is_some() {
                self.flight.got + 1
            } else {
                want
            };
            let run = self.run.as_mut().expect("ensured");
            match ring::wait_answers(&run.shm, &mut run.ch, want - self.flight.base) {
                Ok(Woken::Done) => return,
                Ok(Woken::Error(p)) => self.flight.error = Some(decode_error(p)),
                Err(_) => self.died(),
            }
        }
    }

    /// Wait for every call in flight and return their answers (a storage's writes, before the
    /// stage ends): the first that failed returns its error, and the calls after it are still
    /// in flight (a fresh process's after a crash).
    pub(super) fn drain(&mut self) -> Result<(), PluginError> {
        self.ready()?;
        self.wait(self.flight.sent);
        while self.flight.got < self.flight.sent {
            self.next_answer(&mut [])?;
        }
        Ok(())
    }

    /// Every call in flight is answered, none failed, and the process waits for more: a
    /// request (a storage's flush) may go over the socket now.
    pub(super) fn settled(&mut self) -> bool {
        if self.flight.paused || self.flight.error.is_some() {
            return false;
        }
        self.wait(self.flight.sent);
        let answered = self.answered();
        if self.flight.dead.is_some() || answered < self.flight.sent {
            return false;
        }
        // Only the last answer can have failed: the process stops after a failed call.
        answered == self.flight.got || {
            let s = self.slot(answered - 1);
            let run = self.run.as_mut().expect("answered by a process");
            !Answer::read(run.shm.meta(s)).failed
        }
    }

    /// The oldest call's answer, waiting for it if need be: true if it has frames.
    pub(super) fn next_answer(
        &mut self,
        outputs: &mut [OutputBlock<'_>],
    ) -> Result<bool, PluginError> {
        loop {
            if self.flight.got < self.answered() {
                return self.collect(outputs);
            }
            if self.flight.dead.is_some() {
                return Err(self.crash_error());
            }
            self.wait(self.flight.got + 1);
        }
    }

    /// Return the oldest call's answer (it is there).
    fn collect(&mut self, outputs: &mut [OutputBlock<'_>]) -> Result<bool, PluginError> {
        let s = self.slot(self.flight.got);
        let frames = u64::from(self.flight.frames[s]);
        self.flight.got += 1;
        self.iso.held_frames.fetch_sub(frames, Ordering::Relaxed);
        let capture = self.is_capture();
        let run = self.run.as_mut().expect("answered by a process");
        let mut answer = Answer::read(run.shm.meta(s));
        if answer.failed {
            let e = match self.flight.error.take() {
                Some(e) => e,
                None => ring::read_error(&mut run.ch).map_or_else(
                    |_| {
                        PluginError::new(ErrorKind::Crashed, "crashed: the stage's process is gone")
                    },
                    decode_error,
                ),
            };
            self.flight.paused = true;
            self.iso.lose(frames);
            return Err(e);
        }
        self.iso.did(frames);
        self.written_here += frames;
        let mut got: ArrayVec<(u32, u32), MAX_PORTS> = ArrayVec::new();
        let described = answer.outputs;
        got.extend((0..described).map(|_| answer.output()));
        self.levels.clear();
        for _ in 0..answer.level_count() {
            let (peak_db, rms_db) = answer.level();
            self.levels.push(Level { peak_db, rms_db });
        }
        if capture {
            self.flight.last_read = answer.read_tail();
        }
        let mut any = false;
        for (i, (o, (frames, flags))) in outputs.iter_mut().zip(got).enumerate() {
            let k = (frames as usize * o.channels as usize).min(o.samples.len());
            o.samples.as_mut_slice()[..k].copy_from_slice(&run.shm.slot_output(s, i)[..k]);
            o.frames = frames;
            o.flags = flags;
            any |= frames > 0;
        }
        Ok(any)
    }

    /// The process is gone: remember how many calls it answered and how it ended.
    fn died(&mut self) {
        if self.flight.dead.is_some() {
            return;
        }
        let answered = self.answered();
        let (how, words) = self.ended(self.ring_call());
        self.flight.dead = Some((answered, how, words));
    }

    /// The call the dead process was in is lost; the calls after it wait for the next process.
    fn crash_error(&mut self) -> PluginError {
        let (how, words) = self
            .flight
            .dead
            .take()
            .map(|(_, how, words)| (how, words))
            .unwrap_or_default();
        let block = self.flight.got;
        let s = self.slot(block);
        let frames = u64::from(self.flight.frames[s]);
        self.flight.got += 1;
        self.iso.held_frames.fetch_sub(frames, Ordering::Relaxed);
        self.iso.lose(frames);
        self.flight.paused = false;
        self.flight.error = None;
        self.orphan_rest();
        PluginError::new(
            ErrorKind::Crashed,
            format!("crashed: the stage's process {how} at block {block}{words}"),
        )
    }

    /// Hand the calls still in flight to the stage's next process (and drop this one's).
    pub(super) fn orphan_rest(&mut self) {
        let Some(run) = self.run.take() else { return };
        let shm = self.close(run);
        if self.flight.got < self.flight.sent {
            let orphans = Orphans {
                shm,
                base: self.flight.base,
                calls: self.flight.got..self.flight.sent,
                frames: self.flight.frames,
            };
            self.iso.orphans.store(Box::new(orphans));
        }
        self.flight.sent = self.flight.got;
    }
}
