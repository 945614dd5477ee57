//! The meter's peak in the run summary and the metrics is the true maximum over the run
//! (#14), not whatever the last block before a snapshot held; RMS never reads above peak.

use std::process::Command;

use serde_json::Value;
use tapeline_tests::{code, run_toml_with, stderr, TempDir};

#[test]
fn summary_max_peak_db_is_the_loudest_peak_of_the_run_not_the_last_block() {
    let dir = TempDir::new("meter-peak");
    // 0.1 s at -1 dBFS, then 5 s at -40 dBFS: the loud part is long gone by any snapshot.
    let status = Command::new("sox")
        .current_dir(dir.path())
        .args(["-n", "-r", "48000", "-c", "1", "f.wav"])
        .args(["synth", "0.1", "sine", "1000", "gain", "-1", ":"])
        .args(["synth", "5", "sine", "1000", "gain", "-40"])
        .status()
        .expect("sox runs (scripts/test.sh installs it)");
    assert!(status.success());
    let metrics = dir.path().join("metrics.jsonl");
    let toml = r#"version = 1
[capture.file]
plugin = "wav-reader"
path = "f.wav"

[process.meter]
plugin = "meter"
inputs = ["file"]

[storage.sink]
plugin = "null"
inputs = ["meter"]
"#;
    let (out, summary) = run_toml_with(
        &dir,
        toml,
        &["--metrics", metrics.to_str().expect("UTF-8"), "-q"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary: Value =
        serde_json::from_slice(&std::fs::read(&summary).expect("the summary")).expect("JSON");
    let i = summary["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .position(|s| s["id"] == "meter")
        .expect("the meter stage");
    let peak = summary["monitoring"]["max_peak_db"][i]
        .as_f64()
        .unwrap_or_else(|| panic!("no max_peak_db: {:#}", summary["monitoring"]));
    assert!((peak + 1.0).abs() < 0.1, "max_peak_db {peak}, want -1.0");

    // Every snapshot: RMS never above peak, the held peak at least the snapshot's; the last
    // one holds the loud start.
    let text = std::fs::read_to_string(&metrics).expect("the metrics");
    let mut last_hold = None;
    for line in text.lines() {
        let snap: Value = serde_json::from_str(line).expect("a JSON snapshot");
        let stage = snap["stages"]
            .as_array()
            .expect("stages")
            .iter()
            .find(|s| s["id"] == "meter")
            .expect("the meter");
        for l in stage["levels"].as_array().expect("levels") {
            let (p, r, h) = (
                l["peak_db"].as_f64().expect("peak_db"),
                l["rms_db"].as_f64().expect("rms_db"),
                l["peak_hold_db"].as_f64().expect("peak_hold_db"),
            );
            assert!(r <= p && p <= h, "rms {r}, peak {p}, hold {h}: {line}");
            last_hold = Some(h);
        }
    }
    let hold = last_hold.expect("a snapshot with levels");
    assert!((hold + 1.0).abs() < 0.1, "peak_hold_db {hold}, want -1.0");
}
