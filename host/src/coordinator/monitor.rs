//! The MonitoringCoordinator: periodic snapshots of every stage and edge, taken on a thread of
//! its own (from the start of the run to the end of its cleanup) from atomics the stage threads
//! publish (never from the plugins themselves, never by locking the audio path), handed to sinks
//! (`--metrics`, the live view), and folded into totals for the run summary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::component::Component;
use super::lifecycle::Lifecycle;
use super::running::Running;
use crate::discipline::buffers::{ChannelCounters, EdgeSnapshot, EdgeStats};

/// Receives every snapshot, on the monitoring thread.
pub type Sink = Arc<dyn Fn(&Snapshot) + Send + Sync>;

/// One meter reading of one channel, in dBFS.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LevelReading {
    /// The highest peak the meter measured since the previous snapshot, over every block in
    /// between (the last block's when there was none since).
    pub peak_db: f32,
    /// The meter's last RMS, never above `peak_db`.
    pub rms_db: f32,
    /// The highest peak since the run started (peak-hold).
    pub peak_hold_db: f32,
}

/// A stage at one instant.
#[derive(Debug, Clone, Serialize)]
pub struct StageSnapshot {
    pub id: String,
    pub plugin: String,
    pub kind: String,
    pub state: String,
    pub blocks: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    /// Mean time per block since the previous snapshot, in microseconds.
    pub block_us_mean: f64,
    /// Longest time per block since the run started (the stage threads keep one maximum).
    pub block_us_max: f64,
    /// Time spent in the plugin over the audio time it handled since the previous snapshot:
    /// 1.0 means the stage uses its whole real-time budget.
    pub budget_share: f64,
    pub errors: u64,
    pub restarts: u32,
    /// Gaps a capture's source left (device loss), and their frames.
    pub gaps: u64,
    pub gap_frames: u64,
    /// Meter levels per channel (from plugins that measure, e.g. `meter`).
    pub levels: Vec<LevelReading>,
    /// Capture → storage latency of the blocks written since the run started (storage only).
    pub latency_ms_mean: Option<f64>,
    pub latency_ms_max: Option<f64>,
    /// The plugin call in progress and for how long, when it has lasted over a block's time.
    pub in_call: Option<String>,
    pub in_call_ms: Option<u64>,
    /// Frames a finite source will produce in all (captures with a known length).
    pub length_frames: Option<u64>,
    /// The plugin's own counters by name (`Describe::STATS`: a capture's xruns, a writer's
    /// bytes and syncs), as the stage last read them; empty when it reports none.
    pub stats: std::collections::BTreeMap<String, u64>,
}

/// Everything at one instant.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Milliseconds since the run started.
    pub t_ms: u64,
    pub pipeline: String,
    pub stages: Vec<StageSnapshot>,
    pub edges: Vec<EdgeView>,
}

/// An edge at one instant, with its counters per channel.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeView {
    #[serde(flatten)]
    pub edge: EdgeSnapshot,
    pub per_channel: Vec<ChannelCounters>,
}

/// Totals over every snapshot of a run, for the summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MonitorTotals {
    pub snapshots: u64,
    /// Per stage (same order as the summary's stages): the largest budget share seen.
    pub max_budget_share: Vec<f64>,
    /// Per stage: the loudest peak measured on any channel over the whole run (every block,
    /// not only those at a snapshot), in dBFS (None: no meter).
    pub max_peak_db: Vec<Option<f32>>,
}

/// Counters of one stage at the previous snapshot, for per-interval figures.
#[derive(Default, Clone, Copy)]
struct Previous {
    blocks: u64,
    busy_ns: u64,
    frames: u64,
}

pub struct Monitor {
    sample_rate: u32,
    block_frames: u32,
    interval: Duration,
    pipeline: Arc<Lifecycle>,
    stages: Vec<Arc<Component>>,
    edges: Vec<Arc<EdgeStats>>,
    previous: Vec<Previous>,
    /// Folded over every snapshot taken, for the run summary.
    pub totals: MonitorTotals,
}

impl Monitor {
    /// Watch every stage and edge of a running graph.
    pub fn new(g: &Running) -> Monitor {
        let n = g.stages.len();
        Monitor {
            sample_rate: g.plan.file.sample_rate,
            block_frames: g.plan.file.block_frames,
            interval: Duration::from_millis(g.plan.file.monitor_interval_ms.max(1)),
            pipeline: g.pipeline.clone(),
            stages: g.stages.iter().map(|r| r.component.clone()).collect(),
            edges: g.edges.clone(),
            previous: vec![Previous::default(); n],
            totals: MonitorTotals {
                snapshots: 0,
                max_budget_share: vec![0.0; n],
                max_peak_db: vec![None; n],
            },
        }
    }

    /// Take a snapshot now (`now_us` since the run started) and fold it into the totals.
    pub fn snapshot(&mut self, now_us: u64) -> Snapshot {
        let pipeline_state = self.pipeline.state().as_str();
        let stages = (0..self.stages.len())
            .map(|i| self.stage(i, now_us))
            .collect();
        self.totals.snapshots += 1;
        Snapshot {
            t_ms: now_us / 1000,
            pipeline: pipeline_state.to_string(),
            stages,
            edges: self
                .edges
                .iter()
                .map(|e| {
                    let edge = e.snapshot();
                    EdgeView {
                        per_channel: edge.per_channel(),
                        edge,
                    }
                })
                .collect(),
        }
    }

    /// Stage `i` now, folded into the totals.
    fn stage(&mut self, i: usize, now_us: u64) -> StageSnapshot {
        let block_us = f64::from(self.block_frames) * 1e6 / f64::from(self.sample_rate.max(1));
        {
            let w = &self.stages[i];
            let st = &w.stats;
            let blocks = st.blocks.load(Ordering::Relaxed);
            let busy_ns = st.busy_ns.load(Ordering::Relaxed);
            let frames_in = st.frames_in.load(Ordering::Relaxed);
            let frames_out = st.frames_out.load(Ordering::Relaxed);
            // The audio a stage handled: what it produced for captures, what it took otherwise.
            let frames = if w.who.kind == tapeline_plugin_api::PluginKind::Capture {
                frames_out
            } else {
                frames_in
            };
            let prev = self.previous[i];
            let d_blocks = blocks.saturating_sub(prev.blocks);
            let d_busy = busy_ns.saturating_sub(prev.busy_ns) as f64;
            let d_frames = frames.saturating_sub(prev.frames) as f64;
            self.previous[i] = Previous {
                blocks,
                busy_ns,
                frames,
            };
            let budget_share = if d_frames > 0.0 {
                d_busy / (d_frames * 1e9 / f64::from(self.sample_rate.max(1)))
            } else {
                0.0
            };
            let levels: Vec<LevelReading> = st
                .take_levels()
                .into_iter()
                .map(|l| LevelReading {
                    peak_db: l.peak_db,
                    rms_db: l.rms_db,
                    peak_hold_db: l.hold_db,
                })
                .collect();
            let totals = &mut self.totals;
            totals.max_budget_share[i] = totals.max_budget_share[i].max(budget_share);
            // The stage thread's peak-hold: every block counts, not only the last before a
            // snapshot.
            let held = levels
                .iter()
                .map(|l| l.peak_hold_db)
                .chain(st.max_peak_db())
                .reduce(f32::max);
            if let Some(p) = held {
                totals.max_peak_db[i] = Some(totals.max_peak_db[i].map_or(p, |q| q.max(p)));
            }
            let latency_blocks = st.latency_blocks.load(Ordering::Relaxed);
            let (latency_ms_mean, latency_ms_max) = if latency_blocks == 0 {
                (None, None)
            } else {
                let sum = st.latency_sum_us.load(Ordering::Relaxed) as f64;
                let max = st.latency_max_us.load(Ordering::Relaxed) as f64;
                (
                    Some(sum / latency_blocks as f64 / 1000.0),
                    Some(max / 1000.0),
                )
            };
            let (in_call, in_call_ms) = match st.in_call() {
                Some((call, since)) if now_us.saturating_sub(since) as f64 > block_us => (
                    Some(call.as_str().to_string()),
                    Some(now_us.saturating_sub(since) / 1000),
                ),
                _ => (None, None),
            };
            let length = st.length_frames.load(Ordering::Relaxed);
            StageSnapshot {
                id: w.who.id.clone(),
                plugin: w.who.plugin.clone(),
                kind: w.who.kind.as_str().to_string(),
                state: w.lifecycle().state().as_str().to_string(),
                blocks,
                frames_in,
                frames_out,
                block_us_mean: if d_blocks == 0 {
                    0.0
                } else {
                    d_busy / d_blocks as f64 / 1000.0
                },
                block_us_max: st.max_block_ns.load(Ordering::Relaxed) as f64 / 1000.0,
                budget_share,
                errors: st.errors.load(Ordering::Relaxed),
                restarts: st.restarts.load(Ordering::Relaxed),
                gaps: st.gaps.load(Ordering::Relaxed),
                gap_frames: st.gap_frames.load(Ordering::Relaxed),
                levels,
                latency_ms_mean,
                latency_ms_max,
                in_call,
                in_call_ms,
                length_frames: (length != u64::MAX).then_some(length),
                stats: st.plugin.snapshot(),
            }
        }
    }
}

/// The running monitoring thread.
pub struct Monitoring {
    done: Arc<AtomicBool>,
    handle: Option<JoinHandle<Monitor>>,
    sink: Option<Sink>,
    epoch: Instant,
}

/// Start taking a snapshot every `monitor_interval_ms` and handing it to `sink`.
pub fn spawn(mut monitor: Monitor, sink: Option<Sink>, epoch: Instant) -> Monitoring {
    let done = Arc::new(AtomicBool::new(false));
    let interval = monitor.interval;
    let handle = {
        let (done, sink) = (done.clone(), sink.clone());
        std::thread::Builder::new()
            .name("tapeline-monitor".into())
            .spawn(move || {
                let mut next = interval;
                while !done.load(Ordering::Acquire) {
                    let now = epoch.elapsed();
                    if now < next {
                        // `finish` unparks it: the end of the run is not held up by a nap.
                        std::thread::park_timeout(next - now);
                        continue;
                    }
                    next += interval;
                    let snap = monitor.snapshot(micros(epoch));
                    if let Some(sink) = &sink {
                        sink(&snap);
                    }
                }
                monitor
            })
            .ok()
    };
    Monitoring {
        done,
        handle,
        sink,
        epoch,
    }
}

impl Monitoring {
    /// Stop, take the last snapshot (the state everything ended in), return the totals.
    pub fn finish(mut self, g: &Running) -> MonitorTotals {
        self.done.store(true, Ordering::Release);
        if let Some(h) = &self.handle {
            h.thread().unpark();
        }
        // Without its thread (it could not start, or it panicked), one snapshot still tells
        // the end state.
        let mut monitor = match self.handle.take().map(JoinHandle::join) {
            Some(Ok(m)) => m,
            _ => Monitor::new(g),
        };
        let snap = monitor.snapshot(micros(self.epoch));
        if let Some(sink) = &self.sink {
            sink(&snap);
        }
        monitor.totals
    }
}

fn micros(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}
