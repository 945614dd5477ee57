//! Unit tests of the coordinator's governance with in-process fake stages (no plugin library):
//! starts retried and given up, stops that cut a backoff short, a stuck call given up and its
//! edges handed to a fresh thread, refused transitions surfacing as internal errors.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tapeline_plugin_api::abi::PluginError;
use tapeline_plugin_api::PluginKind;

use super::component::{Component, Event, Identity, Setting, Verdict};
use super::lifecycle::InternalErrors;
use super::policy::Severity;
use super::stage_io::{IoSlot, StageIo};
use super::stage_loop::{self, Begin, CallTime, Flow, StageExit, StageWork, Take};
use super::stage_stats::Call;
use super::stop::Stop;
use crate::config::parse::{OnError, Policy};
use crate::discipline::state_machine::State;

fn component(
    kind: PluginKind,
    policy: Policy,
    backoff_ms: u64,
) -> (Arc<Component>, Receiver<Event>, Arc<InternalErrors>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let internal = Arc::new(InternalErrors::default());
    let c = Component::new(
        Identity {
            index: 0,
            id: "fake".into(),
            plugin: "fake-plugin".into(),
            kind,
        },
        Setting {
            on_error: OnError {
                policy,
                max_restarts: 2,
                backoff_ms,
                reset_after_ms: 60_000,
            },
            stop: Arc::new(Stop::default()),
            events: tx,
            epoch: Instant::now(),
            stall_timeout_ms: 100,
            internal: internal.clone(),
            isolation: None,
        },
    );
    c.loaded(std::path::Path::new("libfake.so"));
    (Arc::new(c), rx, internal)
}

fn states(c: &Component) -> Vec<State> {
    c.lifecycle().history().iter().map(|t| t.to).collect()
}

fn errors(rx: &Receiver<Event>) -> Vec<(Severity, String)> {
    rx.try_iter()
        .filter_map(|e| match e {
            Event::Error {
                severity, error, ..
            } => Some((severity, error.message().to_string())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_failing_start_is_retried_under_restart_then_given_up() {
    let (c, rx, internal) = component(PluginKind::Process, Policy::Restart, 1);
    let tries = AtomicU64::new(0);
    let built = c.start(
        || -> Result<(), PluginError> {
            tries.fetch_add(1, Ordering::Relaxed);
            Err(PluginError::io("no such file"))
        },
        |_| Ok(()),
    );
    assert!(built.is_none());
    // The first try and max_restarts = 2 retries.
    assert_eq!(tries.load(Ordering::Relaxed), 3);
    assert_eq!(c.stats.restarts.load(Ordering::Relaxed), 2);
    use State::*;
    assert_eq!(
        states(&c),
        [Loaded, Failed, Recovering, Failed, Recovering, Failed]
    );
    let errs = errors(&rx);
    assert_eq!(errs[0].0, Severity::Recoverable);
    assert_eq!(errs.last().unwrap().0, Severity::Fatal);
    assert!(
        errs.last()
            .unwrap()
            .1
            .contains("gave up after 2 restart(s)"),
        "{errs:?}"
    );
    assert_eq!(internal.count(), 0, "{:?}", internal.list());
}

#[test]
fn a_start_that_succeeds_on_retry_runs() {
    let (c, rx, internal) = component(PluginKind::Capture, Policy::Restart, 1);
    let tries = AtomicU64::new(0);
    let built = c.start(
        || Ok(()),
        |_| {
            if tries.fetch_add(1, Ordering::Relaxed) == 0 {
                Err(PluginError::io("busy"))
            } else {
                Ok(())
            }
        },
    );
    assert!(built.is_some());
    use State::*;
    assert_eq!(
        states(&c),
        [Loaded, Configured, Starting, Configured, Failed, Recovering, Running]
    );
    assert!(rx.try_iter().any(|e| matches!(e, Event::Started { .. })));
    assert_eq!(internal.count(), 0, "{:?}", internal.list());
}

#[test]
fn a_stop_during_a_backoff_ends_it_at_once() {
    for kind in [PluginKind::Capture, PluginKind::Process] {
        let (c, _rx, internal) = component(kind, Policy::Restart, 5_000);
        assert!(c.start(|| Ok(()), |_| Ok(())).is_some());
        let stopper = {
            let c = c.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                c.stop().request();
            })
        };
        let began = Instant::now();
        let verdict = c.on_error(PluginError::io("device gone"), || Ok(()));
        let took = began.elapsed();
        stopper.join().unwrap();
        assert!(
            took < Duration::from_secs(1),
            "{kind:?}: the 5 s backoff held the stop {took:?}"
        );
        match kind {
            // A capture stops producing; any other stage rebuilds at once to drain its queue.
            PluginKind::Capture => assert!(matches!(verdict, Verdict::Stopped)),
            _ => assert!(matches!(verdict, Verdict::Restarted(()))),
        }
        c.wind_down(State::Stopping, "stopped");
        assert_eq!(c.lifecycle().state(), State::Stopping, "{kind:?}");
        assert_eq!(internal.count(), 0, "{kind:?}: {:?}", internal.list());
    }
}

#[test]
fn a_refused_transition_surfaces_as_an_internal_error() {
    let (c, _rx, internal) = component(PluginKind::Storage, Policy::Fail, 1);
    // `released` only moves a flushing stage; `wind_down` to flushing from loaded is refused.
    c.wind_down(State::Flushing, "out of order");
    assert_eq!(internal.count(), 1);
    let e = &internal.list()[0];
    assert_eq!(
        (e.machine.as_str(), e.from, e.to),
        ("fake", State::Loaded, State::Flushing)
    );
}

/// A source of `blocks` blocks whose instance hangs in its call at block `hang_at` until
/// `release` is set (the first instance only).
struct Hanging {
    produced: u64,
    blocks: u64,
    delivered: Arc<AtomicU64>,
}

struct HangingFactory {
    hang_at: u64,
    hung: AtomicBool,
    release: Arc<AtomicBool>,
}

struct HangingInstance {
    n: u64,
    hang_at: Option<u64>,
    release: Arc<AtomicBool>,
}

impl StageWork for Hanging {
    type Instance = HangingInstance;
    type Factory = HangingFactory;
    const CALL: Call = Call::Read;

    fn build(f: &HangingFactory) -> Result<HangingInstance, PluginError> {
        let first = !f.hung.swap(true, Ordering::SeqCst);
        Ok(HangingInstance {
            n: 0,
            hang_at: first.then_some(f.hang_at),
            release: f.release.clone(),
        })
    }
    fn take(&mut self, io: &mut StageIo, _c: &Component, _given_up: bool) -> Take {
        if self.produced >= self.blocks {
            return Take::Ended;
        }
        io.in_flight = 1;
        Take::Ready
    }
    fn call(&mut self, i: &mut HangingInstance, _c: &Component) -> Result<(), PluginError> {
        if i.hang_at == Some(i.n) {
            while !i.release.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        i.n += 1;
        Ok(())
    }
    fn deliver(&mut self, io: &mut StageIo, _c: &Component, _t: CallTime) -> Flow {
        self.produced += 1;
        io.positions[0] += 1;
        self.delivered.fetch_add(1, Ordering::SeqCst);
        Flow::Continue
    }
    fn lost(&mut self, _io: &mut StageIo, _c: &Component) {}
    fn finish(&mut self, i: HangingInstance, _io: &mut StageIo, _c: &Component) -> StageExit {
        StageExit {
            instance: Some(Box::new(i.n)),
            ..StageExit::default()
        }
    }
}

#[test]
fn a_stuck_call_is_given_up_and_a_fresh_thread_goes_on_with_the_edges() {
    let (c, _rx, internal) = component(PluginKind::Capture, Policy::Restart, 1);
    let release = Arc::new(AtomicBool::new(false));
    let factory = Arc::new(HangingFactory {
        hang_at: 3,
        hung: AtomicBool::new(false),
        release: release.clone(),
    });
    let delivered = Arc::new(AtomicU64::new(0));
    let io = StageIo {
        positions: vec![0],
        ..StageIo::default()
    };
    let slot = Arc::new(IoSlot::new(Box::new(io)));
    let spawn = |slot: Arc<IoSlot>, begin: Begin| {
        let (c, f, d) = (c.clone(), factory.clone(), delivered.clone());
        std::thread::spawn(move || {
            let work = Hanging {
                produced: 0,
                blocks: 10,
                delivered: d,
            };
            stage_loop::run(&c, f.as_ref(), work, &slot, begin)
        })
    };
    let old = spawn(slot.clone(), Begin::Start);
    // The coordinator's part: the call lasts too long, take the edges and start again.
    let began = Instant::now();
    while !c.stats.in_call().is_some_and(|(_, since)| {
        (c.epoch().elapsed().as_micros() as u64).saturating_sub(since) > 50_000
    }) {
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "the call never hung"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut io = slot
        .take()
        .expect("the edges wait in the slot during the call");
    assert_eq!(
        std::mem::take(&mut io.in_flight),
        1,
        "the block in the call is known"
    );
    assert_eq!(io.positions[0], 3, "three blocks went out before the hang");
    c.stats.leave();
    let fresh = spawn(
        Arc::new(IoSlot::new(io)),
        Begin::Replace(PluginError::other("given up")),
    );
    let exit = fresh.join().unwrap();
    assert!(!exit.abandoned);
    // 3 before the hang, 10 by the fresh thread: it goes on, the stuck block is the only loss.
    assert_eq!(delivered.load(Ordering::SeqCst), 13);
    assert_eq!(c.stats.restarts.load(Ordering::Relaxed), 1);
    assert!(!old.is_finished(), "the old thread is still stuck");
    // When the stuck call finally returns, its thread ends without touching anything.
    release.store(true, Ordering::SeqCst);
    let exit = old.join().unwrap();
    assert!(exit.abandoned && exit.instance.is_none());
    assert_eq!(delivered.load(Ordering::SeqCst), 13);
    use State::*;
    assert_eq!(
        states(&c),
        [Loaded, Configured, Starting, Running, Failed, Recovering, Running]
    );
    assert_eq!(internal.count(), 0, "{:?}", internal.list());
}

#[test]
fn stages_start_storage_first_and_downstream_first_and_are_released_captures_first() {
    use PluginKind::*;
    // mic → split → (left, right) → merge → wav ; tone → meter → null (plan order: inputs first).
    let kinds = [
        Capture, Process, Process, Storage, Capture, Process, Storage,
    ];
    let order = super::running::start_order(&kinds);
    assert_eq!(order, [6, 3, 5, 2, 1, 4, 0]);
    let mut released = kinds.to_vec();
    released.sort_by_key(|k| super::cleanup_plan::release_rank(*k));
    assert_eq!(
        released,
        [Capture, Capture, Process, Process, Process, Storage, Storage]
    );
}

/// A fake capture whose instances count their calls in a `tapeline.stats` counter (`calls`)
/// and fail the call after `fail_after` of their own; the stage restarts them.
struct Counting {
    blocks: u64,
    produced: u64,
}

struct CountingInstance {
    calls: u64,
}

const FAIL_AFTER: u64 = 4;

extern "C" fn stat_names(
    _: *const std::ffi::c_void,
) -> abi_stable::std_types::RVec<abi_stable::std_types::RString> {
    vec![abi_stable::std_types::RString::from("calls")].into()
}

extern "C" fn stat_read(
    instance: *const std::ffi::c_void,
    mut out: abi_stable::std_types::RSliceMut<'_, u64>,
) -> u32 {
    // SAFETY: the instance that answered the extension, alive while the stage reads it.
    let i = unsafe { &*instance.cast::<CountingInstance>() };
    out[0] = i.calls;
    1
}

static STATS_TABLE: tapeline_plugin_api::abi::StatsV1 = tapeline_plugin_api::abi::StatsV1 {
    names: stat_names,
    read: stat_read,
};

impl StageWork for Counting {
    type Instance = Box<CountingInstance>;
    type Factory = ();
    const CALL: Call = Call::Read;

    fn build(_: &()) -> Result<Box<CountingInstance>, PluginError> {
        Ok(Box::new(CountingInstance { calls: 0 }))
    }
    fn take(&mut self, io: &mut StageIo, _c: &Component, _given_up: bool) -> Take {
        if self.produced >= self.blocks {
            return Take::Ended;
        }
        io.in_flight = 0;
        Take::Ready
    }
    fn call(&mut self, i: &mut Box<CountingInstance>, _c: &Component) -> Result<(), PluginError> {
        i.calls += 1;
        if i.calls > FAIL_AFTER {
            return Err(PluginError::other("tired"));
        }
        Ok(())
    }
    fn deliver(&mut self, _io: &mut StageIo, _c: &Component, _t: CallTime) -> Flow {
        self.produced += 1;
        Flow::Continue
    }
    fn lost(&mut self, _io: &mut StageIo, _c: &Component) {}
    fn extension(
        i: &Box<CountingInstance>,
        name: abi_stable::std_types::RStr<'_>,
        version: u32,
    ) -> abi_stable::std_types::ROption<tapeline_plugin_api::abi::RawExtension> {
        if name.as_str() != tapeline_plugin_api::abi::STATS_EXTENSION || version != 1 {
            return abi_stable::std_types::ROption::RNone;
        }
        let instance: *const CountingInstance = &**i;
        abi_stable::std_types::ROption::RSome(tapeline_plugin_api::abi::RawExtension::new(
            &STATS_TABLE,
            instance.cast(),
        ))
    }
    fn finish(&mut self, i: Box<CountingInstance>, _io: &mut StageIo, _c: &Component) -> StageExit {
        // The instance lives on in the exit: its counters are read once more from there.
        StageExit {
            instance: Some(Box::new(i)),
            ..StageExit::default()
        }
    }
}

/// A plugin's own counters go on over restarts: each fresh instance counts from zero, and the
/// stage's counters add it to what the instances before it counted.
#[test]
fn a_plugins_counters_go_on_over_restarts() {
    let (c, _rx, internal) = component(PluginKind::Capture, Policy::Restart, 1);
    // max_restarts 2: three instances, each making FAIL_AFTER good calls and one failing one.
    let slot = IoSlot::new(Box::new(StageIo {
        positions: vec![0],
        ..StageIo::default()
    }));
    let work = Counting {
        blocks: 3 * FAIL_AFTER,
        produced: 0,
    };
    stage_loop::run(&c, &(), work, &slot, Begin::Start);
    let calls = c.stats.plugin.snapshot()["calls"];
    // 4 + 1 failed, 4 + 1 failed, then 4 more: the last instance ends at its 4th call.
    assert_eq!(calls, 3 * FAIL_AFTER + 2, "{:?}", c.stats.plugin.snapshot());
    assert_eq!(c.stats.restarts.load(Ordering::Relaxed), 2);
    assert_eq!(internal.count(), 0, "{:?}", internal.list());
}
