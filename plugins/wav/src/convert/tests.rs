//! The vectorised conversions against the plain loops they replaced (kept here, as they were,
//! as the reference): the same bits for every 8/16/24-bit value in every position of the loops,
//! for a dense sample of 32-bit integers and of float bit patterns; and the slice encoder
//! against the sample-by-sample one for every length and position.

use super::decode;
use super::encode::encode_slice;
use crate::writer::SampleFormat;

/// The reader's conversions before vectorising: one sample at a time, with the scale computed
/// at run time from the bit depth as the reader did (`Kind::Int`).
mod before {
    pub fn scale(bits: u32) -> f32 {
        1.0 / (1u64 << (bits - 1)) as f32
    }

    pub fn pcm8(b: u8) -> f32 {
        (i32::from(b) - 128) as f32 * scale(8)
    }

    pub fn pcm16(b: [u8; 2]) -> f32 {
        f32::from(i16::from_le_bytes(b)) * scale(16)
    }

    pub fn pcm24(b: [u8; 3]) -> f32 {
        (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 * scale(24)
    }

    pub fn pcm32(b: [u8; 4]) -> f32 {
        i32::from_le_bytes(b) as f32 * scale(32)
    }
}

/// A read conversion.
type Decode = fn(&[u8], &mut [f32]);

/// Decode `bytes` with `decode` starting at every sample offset from 0 to 7 (so that each value
/// passes through every lane of the vectorised loops), and in pieces of 1 to 5 samples (so that
/// each passes through their scalar tails), and check every sample's bits against `want`.
fn check_offsets<const W: usize>(
    bytes: &[u8],
    decode: Decode,
    want: impl Fn([u8; W]) -> f32,
    out: &mut [f32],
) {
    let n = bytes.len() / W;
    let check = |out: &[f32], skip: usize| {
        let bytes = bytes[skip * W..].chunks_exact(W);
        for (i, (got, b)) in out.iter().zip(bytes).enumerate() {
            let mut a = [0u8; W];
            a.copy_from_slice(b);
            let want = want(a);
            assert_eq!(got.to_bits(), want.to_bits(), "{b:02x?} at {i} (+{skip})");
        }
    };
    for skip in 0..8.min(n) {
        let out = &mut out[..n - skip];
        out.fill(f32::NAN);
        decode(&bytes[skip * W..], out);
        check(out, skip);
    }
    let out = &mut out[..n];
    out.fill(f32::NAN);
    let mut at = 0;
    for piece in (1..=5).cycle() {
        let end = (at + piece).min(n);
        decode(&bytes[at * W..end * W], &mut out[at..end]);
        at = end;
        if at == n {
            break;
        }
    }
    check(out, 0);
}

#[test]
fn pcm8_and_pcm16_every_value() {
    let bytes: Vec<u8> = (0..=255).collect();
    let mut out = vec![0f32; 1 << 16];
    check_offsets(
        &bytes,
        decode::pcm8,
        |b: [u8; 1]| before::pcm8(b[0]),
        &mut out,
    );
    let bytes: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
    check_offsets(&bytes, decode::pcm16, before::pcm16, &mut out);
}

#[test]
fn pcm24_every_value() {
    // 2^24 values in batches of 2^16, each batch at eight offsets.
    const BATCH: u32 = 1 << 16;
    let mut bytes = vec![0u8; 3 * BATCH as usize];
    let mut out = vec![0f32; BATCH as usize];
    for start in (0..1u32 << 24).step_by(BATCH as usize) {
        for (i, b) in bytes.chunks_exact_mut(3).enumerate() {
            b.copy_from_slice(&(start + i as u32).to_le_bytes()[..3]);
        }
        check_offsets(&bytes, decode::pcm24, before::pcm24, &mut out);
    }
}

#[test]
fn pcm32_dense_sample() {
    let mut values = vec![i32::MIN, i32::MIN + 1, i32::MAX, i32::MAX - 1, 0, 1, -1];
    for k in 0..31 {
        let p = 1i32 << k;
        values.extend([p, -p, p - 1, 1 - p, p + 1, -p - 1]);
    }
    // Every 4099th value across the whole range, and pseudo-random ones.
    values.extend((i32::MIN..=i32::MAX).step_by(4099));
    let mut state = 0x9e37_79b9u32;
    values.extend((0..1_000_000).map(|_| {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        state as i32
    }));
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut out = vec![0f32; values.len()];
    check_offsets(&bytes, decode::pcm32, before::pcm32, &mut out);
}

#[test]
fn float32_is_bit_for_bit() {
    // Every 257th bit pattern (NaNs with payloads, infinities, subnormals, both zeros among
    // them) and the special ones.
    let mut patterns: Vec<u32> = (0..=u32::MAX).step_by(257).collect();
    patterns.extend([
        0,
        0x8000_0000,
        1,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0001,
        0xffbf_ffff,
    ]);
    let bytes: Vec<u8> = patterns.iter().flat_map(|p| p.to_le_bytes()).collect();
    let mut out = vec![0f32; patterns.len()];
    check_offsets(&bytes, decode::float32, f32::from_le_bytes, &mut out);
}

/// Fewer bytes than samples, or fewer samples than bytes: as many as both hold, and nothing
/// past them is touched.
#[test]
fn decoding_stops_at_the_shorter_slice() {
    let bytes = [0x40u8; 4 * 10];
    let formats: [(usize, Decode); 5] = [
        (1, decode::pcm8),
        (2, decode::pcm16),
        (3, decode::pcm24),
        (4, decode::pcm32),
        (4, decode::float32),
    ];
    for (width, decode) in formats {
        for n in 0..=9 {
            let mut out = [7.0f32; 9];
            decode(&bytes[..n * width + width - 1], &mut out);
            assert!(out[..n].iter().all(|&x| x != 7.0), "width {width}, {n}");
            assert!(out[n..].iter().all(|&x| x == 7.0), "width {width}, {n}");
            let mut out = [7.0f32; 10];
            decode(&bytes, &mut out[..n]);
            assert!(out[..n].iter().all(|&x| x != 7.0) && out[n] == 7.0);
        }
    }
}

/// Every format the writer stores.
pub(crate) const FORMATS: [SampleFormat; 4] = [
    SampleFormat::Pcm16,
    SampleFormat::Pcm24,
    SampleFormat::Pcm32,
    SampleFormat::Float32,
];

/// Awkward inputs: both zeros, NaN, infinities, half-LSB edges, full scale and past it, and
/// pseudo-random values over [-1.5, 1.5].
fn awkward_samples() -> Vec<f32> {
    let mut xs = vec![
        0.0,
        -0.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1.0,
        -1.0,
    ];
    xs.extend([1.5 / 32_768.0, -0.5 / 8_388_608.0, 0.999_999_9, 2.0, -2.0]);
    let mut state = 7u32;
    xs.extend((0..2000).map(|_| {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state as f32 / u32::MAX as f32) * 3.0 - 1.5
    }));
    xs
}

/// Each sample encoded on its own (through the scalar tail of the slice encoder), one after the
/// other: what a file must hold for `samples`.
pub(crate) fn encoded_one_by_one(
    format: SampleFormat,
    samples: impl IntoIterator<Item = f32>,
) -> Vec<u8> {
    let mut out = Vec::new();
    for x in samples {
        let mut b = [0u8; 4];
        let n = encode_slice(format, &[x], &mut b);
        out.extend_from_slice(&b[..n]);
    }
    out
}

/// The slice encoder (grouped for pcm24) against encoding one sample at a time: every length from 0 to 40 at every starting point up to 8, every format, also with a
/// destination too short for all of them.
#[test]
fn encode_slice_matches_encoding_one_by_one() {
    let xs = awkward_samples();
    let mut want: Vec<u8>;
    let mut got = vec![0u8; 4 * xs.len()];
    for format in FORMATS {
        let w = format.bytes();
        want = encoded_one_by_one(format, xs.iter().copied());
        assert_eq!(want.len(), w * xs.len());
        for start in 0..8 {
            for len in 0..=40 {
                let src = &xs[start..start + len];
                let n = encode_slice(format, src, &mut got);
                assert_eq!(got[..n], want[start * w..(start + len) * w], "{format:?}");
                // Room for `len - 1` samples and a part of one: `len - 1` are written.
                let room = (len * w).saturating_sub(1);
                got.fill(0);
                let n = encode_slice(format, src, &mut got[..room]);
                assert_eq!(n, room / w * w);
                assert_eq!(got[..n], want[start * w..start * w + n], "{format:?}");
            }
        }
        // All of them at once.
        let n = encode_slice(format, &xs, &mut got);
        assert!(got[..n] == want[..], "{format:?}");
    }
}
