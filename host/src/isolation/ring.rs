//! A processor's or a storage's calls in flight: the host puts each `process` (or `write`) call
//! in the next slot of the shared memory and publishes it (`Ring::submitted`); the child answers
//! the calls in order and publishes each answer (`Ring::completed`). Neither side waits for the
//! other per block: the host waits only when every slot is taken (or at the end of the stream,
//! or when the window is one slot: behind a live source), and then for half of the window at
//! once. A storage's flush and finalise go over the socket when every write is answered.
//!
//! A side that has nothing to do sleeps in a read on the socket, after saying so in the ring
//! (`child_sleeping`, `host_waiting`); the other side sends a doorbell (a header-only frame)
//! only when it sees that flag, so a busy pair makes no system call per block. The flag is set
//! before the counter is looked at again, and the counter is published before the flag is
//! looked at (all `SeqCst`): one of the two always sees the other, so no wake-up is lost. A
//! doorbell that arrives when its sleeper had already woken is read later and ignored.
//!
//! A slot's descriptions are little-endian fields in its [`META_BYTES`](super::shm::META_BYTES):
//! the request as the `process` header always was (each input's `frames flags position
//! channels`, each output's `frames channels position flags`), the answer at
//! [`REPLY_AT`](super::shm::REPLY_AT) (a status byte: 0 ok, 1 failed, then each output's
//! `frames flags` and the levels). A failed call's error crosses the socket (`ERR`) before its
//! answer is published.

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;

use super::protocol::{tag, Channel, Fields};
use super::shm::{Shared, REPLY_AT};

/// Ring the other side's doorbell if it sleeps (`flag` is its sleeping flag).
pub fn ring_if_asleep<S: Read + Write>(
    flag: &std::sync::atomic::AtomicU32,
    ch: &mut Channel<S>,
) -> io::Result<()> {
    if flag.load(Ordering::SeqCst) == 1 && flag.swap(0, Ordering::SeqCst) == 1 {
        ch.begin(tag::DOORBELL).send()?;
    }
    Ok(())
}

/// What woke a sleeping host.
pub enum Woken<'a> {
    /// The answers it waits for are there.
    Done,
    /// A call failed: its error (the answer follows).
    Error(&'a [u8]),
}

/// The host: wait until the child has answered `want` calls, or says a call failed. `Err` when
/// the process is gone (the socket closed).
pub fn wait_answers<'c, S: Read + Write>(
    shm: &Shared,
    ch: &'c mut Channel<S>,
    want: u64,
) -> io::Result<Woken<'c>> {
    let ring = shm.ring();
    loop {
        if ring.completed.load(Ordering::Acquire) >= want {
            return Ok(Woken::Done);
        }
        ring_if_asleep(&ring.child_sleeping, ch)?;
        ring.host_want.store(want, Ordering::Relaxed);
        ring.host_waiting.store(1, Ordering::SeqCst);
        if ring.completed.load(Ordering::SeqCst) >= want {
            ring.host_waiting.store(0, Ordering::SeqCst);
            return Ok(Woken::Done);
        }
        match ch.recv()? {
            (tag::DOORBELL, _) => {}
            (tag::ERR, _) => break,
            (t, _) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected frame {t} from the stage's process"),
                ))
            }
        }
    }
    // The error frame is the channel's last frame (returned from here so the borrow ends).
    ring.host_waiting.store(0, Ordering::SeqCst);
    Ok(Woken::Error(ch.last_payload()))
}

/// The host: read frames until the error of a failed call (doorbells are skipped).
pub fn read_error<S: Read + Write>(ch: &mut Channel<S>) -> io::Result<&[u8]> {
    loop {
        match ch.recv()? {
            (tag::DOORBELL, _) => {}
            (tag::ERR, _) => return Ok(ch.last_payload()),
            (t, _) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected frame {t} from the stage's process"),
                ))
            }
        }
    }
}

/// The child: wake the host if it waits for no more than `done` answers.
pub fn wake_host<S: Read + Write>(shm: &Shared, ch: &mut Channel<S>, done: u64) -> io::Result<()> {
    let ring = shm.ring();
    if ring.host_waiting.load(Ordering::SeqCst) == 1
        && done >= ring.host_want.load(Ordering::Relaxed)
        && ring.host_waiting.swap(0, Ordering::SeqCst) == 1
    {
        ch.begin(tag::DOORBELL).send()?;
    }
    Ok(())
}

/// What the child should do next.
pub enum Next {
    /// Answer call number `done` (counted from 0 in this process).
    Call,
    /// Answer the request on the socket (its tag): a capture's start, stop or length, a
    /// storage's flush or finalise. The host sends one only when no call it put in the ring is
    /// waiting for an answer (every one is answered, or the process waits after a failed
    /// call and the calls after it are not to be made).
    Request(u8),
    /// The host closed the socket (or sent something else): end.
    End,
}

/// The child: wait until the host has put call number `done` in a slot, or sent a request.
pub fn wait_call<S: Read + Write>(shm: &Shared, ch: &mut Channel<S>, done: u64) -> Next {
    let ring = shm.ring();
    loop {
        if ring.submitted.load(Ordering::Acquire) > done {
            return Next::Call;
        }
        ring.child_sleeping.store(1, Ordering::SeqCst);
        if ring.submitted.load(Ordering::SeqCst) > done {
            ring.child_sleeping.store(0, Ordering::SeqCst);
            return Next::Call;
        }
        match ch.recv() {
            Ok((tag::DOORBELL | tag::RESUME, _)) => {}
            Ok((t @ (tag::START | tag::STOP | tag::LENGTH | tag::FLUSH | tag::FINALIZE), _)) => {
                ring.child_sleeping.store(0, Ordering::SeqCst);
                return Next::Request(t);
            }
            _ => return Next::End,
        }
    }
}

/// The child, after a failed call: wait for the host to say go on (`ignore`, or the end of the
/// stream's wait for the calls in flight), or for a storage's flush or finalise without the
/// calls after the failed one (under `restart` the old instance, under `fail` the stage given
/// up); otherwise (the socket closed) end.
pub fn wait_resume<S: Read + Write>(ch: &mut Channel<S>) -> Next {
    loop {
        match ch.recv() {
            Ok((tag::DOORBELL, _)) => {}
            Ok((tag::RESUME, _)) => return Next::Call,
            // A storage finalised without the writes after the failed one.
            Ok((t @ (tag::FLUSH | tag::FINALIZE), _)) => return Next::Request(t),
            _ => return Next::End,
        }
    }
}

/// A slot's answer, as the host reads it.
pub struct Answer<'a> {
    pub failed: bool,
    /// The outputs the answer describes: as many as the call's request had (whatever the
    /// caller takes of them).
    pub outputs: usize,
    fields: Fields<'a>,
}

/// Bytes of one block's description in a request (`frames flags position channels`).
const BLOCK_BYTES: usize = 20;

impl<'a> Answer<'a> {
    pub fn read(meta: &'a [u8]) -> Self {
        let inputs = usize::from(meta[0]);
        let outputs = usize::from(meta[1 + inputs * BLOCK_BYTES]);
        let mut fields = Fields(&meta[REPLY_AT..]);
        let failed = fields.u8() != 0;
        Answer {
            failed,
            outputs,
            fields,
        }
    }
    /// The next output's `frames flags`.
    pub fn output(&mut self) -> (u32, u32) {
        (self.fields.u32(), self.fields.u32())
    }
    /// After the outputs: the levels' count, then [`Answer::level`] that many times.
    pub fn level_count(&mut self) -> u8 {
        self.fields.u8()
    }
    /// The next level's `peak rms`.
    pub fn level(&mut self) -> (f32, f32) {
        (self.fields.f32(), self.fields.f32())
    }
    /// After the levels, a capture's read: the position of its block, and whether the source
    /// has finished.
    pub fn read_tail(&mut self) -> (u64, bool) {
        (self.fields.u64(), self.fields.u8() != 0)
    }
}

/// Little-endian fields written in order into a slot's bytes.
pub struct Put<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> Put<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Put { buf, at: 0 }
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let end = (self.at + b.len()).min(self.buf.len());
        self.buf[self.at..end].copy_from_slice(&b[..end - self.at]);
        self.at = end;
        self
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes(&[v])
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    pub fn f32(&mut self, v: f32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
}
