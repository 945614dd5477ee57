//! `biquad`: coefficients against the Audio EQ Cookbook's analog prototypes, and the response
//! measured by running sines through `process`.

use super::*;
use std::f64::consts::FRAC_1_SQRT_2 as BUTTERWORTH_Q;

use crate::{Biquad, BiquadConfig, Coefficients, FilterType};

const TYPES: [(FilterType, &str); 7] = [
    (FilterType::Lowpass, "lowpass"),
    (FilterType::Highpass, "highpass"),
    (FilterType::Bandpass, "bandpass"),
    (FilterType::Notch, "notch"),
    (FilterType::Peak, "peak"),
    (FilterType::Lowshelf, "lowshelf"),
    (FilterType::Highshelf, "highshelf"),
];

/// Ten test frequencies spanning the band, none at the 1 kHz centre (where the notch is -inf).
const FREQS: [f64; 10] = [
    20.0, 100.0, 300.0, 700.0, 950.0, 1500.0, 3000.0, 6000.0, 12000.0, 20000.0,
];

/// The gain each type is tested with (none for the types without one).
fn test_gain(kind: FilterType) -> Option<f64> {
    match kind {
        FilterType::Peak => Some(6.0),
        FilterType::Lowshelf => Some(-9.0),
        FilterType::Highshelf => Some(4.5),
        _ => None,
    }
}

/// `|H(jΩ)|` of the cookbook's analog prototype of `kind`, at the frequency `f` the bilinear
/// transform (prewarped at `f0`) maps to `Ω = tan(w/2) / tan(w0/2)`: the exact response the
/// digital filter must have, computed without its coefficients.
fn analytic(kind: FilterType, f: f64, f0: f64, q: f64, gain_db: f64, fs: f64) -> f64 {
    let omega = (PI * f / fs).tan() / (PI * f0 / fs).tan();
    let o2 = omega * omega;
    let a = 10f64.powf(gain_db / 40.0);
    let sa = a.sqrt();
    // (re, im) of numerator and denominator at s = jΩ.
    let den = (1.0 - o2, omega / q);
    let (num, den, scale) = match kind {
        FilterType::Lowpass => ((1.0, 0.0), den, 1.0),
        FilterType::Highpass => ((-o2, 0.0), den, 1.0),
        FilterType::Bandpass => ((0.0, omega / q), den, 1.0),
        FilterType::Notch => ((1.0 - o2, 0.0), den, 1.0),
        FilterType::Peak => ((1.0 - o2, omega * a / q), (1.0 - o2, omega / (a * q)), 1.0),
        FilterType::Lowshelf => ((a - o2, sa * omega / q), (1.0 - a * o2, sa * omega / q), a),
        FilterType::Highshelf => ((1.0 - a * o2, sa * omega / q), (a - o2, sa * omega / q), a),
    };
    scale * num.0.hypot(num.1) / den.0.hypot(den.1)
}

/// Output RMS over input RMS in dB for a 0.5-amplitude sine at `f` Hz through a fresh biquad,
/// measured over one second (a whole number of cycles) after a quarter second of settling.
fn measured_db(json: &str, f: f64) -> f64 {
    let input = [format(1, RATE)];
    let cx = ctx(&input);
    let c = cx.get();
    let ports = Biquad::outputs(&config(json), &c).unwrap();
    let mut filter: Biquad = build(json, &c);
    let settle = RATE as usize / 4;
    let signal = sine(f, RATE, 0.5, settle + RATE as usize, 1);
    let out = run(&mut filter, &[(&signal, 1)], &ports, BLOCK).remove(0);
    db(rms(&out[settle..]) / rms(&signal[settle..]))
}

fn json_for(kind: &str, f0: f64, q: f64, gain: Option<f64>) -> String {
    match gain {
        Some(g) => format!(r#"{{"type": "{kind}", "frequency": {f0}, "q": {q}, "gain_db": {g}}}"#),
        None => format!(r#"{{"type": "{kind}", "frequency": {f0}, "q": {q}}}"#),
    }
}

#[test]
fn coefficients_give_the_cookbook_analog_prototypes_through_the_bilinear_transform() {
    let fs = f64::from(RATE);
    for (kind, name) in TYPES {
        for (f0, q) in [(1000.0, BUTTERWORTH_Q), (80.0, 3.0), (9000.0, 0.4)] {
            let gain = test_gain(kind).unwrap_or(0.0);
            let k = Coefficients::rbj(kind, f0, q, gain, fs);
            for f in FREQS {
                let from_coefficients = db(k.magnitude(f, fs));
                let expected = db(analytic(kind, f, f0, q, gain, fs));
                assert!(
                    (from_coefficients - expected).abs() < 1e-6,
                    "{name} f0={f0} q={q} at {f} Hz: {from_coefficients} dB, expected {expected}"
                );
            }
        }
    }
}

#[test]
fn butterworth_lowpass_and_highpass_are_minus_3_db_at_the_cutoff() {
    let fs = f64::from(RATE);
    for (kind, name) in [
        (FilterType::Lowpass, "lowpass"),
        (FilterType::Highpass, "highpass"),
    ] {
        for f0 in [1000.0, 100.0, 10_000.0] {
            let k = Coefficients::rbj(kind, f0, BUTTERWORTH_Q, 0.0, fs);
            let computed = db(k.magnitude(f0, fs));
            let measured = measured_db(&json_for(name, f0, BUTTERWORTH_Q, None), f0);
            println!(
                "biquad {name} {f0} Hz, Q 0.7071: |H| at cutoff {computed:.4} dB from the \
                 coefficients, {measured:.4} dB measured"
            );
            assert!((computed + 3.01).abs() < 0.1, "{name} {f0}: {computed}");
            assert!((measured + 3.01).abs() < 0.1, "{name} {f0}: {measured}");
        }
    }
}

#[test]
fn measured_response_matches_the_analytic_response_at_ten_frequencies() {
    let fs = f64::from(RATE);
    let (f0, q) = (1000.0, BUTTERWORTH_Q);
    let mut worst: f64 = 0.0;
    for (kind, name) in TYPES {
        let gain = test_gain(kind);
        let json = json_for(name, f0, q, gain);
        let mut row = format!("biquad {name:>9} (f0 1 kHz, Q {q:.4}, gain {gain:?} dB):");
        for f in FREQS {
            let expected = db(analytic(kind, f, f0, q, gain.unwrap_or(0.0), fs));
            let measured = measured_db(&json, f);
            let error = measured - expected;
            worst = worst.max(error.abs());
            row += &format!(" {f}Hz {measured:.3}/{expected:.3}");
            assert!(
                error.abs() < 0.1,
                "{name} at {f} Hz: measured {measured} dB, analytic {expected} dB"
            );
        }
        println!("{row}  (measured/analytic dB)");
    }
    println!("biquad: worst measured-vs-analytic difference {worst:.2e} dB");
}

#[test]
fn channels_are_independent_and_block_size_does_not_matter() {
    let input = [format(2, RATE)];
    let cx = ctx(&input);
    let c = cx.get();
    let json = r#"{"type": "peak", "frequency": 2000, "q": 4, "gain_db": 12}"#;
    let ports = Biquad::outputs(&config(json), &c).unwrap();
    // Left: noise; right: silence.
    let mut signal = noise(5000, 2, 0.5, 11);
    signal.iter_mut().skip(1).step_by(2).for_each(|x| *x = 0.0);
    let big = run(
        &mut build::<Biquad>(json, &c),
        &[(&signal, 2)],
        &ports,
        BLOCK,
    )
    .remove(0);
    let small = run(&mut build::<Biquad>(json, &c), &[(&signal, 2)], &ports, 37).remove(0);
    assert!(same_bits(&big, &small), "block size changed the output");
    assert!(
        big.iter().skip(1).step_by(2).all(|x| *x == 0.0),
        "left leaked into right"
    );
    assert!(big.iter().step_by(2).any(|x| *x != 0.0));
}

#[test]
fn bad_settings_name_their_key() {
    let input = [format(1, 44_100)];
    let cx = ctx(&input);
    let c = cx.get();
    let cases = [
        (r#"{"type": "lowpass", "frequency": 22050}"#, "frequency"),
        (r#"{"type": "lowpass", "frequency": 0}"#, "frequency"),
        (r#"{"type": "lowpass", "frequency": 1000, "q": 0}"#, "q"),
        (r#"{"type": "peak", "frequency": 1000}"#, "gain_db"),
        (
            r#"{"type": "notch", "frequency": 1000, "gain_db": 3}"#,
            "gain_db",
        ),
        (
            r#"{"type": "lowshelf", "frequency": 1000, "gain_db": 100}"#,
            "gain_db",
        ),
    ];
    for (json, key) in cases {
        let e = rejection::<Biquad>(json, &c);
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{json}");
        assert_eq!(e.key(), Some(key), "{json}: {e}");
    }
    let e = rejection::<Biquad>(r#"{"type": "lowpass", "frequency": 30000}"#, &c);
    assert!(e.message().contains("22050 Hz"), "{e}");
    for json in [
        r#"{"type": "bandstop", "frequency": 1000}"#,
        r#"{"type": "lowpass", "frequency": 1000, "slope": 1}"#,
        r#"{"frequency": 1000}"#,
    ] {
        let e = parse_config::<BiquadConfig>(json).expect_err(json);
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{json}");
    }
    let c: BiquadConfig = config(r#"{"type": "highpass", "frequency": 50}"#);
    assert_eq!(c.q, BUTTERWORTH_Q);
}
