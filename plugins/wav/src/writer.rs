//! `wav-writer`: records its input to a WAV file (or one mono file per channel) that survives a
//! crash: the header is valid from the first byte and is brought up to date and synced to disk
//! every `sync_interval_ms`, so a `kill -9` loses at most that much audio.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tapeline_plugin_api::prelude::*;
use tapeline_plugin_api::serde::Serialize;

use crate::files;
use crate::header::{write_header, Layout, MAX_HEADER};
use crate::write_back;
use crate::write_buffer::WriteBuffer;

/// Bytes buffered per file before a write reaches the OS.
const WRITE_BUFFER: usize = 256 * 1024;

/// How samples are stored in the file.
// Serialize lets the schema show the default.
#[derive(Deserialize, Serialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SampleFormat {
    /// 16-bit integer.
    #[default]
    Pcm16,
    /// 24-bit integer.
    Pcm24,
    /// 32-bit integer.
    Pcm32,
    /// 32-bit float: keeps levels above full scale.
    Float32,
}

impl SampleFormat {
    /// Bytes one sample takes in the file.
    pub(crate) fn bytes(self) -> usize {
        match self {
            SampleFormat::Pcm16 => 2,
            SampleFormat::Pcm24 => 3,
            SampleFormat::Pcm32 | SampleFormat::Float32 => 4,
        }
    }
}

#[derive(Deserialize, JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct WavWriterConfig {
    /// File to write; relative paths resolve against the pipeline file's folder. Missing folders
    /// are created.
    pub path: String,
    /// Sample format: "pcm16", "pcm24", "pcm32" or "float32".
    #[serde(default)]
    pub format: SampleFormat,
    /// Replace an existing file instead of refusing to start (refusing protects past recordings).
    #[serde(default)]
    pub overwrite: bool,
    /// Write one mono file per channel, named `<stem>-<channel>.wav` (rec-0.wav, rec-1.wav, ...).
    #[serde(default)]
    pub per_channel: bool,
    /// Write through a symbolic link at `path` to the file it points to. Off by default: a
    /// symlink there is refused, so that a link planted in the output folder can neither
    /// redirect the recording nor, with `overwrite`, replace the file it points to.
    #[serde(default)]
    pub follow_symlinks: bool,
    /// How often the header is updated and the file synced to disk, in milliseconds: the most
    /// audio a crash can lose. 0 syncs after every block.
    #[serde(default = "default_sync_interval_ms")]
    pub sync_interval_ms: u64,
    /// "interval" (default): sync every `sync_interval_ms`, for recordings a crash must not
    /// take. "end": one sync when the file is finalised, for file jobs that can simply be run
    /// again: faster, but a crash leaves a header that counts nothing (`tapeline repair`
    /// recovers every complete frame that reached the disk).
    #[serde(default)]
    pub sync: SyncMode,
}

/// When `wav-writer` makes its files durable.
#[derive(Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    #[default]
    Interval,
    End,
}

fn default_sync_interval_ms() -> u64 {
    1000
}

/// One open output file.
struct Out {
    path: PathBuf,
    /// `None` once finalized: taking it out makes sure nothing flushes into the file afterwards.
    w: Option<WriteBuffer>,
    /// Where the file's early write-back has got to (bytes from the start of the file).
    written_back: u64,
}

pub struct WavWriter {
    outs: Vec<Out>,
    format: SampleFormat,
    layout: Layout,
    channels: usize,
    per_channel: bool,
    /// Frames accepted by `write`, in every file.
    frames: u64,
    header: [u8; MAX_HEADER],
    sync_interval: Duration,
    last_sync: Instant,
    sync_mode: SyncMode,
    /// Set after a failed write: the files may hold part of a block, so `finalize` trusts the
    /// file length, not the frame count.
    failed: bool,
    report: Option<StorageReport>,
    /// fsync/fdatasync calls made so far, on the files and their folders.
    syncs: u64,
}

impl Describe for WavWriter {
    type Config = WavWriterConfig;
    const NAME: &'static str = "wav-writer";
    const DESCRIPTION: &'static str =
        "Writes WAV files (RF64 past 4 GiB) that stay readable after a crash";
    const STATS: &'static [&'static str] = &["bytes_written", "syncs"];

    /// `bytes_written`: audio bytes in the files' data chunks, every file together (what the
    /// headers will count: after `finalize`, what they do count); `syncs`: fsync/fdatasync
    /// calls so far.
    fn stats(&self, values: &mut [u64]) {
        let frames = self
            .report
            .as_ref()
            .map_or(self.frames, |r| r.frames_written());
        let bytes = frames * u64::from(self.layout.block_align()) * self.outs.len() as u64;
        for (v, x) in values.iter_mut().zip([bytes, self.syncs]) {
            *v = x;
        }
    }
}

impl Storage for WavWriter {
    fn check(config: &WavWriterConfig, ctx: &StageContext<'_>) -> PluginResult<()> {
        let input = single_input(ctx)?;
        check_channels(input.channels)?;
        for path in output_paths(config, ctx, input.channels)? {
            check_target(&path, config.follow_symlinks)?;
        }
        Ok(())
    }

    fn new(config: WavWriterConfig, ctx: &StageContext<'_>) -> PluginResult<Self> {
        let input = single_input(ctx)?;
        check_channels(input.channels)?;
        let paths = output_paths(&config, ctx, input.channels)?;
        let layout = Layout {
            channels: if config.per_channel {
                1
            } else {
                input.channels as u16
            },
            sample_rate: input.sample_rate,
            bits: config.format.bytes() as u16 * 8,
            float: config.format == SampleFormat::Float32,
        };
        let mut header = [0u8; MAX_HEADER];
        let header_len = write_header(&layout, 0, false, &mut header);
        let mut outs = Vec::with_capacity(paths.len());
        let mut syncs = 0;
        for path in paths {
            let file = create(
                &path,
                config.overwrite,
                config.follow_symlinks,
                &header[..header_len],
                &mut syncs,
            )?;
            outs.push(Out {
                path,
                w: Some(WriteBuffer::new(file, WRITE_BUFFER)),
                written_back: 0,
            });
        }
        Ok(WavWriter {
            outs,
            format: config.format,
            layout,
            channels: input.channels as usize,
            per_channel: config.per_channel,
            frames: 0,
            header,
            sync_interval: Duration::from_millis(config.sync_interval_ms),
            last_sync: Instant::now(),
            sync_mode: config.sync,
            failed: false,
            report: None,
            syncs,
        })
    }

    fn write(&mut self, block: &InputBlock<'_>) -> PluginResult<()> {
        if self.report.is_some() {
            return Err(PluginError::other("write() after finalize()"));
        }
        if self.failed {
            return Err(PluginError::io(
                "an earlier write failed; the file keeps what was written before it",
            ));
        }
        if block.channels() as usize != self.channels {
            return Err(PluginError::format(format!(
                "got a {}-channel block, expected {} channels",
                block.channels(),
                self.channels
            )));
        }
        for (c, out) in self.outs.iter_mut().enumerate() {
            let result = match out.w.as_mut() {
                Some(w) if self.per_channel => w.write_samples(self.format, block.channel(c)),
                Some(w) => w.write_slice(self.format, block.samples()),
                None => Ok(()),
            };
            if let Err(e) = result {
                self.failed = true;
                return Err(io_error("writing", &out.path, &e));
            }
        }
        self.frames += u64::from(block.frames());
        self.start_write_back();
        if self.sync_mode == SyncMode::Interval && self.last_sync.elapsed() >= self.sync_interval {
            self.sync()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> PluginResult<()> {
        if self.report.is_some() || self.failed || self.sync_mode == SyncMode::End {
            return Ok(());
        }
        self.sync()
    }

    fn finalize(&mut self) -> PluginResult<StorageReport> {
        if let Some(report) = &self.report {
            return Ok(report.clone());
        }
        let align = u64::from(self.layout.block_align());
        let header_len = self.layout.header_len() as u64;
        let mut frames = self.frames;
        let mut first_error = None;
        let mut report = StorageReport::new();
        for out in &mut self.outs {
            report.push_file(&out.path);
            let Some(w) = out.w.take() else { continue };
            // On a flush error keep what reached the file and drop the rest of the buffer.
            let (file, flushed) = w.into_file();
            let result = (|| -> io::Result<u64> {
                let mut data = frames * align;
                if self.failed || !flushed {
                    let on_disk = file.metadata()?.len().saturating_sub(header_len);
                    data = data.min(on_disk / align * align);
                }
                finish(file, &self.layout, data, &mut self.header, &mut self.syncs)?;
                Ok(data / align)
            })();
            match result {
                // Report the frames every file holds.
                Ok(kept) => frames = frames.min(kept),
                Err(e) => {
                    first_error.get_or_insert_with(|| io_error("finishing", &out.path, &e));
                }
            }
        }
        report.frames_written = frames;
        self.report = Some(report.clone());
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }
}

impl WavWriter {
    /// Start the disk write of every stretch of [`write_back::STRETCH`] bytes that has reached
    /// a file since the last one (what is still in the write buffer has not).
    fn start_write_back(&mut self) {
        let data = self.frames * u64::from(self.layout.block_align());
        let end = self.layout.header_len() as u64 + data;
        for out in &mut self.outs {
            let Some(w) = out.w.as_ref() else { continue };
            let reached = end.saturating_sub(w.buffered() as u64);
            if reached >= out.written_back + write_back::STRETCH {
                // Refused (a full disk, a file system without it): the syncs do all the work,
                // and report any error; nothing else changes.
                if !write_back::start(w.file(), out.written_back, reached) {
                    continue;
                }
                out.written_back = reached;
            }
        }
    }

    /// Make everything written so far durable and covered by the header: data first, then the
    /// header, each synced, so the header never claims audio that is not on disk.
    fn sync(&mut self) -> PluginResult<()> {
        self.last_sync = Instant::now();
        let data = self.frames * u64::from(self.layout.block_align());
        for out in &mut self.outs {
            let Some(w) = out.w.as_mut() else { continue };
            let result = (|| -> io::Result<()> {
                w.flush()?;
                let file = w.file_mut();
                self.syncs += 1;
                file.sync_data()?;
                let len = write_header(&self.layout, data, false, &mut self.header);
                file.seek(SeekFrom::Start(0))?;
                file.write_all(&self.header[..len])?;
                file.seek(SeekFrom::End(0))?;
                self.syncs += 1;
                file.sync_data()
            })();
            if let Err(e) = result {
                self.failed = true;
                return Err(io_error("syncing", &out.path, &e));
            }
        }
        Ok(())
    }
}

impl Drop for WavWriter {
    /// A host that drops the stage without finalizing it (a panic on its side) still leaves
    /// finished files.
    fn drop(&mut self) {
        if self.report.is_none() && self.finalize().is_err() {
            // No one to tell: the host that would report it is what went wrong. The files
            // keep every frame that reached them (`tapeline repair` mends a header).
        }
    }
}

/// Cut the file to the header plus `data` bytes (and the pad byte, zero-filled by `set_len`),
/// write the final header and sync (counted in `syncs`).
fn finish(
    mut file: File,
    layout: &Layout,
    data: u64,
    header: &mut [u8; MAX_HEADER],
    syncs: &mut u64,
) -> io::Result<()> {
    let len = write_header(layout, data, true, header);
    file.set_len(len as u64 + data + data % 2)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header[..len])?;
    *syncs += 1;
    file.sync_all()
}

fn check_channels(channels: u32) -> PluginResult<()> {
    if channels == 0 || channels > u32::from(u16::MAX) {
        return Err(PluginError::format(format!(
            "cannot write {channels} channels to a WAV file"
        )));
    }
    Ok(())
}

/// The files this configuration writes.
pub(crate) fn output_paths(
    config: &WavWriterConfig,
    ctx: &StageContext<'_>,
    channels: u32,
) -> PluginResult<Vec<PathBuf>> {
    let path = ctx.resolve(&config.path);
    let (Some(stem), false) = (path.file_stem(), config.path.ends_with(['/', '\\'])) else {
        return Err(PluginError::config(
            "path",
            format!("`{}` does not name a file", config.path),
        ));
    };
    if !config.per_channel {
        return Ok(vec![path]);
    }
    let stem = stem.to_string_lossy();
    let ext = path
        .extension()
        .map_or_else(|| "wav".into(), |e| e.to_string_lossy());
    Ok((0..channels)
        .map(|c| path.with_file_name(format!("{stem}-{c}.{ext}")))
        .collect())
}

/// Refuse a target that is not a regular file (a FIFO, a device, a
/// kernel interface), is a symlink (unless `follow`) or dangling one, or cannot be created,
/// creating nothing and opening nothing.
fn check_target(path: &Path, follow: bool) -> PluginResult<()> {
    let shown = path.display();
    match files::existing(path, follow)? {
        Some(m) if m.is_dir() => Err(PluginError::config(
            "path",
            format!("`{shown}` is a folder; name a file"),
        )),
        // An existing file without `overwrite` is refused by `new` (at run): looking at a
        // pipeline (`validate`, `graph`) must not fail because a take was already recorded.
        Some(m) => {
            files::require_regular(WavWriter::NAME, path, &m, None)?;
            writable(path).map_err(|e| {
                PluginError::config(
                    "path",
                    format!("`{shown}` exists and cannot be written: {e}"),
                )
            })
        }
        // Not found, or a file where a folder should be: the folder check names the cause.
        None => check_folder(path),
    }
}

/// The nearest existing ancestor of `path` must be a folder this process may write in.
fn check_folder(path: &Path) -> PluginResult<()> {
    let mut dir = path.parent();
    while let Some(d) = dir {
        let d = if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        };
        match fs::metadata(d) {
            Ok(m) if m.is_dir() => {
                return writable(d).map_err(|e| {
                    PluginError::config(
                        "path",
                        format!(
                            "cannot create `{}`: no write access to `{}` ({e})",
                            path.display(),
                            d.display()
                        ),
                    )
                })
            }
            Ok(_) => {
                return Err(PluginError::config(
                    "path",
                    format!(
                        "cannot create `{}`: `{}` is a file, not a folder",
                        path.display(),
                        d.display()
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => dir = d.parent(),
            Err(e) => {
                return Err(PluginError::config(
                    "path",
                    format!("cannot create `{}`: {e}", path.display()),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(unix)]
fn writable(path: &Path) -> io::Result<()> {
    use rustix::fs::{access, Access};
    let mode = if path.is_dir() {
        Access::WRITE_OK | Access::EXEC_OK
    } else {
        Access::WRITE_OK
    };
    access(path, mode).map_err(io::Error::from)
}

#[cfg(not(unix))]
fn writable(path: &Path) -> io::Result<()> {
    if fs::metadata(path)?.permissions().readonly() {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"))
    } else {
        Ok(())
    }
}

/// Create the folders and the file, write a valid empty header and make both durable (the
/// syncs counted in `syncs`).
///
/// The file is opened without blocking, without following a symlink (unless `follow`) and
/// without truncating; only once it is known to be a regular file is it cut to nothing.
fn create(
    path: &Path,
    overwrite: bool,
    follow: bool,
    header: &[u8],
    syncs: &mut u64,
) -> PluginResult<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| {
            PluginError::config(
                "path",
                format!("cannot create folder `{}`: {e}", parent.display()),
            )
        })?;
    }
    let mut options = OpenOptions::new();
    options.write(true);
    if overwrite {
        // Truncated only once it is known to be a regular file.
        options.create(true).truncate(false);
    } else {
        // Atomic: a file that appeared since check() is still not clobbered (and a symlink is
        // never followed).
        options.create_new(true);
    }
    let mut file =
        files::open(WavWriter::NAME, path, &mut options, follow)?.map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists
                if !follow
                    && fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) =>
            {
                files::symlink_refused(path)
            }
            io::ErrorKind::AlreadyExists => PluginError::config(
                "path",
                format!(
                    "`{}` already exists: set `overwrite = true` or pick another path",
                    path.display()
                ),
            ),
            _ => io_error("creating", path, &e),
        })?;
    if overwrite {
        file.set_len(0)
            .map_err(|e| io_error("truncating", path, &e))?;
    }
    file.write_all(header)
        .and_then(|()| {
            *syncs += 1;
            file.sync_data()
        })
        .map_err(|e| io_error("writing", path, &e))?;
    // The new directory entry must survive a crash too. Best effort: not every platform can
    // open a folder to sync it.
    if let Some(parent) = path.parent() {
        let dir = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Ok(d) = File::open(dir) {
            *syncs += 1;
            if d.sync_all().is_err() {
                // Best effort, as said: the file itself is synced and reports its own errors.
            }
        }
    }
    Ok(file)
}

fn io_error(doing: &str, path: &Path, e: &io::Error) -> PluginError {
    PluginError::io(format!("{doing} `{}`: {e}", path.display()))
}
