//! Stage isolation (`isolate = true`): a plugin that crashes, aborts, exits, overflows its stack,
//! runs out of memory or never returns ends only its own process. The host lives, meets the
//! fault with the stage's policy as an error of kind `crashed`, writes its summary (and a state
//! dump on failure), and accounts for every frame. Real plugins, real child processes.

use serde_json::Value;
use tapeline_tests::{
    code, mock_chain, run_toml, run_toml_with, state_dump_path, stderr, summary_stage, TempDir,
};

const BLOCK: u64 = 480;
const FRAMES: u64 = 100 * BLOCK;
const AT: u64 = 10;

/// mock-capture → mock-process (`mid`) → mock-storage, with `keys` in the stage named `at`,
/// which runs isolated.
fn pipeline(at: &str, keys: &str) -> String {
    let pick = |s: &str| {
        if s == at {
            format!("isolate = true\n{keys}")
        } else {
            String::new()
        }
    };
    mock_chain(
        FRAMES,
        "stall_timeout_ms = 300",
        &pick("src"),
        &pick("mid"),
        &pick("sink"),
    )
}

struct Run {
    out: std::process::Output,
    summary: Value,
    dir: TempDir,
}

fn run(what: &str, toml: &str) -> Run {
    let dir = TempDir::new("isolation");
    let (out, path) = run_toml(&dir, toml);
    let summary = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{what}: no summary ({e})\n{}", stderr(&out)));
    Run {
        summary: serde_json::from_str(&summary).unwrap(),
        out,
        dir,
    }
}

impl Run {
    fn stage(&self, id: &str) -> &Value {
        self.summary["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()
    }
    fn report(&self) -> Value {
        let text = std::fs::read_to_string(self.dir.path().join("report.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }
    /// `blocks` blocks of the source were lost and counted, and the storage wrote the rest in
    /// order, with one gap per lost block and no corrupt frame.
    fn assert_lost_blocks(&self, what: &str, blocks: u64) {
        assert_eq!(
            self.lost(),
            blocks * BLOCK,
            "{what}: {}",
            self.summary["lost_frames"]
        );
        let report = self.report();
        assert_eq!(
            report["frames_written"],
            FRAMES - blocks * BLOCK,
            "{what}: {report:#}"
        );
        assert_eq!(report["gaps"], blocks, "{what}: {report:#}");
        assert_eq!(report["reordered"], 0, "{what}: {report:#}");
        assert_eq!(report["corrupt_frames"], 0, "{what}: {report:#}");
    }
    /// What mock-storage reports, where its report covers the whole run: its totals are per
    /// process, so a restarted isolated storage reports only its last process's writes.
    fn assert_report_blocks(&self, what: &str, at: &str, policy: &str, blocks: u64) {
        if at == "sink" && policy == "restart" {
            let report = self.report();
            assert_eq!(report["corrupt_frames"], 0, "{what}: {report:#}");
            assert_eq!(report["reordered"], 0, "{what}: {report:#}");
        } else {
            self.assert_lost_blocks(what, blocks);
        }
    }
    /// The summary's count of what the storage wrote, over every instance (and process) of it.
    fn storage_written(&self) -> u64 {
        self.summary["storage"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == "sink")
            .and_then(|s| s["frames_written"].as_u64())
            .unwrap_or_else(|| panic!("no storage entry: {:#}", self.summary["storage"]))
    }
    fn lost(&self) -> u64 {
        self.summary["lost_frames"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum()
    }
}

fn on_error(policy: &str) -> String {
    format!("on_error = {{ policy = \"{policy}\", backoff_ms = 10 }}")
}

/// What each crash looks like from the host.
const CRASHES: [(&str, &str); 6] = [
    ("segv", "killed by SIGSEGV"),
    ("abort", "killed by SIGABRT"),
    ("stack-overflow", "killed by SIGABRT"),
    ("exit", "exited with status 3"),
    ("hang", "killed by the watchdog"),
    ("oom", "limit: memory_mb = 256"),
];

fn crash_keys(kind: &str) -> String {
    let limits = if kind == "oom" {
        "limits = { memory_mb = 256 }\n"
    } else {
        ""
    };
    format!("crash = \"{kind}\"\ncrash_at_block = {AT}\n{limits}")
}

#[test]
fn every_crash_in_an_isolated_processor_is_restarted_and_the_recording_goes_on() {
    for (kind, how) in CRASHES {
        let what = format!("crash = {kind} in an isolated processor under restart");
        let mut toml = pipeline(
            "mid",
            &format!("{}{}", crash_keys(kind), on_error("restart")),
        );
        if kind == "oom" {
            // Touching 256 MiB until the limit hits can take longer than the 300 ms the hang
            // needs on a loaded machine; the watchdog must not be what ends it.
            toml = toml.replace("stall_timeout_ms = 300", "stall_timeout_ms = 10000");
        }
        let r = run(&what, &toml);
        assert_eq!(code(&r.out), 0, "{what}\n{}", stderr(&r.out));
        let e = &r.summary["errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "crashed")
            .unwrap_or_else(|| panic!("{what}: no crashed error: {:#}", r.summary["errors"]))
            .clone();
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains(how), "{what}: {msg}");
        assert!(
            msg.contains(&format!("during `process` at block {AT}")),
            "{what}: {msg}"
        );
        assert_eq!(e["severity"], "recoverable", "{what}");
        assert_eq!(r.stage("mid")["restarts"], 1, "{what}");
        let how = if kind == "oom" {
            "setrlimit".into()
        } else {
            Value::Null
        };
        assert_eq!(r.stage("mid")["limits_applied_with"], how, "{what}");
        // The block the crashed call held is the only loss, and it is counted.
        assert_eq!(r.summary["lost_frames"]["stage-error"], BLOCK, "{what}");
        r.assert_lost_blocks(&what, 1);
    }
}

#[test]
fn a_crash_under_fail_ends_the_run_with_summary_and_state_dump() {
    let what = "segv in an isolated processor under fail";
    let r = run(
        what,
        &pipeline(
            "mid",
            &format!("{}{}", crash_keys("segv"), on_error("fail")),
        ),
    );
    assert_eq!(code(&r.out), 1, "{what}\n{}", stderr(&r.out));
    assert_eq!(r.summary["end"], "failed");
    assert_eq!(r.summary["failure"]["stage"], "mid");
    assert_eq!(r.summary["failure"]["kind"], "crashed");
    let dump = state_dump_path(&stderr(&r.out)).expect("a state dump");
    assert!(dump.is_file(), "{}", dump.display());
    // Storage was finalised with every block before the crash, and nothing is unaccounted:
    // what the source made is written, lost by reason, or never made (the run stopped).
    let report = r.report();
    assert_eq!(report["frames_written"], AT * BLOCK, "{report:#}");
    let pushed = r.summary["edges"][0]["pushed_frames"].as_u64().unwrap();
    let written = report["frames_written"].as_u64().unwrap();
    assert_eq!(pushed, written + r.lost(), "{}", r.summary["lost_frames"]);
}

#[test]
fn a_crash_under_ignore_starts_a_fresh_process_and_drops_only_the_block() {
    let what = "abort in an isolated processor under ignore";
    let r = run(
        what,
        &pipeline(
            "mid",
            &format!("{}{}", crash_keys("abort"), on_error("ignore")),
        ),
    );
    assert_eq!(code(&r.out), 0, "{what}\n{}", stderr(&r.out));
    assert_eq!(r.lost(), BLOCK, "{}", r.summary["lost_frames"]);
    assert_eq!(r.report()["frames_written"], FRAMES - BLOCK);
}

#[test]
fn a_crashed_capture_is_restarted_and_its_signal_continues() {
    let what = "segv in an isolated capture under restart";
    let r = run(
        what,
        &pipeline(
            "src",
            &format!("{}{}", crash_keys("segv"), on_error("restart")),
        ),
    );
    assert_eq!(code(&r.out), 0, "{what}\n{}", stderr(&r.out));
    assert_eq!(r.stage("src")["restarts"], 1);
    // A failed read produced nothing: nothing is lost, the fresh process goes on where the
    // timeline stands.
    let report = r.report();
    assert_eq!(report["frames_written"], FRAMES, "{report:#}");
    assert_eq!(report["gaps"], 0, "{report:#}");
    assert_eq!(r.lost(), 0);
}

#[test]
fn a_crashed_storage_under_fail_still_ends_with_a_summary() {
    let what = "exit in an isolated storage under fail";
    let r = run(
        what,
        &pipeline(
            "sink",
            &format!("{}{}", crash_keys("exit"), on_error("fail")),
        ),
    );
    assert_eq!(code(&r.out), 1, "{what}\n{}", stderr(&r.out));
    assert_eq!(r.summary["failure"]["kind"], "crashed");
    let msg = r.summary["failure"]["message"].as_str().unwrap();
    assert!(
        msg.contains("exited with status 3") && msg.contains("`write`"),
        "{msg}"
    );
    // Nothing the source made is unaccounted for.
    let pushed = r.summary["edges"][1]["pushed_frames"].as_u64().unwrap();
    let written = r.stage("sink")["frames_in"].as_u64().unwrap();
    assert_eq!(pushed, written + r.lost(), "{:#}", r.summary["lost_frames"]);
}

#[test]
fn isolated_stages_without_faults_record_exactly_what_in_process_ones_do() {
    let keys = "";
    let toml = pipeline("mid", keys).replace("[storage.sink]", "[storage.sink]\nisolate = true");
    let r = run("all clean, two stages isolated", &toml);
    assert_eq!(code(&r.out), 0, "{}", stderr(&r.out));
    let report = r.report();
    assert_eq!(report["frames_written"], FRAMES, "{report:#}");
    assert_eq!(report["gaps"], 0);
    assert_eq!(report["corrupt_frames"], 0);
    assert_eq!(r.lost(), 0);
    assert_eq!(r.stage("mid")["isolated"], true);
    assert_eq!(r.stage("src")["isolated"], false);
}

/// Every crash kind in each kind of stage under each policy: the host never dies, the exit code
/// is the policy's, a summary is always written (and a state dump under `fail`), and every frame
/// the source made is written or counted lost, exactly.
#[test]
fn the_crash_matrix_holds_for_capture_process_and_storage_under_every_policy() {
    for at in ["src", "mid", "sink"] {
        for kind in ["segv", "abort", "exit", "hang"] {
            for policy in ["fail", "restart", "ignore"] {
                let what = format!("crash = {kind} in isolated `{at}` under {policy}");
                let r = run(
                    &what,
                    &pipeline(at, &format!("{}{}", crash_keys(kind), on_error(policy))),
                );
                let err = stderr(&r.out);
                let want = if policy == "fail" { 1 } else { 0 };
                assert_eq!(code(&r.out), want, "{what}\n{err}");
                let crashed = r.summary["errors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["stage"] == at && e["kind"] == "crashed");
                assert!(crashed, "{what}: {:#}", r.summary["errors"]);
                assert_eq!(
                    state_dump_path(&err).is_some(),
                    policy == "fail",
                    "{what}\n{err}"
                );
                let made = r.stage("src")["frames_out"].as_u64().unwrap();
                let written = r.stage("sink")["frames_in"].as_u64().unwrap();
                let lost: u64 = r.summary["lost_frames"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(reason, _)| *reason != "device-gap")
                    .map(|(_, v)| v.as_u64().unwrap())
                    .sum();
                assert_eq!(
                    made,
                    written + lost,
                    "{what}: {:#}",
                    r.summary["lost_frames"]
                );
                if policy != "fail" {
                    assert_eq!(made, FRAMES, "{what}: the source ran to its end");
                    // What every process of the storage wrote, its dead ones' too.
                    assert_eq!(r.storage_written(), written, "{what}");
                }
            }
        }
    }
}

/// An isolated processor or storage keeps calls in flight (a file job does not wait for each
/// block's answer or write): a call its plugin fails is the only loss. Under `ignore` the same
/// process goes on with the calls after it; under `restart` a fresh process takes them over, in
/// order.
#[test]
fn a_failed_call_with_calls_in_flight_loses_only_its_block() {
    for (at, policy) in [
        ("mid", "ignore"),
        ("mid", "restart"),
        ("sink", "ignore"),
        ("sink", "restart"),
    ] {
        let what = format!("error_at_block in isolated `{at}` under {policy}");
        // The mock's fault fires once per run, also when the stage's fresh process starts.
        let keys = format!("error_at_block = {AT}\n{}", on_error(policy));
        let r = run(&what, &pipeline(at, &keys));
        assert_eq!(code(&r.out), 0, "{what}\n{}", stderr(&r.out));
        let errors = r.summary["errors"].as_array().unwrap().len() as u64;
        let restarts = r.stage(at)["restarts"].as_u64().unwrap();
        let want = if policy == "ignore" { (1, 0) } else { (1, 1) };
        assert_eq!(
            (errors, restarts),
            want,
            "{what}: {:#}",
            r.summary["errors"]
        );
        assert_eq!(r.lost(), errors * BLOCK, "{what}: {:#}", r.summary);
        // A storage counts as taken what its writes took, not what it handed to its process.
        assert_eq!(
            r.stage("sink")["frames_in"],
            FRAMES - errors * BLOCK,
            "{what}"
        );
        // Also a restarted isolated storage's, whose old processes each reported what they wrote.
        assert_eq!(r.storage_written(), FRAMES - errors * BLOCK, "{what}");
        r.assert_report_blocks(&what, at, policy, errors);
    }
}

/// A processor with latency and a tail (the resampler: early calls give fewer frames, the last
/// ones come from end-of-stream calls) writes the same file isolated as in the host, sample for
/// sample: the calls in flight come back in order and the tail after them.
#[test]
fn an_isolated_resampler_writes_what_it_writes_in_the_host() {
    let dir = TempDir::new("isolation-resample");
    let toml = |isolate: bool| {
        format!(
            r#"version = 1
[pipeline]
sample_rate = 48000
block_frames = 480
[capture.tone]
plugin = "tone"
frequency = 997.0
channels = 2
seconds = 3.0
[process.to-cd]
plugin = "resample"
inputs = ["tone"]
rate = 44100
isolate = {isolate}
[storage.file]
plugin = "wav-writer"
inputs = ["to-cd"]
path = "isolated-{isolate}.wav"
"#
        )
    };
    let mut files = Vec::new();
    for isolate in [false, true] {
        let (out, _) = run_toml(&dir, &toml(isolate));
        assert_eq!(code(&out), 0, "isolate = {isolate}\n{}", stderr(&out));
        let path = dir.path().join(format!("isolated-{isolate}.wav"));
        let mut reader = hound::WavReader::open(&path).unwrap();
        let samples: Vec<i32> = reader.samples::<i32>().map(Result::unwrap).collect();
        files.push(samples);
    }
    // 3 s at 44.1 kHz, stereo: every frame, the tail included.
    assert_eq!(files[0].len(), 2 * 3 * 44100, "in the host");
    assert_eq!(files[0], files[1], "isolated differs from in-process");
}

/// A crash among the last calls, answered while the stream's end is being drained: the block
/// it hit is lost, a fresh process answers the rest, and nothing else is lost.
#[test]
fn a_crash_in_the_last_calls_in_flight_loses_only_its_block() {
    for at in ["mid", "sink"] {
        let what = format!("segv at block 95 of 100 in isolated `{at}` under restart");
        let keys = format!(
            "crash = \"segv\"\ncrash_at_block = 95\n{}",
            on_error("restart")
        );
        let r = run(&what, &pipeline(at, &keys));
        assert_eq!(code(&r.out), 0, "{what}\n{}", stderr(&r.out));
        assert_eq!(r.lost(), BLOCK, "{what}: {:#}", r.summary);
        assert_eq!(r.stage("sink")["frames_in"], FRAMES - BLOCK, "{what}");
        // The crashed process gave no report: what its writes took is still counted written.
        assert_eq!(r.storage_written(), FRAMES - BLOCK, "{what}");
        r.assert_report_blocks(&what, at, "restart", 1);
    }
}

/// An isolated storage's last write fails after the stream ended, while its writes in flight
/// are waited for, and the last block is short: the stage reports the failure, counts exactly
/// that block lost, and finalises the file with everything else.
#[test]
fn a_failed_last_write_is_reported_and_counted_when_the_stream_ends() {
    let short = 100;
    let frames = FRAMES - BLOCK + short;
    let toml = mock_chain(
        frames,
        "stall_timeout_ms = 300",
        "",
        "",
        &format!(
            "isolate = true\nerror_at_block = 99\n{}",
            on_error("ignore")
        ),
    );
    let what = "error at the last, short block of an isolated storage";
    let r = run(what, &toml);
    assert_eq!(code(&r.out), 0, "{what}\n{}", stderr(&r.out));
    let errors = r.summary["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{what}: {errors:#?}");
    assert_eq!(errors[0]["stage"], "sink", "{what}: {errors:#?}");
    assert_eq!(r.lost(), short, "{what}: {:#}", r.summary["lost_frames"]);
    let report = r.report();
    assert_eq!(report["frames_written"], frames - short, "{report:#}");
    assert_eq!(report["corrupt_frames"], 0, "{report:#}");
    assert_eq!(r.stage("sink")["frames_in"], frames - short, "{what}");
    assert_eq!(r.stage("src")["frames_out"], frames, "{what}");
}

/// An isolated capture reads ahead (a file job does not wait for each block): a read its plugin
/// fails produced nothing, so nothing is lost; the process (the same one under `ignore`, a fresh
/// one under `restart`) reads on from where the stage is, and storage gets the whole signal in
/// order.
#[test]
fn a_failed_read_with_reads_in_flight_loses_nothing() {
    for policy in ["ignore", "restart"] {
        let what = format!("error_at_block in an isolated capture under {policy}");
        let keys = format!(
            "error_at_block = {AT}\non_error = {{ policy = \"{policy}\", backoff_ms = 10, max_restarts = 50 }}"
        );
        let r = run(&what, &pipeline("src", &keys));
        assert_eq!(code(&r.out), 0, "{what}\n{}", stderr(&r.out));
        let errors = r.summary["errors"].as_array().unwrap();
        assert!(!errors.is_empty(), "{what}: the fault did not fire");
        assert!(
            errors.iter().all(|e| e["stage"] == "src"),
            "{what}: {errors:#?}"
        );
        assert_eq!(r.stage("src")["frames_out"], FRAMES, "{what}");
        r.assert_lost_blocks(&what, 0);
        assert_eq!(r.report()["next_expected_frame"], FRAMES, "{what}");
    }
}

/// Stopped while an isolated capture has reads in flight (an endless source, `--for`): the
/// blocks read ahead never entered the pipeline, so they are neither recorded nor lost; every
/// block the capture gave is written, in order, and the run ends cleanly.
#[test]
fn a_stop_with_reads_in_flight_records_every_block_the_capture_gave() {
    let toml = mock_chain(0, "", "isolate = true", "", "").replace("frames = 0\n", "");
    let dir = TempDir::new("isolation-stop");
    let (out, path) = run_toml_with(&dir, &toml, &["--for", "300ms"]);
    let what = "an endless isolated capture stopped after 300 ms";
    assert_eq!(code(&out), 0, "{what}\n{}", stderr(&out));
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(
        summary["errors"].as_array().unwrap().is_empty(),
        "{summary:#}"
    );
    let made = summary_stage(&summary, "src")["frames_out"]
        .as_u64()
        .unwrap();
    assert!(made > 0, "{what}: nothing was read");
    let text = std::fs::read_to_string(dir.path().join("report.json")).unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["frames_written"], made, "{what}: {report:#}");
    assert_eq!(report["next_expected_frame"], made, "{what}: {report:#}");
    for key in ["gaps", "missing_frames", "reordered", "corrupt_frames"] {
        assert_eq!(report[key], 0, "{what}: {key}: {report:#}");
    }
    let lost: u64 = summary["lost_frames"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(lost, 0, "{what}: {:#}", summary["lost_frames"]);
}

/// A slow source (each read takes 200 ms) read ahead by an isolated capture: its blocks are
/// passed on as each read ends (not once half a ring of them is there), and a stop is not held
/// up by the reads in flight (a ring of 64 would take 12.8 s): the process answers them as
/// finished without calling the plugin, and the run ends within a read or so of the stop.
#[test]
fn a_stop_is_not_held_up_by_the_reads_in_flight_of_a_slow_source() {
    let toml = "version = 1\n[capture.src]\nplugin = \"mock-capture\"\nchannels = 2\n\
                slow_us = 200000\nisolate = true\n[storage.sink]\nplugin = \"null\"\n\
                inputs = [\"src\"]\n";
    let dir = TempDir::new("isolation-slow-stop");
    let started = std::time::Instant::now();
    let (out, path) = run_toml_with(&dir, toml, &["--for", "1s"]);
    let took = started.elapsed();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        took < std::time::Duration::from_secs(5),
        "a 1 s run of a slow isolated source took {took:?} to stop"
    );
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // About five reads in the second: each block was passed on when it was read.
    let blocks = summary_stage(&summary, "sink")["blocks"].as_u64().unwrap();
    assert!(blocks >= 2, "{blocks} block(s) reached storage in 1 s");
}

/// A write that crashes among the last ones in flight is met after the input ended, while the
/// stage waits for its writes: its policy still holds. Under `fail` the run fails (exit 1),
/// no fresh process is started to write what the dead one held (it is counted lost), and every
/// frame is accounted for.
#[test]
fn a_crash_met_while_the_last_writes_are_waited_for_still_meets_fail() {
    let what = "segv at block 95 of 100 in an isolated storage under fail";
    let keys = format!(
        "crash = \"segv\"\ncrash_at_block = 95\n{}",
        on_error("fail")
    );
    let r = run(what, &pipeline("sink", &keys));
    assert_eq!(code(&r.out), 1, "{what}\n{}", stderr(&r.out));
    assert_eq!(r.summary["failure"]["kind"], "crashed", "{:#}", r.summary);
    assert_eq!(r.stage("sink")["restarts"], 0);
    assert_eq!(r.stage("sink")["frames_in"], 95 * BLOCK, "{what}");
    assert_eq!(r.stage("src")["frames_out"], FRAMES, "{what}");
    assert_eq!(
        r.lost(),
        5 * BLOCK,
        "{what}: {:#}",
        r.summary["lost_frames"]
    );
}

/// More CPU time than `limits.cpu_seconds`: the process gets SIGXCPU (the hard limit is a
/// second above, so the kernel's SIGKILL, which says nothing, does not come first) and the error
/// names the limit.
#[test]
fn a_cpu_limit_ends_the_process_with_sigxcpu_and_names_the_limit() {
    let toml = "version = 1\n[capture.t]\nplugin = \"tone\"\nchannels = 2\nseconds = 3600.0\n\
                [process.r]\nplugin = \"resample\"\ninputs = [\"t\"]\nrate = 44100\n\
                quality = \"best\"\nisolate = true\nlimits = { cpu_seconds = 1 }\n\
                on_error = { policy = \"fail\" }\n[storage.n]\nplugin = \"null\"\n\
                inputs = [\"r\"]\n";
    let r = run("cpu_seconds = 1 on a resampler", toml);
    assert_eq!(code(&r.out), 1, "{}", stderr(&r.out));
    let msg = r.summary["failure"]["message"].as_str().unwrap();
    assert!(
        msg.contains("killed by SIGXCPU") && msg.contains("limit: cpu_seconds = 1"),
        "{msg}"
    );
}

/// Behind a paced source (one block every 10 ms) an isolated processor's calls do not wait for
/// its process, so its death is seen when its stderr closes, at the next call: the crash at
/// block 10 (about 100 ms in) is met long before a ring of 64 calls (640 ms) has gone by with
/// nothing coming back. The error's time is when the stage met it.
#[test]
fn a_crash_behind_a_paced_source_is_met_at_the_next_call() {
    let keys = format!(
        "crash = \"segv\"\ncrash_at_block = {AT}\n{}",
        on_error("restart")
    );
    let toml = pipeline("mid", &keys).replace("frames = ", "slow_us = 10000\nframes = ");
    assert!(toml.contains("slow_us = 10000"), "{toml}");
    let r = run("segv behind a paced source", &toml);
    assert_eq!(code(&r.out), 0, "{}", stderr(&r.out));
    let history = r.stage("mid")["history"].as_array().unwrap().clone();
    let at = |state: &str| {
        history
            .iter()
            .find(|h| h["to"] == state)
            .and_then(|h| h["at_ms"].as_u64())
            .unwrap_or_else(|| panic!("no `{state}` in {history:#?}"))
    };
    let (running, failed) = (at("running"), at("failed"));
    assert!(
        failed - running < 320,
        "the crash at block {AT} was met {} ms after the stage started",
        failed - running
    );
    let error = &r.summary["errors"][0];
    let error_at = error["at_ms"].as_u64().unwrap();
    assert!(
        error_at.abs_diff(failed) < 50,
        "error at {error_at} ms, the stage failed at {failed} ms: {error:#}"
    );
    r.assert_lost_blocks("segv behind a paced source", 1);
}

/// A write that fails under `fail`, with writes after it in flight: as in the host, nothing
/// after the failed block is written (the process is finalised without being told to go on),
/// and what was made and not written is counted lost.
#[test]
fn a_failed_write_under_fail_writes_nothing_after_it() {
    let what = "error_at_block in an isolated storage under fail";
    let keys = format!("error_at_block = {AT}\n{}", on_error("fail"));
    let r = run(what, &pipeline("sink", &keys));
    assert_eq!(code(&r.out), 1, "{what}\n{}", stderr(&r.out));
    assert_eq!(r.report()["frames_written"], AT * BLOCK, "{what}");
    assert_eq!(r.storage_written(), AT * BLOCK, "{what}");
    let made = r.stage("src")["frames_out"].as_u64().unwrap();
    assert_eq!(
        made,
        AT * BLOCK + r.lost(),
        "{what}: {:#}",
        r.summary["lost_frames"]
    );
}

/// Behind a paced source (a block every 10 ms) an isolated processor answers each call with that
/// call's own block, not the one before: the monitor's snapshots see the processor's output keep
/// up with the source (it lagged one block behind when each answer came back with the next call).
#[test]
fn behind_a_paced_source_an_isolated_processor_adds_no_block_of_latency() {
    let toml = pipeline("mid", "")
        .replace("frames = ", "slow_us = 10000\nframes = ")
        .replace(
            "stall_timeout_ms = 300",
            "stall_timeout_ms = 300\nmonitor_interval_ms = 50",
        );
    let dir = TempDir::new("isolation-paced-latency");
    let metrics = dir.path().join("metrics.jsonl");
    let (out, _) = run_toml_with(&dir, &toml, &["--metrics", metrics.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = std::fs::read_to_string(&metrics).unwrap();
    let (mut running, mut level) = (0, 0);
    for line in text.lines() {
        let s: Value = serde_json::from_str(line).unwrap();
        let stages = s["stages"].as_array().unwrap();
        let out_of = |id: &str| {
            let st = stages.iter().find(|x| x["id"] == id).unwrap();
            (st["frames_out"].as_u64().unwrap(), st["state"] == "running")
        };
        let ((src, live), (mid, _)) = (out_of("src"), out_of("mid"));
        if live && src > 0 && src < FRAMES {
            running += 1;
            level += usize::from(mid == src);
        }
    }
    assert!(
        running >= 5,
        "{running} snapshots while the source ran:\n{text}"
    );
    assert!(
        level * 2 >= running,
        "the processor's output caught up with the source in {level} of {running} snapshots"
    );
}
