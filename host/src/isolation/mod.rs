//! Stage isolation: a stage with `isolate = true` runs its plugin in a child process (the
//! `tapeline` binary itself, `tapeline __stage`), so that a crash, an abort, an exit, running
//! out of memory or a call that never returns ends that process, not the host.
//!
//! - [`proxy`]: the host side, a [`proxy::ChildStage`] that stands where the plugin instance
//!   would and makes each call in the child; the coordinator governs it like any instance.
//!   [`proxy_process`]: a processor's calls, kept in flight in a [`ring`] of slots so that host
//!   and child do not wait for each other per block.
//! - [`child`]: the child side, serving the calls.
//! - [`protocol`]: the socket's frames (fixed headers, JSON only for setup, errors and the final
//!   report); [`shm`]: the shared memory's layout (the ring's counters, the slots' descriptions
//!   and samples); [`exit`]: how a process ended, in words.
//!
//! Why these pieces: `std`'s `UnixStream::pair` carries control and doubles as the doorbell (a
//! header-only frame, sent only to a side that said it sleeps; the socket's end is also how
//! either side learns the other died, which a futex would not say), the samples and the ring's
//! counters are in a `memmap2` mapping of a `memfd` (`bytemuck` views it as `f32`) whose
//! descriptor crosses the socket once (`SCM_RIGHTS`), and `rustix` makes the memfd, passes the
//! descriptor, sets the limits (`setrlimit`) and sends the watchdog's SIGKILL.

pub mod child;
pub mod crash_note;
pub mod exit;
pub mod protocol;
pub mod proxy;
pub mod proxy_capture;
pub mod proxy_process;
pub mod proxy_stats;
pub mod ring;
pub mod shm;
