//! The ComponentCoordinator: runs a checked [`Plan`]. Each stage is a [`component`] governed by
//! its own state machine and `on_error` policy; one [`stage_loop`] serves the three kinds; the
//! [`running`] graph starts them in dependency order and waits for the end with the
//! [`watchdog`]; the [`cleanup_plan`] stops, drains, finalises and releases in order; the
//! [`recovery_log`] and the [`summary`] say what happened.

pub mod builder;
pub mod capture_stage;
pub mod cleanup_plan;
pub mod component;
pub mod factory;
pub mod lifecycle;
pub mod monitor;
pub mod out_buffer;
pub mod plugin_stats;
pub mod policy;
pub mod process_stage;
pub mod recovery_log;
pub mod run_error;
pub mod running;
pub mod stage_io;
pub mod stage_loop;
pub mod stage_stats;
pub mod stop;
pub mod storage_stage;
pub mod summary;
pub mod watchdog;

#[cfg(test)]
mod tests;

use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Plan;
use crate::discipline::state_machine::State;
use builder::Shared;
use lifecycle::{InternalErrors, Lifecycle};
use running::Running;
pub use summary::{RunSummary, StageSummary};

/// How a run is driven from outside.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Stop after this long even if sources are endless.
    pub duration: Option<Duration>,
    /// Count of stop requests (SIGINT/SIGTERM): 1 = stop, 2 or more = stop fast. Storage is
    /// finalised either way.
    pub interrupts: Arc<AtomicU32>,
    /// Gets a snapshot every `monitor_interval_ms`, and a last one after cleanup.
    pub monitor: Option<monitor::Sink>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("duration", &self.duration)
            .field("interrupts", &self.interrupts)
            .field("monitor", &self.monitor.is_some())
            .finish()
    }
}

/// Why a run ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    SourcesEnded,
    Duration,
    Interrupted,
    Failed,
}

impl EndReason {
    /// How the summary and the log say it.
    pub fn as_words(&self) -> &'static str {
        match self {
            EndReason::SourcesEnded => "sources ended",
            EndReason::Duration => "--for duration reached",
            EndReason::Interrupted => "interrupted",
            EndReason::Failed => "failed",
        }
    }
}

/// Run `plan` to the end: build, start, wait, clean up, report. `summary.failed()` tells
/// whether it failed.
pub fn run(plan: &Plan, options: &RunOptions) -> RunSummary {
    let epoch = Instant::now();
    let internal = Arc::new(InternalErrors::default());
    let pipeline = Arc::new(Lifecycle::new("pipeline", internal.clone()));
    pipeline.enter(State::Loaded, "plugins found");
    let (events, received) = crossbeam_channel::unbounded();
    let shared = Shared {
        stop: Arc::new(crate::coordinator::stop::Stop::default()),
        events,
        epoch,
        internal: internal.clone(),
    };
    let graph = match builder::build(plan, &shared) {
        Ok(g) => g,
        Err(errors) => return summary::not_built(plan, &pipeline, errors, &internal, epoch),
    };
    drop(shared.events);
    let mut g = Running::new(
        plan,
        (graph.stages, graph.edges),
        pipeline,
        shared.stop,
        received,
        epoch,
    );
    let monitoring = monitor::spawn(monitor::Monitor::new(&g), options.monitor.clone(), epoch);
    crate::isolation::crash_note::arm(
        &outputs_folder(plan),
        plan.file.name.as_deref().unwrap_or("pipeline"),
        g.stages.iter().map(|r| r.component.clone()).collect(),
    );
    tracing::info!(
        pipeline = plan.file.name.as_deref().unwrap_or(""),
        stages = plan.stages.len(),
        edges = plan.edges.len(),
        "run started"
    );
    let mut end = match g.start(options) {
        Some(end) => end,
        None => g.wait(options),
    };
    if end == EndReason::Failed {
        g.pipeline.enter(State::Failed, "a stage failed");
    }
    g.stop.request();
    g.pipeline.enter(State::Stopping, end.as_words());
    let cleaned = cleanup_plan::clean_up(&mut g, &options.interrupts);
    end = settle(&mut g, &cleaned, end);
    let totals = monitoring.finish(&g);
    summary::build(&g, cleaned, end, totals, &internal)
}

/// Where the run's outputs go: the folder of the first storage stage's `path`, else the
/// pipeline file's (for the crash note, written before any file is reported).
fn outputs_folder(plan: &Plan) -> std::path::PathBuf {
    plan.stages
        .iter()
        .filter(|s| s.kind == tapeline_plugin_api::PluginKind::Storage)
        .filter_map(|s| serde_json::from_str::<serde_json::Value>(&s.config).ok())
        .find_map(|c| c.get("path")?.as_str().map(|p| plan.base_dir.join(p)))
        .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
        .unwrap_or_else(|| plan.base_dir.clone())
}

/// After cleanup: late errors and failed finalisation make the run a failed one; the pipeline
/// reaches `stopped`; everything is logged.
fn settle(g: &mut Running, cleaned: &cleanup_plan::Cleaned, mut end: EndReason) -> EndReason {
    // Errors the stages reported came before any finalisation failed.
    g.drain_events();
    for (i, e) in &cleaned.finalize_errors {
        let c = g.stages[*i].component.clone();
        let at_ms = g.epoch.elapsed().as_millis() as u64;
        g.log.note_plugin(&c, policy::Severity::Fatal, e, at_ms);
        if g.failure.is_none() {
            g.failure = Some(run_error::RunError {
                stage: *i,
                fault: e.into(),
            });
        }
    }
    // A failure reported after the sources had ended (a race between a stage's error and the
    // end of its input) still makes the run a failed one.
    if g.failure.is_some() && end != EndReason::Failed {
        end = EndReason::Failed;
        g.pipeline.enter(State::Failed, "a stage failed");
    }
    if g.pipeline.state() == State::Stopping {
        g.pipeline.enter(State::Flushing, "cleanup done");
        g.pipeline.enter(State::Stopped, "done");
    }
    for c in g.components() {
        c.lifecycle().check();
    }
    g.pipeline.check();
    g.log
        .log_transitions(g.stages.iter().map(|r| &*r.component));
    for step in &cleaned.steps {
        let (outcome, detail) = step.outcome.parts();
        tracing::info!(step = %step.name, outcome, detail = %detail, "cleanup step");
    }
    tracing::info!(
        end = end.as_words(),
        seconds = g.epoch.elapsed().as_secs_f64(),
        "run ended"
    );
    end
}
