use tapeline_plugin_api::sdk::parse_config;
use tapeline_plugin_api::testing::input;
use tapeline_plugin_api::{ErrorKind, InputBlock, FLAG_DISCONTINUITY};

use crate::signal::{decode, encode, Verifier, FRAME_PERIOD, MAX_CHANNELS};
use crate::{MockCaptureConfig, MockProcessConfig, MockStorageConfig};

/// Interleaved mock signal for `frames`, `channels` channels.
fn signal(frames: std::ops::Range<u64>, channels: u32) -> Vec<f32> {
    frames
        .flat_map(|f| (0..channels).map(move |c| encode(f, c)))
        .collect()
}

fn block(samples: &[f32], channels: u32, flags: u32) -> InputBlock<'_> {
    input(samples, channels).with_flags(flags)
}

mod signal_encoding {
    use super::*;

    #[test]
    fn every_frame_and_channel_round_trips_exactly() {
        for frame in (0..FRAME_PERIOD).step_by(997).chain([FRAME_PERIOD - 1]) {
            for channel in [0, 1, 31, MAX_CHANNELS - 1] {
                let s = encode(frame, channel);
                assert!((0.0..1.0).contains(&s));
                assert_eq!(decode(s), Some((frame, channel)));
            }
        }
        assert_eq!(decode(encode(FRAME_PERIOD + 5, 3)), Some((5, 3)));
    }

    #[test]
    fn values_off_the_grid_do_not_decode() {
        // Every f32 in [0.5, 1) is on the 2^-24 grid; the verifier's sequence check covers those.
        let half_step = 1.5 / (1u32 << 24) as f32;
        for v in [-0.5, 1.0, 7.0, f32::NAN, f32::INFINITY, half_step, 1e-9] {
            assert_eq!(decode(v), None, "{v}");
        }
    }
}

mod verifier {
    use super::*;

    #[test]
    fn an_unbroken_stream_has_no_findings() {
        let mut v = Verifier::new(0);
        for start in (0..4800).step_by(480) {
            let s = signal(start..start + 480, 2);
            assert!(!v.check(&block(&s, 2, 0)).is_bad());
        }
        assert_eq!(v.expected, 4800);
    }

    #[test]
    fn a_dropped_block_is_one_gap_with_its_frame_count() {
        let mut v = Verifier::new(0);
        v.check(&block(&signal(0..480, 2), 2, 0));
        let found = v.check(&block(&signal(960..1440, 2), 2, 0));
        assert_eq!((found.gaps, found.missing_frames), (1, 480));
        assert_eq!(v.expected, 1440);
    }

    #[test]
    fn a_gap_on_a_discontinuity_block_counts_as_announced() {
        let mut v = Verifier::new(0);
        v.check(&block(&signal(0..480, 1), 1, 0));
        let found = v.check(&block(&signal(5000..5480, 1), 1, FLAG_DISCONTINUITY));
        assert_eq!((found.gaps, found.announced_gaps), (0, 1));
        assert_eq!(found.announced_missing_frames, 4520);
        assert!(!found.is_bad());
    }

    #[test]
    fn a_repeated_block_counts_as_reordered() {
        let mut v = Verifier::new(0);
        let first = signal(0..480, 2);
        v.check(&block(&first, 2, 0));
        let found = v.check(&block(&first, 2, 0));
        assert_eq!(found.reordered, 1);
        assert_eq!(found.gaps, 0);
        assert_eq!(v.expected, 480);
    }

    #[test]
    fn swapped_channels_and_altered_samples_are_corrupt() {
        let mut v = Verifier::new(0);
        v.check(&block(&signal(0..10, 2), 2, 0));
        let mut swapped = signal(10..20, 2);
        swapped.swap(0, 1);
        assert_eq!(v.check(&block(&swapped, 2, 0)).corrupt_frames, 1);
        let halved: Vec<f32> = signal(20..30, 2).iter().map(|s| s * 0.5).collect();
        assert_eq!(v.check(&block(&halved, 2, 0)).corrupt_frames, 10);
        assert_eq!(v.expected, 30);
    }

    #[test]
    fn one_channel_split_out_of_a_stereo_stream_verifies() {
        let right: Vec<f32> = signal(0..480, 2).chunks(2).map(|f| f[1]).collect();
        let mut v = Verifier::new(0);
        assert!(!v.check(&block(&right, 1, 0)).is_bad());
    }

    /// A 4-channel stream rewired so that its channels arrive in `order`.
    fn rewired(frames: std::ops::Range<u64>, order: &[u32]) -> Vec<f32> {
        frames
            .flat_map(|f| order.iter().map(move |&c| encode(f, c)))
            .collect()
    }

    #[test]
    fn channels_swapped_from_the_first_frame_are_counted_per_frame() {
        let mut v = Verifier::new(0);
        let found = v.check(&block(&rewired(0..480, &[0, 1, 3, 2]), 4, 0));
        assert_eq!(found.swapped_channels, 480);
        assert_eq!(
            (found.gaps, found.reordered, found.corrupt_frames),
            (0, 0, 0)
        );
        assert!(found.is_bad());
        // The sequence checks still work on a swapped stream.
        let found = v.check(&block(&rewired(960..1440, &[0, 1, 3, 2]), 4, 0));
        assert_eq!((found.gaps, found.missing_frames), (1, 480));
        assert_eq!(found.swapped_channels, 480);
        assert_eq!(v.expected, 1440);
    }

    #[test]
    fn channels_in_order_or_an_ordered_subset_are_not_swapped() {
        for order in [&[0, 1, 2, 3][..], &[2, 3], &[3], &[0, 2], &[1, 1]] {
            let n = order.len() as u32;
            let mut v = Verifier::new(0);
            let found = v.check(&block(&rewired(0..480, order), n, 0));
            assert_eq!(found, Default::default(), "{order:?}");
        }
        let mut v = Verifier::new(0);
        let found = v.check(&block(&rewired(0..480, &[1, 0]), 2, 0));
        assert_eq!(found.swapped_channels, 480);
    }
}

mod config {
    use super::*;

    fn key_of(err: tapeline_plugin_api::PluginError) -> String {
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        err.key().unwrap_or("").to_string()
    }

    #[test]
    fn unknown_keys_are_rejected_by_every_mock() {
        assert!(parse_config::<MockCaptureConfig>(r#"{"panic_at": 1}"#).is_err());
        assert!(parse_config::<MockProcessConfig>(r#"{"frames": 1}"#).is_err());
        assert!(parse_config::<MockStorageConfig>(r#"{"channels": 1}"#).is_err());
    }

    #[test]
    fn half_given_fault_pairs_name_the_missing_key() {
        let c: MockProcessConfig = parse_config(r#"{"stall_at_block": 3}"#).unwrap();
        assert_eq!(key_of(c.faults().unwrap_err()), "stall_ms");
        let c: MockProcessConfig = parse_config(r#"{"error_kind": "io"}"#).unwrap();
        assert_eq!(key_of(c.faults().unwrap_err()), "error_kind");
    }

    #[test]
    fn error_kind_names_match_the_api_names() {
        for kind in [
            "invalid-config",
            "unsupported-format",
            "device-lost",
            "io",
            "other",
        ] {
            let c: MockStorageConfig = parse_config(&format!(
                r#"{{"error_at_block": 0, "error_kind": "{kind}"}}"#
            ))
            .unwrap();
            let k: ErrorKind = c.error_kind.unwrap().into();
            assert_eq!(k.as_str(), kind);
        }
    }
}

mod crash_config {
    use super::*;
    use crate::crash::{Crash, CrashKind};

    fn key_of(err: tapeline_plugin_api::PluginError) -> String {
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        err.key().unwrap_or("").to_string()
    }

    #[test]
    fn every_crash_kind_parses_in_every_mock() {
        for kind in CrashKind::ALL {
            let text = format!(r#"{{"crash": "{}", "crash_at_block": 5}}"#, kind.as_str());
            let want = Some(Crash { kind, at_block: 5 });
            let c: MockCaptureConfig = parse_config(&text).unwrap();
            assert_eq!(c.faults().unwrap().crash(), want);
            let c: MockProcessConfig = parse_config(&text).unwrap();
            assert_eq!(c.faults().unwrap().crash(), want);
            let c: MockStorageConfig = parse_config(&text).unwrap();
            assert_eq!(c.faults().unwrap().crash(), want);
        }
        let names: Vec<&str> = CrashKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "segv",
                "abort",
                "stack-overflow",
                "exit",
                "oom",
                "thread-panic",
                "hang"
            ]
        );
    }

    #[test]
    fn crash_and_crash_at_block_come_together() {
        let c: MockProcessConfig = parse_config(r#"{"crash": "segv"}"#).unwrap();
        assert_eq!(key_of(c.faults().unwrap_err()), "crash_at_block");
        let c: MockCaptureConfig = parse_config(r#"{"crash_at_block": 3}"#).unwrap();
        assert_eq!(key_of(c.faults().unwrap_err()), "crash");
        let c: MockStorageConfig = parse_config(r#"{"crash_at_block": 0}"#).unwrap();
        assert_eq!(key_of(c.faults().unwrap_err()), "crash");
        let c: MockProcessConfig = parse_config("{}").unwrap();
        assert_eq!(c.faults().unwrap().crash(), None);
    }

    #[test]
    fn an_unknown_crash_kind_is_an_error_at_the_key() {
        for text in [
            r#"{"crash": "segfault", "crash_at_block": 1}"#,
            r#"{"crash": "SEGV", "crash_at_block": 1}"#,
            r#"{"crash": 11, "crash_at_block": 1}"#,
        ] {
            let err = parse_config::<MockProcessConfig>(text).unwrap_err();
            assert_eq!(key_of(err.clone()), "crash", "{text}");
        }
        let err = parse_config::<MockStorageConfig>(r#"{"crash": "kill", "crash_at_block": 1}"#)
            .unwrap_err();
        assert!(err.message().contains("stack-overflow"), "{err}");
    }
}

mod crash_marker {
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;
    use crate::crash::{Crash, CrashKind, CrashSite, Marker, RunId};
    use crate::faults::StageState;

    /// A folder of its own for one test.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let d = std::env::temp_dir()
                .join(format!("tapeline-mock-test-{}-{name}", std::process::id()));
            remove(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            remove(&self.0);
        }
    }

    /// Remove `dir` if it is there; a failure is only noted (a leftover temp folder does not
    /// change a test's outcome).
    fn remove(dir: &std::path::Path) {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                eprintln!("note: could not remove {}: {e}", dir.display());
            }
            _ => {}
        }
    }

    fn run(id: &str, started: u64) -> RunId {
        RunId {
            id: id.to_string(),
            started: Some(started),
        }
    }

    /// Markers of runs that ended are swept; this run's, and files that are not markers, stay.
    #[test]
    fn stale_markers_of_ended_runs_are_swept() {
        let dir = Dir::new("sweep");
        // No process has this id (above the kernel's largest pid).
        let dead = Marker::for_fault(&dir.0, &run("4194999", 7), "mock-process", "p", "error");
        let live = Marker::for_fault(&dir.0, &RunId::current(), "mock-process", "p", "error");
        // This process's id with another start time: an earlier process that had its id.
        let reused = Marker::new(
            &dir.0,
            &run(&std::process::id().to_string(), 1),
            "mock-storage",
            "s",
        );
        for m in [&dead, &live, &reused] {
            assert!(m.claim().unwrap());
        }
        let other = dir.0.join("not-a-marker");
        std::fs::write(&other, "x").unwrap();
        crate::crash::sweep_stale(&dir.0);
        assert!(!dead.path().exists(), "the ended run's marker is swept");
        assert!(!reused.path().exists(), "the reused id's marker is swept");
        assert!(live.path().exists(), "this run's marker stays");
        assert!(other.exists());
        assert!(!live.claim().unwrap(), "and still says the fault fired");
    }

    #[test]
    fn only_the_first_instance_of_a_run_and_stage_claims_the_marker() {
        let dir = Dir::new("claim");
        let first = Marker::new(&dir.0, &run("4242", 7), "mock-process", "p");
        assert!(first.claim().unwrap(), "the first instance fires");
        assert!(
            first.path().exists(),
            "the marker exists (before the fault)"
        );
        assert!(!first.claim().unwrap());
        // A second instance of the same run and stage, as a fresh process would build it.
        let second = Marker::new(&dir.0, &run("4242", 7), "mock-process", "p");
        assert!(
            !second.claim().unwrap(),
            "the same run and stage does not fire again"
        );
        // Another run, another stage, another plugin: each fires once.
        for m in [
            Marker::new(&dir.0, &run("4243", 7), "mock-process", "p"),
            Marker::new(&dir.0, &run("4242", 7), "mock-process", "q"),
            Marker::new(&dir.0, &run("4242", 7), "mock-storage", "p"),
        ] {
            assert!(m.claim().unwrap(), "{}", m.path().display());
            assert!(!m.claim().unwrap());
        }
    }

    #[test]
    fn a_marker_left_by_an_earlier_process_with_the_same_id_is_stale() {
        let dir = Dir::new("stale");
        let old = Marker::new(&dir.0, &run("4242", 7), "mock-capture", "mic");
        assert!(old.claim().unwrap());
        // The same process id, started later: another run.
        let new = Marker::new(&dir.0, &run("4242", 900), "mock-capture", "mic");
        assert_eq!(old.path(), new.path());
        assert!(new.claim().unwrap());
        assert!(!new.claim().unwrap());
        assert_eq!(std::fs::read_to_string(new.path()).unwrap(), "4242 900\n");
    }

    #[test]
    fn stage_ids_become_distinct_file_names_inside_the_folder() {
        let dir = Dir::new("names");
        let r = run("1", 1);
        let names: Vec<PathBuf> = ["a/b", "a_b", "a%2Fb", "a b", "../x", "é"]
            .iter()
            .map(|id| {
                Marker::new(&dir.0, &r, "mock-process", id)
                    .path()
                    .to_path_buf()
            })
            .collect();
        for (i, p) in names.iter().enumerate() {
            assert_eq!(p.parent(), Some(dir.0.as_path()), "{}", p.display());
            assert!(!names[..i].contains(p), "{} twice", p.display());
        }
        let m = Marker::new(&dir.0, &r, "mock-process", "a/b");
        assert!(m.claim().unwrap());
    }

    #[test]
    fn the_current_run_id_is_this_process_without_a_host_pid() {
        // Tests run in parallel: only read, never set, the variable.
        if std::env::var_os("TAPELINE_HOST_PID").is_none() {
            let r = RunId::current();
            assert_eq!(r.id, std::process::id().to_string());
            if cfg!(target_os = "linux") {
                assert!(r.started.is_some());
            }
        }
    }

    /// Through the fault path: the crash that returns (a panic on a thread of the plugin's own),
    /// with a fresh stage state per instance as each fresh process has.
    #[test]
    fn a_thread_panic_fires_once_per_run_and_stage_across_fresh_processes() {
        let dir = Dir::new("thread-panic");
        let c: MockProcessConfig =
            parse_config(r#"{"crash": "thread-panic", "crash_at_block": 2}"#).unwrap();
        let faults = c.faults().unwrap();
        let crash = faults.crash();
        assert_eq!(
            crash,
            Some(Crash {
                kind: CrashKind::ThreadPanic,
                at_block: 2
            })
        );
        let instance = |run_id: &str| {
            let marker = Marker::new(&dir.0, &run(run_id, 1), "mock-process", "tp");
            let site = CrashSite::new(crash.unwrap(), marker, "mock-process").unwrap();
            (Arc::new(StageState::default()), site)
        };
        let blocks = |state: &StageState, site: &mut CrashSite| {
            for b in 0..4 {
                assert_eq!(faults.block(state, site, "mock-process").unwrap(), b);
            }
        };

        let (state, mut site) = instance("100");
        blocks(&state, &mut site);
        assert!(
            site.thread_panicked(),
            "the first instance's thread panicked"
        );

        let (state, mut again) = instance("100");
        blocks(&state, &mut again);
        assert!(
            !again.thread_panicked(),
            "same run and stage: no second panic"
        );

        let (state, mut other) = instance("101");
        blocks(&state, &mut other);
        assert!(other.thread_panicked(), "another run fires");
    }
}

mod capture_position {
    use tapeline_plugin_api::prelude::Capture;
    use tapeline_plugin_api::testing::{context, output};

    use super::*;
    use crate::MockCapture;

    fn new(stage_id: &str) -> MockCapture {
        let stage = context(&[]).with_stage_id(stage_id).with_base_dir("");
        let config: MockCaptureConfig = parse_config(r#"{"channels": 2}"#).unwrap();
        let mut c = MockCapture::new(config, &stage.get()).unwrap();
        c.start().unwrap();
        c
    }

    /// One read of 480 frames with the host's `position`: the first frame and position the
    /// capture produced.
    fn read(c: &mut MockCapture, position: u64) -> (u64, u64) {
        let mut samples = vec![0.0; 480 * 2];
        let mut out = output(&mut samples, 2).with_position(position);
        c.read(&mut out).unwrap();
        assert_eq!(out.frames(), 480);
        let position = out.position();
        let (frame, channel) = decode(out.samples()[0]).unwrap();
        assert_eq!(channel, 0);
        (frame, position)
    }

    #[test]
    fn a_stage_fresh_in_this_process_starts_at_the_hosts_position() {
        // As a stage restarted in a new child process: the host's stream is at 4800.
        let mut c = new("capture-position-fresh");
        assert_eq!(read(&mut c, 4800), (4800, 4800));
        assert_eq!(read(&mut c, 5280), (5280, 5280));
        // An in-process restart continues from the stage's state, as before.
        drop(c);
        let mut again = new("capture-position-fresh");
        assert_eq!(read(&mut again, 0), (5760, 5760));
    }

    #[test]
    fn in_process_restarts_continue_the_signal_whatever_the_position() {
        let mut c = new("capture-position-restart");
        assert_eq!(read(&mut c, 0), (0, 0));
        assert_eq!(read(&mut c, 480), (480, 480));
        drop(c);
        let mut again = new("capture-position-restart");
        assert_eq!(read(&mut again, 99_999), (960, 960));
    }
}
