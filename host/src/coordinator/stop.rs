//! How the coordinator tells stage threads to stop, and the one interruptible wait every stage
//! uses (restart backoff, the pause of an ignored failing source).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Flags the coordinator raises; stage threads read them between plugin calls.
#[derive(Debug, Default)]
pub struct Stop {
    /// The run is ending (sources ended, `--for`, a signal, a failure): waits end at once.
    requested: AtomicBool,
    /// Captures stop producing.
    captures: AtomicBool,
    /// Consumers stop waiting for more input and drop what is queued (a fast stop, or a
    /// producer that will never end).
    abandon: AtomicBool,
}

/// How an interruptible wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nap {
    /// The whole time passed.
    Elapsed,
    /// The run is ending (a clean stop): stop waiting, but queued audio is still drained.
    Stopping,
    /// A fast stop: nothing more is handled.
    Abandoned,
}

/// The longest single wait, however far a backoff has doubled.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// How often a wait looks at the flags.
const TICK: Duration = Duration::from_millis(10);

impl Stop {
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
    }
    pub fn stop_captures(&self) {
        self.request();
        self.captures.store(true, Ordering::SeqCst);
    }
    pub fn abandon(&self) {
        self.stop_captures();
        self.abandon.store(true, Ordering::SeqCst);
    }
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }
    pub fn captures_stopped(&self) -> bool {
        self.captures.load(Ordering::Relaxed)
    }
    pub fn is_abandoned(&self) -> bool {
        self.abandon.load(Ordering::Relaxed)
    }

    /// Sleep for `wait` (at most [`MAX_WAIT`]) in short naps; ends early when the run starts
    /// stopping, so that neither `--for` nor a signal is held up by a backoff.
    pub fn nap(&self, wait: Duration) -> Nap {
        let until = Instant::now() + wait.min(MAX_WAIT);
        loop {
            if self.is_abandoned() {
                return Nap::Abandoned;
            }
            if self.is_requested() {
                return Nap::Stopping;
            }
            let now = Instant::now();
            if now >= until {
                return Nap::Elapsed;
            }
            std::thread::sleep((until - now).min(TICK));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nap_ends_within_a_tick_of_a_stop_request() {
        let stop = std::sync::Arc::new(Stop::default());
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            let began = Instant::now();
            (s.nap(Duration::from_secs(5)), began.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        stop.request();
        let (nap, took) = t.join().unwrap();
        assert_eq!(nap, Nap::Stopping);
        assert!(took < Duration::from_millis(500), "{took:?}");
        assert_eq!(stop.nap(Duration::from_secs(5)), Nap::Stopping);
        stop.abandon();
        assert_eq!(stop.nap(Duration::from_secs(5)), Nap::Abandoned);
    }

    #[test]
    fn a_nap_without_a_stop_lasts_its_time() {
        let began = Instant::now();
        assert_eq!(Stop::default().nap(Duration::from_millis(30)), Nap::Elapsed);
        assert!(began.elapsed() >= Duration::from_millis(30));
    }
}
