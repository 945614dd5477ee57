//! `wav-reader`: plays a WAV file (PCM 8/16/24/32-bit or 32-bit float) once or in a loop.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use hound::{SampleFormat, WavReader as Decoder};
use tapeline_plugin_api::prelude::*;

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
    kind: Kind,
    channels: usize,
    total: u64,
    pos: u64,
    looping: bool,
}

impl Describe for WavFileReader {
    type Config = WavReaderConfig;
    const NAME: &'static str = "wav-reader";
    const DESCRIPTION: &'static str = "Plays a WAV file (PCM 8/16/24/32-bit or 32-bit float)";
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
        Ok(WavFileReader {
            path,
            kind,
            channels: usize::from(decoder.spec().channels),
            total: u64::from(decoder.duration()),
            pos: 0,
            looping: config.looping,
            decoder: Some(decoder),
        })
    }

    fn read(&mut self, out: &mut OutputBlock<'_>) -> PluginResult<ReadStatus> {
        if out.channels as usize != self.channels {
            return Err(PluginError::format(format!(
                "the host passed a {}-channel buffer for a {}-channel file",
                out.channels, self.channels
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
            let Some(decoder) = self.decoder.as_mut() else {
                return Err(lost(&self.path));
            };
            if let Err(e) = fill(decoder, self.kind, &mut dst[filled * ch..(filled + n) * ch]) {
                return Err(read_error(&self.path, self.pos, e));
            }
            filled += n;
            self.pos += n as u64;
        }
        out.set_frames(filled as u32);
        Ok(if !self.looping && self.pos == self.total {
            ReadStatus::Finished
        } else {
            ReadStatus::More
        })
    }

    fn length_frames(&self) -> Option<u64> {
        (!self.looping).then_some(self.total)
    }
}

impl WavFileReader {
    /// Back to the first frame: hound's own `seek` assumes samples fill their container (wrong
    /// for 24-bit samples in 4 bytes), so rewind the file and read the header again instead.
    /// Neither allocates.
    fn rewind(&mut self) -> PluginResult<()> {
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
    let file = File::open(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => PluginError::config("path", format!("`{shown}` not found")),
        _ => PluginError::config("path", format!("cannot open `{shown}`: {e}")),
    })?;
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
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == magic)
}
