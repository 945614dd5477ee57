//! Running a checked [`Plan`]: the coordinator builds every stage, starts them in dependency
//! order (storage, then processing, then captures), waits for the sources to end, a duration, a
//! signal or a failure, then cleans up in order and reports.

pub mod monitor;
pub mod stage;
pub mod summary;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, RecvTimeoutError};
use tapeline_plugin_api::abi::{CaptureBox, PluginError, ProcessorBox, StorageBox, StorageReport};
use tapeline_plugin_api::PluginKind;

use crate::config::parse::Policy;
use crate::config::{Plan, WhenFull};
use crate::discipline::buffers::{self, Consumer, EdgeSpec, EdgeStats, Producer};
use crate::discipline::cleanup::{CleanupCoordinator, StepOutcome};
use crate::discipline::state_machine::{State, StateMachine};
use stage::{Event, Factory, Severity, StageCtx, StageStats, Stop};
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

/// Why the run failed: the stage, a kind (a plugin error kind, or `stalled`) and the message.
pub(crate) type Failure = (usize, String, String);

fn failure_of(stage: usize, e: &PluginError) -> Failure {
    (stage, e.kind.as_str().to_string(), e.message().to_string())
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

/// A plugin instance handed back by its thread, dropped by the "release plugins" step.
enum Instance {
    Capture(#[allow(dead_code)] CaptureBox),
    Processor(#[allow(dead_code)] ProcessorBox),
    Storage(#[allow(dead_code)] StorageBox),
}

/// A stage's instance, built and (for a capture) started, before its thread runs.
enum Built {
    Capture(CaptureBox),
    Processor(ProcessorBox),
    Storage(StorageBox),
}

enum Handle {
    Capture(JoinHandle<Option<CaptureBox>>),
    Processor(JoinHandle<Option<ProcessorBox>>),
    Storage(JoinHandle<(Option<StorageBox>, Result<StorageReport, PluginError>)>),
}

struct Running {
    id: String,
    kind: PluginKind,
    sm: Arc<StateMachine>,
    stats: Arc<StageStats>,
    handle: Option<Handle>,
    /// A finite capture's length, asked before it starts.
    length_frames: Option<u64>,
    /// The stage's thread is stuck in a plugin call; cleanup does not wait for it.
    stalled: bool,
}

/// Run `plan` to the end. Returns the summary; `summary.failed()` tells whether it failed.
pub fn run(plan: &Plan, options: &RunOptions) -> RunSummary {
    let epoch = Instant::now();
    let pipeline = Arc::new(StateMachine::new("pipeline"));
    let _ = pipeline.transition(State::Loaded, "plugins found");
    let stop = Arc::new(Stop::default());
    let (events_tx, events_rx) = unbounded::<Event>();
    let base_dir = plan.base_dir.to_string_lossy().to_string();

    // Edges: every queue and its pool, allocated before anything starts.
    let mut producers: Vec<Vec<Vec<Producer>>> = plan
        .stages
        .iter()
        .map(|s| s.outputs.iter().map(|_| Vec::new()).collect())
        .collect();
    let mut consumers: Vec<Vec<Option<Consumer>>> = plan
        .stages
        .iter()
        .map(|s| s.inputs.iter().map(|_| None).collect())
        .collect();
    let mut edge_stats: Vec<Arc<EdgeStats>> = Vec::new();
    for (n, e) in plan.edges.iter().enumerate() {
        let (p, c, stats) = buffers::edge(EdgeSpec {
            label: e.label.clone(),
            channels: e.format.channels,
            max_frames: e.max_frames,
            capacity_blocks: e.capacity_blocks,
            when_full: match e.when_full {
                WhenFull::Block => buffers::WhenFull::Block,
                WhenFull::DropOldest => buffers::WhenFull::DropOldest,
                WhenFull::DropNewest => buffers::WhenFull::DropNewest,
            },
        });
        producers[e.from][e.from_port].push(p);
        let slot = plan.stages[e.to]
            .inputs
            .iter()
            .position(|&i| i == n)
            .unwrap_or(0);
        consumers[e.to][slot] = Some(c);
        edge_stats.push(stats);
    }

    let mut stages: Vec<Running> = plan
        .stages
        .iter()
        .map(|s| {
            let sm = Arc::new(StateMachine::new(s.id.clone()));
            let _ = sm.transition(
                State::Loaded,
                format!(
                    "plugin `{}` from {}",
                    s.entry.name(),
                    s.entry.library.display()
                ),
            );
            Running {
                id: s.id.clone(),
                kind: s.kind,
                sm,
                stats: Arc::new(StageStats::default()),
                handle: None,
                length_frames: None,
                stalled: false,
            }
        })
        .collect();

    // Start order: storage, then processing, then captures; within a kind, downstream first.
    let mut order: Vec<usize> = (0..plan.stages.len()).collect();
    order.sort_by_key(|&i| {
        let rank = match plan.stages[i].kind {
            PluginKind::Storage => 0,
            PluginKind::Process => 1,
            PluginKind::Capture => 2,
        };
        (rank, std::cmp::Reverse(i))
    });
    let _ = pipeline.transition(State::Configured, "plan checked");
    let _ = pipeline.transition(State::Starting, "starting stages");
    let mut start_error: Option<(usize, PluginError)> = None;
    let mut errors: Vec<summary::ErrorRecord> = Vec::new();
    for &i in &order {
        let s = &plan.stages[i];
        let r = &mut stages[i];
        let factory = Factory {
            module: s.entry.module,
            plugin: s.entry.name().to_string(),
            config: s.config.clone(),
            id: s.id.clone(),
            base_dir: base_dir.clone(),
            inputs: s.input_formats.clone(),
            sample_rate: plan.file.sample_rate,
            block_frames: plan.file.block_frames,
        };
        let ctx = StageCtx {
            index: i,
            factory,
            on_error: s.on_error.clone(),
            sm: r.sm.clone(),
            stats: r.stats.clone(),
            stop: stop.clone(),
            events: events_tx.clone(),
            epoch,
            stall_timeout_ms: plan.file.stall_timeout_ms,
            capture: s.kind == PluginKind::Capture,
        };
        let outs = std::mem::take(&mut producers[i]);
        let ins: Vec<Consumer> = consumers[i].iter_mut().filter_map(Option::take).collect();
        let name = format!("tapeline-{}", s.id);
        // Build (and start, for a capture) the instance; under `restart` a failure is retried
        // with the stage's backoff, as a failure while running would be.
        let attempt = || -> Result<Built, PluginError> {
            match s.kind {
                PluginKind::Capture => build(&r.sm, || ctx.factory.capture()).and_then(|mut c| {
                    let mut failure = None;
                    let started = r.sm.transition_with(State::Starting, "starting", || {
                        c.start().into_result().map_err(|e| {
                            let message = e.message().to_string();
                            failure = Some(e);
                            message
                        })
                    });
                    match started {
                        Ok(()) => Ok(Built::Capture(c)),
                        Err(e) => Err(failure.unwrap_or_else(|| PluginError::other(e.to_string()))),
                    }
                }),
                PluginKind::Process => {
                    build(&r.sm, || ctx.factory.processor()).map(Built::Processor)
                }
                PluginKind::Storage => build(&r.sm, || ctx.factory.storage()).map(Built::Storage),
            }
        };
        let mut built = attempt();
        while let Err(e) = &built {
            let tries = r.stats.restarts.load(Ordering::Relaxed);
            let retry = s.on_error.policy == Policy::Restart && tries < s.on_error.max_restarts;
            let severity = if retry {
                Severity::Recoverable
            } else {
                Severity::Fatal
            };
            r.stats.errors.fetch_add(1, Ordering::Relaxed);
            note_error(&mut errors, plan, epoch, i, severity, e);
            if !retry {
                break;
            }
            r.stats.restarts.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(
                Duration::from_millis(s.on_error.backoff_ms.saturating_mul(1 << tries.min(16)))
                    .min(stage::MAX_BACKOFF),
            );
            built = attempt();
        }
        let spawned =
            built.and_then(|b| match b {
                Built::Capture(c) => {
                    r.length_frames = c.length_frames().into_option();
                    let channels = s.outputs.first().map_or(1, |p| p.format.channels);
                    let outs = outs.into_iter().next().unwrap_or_default();
                    // Running before the thread exists: a quick stage may reach `stopping` before
                    // this thread would get to say so.
                    let _ = r.sm.transition(State::Running, "thread started");
                    spawn(&name, move || stage::run_capture(ctx, c, channels, outs))
                        .map(Handle::Capture)
                }
                Built::Processor(p) => {
                    let _ = r.sm.transition(State::Starting, "starting");
                    // The plan settles every port's size (never 0).
                    let ports = s.outputs.iter().map(|o| (o.format, o.max_frames)).collect();
                    let formats = s.input_formats.clone();
                    // Running before the thread exists: a quick stage may reach `stopping` before
                    // this thread would get to say so.
                    let _ = r.sm.transition(State::Running, "thread started");
                    spawn(&name, move || {
                        stage::run_processor(ctx, p, ins, formats, ports, outs)
                    })
                    .map(Handle::Processor)
                }
                Built::Storage(st) => {
                    let _ = r.sm.transition(State::Starting, "starting");
                    let format = s.input_formats.first().copied().unwrap_or(
                        tapeline_plugin_api::PortFormat {
                            channels: 1,
                            sample_rate: plan.file.sample_rate,
                        },
                    );
                    let input = ins.into_iter().next();
                    let input = input
                        .ok_or_else(|| PluginError::other("storage stage without an input edge"))?;
                    // Running before the thread exists: a quick stage may reach `stopping` before
                    // this thread would get to say so.
                    let _ = r.sm.transition(State::Running, "thread started");
                    spawn(&name, move || stage::run_storage(ctx, st, input, format))
                        .map(Handle::Storage)
                }
            });
        match spawned {
            Ok(h) => r.handle = Some(h),
            Err(e) => {
                let _ = r.sm.transition(State::Failed, e.message());
                start_error = Some((i, e));
                break;
            }
        }
    }
    drop(producers);
    drop(consumers);
    drop(events_tx);

    // The run loop: wait for the end, a failure, a deadline or a signal.
    let mut failure: Option<Failure> = start_error.map(|(i, e)| failure_of(i, &e));
    let monitor = monitor::Monitor::new(
        plan.file.sample_rate,
        plan.file.block_frames,
        stages
            .iter()
            .zip(&plan.stages)
            .map(|(r, s)| monitor::Watched {
                id: r.id.clone(),
                plugin: s.entry.name().to_string(),
                kind: r.kind.as_str().to_string(),
                sm: r.sm.clone(),
                stats: r.stats.clone(),
                length_frames: r.length_frames,
            })
            .collect(),
        edge_stats.clone(),
    );
    let interval = Duration::from_millis(plan.file.monitor_interval_ms.max(1));
    let mut next_log = epoch.elapsed() + interval;
    // Monitoring runs on its own thread, through the run and its cleanup (drains can be long).
    let monitoring = monitor::spawn(
        monitor,
        pipeline.clone(),
        options.monitor.clone(),
        interval,
        epoch,
    );
    // The call start (µs) each stage was last reported stalled in, so one stall is reported once.
    let mut stall_reported: Vec<u64> = vec![0; stages.len()];
    // Transitions already written to the log, per stage.
    let mut logged: Vec<usize> = vec![0; stages.len()];
    tracing::info!(
        pipeline = plan.file.name.as_deref().unwrap_or(""),
        stages = plan.stages.len(),
        edges = plan.edges.len(),
        "run started"
    );
    let mut reason = if failure.is_some() {
        let _ = pipeline.transition(State::Failed, "a stage failed to start");
        EndReason::Failed
    } else {
        let _ = pipeline.transition(State::Running, "all stages running");
        let captures: Vec<usize> = (0..stages.len())
            .filter(|&i| stages[i].kind == PluginKind::Capture)
            .collect();
        let mut ended = 0;
        loop {
            if options.interrupts.load(Ordering::Relaxed) > 0 {
                break EndReason::Interrupted;
            }
            if epoch.elapsed() >= next_log {
                next_log += interval;
                log_transitions(plan, &stages, &mut logged);
            }
            if let Some(f) = watchdog(
                plan,
                &mut stages,
                &edge_stats,
                &stop,
                epoch,
                &mut stall_reported,
                &mut errors,
            ) {
                failure = Some(f);
                let _ = pipeline.transition(State::Failed, "a stage stalled");
                break EndReason::Failed;
            }
            if options.duration.is_some_and(|d| epoch.elapsed() >= d) {
                break EndReason::Duration;
            }
            match events_rx.recv_timeout(Duration::from_millis(20)) {
                Ok(Event::Ended { .. }) => {
                    ended += 1;
                    if ended >= captures.len() {
                        break EndReason::SourcesEnded;
                    }
                }
                Ok(Event::Error {
                    stage,
                    severity,
                    error,
                }) => {
                    note_error(&mut errors, plan, epoch, stage, severity, &error);
                    if severity == Severity::Fatal {
                        failure = Some(failure_of(stage, &error));
                        let _ = pipeline.transition(State::Failed, "a stage failed");
                        break EndReason::Failed;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break EndReason::SourcesEnded,
            }
        }
    };
    let _ = pipeline.transition(State::Stopping, format!("{reason:?}"));

    // Ordered cleanup.
    let mut storage_reports: Vec<(String, Result<StorageReport, String>)> = Vec::new();
    let mut finalize_errors: Vec<(usize, PluginError)> = Vec::new();
    let released: std::cell::RefCell<Vec<Instance>> = std::cell::RefCell::new(Vec::new());
    let steps = {
        let stop = &stop;
        let stages = &mut stages;
        let interrupts = &options.interrupts;
        let storage_reports = &mut storage_reports;
        let finalize_errors = &mut finalize_errors;
        let released = &released;
        let fast = || interrupts.load(Ordering::Relaxed) >= 2;
        let stall_us = plan.file.stall_timeout_ms.saturating_mul(1000);
        let inputs_of = |i: usize| -> Vec<Arc<EdgeStats>> {
            plan.stages[i]
                .inputs
                .iter()
                .map(|&e| edge_stats[e].clone())
                .collect()
        };
        let cell = std::cell::RefCell::new(stages);
        let mut c = CleanupCoordinator::new();
        c.step("stop captures", &[], false, 1, Duration::ZERO, || {
            stop.captures.store(true, Ordering::SeqCst);
            Ok("stop requested".into())
        })
        .step(
            "verify captures stopped",
            &["stop captures"],
            false,
            50,
            Duration::from_millis(100),
            || {
                let stages = cell.borrow();
                let running = |r: &&Running| {
                    matches!(&r.handle, Some(Handle::Capture(h)) if !h.is_finished())
                };
                // A capture stuck in a plugin call will not return: it is left behind.
                let stuck = |r: &&Running| {
                    r.stalled
                        || r.stats.in_call().is_some_and(|(_, since)| {
                            now_us(epoch).saturating_sub(since) > stall_us
                        })
                };
                let waiting: Vec<&str> = stages
                    .iter()
                    .filter(|r| running(r) && !stuck(r))
                    .map(|r| r.id.as_str())
                    .collect();
                let left: Vec<&str> = stages
                    .iter()
                    .filter(|r| running(r) && stuck(r))
                    .map(|r| r.id.as_str())
                    .collect();
                match (waiting.is_empty(), left.is_empty()) {
                    (true, true) => Ok("every capture thread has returned".into()),
                    (true, false) => Ok(format!(
                        "every capture thread has returned but {}, stuck in a plugin call",
                        left.join(", ")
                    )),
                    _ => Err(format!("still running: {}", waiting.join(", "))),
                }
            },
        )
        .step(
            "drain edges",
            &["verify captures stopped"],
            true,
            1,
            Duration::ZERO,
            || {
                if fast() {
                    stop.abandon.store(true, Ordering::SeqCst);
                }
                let mut stages = cell.borrow_mut();
                let mut stuck: Vec<String> = Vec::new();
                if stages
                    .iter()
                    .any(|r| matches!(&r.handle, Some(Handle::Capture(h)) if !h.is_finished()))
                {
                    // A capture that will not stop would keep its consumers waiting forever.
                    stop.abandon.store(true, Ordering::SeqCst);
                }
                let mut n = 0;
                for (i, r) in stages.iter_mut().enumerate() {
                    match r.handle.take() {
                        Some(Handle::Capture(h)) => {
                            if h.is_finished() {
                                if let Some(c) = h.join().ok().flatten() {
                                    released.borrow_mut().push(Instance::Capture(c));
                                }
                                if r.sm.state() != State::Failed {
                                    let _ = r.sm.transition(State::Flushing, "stopped");
                                }
                            }
                        }
                        Some(Handle::Processor(h)) => {
                            let inputs = inputs_of(i);
                            match join_watching(h, stop, &fast, &r.stats, &inputs, stall_us, epoch)
                            {
                                Some(joined) => {
                                    if let Some(p) = joined.ok().flatten() {
                                        released.borrow_mut().push(Instance::Processor(p));
                                    }
                                    if r.sm.state() != State::Failed {
                                        let _ = r.sm.transition(State::Flushing, "drained");
                                    }
                                    n += 1;
                                }
                                None => {
                                    r.stalled = true;
                                    stuck.push(r.id.clone());
                                }
                            }
                        }
                        other => r.handle = other,
                    }
                }
                if stuck.is_empty() {
                    Ok(format!(
                        "{n} processing stage(s) drained in dependency order"
                    ))
                } else {
                    Err(format!(
                        "{n} processing stage(s) drained; left behind, stuck in a plugin call: {}",
                        stuck.join(", ")
                    ))
                }
            },
        )
        .step(
            "finalise storage",
            &["drain edges"],
            true,
            1,
            Duration::ZERO,
            || {
                let mut stages = cell.borrow_mut();
                let mut problems = Vec::new();
                for (i, r) in stages.iter_mut().enumerate() {
                    if let Some(Handle::Storage(h)) = r.handle.take() {
                        let inputs = inputs_of(i);
                        let Some(joined) =
                            join_watching(h, stop, &fast, &r.stats, &inputs, stall_us, epoch)
                        else {
                            r.stalled = true;
                            problems.push(format!(
                                "{}: stuck in a plugin call, not finalised (its file may need \
                                 `tapeline repair`)",
                                r.id
                            ));
                            continue;
                        };
                        match joined {
                            Ok((instance, report)) => {
                                if let Some(st) = instance {
                                    released.borrow_mut().push(Instance::Storage(st));
                                }
                                if let Err(e) = &report {
                                    problems.push(format!("{}: {}", r.id, e.message()));
                                    finalize_errors.push((i, e.clone()));
                                }
                                storage_reports.push((
                                    r.id.clone(),
                                    report.map_err(|e| e.message().to_string()),
                                ));
                            }
                            Err(_) => {
                                problems.push(format!("{}: the storage thread panicked", r.id))
                            }
                        }
                    }
                }
                if problems.is_empty() {
                    Ok(format!(
                        "{} storage stage(s) finalised",
                        storage_reports.len()
                    ))
                } else {
                    Err(problems.join("; "))
                }
            },
        )
        .step(
            "release plugins",
            &["finalise storage"],
            true,
            1,
            Duration::ZERO,
            || {
                // Dropping an instance runs the plugin's own cleanup; captures first, storage last.
                let mut all = released.borrow_mut();
                let n = all.len();
                all.sort_by_key(|i| match i {
                    Instance::Capture(_) => 0,
                    Instance::Processor(_) => 1,
                    Instance::Storage(_) => 2,
                });
                all.clear();
                for r in cell.borrow().iter() {
                    if r.sm.state() == State::Flushing {
                        let _ = r.sm.transition(State::Stopped, "released");
                    }
                }
                Ok(format!("{n} instance(s) released"))
            },
        );
        c.run()
    };
    // Errors that arrived while stopping, and storage that could not be finalised.
    for (i, e) in finalize_errors {
        note_error(&mut errors, plan, epoch, i, Severity::Fatal, &e);
        if failure.is_none() {
            failure = Some(failure_of(i, &e));
        }
    }
    while let Ok(ev) = events_rx.try_recv() {
        if let Event::Error {
            stage,
            severity,
            error,
        } = ev
        {
            note_error(&mut errors, plan, epoch, stage, severity, &error);
            if severity == Severity::Fatal && failure.is_none() {
                failure = Some(failure_of(stage, &error));
            }
        }
    }
    // A failure reported after the sources had ended (a race between a stage's error and the
    // end of its input) still makes the run a failed one.
    if failure.is_some() && reason != EndReason::Failed {
        reason = EndReason::Failed;
        let _ = pipeline.transition(State::Failed, "a stage failed");
    }
    if pipeline.state() == State::Stopping {
        let _ = pipeline.transition(State::Flushing, "cleanup done");
        let _ = pipeline.transition(State::Stopped, "done");
    }
    log_transitions(plan, &stages, &mut logged);
    for step in &steps {
        let (outcome, detail) = match &step.outcome {
            StepOutcome::Ok(d) => ("ok", d),
            StepOutcome::Failed(d) => ("failed", d),
            StepOutcome::Skipped(d) => ("skipped", d),
        };
        tracing::info!(step = %step.name, outcome, detail = %detail, "cleanup step");
    }
    tracing::info!(
        end = reason.as_words(),
        seconds = epoch.elapsed().as_secs_f64(),
        "run ended"
    );
    // The last snapshot: the state everything ended in.
    let totals = monitoring.finish();
    summary::build(
        plan,
        &pipeline,
        &stages_summary(&stages),
        &edge_stats,
        steps,
        storage_reports,
        reason,
        failure,
        epoch.elapsed(),
        errors,
        totals,
    )
}

/// Log the state changes of every stage since the last call (from the coordinator's thread:
/// stage threads do not log).
fn log_transitions(plan: &Plan, stages: &[Running], logged: &mut [usize]) {
    for (i, r) in stages.iter().enumerate() {
        let history = r.sm.history();
        for t in history.iter().skip(logged[i]) {
            tracing::info!(
                stage_id = %r.id,
                plugin = %plan.stages[i].entry.name(),
                kind = r.kind.as_str(),
                from = t.from.as_str(),
                to = t.to.as_str(),
                at_ms = t.at_ms,
                seq = t.seq,
                reason = %t.reason,
                "state"
            );
        }
        logged[i] = history.len();
    }
}

fn now_us(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

/// The watchdog: a stage inside one plugin call for longer than `stall_timeout_ms` is stalled.
/// Reported once per call, by stage id and plugin name, and handled by the stage's policy:
/// `fail` ends the run (returned), `restart` rebuilds the instance once the call returns,
/// `ignore` only reports it.
fn watchdog(
    plan: &Plan,
    stages: &mut [Running],
    edges: &[Arc<EdgeStats>],
    stop: &Stop,
    epoch: Instant,
    reported: &mut [u64],
    errors: &mut Vec<summary::ErrorRecord>,
) -> Option<Failure> {
    let now = now_us(epoch);
    let limit = plan.file.stall_timeout_ms.saturating_mul(1000);
    for (i, r) in stages.iter_mut().enumerate() {
        let Some((call, since)) = r.stats.in_call() else {
            continue;
        };
        if now.saturating_sub(since) <= limit || reported[i] == since + 1 {
            continue;
        }
        reported[i] = since + 1;
        let s = &plan.stages[i];
        let message = format!(
            "stalled: inside `{}` of plugin `{}` for {} ms (stall_timeout_ms = {})",
            call.as_str(),
            s.entry.name(),
            now.saturating_sub(since) / 1000,
            plan.file.stall_timeout_ms
        );
        let severity = match s.on_error.policy {
            Policy::Fail => Severity::Fatal,
            Policy::Restart => Severity::Recoverable,
            Policy::Ignore => Severity::Warning,
        };
        tracing::warn!(
            stage_id = %s.id,
            plugin = %s.entry.name(),
            kind = s.kind.as_str(),
            error_kind = "stalled",
            severity = severity.as_str(),
            "{message}"
        );
        errors.push(summary::ErrorRecord {
            stage: s.id.clone(),
            severity,
            kind: "stalled".to_string(),
            message: message.clone(),
            at_ms: now / 1000,
        });
        r.stats.errors.fetch_add(1, Ordering::Relaxed);
        match s.on_error.policy {
            Policy::Fail => {
                let _ = r.sm.transition(State::Failed, message.clone());
                r.stalled = true;
                // Nothing may wait for this stage any more: downstream stops waiting for its
                // output, upstream for room in its inputs.
                stop.abandon.store(true, Ordering::SeqCst);
                for &e in &s.inputs {
                    edges[e].close();
                }
                return Some((i, "stalled".to_string(), message));
            }
            Policy::Restart => r.stats.restart_after_stall.store(true, Ordering::Release),
            Policy::Ignore => {}
        }
    }
    None
}

/// Errors listed in a run summary; later ones are only counted (per stage).
const MAX_ERRORS: usize = 1000;

fn note_error(
    errors: &mut Vec<summary::ErrorRecord>,
    plan: &Plan,
    epoch: Instant,
    stage: usize,
    severity: Severity,
    error: &PluginError,
) {
    let s = &plan.stages[stage];
    if errors.len() >= MAX_ERRORS {
        // Each stage's `errors` counter still counts them all.
        return;
    }
    tracing::warn!(
        stage_id = %s.id,
        plugin = %s.entry.name(),
        kind = s.kind.as_str(),
        error_kind = error.kind.as_str(),
        severity = severity.as_str(),
        "{}",
        error.message()
    );
    errors.push(summary::ErrorRecord {
        stage: s.id.clone(),
        severity,
        kind: error.kind.as_str().to_string(),
        message: error.message().to_string(),
        at_ms: epoch.elapsed().as_millis() as u64,
    });
}

fn stages_summary(stages: &[Running]) -> Vec<summary::StageRecord> {
    stages
        .iter()
        .map(|r| summary::StageRecord {
            id: r.id.clone(),
            kind: r.kind,
            sm: r.sm.clone(),
            stats: r.stats.clone(),
            stuck: r.stalled,
        })
        .collect()
}

fn build<T>(
    sm: &StateMachine,
    f: impl FnOnce() -> Result<T, PluginError>,
) -> Result<T, PluginError> {
    let t = f()?;
    let _ = sm.transition(State::Configured, "instance built");
    Ok(t)
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, PluginError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| PluginError::other(format!("cannot start a thread: {e}")))
}

/// Wait for a stage thread to return while draining; a second interrupt arriving meanwhile turns
/// the drain into a fast stop (consumers drop what is queued, counted as `shutdown`). A thread
/// stuck in one plugin call for longer than `stall_us` is not waited for (`None`): the others
/// stop waiting for it (fast stop), and it ends with the process.
fn join_watching<T>(
    handle: std::thread::JoinHandle<T>,
    stop: &Stop,
    fast: &dyn Fn() -> bool,
    stats: &StageStats,
    inputs: &[Arc<EdgeStats>],
    stall_us: u64,
    epoch: Instant,
) -> Option<std::thread::Result<T>> {
    while !handle.is_finished() {
        if fast() {
            stop.abandon.store(true, Ordering::SeqCst);
        }
        if let Some((_, since)) = stats.in_call() {
            if now_us(epoch).saturating_sub(since) > stall_us {
                stop.abandon.store(true, Ordering::SeqCst);
                for e in inputs {
                    e.close();
                }
                return None;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Some(handle.join())
}
