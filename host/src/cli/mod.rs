//! The `tapeline` command line.
//!
//! Conventions: `--help` on every command; results on stdout, logs on stderr (`RUST_LOG`
//! respected); exit code 0 on success, 1 on a runtime failure, 2 on bad input.

use crate::discipline::lock_order::{LockLevel, OrderedMutex, OrderedMutexGuard};

mod devices;
mod graph;
mod live;
mod new_plugin;
mod plugins;
mod repair;
mod run;
mod test;
mod text;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::plugins::Registry;

/// Tapeline: load capture, processing and storage plugins and run them as one pipeline.
#[derive(Parser, Debug)]
#[command(name = "tapeline", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// Also search this folder for plugins (repeatable; searched before TAPELINE_PLUGIN_PATH and
    /// the folder of the tapeline executable). It must exist.
    #[arg(long = "plugin-dir", value_name = "DIR", global = true)]
    pub plugin_dirs: Vec<PathBuf>,
    /// Show full reports (e.g. abi_stable's layout report) in errors.
    #[arg(long, short, global = true)]
    pub verbose: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a pipeline until its sources end, `--for` passes, or SIGINT/SIGTERM (a second signal
    /// stops fast); storage is finalised in every case. Exit 0, 1 on a runtime failure, 2 on
    /// bad input.
    ///
    /// On a terminal a live view shows each stage, queue, level and the progress of finite
    /// sources; at the end a summary lists every stage's state history and work, every edge's
    /// counters and every cleanup step. When a stage fails, a state dump (JSON) is written next
    /// to the outputs and its path printed. A plugin call that lasts longer than the pipeline's
    /// `stall_timeout_ms` is reported by the watchdog and handled by the stage's `on_error`.
    ///
    /// `tapeline run -` reads the pipeline from standard input; `--summary-json -` writes the
    /// summary JSON to stdout (the human summary then goes to stderr).
    Run(run::RunArgs),
    /// List installed plugins (name, kind, version, library file, what each does).
    Plugins(plugins::PluginsArgs),
    /// Load one library file and explain, step by step, why it is or is not a usable plugin.
    Doctor(plugins::DoctorArgs),
    /// Check pipeline files (syntax, keys, plugins, inputs, cycles, formats, plugin configs,
    /// size limits) without starting anything. Exits 0 only if every file is valid; `-` reads
    /// one from standard input.
    Validate(validate::ValidateArgs),
    /// Print a pipeline's stages, ports and edges (with each edge's buffer policy) as Graphviz
    /// dot or Mermaid.
    Graph(graph::GraphArgs),
    /// Print a JSON Schema of pipeline files, including every installed plugin's config, for
    /// editor completion (see docs/pipeline-reference.md).
    Schema(graph::SchemaArgs),
    /// Fix the header of WAV recordings a crash left behind, keeping every complete frame that
    /// reached the disk.
    ///
    /// Use it after a crash, a power loss or a `kill -9` stopped a recording before wav-writer
    /// could finalise it. Such a file already plays, but its header only counts the audio up to
    /// the last sync (`sync_interval_ms`, default 1 s); repair makes the header count every
    /// complete frame on disk and cuts off a trailing partial frame. Audio bytes are never
    /// changed. Not for a recording that is still running.
    ///
    /// A file whose header already matches its length is left untouched, byte for byte, and so
    /// is anything that is not a WAV/RF64 file. One line per file on stdout; exit 0 if every file
    /// is fine now, 2 if one was missing or not a repairable WAV, 1 if writing failed.
    Repair(repair::RepairArgs),
    /// List audio input devices: index, name, channel counts, sample rates and formats, the
    /// default marked with `*`. The index or name goes into a `cpal-capture` stage's `device`.
    ///
    /// Needs a build with audio-device support, which a plain `cargo build` leaves out:
    /// `bash scripts/build-devices.sh` builds it (see docs/devices.md).
    Devices(devices::DevicesArgs),
    /// Run pipeline tests: `*.test.toml` files that name a pipeline, replace stages and say
    /// what must hold (exit code, stage and edge counters, summary fields, WAV files read back).
    /// One line per test; `--junit FILE` for CI. Exit 0 if all pass, 1 if one fails, 2 if a
    /// test file cannot be used. See docs/testing-with-mocks.md.
    Test(test::TestArgs),
    /// Create a plugin crate: NAME/ with Cargo.toml, src/lib.rs (a gain, a sine source or a
    /// frame-counting sink, with a unit test) and example.toml; it builds with `cargo build`,
    /// loads (`tapeline doctor`) and runs in its example pipeline. See docs/plugin-guide.md.
    NewPlugin(new_plugin::NewPluginArgs),
    /// The process of one isolated stage (`isolate = true`), started by `tapeline run` with its
    /// socket as standard input. Not for people.
    #[command(name = "__stage", hide = true)]
    Stage,
}

/// An error shown to the user: one line, then what to do. `code` is 2 for bad input, 1 for a
/// runtime failure.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub help: Option<String>,
    pub detail: Option<String>,
    pub code: u8,
}

impl CliError {
    pub fn input(message: impl Into<String>, help: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            help: Some(help.into()),
            detail: None,
            code: 2,
        }
    }
    pub fn runtime(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            help: None,
            detail: None,
            code: 1,
        }
    }
    pub fn with_detail(mut self, detail: Option<String>) -> Self {
        self.detail = detail;
        self
    }
}

pub type CliResult = Result<ExitCode, CliError>;

/// Parse arguments, run the command, print any error, return the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_json = match &cli.command {
        Command::Run(args) => args.log_json.clone(),
        _ => None,
    };
    if let Err(e) = init_tracing(log_json.as_deref()) {
        eprintln!("error: {}", e.message);
        if let Some(help) = &e.help {
            eprintln!("  help: {help}");
        }
        return ExitCode::from(e.code);
    }
    let verbose = cli.global.verbose;
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.message);
            if let Some(help) = &e.help {
                eprintln!("  help: {help}");
            }
            match (&e.detail, verbose) {
                (Some(d), true) => eprintln!("\n{d}"),
                (Some(_), false) => eprintln!("  (run with --verbose for the full report)"),
                _ => {}
            }
            ExitCode::from(e.code)
        }
    }
}

fn dispatch(cli: Cli) -> CliResult {
    if !matches!(cli.command, Command::Stage) {
        check_plugin_dirs(&cli.global)?;
    }
    match cli.command {
        Command::Run(args) => run::run(&cli.global, args),
        Command::Plugins(args) => plugins::plugins(&cli.global, args),
        Command::Doctor(args) => plugins::doctor(&cli.global, args),
        Command::Validate(args) => validate::validate(&cli.global, args),
        Command::Graph(args) => graph::graph(&cli.global, args),
        Command::Schema(args) => graph::schema(&cli.global, args),
        Command::Repair(args) => repair::repair(&cli.global, args),
        Command::Devices(args) => devices::devices(&cli.global, args),
        Command::Test(args) => test::test(&cli.global, args),
        Command::NewPlugin(args) => new_plugin::new_plugin(&cli.global, args),
        Command::Stage => Ok(crate::isolation::child::serve()),
    }
}

/// Every `--plugin-dir` is an existing folder.
fn check_plugin_dirs(global: &GlobalArgs) -> Result<(), CliError> {
    for dir in &global.plugin_dirs {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(CliError::input(
                    format!("--plugin-dir: {} is not a folder", dir.display()),
                    "give the folder that holds the plugin libraries; `tapeline doctor FILE` \
                     checks one library file",
                ))
            }
            Err(e) => {
                let what = if e.kind() == std::io::ErrorKind::NotFound {
                    format!("--plugin-dir: the folder {} does not exist", dir.display())
                } else {
                    format!("--plugin-dir: cannot use the folder {}: {e}", dir.display())
                };
                return Err(CliError::input(
                    what,
                    "check the path: it names a folder of plugin libraries, e.g. target/release",
                ));
            }
        }
    }
    Ok(())
}

/// Before reading a pipeline from a terminal's standard input, say so: it waits for the text.
pub(crate) fn note_reading_stdin() {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("reading the pipeline from standard input (end it with Ctrl-D)");
    }
}

/// Write `text` to stdout. A closed pipe (`| head`) is not an error worth a word; any other
/// failure (a full disk) is said on stderr.
pub(crate) fn print_out(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("error: could not write to standard output: {e}");
        }
        _ => {}
    }
}

/// Columns to wrap text to: the terminal's when stdout is one (`COLUMNS` if it cannot be
/// asked), else 100.
pub(crate) fn text_width() -> usize {
    const NOT_A_TERMINAL: usize = 100;
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return NOT_A_TERMINAL;
    }
    terminal_columns()
        .or_else(|| std::env::var("COLUMNS").ok()?.trim().parse().ok())
        .filter(|&w| w > 0)
        .unwrap_or(NOT_A_TERMINAL)
}

/// The width of the terminal on stdout, as the kernel reports it.
#[cfg(unix)]
fn terminal_columns() -> Option<usize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which is valid and
    // exclusively borrowed for the call.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(size.ws_col as usize)
}

#[cfg(not(unix))]
fn terminal_columns() -> Option<usize> {
    None
}

/// Find every plugin on the search path.
pub fn registry(global: &GlobalArgs) -> Registry {
    Registry::discover(&crate::plugins::search_path(&global.plugin_dirs))
}

/// Warnings (or `RUST_LOG`) on stderr; with `--log-json FILE`, every event from `debug` up as
/// JSON lines in FILE too.
fn init_tracing(log_json: Option<&std::path::Path>) -> Result<(), CliError> {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{fmt, EnvFilter};
    // Stage errors and stalls are in the run summary and the final error line; stderr shows
    // only what has no other place (RUST_LOG=warn or info shows more).
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("error"));
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(filter);
    let json = match log_json {
        Some(path) => {
            let file = run::create(path, "--log-json")?;
            Some(
                fmt::layer()
                    .json()
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_thread_names(true)
                    .with_writer(LogFile(OrderedMutex::new(LockLevel::LogFile, file)))
                    .with_filter(LevelFilter::DEBUG),
            )
        }
        None => None,
    };
    install_subscriber(tracing_subscriber::registry().with(stderr).with(json));
    Ok(())
}

/// Make `subscriber` the global one. That fails only when a global subscriber (or `log`
/// logger) is already set, which nothing in the host does: should it happen, say so rather
/// than lose the log without a word.
fn install_subscriber(subscriber: impl tracing_subscriber::util::SubscriberInitExt) {
    if let Err(e) = subscriber.try_init() {
        eprintln!("warning: could not set up logging: {e}");
    }
}

/// The `--log-json` file, behind the host's ordered lock.
struct LogFile(OrderedMutex<std::fs::File>);

struct LogGuard<'a>(OrderedMutexGuard<'a, std::fs::File>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogFile {
    type Writer = LogGuard<'a>;
    fn make_writer(&'a self) -> LogGuard<'a> {
        LogGuard(self.0.lock())
    }
}

impl std::io::Write for LogGuard<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
