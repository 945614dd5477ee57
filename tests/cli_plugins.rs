//! The `plugins` command line: unknown names suggest the closest, bad arguments exit 2, results
//! go to stdout.

use tapeline_tests::{code, run, stderr, stdout};

#[test]
fn inspect_of_a_misspelt_name_exits_2_and_suggests_the_closest() {
    let out = run(["plugins", "inspect", "gian"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("unknown plugin `gian`"), "{err}");
    let help = err
        .lines()
        .find(|l| l.contains("help:"))
        .unwrap_or_else(|| panic!("no help line:\n{err}"));
    assert!(
        help.contains("did you mean") && help.contains("`gain`"),
        "{help}"
    );
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
}

#[test]
fn inspect_of_a_name_like_nothing_points_at_the_plugin_list() {
    let out = run(["plugins", "inspect", "zzzzzzzz"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("tapeline plugins"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unknown_arguments_and_commands_exit_2() {
    for args in [
        &["plugins", "--no-such-flag"][..],
        &["plugins", "inspect"],
        &["plugins", "inspect", "gain", "extra"],
        &["no-such-command"],
        &["doctor"],
    ] {
        let out = run(args);
        assert_eq!(code(&out), 2, "tapeline {args:?}: {}", stderr(&out));
        assert!(!stderr(&out).is_empty(), "tapeline {args:?} says nothing");
    }
}

#[test]
fn help_and_version_exit_0_on_stdout() {
    for args in [
        &["--help"][..],
        &["plugins", "--help"],
        &["doctor", "--help"],
        &["--version"],
    ] {
        let out = run(args);
        assert_eq!(code(&out), 0, "tapeline {args:?}: {}", stderr(&out));
        assert!(
            !stdout(&out).is_empty(),
            "tapeline {args:?} printed nothing"
        );
    }
}

#[test]
fn plugins_lists_a_table_with_name_kind_version_and_library() {
    let out = run(["plugins"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let header: Vec<&str> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "KIND", "VERSION", "LIBRARY"]);
    let gain: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("gain "))
        .unwrap_or_else(|| panic!("no gain row:\n{text}"))
        .split_whitespace()
        .collect();
    assert_eq!(gain[1], "process");
    assert_eq!(gain[2], "0.1.0");
    assert!(gain[3].ends_with(&tapeline_tests::library_file_name("tapeline_gain")));
}
