//! Monitoring and recovery logs of `tapeline run`, observed from outside as a user would:
//! `--metrics` snapshots, `--log-json` events, the live view on a real terminal (tmux) and its
//! absence elsewhere, `--quiet`, the state dump written on a failure, and the silence that keeps
//! a recording's timeline true across a device gap.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tapeline_tests::{code, run, state_dump_path, stderr, stdout, tapeline_bin, TempDir};

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write pipeline");
    path
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// About 1.2 s of a -6 dBFS tone through a meter, paced by a slow stage (5 ms per 10 ms block
/// would be too quick to see; 25 ms per block of 480 frames makes 100 blocks last ~2.5 s).
const METERED: &str = r#"version = 1
[pipeline]
monitor_interval_ms = 100
[capture.tone]
plugin = "tone"
channels = 2
amplitude_db = -6.0
frames = 48000
[process.pace]
plugin = "mock-process"
inputs = ["tone"]
slow_us = 12000
[process.meter]
plugin = "meter"
inputs = ["pace"]
[storage.file]
plugin = "wav-writer"
inputs = ["meter"]
path = "out.wav"
overwrite = true
"#;

#[test]
fn metrics_are_one_json_snapshot_per_interval_with_levels_latency_and_consistent_edges() {
    let dir = TempDir::new("mon-metrics");
    let pipeline = write(&dir, "p.toml", METERED);
    let metrics = dir.path().join("m.jsonl");
    let out = run([
        "run",
        pipeline.to_str().unwrap(),
        "--metrics",
        metrics.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let snaps = lines(&metrics);
    // 100 blocks at 12 ms: 1.2 s, so about 12 snapshots plus the final one.
    assert!(snaps.len() >= 8, "{} snapshots", snaps.len());
    let times: Vec<u64> = snaps.iter().map(|s| s["t_ms"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    for s in &snaps {
        for e in s["edges"].as_array().unwrap() {
            // Per channel: every block carries all channels, so each has the edge's counters.
            let channels = e["per_channel"].as_array().unwrap();
            assert_eq!(
                channels.len(),
                e["channels"].as_u64().unwrap() as usize,
                "{e}"
            );
            for c in channels {
                assert_eq!(c["pushed_frames"], e["pushed_frames"], "{e}");
                assert_eq!(
                    c["dropped_overflow_frames"], e["dropped_overflow_frames"],
                    "{e}"
                );
            }
            let n = |k: &str| e[k].as_u64().unwrap();
            assert_eq!(
                n("pushed_frames"),
                n("popped_frames")
                    + n("dropped_overflow_frames")
                    + n("dropped_stage_error_frames")
                    + n("dropped_shutdown_frames")
                    + n("queued_frames"),
                "{e}"
            );
        }
    }
    let stage = |s: &Value, id: &str| -> Value {
        s["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .cloned()
            .unwrap()
    };
    // While running, the meter reports both channels at the tone's level.
    // The tone ends early (it is not paced); the drain after it is monitored too.
    assert_eq!(snaps[0]["pipeline"], "running", "{}", snaps[0]);
    assert!(snaps.iter().any(|s| s["pipeline"] == "stopping"));
    let mid = &snaps[snaps.len() / 2];
    let levels = stage(mid, "meter")["levels"].as_array().unwrap().clone();
    assert_eq!(levels.len(), 2, "{mid}");
    for l in &levels {
        let peak = l["peak_db"].as_f64().unwrap();
        assert!(
            (peak + 6.0).abs() < 0.1,
            "peak {peak} dBFS for a -6 dBFS tone"
        );
    }
    // The slow stage uses about 12 ms of each 10 ms block: more than its real-time budget.
    let share = stage(mid, "pace")["budget_share"].as_f64().unwrap();
    assert!(share > 1.0 && share < 2.0, "pace budget share {share}");
    // Storage sees latency from capture; the last snapshot has the final state.
    let last = snaps.last().unwrap();
    assert_eq!(last["pipeline"], "stopped");
    assert!(stage(last, "file")["latency_ms_max"].as_f64().unwrap() > 0.0);
    assert_eq!(stage(last, "tone")["length_frames"], 48000);
    assert_eq!(stage(last, "file")["frames_in"], 48000);
}

#[test]
fn log_json_events_about_a_stage_carry_its_id_plugin_and_kind() {
    let dir = TempDir::new("mon-log");
    let pipeline = write(
        &dir,
        "p.toml",
        "version = 1\n[capture.src]\nplugin = \"mock-capture\"\nchannels = 1\nframes = 9600\n\
         [process.flaky]\nplugin = \"mock-process\"\ninputs = [\"src\"]\nerror_at_block = 3\n\
         on_error = { policy = \"restart\", backoff_ms = 1 }\n\
         [storage.sink]\nplugin = \"null\"\ninputs = [\"flaky\"]\n",
    );
    let log = dir.path().join("log.jsonl");
    let out = run([
        "run",
        pipeline.to_str().unwrap(),
        "--log-json",
        log.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let events = lines(&log);
    let messages: Vec<&str> = events
        .iter()
        .filter_map(|e| e["fields"]["message"].as_str())
        .collect();
    assert!(messages.contains(&"run started"), "{messages:?}");
    assert!(messages.contains(&"run ended"), "{messages:?}");
    let about_stages: Vec<&Value> = events
        .iter()
        .filter(|e| e["fields"].get("stage_id").is_some())
        .collect();
    assert!(!about_stages.is_empty());
    for e in &about_stages {
        let f = &e["fields"];
        for key in ["stage_id", "plugin", "kind"] {
            assert!(f[key].is_string(), "{key} missing in {e}");
        }
    }
    // The recovery path is in the log: the error, then the stage's way back to running.
    let flaky: Vec<&Value> = about_stages
        .iter()
        .copied()
        .filter(|e| e["fields"]["stage_id"] == "flaky")
        .collect();
    assert!(flaky
        .iter()
        .all(|e| e["fields"]["plugin"] == "mock-process" && e["fields"]["kind"] == "process"));
    let error = flaky
        .iter()
        .find(|e| e["level"] == "WARN")
        .expect("the injected error is logged");
    assert_eq!(error["fields"]["severity"], "recoverable");
    let path: Vec<(String, String)> = flaky
        .iter()
        .filter(|e| e["fields"]["message"] == "state")
        .map(|e| {
            (
                e["fields"]["from"].as_str().unwrap().to_string(),
                e["fields"]["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let i = path
        .iter()
        .position(|(_, to)| to == "failed")
        .expect("failed");
    assert_eq!(path[i + 1].1, "recovering", "{path:?}");
    assert_eq!(path[i + 2].1, "running", "{path:?}");
}

#[test]
fn without_a_terminal_there_is_no_live_view_and_quiet_prints_only_the_files() {
    let dir = TempDir::new("mon-quiet");
    let pipeline = write(&dir, "p.toml", METERED);
    let out = run(["run", pipeline.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        !text.contains('\x1b'),
        "no terminal escapes in piped output"
    );
    assert!(text.contains("stages:") && text.contains("monitoring ("));

    let out = run(["run", pipeline.to_str().unwrap(), "--quiet"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let expected = format!(
        "wrote {} (48000 frames, 1.00 s)\n",
        std::fs::canonicalize(dir.path().join("out.wav"))
            .unwrap()
            .display()
    );
    assert_eq!(text, expected);
}

fn tmux(args: &[&str]) -> std::process::Output {
    Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux runs (scripts/test.sh installs it)")
}

#[test]
fn on_a_terminal_the_live_view_shows_stages_queues_levels_stats_and_progress() {
    let dir = TempDir::new("mon-live");
    let pipeline = write(&dir, "p.toml", METERED);
    // Socket paths are limited to about 100 bytes: keep it short.
    let socket = format!("/tmp/tapeline-live-{}.sock", std::process::id());
    let socket = socket.as_str();
    let done = dir.path().join("done");
    let command = format!(
        "{} run {} > /dev/tty; touch {}; sleep 30",
        tapeline_bin().display(),
        pipeline.display(),
        done.display()
    );
    let started = tmux(&[
        "-S",
        socket,
        "new-session",
        "-d",
        "-x",
        "160",
        "-y",
        "50",
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");
    // Capture the screen while the pipeline runs (it lasts about 1.2 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut screen = String::new();
    while Instant::now() < deadline && !done.exists() {
        std::thread::sleep(Duration::from_millis(150));
        let shot = tmux(&["-S", socket, "capture-pane", "-p"]);
        let text = String::from_utf8_lossy(&shot.stdout).into_owned();
        if text.contains("ETA") {
            screen = text;
            break;
        }
    }
    let killed = tmux(&["-S", socket, "kill-server"]);
    if !killed.status.success() {
        // The screen is what is tested; a server left behind ends with its `sleep 30`.
        eprintln!(
            "note: tmux kill-server failed: {}",
            String::from_utf8_lossy(&killed.stderr).trim()
        );
    }
    for part in [
        "p: running",
        "tone",
        "pace",
        "meter",
        "file",
        "% of audio time",
        "ch0",
        "dBFS",
        "tone.out -> pace",
        "blocks",
        "frames  ETA",
        // The writer's own counters (`tapeline.stats`), under its stage.
        "bytes_written ",
        "syncs ",
    ] {
        assert!(screen.contains(part), "`{part}` not on screen:\n{screen}");
    }
}

#[test]
fn a_failure_writes_a_state_dump_next_to_the_outputs_and_prints_its_path() {
    let dir = TempDir::new("mon-dump");
    let pipeline = write(
        &dir,
        "p.toml",
        "version = 1\n[capture.src]\nplugin = \"mock-capture\"\nchannels = 1\nframes = 48000\n\
         [process.bad]\nplugin = \"mock-process\"\ninputs = [\"src\"]\nerror_at_block = 5\n\
         error_kind = \"io\"\n\
         [storage.file]\nplugin = \"wav-writer\"\ninputs = [\"bad\"]\npath = \"rec.wav\"\n",
    );
    let out = run(["run", pipeline.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    // The error comes first, the state dump is its help line.
    assert!(
        err.starts_with("error: stage `bad` failed:"),
        "the error is the first line:\n{err}"
    );
    let path = state_dump_path(&err).unwrap_or_else(|| panic!("no state dump line in:\n{err}"));
    assert_eq!(
        path.parent().map(|p| std::fs::canonicalize(p).unwrap()),
        Some(std::fs::canonicalize(dir.path()).unwrap()),
        "next to rec.wav"
    );
    let dump: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(dump["failure"]["stage"], "bad");
    assert_eq!(dump["failure"]["kind"], "io");
    let stages = dump["pipeline"]["stages"].as_array().unwrap();
    let bad = stages.iter().find(|s| s["id"] == "bad").unwrap();
    assert_eq!(bad["plugin"], "mock-process");
    assert_eq!(bad["config"]["error_at_block"], 5);
    assert_eq!(bad["inputs"][0], "src.out -> bad");
    assert!(dump["last_errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("injected"));
    let history = dump["summary"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "bad")
        .unwrap()["history"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(history.last().unwrap()["to"], "failed");
    // What was recorded before the failure is kept, in a valid file.
    let r = hound::WavReader::open(dir.path().join("rec.wav")).unwrap();
    assert_eq!(
        u64::from(r.duration()),
        dump["summary"]["storage"][0]["frames_written"]
            .as_u64()
            .unwrap()
    );
}

#[test]
fn a_device_gap_is_filled_with_silence_so_the_timeline_stays_true() {
    let dir = TempDir::new("mon-gap");
    // The device goes away at block 10 and is back 200 ms later; restart brings the stage back.
    let pipeline = write(
        &dir,
        "p.toml",
        "version = 1\n[capture.dev]\nplugin = \"mock-capture\"\nchannels = 1\nframes = 48000\n\
         device_lost_at_block = 10\nback_after_ms = 200\n\
         on_error = { policy = \"restart\", max_restarts = 20, backoff_ms = 20 }\n\
         [storage.file]\nplugin = \"wav-writer\"\ninputs = [\"dev\"]\npath = \"rec.wav\"\n\
         format = \"float32\"\n",
    );
    let sum = dir.path().join("s.json");
    let out = run([
        "run",
        pipeline.to_str().unwrap(),
        "--summary-json",
        sum.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&sum).unwrap()).unwrap();
    let dev = s["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "dev")
        .unwrap()
        .clone();
    assert_eq!(dev["gaps"], 1, "{dev}");
    // The mock skips exactly back_after_ms of frames: 200 ms at 48 kHz.
    assert_eq!(dev["gap_frames"], 9600, "{dev}");
    assert!(dev["restarts"].as_u64().unwrap() >= 1);

    // The file: blocks 0..10 of the signal, 9600 frames of silence, then the signal again from
    // the frame the device came back at. 48000 frames from the source plus the silence.
    let mut r = hound::WavReader::open(dir.path().join("rec.wav")).unwrap();
    let samples: Vec<f32> = r.samples::<f32>().map(Result::unwrap).collect();
    // mock-capture's sample for frame f of channel 0 is f * 64 / 2^24 (see plugins/mock).
    let mock = |frame: usize| (frame * 64) as f32 / (1u32 << 24) as f32;
    let lost_at = 10 * 480;
    assert_eq!(samples.len(), 48_000, "the timeline keeps its length");
    for (i, &x) in samples.iter().enumerate() {
        let expected = if (lost_at..lost_at + 9600).contains(&i) {
            0.0
        } else {
            mock(i)
        };
        assert_eq!(x, expected, "frame {i}");
    }
}
