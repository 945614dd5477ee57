//! The CleanupCoordinator's plan for a run: stop captures → verify they stopped → drain the
//! edges in dependency order → finalise storage (always, whatever failed before) → release the
//! plugins (captures first, storage last). Each step is a named function.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tapeline_plugin_api::abi::{PluginError, StorageReport};
use tapeline_plugin_api::PluginKind;

use super::running::{Running, StageRun};
use super::stage_loop::StageExit;
use crate::config::parse::Policy;
use crate::discipline::buffers::EdgeStats;
use crate::discipline::cleanup::{CleanupCoordinator, StepReport};
use crate::discipline::state_machine::State;

/// Why a cleanup step did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CleanupError {
    #[error("still running: {}", .0.join(", "))]
    StillRunning(Vec<String>),
    #[error("{drained} processing stage(s) drained; left behind, stuck in a plugin call: {}", .stuck.join(", "))]
    LeftBehind { drained: usize, stuck: Vec<String> },
    #[error("{}", .0.join("; "))]
    NotFinalised(Vec<String>),
}

/// What cleanup leaves for the summary.
#[derive(Default)]
pub struct Cleaned {
    pub steps: Vec<StepReport>,
    /// Each storage stage's report (or why it has none).
    pub storage: Vec<(String, Result<StorageReport, String>)>,
    /// Storage that failed to finalise: the run failed.
    pub finalize_errors: Vec<(usize, PluginError)>,
}

struct Cx<'g, 'p> {
    g: RefCell<&'g mut Running<'p>>,
    interrupts: &'g AtomicU32,
    /// Instances handed back by their threads, dropped by the last step.
    released: RefCell<Vec<(PluginKind, Box<dyn Send>)>>,
    out: RefCell<Cleaned>,
}

/// Run the plan.
pub fn clean_up(g: &mut Running, interrupts: &AtomicU32) -> Cleaned {
    let cx = Cx {
        g: RefCell::new(g),
        interrupts,
        released: RefCell::new(Vec::new()),
        out: RefCell::new(Cleaned::default()),
    };
    let mut plan = CleanupCoordinator::new();
    plan.step("stop captures", &[], false, 1, Duration::ZERO, || {
        stop_captures(&cx)
    })
    // Looked at every millisecond for up to 5 s: a capture that has just sent its end is
    // usually a few microseconds from returning (a 100 ms retry made 1 short file job in 8
    // take 100 ms longer).
    .step(
        "verify captures stopped",
        &["stop captures"],
        false,
        5000,
        Duration::from_millis(1),
        || verify_captures_stopped(&cx),
    )
    .step(
        "drain edges",
        &["verify captures stopped"],
        true,
        1,
        Duration::ZERO,
        || drain_edges(&cx),
    )
    .step(
        "finalise storage",
        &["drain edges"],
        true,
        1,
        Duration::ZERO,
        || finalise_storage(&cx),
    )
    .step(
        "release plugins",
        &["finalise storage"],
        true,
        1,
        Duration::ZERO,
        || release_plugins(&cx),
    );
    let steps = plan.run();
    let mut out = cx.out.into_inner();
    out.steps = steps;
    out
}

fn stop_captures(cx: &Cx) -> Result<String, CleanupError> {
    cx.g.borrow().stop.stop_captures();
    Ok("stop requested".into())
}

fn verify_captures_stopped(cx: &Cx) -> Result<String, CleanupError> {
    let g = cx.g.borrow();
    let running = |r: &&StageRun| {
        r.component.who.kind == PluginKind::Capture
            && r.handle.as_ref().is_some_and(|h| !h.is_finished())
    };
    // A capture stuck in a plugin call will not return: it is left behind.
    let stuck = |r: &&StageRun| r.stuck || stuck_in_call(&g, r);
    let ids = |keep: &dyn Fn(&&StageRun) -> bool| -> Vec<String> {
        g.stages
            .iter()
            .filter(|r| running(r) && keep(r))
            .map(|r| r.component.who.id.clone())
            .collect()
    };
    let (waiting, left) = (ids(&|r| !stuck(r)), ids(&stuck));
    match (waiting.is_empty(), left.is_empty()) {
        (true, true) => Ok("every capture thread has returned".into()),
        (true, false) => Ok(format!(
            "every capture thread has returned but {}, stuck in a plugin call",
            left.join(", ")
        )),
        _ => Err(CleanupError::StillRunning(waiting)),
    }
}

fn stuck_in_call(g: &Running, r: &StageRun) -> bool {
    let now = g.epoch.elapsed().as_micros() as u64;
    let stall_us = g.plan.file.stall_timeout_ms.saturating_mul(1000);
    r.component
        .stats
        .in_call()
        .is_some_and(|(_, since)| now.saturating_sub(since) > stall_us)
}

fn drain_edges(cx: &Cx) -> Result<String, CleanupError> {
    let fast = cx.interrupts.load(Ordering::Relaxed) >= 2;
    let mut g = cx.g.borrow_mut();
    let capture_alive = g.stages.iter().any(|r| {
        r.component.who.kind == PluginKind::Capture
            && r.handle.as_ref().is_some_and(|h| !h.is_finished())
    });
    if fast || capture_alive {
        // A capture that will not stop would keep its consumers waiting forever.
        g.stop.abandon();
    }
    let (mut drained, mut stuck) = (0, Vec::new());
    for i in 0..g.stages.len() {
        match g.stages[i].component.who.kind {
            PluginKind::Capture => {
                let r = &mut g.stages[i];
                if r.handle.as_ref().is_some_and(JoinHandle::is_finished) {
                    let exit = r.handle.take().map(JoinHandle::join);
                    keep(cx, r, exit.and_then(Result::ok));
                    r.component.wind_down(State::Flushing, "stopped");
                }
            }
            PluginKind::Process if g.stages[i].handle.is_none() => {}
            PluginKind::Process => match join_watching(&mut g, i, cx.interrupts) {
                Some(exit) => {
                    let r = &g.stages[i];
                    keep(cx, r, exit);
                    r.component.wind_down(State::Flushing, "drained");
                    drained += 1;
                }
                None => stuck.push(g.stages[i].component.who.id.clone()),
            },
            PluginKind::Storage => {}
        }
    }
    if stuck.is_empty() {
        Ok(format!(
            "{drained} processing stage(s) drained in dependency order"
        ))
    } else {
        Err(CleanupError::LeftBehind { drained, stuck })
    }
}

fn finalise_storage(cx: &Cx) -> Result<String, CleanupError> {
    let mut g = cx.g.borrow_mut();
    let mut problems = Vec::new();
    let mut finalised = 0;
    for i in 0..g.stages.len() {
        if g.stages[i].component.who.kind != PluginKind::Storage || g.stages[i].handle.is_none() {
            continue;
        }
        let id = g.stages[i].component.who.id.clone();
        let Some(exit) = join_watching(&mut g, i, cx.interrupts) else {
            problems.push(format!(
                "{id}: stuck in a plugin call, not finalised (its file may need `tapeline repair`)"
            ));
            continue;
        };
        let Some(mut exit) = exit else {
            problems.push(format!("{id}: the storage thread panicked"));
            continue;
        };
        let mut out = cx.out.borrow_mut();
        match exit.report.take() {
            Some(Ok(report)) => out.storage.push((id, Ok(report))),
            Some(Err(e)) => {
                problems.push(format!("{id}: {}", e.message()));
                out.storage.push((id, Err(e.message().to_string())));
                out.finalize_errors.push((i, e));
            }
            None => {}
        }
        finalised += 1;
        keep(cx, &g.stages[i], Some(exit));
    }
    if problems.is_empty() {
        Ok(format!("{finalised} storage stage(s) finalised"))
    } else {
        Err(CleanupError::NotFinalised(problems))
    }
}

fn release_plugins(cx: &Cx) -> Result<String, CleanupError> {
    // Dropping an instance runs the plugin's own cleanup; captures first, storage last.
    let mut all = cx.released.borrow_mut();
    let n = all.len();
    all.sort_by_key(|(kind, _)| release_rank(*kind));
    all.clear();
    for r in &cx.g.borrow().stages {
        r.component.released();
    }
    Ok(format!("{n} instance(s) released"))
}

/// Plugins are released captures first, storage last (its file is complete by then).
pub fn release_rank(kind: PluginKind) -> u8 {
    match kind {
        PluginKind::Capture => 0,
        PluginKind::Process => 1,
        PluginKind::Storage => 2,
    }
}

/// Keep what a thread handed back for the "release plugins" step.
fn keep(cx: &Cx, r: &StageRun, exit: Option<StageExit>) {
    if let Some(instance) = exit.and_then(|e| e.instance) {
        cx.released
            .borrow_mut()
            .push((r.component.who.kind, instance));
    }
}

/// Wait for stage `i`'s thread to return while draining; a second interrupt arriving meanwhile
/// turns the drain into a fast stop (consumers drop what is queued, counted as `shutdown`). A
/// thread stuck in one plugin call for longer than `stall_timeout_ms` is not waited for
/// (`None`): the others stop waiting for it (fast stop), and it ends with the process. Inner
/// `None`: the thread panicked.
fn join_watching(g: &mut Running, i: usize, interrupts: &AtomicU32) -> Option<Option<StageExit>> {
    let inputs: Vec<Arc<EdgeStats>> = g.plan.stages[i]
        .inputs
        .iter()
        .map(|&e| g.edges[e].clone())
        .collect();
    loop {
        let r = &g.stages[i];
        let Some(h) = &r.handle else {
            return Some(None);
        };
        if h.is_finished() {
            break;
        }
        if interrupts.load(Ordering::Relaxed) >= 2 {
            g.stop.abandon();
        }
        // The watchdog keeps watching while the graph drains: a stage stuck (here or
        // downstream) under `restart` is given up and replaced, or this wait would never end.
        g.watch();
        let r = &g.stages[i];
        // Given up and replaced (restart), or killed with its process (isolated).
        let replaced_soon = r.component.on_error_policy().policy == Policy::Restart
            || r.component.isolation().is_some();
        if !replaced_soon && stuck_in_call(g, r) {
            g.stop.abandon();
            for e in &inputs {
                e.close();
            }
            g.stages[i].stuck = true;
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let joined = g.stages[i].handle.take().map(JoinHandle::join);
    Some(joined.and_then(Result::ok))
}
