//! One stage as the coordinator governs it: its identity, its [`Lifecycle`] (the only place its
//! state changes), its counters, its `on_error` policy with restart window and backoff. The
//! stage thread and the coordinator share it; the plugin instance itself lives on the stage
//! thread (see `stage_loop`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;
use tapeline_plugin_api::abi::PluginError;
use tapeline_plugin_api::PluginKind;

use super::lifecycle::{InternalErrors, Lifecycle};
use super::policy::{Decision, RestartPolicy, Severity};
use super::stage_stats::{Call, StageStats};
use super::stop::{Nap, Stop};
use crate::config::parse::OnError;
use crate::discipline::state_machine::State;
use crate::isolation::proxy::Isolation;

/// What a stage thread tells the coordinator.
#[derive(Debug)]
pub enum Event {
    /// The stage's first instance is running.
    Started { stage: usize },
    /// The stage could not start (its error was reported) or stopped while retrying.
    StartFailed { stage: usize },
    /// A capture's source ended.
    Ended { stage: usize },
    /// Every error of a plugin, with its severity; `Fatal` ends the run.
    Error {
        stage: usize,
        severity: Severity,
        error: PluginError,
        /// When the stage met it, in milliseconds since the run started (the coordinator may
        /// take it in later).
        at_ms: u64,
    },
}

/// What the stage's error policy decided, with the fresh instance of a restart.
pub enum Verdict<T> {
    /// `ignore`: count the block as dropped and go on with the same instance.
    Ignore,
    /// `restart`: a fresh instance to go on with.
    Restarted(T),
    /// `fail`, or restarts exhausted: the coordinator was told.
    GaveUp,
    /// The pipeline started stopping while the stage waited to restart: it just ends.
    Stopped,
}

/// Who a stage is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub index: usize,
    pub id: String,
    pub plugin: String,
    pub kind: PluginKind,
}

/// One stage: shared by its thread and the coordinator.
#[derive(Debug)]
pub struct Component {
    pub who: Identity,
    pub stats: StageStats,
    lifecycle: Lifecycle,
    policy: RestartPolicy,
    /// Gave up (fatal): keeps `failed` as its last state, so the summary shows who ended the run.
    gave_up: AtomicBool,
    stop: Arc<Stop>,
    events: Sender<Event>,
    epoch: Instant,
    stall_timeout_ms: u64,
    /// Set for a stage whose plugin runs in its own process.
    isolation: Option<Arc<Isolation>>,
}

/// What a component is made of, besides its identity.
pub struct Setting {
    pub on_error: OnError,
    pub stop: Arc<Stop>,
    pub events: Sender<Event>,
    pub epoch: Instant,
    pub stall_timeout_ms: u64,
    pub internal: Arc<InternalErrors>,
    pub isolation: Option<Arc<Isolation>>,
}

impl Component {
    pub fn new(who: Identity, s: Setting) -> Self {
        Component {
            lifecycle: Lifecycle::new(who.id.clone(), s.internal),
            who,
            stats: StageStats::default(),
            policy: RestartPolicy::new(s.on_error),
            gave_up: AtomicBool::new(false),
            stop: s.stop,
            events: s.events,
            epoch: s.epoch,
            stall_timeout_ms: s.stall_timeout_ms,
            isolation: s.isolation,
        }
    }

    /// The stage's process, when it runs isolated.
    pub fn isolation(&self) -> Option<&Isolation> {
        self.isolation.as_deref()
    }
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }
    pub fn stop(&self) -> &Stop {
        &self.stop
    }
    pub fn epoch(&self) -> Instant {
        self.epoch
    }
    pub fn on_error_policy(&self) -> &OnError {
        self.policy.on_error()
    }
    pub fn severity(&self) -> Severity {
        self.policy.severity()
    }
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
    fn is_capture(&self) -> bool {
        self.who.kind == PluginKind::Capture
    }

    /// Tell the coordinator (errors are logged there, not on the stage thread).
    pub fn send(&self, event: Event) {
        // The coordinator holds the receiver until every stage thread has been joined or given
        // up; a thread given up (stuck in a call) that returns later has nobody to tell.
        self.events.send(event).ok();
    }

    pub fn report(&self, severity: Severity, error: PluginError) {
        self.send(Event::Error {
            stage: self.who.index,
            severity,
            error,
            at_ms: self.epoch().elapsed().as_millis() as u64,
        });
    }

    /// The plugin was found: `created → loaded`.
    pub fn loaded(&self, library: &Path) {
        let reason = format!("plugin `{}` from {}", self.who.plugin, library.display());
        self.lifecycle.enter(State::Loaded, reason);
    }

    /// Build and start the first instance: `loaded → configured → starting → running`. A
    /// failure meets the policy: `restart` retries with the backoff; otherwise (and `ignore`:
    /// a stage that never ran has nothing to ignore) it is fatal.
    pub fn start<T>(
        &self,
        build: impl Fn() -> Result<T, PluginError>,
        start: impl Fn(&mut T) -> Result<(), PluginError>,
    ) -> Option<T> {
        let rebuild = || -> Result<T, PluginError> {
            let mut t = build()?;
            start(&mut t)?;
            Ok(t)
        };
        let first = build().and_then(|mut t| {
            self.lifecycle.enter(State::Configured, "instance built");
            self.lifecycle
                .enter_with(State::Starting, "starting", || start(&mut t))
                .map(|_| t)
        });
        let error = match first {
            Ok(t) => {
                self.lifecycle.enter(State::Running, "started");
                self.policy.running(self.now_us());
                self.send(Event::Started {
                    stage: self.who.index,
                });
                return Some(t);
            }
            Err(e) => e,
        };
        let verdict = if self.policy.severity() == Severity::Warning {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            self.give_up(error)
        } else {
            self.on_error(error, rebuild)
        };
        match verdict {
            Verdict::Restarted(t) => {
                self.send(Event::Started {
                    stage: self.who.index,
                });
                Some(t)
            }
            _ => {
                self.send(Event::StartFailed {
                    stage: self.who.index,
                });
                None
            }
        }
    }

    /// Apply the stage's `on_error` policy to `error`. The error path may lock and allocate;
    /// the steady state does not reach here.
    pub fn on_error<T>(
        &self,
        error: PluginError,
        rebuild: impl Fn() -> Result<T, PluginError>,
    ) -> Verdict<T> {
        self.meet(error, rebuild, true)
    }

    /// A call the watchdog gave up (already noted by the coordinator): restart by the policy.
    pub fn replace<T>(
        &self,
        error: PluginError,
        rebuild: impl Fn() -> Result<T, PluginError>,
    ) -> Verdict<T> {
        self.meet(error, rebuild, false)
    }

    fn meet<T>(
        &self,
        error: PluginError,
        rebuild: impl Fn() -> Result<T, PluginError>,
        report: bool,
    ) -> Verdict<T> {
        // A call that failed by itself is handled once, even if the watchdog marked it stalled.
        self.stats
            .restart_after_stall
            .store(false, Ordering::Release);
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        match self.policy.decide(self.now_us()) {
            Decision::Ignore => {
                self.report(Severity::Warning, error);
                Verdict::Ignore
            }
            Decision::GiveUp { restarts } => self.give_up(exhausted(error, restarts)),
            Decision::Restart { attempt, wait } => {
                self.lifecycle.enter(State::Failed, error.message());
                if report {
                    self.report(Severity::Recoverable, error);
                }
                self.restart(attempt, wait, rebuild)
            }
        }
    }

    /// Wait, then build a fresh instance; a rebuild that fails is the next failure.
    fn restart<T>(
        &self,
        mut attempt: u32,
        mut wait: std::time::Duration,
        rebuild: impl Fn() -> Result<T, PluginError>,
    ) -> Verdict<T> {
        loop {
            self.stats.restarts.fetch_add(1, Ordering::Relaxed);
            let max = self.policy.on_error().max_restarts;
            self.lifecycle
                .enter(State::Recovering, format!("restart {attempt} of {max}"));
            match self.stop.nap(wait) {
                Nap::Abandoned => return Verdict::Stopped,
                // A capture stops producing; other stages still drain what is queued.
                Nap::Stopping if self.is_capture() => return Verdict::Stopped,
                _ => {}
            }
            let error = match rebuild() {
                Ok(t) => {
                    self.lifecycle.enter(State::Running, "restarted");
                    self.policy.running(self.now_us());
                    return Verdict::Restarted(t);
                }
                Err(e) => e,
            };
            self.lifecycle.enter(State::Failed, error.message());
            match self.policy.decide(self.now_us()) {
                Decision::Restart {
                    attempt: a,
                    wait: w,
                } => (attempt, wait) = (a, w),
                Decision::GiveUp { restarts } => return self.give_up(exhausted(error, restarts)),
                Decision::Ignore => return Verdict::Ignore,
            }
        }
    }

    /// After a plugin call returned and its result was handled (nothing it produced is lost):
    /// if the watchdog found the call stalled under `restart`, build a fresh instance now.
    pub fn after_stall<T>(
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

    /// `fail`, or restarts exhausted: the stage ends in `failed` and the run stops.
    pub fn give_up<T>(&self, error: PluginError) -> Verdict<T> {
        self.gave_up.store(true, Ordering::Release);
        if self.lifecycle.state() != State::Failed {
            self.lifecycle.enter(State::Failed, error.message());
        }
        self.report(Severity::Fatal, error);
        Verdict::GaveUp
    }

    /// The watchdog ended the run for this stage (a stall under `fail`).
    pub fn stalled_fatally(&self, message: &str) {
        self.gave_up.store(true, Ordering::Release);
        if self.lifecycle.state() != State::Failed {
            self.lifecycle.enter(State::Failed, message);
        }
    }

    /// A step towards `stopped`. A stage that gave up keeps `failed`; one stopped while it
    /// waited to restart goes `recovering → stopping` (or `failed → stopping`) first.
    pub fn wind_down(&self, to: State, reason: &str) {
        if self.gave_up.load(Ordering::Acquire) {
            return;
        }
        let now = self.lifecycle.state();
        if now == to {
            return;
        }
        if now == State::Failed || now == State::Recovering {
            self.lifecycle
                .enter(State::Stopping, "stopped while waiting to restart");
            if to == State::Stopping {
                return;
            }
        }
        self.lifecycle.enter(to, reason);
    }

    /// Released by cleanup: `flushing → stopped` (other states stay as they are: a stage that
    /// gave up, or one that never started).
    pub fn released(&self) {
        if self.lifecycle.state() == State::Flushing {
            self.lifecycle.enter(State::Stopped, "released");
        }
    }

    /// Whether the stage ended the run (fatal) rather than just stopping.
    pub fn has_given_up(&self) -> bool {
        self.gave_up.load(Ordering::Acquire)
    }
}

fn exhausted(error: PluginError, restarts: u32) -> PluginError {
    if restarts == 0 {
        return error;
    }
    let msg = format!("{} (gave up after {restarts} restart(s))", error.message());
    let mut error = error;
    error.message = msg.into();
    error
}
