//! The body of each stage thread: pull from the input edges, call the plugin, push to the output
//! edges. After start nothing here allocates, locks or logs on the per-block path; errors leave
//! the thread through the coordinator's event channel and are handled by the stage's policy.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_stable::std_types::{RSlice, RSliceMut, RStr};
use arrayvec::ArrayVec;
use crossbeam_channel::Sender;
use tapeline_plugin_api::abi::{
    CaptureBox, InputBlock, OutputBlock, PluginError, PluginLibraryRef, PortFormat, ProcessorBox,
    ReadStatus, StageContext, StorageBox, StorageReport, FLAG_DISCONTINUITY, FLAG_END_OF_STREAM,
    MAX_TAIL_CALLS,
};

use crate::config::parse::{OnError, Policy};
use crate::discipline::buffers::{Consumer, DropReason, Producer, Received};
use crate::discipline::state_machine::{State, StateMachine};

/// Most input or output ports of one stage.
pub const MAX_PORTS: usize = 64;

/// Most level meters (channels) a stage publishes to monitoring.
pub const MAX_LEVELS: usize = 64;

/// The plugin call a stage thread is in, for the watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Call {
    None = 0,
    Read = 1,
    Process = 2,
    Finish = 3,
    Write = 4,
    Flush = 5,
}

impl Call {
    pub fn as_str(self) -> &'static str {
        match self {
            Call::None => "none",
            Call::Read => "read",
            Call::Process => "process",
            Call::Finish => "finish",
            Call::Write => "write",
            Call::Flush => "flush",
        }
    }
    fn from_u8(v: u8) -> Call {
        match v {
            1 => Call::Read,
            2 => Call::Process,
            3 => Call::Finish,
            4 => Call::Write,
            5 => Call::Flush,
            _ => Call::None,
        }
    }
}

/// Per-stage counters, written by the stage thread, read by monitoring and the summary. All
/// plain atomics: the stage thread never waits for a reader.
#[derive(Debug)]
pub struct StageStats {
    pub blocks: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub busy_ns: AtomicU64,
    pub max_block_ns: AtomicU64,
    pub errors: AtomicU64,
    pub restarts: AtomicU32,
    /// Microseconds since the run started at which the current plugin call began (0: none).
    pub call_since_us: AtomicU64,
    /// Which plugin call (a [`Call`]).
    pub call: AtomicU8,
    /// Set by the watchdog when the current call overran `stall_timeout_ms` under
    /// `on_error = restart`: the stage rebuilds its instance once the call returns.
    pub restart_after_stall: AtomicBool,
    /// Meter levels (peak, RMS in dBFS as f32 bits), `levels_len` pairs, from `levels()`.
    pub levels: [AtomicU32; 2 * MAX_LEVELS],
    pub levels_len: AtomicU32,
    /// Frames a capture's source skipped (a device gap), and silence inserted for them.
    pub gap_frames: AtomicU64,
    pub gaps: AtomicU64,
    /// Capture to storage latency of the blocks this storage stage wrote, in microseconds.
    pub latency_sum_us: AtomicU64,
    pub latency_max_us: AtomicU64,
    pub latency_blocks: AtomicU64,
    /// Frames a storage stage took off its input and could not write (its plugin failed on
    /// them, or the stage had failed): the stage's own drops, as it has no output edge.
    pub dropped_frames: AtomicU64,
}

impl Default for StageStats {
    fn default() -> Self {
        StageStats {
            blocks: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            max_block_ns: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            restarts: AtomicU32::new(0),
            call_since_us: AtomicU64::new(0),
            call: AtomicU8::new(0),
            restart_after_stall: AtomicBool::new(false),
            levels: std::array::from_fn(|_| AtomicU32::new(0)),
            levels_len: AtomicU32::new(0),
            gap_frames: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
            latency_max_us: AtomicU64::new(0),
            latency_blocks: AtomicU64::new(0),
            dropped_frames: AtomicU64::new(0),
        }
    }
}

impl StageStats {
    /// Entering a plugin call: the watchdog measures from here.
    fn enter(&self, call: Call, epoch: Instant) {
        self.call.store(call as u8, Ordering::Relaxed);
        // At least 1: 0 means "not in a call".
        let now = epoch.elapsed().as_micros() as u64 + 1;
        self.call_since_us.store(now, Ordering::Release);
    }

    /// Back from the plugin call.
    fn leave(&self) {
        self.call_since_us.store(0, Ordering::Release);
        self.call.store(Call::None as u8, Ordering::Relaxed);
    }

    /// The plugin call in progress and since when (µs since the run started), if any.
    pub fn in_call(&self) -> Option<(Call, u64)> {
        let since = self.call_since_us.load(Ordering::Acquire);
        (since != 0).then(|| (Call::from_u8(self.call.load(Ordering::Relaxed)), since - 1))
    }

    /// Publish a processor's meter levels (no allocation: fixed slots).
    fn publish_levels(&self, levels: &[tapeline_plugin_api::Level]) {
        let n = levels.len().min(MAX_LEVELS);
        for (i, l) in levels[..n].iter().enumerate() {
            self.levels[2 * i].store(l.peak_db.to_bits(), Ordering::Relaxed);
            self.levels[2 * i + 1].store(l.rms_db.to_bits(), Ordering::Relaxed);
        }
        self.levels_len.store(n as u32, Ordering::Release);
    }

    /// The last published levels as (peak dBFS, RMS dBFS) per channel.
    pub fn levels(&self) -> Vec<(f32, f32)> {
        let n = self.levels_len.load(Ordering::Acquire) as usize;
        (0..n)
            .map(|i| {
                (
                    f32::from_bits(self.levels[2 * i].load(Ordering::Relaxed)),
                    f32::from_bits(self.levels[2 * i + 1].load(Ordering::Relaxed)),
                )
            })
            .collect()
    }

    fn record_latency(&self, us: u64) {
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        self.latency_max_us.fetch_max(us, Ordering::Relaxed);
        self.latency_blocks.fetch_add(1, Ordering::Relaxed);
    }

    fn record(&self, started: Instant, frames_in: u64, frames_out: u64) {
        self.record_busy(started.elapsed(), frames_in, frames_out);
    }

    fn record_busy(&self, busy: Duration, frames_in: u64, frames_out: u64) {
        let ns = busy.as_nanos() as u64;
        self.blocks.fetch_add(1, Ordering::Relaxed);
        self.frames_in.fetch_add(frames_in, Ordering::Relaxed);
        self.frames_out.fetch_add(frames_out, Ordering::Relaxed);
        self.busy_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_block_ns.fetch_max(ns, Ordering::Relaxed);
    }
}

/// How much an error matters to the pipeline, decided by the stage's `on_error` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// `ignore`: the block was dropped (counted) and the stage goes on.
    Warning,
    /// `restart`: the instance is being rebuilt.
    Recoverable,
    /// `fail`, or restarts exhausted: the pipeline stops, storage is finalised.
    Fatal,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Recoverable => "recoverable",
            Severity::Fatal => "fatal",
        }
    }
}

/// What a stage thread tells the coordinator.
#[derive(Debug)]
pub enum Event {
    /// A capture's source ended.
    Ended { stage: usize },
    /// Every error of a plugin, with its severity; `Fatal` ends the run.
    Error {
        stage: usize,
        severity: Severity,
        error: PluginError,
    },
}

/// Flags the coordinator raises to stop stages.
#[derive(Debug, Default)]
pub struct Stop {
    /// Captures stop producing.
    pub captures: AtomicBool,
    /// Consumers stop waiting for more input and drop what is queued (fast stop, or a producer
    /// that will never end).
    pub abandon: AtomicBool,
}

/// Builds instances of one stage's plugin: at start, and again on restart.
pub struct Factory {
    pub module: PluginLibraryRef,
    pub plugin: String,
    pub config: String,
    pub id: String,
    pub base_dir: String,
    pub inputs: Vec<PortFormat>,
    pub sample_rate: u32,
    pub block_frames: u32,
}

impl Factory {
    fn ctx(&self) -> StageContext<'_> {
        StageContext {
            stage_id: RStr::from_str(&self.id),
            sample_rate: self.sample_rate,
            block_frames: self.block_frames,
            base_dir: RStr::from_str(&self.base_dir),
            inputs: RSlice::from_slice(&self.inputs),
        }
    }
    pub fn capture(&self) -> Result<CaptureBox, PluginError> {
        (self.module.new_capture())(
            RStr::from_str(&self.plugin),
            RStr::from_str(&self.config),
            &self.ctx(),
        )
        .into_result()
    }
    pub fn processor(&self) -> Result<ProcessorBox, PluginError> {
        (self.module.new_processor())(
            RStr::from_str(&self.plugin),
            RStr::from_str(&self.config),
            &self.ctx(),
        )
        .into_result()
    }
    pub fn storage(&self) -> Result<StorageBox, PluginError> {
        (self.module.new_storage())(
            RStr::from_str(&self.plugin),
            RStr::from_str(&self.config),
            &self.ctx(),
        )
        .into_result()
    }
}

/// Everything a stage thread needs besides its instance and edges.
pub struct StageCtx {
    pub index: usize,
    pub factory: Factory,
    pub on_error: OnError,
    pub sm: Arc<StateMachine>,
    pub stats: Arc<StageStats>,
    pub stop: Arc<Stop>,
    pub events: Sender<Event>,
    pub epoch: Instant,
    pub stall_timeout_ms: u64,
    /// A capture stage: it also stops waiting to restart when captures are asked to stop.
    pub capture: bool,
}

/// What the stage's error policy decided.
enum Verdict<T> {
    /// `ignore`: count the block as dropped and go on with the same instance.
    Ignore,
    /// `restart`: a fresh instance to go on with.
    Restarted(T),
    /// `fail`, or restarts exhausted: the coordinator was told.
    Give,
    /// The pipeline started stopping while the stage waited to restart: it just ends.
    Stopped,
}

/// The longest wait between two restarts, however far `backoff_ms` has doubled.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

impl StageCtx {
    /// Apply the stage's `on_error` policy. The error path may lock and allocate; the steady
    /// state does not reach here.
    fn on_error<T>(
        &self,
        error: PluginError,
        rebuild: impl Fn() -> Result<T, PluginError>,
    ) -> Verdict<T> {
        // A call that failed by itself is handled once, even if the watchdog marked it stalled.
        self.stats
            .restart_after_stall
            .store(false, Ordering::Release);
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        match self.on_error.policy {
            Policy::Ignore => {
                self.report(Severity::Warning, error);
                Verdict::Ignore
            }
            Policy::Fail => self.give_up(error),
            Policy::Restart => {
                let _ = self.sm.transition(State::Failed, error.message());
                self.report(Severity::Recoverable, error.clone());
                let mut last = error;
                loop {
                    let n = self.stats.restarts.load(Ordering::Relaxed);
                    if n >= self.on_error.max_restarts {
                        let msg = format!("{} (gave up after {n} restart(s))", last.message());
                        return self.give_up(PluginError {
                            message: msg.into(),
                            ..last
                        });
                    }
                    self.stats.restarts.fetch_add(1, Ordering::Relaxed);
                    let _ = self.sm.transition(
                        State::Recovering,
                        format!("restart {} of {}", n + 1, self.on_error.max_restarts),
                    );
                    if !self.back_off(n) {
                        // The pipeline is stopping: no more attempts, and no failure either.
                        return Verdict::Stopped;
                    }
                    match rebuild() {
                        Ok(instance) => {
                            let _ = self.sm.transition(State::Running, "restarted");
                            return Verdict::Restarted(instance);
                        }
                        Err(e) => {
                            let _ = self.sm.transition(State::Failed, e.message());
                            last = e;
                        }
                    }
                }
            }
        }
    }

    /// After a plugin call returned and its result was handled (nothing it produced is lost):
    /// if the watchdog found the call stalled under `restart`, the stage's policy builds a fresh
    /// instance now.
    fn after_stall<T>(
        &self,
        call: Call,
        rebuild: impl Fn() -> Result<T, PluginError>,
    ) -> Option<Verdict<T>> {
        if !self.stats.restart_after_stall.swap(false, Ordering::AcqRel) {
            return None;
        }
        let error = PluginError::other(format!(
            "stalled in `{}` for more than {} ms",
            call.as_str(),
            self.stall_timeout_ms
        ));
        Some(self.on_error(error, rebuild))
    }

    /// A step towards stopped, unless the stage failed: a failed stage keeps `failed` as its
    /// last state, so the summary shows which stage ended the run.
    fn wind_down(&self, to: State, reason: &str) {
        if self.sm.state() != State::Failed {
            let _ = self.sm.transition(to, reason);
        }
    }

    /// Wait before restart `n + 1`: `backoff_ms` doubling, at most [`MAX_BACKOFF`], in short
    /// naps so that a stop request (`--for`, a signal) is not held up. False if the pipeline
    /// started stopping meanwhile.
    fn back_off(&self, n: u32) -> bool {
        let wait = Duration::from_millis(self.on_error.backoff_ms.saturating_mul(1 << n.min(16)))
            .min(MAX_BACKOFF);
        let until = Instant::now() + wait;
        loop {
            if self.stop.abandon.load(Ordering::Relaxed)
                || (self.capture && self.stop.captures.load(Ordering::Relaxed))
            {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(20)));
        }
    }

    fn give_up<T>(&self, error: PluginError) -> Verdict<T> {
        if self.sm.state() != State::Failed {
            let _ = self.sm.transition(State::Failed, error.message());
        }
        self.report(Severity::Fatal, error);
        Verdict::Give
    }

    /// Errors are logged by the coordinator, not on the stage's thread.
    fn report(&self, severity: Severity, error: PluginError) {
        let _ = self.events.send(Event::Error {
            stage: self.index,
            severity,
            error,
        });
    }
}

/// Push one port's output to every edge consuming it.
/// One call of a processor. Each output starts at `frames` frames (capped by its port's
/// `max_frames`); returns each output's frames and flags after the call.
fn call_processor(
    instance: &mut ProcessorBox,
    ins: &[InputBlock<'_>],
    scratch: &mut [Vec<f32>],
    out_ports: &[(PortFormat, u32)],
    positions: &[u64],
    frames: u32,
    flags: u32,
) -> Result<ArrayVec<(u32, u32), MAX_PORTS>, PluginError> {
    let mut outs: ArrayVec<OutputBlock<'_>, MAX_PORTS> = ArrayVec::new();
    for (p, buf) in scratch.iter_mut().enumerate() {
        outs.push(OutputBlock {
            samples: RSliceMut::from_mut_slice(buf),
            frames: frames.min(out_ports[p].1),
            channels: out_ports[p].0.channels,
            position: positions[p],
            flags,
        });
    }
    instance
        .process(
            RSlice::from_slice(ins),
            RSliceMut::from_mut_slice(&mut outs),
        )
        .into_result()?;
    Ok(outs.iter().map(|o| (o.frames, o.flags)).collect())
}

/// Push what a call produced on every output port; returns the frames pushed (all ports).
fn push_produced(
    outputs: &mut [Vec<Producer>],
    scratch: &[Vec<f32>],
    out_ports: &[(PortFormat, u32)],
    positions: &mut [u64],
    produced: &[(u32, u32)],
    stamp_us: u64,
) -> u64 {
    let mut out_frames = 0;
    for (p, &(n, f)) in produced.iter().enumerate() {
        let n = n.min(out_ports[p].1);
        let ch = out_ports[p].0.channels as usize;
        push_all(
            &mut outputs[p],
            &scratch[p][..n as usize * ch],
            n,
            positions[p],
            f,
            stamp_us,
        );
        positions[p] += n as u64;
        out_frames += n as u64;
    }
    out_frames
}

fn push_all(
    producers: &mut [Producer],
    samples: &[f32],
    frames: u32,
    position: u64,
    flags: u32,
    stamp_us: u64,
) {
    for p in producers {
        // A consumer that is gone (its stage failed) cannot take more; nothing to do.
        let _ = p.push_stamped(samples, frames, position, flags, stamp_us);
    }
}

/// A block a processing stage took and will not pass on, counted on every output edge.
fn count_dropped(producers: &[Vec<Producer>], reason: DropReason, frames: u64) {
    for port in producers {
        for p in port {
            p.count_dropped(reason, 1, frames);
        }
    }
}

/// Blocks a processing stage holds when a fast stop abandons them: counted as `shutdown`.
fn abandon_held(producers: &[Vec<Producer>], held: &[Option<Received>]) {
    let frames = held.iter().flatten().map(|b| b.frames).max().unwrap_or(0);
    if frames > 0 {
        count_dropped(producers, DropReason::Shutdown, u64::from(frames));
    }
}

fn rebuild_capture(ctx: &StageCtx) -> impl Fn() -> Result<CaptureBox, PluginError> + '_ {
    || {
        let mut c = ctx.factory.capture()?;
        c.start().into_result()?;
        Ok(c)
    }
}

/// A capture stage: read blocks until the source ends or the coordinator stops it.
pub fn run_capture(
    ctx: StageCtx,
    mut instance: CaptureBox,
    channels: u32,
    mut outputs: Vec<Producer>,
) -> Option<CaptureBox> {
    let frames = ctx.factory.block_frames;
    let mut scratch = vec![0.0f32; frames as usize * channels as usize];
    let silence = vec![0.0f32; frames as usize * channels as usize];
    let mut position = 0u64;
    while !ctx.stop.captures.load(Ordering::Relaxed) {
        let started = Instant::now();
        let mut out = OutputBlock {
            samples: RSliceMut::from_mut_slice(&mut scratch),
            frames,
            channels,
            position,
            flags: 0,
        };
        ctx.stats.enter(Call::Read, ctx.epoch);
        let result = instance.read(&mut out).into_result();
        ctx.stats.leave();
        let stamp = ctx.epoch.elapsed().as_micros() as u64;
        let (n, flags, at) = (out.frames.min(frames), out.flags, out.position);
        match result {
            Ok(status) => {
                ctx.stats.record(started, 0, n as u64);
                if flags & FLAG_DISCONTINUITY != 0 && at > position {
                    // The source skipped frames (a device gap): silence keeps the timeline.
                    let gap = at - position;
                    ctx.stats.gaps.fetch_add(1, Ordering::Relaxed);
                    ctx.stats.gap_frames.fetch_add(gap, Ordering::Relaxed);
                    let mut left = gap;
                    let mut first = FLAG_DISCONTINUITY;
                    while left > 0 {
                        let k = left.min(u64::from(frames)) as u32;
                        let samples = &silence[..k as usize * channels as usize];
                        push_all(&mut outputs, samples, k, position, first, stamp);
                        position += u64::from(k);
                        left -= u64::from(k);
                        first = 0;
                    }
                }
                if n > 0 {
                    let samples = &scratch[..n as usize * channels as usize];
                    push_all(&mut outputs, samples, n, position, flags, stamp);
                    position += n as u64;
                }
                if status == ReadStatus::Finished {
                    let _ = ctx.events.send(Event::Ended { stage: ctx.index });
                    break;
                }
                match ctx.after_stall(Call::Read, rebuild_capture(&ctx)) {
                    Some(Verdict::Restarted(c)) => instance = c,
                    Some(Verdict::Give | Verdict::Stopped) => break,
                    Some(Verdict::Ignore) | None => {}
                }
            }
            Err(e) => match ctx.on_error(e, rebuild_capture(&ctx)) {
                // A source that keeps failing (a device that is gone) is not polled in a loop.
                Verdict::Ignore => std::thread::sleep(Duration::from_millis(
                    ctx.on_error.backoff_ms.clamp(10, 1000),
                )),
                Verdict::Restarted(c) => instance = c,
                Verdict::Give | Verdict::Stopped => break,
            },
        }
    }
    // Recorded before the outputs close, so downstream stages stop after this one.
    ctx.wind_down(State::Stopping, "source ended or stop requested");
    if let Err(e) = instance.stop().into_result() {
        ctx.report(Severity::Warning, e);
    }
    Some(instance)
}

/// A processing stage: one block from every input, one call, every output pushed on.
pub fn run_processor(
    ctx: StageCtx,
    mut instance: ProcessorBox,
    inputs: Vec<Consumer>,
    input_formats: Vec<PortFormat>,
    out_ports: Vec<(PortFormat, u32)>,
    mut outputs: Vec<Vec<Producer>>,
) -> Option<ProcessorBox> {
    let max_in = inputs.len();
    let mut silence: Vec<Vec<f32>> = input_formats
        .iter()
        .map(|f| vec![0.0; ctx.factory.block_frames as usize * 4 * f.channels as usize])
        .collect();
    let mut scratch: Vec<Vec<f32>> = out_ports
        .iter()
        .map(|(f, max)| vec![0.0; *max as usize * f.channels as usize])
        .collect();
    let mut positions = vec![0u64; out_ports.len()];
    let mut ended = vec![false; max_in];
    let mut held = Vec::with_capacity(max_in);
    'run: loop {
        held.clear();
        for (i, c) in inputs.iter().enumerate() {
            if ended[i] {
                held.push(None);
                continue;
            }
            let got = loop {
                match c.recv_timeout(Duration::from_millis(50)) {
                    Ok(b) => break Some(b),
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break None,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        if ctx.stop.abandon.load(Ordering::Relaxed) {
                            abandon_held(&outputs, &held);
                            break 'run;
                        }
                    }
                }
            };
            ended[i] = got.is_none();
            held.push(got);
        }
        if ended.iter().all(|e| *e) {
            break;
        }
        if ctx.stop.abandon.load(Ordering::Relaxed) {
            abandon_held(&outputs, &held);
            break;
        }
        let frames = held.iter().flatten().map(|b| b.frames).max().unwrap_or(0);
        let started = Instant::now();
        let mut ins: ArrayVec<InputBlock<'_>, MAX_PORTS> = ArrayVec::new();
        for (i, h) in held.iter().enumerate() {
            let ch = input_formats[i].channels;
            ins.push(match h {
                Some(b) => InputBlock {
                    samples: RSlice::from_slice(b.data()),
                    frames: b.frames,
                    channels: ch,
                    position: b.position,
                    flags: b.flags,
                },
                None => {
                    let n = (frames as usize * ch as usize).min(silence[i].len());
                    InputBlock {
                        samples: RSlice::from_slice(&silence[i][..n]),
                        frames: (n / ch.max(1) as usize) as u32,
                        channels: ch,
                        position: 0,
                        flags: 0,
                    }
                }
            });
        }
        let flags = ins.iter().fold(0, |f, b| f | b.flags);
        // The oldest audio in this call, for capture → storage latency.
        let stamp = held
            .iter()
            .flatten()
            .map(|b| b.stamp_us)
            .filter(|&t| t != 0)
            .min()
            .unwrap_or(0);
        ctx.stats.enter(Call::Process, ctx.epoch);
        let result = call_processor(
            &mut instance,
            &ins,
            &mut scratch,
            &out_ports,
            &positions,
            frames,
            flags,
        );
        let levels = instance.levels();
        if !levels.is_empty() {
            ctx.stats.publish_levels(levels.as_slice());
        }
        ctx.stats.leave();
        drop(ins);
        // Busy time is the plugin's, not the wait for room downstream.
        let busy = started.elapsed();
        match result {
            Ok(produced) => {
                let out_frames = push_produced(
                    &mut outputs,
                    &scratch,
                    &out_ports,
                    &mut positions,
                    &produced,
                    stamp,
                );
                ctx.stats.record_busy(busy, frames as u64, out_frames);
                match ctx.after_stall(Call::Process, || ctx.factory.processor()) {
                    Some(Verdict::Restarted(p)) => instance = p,
                    Some(Verdict::Give | Verdict::Stopped) => break,
                    Some(Verdict::Ignore) | None => {}
                }
            }
            Err(e) => {
                // The block this call failed on is dropped (stage error), whatever follows.
                count_dropped(&outputs, DropReason::StageError, frames as u64);
                match ctx.on_error(e, || ctx.factory.processor()) {
                    Verdict::Ignore => {}
                    Verdict::Restarted(p) => instance = p,
                    Verdict::Give | Verdict::Stopped => break,
                }
            }
        }
        held.clear();
    }
    drop(held);
    if ended.iter().all(|e| *e) && !ctx.stop.abandon.load(Ordering::Relaxed) {
        // End of stream: let the processor write what it still holds (a filter's tail).
        let ins: ArrayVec<InputBlock<'_>, MAX_PORTS> = input_formats
            .iter()
            .map(|f| InputBlock {
                samples: RSlice::from_slice(&[]),
                frames: 0,
                channels: f.channels,
                position: 0,
                flags: FLAG_END_OF_STREAM,
            })
            .collect();
        for _ in 0..MAX_TAIL_CALLS {
            let started = Instant::now();
            ctx.stats.enter(Call::Finish, ctx.epoch);
            let result = call_processor(
                &mut instance,
                &ins,
                &mut scratch,
                &out_ports,
                &positions,
                0,
                0,
            );
            ctx.stats.leave();
            let Ok(produced) = result else {
                // The stream is over: a failing tail is reported, and nothing is left to stop.
                if let Err(e) = result {
                    ctx.report(Severity::Warning, e);
                }
                break;
            };
            let out_frames = push_produced(
                &mut outputs,
                &scratch,
                &out_ports,
                &mut positions,
                &produced,
                0,
            );
            if out_frames == 0 {
                break;
            }
            ctx.stats.record(started, 0, out_frames);
        }
    }
    ctx.wind_down(State::Stopping, "inputs ended");
    for c in &inputs {
        c.discard_all(DropReason::Shutdown);
    }
    silence.clear();
    Some(instance)
}

/// A storage stage: write every block; flush when idle; finalise at the end, always.
pub fn run_storage(
    ctx: StageCtx,
    mut instance: StorageBox,
    input: Consumer,
    format: PortFormat,
) -> (Option<StorageBox>, Result<StorageReport, PluginError>) {
    let mut failed = false;
    // What instances replaced by a restart recorded.
    let mut earlier = StorageReport::default();
    loop {
        match input.recv_timeout(Duration::from_millis(250)) {
            Ok(b) => {
                if failed {
                    // Taken off the edge, never written: counted as the stage's own drops.
                    ctx.stats
                        .dropped_frames
                        .fetch_add(u64::from(b.frames), Ordering::Relaxed);
                    continue;
                }
                let started = Instant::now();
                let block = InputBlock {
                    samples: RSlice::from_slice(b.data()),
                    frames: b.frames,
                    channels: format.channels,
                    position: b.position,
                    flags: b.flags,
                };
                let frames = b.frames as u64;
                let stamp = b.stamp_us;
                ctx.stats.enter(Call::Write, ctx.epoch);
                let result = instance.write(&block).into_result();
                ctx.stats.leave();
                if stamp != 0 {
                    let now = ctx.epoch.elapsed().as_micros() as u64;
                    ctx.stats.record_latency(now.saturating_sub(stamp));
                }
                drop(b);
                if ctx.stop.abandon.load(Ordering::Relaxed) {
                    // Fast stop: what is still queued is dropped (counted), then finalise.
                    input.discard_all(DropReason::Shutdown);
                    if result.is_ok() {
                        ctx.stats.record(started, frames, 0);
                    } else {
                        ctx.stats
                            .dropped_frames
                            .fetch_add(frames, Ordering::Relaxed);
                    }
                    break;
                }
                let verdict = match result {
                    Ok(()) => {
                        ctx.stats.record(started, frames, 0);
                        ctx.after_stall(Call::Write, || ctx.factory.storage())
                    }
                    Err(e) => {
                        // The block it failed on is not in its output: the stage's own drop.
                        ctx.stats
                            .dropped_frames
                            .fetch_add(frames, Ordering::Relaxed);
                        Some(ctx.on_error(e, || ctx.factory.storage()))
                    }
                };
                match verdict {
                    Some(Verdict::Restarted(s)) => {
                        // Keep what the old instance recorded, and count it.
                        let old = std::mem::replace(&mut instance, s);
                        merge_report(&mut earlier, old);
                    }
                    Some(Verdict::Give | Verdict::Stopped) => failed = true,
                    Some(Verdict::Ignore) | None => {}
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if ctx.stop.abandon.load(Ordering::Relaxed) {
                    input.discard_all(DropReason::Shutdown);
                    break;
                }
                ctx.stats.enter(Call::Flush, ctx.epoch);
                let _ = instance.flush();
                ctx.stats.leave();
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
    }
    ctx.wind_down(State::Stopping, "input ended");
    ctx.wind_down(State::Flushing, "finalising");
    let report = instance.finalize().into_result().map(|mut last| {
        last.frames_written += earlier.frames_written;
        for f in earlier.files {
            if !last.files.contains(&f) {
                last.files.push(f);
            }
        }
        last
    });
    (Some(instance), report)
}

/// Finalise an instance a restart replaced and add what it wrote to `into`.
fn merge_report(into: &mut StorageReport, mut old: StorageBox) {
    if let Ok(r) = old.finalize().into_result() {
        into.frames_written += r.frames_written;
        for f in r.files {
            if !into.files.contains(&f) {
                into.files.push(f);
            }
        }
    }
}
