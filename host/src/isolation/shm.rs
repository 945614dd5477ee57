//! The memory an isolated stage's process shares with the host: one region per input and per
//! output port, each holding one block of interleaved `f32` samples. The host creates a file in
//! `/dev/shm` (memory, not disk), both sides map it, and the host removes the name as soon as the
//! child has mapped it: nothing is left behind when either side dies.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use arrayvec::ArrayVec;
use memmap2::MmapMut;

/// Most ports one stage has (as in the coordinator).
pub const MAX_PORTS: usize = 64;

pub struct Shared {
    map: MmapMut,
    /// Sample ranges: the inputs', then the outputs'.
    inputs: Vec<Range<usize>>,
    outputs: Vec<Range<usize>>,
}

impl Shared {
    /// A new file for `stage` (host side), sized for the regions.
    pub fn create(
        stage: &str,
        in_samples: &[usize],
        out_samples: &[usize],
    ) -> io::Result<(Shared, PathBuf)> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = Path::new("/dev/shm");
        let dir = if dir.is_dir() {
            dir.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let safe: String = stage
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = dir.join(format!(
            "tapeline-{}-{safe}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let shared = Self::map(&file, in_samples, out_samples, true)?;
        Ok((shared, path))
    }

    /// Map the host's file (child side).
    pub fn open(path: &Path, in_samples: &[usize], out_samples: &[usize]) -> io::Result<Shared> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Self::map(&file, in_samples, out_samples, false)
    }

    fn map(
        file: &File,
        in_samples: &[usize],
        out_samples: &[usize],
        size: bool,
    ) -> io::Result<Shared> {
        if in_samples.len() > MAX_PORTS || out_samples.len() > MAX_PORTS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many ports",
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
        let bytes = (at.max(1) * 4) as u64;
        if size {
            file.set_len(bytes)?;
        } else if file.metadata()?.len() < bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "shared memory too small",
            ));
        }
        // SAFETY: the file is private to this host and its own child: the two processes take
        // turns (the host writes inputs before a request and reads outputs after the reply; the
        // child in between), so neither reads what the other is writing.
        let map = unsafe { MmapMut::map_mut(file)? };
        Ok(Shared {
            map,
            inputs,
            outputs,
        })
    }

    fn samples(&mut self) -> &mut [f32] {
        bytemuck::cast_slice_mut(&mut self.map[..])
    }

    pub fn input(&mut self, i: usize) -> &mut [f32] {
        let r = self.inputs[i].clone();
        &mut self.samples()[r]
    }

    pub fn output(&mut self, i: usize) -> &mut [f32] {
        let r = self.outputs[i].clone();
        &mut self.samples()[r]
    }

    /// Every input (read) and every output (written) at once, for one `process` call.
    #[allow(clippy::type_complexity)]
    pub fn split(&mut self) -> (ArrayVec<&[f32], MAX_PORTS>, ArrayVec<&mut [f32], MAX_PORTS>) {
        let in_end = self.inputs.last().map_or(0, |r| r.end);
        let samples: &mut [f32] = bytemuck::cast_slice_mut(&mut self.map[..]);
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
        (self.inputs.iter().map(|r| &ins[r.clone()]).collect(), outs)
    }
}
