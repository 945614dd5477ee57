//! The validated lifecycle state machine of a stage.
//!
//! One transition table ([`is_allowed`]) decides every move; there is no shortcut around it,
//! not even into [`State::Failed`]. Every accepted move is recorded in the history with a reason
//! and a timestamp. Locks (see [`super::lock_order`]): the state and history live behind one
//! [`LockLevel::StateMachine`] mutex, never held while an entry action runs, so the action may
//! call back into the machine. The host moves machines only through
//! `coordinator::lifecycle::Lifecycle`, which handles every result.

use std::fmt;
use std::time::Instant;

use serde::Serialize;

use super::lock_order::{LockLevel, OrderedMutex};

/// The lifecycle state of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Just constructed; nothing loaded.
    Created,
    /// The plugin is loaded.
    Loaded,
    /// The plugin accepted its configuration.
    Configured,
    /// Start requested; resources being acquired.
    Starting,
    /// Processing blocks.
    Running,
    /// Stop requested; no new input accepted.
    Stopping,
    /// Draining queued data and finalising storage.
    Flushing,
    /// Terminal: everything released. Nothing leaves this state.
    Stopped,
    /// A fault occurred; may recover or shut down cleanly.
    Failed,
    /// Attempting recovery after a fault.
    Recovering,
}

impl State {
    /// Every state, in lifecycle order.
    pub const ALL: [State; 10] = [
        State::Created,
        State::Loaded,
        State::Configured,
        State::Starting,
        State::Running,
        State::Stopping,
        State::Flushing,
        State::Stopped,
        State::Failed,
        State::Recovering,
    ];

    /// The lowercase name (also the serialised form).
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Loaded => "loaded",
            State::Configured => "configured",
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Flushing => "flushing",
            State::Stopped => "stopped",
            State::Failed => "failed",
            State::Recovering => "recovering",
        }
    }

    /// Active states may fail: everything except `Created`, `Stopped` and `Failed` itself.
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            State::Loaded
                | State::Configured
                | State::Starting
                | State::Running
                | State::Stopping
                | State::Flushing
                | State::Recovering
        )
    }

    /// `Stopped` is the only terminal state.
    pub const fn is_terminal(self) -> bool {
        matches!(self, State::Stopped)
    }

    /// The states reachable from `self` in one step, per [`is_allowed`].
    pub fn successors(self) -> impl Iterator<Item = State> {
        State::ALL
            .into_iter()
            .filter(move |&to| is_allowed(self, to))
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// THE transition table. Every state change in the host goes through this function.
pub const fn is_allowed(from: State, to: State) -> bool {
    use State::*;
    match (from, to) {
        // The normal lifecycle.
        (Created, Loaded)
        | (Loaded, Configured)
        | (Configured, Starting)
        | (Starting, Running)
        | (Running, Stopping)
        | (Stopping, Flushing)
        | (Flushing, Stopped)
        // Stop during start; never started.
        | (Starting, Stopping)
        | (Configured, Stopped)
        // Fault handling: recover, or shut down cleanly (storage still finalised).
        | (Failed, Recovering)
        | (Recovering, Running)
        // Stop while waiting to restart.
        | (Recovering, Stopping)
        | (Failed, Stopping) => true,
        // Any active state may fail (includes Recovering → Failed).
        (from, Failed) => from.is_active(),
        _ => false,
    }
}

/// Prefix of the reason of a transition recorded by a rollback.
pub const ROLLBACK_PREFIX: &str = "rollback: ";

/// One recorded state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// Milliseconds since the machine was created.
    pub at_ms: u64,
    /// Process-wide order of every transition of every machine: compares transitions of
    /// different machines (e.g. which stage started first), which `at_ms` cannot.
    pub seq: u64,
    /// Why (free text; rollbacks start with [`ROLLBACK_PREFIX`]).
    pub reason: String,
}

fn next_seq() -> u64 {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Why a transition did not happen (or was undone).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransitionError {
    /// The transition table does not allow `from → to`. State and history are unchanged.
    #[error("state machine '{machine}': transition {from} -> {to} is not allowed")]
    Invalid {
        /// The machine's name.
        machine: String,
        /// The state the machine was in (and still is).
        from: State,
        /// The requested state.
        to: State,
    },
    /// The transition was valid and taken, but the entry action failed. If `rolled_back`, the
    /// machine went back to `from` (recorded with reason `rollback: <error>`); otherwise another
    /// thread changed the state in the meantime and the rollback was not applied.
    #[error("state machine '{machine}': entry action of {from} -> {to} failed: {error}{}",
        if *rolled_back { " (rolled back)" } else { " (not rolled back: state changed concurrently)" })]
    EntryFailed {
        /// The machine's name.
        machine: String,
        /// The state before the transition.
        from: State,
        /// The state whose entry action failed.
        to: State,
        /// The entry action's error, displayed.
        error: String,
        /// Whether the machine was moved back to `from`.
        rolled_back: bool,
    },
}

#[derive(Debug)]
struct Inner {
    state: State,
    history: Vec<Transition>,
    /// Incremented on every recorded transition; lets a rollback detect concurrent changes.
    seq: u64,
}

/// A named, validated, observable state machine. Cheap to share behind an `Arc`.
pub struct StateMachine {
    name: String,
    created: Instant,
    inner: OrderedMutex<Inner>,
}

impl fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMachine")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl StateMachine {
    /// A new machine in [`State::Created`] with an empty history.
    pub fn new(name: impl Into<String>) -> Self {
        StateMachine {
            name: name.into(),
            created: Instant::now(),
            inner: OrderedMutex::new(
                LockLevel::StateMachine,
                Inner {
                    state: State::Created,
                    history: Vec::new(),
                    seq: 0,
                },
            ),
        }
    }

    /// The machine's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.inner.lock().state
    }

    /// A copy of the history, oldest first.
    pub fn history(&self) -> Vec<Transition> {
        self.inner.lock().history.clone()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Validates and records `from → to` under the state lock. Returns the transition and the
    /// sequence number it was recorded with.
    fn commit(&self, to: State, reason: &str) -> Result<(Transition, u64), TransitionError> {
        let mut inner = self.inner.lock();
        let from = inner.state;
        if !is_allowed(from, to) {
            return Err(TransitionError::Invalid {
                machine: self.name.clone(),
                from,
                to,
            });
        }
        let t = Transition {
            from,
            to,
            at_ms: self.now_ms(),
            seq: next_seq(),
            reason: reason.to_owned(),
        };
        inner.state = to;
        inner.history.push(t.clone());
        inner.seq += 1;
        Ok((t, inner.seq))
    }

    /// Moves to `to` if the transition table allows it and records it.
    ///
    /// # Errors
    /// [`TransitionError::Invalid`] if not allowed; state and history are then unchanged.
    pub fn transition(&self, to: State, reason: impl Into<String>) -> Result<(), TransitionError> {
        self.commit(to, &reason.into())?;
        Ok(())
    }

    /// Like [`transition`](Self::transition), then runs `entry` with no lock held. If `entry`
    /// fails, moves back to the previous state (recorded with reason `rollback: <error>`) unless
    /// another transition happened in the meantime.
    ///
    /// # Errors
    /// [`TransitionError::Invalid`] (nothing happened, `entry` not run) or
    /// [`TransitionError::EntryFailed`].
    pub fn transition_with<E: fmt::Display>(
        &self,
        to: State,
        reason: impl Into<String>,
        entry: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), TransitionError> {
        let (t, seq) = self.commit(to, &reason.into())?;
        let Err(e) = entry() else { return Ok(()) };
        let error = e.to_string();
        let rollback = {
            let mut inner = self.inner.lock();
            if inner.seq == seq {
                inner.history.push(Transition {
                    from: t.to,
                    to: t.from,
                    at_ms: self.now_ms(),
                    seq: next_seq(),
                    reason: format!("{ROLLBACK_PREFIX}{error}"),
                });
                inner.state = t.from;
                inner.seq += 1;
                true
            } else {
                false
            }
        };
        let rolled_back = rollback;
        if !rolled_back {
            tracing::warn!(machine = %self.name, from = %t.from, to = %t.to, %error,
                "entry action failed but the state changed concurrently; not rolled back");
        }
        Err(TransitionError::EntryFailed {
            machine: self.name.clone(),
            from: t.from,
            to: t.to,
            error,
            rolled_back,
        })
    }

    /// Checks the history: a chain starting at `Created`, ending at the current state, where
    /// every step is allowed by the table or is the exact reversal (rollback) of the step before.
    ///
    /// # Errors
    /// A description of the first violation found.
    pub fn check_invariants(&self) -> Result<(), String> {
        let inner = self.inner.lock();
        let name = &self.name;
        let mut expected_from = State::Created;
        let mut prev: Option<&Transition> = None;
        for (i, t) in inner.history.iter().enumerate() {
            if t.from != expected_from {
                return Err(format!(
                    "{name}: history[{i}] starts at {} but the previous state was {expected_from}",
                    t.from
                ));
            }
            let is_rollback = t.reason.starts_with(ROLLBACK_PREFIX)
                && prev.is_some_and(|p| p.from == t.to && p.to == t.from);
            if !is_allowed(t.from, t.to) && !is_rollback {
                return Err(format!(
                    "{name}: history[{i}] {} -> {} is neither allowed nor a rollback",
                    t.from, t.to
                ));
            }
            if let Some(p) = prev {
                if t.at_ms < p.at_ms {
                    return Err(format!("{name}: history[{i}] goes back in time"));
                }
            }
            expected_from = t.to;
            prev = Some(t);
        }
        if inner.state != expected_from {
            return Err(format!(
                "{name}: current state {} but history ends at {expected_from}",
                inner.state
            ));
        }
        if inner.seq != inner.history.len() as u64 {
            return Err(format!(
                "{name}: sequence counter does not match history length"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, VecDeque};
    use std::sync::Arc;

    /// The shortest legal path from `Created` to every reachable state (BFS over the table).
    fn paths() -> HashMap<State, Vec<State>> {
        let mut paths = HashMap::from([(State::Created, Vec::new())]);
        let mut queue = VecDeque::from([State::Created]);
        while let Some(s) = queue.pop_front() {
            for n in s.successors() {
                if !paths.contains_key(&n) {
                    let mut p = paths[&s].clone();
                    p.push(n);
                    paths.insert(n, p);
                    queue.push_back(n);
                }
            }
        }
        paths
    }

    fn machine_in(state: State) -> StateMachine {
        let m = StateMachine::new("test");
        for s in &paths()[&state] {
            m.transition(*s, "drive").expect("legal path");
        }
        assert_eq!(m.state(), state);
        m
    }

    mod table {
        use super::*;

        #[test]
        fn every_state_is_reachable() {
            let p = paths();
            for s in State::ALL {
                assert!(p.contains_key(&s), "{s} unreachable");
            }
        }

        #[test]
        fn exact_table() {
            use State::*;
            let mut allowed: Vec<(State, State)> = Vec::new();
            for f in State::ALL {
                for t in State::ALL {
                    if is_allowed(f, t) {
                        allowed.push((f, t));
                    }
                }
            }
            let mut expected = vec![
                (Created, Loaded),
                (Loaded, Configured),
                (Configured, Starting),
                (Starting, Running),
                (Running, Stopping),
                (Stopping, Flushing),
                (Flushing, Stopped),
                (Starting, Stopping),
                (Configured, Stopped),
                (Failed, Recovering),
                (Recovering, Running),
                (Recovering, Stopping),
                (Failed, Stopping),
            ];
            for s in State::ALL.into_iter().filter(|s| s.is_active()) {
                expected.push((s, Failed));
            }
            let key = |p: &(State, State)| (p.0 as u8, p.1 as u8);
            allowed.sort_by_key(key);
            expected.sort_by_key(key);
            assert_eq!(allowed, expected);
        }

        #[test]
        fn no_shortcut_into_failed_and_nothing_leaves_stopped() {
            assert!(!is_allowed(State::Created, State::Failed));
            assert!(!is_allowed(State::Failed, State::Failed));
            assert!(!is_allowed(State::Stopped, State::Failed));
            assert_eq!(State::Stopped.successors().count(), 0);
            let m = StateMachine::new("x");
            let e = m.transition(State::Failed, "boom").unwrap_err();
            assert!(matches!(
                e,
                TransitionError::Invalid {
                    from: State::Created,
                    to: State::Failed,
                    ..
                }
            ));
            assert!(m.history().is_empty());
        }

        #[test]
        fn names_and_serde() {
            for s in State::ALL {
                assert_eq!(s.as_str(), s.as_str().to_lowercase());
                assert_eq!(
                    serde_json::to_string(&s).unwrap(),
                    format!("\"{}\"", s.as_str())
                );
            }
            let t = Transition {
                from: State::Created,
                to: State::Loaded,
                at_ms: 3,
                seq: 1,
                reason: "r".into(),
            };
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                r#"{"from":"created","to":"loaded","at_ms":3,"seq":1,"reason":"r"}"#
            );
        }
    }

    mod property {
        use super::*;

        /// Every (state, target) pair: legal moves succeed and are recorded; illegal ones are
        /// rejected and change nothing.
        #[test]
        fn every_pair() {
            let mut legal = 0;
            for from in State::ALL {
                for to in State::ALL {
                    let m = machine_in(from);
                    let before = m.history();
                    let r = m.transition(to, "probe");
                    if is_allowed(from, to) {
                        legal += 1;
                        r.unwrap_or_else(|e| panic!("{from} -> {to} should succeed: {e}"));
                        assert_eq!(m.state(), to);
                        let after = m.history();
                        assert_eq!(after.len(), before.len() + 1);
                        assert_eq!(&after[..before.len()], &before[..]);
                        let last = after.last().unwrap();
                        assert_eq!(
                            (last.from, last.to, last.reason.as_str()),
                            (from, to, "probe")
                        );
                    } else {
                        let e = r.expect_err("illegal transition accepted");
                        assert_eq!(
                            e,
                            TransitionError::Invalid {
                                machine: "test".into(),
                                from,
                                to
                            }
                        );
                        let msg = e.to_string();
                        assert!(
                            msg.contains("test")
                                && msg.contains(from.as_str())
                                && msg.contains(to.as_str()),
                            "{msg}"
                        );
                        assert_eq!(m.state(), from);
                        assert_eq!(m.history(), before);
                    }
                    m.check_invariants().unwrap();
                }
            }
            assert_eq!(legal, 13 + 7);
        }
    }

    mod rollback {
        use super::*;

        #[test]
        fn failing_entry_rolls_back() {
            let m = machine_in(State::Configured);
            let before = m.history().len();
            let seen_in_entry = std::cell::Cell::new(None);
            let e = m
                .transition_with(State::Starting, "start", || {
                    // No lock held: the machine is readable from the entry action.
                    seen_in_entry.set(Some(m.state()));
                    Err("device busy")
                })
                .unwrap_err();
            assert_eq!(seen_in_entry.get(), Some(State::Starting));
            assert!(matches!(
                &e,
                TransitionError::EntryFailed { from: State::Configured, to: State::Starting, rolled_back: true, error, .. }
                    if error == "device busy"
            ));
            assert_eq!(m.state(), State::Configured);
            let h = m.history();
            assert_eq!(h.len(), before + 2);
            assert_eq!(
                (h[before].from, h[before].to),
                (State::Configured, State::Starting)
            );
            let rb = &h[before + 1];
            assert_eq!((rb.from, rb.to), (State::Starting, State::Configured));
            assert_eq!(rb.reason, "rollback: device busy");
            m.check_invariants().unwrap();
        }

        #[test]
        fn succeeding_entry_keeps_state() {
            let m = machine_in(State::Configured);
            m.transition_with(State::Starting, "start", || Ok::<(), String>(()))
                .unwrap();
            assert_eq!(m.state(), State::Starting);
            m.check_invariants().unwrap();
        }

        #[test]
        fn invalid_does_not_run_entry() {
            let m = StateMachine::new("x");
            let mut ran = false;
            let e = m.transition_with(State::Running, "r", || {
                ran = true;
                Ok::<(), String>(())
            });
            assert!(matches!(e, Err(TransitionError::Invalid { .. })));
            assert!(!ran);
            assert!(m.history().is_empty());
        }

        #[test]
        fn entry_can_move_machine_then_fail_no_rollback() {
            let m = machine_in(State::Configured);
            let e = m
                .transition_with(State::Starting, "start", || {
                    m.transition(State::Failed, "fault during start").unwrap();
                    Err("gave up")
                })
                .unwrap_err();
            assert!(matches!(
                e,
                TransitionError::EntryFailed {
                    rolled_back: false,
                    ..
                }
            ));
            assert_eq!(m.state(), State::Failed);
            m.check_invariants().unwrap();
        }

        #[test]
        fn invariants_detect_forged_history() {
            let m = machine_in(State::Running);
            m.inner.lock().history.push(Transition {
                from: State::Running,
                to: State::Created,
                at_ms: u64::MAX,
                seq: u64::MAX,
                reason: "rollback: forged".into(),
            });
            assert!(m.check_invariants().is_err());
        }
    }

    mod concurrency {
        use super::*;
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::time::Duration;

        struct XorShift(u64);
        impl XorShift {
            fn next(&mut self) -> u64 {
                let mut x = self.0;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                self.0 = x;
                x
            }
        }

        /// 8 threads × 2000 random transitions (plain and with entry actions that sometimes
        /// fail) on one machine. Afterwards the invariants hold and
        /// the counts add up. A watchdog turns a deadlock into a failure instead of a hang
        /// (parking_lot's `deadlock_detection` feature is not enabled in this workspace).
        #[test]
        fn stress() {
            const THREADS: u64 = 8;
            const STEPS: u64 = 2000;
            const TARGETS: [State; 9] = [
                State::Created,
                State::Loaded,
                State::Configured,
                State::Starting,
                State::Running,
                State::Stopping,
                State::Flushing,
                State::Failed,
                State::Recovering,
            ];
            let m = Arc::new(StateMachine::new("stress"));
            let recorded = Arc::new(AtomicU64::new(0));
            // parking_lot's detector (enabled in test builds) watches every host lock meanwhile.
            let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let detector = {
                let finished = Arc::clone(&finished);
                std::thread::spawn(move || {
                    let mut found = 0;
                    while !finished.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                        found += parking_lot::deadlock::check_deadlock().len();
                    }
                    found
                })
            };
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            let mut handles = Vec::new();
            for id in 0..THREADS {
                let m = Arc::clone(&m);
                let recorded = Arc::clone(&recorded);
                let done_tx = done_tx.clone();
                handles.push(std::thread::spawn(move || {
                    let mut rng =
                        XorShift(0x9E37_79B9_7F4A_7C15 ^ (id + 1).wrapping_mul(0x2545_F491));
                    for _ in 0..STEPS {
                        let r = rng.next();
                        // Stopped is terminal and would end the test early: never target it.
                        let to = TARGETS[(r >> 8) as usize % TARGETS.len()];
                        let res = if (r >> 20) % 3 == 0 {
                            let fail = (r >> 24) % 2 == 0;
                            m.transition_with(to, "stress+entry", || {
                                if fail {
                                    Err("injected")
                                } else {
                                    Ok(())
                                }
                            })
                        } else {
                            m.transition(to, "stress")
                        };
                        match res {
                            Ok(()) => recorded.fetch_add(1, Ordering::Relaxed),
                            Err(TransitionError::Invalid { .. }) => 0,
                            Err(TransitionError::EntryFailed { rolled_back, .. }) => recorded
                                .fetch_add(if rolled_back { 2 } else { 1 }, Ordering::Relaxed),
                        };
                    }
                    if done_tx.send(()).is_err() {
                        // The test stopped waiting (its deadlock timeout) and fails on that:
                        // there is no one left to tell.
                    }
                }));
            }
            drop(done_tx);
            for _ in 0..THREADS {
                done_rx
                    .recv_timeout(Duration::from_secs(120))
                    .expect("stress threads did not finish: deadlock?");
            }
            for h in handles {
                h.join().expect("stress thread panicked");
            }
            finished.store(true, Ordering::Relaxed);
            assert_eq!(
                detector.join().unwrap(),
                0,
                "parking_lot detected a deadlock"
            );
            m.check_invariants().unwrap();
            let len = m.history().len() as u64;
            assert!(
                len > 1000,
                "only {len} transitions recorded: stress too weak"
            );
            assert_eq!(len, recorded.load(Ordering::Relaxed));
        }
    }
}
