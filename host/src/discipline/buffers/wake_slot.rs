//! Waiting without allocating: the slot one end of an edge parks in, woken by the other end.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::ORD;
use sync::{fence, AtomicBool, AtomicU32, Thread, ThreadKey};

/// What the protocol is built from: std's atomics and threads, or, in the model test
/// (`--cfg loom`, see `loom_tests` below), loom's, so that the model checks this very code.
#[cfg(not(all(test, loom)))]
mod sync {
    pub(super) use std::hint::spin_loop;
    pub(super) use std::sync::atomic::{fence, AtomicBool, AtomicU32};
    pub(super) use std::thread::{current, park, park_timeout, Thread};

    /// Which thread this is, without the reference-count change `thread::current()` makes:
    /// a number given to each thread the first time it asks, never given again.
    pub(super) type ThreadKey = u64;

    pub(super) fn key() -> ThreadKey {
        use std::cell::Cell;
        use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        thread_local!(static KEY: Cell<u64> = const { Cell::new(0) });
        KEY.with(|k| {
            if k.get() == 0 {
                k.set(NEXT.fetch_add(1, Relaxed));
            }
            k.get()
        })
    }
}

#[cfg(all(test, loom))]
mod sync {
    pub(super) use loom::hint::spin_loop;
    pub(super) use loom::sync::atomic::{fence, AtomicBool, AtomicU32};
    pub(super) use loom::thread::{current, park, Thread};

    pub(super) type ThreadKey = loom::thread::ThreadId;

    pub(super) fn key() -> ThreadKey {
        current().id()
    }

    /// loom has no timed park. A timed park may return early anyway, so a yield is one of the
    /// behaviours the real one has (the model tests wait without a deadline).
    pub(super) fn park_timeout(_: std::time::Duration) {
        loom::thread::yield_now();
    }
}

/// One side's place to wait without allocating: the thread that waits there, and whether it is
/// waiting now. The other side calls [`WakeSlot::wake`] after every change the waiter may be
/// waiting for.
///
/// The waiter announces itself (`waiting = true`), then checks its condition once more before
/// parking; the waker changes the state, then reads `waiting`. Both use sequentially consistent
/// fences, so at least one of them sees the other: either the waiter finds the change, or the
/// waker unparks it (an unpark that comes before the park makes the park return at once).
pub(crate) struct WakeSlot {
    /// The first thread that waits here (its key and handle). Each end of an edge is used by
    /// one stage thread; a different thread waiting later (an end moved between threads) polls
    /// every millisecond instead of relying on being unparked.
    thread: OnceLock<(ThreadKey, Thread)>,
    waiting: AtomicBool,
    /// How much the waiter waits for (blocks queued, or room): [`WakeSlot::wake_if`] wakes it
    /// only when there is that much. 1 except during [`WakeSlot::wait_batched`].
    want: AtomicU32,
}

impl Default for WakeSlot {
    fn default() -> Self {
        WakeSlot {
            thread: OnceLock::new(),
            waiting: AtomicBool::new(false),
            want: AtomicU32::new(1),
        }
    }
}

/// How many times a waiter retries before parking (a block often arrives within microseconds).
/// Once in the model test: every retry would multiply the interleavings it explores, and the
/// retries before parking are not part of the protocol.
const SPINS: u32 = if cfg!(all(test, loom)) { 1 } else { 64 };
/// How often a waiter that is not the slot's registered thread checks again.
const POLL: Duration = Duration::from_millis(1);

impl WakeSlot {
    /// Whether the calling thread is the one registered here (the first to wait registers).
    fn registered(&self) -> bool {
        let me = sync::key();
        self.thread.get_or_init(|| (me, sync::current())).0 == me
    }

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
            sync::spin_loop();
        }
        let registered = self.registered();
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
                Some(n) => sync::park_timeout(n),
                None => sync::park(),
            }
            self.waiting.store(false, ORD);
        }
    }

    /// Wait once, for at most `nap`, to be woken when there are `want` (blocks, or room), so
    /// that a fast other side wakes this one once per `want` changes instead of once per change.
    /// `ready` says whether there is that much already (or the edge ended). Whatever woke it (or
    /// the nap ending), the caller then takes what there is and waits as usual ([`Self::wait`])
    /// for the rest: a batch that never fills costs at most `nap` of latency, never a hang.
    /// Only the slot's registered thread batches (another is not unparked anyway).
    pub(super) fn wait_batched(&self, want: u32, nap: Duration, ready: impl Fn() -> bool) {
        if want <= 1 || !self.registered() {
            return;
        }
        self.want.store(want, ORD);
        self.waiting.store(true, ORD);
        fence(ORD);
        if !ready() {
            sync::park_timeout(nap);
        }
        self.waiting.store(false, ORD);
        self.want.store(1, ORD);
    }

    /// Wake the waiter if one is waiting and `have` (the blocks queued, or the room, after the
    /// change) is what it waits for. Call after the change.
    pub(super) fn wake_if(&self, have: impl FnOnce() -> usize) {
        fence(ORD);
        if self.waiting.load(ORD) && have() >= self.want.load(ORD) as usize {
            if let Some((_, t)) = self.thread.get() {
                t.unpark();
            }
        }
    }

    /// Wake the waiter, if one is waiting. Call after the change it may be waiting for.
    pub(super) fn wake(&self) {
        fence(ORD);
        if self.waiting.load(ORD) {
            if let Some((_, t)) = self.thread.get() {
                t.unpark();
            }
        }
    }
}

/// The model test of the wake-up protocol, built only with `--cfg loom` for this crate's unit
/// tests. scripts/test.sh passes the flag to the host crate alone, so no dependency is rebuilt:
///
/// ```sh
/// cargo rustc -p tapeline --lib --profile test --message-format=json -- --cfg loom \
///   | grep -o '"executable":"[^"]*"'      # the test binary
/// target/debug/deps/tapeline-<hash> loom_ --test-threads=1
/// ```
///
/// loom runs each body under every interleaving of its threads (up to a bound on preemptions)
/// and every reordering of memory operations the orderings allow; a waiter that stays parked
/// for good ends the model with "deadlock", which fails the test. (The slot's `OnceLock` stays
/// std's: it is set by the waiter before it first announces itself, so it is not part of the
/// race the model explores.)
///
/// Weaken either `fence(ORD)` above (`AcqRel`, or no fence) and these tests fail: the waiter's
/// announcement and the waker's change can then each miss the other.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::WakeSlot;
    use loom::sync::atomic::{AtomicBool, AtomicUsize};
    use loom::sync::Arc;
    use loom::thread;
    use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

    /// At most this many preemptions per execution (`LOOM_MAX_PREEMPTIONS` overrides): a lost
    /// wake-up needs one or two; 5 takes a few seconds for all three models in a debug build
    /// (6 takes about 4 times that, 8 about 30 times).
    const PREEMPTIONS: usize = 5;

    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound.get_or_insert(PREEMPTIONS);
        builder.check(f);
    }

    #[test]
    fn loom_a_waiter_always_sees_the_change_or_is_woken() {
        model(|| {
            let slot = Arc::new(WakeSlot::default());
            let flag = Arc::new(AtomicBool::new(false));
            let waker = {
                let (slot, flag) = (Arc::clone(&slot), Arc::clone(&flag));
                thread::spawn(move || {
                    flag.store(true, Release);
                    slot.wake();
                })
            };
            assert_eq!(
                slot.wait(None, || flag.load(Acquire).then_some(())),
                Some(())
            );
            waker.join().unwrap();
        });
    }

    /// Blocks a queue of this many holds at once: one, so the producer waits for room as
    /// often as the consumer waits for data.
    const CAP: usize = 1;

    /// An edge reduced to its protocol, used the way `Producer` and `Consumer` use theirs
    /// (`Block` policy): a single-producer single-consumer ring whose indices are published
    /// with release/acquire only (weaker than the crossbeam channel of a real edge, so what
    /// holds here holds there), the `producer_gone` and `closed` flags, and two wake slots.
    #[derive(Default)]
    struct Edge {
        slots: [AtomicUsize; CAP],
        head: AtomicUsize,
        tail: AtomicUsize,
        producer_gone: AtomicBool,
        closed: AtomicBool,
        consumer_wake: WakeSlot,
        producer_wake: WakeSlot,
    }

    // `% CAP` stays for a larger `CAP`.
    #[allow(clippy::modulo_one)]
    impl Edge {
        fn try_push(&self, v: usize) -> bool {
            let tail = self.tail.load(Relaxed);
            if tail - self.head.load(Acquire) == CAP {
                return false;
            }
            self.slots[tail % CAP].store(v, Relaxed);
            self.tail.store(tail + 1, Release);
            true
        }

        fn try_pop(&self) -> Option<usize> {
            let head = self.head.load(Relaxed);
            if self.tail.load(Acquire) == head {
                return None;
            }
            let v = self.slots[head % CAP].load(Relaxed);
            self.head.store(head + 1, Release);
            Some(v)
        }

        /// `Producer::push`: wait for room (or for the consumer to leave), then wake it.
        fn push(&self, v: usize) -> Result<(), ()> {
            let sent = self.producer_wake.wait(None, || {
                if self.closed.load(SeqCst) {
                    return Some(false);
                }
                self.try_push(v).then_some(true)
            });
            if sent != Some(true) {
                return Err(());
            }
            self.consumer_wake.wake();
            Ok(())
        }

        /// Dropping the `Producer`.
        fn producer_leaves(&self) {
            self.producer_gone.store(true, SeqCst);
            self.consumer_wake.wake();
        }

        /// `Consumer::recv`: the next value, `None` once the producer is gone and all is taken.
        fn recv(&self) -> Option<usize> {
            self.consumer_wake
                .wait(None, || {
                    let gone = self.producer_gone.load(SeqCst);
                    match self.try_pop() {
                        Some(v) => {
                            self.producer_wake.wake();
                            Some(Some(v))
                        }
                        None if gone => Some(None),
                        None => None,
                    }
                })
                .flatten()
        }

        /// Dropping the `Consumer`: close, discard what is queued, wake the producer.
        fn close(&self) {
            self.closed.store(true, SeqCst);
            while self.try_pop().is_some() {}
            self.producer_wake.wake();
        }
    }

    #[test]
    fn loom_edge_delivers_every_block_in_order_and_both_ends_finish() {
        const N: usize = 3;
        model(|| {
            let edge = Arc::new(Edge::default());
            let producer = {
                let edge = Arc::clone(&edge);
                thread::spawn(move || {
                    for v in 0..N {
                        edge.push(v).expect("the consumer stays");
                    }
                    edge.producer_leaves();
                })
            };
            let got: Vec<usize> = std::iter::from_fn(|| edge.recv()).collect();
            assert_eq!(got, (0..N).collect::<Vec<_>>());
            producer.join().unwrap();
        });
    }

    #[test]
    fn loom_edge_closing_the_consumer_releases_a_waiting_producer() {
        model(|| {
            let edge = Arc::new(Edge::default());
            let producer = {
                let edge = Arc::clone(&edge);
                thread::spawn(move || {
                    // Queued: the one taken, one before the close drains it, one that slips
                    // in between the close and the drain; the next push must fail.
                    let mut queued = 0;
                    while edge.push(queued).is_ok() {
                        queued += 1;
                        assert!(queued <= CAP + 2, "pushes kept succeeding after the close");
                    }
                    edge.producer_leaves();
                })
            };
            assert_eq!(edge.recv(), Some(0));
            edge.close();
            producer.join().unwrap();
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::sync::key;

    /// A thread keeps its key, and no two threads share one, even when one has ended before
    /// the other began (a slot registered by a thread that is gone must not take a newcomer
    /// for it: the newcomer would park without ever being unparked).
    #[test]
    fn every_thread_has_its_own_key_for_good() {
        let mine = key();
        assert_eq!(key(), mine);
        let first = std::thread::spawn(key).join().unwrap();
        let second = std::thread::spawn(key).join().unwrap();
        assert!(mine != first && first != second && mine != second);
    }
}
