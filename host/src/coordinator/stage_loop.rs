//! The one loop every stage thread runs, whatever its kind: take input, call the plugin, pass
//! the output on, and meet every failure with the stage's policy. Kinds differ only in what
//! they take, call and deliver ([`StageWork`]); how they are governed is written once, here.
//!
//! After start nothing here allocates, locks or logs on the per-block path; errors leave the
//! thread through the coordinator's event channel.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use abi_stable::std_types::{ROption, RStr};
use tapeline_plugin_api::abi::{PluginError, RawExtension, StorageReport};

use super::component::{Component, Verdict};
use super::plugin_stats::PluginStats;
use super::stage_io::{IoSlot, StageIo};
use super::stage_stats::Call;

/// What `take` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Input for one call is ready.
    Ready,
    /// Nothing arrived for a while (storage flushes then).
    Idle,
    /// Input taken and handled without a call (a stage that gave up drops it, counted).
    Skip,
    /// No more input: the stream ended or the stage is asked to stop.
    Ended,
}

/// After delivering a call's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The source ended.
    Ended,
}

/// What differs between capture, processing and storage stages.
pub trait StageWork: Send + 'static {
    /// The plugin instance.
    type Instance: Send + 'static;
    /// What builds instances (the ABI factory; a closure in unit tests).
    type Factory: Send + Sync + 'static;
    /// The plugin call [`StageWork::call`] makes, for the watchdog.
    const CALL: Call;
    /// The call the next [`StageWork::call`] makes, when it is not always [`StageWork::CALL`]
    /// (a processor's tail calls are `finish`).
    fn call_kind(&self) -> Call {
        Self::CALL
    }
    /// After giving up, keep taking input and count it dropped (storage), rather than end.
    const DRAINS_AFTER_GIVING_UP: bool = false;

    fn build(f: &Self::Factory) -> Result<Self::Instance, PluginError>;
    /// Start a built instance (a capture opens its source).
    fn start(_instance: &mut Self::Instance) -> Result<(), PluginError> {
        Ok(())
    }
    /// Take the input of one call off the edges (and set `io.in_flight`).
    fn take(&mut self, io: &mut StageIo, c: &Component, given_up: bool) -> Take;
    /// The plugin call. No access to the edges: they may be handed to another thread meanwhile.
    fn call(&mut self, instance: &mut Self::Instance, c: &Component) -> Result<(), PluginError>;
    /// Pass a successful call's output on; `t` says how long the call took and when it ended.
    fn deliver(&mut self, io: &mut StageIo, c: &Component, t: CallTime) -> Flow;
    /// The call failed: account for the input it took.
    fn lost(&mut self, io: &mut StageIo, c: &Component);
    /// The first instance is running (a capture says how long its source is).
    fn started(&mut self, _instance: &Self::Instance, _c: &Component) {}
    /// `Take::Idle`: nothing to do for a while.
    fn idle(&mut self, _instance: &mut Self::Instance, _c: &Component) {}
    /// The policy ignored a failure.
    fn ignored(&mut self, _c: &Component) {}
    /// A restart replaced `old`.
    fn replaced(&mut self, _old: Self::Instance, _io: &mut StageIo) {}
    /// The instance's extension `name` at `version` (none by default).
    fn extension(
        _instance: &Self::Instance,
        _name: RStr<'_>,
        _version: u32,
    ) -> ROption<RawExtension> {
        ROption::RNone
    }
    /// The stream is over or the stage stops: flush, finalise, stop.
    fn finish(&mut self, instance: Self::Instance, io: &mut StageIo, c: &Component) -> StageExit;
}

/// When a plugin call ran, from two clock reads (one before, one after): what the stage
/// loop hands to `deliver`, so that no stage reads the clock again per block.
#[derive(Debug, Clone, Copy)]
pub struct CallTime {
    /// How long the call took.
    pub busy: Duration,
    /// When it ended, in microseconds since the run started.
    pub end_us: u64,
}

/// How a stage thread ended.
#[derive(Default)]
pub struct StageExit {
    /// The instance, for the cleanup's "release plugins" step to drop in order.
    pub instance: Option<Box<dyn Send>>,
    /// A storage stage's report of what it wrote.
    pub report: Option<Result<StorageReport, PluginError>>,
    /// The watchdog gave this thread's call up; its edges went to another thread.
    pub abandoned: bool,
}

/// How the thread's first instance comes about.
pub enum Begin {
    /// The stage's first start.
    Start,
    /// A call of an earlier thread was given up: restart by the policy, with this error.
    Replace(PluginError),
}

/// A fresh instance, built and started.
fn rebuild<W: StageWork>(f: &W::Factory) -> Result<W::Instance, PluginError> {
    let mut i = W::build(f)?;
    W::start(&mut i)?;
    Ok(i)
}

/// The thread's first instance, as `begin` says, under the stage's policy.
fn first<W: StageWork>(c: &Component, f: &W::Factory, begin: Begin) -> Option<W::Instance> {
    match begin {
        Begin::Start => c.start(|| W::build(f), W::start),
        Begin::Replace(e) => match c.replace(e, || rebuild::<W>(f)) {
            Verdict::Restarted(i) => Some(i),
            _ => None,
        },
    }
}

/// The body of a stage thread.
pub fn run<W: StageWork>(
    c: &Component,
    f: &W::Factory,
    mut work: W,
    slot: &IoSlot,
    begin: Begin,
) -> StageExit {
    let Some(mut io) = slot.take() else {
        return StageExit::default();
    };
    c.stats.thread_id.store(
        crate::isolation::crash_note::this_thread_id(),
        Ordering::Relaxed,
    );
    let rebuild = || rebuild::<W>(f);
    // Without an instance the edges close here: producers upstream stop waiting for room.
    let Some(mut instance) = first::<W>(c, f, begin) else {
        c.wind_down(
            crate::discipline::state_machine::State::Stopping,
            "not started",
        );
        return StageExit::default();
    };
    work.started(&instance, c);
    let mut counters = PluginStats::attach::<W>(&instance, c);
    let mut given_up = false;
    loop {
        match work.take(&mut io, c, given_up) {
            Take::Ended => break,
            Take::Idle => {
                work.idle(&mut instance, c);
                continue;
            }
            Take::Skip => continue,
            Take::Ready => {}
        }
        let started = Instant::now();
        let start = started.saturating_duration_since(c.epoch());
        slot.park(io);
        let kind = work.call_kind();
        c.stats.enter_at(kind, start);
        let result = work.call(&mut instance, c);
        let Some(back) = slot.take() else {
            // Given up by the watchdog: another thread has the edges. Touch nothing shared,
            // and never call this instance again (not even to drop it).
            std::mem::forget(instance);
            return StageExit {
                abandoned: true,
                ..StageExit::default()
            };
        };
        io = back;
        c.stats.leave();
        let verdict = match result {
            Ok(()) => {
                counters.tick(c);
                let busy = started.elapsed();
                let end_us = (start + busy).as_micros() as u64;
                if work.deliver(&mut io, c, CallTime { busy, end_us }) == Flow::Ended {
                    break;
                }
                if c.stop().is_abandoned() {
                    break;
                }
                c.after_stall(kind, rebuild)
            }
            Err(e) => {
                work.lost(&mut io, c);
                if c.stop().is_abandoned() {
                    break;
                }
                Some(c.on_error(e, rebuild))
            }
        };
        match verdict {
            None => {}
            Some(Verdict::Ignore) => work.ignored(c),
            Some(Verdict::Restarted(fresh)) => {
                counters.detach(c);
                work.replaced(std::mem::replace(&mut instance, fresh), &mut io);
                counters = PluginStats::attach::<W>(&instance, c);
            }
            Some(Verdict::GaveUp | Verdict::Stopped) if W::DRAINS_AFTER_GIVING_UP => {
                given_up = true
            }
            Some(Verdict::GaveUp | Verdict::Stopped) => break,
        }
    }
    counters.read(c);
    let exit = work.finish(instance, &mut io, c);
    // The instance lives on in `exit` (same address): what finalising wrote is counted too.
    if exit.instance.is_some() {
        counters.read(c);
    }
    exit
}
