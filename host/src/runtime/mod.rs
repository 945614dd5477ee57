//! Running a checked [`Plan`]: the coordinator builds every stage, starts them in dependency
//! order (storage, then processing, then captures), waits for the sources to end, a duration, a
//! signal or a failure, then cleans up in order and reports.

pub mod stage;
pub mod summary;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, RecvTimeoutError};
use tapeline_plugin_api::abi::{CaptureBox, PluginError, ProcessorBox, StorageBox, StorageReport};
use tapeline_plugin_api::PluginKind;

use crate::config::{Plan, WhenFull};
use crate::discipline::buffers::{self, Consumer, EdgeSpec, EdgeStats, Producer};
use crate::discipline::cleanup::CleanupCoordinator;
use crate::discipline::state_machine::{State, StateMachine};
use stage::{Event, Factory, Severity, StageCtx, StageStats, Stop};
pub use summary::{RunSummary, StageSummary};

/// How a run is driven from outside.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop after this long even if sources are endless.
    pub duration: Option<Duration>,
    /// Count of stop requests (SIGINT/SIGTERM): 1 = stop, 2 or more = stop fast. Storage is
    /// finalised either way.
    pub interrupts: Arc<AtomicU32>,
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

/// A plugin instance handed back by its thread, dropped by the "release plugins" step.
enum Instance {
    Capture(#[allow(dead_code)] CaptureBox),
    Processor(#[allow(dead_code)] ProcessorBox),
    Storage(#[allow(dead_code)] StorageBox),
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
        };
        let outs = std::mem::take(&mut producers[i]);
        let ins: Vec<Consumer> = consumers[i].iter_mut().filter_map(Option::take).collect();
        let name = format!("tapeline-{}", s.id);
        let spawned =
            match s.kind {
                PluginKind::Capture => build(&r.sm, || ctx.factory.capture()).and_then(|mut c| {
                    r.sm.transition_with(State::Starting, "starting", || c.start().into_result())
                        .map_err(|e| PluginError::other(e.to_string()))?;
                    let channels = s.outputs.first().map_or(1, |p| p.format.channels);
                    let outs = outs.into_iter().next().unwrap_or_default();
                    spawn(&name, move || stage::run_capture(ctx, c, channels, outs))
                        .map(Handle::Capture)
                }),
                PluginKind::Process => build(&r.sm, || ctx.factory.processor()).and_then(|p| {
                    let _ = r.sm.transition(State::Starting, "starting");
                    // The plan settles every port's size (never 0).
                    let ports = s.outputs.iter().map(|o| (o.format, o.max_frames)).collect();
                    let formats = s.input_formats.clone();
                    spawn(&name, move || {
                        stage::run_processor(ctx, p, ins, formats, ports, outs)
                    })
                    .map(Handle::Processor)
                }),
                PluginKind::Storage => build(&r.sm, || ctx.factory.storage()).and_then(|st| {
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
                    spawn(&name, move || stage::run_storage(ctx, st, input, format))
                        .map(Handle::Storage)
                }),
            };
        match spawned {
            Ok(h) => {
                r.handle = Some(h);
                let _ = r.sm.transition(State::Running, "thread started");
            }
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
    let mut errors: Vec<summary::ErrorRecord> = Vec::new();
    let mut failure: Option<(usize, PluginError)> = start_error;
    let reason = if failure.is_some() {
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
                        failure = Some((stage, error));
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
    let released: std::cell::RefCell<Vec<Instance>> = std::cell::RefCell::new(Vec::new());
    let steps = {
        let stop = &stop;
        let stages = &mut stages;
        let interrupts = &options.interrupts;
        let storage_reports = &mut storage_reports;
        let released = &released;
        let fast = || interrupts.load(Ordering::Relaxed) >= 2;
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
                let running: Vec<&str> = stages
                    .iter()
                    .filter(|r| matches!(&r.handle, Some(Handle::Capture(h)) if !h.is_finished()))
                    .map(|r| r.id.as_str())
                    .collect();
                if running.is_empty() {
                    Ok("every capture thread has returned".into())
                } else {
                    Err(format!("still running: {}", running.join(", ")))
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
                if stages
                    .iter()
                    .any(|r| matches!(&r.handle, Some(Handle::Capture(h)) if !h.is_finished()))
                {
                    // A capture that will not stop would keep its consumers waiting forever.
                    stop.abandon.store(true, Ordering::SeqCst);
                }
                let mut n = 0;
                for r in stages.iter_mut() {
                    match r.handle.take() {
                        Some(Handle::Capture(h)) => {
                            if h.is_finished() {
                                if let Some(c) = h.join().ok().flatten() {
                                    released.borrow_mut().push(Instance::Capture(c));
                                }
                                let _ = r.sm.transition(State::Flushing, "stopped");
                            }
                        }
                        Some(Handle::Processor(h)) => {
                            if let Some(p) = join_watching(h, stop, &fast).ok().flatten() {
                                released.borrow_mut().push(Instance::Processor(p));
                            }
                            let _ = r.sm.transition(State::Flushing, "drained");
                            n += 1;
                        }
                        other => r.handle = other,
                    }
                }
                Ok(format!(
                    "{n} processing stage(s) drained in dependency order"
                ))
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
                for r in stages.iter_mut() {
                    if let Some(Handle::Storage(h)) = r.handle.take() {
                        match join_watching(h, stop, &fast) {
                            Ok((instance, report)) => {
                                if let Some(st) = instance {
                                    released.borrow_mut().push(Instance::Storage(st));
                                }
                                if let Err(e) = &report {
                                    problems.push(format!("{}: {}", r.id, e.message()));
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
    // Errors that arrived while stopping.
    while let Ok(ev) = events_rx.try_recv() {
        if let Event::Error {
            stage,
            severity,
            error,
        } = ev
        {
            note_error(&mut errors, plan, epoch, stage, severity, &error);
            if severity == Severity::Fatal && failure.is_none() {
                failure = Some((stage, error));
            }
        }
    }
    if pipeline.state() == State::Stopping {
        let _ = pipeline.transition(State::Flushing, "cleanup done");
        let _ = pipeline.transition(State::Stopped, "done");
    }
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
    )
}

fn note_error(
    errors: &mut Vec<summary::ErrorRecord>,
    plan: &Plan,
    epoch: Instant,
    stage: usize,
    severity: Severity,
    error: &PluginError,
) {
    let s = &plan.stages[stage];
    tracing::warn!(stage_id = %s.id, plugin = %s.entry.name(), kind = error.kind.as_str(), ?severity, "{}", error.message());
    errors.push(summary::ErrorRecord {
        stage: s.id.clone(),
        severity,
        kind: error.kind.as_str().to_string(),
        message: error.message().to_string(),
        at_ms: epoch.elapsed().as_millis() as u64,
    });
}

fn stages_summary(
    stages: &[Running],
) -> Vec<(String, PluginKind, Arc<StateMachine>, Arc<StageStats>)> {
    stages
        .iter()
        .map(|r| (r.id.clone(), r.kind, r.sm.clone(), r.stats.clone()))
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
/// the drain into a fast stop (consumers drop what is queued, counted as `shutdown`).
fn join_watching<T>(
    handle: std::thread::JoinHandle<T>,
    stop: &Stop,
    fast: &dyn Fn() -> bool,
) -> std::thread::Result<T> {
    while !handle.is_finished() {
        if fast() {
            stop.abandon.store(true, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.join()
}
