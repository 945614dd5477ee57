//! `tapeline validate FILE...`: check pipeline files without starting anything.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::{registry, CliResult, GlobalArgs};
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
    /// Pipeline files to check.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// How to print diagnostics.
    #[arg(long, value_enum, default_value_t)]
    pub format: DiagnosticFormat,
}

pub fn validate(global: &GlobalArgs, args: ValidateArgs) -> CliResult {
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
                    println!(
                        "{}: ok ({} stages, {} edges)",
                        file.display(),
                        plan.stages.len(),
                        plan.edges.len()
                    );
                }
            }
        }
    }
    if let DiagnosticFormat::Json = args.format {
        let all: Vec<serde_json::Value> = json
            .into_iter()
            .flat_map(|v| v.as_array().cloned().unwrap_or_default())
            .collect();
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
    }
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
