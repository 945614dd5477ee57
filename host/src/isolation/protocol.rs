//! What the host and an isolated stage's process say to each other over their socket.
//!
//! Every message is a frame: `u32` length (little-endian, of what follows), a `u8` tag, then the
//! payload. Samples never cross the socket: they are in the shared memory (`shm`). A per-block
//! call is a fixed-size header each way, encoded into buffers allocated once, so the steady state
//! neither allocates nor serialises audio; only setup, errors and the final report use JSON.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use serde::{Deserialize, Serialize};
use tapeline_plugin_api::abi::{ErrorKind, PluginError, StorageReport};

/// The longest frame either side accepts (a report with many file names fits).
pub const MAX_FRAME: usize = 1 << 20;

/// Requests (host → child) and replies (child → host).
pub mod tag {
    pub const INIT: u8 = 1;
    pub const START: u8 = 2;
    pub const READ: u8 = 3;
    pub const STOP: u8 = 4;
    // 5 was PROCESS: a processor's calls are in the shared memory's ring (`ring`).
    // 6 was WRITE: a storage's writes are in the ring too.
    pub const FLUSH: u8 = 7;
    pub const FINALIZE: u8 = 8;
    pub const LENGTH: u8 = 9;
    /// Header-only: "look at the ring" (see `ring`), to a side that said it sleeps.
    pub const DOORBELL: u8 = 10;
    /// Header-only: a processor whose call failed goes on with the next (policy `ignore`).
    pub const RESUME: u8 = 11;
    pub const OK: u8 = 100;
    pub const ERR: u8 = 101;
}

/// Everything the child needs to build the same instance the host would.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Init {
    pub library: String,
    pub plugin: String,
    /// `capture`, `process` or `storage`.
    pub kind: String,
    pub config: String,
    pub stage_id: String,
    pub base_dir: String,
    pub sample_rate: u32,
    pub block_frames: u32,
    /// Each input's channels and rate.
    pub inputs: Vec<(u32, u32)>,
    /// The shared memory's regions (the memory itself comes as a descriptor, `send_fd`): each
    /// input's, then each output's capacity in samples.
    pub in_samples: Vec<usize>,
    pub out_samples: Vec<usize>,
    /// Slots in the shared memory: a processor's or a storage's calls in flight (1 for a
    /// capture).
    pub slots: usize,
    pub limits: crate::config::Limits,
}

/// Reads and writes frames on one stream, with buffers reused from call to call.
///
/// Reading is buffered: one `read` takes whatever the other side has sent (a frame's length and
/// its body arrive together, often with the next frame), so a frame usually costs one system
/// call, not two. Nothing polls the socket from outside, so frames waiting in the buffer are
/// never overlooked.
pub struct Channel<S> {
    pub stream: S,
    out: Vec<u8>,
    /// Bytes received: `inp[start..end]` not yet returned, `inp[last.0..last.1]` the last frame.
    inp: Vec<u8>,
    start: usize,
    end: usize,
    last: (usize, usize),
}

/// What one `read` may take at most, unless a longer frame needs more.
const READ_AHEAD: usize = 16 * 1024;

impl<S: Read + Write> Channel<S> {
    pub fn new(stream: S) -> Self {
        Channel {
            stream,
            out: Vec::with_capacity(4096),
            inp: vec![0; READ_AHEAD],
            start: 0,
            end: 0,
            last: (0, 0),
        }
    }

    /// Start a frame with `tag`; add the payload with [`Channel::put`], then [`Channel::send`].
    pub fn begin(&mut self, tag: u8) -> &mut Self {
        self.out.clear();
        self.out.extend_from_slice(&[0, 0, 0, 0, tag]);
        self
    }

    pub fn put(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }

    pub fn send(&mut self) -> io::Result<()> {
        let len = (self.out.len() - 4) as u32;
        self.out[..4].copy_from_slice(&len.to_le_bytes());
        self.stream.write_all(&self.out)?;
        self.stream.flush()
    }

    /// The next frame: its tag and payload.
    pub fn recv(&mut self) -> io::Result<(u8, &[u8])> {
        self.fill(4)?;
        let mut len = [0u8; 4];
        len.copy_from_slice(&self.inp[self.start..self.start + 4]);
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad frame length",
            ));
        }
        self.fill(4 + len)?;
        self.last = (self.start + 4, self.start + 4 + len);
        self.start += 4 + len;
        let frame = &self.inp[self.last.0..self.last.1];
        Ok((frame[0], &frame[1..]))
    }

    /// The payload of the frame [`Channel::recv`] returned last.
    pub fn last_payload(&self) -> &[u8] {
        self.inp.get(self.last.0 + 1..self.last.1).unwrap_or(&[])
    }

    /// Read until at least `n` bytes are buffered (moving what is left to the front first).
    fn fill(&mut self, n: usize) -> io::Result<()> {
        if self.end - self.start >= n {
            return Ok(());
        }
        self.inp.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        self.last = (0, 0);
        if self.inp.len() < n {
            // A frame longer than the read-ahead (a report, at setup or the end): grows once.
            self.inp.resize(n, 0);
        }
        while self.end < n {
            match self.stream.read(&mut self.inp[self.end..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Send `fd` over `socket` (`SCM_RIGHTS`, with one byte): the host hands the shared memory to
/// its child this way, before the first frame.
pub fn send_fd(socket: &UnixStream, fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for the descriptor"));
    }
    sendmsg(
        socket,
        &[IoSlice::new(&[0])],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(())
}

/// Receive the descriptor [`send_fd`] sent (read before any frame: a plain read would take its
/// byte and close the descriptor).
pub fn recv_fd(socket: &UnixStream) -> io::Result<OwnedFd> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let got = recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let fd = control.drain().find_map(|m| match m {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    });
    match (got.bytes, fd) {
        (1, Some(fd)) => Ok(fd),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no shared memory descriptor from the host",
        )),
    }
}

/// Little-endian fields read in order from a payload.
pub struct Fields<'a>(pub &'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        let n = N.min(self.0.len());
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        b
    }
    pub fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    pub fn f32(&mut self) -> f32 {
        f32::from_le_bytes(self.take())
    }
}

/// An error as the child sends it: kind, key, message.
pub fn encode_error(e: &PluginError) -> Vec<u8> {
    let mut b = vec![e.kind() as u8];
    let key = e.key.as_str().as_bytes();
    b.extend_from_slice(&(key.len() as u32).to_le_bytes());
    b.extend_from_slice(key);
    b.extend_from_slice(e.message.as_str().as_bytes());
    b
}

pub fn decode_error(payload: &[u8]) -> PluginError {
    let mut f = Fields(payload);
    let kind = ErrorKind::from_code(f.u8());
    let key_len = (f.u32() as usize).min(f.0.len());
    let key = String::from_utf8_lossy(&f.0[..key_len]).into_owned();
    let message = String::from_utf8_lossy(&f.0[key_len..]).into_owned();
    PluginError::new(kind, message).with_key(&key)
}

/// The final report, as JSON.
#[derive(Serialize, Deserialize)]
pub struct Report {
    pub frames_written: u64,
    pub files: Vec<String>,
}

impl From<&StorageReport> for Report {
    fn from(r: &StorageReport) -> Self {
        Report {
            frames_written: r.frames_written,
            files: r.files.iter().map(|f| f.to_string()).collect(),
        }
    }
}

impl From<Report> for StorageReport {
    fn from(r: Report) -> Self {
        let mut out = StorageReport {
            frames_written: r.frames_written,
            ..StorageReport::default()
        };
        for f in r.files {
            out.files.push(f.into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_errors_round_trip() {
        let mut ch = Channel::new(std::io::Cursor::new(Vec::new()));
        ch.begin(tag::READ)
            .put(&480u32.to_le_bytes())
            .put(&7u64.to_le_bytes())
            .send()
            .unwrap();
        ch.stream.set_position(0);
        let (t, payload) = ch.recv().unwrap();
        assert_eq!(t, tag::READ);
        let mut f = Fields(payload);
        assert_eq!((f.u32(), f.u64()), (480, 7));
        // Several frames in one read, one of them longer than the read-ahead: each comes back
        // whole and in order.
        let mut ch = Channel::new(std::io::Cursor::new(Vec::new()));
        let long = vec![7u8; READ_AHEAD * 3];
        ch.begin(tag::DOORBELL).send().unwrap();
        ch.begin(tag::ERR).put(&long).send().unwrap();
        ch.begin(tag::OK).put(b"end").send().unwrap();
        ch.stream.set_position(0);
        assert_eq!(ch.recv().unwrap(), (tag::DOORBELL, &[][..]));
        let (t, p) = ch.recv().unwrap();
        assert_eq!((t, p.len()), (tag::ERR, long.len()));
        assert_eq!(ch.last_payload(), &long[..]);
        assert_eq!(ch.recv().unwrap(), (tag::OK, &b"end"[..]));
        assert!(
            ch.recv().is_err(),
            "the end of the stream is an error, not a hang"
        );
        let e = PluginError::config("gain_db", "too loud");
        let back = decode_error(&encode_error(&e));
        assert_eq!(back, e);
    }
}
