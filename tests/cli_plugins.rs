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
fn plugins_lists_a_table_with_name_kind_version_library_and_description() {
    let out = run(["plugins"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let header: Vec<&str> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "KIND", "VERSION", "LIBRARY", "DESCRIPTION"]
    );
    let gain_line = text
        .lines()
        .find(|l| l.starts_with("gain "))
        .unwrap_or_else(|| panic!("no gain row:\n{text}"));
    let gain: Vec<&str> = gain_line.split_whitespace().collect();
    assert_eq!(gain[1], "process");
    assert_eq!(gain[2], "0.1.0");
    assert_eq!(gain[3], tapeline_tests::library_file_name("tapeline_gain"));
    // The one-line description, in its column (wrapped at 100 columns off a terminal).
    let column = text
        .lines()
        .next()
        .unwrap_or("")
        .find("DESCRIPTION")
        .unwrap();
    let description: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != gain_line)
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with(' '))
        .map(|(_, l)| l.get(column..).unwrap_or_default())
        .collect();
    assert_eq!(
        description.join(" "),
        "Multiplies each channel by a gain in dB, with a click-free ramp"
    );
    for line in text.lines() {
        assert!(
            line.chars().count() <= 100,
            "wider than 100 columns: {line}"
        );
    }
    // Every library is in the plugin folder, said once under the table.
    let folder = tapeline_tests::plugin_dir();
    assert!(
        text.ends_with(&format!("\nlibraries in {}\n", folder.display())),
        "{text}"
    );
}

#[test]
fn inspect_wraps_to_100_columns_off_a_terminal_and_shows_no_default_one_way() {
    for name in [
        "cpal-capture",
        "biquad",
        "gain",
        "meter",
        "mock-capture",
        "tone",
        "wav-writer",
    ] {
        let out = run(["plugins", "inspect", name]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let text = stdout(&out);
        for line in text.lines().filter(|l| !l.starts_with("  library: ")) {
            assert!(
                line.chars().count() <= 100,
                "{name}: wider than 100 columns: {line}\n{text}"
            );
        }
        let header = text
            .lines()
            .find(|l| l.trim_start().starts_with("KEY "))
            .unwrap_or_else(|| panic!("{name}: no key table:\n{text}"));
        let default_column = header.find("DEFAULT").unwrap();
        let description_column = header.find("DESCRIPTION").unwrap();
        // A key's DEFAULT cell is a value, `(required)` or `-`; never `null`.
        for line in text.lines().skip_while(|l| *l != header).skip(1) {
            let cell = line
                .get(default_column..description_column)
                .unwrap_or_default()
                .trim();
            assert_ne!(cell, "null", "{name}: {line}");
        }
    }
    // biquad's `gain_db` (an optional number) and cpal-capture's `channels` both show `-`.
    for (plugin, key) in [
        ("biquad", "gain_db"),
        ("cpal-capture", "channels"),
        ("meter", "window_ms"),
    ] {
        let out = run(["plugins", "inspect", plugin]);
        let text = stdout(&out);
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key}:\n{text}"));
        assert_eq!(line.split_whitespace().nth(2), Some("-"), "{line}");
    }
}

#[test]
fn inspect_shows_a_range_only_where_the_schema_sets_one() {
    // cpal-capture's `channels` is a u16: the 0 to 65535 of its format is no range of the
    // plugin's, so no RANGE column.
    let out = run(["plugins", "inspect", "cpal-capture"]);
    let text = stdout(&out);
    assert!(!text.contains("RANGE"), "{text}");
    assert!(!text.contains("65535"), "{text}");
}
