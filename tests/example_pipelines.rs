//! Every example pipeline in pipelines/ runs to the end, exit 0, with every edge's counters
//! balanced: `record-test-device.toml` on the test ALSA device (tests/alsa), and
//! `record-default.toml`, which needs a sound card, is validated only.

use serde_json::Value;
use std::process::Command;

use tapeline_tests::{code, run, stderr, tapeline_bin, workspace_root, TempDir};

/// The examples write to `recordings/` in the checkout: one test at a time uses them.
fn examples_lock() -> std::sync::MutexGuard<'static, ()> {
    static EXAMPLES: std::sync::Mutex<()> = std::sync::Mutex::new(());
    EXAMPLES.lock().unwrap_or_else(|e| e.into_inner())
}

fn run_example(name: &str) -> Value {
    let dir = TempDir::new(&format!("example-{name}"));
    let sum = dir.path().join("summary.json");
    let file = workspace_root().join("pipelines").join(name);
    let mut cmd = Command::new(tapeline_bin());
    cmd.args([
        "run",
        file.to_str().unwrap(),
        "--summary-json",
        sum.to_str().unwrap(),
    ]);
    if name == "record-test-device.toml" {
        // The test device: ALSA's `file` PCM over `null` (no infile: it records silence).
        cmd.env(
            "ALSA_CONFIG_PATH",
            workspace_root().join("tests/alsa/tapeline-test.conf"),
        );
    }
    let out = cmd.output().expect("tapeline runs");
    assert_eq!(code(&out), 0, "{name}: {}", stderr(&out));
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&sum).unwrap()).unwrap();
    assert_eq!(s["end"], "sources-ended", "{name}");
    for e in s["edges"].as_array().unwrap() {
        let n = |k: &str| e[k].as_u64().unwrap();
        let dropped = n("dropped_overflow") + n("dropped_stage_error") + n("dropped_shutdown");
        assert_eq!(
            n("pushed"),
            n("popped") + dropped + n("depth"),
            "{name}: {e:#}"
        );
    }
    s
}

#[test]
fn every_example_pipeline_runs_to_the_end() {
    let _examples = examples_lock();
    let mut names: Vec<String> = std::fs::read_dir(workspace_root().join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    // One at a time: the examples write into the same recordings/ folder.
    for name in names {
        if name == "record-default.toml" {
            // The default input device: there is none on a machine without a sound card.
            let file = workspace_root().join("pipelines").join(&name);
            let out = run(["validate", file.to_str().unwrap()]);
            assert_eq!(code(&out), 0, "{name}: {}", stderr(&out));
            continue;
        }
        let s = run_example(&name);
        match name.as_str() {
            "demo.toml" => the_demo_wrote_five_seconds_of_stereo_at_minus_12_dbfs(&s),
            "mock-restart.toml" => {
                the_mock_restart_example_recovered_and_accounted_for_the_lost_block(&s)
            }
            _ => {}
        }
    }
}

fn the_demo_wrote_five_seconds_of_stereo_at_minus_12_dbfs(s: &Value) {
    let file = s["storage"][0]["files"][0].as_str().unwrap().to_string();
    let mut r = hound::WavReader::open(&file).unwrap();
    let spec = r.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 48_000, 24)
    );
    assert_eq!(r.duration(), 240_000);
    let peak = r
        .samples::<i32>()
        .map(|x| x.unwrap().unsigned_abs())
        .max()
        .unwrap();
    let peak_db = 20.0 * (peak as f64 / 8_388_608.0).log10();
    assert!(
        (peak_db - -12.0).abs() < 0.05,
        "tone -6 dBFS and gain -6 dB: {peak_db} dBFS"
    );
}

fn the_mock_restart_example_recovered_and_accounted_for_the_lost_block(s: &Value) {
    let flaky = s["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "flaky")
        .unwrap();
    assert_eq!(flaky["restarts"], 1);
    // The panic reached the coordinator as one recoverable error with its text.
    let errors = s["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0]["stage"], "flaky");
    assert_eq!(errors[0]["severity"], "recoverable");
    assert_eq!(errors[0]["kind"], "panicked");
    assert!(
        errors[0]["message"].as_str().unwrap().contains("panicked"),
        "{errors:#?}"
    );
    let into_check = s["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["label"] == "flaky.out -> check")
        .unwrap();
    let written = s["storage"][0]["frames_written"].as_u64().unwrap();
    let lost = into_check["dropped_stage_error_frames"].as_u64().unwrap();
    assert_eq!(lost, 480, "the block that panicked");
    assert_eq!(written + lost, 48_000);
}

/// `tapeline test pipelines/tests/`: every example's test file passes, one line per test.
#[test]
fn the_example_pipelines_pass_their_test_files() {
    let _examples = examples_lock();
    let dir = TempDir::new("pipeline-tests");
    let junit = dir.path().join("junit.xml");
    let tests = workspace_root().join("pipelines/tests");
    let out = run([
        "test".as_ref(),
        tests.as_os_str(),
        "--junit".as_ref(),
        junit.as_os_str(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(code(&out), 0, "{text}\n{}", stderr(&out));
    let files = std::fs::read_dir(&tests).unwrap().count();
    assert!(
        text.ends_with(&format!("{files} passed, 0 failed\n")),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ok ")).count(),
        files,
        "{text}"
    );
    // JUnit XML that an XML parser reads, one test case per file, no failure.
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let suite = doc.root_element();
    assert_eq!(suite.tag_name().name(), "testsuite");
    assert_eq!(suite.attribute("tests"), Some(files.to_string().as_str()));
    assert_eq!(suite.attribute("failures"), Some("0"));
    assert_eq!(
        suite
            .children()
            .filter(|n| n.has_tag_name("testcase"))
            .count(),
        files
    );
}

/// A wrong expectation fails the test, names what differs and by how much, and exit is 1; the
/// JUnit file carries the failure.
#[test]
fn a_wrong_expectation_fails_with_a_diff() {
    let _examples = examples_lock();
    let dir = TempDir::new("pipeline-test-wrong");
    let pipeline = workspace_root().join("pipelines/mock-restart.toml");
    let file = dir.path().join("wrong.test.toml");
    std::fs::write(
        &file,
        format!(
            "pipeline = {:?}\nname = \"wrong on purpose\"\n[expect.stages.flaky]\nrestarts = 5\n\
             [expect.json]\n\"lost_frames.stage-error\" = 0\n",
            pipeline.to_str().unwrap()
        ),
    )
    .unwrap();
    let junit = dir.path().join("junit.xml");
    let out = run([
        "test".as_ref(),
        file.as_os_str(),
        "--junit".as_ref(),
        junit.as_os_str(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(code(&out), 1, "{text}");
    assert!(text.contains("FAIL wrong on purpose"), "{text}");
    assert!(
        text.contains("stages.flaky.restarts: expected 5, got 1"),
        "{text}"
    );
    assert!(
        text.contains("lost_frames.stage-error: expected 0, got 480"),
        "{text}"
    );
    assert!(text.ends_with("0 passed, 1 failed\n"), "{text}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let failure = doc
        .descendants()
        .find(|n| n.has_tag_name("failure"))
        .expect("a <failure>");
    assert!(
        failure.text().unwrap_or("").contains("expected 5, got 1"),
        "{xml}"
    );
}
