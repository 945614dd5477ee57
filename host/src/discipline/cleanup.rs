//! Ordered cleanup: named steps with declared dependencies, each outcome recorded.
//!
//! A step runs after the steps it depends on. A step whose dependency failed is skipped, unless
//! it is marked `always` — finalising storage is, so recorded audio is never lost because an
//! earlier step (say, a capture that would not stop) failed.

use std::fmt::Display;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How one step ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "lowercase")]
pub enum StepOutcome {
    Ok(String),
    Failed(String),
    /// Not run because a dependency failed.
    Skipped(String),
}

impl StepOutcome {
    /// The outcome's word and its detail.
    pub fn parts(&self) -> (&'static str, &str) {
        match self {
            StepOutcome::Ok(d) => ("ok", d),
            StepOutcome::Failed(d) => ("failed", d),
            StepOutcome::Skipped(d) => ("skipped", d),
        }
    }
}

/// One step's record, for the run summary.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub name: &'static str,
    pub outcome: StepOutcome,
    pub attempts: u32,
    pub millis: u64,
}

type Action<'a, E> = Box<dyn FnMut() -> Result<String, E> + 'a>;

struct Step<'a, E> {
    name: &'static str,
    after: Vec<&'static str>,
    always: bool,
    attempts: u32,
    retry_delay: Duration,
    action: Action<'a, E>,
}

/// The cleanup plan of one run.
pub struct CleanupCoordinator<'a, E: Display> {
    steps: Vec<Step<'a, E>>,
}

impl<E: Display> Default for CleanupCoordinator<'_, E> {
    fn default() -> Self {
        CleanupCoordinator { steps: Vec::new() }
    }
}

impl<'a, E: Display> CleanupCoordinator<'a, E> {
    pub fn new() -> Self {
        CleanupCoordinator { steps: Vec::new() }
    }

    /// Add a step that runs after `after` (names of earlier steps). It is tried up to `attempts`
    /// times, `retry_delay` apart. With `always`, it runs even if a dependency failed.
    pub fn step(
        &mut self,
        name: &'static str,
        after: &[&'static str],
        always: bool,
        attempts: u32,
        retry_delay: Duration,
        action: impl FnMut() -> Result<String, E> + 'a,
    ) -> &mut Self {
        debug_assert!(
            after
                .iter()
                .all(|d| self.steps.iter().any(|s| s.name == *d)),
            "cleanup step `{name}` depends on a step not declared before it"
        );
        self.steps.push(Step {
            name,
            after: after.to_vec(),
            always,
            attempts: attempts.max(1),
            retry_delay,
            action: Box::new(action),
        });
        self
    }

    /// Run every step in declaration order (dependencies are declared first).
    pub fn run(mut self) -> Vec<StepReport> {
        let mut reports: Vec<StepReport> = Vec::new();
        for step in &mut self.steps {
            let failed_dep = step.after.iter().find(|d| {
                reports
                    .iter()
                    .any(|r| r.name == **d && !matches!(r.outcome, StepOutcome::Ok(_)))
            });
            if let (Some(dep), false) = (failed_dep, step.always) {
                reports.push(StepReport {
                    name: step.name,
                    outcome: StepOutcome::Skipped(format!("`{dep}` did not succeed")),
                    attempts: 0,
                    millis: 0,
                });
                continue;
            }
            let start = Instant::now();
            let mut attempts = 0;
            let outcome = loop {
                attempts += 1;
                match (step.action)() {
                    Ok(detail) => break StepOutcome::Ok(detail),
                    Err(e) if attempts >= step.attempts => {
                        break StepOutcome::Failed(e.to_string())
                    }
                    Err(_) => std::thread::sleep(step.retry_delay),
                }
            };
            reports.push(StepReport {
                name: step.name,
                outcome,
                attempts,
                millis: start.elapsed().as_millis() as u64,
            });
        }
        reports
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn steps_run_in_order_and_a_failure_skips_dependents_but_not_always_steps() {
        let log = RefCell::new(Vec::new());
        let mut c = CleanupCoordinator::<String>::new();
        c.step("stop", &[], false, 1, Duration::ZERO, || {
            log.borrow_mut().push("stop");
            Err("would not stop".into())
        })
        .step("drain", &["stop"], false, 1, Duration::ZERO, || {
            log.borrow_mut().push("drain");
            Ok(String::new())
        })
        .step("finalise", &["drain"], true, 1, Duration::ZERO, || {
            log.borrow_mut().push("finalise");
            Ok("2 files".into())
        });
        let reports = c.run();
        assert_eq!(*log.borrow(), vec!["stop", "finalise"]);
        assert_eq!(
            reports[0].outcome,
            StepOutcome::Failed("would not stop".into())
        );
        assert!(matches!(reports[1].outcome, StepOutcome::Skipped(_)));
        assert_eq!(reports[2].outcome, StepOutcome::Ok("2 files".into()));
    }

    #[test]
    fn a_step_is_retried_up_to_its_attempts() {
        let mut tries = 0;
        let mut c = CleanupCoordinator::<String>::new();
        c.step("verify", &[], false, 3, Duration::ZERO, || {
            tries += 1;
            if tries < 3 {
                Err("still running".into())
            } else {
                Ok("stopped".into())
            }
        });
        let reports = c.run();
        assert_eq!(reports[0].attempts, 3);
        assert_eq!(reports[0].outcome, StepOutcome::Ok("stopped".into()));
    }
}
