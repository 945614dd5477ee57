//! A stage's own counters (`Describe::STATS`, the `tapeline.stats` extension) as a user sees
//! them: real plugins in real runs of `tapeline run`, in the summary (`--summary-json`) and in
//! the monitoring snapshots while the run goes on (`--metrics`), checked against the files the
//! run wrote.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use tapeline_tests::{code, run_toml, run_toml_with, stderr, stdout, summary_stage, TempDir};

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A stage's `stats`, which every stage has (empty when its plugin reports nothing).
fn stats(stage: &Value) -> BTreeMap<String, u64> {
    let map = stage["stats"]
        .as_object()
        .unwrap_or_else(|| panic!("no stats object in {stage}"));
    map.iter()
        .map(|(k, v)| {
            let n = v.as_u64().unwrap_or_else(|| panic!("{k} = {v} in {stage}"));
            (k.clone(), n)
        })
        .collect()
}

/// The size of the WAV file's `data` chunk, as its header says (hound reads it: frames ×
/// bytes per frame).
fn data_chunk_size(path: &Path) -> u64 {
    let r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    u64::from(r.duration()) * u64::from(spec.channels) * u64::from(spec.bits_per_sample / 8)
}

#[test]
fn a_file_job_summary_has_the_writers_bytes_and_syncs_and_nothing_for_the_others() {
    let dir = TempDir::new("stats-summary");
    // 3 s of stereo tone, 16-bit: 3 * 48000 * 2 * 2 bytes of audio.
    let (out, sum) = run_toml(
        &dir,
        r#"version = 1
[capture.tone]
plugin = "tone"
channels = 2
seconds = 3.0
[process.gain]
plugin = "gain"
inputs = ["tone"]
db = -3.0
[storage.file]
plugin = "wav-writer"
inputs = ["gain"]
path = "out.wav"
format = "pcm16"
"#,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let s = json(&sum);
    let writer = stats(summary_stage(&s, "file"));
    let names: Vec<&str> = writer.keys().map(String::as_str).collect();
    assert_eq!(names, ["bytes_written", "syncs"], "{writer:?}");
    let data = data_chunk_size(&dir.path().join("out.wav"));
    assert_eq!(data, 576_000, "the tone's 3 s are in the file");
    assert_eq!(writer["bytes_written"], data, "{writer:?}");
    assert_eq!(
        s["storage"][0]["frames_written"].as_u64(),
        Some(data / 4),
        "{}",
        s["storage"]
    );
    assert!(writer["syncs"] >= 1, "{writer:?}");
    // Plugins that report no counters: an empty map, not a missing one.
    for id in ["tone", "gain"] {
        assert_eq!(stats(summary_stage(&s, id)), BTreeMap::new(), "{id}");
    }
    // The text summary: the writer's counters on the line under its own, and nothing under
    // the others'.
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with("file ") && l.contains("wav-writer"))
        .unwrap_or_else(|| panic!("no line for the writer:\n{text}"));
    let expected = format!("bytes_written 576000, syncs {}", writer["syncs"]);
    assert_eq!(lines[at + 1].trim(), expected, "{text}");
    let gain = lines
        .iter()
        .position(|l| l.trim_start().starts_with("gain ") && l.contains("process"))
        .unwrap_or_else(|| panic!("no line for the gain stage:\n{text}"));
    assert!(lines[gain + 1].trim_start().starts_with("file "), "{text}");
}

#[test]
fn a_wav_reader_reports_every_data_byte_it_read() {
    let dir = TempDir::new("stats-reader");
    let input = dir.path().join("in.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 48_000,
        bits_per_sample: 24,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&input, spec).unwrap();
    // 1.25 s: the last block is a short one.
    for i in 0..60_000 * 2 {
        w.write_sample(i % 1000 - 500).unwrap();
    }
    w.finalize().unwrap();
    let (out, sum) = run_toml(
        &dir,
        r#"version = 1
[capture.src]
plugin = "wav-reader"
path = "in.wav"
[storage.sink]
plugin = "null"
inputs = ["src"]
"#,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let s = json(&sum);
    let data = data_chunk_size(&input);
    assert_eq!(data, 60_000 * 2 * 3);
    let reader = stats(summary_stage(&s, "src"));
    assert_eq!(reader, BTreeMap::from([("bytes_read".to_string(), data)]));
    assert_eq!(stats(summary_stage(&s, "sink")), BTreeMap::new());
}

#[test]
fn the_writers_bytes_grow_in_the_snapshots_while_the_run_goes_on() {
    let dir = TempDir::new("stats-metrics");
    // 2 s of audio, 200 blocks paced at 7 ms each (about 1.4 s), a snapshot every 50 ms, a
    // sync every 200 ms.
    let metrics = dir.path().join("m.jsonl");
    let (out, sum) = run_toml_with(
        &dir,
        r#"version = 1
[pipeline]
monitor_interval_ms = 50
[capture.tone]
plugin = "tone"
channels = 2
frames = 96000
[process.pace]
plugin = "mock-process"
inputs = ["tone"]
slow_us = 7000
[storage.file]
plugin = "wav-writer"
inputs = ["pace"]
path = "out.wav"
format = "pcm16"
sync_interval_ms = 200
"#,
        &["--metrics", metrics.to_str().unwrap()],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let total = 96_000 * 4;
    assert_eq!(data_chunk_size(&dir.path().join("out.wav")), total);

    let snaps = json_lines(&metrics);
    let writer: Vec<(String, u64, BTreeMap<String, u64>)> = snaps
        .iter()
        .map(|s| {
            let file = summary_stage(s, "file");
            let frames_in = file["frames_in"].as_u64().unwrap();
            (
                s["pipeline"].as_str().unwrap().to_string(),
                frames_in,
                stats(file),
            )
        })
        .collect();
    // A snapshot taken before the writer's instance was built and read once has no stats yet;
    // from its first block on, every one has.
    let bytes: Vec<u64> = writer
        .iter()
        .filter(|(_, frames_in, st)| *frames_in > 0 || !st.is_empty())
        .map(|(_, _, st)| {
            *st.get("bytes_written")
                .unwrap_or_else(|| panic!("no bytes_written in {st:?}"))
        })
        .collect();
    assert!(bytes.windows(2).all(|w| w[0] <= w[1]), "{bytes:?}");
    // While the writer still had audio to come, the snapshots showed its bytes growing.
    let live: Vec<u64> = writer
        .iter()
        .zip(&bytes)
        .filter(|((pipeline, frames_in, _), _)| pipeline == "running" && *frames_in < 96_000)
        .map(|(_, b)| *b)
        .collect();
    let mut distinct = live.clone();
    distinct.retain(|b| *b > 0 && *b < total);
    distinct.dedup();
    assert!(
        distinct.len() >= 3,
        "bytes_written while running: {live:?} (all: {bytes:?})"
    );
    // Whole stereo 16-bit frames, never more than the writer had been given.
    for (_, frames_in, st) in &writer {
        let b = st["bytes_written"];
        assert_eq!(b % 4, 0, "{st:?}");
        assert!(
            b <= frames_in * 4 + 16 * 480 * 4,
            "{b} for {frames_in} frames in"
        );
    }
    // Interval syncs show while the run goes on (creating the file made 2).
    assert!(
        writer
            .iter()
            .any(|(pipeline, _, st)| pipeline == "running" && st["syncs"] > 2),
        "{writer:?}"
    );
    // The last snapshot and the summary have the final count: the file's data chunk.
    assert_eq!(*bytes.last().unwrap(), total, "{bytes:?}");
    let s = json(&sum);
    assert_eq!(stats(summary_stage(&s, "file"))["bytes_written"], total);
}
