//! Nanoseconds per sample of the WAV sample conversions, each format, against the loops they
//! replaced (copied here as they were). No benchmark framework: each figure is the best of many
//! timed runs of a block-sized call, on data that stays in the cache.
//!
//! `cargo bench -p tapeline-wav`

use std::hint::black_box;
use std::time::Instant;

use tapeline_wav::convert::{decode, encode};
use tapeline_wav::SampleFormat;

/// Samples per call: a few blocks' worth, well inside L2.
const SAMPLES: usize = 8192;
/// Calls per timed run, and timed runs per figure (the best is kept).
const CALLS: usize = 20;
const RUNS: usize = 300;

/// Best time per sample, in ns, of `RUNS` runs of `CALLS` calls of each of `fs`, the runs of
/// the functions taking turns so that a busy moment of the machine hits them alike.
fn time<const N: usize>(mut fs: [&mut dyn FnMut(); N]) -> [f64; N] {
    let mut best = [f64::INFINITY; N];
    for _ in 0..RUNS {
        for (f, best) in fs.iter_mut().zip(&mut best) {
            let start = Instant::now();
            for _ in 0..CALLS {
                f();
            }
            let ns = start.elapsed().as_nanos() as f64 / (CALLS * SAMPLES) as f64;
            *best = best.min(ns);
        }
    }
    best
}

fn main() {
    println!("tapeline-wav conversions: ns per sample, {SAMPLES} samples per call, best of {RUNS}");
    read();
    write();
}

/// A read conversion: file bytes in, samples out.
type Decode = fn(&[u8], &mut [f32]);

fn read() {
    // Pseudo-random bytes: every bit pattern is as likely as any other.
    let mut state = 0x2545_f491_u32;
    let bytes: Vec<u8> = (0..SAMPLES * 4)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect();
    let mut out = vec![0f32; SAMPLES];
    println!("\nread (bytes -> f32)      new    before");
    let formats: [(&str, Decode, Decode); 5] = [
        ("pcm8", decode::pcm8, old::pcm8),
        ("pcm16", decode::pcm16, old::pcm16),
        ("pcm24", decode::pcm24, old::pcm24),
        ("pcm32", decode::pcm32, old::pcm32),
        ("float32", decode::float32, old::float32),
    ];
    for (name, new, before) in formats {
        let mut out2 = out.clone();
        let [new, before] = time([
            &mut || new(black_box(&bytes), black_box(&mut out)),
            &mut || before(black_box(&bytes), black_box(&mut out2)),
        ]);
        println!("  {name:<20} {new:>6.3}  {before:>6.3}");
    }
}

fn write() {
    // Sine-like values crossing full scale, so that both clamps are taken.
    let samples: Vec<f32> = (0..SAMPLES)
        .map(|i| (i as f32 * 0.013).sin() * 1.1)
        .collect();
    let mut out = vec![0u8; SAMPLES * 4];
    println!("\nwrite (f32 -> bytes)     new    before");
    for (name, format) in [
        ("pcm16", SampleFormat::Pcm16),
        ("pcm24", SampleFormat::Pcm24),
        ("pcm32", SampleFormat::Pcm32),
        ("float32", SampleFormat::Float32),
    ] {
        let mut out2 = out.clone();
        let [new, before] = time([
            &mut || {
                let n = encode::encode_slice(format, black_box(&samples), black_box(&mut out));
                black_box(n);
            },
            &mut || {
                let n = old::encode_slice(format, black_box(&samples), black_box(&mut out2));
                black_box(n);
            },
        ]);
        println!("  {name:<20} {new:>6.3}  {before:>6.3}");
    }
}

/// The conversions as they were before they were vectorised.
mod old {
    use tapeline_wav::convert::encode::convert_slice;
    use tapeline_wav::SampleFormat;

    fn convert<const W: usize>(bytes: &[u8], dst: &mut [f32], f: impl Fn([u8; W]) -> f32) {
        for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(W)) {
            let mut a = [0u8; W];
            a.copy_from_slice(b);
            *d = f(a);
        }
    }

    /// The reader's scale, computed at run time as it was (`Kind::Int`).
    fn scale(bits: u32) -> f32 {
        1.0 / std::hint::black_box(1u64 << (bits - 1)) as f32
    }

    pub fn pcm8(bytes: &[u8], dst: &mut [f32]) {
        let scale = scale(8);
        convert(bytes, dst, |b: [u8; 1]| {
            (i32::from(b[0]) - 128) as f32 * scale
        });
    }

    pub fn pcm16(bytes: &[u8], dst: &mut [f32]) {
        let scale = scale(16);
        convert(bytes, dst, |b: [u8; 2]| {
            f32::from(i16::from_le_bytes(b)) * scale
        });
    }

    pub fn pcm24(bytes: &[u8], dst: &mut [f32]) {
        let scale = scale(24);
        convert(bytes, dst, |b: [u8; 3]| {
            (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 * scale
        });
    }

    pub fn pcm32(bytes: &[u8], dst: &mut [f32]) {
        let scale = scale(32);
        convert(bytes, dst, |b: [u8; 4]| {
            i32::from_le_bytes(b) as f32 * scale
        });
    }

    pub fn float32(bytes: &[u8], dst: &mut [f32]) {
        convert(bytes, dst, f32::from_le_bytes);
    }

    pub fn encode_slice(format: SampleFormat, src: &[f32], dst: &mut [u8]) -> usize {
        match format {
            SampleFormat::Pcm16 => convert_slice(src, dst, pcm16_one),
            SampleFormat::Pcm24 => convert_slice(src, dst, pcm24_one),
            SampleFormat::Pcm32 => convert_slice(src, dst, pcm32_one),
            // The loop is the crate's own: only the per-sample encoders were different.
            _ => convert_slice(src, dst, f32::to_le_bytes),
        }
    }

    fn pcm16_one(x: f32) -> [u8; 2] {
        (quantize(x, 32_768.0, 32_767.0) as i16).to_le_bytes()
    }

    fn pcm24_one(x: f32) -> [u8; 3] {
        let b = quantize(x, 8_388_608.0, 8_388_607.0).to_le_bytes();
        [b[0], b[1], b[2]]
    }

    fn pcm32_one(x: f32) -> [u8; 4] {
        quantize(x, 2_147_483_648.0, 2_147_483_647.0).to_le_bytes()
    }

    #[inline(always)]
    fn quantize(x: f32, scale: f32, max: f32) -> i32 {
        let x = if x.is_nan() { 0.0 } else { x };
        let v = (x * scale).max(-scale).min(max);
        let r = v + 0.499_999_97f32.copysign(v);
        if r >= 2_147_483_648.0 {
            return i32::MAX;
        }
        // SAFETY: as in the crate's `quantize` before: `r` is not NaN and lies in
        // [-2^31 - 0.5, 2^31), so the truncating conversion is defined.
        unsafe { r.to_int_unchecked::<i32>() }
    }
}
