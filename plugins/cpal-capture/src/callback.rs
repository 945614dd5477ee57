//! What runs on cpal's audio thread: the data callback converts the device's samples to `f32`
//! into a preallocated wait-free ring, and the error callback hands errors over to `read()`.
//!
//! Neither allocates, locks, logs or waits. Whatever cannot be delivered is counted in atomics
//! ([`Shared`]) and marked as a gap ([`Gap`]) at the exact place in the stream where it is
//! missing, so the reader can give the host the right position jump.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rtrb::{Consumer, Producer, RingBuffer};
use tapeline_devices::cpal::{self, Data, InputCallbackInfo, SampleFormat, I24, U24};

/// Frames missing from the stream: `frames` frames belong before the ring's frame number `at`
/// (frames pushed into the ring before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub at: u64,
    pub frames: u64,
    /// True when the cause was an xrun of the device (else: the ring was full).
    pub xrun: bool,
}

/// Counters and flags shared between the callbacks and the reader. Atomics only.
#[derive(Debug, Default)]
pub struct Shared {
    /// Device callbacks so far.
    pub callbacks: AtomicU64,
    /// Nanoseconds since the stream's epoch at the latest callback (0 = none yet).
    pub last_callback_ns: AtomicU64,
    /// Nanoseconds since the epoch at which the first callback's audio began (0 = none yet).
    pub first_audio_ns: AtomicU64,
    /// Frames the device delivered.
    pub device_frames: AtomicU64,
    /// Times frames did not fit into the ring, and how many frames that lost.
    pub overflows: AtomicU64,
    pub overflow_frames: AtomicU64,
    /// Xruns: reported by cpal's error callback, and found in the callbacks' capture
    /// timestamps (with the frames the timestamps say are missing).
    pub xruns_reported: AtomicU64,
    pub xruns_detected: AtomicU64,
    pub xrun_frames: AtomicU64,
    /// Set by the error callback on an xrun, cleared by the next data callback.
    pub xrun_pending: AtomicBool,
    /// The device is gone (`DeviceNotAvailable`, `StreamInvalidated`, `DeviceChanged`).
    pub lost: AtomicBool,
    /// Other backend errors so far (a burst of them means the device is gone too).
    pub backend_errors: AtomicU64,
    /// Errors that did not fit into the error queue.
    pub errors_dropped: AtomicU64,
}

/// Capacity of the gap queue; when it is full, frames are dropped (and counted) until the
/// reader drains it.
const GAP_QUEUE: usize = 256;
/// Capacity of the error queue.
const ERROR_QUEUE: usize = 32;

/// The data callback's state. Owned by the callback closure, so plain fields.
pub struct Writer {
    samples: Producer<f32>,
    gaps: Producer<Gap>,
    shared: Arc<Shared>,
    epoch: Instant,
    channels: usize,
    rate: u64,
    /// Frames pushed into the ring so far.
    pushed: u64,
    /// Frames missing before the next frame pushed, not yet in the gap queue.
    pending_gap: u64,
    pending_xrun: bool,
    /// Capture time (stream clock, ns) at which the next callback's audio should begin.
    expected_capture_ns: Option<u128>,
    /// Timestamp jump (ns) that counts as an unreported xrun; `None`: automatic.
    threshold_ns: Option<u128>,
}

/// The reader's ends.
pub struct Reader {
    pub samples: Consumer<f32>,
    pub gaps: Consumer<Gap>,
    pub errors: Consumer<cpal::Error>,
}

/// The error callback's state.
pub struct ErrorSink {
    errors: Producer<cpal::Error>,
    shared: Arc<Shared>,
}

/// Everything the two callbacks and the reader need, preallocated: a ring of `ring_frames`
/// frames of `channels` channels.
pub fn channel(
    channels: usize,
    rate: u32,
    ring_frames: usize,
    epoch: Instant,
    xrun_threshold_ms: Option<u32>,
) -> (Writer, ErrorSink, Reader, Arc<Shared>) {
    let shared = Arc::new(Shared::default());
    let (sp, sc) = RingBuffer::new(ring_frames.max(1) * channels);
    let (gp, gc) = RingBuffer::new(GAP_QUEUE);
    let (ep, ec) = RingBuffer::new(ERROR_QUEUE);
    (
        Writer {
            samples: sp,
            gaps: gp,
            shared: shared.clone(),
            epoch,
            channels,
            rate: u64::from(rate),
            pushed: 0,
            pending_gap: 0,
            pending_xrun: false,
            expected_capture_ns: None,
            threshold_ns: xrun_threshold_ms.map(|ms| u128::from(ms) * 1_000_000),
        },
        ErrorSink {
            errors: ep,
            shared: shared.clone(),
        },
        Reader {
            samples: sc,
            gaps: gc,
            errors: ec,
        },
        shared,
    )
}

fn frames_to_ns(frames: u64, rate: u64) -> u128 {
    u128::from(frames) * 1_000_000_000 / u128::from(rate.max(1))
}

fn ns_to_frames(ns: u128, rate: u64) -> u64 {
    ((ns * u128::from(rate) + 500_000_000) / 1_000_000_000) as u64
}

impl Writer {
    /// The data callback: one period of interleaved samples in the device's format.
    pub fn on_data(&mut self, data: &Data, info: &InputCallbackInfo) {
        let frames = (data.len() / self.channels) as u64;
        let now = self.epoch.elapsed().as_nanos() as u64;
        let s = &self.shared;
        s.callbacks.fetch_add(1, Ordering::Relaxed);
        s.last_callback_ns.store(now.max(1), Ordering::Relaxed);
        s.device_frames.fetch_add(frames, Ordering::Relaxed);
        if s.first_audio_ns.load(Ordering::Relaxed) == 0 {
            let began = now.saturating_sub(frames_to_ns(frames, self.rate) as u64);
            s.first_audio_ns.store(began.max(1), Ordering::Relaxed);
        }
        self.check_xrun(frames, info);
        if frames == 0 {
            return;
        }
        if self.pending_gap > 0 {
            let gap = Gap {
                at: self.pushed,
                frames: self.pending_gap,
                xrun: self.pending_xrun,
            };
            if self.gaps.push(gap).is_err() {
                // No room to mark the gap: these frames cannot be placed either.
                self.drop_frames(frames);
                return;
            }
            self.pending_gap = 0;
            self.pending_xrun = false;
        }
        let fit = (self.samples.slots() / self.channels) as u64;
        let take = frames.min(fit);
        if take > 0 {
            let n = take as usize * self.channels;
            if let Ok(chunk) = self.samples.write_chunk_uninit(n) {
                let written = write_converted(chunk, data, n);
                debug_assert_eq!(written, n);
            }
            self.pushed += take;
        }
        if take < frames {
            self.drop_frames(frames - take);
        }
    }

    fn drop_frames(&mut self, frames: u64) {
        self.pending_gap += frames;
        self.shared.overflows.fetch_add(1, Ordering::Relaxed);
        self.shared
            .overflow_frames
            .fetch_add(frames, Ordering::Relaxed);
    }

    /// Compare this callback's capture time with where the previous one ended: a jump forward
    /// means the device lost frames in between (an xrun).
    fn check_xrun(&mut self, frames: u64, info: &InputCallbackInfo) {
        let capture = info.timestamp().capture.as_nanos();
        let reported = self.shared.xrun_pending.swap(false, Ordering::Relaxed);
        if let Some(expected) = self.expected_capture_ns {
            let excess = capture.saturating_sub(expected);
            // Timestamps jitter (and without hardware timestamps they are the callback's wake-up
            // time): without a reported xrun only a jump of two periods, at least 20 ms, counts.
            // After a reported one, anything from 0.5 ms on.
            let threshold = if reported {
                500_000
            } else {
                self.threshold_ns
                    .unwrap_or_else(|| (2 * frames_to_ns(frames, self.rate)).max(20_000_000))
            };
            if excess >= threshold {
                let lost = ns_to_frames(excess, self.rate);
                if lost > 0 {
                    self.pending_gap += lost;
                    self.pending_xrun = true;
                    self.shared.xruns_detected.fetch_add(1, Ordering::Relaxed);
                    self.shared.xrun_frames.fetch_add(lost, Ordering::Relaxed);
                }
            }
        }
        self.expected_capture_ns = Some(capture + frames_to_ns(frames, self.rate));
    }
}

/// Convert the callback's samples to `f32` straight into the ring. Returns samples written.
fn write_converted(chunk: rtrb::chunks::WriteChunkUninit<'_, f32>, data: &Data, n: usize) -> usize {
    fn conv<'a, T: cpal::SizedSample + 'a>(
        data: &'a Data,
        n: usize,
    ) -> Option<impl Iterator<Item = f32> + 'a>
    where
        f32: cpal::FromSample<T>,
    {
        data.as_slice::<T>()
            .map(move |s| s[..n].iter().map(|x| x.to_sample::<f32>()))
    }
    macro_rules! fill {
        ($($fmt:ident => $t:ty),*) => {
            match data.sample_format() {
                $(SampleFormat::$fmt => match conv::<$t>(data, n) {
                    Some(it) => chunk.fill_from_iter(it),
                    None => 0,
                },)*
                // Not PCM (DSD): refused when the stream is built.
                _ => chunk.fill_from_iter(std::iter::repeat_n(0.0, n)),
            }
        };
    }
    fill!(I8 => i8, I16 => i16, I24 => I24, I32 => i32, I64 => i64,
          U8 => u8, U16 => u16, U24 => U24, U32 => u32, U64 => u64,
          F32 => f32, F64 => f64)
}

impl ErrorSink {
    /// The error callback: classify into atomics, queue the error for its message.
    pub fn on_error(&mut self, e: cpal::Error) {
        use cpal::ErrorKind as K;
        let s = &self.shared;
        match e.kind() {
            K::Xrun => {
                s.xruns_reported.fetch_add(1, Ordering::Relaxed);
                s.xrun_pending.store(true, Ordering::Relaxed);
                return;
            }
            K::DeviceNotAvailable | K::StreamInvalidated | K::DeviceChanged => {
                s.lost.store(true, Ordering::Release);
            }
            // Not a failure of the stream.
            K::RealtimeDenied => return,
            _ => {
                s.backend_errors.fetch_add(1, Ordering::Release);
            }
        }
        if self.errors.push(e).is_err() {
            s.errors_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
