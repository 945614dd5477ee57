//! `tapeline test FILE...`: run pipeline tests (see `crate::testing`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{CliError, CliResult, GlobalArgs};
use crate::testing;

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Test files (`*.test.toml`), or folders holding them (e.g. pipelines/tests/).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Also write the results as JUnit XML to this file, for CI.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// Exit 0 if every test passed, 1 if one failed, 2 if a test file could not be used.
pub fn test(global: &GlobalArgs, args: TestArgs) -> CliResult {
    let files = testing::collect(&args.files)
        .map_err(|e| CliError::input(e, "name *.test.toml files or folders that hold them"))?;
    if files.is_empty() {
        return Err(CliError::input(
            "no *.test.toml files found",
            "name test files, or a folder that holds them (e.g. pipelines/tests/)",
        ));
    }
    let exe = std::env::current_exe()
        .map_err(|e| CliError::runtime(format!("cannot find the tapeline binary: {e}")))?;
    let outcomes: Vec<testing::Outcome> = files
        .iter()
        .map(|f| testing::run_one(f, &exe, &global.plugin_dirs))
        .collect();
    print!("{}", testing::report(&outcomes));
    if let Some(path) = &args.junit {
        std::fs::write(path, testing::junit::xml(&outcomes)).map_err(|e| {
            CliError::input(
                format!("--junit: cannot write {}: {e}", path.display()),
                "check that the folder exists and is writable",
            )
        })?;
    }
    let code = if outcomes.iter().any(|o| o.broken) {
        2
    } else {
        u8::from(outcomes.iter().any(|o| !o.diffs.is_empty()))
    };
    Ok(ExitCode::from(code))
}
