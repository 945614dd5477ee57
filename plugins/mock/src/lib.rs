//! Mock plugins for testing pipelines and the host's discipline: `mock-capture`,
//! `mock-process` and `mock-storage`.
//!
//! The capture produces a deterministic, sequence-numbered signal (see [`signal`]) so that
//! `mock-storage` can tell, frame by frame, whether anything was lost, duplicated, reordered or
//! altered on the way. Each mock injects faults from its config table (`panic_at_block`,
//! `error_at_block` + `error_kind`, `stall_at_block` + `stall_ms`, `slow_us`,
//! `fail_start_times`; `device_lost_at_block` + `back_after_ms` for the capture,
//! `fail_finalize` for the storage; `crash` + `crash_at_block`, which really crash the process,
//! see [`crash`]), alone or combined. In one block they act in this order: slow, stall, crash,
//! panic, error, device loss.
//!
//! Faults fire once per stage and process (see [`faults`]), so a stage the host restarts runs on
//! cleanly and its signal continues where it stopped. Crash faults fire once per stage and run,
//! even when each instance runs in a fresh process.

mod capture;
pub mod crash;
pub mod faults;
mod process;
pub mod signal;
mod storage;

pub use capture::{MockCapture, MockCaptureConfig};
pub use process::{MockProcess, MockProcessConfig};
pub use storage::{MockStorage, MockStorageConfig};

tapeline_plugin_api::export_plugin!(
    capture: MockCapture,
    process: MockProcess,
    storage: MockStorage,
);

#[cfg(test)]
mod tests;
