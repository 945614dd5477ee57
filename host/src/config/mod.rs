//! Pipeline files: TOML → [`parse::PipelineFile`] → checked [`validate::Plan`], with every
//! mistake reported at its file:line:column, with the stage id and a fix to try.

pub mod device_check;
pub mod diagnostic;
pub mod parse;
pub mod schema;
pub mod validate;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use diagnostic::{Diagnostic, Report, Severity, SourceFile};
pub use parse::{Limits, PipelineFile, WhenFull, MAX_EDGES_PER_STAGE, MAX_FILE_BYTES, MAX_STAGES};
pub use validate::{Plan, PlannedEdge, PlannedStage};

use crate::plugins::Registry;
use tapeline_plugin_api::abi::PluginError;

/// The path that stands for standard input (`tapeline validate -`, `tapeline run -`).
pub const STDIN: &str = "-";
/// The name standard input goes by in diagnostics.
pub const STDIN_NAME: &str = "<stdin>";

/// Whether `path` stands for standard input.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == STDIN
}

/// A pipeline file's bytes, its name in diagnostics, and the folder its relative paths resolve
/// against.
struct Input {
    name: String,
    bytes: Vec<u8>,
    base_dir: PathBuf,
}

/// Read, parse and check the pipeline file at `path` (`-`: standard input). The plan is `Some`
/// only when there are no errors (warnings allowed); the report holds every diagnostic either
/// way, and at least one error when the plan is `None`.
///
/// Relative paths in the file resolve against the file's folder; for standard input, or a file
/// that is not a regular one (`/dev/stdin`, a pipe, `<(...)`), against the current folder.
pub fn load(path: &Path, registry: &Registry) -> (Option<Plan>, Report) {
    let input = match read_input(path) {
        Ok(input) => input,
        Err(report) => return (None, report),
    };
    load_bytes(input, registry)
}

fn load_bytes(input: Input, registry: &Registry) -> (Option<Plan>, Report) {
    let Input {
        name,
        bytes,
        base_dir,
    } = input;
    let mut diags = Vec::new();
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            // Positioned at the first invalid byte; nothing after it is read.
            let offset = e.utf8_error().valid_up_to();
            let byte = e.as_bytes()[offset];
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            // The valid prefix is unchanged; the bad byte became U+FFFD (3 bytes).
            diags.push(not_utf8(byte, offset..offset + '\u{FFFD}'.len_utf8()));
            return (None, report(name, text, diags));
        }
    };
    let file = parse::parse(&text, &mut diags);
    let plan = file.and_then(|f| validate::plan(&f, &base_dir, registry, &mut diags));
    let plan = if diags.iter().any(Diagnostic::is_error) {
        None
    } else {
        plan
    };
    if plan.is_none() && !diags.iter().any(Diagnostic::is_error) {
        // Every refusal has a reason on screen; reaching this is a bug in the checks.
        diags.push(Diagnostic {
            severity: Severity::Error,
            message: "the pipeline was refused without a reason (a bug in the host's checks)"
                .into(),
            span: None,
            label: String::new(),
            help: Some("please report it with this file".into()),
            stage: None,
        });
    }
    (plan, report(name, text, diags))
}

/// A stage's config error that only its constructor could find (e.g. an output file that
/// already exists: `validate` does not refuse it, `run` does), shown like `validate` shows the
/// errors it finds: at the key, in `source`'s file.
pub fn build_error(source: &Report, stage: &str, error: &PluginError) -> Report {
    let text = &source.source.text;
    let mut diags = Vec::new();
    let found = parse::parse(text, &mut diags).and_then(|file| {
        let decl = file.stages.iter().find(|s| s.id == stage)?;
        let each = validate::split_errors(error);
        Some(
            each.iter()
                .map(|e| validate::plugin_diagnostic(decl, e, &[], &[], &file))
                .collect(),
        )
    });
    let diags = found.unwrap_or_else(|| {
        vec![Diagnostic {
            severity: Severity::Error,
            message: format!("stage `{stage}`: {}", error.message()),
            span: None,
            label: String::new(),
            help: None,
            stage: Some(stage.to_string()),
        }]
    });
    report(source.source.name.clone(), text.clone(), diags)
}

/// A report of `diags`, in file order, as a person reads and fixes them.
fn report(name: String, text: String, mut diags: Vec<Diagnostic>) -> Report {
    diags.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
    Report {
        source: Arc::new(SourceFile { name, text }),
        diagnostics: diags,
    }
}

fn not_utf8(byte: u8, span: std::ops::Range<usize>) -> Diagnostic {
    Diagnostic::error(
        format!("the file is not valid UTF-8 (byte 0x{byte:02X}); pipeline files are UTF-8 text"),
        span,
    )
    .label("not UTF-8")
    .help(
        "save the file as UTF-8 (an editor's \"encoding\" setting; `iconv -f latin1 -t utf-8` \
         converts Latin-1), or remove the character",
    )
}

/// The bytes of `path` (at most [`MAX_FILE_BYTES`]), or a report of why they cannot be used.
fn read_input(path: &Path) -> Result<Input, Report> {
    let stdin = is_stdin(path);
    let name = if stdin {
        STDIN_NAME.to_string()
    } else {
        path.display().to_string()
    };
    let file_error = |message: String, help: &str| {
        let d = Diagnostic {
            severity: Severity::Error,
            message,
            span: None,
            label: String::new(),
            help: Some(help.to_string()),
            stage: None,
        };
        report(name.clone(), String::new(), vec![d])
    };
    // One byte more than the limit tells a file at the limit from a larger one, without
    // reading a huge (or endless) input to its end.
    let mut bytes = Vec::new();
    let read = if stdin {
        std::io::stdin()
            .lock()
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
    };
    if let Err(e) = read {
        return Err(file_error(
            format!("cannot read the pipeline file: {e}"),
            "check the path; pipeline files are TOML, e.g. pipelines/demo.toml",
        ));
    }
    if bytes.len() as u64 > MAX_FILE_BYTES {
        let limit = format!(
            "the limit of {} ({MAX_FILE_BYTES} bytes)",
            mib(MAX_FILE_BYTES)
        );
        let size = (!stdin)
            .then(|| std::fs::metadata(path).ok())
            .flatten()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        return Err(file_error(
            match size {
                Some(len) => format!("the pipeline file is {}, over {limit}", mib(len)),
                None => format!("the pipeline file is over {limit}"),
            },
            &format!(
                "check that this is the pipeline file you meant: a pipeline of {MAX_STAGES} \
                 stages (the most there may be) fits in a fraction of that"
            ),
        ));
    }
    let base_dir = if stdin {
        current_dir()
    } else {
        base_dir_of(path)
    };
    Ok(Input {
        name,
        bytes,
        base_dir,
    })
}

/// `1 MiB`, `4.6 MiB`.
fn mib(bytes: u64) -> String {
    let m = bytes as f64 / (1u64 << 20) as f64;
    if m.fract() == 0.0 {
        format!("{m:.0} MiB")
    } else {
        format!("{m:.1} MiB")
    }
}

fn current_dir() -> PathBuf {
    std::env::current_dir()
        .and_then(|d| d.canonicalize())
        .unwrap_or_else(|_| PathBuf::from("."))
}

/// The folder relative paths in the file at `path` resolve against: its own, unless it is not
/// a regular file in a regular folder (`/dev/stdin`, `/dev/fd/63`, `/proc/self/fd/0`, a named
/// pipe): then the current folder, as for `-`.
fn base_dir_of(path: &Path) -> PathBuf {
    let regular = std::fs::metadata(path).is_ok_and(|m| m.is_file());
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let special = ["/dev", "/proc"].iter().any(|d| absolute.starts_with(d));
    if !regular || special {
        return current_dir();
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(bytes: &[u8]) -> (Option<Plan>, Report) {
        let input = Input {
            name: "p.toml".into(),
            bytes: bytes.to_vec(),
            base_dir: PathBuf::from("."),
        };
        load_bytes(input, &Registry::default())
    }

    #[test]
    fn invalid_utf8_is_an_error_at_the_line_and_column_of_the_first_bad_byte() {
        let (plan, report) = load_text(b"version = 1\n# caf\xE9 au lait\n[capture.t]\n");
        assert!(plan.is_none());
        let json = report.json();
        assert_eq!(json.len(), 1);
        let d = &json[0];
        assert_eq!((d.line, d.column), (Some(2), Some(6)));
        assert!(
            d.message.contains("not valid UTF-8 (byte 0xE9)"),
            "{}",
            d.message
        );
        assert!(report.render(false).starts_with("p.toml:2:6: error: "));
    }

    #[test]
    fn a_refusal_always_carries_an_error() {
        // No stages and an unknown plugin registry: valid, so a plan.
        let (plan, report) = load_text(b"version = 1\n");
        assert!(plan.is_some(), "{:?}", report.diagnostics);
        let (plan, report) = load_text(b"version = 1\n[capture.t]\nplugin = \"\"\n");
        assert!(plan.is_none());
        assert!(report.has_errors(), "{:?}", report.diagnostics);
    }

    #[test]
    fn sizes_are_shown_in_mib() {
        assert_eq!(mib(1 << 20), "1 MiB");
        assert_eq!(mib(5_000_000), "4.8 MiB");
    }

    #[test]
    fn special_files_resolve_relative_paths_against_the_current_folder() {
        let here = current_dir();
        assert_eq!(base_dir_of(Path::new("/dev/stdin")), here);
        assert_eq!(base_dir_of(Path::new("/dev/null")), here);
        assert_eq!(base_dir_of(Path::new("/proc/self/fd/0")), here);
        let cargo_toml = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        assert_eq!(
            base_dir_of(&cargo_toml),
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .canonicalize()
                .unwrap()
        );
    }
}
