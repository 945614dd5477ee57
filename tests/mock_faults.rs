//! The mock plugins, through the real ABI: the sequence-numbered signal survives a clean chain,
//! `mock-storage` reports every gap, and each injected fault does what its key says.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tapeline_plugin_api::abi::{CaptureBox, StorageBox};
use tapeline_plugin_api::{ErrorKind, PluginError, ReadStatus, FLAG_DISCONTINUITY};
use tapeline_tests::{
    context, format, new_capture, new_processor, new_storage, output_block, process_block,
    registry, unique_stage_id, TempDir, BLOCK_FRAMES, SAMPLE_RATE,
};

/// One block a capture produced.
struct Block {
    samples: Vec<f32>,
    position: u64,
    flags: u32,
    status: ReadStatus,
}

fn read(cap: &mut CaptureBox, channels: u32) -> Result<Block, PluginError> {
    let mut buf = vec![0.0f32; (BLOCK_FRAMES * channels) as usize];
    let mut out = output_block(&mut buf, channels);
    let status = cap.read(&mut out).into_result()?;
    let (frames, position, flags) = (out.frames, out.position, out.flags);
    buf.truncate((frames * channels) as usize);
    Ok(Block {
        samples: buf,
        position,
        flags,
        status,
    })
}

fn write(st: &mut StorageBox, block: &Block, channels: u32) -> Result<(), PluginError> {
    let mut input = tapeline_tests::input_block(&block.samples, channels, block.position);
    input.flags = block.flags;
    st.write(&input).into_result()
}

fn capture(config: &str) -> CaptureBox {
    let id = unique_stage_id("mock-capture");
    let mut cap =
        new_capture(&registry(), "mock-capture", config, &context(&id, &[])).expect("capture");
    cap.start().into_result().expect("start");
    cap
}

/// A mock-storage writing its report into `dir`; returns it and the report's path.
fn storage(dir: &Path, channels: u32, extra: &str) -> (StorageBox, std::path::PathBuf) {
    let id = unique_stage_id("mock-storage");
    let report = dir.join(format!("{id}.json"));
    let config = format!(r#"{{"report": {:?}{extra}}}"#, report.to_str().unwrap());
    let inputs = [format(channels)];
    let st =
        new_storage(&registry(), "mock-storage", &config, &context(&id, &inputs)).expect("storage");
    (st, report)
}

fn report(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report written"))
        .expect("report is JSON")
}

#[test]
fn clean_chain_delivers_every_frame_in_order() {
    let dir = TempDir::new("mock-clean");
    let mut cap = capture(r#"{"channels": 2, "frames": 2000}"#);
    let id = unique_stage_id("mock-process");
    let inputs = [format(2)];
    let mut p =
        new_processor(&registry(), "mock-process", "{}", &context(&id, &inputs)).expect("process");
    let (mut st, path) = storage(dir.path(), 2, "");
    let mut frames = 0;
    loop {
        let mut block = read(&mut cap, 2).expect("read");
        block.samples = process_block(&mut p, &block.samples, 2).expect("process");
        frames += block.samples.len() / 2;
        write(&mut st, &block, 2).expect("write");
        if block.status == ReadStatus::Finished {
            break;
        }
    }
    assert_eq!(frames, 2000);
    let done = st.finalize().into_result().expect("finalize");
    assert_eq!(done.frames_written, 2000);
    assert_eq!(done.files.len(), 1);
    let r = report(&path);
    assert_eq!(r["frames_written"], 2000);
    for key in ["gaps", "missing_frames", "reordered", "corrupt_frames"] {
        assert_eq!(r[key], 0, "{key}: {r}");
    }
}

#[test]
fn a_lost_block_is_reported_as_one_gap_of_its_frames() {
    let dir = TempDir::new("mock-gap");
    let mut cap = capture(r#"{"channels": 1}"#);
    let (mut st, path) = storage(dir.path(), 1, "");
    for n in 0..5 {
        let block = read(&mut cap, 1).expect("read");
        if n != 2 {
            write(&mut st, &block, 1).expect("write");
        }
    }
    st.finalize().into_result().expect("finalize");
    let r = report(&path);
    assert_eq!(r["gaps"], 1, "{r}");
    assert_eq!(r["missing_frames"], BLOCK_FRAMES, "{r}");
    assert_eq!(r["frames_written"], 4 * BLOCK_FRAMES, "{r}");
    assert_eq!(r["next_expected_frame"], 5 * BLOCK_FRAMES, "{r}");
}

#[test]
fn fail_on_gap_fails_the_write_that_shows_a_repeated_block() {
    let dir = TempDir::new("mock-strict");
    let mut cap = capture(r#"{"channels": 2}"#);
    let (mut st, _) = storage(dir.path(), 2, r#", "fail_on_gap": true"#);
    let first = read(&mut cap, 2).expect("read");
    write(&mut st, &first, 2).expect("first write");
    let err = write(&mut st, &first, 2).expect_err("the repeated block is refused");
    assert_eq!(err.kind(), ErrorKind::Other);
    assert!(err.message().contains("1 reordered"), "{err}");
}

#[test]
fn error_at_block_returns_the_configured_kind_once() {
    let inputs = [format(1)];
    let input = vec![0.25f32; BLOCK_FRAMES as usize];
    for (name, kind) in [
        ("invalid-config", ErrorKind::InvalidConfig),
        ("unsupported-format", ErrorKind::UnsupportedFormat),
        ("device-lost", ErrorKind::DeviceLost),
        ("io", ErrorKind::Io),
        ("other", ErrorKind::Other),
    ] {
        let id = unique_stage_id("mock-error");
        let config = format!(r#"{{"error_at_block": 1, "error_kind": "{name}"}}"#);
        let mut p = new_processor(&registry(), "mock-process", &config, &context(&id, &inputs))
            .expect("process");
        let results: Vec<_> = (0..3).map(|_| process_block(&mut p, &input, 1)).collect();
        assert!(results[0].is_ok(), "{name}: block 0");
        let err = results[1].as_ref().expect_err("block 1 fails");
        assert_eq!(err.kind(), kind, "{err}");
        assert!(err.message().contains("block 1"), "{err}");
        assert!(results[2].is_ok(), "{name}: block 2");
    }
}

#[test]
fn faults_combine_in_one_stage() {
    let id = unique_stage_id("mock-combined");
    let inputs = [format(1)];
    let config = r#"{"slow_us": 10, "stall_at_block": 0, "stall_ms": 1,
                     "panic_at_block": 1, "error_at_block": 2, "error_kind": "io"}"#;
    let mut p = new_processor(&registry(), "mock-process", config, &context(&id, &inputs))
        .expect("process");
    let input = vec![0.5f32; BLOCK_FRAMES as usize];
    let kinds: Vec<Option<ErrorKind>> = (0..4)
        .map(|_| process_block(&mut p, &input, 1).err().map(|e| e.kind()))
        .collect();
    assert_eq!(
        kinds,
        [None, Some(ErrorKind::Panicked), Some(ErrorKind::Io), None]
    );
}

#[test]
fn fail_start_times_fails_that_many_constructions_of_the_stage_then_succeeds() {
    let id = unique_stage_id("mock-start");
    let inputs = [format(2)];
    let ctx = context(&id, &inputs);
    let build = || {
        new_storage(
            &registry(),
            "mock-storage",
            r#"{"fail_start_times": 2}"#,
            &ctx,
        )
    };
    for attempt in 1..=2 {
        let err = build().err().expect("construction fails");
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(err.message().contains(&format!("{attempt} of 2")), "{err}");
    }
    assert!(build().is_ok(), "the third construction succeeds");
    assert!(build().is_ok(), "and so do later ones");
}

#[test]
fn fail_start_times_fails_capture_start_then_succeeds() {
    let id = unique_stage_id("mock-capture-start");
    let mut cap = new_capture(
        &registry(),
        "mock-capture",
        r#"{"fail_start_times": 1}"#,
        &context(&id, &[]),
    )
    .expect("capture");
    let err = cap.start().into_result().expect_err("first start fails");
    assert_eq!(err.kind(), ErrorKind::Io);
    cap.start().into_result().expect("second start succeeds");
}

#[test]
fn finite_capture_produces_exactly_its_frames_then_finishes() {
    let mut cap = capture(r#"{"channels": 3, "frames": 1000}"#);
    let blocks: Vec<Block> = (0..4).map(|_| read(&mut cap, 3).expect("read")).collect();
    let frames: Vec<usize> = blocks.iter().map(|b| b.samples.len() / 3).collect();
    assert_eq!(frames, [480, 480, 40, 0]);
    assert_eq!(blocks[1].status, ReadStatus::More);
    assert_eq!(blocks[2].status, ReadStatus::Finished);
    assert_eq!(blocks[3].status, ReadStatus::Finished);
    assert_eq!(cap.length_frames().into_option(), Some(1000));
}

#[test]
fn device_that_never_comes_back_fails_every_read_and_start() {
    let mut cap = capture(r#"{"device_lost_at_block": 1}"#);
    read(&mut cap, 2).expect("block 0 is read");
    for _ in 0..3 {
        let err = read(&mut cap, 2).err().expect("the device is lost");
        assert_eq!(err.kind(), ErrorKind::DeviceLost);
        assert!(err.message().contains("never back"), "{err}");
    }
    let err = cap.start().into_result().expect_err("start fails too");
    assert_eq!(err.kind(), ErrorKind::DeviceLost);
}

#[test]
fn device_back_after_an_outage_skips_its_frames_and_flags_a_discontinuity() {
    let dir = TempDir::new("mock-device");
    let back_after_ms = 20;
    let mut cap = capture(&format!(
        r#"{{"channels": 2, "device_lost_at_block": 1, "back_after_ms": {back_after_ms}}}"#
    ));
    let (mut st, path) = storage(dir.path(), 2, "");
    let first = read(&mut cap, 2).expect("block 0");
    write(&mut st, &first, 2).expect("write");
    let lost = read(&mut cap, 2)
        .err()
        .expect("the device is lost at block 1");
    assert_eq!(lost.kind(), ErrorKind::DeviceLost);

    // Poll as a host's recovery would, until the device is back.
    let deadline = Instant::now() + Duration::from_secs(30);
    let back = loop {
        match read(&mut cap, 2) {
            Ok(block) => break block,
            Err(e) if e.kind() == ErrorKind::DeviceLost && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("the device did not come back: {e}"),
        }
    };
    let outage = back_after_ms * u64::from(SAMPLE_RATE) / 1000;
    assert_eq!(back.position, u64::from(BLOCK_FRAMES) + outage);
    assert_eq!(back.flags & FLAG_DISCONTINUITY, FLAG_DISCONTINUITY);
    write(&mut st, &back, 2).expect("write");
    let next = read(&mut cap, 2).expect("the block after");
    assert_eq!(next.flags & FLAG_DISCONTINUITY, 0);
    write(&mut st, &next, 2).expect("write");

    st.finalize().into_result().expect("finalize");
    let r = report(&path);
    assert_eq!(r["gaps"], 0, "an announced gap is not a loss: {r}");
    assert_eq!(r["announced_gaps"], 1, "{r}");
    assert_eq!(r["announced_missing_frames"], outage, "{r}");
}

#[test]
fn restarted_capture_continues_the_sequence_without_refiring_its_fault() {
    let id = unique_stage_id("mock-restart");
    let config = r#"{"channels": 1, "panic_at_block": 1}"#;
    let build = || {
        let mut cap =
            new_capture(&registry(), "mock-capture", config, &context(&id, &[])).expect("capture");
        cap.start().into_result().expect("start");
        cap
    };
    let mut first = build();
    assert_eq!(read(&mut first, 1).expect("block 0").position, 0);
    let err = read(&mut first, 1).err().expect("block 1 panics");
    assert_eq!(err.kind(), ErrorKind::Panicked);
    drop(first);

    let mut second = build();
    let positions: Vec<u64> = (0..3)
        .map(|_| {
            read(&mut second, 1)
                .expect("the restarted stage reads")
                .position
        })
        .collect();
    let b = u64::from(BLOCK_FRAMES);
    assert_eq!(positions, [b, 2 * b, 3 * b]);
}

#[test]
fn fail_finalize_fails_after_writing_the_report() {
    let dir = TempDir::new("mock-finalize");
    let (mut st, path) = storage(dir.path(), 1, r#", "fail_finalize": true"#);
    let err = st.finalize().into_result().expect_err("finalize fails");
    assert_eq!(err.kind(), ErrorKind::Io);
    assert_eq!(report(&path)["frames_written"], 0);
}

#[test]
fn bad_mock_config_is_refused_before_anything_starts_naming_the_key() {
    let reg = registry();
    let entry = reg.get("mock-capture").expect("mock-capture");
    let layout = entry.module.layout();
    let ctx = context("layout", &[]);
    for (config, key) in [
        (r#"{"channels": 0}"#, "channels"),
        (r#"{"stall_at_block": 1}"#, "stall_ms"),
        (r#"{"back_after_ms": 5}"#, "back_after_ms"),
        (r#"{"chanels": 2}"#, "chanels"),
    ] {
        let err = layout(
            "mock-capture".into(),
            config.into(),
            tapeline_plugin_api::abi::ContextRef::new(&ctx),
        )
        .into_result()
        .err()
        .unwrap_or_else(|| panic!("{config} is accepted"));
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{config}: {err}");
        assert_eq!(err.key().unwrap_or(""), key, "{config}: {err}");
    }
}
