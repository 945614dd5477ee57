//! `tapeline run FILE`: validate, then run the pipeline to the end.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::Args;
use tapeline_plugin_api::abi::{ErrorKind, PluginError};

use super::live::LiveView;
use super::{registry, CliError, CliResult, GlobalArgs};
use crate::config::{self, Plan};
use crate::coordinator::monitor::{Sink, Snapshot};
use crate::coordinator::recovery_log::write_state_dump;
use crate::coordinator::{self, RunOptions, RunSummary};
use crate::discipline::lock_order::{LockLevel, OrderedMutex};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The pipeline file; `-` reads it from standard input (relative paths in it then resolve
    /// against the current folder).
    pub file: PathBuf,
    /// Stop after this long, in wall-clock time (e.g. `30s`, `5m`, `1h`, `1500ms`; a bare number
    /// is seconds; longer than 0); default: until every source ends. Generators and files run
    /// faster than real time: `--for 2s` on an endless `tone` records far more than 2 s of audio
    /// (give it `seconds` instead).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Also write the run summary as JSON to this file. `-` writes it to stdout instead of the
    /// human summary, which then goes to stderr (stdout holds only the JSON).
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Write a monitoring snapshot every `monitor_interval_ms` (default 500) to this file, one
    /// JSON object per line: each stage's state, frames, time per block and share of audio time (busy time over the audio handled),
    /// each edge's depth and drops, meter levels, gaps, latency.
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// Write structured log events (JSON lines) to this file: state changes, errors, stalls,
    /// restarts, cleanup steps; events about a stage carry `stage_id`, `plugin` and `kind`.
    #[arg(long, value_name = "FILE")]
    pub log_json: Option<PathBuf>,
    /// No live view, and only the files written, the frames lost (if any) and errors at the end
    /// instead of the summary.
    /// (There is no live view either when stdout is not a terminal.)
    #[arg(long, short)]
    pub quiet: bool,
}

/// `90`, `90s`, `1500ms`, `5m`, `1h`; longer than 0.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; write e.g. 30s, 5m, 1500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit `{unit}`; use ms, s, m or h")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a duration"));
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d.is_zero() => Err("--for must be longer than 0".to_string()),
        Ok(d) => Ok(d),
        Err(_) => Err(format!("`{s}` is longer than this host can wait")),
    }
}

/// Create `path` for writing, or a one-line error naming the option.
pub(super) fn create(path: &Path, option: &str) -> Result<File, CliError> {
    File::create(path).map_err(|e| {
        CliError::input(
            format!("{option}: cannot create {}: {e}", path.display()),
            "check that the folder exists and is writable, or pick another path",
        )
    })
}

pub fn run(global: &GlobalArgs, args: RunArgs) -> CliResult {
    let (plan, source) = load_plan(global, &args)?;
    check_summary_path(&args)?;
    let view: Arc<OnceLock<LiveView>> = Arc::new(OnceLock::new());
    let sink = monitor_sink(&args, &plan, view.clone())?;
    let summary = coordinator::run(
        &plan,
        &RunOptions {
            duration: args.duration,
            interrupts: count_signals(),
            monitor: sink,
        },
    );
    if let Some(v) = view.get() {
        v.finish();
    }
    print_summary(&args, &summary);
    if let Some(refused) = refused_config(&source, &summary) {
        return Err(refused);
    }
    outcome(&plan, &args, &summary)
}

/// A stage that refused its config when it was built (what only its constructor can know, e.g.
/// an output file that already exists): shown at the key like `validate` shows errors, exit 2.
fn refused_config(source: &config::Report, summary: &RunSummary) -> Option<CliError> {
    let f = summary
        .failure
        .as_ref()
        .filter(|f| f.kind == "invalid-config")?;
    let error = match &f.key {
        Some(key) => PluginError::config(key, f.message.clone()),
        None => PluginError::new(ErrorKind::InvalidConfig, f.message.clone()),
    };
    let report = config::build_error(source, &f.stage, &error);
    eprint!("{}", report.render(std::io::stderr().is_terminal()));
    Some(CliError::input(
        format!(
            "stage `{}` refused its config; nothing was recorded",
            f.stage
        ),
        "fix the error above and run again",
    ))
}

/// The checked plan (and the file it came from), or exit 2 with every mistake shown.
fn load_plan(global: &GlobalArgs, args: &RunArgs) -> Result<(Plan, config::Report), CliError> {
    let stdin = config::is_stdin(&args.file);
    if stdin {
        super::note_reading_stdin();
    } else if let Err(e) = std::fs::metadata(&args.file) {
        return Err(CliError::input(
            format!("cannot read {}: {e}", args.file.display()),
            "check the path; pipeline files are TOML, e.g. pipelines/demo.toml",
        ));
    }
    let reg = registry(global);
    let (plan, report) = config::load(&args.file, &reg);
    if !report.diagnostics.is_empty() {
        eprint!("{}", report.render(std::io::stderr().is_terminal()));
    }
    match plan {
        Some(plan) => Ok((plan, report)),
        None => Err(CliError::input(
            format!(
                "{} is not a valid pipeline; nothing was started",
                report.source.name
            ),
            "fix the errors above (`tapeline validate FILE` checks a file on its own)",
        )),
    }
}

/// `--summary-json -`: the JSON goes to stdout, the human summary to stderr.
fn summary_to_stdout(args: &RunArgs) -> bool {
    args.summary_json.as_deref().is_some_and(config::is_stdin)
}

/// The pipeline file as the state dump names it (`stdin` for `-`).
fn dump_name(args: &RunArgs) -> &Path {
    if config::is_stdin(&args.file) {
        Path::new("stdin")
    } else {
        &args.file
    }
}

fn check_summary_path(args: &RunArgs) -> Result<(), CliError> {
    let Some(path) = args
        .summary_json
        .as_ref()
        .filter(|_| !summary_to_stdout(args))
    else {
        return Ok(());
    };
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => Err(CliError::input(
            format!("--summary-json: folder {} does not exist", dir.display()),
            "create it or pick another path",
        )),
        _ => Ok(()),
    }
}

/// Where monitoring snapshots go: the `--metrics` file and the live view (on a terminal).
fn monitor_sink(
    args: &RunArgs,
    plan: &Plan,
    view: Arc<OnceLock<LiveView>>,
) -> Result<Option<Sink>, CliError> {
    let metrics = match &args.metrics {
        Some(path) => Some(OrderedMutex::new(
            LockLevel::Monitor,
            BufWriter::new(create(path, "--metrics")?),
        )),
        None => None,
    };
    // The live view's title, when there is one (none when stdout carries the JSON summary).
    let live =
        (!args.quiet && !summary_to_stdout(args) && std::io::stdout().is_terminal()).then(|| {
            plan.file.name.clone().unwrap_or_else(|| {
                dump_name(args)
                    .file_stem()
                    .map_or("pipeline".into(), |s| s.to_string_lossy().into_owned())
            })
        });
    if metrics.is_none() && live.is_none() {
        return Ok(None);
    }
    let failed = AtomicBool::new(false);
    Ok(Some(Arc::new(move |snap: &Snapshot| {
        if let Some(m) = &metrics {
            let written = write_metrics(&mut m.lock(), snap);
            if let Err(e) = written {
                if !failed.swap(true, Ordering::Relaxed) {
                    tracing::error!("--metrics: cannot write a snapshot: {e}");
                }
            }
        }
        if let Some(name) = &live {
            view.get_or_init(|| {
                // Frames the finite sources will produce in all, for the progress bar.
                let finite: Vec<u64> = snap.stages.iter().filter_map(|s| s.length_frames).collect();
                LiveView::new(name, (!finite.is_empty()).then(|| finite.iter().sum()))
            })
            .update(snap);
        }
    })))
}

fn write_metrics(w: &mut BufWriter<File>, snap: &Snapshot) -> std::io::Result<()> {
    serde_json::to_writer(&mut *w, snap)?;
    writeln!(w)?;
    w.flush()
}

/// First signal: stop cleanly. Second: stop fast. Storage is finalised either way.
fn count_signals() -> Arc<AtomicU32> {
    let interrupts = Arc::new(AtomicU32::new(0));
    let counter = interrupts.clone();
    if let Err(e) = ctrlc::set_handler(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    }) {
        tracing::error!(
            "cannot catch SIGINT/SIGTERM ({e}): a signal ends the process without cleanup"
        );
    }
    interrupts
}

fn print_summary(args: &RunArgs, summary: &RunSummary) {
    let mut human = String::new();
    if args.quiet {
        for line in summary.written() {
            human += &format!("{line}\n");
        }
        if summary.lost_frames.values().any(|&n| n > 0) {
            human += &format!("{}\n", summary.lost_line());
        }
    } else {
        human = summary.render();
    }
    if summary_to_stdout(args) {
        eprint!("{human}");
        match serde_json::to_string_pretty(summary) {
            Ok(json) => super::print_out(&(json + "\n")),
            Err(e) => eprintln!("error: cannot write the summary as JSON: {e}"),
        }
        return;
    }
    print!("{human}");
    if let Some(path) = &args.summary_json {
        let written = serde_json::to_string_pretty(summary)
            .map_err(std::io::Error::other)
            .and_then(|json| std::fs::write(path, json));
        if let Err(e) = written {
            eprintln!("error: cannot write the summary to {}: {e}", path.display());
        }
    }
}

/// The exit code, and on failure the error with the state dump's path.
fn outcome(plan: &Plan, args: &RunArgs, summary: &RunSummary) -> CliResult {
    if summary.internal_errors > 0 {
        // A refused transition is a bug in the host: loud always, and in debug builds (the
        // tests') it fails the run, so no test can pass with one.
        eprintln!(
            "internal error: the host asked for {} state transition(s) its table refuses \
             (listed in the summary's internal_error_list); please report this",
            summary.internal_errors
        );
        if cfg!(debug_assertions) {
            let mut e = CliError::runtime("internal errors (debug build: failing the run)");
            e.code = 70;
            return Err(e);
        }
    }
    if !summary.failed() {
        return Ok(ExitCode::SUCCESS);
    }
    let dump = match write_state_dump(plan, dump_name(args), summary) {
        Ok(path) => format!(
            "state dump: {} (state histories, errors, counters, the resolved pipeline)",
            path.display()
        ),
        Err(e) => format!("the state dump could not be written: {e}"),
    };
    let mut error = CliError::runtime(failure_line(summary));
    error.help = Some(dump);
    Err(error)
}

/// The first line of a failed run's error: what ended it.
fn failure_line(summary: &RunSummary) -> String {
    if let Some(f) = &summary.failure {
        return format!("stage `{}` failed: {}", f.stage, f.message);
    }
    let abandoned: Vec<String> = summary
        .stages
        .iter()
        .flat_map(|s| {
            s.abandoned_calls
                .iter()
                .map(move |a| format!("`{}` in stage `{}` ({})", a.call, s.id, a.thread))
        })
        .collect();
    if !abandoned.is_empty() {
        return format!(
            "the run completed, but plugin calls that never returned were given up: {}",
            abandoned.join(", ")
        );
    }
    "finalising storage failed (see the summary above)".to_string()
}
