//! Every plugin library the workspace builds loads through the real ABI, and every plugin in it
//! can be inspected from the command line.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::PathBuf;

use tapeline_tests::{code, library_file_name, plugin_dir, registry, run, stderr, stdout};

/// The `cdylib` file of every workspace member, from `cargo metadata`.
fn workspace_plugin_libraries() -> BTreeSet<PathBuf> {
    let out = tapeline_tests::cargo()
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let dir = plugin_dir();
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .flat_map(|p| p["targets"].as_array().expect("targets"))
        .filter(|t| {
            t["crate_types"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
        })
        .map(|t| dir.join(library_file_name(t["name"].as_str().expect("target name"))))
        .collect()
}

#[test]
fn every_workspace_plugin_library_loads_with_no_rejection_or_conflict() {
    let expected = workspace_plugin_libraries();
    assert!(
        expected.len() >= 2,
        "the workspace has at least the gain and mock plugin libraries, found {expected:?}"
    );
    let reg = registry();
    // Only this workspace's libraries count: a stale library left in the folder by a removed
    // crate is not this test's business.
    let rejected: Vec<String> = reg
        .rejected
        .iter()
        .filter(|r| expected.contains(r.error.path()))
        .map(|r| r.error.to_string())
        .collect();
    assert!(rejected.is_empty(), "rejected: {rejected:#?}");
    let conflicts: Vec<String> = reg
        .conflicts
        .iter()
        .filter(|c| expected.contains(&c.first) || expected.contains(&c.second))
        .map(|c| {
            format!(
                "{} in {} and {}",
                c.name,
                c.first.display(),
                c.second.display()
            )
        })
        .collect();
    assert!(conflicts.is_empty(), "names defined twice: {conflicts:#?}");
    let loaded: BTreeSet<PathBuf> = reg.plugins().map(|p| p.library.clone()).collect();
    for lib in &expected {
        assert!(lib.is_file(), "{} was not built", lib.display());
        assert!(
            loaded.contains(lib),
            "{} loaded but holds no plugin",
            lib.display()
        );
    }
}

#[test]
fn every_plugin_is_listed_and_inspects_with_its_kind_and_description() {
    let reg = registry();
    let listing = run(["plugins"]);
    assert_eq!(code(&listing), 0, "{}", stderr(&listing));
    let listing = stdout(&listing);
    let mut count = 0;
    for p in reg.plugins() {
        count += 1;
        let name = p.name();
        assert!(
            listing
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "`tapeline plugins` does not list {name}:\n{listing}"
        );
        let out = run(["plugins", "inspect", name]);
        assert_eq!(code(&out), 0, "inspect {name}: {}", stderr(&out));
        let text = stdout(&out);
        let first = text.lines().next().unwrap_or("");
        assert!(
            first.starts_with(name) && first.contains(&format!("({} plugin)", p.kind())),
            "inspect {name} starts with: {first}"
        );
        assert!(
            text.contains(p.manifest.description.as_str()),
            "inspect {name} lacks the description:\n{text}"
        );
    }
    for name in ["gain", "mock-capture", "mock-process", "mock-storage"] {
        assert!(reg.get(name).is_ok(), "{name} is not in the registry");
    }
    assert!(count >= 4);
}

#[test]
fn inspect_lists_config_keys_with_type_default_and_description() {
    let out = run(["plugins", "inspect", "mock-capture"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let channels = text
        .lines()
        .find(|l| l.trim_start().starts_with("channels "))
        .unwrap_or_else(|| panic!("no `channels` key:\n{text}"));
    let cells: Vec<&str> = channels.split_whitespace().collect();
    assert_eq!(&cells[..3], ["channels", "integer", "2"], "{channels}");
    assert!(channels.contains("Number of output channels"), "{channels}");
}

#[test]
fn doctor_accepts_every_workspace_plugin_library() {
    for lib in workspace_plugin_libraries() {
        let out = run([OsStr::new("doctor"), lib.as_os_str()]);
        assert_eq!(code(&out), 0, "doctor {}: {}", lib.display(), stderr(&out));
        assert!(
            stdout(&out).contains("is a usable Tapeline plugin library"),
            "{}",
            stdout(&out)
        );
    }
}
