//! `meter`: audio passes bit for bit; levels are right.

use super::*;
use crate::Meter;

fn levels_after(json: &str, signal: &[f32], channels: u32, block: usize) -> (Vec<f32>, Vec<Level>) {
    let input = [format(channels, RATE)];
    let c = ctx(&input);
    let ports = Meter::outputs(&config(json), &c).unwrap();
    let mut meter: Meter = build(json, &c);
    assert_eq!(meter.levels().len(), channels as usize);
    assert!(meter
        .levels()
        .iter()
        .all(|l| l.peak_db <= -200.0 && l.rms_db <= -200.0));
    let out = run(&mut meter, &[(signal, channels)], &ports, block).remove(0);
    (out, meter.levels().to_vec())
}

#[test]
fn passes_audio_bit_exactly_and_reads_a_half_scale_sine_at_minus_6_dbfs() {
    // Left: 1 kHz sine at 0.5 (10 whole cycles per 480-frame block); right: noise with the
    // values a lossy path would change.
    let frames = 4800;
    let mut signal = sine(1000.0, RATE, 0.5, frames, 2);
    let right = noise(frames, 1, 0.25, 9);
    for (f, r) in signal.chunks_exact_mut(2).zip(&right) {
        f[1] = *r;
    }
    signal[1] = -0.0;
    signal[3] = f32::MIN_POSITIVE / 4.0;
    let (out, levels) = levels_after("{}", &signal, 2, BLOCK);
    assert!(same_bits(&out, &signal), "meter changed the audio");
    println!(
        "meter: 0.5 sine peak {:.4} dBFS, RMS {:.4} dBFS",
        levels[0].peak_db, levels[0].rms_db
    );
    assert!((levels[0].peak_db - gain_to_db(0.5)).abs() < 0.001);
    assert!((levels[0].peak_db + 6.02).abs() < 0.01);
    assert!(
        (levels[0].rms_db + 9.03).abs() < 0.01,
        "{}",
        levels[0].rms_db
    );
    let last_block = &right[frames - BLOCK..];
    let peak = last_block.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!((levels[1].peak_db - gain_to_db(peak)).abs() < 1e-4);
    assert!((f64::from(levels[1].rms_db) - db(rms(last_block))).abs() < 1e-3);
}

#[test]
fn windowed_rms_spans_blocks() {
    // 100 ms window = 4800 frames. 0.5 DC for 9600 frames, then silence for 2400 frames: the
    // window then holds half DC, half silence.
    let mut signal = vec![0.5f32; 9600];
    signal.extend(std::iter::repeat_n(0.0, 2400));
    let (_, levels) = levels_after(r#"{"window_ms": 100}"#, &signal, 1, BLOCK);
    let expected = gain_to_db(0.5 * 0.5f32.sqrt());
    assert!(
        (levels[0].rms_db - expected).abs() < 1e-3,
        "{} vs {expected}",
        levels[0].rms_db
    );
    // The peak is per block: the last block is silent.
    assert!(levels[0].peak_db <= -200.0);

    // Before the window fills, the RMS covers what has arrived.
    let (_, levels) = levels_after(r#"{"window_ms": 100}"#, &[0.25f32; 960], 1, BLOCK);
    assert!((levels[0].rms_db - gain_to_db(0.25)).abs() < 1e-4);
}

#[test]
fn bad_window_is_refused() {
    let input = [format(1, RATE)];
    for json in [
        r#"{"window_ms": 0}"#,
        r#"{"window_ms": -5}"#,
        r#"{"window_ms": 1e9}"#,
    ] {
        let e = rejection::<Meter>(json, &ctx(&input));
        assert_eq!(e.key(), Some("window_ms"), "{json}");
    }
    assert!(parse_config::<crate::MeterConfig>(r#"{"window": 5}"#).is_err());
}
