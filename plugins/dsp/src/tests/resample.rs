//! `resample`: tone frequency, spectral purity, timing, lengths, and the port it declares.

use rustfft::{num_complex::Complex, FftPlanner};

use super::*;
use crate::Resample;

/// Resample `signal` (`channels` interleaved) from `rate_in` to `rate_out` through a fresh
/// stage, in blocks of `BLOCK` frames, the pipeline running at `rate_in`. Returns the output
/// and the port the stage declared.
fn resample(rate_in: u32, rate_out: u32, signal: &[f32], channels: u32) -> (Vec<f32>, OutputPort) {
    let input = [format(channels, rate_in)];
    let cx = ctx_at(rate_in, &input);
    let c = cx.get();
    let json = format!(r#"{{"rate": {rate_out}}}"#);
    let ports = Resample::outputs(&config(&json), &c).unwrap();
    assert_eq!(ports.len(), 1);
    let mut stage: Resample = build(&json, &c);
    let out = run(&mut stage, &[(signal, channels)], &ports, BLOCK).remove(0);
    (out, ports[0].clone())
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

#[test]
fn downsampling_48k_to_44k1_keeps_a_1khz_tone_exact_and_pure() {
    let (rate_in, rate_out, tone) = (48_000u32, 44_100u32, 1000.0);
    // Five seconds and a bit: the last block is short (123 frames).
    let frames_in = 5 * rate_in as usize + 123;
    let signal = sine(tone, rate_in, 0.5, frames_in, 1);
    let (out, port) = resample(rate_in, rate_out, &signal, 1);

    assert_eq!(port.format, format(1, rate_out));
    let expected_len = (frames_in as u64 * 441).div_ceil(480) as usize;
    assert_eq!(out.len(), expected_len, "output covers every input frame");

    let rate = f64::from(rate_out);
    // Steady part: skip 0.1 s at both ends.
    let steady = &out[4410..out.len() - 4410];
    let zc = zero_crossing_frequency(steady, rate);

    let n = 1 << 17;
    let start = rate_out as usize;
    let power = power_spectrum(&out[start..start + n]);
    let peak = peak_frequency(&power, rate, n);
    let spurious = out_of_band_db(&power, rate, n, tone, 50.0);

    // One second (1000 whole cycles) starting at 1 s.
    let (amplitude, lag) = amplitude_and_lag(&out[start..start + 44_100], start, tone, rate);

    println!(
        "resample 48k->44.1k, 1 kHz sine: zero-crossing frequency {zc:.6} Hz ({:+.1e}), DFT \
         peak {peak:.5} Hz ({:+.1e}), energy outside +-50 Hz {spurious:.1} dB re tone, amplitude {:.4} dB re \
         input, lag {lag:.3} output frames, {} frames out of {frames_in} in",
        zc - tone,
        peak - tone,
        db(amplitude / 0.5),
        out.len()
    );
    assert!((zc - tone).abs() < 0.1, "zero crossings give {zc} Hz");
    assert!((peak - tone).abs() < 0.1, "DFT peak at {peak} Hz");
    assert!(spurious < -80.0, "out-of-band energy {spurious} dB");
    assert!(db(amplitude / 0.5).abs() < 0.01, "amplitude {amplitude}");
    assert!(lag.abs() < 1.0, "latency not compensated: lag {lag} frames");
}

#[test]
fn upsampling_44k1_to_48k_keeps_a_tone_exact_and_in_time() {
    let (rate_in, rate_out, tone) = (44_100u32, 48_000u32, 3000.0);
    let frames_in = 2 * rate_in as usize + 7;
    let signal = sine(tone, rate_in, 0.5, frames_in, 1);
    let (out, _) = resample(rate_in, rate_out, &signal, 1);
    assert_eq!(out.len(), (frames_in as u64 * 480).div_ceil(441) as usize);
    let rate = f64::from(rate_out);
    let zc = zero_crossing_frequency(&out[4800..out.len() - 4800], rate);
    let start = 24_000;
    let n = 1 << 16;
    let power = power_spectrum(&out[start..start + n]);
    let spurious = out_of_band_db(&power, rate, n, tone, 50.0);
    let (amplitude, lag) = amplitude_and_lag(&out[start..start + 48_000], start, tone, rate);
    println!(
        "resample 44.1k->48k, 3 kHz sine: zero-crossing frequency {zc:.5} Hz, energy outside \
         +-50 Hz {spurious:.1} dB re tone, amplitude {:.4} dB re input, lag {lag:.3} output \
         frames",
        db(amplitude / 0.5)
    );
    assert!((zc - tone).abs() < 0.1);
    assert!(spurious < -80.0);
    assert!(db(amplitude / 0.5).abs() < 0.01);
    assert!(lag.abs() < 1.0);
}

#[test]
fn the_port_has_the_new_rate_and_room_for_every_block() {
    let input = [format(2, RATE)];
    let cx = ctx(&input);
    let c = cx.get();
    for rate in [8_000u32, 44_100, 96_000, 192_000] {
        let ports = Resample::outputs(&config(&format!(r#"{{"rate": {rate}}}"#)), &c).unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].name(), "out");
        assert_eq!(ports[0].format, format(2, rate));
        let nominal = (BLOCK as u64 * u64::from(rate)).div_ceil(u64::from(RATE)) as u32;
        assert!(
            ports[0].max_frames > nominal,
            "{rate}: max_frames {} for {nominal} nominal",
            ports[0].max_frames
        );
        // A short final block plus the flushed tail fits (run() fails if it does not).
        let signal = noise(BLOCK * 3 + 1, 2, 0.5, 1);
        let input = [format(2, RATE)];
        let cx = ctx(&input);
        let c = cx.get();
        let json = format!(r#"{{"rate": {rate}}}"#);
        let out = run(
            &mut build::<Resample>(&json, &c),
            &[(&signal, 2)],
            &ports,
            BLOCK,
        )
        .remove(0);
        let expected = ((BLOCK as u64 * 3 + 1) * u64::from(rate)).div_ceil(u64::from(RATE));
        assert_eq!(out.len() as u64, expected * 2, "{rate}");
    }
}

#[test]
fn every_length_comes_out_whole() {
    // Short last blocks, a last block that is exactly full, and a lone frame.
    for frames in [1usize, 100, 479, 480, 481, 1000, 4321, 4800] {
        let signal = noise(frames, 1, 0.5, frames as u64);
        let (out, _) = resample(48_000, 44_100, &signal, 1);
        assert_eq!(
            out.len() as u64,
            (frames as u64 * 441).div_ceil(480),
            "{frames} frames in"
        );
    }
}

#[test]
fn a_stream_after_the_end_starts_afresh() {
    let input = [format(1, RATE)];
    let cx = ctx(&input);
    let c = cx.get();
    let json = r#"{"rate": 32000}"#;
    let ports = Resample::outputs(&config(json), &c).unwrap();
    let first = noise(1000, 1, 0.5, 3);
    let second = sine(440.0, RATE, 0.3, 2000, 1);
    let mut stage: Resample = build(json, &c);
    run(&mut stage, &[(&first, 1)], &ports, BLOCK);
    let again = run(&mut stage, &[(&second, 1)], &ports, BLOCK).remove(0);
    let fresh = run(
        &mut build::<Resample>(json, &c),
        &[(&second, 1)],
        &ports,
        BLOCK,
    )
    .remove(0);
    assert!(same_bits(&again, &fresh));
}

#[test]
fn channels_go_through_the_same_filter() {
    // Right is minus left, so the output's right must be exactly minus its left.
    let mut signal = noise(5000, 2, 0.5, 4);
    for f in signal.chunks_exact_mut(2) {
        f[1] = -f[0];
    }
    let (out, _) = resample(48_000, 22_050, &signal, 2);
    assert!(!out.is_empty());
    assert!(out.chunks_exact(2).all(|f| f[1] == -f[0]));
}

#[test]
fn same_rate_passes_through_bit_exactly() {
    let signal = noise(2000, 2, 1.0, 6);
    let (out, port) = resample(48_000, 48_000, &signal, 2);
    assert_eq!(port.max_frames, 0);
    assert!(same_bits(&out, &signal));
}

#[test]
fn chained_stages_take_variable_blocks_and_round_trip() {
    // 48k -> 44.1k -> 48k, the second stage fed the first one's blocks as they come
    // (440 to 442 frames, more with the tail), as the host would.
    let tone = 1000.0;
    let frames = 2 * RATE as usize + 55;
    let signal = sine(tone, RATE, 0.5, frames, 1);

    let in_a = [format(1, RATE)];
    let cx_a = ctx(&in_a);
    let ca = cx_a.get();
    let ports_a = Resample::outputs(&config(r#"{"rate": 44100}"#), &ca).unwrap();
    let mut a: Resample = build(r#"{"rate": 44100}"#, &ca);

    let in_b = [format(1, 44_100)];
    let cx_b = ctx(&in_b);
    let cb = cx_b.get();
    let ports_b = Resample::outputs(&config(r#"{"rate": 48000}"#), &cb).unwrap();
    let mut b: Resample = build(r#"{"rate": 48000}"#, &cb);

    let mut out = Vec::new();
    for block in signal.chunks(BLOCK) {
        let mid = run_blocks(&mut a, &[(block, 1)], &ports_a, BLOCK).remove(0);
        // One call per upstream block, whatever its size.
        let back = run_blocks(&mut b, &[(&mid, 1)], &ports_b, mid.len().max(1)).remove(0);
        out.extend(back);
    }
    // The end: the first stage's tail goes through the second, then the second's tail.
    let tail = finish(&mut a, &ports_a).remove(0);
    out.extend(run_blocks(&mut b, &[(&tail, 1)], &ports_b, tail.len().max(1)).remove(0));
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
        "resample 48k->44.1k->48k: {} of {frames} frames back, {zc:.5} Hz, amplitude {:.4} dB, \
         lag {lag:.3} frames, difference from the input {error_db:.1} dB",
        out.len(),
        db(amplitude / 0.5)
    );
    assert!(
        error_db < -40.0,
        "round trip differs from the input by {error_db} dB"
    );
    assert!((zc - tone).abs() < 0.1);
    assert!(db(amplitude / 0.5).abs() < 0.02);
    assert!(lag.abs() < 2.0);
    // Both stages flushed their tails: every frame is back (rounding up may add one).
    assert!(
        out.len() == frames || out.len() == frames + 1,
        "{} frames back of {frames}",
        out.len()
    );
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
        assert_eq!(e.kind, ErrorKind::InvalidConfig);
        assert_eq!(e.key(), Some("rate"), "{json}");
    }
    for json in [
        r#"{}"#,
        r#"{"rate": 44100, "quality": "best"}"#,
        r#"{"rate": -1}"#,
    ] {
        assert!(
            parse_config::<crate::ResampleConfig>(json).is_err(),
            "{json}"
        );
    }
}

#[test]
fn an_impulse_comes_out_when_it_went_in() {
    // The 1 kHz tests measure the lag precisely but only modulo one period; an impulse in the
    // middle of a second of silence pins it absolutely.
    for (rate_in, rate_out) in [
        (48_000u32, 44_100u32),
        (44_100, 48_000),
        (48_000, 8_000),
        (8_000, 48_000),
    ] {
        let mut signal = vec![0.0f32; rate_in as usize];
        signal[rate_in as usize / 2] = 1.0;
        let (out, _) = resample(rate_in, rate_out, &signal, 1);
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
            "resample {rate_in}->{rate_out}: impulse at output frame {peak:.3}, expected \
             {expected} ({:+.3})",
            peak - expected
        );
        assert!(
            (peak - expected).abs() < 1.0,
            "{rate_in}->{rate_out}: {peak} vs {expected}"
        );
    }
}
