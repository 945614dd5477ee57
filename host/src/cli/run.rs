//! `tapeline run FILE`: validate, then run the pipeline to the end.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{registry, CliError, CliResult, GlobalArgs};
use crate::config;
use crate::runtime::{self, RunOptions};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The pipeline file.
    pub file: PathBuf,
    /// Stop after this long (e.g. `30s`, `5m`, `1h`, `1500ms`); default: until every source ends.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Also write the run summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
}

/// `90`, `90s`, `1500ms`, `5m`, `1h`.
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
    Ok(Duration::from_secs_f64(secs))
}

pub fn run(global: &GlobalArgs, args: RunArgs) -> CliResult {
    let reg = registry(global);
    let (plan, report) = config::load(&args.file, &reg);
    if !report.diagnostics.is_empty() {
        eprint!("{}", report.render(std::io::stderr().is_terminal()));
    }
    let Some(plan) = plan else {
        return Err(CliError::input(
            format!(
                "{} is not a valid pipeline; nothing was started",
                args.file.display()
            ),
            "fix the errors above (`tapeline validate FILE` checks a file on its own)",
        ));
    };
    if let Some(path) = &args.summary_json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(CliError::input(
                    format!("--summary-json: folder {} does not exist", dir.display()),
                    "create it or pick another path",
                ));
            }
        }
    }
    let interrupts = Arc::new(AtomicU32::new(0));
    let counter = interrupts.clone();
    // First signal: stop cleanly. Second: stop fast. Storage is finalised either way.
    let _ = ctrlc::set_handler(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let summary = runtime::run(
        &plan,
        &RunOptions {
            duration: args.duration,
            interrupts,
        },
    );
    print!("{}", summary.render());
    if let Some(path) = &args.summary_json {
        let json = serde_json::to_string_pretty(&summary).unwrap_or_default();
        if let Err(e) = std::fs::write(path, json) {
            eprintln!("error: cannot write the summary to {}: {e}", path.display());
        }
    }
    if summary.failed() {
        let f = summary.failure.as_ref();
        return Err(CliError::runtime(match f {
            Some(f) => format!("stage `{}` failed: {}", f.stage, f.message),
            None => "finalising storage failed (see the summary above)".to_string(),
        }));
    }
    Ok(ExitCode::SUCCESS)
}
