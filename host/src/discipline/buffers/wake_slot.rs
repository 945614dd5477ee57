//! Waiting without allocating: the slot one end of an edge parks in, woken by the other end.

use std::sync::atomic::{fence, AtomicBool};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::ORD;

/// One side's place to wait without allocating: the thread that waits there, and whether it is
/// waiting now. The other side calls [`WakeSlot::wake`] after every change the waiter may be
/// waiting for.
///
/// The waiter announces itself (`waiting = true`), then checks its condition once more before
/// parking; the waker changes the state, then reads `waiting`. Both use sequentially consistent
/// fences, so at least one of them sees the other: either the waiter finds the change, or the
/// waker unparks it (an unpark that comes before the park makes the park return at once).
#[derive(Default)]
pub(crate) struct WakeSlot {
    /// The first thread that waits here. Each end of an edge is used by one stage thread; a
    /// different thread waiting later (an end moved between threads) polls every millisecond
    /// instead of relying on being unparked.
    thread: OnceLock<Thread>,
    waiting: AtomicBool,
}

/// How many times a waiter retries before parking (a block often arrives within microseconds).
const SPINS: u32 = 64;
/// How often a waiter that is not the slot's registered thread checks again.
const POLL: Duration = Duration::from_millis(1);

impl WakeSlot {
    /// Run `attempt` until it returns `Some`, parking between tries; `None` if `deadline`
    /// passes first. Allocation-free once the slot has its thread (`thread::current` of a
    /// spawned thread is a reference-count increment).
    pub(super) fn wait<T>(
        &self,
        deadline: Option<Instant>,
        mut attempt: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        for _ in 0..SPINS {
            if let Some(v) = attempt() {
                return Some(v);
            }
            std::hint::spin_loop();
        }
        let me = std::thread::current();
        let registered = self.thread.get_or_init(|| me.clone()).id() == me.id();
        loop {
            self.waiting.store(true, ORD);
            fence(ORD);
            if let Some(v) = attempt() {
                self.waiting.store(false, ORD);
                return Some(v);
            }
            let mut nap = if registered { None } else { Some(POLL) };
            if let Some(d) = deadline {
                let now = Instant::now();
                if now >= d {
                    self.waiting.store(false, ORD);
                    return None;
                }
                nap = Some(nap.map_or(d - now, |n| n.min(d - now)));
            }
            match nap {
                Some(n) => std::thread::park_timeout(n),
                None => std::thread::park(),
            }
            self.waiting.store(false, ORD);
        }
    }

    /// Wake the waiter, if one is waiting. Call after the change it may be waiting for.
    pub(super) fn wake(&self) {
        fence(ORD);
        if self.waiting.load(ORD) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }
}
