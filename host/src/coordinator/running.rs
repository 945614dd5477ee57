//! The running graph: stage threads started in dependency order, the wait for the end (sources
//! ended, `--for`, a signal, a failure) with the watchdog, and every event a stage sends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde::Serialize;
use tapeline_plugin_api::abi::{PluginError, PortFormat};
use tapeline_plugin_api::PluginKind;

use super::builder::BuiltStage;
use super::capture_stage::CaptureStage;
use super::component::{Component, Event};
use super::factory::Factory;
use super::lifecycle::Lifecycle;
use super::policy::Severity;
use super::process_stage::ProcessStage;
use super::recovery_log::RecoveryLog;
use super::run_error::RunError;
use super::stage_io::IoSlot;
use super::stage_loop::{self, Begin, StageExit};
use super::stop::Stop;
use super::storage_stage::StorageStage;
use super::watchdog::Watchdog;
use super::{EndReason, RunOptions};
use crate::config::Plan;
use crate::discipline::buffers::EdgeStats;
use crate::discipline::state_machine::State;

/// How often the coordinator looks at signals, the deadline and the watchdog.
const TICK: Duration = Duration::from_millis(20);

/// A plugin call the watchdog gave up: its thread is left behind, a fresh one went on.
#[derive(Debug, Clone, Serialize)]
pub struct AbandonedCall {
    pub call: String,
    /// The thread left behind in the call.
    pub thread: String,
    /// When it was given up (ms since the run started), and how long the call had lasted.
    pub at_ms: u64,
    pub after_ms: u64,
    /// Frames the call had taken and were lost with it (counted on the stage's edges).
    pub lost_frames: u64,
}

/// One stage of the running graph.
pub struct StageRun {
    pub component: Arc<Component>,
    factory: Arc<Factory>,
    pub slot: Arc<IoSlot>,
    pub handle: Option<JoinHandle<StageExit>>,
    pub abandoned: Vec<AbandonedCall>,
    /// Left behind stuck in a plugin call at the end: cleanup did not wait for it.
    pub stuck: bool,
}

pub struct Running<'p> {
    pub plan: &'p Plan,
    pub stages: Vec<StageRun>,
    pub edges: Vec<Arc<EdgeStats>>,
    pub pipeline: Arc<Lifecycle>,
    pub stop: Arc<Stop>,
    events: Receiver<Event>,
    pub log: RecoveryLog,
    pub failure: Option<RunError>,
    pub epoch: Instant,
    watchdog: Watchdog,
    sources_ended: usize,
}

impl<'p> Running<'p> {
    pub fn new(
        plan: &'p Plan,
        built: (Vec<BuiltStage>, Vec<Arc<EdgeStats>>),
        pipeline: Arc<Lifecycle>,
        stop: Arc<Stop>,
        events: Receiver<Event>,
        epoch: Instant,
    ) -> Self {
        let stages = built
            .0
            .into_iter()
            .map(|b| StageRun {
                component: b.component,
                factory: b.factory,
                slot: b.slot,
                handle: None,
                abandoned: Vec::new(),
                stuck: false,
            })
            .collect::<Vec<_>>();
        Running {
            watchdog: Watchdog::new(&plan.file, stages.len()),
            log: RecoveryLog::new(stages.len()),
            plan,
            stages,
            edges: built.1,
            pipeline,
            stop,
            events,
            failure: None,
            epoch,
            sources_ended: 0,
        }
    }

    pub fn components(&self) -> Vec<&Component> {
        self.stages.iter().map(|r| &*r.component).collect()
    }

    /// Start every stage, storage first, then processing, then captures (downstream first
    /// within a kind), each once the one before is running. `Some` if the run ends meanwhile.
    pub fn start(&mut self, options: &RunOptions) -> Option<EndReason> {
        self.pipeline.enter(State::Configured, "plan checked");
        self.pipeline.enter(State::Starting, "starting stages");
        let kinds: Vec<PluginKind> = self.plan.stages.iter().map(|s| s.kind).collect();
        for i in start_order(&kinds) {
            if let Err(e) = self.spawn(i, Begin::Start) {
                self.fatal(i, &e);
                return Some(EndReason::Failed);
            }
            if let Some(end) = self.until_started(i, options) {
                return Some(end);
            }
        }
        None
    }

    fn until_started(&mut self, i: usize, options: &RunOptions) -> Option<EndReason> {
        loop {
            if let Some(end) = self.outside(options) {
                return Some(end);
            }
            match self.events.recv_timeout(TICK) {
                Ok(Event::Started { stage }) if stage == i => return None,
                Ok(Event::StartFailed { stage }) if stage == i => {
                    // Its fatal error came first; without one the run was stopping anyway.
                    return Some(self.end_now(EndReason::Interrupted));
                }
                Ok(ev) => {
                    if self.handle(ev) {
                        return Some(EndReason::Failed);
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.watch(),
                Err(RecvTimeoutError::Disconnected) => return Some(EndReason::Failed),
            }
            if self.failure.is_some() {
                return Some(EndReason::Failed);
            }
        }
    }

    /// Wait for the end of the run.
    pub fn wait(&mut self, options: &RunOptions) -> EndReason {
        self.pipeline.enter(State::Running, "all stages running");
        let captures = self
            .stages
            .iter()
            .filter(|r| r.component.who.kind == PluginKind::Capture)
            .count();
        let interval = Duration::from_millis(self.plan.file.monitor_interval_ms.max(1));
        let mut next_log = self.epoch.elapsed() + interval;
        loop {
            if let Some(end) = self.outside(options) {
                return end;
            }
            if self.sources_ended >= captures {
                return EndReason::SourcesEnded;
            }
            if self.epoch.elapsed() >= next_log {
                next_log += interval;
                self.log
                    .log_transitions(self.stages.iter().map(|r| &*r.component));
            }
            self.watch();
            if self.failure.is_some() {
                return EndReason::Failed;
            }
            match self.events.recv_timeout(TICK) {
                Ok(ev) => {
                    if self.handle(ev) {
                        return EndReason::Failed;
                    }
                }
                Err(RecvTimeoutError::Timeout) if self.all_threads_done() => {
                    return EndReason::SourcesEnded
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return EndReason::SourcesEnded,
            }
        }
    }

    fn all_threads_done(&self) -> bool {
        self.stages
            .iter()
            .all(|r| r.handle.as_ref().is_none_or(JoinHandle::is_finished))
    }

    /// Signals and `--for`: the reason to end, if there is one now.
    fn outside(&self, options: &RunOptions) -> Option<EndReason> {
        if options.interrupts.load(Ordering::Relaxed) > 0 {
            return Some(self.end_now(EndReason::Interrupted));
        }
        if options.duration.is_some_and(|d| self.epoch.elapsed() >= d) {
            return Some(self.end_now(EndReason::Duration));
        }
        None
    }

    /// The run ends: every wait (a restart's backoff, a start being retried) ends at once.
    fn end_now(&self, end: EndReason) -> EndReason {
        self.stop.request();
        end
    }

    /// Take in one event; true if it ends the run (a fatal error).
    pub fn handle(&mut self, ev: Event) -> bool {
        match ev {
            Event::Ended { .. } => self.sources_ended += 1,
            Event::Error {
                stage,
                severity,
                error,
                at_ms,
            } => {
                let c = self.stages[stage].component.clone();
                self.log.note_plugin(&c, severity, &error, at_ms);
                if severity == Severity::Fatal {
                    if self.failure.is_none() {
                        self.failure = Some(RunError {
                            stage,
                            fault: (&error).into(),
                        });
                    }
                    return true;
                }
            }
            Event::Started { .. } | Event::StartFailed { .. } => {}
        }
        false
    }

    /// Every event still queued (after the stage threads are done).
    pub fn drain_events(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            self.handle(ev);
        }
    }

    /// The watchdog's look at every stage.
    pub fn watch(&mut self) {
        let Some(failure) = Watchdog::check(self) else {
            return;
        };
        if self.failure.is_none() {
            self.failure = Some(failure);
        }
    }

    pub fn watchdog(&mut self) -> &mut Watchdog {
        &mut self.watchdog
    }

    fn fatal(&mut self, stage: usize, e: &PluginError) {
        let c = self.stages[stage].component.clone();
        c.give_up::<()>(e.clone());
        self.drain_events();
    }

    /// Start a thread for stage `i`: its first start, or a replacement for a given-up call.
    pub fn spawn(&mut self, i: usize, begin: Begin) -> Result<(), PluginError> {
        let s = &self.plan.stages[i];
        let r = &mut self.stages[i];
        let (c, f, slot) = (r.component.clone(), r.factory.clone(), r.slot.clone());
        let block_frames = self.plan.file.block_frames;
        let name = format!("tapeline-{}", s.id);
        let thread = std::thread::Builder::new().name(name);
        let spawned = match s.kind {
            PluginKind::Capture => {
                let channels = s.outputs.first().map_or(1, |p| p.format.channels);
                let work = CaptureStage::new(block_frames, channels);
                thread.spawn(move || stage_loop::run(&c, f.as_ref(), work, &slot, begin))
            }
            PluginKind::Process => {
                let ports = s.outputs.iter().map(|o| (o.format, o.max_frames)).collect();
                let work = ProcessStage::new(s.input_formats.clone(), ports, block_frames);
                thread.spawn(move || stage_loop::run(&c, f.as_ref(), work, &slot, begin))
            }
            PluginKind::Storage => {
                let format = s.input_formats.first().copied().unwrap_or(PortFormat {
                    channels: 1,
                    sample_rate: self.plan.file.sample_rate,
                });
                let work = StorageStage::new(format);
                thread.spawn(move || stage_loop::run(&c, f.as_ref(), work, &slot, begin))
            }
        };
        let handle =
            spawned.map_err(|e| PluginError::other(format!("cannot start a thread: {e}")))?;
        r.handle = Some(handle);
        Ok(())
    }
}

/// Storage, then processing, then captures; within a kind, downstream first (the plan lists
/// every stage after its inputs). Stages stop the other way round.
pub fn start_order(kinds: &[PluginKind]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..kinds.len()).collect();
    order.sort_by_key(|&i| {
        let rank = match kinds[i] {
            PluginKind::Storage => 0,
            PluginKind::Process => 1,
            PluginKind::Capture => 2,
        };
        (rank, std::cmp::Reverse(i))
    });
    order
}
