//! The fault matrix: every fault the mock plugins inject (panic, error, stall, failing start,
//! failing finalisation, device loss), in each stage kind (capture, process, storage), under each
//! error policy (`fail`, `restart`, `ignore`), run end to end through `tapeline run` and checked
//! from the outside: the exit code, every stage's state history, the errors the summary lists, the
//! state dump, the storage files, and every frame accounted for.
//!
//! Every run uses the same three-stage pipeline (`src` mock-capture → `mid` mock-process → `sink`
//! mock-storage, 100 blocks of 480 frames, 8-block lossless queues) with one fault in one stage at
//! block 10. The small queues keep the capture close behind the fault, so a run that fails always
//! fails long before its source could end.
//!
//! Accounting: the frames the capture put on its out edge (its `frames_out`, plus the silence
//! the host inserted for a device gap, `gap_frames`) equal the frames written by storage
//! (mock-storage's report: its total over every instance of the stage), plus the frames dropped
//! on the edges (by reason), plus the frames still queued at the end. And from the signal's
//! side: every frame mock-storage found missing (a gap nobody announced) is a frame some edge
//! counted as dropped (a storage stage, which has no output edge, counts what it took and could
//! not write as its own `dropped_frames`). Every row is checked exactly.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tapeline_tests::{code, run_toml, state_dump_path, stderr, stdout, Output, TempDir};

/// Frames per block (the pipeline's default `block_frames`).
const BLOCK: u64 = 480;
/// The source's length: 100 blocks.
const FRAMES: u64 = 100 * BLOCK;
/// The block (of the faulty stage) the fault hits.
const FAULT_BLOCK: u64 = 10;
/// Queue size on both edges, in blocks.
const QUEUE_BLOCKS: u32 = 8;
const STALL_TIMEOUT_MS: u64 = 300;
/// The watchdog's timeout in runs without an injected stall.
const QUIET_STALL_TIMEOUT_MS: u64 = 10_000;
const MONITOR_INTERVAL_MS: u64 = 100;
/// How long a stalled call hangs: well past the watchdog's timeout.
const STALL_MS: u64 = 600;
const MAX_RESTARTS: u64 = 2;
const BACKOFF_MS: u64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Panic,
    Error,
    Stall,
    FailStart,
}

impl Fault {
    /// The mock keys that inject the fault at [`FAULT_BLOCK`].
    fn keys(self) -> String {
        match self {
            Fault::Panic => format!("panic_at_block = {FAULT_BLOCK}"),
            Fault::Error => format!("error_at_block = {FAULT_BLOCK}\nerror_kind = \"io\""),
            Fault::Stall => format!("stall_at_block = {FAULT_BLOCK}\nstall_ms = {STALL_MS}"),
            Fault::FailStart => "fail_start_times = 1".to_string(),
        }
    }

    /// The error kind the summary gives the fault.
    fn kind(self) -> &'static str {
        match self {
            Fault::Panic => "panicked",
            Fault::Error | Fault::FailStart => "io",
            Fault::Stall => "stalled",
        }
    }
}

/// The stage kind the fault is in; each kind has one stage in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    Capture,
    Process,
    Storage,
}

impl At {
    fn id(self) -> &'static str {
        match self {
            At::Capture => "src",
            At::Process => "mid",
            At::Storage => "sink",
        }
    }
    fn plugin(self) -> &'static str {
        match self {
            At::Capture => "mock-capture",
            At::Process => "mock-process",
            At::Storage => "mock-storage",
        }
    }
    /// The plugin call a block goes through, as the watchdog names it.
    fn call(self) -> &'static str {
        match self {
            At::Capture => "read",
            At::Process => "process",
            At::Storage => "write",
        }
    }
}

const STAGES: [At; 3] = [At::Capture, At::Process, At::Storage];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Fail,
    Restart,
    Ignore,
}

impl Policy {
    fn on_error(self) -> String {
        match self {
            Policy::Fail => "on_error = { policy = \"fail\" }".to_string(),
            Policy::Restart => format!(
                "on_error = {{ policy = \"restart\", max_restarts = {MAX_RESTARTS}, \
                 backoff_ms = {BACKOFF_MS} }}"
            ),
            Policy::Ignore => "on_error = { policy = \"ignore\" }".to_string(),
        }
    }
    /// The severity the summary gives an error under this policy.
    fn severity(self) -> &'static str {
        match self {
            Policy::Fail => "fatal",
            Policy::Restart => "recoverable",
            Policy::Ignore => "warning",
        }
    }
}

const POLICIES: [Policy; 3] = [Policy::Fail, Policy::Restart, Policy::Ignore];

/// What becomes of the frames of the block the fault hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// Nothing is lost: a capture whose read failed produced nothing and its next read (or its
    /// new instance) continues the signal; a stalled call that returns delivers its block late.
    None,
    /// That one block is missing from storage (mock-storage reports one gap of one block) and
    /// must be counted as dropped.
    OneBlock,
    /// The run stopped at the fault: storage holds exactly the blocks before it, in order.
    Stopped,
    /// The run stopped with the storage stage stuck in its stalled call: it is never finalised,
    /// and cleanup says so.
    StorageStuck,
}

/// One cell of the matrix: the fault is given by the table the row is in.
struct Row {
    at: At,
    policy: Policy,
    exit: i32,
    loss: Loss,
}

const fn row(at: At, policy: Policy, exit: i32, loss: Loss) -> Row {
    Row {
        at,
        policy,
        exit,
        loss,
    }
}

use At::{Capture, Process, Storage};
use Policy::{Fail, Ignore, Restart};

/// A panic and an error returned by the plugin are handled alike.
#[rustfmt::skip]
const PANIC_OR_ERROR: [Row; 9] = [
    //  stage    policy   exit  the faulty block
    row(Capture, Fail,    1,    Loss::Stopped),
    row(Capture, Restart, 0,    Loss::None),
    row(Capture, Ignore,  0,    Loss::None),
    row(Process, Fail,    1,    Loss::Stopped),
    row(Process, Restart, 0,    Loss::OneBlock),
    row(Process, Ignore,  0,    Loss::OneBlock),
    row(Storage, Fail,    1,    Loss::Stopped),
    row(Storage, Restart, 0,    Loss::OneBlock),
    row(Storage, Ignore,  0,    Loss::OneBlock),
];

/// A call that hangs for [`STALL_MS`], past `stall_timeout_ms`. Under `restart` the call is
/// let finish, what it produced is passed on, and the instance is rebuilt after it: nothing
/// is lost.
#[rustfmt::skip]
const STALL: [Row; 9] = [
    //  stage    policy   exit  the faulty block
    row(Capture, Fail,    1,    Loss::Stopped),
    row(Capture, Restart, 0,    Loss::None),
    row(Capture, Ignore,  0,    Loss::None),
    row(Process, Fail,    1,    Loss::Stopped),
    row(Process, Restart, 0,    Loss::None),
    row(Process, Ignore,  0,    Loss::None),
    row(Storage, Fail,    1,    Loss::StorageStuck),
    row(Storage, Restart, 0,    Loss::None),
    row(Storage, Ignore,  0,    Loss::None),
];

// ---------------------------------------------------------------------------------------------
// Running a pipeline and reading what it left behind.

/// The three-stage pipeline with `capture`, `process` and `storage` appended to the tables of
/// `src`, `mid` and `sink`.
fn pipeline(capture: &str, process: &str, storage: &str) -> String {
    pipeline_monitored(MONITOR_INTERVAL_MS, capture, process, storage)
}

/// [`pipeline`] with another `monitor_interval_ms`.
fn pipeline_monitored(
    monitor_interval_ms: u64,
    capture: &str,
    process: &str,
    storage: &str,
) -> String {
    // The watchdog's short timeout only where a stall is injected: on a loaded 2-core machine a
    // stage thread can be descheduled for a few hundred ms inside a quick call, and a row about
    // another fault must not see a stall it did not ask for.
    let stall_timeout_ms = if [capture, process, storage]
        .iter()
        .any(|k| k.contains("stall_at_block"))
    {
        STALL_TIMEOUT_MS
    } else {
        QUIET_STALL_TIMEOUT_MS
    };
    format!(
        r#"version = 1
[pipeline]
name = "fault-matrix"
stall_timeout_ms = {stall_timeout_ms}
monitor_interval_ms = {monitor_interval_ms}

[capture.src]
plugin = "mock-capture"
channels = 2
frames = {FRAMES}
{capture}

[process.mid]
plugin = "mock-process"
inputs = ["src"]
buffer = {{ capacity_blocks = {QUEUE_BLOCKS}, when_full = "block" }}
{process}

[storage.sink]
plugin = "mock-storage"
inputs = ["mid"]
report = "report.json"
buffer = {{ capacity_blocks = {QUEUE_BLOCKS}, when_full = "block" }}
{storage}
"#
    )
}

/// `keys` (fault keys and `on_error`) in the stage `at`, the others clean.
fn pipeline_with(at: At, keys: &str) -> String {
    let pick = |a: At| if a == at { keys } else { "" };
    pipeline(pick(Capture), pick(Process), pick(Storage))
}

/// A finished run: the process output, its summary, and the folder its files are in.
struct Run {
    what: String,
    out: Output,
    summary: Value,
    dir: TempDir,
}

impl Run {
    fn new(what: &str, toml: &str) -> Run {
        let dir = TempDir::new("fault-matrix");
        let (out, sum) = run_toml(&dir, toml);
        // Exit codes 0 and 1 only: a crash (a signal, an abort) is never an answer. `code`
        // panics if the process was killed by a signal.
        let exit = code(&out);
        assert!(
            exit == 0 || exit == 1,
            "{what}: exit code {exit}\n{}",
            stderr(&out)
        );
        let text = std::fs::read_to_string(&sum)
            .unwrap_or_else(|e| panic!("{what}: no summary ({e}); exit {exit}\n{}", stderr(&out)));
        let summary = serde_json::from_str(&text).expect("summary JSON");
        Run {
            what: what.to_string(),
            out,
            summary,
            dir,
        }
    }

    fn stage(&self, id: &str) -> &Value {
        self.summary["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("{}: stage {id} in the summary", self.what))
    }

    /// The states stage `id` went through, in order.
    fn states(&self, id: &str) -> Vec<String> {
        self.stage(id)["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["to"].as_str().unwrap().to_string())
            .collect()
    }

    /// The transitions of stage `id` into state `to`.
    fn entered(&self, id: &str, to: &str) -> Vec<&Value> {
        self.stage(id)["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["to"] == to)
            .collect()
    }

    fn edges(&self) -> &Vec<Value> {
        self.summary["edges"].as_array().unwrap()
    }

    fn edge_from(&self, id: &str) -> &Value {
        self.edges()
            .iter()
            .find(|e| e["label"].as_str().unwrap().starts_with(&format!("{id}.")))
            .unwrap_or_else(|| panic!("{}: an edge out of {id}", self.what))
    }

    /// The summary's errors of stage `id`.
    fn errors_of(&self, id: &str) -> Vec<&Value> {
        self.summary["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["stage"] == id)
            .collect()
    }

    /// mock-storage's report, if the storage stage was finalised; it must parse.
    fn report(&self) -> Option<Value> {
        let path = self.dir.path().join("report.json");
        let text = std::fs::read_to_string(&path).ok()?;
        Some(serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "{}: the storage report is not valid JSON ({e}): {text}",
                self.what
            )
        }))
    }

    /// The summary's storage entry of `sink`, if it was finalised.
    fn storage(&self) -> Option<&Value> {
        self.summary["storage"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == "sink")
    }

    fn cleanup_step(&self, name: &str) -> &Value {
        self.summary["cleanup"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{}: cleanup step {name}", self.what))
    }

    /// The state dump the host announced on stderr, if any.
    fn state_dump(&self) -> Option<PathBuf> {
        state_dump_path(&stderr(&self.out))
    }
}

/// How long the watchdog says the call had lasted: "… for 304 ms (stall_timeout_ms = 300)".
fn stalled_for_ms(message: &str) -> u64 {
    message
        .split(" for ")
        .nth(1)
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no \"for N ms\" in the stall report: {message}"))
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("`{key}` is not a count in {v:#}"))
}

fn sum_edges(run: &Run, key: &str) -> u64 {
    run.edges().iter().map(|e| n(e, key)).sum()
}

/// The lifecycle of a stage that ran and stopped without a fault.
const CLEAN_LIFECYCLE: [&str; 7] = [
    "loaded",
    "configured",
    "starting",
    "running",
    "stopping",
    "flushing",
    "stopped",
];

/// True when `states` holds `seq` as consecutive entries.
fn has_run(states: &[String], seq: &[&str]) -> bool {
    states
        .windows(seq.len())
        .any(|w| w.iter().zip(seq).all(|(a, b)| a == b))
}

// ---------------------------------------------------------------------------------------------
// The checks every run passes.

/// Every edge balances, by blocks and by frames: pushed = popped + dropped (any reason) + queued.
fn assert_edges_balance(run: &Run) {
    for e in run.edges() {
        let dropped_frames = n(e, "dropped_overflow_frames")
            + n(e, "dropped_stage_error_frames")
            + n(e, "dropped_shutdown_frames");
        assert_eq!(
            n(e, "pushed_frames"),
            n(e, "popped_frames") + dropped_frames + n(e, "queued_frames"),
            "{}: frames on {e:#}",
            run.what
        );
        let dropped =
            n(e, "dropped_overflow") + n(e, "dropped_stage_error") + n(e, "dropped_shutdown");
        assert_eq!(
            n(e, "pushed"),
            n(e, "popped") + dropped + n(e, "depth"),
            "{}: blocks on {e:#}",
            run.what
        );
        // Lossless queues: nothing is ever dropped for lack of room.
        assert_eq!(n(e, "dropped_overflow"), 0, "{}: {e:#}", run.what);
    }
}

/// Every frame accounted for, from the host's counters and from the signal's side.
///
/// `strict` false (a row with a known bug) checks only that nothing is counted twice or
/// invented: counted ≤ produced, and the frames mock-storage found missing are at least those
/// counted as dropped on purpose (stage-error).
fn assert_frames_accounted(run: &Run, strict: bool) {
    let src = run.stage("src");
    let produced = n(src, "frames_out") + n(src, "gap_frames");
    let report = run.report();
    // Without a report (a storage stage stuck in a call is never finalised), what it wrote
    // is what its calls that returned took.
    let written = report.as_ref().map_or_else(
        || n(run.stage("sink"), "frames_in"),
        |r| n(r, "frames_written"),
    );
    // A storage stage has no output edge: what it took and could not write is its own drop.
    let storage_dropped = n(run.stage("sink"), "dropped_frames");
    let dropped = sum_edges(run, "dropped_overflow_frames")
        + sum_edges(run, "dropped_stage_error_frames")
        + sum_edges(run, "dropped_shutdown_frames")
        + storage_dropped;
    // Frames inside a call that never returned (a stage left behind stuck, under `fail`).
    let stuck: u64 = ["mid", "sink"]
        .iter()
        .map(|id| n(run.stage(id), "stuck_frames"))
        .sum();
    let queued = sum_edges(run, "queued_frames") + stuck;
    let counted = written + dropped + queued;
    let detail = format!(
        "{}: produced {produced} (capture frames_out + gap_frames), written {written} \
         (mock-storage report), dropped {dropped}, queued {queued}\nedges: {:#}\nreport: {report:#?}",
        run.what,
        Value::Array(run.edges().clone())
    );
    if strict {
        assert_eq!(produced, counted, "frames unaccounted for: {detail}");
    } else {
        assert!(counted <= produced, "frames counted twice: {detail}");
    }
    // The signal's side: a frame missing in the middle of what storage received was dropped by
    // a stage's error; the host must have counted it (no overflow drops on lossless edges).
    if let Some(r) = &report {
        let missing = n(r, "missing_frames");
        let stage_error = sum_edges(run, "dropped_stage_error_frames") + storage_dropped;
        // A block dropped at the very end (the failing call of a run that stopped there) is
        // not in the middle of what storage received: mock-storage cannot see it as missing.
        let stage_error = if run.summary["end"] == "failed" {
            0
        } else {
            stage_error
        };
        if strict {
            assert_eq!(
                missing, stage_error,
                "mock-storage found frames missing that no edge counted: {detail}"
            );
        } else {
            assert!(missing >= stage_error, "{detail}");
        }
        // The summary's storage entry says what the report says.
        if let Some(st) = run.storage() {
            let summary_written = n(st, "frames_written");
            if strict {
                assert_eq!(summary_written, written, "{detail}\nstorage: {st:#}");
            } else {
                assert!(summary_written <= written, "{detail}\nstorage: {st:#}");
            }
        }
    }
}

/// Exit code, end, failure, histories, errors, cleanup, files and frames of one matrix row.
fn check_row(fault: Fault, row: &Row, strict: bool) {
    let what = format!("{fault:?} in {:?} under {:?}", row.at, row.policy);
    let keys = format!("{}\n{}", fault.keys(), row.policy.on_error());
    let run = Run::new(&what, &pipeline_with(row.at, &keys));
    let id = row.at.id();
    let err = stderr(&run.out);

    // The host answered: the exit code of its policy, and its summary on stdout.
    assert_eq!(code(&run.out), row.exit, "{what}\n{err}");
    assert!(
        stdout(&run.out).contains("cleanup:"),
        "{what}: no summary on stdout\n{}",
        stdout(&run.out)
    );

    // How the run ended.
    if row.policy == Policy::Fail {
        assert_eq!(run.summary["end"], "failed", "{what}");
        let failure = &run.summary["failure"];
        assert_eq!(failure["stage"], id, "{what}: {failure:#}");
        assert_eq!(failure["kind"], fault.kind(), "{what}: {failure:#}");
        let first = err.lines().find(|l| l.starts_with("error: ")).unwrap_or("");
        assert!(
            first.starts_with(&format!("error: stage `{id}` failed:")),
            "{what}\n{err}"
        );
    } else {
        assert_eq!(run.summary["end"], "sources-ended", "{what}");
        assert!(run.summary["failure"].is_null(), "{what}");
    }

    // The faulty stage's history.
    let states = run.states(id);
    let stage = run.stage(id);
    match row.policy {
        Policy::Fail => {
            assert_eq!(
                states.last().map(String::as_str),
                Some("failed"),
                "{what}: {states:?}"
            );
            assert_eq!(run.entered(id, "failed").len(), 1, "{what}: {states:?}");
            assert_eq!(stage["state"], "failed", "{what}");
        }
        Policy::Restart => {
            assert!(
                has_run(&states, &["running", "failed", "recovering", "running"]),
                "{what}: {states:?}"
            );
            assert_eq!(states.last().map(String::as_str), Some("stopped"), "{what}");
            assert_eq!(n(stage, "restarts"), 1, "{what}");
            // The rebuild waited for the backoff.
            let recovering = run.entered(id, "recovering")[0];
            let back = run.entered(id, "running")[1];
            assert!(
                n(back, "at_ms") + 1 >= n(recovering, "at_ms") + BACKOFF_MS,
                "{what}: rebuilt before backoff_ms: {recovering} -> {back}"
            );
        }
        Policy::Ignore => {
            assert_eq!(states, CLEAN_LIFECYCLE, "{what}");
            assert_eq!(n(stage, "restarts"), 0, "{what}");
        }
    }
    // Every other stage ran its normal lifecycle.
    for other in STAGES.iter().filter(|a| **a != row.at) {
        assert_eq!(
            run.states(other.id()),
            CLEAN_LIFECYCLE,
            "{what}: stage {}",
            other.id()
        );
        assert!(run.errors_of(other.id()).is_empty(), "{what}");
    }

    // The errors: the fault, with the kind of the fault and the severity of the policy.
    let errors = run.errors_of(id);
    let first = errors
        .first()
        .unwrap_or_else(|| panic!("{what}: no error listed"));
    assert_eq!(first["kind"], fault.kind(), "{what}: {first:#}");
    assert_eq!(
        first["severity"],
        row.policy.severity(),
        "{what}: {first:#}"
    );
    let message = first["message"].as_str().unwrap();
    if fault == Fault::Stall {
        // Named by call and plugin, and not before the timeout.
        let needle = format!("inside `{}` of plugin `{}`", row.at.call(), row.at.plugin());
        assert!(message.contains(&needle), "{what}: {message}");
        assert!(n(first, "at_ms") >= STALL_TIMEOUT_MS, "{what}: {first:#}");
    } else {
        assert!(
            message.contains(&format!("at block {FAULT_BLOCK}")),
            "{what}: {message}"
        );
    }
    // A stall under `restart` is listed twice: when the watchdog sees it, and when the call
    // returns and the stage goes through its policy.
    let expected_errors = if fault == Fault::Stall && row.policy == Policy::Restart {
        2
    } else {
        1
    };
    assert_eq!(errors.len(), expected_errors, "{what}: {errors:#?}");
    assert_eq!(n(stage, "errors"), expected_errors as u64, "{what}");
    if fault == Fault::Stall && row.policy == Policy::Restart {
        // The instance is rebuilt once the stalled call returns, not when the watchdog fires.
        // The report says when the call began (`at_ms` minus the "for N ms" it names); the
        // call hangs STALL_MS from there, so the stage fails (and is rebuilt) no earlier. (5 ms:
        // whole milliseconds, and history times count from a moment after the run's start.)
        let began = n(first, "at_ms") - stalled_for_ms(message);
        let failed_at = n(run.entered(id, "failed")[0], "at_ms");
        assert!(
            failed_at + 5 >= began + STALL_MS,
            "{what}: rebuilt at {failed_at} ms, the {STALL_MS} ms call began at {began} ms: {first}"
        );
    }

    // The state dump, next to the outputs, when (and only when) the run failed.
    match run.state_dump() {
        Some(path) => {
            assert_eq!(
                row.policy,
                Policy::Fail,
                "{what}: unexpected state dump\n{err}"
            );
            assert_eq!(
                path.parent().map(Path::canonicalize).and_then(Result::ok),
                run.dir.path().canonicalize().ok(),
                "{what}: state dump not next to the outputs"
            );
            let dump: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .expect("the state dump is JSON");
            assert_eq!(dump["failure"]["stage"], id, "{what}");
            let timeout = if fault == Fault::Stall {
                STALL_TIMEOUT_MS
            } else {
                QUIET_STALL_TIMEOUT_MS
            };
            assert_eq!(dump["pipeline"]["stall_timeout_ms"], timeout, "{what}");
            assert!(
                !dump["last_errors"].as_array().unwrap().is_empty(),
                "{what}"
            );
        }
        None => assert_ne!(row.policy, Policy::Fail, "{what}: no state dump\n{err}"),
    }

    // Cleanup: storage finalised, unless it is the stage stuck in its call.
    let finalise = run.cleanup_step("finalise storage");
    let drain = run.cleanup_step("drain edges");
    if row.loss == Loss::StorageStuck {
        assert_eq!(finalise["outcome"]["outcome"], "failed", "{what}");
        assert!(
            finalise["outcome"]["detail"]
                .to_string()
                .contains("stuck in a plugin call"),
            "{what}: {finalise}"
        );
        assert!(run.storage().is_none(), "{what}");
        assert!(run.report().is_none(), "{what}: a stuck storage finalised");
    } else {
        assert_eq!(finalise["outcome"]["outcome"], "ok", "{what}: {finalise}");
    }
    if fault == Fault::Stall && row.at == At::Process && row.policy == Policy::Fail {
        // The stuck thread is left behind, by name.
        assert_eq!(drain["outcome"]["outcome"], "failed", "{what}");
        assert!(drain.to_string().contains("mid"), "{what}: {drain}");
    } else {
        assert_eq!(drain["outcome"]["outcome"], "ok", "{what}: {drain}");
    }

    // What storage received, checked frame by frame by mock-storage.
    if let Some(r) = run.report() {
        assert_eq!(r["stage"], "sink");
        assert_eq!(n(&r, "reordered"), 0, "{what}: {r:#}");
        assert_eq!(n(&r, "corrupt_frames"), 0, "{what}: {r:#}");
        let (gaps, missing, written) = (
            n(&r, "gaps"),
            n(&r, "missing_frames"),
            n(&r, "frames_written"),
        );
        match row.loss {
            Loss::None => assert_eq!((gaps, missing, written), (0, 0, FRAMES), "{what}"),
            Loss::OneBlock => {
                assert_eq!(
                    (gaps, missing, written),
                    (1, BLOCK, FRAMES - BLOCK),
                    "{what}"
                )
            }
            Loss::Stopped => assert_eq!(
                (gaps, missing, written),
                (0, 0, FAULT_BLOCK * BLOCK),
                "{what}: storage holds the blocks before the fault"
            ),
            Loss::StorageStuck => unreachable!(),
        }
        if row.at == At::Process && row.loss == Loss::OneBlock {
            // Counted where it was lost: on the out edge of the stage that failed on it.
            assert_eq!(
                n(run.edge_from("mid"), "dropped_stage_error_frames"),
                BLOCK,
                "{what}"
            );
        }
    }

    assert_edges_balance(&run);
    assert_frames_accounted(&run, strict);
}

fn check_table(fault: Fault, rows: &[Row]) {
    for row in rows {
        check_row(fault, row, true);
    }
}

// ---------------------------------------------------------------------------------------------
// The matrix.

#[test]
fn a_panic_in_a_plugin_never_ends_the_host_process() {
    // Exit 1 under `fail`, 0 under `restart` and `ignore`, never a signal; the summary is
    // printed and written every time.
    check_table(Fault::Panic, &PANIC_OR_ERROR);
}

#[test]
fn an_error_returned_by_a_plugin_fails_restarts_or_skips_as_the_policy_says() {
    check_table(Fault::Error, &PANIC_OR_ERROR);
}

#[test]
fn a_stalled_call_is_reported_and_then_failed_rebuilt_or_waited_for_as_the_policy_says() {
    check_table(Fault::Stall, &STALL);
}

#[test]
fn the_watchdog_names_a_stalled_stage_within_stall_timeout_plus_one_monitoring_interval() {
    // How it is measured. Each stage stalls on its very first block (`stall_at_block = 0`), so
    // the stall cannot begin before the capture starts: the capture's transition to
    // `starting` (recorded just before its `start`, after every other stage is running) is a
    // lower bound of when the stalled call began. The watchdog's report is the stage's entry in
    // `errors[]`, `at_ms` after the run started. So `at_ms - starting.at_ms` is an upper bound
    // of the detection delay, and `at_ms - starting.at_ms >= stall_timeout_ms` shows it did not
    // fire early. (History times count from each state machine's creation, a moment after the
    // run's start: that offset only makes the measured delay larger.)
    //
    // The bound allows SLACK_MS on top of stall_timeout_ms + monitor_interval_ms: 2 ms of
    // truncation (both times are whole milliseconds), the offset above (well under a
    // millisecond: allocating two 8-block queues), and the OS scheduling the coordinator's
    // thread late on a loaded 2-core machine running tests in parallel (measured: 301-327 ms
    // for a 300 ms timeout, idle or with two of these test binaries side by side; one run in
    // about twenty exceeded 450 ms while other builds loaded the machine, hence a 250 ms
    // interval here rather than the matrix's 100 ms). The call hangs longer than the bound, so
    // a late watchdog is still caught in the act and its delay shown.
    const SLACK_MS: u64 = 50;
    const INTERVAL_MS: u64 = 250;
    const BOUND_MS: u64 = STALL_TIMEOUT_MS + INTERVAL_MS + SLACK_MS;
    for at in STAGES {
        let what = format!("stall at the first block in {at:?}");
        let keys = format!(
            "stall_at_block = 0\nstall_ms = {}\non_error = {{ policy = \"ignore\" }}",
            BOUND_MS + 200
        );
        let pick = |a: At| if a == at { keys.as_str() } else { "" };
        let toml = pipeline_monitored(INTERVAL_MS, pick(Capture), pick(Process), pick(Storage));
        let run = Run::new(&what, &toml);
        assert_eq!(code(&run.out), 0, "{what}\n{}", stderr(&run.out));
        let errors = run.errors_of(at.id());
        assert_eq!(errors.len(), 1, "{what}: {errors:#?}");
        let e = errors[0];
        assert_eq!(e["kind"], "stalled", "{what}");
        let message = e["message"].as_str().unwrap();
        for needle in [
            format!("inside `{}`", at.call()),
            format!("plugin `{}`", at.plugin()),
            format!("stall_timeout_ms = {STALL_TIMEOUT_MS}"),
        ] {
            assert!(message.contains(&needle), "{what}: {message}");
        }
        let began = n(run.entered("src", "starting")[0], "at_ms");
        let delay = n(e, "at_ms") - began;
        assert!(
            delay >= STALL_TIMEOUT_MS,
            "{what}: reported {delay} ms after the stall began, before the timeout: {e}"
        );
        assert!(
            delay <= BOUND_MS,
            "{what}: reported {delay} ms after the stall began (timeout {STALL_TIMEOUT_MS} ms, \
             monitoring every {INTERVAL_MS} ms, bound {BOUND_MS} ms): {e}"
        );
        // Under `ignore` the stall is only reported: the block arrives late, nothing is lost.
        assert_eq!(run.states(at.id()), CLEAN_LIFECYCLE, "{what}");
        assert_frames_accounted(&run, true);
    }
}

#[test]
fn a_stage_that_cannot_start_is_retried_under_restart_and_otherwise_stops_the_run() {
    // Stages start storage first, then processing, then captures: under `fail` and `ignore` the
    // ones before the failing stage ran (and stopped cleanly; storage was finalised), the ones
    // after were never built. Under `restart` the start is retried with the stage's backoff,
    // as an error while running would be, and the run goes on whole.
    for at in STAGES {
        for policy in POLICIES {
            let what = format!("fail_start_times = 1 in {at:?} under {policy:?}");
            let keys = format!("{}\n{}", Fault::FailStart.keys(), policy.on_error());
            let run = Run::new(&what, &pipeline_with(at, &keys));
            let errors = run.errors_of(at.id());
            assert_eq!(errors.len(), 1, "{what}: the failed start is listed");
            assert!(
                errors[0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("injected start failure 1 of 1 (fail_start_times)"),
                "{what}: {:#}",
                errors[0]
            );
            if policy == Policy::Restart {
                assert_eq!(code(&run.out), 0, "{what}\n{}", stderr(&run.out));
                assert_eq!(errors[0]["severity"], "recoverable", "{what}");
                assert_eq!(n(run.stage(at.id()), "restarts"), 1, "{what}");
                let r = run.report().expect("the report");
                assert_eq!(n(&r, "frames_written"), FRAMES, "{what}");
                assert_edges_balance(&run);
                assert_frames_accounted(&run, true);
                continue;
            }
            assert_eq!(errors[0]["severity"], "fatal", "{what}");
            assert_eq!(code(&run.out), 1, "{what}\n{}", stderr(&run.out));
            assert_eq!(run.summary["end"], "failed", "{what}");
            let failure = &run.summary["failure"];
            assert_eq!(failure["stage"], at.id(), "{what}: {failure:#}");
            assert!(
                failure["message"]
                    .as_str()
                    .unwrap()
                    .contains("injected start failure 1 of 1 (fail_start_times)"),
                "{what}: {failure:#}"
            );
            let states = run.states(at.id());
            assert_eq!(states.last().map(String::as_str), Some("failed"), "{what}");
            assert!(!states.iter().any(|s| s == "running"), "{what}: {states:?}");
            assert_eq!(n(run.stage(at.id()), "restarts"), 0, "{what}");
            for other in STAGES.iter().filter(|o| **o != at) {
                let started_before = match at {
                    At::Capture => true,
                    At::Process => *other == At::Storage,
                    At::Storage => false,
                };
                let expected: &[&str] = if started_before {
                    &CLEAN_LIFECYCLE
                } else {
                    &["loaded"]
                };
                assert_eq!(run.states(other.id()), expected, "{what}: {}", other.id());
            }
            assert!(run.state_dump().is_some(), "{what}");
            // No audio moved.
            for e in run.edges() {
                assert_eq!(n(e, "pushed_frames"), 0, "{what}: {e:#}");
            }
            match run.report() {
                Some(r) => {
                    assert_ne!(at, At::Storage, "{what}");
                    assert_eq!(n(&r, "frames_written"), 0, "{what}");
                }
                None => assert_eq!(at, At::Storage, "{what}: storage not finalised"),
            }
            assert_edges_balance(&run);
            assert_frames_accounted(&run, true);
        }
    }
}

#[test]
fn a_storage_that_fails_to_finalise_exits_1_and_its_report_is_still_written() {
    // `finalize` is the last call, after the run: no policy applies to it.
    for policy in POLICIES {
        let what = format!("fail_finalize under {policy:?}");
        let keys = format!("fail_finalize = true\n{}", policy.on_error());
        let run = Run::new(&what, &pipeline_with(At::Storage, &keys));
        let err = stderr(&run.out);
        assert_eq!(code(&run.out), 1, "{what}\n{err}");
        assert!(
            err.contains(
                "error: stage `sink` failed: mock-storage: injected finalize failure \
                 (fail_finalize)"
            ),
            "{what}\n{err}"
        );
        assert!(run.state_dump().is_some(), "{what}\n{err}");
        assert_eq!(run.summary["end"], "failed", "{what}");
        assert_eq!(run.summary["failure"]["stage"], "sink", "{what}");
        assert_eq!(run.errors_of("sink").len(), 1, "{what}: listed in errors");
        let storage = run.storage().expect("the storage entry");
        assert!(
            storage["error"]
                .as_str()
                .is_some_and(|e| e.contains("injected finalize failure (fail_finalize)")),
            "{what}: {storage:#}"
        );
        assert_eq!(
            run.cleanup_step("finalise storage")["outcome"]["outcome"],
            "failed",
            "{what}"
        );
        for at in STAGES {
            assert_eq!(run.states(at.id()), CLEAN_LIFECYCLE, "{what}");
        }
        // mock-storage writes its report before failing: every frame arrived, in order.
        let r = run
            .report()
            .expect("the report is written before the failure");
        assert_eq!(n(&r, "frames_written"), FRAMES, "{what}");
        assert_eq!(
            n(&r, "gaps") + n(&r, "reordered") + n(&r, "corrupt_frames"),
            0
        );
        assert_edges_balance(&run);
        // Not strict: the summary's storage entry says 0 frames when finalising failed.
        assert_frames_accounted(&run, false);
        let src = run.stage("src");
        assert_eq!(n(src, "frames_out"), n(&r, "frames_written"), "{what}");
    }
}

/// The capture's transitions from its first failure on, as (state, at_ms).
fn recovery_path(run: &Run) -> Vec<(String, u64)> {
    let history = run.stage("src")["history"].as_array().unwrap();
    let first = history.iter().position(|t| t["to"] == "failed").unwrap();
    history[first..]
        .iter()
        .map(|t| (t["to"].as_str().unwrap().to_string(), n(t, "at_ms")))
        .collect()
}

/// Each rebuild waits backoff_ms, doubling: the k-th `recovering` (k from 0) lasts at least
/// `backoff_ms * 2^k` before the stage fails again or runs.
fn assert_backoff_doubles(what: &str, path: &[(String, u64)]) {
    let mut k = 0;
    for w in path.windows(2) {
        if w[0].0 == "recovering" {
            let waited = w[1].1 - w[0].1;
            // +1: both times are truncated to whole milliseconds.
            assert!(
                waited + 1 >= BACKOFF_MS << k,
                "{what}: restart {} came {waited} ms after the failure, before {} ms: {path:?}",
                k + 1,
                BACKOFF_MS << k
            );
            k += 1;
        }
    }
}

#[test]
fn a_lost_device_that_comes_back_is_restarted_and_its_gap_filled_with_silence() {
    // The device is lost at block 10 and back 100 ms later; the restarts (10, 20, 40, 80 ms
    // apart) fail while it is away, then one succeeds. The frames of the outage are skipped by
    // the device (100 ms = 4800 frames) and the host fills them with silence.
    const BACK_AFTER_MS: u64 = 100;
    const MAX: u64 = 6;
    let what = "device lost at block 10, back after 100 ms, under restart";
    let keys = format!(
        "device_lost_at_block = {FAULT_BLOCK}\nback_after_ms = {BACK_AFTER_MS}\n\
         on_error = {{ policy = \"restart\", max_restarts = {MAX}, backoff_ms = {BACKOFF_MS} }}"
    );
    let run = Run::new(what, &pipeline_with(At::Capture, &keys));
    assert_eq!(code(&run.out), 0, "{what}\n{}", stderr(&run.out));
    assert_eq!(run.summary["end"], "sources-ended");
    assert!(run.summary["failure"].is_null());

    // running → failed → (recovering → failed)* → recovering → running → … → stopped.
    let path = recovery_path(&run);
    let states: Vec<&str> = path.iter().map(|(s, _)| s.as_str()).collect();
    let restarts = n(run.stage("src"), "restarts");
    assert!((2..=MAX).contains(&restarts), "{what}: {restarts} restarts");
    let mut expected = vec!["failed"];
    for _ in 1..restarts {
        expected.extend(["recovering", "failed"]);
    }
    expected.extend(["recovering", "running", "stopping", "flushing", "stopped"]);
    assert_eq!(states, expected, "{what}");
    assert_backoff_doubles(what, &path);
    // The device was away at least BACK_AFTER_MS: the restart that succeeded came after it.
    let failed_at = path[0].1;
    let back_at = path.iter().find(|(s, _)| s == "running").unwrap().1;
    assert!(back_at + 1 >= failed_at + BACK_AFTER_MS, "{what}: {path:?}");

    // One error listed (the loss); the failed rebuilds are in the history.
    let errors = run.errors_of("src");
    assert_eq!(errors.len(), 1, "{what}: {errors:#?}");
    assert_eq!(errors[0]["kind"], "device-lost");
    assert_eq!(errors[0]["severity"], "recoverable");

    // The gap: one, exactly the outage, filled with silence.
    let src = run.stage("src");
    let outage = BACK_AFTER_MS * 48;
    assert_eq!(
        (n(src, "gaps"), n(src, "gap_frames")),
        (1, outage),
        "{what}"
    );
    assert_eq!(n(src, "frames_out"), FRAMES - outage, "{what}");
    let r = run.report().expect("report");
    // Storage received the whole timeline: the signal up to the loss, the silence, the signal
    // from where the device came back. The silence is not the mock signal, so mock-storage
    // counts it as corrupt frames, exactly the gap; nothing is missing or out of order.
    assert_eq!(n(&r, "frames_written"), FRAMES, "{what}: {r:#}");
    assert_eq!(n(&r, "corrupt_frames"), outage, "{what}: {r:#}");
    assert_eq!(
        n(&r, "gaps") + n(&r, "missing_frames") + n(&r, "reordered"),
        0,
        "{what}: {r:#}"
    );
    assert_eq!(n(&r, "next_expected_frame"), FRAMES, "{what}: {r:#}");
    assert_edges_balance(&run);
    assert_frames_accounted(&run, true);
}

#[test]
fn a_device_that_never_comes_back_exhausts_max_restarts_and_fails_the_run() {
    let what = "device lost for good at block 10, under restart (max_restarts 2)";
    let keys = format!(
        "device_lost_at_block = {FAULT_BLOCK}\n{}",
        Policy::Restart.on_error()
    );
    let run = Run::new(what, &pipeline_with(At::Capture, &keys));
    assert_eq!(code(&run.out), 1, "{what}\n{}", stderr(&run.out));
    assert_eq!(run.summary["end"], "failed");
    let failure = &run.summary["failure"];
    assert_eq!(failure["stage"], "src", "{failure:#}");
    assert_eq!(failure["kind"], "device-lost", "{failure:#}");
    assert!(
        failure["message"]
            .as_str()
            .unwrap()
            .contains(&format!("gave up after {MAX_RESTARTS} restart(s)")),
        "{failure:#}"
    );

    let path = recovery_path(&run);
    let states: Vec<&str> = path.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        states,
        ["failed", "recovering", "failed", "recovering", "failed"],
        "{what}"
    );
    assert_eq!(n(run.stage("src"), "restarts"), MAX_RESTARTS);
    assert_backoff_doubles(what, &path);

    let errors = run.errors_of("src");
    let listed: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["severity"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [("device-lost", "recoverable"), ("device-lost", "fatal")],
        "{what}"
    );
    assert!(run.state_dump().is_some(), "{what}");
    assert_eq!(
        run.cleanup_step("finalise storage")["outcome"]["outcome"],
        "ok"
    );
    let r = run.report().expect("report");
    assert_eq!(n(&r, "frames_written"), FAULT_BLOCK * BLOCK, "{r:#}");
    assert_eq!(n(&r, "gaps") + n(&r, "corrupt_frames"), 0, "{r:#}");
    assert_edges_balance(&run);
    assert_frames_accounted(&run, true);
}

#[test]
fn a_wav_file_behind_a_panicking_stage_is_valid_and_holds_every_frame_passed_on() {
    // Storage files other than mock-storage's report: a wav-writer behind a processing stage
    // that panics at block 10, under each policy.
    for policy in POLICIES {
        let what = format!("panic in process under {policy:?}, into wav-writer");
        let toml = format!(
            r#"version = 1
[capture.src]
plugin = "mock-capture"
channels = 2
frames = {FRAMES}
[process.mid]
plugin = "mock-process"
inputs = ["src"]
panic_at_block = {FAULT_BLOCK}
buffer = {{ capacity_blocks = {QUEUE_BLOCKS}, when_full = "block" }}
{}
[storage.file]
plugin = "wav-writer"
inputs = ["mid"]
path = "out.wav"
format = "float32"
buffer = {{ capacity_blocks = {QUEUE_BLOCKS}, when_full = "block" }}
"#,
            policy.on_error()
        );
        let run = Run::new(&what, &toml);
        let expected_exit = if policy == Policy::Fail { 1 } else { 0 };
        assert_eq!(
            code(&run.out),
            expected_exit,
            "{what}\n{}",
            stderr(&run.out)
        );
        let wav = run.dir.path().join("out.wav");
        let reader = hound::WavReader::open(&wav)
            .unwrap_or_else(|e| panic!("{what}: {} is not a valid WAV: {e}", wav.display()));
        let spec = reader.spec();
        assert_eq!((spec.channels, spec.sample_rate), (2, 48_000), "{what}");
        let on_disk = u64::from(reader.duration());
        let into_file = n(run.edge_from("mid"), "popped_frames");
        let storage = &run.summary["storage"][0];
        assert_eq!(n(storage, "frames_written"), on_disk, "{what}");
        assert_eq!(on_disk, into_file, "{what}: every frame popped is on disk");
        let expected = match policy {
            Policy::Fail => FAULT_BLOCK * BLOCK,
            Policy::Restart | Policy::Ignore => FRAMES - BLOCK,
        };
        assert_eq!(on_disk, expected, "{what}");
        assert_edges_balance(&run);
    }
}

/// Two faults in one call: a call the watchdog found stalled under `restart` that then fails by
/// itself (a panic) is handled once: one restart, one block dropped.
#[test]
fn a_stalled_call_that_then_panics_is_restarted_once() {
    // Faults combine: the call for block 10 hangs STALL_MS, then panics. One call went wrong:
    // one restart, one block lost (and counted).
    let what = "stall then panic in one process call, under restart";
    let keys = format!(
        "stall_at_block = {FAULT_BLOCK}\nstall_ms = {STALL_MS}\npanic_at_block = {FAULT_BLOCK}\n{}",
        Policy::Restart.on_error()
    );
    let run = Run::new(what, &pipeline_with(At::Process, &keys));
    assert_eq!(code(&run.out), 0, "{what}\n{}", stderr(&run.out));
    let kinds: Vec<&str> = run
        .errors_of("mid")
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["stalled", "panicked"], "{what}");
    assert_eq!(n(run.stage("mid"), "restarts"), 1, "{what}");
    assert_eq!(
        n(run.edge_from("mid"), "dropped_stage_error_frames"),
        BLOCK,
        "{what}"
    );
    assert_edges_balance(&run);
    assert_frames_accounted(&run, true);
}
