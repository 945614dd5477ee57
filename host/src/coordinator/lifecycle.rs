//! The one place that moves a state machine. A [`Lifecycle`] wraps a stage's (or the
//! pipeline's) [`StateMachine`] and handles every result: a transition the table refuses is an
//! internal error of the host — recorded with both states and the reason, counted in the run
//! summary (`internal_errors`), logged by the coordinator — never silently ignored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::discipline::lock_order::{LockLevel, OrderedMutex};
use crate::discipline::state_machine::{State, StateMachine, Transition, TransitionError};

/// A transition the table refused: a bug in the host, never a plugin's fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InternalError {
    /// The state machine (a stage id, or `pipeline`).
    pub machine: String,
    pub from: State,
    pub to: State,
    /// Why the transition was asked for.
    pub reason: String,
}

/// Every internal error of one run. Written only on the error path (a refused transition),
/// read by the coordinator.
#[derive(Debug)]
pub struct InternalErrors {
    count: AtomicU64,
    list: OrderedMutex<Vec<InternalError>>,
}

/// Internal errors listed in a summary; later ones are only counted.
const MAX_LISTED: usize = 100;

impl Default for InternalErrors {
    fn default() -> Self {
        InternalErrors {
            count: AtomicU64::new(0),
            list: OrderedMutex::new(LockLevel::InternalErrors, Vec::new()),
        }
    }
}

impl InternalErrors {
    fn record(&self, e: InternalError) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut list = self.list.lock();
        if list.len() < MAX_LISTED {
            list.push(e);
        }
    }
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
    pub fn list(&self) -> Vec<InternalError> {
        self.list.lock().clone()
    }
}

/// A state machine whose every transition result is handled.
#[derive(Debug)]
pub struct Lifecycle {
    sm: StateMachine,
    internal: Arc<InternalErrors>,
}

impl Lifecycle {
    pub fn new(name: impl Into<String>, internal: Arc<InternalErrors>) -> Self {
        Lifecycle {
            sm: StateMachine::new(name),
            internal,
        }
    }

    pub fn state(&self) -> State {
        self.sm.state()
    }

    pub fn history(&self) -> Vec<Transition> {
        self.sm.history()
    }

    pub fn name(&self) -> &str {
        self.sm.name()
    }

    /// Move to `to`. False (and an internal error recorded) if the table refuses.
    pub fn enter(&self, to: State, reason: impl Into<String>) -> bool {
        let reason = reason.into();
        match self.sm.transition(to, reason.clone()) {
            Ok(()) => true,
            Err(e) => {
                self.refused(e, reason);
                false
            }
        }
    }

    /// Move to `to` and run `entry`; if it fails the machine goes back (recorded as a
    /// rollback) and the entry's error is returned. A refused transition runs nothing and is
    /// an internal error (`Ok(false)`).
    pub fn enter_with<E>(
        &self,
        to: State,
        reason: &str,
        entry: impl FnOnce() -> Result<(), E>,
    ) -> Result<bool, E> {
        let mut failure = None;
        let outcome = self.sm.transition_with(to, reason, || {
            entry().map_err(|e| {
                failure = Some(e);
                "the entry action failed"
            })
        });
        match (outcome, failure) {
            (Ok(()), _) => Ok(true),
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => {
                self.refused(e, reason.to_string());
                Ok(false)
            }
        }
    }

    /// Check the recorded history; a violation is an internal error.
    pub fn check(&self) {
        if let Err(why) = self.sm.check_invariants() {
            let state = self.sm.state();
            self.internal.record(InternalError {
                machine: self.sm.name().to_string(),
                from: state,
                to: state,
                reason: format!("history invariant broken: {why}"),
            });
        }
    }

    fn refused(&self, e: TransitionError, reason: String) {
        let (from, to) = match e {
            TransitionError::Invalid { from, to, .. } => (from, to),
            TransitionError::EntryFailed { from, to, .. } => (from, to),
        };
        self.internal.record(InternalError {
            machine: self.sm.name().to_string(),
            from,
            to,
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_transition_is_an_internal_error_with_both_states() {
        let internal = Arc::new(InternalErrors::default());
        let l = Lifecycle::new("s", internal.clone());
        assert!(l.enter(State::Loaded, "found"));
        assert!(!l.enter(State::Running, "too early"));
        assert_eq!(l.state(), State::Loaded);
        assert_eq!(internal.count(), 1);
        let e = &internal.list()[0];
        assert_eq!(
            (e.from, e.to, e.reason.as_str()),
            (State::Loaded, State::Running, "too early")
        );
    }

    #[test]
    fn a_failing_entry_rolls_back_and_is_not_an_internal_error() {
        let internal = Arc::new(InternalErrors::default());
        let l = Lifecycle::new("s", internal.clone());
        assert!(l.enter(State::Loaded, "found"));
        assert!(l.enter(State::Configured, "built"));
        let r: Result<bool, &str> = l.enter_with(State::Starting, "start", || Err("no device"));
        assert_eq!(r, Err("no device"));
        assert_eq!(l.state(), State::Configured);
        assert_eq!(internal.count(), 0);
        l.check();
        assert_eq!(internal.count(), 0);
    }
}
