//! [`PipelineFile`] + installed plugins → a checked [`Plan`]: every stage's plugin found and of
//! the right kind, every input resolved to a port, no cycles, and every stage's configuration and
//! formats accepted by its own plugin — all before anything starts. Every problem is collected.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use abi_stable::std_types::{RSlice, RStr};
use tapeline_plugin_api::abi::{OutputPort, PluginError, PortFormat, StageContext};
use tapeline_plugin_api::{ErrorKind, PluginKind};

use super::diagnostic::Diagnostic;
use super::parse::{OnError, PipelineFile, StageDecl, WhenFull, HOST_KEYS};
use crate::plugins::{closest, quote_list, PluginEntry, Registry};

/// Blocks an edge holds when the file does not say.
pub const DEFAULT_CAPACITY_BLOCKS: u32 = 64;

/// A stage ready to build.
#[derive(Clone)]
pub struct PlannedStage {
    pub id: String,
    pub kind: PluginKind,
    pub entry: PluginEntry,
    /// The plugin's config as JSON text.
    pub config: String,
    pub on_error: OnError,
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

impl Plan {
    /// The context a stage's plugin is called with.
    pub fn context<'a>(&'a self, stage: &'a PlannedStage, base_dir: &'a str) -> StageContext<'a> {
        context(&stage.id, &self.file, base_dir, &stage.input_formats)
    }
}

fn context<'a>(
    id: &'a str,
    file: &PipelineFile,
    base_dir: &'a str,
    inputs: &'a [PortFormat],
) -> StageContext<'a> {
    StageContext {
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
    let errors_before = diags.iter().filter(|d| d.is_error()).count();
    let by_id: BTreeMap<&str, usize> = file
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let ids: Vec<&str> = file.stages.iter().map(|s| s.id.as_str()).collect();

    // Plugins and kinds.
    let mut entries: Vec<Option<PluginEntry>> = Vec::new();
    for s in &file.stages {
        entries.push(lookup(s, registry, diags));
    }

    // Inputs: presence, references, counts.
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); file.stages.len()];
    let mut bad_count = vec![false; file.stages.len()];
    let malformed_inputs: Vec<bool> = file
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
        .collect();
    for (i, s) in file.stages.iter().enumerate() {
        match (s.kind, s.inputs.is_empty()) {
            (PluginKind::Capture, false) => diags.push(
                Diagnostic::error(format!("capture stage `{}` cannot have inputs", s.id), s.inputs_span.clone().unwrap_or(s.header_span.clone()))
                    .help("remove `inputs`; a capture produces audio, or move the stage under [process.ID]")
                    .stage(&s.id),
            ),
            // `inputs` written but malformed (e.g. a string): already reported where it is.
            (PluginKind::Process | PluginKind::Storage, true) if malformed_inputs[i] => {}
            (PluginKind::Process | PluginKind::Storage, true) => {
                let misspelt = s.config_spans.iter().find(|(k, _)| !closest(k, ["inputs"]).is_empty());
                let d = match misspelt {
                    Some((k, span)) => Diagnostic::error(format!("{} stage `{}` has no inputs", s.kind, s.id), span.clone())
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
                        Diagnostic::error(format!("{} stage `{}` has no inputs", s.kind, s.id), s.header_span.clone())
                            .help(format!("add inputs = [\"STAGE\"] naming the stage it consumes ({})", producers.join(", ")))
                    }
                };
                diags.push(d.stage(&s.id));
            }
            _ => {}
        }
        for r in &s.inputs {
            match by_id.get(r.stage.as_str()) {
                None => {
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
                Some(&j) if file.stages[j].kind == PluginKind::Storage => diags.push(
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
                Some(&j) => deps[i].push(j),
            }
        }
        if let Some(e) = &entries[i] {
            let (min, max) = (
                e.manifest.inputs.min as usize,
                e.manifest.inputs.max as usize,
            );
            let n = s.inputs.len();
            if s.kind != PluginKind::Capture && n > 0 && (n < min || n > max) {
                bad_count[i] = true;
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
            }
        }
    }

    // Stages in (or behind) a cycle are left out of `order`; the rest is still checked.
    let (order, cycle) = topo_order(&deps);
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

    // Formats, in dependency order; a stage whose upstream failed is skipped (no cascade).
    let base = base_dir.to_string_lossy().to_string();
    let mut outputs: Vec<Option<Vec<OutputPort>>> = vec![None; file.stages.len()];
    let mut resolved_inputs: Vec<Vec<(usize, usize)>> = vec![Vec::new(); file.stages.len()];
    let mut consumed: BTreeMap<(usize, usize), bool> = BTreeMap::new();
    // Producers named by an input that was not resolved (its consumer failed, or the port is
    // wrong): whether they are consumed is unknown, so no warning about them.
    let mut maybe_consumed = vec![false; file.stages.len()];
    // An input naming no stage probably meant one of the stages that look unconsumed.
    // Likewise an `inputs` that could not be read, or was misspelt.
    let misspelt_inputs = file.stages.iter().any(|s| {
        s.kind != PluginKind::Capture
            && s.inputs_span.is_none()
            && s.config_spans
                .keys()
                .any(|k| !closest(k, ["inputs"]).is_empty())
    });
    let unknown_input = malformed_inputs.contains(&true)
        || misspelt_inputs
        || file
            .stages
            .iter()
            .flat_map(|s| &s.inputs)
            .any(|r| !by_id.contains_key(r.stage.as_str()));
    let in_order: Vec<bool> = (0..file.stages.len()).map(|i| order.contains(&i)).collect();
    for (i, s) in file.stages.iter().enumerate() {
        if entries[i].is_none() || !in_order[i] || bad_count[i] {
            for r in &s.inputs {
                if let Some(&j) = by_id.get(r.stage.as_str()) {
                    maybe_consumed[j] = true;
                }
            }
        }
    }
    for &i in &order {
        let s = &file.stages[i];
        let Some(entry) = &entries[i] else { continue };
        if bad_count[i] {
            continue;
        }
        let mut formats = Vec::new();
        let mut ok = true;
        for r in &s.inputs {
            let Some(&j) = by_id.get(r.stage.as_str()) else {
                ok = false;
                continue;
            };
            // A storage stage as input is reported above.
            let Some(ports) = outputs[j]
                .as_ref()
                .filter(|_| file.stages[j].kind != PluginKind::Storage)
            else {
                ok = false;
                continue;
            };
            match resolve_port(r.port.as_deref(), ports) {
                Ok(p) => {
                    formats.push(ports[p].format);
                    resolved_inputs[i].push((j, p));
                    consumed.insert((j, p), true);
                }
                Err(help) => {
                    ok = false;
                    maybe_consumed[j] = true;
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
        if !ok || (s.kind != PluginKind::Capture && s.inputs.is_empty()) {
            continue;
        }
        if let Some(d) = check_manifest_formats(s, entry, &formats, &resolved_inputs[i], file) {
            diags.push(d);
            continue;
        }
        let config = serde_json::Value::Object(s.config.clone()).to_string();
        let ctx = context(&s.id, file, &base, &formats);
        let result =
            (entry.module.layout())(RStr::from_str(&s.plugin), RStr::from_str(&config), &ctx)
                .into_result();
        match result {
            Ok(ports) => {
                let ports: Vec<OutputPort> = ports.into_iter().collect();
                for p in 0..ports.len() {
                    consumed.entry((i, p)).or_insert(false);
                }
                outputs[i] = Some(ports);
            }
            Err(e) => diags.push(plugin_diagnostic(
                s,
                &e,
                &formats,
                &resolved_inputs[i],
                file,
            )),
        }
    }

    check_source_rates(file, &order, &outputs, &resolved_inputs, diags);

    for (&(stage, port), &used) in &consumed {
        if !used && !maybe_consumed[stage] && !unknown_input {
            let s = &file.stages[stage];
            if s.kind == PluginKind::Storage {
                continue;
            }
            let ports = outputs[stage].as_deref().unwrap_or(&[]);
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

    if diags.iter().filter(|d| d.is_error()).count() > errors_before {
        return None;
    }

    // Build the plan in dependency order.
    let position: BTreeMap<usize, usize> = order.iter().enumerate().map(|(n, &i)| (i, n)).collect();
    let mut stages: Vec<PlannedStage> = Vec::new();
    let mut edges = Vec::new();
    for &i in &order {
        let s = &file.stages[i];
        let entry = entries[i].clone()?;
        let mut inputs = Vec::new();
        for &(j, p) in &resolved_inputs[i] {
            let producer = &file.stages[j];
            // The producer is planned already (dependency order), its ports' sizes settled.
            let port = &stages[position[&j]].outputs[p];
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
                to: stages.len(),
                format: port.format,
                max_frames: port.max_frames,
                capacity_blocks: s.buffer.capacity_blocks.unwrap_or(DEFAULT_CAPACITY_BLOCKS),
                when_full,
                label: format!("{}.{} -> {}", producer.id, port.name, s.id),
            });
        }
        // A port that does not say how large its blocks get carries blocks as large as the
        // stage's largest input (a capture's: `block_frames`).
        let largest_input = inputs
            .iter()
            .map(|&e: &usize| edges[e].max_frames)
            .max()
            .unwrap_or(file.block_frames);
        let mut ports = outputs[i].clone().unwrap_or_default();
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
            inputs,
            input_formats: resolved_inputs[i]
                .iter()
                .map(|&(j, p)| outputs[j].as_ref().map(|o| o[p].format))
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

fn lookup(s: &StageDecl, registry: &Registry, diags: &mut Vec<Diagnostic>) -> Option<PluginEntry> {
    if s.plugin.is_empty() {
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

fn plugin_diagnostic(
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
            (e.kind == ErrorKind::UnsupportedFormat)
                .then(|| s.inputs_span.clone())
                .flatten()
        })
        .unwrap_or(s.header_span.clone());
    let mut message = format!("{}: {}", s.plugin, e.message());
    let mut help = None;
    match e.kind {
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
            if let Some(unknown) = e
                .message()
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
            {
                // serde lists the valid keys as "expected one of `a`, `b`".
                let valid: Vec<&str> = e.message().split('`').skip(3).step_by(2).collect();
                let host = closest(unknown, HOST_KEYS.iter().copied());
                let own = closest(unknown, valid.iter().copied());
                message = format!("{}: unknown key `{unknown}`", s.plugin);
                help = Some(match (own.first(), host.first()) {
                    (Some(k), _) => format!("did you mean `{k}`?"),
                    (None, Some(h)) => format!("did you mean the host key `{h}`?"),
                    (None, None) => {
                        format!("`tapeline plugins inspect {}` lists its keys", s.plugin)
                    }
                });
            } else if let Some(rest) = e.message().strip_prefix("unknown variant `") {
                // serde: "unknown variant `x`, expected one of `a`, `b`".
                let given = rest.split('`').next().unwrap_or_default();
                let valid: Vec<&str> = rest.split('`').skip(2).step_by(2).collect();
                let sugg = closest(given, valid.iter().copied());
                help = Some(match sugg.first() {
                    Some(c) => format!("did you mean \"{c}\"?"),
                    None => format!(
                        "`tapeline plugins inspect {}` lists the valid values",
                        s.plugin
                    ),
                });
            } else if let Some(missing) = e
                .message()
                .strip_prefix("missing field `")
                .and_then(|r| r.split('`').next())
            {
                help = Some(format!(
                    "add `{missing} = ...` to this stage; `tapeline plugins inspect {}` describes it",
                    s.plugin
                ));
            } else {
                help = Some(match &key {
                    Some(k) if !k.is_empty() => format!(
                        "`tapeline plugins inspect {}` gives the type, range and meaning of `{k}`",
                        s.plugin
                    ),
                    _ => format!(
                        "`tapeline plugins inspect {}` lists its keys and their types",
                        s.plugin
                    ),
                });
            }
        }
        _ => {}
    }
    let span: Range<usize> = span;
    Diagnostic::error(message, span).help_opt(help).stage(&s.id)
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
