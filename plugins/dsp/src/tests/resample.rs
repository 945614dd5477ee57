//! `resample`: tone frequency, spectral purity, timing, lengths, and the port it declares.

use rustfft::{num_complex::Complex, FftPlanner};

use super::*;
use crate::Resample;

/// The settings of `quality`, each with the engine it runs for 44.1 ↔ 48 kHz.
const QUALITIES: [&str; 3] = ["fast", "balanced", "best"];

/// Resample `signal` (`channels` interleaved) from `rate_in` to `rate_out` at `quality`
/// through a fresh stage, in blocks of `BLOCK` frames, the pipeline running at `rate_in`.
/// Returns the output and the port the stage declared.
fn resample_at(
    quality: &str,
    rate_in: u32,
    rate_out: u32,
    signal: &[f32],
    channels: u32,
) -> (Vec<f32>, OutputPort) {
    let input = [format(channels, rate_in)];
    let cx = ctx_at(rate_in, &input);
    let c = cx.get();
    let json = format!(r#"{{"rate": {rate_out}, "quality": "{quality}"}}"#);
    let ports = Resample::outputs(&config(&json), &c).unwrap();
    assert_eq!(ports.len(), 1);
    let mut stage: Resample = build(&json, &c);
    let out = run(&mut stage, &[(signal, channels)], &ports, BLOCK).remove(0);
    (out, ports[0].clone())
}

/// [`resample_at`] the default quality.
fn resample(rate_in: u32, rate_out: u32, signal: &[f32], channels: u32) -> (Vec<f32>, OutputPort) {
    let input = [format(channels, rate_in)];
    let cx = ctx_at(rate_in, &input);
    let c = cx.get();
    let json = format!(r#"{{"rate": {rate_out}}}"#);
    let ports = Resample::outputs(&config(&json), &c).unwrap();
    let mut stage: Resample = build(&json, &c);
    let out = run(&mut stage, &[(signal, channels)], &ports, BLOCK).remove(0);
    (out, ports[0].clone())
}

/// Whether `quality` takes `rate_in` to `rate_out` with the FFT engine.
fn uses_fft(quality: &str, rate_in: u32, rate_out: u32) -> bool {
    let q: crate::ResampleConfig = config(&format!(
        r#"{{"rate": {rate_out}, "quality": "{quality}"}}"#
    ));
    crate::resample::fft_unit(rate_in, rate_out, q.quality).is_some()
}

/// Frequency from the rising zero crossings, each placed by linear interpolation.
fn zero_crossing_frequency(x: &[f32], rate: f64) -> f64 {
    let crossings: Vec<f64> = x
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] < 0.0 && w[1] >= 0.0)
        .map(|(i, w)| i as f64 + f64::from(w[0]) / f64::from(w[0] - w[1]))
        .collect();
    let (first, last) = (crossings[0], crossings[crossings.len() - 1]);
    (crossings.len() - 1) as f64 / (last - first) * rate
}

/// Modified Bessel function of the first kind, order 0.
fn bessel_i0(x: f64) -> f64 {
    let (mut sum, mut term, mut k) = (1.0, 1.0, 1.0);
    while term > sum * 1e-17 {
        term *= (x / (2.0 * k)).powi(2);
        sum += term;
        k += 1.0;
    }
    sum
}

/// Power spectrum (bins 0..=N/2) of `x` under a Kaiser window with beta 20 (side lobes
/// below -180 dB, so the window's own leakage cannot mask -80 dB).
fn power_spectrum(x: &[f32]) -> Vec<f64> {
    let n = x.len();
    let beta = 20.0;
    let norm = bessel_i0(beta);
    let mut buf: Vec<Complex<f64>> = x
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let r = 2.0 * i as f64 / (n - 1) as f64 - 1.0;
            let w = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / norm;
            Complex::new(f64::from(*v) * w, 0.0)
        })
        .collect();
    FftPlanner::new().plan_fft_forward(n).process(&mut buf);
    buf[..=n / 2].iter().map(|c| c.norm_sqr()).collect()
}

/// Peak frequency of a power spectrum, refined by a parabola through the log magnitudes of the
/// peak bin and its neighbours.
fn peak_frequency(power: &[f64], rate: f64, n: usize) -> f64 {
    let k = (1..power.len() - 1)
        .max_by(|a, b| power[*a].total_cmp(&power[*b]))
        .unwrap();
    let (a, b, c) = (power[k - 1].ln(), power[k].ln(), power[k + 1].ln());
    let delta = 0.5 * (a - c) / (a - 2.0 * b + c);
    (k as f64 + delta) * rate / n as f64
}

/// Energy more than `halfwidth` Hz from `tone`, relative to the energy within, in dB.
fn out_of_band_db(power: &[f64], rate: f64, n: usize, tone: f64, halfwidth: f64) -> f64 {
    let (mut inside, mut outside) = (0.0, 0.0);
    for (k, p) in power.iter().enumerate() {
        if (k as f64 * rate / n as f64 - tone).abs() <= halfwidth {
            inside += p;
        } else {
            outside += p;
        }
    }
    10.0 * (outside / inside).log10()
}

/// Amplitude, and lag in output frames, of the `freq` component of `y` (which starts at output
/// frame `start`) relative to where a sine of phase 0 at input time 0 should be. `y` must hold
/// a whole number of cycles.
fn amplitude_and_lag(y: &[f32], start: usize, freq: f64, rate: f64) -> (f64, f64) {
    let (mut s, mut c) = (0.0, 0.0);
    for (j, v) in y.iter().enumerate() {
        let theta = 2.0 * PI * freq * (start + j) as f64 / rate;
        s += f64::from(*v) * theta.sin();
        c += f64::from(*v) * theta.cos();
    }
    let amplitude = 2.0 * s.hypot(c) / y.len() as f64;
    // y ≈ A sin(theta - phi): s ∝ cos(phi), c ∝ -sin(phi).
    let phi = (-c).atan2(s);
    (amplitude, phi / (2.0 * PI * freq) * rate)
}

/// Take a half-scale sine of `tone` Hz, five seconds and 123 frames long (the last block a
/// short one), from `rate_in` to `rate_out` at `quality`; check that every frame comes out and
/// that the tone keeps its frequency, its level and its time. Returns the energy more than 50
/// Hz from the tone, in dB re the tone (the spur test), over 2^17 frames from 1 s on.
fn tone_spurs(quality: &str, rate_in: u32, rate_out: u32, tone: f64) -> f64 {
    let frames_in = 5 * rate_in as usize + 123;
    let signal = sine(tone, rate_in, 0.5, frames_in, 1);
    let (out, port) = resample_at(quality, rate_in, rate_out, &signal, 1);
    let case = format!("{quality}, {rate_in} -> {rate_out} Hz, {tone} Hz");

    assert_eq!(port.format, format(1, rate_out), "{case}");
    let expected_len = (frames_in as u64 * u64::from(rate_out)).div_ceil(u64::from(rate_in));
    assert_eq!(
        out.len() as u64,
        expected_len,
        "{case}: output covers every input frame"
    );

    let rate = f64::from(rate_out);
    // Steady part: skip 0.1 s at both ends.
    let edge = rate_out as usize / 10;
    let zc = zero_crossing_frequency(&out[edge..out.len() - edge], rate);

    let n = 1 << 17;
    let start = rate_out as usize;
    let power = power_spectrum(&out[start..start + n]);
    let peak = peak_frequency(&power, rate, n);
    let spurious = out_of_band_db(&power, rate, n, tone, 50.0);

    // One second (a whole number of cycles) starting at 1 s.
    let (amplitude, lag) = amplitude_and_lag(&out[start..2 * start], start, tone, rate);

    println!(
        "resample {case}: zero-crossing frequency {zc:.6} Hz ({:+.1e}), DFT peak {peak:.5} Hz \
         ({:+.1e}), energy outside +-50 Hz {spurious:.1} dB re tone, amplitude {:.4} dB re \
         input, lag {lag:.3} output frames, {} frames out of {frames_in} in",
        zc - tone,
        peak - tone,
        db(amplitude / 0.5),
        out.len()
    );
    assert!(
        (zc - tone).abs() < 0.1,
        "{case}: zero crossings give {zc} Hz"
    );
    assert!((peak - tone).abs() < 0.1, "{case}: DFT peak at {peak} Hz");
    assert!(
        db(amplitude / 0.5).abs() < 0.01,
        "{case}: amplitude {amplitude}"
    );
    assert!(
        lag.abs() < 1.0,
        "{case}: latency not compensated: lag {lag} frames"
    );
    spurious
}

/// The spur floor of each quality, in dB re the tone: measured (1 kHz, 48 <-> 44.1 kHz) at
/// -135.4 and -137.2 dB for fast, -136.0 and -135.7 for balanced (both in `f32`, whose rounding
/// sets the floor), -150.8 and -150.7 for best (in `f64`: the floor is the `f32` output's own
/// rounding); 3 to 4 dB of margin for `f32`, 2.7 for best.
fn spur_floor(quality: &str) -> f64 {
    match quality {
        "best" => -148.0,
        _ => -132.0,
    }
}

/// The spur test of one quality, both ways between 44.1 and 48 kHz (FFT engine): a 1 kHz tone
/// comes out with everything more than 50 Hz from it at least [`spur_floor`] down.
fn check_spurs(quality: &str) {
    let floor = spur_floor(quality);
    for (rate_in, rate_out) in [(48_000, 44_100), (44_100, 48_000)] {
        assert!(uses_fft(quality, rate_in, rate_out));
        let spurious = tone_spurs(quality, rate_in, rate_out, 1000.0);
        assert!(
            spurious < floor,
            "{quality}, {rate_in} -> {rate_out}: energy outside the tone {spurious:.1} dB, \
             above {floor} dB"
        );
    }
}

#[test]
fn fast_keeps_a_1khz_tone_exact_and_pure() {
    check_spurs("fast");
}

#[test]
fn balanced_keeps_a_1khz_tone_exact_and_pure() {
    check_spurs("balanced");
}

#[test]
fn best_keeps_a_1khz_tone_exact_and_pure() {
    check_spurs("best");
}

#[test]
fn what_the_lower_rate_cannot_hold_is_filtered_out() {
    // 48 -> 44.1 kHz: a tone at 20 kHz passes whole; one at or above the output's Nyquist
    // frequency (22.05 kHz), which would alias, does not come out (measured: 139 dB down or
    // more in f32, 153 in f64).
    for quality in QUALITIES {
        let stop = if quality == "best" { -145.0 } else { -130.0 };
        for (tone, lowest, highest) in [
            (20_000.0, -0.01, 0.01),
            (22_050.0, -400.0, stop),
            (22_200.0, -400.0, stop),
            (23_000.0, -400.0, stop),
        ] {
            let signal = sine(tone, 48_000, 0.5, 48_000, 1);
            let (out, _) = resample_at(quality, 48_000, 44_100, &signal, 1);
            let level = db(rms(&out[4410..out.len() - 4410]) * 2f64.sqrt() / 0.5);
            println!("resample {quality} 48k->44.1k, {tone} Hz: {level:.2} dB");
            assert!(
                (lowest..=highest).contains(&level),
                "{quality}, {tone} Hz: {level} dB"
            );
        }
    }
}

#[test]
fn the_default_quality_is_balanced() {
    let q: crate::ResampleConfig = config(r#"{"rate": 44100}"#);
    assert_eq!(q.quality, crate::Quality::Balanced);
    let signal = noise(3000, 2, 0.5, 9);
    let (default, _) = resample(48_000, 44_100, &signal, 2);
    let (balanced, _) = resample_at("balanced", 48_000, 44_100, &signal, 2);
    assert!(same_bits(&default, &balanced));
}

#[test]
fn a_ratio_too_fine_for_fft_units_goes_through_the_sinc_engine() {
    // 48000:44101 does not reduce: an FFT unit would be 48000 -> 44101 frames at the least.
    // Measured: -137.1 dB (fast), -135.9 (balanced, in f32), -151.3 (best, in f64).
    for quality in QUALITIES {
        let floor = spur_floor(quality);
        assert!(!uses_fft(quality, 48_000, 44_101), "{quality}");
        let spurious = tone_spurs(quality, 48_000, 44_101, 1000.0);
        assert!(
            spurious < floor,
            "{quality}, sinc: energy outside the tone {spurious:.1} dB, above {floor} dB"
        );
    }
}

#[test]
fn upsampling_44k1_to_48k_keeps_a_3khz_tone_exact_and_in_time() {
    for quality in QUALITIES {
        let spurious = tone_spurs(quality, 44_100, 48_000, 3000.0);
        assert!(spurious < spur_floor(quality), "{quality}: {spurious} dB");
    }
}

#[test]
fn the_port_has_the_new_rate_and_room_for_every_block() {
    let input = [format(2, RATE)];
    let cx = ctx(&input);
    let c = cx.get();
    for quality in QUALITIES {
        for rate in [8_000u32, 44_100, 96_000, 192_000] {
            let json = format!(r#"{{"rate": {rate}, "quality": "{quality}"}}"#);
            let ports = Resample::outputs(&config(&json), &c).unwrap();
            assert_eq!(ports.len(), 1);
            assert_eq!(ports[0].name(), "out");
            assert_eq!(ports[0].format, format(2, rate));
            let nominal = (BLOCK as u64 * u64::from(rate)).div_ceil(u64::from(RATE)) as u32;
            assert!(
                ports[0].max_frames > nominal,
                "{quality}, {rate}: max_frames {} for {nominal} nominal",
                ports[0].max_frames
            );
            // A short final block plus the flushed tail fits (run() fails if it does not), in
            // a stream shorter than an FFT unit and in one of several.
            for frames in [BLOCK * 3 + 1, BLOCK * 61 + 1] {
                let signal = noise(frames, 2, 0.5, 1);
                let out = run(
                    &mut build::<Resample>(&json, &c),
                    &[(&signal, 2)],
                    &ports,
                    BLOCK,
                )
                .remove(0);
                let expected = (frames as u64 * u64::from(rate)).div_ceil(u64::from(RATE));
                assert_eq!(
                    out.len() as u64,
                    expected * 2,
                    "{quality}, {rate}, {frames}"
                );
            }
        }
    }
}

#[test]
fn every_length_comes_out_whole() {
    // Short last blocks, a last block that is exactly full, a lone frame, and streams of
    // several FFT units (4480 input frames at best) and a bit.
    for quality in QUALITIES {
        for frames in [
            1usize, 100, 479, 480, 481, 1000, 4321, 4479, 4480, 4481, 4800, 9000, 20_000,
        ] {
            let signal = noise(frames, 1, 0.5, frames as u64);
            let (out, _) = resample_at(quality, 48_000, 44_100, &signal, 1);
            assert_eq!(
                out.len() as u64,
                (frames as u64 * 441).div_ceil(480),
                "{quality}: {frames} frames in"
            );
        }
    }
}

#[test]
fn blocks_come_out_even_not_in_units() {
    // The FFT engine works a unit at a time but gives out what each block is worth.
    for quality in QUALITIES {
        let signal = noise(BLOCK * 42, 1, 0.5, 8);
        let input = [format(1, RATE)];
        let cx = ctx(&input);
        let c = cx.get();
        let json = format!(r#"{{"rate": 44100, "quality": "{quality}"}}"#);
        let ports = Resample::outputs(&config(&json), &c).unwrap();
        let mut stage: Resample = build(&json, &c);
        let mut sizes = Vec::new();
        for block in signal.chunks(BLOCK) {
            sizes.push(run_blocks(&mut stage, &[(block, 1)], &ports, BLOCK)[0].len());
        }
        // Nothing while the first unit and a half fill, then 441 frames a block, give or take
        // one.
        let first = sizes.iter().position(|n| *n > 0).unwrap();
        assert!(
            sizes[first + 1..].iter().all(|n| (440..=442).contains(n)),
            "{quality}: {sizes:?}"
        );
    }
}

/// One block into `stage` through the audio-path guard: `samples` (stereo) into a buffer of
/// the port's size. Returns what came out.
fn stereo_block(stage: &mut Resample, port: &OutputPort, samples: &[f32]) -> Vec<f32> {
    if samples.is_empty() {
        return Vec::new();
    }
    run_blocks(
        stage,
        &[(samples, 2)],
        std::slice::from_ref(port),
        samples.len() / 2,
    )
    .remove(0)
}

#[test]
fn blocks_and_tail_fit_a_resample_behind_at_the_pipeline_rate() {
    // A source at its own rate, taken to the pipeline's rate, then to 44.1 kHz: the second
    // stage counts on blocks of `block_frames` (480) or an FFT engine's tail blocks, each
    // call of the first one going to it as one block, as the host does.
    for quality in QUALITIES {
        for rate_in in [44_100u32, 8_000, 96_000] {
            let case = format!("{quality}, {rate_in} -> {RATE} -> 44100");
            let in_a = [format(2, rate_in)];
            let cx_a = ctx(&in_a);
            let json_a = format!(r#"{{"rate": {RATE}, "quality": "{quality}"}}"#);
            let port_a = Resample::outputs(&config(&json_a), &cx_a.get()).unwrap()[0].clone();
            let mut a: Resample = build(&json_a, &cx_a.get());
            let in_b = [format(2, RATE)];
            let cx_b = ctx(&in_b);
            let json_b = format!(r#"{{"rate": 44100, "quality": "{quality}"}}"#);
            let port_b = Resample::outputs(&config(&json_b), &cx_b.get()).unwrap()[0].clone();
            let mut b: Resample = build(&json_b, &cx_b.get());

            let frames = 3 * rate_in as usize + 17;
            let nominal = (BLOCK as u64 * u64::from(rate_in)).div_ceil(u64::from(RATE)) as usize;
            let mut total = 0;
            for block in noise(frames, 2, 0.5, 5).chunks(nominal * 2) {
                let mid = stereo_block(&mut a, &port_a, block);
                assert!(
                    mid.len() / 2 <= BLOCK + 1,
                    "{case}: {} frames",
                    mid.len() / 2
                );
                total += stereo_block(&mut b, &port_b, &mid).len() / 2;
            }
            let mut buf = vec![0.0; port_a.max_frames as usize * 2];
            loop {
                let mut outs = [output(&mut buf, 2).with_frames(0)];
                audio_call("finish", || a.finish(&mut outs)).unwrap();
                let n = outs[0].frames() as usize;
                if n == 0 {
                    break;
                }
                total += stereo_block(&mut b, &port_b, &buf[..n * 2]).len() / 2;
            }
            total += finish(&mut b, &[port_b]).remove(0).len() / 2;
            let mid = (frames as u64 * u64::from(RATE)).div_ceil(u64::from(rate_in));
            assert_eq!(total as u64, (mid * 441).div_ceil(480), "{case}");
        }
    }
}

#[test]
fn a_stream_after_the_end_starts_afresh() {
    let input = [format(1, RATE)];
    let cx = ctx(&input);
    let c = cx.get();
    for quality in QUALITIES {
        let json = format!(r#"{{"rate": 32000, "quality": "{quality}"}}"#);
        let ports = Resample::outputs(&config(&json), &c).unwrap();
        let first = noise(1000, 1, 0.5, 3);
        let second = sine(440.0, RATE, 0.3, 2000, 1);
        let mut stage: Resample = build(&json, &c);
        run(&mut stage, &[(&first, 1)], &ports, BLOCK);
        let again = run(&mut stage, &[(&second, 1)], &ports, BLOCK).remove(0);
        let fresh = run(
            &mut build::<Resample>(&json, &c),
            &[(&second, 1)],
            &ports,
            BLOCK,
        )
        .remove(0);
        assert!(same_bits(&again, &fresh), "{quality}");
    }
}

#[test]
fn channels_go_through_the_same_filter() {
    // Right is minus left, so the output's right must be exactly minus its left.
    let mut signal = noise(5000, 2, 0.5, 4);
    for f in signal.chunks_exact_mut(2) {
        f[1] = -f[0];
    }
    for (quality, rate_out) in [
        ("fast", 22_050),
        ("balanced", 22_050),
        ("best", 22_050),
        ("balanced", 22_051),
    ] {
        let (out, _) = resample_at(quality, 48_000, rate_out, &signal, 2);
        assert!(!out.is_empty());
        assert!(
            out.chunks_exact(2).all(|f| f[1] == -f[0]),
            "{quality}, {rate_out}"
        );
    }
}

#[test]
fn same_rate_passes_through_bit_exactly() {
    let signal = noise(2000, 2, 1.0, 6);
    for quality in QUALITIES {
        let (out, port) = resample_at(quality, 48_000, 48_000, &signal, 2);
        assert_eq!(port.max_frames, 0);
        assert!(same_bits(&out, &signal));
    }
}

/// 48k -> 44.1k -> 48k at `quality`, the second stage fed the first one's blocks as they
/// come (440 to 442 frames, none at first from the FFT engine), as the host would.
fn check_round_trip(quality: &str) {
    let tone = 1000.0;
    let frames = 2 * RATE as usize + 55;
    let signal = sine(tone, RATE, 0.5, frames, 1);

    let in_a = [format(1, RATE)];
    let cx_a = ctx(&in_a);
    let ca = cx_a.get();
    let json_a = format!(r#"{{"rate": 44100, "quality": "{quality}"}}"#);
    let ports_a = Resample::outputs(&config(&json_a), &ca).unwrap();
    let mut a: Resample = build(&json_a, &ca);

    let in_b = [format(1, 44_100)];
    let cx_b = ctx(&in_b);
    let cb = cx_b.get();
    let json_b = format!(r#"{{"rate": 48000, "quality": "{quality}"}}"#);
    let ports_b = Resample::outputs(&config(&json_b), &cb).unwrap();
    let mut b: Resample = build(&json_b, &cb);

    let mut out = Vec::new();
    for block in signal.chunks(BLOCK) {
        let mid = run_blocks(&mut a, &[(block, 1)], &ports_a, BLOCK).remove(0);
        // One call per upstream block, whatever its size.
        let back = run_blocks(&mut b, &[(&mid, 1)], &ports_b, mid.len().max(1)).remove(0);
        out.extend(back);
    }
    // The end: the first stage's tail goes through the second in blocks no larger than its
    // port declares, then the second's tail.
    let tail = finish(&mut a, &ports_a).remove(0);
    let most = ports_a[0].max_frames as usize;
    out.extend(run_blocks(&mut b, &[(&tail, 1)], &ports_b, most).remove(0));
    out.extend(finish(&mut b, &ports_b).remove(0));
    let rate = f64::from(RATE);
    let start = RATE as usize / 2;
    let (amplitude, lag) = amplitude_and_lag(&out[start..start + RATE as usize], start, tone, rate);
    let zc = zero_crossing_frequency(&out[start..start + RATE as usize], rate);
    let steady = start..frames - start;
    let error: Vec<f32> = out[steady.clone()]
        .iter()
        .zip(&signal[steady.clone()])
        .map(|(o, i)| o - i)
        .collect();
    let error_db = db(rms(&error) / rms(&signal[steady]));
    println!(
        "resample {quality} 48k->44.1k->48k: {} of {frames} frames back, {zc:.5} Hz, amplitude \
         {:.4} dB, lag {lag:.3} frames, difference from the input {error_db:.1} dB",
        out.len(),
        db(amplitude / 0.5)
    );
    // Measured: -130.8 dB (fast), -123.9 (balanced), -154.8 (best).
    assert!(
        error_db < -110.0,
        "{quality}: round trip differs from the input by {error_db} dB"
    );
    assert!((zc - tone).abs() < 0.1, "{quality}");
    assert!(db(amplitude / 0.5).abs() < 0.02, "{quality}");
    assert!(lag.abs() < 2.0, "{quality}");
    // Both stages flushed their tails: every frame is back (rounding up may add one).
    assert!(
        out.len() == frames || out.len() == frames + 1,
        "{quality}: {} frames back of {frames}",
        out.len()
    );
}

#[test]
fn chained_stages_take_variable_blocks_and_round_trip() {
    for quality in QUALITIES {
        check_round_trip(quality);
    }
}

#[test]
fn bad_rates_are_refused() {
    let input = [format(2, RATE)];
    for json in [
        r#"{"rate": 0}"#,
        r#"{"rate": 500}"#,
        r#"{"rate": 10000000}"#,
    ] {
        let e = rejection::<Resample>(json, &ctx(&input).get());
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert_eq!(e.key(), Some("rate"), "{json}");
    }
    for json in [
        r#"{}"#,
        r#"{"rate": 44100, "quality": "medium"}"#,
        r#"{"rate": 44100, "quality": "Best"}"#,
        r#"{"rate": 44100, "quality": 3}"#,
        r#"{"rate": 44100, "filter": "best"}"#,
        r#"{"rate": -1}"#,
    ] {
        assert!(
            parse_config::<crate::ResampleConfig>(json).is_err(),
            "{json}"
        );
    }
    // An unknown quality is an error at its key, naming the settings.
    let e = parse_config::<crate::ResampleConfig>(r#"{"rate": 44100, "quality": "medium"}"#)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    assert_eq!(e.key(), Some("quality"));
    for name in ["fast", "balanced", "best"] {
        assert!(e.message().contains(name), "{}", e.message());
    }
}

#[test]
fn an_impulse_comes_out_when_it_went_in() {
    // The 1 kHz tests measure the lag precisely but only modulo one period; an impulse in the
    // middle of a second of silence pins it absolutely.
    let pairs = [
        (48_000u32, 44_100u32),
        (44_100, 48_000),
        (48_000, 8_000),
        (8_000, 48_000),
        // Sinc engine.
        (48_000, 44_101),
        (8_000, 44_101),
    ];
    for (quality, (rate_in, rate_out)) in QUALITIES
        .into_iter()
        .flat_map(|q| pairs.map(|pair| (q, pair)))
    {
        let mut signal = vec![0.0f32; rate_in as usize];
        signal[rate_in as usize / 2] = 1.0;
        let (out, _) = resample_at(quality, rate_in, rate_out, &signal, 1);
        let k = (1..out.len() - 1)
            .max_by(|a, b| out[*a].abs().total_cmp(&out[*b].abs()))
            .unwrap();
        let (a, b, c) = (
            f64::from(out[k - 1]),
            f64::from(out[k]),
            f64::from(out[k + 1]),
        );
        let peak = k as f64 + 0.5 * (a - c) / (a - 2.0 * b + c);
        let expected = f64::from(rate_out) / 2.0;
        println!(
            "resample {quality} {rate_in}->{rate_out}: impulse at output frame {peak:.3}, \
             expected {expected} ({:+.3})",
            peak - expected
        );
        assert!(
            (peak - expected).abs() < 1.0,
            "{quality} {rate_in}->{rate_out}: {peak} vs {expected}"
        );
    }
}
