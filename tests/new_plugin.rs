//! `tapeline new-plugin NAME --kind KIND`: for each kind, the crate it writes builds, passes its
//! own test, loads (`tapeline doctor`) and runs in its example pipeline, in one go.

use tapeline_tests::{
    cargo_in, code, run, run_in, stderr, stdout, target_dir, workspace_root, TempDir,
};

#[test]
fn a_new_plugin_of_each_kind_builds_tests_loads_and_runs_its_example() {
    let dir = TempDir::new("new-plugin");
    // Shared with tests/plugin_api_standalone.rs: the API's dependencies are compiled once.
    let target = target_dir().join("standalone");
    let api = workspace_root().join("plugin-api");
    for (kind, written) in [
        ("process", "out.wav (48000 frames, 1.00 s)"),
        ("capture", "out.wav (96000 frames, 2.00 s)"),
        ("storage", "report.txt (48000 frames, 1.00 s)"),
    ] {
        let name = format!("demo-{kind}");
        let out = run([
            "new-plugin",
            &name,
            "--kind",
            kind,
            "--dir",
            dir.path().to_str().unwrap(),
            "--api-path",
            api.to_str().unwrap(),
        ]);
        assert_eq!(code(&out), 0, "{kind}: {}", stderr(&out));
        let root = dir.path().join(&name);
        cargo_in(&root, &["build", "--offline", "--quiet"], &target);
        cargo_in(&root, &["test", "--offline", "--quiet"], &target);
        let library = target.join("debug").join(format!(
            "{}{}{}",
            std::env::consts::DLL_PREFIX,
            name.replace('-', "_"),
            std::env::consts::DLL_SUFFIX
        ));
        let doctor = run(["doctor", library.to_str().unwrap()]);
        assert_eq!(code(&doctor), 0, "{kind}: {}", stdout(&doctor));
        let plugins = target.join("debug");
        let ran = run_in(
            &root,
            [
                "--plugin-dir",
                plugins.to_str().unwrap(),
                "run",
                "example.toml",
                "--quiet",
            ],
        );
        assert_eq!(code(&ran), 0, "{kind}: {}", stderr(&ran));
        assert!(stdout(&ran).contains(written), "{kind}: {}", stdout(&ran));
    }
    // A name that is not one, and a folder that is there already, are refused.
    let out = run(["new-plugin", "My Gain", "--kind", "process"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = run([
        "new-plugin",
        "demo-process",
        "--kind",
        "process",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
}
