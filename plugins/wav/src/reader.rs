//! `wav-reader`: plays a WAV file (PCM 8/16/24/32-bit or 32-bit float) once or in a loop.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use hound::{SampleFormat, WavReader as Decoder};
use tapeline_plugin_api::prelude::*;

use crate::convert::decode;
use crate::files::open_to_read;

const READ_BUFFER: usize = 256 * 1024;

#[derive(Deserialize, JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct WavReaderConfig {
    /// WAV file to play; relative paths resolve against the pipeline file's folder.
    pub path: String,
    /// Start again from the beginning at the end of the file, forever.
    #[serde(default, rename = "loop")]
    pub looping: bool,
}

/// How a stored sample becomes an `f32`.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// N-bit integers, multiplied by 1 / 2^(N-1).
    Int(f32),
    Float,
}

pub struct WavFileReader {
    path: PathBuf,
    /// `None` only for the moment a loop rewinds it.
    decoder: Option<Decoder<BufReader<File>>>,
    /// Samples stored plainly (the usual case): read in bulk past hound.
    raw: Option<Raw>,
    kind: Kind,
    channels: usize,
    total: u64,
    pos: u64,
    looping: bool,
    /// Bytes one frame takes in the file (0 for a file with no frames).
    frame_bytes: u64,
    /// Audio data bytes read so far, every pass of a loop counted.
    bytes_read: u64,
}

/// Bulk reading of the sample data, for files whose samples fill their container exactly
/// (8/16/24/32-bit integer, 32-bit float): hound reads the header and tells where the data
/// starts and how many bytes a frame takes; the bytes are then read a block at a time and
/// converted in one vectorised loop per format ([`decode`]), giving the same values as
/// hound's sample-by-sample path.
struct Raw {
    /// The file, positioned in the data.
    file: BufReader<File>,
    /// Where the first frame starts (for `loop`).
    data_start: u64,
    width: usize,
    /// One sample split by the read buffer's end.
    split: [u8; 4],
}

/// The read buffer of the sample data: 64 KiB, a read call per 34 blocks of 480 stereo
/// 16-bit frames (the default 8 KiB made one per 4).
pub(crate) const RAW_BUFFER: usize = 64 << 10;

impl Describe for WavFileReader {
    type Config = WavReaderConfig;
    const NAME: &'static str = "wav-reader";
    const DESCRIPTION: &'static str = "Plays a WAV file (PCM 8/16/24/32-bit or 32-bit float)";
    const STATS: &'static [&'static str] = &["bytes_read"];

    fn stats(&self, values: &mut [u64]) {
        if let Some(v) = values.first_mut() {
            *v = self.bytes_read;
        }
    }
}

impl Capture for WavFileReader {
    fn outputs(config: &WavReaderConfig, ctx: &StageContext<'_>) -> PluginResult<Vec<OutputPort>> {
        let (_, decoder, _) = open(config, ctx)?;
        let spec = decoder.spec();
        // The file's own rate: when it is not the pipeline's, the host asks for a `resample`
        // stage behind this one (and accepts the pipeline once there is one).
        Ok(vec![OutputPort::new(
            "out",
            PortFormat {
                channels: u32::from(spec.channels),
                sample_rate: spec.sample_rate,
            },
        )])
    }

    fn new(config: WavReaderConfig, ctx: &StageContext<'_>) -> PluginResult<Self> {
        let (path, decoder, kind) = open(&config, ctx)?;
        let channels = usize::from(decoder.spec().channels);
        let total = u64::from(decoder.duration());
        let (decoder, raw, frame_bytes) =
            raw_reader(decoder, kind, channels, total).map_err(|e| read_error(&path, 0, e))?;
        Ok(WavFileReader {
            path,
            kind,
            channels,
            total,
            pos: 0,
            looping: config.looping,
            decoder,
            raw,
            frame_bytes: frame_bytes as u64,
            bytes_read: 0,
        })
    }

    fn read(&mut self, out: &mut OutputBlock<'_>) -> PluginResult<ReadStatus> {
        if out.channels() as usize != self.channels {
            return Err(PluginError::format(format!(
                "the host passed a {}-channel buffer for a {}-channel file",
                out.channels(),
                self.channels
            )));
        }
        let capacity = out.capacity_frames() as usize;
        out.set_frames(capacity as u32);
        let ch = self.channels;
        let dst = out.samples_mut();
        let mut filled = 0;
        while filled < capacity {
            if self.pos == self.total {
                if self.looping && self.total > 0 {
                    self.rewind()?;
                } else {
                    break;
                }
            }
            let n = (capacity - filled).min((self.total - self.pos) as usize);
            let dst = &mut dst[filled * ch..];
            let result = match (self.raw.as_mut(), self.decoder.as_mut()) {
                (Some(raw), _) => raw.fill(self.kind, &mut dst[..n * ch]),
                (None, Some(decoder)) => fill(decoder, self.kind, &mut dst[..n * ch]),
                (None, None) => return Err(lost(&self.path)),
            };
            if let Err(e) = result {
                return Err(read_error(&self.path, self.pos, e));
            }
            filled += n;
            self.pos += n as u64;
            self.bytes_read += n as u64 * self.frame_bytes;
        }
        out.set_frames(filled as u32);
        // Looping a file with no frames loops nothing: it ends (it returned `More` with no
        // frames for ever, and a run with it never ended).
        let endless = self.looping && self.total > 0;
        Ok(if !endless && self.pos == self.total {
            ReadStatus::Finished
        } else {
            ReadStatus::More
        })
    }

    fn length_frames(&self) -> Option<u64> {
        (!self.looping || self.total == 0).then_some(self.total)
    }
}

impl WavFileReader {
    /// Back to the first frame: hound's own `seek` assumes samples fill their container (wrong
    /// for 24-bit samples in 4 bytes), so rewind the file and read the header again instead.
    /// Neither allocates.
    fn rewind(&mut self) -> PluginResult<()> {
        if let Some(raw) = self.raw.as_mut() {
            raw.file
                .seek(SeekFrom::Start(raw.data_start))
                .map_err(|e| {
                    PluginError::io(format!("rewinding `{}`: {e}", self.path.display()))
                })?;
            self.pos = 0;
            return Ok(());
        }
        let decoder = self.decoder.take().ok_or_else(|| lost(&self.path))?;
        let mut inner = decoder.into_inner();
        inner
            .seek(SeekFrom::Start(0))
            .map_err(|e| PluginError::io(format!("rewinding `{}`: {e}", self.path.display())))?;
        let decoder = Decoder::new(inner).map_err(|e| {
            PluginError::io(format!(
                "`{}` changed while looping it: {e}",
                self.path.display()
            ))
        })?;
        self.total = u64::from(decoder.duration());
        self.pos = 0;
        self.decoder = Some(decoder);
        Ok(())
    }
}

fn lost(path: &Path) -> PluginError {
    PluginError::io(format!(
        "`{}` was closed after an earlier error",
        path.display()
    ))
}

/// Decide how to read the data: in bulk when hound's one-frame read shows samples filling
/// their container (then the decoder is given up for its file), else sample by sample through
/// hound. The bulk buffer holds one block (`block_frames`). Also returns the bytes a frame
/// takes in the file, as measured (0 when not measured: no frames).
#[allow(clippy::type_complexity)]
fn raw_reader(
    mut decoder: Decoder<BufReader<File>>,
    kind: Kind,
    channels: usize,
    total: u64,
) -> Result<(Option<Decoder<BufReader<File>>>, Option<Raw>, usize), hound::Error> {
    let bits = usize::from(decoder.spec().bits_per_sample);
    if total == 0 || !matches!(bits, 8 | 16 | 24 | 32) {
        return Ok((Some(decoder), None, 0));
    }
    // Measure one frame through hound, then go back to the start of the data.
    let mut file = decoder.into_inner();
    let data_start = file.stream_position()?;
    decoder = Decoder::new({
        file.seek(SeekFrom::Start(0))?;
        file
    })?;
    let mut one = [0f32; 64 * 4];
    let n = channels.min(one.len());
    fill(&mut decoder, kind, &mut one[..n])?;
    let mut file = decoder.into_inner();
    let frame_bytes = (file.stream_position()? - data_start) as usize;
    file.seek(SeekFrom::Start(data_start))?;
    if n < channels || frame_bytes != channels * bits / 8 {
        // An unusual container (e.g. 24-bit samples in 4 bytes): hound knows best.
        file.seek(SeekFrom::Start(0))?;
        return Ok((Some(Decoder::new(file)?), None, frame_bytes));
    }
    let raw = Raw {
        // The buffer is empty after the seek: nothing is lost with it.
        file: BufReader::with_capacity(RAW_BUFFER, file.into_inner()),
        data_start,
        width: bits / 8,
        split: [0; 4],
    };
    Ok((None, Some(raw), frame_bytes))
}

impl Raw {
    /// Read and convert `dst.len()` samples, straight from the read buffer's bytes (no
    /// staging copy); a sample the buffer's end splits goes through `split`.
    fn fill(&mut self, kind: Kind, dst: &mut [f32]) -> Result<(), hound::Error> {
        let w = self.width;
        let mut done = 0;
        while done < dst.len() {
            let buf = self.file.fill_buf()?;
            let whole = (buf.len() / w).min(dst.len() - done);
            if whole == 0 {
                let one = &mut self.split[..w];
                self.file.read_exact(one)?;
                convert(kind, w, one, &mut dst[done..done + 1]);
                done += 1;
                continue;
            }
            convert(kind, w, &buf[..whole * w], &mut dst[done..done + whole]);
            self.file.consume(whole * w);
            done += whole;
        }
        Ok(())
    }
}

/// Convert whole samples of `w` bytes each. An integer sample's scale is that of its width
/// here (the bits fill the container), so each width has its own conversion with the scale
/// built in.
fn convert(kind: Kind, w: usize, bytes: &[u8], dst: &mut [f32]) {
    match (kind, w) {
        (Kind::Float, _) => decode::float32(bytes, dst),
        (Kind::Int(_), 1) => decode::pcm8(bytes, dst),
        (Kind::Int(_), 2) => decode::pcm16(bytes, dst),
        (Kind::Int(_), 3) => decode::pcm24(bytes, dst),
        (Kind::Int(_), _) => decode::pcm32(bytes, dst),
    }
}

/// Decode `dst.len()` samples. Samples come out of hound one by one from its buffered reader;
/// nothing is allocated.
fn fill(
    decoder: &mut Decoder<BufReader<File>>,
    kind: Kind,
    dst: &mut [f32],
) -> Result<(), hound::Error> {
    let mut n = 0;
    match kind {
        Kind::Float => {
            for (d, s) in dst.iter_mut().zip(decoder.samples::<f32>()) {
                *d = s?;
                n += 1;
            }
        }
        Kind::Int(scale) => {
            for (d, s) in dst.iter_mut().zip(decoder.samples::<i32>()) {
                *d = s? as f32 * scale;
                n += 1;
            }
        }
    }
    if n < dst.len() {
        return Err(hound::Error::IoError(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

fn read_error(path: &Path, frame: u64, e: hound::Error) -> PluginError {
    let shown = path.display();
    match e {
        hound::Error::IoError(e)
            if matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::Other
            ) =>
        {
            PluginError::io(format!(
                "`{shown}` ends at frame {frame}, before the length its header gives: \
                 the file is truncated"
            ))
        }
        e => PluginError::io(format!("reading `{shown}` at frame {frame}: {e}")),
    }
}

/// Open the file and read its header (not its audio); check it is something we can play.
fn open(
    config: &WavReaderConfig,
    ctx: &StageContext<'_>,
) -> PluginResult<(PathBuf, Decoder<BufReader<File>>, Kind)> {
    let path = ctx.resolve(&config.path);
    let shown = path.display();
    // A regular file only (never a FIFO, a device, a folder, a /proc file), opened without
    // blocking: validation must end even when `path` names something that would not.
    let file = open_to_read(WavFileReader::NAME, &path)?;
    let decoder = Decoder::new(BufReader::with_capacity(READ_BUFFER, file))
        .map_err(|e| header_error(&path, e))?;
    let spec = decoder.spec();
    let kind =
        match (spec.sample_format, spec.bits_per_sample) {
            (SampleFormat::Float, 32) => Kind::Float,
            (SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
                Kind::Int(1.0 / (1u64 << (bits - 1)) as f32)
            }
            (format, bits) => {
                return Err(PluginError::format(format!(
                "`{shown}` holds {bits}-bit {} samples; wav-reader reads 8/16/24/32-bit integer \
                 and 32-bit float",
                if format == SampleFormat::Float { "float" } else { "integer" }
            )))
            }
        };
    let channels = u32::from(spec.channels);
    let (lo, hi) = WavFileReader::CHANNELS;
    if !(lo..=hi).contains(&channels) {
        return Err(PluginError::format(format!(
            "`{shown}` has {channels} channels; wav-reader handles {lo} to {hi}"
        )));
    }
    Ok((path, decoder, kind))
}

fn header_error(path: &Path, e: hound::Error) -> PluginError {
    let shown = path.display();
    match e {
        hound::Error::Unsupported => PluginError::format(format!(
            "`{shown}` uses a WAV encoding wav-reader cannot read; it reads PCM 8/16/24/32-bit \
             integer and 32-bit float"
        )),
        hound::Error::FormatError(_) if starts_with(path, b"RF64") => PluginError::format(format!(
            "`{shown}` is an RF64 file (a WAV over 4 GiB); wav-reader reads RIFF WAV files only"
        )),
        hound::Error::IoError(e) if e.kind() != io::ErrorKind::Other => {
            PluginError::io(format!("reading `{shown}`: {e}"))
        }
        // hound reports a file too short for its header as an `Other` I/O error.
        e => PluginError::config("path", format!("`{shown}` is not a valid WAV file: {e}")),
    }
}

fn starts_with(path: &Path, magic: &[u8; 4]) -> bool {
    let mut head = [0u8; 4];
    open_to_read(WavFileReader::NAME, path)
        .is_ok_and(|mut f| f.read_exact(&mut head).is_ok() && &head == magic)
}
