//! [`PipelineFile`] + installed plugins → a checked [`Plan`]: every stage's plugin found and of
//! the right kind, every input resolved to a port, no cycles, and every stage's configuration and
//! formats accepted by its own plugin — all before anything starts. Every problem is collected.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use abi_stable::std_types::{RSlice, RStr};
use tapeline_plugin_api::abi::{ContextFields, ContextRef, OutputPort, PluginError, PortFormat};
use tapeline_plugin_api::{ErrorKind, PluginKind};

use super::diagnostic::Diagnostic;
use super::parse::{Limits, OnError, PipelineFile, StageDecl, WhenFull, HOST_KEYS};
use crate::plugins::{closest, quote_list, PluginEntry, Registry};

/// Frames an edge holds when the file does not say: 64 blocks of 480 (0.64 s at 48 kHz).
pub const DEFAULT_CAPACITY_FRAMES: u32 = 64 * 480;

/// Blocks an edge holds when the file does not say: room for [`DEFAULT_CAPACITY_FRAMES`] in
/// blocks of `max_frames`, 8 to 64 of them. So an edge's memory follows the audio it holds, not
/// a block count (a chain at block 4096 would otherwise hold 5.5 s per edge).
pub fn default_capacity_blocks(max_frames: u32) -> u32 {
    DEFAULT_CAPACITY_FRAMES
        .div_ceil(max_frames.max(1))
        .clamp(8, 64)
}

/// A stage ready to build.
#[derive(Clone)]
pub struct PlannedStage {
    pub id: String,
    pub kind: PluginKind,
    pub entry: PluginEntry,
    /// The plugin's config as JSON text.
    pub config: String,
    pub on_error: OnError,
    /// The stage's plugin runs in a child process (its `isolate`, else the pipeline's).
    pub isolate: bool,
    /// Resource limits of that process (only an isolated stage has any).
    pub limits: Limits,
    /// Edge indices feeding each input, in `inputs` order.
    pub inputs: Vec<usize>,
    pub input_formats: Vec<PortFormat>,
    /// The plugin's ports, each with its `max_frames` settled: a port that declared 0 carries
    /// blocks as large as the stage's largest input (a capture's: the pipeline's block_frames).
    pub outputs: Vec<OutputPort>,
}

/// A queue between an output port and a consuming stage.
#[derive(Debug, Clone)]
pub struct PlannedEdge {
    pub from: usize,
    pub from_port: usize,
    pub to: usize,
    pub format: PortFormat,
    /// Most frames a block on this edge holds.
    pub max_frames: u32,
    pub capacity_blocks: u32,
    pub when_full: WhenFull,
    /// `producer.port -> consumer`.
    pub label: String,
}

/// A validated pipeline: stages in dependency order (every stage after its inputs).
#[derive(Clone)]
pub struct Plan {
    pub file: PipelineFile,
    pub base_dir: PathBuf,
    pub stages: Vec<PlannedStage>,
    pub edges: Vec<PlannedEdge>,
}

fn context<'a>(
    id: &'a str,
    file: &PipelineFile,
    base_dir: &'a str,
    inputs: &'a [PortFormat],
) -> ContextFields<'a> {
    ContextFields {
        stage_id: RStr::from_str(id),
        sample_rate: file.sample_rate,
        block_frames: file.block_frames,
        base_dir: RStr::from_str(base_dir),
        inputs: RSlice::from_slice(inputs),
    }
}

/// Check `file` against the installed plugins. `base_dir` is the pipeline file's folder.
pub fn plan(
    file: &PipelineFile,
    base_dir: &Path,
    registry: &Registry,
    diags: &mut Vec<Diagnostic>,
) -> Option<Plan> {
    let errors_before = error_count(diags);
    let index = StageIndex::new(file);
    let entries: Vec<Option<PluginEntry>> = file
        .stages
        .iter()
        .map(|s| lookup(s, registry, diags))
        .collect();
    let inputs = check_inputs(&index, &entries, diags);
    let order = order_stages(file, &inputs.deps, diags);
    let wiring = ask_plugins(&index, base_dir, &entries, &inputs, &order, diags);
    check_unreached_configs(file, base_dir, &entries, &wiring.asked, diags);
    super::device_check::warn_absent_devices(file, diags);
    check_source_rates(file, &order, &wiring.outputs, &wiring.resolved, diags);
    warn_unconsumed(&index, &inputs, &wiring, diags);
    if error_count(diags) > errors_before {
        return None;
    }
    let plan = build_plan(file, base_dir, &order, &entries, &wiring)?;
    check_buffer_memory(&plan, file, diags).then_some(plan)
}

/// Most memory every edge's pooled blocks may take together. A pipeline over it would abort at
/// start when the pools are allocated (or take the machine's memory).
pub const MAX_BUFFER_BYTES: u64 = 1 << 30;

/// The blocks of every edge (`capacity_blocks + 2` per edge, each `max_frames * channels`
/// samples of 4 bytes) fit in [`MAX_BUFFER_BYTES`]; if not, an error at the stage with the
/// largest input queue, naming the numbers.
fn check_buffer_memory(plan: &Plan, file: &PipelineFile, diags: &mut Vec<Diagnostic>) -> bool {
    let bytes = |e: &PlannedEdge| {
        (u64::from(e.capacity_blocks) + 2)
            * u64::from(e.max_frames)
            * u64::from(e.format.channels)
            * 4
    };
    let total: u64 = plan.edges.iter().map(bytes).sum();
    let Some(largest) = plan.edges.iter().max_by_key(|e| bytes(e)) else {
        return true;
    };
    if total <= MAX_BUFFER_BYTES {
        return true;
    }
    let stage = &plan.stages[largest.to];
    let span = file
        .stages
        .iter()
        .find(|s| s.id == stage.id)
        .map_or(0..0, |s| s.header_span.clone());
    let mib = |b: u64| b / (1 << 20);
    diags.push(
        Diagnostic::error(
            format!(
                "the queues would take {} MiB (limit {} MiB); the largest, `{}`, holds {} blocks of {} frames x {} channels ({} MiB)",
                mib(total),
                mib(MAX_BUFFER_BYTES),
                largest.label,
                largest.capacity_blocks + 2,
                largest.max_frames,
                largest.format.channels,
                mib(bytes(largest))
            ),
            span,
        )
        .help("lower `buffer = { capacity_blocks = ... }` on this stage, or `block_frames` in [pipeline]")
        .stage(&stage.id),
    );
    false
}

fn error_count(diags: &[Diagnostic]) -> usize {
    diags.iter().filter(|d| d.is_error()).count()
}

/// The file's stages by id.
struct StageIndex<'f> {
    file: &'f PipelineFile,
    by_id: BTreeMap<&'f str, usize>,
    /// Every stage id, in file order.
    ids: Vec<&'f str>,
}

impl<'f> StageIndex<'f> {
    fn new(file: &'f PipelineFile) -> Self {
        StageIndex {
            file,
            by_id: file
                .stages
                .iter()
                .enumerate()
                .map(|(i, s)| (s.id.as_str(), i))
                .collect(),
            ids: file.stages.iter().map(|s| s.id.as_str()).collect(),
        }
    }
}

/// What the `inputs` of each stage (indexed like the file's stages) come to.
struct InputCheck {
    /// The stages each stage consumes.
    deps: Vec<Vec<usize>>,
    /// Its plugin refuses the number of inputs.
    bad_count: Vec<bool>,
    /// `inputs` is written but could not be read (e.g. a string): reported where it is.
    malformed: Vec<bool>,
}

/// Inputs: presence, references, counts.
fn check_inputs(
    index: &StageIndex<'_>,
    entries: &[Option<PluginEntry>],
    diags: &mut Vec<Diagnostic>,
) -> InputCheck {
    let file = index.file;
    let mut check = InputCheck {
        deps: vec![Vec::new(); file.stages.len()],
        bad_count: vec![false; file.stages.len()],
        malformed: file
            .stages
            .iter()
            .map(|s| {
                s.inputs_span.as_ref().is_some_and(|span| {
                    diags.iter().any(|d| {
                        d.is_error()
                            && d.span
                                .as_ref()
                                .is_some_and(|x| x.start >= span.start && x.end <= span.end)
                    })
                })
            })
            .collect(),
    };
    for (i, s) in file.stages.iter().enumerate() {
        check_inputs_present(file, s, check.malformed[i], diags);
        check.deps[i] = resolve_stage_refs(index, s, diags);
        if let Some(e) = &entries[i] {
            check.bad_count[i] = !check_input_count(s, e, diags);
        }
    }
    check
}

/// A capture has no inputs; a process or storage stage has some.
fn check_inputs_present(
    file: &PipelineFile,
    s: &StageDecl,
    malformed: bool,
    diags: &mut Vec<Diagnostic>,
) {
    match (s.kind, s.inputs.is_empty()) {
        (PluginKind::Capture, false) => diags.push(
            Diagnostic::error(
                format!("capture stage `{}` cannot have inputs", s.id),
                s.inputs_span.clone().unwrap_or(s.header_span.clone()),
            )
            .help("remove `inputs`; a capture produces audio, or move the stage under [process.ID]")
            .stage(&s.id),
        ),
        // `inputs` written but malformed (e.g. a string): already reported where it is.
        (PluginKind::Process | PluginKind::Storage, true) if malformed => {}
        (PluginKind::Process | PluginKind::Storage, true) => {
            let misspelt = s
                .config_spans
                .iter()
                .find(|(k, _)| !closest(k, ["inputs"]).is_empty());
            let d = match misspelt {
                Some((k, span)) => Diagnostic::error(
                    format!("{} stage `{}` has no inputs", s.kind, s.id),
                    span.clone(),
                )
                .label(format!("`{k}` is not a host key"))
                .help("did you mean `inputs`?"),
                None => {
                    let producers: Vec<String> = file
                        .stages
                        .iter()
                        .filter(|x| x.id != s.id && x.kind != PluginKind::Storage)
                        .take(4)
                        .map(|x| format!("`{}`", x.id))
                        .collect();
                    Diagnostic::error(
                        format!("{} stage `{}` has no inputs", s.kind, s.id),
                        s.header_span.clone(),
                    )
                    .help(format!(
                        "add inputs = [\"STAGE\"] naming the stage it consumes ({})",
                        producers.join(", ")
                    ))
                }
            };
            diags.push(d.stage(&s.id));
        }
        _ => {}
    }
}

/// The stages `s` names in `inputs` that exist and have outputs.
fn resolve_stage_refs(
    index: &StageIndex<'_>,
    s: &StageDecl,
    diags: &mut Vec<Diagnostic>,
) -> Vec<usize> {
    let mut deps = Vec::new();
    for r in &s.inputs {
        match index.by_id.get(r.stage.as_str()) {
            None => {
                let ids = &index.ids;
                let sugg = closest(&r.stage, ids.iter().copied().filter(|x| *x != s.id));
                diags.push(
                    Diagnostic::error(
                        format!("input `{}` names no stage", r.stage),
                        r.span.clone(),
                    )
                    .label("unknown stage")
                    .help(if sugg.is_empty() {
                        format!("stages in this file: {}", ids.join(", "))
                    } else {
                        format!("did you mean {}?", quote_list(&sugg))
                    })
                    .stage(&s.id),
                );
            }
            Some(&j) if index.file.stages[j].kind == PluginKind::Storage => diags.push(
                Diagnostic::error(
                    format!(
                        "input `{}` is a storage stage, which has no outputs",
                        r.stage
                    ),
                    r.span.clone(),
                )
                .help("take the input from the stage that feeds it instead")
                .stage(&s.id),
            ),
            Some(&j) => deps.push(j),
        }
    }
    deps
}

/// Whether the plugin takes as many inputs as `s` lists (a capture, or none listed: yes).
fn check_input_count(s: &StageDecl, e: &PluginEntry, diags: &mut Vec<Diagnostic>) -> bool {
    let (min, max) = (
        e.manifest.inputs.min as usize,
        e.manifest.inputs.max as usize,
    );
    let n = s.inputs.len();
    if s.kind == PluginKind::Capture || n == 0 || (min..=max).contains(&n) {
        return true;
    }
    let want = if min == max {
        min.to_string()
    } else {
        format!("{min} to {max}")
    };
    diags.push(
        Diagnostic::error(
            format!("`{}` takes {want} input(s), got {n}", s.plugin),
            s.inputs_span.clone().unwrap_or(s.header_span.clone()),
        )
        .help(if n > max {
            "merge streams with `channel-merge` first, or list fewer inputs"
        } else {
            "list more inputs"
        })
        .stage(&s.id),
    );
    false
}

/// The stages in dependency order. Stages in (or behind) a cycle are left out, and one cycle is
/// reported; the rest is still checked.
fn order_stages(
    file: &PipelineFile,
    deps: &[Vec<usize>],
    diags: &mut Vec<Diagnostic>,
) -> Vec<usize> {
    let (order, cycle) = topo_order(deps);
    if let Some(cycle) = cycle {
        let names: Vec<&str> = cycle.iter().map(|&i| file.stages[i].id.as_str()).collect();
        let first = &file.stages[cycle[0]];
        diags.push(
            Diagnostic::error(
                format!(
                    "the stages form a cycle: {} → {}",
                    names.join(" → "),
                    names[0]
                ),
                first
                    .inputs_span
                    .clone()
                    .unwrap_or(first.header_span.clone()),
            )
            .help("audio flows one way: remove one of these inputs")
            .stage(&first.id),
        );
    }
    order
}

/// What the plugins said, indexed like the file's stages.
struct Wiring {
    /// The output ports of each stage whose plugin accepted its config and formats.
    outputs: Vec<Option<Vec<OutputPort>>>,
    /// The (producer, port) of each input, in `inputs` order, for stages whose inputs all
    /// resolved.
    resolved: Vec<Vec<(usize, usize)>>,
    /// Every output port of an accepted stage, and whether some input takes it.
    consumed: BTreeMap<(usize, usize), bool>,
    /// Producers named by an input that was not resolved (its consumer failed, or the port is
    /// wrong): whether they are consumed is unknown, so no warning about them.
    maybe_consumed: Vec<bool>,
    /// The stages whose plugin was asked about its config (with their real input formats).
    asked: Vec<bool>,
}

/// Formats, in dependency order: each stage's inputs resolved to ports, their formats checked
/// against its manifest, then its plugin asked to accept its config and formats and to name
/// its outputs. A stage whose upstream failed is skipped (no cascade).
fn ask_plugins(
    index: &StageIndex<'_>,
    base_dir: &Path,
    entries: &[Option<PluginEntry>],
    inputs: &InputCheck,
    order: &[usize],
    diags: &mut Vec<Diagnostic>,
) -> Wiring {
    let file = index.file;
    let base = base_dir.to_string_lossy().to_string();
    let mut wiring = Wiring {
        outputs: vec![None; file.stages.len()],
        resolved: vec![Vec::new(); file.stages.len()],
        consumed: BTreeMap::new(),
        maybe_consumed: vec![false; file.stages.len()],
        asked: vec![false; file.stages.len()],
    };
    let mut in_order = vec![false; file.stages.len()];
    for &i in order {
        in_order[i] = true;
    }
    for (i, s) in file.stages.iter().enumerate() {
        if entries[i].is_none() || !in_order[i] || inputs.bad_count[i] {
            for r in &s.inputs {
                if let Some(&j) = index.by_id.get(r.stage.as_str()) {
                    wiring.maybe_consumed[j] = true;
                }
            }
        }
    }
    for &i in order {
        let s = &file.stages[i];
        let Some(entry) = &entries[i] else { continue };
        if inputs.bad_count[i] {
            continue;
        }
        let Some(formats) = resolve_ports(index, i, &mut wiring, diags) else {
            continue;
        };
        if s.kind != PluginKind::Capture && s.inputs.is_empty() {
            continue;
        }
        if let Some(d) = check_manifest_formats(s, entry, &formats, &wiring.resolved[i], file) {
            diags.push(d);
            continue;
        }
        let config = serde_json::Value::Object(s.config.clone()).to_string();
        let ctx = context(&s.id, file, &base, &formats);
        wiring.asked[i] = true;
        let result = (entry.module.layout())(
            RStr::from_str(&s.plugin),
            RStr::from_str(&config),
            ContextRef::new(&ctx),
        )
        .into_result();
        match result {
            Ok(ports) => {
                let ports: Vec<OutputPort> = ports.into_iter().collect();
                for p in 0..ports.len() {
                    wiring.consumed.entry((i, p)).or_insert(false);
                }
                wiring.outputs[i] = Some(ports);
            }
            Err(e) => diags.extend(
                split_errors(&e)
                    .iter()
                    .map(|e| plugin_diagnostic(s, e, &formats, &wiring.resolved[i], file)),
            ),
        }
    }
    wiring
}

/// Stages the plugins could not be asked about in earnest (an input is broken, a cycle, an
/// upstream stage failed): their own config is still read, so that a file's mistakes all show in
/// one round. With the real formats unknown, only what reading the config finds is reported (an
/// unknown key, a value of the wrong type, an unknown choice), never a format question.
fn check_unreached_configs(
    file: &PipelineFile,
    base_dir: &Path,
    entries: &[Option<PluginEntry>],
    asked: &[bool],
    diags: &mut Vec<Diagnostic>,
) {
    let base = base_dir.to_string_lossy().to_string();
    for (i, s) in file.stages.iter().enumerate() {
        let Some(entry) = entries[i].as_ref().filter(|_| !asked[i]) else {
            continue;
        };
        let placeholder = PortFormat {
            channels: 2,
            sample_rate: file.sample_rate,
        };
        let formats = vec![placeholder; s.inputs.len()];
        let config = serde_json::Value::Object(s.config.clone()).to_string();
        let ctx = context(&s.id, file, &base, &formats);
        let result = (entry.module.layout())(
            RStr::from_str(&s.plugin),
            RStr::from_str(&config),
            ContextRef::new(&ctx),
        )
        .into_result();
        let Err(e) = result else { continue };
        let read_errors = split_errors(&e).into_iter().filter(|e| {
            e.kind() == ErrorKind::InvalidConfig
                && [
                    "unknown field",
                    "invalid type",
                    "unknown variant",
                    "invalid value",
                    "invalid length",
                ]
                .iter()
                .any(|w| e.message().starts_with(w))
        });
        for d in read_errors.map(|e| plugin_diagnostic(s, &e, &[], &[], file)) {
            // A key the host already named (a misspelt host key lands in the plugin's config).
            let said = diags.iter().any(|o| o.is_error() && o.span == d.span);
            if !said {
                diags.push(d);
            }
        }
    }
}

/// The formats of stage `i`'s inputs, each resolved to a port of an accepted producer (recorded
/// in `wiring`); `None` if one is not.
fn resolve_ports(
    index: &StageIndex<'_>,
    i: usize,
    wiring: &mut Wiring,
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<PortFormat>> {
    let file = index.file;
    let s = &file.stages[i];
    let mut formats = Vec::new();
    let mut ok = true;
    for r in &s.inputs {
        let Some(&j) = index.by_id.get(r.stage.as_str()) else {
            ok = false;
            continue;
        };
        // A storage stage as input is reported already.
        let Some(ports) = wiring.outputs[j]
            .as_ref()
            .filter(|_| file.stages[j].kind != PluginKind::Storage)
        else {
            ok = false;
            continue;
        };
        match resolve_port(r.port.as_deref(), ports) {
            Ok(p) => {
                formats.push(ports[p].format);
                wiring.resolved[i].push((j, p));
                wiring.consumed.insert((j, p), true);
            }
            Err(help) => {
                ok = false;
                wiring.maybe_consumed[j] = true;
                let what = match &r.port {
                    Some(p) => format!("stage `{}` has no output port `{p}`", r.stage),
                    None => format!("stage `{}` has several outputs; name one", r.stage),
                };
                diags.push(
                    Diagnostic::error(what, r.span.clone())
                        .help(help)
                        .stage(&s.id),
                );
            }
        }
    }
    ok.then_some(formats)
}

/// A warning for each output port no stage consumes, unless a mistake in some `inputs` may be
/// why.
fn warn_unconsumed(
    index: &StageIndex<'_>,
    inputs: &InputCheck,
    wiring: &Wiring,
    diags: &mut Vec<Diagnostic>,
) {
    let file = index.file;
    // An input naming no stage probably meant one of the stages that look unconsumed.
    // Likewise an `inputs` that could not be read, or was misspelt.
    let misspelt_inputs = file.stages.iter().any(|s| {
        s.kind != PluginKind::Capture
            && s.inputs_span.is_none()
            && s.config_spans
                .keys()
                .any(|k| !closest(k, ["inputs"]).is_empty())
    });
    let unknown_input = inputs.malformed.contains(&true)
        || misspelt_inputs
        || file
            .stages
            .iter()
            .flat_map(|s| &s.inputs)
            .any(|r| !index.by_id.contains_key(r.stage.as_str()));
    if unknown_input {
        return;
    }
    for (&(stage, port), &used) in &wiring.consumed {
        let s = &file.stages[stage];
        if used || wiring.maybe_consumed[stage] || s.kind == PluginKind::Storage {
            continue;
        }
        let ports = wiring.outputs[stage].as_deref().unwrap_or(&[]);
        let name = if ports.len() == 1 {
            s.id.clone()
        } else {
            format!("{}.{}", s.id, ports[port].name)
        };
        diags.push(
            Diagnostic::warning(format!("output `{name}` is not consumed by any stage"), s.header_span.clone())
                .help(format!("its audio is discarded; add \"{name}\" to some stage's inputs, or remove the stage"))
                .stage(&s.id),
        );
    }
}

/// The plan, in dependency order, of a file that passed every check.
fn build_plan(
    file: &PipelineFile,
    base_dir: &Path,
    order: &[usize],
    entries: &[Option<PluginEntry>],
    wiring: &Wiring,
) -> Option<Plan> {
    let position: BTreeMap<usize, usize> = order.iter().enumerate().map(|(n, &i)| (i, n)).collect();
    let mut stages: Vec<PlannedStage> = Vec::new();
    let mut edges = Vec::new();
    for &i in order {
        let s = &file.stages[i];
        let entry = entries[i].clone()?;
        let inputs = plan_input_edges(file, i, entries, wiring, &position, &stages, &mut edges);
        // A port that does not say how large its blocks get carries blocks as large as the
        // stage's largest input (a capture's: `block_frames`).
        let largest_input = inputs
            .iter()
            .map(|&e: &usize| edges[e].max_frames)
            .max()
            .unwrap_or(file.block_frames);
        let mut ports = wiring.outputs[i].clone().unwrap_or_default();
        for port in &mut ports {
            if port.max_frames == 0 {
                port.max_frames = largest_input;
            }
        }
        stages.push(PlannedStage {
            id: s.id.clone(),
            kind: s.kind,
            entry,
            config: serde_json::Value::Object(s.config.clone()).to_string(),
            on_error: s.on_error.clone(),
            isolate: s.isolate,
            limits: s.limits,
            inputs,
            input_formats: wiring.resolved[i]
                .iter()
                .map(|&(j, p)| wiring.outputs[j].as_ref().map(|o| o[p].format))
                .collect::<Option<Vec<_>>>()?,
            outputs: ports,
        });
    }
    Some(Plan {
        file: file.clone(),
        base_dir: base_dir.to_path_buf(),
        stages,
        edges,
    })
}

/// The edges into stage `i`, appended to `edges`; returns their indices. Its producers are
/// planned already (dependency order), their ports' sizes settled.
fn plan_input_edges(
    file: &PipelineFile,
    i: usize,
    entries: &[Option<PluginEntry>],
    wiring: &Wiring,
    position: &BTreeMap<usize, usize>,
    planned: &[PlannedStage],
    edges: &mut Vec<PlannedEdge>,
) -> Vec<usize> {
    let s = &file.stages[i];
    let mut inputs = Vec::new();
    for &(j, p) in &wiring.resolved[i] {
        let producer = &file.stages[j];
        let port = &planned[position[&j]].outputs[p];
        let live = entries[j].as_ref().is_some_and(|e| e.manifest.live);
        let when_full = s.buffer.when_full.unwrap_or(if live {
            WhenFull::DropOldest
        } else {
            WhenFull::Block
        });
        inputs.push(edges.len());
        edges.push(PlannedEdge {
            from: position[&j],
            from_port: p,
            to: planned.len(),
            format: port.format,
            max_frames: port.max_frames,
            capacity_blocks: s
                .buffer
                .capacity_blocks
                .unwrap_or_else(|| default_capacity_blocks(port.max_frames)),
            when_full,
            label: format!("{}.{} -> {}", producer.id, port.name, s.id),
        });
    }
    inputs
}

fn lookup(s: &StageDecl, registry: &Registry, diags: &mut Vec<Diagnostic>) -> Option<PluginEntry> {
    if s.plugin.is_empty() {
        // `plugin = ""`: the span is the string's (a missing or non-string `plugin` keeps the
        // header's, and is reported where it is parsed).
        if s.plugin_span != s.header_span {
            diags.push(empty_plugin(s, registry));
        }
        return None;
    }
    match registry.get(&s.plugin) {
        Ok(e) if e.kind() == s.kind => Some(e.clone()),
        Ok(e) => {
            diags.push(
                Diagnostic::error(
                    format!(
                        "`{}` is a {} plugin, used under [{}]",
                        s.plugin,
                        e.kind(),
                        s.kind
                    ),
                    s.plugin_span.clone(),
                )
                .label(format!("a {} plugin", e.kind()))
                .help(format!("declare this stage as [{}.{}]", e.kind(), s.id))
                .stage(&s.id),
            );
            None
        }
        Err(err) => {
            diags.push(
                Diagnostic::error(err.to_string(), s.plugin_span.clone())
                    .label("not installed")
                    .help(err.help())
                    .stage(&s.id),
            );
            None
        }
    }
}

/// `plugin = ""`, with the installed plugins of the stage's kind to choose from.
fn empty_plugin(s: &StageDecl, registry: &Registry) -> Diagnostic {
    let names: Vec<String> = registry
        .plugins()
        .filter(|p| p.kind() == s.kind)
        .map(|p| p.name().to_string())
        .collect();
    let help = if names.is_empty() {
        "write the plugin's name; `tapeline plugins` lists the installed ones".to_string()
    } else {
        format!(
            "write the name of a {} plugin: {} (`tapeline plugins` lists every installed plugin)",
            s.kind,
            quote_list(&names)
        )
    };
    Diagnostic::error("`plugin` is empty", s.plugin_span.clone())
        .label("no plugin name")
        .help(help)
        .stage(&s.id)
}

/// Index of the port `name` (or alias) in `ports`; with no name, the only port.
fn resolve_port(name: Option<&str>, ports: &[OutputPort]) -> Result<usize, String> {
    let list = || {
        ports
            .iter()
            .map(|p| {
                if p.alias.is_empty() {
                    format!("`{}`", p.name)
                } else {
                    format!("`{}` (`{}`)", p.name, p.alias)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        None if ports.len() == 1 => Ok(0),
        None => Err(format!(
            "write \"STAGE.PORT\" with one of its ports: {}",
            list()
        )),
        Some(n) => ports
            .iter()
            .position(|p| p.name.as_str() == n || p.alias.as_str() == n)
            .ok_or_else(|| format!("its ports are {}", list())),
    }
}

fn describe_inputs(
    s: &StageDecl,
    formats: &[PortFormat],
    inputs: &[(usize, usize)],
    file: &PipelineFile,
) -> String {
    inputs
        .iter()
        .zip(formats)
        .map(|(&(j, _), f)| format!("`{}` → `{}` carries {f}", file.stages[j].id, s.id))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A source whose rate is not the pipeline's (a WAV file, a device) must feed only stages that
/// change the rate (`resample`): whatever follows would otherwise run at a rate the pipeline's
/// `sample_rate` does not describe. Stages that change the rate are recognised by their outputs,
/// not by name.
fn check_source_rates(
    file: &PipelineFile,
    order: &[usize],
    outputs: &[Option<Vec<OutputPort>>],
    resolved_inputs: &[Vec<(usize, usize)>],
    diags: &mut Vec<Diagnostic>,
) {
    for &j in order {
        let s = &file.stages[j];
        let Some(ports) = outputs[j]
            .as_ref()
            .filter(|_| s.kind == PluginKind::Capture)
        else {
            continue;
        };
        for (p, port) in ports.iter().enumerate() {
            let rate = port.format.sample_rate;
            if rate == file.sample_rate {
                continue;
            }
            let converted = |c: usize| {
                outputs[c].as_ref().is_some_and(|o| {
                    !o.is_empty() && o.iter().all(|q| q.format.sample_rate != rate)
                })
            };
            let plain: Vec<String> = order
                .iter()
                .filter(|&&c| {
                    // A consumer whose own check failed has its error already.
                    resolved_inputs[c].contains(&(j, p)) && outputs[c].is_some() && !converted(c)
                })
                .map(|&c| file.stages[c].id.clone())
                .collect();
            if plain.is_empty() {
                continue;
            }
            let name = if ports.len() == 1 {
                s.id.clone()
            } else {
                format!("{}.{}", s.id, port.name)
            };
            diags.push(
                Diagnostic::error(
                    format!(
                        "`{name}` runs at {rate} Hz but the pipeline runs at {} Hz, and {} \
                         does not change the rate",
                        file.sample_rate,
                        quote_list(&plain)
                    ),
                    s.header_span.clone(),
                )
                .label(format!("{rate} Hz"))
                .help(format!(
                    "add a stage `plugin = \"resample\"`, `inputs = [\"{name}\"]`, `rate = {}` \
                     and feed {} from it, or set `[pipeline] sample_rate = {rate}`",
                    file.sample_rate,
                    quote_list(&plain)
                ))
                .stage(&s.id),
            );
        }
    }
}

fn check_manifest_formats(
    s: &StageDecl,
    e: &PluginEntry,
    formats: &[PortFormat],
    inputs: &[(usize, usize)],
    file: &PipelineFile,
) -> Option<Diagnostic> {
    let m = &e.manifest;
    for f in formats {
        if f.channels < m.channels.min || f.channels > m.channels.max {
            return Some(
                Diagnostic::error(
                    format!("`{}` accepts {} to {} channels, but {}", s.plugin, m.channels.min, m.channels.max, describe_inputs(s, formats, inputs, file)),
                    s.inputs_span.clone().unwrap_or(s.header_span.clone()),
                )
                .help("convert the channel count upstream with `remap`, `channel-split` or `channel-merge`")
                .stage(&s.id),
            );
        }
        if !m.sample_rates.is_empty() && !m.sample_rates.contains(&f.sample_rate) {
            return Some(
                Diagnostic::error(
                    format!(
                        "`{}` accepts sample rates {:?} Hz, but {}",
                        s.plugin,
                        m.sample_rates.as_slice(),
                        describe_inputs(s, formats, inputs, file)
                    ),
                    s.inputs_span.clone().unwrap_or(s.header_span.clone()),
                )
                .help("insert a `resample` stage before it")
                .stage(&s.id),
            );
        }
    }
    None
}

/// The errors one `PluginError` carries: a plugin's config parser reports every wrong key at
/// once, separated by [`tapeline_plugin_api::ERROR_SEPARATOR`] in its key and message.
pub fn split_errors(e: &PluginError) -> Vec<PluginError> {
    let sep = tapeline_plugin_api::ERROR_SEPARATOR;
    if !e.message().contains(sep) {
        return vec![e.clone()];
    }
    let keys: Vec<&str> = e.key.as_str().split(sep).collect();
    e.message()
        .split(sep)
        .enumerate()
        .map(|(i, m)| PluginError::new(e.kind(), m).with_key(keys.get(i).copied().unwrap_or("")))
        .collect()
}

pub(crate) fn plugin_diagnostic(
    s: &StageDecl,
    e: &PluginError,
    formats: &[PortFormat],
    inputs: &[(usize, usize)],
    file: &PipelineFile,
) -> Diagnostic {
    let key = e
        .key()
        .map(|k| k.split(['.', '[']).next().unwrap_or(k).to_string());
    let span = key
        .as_deref()
        .and_then(|k| s.config_spans.get(k).cloned())
        .or_else(|| {
            (e.kind() == ErrorKind::UnsupportedFormat)
                .then(|| s.inputs_span.clone())
                .flatten()
        })
        .unwrap_or(s.header_span.clone());
    let mut message = format!("{}: {}", s.plugin, e.message());
    let mut help = None;
    match e.kind() {
        ErrorKind::UnsupportedFormat => {
            if !inputs.is_empty() {
                message = format!("{message} ({})", describe_inputs(s, formats, inputs, file));
            }
            // Decided on the plugin's own words: the edge list added below always says "Hz".
            let about_rate = e.message().contains("Hz") || e.message().contains("rate");
            help = Some(if about_rate {
                "insert a `resample` stage (plugin = \"resample\") where the rates meet".to_string()
            } else {
                "convert the channels upstream with `remap`, `channel-split` or `channel-merge`"
                    .to_string()
            });
        }
        ErrorKind::InvalidConfig => {
            let (own_message, config_help) = invalid_config(s, e, key.as_deref());
            if let Some(m) = own_message {
                message = m;
            }
            help = Some(config_help);
        }
        _ => {}
    }
    let span: Range<usize> = span;
    Diagnostic::error(message, span).help_opt(help).stage(&s.id)
}

/// A plugin's `InvalidConfig` error: a message of the host's own, if it has a better one, and a
/// fix to try (serde's words are recognised: unknown field, unknown variant, missing field).
fn invalid_config(s: &StageDecl, e: &PluginError, key: Option<&str>) -> (Option<String>, String) {
    if let Some(unknown) = e
        .message()
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    {
        // serde lists the valid keys as "expected one of `a`, `b`".
        let valid: Vec<&str> = e.message().split('`').skip(3).step_by(2).collect();
        let host = closest(unknown, HOST_KEYS.iter().copied());
        let own = closest(unknown, valid.iter().copied());
        let help = match (own.first(), host.first()) {
            (Some(k), _) => format!("did you mean `{k}`?"),
            (None, Some(h)) => format!("did you mean the host key `{h}`?"),
            (None, None) => format!("`tapeline plugins inspect {}` lists its keys", s.plugin),
        };
        return (Some(format!("{}: unknown key `{unknown}`", s.plugin)), help);
    }
    let help = if let Some(rest) = e.message().strip_prefix("unknown variant `") {
        // serde: "unknown variant `x`, expected one of `a`, `b`".
        let given = rest.split('`').next().unwrap_or_default();
        let valid: Vec<&str> = rest.split('`').skip(2).step_by(2).collect();
        let sugg = closest(given, valid.iter().copied());
        match sugg.first() {
            Some(c) => format!("did you mean \"{c}\"?"),
            None => format!(
                "`tapeline plugins inspect {}` lists the valid values",
                s.plugin
            ),
        }
    } else if let Some(missing) = e
        .message()
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        format!(
            "add `{missing} = ...` to this stage; `tapeline plugins inspect {}` describes it",
            s.plugin
        )
    } else {
        match key {
            Some(k) if !k.is_empty() => format!(
                "`tapeline plugins inspect {}` gives the type, range and meaning of `{k}`",
                s.plugin
            ),
            _ => format!(
                "`tapeline plugins inspect {}` lists its keys and their types",
                s.plugin
            ),
        }
    };
    (None, help)
}

/// Kahn's algorithm. `deps[i]` are the stages `i` consumes. Returns the stages that can be
/// ordered and, if some cannot, one cycle among them.
fn topo_order(deps: &[Vec<usize>]) -> (Vec<usize>, Option<Vec<usize>>) {
    let n = deps.len();
    let mut indegree: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            consumers[d].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).rev().collect();
    let mut order = Vec::new();
    while let Some(i) = ready.pop() {
        order.push(i);
        for &c in consumers[i].iter().rev() {
            indegree[c] -= 1;
            if indegree[c] == 0 {
                ready.push(c);
            }
        }
    }
    if order.len() == n {
        return (order, None);
    }
    // Walk back along deps among the remaining stages until a stage repeats.
    let left: Vec<bool> = (0..n).map(|i| indegree[i] > 0).collect();
    let mut path = vec![(0..n).find(|&i| left[i]).unwrap_or(0)];
    loop {
        let cur = *path.last().unwrap_or(&0);
        let Some(&next) = deps[cur].iter().find(|&&d| left[d]) else {
            return (order, Some(path));
        };
        if let Some(pos) = path.iter().position(|&p| p == next) {
            let mut cycle = path[pos..].to_vec();
            cycle.reverse();
            return (order, Some(cycle));
        }
        path.push(next);
    }
}
