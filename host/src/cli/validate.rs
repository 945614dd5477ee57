//! `tapeline validate FILE...`: check pipeline files without starting anything.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::{print_out, registry, CliError, CliResult, GlobalArgs};
use crate::config;

#[derive(Clone, Copy, Debug, ValueEnum, Default)]
pub enum DiagnosticFormat {
    /// file:line:column, an excerpt with a caret, and a help line.
    #[default]
    Human,
    /// One JSON array of diagnostics (severity, file, line, column, stage, message, help).
    Json,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Pipeline files to check; `-` reads one from standard input (relative paths in it resolve
    /// against the current folder).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// How to print diagnostics.
    #[arg(long, value_enum, default_value_t)]
    pub format: DiagnosticFormat,
}

pub fn validate(global: &GlobalArgs, args: ValidateArgs) -> CliResult {
    let stdin_count = args.files.iter().filter(|f| config::is_stdin(f)).count();
    if stdin_count > 1 {
        return Err(CliError::input(
            format!("`-` (standard input) is given {stdin_count} times"),
            "standard input holds one pipeline: give `-` once",
        ));
    }
    if stdin_count == 1 {
        super::note_reading_stdin();
    }
    let reg = registry(global);
    let mut failed = false;
    let mut json = Vec::new();
    for file in &args.files {
        let (plan, report) = config::load(file, &reg);
        failed |= plan.is_none();
        match args.format {
            DiagnosticFormat::Json => {
                json.push(serde_json::to_value(report.json()).unwrap_or_default())
            }
            DiagnosticFormat::Human => {
                if !report.diagnostics.is_empty() {
                    eprint!("{}", report.render(std::io::stderr().is_terminal()));
                }
                if let Some(plan) = plan {
                    print_out(&format!(
                        "{}: ok ({} stages, {} edges)\n",
                        report.source.name,
                        plan.stages.len(),
                        plan.edges.len()
                    ));
                }
            }
        }
    }
    if let DiagnosticFormat::Json = args.format {
        let all: Vec<serde_json::Value> = json
            .into_iter()
            .flat_map(|v| v.as_array().cloned().unwrap_or_default())
            .collect();
        print_out(&(serde_json::to_string_pretty(&all).unwrap_or_default() + "\n"));
    }
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
