//! A corpus of invalid pipeline files (`tests/invalid/`, one mistake each unless named
//! otherwise): `tapeline validate` exits 2 on each, every diagnostic starts with
//! `path:line:col: error:` and has an excerpt and a help line, and the whole report is checked
//! against a snapshot (`tests/snapshots/`). Run with `INSTA_UPDATE=always` to regenerate, then
//! read every changed snapshot.

use std::path::Path;

use serde_json::{json, Value};
use tapeline_tests::{code, run_in, stderr, stdout, workspace_root};

/// `tapeline validate tests/invalid/NAME.toml` from the workspace root, so paths are relative.
fn validate(name: &str, extra: &[&str]) -> (i32, String, String) {
    let file = format!("tests/invalid/{name}.toml");
    let mut args = vec!["validate", file.as_str()];
    args.extend_from_slice(extra);
    let out = run_in(workspace_root(), &args);
    // Plugin messages may quote an absolute path (resolved against the file's folder).
    let root = workspace_root().to_string_lossy().into_owned();
    let clean = |s: String| s.replace(&root, "[ROOT]");
    (code(&out), clean(stdout(&out)), clean(stderr(&out)))
}

/// Checks the report of one corpus file and returns it; `min_errors` for files with several.
fn check(name: &str, min_errors: usize) -> String {
    let (code, out, err) = validate(name, &[]);
    assert_eq!(
        code, 2,
        "{name}: expected exit 2\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        out.is_empty(),
        "{name}: nothing on stdout for an invalid file: {out}"
    );
    let file = format!("tests/invalid/{name}.toml");
    let headers: Vec<&str> = err.lines().filter(|l| l.starts_with(&file)).collect();
    assert!(
        headers.len() >= min_errors.max(1),
        "{name}: too few diagnostics:\n{err}"
    );
    for h in &headers {
        let rest = &h[file.len()..];
        let mut parts = rest.splitn(4, ':');
        let (empty, line, col, tail) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        assert!(
            empty.is_empty()
                && line.parse::<u32>().is_ok_and(|n| n > 0)
                && col.parse::<u32>().is_ok_and(|n| n > 0)
                && tail.starts_with(" error: "),
            "{name}: a diagnostic's first line is not `{file}:LINE:COL: error: ...`: {h}\n{err}"
        );
    }
    // Every line of the report is a header or belongs to the excerpt/help under one.
    assert!(
        err.lines().next().is_some_and(|l| l.starts_with(&file)),
        "{name}: the report starts with a diagnostic's first line:\n{err}"
    );
    let excerpts = err
        .lines()
        .filter(|l| l.contains(&format!("╭─[{file}:")))
        .count();
    assert_eq!(
        excerpts,
        headers.len(),
        "{name}: one excerpt per diagnostic:\n{err}"
    );
    let helps = err
        .lines()
        .filter(|l| l.trim_start().starts_with("help: "))
        .count();
    assert_eq!(
        helps,
        headers.len(),
        "{name}: one help line per diagnostic:\n{err}"
    );
    err
}

macro_rules! corpus {
    ($($test:ident => $name:literal $(, at_least $n:literal)?;)*) => {
        /// Every file the tests below cover.
        const CORPUS: &[&str] = &[$($name),*];
        $(
            #[test]
            fn $test() {
                #[allow(unused_mut, unused_assignments)]
                let mut min = 1;
                $(min = $n;)?
                let err = check($name, min);
                insta::assert_snapshot!($name, err);
            }
        )*
    };
}

corpus! {
    bad_capacity_blocks => "bad-capacity-blocks";
    bad_policy => "bad-policy";
    bad_sample_rate => "bad-sample-rate";
    bad_when_full => "bad-when-full";
    capture_with_inputs => "capture-with-inputs";
    channel_count_mismatch => "channel-count-mismatch";
    cycle_of_three => "cycle-of-three";
    duplicate_id_across_kinds => "duplicate-id-across-kinds";
    input_names_unknown_port => "input-names-unknown-port";
    input_names_unknown_stage => "input-names-unknown-stage";
    inputs_not_a_list => "inputs-not-a-list";
    isolate_not_a_boolean => "isolate-not-a-boolean";
    limits_on_a_stage_opted_out_of_isolation => "limits-on-a-stage-opted-out-of-isolation";
    limits_out_of_range => "limits-out-of-range";
    limits_without_isolate => "limits-without-isolate";
    merge_with_one_input => "merge-with-one-input";
    missing_plugin_key => "missing-plugin-key";
    missing_version => "missing-version";
    misspelt_inputs => "misspelt-inputs";
    misspelt_isolate => "misspelt-isolate";
    misspelt_plugin => "misspelt-plugin";
    plugin_bad_enum_value => "plugin-bad-enum-value";
    plugin_config_out_of_range => "plugin-config-out-of-range";
    plugin_config_wrong_type => "plugin-config-wrong-type";
    plugin_missing_required_key => "plugin-missing-required-key";
    plugin_not_a_string => "plugin-not-a-string";
    plugin_unknown_key => "plugin-unknown-key";
    port_on_single_output_stage => "port-on-single-output-stage";
    process_plugin_under_storage => "process-plugin-under-storage";
    process_without_inputs => "process-without-inputs";
    rate_mismatch_into_merge => "rate-mismatch-into-merge";
    remap_matrix_wrong_width => "remap-matrix-wrong-width";
    self_loop => "self-loop";
    several_mistakes_in_one_file => "several-mistakes-in-one-file", at_least 5;
    seven_independent_mistakes => "seven-independent-mistakes", at_least 7;
    split_without_port => "split-without-port";
    stage_id_with_dot => "stage-id-with-dot";
    stage_not_a_table => "stage-not-a-table";
    storage_as_input => "storage-as-input";
    storage_plugin_under_capture => "storage-plugin-under-capture";
    storage_without_inputs => "storage-without-inputs";
    toml_syntax_error => "toml-syntax-error";
    unknown_host_key => "unknown-host-key";
    unknown_limits_key => "unknown-limits-key";
    unknown_on_error_key => "unknown-on-error-key";
    unknown_pipeline_key => "unknown-pipeline-key";
    unknown_top_level_key => "unknown-top-level-key";
    unsupported_version => "unsupported-version";
    version_as_string => "version-as-string";
    wrong_input_count => "wrong-input-count";
}

#[test]
fn the_corpus_is_every_file_in_tests_invalid_each_saying_what_is_wrong() {
    let dir = workspace_root().join("tests/invalid");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/invalid/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| stem(&p))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = CORPUS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "every file in tests/invalid/ has a test above"
    );
    assert!(listed.len() >= 25);
    for name in CORPUS {
        let text = std::fs::read_to_string(dir.join(format!("{name}.toml"))).expect("read");
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("# ") && first.len() > 10,
            "{name}.toml starts with a one-line comment saying what is wrong: {first}"
        );
    }
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn all_corpus_files_at_once_exit_2_and_report_each_file() {
    let files: Vec<String> = CORPUS
        .iter()
        .map(|n| format!("tests/invalid/{n}.toml"))
        .collect();
    let mut args = vec!["validate".to_string()];
    args.extend(files.iter().cloned());
    let out = run_in(workspace_root(), &args);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    for f in &files {
        assert!(err.contains(&format!("{f}:")), "{f} is reported:\n{err}");
    }
}

fn json_report(name: &str) -> Value {
    let (code, out, err) = validate(name, &["--format", "json"]);
    assert_eq!(code, 2, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("JSON on stdout ({e}):\n{out}"))
}

#[test]
fn json_lists_every_mistake_of_a_file_with_its_position_stage_and_help() {
    let file = "tests/invalid/several-mistakes-in-one-file.toml";
    let got = json_report("several-mistakes-in-one-file");
    let expected = json!([
        {
            "severity": "error", "file": file, "line": 6, "column": 1, "stage": null,
            "message": "unknown key `sample_rat` in [pipeline]", "label": "unknown",
            "help": "did you mean `sample_rate`?"
        },
        {
            "severity": "error", "file": file, "line": 11, "column": 1, "stage": "tone",
            "message": "tone: unknown key `frequncy`", "label": "",
            "help": "did you mean `frequency`?"
        },
        {
            "severity": "error", "file": file, "line": 14, "column": 10, "stage": "gain",
            "message": "unknown plugin `gian`", "label": "not installed",
            "help": "did you mean `gain`?"
        },
        {
            "severity": "error", "file": file, "line": 25, "column": 11, "stage": "out",
            "message": "input `equ` names no stage", "label": "unknown stage",
            "help": "did you mean `eq`?"
        },
        {
            "severity": "error", "file": file, "line": 26, "column": 46, "stage": "out",
            "message": "invalid `when_full` \"drop-olde\"", "label": "",
            "help": "did you mean \"drop-oldest\"? (one of: block, drop-oldest, drop-newest)"
        }
    ]);
    assert_eq!(
        got,
        expected,
        "{}",
        serde_json::to_string_pretty(&got).unwrap_or_default()
    );
}

#[test]
fn json_names_both_ends_and_formats_of_a_rate_mismatch() {
    let got = json_report("rate-mismatch-into-merge");
    let all = got.as_array().expect("an array");
    assert_eq!(all.len(), 1, "{got:#}");
    let d = &all[0];
    assert_eq!(d["severity"], "error");
    assert_eq!(d["file"], "tests/invalid/rate-mismatch-into-merge.toml");
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(24), Some(10))
    );
    assert_eq!(d["stage"], "merge");
    let message = d["message"].as_str().unwrap_or_default();
    for part in [
        "`down` → `merge` carries mono at 44100 Hz",
        "`right` → `merge` carries mono at 48000 Hz",
    ] {
        assert!(message.contains(part), "{message}");
    }
    assert!(
        d["help"].as_str().is_some_and(|h| h.contains("resample")),
        "{d:#}"
    );
}
