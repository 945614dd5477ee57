//! The DSP plugins against references computed independently of them: real plugins loaded
//! through the real ABI, or whole pipelines run by `tapeline run` on WAV files written here and
//! read back with hound, compared sample by sample.
//!
//! - `gain` at -6.0206 dB halves every sample (float32 and pcm16 files).
//! - `gain` at -6 dB matches `sox gain -6` within one LSB on a 16-bit stereo file.
//! - `biquad` is -3.01 dB at the cutoff (lowpass, highpass, Q 0.7071) and matches the Audio EQ
//!   Cookbook response, computed here from the cookbook's formulas, for all seven types.
//! - `resample` 48 kHz -> 44.1 kHz keeps a 1 kHz tone at 1 kHz and spectrally pure.
//! - `channel-split` then `channel-merge` gives back the input bit for bit (stereo float32,
//!   4-channel pcm24).

use std::f64::consts::PI;
use std::path::Path;
use std::process::Command;

use tapeline_tests::{
    code, context, format, new_processor, process_block, registry, run_toml, stderr,
    unique_stage_id, Rng, TempDir, BLOCK_FRAMES, SAMPLE_RATE,
};

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// Write `toml` as `p.toml` in `dir` and run it with `tapeline run`; it must exit 0.
fn run_pipeline(dir: &TempDir, toml: &str) {
    let (out, _) = run_toml(dir, toml);
    assert_eq!(code(&out), 0, "tapeline run failed:\n{}", stderr(&out));
}

fn spec(channels: u16, sample_rate: u32, bits: u16, float: bool) -> hound::WavSpec {
    hound::WavSpec {
        channels,
        sample_rate,
        bits_per_sample: bits,
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    }
}

fn write_f32(path: &Path, spec: hound::WavSpec, samples: &[f32]) {
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in samples {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
}

fn write_int(path: &Path, spec: hound::WavSpec, samples: &[i32]) {
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in samples {
        match spec.bits_per_sample {
            16 => w.write_sample(i16::try_from(*s).unwrap()).unwrap(),
            _ => w.write_sample(*s).unwrap(),
        }
    }
    w.finalize().unwrap();
}

/// The spec, frame count and samples of a float WAV file.
fn read_f32(path: &Path) -> (hound::WavSpec, u32, Vec<f32>) {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let samples = r.samples::<f32>().map(|s| s.unwrap()).collect();
    (r.spec(), r.duration(), samples)
}

/// The spec, frame count and samples of an integer WAV file (any width, as `i32`).
fn read_int(path: &Path) -> (hound::WavSpec, u32, Vec<i32>) {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let samples = r.samples::<i32>().map(|s| s.unwrap()).collect();
    (r.spec(), r.duration(), samples)
}

fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

fn db(ratio: f64) -> f64 {
    20.0 * ratio.log10()
}

// ---------------------------------------------------------------------------------------------
// 1. gain -6.0206 dB halves every sample
// ---------------------------------------------------------------------------------------------

/// Frames of the gain test files: 3 s and a bit, so the last block is a short one.
const GAIN_FRAMES: usize = 3 * SAMPLE_RATE as usize + 217;

/// A pipeline reading `in.wav`, applying `gain` at `db` dB (`ramp_ms` left at its default, 0:
/// no ramp from unity at the start) and writing `out.wav` in `format`.
fn gain_pipeline(db: &str, format: &str) -> String {
    format!(
        r#"version = 1
[capture.src]
plugin = "wav-reader"
path = "in.wav"
[process.gain]
plugin = "gain"
inputs = ["src"]
db = {db}
[storage.out]
plugin = "wav-writer"
inputs = ["gain"]
path = "out.wav"
format = "{format}"
"#
    )
}

#[test]
fn gain_minus_6_0206_db_halves_every_float32_sample() {
    let dir = TempDir::new("dsp-gain-half-f32");
    let mut rng = Rng(1);
    // Stereo noise up to 1.5 (float32 keeps levels above full scale), exact ±1 and 0 first.
    let mut input: Vec<f32> = vec![1.0, -1.0, 0.0, 0.5];
    input.extend((input.len()..GAIN_FRAMES * 2).map(|_| (rng.uniform() * 1.5) as f32));
    write_f32(
        &dir.path().join("in.wav"),
        spec(2, SAMPLE_RATE, 32, true),
        &input,
    );
    run_pipeline(&dir, &gain_pipeline("-6.0206", "float32"));

    let (out_spec, frames, output) = read_f32(&dir.path().join("out.wav"));
    assert_eq!(out_spec, spec(2, SAMPLE_RATE, 32, true));
    assert_eq!(frames as usize, GAIN_FRAMES, "every frame is written");
    assert_eq!(output.len(), input.len());
    // 10^(-6.0206/20) = 0.4999999950 (1.0e-8 below a half); the plugin computes it and the
    // product in f32 (2^-24 = 6e-8 relative rounding each). 1e-6 relative (about 8 f32 ulps)
    // covers that with room, and is 2000 times tighter than the 0.24 % that -6 dB would give.
    let mut worst = 0.0f64;
    for (i, (x, y)) in input.iter().zip(&output).enumerate() {
        let want = f64::from(*x) / 2.0;
        let err = (f64::from(*y) - want).abs();
        assert!(
            err <= 1e-6 * want.abs(),
            "sample {i} (frame {}, channel {}): {x} -> {y}, expected {want}",
            i / 2,
            i % 2
        );
        if want != 0.0 {
            worst = worst.max(err / want.abs());
        }
    }
    println!("gain -6.0206 dB, float32: worst relative error from x/2 {worst:.2e}");
}

#[test]
fn gain_minus_6_0206_db_halves_every_even_pcm16_sample_exactly() {
    let dir = TempDir::new("dsp-gain-half-pcm16");
    let mut rng = Rng(2);
    // Even values over the whole 16-bit range, the extremes first.
    let mut input: Vec<i32> = vec![-32_768, 32_766, 0, 2, -2];
    input.extend(
        (input.len()..GAIN_FRAMES * 2).map(|_| (rng.next_u64() >> 48) as u16 as i16 as i32 & !1),
    );
    write_int(
        &dir.path().join("in.wav"),
        spec(2, SAMPLE_RATE, 16, false),
        &input,
    );
    run_pipeline(&dir, &gain_pipeline("-6.0206", "pcm16"));

    let (out_spec, frames, output) = read_int(&dir.path().join("out.wav"));
    assert_eq!(out_spec, spec(2, SAMPLE_RATE, 16, false));
    assert_eq!(frames as usize, GAIN_FRAMES, "every frame is written");
    assert_eq!(output.len(), input.len());
    // Exact: with a gain within 1e-7 of a half (see the float32 test), v * gain misses v/2 by
    // at most 32768 * 1e-7 = 0.003 LSB, far less than the half LSB that would round it away.
    let first_diff = input.iter().zip(&output).position(|(x, y)| *y != x / 2);
    if let Some(i) = first_diff {
        panic!(
            "sample {i} (frame {}, channel {}): {} -> {}, expected {}",
            i / 2,
            i % 2,
            input[i],
            output[i],
            input[i] / 2
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. gain -6 dB against sox
// ---------------------------------------------------------------------------------------------

/// `seconds` of music-like 16-bit stereo: decaying notes with harmonics, a bass line, and a
/// little noise, different on each channel, peaking near -1 dBFS.
fn music_like(seconds: f64, rng: &mut Rng) -> Vec<i32> {
    let rate = f64::from(SAMPLE_RATE);
    let frames = (seconds * rate) as usize;
    let note_len = (0.25 * rate) as usize;
    // A pentatonic scale from A3 (Hz).
    let scale = [
        220.0, 246.94, 277.18, 329.63, 369.99, 440.0, 493.88, 554.37, 659.26,
    ];
    let mut notes = [[0.0f64; 2]; 64];
    for n in notes.iter_mut() {
        for f in n.iter_mut() {
            *f = scale[(rng.next_u64() % scale.len() as u64) as usize];
        }
    }
    let mut out = Vec::with_capacity(frames * 2);
    let mut mix = vec![[0.0f64; 2]; frames];
    for (i, m) in mix.iter_mut().enumerate() {
        let t = i as f64 / rate;
        let note = &notes[(i / note_len) % notes.len()];
        let since = (i % note_len) as f64 / rate;
        let env = (-since * 6.0).exp() * (since * 400.0).min(1.0);
        for (c, s) in m.iter_mut().enumerate() {
            let f = note[c];
            let voice: f64 = (1..=5)
                .map(|h| (2.0 * PI * f * h as f64 * t).sin() / (h * h) as f64)
                .sum();
            let bass =
                (2.0 * PI * 55.0 * t + c as f64).sin() * (0.6 + 0.4 * (2.0 * PI * 0.3 * t).sin());
            *s = 0.45 * env * voice + 0.3 * bass + 0.01 * rng.uniform();
        }
    }
    let peak = mix.iter().flatten().fold(0.0f64, |p, s| p.max(s.abs()));
    let scale_to = 0.89 / peak; // -1 dBFS
    for frame in &mix {
        for s in frame {
            out.push((s * scale_to * 32_768.0).round() as i32);
        }
    }
    out
}

#[test]
fn gain_minus_6_db_matches_sox_within_one_lsb_on_16_bit_stereo() {
    let dir = TempDir::new("dsp-gain-sox");
    let input = music_like(4.503, &mut Rng(3)); // 216144 frames: a short last block
    let in_wav = dir.path().join("in.wav");
    write_int(&in_wav, spec(2, SAMPLE_RATE, 16, false), &input);

    let sox_wav = dir.path().join("sox.wav");
    let sox = match Command::new("sox")
        .arg("-D")
        .arg(&in_wav)
        .arg(&sox_wav)
        .args(["gain", "-6"])
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run `sox` ({e}): this test compares against sox; run scripts/test.sh, which \
             installs it (or `sudo apt-get install sox`)"
        ),
    };
    assert!(
        sox.status.success(),
        "sox failed: {}",
        String::from_utf8_lossy(&sox.stderr)
    );

    run_pipeline(&dir, &gain_pipeline("-6.0", "pcm16"));

    let (sox_spec, sox_frames, reference) = read_int(&sox_wav);
    let (out_spec, out_frames, output) = read_int(&dir.path().join("out.wav"));
    assert_eq!(sox_spec, spec(2, SAMPLE_RATE, 16, false));
    assert_eq!(out_spec, sox_spec);
    assert_eq!(out_frames as usize, input.len() / 2);
    assert_eq!(out_frames, sox_frames);
    let mut max_diff = 0;
    let mut differing = 0;
    for (i, (a, b)) in output.iter().zip(&reference).enumerate() {
        let d = (a - b).abs();
        assert!(
            d <= 1,
            "sample {i} (frame {}, channel {}): input {}, tapeline {a}, sox {b}",
            i / 2,
            i % 2,
            input[i]
        );
        max_diff = max_diff.max(d);
        differing += usize::from(d != 0);
    }
    println!(
        "gain -6 dB vs sox: max difference {max_diff} LSB, {differing} of {} samples differ",
        output.len()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. biquad against the Audio EQ Cookbook
// ---------------------------------------------------------------------------------------------

/// Coefficients `([b0, b1, b2], [a0, a1, a2])`, not normalised, straight from Robert
/// Bristow-Johnson's "Cookbook formulae for audio EQ biquad filter coefficients", with
/// `alpha = sin(w0) / (2 Q)` and, for peak and shelves, `A = 10^(dBgain/40)`.
fn cookbook(kind: &str, f0: f64, q: f64, gain_db: f64, fs: f64) -> ([f64; 3], [f64; 3]) {
    let w0 = 2.0 * PI * f0 / fs;
    let cw = w0.cos();
    let alpha = w0.sin() / (2.0 * q);
    let a = 10f64.powf(gain_db / 40.0);
    let two_sqrt_a_alpha = 2.0 * a.sqrt() * alpha;
    match kind {
        // LPF: H(s) = 1 / (s^2 + s/Q + 1)
        "lowpass" => (
            [(1.0 - cw) / 2.0, 1.0 - cw, (1.0 - cw) / 2.0],
            [1.0 + alpha, -2.0 * cw, 1.0 - alpha],
        ),
        // HPF: H(s) = s^2 / (s^2 + s/Q + 1)
        "highpass" => (
            [(1.0 + cw) / 2.0, -(1.0 + cw), (1.0 + cw) / 2.0],
            [1.0 + alpha, -2.0 * cw, 1.0 - alpha],
        ),
        // BPF, constant 0 dB peak gain: H(s) = (s/Q) / (s^2 + s/Q + 1)
        "bandpass" => ([alpha, 0.0, -alpha], [1.0 + alpha, -2.0 * cw, 1.0 - alpha]),
        // notch: H(s) = (s^2 + 1) / (s^2 + s/Q + 1)
        "notch" => ([1.0, -2.0 * cw, 1.0], [1.0 + alpha, -2.0 * cw, 1.0 - alpha]),
        // peakingEQ: H(s) = (s^2 + s*(A/Q) + 1) / (s^2 + s/(A*Q) + 1)
        "peak" => (
            [1.0 + alpha * a, -2.0 * cw, 1.0 - alpha * a],
            [1.0 + alpha / a, -2.0 * cw, 1.0 - alpha / a],
        ),
        // lowShelf: H(s) = A * (s^2 + (sqrt(A)/Q)*s + A) / (A*s^2 + (sqrt(A)/Q)*s + 1)
        "lowshelf" => (
            [
                a * ((a + 1.0) - (a - 1.0) * cw + two_sqrt_a_alpha),
                2.0 * a * ((a - 1.0) - (a + 1.0) * cw),
                a * ((a + 1.0) - (a - 1.0) * cw - two_sqrt_a_alpha),
            ],
            [
                (a + 1.0) + (a - 1.0) * cw + two_sqrt_a_alpha,
                -2.0 * ((a - 1.0) + (a + 1.0) * cw),
                (a + 1.0) + (a - 1.0) * cw - two_sqrt_a_alpha,
            ],
        ),
        // highShelf: H(s) = A * (A*s^2 + (sqrt(A)/Q)*s + 1) / (s^2 + (sqrt(A)/Q)*s + A)
        "highshelf" => (
            [
                a * ((a + 1.0) + (a - 1.0) * cw + two_sqrt_a_alpha),
                -2.0 * a * ((a - 1.0) + (a + 1.0) * cw),
                a * ((a + 1.0) + (a - 1.0) * cw - two_sqrt_a_alpha),
            ],
            [
                (a + 1.0) - (a - 1.0) * cw + two_sqrt_a_alpha,
                2.0 * ((a - 1.0) - (a + 1.0) * cw),
                (a + 1.0) - (a - 1.0) * cw - two_sqrt_a_alpha,
            ],
        ),
        other => panic!("no cookbook filter {other}"),
    }
}

/// `|H(e^jw)|` of `(b, a)` at `f` Hz: for a quadratic `c0 + c1 z^-1 + c2 z^-2` on the unit
/// circle, `|.|^2 = c0^2 + c1^2 + c2^2 + 2 (c0 c1 + c1 c2) cos w + 2 c0 c2 cos 2w`.
fn cookbook_magnitude((b, a): ([f64; 3], [f64; 3]), f: f64, fs: f64) -> f64 {
    let w = 2.0 * PI * f / fs;
    let sq = |c: [f64; 3]| {
        c[0] * c[0]
            + c[1] * c[1]
            + c[2] * c[2]
            + 2.0 * (c[0] * c[1] + c[1] * c[2]) * w.cos()
            + 2.0 * c[0] * c[2] * (2.0 * w).cos()
    };
    (sq(b).max(0.0) / sq(a)).sqrt()
}

/// Frames of settling skipped before measuring: 0.1 s, hundreds of time constants of the
/// slowest filter tested here (the 100 Hz lowpass, about 2 ms).
const SETTLE: usize = SAMPLE_RATE as usize / 10;

/// Output RMS over input RMS of a 0.5-amplitude sine at `f` Hz through a `biquad` made through
/// the ABI with `config`, fed in blocks of [`BLOCK_FRAMES`], measured after [`SETTLE`] frames
/// over about one second holding a whole number of cycles.
fn measured_gain(config: &str, f: f64) -> f64 {
    let reg = registry();
    let id = unique_stage_id("biquad");
    let inputs = [format(1)];
    let ctx = context(&id, &inputs);
    let mut p = new_processor(&reg, "biquad", config, &ctx)
        .unwrap_or_else(|e| panic!("biquad {config}: {}", e.message()));
    let fs = f64::from(SAMPLE_RATE);
    // One second holds f cycles; take the whole ones.
    let cycles = f.floor().max(1.0);
    let window = (cycles * fs / f).round() as usize;
    let total = (SETTLE + window).div_ceil(BLOCK_FRAMES as usize) * BLOCK_FRAMES as usize;
    let input: Vec<f32> = (0..total)
        .map(|i| (0.5 * (2.0 * PI * f * i as f64 / fs).sin()) as f32)
        .collect();
    let mut output = Vec::with_capacity(total);
    for block in input.chunks(BLOCK_FRAMES as usize) {
        output.extend(process_block(&mut p, block, 1).unwrap());
    }
    let range = SETTLE..SETTLE + window;
    rms(&output[range.clone()]) / rms(&input[range])
}

/// Q as users write it for a Butterworth response (pipelines/eq-meter.toml): 0.7071, not
/// exactly 1/sqrt(2) (the cutoff is then -3.0104 dB instead of -3.0103 dB).
#[allow(clippy::approx_constant)]
const BUTTERWORTH_Q: f64 = 0.7071;

fn biquad_json(kind: &str, f0: f64, q: f64, gain_db: Option<f64>) -> String {
    match gain_db {
        Some(g) => format!(r#"{{"type": "{kind}", "frequency": {f0}, "q": {q}, "gain_db": {g}}}"#),
        None => format!(r#"{{"type": "{kind}", "frequency": {f0}, "q": {q}}}"#),
    }
}

#[test]
fn biquad_lowpass_and_highpass_are_minus_3_01_db_at_the_cutoff() {
    let q = BUTTERWORTH_Q;
    let mut report = Vec::new();
    for kind in ["lowpass", "highpass"] {
        for f0 in [100.0, 1000.0, 5000.0, 15_000.0] {
            let measured = db(measured_gain(&biquad_json(kind, f0, q, None), f0));
            report.push(format!("{kind} {f0} Hz: {measured:.4} dB"));
            assert!(
                (measured - -3.01).abs() <= 0.1,
                "biquad {kind} at its {f0} Hz cutoff, Q {q}: {measured:.4} dB, expected -3.01 ± 0.1"
            );
        }
    }
    println!("biquad magnitude at the cutoff: {}", report.join(", "));
}

#[test]
fn biquad_magnitude_matches_the_audio_eq_cookbook_for_every_type() {
    let fs = f64::from(SAMPLE_RATE);
    // Ten log-spaced frequencies from 50 Hz to 18 kHz (50, 96, 185, 356, 684, 1316, 2531,
    // 4867, 9360, 18000 Hz).
    let freqs: Vec<f64> = (0..10)
        .map(|i| 50.0 * (18_000.0f64 / 50.0).powf(i as f64 / 9.0))
        .collect();
    // (type, centre/corner, Q, gain): a spread of settings, so that no test frequency falls on
    // the notch's null (at 1500 Hz, between 1316 and 2531).
    let cases: [(&str, f64, f64, Option<f64>); 7] = [
        ("lowpass", 1000.0, BUTTERWORTH_Q, None),
        ("highpass", 1000.0, BUTTERWORTH_Q, None),
        ("bandpass", 2000.0, 2.0, None),
        ("notch", 1500.0, 1.0, None),
        ("peak", 1000.0, 1.41, Some(9.0)),
        ("lowshelf", 300.0, BUTTERWORTH_Q, Some(-6.0)),
        ("highshelf", 5000.0, BUTTERWORTH_Q, Some(6.0)),
    ];
    let mut worst = (0.0f64, String::new());
    for (kind, f0, q, gain) in cases {
        let json = biquad_json(kind, f0, q, gain);
        let coefficients = cookbook(kind, f0, q, gain.unwrap_or(0.0), fs);
        let mut row = format!("{kind:>9}:");
        for &f in &freqs {
            let expected = cookbook_magnitude(coefficients, f, fs);
            let measured = measured_gain(&json, f);
            row.push_str(&format!(" {f:.0}:{:.2}/{:.2}", db(measured), db(expected)));
            if db(expected) < -80.0 {
                // Too deep for a dB comparison to mean anything: just as deep, in amplitude.
                assert!(
                    measured < 1e-4,
                    "biquad {json} at {f:.1} Hz: measured {} dB, cookbook {} dB",
                    db(measured),
                    db(expected)
                );
                continue;
            }
            let diff = (db(measured) - db(expected)).abs();
            if diff > worst.0 {
                worst = (diff, format!("{kind} at {f:.1} Hz"));
            }
            assert!(
                diff <= 0.1,
                "biquad {json} at {f:.1} Hz: measured {:.4} dB, cookbook {:.4} dB",
                db(measured),
                db(expected)
            );
        }
        println!("{row}  (measured/cookbook dB)");
    }
    println!(
        "biquad: worst deviation from the cookbook {:.2e} dB ({})",
        worst.0, worst.1
    );
}

// ---------------------------------------------------------------------------------------------
// 4. resample 48 kHz -> 44.1 kHz
// ---------------------------------------------------------------------------------------------

/// In-place iterative radix-2 FFT (forward, no scaling) of `re + j im`; length a power of two.
fn fft(re: &mut [f64], im: &mut [f64]) {
    let n = re.len();
    assert!(n >= 2 && n.is_power_of_two() && im.len() == n);
    let bits = n.trailing_zeros();
    for i in 0..n {
        let j = i.reverse_bits() >> (usize::BITS - bits);
        if j > i {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    // Twiddles e^{-2πjk/n} computed directly, not by recurrence, to keep them exact.
    let twiddles: Vec<(f64, f64)> = (0..n / 2)
        .map(|k| {
            let (s, c) = (-2.0 * PI * k as f64 / n as f64).sin_cos();
            (c, s)
        })
        .collect();
    let mut len = 2;
    while len <= n {
        let half = len / 2;
        let stride = n / len;
        for start in (0..n).step_by(len) {
            for k in 0..half {
                let (c, s) = twiddles[k * stride];
                let (a, b) = (start + k, start + k + half);
                let tr = re[b] * c - im[b] * s;
                let ti = re[b] * s + im[b] * c;
                re[b] = re[a] - tr;
                im[b] = im[a] - ti;
                re[a] += tr;
                im[a] += ti;
            }
        }
        len *= 2;
    }
}

/// One-sided power spectrum (bins 0..=N/2) under a 7-term Blackman-Harris window, whose side
/// lobes are below -180 dB: the window's own leakage cannot hide anything near -80 dB.
fn power_spectrum(x: &[f32]) -> Vec<f64> {
    const A: [f64; 7] = [
        0.271_051_400_693_42,
        0.433_297_939_234_48,
        0.218_122_999_543_11,
        0.065_925_446_388_03,
        0.010_811_742_098_37,
        0.000_776_584_825_22,
        0.000_013_887_217_35,
    ];
    let n = x.len();
    let mut re: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let t = 2.0 * PI * i as f64 / n as f64;
            let w: f64 = A
                .iter()
                .enumerate()
                .map(|(k, a)| if k % 2 == 0 { 1.0 } else { -1.0 } * a * (k as f64 * t).cos())
                .sum();
            f64::from(*v) * w
        })
        .collect();
    let mut im = vec![0.0; n];
    fft(&mut re, &mut im);
    (0..=n / 2).map(|k| re[k] * re[k] + im[k] * im[k]).collect()
}

/// The FFT above agrees with a direct DFT (a check on the test's own tool).
fn check_fft() {
    let n = 64;
    let mut rng = Rng(4);
    let x: Vec<(f64, f64)> = (0..n).map(|_| (rng.uniform(), rng.uniform())).collect();
    let (mut re, mut im): (Vec<f64>, Vec<f64>) = x.iter().copied().unzip();
    fft(&mut re, &mut im);
    for k in 0..n {
        let (mut sr, mut si) = (0.0, 0.0);
        for (t, (xr, xi)) in x.iter().enumerate() {
            let (s, c) = (-2.0 * PI * (k * t) as f64 / n as f64).sin_cos();
            sr += xr * c - xi * s;
            si += xr * s + xi * c;
        }
        assert!(
            (sr - re[k]).abs() < 1e-9 && (si - im[k]).abs() < 1e-9,
            "fft bin {k}"
        );
    }
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

/// Run a 1 kHz, -6 dBFS tone of `frames_in` frames at 48 kHz through `resample` with
/// `rate = 44100` into a float32 file, as pipelines/resample.toml does (captures run at the
/// pipeline's rate; `resample` takes its input to `rate`), and check the file.
fn check_resampled_tone(block_frames: u32, channels: u16, frames_in: u64) {
    let dir = TempDir::new("dsp-resample");
    run_pipeline(
        &dir,
        &format!(
            r#"version = 1
[pipeline]
sample_rate = 48000
block_frames = {block_frames}
[capture.tone]
plugin = "tone"
frequency = 1000.0
amplitude_db = -6.0
channels = {channels}
frames = {frames_in}
[process.to-cd]
plugin = "resample"
inputs = ["tone"]
rate = 44100
[storage.file]
plugin = "wav-writer"
inputs = ["to-cd"]
path = "out.wav"
format = "float32"
"#
        ),
    );
    let case = format!("block_frames {block_frames}, {channels} channel(s), {frames_in} frames in");
    let (out_spec, frames, interleaved) = read_f32(&dir.path().join("out.wav"));
    assert_eq!(out_spec, spec(channels, 44_100, 32, true), "{case}");
    let rate = 44_100.0;
    let expected_frames = (frames_in * 44_100).div_ceil(48_000);
    assert_eq!(
        u64::from(frames),
        expected_frames,
        "{case}: ceil(frames in * 44100 / 48000) frames out"
    );
    // The tone puts the same signal on every channel; they go through the same filter.
    let ch = usize::from(channels);
    let y: Vec<f32> = interleaved.iter().step_by(ch).copied().collect();
    for c in 1..ch {
        let other = interleaved.iter().skip(c).step_by(ch);
        assert!(
            y.iter().zip(other).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{case}: channel {c} differs from channel 0"
        );
    }

    // Away from the start and the end of the stream.
    let edge = (0.1 * rate) as usize;
    let middle = &y[edge..y.len() - edge];
    let zc = zero_crossing_frequency(middle, rate);

    let n = 1 << 18; // 5.9 s, 0.168 Hz a bin
    let start = (0.5 * rate) as usize;
    let power = power_spectrum(&y[start..start + n]);
    let bin_hz = rate / n as f64;
    let k = (1..power.len() - 1)
        .max_by(|a, b| power[*a].total_cmp(&power[*b]))
        .unwrap();
    let (a, b, c) = (power[k - 1].ln(), power[k].ln(), power[k + 1].ln());
    let peak = (k as f64 + 0.5 * (a - c) / (a - 2.0 * b + c)) * bin_hz;
    // Energy more than 10 Hz from the tone (the window's main lobe is ±1.2 Hz) against the
    // energy within.
    let (mut inside, mut outside) = (0.0, 0.0);
    let mut spur = (0.0f64, 0.0);
    for (i, p) in power.iter().enumerate() {
        let f = i as f64 * bin_hz;
        if (f - 1000.0).abs() <= 10.0 {
            inside += p;
        } else {
            outside += p;
            if *p > spur.0 {
                spur = (*p, f);
            }
        }
    }
    let out_of_band = 10.0 * (outside / inside).log10();
    let spur_db = 10.0 * (spur.0 / inside).log10();

    // A whole number of cycles (1000 cycles = 44100 frames) for the level.
    let level = db(rms(&middle[..44_100]) * 2f64.sqrt());
    println!(
        "resample 48k -> 44.1k, 1 kHz ({case}): {frames} frames out; zero crossings {zc:.6} Hz \
         ({:+.1e}), FFT peak {peak:.6} Hz ({:+.1e}); energy beyond ±10 Hz {out_of_band:.1} dB re tone (largest bin \
         {spur_db:.1} dB at {:.1} Hz); level {level:.4} dBFS",
        zc - 1000.0,
        peak - 1000.0,
        spur.1
    );
    assert!(
        (zc - 1000.0).abs() <= 0.1,
        "{case}: zero crossings: {zc} Hz"
    );
    assert!((peak - 1000.0).abs() <= 0.1, "{case}: FFT peak: {peak} Hz");
    assert!(
        out_of_band < -80.0,
        "{case}: energy outside the tone {out_of_band:.1} dB re the tone (largest at {:.1} Hz, \
         {spur_db:.1} dB)",
        spur.1
    );
    // A resampler leaves a 1 kHz tone's level alone (the tone is -6 dBFS).
    assert!((level - -6.0).abs() <= 0.05, "{case}: level {level} dBFS");
}

#[test]
fn resample_48k_to_44k1_keeps_a_1khz_tone_at_1khz_and_pure() {
    check_fft();
    // Ten seconds and 123 frames, so the last block is a short one: mono in the default
    // 480-frame blocks, and stereo in the 960-frame blocks of pipelines/resample.toml.
    check_resampled_tone(480, 1, 480_123);
    check_resampled_tone(960, 2, 480_123);
}

// ---------------------------------------------------------------------------------------------
// 5. channel-split then channel-merge is the identity
// ---------------------------------------------------------------------------------------------

/// A pipeline reading `in.wav`, splitting it, merging the ports `ports` in that order, and
/// writing `out.wav` in `format`.
fn split_merge_pipeline(ports: &[&str], format: &str) -> String {
    let inputs: Vec<String> = ports.iter().map(|p| format!("\"split.{p}\"")).collect();
    format!(
        r#"version = 1
[capture.src]
plugin = "wav-reader"
path = "in.wav"
[process.split]
plugin = "channel-split"
inputs = ["src"]
[process.merge]
plugin = "channel-merge"
inputs = [{}]
[storage.out]
plugin = "wav-writer"
inputs = ["merge"]
path = "out.wav"
format = "{format}"
"#,
        inputs.join(", ")
    )
}

/// Frames of the split/merge files: not a whole number of blocks.
const SPLIT_FRAMES: usize = 2 * SAMPLE_RATE as usize + 333;

#[test]
fn channel_split_then_merge_gives_back_a_stereo_float32_file_bit_for_bit() {
    let dir = TempDir::new("dsp-split-merge-f32");
    let mut rng = Rng(5);
    // Different content per channel (a swap would show), with values a lossy path would
    // change: above full scale, -0.0, subnormal, tiny.
    let mut input: Vec<f32> = vec![1.75, -0.0, 1e-40, -3e-30, f32::MIN_POSITIVE, -1.0];
    input.extend((input.len()..SPLIT_FRAMES * 2).map(|i| {
        let v = rng.uniform() as f32;
        if i % 2 == 0 {
            v
        } else {
            v * 0.25 + 0.5
        }
    }));
    write_f32(
        &dir.path().join("in.wav"),
        spec(2, SAMPLE_RATE, 32, true),
        &input,
    );
    // The stereo aliases, in port order (left = 0, right = 1).
    run_pipeline(&dir, &split_merge_pipeline(&["left", "right"], "float32"));

    let (out_spec, frames, output) = read_f32(&dir.path().join("out.wav"));
    assert_eq!(out_spec, spec(2, SAMPLE_RATE, 32, true));
    assert_eq!(frames as usize, SPLIT_FRAMES);
    assert_eq!(output.len(), input.len());
    let first_diff = input
        .iter()
        .zip(&output)
        .position(|(a, b)| a.to_bits() != b.to_bits());
    if let Some(i) = first_diff {
        panic!(
            "sample {i} (frame {}, channel {}): {:e} in, {:e} out",
            i / 2,
            i % 2,
            input[i],
            output[i]
        );
    }
}

#[test]
fn channel_split_then_merge_gives_back_a_4_channel_pcm24_file_exactly() {
    let dir = TempDir::new("dsp-split-merge-pcm24");
    let mut rng = Rng(6);
    // The extremes first, then each channel at its own level.
    let mut input: Vec<i32> = vec![-8_388_608, 8_388_607, 0, -1, 1, -8_388_607, 8_388_606, 2];
    input.extend((input.len()..SPLIT_FRAMES * 4).map(|i| {
        let full = (rng.next_u64() >> 40) as i32 - (1 << 23);
        full >> (i % 4 * 3)
    }));
    write_int(
        &dir.path().join("in.wav"),
        spec(4, SAMPLE_RATE, 24, false),
        &input,
    );
    run_pipeline(&dir, &split_merge_pipeline(&["0", "1", "2", "3"], "pcm24"));

    let (out_spec, frames, output) = read_int(&dir.path().join("out.wav"));
    assert_eq!(out_spec, spec(4, SAMPLE_RATE, 24, false));
    assert_eq!(frames as usize, SPLIT_FRAMES);
    assert_eq!(output.len(), input.len());
    let first_diff = input.iter().zip(&output).position(|(a, b)| a != b);
    if let Some(i) = first_diff {
        panic!(
            "sample {i} (frame {}, channel {}): {} in, {} out",
            i / 4,
            i % 4,
            input[i],
            output[i]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// gain per channel and its ramp, through the ABI
// ---------------------------------------------------------------------------------------------

#[test]
fn gain_per_channel_scales_each_channel_and_a_ramp_glides_without_a_step() {
    let reg = registry();
    let inputs = [format(2)];
    let id = unique_stage_id("gain");
    let ctx = context(&id, &inputs);
    // channels_db: left untouched, right halved, exactly (f32 products of powers of two).
    let mut p = new_processor(&reg, "gain", r#"{"channels_db": [0.0, -6.0206]}"#, &ctx)
        .unwrap_or_else(|e| panic!("{}", e.message()));
    let mut rng = Rng(7);
    let input: Vec<f32> = (0..2 * BLOCK_FRAMES as usize)
        .map(|_| (rng.uniform() * 0.9) as f32)
        .collect();
    let out = process_block(&mut p, &input, 2).unwrap();
    for (i, (o, x)) in out.chunks_exact(2).zip(input.chunks_exact(2)).enumerate() {
        assert_eq!(o[0], x[0], "left, frame {i}");
        assert!(
            (o[1] - x[1] * 0.5).abs() <= x[1].abs() * 1e-6,
            "right, frame {i}"
        );
    }

    // ramp_ms = 10 at 48 kHz: 480 frames from unity down to -6.0206 dB, then flat; every step
    // is small (no click) and the level never leaves [0.5, 1].
    let id = unique_stage_id("gain");
    let ctx = context(&id, &inputs);
    let mut p = new_processor(&reg, "gain", r#"{"db": -6.0206, "ramp_ms": 10.0}"#, &ctx)
        .unwrap_or_else(|e| panic!("{}", e.message()));
    let ones = vec![1.0f32; 2 * 2 * BLOCK_FRAMES as usize];
    let out = process_block(&mut p, &ones, 2).unwrap();
    let left: Vec<f32> = out.chunks_exact(2).map(|f| f[0]).collect();
    assert!(left.windows(2).all(|w| w[1] <= w[0] && w[0] - w[1] < 0.002));
    assert!(
        left[0] < 1.0 && left[0] > 0.998,
        "starts at unity: {}",
        left[0]
    );
    for (i, &v) in left.iter().enumerate().skip(480) {
        assert!((v - 0.5).abs() < 1e-6, "frame {i} after the ramp: {v}");
    }
    assert!(
        out.chunks_exact(2).all(|f| f[0] == f[1]),
        "both channels alike"
    );
}
