//! The run summary: each stage's state history and work, each edge's counters, each cleanup
//! step's outcome, the files written. Human-readable on stdout, JSON with `--summary-json`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tapeline_plugin_api::abi::StorageReport;
use tapeline_plugin_api::PluginKind;

use super::stage::StageStats;
use super::EndReason;
use crate::config::Plan;
use crate::discipline::buffers::{EdgeSnapshot, EdgeStats};
use crate::discipline::cleanup::{StepOutcome, StepReport};
use crate::discipline::state_machine::{StateMachine, Transition};

#[derive(Debug, Clone, Serialize)]
pub struct StageSummary {
    pub id: String,
    pub kind: String,
    pub plugin: String,
    pub state: String,
    pub history: Vec<Transition>,
    pub blocks: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub mean_block_us: f64,
    pub max_block_us: f64,
    pub errors: u64,
    pub restarts: u32,
    /// Gaps a capture's source left (device loss) and their frames, filled with silence.
    pub gaps: u64,
    pub gap_frames: u64,
    /// Frames a storage stage took off its input and could not write (its plugin failed on
    /// them, or after it failed): its own drops, as it has no output edge to count them on.
    pub dropped_frames: u64,
    /// Frames a stage left behind stuck in a plugin call (watchdog, `fail`) had taken off its
    /// inputs and not handled: lost with it.
    pub stuck_frames: u64,
    /// Capture → storage latency of the blocks a storage stage wrote, in milliseconds.
    pub latency_ms_mean: Option<f64>,
    pub latency_ms_max: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StorageSummary {
    pub stage: String,
    pub frames_written: u64,
    /// What `frames_written` lasts at the stage's input rate.
    pub seconds: f64,
    pub files: Vec<String>,
    pub error: Option<String>,
}

/// One error a plugin returned, with the severity its stage's policy gave it.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorRecord {
    pub stage: String,
    pub severity: super::stage::Severity,
    pub kind: String,
    pub message: String,
    /// Milliseconds since the run started.
    pub at_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailureSummary {
    pub stage: String,
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub pipeline: Option<String>,
    pub end: EndReason,
    pub seconds: f64,
    pub pipeline_history: Vec<Transition>,
    pub stages: Vec<StageSummary>,
    pub edges: Vec<EdgeSnapshot>,
    pub cleanup: Vec<StepReport>,
    pub storage: Vec<StorageSummary>,
    pub errors: Vec<ErrorRecord>,
    pub failure: Option<FailureSummary>,
    /// Totals over every monitoring snapshot.
    pub monitoring: super::monitor::MonitorTotals,
}

impl StorageSummary {
    /// `240000 frames, 5.00 s` (or `1:02:03.5` past a minute).
    pub fn length(&self) -> String {
        let t = self.seconds;
        let shown = if t < 60.0 {
            format!("{t:.2} s")
        } else {
            let whole = t as u64;
            format!("{}:{:02}:{:04.1}", whole / 3600, whole / 60 % 60, t % 60.0)
        };
        format!("{} frames, {shown}", self.frames_written)
    }
}

impl RunSummary {
    /// True when a stage failed or finalising storage did not succeed.
    pub fn failed(&self) -> bool {
        self.failure.is_some()
            || self.storage.iter().any(|s| s.error.is_some())
            || self
                .cleanup
                .iter()
                .any(|s| s.name == "finalise storage" && !matches!(s.outcome, StepOutcome::Ok(_)))
    }

    /// The human-readable summary.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let name = self.pipeline.as_deref().unwrap_or("pipeline");
        let _ = writeln!(
            s,
            "{name}: {} after {:.2} s",
            self.end.as_words(),
            self.seconds
        );
        if let Some(f) = &self.failure {
            let _ = writeln!(
                s,
                "  FAILED: stage `{}` ({}): {}",
                f.stage, f.kind, f.message
            );
        }
        let _ = writeln!(s, "stages:");
        for st in &self.stages {
            let _ = writeln!(
                s,
                "  {:<12} {:<8} {:<12} {:>8} blocks  in {:>10}  out {:>10}  {:>8.1} µs/block (max {:.1})  state {}{}",
                st.id,
                st.kind,
                st.plugin,
                st.blocks,
                st.frames_in,
                st.frames_out,
                st.mean_block_us,
                st.max_block_us,
                st.state,
                if st.restarts > 0 { format!(", {} restart(s)", st.restarts) } else { String::new() }
            );
        }
        let _ = writeln!(s, "monitoring ({} snapshots):", self.monitoring.snapshots);
        for (i, st) in self.stages.iter().enumerate() {
            let mut parts = Vec::new();
            if let Some(b) = self.monitoring.max_budget_share.get(i) {
                parts.push(format!("busiest {:.1}% of audio time", b * 100.0));
            }
            if let Some(Some(p)) = self.monitoring.max_peak_db.get(i) {
                parts.push(format!("peak {p:.1} dBFS"));
            }
            if let (Some(mean), Some(max)) = (st.latency_ms_mean, st.latency_ms_max) {
                parts.push(format!(
                    "latency from capture {mean:.1} ms mean, {max:.1} ms max"
                ));
            }
            if st.gaps > 0 {
                parts.push(format!(
                    "{} gap(s), {} frames of silence inserted",
                    st.gaps, st.gap_frames
                ));
            }
            let _ = writeln!(s, "  {:<12} {}", st.id, parts.join(", "));
        }
        let _ = writeln!(s, "edges (frames):");
        for e in &self.edges {
            let dropped = e.dropped_overflow_frames
                + e.dropped_stage_error_frames
                + e.dropped_shutdown_frames;
            let _ = writeln!(
                s,
                "  {:<28} pushed {:>10}  popped {:>10}  dropped {:>6}  queued {:>3}  high-water {}/{} blocks",
                e.label, e.pushed_frames, e.popped_frames, dropped, e.depth, e.high_water, e.capacity
            );
        }
        if !self.errors.is_empty() {
            let _ = writeln!(s, "errors:");
            for e in &self.errors {
                let _ = writeln!(
                    s,
                    "  {:>7} ms  {:<12} {:<11} {}",
                    e.at_ms,
                    e.stage,
                    e.severity.as_str(),
                    e.message
                );
            }
        }
        let _ = writeln!(s, "cleanup:");
        for c in &self.cleanup {
            let (word, detail) = match &c.outcome {
                StepOutcome::Ok(d) => ("ok", d),
                StepOutcome::Failed(d) => ("FAILED", d),
                StepOutcome::Skipped(d) => ("skipped", d),
            };
            let _ = writeln!(s, "  {:<24} {word:<7} {detail}", c.name);
        }
        for st in &self.storage {
            for f in &st.files {
                let _ = writeln!(s, "wrote {f} ({})", st.length());
            }
            if let Some(e) = &st.error {
                let _ = writeln!(s, "storage `{}` did not finalise: {e}", st.stage);
            }
        }
        s
    }
}

/// What the summary needs of one stage.
pub(super) struct StageRecord {
    pub id: String,
    pub kind: PluginKind,
    pub sm: Arc<StateMachine>,
    pub stats: Arc<StageStats>,
    /// Left behind, stuck in a plugin call.
    pub stuck: bool,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn build(
    plan: &Plan,
    pipeline: &StateMachine,
    stages: &[StageRecord],
    edges: &[Arc<EdgeStats>],
    cleanup: Vec<StepReport>,
    storage: Vec<(String, Result<StorageReport, String>)>,
    end: EndReason,
    failure: Option<super::Failure>,
    elapsed: Duration,
    errors: Vec<ErrorRecord>,
    monitoring: super::monitor::MonitorTotals,
) -> RunSummary {
    let snapshots: Vec<EdgeSnapshot> = edges.iter().map(|e| e.snapshot()).collect();
    let stages_out = stages
        .iter()
        .zip(&plan.stages)
        .map(
            |(
                StageRecord {
                    id,
                    kind,
                    sm,
                    stats,
                    stuck,
                },
                p,
            )| {
                // A stage left behind in a plugin call holds what it took off its inputs and had
                // not handled: popped, but neither passed on nor dropped.
                let stuck_frames = if *stuck && p.kind != PluginKind::Capture {
                    let popped: u64 = p.inputs.iter().map(|&e| snapshots[e].popped_frames).sum();
                    popped.saturating_sub(
                        stats.frames_in.load(Ordering::Relaxed)
                            + stats.dropped_frames.load(Ordering::Relaxed),
                    )
                } else {
                    0
                };
                let blocks = stats.blocks.load(Ordering::Relaxed);
                let busy = stats.busy_ns.load(Ordering::Relaxed) as f64;
                StageSummary {
                    id: id.clone(),
                    kind: kind.as_str().to_string(),
                    plugin: p.entry.name().to_string(),
                    state: sm.state().as_str().to_string(),
                    history: sm.history(),
                    blocks,
                    frames_in: stats.frames_in.load(Ordering::Relaxed),
                    frames_out: stats.frames_out.load(Ordering::Relaxed),
                    mean_block_us: if blocks == 0 {
                        0.0
                    } else {
                        busy / blocks as f64 / 1000.0
                    },
                    max_block_us: stats.max_block_ns.load(Ordering::Relaxed) as f64 / 1000.0,
                    errors: stats.errors.load(Ordering::Relaxed),
                    restarts: stats.restarts.load(Ordering::Relaxed),
                    gaps: stats.gaps.load(Ordering::Relaxed),
                    gap_frames: stats.gap_frames.load(Ordering::Relaxed),
                    dropped_frames: stats.dropped_frames.load(Ordering::Relaxed),
                    stuck_frames,
                    latency_ms_mean: {
                        let n = stats.latency_blocks.load(Ordering::Relaxed);
                        (n > 0).then(|| {
                            stats.latency_sum_us.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0
                        })
                    },
                    latency_ms_max: (stats.latency_blocks.load(Ordering::Relaxed) > 0)
                        .then(|| stats.latency_max_us.load(Ordering::Relaxed) as f64 / 1000.0),
                }
            },
        )
        .collect();
    RunSummary {
        pipeline: plan.file.name.clone(),
        end,
        seconds: elapsed.as_secs_f64(),
        pipeline_history: pipeline.history(),
        stages: stages_out,
        edges: snapshots,
        cleanup,
        storage: storage
            .into_iter()
            .map(|(stage, r)| {
                let rate = plan
                    .stages
                    .iter()
                    .find(|s| s.id == stage)
                    .and_then(|s| s.input_formats.first())
                    .map_or(plan.file.sample_rate, |f| f.sample_rate);
                (stage, r, f64::from(rate.max(1)))
            })
            .map(|(stage, r, rate)| match r {
                Ok(rep) => StorageSummary {
                    stage,
                    frames_written: rep.frames_written,
                    seconds: rep.frames_written as f64 / rate,
                    files: rep
                        .files
                        .iter()
                        .map(|f| {
                            std::fs::canonicalize(f.as_str())
                                .map_or_else(|_| f.to_string(), |p| p.display().to_string())
                        })
                        .collect(),
                    error: None,
                },
                Err(e) => StorageSummary {
                    stage,
                    frames_written: 0,
                    seconds: 0.0,
                    files: Vec::new(),
                    error: Some(e),
                },
            })
            .collect(),
        errors,
        failure: failure.map(|(i, kind, message)| FailureSummary {
            stage: plan.stages[i].id.clone(),
            kind,
            message,
        }),
        monitoring,
    }
}
