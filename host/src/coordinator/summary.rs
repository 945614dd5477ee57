//! The run summary: each stage's state history and work, each edge's counters, each cleanup
//! step's outcome, the files written, the frames lost by reason. Human-readable on stdout, JSON
//! with `--summary-json`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;
use tapeline_plugin_api::abi::StorageReport;
use tapeline_plugin_api::PluginKind;

use super::cleanup_plan::Cleaned;
use super::component::Component;
use super::lifecycle::{InternalError, InternalErrors, Lifecycle};
use super::monitor::MonitorTotals;
pub use super::recovery_log::ErrorRecord;
use super::run_error::RunError;
use super::running::{AbandonedCall, Running, StageRun};
use super::EndReason;
use crate::config::Plan;
use crate::discipline::buffers::EdgeSnapshot;
use crate::discipline::cleanup::{StepOutcome, StepReport};
use crate::discipline::state_machine::Transition;

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
    /// Plugin calls the watchdog gave up (under `restart`), each leaving a thread behind.
    pub abandoned_calls: Vec<AbandonedCall>,
    /// The stage's plugin ran in its own process (`isolate = true`).
    pub isolated: bool,
    /// How its `limits` were applied (`setrlimit`; cgroups are not used), when it has any.
    pub limits_applied_with: Option<&'static str>,
    /// The plugin's own counters by name at the end (`Describe::STATS`); empty: none.
    pub stats: std::collections::BTreeMap<String, u64>,
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

#[derive(Debug, Clone, Serialize)]
pub struct FailureSummary {
    pub stage: String,
    pub kind: String,
    pub message: String,
    /// The config key of a config error (`kind` = "invalid-config").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
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
    pub monitoring: MonitorTotals,
    /// Frames lost to any fault, by reason (summed over edges and stages; 0 for a clean run).
    pub lost_frames: BTreeMap<&'static str, u64>,
    /// Transitions the host asked for and the state table refused: bugs, always 0.
    pub internal_errors: u64,
    pub internal_error_list: Vec<InternalError>,
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
            || self.stages.iter().any(|s| !s.abandoned_calls.is_empty())
            || self.storage.iter().any(|s| s.error.is_some())
            || self
                .cleanup
                .iter()
                .any(|s| s.name == "finalise storage" && !matches!(s.outcome, StepOutcome::Ok(_)))
    }

    /// The human-readable summary.
    pub fn render(&self) -> String {
        let name = self.pipeline.as_deref().unwrap_or("pipeline");
        let mut lines = vec![format!(
            "{name}: {} after {:.2} s",
            self.end.as_words(),
            self.seconds
        )];
        if let Some(f) = &self.failure {
            lines.push(format!(
                "  FAILED: stage `{}` ({}): {}",
                f.stage, f.kind, f.message
            ));
        }
        lines.push("stages:".into());
        lines.extend(self.stages.iter().map(stage_line));
        lines.push(format!(
            "monitoring ({} snapshots):",
            self.monitoring.snapshots
        ));
        lines.extend(
            self.stages
                .iter()
                .enumerate()
                .map(|(i, st)| self.monitoring_line(i, st)),
        );
        lines.push("edges (frames):".into());
        lines.extend(self.edges.iter().map(edge_line));
        if !self.errors.is_empty() {
            lines.push("errors:".into());
            lines.extend(self.errors.iter().map(|e| {
                let severity = e.severity.as_str();
                format!(
                    "  {:>7} ms  {:<12} {severity:<11} {}",
                    e.at_ms, e.stage, e.message
                )
            }));
        }
        lines.push("cleanup:".into());
        lines.extend(self.cleanup.iter().map(|c| {
            let (word, detail) = match &c.outcome {
                StepOutcome::Ok(d) => ("ok", d),
                StepOutcome::Failed(d) => ("FAILED", d),
                StepOutcome::Skipped(d) => ("skipped", d),
            };
            format!("  {:<24} {word:<7} {detail}", c.name)
        }));
        lines.extend(self.storage.iter().filter_map(|st| {
            let e = st.error.as_ref()?;
            Some(format!("storage `{}` did not finalise: {e}", st.stage))
        }));
        lines.extend(self.written());
        lines.push(self.lost_line());
        lines.join("\n") + "\n"
    }

    /// What monitoring saw of stage `i`.
    fn monitoring_line(&self, i: usize, st: &StageSummary) -> String {
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
        for a in &st.abandoned_calls {
            parts.push(format!(
                "`{}` given up after {} ms ({} left behind)",
                a.call, a.after_ms, a.thread
            ));
        }
        format!("  {:<12} {}", st.id, parts.join(", "))
    }

    /// `wrote FILE (N frames, T s)`, one per file.
    pub fn written(&self) -> Vec<String> {
        self.storage
            .iter()
            .flat_map(|st| {
                st.files
                    .iter()
                    .map(move |f| format!("wrote {f} ({})", st.length()))
            })
            .collect()
    }

    /// The last line: `lost frames: none`, or the total and each reason.
    pub fn lost_line(&self) -> String {
        let total: u64 = self.lost_frames.values().sum();
        if total == 0 {
            return "lost frames: none".to_string();
        }
        let parts: Vec<String> = self
            .lost_frames
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        format!("lost frames: {total} ({})", parts.join(", "))
    }
}

fn stage_line(st: &StageSummary) -> String {
    let restarts = if st.restarts > 0 {
        format!(", {} restart(s)", st.restarts)
    } else {
        String::new()
    };
    let isolated = match (st.isolated, st.limits_applied_with) {
        (true, Some(how)) => format!(", own process, limits by {how}"),
        (true, None) => ", own process".to_string(),
        _ => String::new(),
    };
    let mut line = format!(
        "  {:<12} {:<8} {:<12} {:>8} blocks  in {:>10}  out {:>10}  {:>8.1} µs/block (max {:.1})  state {}{restarts}{isolated}",
        st.id, st.kind, st.plugin, st.blocks, st.frames_in, st.frames_out, st.mean_block_us,
        st.max_block_us, st.state
    );
    // The plugin's own counters (`tapeline.stats`), on a line of their own below.
    if let Some(stats) = stats_text(&st.stats) {
        line.push_str(&format!("\n  {:<12} {stats}", ""));
    }
    line
}

/// A plugin's own counters (`tapeline.stats`) in words: `bytes_written 576000, syncs 3`; `None`
/// when it reports none. The summary and the live view show them alike.
pub fn stats_text(stats: &std::collections::BTreeMap<String, u64>) -> Option<String> {
    let parts: Vec<String> = stats.iter().map(|(k, v)| format!("{k} {v}")).collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn edge_line(e: &EdgeSnapshot) -> String {
    format!(
        "  {:<28} pushed {:>10}  popped {:>10}  dropped {:>6}  queued {:>3}  high-water {}/{} blocks",
        e.label, e.pushed_frames, e.popped_frames, e.dropped_frames(), e.depth, e.high_water, e.capacity
    )
}

/// The summary of a run that ended (or never started).
pub(super) fn build(
    g: &Running,
    cleaned: Cleaned,
    end: EndReason,
    monitoring: MonitorTotals,
    internal: &InternalErrors,
) -> RunSummary {
    let edges: Vec<EdgeSnapshot> = g.edges.iter().map(|e| e.snapshot()).collect();
    let stages: Vec<StageSummary> = g
        .stages
        .iter()
        .map(|r| stage_summary(g.plan, r, &edges))
        .collect();
    let mut summary = RunSummary {
        pipeline: g.plan.file.name.clone(),
        end,
        seconds: g.epoch.elapsed().as_secs_f64(),
        pipeline_history: g.pipeline.history(),
        lost_frames: lost_frames(&edges, &stages),
        stages,
        edges,
        cleanup: cleaned.steps,
        storage: cleaned
            .storage
            .into_iter()
            .map(|(id, r)| storage_summary(g.plan, id, r))
            .collect(),
        errors: g.log.errors.clone(),
        failure: g.failure.as_ref().map(|f| failure_summary(g.plan, f)),
        monitoring,
        internal_errors: internal.count(),
        internal_error_list: internal.list(),
    };
    log_internal_errors(&summary.internal_error_list);
    summary.internal_errors = internal.count();
    summary
}

/// A run whose graph could not be built: every reason, nothing started.
pub(super) fn not_built(
    plan: &Plan,
    pipeline: &Lifecycle,
    errors: Vec<RunError>,
    internal: &InternalErrors,
    epoch: Instant,
) -> RunSummary {
    pipeline.enter(
        crate::discipline::state_machine::State::Failed,
        "the graph could not be built",
    );
    let listed = errors
        .iter()
        .map(|e| ErrorRecord {
            stage: plan.stages[e.stage].id.clone(),
            severity: super::policy::Severity::Fatal,
            kind: e.fault.kind().to_string(),
            message: e.fault.to_string(),
            at_ms: 0,
        })
        .collect();
    RunSummary {
        pipeline: plan.file.name.clone(),
        end: EndReason::Failed,
        seconds: epoch.elapsed().as_secs_f64(),
        pipeline_history: pipeline.history(),
        stages: Vec::new(),
        edges: Vec::new(),
        cleanup: Vec::new(),
        storage: Vec::new(),
        errors: listed,
        failure: errors.first().map(|f| failure_summary(plan, f)),
        monitoring: MonitorTotals::default(),
        lost_frames: BTreeMap::new(),
        internal_errors: internal.count(),
        internal_error_list: internal.list(),
    }
}

fn log_internal_errors(list: &[InternalError]) {
    for e in list {
        tracing::error!(
            machine = %e.machine,
            from = e.from.as_str(),
            to = e.to.as_str(),
            reason = %e.reason,
            "internal error: the state table refused a transition the host asked for"
        );
    }
}

fn failure_summary(plan: &Plan, f: &RunError) -> FailureSummary {
    FailureSummary {
        stage: plan.stages[f.stage].id.clone(),
        kind: f.fault.kind().to_string(),
        message: f.fault.to_string(),
        key: f.fault.key().map(str::to_string),
    }
}

/// Every frame lost, by reason: edge drops, storage drops, frames stuck in a call that was
/// left behind, and device gaps.
fn lost_frames(edges: &[EdgeSnapshot], stages: &[StageSummary]) -> BTreeMap<&'static str, u64> {
    let mut lost = BTreeMap::new();
    let mut add = |reason: &'static str, n: u64| *lost.entry(reason).or_insert(0) += n;
    for e in edges {
        add("overflow", e.dropped_overflow_frames);
        add("stage-error", e.dropped_stage_error_frames);
        add("shutdown", e.dropped_shutdown_frames);
    }
    for s in stages {
        add("storage-error", s.dropped_frames);
        add("stuck", s.stuck_frames);
        add("device-gap", s.gap_frames);
    }
    lost
}

fn stage_summary(plan: &Plan, r: &StageRun, edges: &[EdgeSnapshot]) -> StageSummary {
    let c: &Component = &r.component;
    let p = &plan.stages[c.who.index];
    let stats = &c.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    // A stage left behind in a plugin call holds what it took off its inputs and had not
    // handled: popped, but neither passed on nor dropped.
    let stuck_frames = if r.stuck && p.kind != PluginKind::Capture {
        let popped: u64 = p.inputs.iter().map(|&e| edges[e].popped_frames).sum();
        popped.saturating_sub(load(&stats.frames_in) + load(&stats.dropped_frames))
    } else {
        0
    };
    let blocks = load(&stats.blocks);
    let latency_blocks = load(&stats.latency_blocks);
    StageSummary {
        id: c.who.id.clone(),
        kind: c.who.kind.as_str().to_string(),
        plugin: c.who.plugin.clone(),
        state: c.lifecycle().state().as_str().to_string(),
        history: c.lifecycle().history(),
        blocks,
        frames_in: load(&stats.frames_in),
        frames_out: load(&stats.frames_out),
        mean_block_us: if blocks == 0 {
            0.0
        } else {
            load(&stats.busy_ns) as f64 / blocks as f64 / 1000.0
        },
        max_block_us: load(&stats.max_block_ns) as f64 / 1000.0,
        errors: load(&stats.errors),
        restarts: stats.restarts.load(Ordering::Relaxed),
        gaps: load(&stats.gaps),
        gap_frames: load(&stats.gap_frames),
        dropped_frames: load(&stats.dropped_frames),
        stuck_frames,
        latency_ms_mean: (latency_blocks > 0)
            .then(|| load(&stats.latency_sum_us) as f64 / latency_blocks as f64 / 1000.0),
        latency_ms_max: (latency_blocks > 0).then(|| load(&stats.latency_max_us) as f64 / 1000.0),
        abandoned_calls: r.abandoned.clone(),
        isolated: c.isolation().is_some(),
        limits_applied_with: c
            .isolation()
            .filter(|i| i.limits != crate::config::Limits::default())
            .map(|_| "setrlimit"),
        stats: stats.plugin.snapshot(),
    }
}

fn storage_summary(plan: &Plan, stage: String, r: Result<StorageReport, String>) -> StorageSummary {
    let rate = plan
        .stages
        .iter()
        .find(|s| s.id == stage)
        .and_then(|s| s.input_formats.first())
        .map_or(plan.file.sample_rate, |f| f.sample_rate);
    let rate = f64::from(rate.max(1));
    match r {
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
    }
}
