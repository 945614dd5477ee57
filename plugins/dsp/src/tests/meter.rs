//! `meter`: audio passes bit for bit; levels are right.

use super::*;
use crate::Meter;

fn levels_after(json: &str, signal: &[f32], channels: u32, block: usize) -> (Vec<f32>, Vec<Level>) {
    let input = [format(channels, RATE)];
    let cx = ctx(&input);
    let c = cx.get();
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
    // The peak covers the window too (the last block alone is silent): RMS never above peak.
    assert!((levels[0].peak_db - gain_to_db(0.5)).abs() < 1e-4);
    assert!(levels[0].rms_db <= levels[0].peak_db);

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
        let e = rejection::<Meter>(json, &ctx(&input).get());
        assert_eq!(e.key(), Some("window_ms"), "{json}");
    }
    assert!(parse_config::<crate::MeterConfig>(r#"{"window": 5}"#).is_err());
}

#[test]
fn a_windowed_peak_forgets_what_left_the_window_and_never_reads_below_the_rms() {
    // 100 ms window = 4800 frames, peak kept in 64 chunks of 75 frames. A 0.9 spike, then
    // 0.1 DC: while the spike is in the window the peak shows it; a chunk after it has left,
    // the peak is the DC's.
    let mut signal = vec![0.1f32; 2000];
    signal[1000] = 0.9;
    signal.extend(std::iter::repeat_n(0.1, 4800 + 75 - 1000));
    let (_, levels) = levels_after(r#"{"window_ms": 100}"#, &signal[..5760], 1, BLOCK);
    assert!(
        (levels[0].peak_db - gain_to_db(0.9)).abs() < 1e-4,
        "{levels:?}"
    );
    let (_, levels) = levels_after(r#"{"window_ms": 100}"#, &signal, 1, 35);
    assert!(
        (levels[0].peak_db - gain_to_db(0.1)).abs() < 1e-4,
        "{levels:?}"
    );
    // Random blocks of a noisy signal with bursts: at every block, RMS <= peak, and the peak
    // is at least the true peak of the window and at most that of the window plus one chunk.
    let input = [format(1, RATE)];
    let cx = ctx(&input);
    let c = cx.get();
    let ports = Meter::outputs(&config(r#"{"window_ms": 10}"#), &c).unwrap();
    let mut meter: Meter = build(r#"{"window_ms": 10}"#, &c);
    let mut x = noise(20_000, 1, 0.2, 3);
    for (i, s) in x.iter_mut().enumerate() {
        if (i / 1500) % 3 == 0 {
            *s *= 4.0;
        }
    }
    let (len, chunk) = (480, 8);
    let mut at = 0;
    for n in [1usize, 7, 480, 33, 1000, 2, 479, 481].iter().cycle() {
        if at + n > x.len() {
            break;
        }
        run(&mut meter, &[(&x[at..at + n], 1)], &ports, *n);
        at += n;
        let l = meter.levels()[0];
        assert!(l.rms_db <= l.peak_db, "at {at}: {l:?}");
        let max = |from: usize| x[from..at].iter().fold(0.0f32, |m, s| m.max(s.abs()));
        let (lo, hi) = (
            max(at.saturating_sub(len)),
            max(at.saturating_sub(len + chunk)),
        );
        assert!(
            l.peak_db >= gain_to_db(lo) - 1e-4 && l.peak_db <= gain_to_db(hi) + 1e-4,
            "at {at}: peak {} dB, window {} dB, window + chunk {} dB",
            l.peak_db,
            gain_to_db(lo),
            gain_to_db(hi)
        );
    }
}
