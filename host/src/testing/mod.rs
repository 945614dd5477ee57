//! `tapeline test FILE...`: pipeline tests for testers. Each `*.test.toml` names a pipeline,
//! replaces chosen stages, runs it (the real `tapeline run`, in a process of its own) and checks
//! what must hold: exit code, end, any field of a stage's, an edge's or a storage's summary, any
//! summary field by path, and WAV files the run wrote (length, levels, equality with a
//! reference). One line per test; every mismatch as `where: expected X, got Y`; `--junit FILE`
//! for CI. See [`spec`] for the format.

pub mod expect;
pub mod junit;
pub mod spec;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use spec::TestFile;

/// Host keys a replacement keeps from the replaced stage.
const KEPT: &[&str] = &["inputs", "buffer", "on_error", "isolate", "limits"];

/// One test's outcome.
pub struct Outcome {
    pub name: String,
    pub file: PathBuf,
    pub seconds: f64,
    /// Every mismatch; empty when the test passed.
    pub diffs: Vec<String>,
    /// The test file itself could not be used (bad input, exit 2).
    pub broken: bool,
}

/// Every `*.test.toml` named, folders searched (not recursively), in order.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|f| f.to_string_lossy().ends_with(".test.toml"))
                .collect();
            found.sort();
            files.extend(found);
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return Err(format!(
                "{} is neither a test file nor a folder",
                p.display()
            ));
        }
    }
    Ok(files)
}

/// Run one test file with the `tapeline` at `exe` (and `plugin_dirs`).
pub fn run_one(file: &Path, exe: &Path, plugin_dirs: &[PathBuf]) -> Outcome {
    let started = Instant::now();
    let stem = file.file_name().map_or("test".into(), |n| {
        n.to_string_lossy().replace(".test.toml", "")
    });
    let mut outcome = Outcome {
        name: stem,
        file: file.to_path_buf(),
        seconds: 0.0,
        diffs: Vec::new(),
        broken: false,
    };
    if let Err(e) = run_checked(file, exe, plugin_dirs, &mut outcome) {
        outcome.diffs.push(e);
        outcome.broken = true;
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome
}

fn run_checked(
    file: &Path,
    exe: &Path,
    plugin_dirs: &[PathBuf],
    outcome: &mut Outcome,
) -> Result<(), String> {
    let text =
        std::fs::read_to_string(file).map_err(|e| format!("cannot read the test file: {e}"))?;
    let test: TestFile =
        toml::from_str(&text).map_err(|e| format!("the test file does not read: {e}"))?;
    if let Some(name) = &test.name {
        outcome.name = name.clone();
    }
    let fixtures = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let pipeline = fixtures.join(&test.pipeline);
    let outputs = pipeline.parent().unwrap_or(Path::new(".")).to_path_buf();
    let effective = with_replacements(&pipeline, &test)?;
    // Next to the pipeline, so that its relative paths mean what they mean there.
    let tmp = outputs.join(format!(
        ".{}.{}.test-run.toml",
        outcome.name.replace(['/', ' '], "_"),
        std::process::id()
    ));
    let work = std::env::temp_dir().join(format!(
        "tapeline-test-{}-{}",
        std::process::id(),
        outcome.name.replace(['/', ' '], "_")
    ));
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    std::fs::write(&tmp, effective).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    let summary_path = work.join("summary.json");
    let mut cmd = Command::new(exe);
    cmd.arg("run")
        .arg(&tmp)
        .arg("--quiet")
        .arg("--summary-json")
        .arg(&summary_path);
    if let Some(d) = &test.duration {
        cmd.arg("--for").arg(d);
    }
    for d in plugin_dirs {
        cmd.arg("--plugin-dir").arg(d);
    }
    let out = cmd.output();
    std::fs::remove_file(&tmp).ok();
    let out = out.map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let exit = out.status.code().unwrap_or(-1);
    let summary: serde_json::Value = std::fs::read_to_string(&summary_path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null);
    std::fs::remove_dir_all(&work).ok();
    outcome.diffs = expect::check(&test.expect, exit, &summary, &outputs, &fixtures);
    if !outcome.diffs.is_empty() {
        let err = String::from_utf8_lossy(&out.stderr);
        outcome.diffs.extend(
            err.lines()
                .filter(|l| l.starts_with("error"))
                .map(|l| format!("(the run said) {l}")),
        );
    }
    Ok(())
}

/// The pipeline's text with each `[replace.ID]` applied: the stage keeps its id and host keys
/// (inputs, buffer, on_error, isolate, limits); its plugin and config are the replacement's.
fn with_replacements(pipeline: &Path, test: &TestFile) -> Result<String, String> {
    let text = std::fs::read_to_string(pipeline)
        .map_err(|e| format!("pipeline {}: {e}", pipeline.display()))?;
    if test.replace.is_empty() {
        return Ok(text);
    }
    let mut doc: toml::Table =
        toml::from_str(&text).map_err(|e| format!("pipeline {}: {e}", pipeline.display()))?;
    for (id, replacement) in &test.replace {
        let kind = ["capture", "process", "storage"].into_iter().find(|kind| {
            doc.get(*kind)
                .and_then(|t| t.get(id))
                .is_some_and(toml::Value::is_table)
        });
        let stage = kind.and_then(|k| doc.get_mut(k)?.get_mut(id)?.as_table_mut());
        let Some(stage) = stage else {
            return Err(format!("replace.{id}: the pipeline has no stage `{id}`"));
        };
        stage.retain(|k, _| KEPT.contains(&k));
        stage.extend(replacement.clone());
    }
    toml::to_string(&doc).map_err(|e| format!("cannot write the replaced pipeline: {e}"))
}

/// What the whole run prints: one line per test, the diffs of failures.
pub fn report(outcomes: &[Outcome]) -> String {
    let mut lines = Vec::new();
    for o in outcomes {
        let word = if o.diffs.is_empty() { "ok  " } else { "FAIL" };
        lines.push(format!(
            "{word} {} ({:.2} s, {})",
            o.name,
            o.seconds,
            o.file.display()
        ));
        lines.extend(o.diffs.iter().map(|d| format!("       {d}")));
    }
    let failed = outcomes.iter().filter(|o| !o.diffs.is_empty()).count();
    lines.push(format!(
        "{} passed, {failed} failed",
        outcomes.len() - failed
    ));
    lines.join("\n") + "\n"
}
