//! A plugin call that never returns, under `on_error = restart`: the watchdog reports it at
//! `stall_timeout_ms`, gives it up at 4 × `stall_timeout_ms`, a fresh instance on a fresh thread
//! processes the later blocks, the recording holds every block before and after the one the
//! stuck call held (counted as lost), the summary names the call given up, and the run exits 1.

use serde_json::Value;
use tapeline_tests::{code, mock_chain, run_toml, stderr, TempDir};

const BLOCK: u64 = 480;
const FRAMES: u64 = 100 * BLOCK;
const STUCK_BLOCK: u64 = 10;

fn pipeline(stuck_in: &str) -> String {
    let stuck = format!(
        "stall_at_block = {STUCK_BLOCK}\nstall_ms = 3600000\non_error = {{ policy = \"restart\", backoff_ms = 10 }}"
    );
    let pick = |s: &str| if s == stuck_in { stuck.as_str() } else { "" };
    let pipeline = "stall_timeout_ms = 300\nmonitor_interval_ms = 100";
    mock_chain(FRAMES, pipeline, "", pick("mid"), pick("sink"))
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn a_process_call_that_never_returns_is_given_up_and_the_run_goes_on() {
    for stuck_in in ["mid", "sink"] {
        let dir = TempDir::new("stuck-call");
        let (out, summary) = run_toml(&dir, &pipeline(stuck_in));
        let err = stderr(&out);
        assert_eq!(
            code(&out),
            1,
            "{stuck_in}: a call was given up: exit 1\n{err}"
        );
        assert!(err.contains("given up"), "{stuck_in}: {err}");
        let s: Value = serde_json::from_str(&std::fs::read_to_string(summary).unwrap()).unwrap();
        let stage = s["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == stuck_in)
            .unwrap();
        let abandoned = stage["abandoned_calls"].as_array().unwrap();
        assert_eq!(abandoned.len(), 1, "{stuck_in}: {stage:#}");
        let call = if stuck_in == "mid" {
            "process"
        } else {
            "write"
        };
        assert_eq!(abandoned[0]["call"], call);
        assert_eq!(abandoned[0]["thread"], format!("tapeline-{stuck_in}"));
        assert!(n(&abandoned[0]["after_ms"]) >= 4 * 300, "{abandoned:?}");
        assert_eq!(n(&abandoned[0]["lost_frames"]), BLOCK);
        assert_eq!(n(&stage["restarts"]), 1, "{stage:#}");
        // The fresh instance goes on: the run ends because the source ended, not a failure.
        assert_eq!(s["end"], "sources-ended", "{stuck_in}");
        assert!(s["failure"].is_null());
        // Exactly the one block the stuck call held is lost, and it is counted.
        let reason = if stuck_in == "mid" {
            "stage-error"
        } else {
            "storage-error"
        };
        assert_eq!(
            n(&s["lost_frames"][reason]),
            BLOCK,
            "{stuck_in}: {}",
            s["lost_frames"]
        );
        let lost: u64 = s["lost_frames"].as_object().unwrap().values().map(n).sum();
        assert_eq!(lost, BLOCK, "{stuck_in}: {}", s["lost_frames"]);
        assert_eq!(s["internal_errors"], 0);
        if stuck_in == "mid" {
            // Every block before and after the stuck one reached the recording, in order.
            let report: Value = serde_json::from_str(
                &std::fs::read_to_string(dir.path().join("report.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(n(&report["frames_written"]), FRAMES - BLOCK, "{report:#}");
            assert_eq!(n(&report["gaps"]), 1, "{report:#}");
            assert_eq!(n(&report["missing_frames"]), BLOCK, "{report:#}");
        } else {
            let written = n(&s["storage"][0]["frames_written"]);
            assert_eq!(written, FRAMES - BLOCK, "{stuck_in}: {}", s["storage"]);
        }
        assert!(out.status.code() == Some(1));
        assert!(stdout_has_lost_line(&out), "{stuck_in}");
    }
}

fn stdout_has_lost_line(out: &std::process::Output) -> bool {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .last()
        .is_some_and(|l| l.starts_with("lost frames: 480"))
}
