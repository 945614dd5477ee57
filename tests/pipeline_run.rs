//! `tapeline run` end to end with real plugins and real files: lossless edges deliver every
//! sample unchanged; a lossy edge counts every drop exactly; SIGINT still finalises storage; stages
//! start storage first and stop captures first; cleanup runs its steps in order.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tapeline_tests::{code, run_in, run_toml, stderr, summary_stage, tapeline_bin, TempDir};

fn read_i16(path: &Path) -> (hound::WavSpec, Vec<i16>) {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    let samples = r.samples::<i16>().map(|s| s.expect("sample")).collect();
    (spec, samples)
}

fn summary(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("summary written"))
        .expect("summary JSON")
}

fn assert_invariant(edge: &Value) {
    let n = |k: &str| edge[k].as_u64().unwrap_or_else(|| panic!("{k} in {edge}"));
    let dropped = n("dropped_overflow_frames")
        + n("dropped_stage_error_frames")
        + n("dropped_shutdown_frames");
    assert_eq!(
        n("pushed_frames"),
        n("popped_frames") + dropped + n("queued_frames"),
        "{edge:#}"
    );
    let dropped_blocks = n("dropped_overflow") + n("dropped_stage_error") + n("dropped_shutdown");
    assert_eq!(
        n("pushed"),
        n("popped") + dropped_blocks + n("depth"),
        "{edge:#}"
    );
}

#[test]
fn wav_through_unity_gain_to_wav_is_sample_exact_and_every_frame_is_written() {
    let dir = TempDir::new("run-passthrough");
    let input = dir.path().join("in.wav");
    // An independent reference: sox makes the input (1.3 s: the last block is partial).
    let sox = Command::new("sox")
        .args(["-n", "-r", "48000", "-c", "2", "-b", "16"])
        .arg(&input)
        .args(["synth", "1.3", "sine", "440", "sine", "1234", "gain", "-3"])
        .status()
        .expect("sox is installed (scripts/test.sh installs it)");
    assert!(sox.success());
    let (out, sum) = run_toml(
        &dir,
        r#"version = 1
[capture.src]
plugin = "wav-reader"
path = "in.wav"
[process.pass]
plugin = "gain"
inputs = ["src"]
db = 0.0
[storage.out]
plugin = "wav-writer"
inputs = ["pass"]
path = "out.wav"
format = "pcm16"
"#,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let (in_spec, a) = read_i16(&input);
    let (out_spec, b) = read_i16(&dir.path().join("out.wav"));
    assert_eq!(
        (out_spec.channels, out_spec.sample_rate),
        (in_spec.channels, in_spec.sample_rate)
    );
    assert_eq!(a.len(), 62_400 * 2);
    assert_eq!(a.len(), b.len());
    let first_diff = a.iter().zip(&b).position(|(x, y)| x != y);
    assert_eq!(first_diff, None, "samples differ");

    let s = summary(&sum);
    let produced = summary_stage(&s, "src")["frames_out"].as_u64().unwrap();
    assert_eq!(produced, 62_400);
    assert_eq!(s["storage"][0]["frames_written"].as_u64(), Some(produced));
    for e in s["edges"].as_array().unwrap() {
        assert_invariant(e);
        assert_eq!(e["dropped_overflow_frames"], 0);
    }
    assert_eq!(s["end"], "sources-ended");
}

#[test]
fn slow_storage_behind_drop_oldest_counts_every_drop_and_keeps_the_rest() {
    let dir = TempDir::new("run-drop-oldest");
    let (out, sum) = run_toml(
        &dir,
        r#"version = 1
[capture.fast-src]
plugin = "mock-capture"
channels = 2
frames = 48000
[storage.slow-sink]
plugin = "mock-storage"
inputs = ["fast-src"]
slow_us = 3000
report = "report.json"
buffer = { capacity_blocks = 4, when_full = "drop-oldest" }
"#,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let s = summary(&sum);
    let edge = &s["edges"][0];
    assert_invariant(edge);
    let dropped = edge["dropped_overflow_frames"].as_u64().unwrap();
    let popped = edge["popped_frames"].as_u64().unwrap();
    assert!(
        dropped > 0,
        "a 3 ms/block sink behind 4 blocks must drop: {edge:#}"
    );
    assert_eq!(edge["pushed_frames"], 48_000);
    assert_eq!(popped + dropped, 48_000);
    // The sink holds exactly the frames that were not dropped, and says which ones are missing.
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(
        report["frames_written"].as_u64(),
        Some(popped),
        "{report:#}"
    );
    assert_eq!(report["reordered"], 0);
    assert_eq!(report["corrupt_frames"], 0);
    let missing = report["missing_frames"].as_u64().unwrap();
    let tail_lost = 48_000 - report["next_expected_frame"].as_u64().unwrap();
    assert_eq!(missing + tail_lost, dropped, "{report:#}");
}

/// Start an endless mono recording whose processing stage takes `slow_us` per block, and wait
/// until audio is on disk. Returns the child, the recording and the summary's path.
fn start_recording(dir: &TempDir, slow_us: u32) -> (Child, PathBuf, PathBuf) {
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"version = 1
[capture.endless]
plugin = "tone"
channels = 1
[process.pace]
plugin = "mock-process"
inputs = ["endless"]
slow_us = {slow_us}
[storage.file]
plugin = "wav-writer"
inputs = ["pace"]
path = "rec.wav"
"#
        ),
    )
    .unwrap();
    let sum = dir.path().join("summary.json");
    let child = Command::new(tapeline_bin())
        .args([
            "run",
            pipeline.to_str().unwrap(),
            "--summary-json",
            sum.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rec = dir.path().join("rec.wav");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&rec).map_or(0, |m| m.len()) < 8_000 {
        assert!(Instant::now() < deadline, "no audio written within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, rec, sum)
}

fn interrupt(child: &Child) {
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
}

#[test]
fn sigint_mid_recording_finalises_a_valid_file_holding_every_captured_frame() {
    let dir = TempDir::new("run-sigint");
    let (mut child, rec, sum) = start_recording(&dir, 2000);
    interrupt(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));

    let s = summary(&sum);
    assert_eq!(s["end"], "interrupted");
    let captured = summary_stage(&s, "endless")["frames_out"].as_u64().unwrap();
    let r = hound::WavReader::open(&rec).expect("a valid WAV after SIGINT");
    assert_eq!(
        r.duration() as u64,
        captured,
        "every captured frame is in the file"
    );
    for e in s["edges"].as_array().unwrap() {
        assert_invariant(e);
        assert_eq!(e["dropped_overflow_frames"], 0);
        assert_eq!(e["dropped_shutdown_frames"], 0);
    }
}

#[test]
fn a_second_sigint_abandons_the_queue_counts_it_and_still_finalises_the_file() {
    let dir = TempDir::new("run-sigint-twice");
    // 50 ms a block: draining a full 64-block queue would take over 3 s.
    let (mut child, rec, sum) = start_recording(&dir, 50_000);
    interrupt(&child);
    std::thread::sleep(Duration::from_millis(300));
    interrupt(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));

    let s = summary(&sum);
    assert_eq!(s["end"], "interrupted");
    let edges = s["edges"].as_array().unwrap();
    for e in edges {
        assert_invariant(e);
        assert_eq!(e["dropped_overflow_frames"], 0, "{e:#}");
    }
    let into_pace = edges
        .iter()
        .find(|e| {
            e["label"]
                .as_str()
                .is_some_and(|l| l.starts_with("endless"))
        })
        .expect("edge endless -> pace");
    assert!(
        into_pace["dropped_shutdown_frames"].as_u64().unwrap() > 0,
        "the fast stop drops what was queued, and counts it: {into_pace:#}"
    );
    let processed = summary_stage(&s, "pace")["frames_out"].as_u64().unwrap();
    let r = hound::WavReader::open(&rec).expect("a valid WAV after two signals");
    assert_eq!(
        r.duration() as u64,
        processed,
        "everything that left the processing stage is in the file"
    );
}

#[test]
fn stages_start_storage_first_stop_captures_first_and_cleanup_runs_in_order() {
    let dir = TempDir::new("run-order");
    let (out, sum) = run_toml(&dir, "version = 1\n[capture.t]\nplugin = \"tone\"\nframes = 4800\nchannels = 1\n[process.g]\nplugin = \"gain\"\ninputs = [\"t\"]\n[storage.n]\nplugin = \"null\"\ninputs = [\"g\"]\n");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let s = summary(&sum);
    // Every stage walked the full lifecycle, validated at each step.
    for id in ["t", "g", "n"] {
        let path: Vec<String> = summary_stage(&s, id)["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["to"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            path,
            [
                "loaded",
                "configured",
                "starting",
                "running",
                "stopping",
                "flushing",
                "stopped"
            ],
            "{id}"
        );
    }
    // Started in dependency order (storage, processing, capture) and stopped in reverse.
    let seq = |id: &str, to: &str| -> u64 {
        summary_stage(&s, id)["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["to"] == to)
            .unwrap()["seq"]
            .as_u64()
            .unwrap()
    };
    assert!(seq("n", "running") < seq("g", "running") && seq("g", "running") < seq("t", "running"));
    assert!(
        seq("t", "stopping") < seq("g", "stopping") && seq("g", "stopping") < seq("n", "stopping")
    );
    // The cleanup steps ran in their declared order, all successfully.
    let steps: Vec<&str> = s["cleanup"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "stop captures",
            "verify captures stopped",
            "drain edges",
            "finalise storage",
            "release plugins"
        ]
    );
    assert!(
        s["cleanup"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["outcome"]["outcome"] == "ok"),
        "{:#}",
        s["cleanup"]
    );
}

#[test]
fn a_failing_stage_stops_the_pipeline_with_exit_1_and_storage_still_finalised() {
    let dir = TempDir::new("run-fail");
    let (out, sum) = run_toml(
        &dir,
        r#"version = 1
[capture.src]
plugin = "tone"
channels = 1
frames = 480000
[process.broken]
plugin = "mock-process"
inputs = ["src"]
error_at_block = 20
error_kind = "io"
[storage.file]
plugin = "wav-writer"
inputs = ["broken"]
path = "rec.wav"
"#,
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let first = stderr(&out)
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default()
        .to_string();
    assert!(
        first.starts_with("error: stage `broken` failed:"),
        "{}",
        stderr(&out)
    );

    let s = summary(&sum);
    assert_eq!(s["end"], "failed");
    assert_eq!(s["failure"]["stage"], "broken");
    assert_eq!(s["failure"]["kind"], "io");
    let errors = s["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["severity"], "fatal");
    let finalise = s["cleanup"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "finalise storage")
        .unwrap();
    assert_eq!(finalise["outcome"]["outcome"], "ok", "{finalise}");
    // What the failed stage passed on before failing is in a valid file.
    let passed_on = summary_stage(&s, "broken")["frames_out"].as_u64().unwrap();
    assert_eq!(passed_on, 20 * 480);
    let r = hound::WavReader::open(dir.path().join("rec.wav")).expect("a valid WAV");
    assert_eq!(r.duration() as u64, passed_on);
    assert_eq!(
        summary_stage(&s, "broken")["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["to"] == "failed")
            .count(),
        1
    );
}

/// An output file that already exists does not stop anyone looking at the pipeline (`validate`
/// and `graph` pass): `run` refuses it at the `path` key with exit 2 and leaves the file as it
/// was; nothing is recorded.
#[test]
fn an_existing_output_is_refused_by_run_at_its_key_not_by_validate_or_graph() {
    let dir = TempDir::new("output-exists");
    let toml = "version = 1\n[capture.t]\nplugin = \"tone\"\nchannels = 2\nseconds = 0.1\n\
                [storage.w]\nplugin = \"wav-writer\"\ninputs = [\"t\"]\npath = \"take.wav\"\n";
    std::fs::write(dir.path().join("p.toml"), toml).unwrap();
    std::fs::write(dir.path().join("take.wav"), "the last take").unwrap();
    for command in ["validate", "graph"] {
        let out = run_in(dir.path(), [command, "p.toml"]);
        assert_eq!(code(&out), 0, "{command}: {}", stderr(&out));
    }
    let out = run_in(dir.path(), ["run", "p.toml", "--quiet"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(err.starts_with("p.toml:9:1: error: wav-writer:"), "{err}");
    assert!(
        err.contains("already exists: set `overwrite = true`"),
        "{err}"
    );
    assert!(
        err.contains("error: stage `w` refused its config; nothing was recorded"),
        "{err}"
    );
    let kept = std::fs::read_to_string(dir.path().join("take.wav")).unwrap();
    assert_eq!(kept, "the last take");
}
