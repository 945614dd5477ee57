//! Pipeline files: TOML → [`parse::PipelineFile`] → checked [`validate::Plan`], with every
//! mistake reported at its file:line:column, with the stage id and a fix to try.

pub mod diagnostic;
pub mod parse;
pub mod schema;
pub mod validate;

use std::path::Path;
use std::sync::Arc;

pub use diagnostic::{Diagnostic, Report, Severity, SourceFile};
pub use parse::{Limits, PipelineFile, WhenFull};
pub use validate::{Plan, PlannedEdge, PlannedStage};

use crate::plugins::Registry;

/// Read, parse and check the pipeline file at `path`. The plan is `Some` only when there are no
/// errors (warnings allowed); the report holds every diagnostic either way.
pub fn load(path: &Path, registry: &Registry) -> (Option<Plan>, Report) {
    let name = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            let source = Arc::new(SourceFile {
                name,
                text: String::new(),
            });
            let d = Diagnostic {
                severity: Severity::Error,
                message: format!("cannot read the pipeline file: {e}"),
                span: None,
                label: String::new(),
                help: Some(
                    "check the path; pipeline files are TOML, e.g. pipelines/demo.toml".into(),
                ),
                stage: None,
            };
            return (
                None,
                Report {
                    source,
                    diagnostics: vec![d],
                },
            );
        }
    };
    let mut diags = Vec::new();
    let file = parse::parse(&text, &mut diags);
    let source = Arc::new(SourceFile { name, text });
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base_dir = base_dir
        .canonicalize()
        .unwrap_or_else(|_| base_dir.to_path_buf());
    let plan = file.and_then(|f| validate::plan(&f, &base_dir, registry, &mut diags));
    let plan = if diags.iter().any(Diagnostic::is_error) {
        None
    } else {
        plan
    };
    // In file order, as a person reads and fixes them.
    diags.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
    (
        plan,
        Report {
            source,
            diagnostics: diags,
        },
    )
}
