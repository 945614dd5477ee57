//! `tapeline validate`: valid files pass; every mistake in a file is reported at its
//! file:line:column with the stage id and a fix, all of them at once, exit code 2.

use std::path::Path;

use tapeline::config::{self, Limits};
use tapeline_tests::{code, registry, run, stderr, stdout, workspace_root, TempDir};

fn write(dir: &TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write pipeline");
    path.to_string_lossy().into_owned()
}

#[test]
fn every_example_pipeline_is_valid() {
    let dir = workspace_root().join("pipelines");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("pipelines/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut args = vec!["validate".to_string()];
    args.extend(files.iter().map(|p| p.to_string_lossy().into_owned()));
    let out = run(&args);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out)
            .lines()
            .filter(|l| l.contains(": ok ("))
            .count(),
        files.len()
    );
}

const MANY_MISTAKES: &str = r#"version = 1

[pipeline]
sample_rat = 48000

[capture.tone]
plugin = "tone"
channels = 2
frequncy = 440.0

[process.gain]
plugin = "gian"
inputs = ["tone"]

[storage.out]
plugin = "wav-writer"
inputs = ["gain"]
path = "out.wav"
buffer = { capacity_blocks = 64, when_full = "drop-olde" }
"#;

#[test]
fn every_mistake_in_a_file_is_reported_at_its_line_and_column_with_a_fix() {
    let dir = TempDir::new("validate-many");
    let file = write(&dir, "bad.toml", MANY_MISTAKES);
    let out = run(["validate", &file]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    let expect = [
        (
            format!("{file}:4:1: error: unknown key `sample_rat` in [pipeline]"),
            "did you mean `sample_rate`?",
        ),
        (
            format!("{file}:9:1: error: tone: unknown key `frequncy` [stage tone]"),
            "did you mean `frequency`?",
        ),
        (
            format!("{file}:12:10: error: unknown plugin `gian` [stage gain]"),
            "did you mean `gain`?",
        ),
        (
            format!("{file}:19:46: error: invalid `when_full` \"drop-olde\" [stage out]"),
            "did you mean \"drop-oldest\"?",
        ),
    ];
    let lines: Vec<&str> = err.lines().collect();
    for (first, help) in &expect {
        let at = lines
            .iter()
            .position(|l| l == first)
            .unwrap_or_else(|| panic!("missing `{first}` in:\n{err}"));
        let help_line = lines[at..]
            .iter()
            .find(|l| l.trim_start().starts_with("help:"))
            .unwrap_or_else(|| panic!("no help after `{first}`"));
        assert!(help_line.contains(help), "{help_line}");
    }
    assert_eq!(
        lines.iter().filter(|l| l.contains(": error: ")).count(),
        expect.len(),
        "{err}"
    );
}

#[test]
fn json_format_gives_the_same_diagnostics_with_positions() {
    let dir = TempDir::new("validate-json");
    let file = write(&dir, "bad.toml", MANY_MISTAKES);
    let out = run(["validate", "--format", "json", &file]);
    assert_eq!(code(&out), 2);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON on stdout");
    let diags = v.as_array().expect("an array");
    assert_eq!(diags.len(), 4, "{v:#}");
    let gian = diags
        .iter()
        .find(|d| d["stage"] == "gain")
        .expect("the gain stage's diagnostic");
    assert_eq!(gian["line"], 12);
    assert_eq!(gian["column"], 10);
    assert_eq!(gian["severity"], "error");
    assert_eq!(gian["help"], "did you mean `gain`?");
}

#[test]
fn a_cycle_names_its_stages_and_other_errors_are_still_reported() {
    let dir = TempDir::new("validate-cycle");
    let file = write(
        &dir,
        "cycle.toml",
        "version = 1\n[process.a]\nplugin = \"gain\"\ninputs = [\"b\"]\n[process.b]\nplugin = \"gain\"\ninputs = [\"a\"]\n[capture.t]\nplugin = \"tone\"\nchanels = 2\n",
    );
    let out = run(["validate", &file]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("the stages form a cycle: ")
            && (err.contains("a → b") || err.contains("b → a")),
        "{err}"
    );
    assert!(err.contains("tone: unknown key `chanels`"), "{err}");
}

#[test]
fn a_missing_or_unsupported_version_says_which_versions_this_host_reads() {
    let dir = TempDir::new("validate-version");
    let file = write(
        &dir,
        "v2.toml",
        "version = 2\n[capture.t]\nplugin = \"tone\"\n",
    );
    let out = run(["validate", &file]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains(&format!(
            "{file}:1:11: error: unsupported pipeline file `version`"
        )),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("this host reads version 1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_file_is_one_line_and_exit_2() {
    let out = run(["validate", "no/such/pipeline.toml"]);
    assert_eq!(code(&out), 2);
    let first = stderr(&out).lines().next().unwrap_or_default().to_string();
    assert!(
        first.starts_with("no/such/pipeline.toml: error: cannot read the pipeline file"),
        "{first}"
    );
    // `run` says it once: one error line, one help line.
    let out = run(["run", "no/such/pipeline.toml"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("error: cannot read no/such/pipeline.toml:"),
        "{err}"
    );
    assert!(lines[1].starts_with("  help: check the path"), "{err}");
}

/// A 44.1 kHz stereo WAV file of one second of a ramp.
fn write_cd_wav(dir: &TempDir) {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(dir.path().join("cd.wav"), spec).unwrap();
    for i in 0..44_100 * 2 {
        w.write_sample((i % 2000 - 1000) as i16).unwrap();
    }
    w.finalize().unwrap();
}

#[test]
fn a_file_at_another_rate_asks_for_resample_and_is_accepted_with_it() {
    let dir = TempDir::new("validate-rate");
    write_cd_wav(&dir);
    let plain = write(
        &dir,
        "plain.toml",
        "version = 1\n[capture.reader]\nplugin = \"wav-reader\"\npath = \"cd.wav\"\n\
         [process.g]\nplugin = \"gain\"\ninputs = [\"reader\"]\n\
         [storage.out]\nplugin = \"wav-writer\"\ninputs = [\"g\"]\npath = \"out.wav\"\n",
    );
    let out = run(["validate", &plain]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.ends_with(
            "plain.toml:2:10: error: `reader` runs at 44100 Hz but the pipeline runs at 48000 \
             Hz, and `g` does not change the rate [stage reader]"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "help: add a stage `plugin = \"resample\"`, `inputs = [\"reader\"]`, `rate = 48000`"
        ),
        "{err}"
    );

    // Following the advice gives a valid pipeline whose output runs at the pipeline's rate.
    let fixed = write(
        &dir,
        "fixed.toml",
        "version = 1\n[capture.reader]\nplugin = \"wav-reader\"\npath = \"cd.wav\"\n\
         [process.to48]\nplugin = \"resample\"\ninputs = [\"reader\"]\nrate = 48000\n\
         [process.g]\nplugin = \"gain\"\ninputs = [\"to48\"]\n\
         [storage.out]\nplugin = \"wav-writer\"\ninputs = [\"g\"]\npath = \"out.wav\"\n",
    );
    let out = run(["run", &fixed]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = hound::WavReader::open(dir.path().join("out.wav")).unwrap();
    assert_eq!(r.spec().sample_rate, 48_000);
    assert_eq!(r.spec().channels, 2);
    // Every input frame is covered, the resampler's tail included (end-of-stream call).
    assert_eq!(r.duration(), 48_000);
}

/// Every stage isolated by the pipeline's default but `gain`, which opts out; `limits` on the
/// isolated ones.
const ISOLATED: &str = r#"version = 1

[pipeline]
isolate = true

[capture.tone]
plugin = "tone"
seconds = 0.1
limits = { memory_mb = 512, cpu_seconds = 60, open_files = 256 }

[process.gain]
plugin = "gain"
inputs = ["tone"]
isolate = false

[storage.sink]
plugin = "null"
inputs = ["gain"]
limits = { open_files = 64 }
"#;

#[test]
fn isolate_and_limits_are_host_keys_that_validate_and_reach_the_plan() {
    let dir = TempDir::new("validate-isolate");
    let file = write(&dir, "isolated.toml", ISOLATED);
    let out = run(["validate", &file]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains(": ok ("), "{}", stdout(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));

    let (plan, report) = config::load(Path::new(&file), &registry());
    let plan = plan.unwrap_or_else(|| panic!("{}", report.render(false)));
    assert!(plan.file.isolate);
    let stage = |id: &str| {
        plan.stages
            .iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("stage {id} is planned"))
    };
    let (tone, gain, sink) = (stage("tone"), stage("gain"), stage("sink"));
    assert!(tone.isolate && !gain.isolate && sink.isolate);
    assert_eq!(
        tone.limits,
        Limits {
            memory_mb: Some(512),
            cpu_seconds: Some(60),
            open_files: Some(256),
        }
    );
    assert_eq!(gain.limits, Limits::default());
    assert_eq!(
        sink.limits,
        Limits {
            open_files: Some(64),
            ..Limits::default()
        }
    );
    // Host keys: not in the config the plugins get.
    for s in [tone, gain, sink] {
        assert!(
            !s.config.contains("isolate") && !s.config.contains("limits"),
            "{}: {}",
            s.id,
            s.config
        );
    }

    // Without `[pipeline] isolate`, no stage is isolated unless it says so.
    let plain = write(
        &dir,
        "plain.toml",
        "version = 1\n[capture.tone]\nplugin = \"tone\"\nseconds = 0.1\nisolate = true\n\
         [storage.sink]\nplugin = \"null\"\ninputs = [\"tone\"]\n",
    );
    let (plan, report) = config::load(Path::new(&plain), &registry());
    let plan = plan.unwrap_or_else(|| panic!("{}", report.render(false)));
    let isolated: Vec<(&str, bool)> = plan
        .stages
        .iter()
        .map(|s| (s.id.as_str(), s.isolate))
        .collect();
    assert_eq!(isolated, [("tone", true), ("sink", false)]);
}
