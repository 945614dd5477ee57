//! The memory an isolated stage's process shares with the host: a small header of counters (the
//! [`Ring`]), then `slots` slots, each with a fixed-size area for the call's block descriptions
//! and its answer ([`META_BYTES`]), and one region per input and per output port holding one
//! block of interleaved `f32` samples. Every kind uses the slots as a ring of calls in flight
//! (see [`super::ring`]): a capture's reads, a processor's calls, a storage's writes.
//!
//! The host creates it with `memfd_create` (memory with no name anywhere: nothing is left
//! behind when either side dies, and `/dev/shm`'s size, 64 MiB in a default container, does
//! not apply), reserves it, and sends the descriptor over the socket (`SCM_RIGHTS`); both sides
//! map it.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicU64};

use arrayvec::ArrayVec;
use memmap2::MmapMut;
use rustix::fs::{fallocate, memfd_create, FallocateFlags, MemfdFlags};

use crate::coordinator::plugin_stats::MAX_PLUGIN_STATS;

/// Most ports one stage has (as in the coordinator).
pub const MAX_PORTS: usize = 64;

/// Bytes of one slot's descriptions: the request (a count byte and 20 bytes per block, for
/// inputs and outputs: 2 + 2 × 64 × 20 = 2562) at 0, the answer at [`REPLY_AT`].
pub const META_BYTES: usize = 4096;
/// Where a slot's answer starts: a status byte, 8 bytes per output, a count byte and 8 bytes per
/// level (1 + 512 + 1 + 512 = 1026 bytes, so it ends before [`META_BYTES`]).
pub const REPLY_AT: usize = 2600;

/// Bytes before the first slot: the ring's counters, each on its own cache line.
const HEADER_BYTES: usize = 512;

/// The counters host and child share (in the mapping's first bytes).
#[repr(C, align(64))]
pub struct Ring {
    /// Calls the host has put in slots (written by the host).
    pub submitted: AtomicU64,
    _a: [u8; 56],
    /// Calls the child has answered (written by the child).
    pub completed: AtomicU64,
    _b: [u8; 56],
    /// 1 while the child sleeps on the socket waiting for calls.
    pub child_sleeping: AtomicU32,
    _c: [u8; 60],
    /// 1 while the host sleeps on the socket waiting for `completed` to reach `host_want`.
    pub host_waiting: AtomicU32,
    /// 1 once the host stops a capture: the reads still in flight are answered as finished
    /// without calling the plugin (a read that waits on a slow source does not hold the stop up
    /// once per read in flight).
    pub stopping: AtomicU32,
    pub host_want: AtomicU64,
    /// The plugin's own counters (`tapeline.stats`), written by the child after every call.
    pub stats: [AtomicU64; MAX_PLUGIN_STATS],
    pub stats_len: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Ring>() <= HEADER_BYTES);

pub struct Shared {
    map: MmapMut,
    slots: usize,
    /// Sample ranges within one slot's samples: the inputs', then the outputs'.
    inputs: Vec<Range<usize>>,
    outputs: Vec<Range<usize>>,
    /// Samples per slot.
    span: usize,
}

impl Shared {
    /// New memory for `stage` (host side), sized for the regions and reserved at once (so that
    /// memory that is not there is an error here, not a SIGBUS at the first block), and the file
    /// descriptor to hand to the child.
    pub fn create(
        stage: &str,
        in_samples: &[usize],
        out_samples: &[usize],
        slots: usize,
    ) -> io::Result<(Shared, OwnedFd)> {
        let safe: String = stage
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let fd = memfd_create(format!("tapeline-{safe}"), MemfdFlags::CLOEXEC)?;
        let file = File::from(fd);
        let shared = Self::map(&file, in_samples, out_samples, slots, true)?;
        Ok((shared, file.into()))
    }

    /// Map the host's memory (child side), from the descriptor it sent.
    pub fn open(
        fd: OwnedFd,
        in_samples: &[usize],
        out_samples: &[usize],
        slots: usize,
    ) -> io::Result<Shared> {
        Self::map(&File::from(fd), in_samples, out_samples, slots, false)
    }

    fn map(
        file: &File,
        in_samples: &[usize],
        out_samples: &[usize],
        slots: usize,
        size: bool,
    ) -> io::Result<Shared> {
        if in_samples.len() > MAX_PORTS || out_samples.len() > MAX_PORTS || slots == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many ports or no slot",
            ));
        }
        let mut at = 0;
        let mut ranges = |sizes: &[usize]| -> Vec<Range<usize>> {
            sizes
                .iter()
                .map(|&n| {
                    let r = at..at + n;
                    at += n;
                    r
                })
                .collect()
        };
        let inputs = ranges(in_samples);
        let outputs = ranges(out_samples);
        let span = at;
        let bytes = (HEADER_BYTES + slots * META_BYTES + slots * span * 4) as u64;
        if size {
            file.set_len(bytes)?;
            fallocate(file, FallocateFlags::empty(), 0, bytes)?;
        } else if file.metadata()?.len() < bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "shared memory too small",
            ));
        }
        // SAFETY: the file is private to this host and its own child. The two processes take
        // turns on every slot (the host writes a call's inputs and descriptions before it
        // publishes the call in `Ring::submitted`; the child reads them and writes the answer
        // before it publishes it in `Ring::completed`; the host reads the answer after that), so
        // neither reads what the other is writing; the counters are atomics.
        let map = unsafe { MmapMut::map_mut(file)? };
        Ok(Shared {
            map,
            slots,
            inputs,
            outputs,
            span,
        })
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The shared counters.
    pub fn ring(&self) -> &Ring {
        // SAFETY: the mapping is page-aligned, at least HEADER_BYTES long (checked in `map`),
        // lives as long as `self`, and its first bytes are only ever accessed as this struct of
        // atomics (zeroed by `set_len`: every counter starts at 0).
        unsafe { &*(self.map.as_ptr() as *const Ring) }
    }

    /// Slot `s`'s descriptions and answer.
    pub fn meta(&mut self, s: usize) -> &mut [u8] {
        let at = HEADER_BYTES + s * META_BYTES;
        &mut self.map[at..at + META_BYTES]
    }

    fn samples(&mut self, s: usize) -> &mut [f32] {
        let at = HEADER_BYTES + self.slots * META_BYTES + s * self.span * 4;
        bytemuck::cast_slice_mut(&mut self.map[at..at + self.span * 4])
    }

    /// Input `i` of slot 0.
    pub fn input(&mut self, i: usize) -> &mut [f32] {
        self.slot_input(0, i)
    }

    /// Output `i` of slot 0.
    pub fn output(&mut self, i: usize) -> &mut [f32] {
        self.slot_output(0, i)
    }

    pub fn slot_input(&mut self, s: usize, i: usize) -> &mut [f32] {
        let r = self.inputs[i].clone();
        &mut self.samples(s)[r]
    }

    pub fn slot_output(&mut self, s: usize, i: usize) -> &mut [f32] {
        let r = self.outputs[i].clone();
        &mut self.samples(s)[r]
    }

    /// Every input (read) and every output (written) of slot `s` at once, and the slot's
    /// descriptions, for one `process` call.
    #[allow(clippy::type_complexity)]
    pub fn split(
        &mut self,
        s: usize,
    ) -> (
        &mut [u8],
        ArrayVec<&[f32], MAX_PORTS>,
        ArrayVec<&mut [f32], MAX_PORTS>,
    ) {
        let meta_at = HEADER_BYTES + s * META_BYTES;
        let samples_at = HEADER_BYTES + self.slots * META_BYTES + s * self.span * 4;
        let (head, rest) = self.map.split_at_mut(samples_at);
        let meta = &mut head[meta_at..meta_at + META_BYTES];
        let samples: &mut [f32] = bytemuck::cast_slice_mut(&mut rest[..self.span * 4]);
        let in_end = self.inputs.last().map_or(0, |r| r.end);
        let (ins, mut rest) = samples.split_at_mut(in_end);
        let ins: &[f32] = ins;
        let mut outs = ArrayVec::new();
        let mut at = in_end;
        for r in &self.outputs {
            let (this, tail) = std::mem::take(&mut rest).split_at_mut(r.end - at);
            outs.push(&mut this[r.start - at..]);
            rest = tail;
            at = r.end;
        }
        (
            meta,
            self.inputs.iter().map(|r| &ins[r.clone()]).collect(),
            outs,
        )
    }

    /// Copy slot `from` of `other` (same layout) into slot `to` of this one: a call a dead
    /// process never answered, handed to a fresh one.
    pub fn copy_slot(&mut self, to: usize, other: &mut Shared, from: usize) {
        self.meta(to).copy_from_slice(other.meta(from));
        self.samples(to).copy_from_slice(other.samples(from));
    }
}
