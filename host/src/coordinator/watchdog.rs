//! The watchdog: a stage inside one plugin call for longer than `stall_timeout_ms` is stalled.
//! Reported once per call, by stage id and plugin name, and handled by the stage's policy:
//! `fail` ends the run, `restart` rebuilds the instance once the call returns, `ignore` only
//! reports it. Under `restart`, a call that has not returned after
//! [`ABANDON_AFTER_TIMEOUTS`] timeouts is given up: its thread is left behind, the stage's edges
//! go to a fresh thread with a fresh instance, and the run goes on.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tapeline_plugin_api::abi::PluginError;
use tapeline_plugin_api::PluginKind;

use super::policy::Severity;
use super::run_error::{RunError, StageFault};
use super::running::{AbandonedCall, Running};
use super::stage_io::IoSlot;
use super::stage_loop::Begin;
use super::stage_stats::Call;
use crate::config::parse::{PipelineFile, Policy};

/// Under `restart`, a call is given up once it has lasted this many `stall_timeout_ms`.
pub const ABANDON_AFTER_TIMEOUTS: u64 = 4;

pub struct Watchdog {
    stall_us: u64,
    /// The call start (µs + 1) each stage was last reported stalled in: one report per call.
    reported: Vec<u64>,
}

impl Watchdog {
    pub fn new(file: &PipelineFile, stages: usize) -> Self {
        Watchdog {
            stall_us: file.stall_timeout_ms.saturating_mul(1000),
            reported: vec![0; stages],
        }
    }

    /// Look at every stage; a stall under `fail` is returned as the run's failure.
    pub fn check(g: &mut Running) -> Option<RunError> {
        let now = g.epoch.elapsed().as_micros() as u64;
        let stall_us = g.watchdog().stall_us;
        for i in 0..g.stages.len() {
            let Some((call, since)) = g.stages[i].component.stats.in_call() else {
                continue;
            };
            let lasted = now.saturating_sub(since);
            if lasted <= stall_us {
                continue;
            }
            let policy = g.stages[i].component.on_error_policy().policy;
            if g.watchdog().reported[i] != since + 1 {
                g.watchdog().reported[i] = since + 1;
                if let Some(failure) = stalled(g, i, call, lasted) {
                    return Some(failure);
                }
            } else if policy == Policy::Restart
                && g.stages[i].component.isolation().is_none()
                && lasted > stall_us * ABANDON_AFTER_TIMEOUTS
            {
                abandon(g, i, call, lasted);
            }
        }
        None
    }
}

/// Report a stall and apply the policy; `Some` under `fail`.
fn stalled(g: &mut Running, i: usize, call: Call, lasted_us: u64) -> Option<RunError> {
    let c = g.stages[i].component.clone();
    let message = format!(
        "stalled: inside `{}` of plugin `{}` for {} ms (stall_timeout_ms = {})",
        call.as_str(),
        c.who.plugin,
        lasted_us / 1000,
        g.plan.file.stall_timeout_ms
    );
    let severity = c.severity();
    let at_ms = g.epoch.elapsed().as_millis() as u64;
    g.log.note(&c, severity, "stalled", &message, at_ms);
    c.stats.errors.fetch_add(1, Ordering::Relaxed);
    if let Some(iso) = c.isolation() {
        // Its own process: killed, the call returns a `crashed` error, and the policy applies.
        iso.kill_stuck();
        return None;
    }
    match c.on_error_policy().policy {
        Policy::Fail => {
            c.stalled_fatally(&message);
            g.stages[i].stuck = true;
            // Nothing may wait for this stage any more: downstream stops waiting for its
            // output, upstream for room in its inputs.
            g.stop.abandon();
            for &e in &g.plan.stages[i].inputs {
                g.edges[e].close();
            }
            Some(RunError {
                stage: i,
                fault: StageFault::Stalled(message),
            })
        }
        Policy::Restart => {
            c.stats.restart_after_stall.store(true, Ordering::Release);
            None
        }
        Policy::Ignore => None,
    }
}

/// Give a stuck call up: its edges (and the frames it had taken, counted as lost) go to a
/// fresh thread, which restarts the stage by its policy.
fn abandon(g: &mut Running, i: usize, call: Call, lasted_us: u64) {
    let r = &mut g.stages[i];
    // Not parked: the call is returning right now; the thread carries on by itself.
    let Some(mut io) = r.slot.take() else {
        return;
    };
    let c = r.component.clone();
    c.stats.restart_after_stall.store(false, Ordering::Release);
    c.stats.leave();
    let lost = std::mem::take(&mut io.in_flight);
    // What a storage instance given up had written stays counted (it is never finalised).
    io.written_before.frames_written += std::mem::take(&mut io.written_now);
    match c.who.kind {
        PluginKind::Process => {
            io.count_dropped(crate::discipline::buffers::DropReason::StageError, lost)
        }
        PluginKind::Storage => {
            c.stats.dropped_frames.fetch_add(lost, Ordering::Relaxed);
        }
        PluginKind::Capture => {}
    }
    let thread = format!("tapeline-{}", c.who.id);
    let message = format!(
        "gave up `{}` of plugin `{}` after {} ms: thread `{thread}` is left behind in it, \
         {lost} frame(s) it held are lost; a fresh instance goes on",
        call.as_str(),
        c.who.plugin,
        lasted_us / 1000
    );
    g.log.note(
        &c,
        Severity::Recoverable,
        "abandoned",
        &message,
        g.epoch.elapsed().as_millis() as u64,
    );
    r.abandoned.push(AbandonedCall {
        call: call.as_str().to_string(),
        thread,
        at_ms: g.epoch.elapsed().as_millis() as u64,
        after_ms: lasted_us / 1000,
        lost_frames: lost,
    });
    r.slot = Arc::new(IoSlot::new(io));
    // The old thread is detached: it ends (touching nothing shared) if its call ever returns.
    drop(r.handle.take());
    if let Err(e) = g.spawn(i, Begin::Replace(PluginError::other(message))) {
        // Reported to the coordinator as the stage's fatal error, like any other.
        c.give_up::<()>(e);
    }
}
