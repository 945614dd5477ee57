//! Positioned diagnostics for pipeline files: file:line:column, an excerpt with a caret, the
//! stage id, and a help line. Rendered with miette for people, as JSON for editors and CI.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceCode};
use serde::Serialize;

/// A pipeline file's text, kept for positions and excerpts.
#[derive(Debug)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

impl SourceFile {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in a pipeline file.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    /// Byte range in the file; `None` for problems with no place (e.g. an unreadable file).
    pub span: Option<Range<usize>>,
    /// Short text under the caret.
    pub label: String,
    pub help: Option<String>,
    pub stage: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>, span: Range<usize>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            span: Some(span),
            label: String::new(),
            help: None,
            stage: None,
        }
    }

    pub fn warning(message: impl Into<String>, span: Range<usize>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Self::error(message, span)
        }
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn help_opt(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    pub fn stage(mut self, stage: &str) -> Self {
        self.stage = Some(stage.to_string());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Every diagnostic of one file, with its source.
#[derive(Debug, Clone)]
pub struct Report {
    pub source: Arc<SourceFile>,
    pub diagnostics: Vec<Diagnostic>,
}

/// The JSON form of one diagnostic (`--format json`).
#[derive(Debug, Serialize)]
pub struct JsonDiagnostic<'a> {
    pub severity: Severity,
    pub file: &'a str,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub stage: Option<&'a str>,
    pub message: &'a str,
    pub label: &'a str,
    pub help: Option<&'a str>,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn json(&self) -> Vec<JsonDiagnostic<'_>> {
        self.diagnostics
            .iter()
            .map(|d| {
                let (line, column) = match &d.span {
                    Some(s) => {
                        let (l, c) = self.source.line_col(s.start);
                        (Some(l), Some(c))
                    }
                    None => (None, None),
                };
                JsonDiagnostic {
                    severity: d.severity,
                    file: &self.source.name,
                    line,
                    column,
                    stage: d.stage.as_deref(),
                    message: &d.message,
                    label: &d.label,
                    help: d.help.as_deref(),
                }
            })
            .collect()
    }

    /// Human-readable text: for each diagnostic, a first line `file:line:col: error: message`
    /// (greppable, clickable in editors), then miette's excerpt with a caret and the help.
    pub fn render(&self, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme).with_context_lines(1);
        let mut out = String::new();
        for d in &self.diagnostics {
            let kind = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let place = match &d.span {
                Some(s) => {
                    let (l, c) = self.source.line_col(s.start);
                    format!("{}:{l}:{c}", self.source.name)
                }
                None => self.source.name.clone(),
            };
            let stage = d
                .stage
                .as_deref()
                .map(|s| format!(" [stage {s}]"))
                .unwrap_or_default();
            out.push_str(&format!("{place}: {kind}: {}{stage}\n", d.message));
            let shown = Shown {
                d,
                source: NamedSource::new(&self.source.name, self.source.text.clone()),
            };
            let mut excerpt = String::new();
            if handler.render_report(&mut excerpt, &shown).is_ok() {
                // miette repeats the message on its first line; ours is above.
                let body: Vec<&str> = excerpt.lines().skip(1).collect();
                out.push_str(&body.join("\n"));
                out.push('\n');
            }
        }
        out
    }
}

/// Adapter giving miette one diagnostic with its source.
struct Shown<'a> {
    d: &'a Diagnostic,
    source: NamedSource<String>,
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.d.message)
    }
}

impl fmt::Display for Shown<'_> {
    /// Empty: the message is on our own first line, and miette would wrap a long one over
    /// several lines, of which only the first is dropped.
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ok(())
    }
}

impl std::error::Error for Shown<'_> {}

impl miette::Diagnostic for Shown<'_> {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.d.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.d
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.d
            .span
            .as_ref()
            .map(|_| &self.source as &dyn SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.d.span.clone()?;
        let label = (!self.d.label.is_empty()).then(|| self.d.label.clone());
        let len = span.end.saturating_sub(span.start).max(1);
        Some(Box::new(std::iter::once(LabeledSpan::new(
            label, span.start, len,
        ))))
    }
}
