//! TOML text → [`PipelineFile`]: host keys checked and typed, plugin keys kept as JSON with the
//! position of each key, every problem collected rather than stopping at the first.

use std::collections::BTreeMap;
use std::ops::Range;

use serde_json::{Map, Number, Value};
use tapeline_plugin_api::PluginKind;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::diagnostic::Diagnostic;
use crate::plugins::closest;

/// The pipeline-file versions this host reads.
pub const SUPPORTED_VERSIONS: &[i64] = &[1];

/// Keys of `[pipeline]`.
pub const PIPELINE_KEYS: &[&str] = &[
    "name",
    "sample_rate",
    "block_frames",
    "monitor_interval_ms",
    "stall_timeout_ms",
];
/// Keys of a stage table that belong to the host; every other key goes to the plugin.
pub const HOST_KEYS: &[&str] = &["plugin", "inputs", "buffer", "on_error"];
const BUFFER_KEYS: &[&str] = &["capacity_blocks", "when_full"];
const ON_ERROR_KEYS: &[&str] = &["policy", "max_restarts", "backoff_ms", "reset_after_ms"];
const TOP_KEYS: &[&str] = &["version", "pipeline", "capture", "process", "storage"];

pub use crate::discipline::buffers::WhenFull;

/// A stage's reaction to an error from its plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Restart,
    Ignore,
    Fail,
}

impl Policy {
    pub const NAMES: &'static [&'static str] = &["restart", "ignore", "fail"];
}

#[derive(Debug, Clone, PartialEq)]
pub struct OnError {
    pub policy: Policy,
    /// Restarts allowed within one window: the count starts again once the stage has run
    /// `reset_after_ms` without a fault.
    pub max_restarts: u32,
    pub backoff_ms: u64,
    pub reset_after_ms: u64,
}

impl Default for OnError {
    fn default() -> Self {
        OnError {
            policy: Policy::Fail,
            max_restarts: 3,
            backoff_ms: 200,
            reset_after_ms: 60_000,
        }
    }
}

/// `buffer = { ... }` on a consuming stage: applies to its input edges. `None` = the default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BufferSpec {
    pub capacity_blocks: Option<u32>,
    pub when_full: Option<WhenFull>,
}

/// One entry of `inputs`: `"stage"` or `"stage.port"`.
#[derive(Debug, Clone, PartialEq)]
pub struct InputRef {
    pub stage: String,
    pub port: Option<String>,
    pub span: Range<usize>,
}

/// A stage as written in the file.
#[derive(Debug, Clone)]
pub struct StageDecl {
    pub id: String,
    pub kind: PluginKind,
    /// The `[kind.id]` header (or the key in an inline table).
    pub header_span: Range<usize>,
    pub plugin: String,
    pub plugin_span: Range<usize>,
    pub inputs: Vec<InputRef>,
    pub inputs_span: Option<Range<usize>>,
    pub buffer: BufferSpec,
    pub on_error: OnError,
    /// The plugin's keys, as JSON.
    pub config: Map<String, Value>,
    /// Position of each plugin key (top level of the stage table).
    pub config_spans: BTreeMap<String, Range<usize>>,
}

/// A parsed pipeline file, before plugins are consulted.
#[derive(Debug, Clone)]
pub struct PipelineFile {
    pub name: Option<String>,
    pub sample_rate: u32,
    pub block_frames: u32,
    pub monitor_interval_ms: u64,
    pub stall_timeout_ms: u64,
    pub stages: Vec<StageDecl>,
}

/// Parse `text`, appending every problem to `diags`. Returns `None` only when the TOML itself
/// does not parse.
pub fn parse(text: &str, diags: &mut Vec<Diagnostic>) -> Option<PipelineFile> {
    let root = parse_toml(text, diags)?;
    let root_span = root.span();
    let root = root.into_inner();
    let mut file = PipelineFile {
        name: None,
        sample_rate: 48_000,
        block_frames: 480,
        monitor_interval_ms: 500,
        stall_timeout_ms: 2_000,
        stages: Vec::new(),
    };
    check_top_keys(&root, diags);
    check_version(&root, root_span, diags);
    if let Some(p) = root.get("pipeline") {
        match p.get_ref() {
            DeValue::Table(t) => parse_pipeline(t, &mut file, diags),
            _ => diags.push(
                Diagnostic::error("`pipeline` must be a table", p.span())
                    .help("write `[pipeline]` followed by its keys"),
            ),
        }
    }
    file.stages = parse_stages(&root, diags);
    Some(file)
}

/// The TOML document, or `None` with every syntax error reported.
fn parse_toml<'t>(text: &'t str, diags: &mut Vec<Diagnostic>) -> Option<Spanned<DeTable<'t>>> {
    let (root, errors) = DeTable::parse_recoverable(text);
    if errors.is_empty() {
        return Some(root);
    }
    for e in errors {
        let span = e.span().unwrap_or(0..0);
        let msg = e.message().trim().to_string();
        let msg = msg.lines().next().unwrap_or("invalid TOML").to_string();
        diags.push(
            Diagnostic::error(format!("TOML syntax: {msg}"), span)
                .help("fix the syntax here; TOML strings need quotes and tables `[a.b]` headers"),
        );
    }
    None
}

fn check_top_keys(root: &DeTable<'_>, diags: &mut Vec<Diagnostic>) {
    for (key, _) in root.iter() {
        let k = key.get_ref().as_ref();
        if !TOP_KEYS.contains(&k) {
            diags.push(unknown_key(k, key.span(), TOP_KEYS, "at the top level"));
        }
    }
}

/// `version` is present and one this host reads.
fn check_version(root: &DeTable<'_>, root_span: Range<usize>, diags: &mut Vec<Diagnostic>) {
    let Some(v) = root.get("version") else {
        diags.push(
            Diagnostic::error("missing `version`", root_span.start..root_span.start)
                .help("start the file with `version = 1`"),
        );
        return;
    };
    let (message, label) = match v.get_ref() {
        DeValue::Integer(i)
            if parse_int(i.as_str(), i.radix())
                .is_some_and(|n| SUPPORTED_VERSIONS.contains(&n)) =>
        {
            return
        }
        DeValue::Integer(i) => (
            format!("unsupported pipeline file `version` ({})", i.as_str()),
            "this version".to_string(),
        ),
        other => (
            "`version` must be an integer".to_string(),
            format!("found {}", other.type_str()),
        ),
    };
    diags.push(
        Diagnostic::error(message, v.span())
            .label(label)
            .help(format!(
                "this host reads version {}: write `version = 1`",
                versions()
            )),
    );
}

/// Every `[capture.ID]`, `[process.ID]` and `[storage.ID]`, in file order.
fn parse_stages(root: &DeTable<'_>, diags: &mut Vec<Diagnostic>) -> Vec<StageDecl> {
    let mut stages = Vec::new();
    let mut seen: BTreeMap<String, PluginKind> = BTreeMap::new();
    for kind in [
        PluginKind::Capture,
        PluginKind::Process,
        PluginKind::Storage,
    ] {
        let Some(section) = root.get(kind.as_str()) else {
            continue;
        };
        let DeValue::Table(section_table) = section.get_ref() else {
            diags.push(
                Diagnostic::error(
                    format!("`{kind}` must be a table of stages"),
                    section.span(),
                )
                .help(format!("declare each stage as `[{kind}.ID]`")),
            );
            continue;
        };
        for (id, body) in section_table.iter() {
            let id_str = id.get_ref().as_ref().to_string();
            if let Some(t) = stage_table(&id_str, id.span(), kind, body, &mut seen, diags) {
                stages.push(parse_stage(&id_str, kind, id.span(), t, diags));
            }
        }
    }
    stages.sort_by_key(|s| s.header_span.start);
    stages
}

/// The table of the stage `id`, if its id is new and valid and it is a table.
fn stage_table<'a, 't>(
    id: &str,
    id_span: Range<usize>,
    kind: PluginKind,
    body: &'a Spanned<DeValue<'t>>,
    seen: &mut BTreeMap<String, PluginKind>,
    diags: &mut Vec<Diagnostic>,
) -> Option<&'a DeTable<'t>> {
    if let Some(other_kind) = seen.get(id) {
        diags.push(
            Diagnostic::error(format!("duplicate stage id `{id}`"), id_span)
                .label("second use")
                .help(format!("`{id}` is already a {other_kind} stage; stage ids are unique across kinds, rename one"))
                .stage(id),
        );
        return None;
    }
    seen.insert(id.to_string(), kind);
    if id.contains('.') || id.is_empty() {
        diags.push(
            Diagnostic::error(format!("invalid stage id `{id}`"), id_span)
                .help("a stage id may not contain `.` (it separates stage and port in `inputs`): use `-` or `_`")
                .stage(id),
        );
        return None;
    }
    let DeValue::Table(t) = body.get_ref() else {
        diags.push(
            Diagnostic::error(format!("stage `{id}` must be a table"), body.span())
                .help(format!("write `[{kind}.{id}]` followed by its keys"))
                .stage(id),
        );
        return None;
    };
    Some(t)
}

fn versions() -> String {
    SUPPORTED_VERSIONS
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn unknown_key(key: &str, span: Range<usize>, valid: &[&str], what: &str) -> Diagnostic {
    let suggestions = closest(key, valid.iter().copied());
    let help = match suggestions.first() {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("valid keys here: {}", valid.join(", ")),
    };
    Diagnostic::error(format!("unknown key `{key}` {what}"), span)
        .label("unknown")
        .help(help)
}

fn parse_int(text: &str, radix: u32) -> Option<i64> {
    let digits: String = text.chars().filter(|c| *c != '_').collect();
    let digits = digits.trim_start_matches('+');
    let digits = if radix != 10 {
        &digits[2.min(digits.len())..]
    } else {
        digits
    };
    i64::from_str_radix(digits, radix).ok()
}

fn parse_float(text: &str) -> Option<f64> {
    let t: String = text.chars().filter(|c| *c != '_').collect();
    match t.as_str() {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" | "+nan" | "-nan" => Some(f64::NAN),
        _ => t.parse().ok(),
    }
}

/// A whole number from `min` to `max`, or a diagnostic suggesting `default`.
fn uint(
    v: &Spanned<DeValue<'_>>,
    key: &str,
    (min, max, default): (u64, u64, u64),
    diags: &mut Vec<Diagnostic>,
) -> Option<u64> {
    let n = match v.get_ref() {
        DeValue::Integer(i) => parse_int(i.as_str(), i.radix()),
        _ => None,
    };
    match n {
        Some(n) if n >= min as i64 && (n as u64) <= max => Some(n as u64),
        _ => {
            let label = match n {
                Some(n) if n < min as i64 => format!("{n} is below {min}"),
                Some(n) => format!("{n} is above {max}"),
                None => format!("found {}", v.get_ref().type_str()),
            };
            diags.push(
                Diagnostic::error(
                    format!("`{key}` must be a whole number from {min} to {max}"),
                    v.span(),
                )
                .label(label)
                .help(format!("e.g. `{key} = {default}` (the default)")),
            );
            None
        }
    }
}

fn string(v: &Spanned<DeValue<'_>>, key: &str, diags: &mut Vec<Diagnostic>) -> Option<String> {
    match v.get_ref() {
        DeValue::String(s) => Some(s.to_string()),
        other => {
            diags.push(
                Diagnostic::error(format!("`{key}` must be a string"), v.span())
                    .label(format!("found {}", other.type_str()))
                    .help(format!("quote it: {key} = \"...\"")),
            );
            None
        }
    }
}

fn one_of<T: Copy>(
    v: &Spanned<DeValue<'_>>,
    key: &str,
    names: &[&str],
    values: &[T],
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let s = string(v, key, diags)?;
    match names.iter().position(|n| *n == s) {
        Some(i) => Some(values[i]),
        None => {
            let sugg = closest(&s, names.iter().copied());
            let help = match sugg.first() {
                Some(c) => format!("did you mean \"{c}\"? (one of: {})", names.join(", ")),
                None => format!("one of: {}", names.join(", ")),
            };
            diags.push(Diagnostic::error(format!("invalid `{key}` \"{s}\""), v.span()).help(help));
            None
        }
    }
}

fn parse_pipeline(t: &DeTable<'_>, file: &mut PipelineFile, diags: &mut Vec<Diagnostic>) {
    for (key, v) in t.iter() {
        match key.get_ref().as_ref() {
            "name" => file.name = string(v, "name", diags),
            "sample_rate" => {
                if let Some(n) = uint(v, "sample_rate", (1000, 768_000, 48_000), diags) {
                    file.sample_rate = n as u32;
                }
            }
            "block_frames" => {
                if let Some(n) = uint(v, "block_frames", (16, 1 << 20, 480), diags) {
                    file.block_frames = n as u32;
                }
            }
            "monitor_interval_ms" => {
                if let Some(n) = uint(v, "monitor_interval_ms", (10, 3_600_000, 500), diags) {
                    file.monitor_interval_ms = n;
                }
            }
            "stall_timeout_ms" => {
                if let Some(n) = uint(v, "stall_timeout_ms", (10, 3_600_000, 2_000), diags) {
                    file.stall_timeout_ms = n;
                }
            }
            other => diags.push(unknown_key(
                other,
                key.span(),
                PIPELINE_KEYS,
                "in [pipeline]",
            )),
        }
    }
}

fn parse_stage(
    id: &str,
    kind: PluginKind,
    header_span: Range<usize>,
    t: &DeTable<'_>,
    diags: &mut Vec<Diagnostic>,
) -> StageDecl {
    let before = diags.len();
    let mut stage = StageDecl {
        id: id.to_string(),
        kind,
        header_span: header_span.clone(),
        plugin: String::new(),
        plugin_span: header_span.clone(),
        inputs: Vec::new(),
        inputs_span: None,
        buffer: BufferSpec::default(),
        on_error: OnError::default(),
        config: Map::new(),
        config_spans: BTreeMap::new(),
    };
    for (key, v) in t.iter() {
        let k = key.get_ref().as_ref();
        match k {
            "plugin" => {
                if let Some(p) = string(v, "plugin", diags) {
                    stage.plugin = p;
                    stage.plugin_span = v.span();
                }
            }
            "inputs" => {
                stage.inputs_span = Some(v.span());
                stage.inputs = parse_inputs(v, diags);
            }
            "buffer" => parse_buffer(v, &mut stage.buffer, diags),
            "on_error" => parse_on_error(v, &mut stage.on_error, diags),
            _ => {
                stage.config_spans.insert(k.to_string(), key.span());
                stage.config.insert(k.to_string(), to_json(v.get_ref()));
            }
        }
    }
    if stage.plugin.is_empty() && !t.contains_key("plugin") {
        diags.push(
            Diagnostic::error(format!("stage `{id}` has no `plugin`"), header_span)
                .help("add plugin = \"NAME\"; `tapeline plugins` lists the installed ones")
                .stage(id),
        );
    }
    for d in &mut diags[before..] {
        d.stage.get_or_insert_with(|| id.to_string());
    }
    // Kept even with errors, so that references to it do not cascade into more errors.
    stage
}

/// `inputs = ["stage", "stage.port", ...]`; the entries that are strings.
fn parse_inputs(v: &Spanned<DeValue<'_>>, diags: &mut Vec<Diagnostic>) -> Vec<InputRef> {
    let DeValue::Array(items) = v.get_ref() else {
        diags.push(
            Diagnostic::error("`inputs` must be a list of stage names", v.span())
                .label(format!("found {}", v.get_ref().type_str()))
                .help("write inputs = [\"stage\"] or [\"stage.port\"]"),
        );
        return Vec::new();
    };
    let mut inputs = Vec::new();
    for item in items.iter() {
        if let Some(s) = string(item, "inputs", diags) {
            let (stage, port) = match s.split_once('.') {
                Some((a, b)) => (a.to_string(), Some(b.to_string())),
                None => (s.clone(), None),
            };
            inputs.push(InputRef {
                stage,
                port,
                span: item.span(),
            });
        }
    }
    inputs
}

/// `buffer = { capacity_blocks = N, when_full = "..." }`.
fn parse_buffer(v: &Spanned<DeValue<'_>>, buffer: &mut BufferSpec, diags: &mut Vec<Diagnostic>) {
    let DeValue::Table(b) = v.get_ref() else {
        diags.push(
            Diagnostic::error("`buffer` must be a table", v.span())
                .help("write buffer = { capacity_blocks = 64, when_full = \"block\" }"),
        );
        return;
    };
    for (bk, bv) in b.iter() {
        match bk.get_ref().as_ref() {
            "capacity_blocks" => {
                buffer.capacity_blocks =
                    uint(bv, "capacity_blocks", (2, 65_536, 64), diags).map(|n| n as u32)
            }
            "when_full" => {
                buffer.when_full = one_of(
                    bv,
                    "when_full",
                    WhenFull::NAMES,
                    &[WhenFull::Block, WhenFull::DropOldest, WhenFull::DropNewest],
                    diags,
                )
            }
            other => diags.push(unknown_key(other, bk.span(), BUFFER_KEYS, "in `buffer`")),
        }
    }
}

/// `on_error = { policy = "...", max_restarts = N, backoff_ms = N, reset_after_ms = N }`.
fn parse_on_error(v: &Spanned<DeValue<'_>>, on_error: &mut OnError, diags: &mut Vec<Diagnostic>) {
    let DeValue::Table(b) = v.get_ref() else {
        diags.push(
            Diagnostic::error("`on_error` must be a table", v.span()).help(
                "write on_error = { policy = \"restart\", max_restarts = 5, backoff_ms = 200 }",
            ),
        );
        return;
    };
    for (bk, bv) in b.iter() {
        match bk.get_ref().as_ref() {
            "policy" => {
                let policies = [Policy::Restart, Policy::Ignore, Policy::Fail];
                if let Some(p) = one_of(bv, "policy", Policy::NAMES, &policies, diags) {
                    on_error.policy = p;
                }
            }
            "max_restarts" => {
                if let Some(n) = uint(bv, "max_restarts", (0, 1000, 3), diags) {
                    on_error.max_restarts = n as u32;
                }
            }
            "backoff_ms" => {
                if let Some(n) = uint(bv, "backoff_ms", (0, 600_000, 200), diags) {
                    on_error.backoff_ms = n;
                }
            }
            "reset_after_ms" => {
                if let Some(n) = uint(bv, "reset_after_ms", (1, 86_400_000, 60_000), diags) {
                    on_error.reset_after_ms = n;
                }
            }
            other => diags.push(unknown_key(
                other,
                bk.span(),
                ON_ERROR_KEYS,
                "in `on_error`",
            )),
        }
    }
}

/// A TOML value as JSON, for the plugin's serde config.
pub fn to_json(v: &DeValue<'_>) -> Value {
    match v {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => {
            parse_int(i.as_str(), i.radix()).map_or(Value::Null, |n| Value::Number(n.into()))
        }
        DeValue::Float(f) => parse_float(f.as_str())
            .and_then(Number::from_f64)
            .map_or(Value::Null, Value::Number),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(a) => Value::Array(a.iter().map(|x| to_json(x.get_ref())).collect()),
        DeValue::Table(t) => Value::Object(
            t.iter()
                .map(|(k, x)| (k.get_ref().to_string(), to_json(x.get_ref())))
                .collect(),
        ),
    }
}
