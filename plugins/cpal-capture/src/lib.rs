//! `cpal-capture`: records from an audio input device through cpal (ALSA on Linux).
//!
//! A live source: cpal's callback only converts the device's samples to `f32` into a
//! preallocated wait-free ring ([`callback`]); the host's capture thread calls `read`, which takes
//! a block from the ring and turns everything that went wrong on the audio thread into values
//! the host acts on:
//!
//! - frames that did not fit into the ring and frames an xrun lost become a position jump with
//!   `FLAG_DISCONTINUITY` at the exact place they are missing (the host fills it with silence
//!   and counts it as a gap);
//! - a lost device (cpal's `DeviceNotAvailable`, `StreamInvalidated`, `DeviceChanged`, a burst of
//!   backend errors, or no audio for `timeout_ms`) becomes a `device-lost` error; under
//!   `on_error = { policy = "restart", ... }` the host builds a new instance, which continues
//!   the timeline after the outage ([`record`]).
//!
//! See docs/devices.md.

mod callback;
mod record;

use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

use tapeline_devices::cpal::traits::{DeviceTrait, StreamTrait};
use tapeline_devices::cpal::{self, BufferSize, SampleFormat, StreamConfig};
use tapeline_devices::{DeviceError, Listed};
use tapeline_plugin_api::prelude::*;
use tapeline_plugin_api::serde::Serialize;
use tapeline_plugin_api::FLAG_DISCONTINUITY;

use callback::{Gap, Reader, Shared};
use record::{epoch, stage_record, StageRecord};

/// A sample format a device can be opened with. The samples are converted to `f32`.
#[derive(Deserialize, Serialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    I8,
    I16,
    I24,
    I32,
    I64,
    U8,
    U16,
    U24,
    U32,
    U64,
    F32,
    F64,
}

impl Format {
    fn cpal(self) -> SampleFormat {
        match self {
            Format::I8 => SampleFormat::I8,
            Format::I16 => SampleFormat::I16,
            Format::I24 => SampleFormat::I24,
            Format::I32 => SampleFormat::I32,
            Format::I64 => SampleFormat::I64,
            Format::U8 => SampleFormat::U8,
            Format::U16 => SampleFormat::U16,
            Format::U24 => SampleFormat::U24,
            Format::U32 => SampleFormat::U32,
            Format::U64 => SampleFormat::U64,
            Format::F32 => SampleFormat::F32,
            Format::F64 => SampleFormat::F64,
        }
    }
}

/// What to record from when the host restarts the stage after a device loss and the named
/// device is still gone.
#[derive(Deserialize, Serialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Nothing: the restart fails and the host tries again after its backoff, until the device
    /// is back or `max_restarts` is used up.
    #[default]
    None,
    /// The default input device.
    Default,
}

/// What a gap (frames the device or the ring lost, or a device outage) becomes in the recording.
#[derive(Deserialize, Serialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum GapMode {
    /// Silence of the gap's length, flagged as a discontinuity: the timeline stays true.
    #[default]
    Silence,
    /// Nothing: the audio after the gap follows at once (flagged as a discontinuity); the
    /// skipped frames are only counted (in the stage's `stats` and in the warning the stage
    /// gives when it stops).
    Skip,
}

/// `cpal-capture` settings. Recovery from a lost device is the host's `on_error = { policy =
/// "restart", max_restarts = N, backoff_ms = M }` on this stage.
#[derive(Deserialize, JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct CpalCaptureConfig {
    /// Input device: "default", an index or a name as `tapeline devices` lists them, or a part
    /// of a name that only one device has.
    #[serde(default = "default_device")]
    pub device: String,
    /// Channels to open the device with. Default: the device's default.
    pub channels: Option<u16>,
    /// Sample rate (Hz) to open the device at. Default: the pipeline's `sample_rate` if the
    /// device supports it, else the device's default (then feed a `resample` stage).
    pub sample_rate: Option<u32>,
    /// Sample format to open the device with: "i8", "i16", "i24", "i32", "i64", "u8", "u16",
    /// "u24", "u32", "u64", "f32" or "f64"; converted to f32. Default: the device's default.
    pub sample_format: Option<Format>,
    /// After a device loss, if the named device is gone when the host restarts the stage:
    /// "none" (wait for it) or "default" (record from the default input device).
    #[serde(default)]
    pub fallback: Fallback,
    /// A gap (lost frames, a device outage): "silence" of its length (default) or "skip".
    #[serde(default)]
    pub gap: GapMode,
    /// Size of the ring between the device and the pipeline, in milliseconds. Frames that do
    /// not fit are dropped, counted, and become a gap the host fills with silence.
    #[serde(default = "default_buffer_ms")]
    pub buffer_ms: u32,
    /// Frames per device callback (the ALSA period). Default: the device's choice.
    pub period_frames: Option<u32>,
    /// Stop after this many frames; endless when absent.
    pub frames: Option<u64>,
    /// A jump of the device's capture timestamps by more than this many milliseconds between
    /// two callbacks counts as frames lost (an xrun the backend did not report). Default: two
    /// callbacks' worth, at least 20 ms. After an xrun the backend reports, any jump counts.
    pub xrun_threshold_ms: Option<u32>,
    /// The device counts as lost when it delivers nothing for this many milliseconds; 0 never.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Audio backend: "alsa" (default); `tapeline devices --host NAME` lists another
    /// backend's devices if this build has it.
    pub host: Option<String>,
}

fn default_device() -> String {
    tapeline_devices::DEFAULT_DEVICE.to_string()
}
fn default_buffer_ms() -> u32 {
    500
}
fn default_timeout_ms() -> u64 {
    2000
}

/// Backend errors within one second that count as a lost device (cpal's ALSA worker calls the
/// error callback on every failed poll).
const ERROR_BURST: u64 = 16;

/// A device and the exact format to open it with.
struct Resolved {
    device: Listed,
    channels: u16,
    rate: u32,
    format: SampleFormat,
}

fn check_config(c: &CpalCaptureConfig) -> PluginResult<()> {
    if c.channels == Some(0) || c.channels.is_some_and(|ch| ch > 64) {
        return Err(PluginError::config("channels", "must be between 1 and 64"));
    }
    if c.sample_rate == Some(0) {
        return Err(PluginError::config("sample_rate", "must be above 0 Hz"));
    }
    if !(10..=60_000).contains(&c.buffer_ms) {
        return Err(PluginError::config(
            "buffer_ms",
            format!("must be between 10 and 60000 ms, got {}", c.buffer_ms),
        ));
    }
    if c.period_frames == Some(0) {
        return Err(PluginError::config("period_frames", "must be above 0"));
    }
    if c.device.trim().is_empty() {
        return Err(PluginError::config(
            "device",
            "must name a device: \"default\", an index or a name from `tapeline devices`",
        ));
    }
    Ok(())
}

/// The error for a device that cannot be found or opened. While validating it points at the
/// config; while building (a restart after a loss) a missing device is `device-lost`, so the
/// host's restart policy keeps trying.
fn device_error(e: DeviceError, validating: bool) -> PluginError {
    let msg = format!("cpal-capture: {e}");
    match e {
        DeviceError::Ambiguous { .. } => PluginError::config("device", msg),
        DeviceError::NotFound { .. } if validating => PluginError::config("device", msg),
        DeviceError::HostUnavailable { .. } if validating => PluginError::config("host", msg),
        _ => PluginError::new(ErrorKind::DeviceLost, msg),
    }
}

fn cpal_error(what: &str, device: &str, e: cpal::Error) -> PluginError {
    use cpal::ErrorKind as K;
    let msg = format!("cpal-capture: {what} {device}: {e}");
    match e.kind() {
        K::DeviceNotAvailable
        | K::DeviceBusy
        | K::StreamInvalidated
        | K::DeviceChanged
        | K::HostUnavailable => PluginError::new(ErrorKind::DeviceLost, msg),
        K::UnsupportedConfig => PluginError::format(msg),
        _ => PluginError::io(msg),
    }
}

/// Find the device and settle channels, rate and format, each checked against what the
/// device offers (ALSA would otherwise silently pick the nearest rate).
fn resolve(
    c: &CpalCaptureConfig,
    pipeline_rate: u32,
    validating: bool,
    fall_back: bool,
) -> PluginResult<Resolved> {
    let host =
        tapeline_devices::host(c.host.as_deref()).map_err(|e| device_error(e, validating))?;
    let device = match tapeline_devices::find(&host, &c.device) {
        Err(DeviceError::NotFound { .. }) if fall_back => {
            tapeline_devices::find(&host, tapeline_devices::DEFAULT_DEVICE)
        }
        r => r,
    }
    .map_err(|e| device_error(e, validating))?;
    let label = device.label();
    let configs = tapeline_devices::input_configs(&device.device).map_err(|e| {
        let e = PluginError::new(
            ErrorKind::DeviceLost,
            format!("cpal-capture: cannot query {label}: {e}"),
        );
        if validating {
            e.with_key("device")
        } else {
            e
        }
    })?;
    let default = device.device.default_input_config().ok();
    let channels = c
        .channels
        .or(default.as_ref().map(|d| d.channels()))
        .or(configs.first().map(|r| r.channels()))
        .unwrap_or(2);
    let format = c
        .sample_format
        .map(Format::cpal)
        .or(default.as_ref().map(|d| d.sample_format()))
        .unwrap_or(SampleFormat::F32);
    let supports = |rate: Option<u32>| {
        tapeline_devices::supports(&configs, Some(channels), rate, Some(format))
    };
    let rate = match c.sample_rate {
        Some(r) => r,
        None if supports(Some(pipeline_rate)) => pipeline_rate,
        None => match default.as_ref().map(|d| d.sample_rate()) {
            Some(r) if supports(Some(r)) => r,
            _ => configs
                .iter()
                .filter(|r| r.channels() == channels && r.sample_format() == format)
                .map(|r| r.max_sample_rate())
                .max()
                .unwrap_or(pipeline_rate),
        },
    };
    if !supports(Some(rate)) {
        let caps = tapeline_devices::capabilities(&device.device).unwrap_or_default();
        let key = if c.sample_format.is_some() && !supports(None) {
            "sample_format"
        } else if c.channels.is_some() {
            "channels"
        } else {
            "sample_rate"
        };
        return Err(PluginError::format(format!(
            "cpal-capture: {label} cannot record {channels} channel(s) of {format} at {rate} \
                 Hz; it offers channels {}, rates {} Hz, formats {}",
            tapeline_devices::channels_text(&caps.channels),
            caps.rates
                .iter()
                .map(|(lo, hi)| tapeline_devices::range_text(*lo, *hi))
                .collect::<Vec<_>>()
                .join(", "),
            caps.formats
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ))
        .with_key(key));
    }
    Ok(Resolved {
        device,
        channels,
        rate,
        format,
    })
}

pub struct CpalCapture {
    stream: Option<cpal::Stream>,
    reader: Reader,
    shared: Arc<Shared>,
    record: Arc<StageRecord>,
    label: String,
    channels: u32,
    rate: u32,
    /// How long `read` waits for a full block at most, in ns.
    wait_ns: u64,
    timeout_ns: u64,
    /// The next frame's position on the stage's timeline.
    position: u64,
    /// Frames taken from the ring so far (the ring's frame numbers, as in [`Gap::at`]).
    ring_read: u64,
    limit: Option<u64>,
    /// Set in a restarted instance: the loss time (ns since the epoch) whose gap the first
    /// block reports.
    resume_after: Option<u64>,
    next_gap: Option<Gap>,
    /// `gap = "skip"`: gaps do not move the position; their frames are counted here.
    skip_gaps: bool,
    skipped_frames: u64,
    /// Gaps delivered so far (discontinuities: frames lost in the ring or an xrun, or the
    /// outage before a restarted instance's first block), and the frames they stand for.
    gaps: u64,
    gap_frames: u64,
    started_ns: u64,
    /// Backend error count and time at the start of the current one-second window.
    burst: (u64, u64),
    /// Why the device is lost, once it is: `read` still delivers what the ring holds, then
    /// returns the error.
    failing: Option<String>,
}

impl Describe for CpalCapture {
    type Config = CpalCaptureConfig;
    const NAME: &'static str = "cpal-capture";
    const DESCRIPTION: &'static str =
        "Records from an audio input device (cpal: ALSA); `tapeline devices` lists them";
    const LIVE: bool = true;
    const STATS: &'static [&'static str] = &[
        "xruns_reported",
        "xruns_detected",
        "xrun_frames",
        "overflows",
        "overflow_frames",
        "gaps",
        "gap_frames",
        "skipped_frames",
    ];

    /// This instance's counts (a restarted instance starts again from zero): xruns the backend
    /// reported and xruns found in the capture timestamps, with the frames the timestamps say
    /// were lost; times frames did not fit into the ring, and those frames; gaps delivered to
    /// the host and their frames (silence, or with `gap = "skip"` skipped frames, also
    /// counted apart).
    fn stats(&self, values: &mut [u64]) {
        let s = &self.shared;
        let now = [
            s.xruns_reported.load(Ordering::Relaxed),
            s.xruns_detected.load(Ordering::Relaxed),
            s.xrun_frames.load(Ordering::Relaxed),
            s.overflows.load(Ordering::Relaxed),
            s.overflow_frames.load(Ordering::Relaxed),
            self.gaps,
            self.gap_frames,
            self.skipped_frames,
        ];
        for (v, x) in values.iter_mut().zip(now) {
            *v = x;
        }
    }
}

impl Capture for CpalCapture {
    fn outputs(
        config: &CpalCaptureConfig,
        ctx: &StageContext<'_>,
    ) -> PluginResult<Vec<OutputPort>> {
        check_config(config)?;
        let (channels, rate) = match (config.channels, config.sample_rate) {
            // Fully specified: validation does not need the device (it may be elsewhere).
            (Some(ch), Some(rate)) => (ch, rate),
            _ => {
                let r = resolve(config, ctx.sample_rate(), true, false)?;
                (r.channels, r.rate)
            }
        };
        Ok(vec![OutputPort::new(
            "out",
            PortFormat {
                channels: u32::from(channels),
                sample_rate: rate,
            },
        )])
    }

    fn new(config: CpalCaptureConfig, ctx: &StageContext<'_>) -> PluginResult<Self> {
        check_config(&config)?;
        let record = stage_record(ctx.stage_id());
        let lost_at = record.lost_at_ns();
        let fall_back = lost_at.is_some() && config.fallback == Fallback::Default;
        let r = resolve(&config, ctx.sample_rate(), false, fall_back)?;
        let label = r.device.label();
        let channels = usize::from(r.channels);
        let ring_frames = (u64::from(r.rate) * u64::from(config.buffer_ms) / 1000) as usize;
        let (mut writer, mut sink, reader, shared) = callback::channel(
            channels,
            r.rate,
            ring_frames,
            epoch(),
            config.xrun_threshold_ms,
        );
        let stream_config = StreamConfig {
            channels: r.channels,
            sample_rate: r.rate,
            buffer_size: config
                .period_frames
                .map_or(BufferSize::Default, BufferSize::Fixed),
        };
        let stream = r
            .device
            .device
            .build_input_stream_raw(
                stream_config,
                r.format,
                move |data, info| writer.on_data(data, info),
                move |e| sink.on_error(e),
                None,
            )
            .map_err(|e| cpal_error("cannot open", &label, e))?;
        let block = u64::from(ctx.block_frames().max(1));
        let position = record.next_position.load(Ordering::Relaxed);
        Ok(CpalCapture {
            stream: Some(stream),
            reader,
            shared,
            label,
            channels: u32::from(r.channels),
            rate: r.rate,
            wait_ns: (2 * block * 1_000_000_000 / u64::from(r.rate)).max(2_000_000),
            timeout_ns: config.timeout_ms.saturating_mul(1_000_000),
            position,
            ring_read: 0,
            limit: config.frames,
            resume_after: lost_at,
            next_gap: None,
            skip_gaps: config.gap == GapMode::Skip,
            skipped_frames: 0,
            gaps: 0,
            gap_frames: 0,
            started_ns: 0,
            burst: (0, 0),
            failing: None,
            record,
        })
    }

    fn start(&mut self) -> PluginResult<()> {
        self.started_ns = now_ns();
        match &self.stream {
            Some(s) => s
                .play()
                .map_err(|e| cpal_error("cannot start", &self.label, e)),
            None => Ok(()),
        }
    }

    fn read(&mut self, out: &mut OutputBlock<'_>) -> PluginResult<ReadStatus> {
        out.set_flags(0);
        if self.limit.is_some_and(|l| self.position >= l) {
            out.set_frames(0);
            out.set_position(self.position);
            return Ok(ReadStatus::Finished);
        }
        if out.channels() != self.channels {
            return Err(PluginError::format(format!(
                "cpal-capture: the host passed a {}-channel buffer for a {}-channel device",
                out.channels(),
                self.channels
            )));
        }
        let capacity = u64::from(out.frames().min(out.capacity_frames()));
        // `frames` counts the stage's timeline, gaps included.
        let limit = self.limit;
        let room = |position: u64| limit.map_or(u64::MAX, |l| l.saturating_sub(position));
        let mut want = capacity.min(room(self.position));
        let ch = self.channels as usize;
        let deadline = now_ns() + self.wait_ns;
        let mut flags = 0;
        let mut got = 0u64;
        loop {
            self.check_device()?;
            // A restarted instance: its first audio comes after the outage.
            if let Some(lost) = self.resume_after {
                let began = self.shared.first_audio_ns.load(Ordering::Relaxed);
                if began == 0 {
                    if now_ns() >= deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let away = u128::from(began.saturating_sub(lost));
                let jump = (away * u128::from(self.rate) / 1_000_000_000) as u64;
                self.advance_over_gap(jump, limit);
                flags |= FLAG_DISCONTINUITY;
                self.resume_after = None;
                self.record.clear_lost();
                want = want.min(room(self.position));
            }
            if self.next_gap.is_none() {
                self.next_gap = self.reader.gaps.pop().ok();
            }
            if let Some(g) = self.next_gap.filter(|g| g.at <= self.ring_read) {
                if got > 0 {
                    // The gap starts after the frames already in this block.
                    break;
                }
                // A gap past the end only reaches the end.
                self.advance_over_gap(g.frames, limit);
                flags |= FLAG_DISCONTINUITY;
                self.next_gap = None;
                want = want.min(room(self.position));
                continue;
            }
            let until_gap = self.next_gap.map_or(u64::MAX, |g| g.at - self.ring_read);
            let avail = (self.reader.samples.slots() / ch) as u64;
            let take = avail.min(want - got).min(until_gap);
            if take > 0 {
                let n = take as usize * ch;
                let start = got as usize * ch;
                if let Ok(chunk) = self.reader.samples.read_chunk(n) {
                    let (a, b) = chunk.as_slices();
                    let dst = &mut out.buffer_mut()[start..start + n];
                    dst[..a.len()].copy_from_slice(a);
                    dst[a.len()..].copy_from_slice(b);
                    chunk.commit_all();
                }
                got += take;
                self.ring_read += take;
            }
            if got >= want
                || (got > 0 && take == until_gap)
                || (self.failing.is_some() && got > 0)
                || now_ns() >= deadline
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        out.set_frames(got as u32);
        out.set_position(self.position);
        out.set_flags(flags);
        self.position += got;
        self.record
            .next_position
            .store(self.position, Ordering::Relaxed);
        Ok(match self.limit {
            Some(l) if self.position >= l => ReadStatus::Finished,
            _ => ReadStatus::More,
        })
    }

    fn stop(&mut self) -> PluginResult<()> {
        self.record
            .next_position
            .store(self.position, Ordering::Relaxed);
        self.close(Duration::from_secs(2));
        // The counts reach the run's log as a warning, only when something was lost.
        let s = &self.shared;
        let overflow = s.overflow_frames.load(Ordering::Relaxed);
        let xruns =
            s.xruns_reported.load(Ordering::Relaxed) + s.xruns_detected.load(Ordering::Relaxed);
        if overflow > 0 || xruns > 0 {
            return Err(PluginError::other(self.counts()));
        }
        Ok(())
    }

    fn length_frames(&self) -> Option<u64> {
        self.limit
    }
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

impl CpalCapture {
    /// A gap of `frames`: the position jumps over it (the host inserts silence), or with
    /// `gap = "skip"` it is only counted.
    fn advance_over_gap(&mut self, frames: u64, limit: Option<u64>) {
        self.gaps += 1;
        self.gap_frames += frames;
        if self.skip_gaps {
            self.skipped_frames += frames;
        } else {
            self.position = (self.position + frames).min(limit.unwrap_or(u64::MAX));
        }
    }

    /// Turn what the callbacks reported into a `device-lost` error, once the ring is drained
    /// (the audio before the loss is kept). Allocates only then.
    fn check_device(&mut self) -> PluginResult<()> {
        if self.failing.is_none() {
            self.failing = self.detect_loss();
        }
        let Some(why) = &self.failing else {
            return Ok(());
        };
        if self.reader.samples.slots() > 0 {
            return Ok(());
        }
        // The stream ended with the last audio the device delivered.
        let last = self.shared.last_callback_ns.load(Ordering::Relaxed);
        let at = if last > 0 { last } else { now_ns() };
        self.record.mark_lost(self.position, at);
        let err = PluginError::new(
            ErrorKind::DeviceLost,
            format!(
                "cpal-capture: lost {}: {why}; {}",
                self.label,
                self.counts()
            ),
        );
        self.close(Duration::from_millis(500));
        Err(err)
    }

    fn detect_loss(&mut self) -> Option<String> {
        let s = &self.shared;
        let now = now_ns();
        if s.lost.load(Ordering::Acquire) {
            Some(
                self.last_error()
                    .unwrap_or_else(|| "the device is gone".into()),
            )
        } else {
            let errors = s.backend_errors.load(Ordering::Acquire);
            if now.saturating_sub(self.burst.1) >= 1_000_000_000 {
                self.burst = (errors, now);
                None
            } else if errors - self.burst.0 >= ERROR_BURST {
                let last = self.last_error().unwrap_or_default();
                Some(format!(
                    "{} backend errors within a second (last: {last})",
                    errors - self.burst.0
                ))
            } else {
                let last = s.last_callback_ns.load(Ordering::Relaxed);
                let since = now.saturating_sub(last.max(self.started_ns));
                (self.timeout_ns > 0 && self.started_ns > 0 && since > self.timeout_ns)
                    .then(|| format!("no audio from the device for {} ms", since / 1_000_000))
            }
        }
    }

    fn last_error(&mut self) -> Option<String> {
        let mut last = None;
        while let Ok(e) = self.reader.errors.pop() {
            last = Some(e.to_string());
        }
        last
    }

    /// The loss and xrun counts of this instance, for messages.
    fn counts(&self) -> String {
        let s = &self.shared;
        format!(
            "{} frames from the device in {} callbacks; ring overflows: {} ({} frames dropped); \
             xruns: {} reported, {} found in timestamps ({} frames); skipped (gap = \"skip\"): \
             {} frames",
            s.device_frames.load(Ordering::Relaxed),
            s.callbacks.load(Ordering::Relaxed),
            s.overflows.load(Ordering::Relaxed),
            s.overflow_frames.load(Ordering::Relaxed),
            s.xruns_reported.load(Ordering::Relaxed),
            s.xruns_detected.load(Ordering::Relaxed),
            s.xrun_frames.load(Ordering::Relaxed),
            self.skipped_frames,
        )
    }

    /// Close the stream, waiting at most `patience` (a backend whose server died can hang
    /// in its teardown; it then finishes on its own thread).
    fn close(&mut self, patience: Duration) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("cpal-capture-close".into())
            .spawn(move || {
                drop(stream);
                if tx.send(()).is_err() {
                    // `close` stopped waiting (`patience` passed): no one to tell.
                }
            });
        if spawned.is_ok() {
            match rx.recv_timeout(patience) {
                // Closed; or still closing, and it finishes on its own thread.
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                // The teardown panicked: the library's panic hook has recorded it for the
                // host, which hears of it on its next call into the library.
                Err(RecvTimeoutError::Disconnected) => {}
            }
        }
    }
}

export_plugin!(capture: CpalCapture);

#[cfg(test)]
mod tests {
    use tapeline_devices::cpal::{Data, InputCallbackInfo, InputStreamTimestamp, StreamInstant};
    use tapeline_plugin_api::testing::{audio_call, output};

    use super::*;

    const RATE: u32 = 48_000;
    const PERIOD: usize = 480;

    /// An instance without a device, fed by driving the callbacks by hand: a ring of
    /// `ring_frames` stereo frames; `read` never waits.
    fn instance(
        ring_frames: usize,
        gap: GapMode,
    ) -> (CpalCapture, callback::Writer, callback::ErrorSink) {
        let (writer, sink, reader, shared) = callback::channel(2, RATE, ring_frames, epoch(), None);
        let capture = CpalCapture {
            stream: None,
            reader,
            shared,
            record: stage_record(&format!("stats-test-{gap:?}")),
            label: "test device".into(),
            channels: 2,
            rate: RATE,
            wait_ns: 0,
            timeout_ns: 0,
            position: 0,
            ring_read: 0,
            limit: None,
            resume_after: None,
            next_gap: None,
            skip_gaps: gap == GapMode::Skip,
            skipped_frames: 0,
            gaps: 0,
            gap_frames: 0,
            started_ns: 0,
            burst: (0, 0),
            failing: None,
        };
        (capture, writer, sink)
    }

    /// One device period of stereo audio whose capture began `capture_ms` into the stream.
    fn period(writer: &mut callback::Writer, capture_ms: u64) {
        let mut samples = [0.25f32; PERIOD * 2];
        // SAFETY: `samples` holds `len` f32 samples and outlives `data`.
        let data = unsafe {
            Data::from_parts(
                samples.as_mut_ptr().cast(),
                samples.len(),
                SampleFormat::F32,
            )
        };
        let at = StreamInstant::from_millis(capture_ms);
        let info = InputCallbackInfo::new(InputStreamTimestamp {
            callback: at,
            capture: at,
        });
        writer.on_data(&data, &info);
    }

    /// Read one block of up to `PERIOD` frames; its frames, position and flags.
    fn read(c: &mut CpalCapture) -> (u32, u64, u32) {
        let mut buf = [0.0f32; PERIOD * 2];
        let mut out = output(&mut buf, 2);
        assert_eq!(c.read(&mut out).unwrap(), ReadStatus::More);
        (out.frames(), out.position(), out.flags())
    }

    fn stats(c: &CpalCapture) -> Vec<(&'static str, u64)> {
        let mut values = [u64::MAX; CpalCapture::STATS.len()];
        // The host reads them between audio calls: no allocation either.
        audio_call("stats", || {
            c.stats(&mut values);
            Ok(())
        })
        .expect("stats() does not allocate");
        CpalCapture::STATS.iter().copied().zip(values).collect()
    }

    /// The counters as `stats` names them: `[xruns_reported, xruns_detected, xrun_frames,
    /// overflows, overflow_frames, gaps, gap_frames, skipped_frames]`.
    fn expect(values: [u64; 8]) -> Vec<(&'static str, u64)> {
        CpalCapture::STATS.iter().copied().zip(values).collect()
    }

    /// A ring overflow (440 frames), then an xrun the timestamps show (50 ms: 2400 frames) and
    /// the backend reports: counted as they happen, the gap once `read` delivers it.
    fn overflow_then_xrun(gap: GapMode) -> (CpalCapture, Vec<(u32, u64, u32)>) {
        let (mut c, mut writer, mut sink) = instance(1000, gap);
        assert_eq!(stats(&c), expect([0, 0, 0, 0, 0, 0, 0, 0]));
        period(&mut writer, 0);
        period(&mut writer, 10);
        // 40 of these 480 frames fit into the ring.
        period(&mut writer, 20);
        assert_eq!(stats(&c), expect([0, 0, 0, 1, 440, 0, 0, 0]));
        let mut blocks = vec![read(&mut c)];
        // Due at 30 ms, captured at 80 ms.
        period(&mut writer, 80);
        sink.on_error(cpal::Error::new(cpal::ErrorKind::Xrun));
        assert_eq!(stats(&c), expect([1, 1, 2400, 1, 440, 0, 0, 0]));
        for _ in 0..3 {
            blocks.push(read(&mut c));
        }
        (c, blocks)
    }

    #[test]
    fn stats_count_overflows_xruns_and_the_gaps_read_delivers() {
        let (c, blocks) = overflow_then_xrun(GapMode::Silence);
        // The ring's 1000 frames, then the gap of 440 + 2400 frames as a position jump.
        assert_eq!(
            blocks,
            vec![
                (480, 0, 0),
                (480, 480, 0),
                (40, 960, 0),
                (480, 1000 + 2840, FLAG_DISCONTINUITY)
            ]
        );
        assert_eq!(stats(&c), expect([1, 1, 2400, 1, 440, 1, 2840, 0]));
    }

    #[test]
    fn skipped_gaps_are_counted_as_skipped_frames_too() {
        let (c, blocks) = overflow_then_xrun(GapMode::Skip);
        assert_eq!(blocks[3], (480, 1000, FLAG_DISCONTINUITY));
        assert_eq!(stats(&c), expect([1, 1, 2400, 1, 440, 1, 2840, 2840]));
    }
}
