//! Repair the header of a WAV or RF64 file left behind by a crash.
//!
//! A writer killed mid-recording leaves audio past what its header last claimed, and maybe half
//! a frame at the end. [`repair`] treats everything after the start of the `data` chunk as audio:
//! it cuts the trailing partial frame and rewrites the RIFF/RF64 and `data` sizes (and the `ds64`
//! sizes of an RF64 file) to match. A file whose header already matches its length is left
//! untouched, so a finished file with chunks after its audio is never folded into the audio.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// What [`repair`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairReport {
    /// Whole frames of audio the file holds now.
    pub frames: u64,
    /// Bytes of a trailing partial frame that were cut off.
    pub bytes_dropped: u64,
    /// The header already matched the file: nothing was changed.
    pub was_valid: bool,
    /// Frames per second, from the `fmt ` chunk.
    pub sample_rate: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("not a WAV file: it does not start with a RIFF or RF64 WAVE header")]
    NotWav,
    #[error("no usable fmt chunk before the audio, so the frame size is unknown")]
    NoFmt,
    #[error("no data chunk: the file holds no audio")]
    NoData,
    #[error("the audio passes 4 GiB but the file has no JUNK or ds64 chunk to hold RF64 sizes")]
    TooLarge,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Fix the header of the WAV/RF64 file at `path` in place and sync it to disk.
pub fn repair(path: &Path) -> Result<RepairReport, RepairError> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    repair_in(&mut Disk(file))
}

/// The few operations repair needs, so tests can fake a file larger than 4 GiB.
trait Medium {
    fn len(&mut self) -> io::Result<u64>;
    fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write_at(&mut self, pos: u64, buf: &[u8]) -> io::Result<()>;
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    fn sync(&mut self) -> io::Result<()>;
}

struct Disk(File);

impl Medium for Disk {
    fn len(&mut self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.seek(SeekFrom::Start(pos))?;
        self.0.read_exact(buf)
    }
    fn write_at(&mut self, pos: u64, buf: &[u8]) -> io::Result<()> {
        self.0.seek(SeekFrom::Start(pos))?;
        self.0.write_all(buf)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
}

/// Where the chunks that matter are.
struct Layout {
    rf64: bool,
    /// Declared RIFF size (from `ds64` when the 32-bit field is 0xFFFFFFFF in RF64).
    riff_size: u64,
    /// Offset of the `ds64` chunk's body.
    ds64: Option<u64>,
    /// Offset of a `JUNK` chunk (header included) big enough to become `ds64`.
    junk: Option<u64>,
    block_align: u64,
    sample_rate: u32,
    /// Offset of the `data` chunk's header.
    data_pos: u64,
    /// Declared data size.
    data_size: u64,
}

const DS64_BODY: u32 = 28;

fn scan(m: &mut impl Medium, len: u64) -> Result<Layout, RepairError> {
    if len < 12 {
        return Err(RepairError::NotWav);
    }
    let mut head = [0u8; 12];
    m.read_at(0, &mut head)?;
    let rf64 = match &head[0..4] {
        b"RIFF" => false,
        b"RF64" | b"BW64" => true,
        _ => return Err(RepairError::NotWav),
    };
    if &head[8..12] != b"WAVE" {
        return Err(RepairError::NotWav);
    }
    let riff32 = u32_at(&head, 4);
    let mut ds64_sizes = None;
    let mut layout = Layout {
        rf64,
        riff_size: u64::from(riff32),
        ds64: None,
        junk: None,
        block_align: 0,
        sample_rate: 0,
        data_pos: 0,
        data_size: 0,
    };
    let mut pos = 12u64;
    while pos + 8 <= len {
        let mut ch = [0u8; 8];
        m.read_at(pos, &mut ch)?;
        let size = u32_at(&ch, 4);
        let body = pos + 8;
        match &ch[0..4] {
            b"ds64" if size >= DS64_BODY && body + u64::from(DS64_BODY) <= len => {
                let mut d = [0u8; 16];
                m.read_at(body, &mut d)?;
                ds64_sizes = Some((u64_at(&d, 0), u64_at(&d, 8)));
                layout.ds64 = Some(body);
            }
            b"JUNK" | b"junk" if size >= DS64_BODY && layout.junk.is_none() => {
                layout.junk = Some(pos);
            }
            b"fmt " => {
                if size < 16 || body + 16 > len {
                    return Err(RepairError::NoFmt);
                }
                let mut f = [0u8; 16];
                m.read_at(body, &mut f)?;
                layout.block_align = u64::from(u16::from_le_bytes([f[12], f[13]]));
                layout.sample_rate = u32_at(&f, 4);
                if layout.block_align == 0 {
                    return Err(RepairError::NoFmt);
                }
            }
            b"data" => {
                if layout.block_align == 0 {
                    return Err(RepairError::NoFmt);
                }
                layout.data_pos = pos;
                layout.data_size = u64::from(size);
                if let (true, Some((riff64, data64))) = (rf64, ds64_sizes) {
                    if size == u32::MAX {
                        layout.data_size = data64;
                    }
                    if riff32 == u32::MAX {
                        layout.riff_size = riff64;
                    }
                }
                return Ok(layout);
            }
            _ => {}
        }
        pos = body + u64::from(size) + u64::from(size & 1);
    }
    Err(RepairError::NoData)
}

/// True when the chunks from `pos` on are well-formed and end exactly at the end of the file
/// (allowing a missing final pad byte).
fn chunks_fill_to_end(m: &mut impl Medium, mut pos: u64, len: u64) -> io::Result<bool> {
    while pos + 8 <= len {
        let mut ch = [0u8; 8];
        m.read_at(pos, &mut ch)?;
        if !ch[0..4].iter().all(|b| (0x20..=0x7E).contains(b)) {
            return Ok(false);
        }
        let size = u64::from(u32_at(&ch, 4));
        pos += 8 + size + (size & 1);
    }
    Ok(pos == len || pos == len + 1)
}

fn repair_in(m: &mut impl Medium) -> Result<RepairReport, RepairError> {
    let len = m.len()?;
    let l = scan(m, len)?;
    let body = l.data_pos + 8;
    let available = len - body;

    let declared_fits = l.data_size <= available && l.data_size % l.block_align == 0;
    // A RIFF size near u64::MAX (a damaged ds64) matches nothing rather than overflowing.
    let riff_end = l.riff_size.checked_add(8);
    let riff_matches = riff_end == Some(len) || riff_end == len.checked_add(1);
    if declared_fits
        && riff_matches
        && chunks_fill_to_end(m, body + l.data_size + (l.data_size & 1), len)?
    {
        return Ok(RepairReport {
            frames: l.data_size / l.block_align,
            bytes_dropped: 0,
            was_valid: true,
            sample_rate: l.sample_rate,
        });
    }

    let frames = available / l.block_align;
    let data = frames * l.block_align;
    let pad = data & 1;
    let new_len = body + data + pad;
    let riff = new_len - 8;
    let needs_64 = riff > u64::from(u32::MAX);
    // Decide where the sizes go before changing anything, so a refusal leaves the file as it was.
    let (ds64, junk_to_ds64) = match (l.ds64, l.junk) {
        (Some(ds), _) if l.rf64 || needs_64 => (Some(ds), None),
        (None, Some(junk)) if needs_64 => (Some(junk + 8), Some(junk)),
        (None, None) if needs_64 => return Err(RepairError::TooLarge),
        _ => (None, None),
    };

    m.set_len(new_len)?;
    if pad == 1 {
        // The byte there may be from the cut partial frame; RIFF wants a zero pad.
        m.write_at(body + data, &[0])?;
    }
    if let Some(junk) = junk_to_ds64 {
        m.write_at(junk, b"ds64")?;
    }
    match ds64 {
        Some(ds) => {
            m.write_at(0, b"RF64")?;
            m.write_at(4, &u32::MAX.to_le_bytes())?;
            let mut d = [0u8; DS64_BODY as usize];
            d[0..8].copy_from_slice(&riff.to_le_bytes());
            d[8..16].copy_from_slice(&data.to_le_bytes());
            d[16..24].copy_from_slice(&frames.to_le_bytes());
            // d[24..28]: no table entries.
            m.write_at(ds, &d)?;
            m.write_at(l.data_pos + 4, &u32::MAX.to_le_bytes())?;
        }
        None => {
            m.write_at(0, b"RIFF")?;
            m.write_at(4, &(riff as u32).to_le_bytes())?;
            m.write_at(l.data_pos + 4, &(data as u32).to_le_bytes())?;
        }
    }
    m.sync()?;
    Ok(RepairReport {
        frames,
        bytes_dropped: available - data,
        was_valid: false,
        sample_rate: l.sample_rate,
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A 16-bit stereo header as a crashed recorder leaves it: RIFF, reserved JUNK, fmt, and
    /// `data` sizes of `data_size`.
    fn header(data_size: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(b"RIFF");
        h.extend_from_slice(&(72 + data_size).to_le_bytes());
        h.extend_from_slice(b"WAVE");
        h.extend_from_slice(b"JUNK");
        h.extend_from_slice(&28u32.to_le_bytes());
        h.extend_from_slice(&[0; 28]);
        h.extend_from_slice(b"fmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes()); // PCM
        h.extend_from_slice(&2u16.to_le_bytes()); // channels
        h.extend_from_slice(&48_000u32.to_le_bytes());
        h.extend_from_slice(&(48_000u32 * 4).to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes()); // block align
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(b"data");
        h.extend_from_slice(&data_size.to_le_bytes());
        assert_eq!(h.len(), 80);
        h
    }

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("tapeline-repair-{}-{name}.wav", std::process::id()))
    }

    fn audio(frames: usize) -> Vec<u8> {
        (0..frames * 4).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn repairs_a_file_cut_mid_frame() {
        let path = temp("cut");
        // Header written at creation (size 0), 1000 frames after it, then 3 bytes of a frame.
        let mut bytes = header(0);
        bytes.extend_from_slice(&audio(1000));
        bytes.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&path, &bytes).unwrap();

        let report = repair(&path).unwrap();
        assert_eq!(
            report,
            RepairReport {
                frames: 1000,
                bytes_dropped: 3,
                was_valid: false,
                sample_rate: 48_000,
            }
        );
        let fixed = std::fs::read(&path).unwrap();
        assert_eq!(fixed.len(), 80 + 4000);
        assert_eq!(&fixed[0..4], b"RIFF");
        assert_eq!(u32_at(&fixed, 4), 80 - 8 + 4000);
        assert_eq!(u32_at(&fixed, 76), 4000);
        assert_eq!(&fixed[80..], &bytes[80..4080], "audio is untouched");

        // Running it again finds nothing to do.
        let again = repair(&path).unwrap();
        assert_eq!(
            again,
            RepairReport {
                frames: 1000,
                bytes_dropped: 0,
                was_valid: true,
                sample_rate: 48_000,
            }
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_stale_size_is_extended_to_the_audio_on_disk() {
        let path = temp("stale");
        // The header was last synced at 100 frames; 250 made it to disk.
        let mut bytes = header(400);
        bytes.extend_from_slice(&audio(250));
        std::fs::write(&path, &bytes).unwrap();
        let report = repair(&path).unwrap();
        assert_eq!((report.frames, report.bytes_dropped), (250, 0));
        assert!(!report.was_valid);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn leaves_chunks_after_the_audio_of_a_valid_file_alone() {
        let path = temp("list");
        let mut bytes = header(400);
        bytes.extend_from_slice(&audio(100));
        bytes.extend_from_slice(b"LIST");
        bytes.extend_from_slice(&5u32.to_le_bytes());
        bytes.extend_from_slice(b"INFO!\0");
        let riff = (bytes.len() - 8) as u32;
        bytes[4..8].copy_from_slice(&riff.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let report = repair(&path).unwrap();
        assert!(report.was_valid);
        assert_eq!(report.frames, 100);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn refuses_what_is_not_a_repairable_wav() {
        let path = temp("bad");
        std::fs::write(&path, b"hello, this is text").unwrap();
        assert!(matches!(repair(&path), Err(RepairError::NotWav)));

        let mut no_data = header(0);
        no_data.truncate(76);
        std::fs::write(&path, &no_data).unwrap();
        assert!(matches!(repair(&path), Err(RepairError::NoData)));

        let mut no_fmt = header(0);
        no_fmt[48..52].copy_from_slice(b"fmtX");
        std::fs::write(&path, &no_fmt).unwrap();
        let e = repair(&path).unwrap_err();
        assert!(matches!(e, RepairError::NoFmt), "{e}");
        assert!(!e.to_string().contains('\n'));

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(repair(&path), Err(RepairError::Io(_))));
    }

    /// A file of `len` bytes whose first bytes are `head` and the rest zeros, without 4 GiB of
    /// memory or disk.
    struct Sparse {
        head: Vec<u8>,
        len: u64,
        synced: bool,
    }

    impl Medium for Sparse {
        fn len(&mut self) -> io::Result<u64> {
            Ok(self.len)
        }
        fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = self.head.get(pos as usize + i).copied().unwrap_or(0);
            }
            Ok(())
        }
        fn write_at(&mut self, pos: u64, buf: &[u8]) -> io::Result<()> {
            for (i, b) in buf.iter().enumerate() {
                if let Some(slot) = self.head.get_mut(pos as usize + i) {
                    *slot = *b;
                }
            }
            Ok(())
        }
        fn set_len(&mut self, len: u64) -> io::Result<()> {
            self.len = len;
            Ok(())
        }
        fn sync(&mut self) -> io::Result<()> {
            self.synced = true;
            Ok(())
        }
    }

    #[test]
    fn turns_junk_into_ds64_when_the_audio_passes_4_gib() {
        let data = 5u64 << 30; // 5 GiB of stereo 16-bit frames
        let mut m = Sparse {
            head: header(u32::MAX - 100),
            len: 80 + data + 2, // and half a frame
            synced: false,
        };
        let report = repair_in(&mut m).unwrap();
        assert_eq!(report.frames, data / 4);
        assert_eq!(report.bytes_dropped, 2);
        assert!(m.synced);
        assert_eq!(m.len, 80 + data);
        let h = &m.head;
        assert_eq!(&h[0..4], b"RF64");
        assert_eq!(u32_at(h, 4), u32::MAX);
        assert_eq!(&h[12..16], b"ds64");
        assert_eq!(u32_at(h, 16), 28);
        assert_eq!(u64_at(h, 20), 80 + data - 8);
        assert_eq!(u64_at(h, 28), data);
        assert_eq!(u64_at(h, 36), data / 4);
        assert_eq!(u32_at(h, 76), u32::MAX);

        // The result reads as valid RF64.
        let again = repair_in(&mut m).unwrap();
        assert!(again.was_valid);
        assert_eq!(again.frames, data / 4);

        // Without a JUNK chunk there is nowhere to put the sizes.
        let mut no_junk = header(0);
        no_junk[12..16].copy_from_slice(b"PAD ");
        let mut m = Sparse {
            head: no_junk.clone(),
            len: 80 + data + 1,
            synced: false,
        };
        assert!(matches!(repair_in(&mut m), Err(RepairError::TooLarge)));
        assert_eq!(
            (m.head, m.len),
            (no_junk, 80 + data + 1),
            "refusal changes nothing"
        );
    }
}
