//! mock-storage checks channel identity (#14): every channel of the mock signal carries its
//! channel number, so channels that arrive out of order are reported as `swapped_channels`
//! (and fail the stage under `fail_on_gap`).

use serde_json::Value;
use tapeline_tests::{code, run_toml, stderr, TempDir};

const FRAMES: u64 = 4800;

/// A 4-channel mock signal split into mono channels and merged back with `inputs`, into a
/// mock-storage whose report goes to a folder that does not exist yet.
fn split_merge(inputs: &str, sink: &str) -> String {
    format!(
        r#"version = 1
[capture.src]
plugin = "mock-capture"
channels = 4
frames = {FRAMES}

[process.split]
plugin = "channel-split"
inputs = ["src"]

[process.merge]
plugin = "channel-merge"
inputs = {inputs}

[storage.sink]
plugin = "mock-storage"
inputs = ["merge"]
report = "reports/of/today/report.json"
{sink}
"#
    )
}

/// Run it; returns the exit code, stderr and the report.
fn run_split_merge(name: &str, inputs: &str, sink: &str) -> (i32, String, Value) {
    let dir = TempDir::new(name);
    let (out, _) = run_toml(&dir, &split_merge(inputs, sink));
    let report = dir.path().join("reports/of/today/report.json");
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no report at {} ({e}): {}", report.display(), stderr(&out)));
    let report = serde_json::from_str(&text).expect("the report is JSON");
    (code(&out), stderr(&out), report)
}

#[test]
fn channels_merged_out_of_order_are_reported_as_swapped_channels() {
    let (code, err, r) = run_split_merge(
        "swapped",
        r#"["split.0", "split.1", "split.3", "split.2"]"#,
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(r["swapped_channels"].as_u64().unwrap() > 0, "{r:#}");
    // Every frame arrived swapped, and whole: nothing else is wrong with it.
    assert_eq!(r["swapped_channels"], FRAMES, "{r:#}");
    assert_eq!(r["frames_written"], FRAMES, "{r:#}");
    for key in ["gaps", "missing_frames", "reordered", "corrupt_frames"] {
        assert_eq!(r[key], 0, "{key}: {r:#}");
    }
}

#[test]
fn channels_merged_in_order_have_no_swapped_channels() {
    let (code, err, r) = run_split_merge(
        "in-order",
        r#"["split.0", "split.1", "split.2", "split.3"]"#,
        "fail_on_gap = true",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["swapped_channels"], 0, "{r:#}");
    assert_eq!(r["frames_written"], FRAMES, "{r:#}");
    assert_eq!(r["next_expected_frame"], FRAMES, "{r:#}");
}

#[test]
fn swapped_channels_fail_the_storage_under_fail_on_gap() {
    let (code, err, r) = run_split_merge(
        "swapped-fail",
        r#"["split.0", "split.1", "split.3", "split.2"]"#,
        "fail_on_gap = true",
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("swapped channels"), "{err}");
    assert!(r["swapped_channels"].as_u64().unwrap() > 0, "{r:#}");
}
