//! TOML text → [`PipelineFile`]: host keys checked and typed, plugin keys kept as JSON with the
//! position of each key, every problem collected rather than stopping at the first.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};
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
    "isolate",
];
/// Keys of a stage table that belong to the host; every other key goes to the plugin.
pub const HOST_KEYS: &[&str] = &[
    "plugin", "inputs", "buffer", "on_error", "isolate", "limits",
];
const BUFFER_KEYS: &[&str] = &["capacity_blocks", "when_full"];
const ON_ERROR_KEYS: &[&str] = &["policy", "max_restarts", "backoff_ms", "reset_after_ms"];
const LIMITS_KEYS: &[&str] = &["memory_mb", "cpu_seconds", "open_files"];
const TOP_KEYS: &[&str] = &["version", "pipeline", "capture", "process", "storage"];

/// The largest pipeline file read, in bytes (1 MiB); a larger one is refused unread.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// The most stages a pipeline may have.
pub const MAX_STAGES: usize = 1024;
/// The most edges into one stage (its `inputs`), and out of one (inputs naming it).
pub const MAX_EDGES_PER_STAGE: usize = 256;

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

/// `limits = { ... }` on an isolated stage: resource limits of its process (`setrlimit` in the
/// child). `None` = no limit. Serializable: the host hands it to the stage's child process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Address space, in MiB (`RLIMIT_AS`).
    pub memory_mb: Option<u64>,
    /// CPU time, in seconds (`RLIMIT_CPU`).
    pub cpu_seconds: Option<u64>,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
}

impl Limits {
    /// Smallest, largest and an example value of each limit.
    pub const MEMORY_MB: (u64, u64, u64) = (16, 1_048_576, 1024);
    pub const CPU_SECONDS: (u64, u64, u64) = (1, 31_536_000, 3600);
    pub const OPEN_FILES: (u64, u64, u64) = (16, 1_048_576, 1024);
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
    /// Whether the stage's plugin runs in a child process: its `isolate`, else the pipeline's.
    pub isolate: bool,
    pub limits: Limits,
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
    /// `isolate`: the default of every stage.
    pub isolate: bool,
    pub stages: Vec<StageDecl>,
}

/// Parse `text`, appending every problem to `diags`. Returns `None` only when the TOML itself
/// does not parse, or the file is over one of the limits ([`MAX_STAGES`],
/// [`MAX_EDGES_PER_STAGE`]): then nothing more is checked.
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
        isolate: false,
        stages: Vec::new(),
    };
    check_top_keys(&root, diags);
    check_version(&root, root_span, diags);
    if !check_stage_count(&root, diags) {
        return None;
    }
    if let Some(p) = root.get("pipeline") {
        match p.get_ref() {
            DeValue::Table(t) => parse_pipeline(t, &mut file, diags),
            _ => diags.push(
                Diagnostic::error("`pipeline` must be a table", p.span())
                    .help("write `[pipeline]` followed by its keys"),
            ),
        }
    }
    file.stages = parse_stages(&root, default_isolation(&root), diags);
    check_fan(&file.stages, diags).then_some(file)
}

/// At most [`MAX_STAGES`] stages; if there are more, an error at the first one over the limit.
fn check_stage_count(root: &DeTable<'_>, diags: &mut Vec<Diagnostic>) -> bool {
    let mut ids: Vec<Range<usize>> = [
        PluginKind::Capture,
        PluginKind::Process,
        PluginKind::Storage,
    ]
    .iter()
    .filter_map(|kind| match root.get(kind.as_str())?.get_ref() {
        DeValue::Table(t) => Some(t.iter().map(|(id, _)| id.span())),
        _ => None,
    })
    .flatten()
    .collect();
    if ids.len() <= MAX_STAGES {
        return true;
    }
    ids.sort_by_key(|s| s.start);
    diags.push(
        Diagnostic::error(
            format!(
                "{} stages, over the limit of {MAX_STAGES} stages in a pipeline",
                ids.len()
            ),
            ids[MAX_STAGES].clone(),
        )
        .label(format!("stage {}", MAX_STAGES + 1))
        .help(format!(
            "a pipeline may have at most {MAX_STAGES} stages: run the work as several \
             pipelines (its stages were not checked further)"
        )),
    );
    false
}

/// At most [`MAX_EDGES_PER_STAGE`] edges into a stage (its `inputs`) and out of a stage
/// (inputs naming it); errors at the first input over the limit.
fn check_fan(stages: &[StageDecl], diags: &mut Vec<Diagnostic>) -> bool {
    let mut ok = true;
    let limit = MAX_EDGES_PER_STAGE;
    for s in stages.iter().filter(|s| s.inputs.len() > limit) {
        ok = false;
        diags.push(
            Diagnostic::error(
                format!(
                    "stage `{}` has {} inputs, over the limit of {limit} edges into a stage",
                    s.id,
                    s.inputs.len()
                ),
                s.inputs[limit].span.clone(),
            )
            .label(format!("input {}", limit + 1))
            .help(format!(
                "a stage may take at most {limit} inputs: merge them in steps \
                 (`channel-merge` stages feeding one another)"
            ))
            .stage(&s.id),
        );
    }
    let mut refs: Vec<(&InputRef, &str)> = stages
        .iter()
        .flat_map(|s| s.inputs.iter().map(move |r| (r, s.id.as_str())))
        .collect();
    refs.sort_by_key(|(r, _)| r.span.start);
    let mut fan_out: BTreeMap<&str, Vec<(&InputRef, &str)>> = BTreeMap::new();
    for (r, consumer) in refs {
        fan_out
            .entry(r.stage.as_str())
            .or_default()
            .push((r, consumer));
    }
    for (producer, uses) in fan_out.iter().filter(|(_, u)| u.len() > limit) {
        ok = false;
        let (first_over, consumer) = uses[limit];
        diags.push(
            Diagnostic::error(
                format!(
                    "stage `{producer}` feeds {} inputs, over the limit of {limit} edges out \
                     of a stage",
                    uses.len()
                ),
                first_over.span.clone(),
            )
            .label(format!("edge {} out of `{producer}`", limit + 1))
            .help(format!(
                "at most {limit} inputs may name one stage: feed fewer stages from `{producer}`"
            ))
            .stage(consumer),
        );
    }
    ok
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

/// The `[pipeline] isolate` its stages fall back on; `None` when it is written but is not a
/// boolean (reported where it is, so that no stage's `limits` is blamed for it).
fn default_isolation(root: &DeTable<'_>) -> Option<bool> {
    let Some(DeValue::Table(p)) = root.get("pipeline").map(Spanned::get_ref) else {
        return Some(false);
    };
    match p.get("isolate").map(Spanned::get_ref) {
        None => Some(false),
        Some(DeValue::Boolean(b)) => Some(*b),
        Some(_) => None,
    }
}

/// Every `[capture.ID]`, `[process.ID]` and `[storage.ID]`, in file order.
fn parse_stages(
    root: &DeTable<'_>,
    default_isolate: Option<bool>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<StageDecl> {
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
                stages.push(parse_stage(
                    &id_str,
                    kind,
                    id.span(),
                    t,
                    default_isolate,
                    diags,
                ));
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
    uint_with_help(v, key, (min, max), diags, || {
        format!("e.g. `{key} = {default}` (the default)")
    })
}

/// A whole number from `min` to `max`, or a diagnostic with `help`.
fn uint_with_help(
    v: &Spanned<DeValue<'_>>,
    key: &str,
    (min, max): (u64, u64),
    diags: &mut Vec<Diagnostic>,
    help: impl FnOnce() -> String,
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
                .help(help()),
            );
            None
        }
    }
}

fn boolean(v: &Spanned<DeValue<'_>>, key: &str, diags: &mut Vec<Diagnostic>) -> Option<bool> {
    match v.get_ref() {
        DeValue::Boolean(b) => Some(*b),
        other => {
            diags.push(
                Diagnostic::error(format!("`{key}` must be true or false"), v.span())
                    .label(format!("found {}", other.type_str()))
                    .help(if matches!(other, DeValue::String(_)) {
                        format!("write `{key} = true` or `{key} = false`, without quotes")
                    } else {
                        format!("write `{key} = true` or `{key} = false`")
                    }),
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
            "isolate" => {
                if let Some(b) = boolean(v, "isolate", diags) {
                    file.isolate = b;
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
    default_isolate: Option<bool>,
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
        isolate: false,
        limits: Limits::default(),
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
            // Settled after the loop, with the pipeline's default.
            "isolate" => {}
            "limits" => stage.limits = parse_limits(v, diags),
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
    stage.isolate = parse_isolation(t, default_isolate, diags);
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

/// `limits = { memory_mb = N, cpu_seconds = N, open_files = N }`; each one optional.
fn parse_limits(v: &Spanned<DeValue<'_>>, diags: &mut Vec<Diagnostic>) -> Limits {
    let mut limits = Limits::default();
    let DeValue::Table(b) = v.get_ref() else {
        diags.push(
            Diagnostic::error("`limits` must be a table", v.span())
                .label(format!("found {}", v.get_ref().type_str()))
                .help("write limits = { memory_mb = 1024, cpu_seconds = 3600, open_files = 1024 }"),
        );
        return limits;
    };
    for (bk, bv) in b.iter() {
        let key = bk.get_ref().as_ref();
        let (slot, range) = match key {
            "memory_mb" => (&mut limits.memory_mb, Limits::MEMORY_MB),
            "cpu_seconds" => (&mut limits.cpu_seconds, Limits::CPU_SECONDS),
            "open_files" => (&mut limits.open_files, Limits::OPEN_FILES),
            other => {
                diags.push(unknown_key(other, bk.span(), LIMITS_KEYS, "in `limits`"));
                continue;
            }
        };
        let (min, max, example) = range;
        *slot = uint_with_help(bv, key, (min, max), diags, || {
            format!("e.g. `{key} = {example}`; leave it out for no limit")
        });
    }
    limits
}

/// Whether the stage runs in its own process: its `isolate`, else the pipeline's. A stage with
/// `limits` must (they are applied to that process).
fn parse_isolation(
    t: &DeTable<'_>,
    default_isolate: Option<bool>,
    diags: &mut Vec<Diagnostic>,
) -> bool {
    let isolate = match t.get("isolate") {
        None => default_isolate,
        Some(v) => boolean(v, "isolate", diags),
    };
    if isolate == Some(false) {
        if let Some((key, _)) = t.get_key_value("limits") {
            let fix = if t.contains_key("isolate") {
                "limits apply to a stage in its own process: change its `isolate = false` to \
                 `isolate = true`"
            } else {
                "limits apply to a stage in its own process: add `isolate = true`"
            };
            diags.push(
                Diagnostic::error(
                    "`limits` on a stage that does not run in its own process",
                    key.span(),
                )
                .label("this stage runs in the host's process")
                .help(fix),
            );
        }
    }
    isolate.unwrap_or(false)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The parsed file and its errors (message, the text under the span, help), in file order.
    fn parse_text(text: &str) -> (PipelineFile, Vec<(String, String, String)>) {
        let mut diags = Vec::new();
        let file = parse(text, &mut diags).expect("valid TOML");
        // In file order, as `load` gives them.
        diags.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
        let errors = diags
            .iter()
            .filter(|d| d.is_error())
            .map(|d| {
                let span = d.span.clone().unwrap_or(0..0);
                (
                    d.message.clone(),
                    text[span].to_string(),
                    d.help.clone().unwrap_or_default(),
                )
            })
            .collect();
        (file, errors)
    }

    fn stage<'a>(file: &'a PipelineFile, id: &str) -> &'a StageDecl {
        file.stages.iter().find(|s| s.id == id).expect("the stage")
    }

    const TWO_STAGES: &str =
        "[capture.t]\nplugin = \"tone\"\n[storage.n]\nplugin = \"null\"\ninputs = [\"t\"]\n";

    #[test]
    fn stages_run_in_process_without_limits_by_default() {
        let (file, errors) = parse_text(&format!("version = 1\n{TWO_STAGES}"));
        assert!(errors.is_empty(), "{errors:?}");
        assert!(!file.isolate);
        for s in &file.stages {
            assert!(!s.isolate, "{}", s.id);
            assert_eq!(s.limits, Limits::default());
            assert!(!s.config.contains_key("isolate") && !s.config.contains_key("limits"));
        }
    }

    #[test]
    fn the_pipelines_isolate_is_every_stages_default_and_a_stage_overrides_it() {
        let text = "version = 1\n[pipeline]\nisolate = true\n[capture.t]\nplugin = \"tone\"\n\
                    isolate = false\n[storage.n]\nplugin = \"null\"\ninputs = [\"t\"]\n\
                    limits = { memory_mb = 512, open_files = 64 }\n";
        let (file, errors) = parse_text(text);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(file.isolate);
        assert!(!stage(&file, "t").isolate);
        let n = stage(&file, "n");
        assert!(n.isolate);
        assert_eq!(
            n.limits,
            Limits {
                memory_mb: Some(512),
                cpu_seconds: None,
                open_files: Some(64),
            }
        );
        assert!(n.config.is_empty(), "host keys stay with the host");
    }

    #[test]
    fn a_stage_can_be_isolated_on_its_own_with_every_limit() {
        let text = "version = 1\n[capture.t]\nplugin = \"tone\"\nisolate = true\n\
                    limits = { memory_mb = 16, cpu_seconds = 31536000, open_files = 1048576 }\n";
        let (file, errors) = parse_text(text);
        assert!(errors.is_empty(), "{errors:?}");
        let t = stage(&file, "t");
        assert!(t.isolate);
        assert_eq!(
            t.limits,
            Limits {
                memory_mb: Some(16),
                cpu_seconds: Some(31_536_000),
                open_files: Some(1_048_576),
            }
        );
    }

    #[test]
    fn limits_on_a_stage_in_the_hosts_process_are_an_error_at_the_key() {
        for (text, fix) in [
            (
                "version = 1\n[capture.t]\nplugin = \"tone\"\nlimits = { memory_mb = 512 }\n",
                "add `isolate = true`",
            ),
            (
                "version = 1\n[pipeline]\nisolate = true\n[capture.t]\nplugin = \"tone\"\n\
                 isolate = false\nlimits = { memory_mb = 512 }\n",
                "change its `isolate = false` to `isolate = true`",
            ),
        ] {
            let (_, errors) = parse_text(text);
            assert_eq!(
                errors,
                [(
                    "`limits` on a stage that does not run in its own process".to_string(),
                    "limits".to_string(),
                    format!("limits apply to a stage in its own process: {fix}"),
                )],
                "{text}"
            );
        }
    }

    #[test]
    fn a_misspelt_or_out_of_range_limit_is_reported_with_a_fix() {
        let text = "version = 1\n[capture.t]\nplugin = \"tone\"\nisolate = true\n\
                    limits = { memory = 512, cpu_seconds = 0, open_files = \"many\" }\n";
        let (_, errors) = parse_text(text);
        assert_eq!(
            errors,
            [
                (
                    "unknown key `memory` in `limits`".to_string(),
                    "memory".to_string(),
                    "did you mean `memory_mb`?".to_string(),
                ),
                (
                    "`cpu_seconds` must be a whole number from 1 to 31536000".to_string(),
                    "0".to_string(),
                    "e.g. `cpu_seconds = 3600`; leave it out for no limit".to_string(),
                ),
                (
                    "`open_files` must be a whole number from 16 to 1048576".to_string(),
                    "\"many\"".to_string(),
                    "e.g. `open_files = 1024`; leave it out for no limit".to_string(),
                ),
            ]
        );
    }

    #[test]
    fn an_isolate_that_is_not_a_boolean_is_reported_once_and_blames_no_limits() {
        for text in [
            "version = 1\n[capture.t]\nplugin = \"tone\"\nisolate = \"yes\"\nlimits = { cpu_seconds = 5 }\n",
            "version = 1\n[pipeline]\nisolate = \"yes\"\n[capture.t]\nplugin = \"tone\"\nlimits = { cpu_seconds = 5 }\n",
        ] {
            let (_, errors) = parse_text(text);
            assert_eq!(
                errors,
                [(
                    "`isolate` must be true or false".to_string(),
                    "\"yes\"".to_string(),
                    "write `isolate = true` or `isolate = false`, without quotes".to_string(),
                )],
                "{text}"
            );
        }
    }

    /// Errors of a file that may not parse to a `PipelineFile`: (message, text under the span).
    fn errors_of(text: &str) -> (bool, Vec<(String, String)>) {
        let mut diags = Vec::new();
        let parsed = parse(text, &mut diags).is_some();
        let errors = diags
            .iter()
            .filter(|d| d.is_error())
            .map(|d| {
                let span = d.span.clone().unwrap_or(0..0);
                (d.message.clone(), text[span].to_string())
            })
            .collect();
        (parsed, errors)
    }

    #[test]
    fn more_than_the_most_stages_is_an_error_at_the_first_one_over_and_nothing_else_is_parsed() {
        let mut text = String::from("version = 1\n[capture.t]\nplugin = \"tone\"\n");
        // A chain: t → s1 → s2 → …
        for i in 1..=MAX_STAGES + 5 {
            let input = if i == 1 {
                "t".to_string()
            } else {
                format!("s{}", i - 1)
            };
            text += &format!("[process.s{i}]\nplugin = \"gain\"\ninputs = [\"{input}\"]\n");
        }
        let (parsed, errors) = errors_of(&text);
        assert!(!parsed);
        assert_eq!(
            errors,
            [(
                format!(
                    "{} stages, over the limit of 1024 stages in a pipeline",
                    MAX_STAGES + 6
                ),
                format!("s{MAX_STAGES}"),
            )]
        );
        // Exactly the limit is fine.
        let at_limit: String = text.split("[process.s1024]").next().unwrap().to_string();
        let (parsed, errors) = errors_of(&at_limit);
        assert!(parsed && errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn more_edges_into_or_out_of_a_stage_than_the_limit_is_an_error_at_the_first_edge_over() {
        let limit = MAX_EDGES_PER_STAGE;
        let inputs: Vec<String> = (0..=limit).map(|_| "\"t\"".to_string()).collect();
        let text = format!(
            "version = 1\n[capture.t]\nplugin = \"tone\"\n[process.m]\nplugin = \"channel-merge\"\n\
             inputs = [{}]\n",
            inputs.join(", ")
        );
        let (parsed, errors) = errors_of(&text);
        assert!(!parsed);
        let messages: Vec<&str> = errors.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(
            messages,
            [
                "stage `m` has 257 inputs, over the limit of 256 edges into a stage",
                "stage `t` feeds 257 inputs, over the limit of 256 edges out of a stage",
            ]
        );
        // Both at the 257th entry.
        let at = text.match_indices("\"t\"").nth(limit).unwrap().0;
        let mut diags = Vec::new();
        parse(&text, &mut diags);
        for d in &diags {
            assert_eq!(d.span.as_ref().map(|s| s.start), Some(at), "{}", d.message);
        }
        // 256 consumers of one stage, each with one input: the limit, allowed.
        let mut fine = String::from("version = 1\n[capture.t]\nplugin = \"tone\"\n");
        for i in 0..limit {
            fine += &format!("[storage.s{i}]\nplugin = \"null\"\ninputs = [\"t\"]\n");
        }
        let (parsed, errors) = errors_of(&fine);
        assert!(parsed && errors.is_empty(), "{errors:?}");
        let over = fine + "[storage.last]\nplugin = \"null\"\ninputs = [\"t.out\"]\n";
        let (parsed, errors) = errors_of(&over);
        assert!(!parsed);
        assert_eq!(
            errors,
            [(
                "stage `t` feeds 257 inputs, over the limit of 256 edges out of a stage"
                    .to_string(),
                "\"t.out\"".to_string()
            )]
        );
    }
}
