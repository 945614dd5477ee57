//! One output file and its write buffer: samples are encoded straight into the buffer (no
//! intermediate conversion buffer, no second copy), which goes to the file whenever it is full
//! and whenever the writer flushes it (each sync, and at the end).

use std::fs::File;
use std::io::{self, Write};

use crate::convert::encode::encode_slice;
use crate::writer::SampleFormat;

/// The file and the bytes not yet written to it; allocated once, in [`WriteBuffer::new`].
pub(crate) struct WriteBuffer {
    file: File,
    buf: Box<[u8]>,
    /// Bytes of `buf` in use, from its start.
    len: usize,
}

/// Samples of one channel gathered at a time by [`WriteBuffer::write_samples`] (1 KiB of stack).
const GATHER: usize = 256;

/// The widest sample (4 bytes): a buffer holds at least one.
const MIN_CAPACITY: usize = 4;

impl WriteBuffer {
    /// A buffer of `capacity` bytes (at least 4) in front of `file`.
    pub(crate) fn new(file: File, capacity: usize) -> Self {
        WriteBuffer {
            file,
            buf: vec![0; capacity.max(MIN_CAPACITY)].into_boxed_slice(),
            len: 0,
        }
    }

    /// Encode interleaved `samples` into the buffer, writing it to the file each time it fills.
    pub(crate) fn write_slice(&mut self, format: SampleFormat, samples: &[f32]) -> io::Result<()> {
        let width = format.bytes();
        let mut rest = samples;
        while !rest.is_empty() {
            let used = encode_slice(format, rest, &mut self.buf[self.len..]);
            self.len += used;
            rest = &rest[used / width..];
            self.flush_if_full(width)?;
        }
        Ok(())
    }

    /// [`Self::write_slice`] from an iterator (one channel of an interleaved block): the samples
    /// are gathered [`GATHER`] at a time into a stack array, so the conversion runs on a slice
    /// (packed, as in the interleaved path) rather than sample by sample.
    pub(crate) fn write_samples(
        &mut self,
        format: SampleFormat,
        mut samples: impl Iterator<Item = f32>,
    ) -> io::Result<()> {
        let mut chunk = [0f32; GATHER];
        loop {
            let mut n = 0;
            // `zip` asks `chunk` first: no sample is taken that does not fit.
            for (d, x) in chunk.iter_mut().zip(&mut samples) {
                *d = x;
                n += 1;
            }
            if n == 0 {
                return Ok(());
            }
            self.write_slice(format, &chunk[..n])?;
        }
    }

    /// Write the buffer out once it has no room for another sample of `width` bytes.
    fn flush_if_full(&mut self, width: usize) -> io::Result<()> {
        if self.buf.len() - self.len < width {
            self.flush()?;
        }
        Ok(())
    }

    /// Write every buffered byte to the file. On an error the bytes the file did not take stay
    /// buffered (those it took are dropped from the buffer), so a later flush writes each byte
    /// once and in order, as `BufWriter` does.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        let mut done = 0;
        let result = loop {
            if done == self.len {
                break Ok(());
            }
            match self.file.write(&self.buf[done..self.len]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.buf.copy_within(done..self.len, 0);
        self.len -= done;
        result
    }

    /// Bytes accepted but not yet written to the file.
    pub(crate) fn buffered(&self) -> usize {
        self.len
    }

    /// The file (for the early write-back of what reached it).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The file, to rewrite its header and sync it; after a [`Self::flush`], so that the file
    /// holds every byte accepted so far.
    pub(crate) fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// Flush and give the file back, with whether the flush succeeded; on a failure the bytes
    /// the file did not take are dropped, and the file keeps what reached it.
    pub(crate) fn into_file(mut self) -> (File, bool) {
        let flushed = self.flush().is_ok();
        (self.file, flushed)
    }
}

#[cfg(test)]
mod tests {
    use super::WriteBuffer;
    use crate::convert::tests::{encoded_one_by_one, FORMATS};
    use crate::writer::SampleFormat;

    /// Buffers of every small size (a full buffer at every possible offset of a sample) and
    /// blocks of every size from 0 to 12 samples, through both paths, give the file exactly
    /// the samples encoded one by one, every flush included.
    #[test]
    fn small_buffers_and_blocks_give_the_samples_encoded_one_by_one() {
        let dir = std::env::temp_dir().join(format!("tapeline-wbuf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let samples: Vec<f32> = (0..500).map(|i| (i as f32 * 0.61).sin() * 1.2).collect();
        for format in FORMATS {
            let want = encoded_one_by_one(format, samples.iter().copied());
            for capacity in 1..=13 {
                for by_iter in [false, true] {
                    let path = dir.join(format!("{format:?}-{capacity}-{by_iter}"));
                    let file = std::fs::File::create(&path).unwrap();
                    let mut w = WriteBuffer::new(file, capacity);
                    let mut rest = &samples[..];
                    for size in (0..=12).cycle() {
                        let (block, tail) = rest.split_at(size.min(rest.len()));
                        if by_iter {
                            w.write_samples(format, block.iter().copied()).unwrap();
                        } else {
                            w.write_slice(format, block).unwrap();
                        }
                        let room = w.buf.len() - w.buffered();
                        assert!(room >= format.bytes(), "a full buffer is written out");
                        rest = tail;
                        if rest.is_empty() {
                            break;
                        }
                    }
                    let (file, flushed) = w.into_file();
                    assert!(flushed);
                    drop(file);
                    let got = std::fs::read(&path).unwrap();
                    assert!(
                        got == want,
                        "{format:?}, capacity {capacity}, iter {by_iter}"
                    );
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file that refuses every byte (/dev/full): the flush fails and keeps every byte
    /// buffered, to be retried.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_flush_keeps_the_bytes_the_file_did_not_take() {
        let Ok(file) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let mut w = WriteBuffer::new(file, 64);
        w.write_slice(SampleFormat::Pcm16, &[0.5; 10]).unwrap();
        assert_eq!(w.buffered(), 20);
        assert!(w.flush().is_err());
        assert_eq!(w.buffered(), 20);
        assert!(w.write_slice(SampleFormat::Pcm16, &[0.5; 40]).is_err());
        assert_eq!(w.buffered(), 64, "the samples that fitted are kept");
        let (_, flushed) = w.into_file();
        assert!(!flushed);
    }
}
