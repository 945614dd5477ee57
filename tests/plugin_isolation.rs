//! Libraries loaded side by side in one process stay distinct, and instances of one plugin keep
//! their own settings and state.

use tapeline_plugin_api::db_to_gain;
use tapeline_tests::{
    context, format, new_capture, new_processor, output_block, process_block, registry,
    unique_stage_id, BLOCK_FRAMES,
};

/// A stereo ramp, different in every sample.
fn ramp(blocks: usize) -> Vec<Vec<f32>> {
    (0..blocks)
        .map(|b| {
            (0..BLOCK_FRAMES as usize * 2)
                .map(|i| ((b * 1000 + i) % 997) as f32 / 997.0 - 0.5)
                .collect()
        })
        .collect()
}

#[test]
fn two_libraries_in_one_process_each_answer_for_their_own_plugins() {
    let reg = registry();
    let gain = reg.get("gain").expect("gain is installed");
    let mock = reg.get("mock-process").expect("mock-process is installed");
    assert_ne!(
        gain.library, mock.library,
        "gain and mock come from one file"
    );

    let inputs = [format(2)];
    let ctx = context("two-libs", &inputs);
    // Each library's root module knows only its own plugins: the host did not hand out one
    // cached module for both paths.
    let wrong = (gain.module.new_processor())(
        "mock-process".into(),
        "{}".into(),
        tapeline_plugin_api::abi::ContextRef::new(&ctx),
    )
    .into_result()
    .err()
    .expect("the gain library has no mock-process");
    assert!(
        wrong.message().contains("no plugin named `mock-process`"),
        "{wrong}"
    );

    let mut g = new_processor(&reg, "gain", r#"{"db": 6}"#, &ctx).expect("gain builds");
    let id = unique_stage_id("two-libs");
    let mut m = new_processor(&reg, "mock-process", "{}", &context(&id, &inputs))
        .expect("mock-process builds");
    let factor = db_to_gain(6.0);
    for input in ramp(3) {
        let gained = process_block(&mut g, &input, 2).expect("gain processes");
        for (o, i) in gained.iter().zip(&input) {
            assert!((o - i * factor).abs() < 1e-6, "{o} != {i} * {factor}");
        }
        let through = process_block(&mut m, &gained, 2).expect("mock processes");
        assert_eq!(through, gained, "mock-process changed the audio");
    }
}

#[test]
fn two_gain_instances_interleaved_match_each_run_alone() {
    let reg = registry();
    let inputs = [format(2)];
    let ctx = context("gains", &inputs);
    // A ramp longer than one block gives each instance state that evolves from call to call.
    let quiet = r#"{"db": -12, "ramp_ms": 25}"#;
    let loud = r#"{"db": 6, "ramp_ms": 15}"#;
    let blocks = ramp(4);

    let mut a = new_processor(&reg, "gain", quiet, &ctx).expect("gain a");
    let mut b = new_processor(&reg, "gain", loud, &ctx).expect("gain b");
    let mut interleaved_a = Vec::new();
    let mut interleaved_b = Vec::new();
    for input in &blocks {
        interleaved_a.push(process_block(&mut a, input, 2).expect("a"));
        interleaved_b.push(process_block(&mut b, input, 2).expect("b"));
    }

    let alone = |config: &str| -> Vec<Vec<f32>> {
        let mut p = new_processor(&reg, "gain", config, &ctx).expect("gain alone");
        blocks
            .iter()
            .map(|input| process_block(&mut p, input, 2).expect("alone"))
            .collect()
    };
    assert_eq!(interleaved_a, alone(quiet), "instance a was disturbed by b");
    assert_eq!(interleaved_b, alone(loud), "instance b was disturbed by a");
    assert_ne!(interleaved_a, interleaved_b);
    let last = blocks.len() - 1;
    let (i, qa, lb) = (
        blocks[last][0],
        interleaved_a[last][0],
        interleaved_b[last][0],
    );
    assert!(
        (qa - i * db_to_gain(-12.0)).abs() < 1e-6,
        "a ends at -12 dB"
    );
    assert!((lb - i * db_to_gain(6.0)).abs() < 1e-6, "b ends at +6 dB");
}

#[test]
fn two_mock_captures_with_different_stage_ids_run_their_own_sequences() {
    let reg = registry();
    let (id_a, id_b) = (unique_stage_id("cap"), unique_stage_id("cap"));
    let mut a = new_capture(
        &reg,
        "mock-capture",
        r#"{"channels": 1}"#,
        &context(&id_a, &[]),
    )
    .expect("capture a");
    let mut b = new_capture(
        &reg,
        "mock-capture",
        r#"{"channels": 1}"#,
        &context(&id_b, &[]),
    )
    .expect("capture b");
    let mut buf = vec![0.0f32; BLOCK_FRAMES as usize];
    let mut positions = Vec::new();
    for which in ['a', 'b', 'a', 'a', 'b'] {
        let cap = if which == 'a' { &mut a } else { &mut b };
        let mut out = output_block(&mut buf, 1);
        cap.read(&mut out).into_result().expect("read");
        positions.push(out.position / u64::from(BLOCK_FRAMES));
    }
    assert_eq!(positions, [0, 0, 1, 2, 1]);
}
