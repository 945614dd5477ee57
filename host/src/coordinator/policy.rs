//! A stage's `on_error` policy as the coordinator applies it: how much an error matters
//! ([`Severity`]), and when to restart, after which wait, and when to give up
//! ([`RestartPolicy`]). One backoff serves a failing start and a failure while running.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::parse::{OnError, Policy};

use super::stop::MAX_WAIT;

/// How much an error matters to the pipeline, decided by the stage's `on_error` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// `ignore`: the block was dropped (counted) and the stage goes on.
    Warning,
    /// `restart`: the instance is being rebuilt.
    Recoverable,
    /// `fail`, or restarts exhausted: the pipeline stops, storage is finalised.
    Fatal,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Recoverable => "recoverable",
            Severity::Fatal => "fatal",
        }
    }
}

/// What the policy decided about one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Count the block as dropped and go on with the same instance.
    Ignore,
    /// Build a fresh instance after `wait` (restart `attempt` of this window).
    Restart { attempt: u32, wait: Duration },
    /// `fail`, or `restarts` restarts in this window already: the pipeline stops.
    GiveUp { restarts: u32 },
}

/// The `on_error` policy of one stage, with its restart window.
#[derive(Debug)]
pub struct RestartPolicy {
    on_error: OnError,
    /// Restarts since the stage last ran `reset_after_ms` without a fault.
    in_window: AtomicU32,
    /// When the stage last (re)started, in µs since the run started (0: not running).
    running_since_us: AtomicU64,
}

impl RestartPolicy {
    pub fn new(on_error: OnError) -> Self {
        RestartPolicy {
            on_error,
            in_window: AtomicU32::new(0),
            running_since_us: AtomicU64::new(0),
        }
    }

    pub fn on_error(&self) -> &OnError {
        &self.on_error
    }

    /// The severity of an error this policy does not give up on.
    pub fn severity(&self) -> Severity {
        match self.on_error.policy {
            Policy::Ignore => Severity::Warning,
            Policy::Restart => Severity::Recoverable,
            Policy::Fail => Severity::Fatal,
        }
    }

    /// The stage (re)started at `now_us`: the restart window's clock starts.
    pub fn running(&self, now_us: u64) {
        self.running_since_us
            .store(now_us.max(1), Ordering::Relaxed);
    }

    /// A failure at `now_us`. A stage that had run `reset_after_ms` without a fault starts a new
    /// window; a restart is counted here. The wait doubles with each restart of the window, up
    /// to [`MAX_WAIT`].
    pub fn decide(&self, now_us: u64) -> Decision {
        match self.on_error.policy {
            Policy::Ignore => return Decision::Ignore,
            Policy::Fail => return Decision::GiveUp { restarts: 0 },
            Policy::Restart => {}
        }
        let since = self.running_since_us.swap(0, Ordering::Relaxed);
        if since != 0 && now_us.saturating_sub(since) >= self.on_error.reset_after_ms * 1000 {
            self.in_window.store(0, Ordering::Relaxed);
        }
        let n = self.in_window.load(Ordering::Relaxed);
        if n >= self.on_error.max_restarts {
            return Decision::GiveUp { restarts: n };
        }
        self.in_window.store(n + 1, Ordering::Relaxed);
        let wait = Duration::from_millis(self.on_error.backoff_ms.saturating_mul(1 << n.min(16)));
        Decision::Restart {
            attempt: n + 1,
            wait: wait.min(MAX_WAIT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restart(max_restarts: u32, backoff_ms: u64, reset_after_ms: u64) -> RestartPolicy {
        RestartPolicy::new(OnError {
            policy: Policy::Restart,
            max_restarts,
            backoff_ms,
            reset_after_ms,
        })
    }

    #[test]
    fn restarts_double_their_wait_and_give_up_after_max_restarts() {
        let p = restart(3, 100, 60_000);
        let waits: Vec<Decision> = (0..4).map(|i| p.decide(i * 1000)).collect();
        let ms = |attempt, ms| Decision::Restart {
            attempt,
            wait: Duration::from_millis(ms),
        };
        assert_eq!(waits[..3], [ms(1, 100), ms(2, 200), ms(3, 400)]);
        assert_eq!(waits[3], Decision::GiveUp { restarts: 3 });
    }

    #[test]
    fn a_stage_that_ran_reset_after_ms_without_a_fault_starts_a_new_window() {
        let p = restart(1, 10, 1_000);
        p.running(1);
        assert!(matches!(
            p.decide(500_000),
            Decision::Restart { attempt: 1, .. }
        ));
        // Restarted, and failed again 0.5 s later: inside the window.
        p.running(600_000);
        assert_eq!(p.decide(1_100_000), Decision::GiveUp { restarts: 1 });
        // A stage that runs long enough between faults is never given up.
        let p = restart(1, 10, 1_000);
        for day in 0..7u64 {
            let t = day * 86_400_000_000;
            p.running(t + 1);
            assert!(
                matches!(
                    p.decide(t + 3_600_000_000),
                    Decision::Restart { attempt: 1, .. }
                ),
                "day {day}"
            );
        }
    }

    #[test]
    fn the_wait_is_capped() {
        let p = restart(40, 1_000, 60_000);
        let last = (0..40).map(|_| p.decide(0)).last().unwrap();
        assert!(matches!(last, Decision::Restart { wait, .. } if wait == MAX_WAIT));
    }

    #[test]
    fn ignore_and_fail_never_restart() {
        let mut on_error = OnError {
            policy: Policy::Ignore,
            ..OnError::default()
        };
        assert_eq!(
            RestartPolicy::new(on_error.clone()).decide(0),
            Decision::Ignore
        );
        on_error.policy = Policy::Fail;
        let p = RestartPolicy::new(on_error);
        assert_eq!(p.decide(0), Decision::GiveUp { restarts: 0 });
        assert_eq!(p.severity(), Severity::Fatal);
    }
}
