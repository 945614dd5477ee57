//! The builder: a checked [`Plan`] becomes a graph of components and edges. Every edge and its
//! pool is allocated here, before anything starts; every problem is collected with its stage,
//! so a run that cannot be built says everything at once and starts nothing.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;

use super::component::{Component, Event, Identity, Setting};
use super::factory::{Factory, Isolated};
use super::lifecycle::InternalErrors;
use super::process_stage::MAX_PORTS;
use super::run_error::{RunError, StageFault};
use super::stage_io::{IoSlot, StageIo};
use super::stop::Stop;
use crate::config::validate::PlannedStage;
use crate::config::Plan;
use crate::discipline::buffers::{self, EdgeSpec, EdgeStats};
use crate::isolation::protocol::Init;
use crate::isolation::proxy::Isolation;

/// One stage, built and not started.
pub struct BuiltStage {
    pub component: Arc<Component>,
    pub factory: Arc<Factory>,
    pub slot: Arc<IoSlot>,
}

/// Every stage and edge of a run.
pub struct Graph {
    pub stages: Vec<BuiltStage>,
    pub edges: Vec<Arc<EdgeStats>>,
}

/// What every component shares.
pub struct Shared {
    pub stop: Arc<Stop>,
    pub events: Sender<Event>,
    pub epoch: Instant,
    pub internal: Arc<InternalErrors>,
}

/// Build the graph, or every reason it cannot be built.
pub fn build(plan: &Plan, shared: &Shared) -> Result<Graph, Vec<RunError>> {
    let mut errors = check(plan);
    let mut io: Vec<StageIo> = plan
        .stages
        .iter()
        .map(|s| StageIo {
            outputs: s.outputs.iter().map(|_| Vec::new()).collect(),
            positions: vec![0; s.outputs.len().max(1)],
            ..StageIo::default()
        })
        .collect();
    let mut edges = Vec::with_capacity(plan.edges.len());
    // Edges in the order each consumer lists its inputs.
    let mut inputs: Vec<Vec<Option<buffers::Consumer>>> = plan
        .stages
        .iter()
        .map(|s| s.inputs.iter().map(|_| None).collect())
        .collect();
    // Behind a live source every block is passed on at once; elsewhere the ends of an edge
    // wake each other once per batch of blocks.
    let batch = |capacity: u32| {
        if has_live_source(plan) {
            1
        } else {
            (capacity / 4).clamp(1, 16)
        }
    };
    for (n, e) in plan.edges.iter().enumerate() {
        let (p, c, stats) = buffers::edge(EdgeSpec {
            label: e.label.clone(),
            channels: e.format.channels,
            max_frames: e.max_frames,
            capacity_blocks: e.capacity_blocks,
            when_full: e.when_full,
            wake_batch: batch(e.capacity_blocks),
        });
        io[e.from].outputs[e.from_port].push(p);
        match plan.stages[e.to].inputs.iter().position(|&i| i == n) {
            Some(slot) => inputs[e.to][slot] = Some(c),
            None => errors.push(setup(
                e.to,
                format!("edge `{}` is not among its inputs", e.label),
            )),
        }
        edges.push(stats);
    }
    for (stage, ins) in io.iter_mut().zip(inputs) {
        stage.inputs = ins.into_iter().flatten().collect();
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let base_dir = plan.base_dir.to_string_lossy().to_string();
    let stages = plan
        .stages
        .iter()
        .zip(io)
        .enumerate()
        .map(|(i, (s, io))| {
            let isolated = isolation_of(plan, s, &base_dir);
            let component = Component::new(
                Identity {
                    index: i,
                    id: s.id.clone(),
                    plugin: s.entry.name().to_string(),
                    kind: s.kind,
                },
                Setting {
                    on_error: s.on_error.clone(),
                    stop: shared.stop.clone(),
                    events: shared.events.clone(),
                    epoch: shared.epoch,
                    stall_timeout_ms: plan.file.stall_timeout_ms,
                    internal: shared.internal.clone(),
                    isolation: isolated.as_ref().map(|i| i.iso.clone()),
                },
            );
            component.loaded(&s.entry.library);
            BuiltStage {
                component: Arc::new(component),
                factory: Arc::new(Factory {
                    module: s.entry.module,
                    plugin: s.entry.name().to_string(),
                    config: s.config.clone(),
                    id: s.id.clone(),
                    base_dir: base_dir.clone(),
                    inputs: s.input_formats.clone(),
                    sample_rate: plan.file.sample_rate,
                    block_frames: plan.file.block_frames,
                    isolated,
                }),
                slot: Arc::new(IoSlot::new(Box::new(io))),
            }
        })
        .collect();
    Ok(Graph { stages, edges })
}

/// For a stage with `isolate = true`: what its processes are started with.
fn isolation_of(plan: &Plan, s: &PlannedStage, base_dir: &str) -> Option<Isolated> {
    if !s.isolate {
        return None;
    }
    // Inputs as large as their edges' blocks, or the silence a processor is given for an
    // input that ended (up to 4 blocks).
    let floor = 4 * plan.file.block_frames;
    let in_samples = s
        .inputs
        .iter()
        .map(|&e| {
            let edge = &plan.edges[e];
            edge.max_frames.max(floor) as usize * edge.format.channels as usize
        })
        .collect::<Vec<_>>();
    let out_samples = s
        .outputs
        .iter()
        .map(|o| o.max_frames as usize * o.format.channels as usize)
        .collect::<Vec<_>>();
    let init = Init {
        library: s.entry.library.display().to_string(),
        plugin: s.entry.name().to_string(),
        kind: s.kind.as_str().to_string(),
        config: s.config.clone(),
        stage_id: s.id.clone(),
        base_dir: base_dir.to_string(),
        sample_rate: plan.file.sample_rate,
        block_frames: plan.file.block_frames,
        inputs: s
            .input_formats
            .iter()
            .map(|f| (f.channels, f.sample_rate))
            .collect(),
        in_samples: in_samples.clone(),
        out_samples: out_samples.clone(),
        slots: 1,
        limits: s.limits,
    };
    let slots = ring_slots(plan, &in_samples, &out_samples);
    let iso = Isolation::new(
        s.limits,
        plan.file.stall_timeout_ms,
        in_samples,
        out_samples,
        slots,
    );
    Some(Isolated {
        iso: Arc::new(iso),
        init,
    })
}

/// A capture from a live source (a device) feeds the pipeline: blocks must not wait.
fn has_live_source(plan: &Plan) -> bool {
    plan.stages
        .iter()
        .any(|s| s.kind == tapeline_plugin_api::PluginKind::Capture && s.entry.manifest.live)
}

/// Calls an isolated processor keeps in flight: one behind a live source (a call waits for its
/// own answer: no latency added), else as many as about 2 MiB of blocks holds (4 to 64).
fn ring_slots(plan: &Plan, in_samples: &[usize], out_samples: &[usize]) -> usize {
    if has_live_source(plan) {
        return 1;
    }
    let bytes = 4 * (in_samples.iter().sum::<usize>() + out_samples.iter().sum::<usize>());
    ((2 << 20) / bytes.max(1)).clamp(4, crate::isolation::proxy_process::MAX_SLOTS)
}

/// What the plan promises and the builder relies on, checked for every stage at once.
fn check(plan: &Plan) -> Vec<RunError> {
    let mut errors = Vec::new();
    for (i, s) in plan.stages.iter().enumerate() {
        if s.inputs.len() > MAX_PORTS || s.outputs.len() > MAX_PORTS {
            errors.push(setup(i, format!("more than {MAX_PORTS} ports")));
        }
        if s.kind != tapeline_plugin_api::PluginKind::Capture && s.inputs.is_empty() {
            errors.push(setup(i, "a stage that consumes has no input edge".into()));
        }
    }
    for e in &plan.edges {
        if e.format.channels == 0 || e.max_frames == 0 || e.capacity_blocks == 0 {
            let what = format!(
                "edge `{}` has {} channel(s), {} frame(s) per block, {} block(s) of room",
                e.label, e.format.channels, e.max_frames, e.capacity_blocks
            );
            errors.push(setup(e.to, what));
        }
    }
    errors
}

fn setup(stage: usize, message: String) -> RunError {
    RunError {
        stage,
        fault: StageFault::Setup(message),
    }
}
