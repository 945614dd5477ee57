//! # tapeline
//!
//! The host: it loads capture, processing and storage plugins through the stable ABI of
//! `tapeline-plugin-api`, joins them into a pipeline described in TOML, and applies one
//! discipline to every stage. Data flows one way: config → plan → loaded stages → running graph
//! → report.
//!
//! - [`config`]: pipeline TOML → checked plan, with positioned diagnostics.
//! - [`plugins`]: discovery, loading, ABI checks, the registry by name.
//! - [`repair`]: fixing the header of a WAV file left by a crash.
//! - [`discipline`]: state machine, buffers (edges), cleanup, lock order.
//! - [`coordinator`]: components, the stage loop, the running graph, cleanup, the summary.
//! - [`isolation`]: stages in their own process (`isolate = true`).
//! - [`testing`]: `tapeline test`, pipeline tests for testers.
//! - [`cli`]: the `tapeline` command line.

pub mod cli;
pub mod config;
pub mod coordinator;
pub mod discipline;
pub mod isolation;
pub mod plugins;
pub mod repair;
pub mod testing;
