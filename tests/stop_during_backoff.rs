//! A stop is never held up by a restart's backoff: `--for` and a first SIGINT end a run whose
//! capture is retrying its start with `backoff_ms = 1000` within about a second.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tapeline_tests::{code, run_toml_with, tapeline_bin, TempDir};

const PIPELINE: &str = r#"version = 1
[capture.src]
plugin = "mock-capture"
channels = 2
fail_start_times = 4
on_error = { policy = "restart", max_restarts = 5, backoff_ms = 1000 }

[storage.sink]
plugin = "mock-storage"
inputs = ["src"]
"#;

#[test]
fn for_one_second_ends_a_run_whose_start_is_being_retried_within_two_seconds() {
    let dir = TempDir::new("stop-backoff");
    let began = Instant::now();
    let (out, _) = run_toml_with(&dir, PIPELINE, &["--for", "1s"]);
    let took = began.elapsed();
    assert!(took < Duration::from_secs(2), "--for 1s took {took:?}");
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn one_sigint_ends_a_run_whose_start_is_being_retried_at_once() {
    let dir = TempDir::new("stop-backoff-int");
    let file = dir.path().join("p.toml");
    std::fs::write(&file, PIPELINE).unwrap();
    let child = Command::new(tapeline_bin())
        .args(["run", "--quiet"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let sent = Instant::now();
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the SIGINT took {took:?} to end the run"
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
}
