//! A plugin that panics inside a call returns an error carrying the panic text to the host; the
//! host process keeps running and the plugin's next call returns normally.

use tapeline_plugin_api::abi_stable::std_types::RResult;
use tapeline_plugin_api::{ErrorKind, PluginError, ReadStatus};
use tapeline_tests::{
    context, format, input_block, new_capture, new_processor, new_storage, output_block,
    process_block, registry, unique_stage_id, BLOCK_FRAMES,
};

fn assert_panicked(result: Result<impl std::fmt::Debug, PluginError>, at_block: u64) {
    let err = result.expect_err("the call at the panic block fails");
    assert_eq!(err.kind(), ErrorKind::Panicked, "{err}");
    assert!(
        err.message()
            .contains(&format!("injected panic at block {at_block}")),
        "the error lacks the panic text: {err}"
    );
}

#[test]
fn panic_in_process_becomes_a_panicked_error_and_later_calls_succeed() {
    let reg = registry();
    let id = unique_stage_id("panic-process");
    let inputs = [format(2)];
    let ctx = context(&id, &inputs);
    let mut p = new_processor(&reg, "mock-process", r#"{"panic_at_block": 2}"#, &ctx)
        .expect("mock-process builds");
    let input: Vec<f32> = (0..BLOCK_FRAMES * 2).map(|i| i as f32 / 1e4).collect();

    let results: Vec<_> = (0..4).map(|_| process_block(&mut p, &input, 2)).collect();
    let mut results = results.into_iter();
    for call in 1..=2 {
        let out = results.next().unwrap();
        assert_eq!(out.as_deref(), Ok(&input[..]), "call {call}");
    }
    assert_panicked(results.next().unwrap(), 2);
    let after = results.next().unwrap();
    assert_eq!(after.as_deref(), Ok(&input[..]), "the call after the panic");
}

#[test]
fn panic_in_capture_read_becomes_an_error_and_the_next_read_succeeds() {
    let reg = registry();
    let id = unique_stage_id("panic-capture");
    let ctx = context(&id, &[]);
    let mut cap = new_capture(
        &reg,
        "mock-capture",
        r#"{"channels": 1, "panic_at_block": 0}"#,
        &ctx,
    )
    .expect("mock-capture builds");
    cap.start().into_result().expect("start");
    let mut buf = vec![0.0f32; BLOCK_FRAMES as usize];

    let first = cap.read(&mut output_block(&mut buf, 1)).into_result();
    assert_panicked(first, 0);

    let mut out = output_block(&mut buf, 1);
    let status = cap
        .read(&mut out)
        .into_result()
        .expect("the read after the panic");
    assert_eq!(status, ReadStatus::More);
    assert_eq!(out.frames, BLOCK_FRAMES);
}

#[test]
fn panic_in_storage_write_becomes_an_error_and_the_next_write_succeeds() {
    let reg = registry();
    let id = unique_stage_id("panic-storage");
    let inputs = [format(1)];
    let ctx = context(&id, &inputs);
    let mut st = new_storage(&reg, "mock-storage", r#"{"panic_at_block": 1}"#, &ctx)
        .expect("mock-storage builds");
    let block = vec![0.0f32; BLOCK_FRAMES as usize];
    let results: Vec<RResult<(), PluginError>> = (0..3)
        .map(|_| st.write(&input_block(&block, 1, 0)))
        .collect();
    assert!(results[0].is_ok());
    assert_panicked(results[1].clone().into_result(), 1);
    assert!(results[2].is_ok(), "{:?}", results[2]);
    let report = st.finalize().into_result().expect("finalize after a panic");
    assert_eq!(report.frames_written, 2 * u64::from(BLOCK_FRAMES));
}
