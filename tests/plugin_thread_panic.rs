//! A panic on a thread a plugin started itself (not inside a call from the host) is an error of
//! its stage, reported by the plugin's next call and met with the stage's policy: in the host's
//! process (the SDK's panic hook of the plugin's library keeps it) and in an isolated stage's
//! process alike. In the host's process the library is shared by every stage using it, so the
//! panic goes to the instance that was inside a call when it happened if only one was, else to
//! the library's next call: here only `mid` uses the mock library (tone in, null out), and
//! isolated, a process holds one instance only.

use serde_json::Value;
use tapeline_tests::{code, run_toml, stderr, TempDir};

fn pipeline(isolate: bool) -> String {
    format!(
        r#"version = 1
[capture.src]
plugin = "tone"
channels = 2
seconds = 1.0

[process.mid]
plugin = "mock-process"
inputs = ["src"]
isolate = {isolate}
crash = "thread-panic"
crash_at_block = 10
on_error = {{ policy = "restart", backoff_ms = 10 }}

[storage.sink]
plugin = "null"
inputs = ["mid"]
"#
    )
}

#[test]
fn a_panic_on_a_plugins_own_thread_is_an_error_of_its_stage() {
    for isolate in [false, true] {
        let dir = TempDir::new("thread-panic");
        let (out, summary) = run_toml(&dir, &pipeline(isolate));
        assert_eq!(code(&out), 0, "isolate = {isolate}\n{}", stderr(&out));
        let s: Value = serde_json::from_str(&std::fs::read_to_string(summary).unwrap()).unwrap();
        let errors = s["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "isolate = {isolate}: {errors:#?}");
        let e = &errors[0];
        assert_eq!(e["stage"], "mid", "isolate = {isolate}: {e}");
        assert_eq!(e["kind"], "panicked");
        assert_eq!(e["severity"], "recoverable");
        let msg = e["message"].as_str().unwrap();
        assert!(
            msg.contains("of the plugin panicked") && msg.contains("thread-panic"),
            "{msg}"
        );
        let mid = s["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == "mid")
            .unwrap();
        assert_eq!(mid["restarts"], 1, "isolate = {isolate}");
        // The call that reported it did not process its block: one block lost, counted.
        assert_eq!(s["lost_frames"]["stage-error"], 480, "isolate = {isolate}");
    }
}
