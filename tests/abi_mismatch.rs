//! A plugin built against an incompatible plugin API is refused with one short line that says
//! what is wrong and what to do; the raw abi_stable report appears only with `--verbose`.
//!
//! The plugins come from tests/fixtures: the same plugin source built against the real API
//! source packaged as version 2.0.0 (`plugin-next`) and as 1.0.0 with one field of another type
//! (`plugin-drift`). Each is a workspace of its own, built into target/fixtures.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tapeline_tests::{build_fixture, code, library_file_name, stderr, stdout, Output};

/// Build both fixture plugins once; returns the folder holding them.
fn fixture_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        build_fixture("plugin-next");
        build_fixture("plugin-drift")
    })
}

fn fixture(lib_name: &str) -> PathBuf {
    let path = fixture_dir().join(library_file_name(lib_name));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

fn doctor(path: &Path, verbose: bool) -> Output {
    let mut args = vec!["doctor".into(), path.as_os_str().to_owned()];
    if verbose {
        args.push("--verbose".into());
    }
    tapeline_tests::run(args)
}

fn error_line(out: &Output) -> String {
    let err = stderr(out);
    err.lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no `error:` line on stderr:\n{err}"))
        .to_string()
}

#[test]
fn plugin_built_for_another_api_version_names_both_versions_and_says_rebuild() {
    let lib = fixture("tapeline_fixture_next");
    let out = doctor(&lib, false);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains("built for tapeline-plugin-api 2.0.0; this host speaks 1.0.0"),
        "{line}"
    );
    assert!(line.contains("libtapeline_fixture_next"), "{line}");
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.contains("help:") && l.contains("rebuild") && l.contains("1.0.0")),
        "no rebuild hint:\n{err}"
    );
    assert!(err.lines().count() < 10, "stderr is long:\n{err}");
}

#[test]
fn layout_drift_names_the_differing_field_in_one_line() {
    let lib = fixture("tapeline_fixture_drift");
    let out = doctor(&lib, false);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let line = error_line(&out);
    assert!(line.contains("ABI layout mismatch"), "{line}");
    assert!(
        line.contains("max") || (line.contains("u32") && line.contains("u64")),
        "the message does not name the differing field or type: {line}"
    );
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.contains("help:") && l.contains("rebuild")),
        "no rebuild hint:\n{err}"
    );
    assert!(err.lines().count() < 10, "stderr is long:\n{err}");
    assert!(
        stdout(&out).lines().count() < 15,
        "the report is shown without --verbose:\n{}",
        stdout(&out)
    );
}

#[test]
fn layout_report_appears_only_with_verbose() {
    let lib = fixture("tapeline_fixture_drift");
    let out = doctor(&lib, true);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let all = stdout(&out) + &stderr(&out);
    assert!(
        all.lines().count() > 100,
        "--verbose shows no full report ({} lines)",
        all.lines().count()
    );
    assert!(
        all.contains("PortCount"),
        "the report does not show the type"
    );
}

#[test]
fn plugins_all_lists_mismatched_libraries_as_rejected_and_still_lists_the_real_plugins() {
    let dir = fixture_dir();
    let out = tapeline_tests::run([
        "plugins".into(),
        "--all".into(),
        "--plugin-dir".into(),
        dir.clone().into_os_string(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let rejected = text
        .split_once("rejected files:")
        .unwrap_or_else(|| panic!("no rejected section:\n{text}"))
        .1;
    assert!(
        rejected.contains("libtapeline_fixture_next") && rejected.contains("2.0.0"),
        "{text}"
    );
    assert!(
        rejected.contains("libtapeline_fixture_drift") && rejected.contains("ABI layout mismatch"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("gain ")),
        "the real plugins are not listed:\n{text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("fixture-through")),
        "a mismatched plugin is listed as usable:\n{text}"
    );
}
