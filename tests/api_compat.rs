//! Plugin API 1.x compatibility, both ways, through real libraries built against other copies
//! of the API (tests/fixtures, each a workspace of its own built into target/fixtures):
//!
//! - `plugin-1.0` is built against `api-1.0`, a frozen copy of the 1.0.0 source: a plugin of
//!   each kind. It must load, validate and run in the host of this and every later commit.
//! - `plugin-1.1` is built against `api-1.1-next` (the API as a 1.1 would be: a context field,
//!   a manifest field and a trait method more; plugin-api/src/next.rs): it runs in this 1.0
//!   host, which does without the additions.
//! - `host-1.1` is the smallest host built against `api-1.1-next`: it uses the additions of a
//!   1.1 plugin and does without them for a 1.0 one.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tapeline_tests::{
    build_fixture, code, library_file_name, plugin_dir, run, stderr, stdout, summary_stage, Output,
    TempDir,
};

/// Build the three fixtures once; returns the folder holding them.
fn fixtures() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        build_fixture("plugin-1.0");
        build_fixture("plugin-1.1");
        build_fixture("host-1.1")
    })
}

fn library(name: &str) -> PathBuf {
    let path = fixtures().join(library_file_name(name));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// The frozen 1.0 fixture's ramp (tests/fixtures/plugin-1.0/src/lib.rs).
fn ramp(n: u64, c: u32) -> f32 {
    let v = ((n % 256) as f32 - 100.0) / 256.0;
    if c == 0 {
        v
    } else {
        v * 0.5
    }
}

/// `tapeline ARGS...` with the workspace's plugins and the fixtures' libraries.
fn tapeline(args: &[&str]) -> Output {
    let mut all = vec![
        "--plugin-dir".to_string(),
        plugin_dir().display().to_string(),
        "--plugin-dir".to_string(),
        fixtures().display().to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    run(all)
}

fn write_pipeline(dir: &TempDir, body: &str) -> PathBuf {
    let path = dir.path().join("p.toml");
    let text =
        format!("version = 1\n\n[pipeline]\nname = \"compat\"\nsample_rate = 48000\n\n{body}");
    std::fs::write(&path, text).expect("write the pipeline");
    path
}

fn run_pipeline(path: &Path) -> serde_json::Value {
    let summary = path.with_file_name("summary.json");
    let out = tapeline(&[
        "run",
        path.to_str().unwrap(),
        "--summary-json",
        summary.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_slice(&std::fs::read(&summary).expect("the summary")).expect("JSON")
}

fn stage_stats(summary: &serde_json::Value, id: &str) -> serde_json::Value {
    summary_stage(summary, id)["stats"].clone()
}

/// Every sample of a float WAV, checked against `expected(frame, channel)` exactly.
fn assert_wav(path: &Path, frames: u64, expected: impl Fn(u64, u32) -> f32) {
    let mut reader = hound::WavReader::open(path).expect("a readable WAV");
    assert_eq!(reader.spec().channels, 2);
    assert_eq!(u64::from(reader.duration()), frames);
    let samples: Vec<f32> = reader
        .samples::<f32>()
        .map(|s| s.expect("a sample"))
        .collect();
    for (i, s) in samples.iter().enumerate() {
        let (n, c) = ((i / 2) as u64, (i % 2) as u32);
        assert_eq!(
            s.to_bits(),
            expected(n, c).to_bits(),
            "frame {n} channel {c}: {s}"
        );
    }
}

const RAMP: &str = r#"
[capture.ramp]
plugin = "v10-ramp"
frames = 48000
"#;

#[test]
fn a_plugin_built_against_api_1_0_loads_in_this_host() {
    let lib = library("tapeline_fixture_v10");
    let out = run(["doctor".as_ref(), lib.as_os_str()]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("1.0.0 (host speaks"), "{text}");
    assert!(
        text.contains("v10-ramp (capture), v10-gain (process), v10-count (storage)"),
        "{text}"
    );
}

#[test]
fn a_plugin_built_against_api_1_0_runs_every_kind_sample_exact_with_its_stats() {
    run_v10_pipeline("compat-v10", "");
}

#[test]
fn a_plugin_built_against_api_1_0_runs_isolated_with_its_stats_read_across() {
    run_v10_pipeline("compat-v10-isolated", "isolate = true\n");
}

/// ramp → v10-gain → wav-writer, ramp → v10-count, with `pipeline_extra` in `[pipeline]`.
fn run_v10_pipeline(name: &str, pipeline_extra: &str) {
    let dir = TempDir::new(name);
    let path = write_pipeline(
        &dir,
        &format!(
            r#"{pipeline_extra}{RAMP}
[process.g10]
plugin = "v10-gain"
inputs = ["ramp"]
factor = 0.5

[storage.wav]
plugin = "wav-writer"
inputs = ["g10"]
path = "out.wav"
format = "float32"

[storage.count]
plugin = "v10-count"
inputs = ["ramp"]
path = "count.txt"
"#
        ),
    );
    let summary = run_pipeline(&path);
    assert_wav(&dir.path().join("out.wav"), 48_000, |n, c| ramp(n, c) * 0.5);
    let sum: f64 = (0..48_000u64)
        .flat_map(|n| [ramp(n, 0), ramp(n, 1)])
        .map(f64::from)
        .sum();
    let count = std::fs::read_to_string(dir.path().join("count.txt")).expect("the count");
    let expected = format!("frames=48000 blocks=100 sum={sum}\n");
    // The sum is added block by block in the plugin: equal to within rounding.
    let got_sum: f64 = count
        .trim()
        .rsplit_once("sum=")
        .and_then(|(_, s)| s.parse().ok())
        .unwrap_or(f64::NAN);
    assert!(
        count.starts_with("frames=48000 blocks=100 "),
        "{count} vs {expected}"
    );
    assert!(
        (got_sum - sum).abs() < 1e-6 * sum.abs().max(1.0),
        "{count} vs {expected}"
    );
    assert_eq!(
        stage_stats(&summary, "count"),
        serde_json::json!({"frames": 48000, "blocks": 100})
    );
    let isolated = !pipeline_extra.is_empty();
    for stage in summary["stages"].as_array().expect("stages") {
        assert_eq!(stage["isolated"], isolated, "{stage}");
    }
}

#[test]
fn a_config_error_of_a_plugin_built_against_api_1_0_is_shown_at_its_key() {
    let dir = TempDir::new("compat-v10-config");
    let path = write_pipeline(
        &dir,
        &format!(
            r#"{RAMP}
[storage.count]
plugin = "v10-count"
inputs = ["ramp"]
path = ""
"#
        ),
    );
    let out = tapeline(&["validate", path.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    // `path = ""` is line 15 of the file written above.
    assert!(err.contains("p.toml:15:"), "not at the key's line:\n{err}");
    assert!(err.contains("`path` is empty"), "{err}");
}

#[test]
fn an_unknown_key_is_refused_at_its_key_though_the_config_type_does_not_deny_them() {
    let dir = TempDir::new("compat-v10-unknown");
    let path = write_pipeline(
        &dir,
        &format!(
            r#"{RAMP}
[process.g10]
plugin = "v10-gain"
inputs = ["ramp"]
factor = 0.5
factr = 0.25
"#
        ),
    );
    let out = tapeline(&["validate", path.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    // `factr = 0.25` is line 16 of the file written above.
    assert!(err.contains("p.toml:16:"), "not at the key's line:\n{err}");
    assert!(err.contains("unknown key `factr`"), "{err}");
    assert!(err.contains("did you mean `factor`?"), "{err}");
}

#[test]
fn a_plugin_built_against_api_1_1_runs_in_this_host_without_the_additions() {
    let lib = library("tapeline_fixture_v11");
    let out = run(["doctor".as_ref(), lib.as_os_str()]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("1.1.0 (host speaks 1."),
        "{}",
        stdout(&out)
    );
    let dir = TempDir::new("compat-v11");
    let path = write_pipeline(
        &dir,
        &format!(
            r#"{RAMP}
[process.g11]
plugin = "v11-gain"
inputs = ["ramp"]
factor = 2.0

[storage.wav]
plugin = "wav-writer"
inputs = ["g11"]
path = "out.wav"
format = "float32"
"#
        ),
    );
    let summary = run_pipeline(&path);
    assert_wav(&dir.path().join("out.wav"), 48_000, |n, c| ramp(n, c) * 2.0);
    // This host's context has no `host_tag`: the 1.1 plugin saw none, and did without.
    assert_eq!(
        stage_stats(&summary, "g11"),
        serde_json::json!({"saw_host_tag": 0})
    );
}

fn host_1_1(lib: &Path, plugin: &str) -> String {
    let out = std::process::Command::new(fixtures().join("tapeline-fixture-host11"))
        .arg(lib)
        .arg(plugin)
        .output()
        .expect("the 1.1 host runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_host_built_against_api_1_1_uses_the_additions_a_plugin_has() {
    let text = host_1_1(&library("tapeline_fixture_v11"), "v11-gain");
    for line in [
        "library built for 1.1.0, host speaks 1.1.0",
        "tags: gain,next",
        "process: 480 frames, every sample 0.5: true",
        "latency: 32",
        "stat saw_host_tag=1",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
}

#[test]
fn a_host_built_against_api_1_1_loads_a_1_0_plugin_and_does_without_the_additions() {
    let text = host_1_1(&library("tapeline_fixture_v10"), "v10-gain");
    for line in [
        "library built for 1.0.0, host speaks 1.1.0",
        "tags: none (no tapeline.next.manifest)",
        "process: 480 frames, every sample 0.5: true",
        "latency: none (no tapeline.next.latency)",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
}
