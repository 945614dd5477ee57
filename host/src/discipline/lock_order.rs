//! The lock order of the host: the one place that lists every lock and its level.
//!
//! Rule: a thread may only acquire a lock whose level is **strictly higher** than every level it
//! already holds. Two locks at the same level are never held together (this also forbids taking
//! the same lock twice, and holding two state machines' state locks at once). Callbacks
//! (entry actions, plugin code) run with no lock held.
//!
//! Every host mutex is an [`OrderedMutex`] created with its [`LockLevel`]. In debug builds
//! (`cfg(debug_assertions)`) each `lock()` checks a thread-local stack of the levels held by the
//! current thread and panics on a violation *before* blocking, so a would-be deadlock becomes a
//! deterministic test failure naming both locks. In release builds the check and the thread-local
//! stack are compiled out: `lock()` is `parking_lot::Mutex::lock()`.
//!
//! Adding a lock: add a variant here (leave gaps between discriminants so later locks can be
//! slotted in), document what it guards and who may take it, and create the mutex with
//! [`OrderedMutex::new`].

use std::fmt;
use std::ops::{Deref, DerefMut};

/// Every lock in the host, with its level. Acquire in ascending order only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum LockLevel {
    /// One state machine's current state and transition history
    /// (`discipline::state_machine::StateMachine`). Never held while entry actions
    /// run.
    StateMachine = 20,
    /// The monitor's sinks: the `--metrics` file writer. Taken by the coordinator's thread
    /// while it hands a snapshot on; never by a stage thread.
    Monitor = 30,
    /// The run's list of internal errors (transitions the state table refused). Taken only on
    /// that error path, right after the state machine's own lock was released. Leaf lock.
    InternalErrors = 40,
    /// The last line an isolated stage's process wrote on stderr: set by the thread that passes
    /// its output on, read when the process died. Leaf lock.
    ChildOutput = 45,
    /// The `--log-json` file writer, taken inside `tracing` while an event is written. Leaf
    /// lock; stage threads do not log after start, so only the coordinator and the CLI take it.
    LogFile = 50,
}

impl LockLevel {
    /// Every level, in ascending order.
    pub const ALL: [LockLevel; 5] = [
        LockLevel::StateMachine,
        LockLevel::Monitor,
        LockLevel::InternalErrors,
        LockLevel::ChildOutput,
        LockLevel::LogFile,
    ];

    /// The numeric level (the discriminant).
    pub const fn level(self) -> u16 {
        self as u16
    }

    /// The lock's name, as used in violation messages.
    pub const fn name(self) -> &'static str {
        match self {
            LockLevel::StateMachine => "StateMachine",
            LockLevel::Monitor => "Monitor",
            LockLevel::InternalErrors => "InternalErrors",
            LockLevel::ChildOutput => "ChildOutput",
            LockLevel::LogFile => "LogFile",
        }
    }
}

impl fmt::Display for LockLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (level {})", self.name(), self.level())
    }
}

#[cfg(debug_assertions)]
mod held {
    use super::LockLevel;
    use std::cell::RefCell;

    thread_local! {
        /// Levels held by this thread, strictly ascending (the order check guarantees it).
        static HELD: RefCell<Vec<LockLevel>> = const { RefCell::new(Vec::new()) };
    }

    /// Panics if `level` may not be acquired while the current thread holds what it holds.
    pub(super) fn check(level: LockLevel) {
        let highest = HELD.with(|h| h.borrow().last().copied());
        if let Some(highest) = highest {
            if level <= highest {
                panic!("lock order violation: acquiring {level} while holding {highest}");
            }
        }
    }

    pub(super) fn push(level: LockLevel) {
        HELD.with(|h| h.borrow_mut().push(level));
    }

    pub(super) fn pop(level: LockLevel) {
        // `try_with`: a guard may be dropped during thread-local teardown.
        let popped = HELD.try_with(|h| {
            let mut h = h.borrow_mut();
            // Guards may be dropped out of order; levels are unique on the stack.
            if let Some(pos) = h.iter().rposition(|&l| l == level) {
                h.remove(pos);
            }
        });
        if popped.is_err() {
            // This thread's locals are being destroyed: its stack of held levels is gone
            // already, and no lock is taken on it again. Nothing to forget.
        }
    }

    #[cfg(test)]
    pub(super) fn snapshot() -> Vec<LockLevel> {
        HELD.with(|h| h.borrow().clone())
    }
}

/// A `parking_lot::Mutex` with a place in the lock order. See the module documentation.
pub struct OrderedMutex<T: ?Sized> {
    level: LockLevel,
    inner: parking_lot::Mutex<T>,
}

impl<T> OrderedMutex<T> {
    /// A new mutex at `level`.
    pub const fn new(level: LockLevel, value: T) -> Self {
        OrderedMutex {
            level,
            inner: parking_lot::Mutex::new(value),
        }
    }

    /// Consumes the mutex, returning the value.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> OrderedMutex<T> {
    /// This mutex's level.
    pub fn level(&self) -> LockLevel {
        self.level
    }

    /// Locks the mutex, blocking until it is free.
    ///
    /// # Panics
    /// In debug builds, if the current thread already holds a lock at this level or higher
    /// (`lock order violation: acquiring X (level n) while holding Y (level m)`).
    #[inline]
    pub fn lock(&self) -> OrderedMutexGuard<'_, T> {
        #[cfg(debug_assertions)]
        held::check(self.level);
        let guard = self.inner.lock();
        #[cfg(debug_assertions)]
        held::push(self.level);
        OrderedMutexGuard {
            guard,
            #[cfg(debug_assertions)]
            level: self.level,
        }
    }

    /// Mutable access without locking (the borrow proves exclusivity).
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }
}

impl<T: ?Sized> fmt::Debug for OrderedMutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrderedMutex")
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

/// The guard of an [`OrderedMutex`]; releases the lock (and, in debug builds, pops its level
/// from the thread's held stack) on drop.
#[must_use = "if unused the mutex is released immediately"]
pub struct OrderedMutexGuard<'a, T: ?Sized> {
    guard: parking_lot::MutexGuard<'a, T>,
    #[cfg(debug_assertions)]
    level: LockLevel,
}

impl<T: ?Sized> Deref for OrderedMutexGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: ?Sized> DerefMut for OrderedMutexGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

#[cfg(debug_assertions)]
impl<T: ?Sized> Drop for OrderedMutexGuard<'_, T> {
    fn drop(&mut self) {
        held::pop(self.level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_unique_and_ascending() {
        for pair in LockLevel::ALL.windows(2) {
            assert!(
                pair[0].level() < pair[1].level(),
                "{} !< {}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn display_names_level() {
        assert_eq!(LockLevel::Monitor.to_string(), "Monitor (level 30)");
    }

    #[test]
    fn in_order_nesting_works() {
        let a = OrderedMutex::new(LockLevel::StateMachine, 1);
        let b = OrderedMutex::new(LockLevel::Monitor, 2);
        let c = OrderedMutex::new(LockLevel::InternalErrors, 3);
        {
            let ga = a.lock();
            let gb = b.lock();
            let mut gc = c.lock();
            *gc += *ga + *gb;
        }
        assert_eq!(*c.lock(), 6);
        // Sequential (non-nested) use in any order is fine.
        drop(c.lock());
        drop(a.lock());
    }

    #[test]
    fn out_of_order_release_is_tracked() {
        let a = OrderedMutex::new(LockLevel::StateMachine, ());
        let b = OrderedMutex::new(LockLevel::Monitor, ());
        let ga = a.lock();
        let gb = b.lock();
        drop(ga);
        #[cfg(debug_assertions)]
        assert_eq!(held::snapshot(), vec![LockLevel::Monitor]);
        drop(gb);
        #[cfg(debug_assertions)]
        assert!(held::snapshot().is_empty());
        // Everything released: any lock may be taken again.
        let _ga = a.lock();
        let _gb = b.lock();
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(
        expected = "lock order violation: acquiring StateMachine (level 20) while holding Monitor (level 30)"
    )]
    fn out_of_order_panics() {
        let monitor = OrderedMutex::new(LockLevel::Monitor, ());
        let sm = OrderedMutex::new(LockLevel::StateMachine, ());
        let _g = monitor.lock();
        let _h = sm.lock();
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(
        expected = "lock order violation: acquiring InternalErrors (level 40) while holding InternalErrors (level 40)"
    )]
    fn same_lock_twice_panics() {
        let m = OrderedMutex::new(LockLevel::InternalErrors, ());
        let _g = m.lock();
        let _h = m.lock();
    }

    #[test]
    #[cfg(debug_assertions)]
    fn violation_leaves_stack_consistent() {
        let hi = OrderedMutex::new(LockLevel::InternalErrors, ());
        let lo = OrderedMutex::new(LockLevel::StateMachine, ());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _g = hi.lock();
            let _h = lo.lock();
        }));
        assert!(r.is_err());
        assert!(held::snapshot().is_empty());
        assert!(!lo.inner.is_locked() && !hi.inner.is_locked());
    }
}
