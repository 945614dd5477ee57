//! Stage isolation: a stage with `isolate = true` runs its plugin in a child process (the
//! `tapeline` binary itself, `tapeline __stage`), so that a crash, an abort, an exit, running
//! out of memory or a call that never returns ends that process, not the host.
//!
//! - [`proxy`]: the host side, a [`proxy::ChildStage`] that stands where the plugin instance
//!   would and makes each call in the child; the coordinator governs it like any instance.
//! - [`child`]: the child side, serving the calls.
//! - [`protocol`]: the socket's frames (fixed headers per block, JSON only for setup, errors
//!   and the final report); [`shm`]: the samples, in shared memory; [`exit`]: how a process
//!   ended, in words.
//!
//! Why these pieces: `std`'s `UnixStream::pair` carries control and doubles as the wake-up (one
//! small write and read each way per block, the same syscalls an eventfd would cost), the
//! samples cross in a `memmap2` mapping of a file in `/dev/shm` (`bytemuck` views it as `f32`),
//! and `rustix` sets the limits (`setrlimit`) and sends the watchdog's SIGKILL.

pub mod child;
pub mod crash_note;
pub mod exit;
pub mod protocol;
pub mod proxy;
pub mod shm;
