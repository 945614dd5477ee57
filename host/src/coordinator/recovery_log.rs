//! The RecoveryLogger: every error a stage reported, with the severity its policy gave it; the
//! state changes of every stage, logged from the coordinator's thread (stage threads never
//! log); and, on failure, the state dump next to the run's outputs.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tapeline_plugin_api::abi::PluginError;

use super::component::Component;
use super::policy::Severity;
use super::summary::RunSummary;
use crate::config::Plan;

/// Errors listed in a run summary; later ones are only counted (per stage).
const MAX_ERRORS: usize = 1000;

/// One error a stage reported, with the severity its stage's policy gave it.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorRecord {
    pub stage: String,
    pub severity: Severity,
    pub kind: String,
    pub message: String,
    /// Milliseconds since the run started.
    pub at_ms: u64,
}

#[derive(Debug, Default)]
pub struct RecoveryLog {
    pub errors: Vec<ErrorRecord>,
    /// Transitions already logged, per stage.
    logged: Vec<usize>,
}

impl RecoveryLog {
    pub fn new(stages: usize) -> Self {
        RecoveryLog {
            errors: Vec::new(),
            logged: vec![0; stages],
        }
    }

    /// Note an error that happened `at_ms` into the run (logged, and listed up to
    /// [`MAX_ERRORS`]).
    pub fn note(
        &mut self,
        c: &Component,
        severity: Severity,
        kind: &str,
        message: &str,
        at_ms: u64,
    ) {
        if self.errors.len() >= MAX_ERRORS {
            // Each stage's `errors` counter still counts them all.
            return;
        }
        tracing::warn!(
            stage_id = %c.who.id,
            plugin = %c.who.plugin,
            kind = c.who.kind.as_str(),
            error_kind = kind,
            severity = severity.as_str(),
            "{message}"
        );
        self.errors.push(ErrorRecord {
            stage: c.who.id.clone(),
            severity,
            kind: kind.to_string(),
            message: message.to_string(),
            at_ms,
        });
    }

    pub fn note_plugin(&mut self, c: &Component, severity: Severity, e: &PluginError, at_ms: u64) {
        self.note(c, severity, e.kind().as_str(), e.message(), at_ms);
    }

    /// Log the state changes of every stage since the last call.
    pub fn log_transitions<'c>(&mut self, stages: impl Iterator<Item = &'c Component>) {
        for (i, c) in stages.enumerate() {
            let history = c.lifecycle().history();
            for t in history.iter().skip(self.logged[i]) {
                tracing::info!(
                    stage_id = %c.who.id,
                    plugin = %c.who.plugin,
                    kind = c.who.kind.as_str(),
                    from = t.from.as_str(),
                    to = t.to.as_str(),
                    at_ms = t.at_ms,
                    seq = t.seq,
                    reason = %t.reason,
                    "state"
                );
            }
            self.logged[i] = history.len();
        }
    }
}

/// On failure, everything needed to understand it, as JSON next to the outputs (the folder of
/// the first storage file, else the pipeline file's): the run summary (state histories with
/// reasons, errors with their stage and time, every counter, cleanup steps) and the resolved
/// pipeline (each stage's plugin, library, config, formats; each edge's policy and capacity).
pub fn write_state_dump(
    plan: &Plan,
    file: &Path,
    summary: &RunSummary,
) -> std::io::Result<PathBuf> {
    let folder = summary
        .storage
        .iter()
        .flat_map(|s| s.files.first())
        .map(|f| Path::new(f).parent().map(Path::to_path_buf))
        .next()
        .flatten()
        .unwrap_or_else(|| plan.base_dir.clone());
    let stem = file
        .file_stem()
        .map_or("pipeline".into(), |s| s.to_string_lossy().into_owned());
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Seconds and the process id: two failures in the same second do not overwrite each other.
    let path = folder.join(format!("{stem}.failure-{secs}-{}.json", std::process::id()));
    let dump = serde_json::json!({
        "pipeline_file": std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf()),
        "pipeline": resolved_pipeline(plan),
        "failure": summary.failure,
        "last_errors": summary.errors.iter().rev().take(20).collect::<Vec<_>>(),
        "summary": summary,
    });
    let text = serde_json::to_string_pretty(&dump).map_err(std::io::Error::other)?;
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The pipeline as it ran: every stage and edge with what the plan settled.
fn resolved_pipeline(plan: &Plan) -> serde_json::Value {
    let stages: Vec<serde_json::Value> = plan
        .stages
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id,
                "kind": s.kind.as_str(),
                "plugin": s.entry.name(),
                "library": s.entry.library.display().to_string(),
                "config": serde_json::from_str::<serde_json::Value>(&s.config).unwrap_or_default(),
                "on_error": {
                    "policy": format!("{:?}", s.on_error.policy).to_lowercase(),
                    "max_restarts": s.on_error.max_restarts,
                    "backoff_ms": s.on_error.backoff_ms,
                    "reset_after_ms": s.on_error.reset_after_ms,
                },
                "inputs": s.inputs.iter().map(|&e| plan.edges[e].label.clone()).collect::<Vec<_>>(),
                "outputs": s.outputs.iter().map(|o| serde_json::json!({
                    "port": o.name.as_str(),
                    "channels": o.format.channels,
                    "sample_rate": o.format.sample_rate,
                    "max_frames": o.max_frames,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let edges: Vec<serde_json::Value> = plan
        .edges
        .iter()
        .map(|e| {
            serde_json::json!({
                "label": e.label,
                "channels": e.format.channels,
                "sample_rate": e.format.sample_rate,
                "capacity_blocks": e.capacity_blocks,
                "when_full": format!("{:?}", e.when_full),
                "max_frames": e.max_frames,
            })
        })
        .collect();
    serde_json::json!({
        "name": plan.file.name,
        "sample_rate": plan.file.sample_rate,
        "block_frames": plan.file.block_frames,
        "monitor_interval_ms": plan.file.monitor_interval_ms,
        "stall_timeout_ms": plan.file.stall_timeout_ms,
        "stages": stages,
        "edges": edges,
    })
}
