//! `f32` samples to file bytes, for the writer. Integers: `x * 2^(N-1)` rounded half away from
//! zero and clamped, so -1.0 is the minimum value and a sample read from an N-bit file
//! (`v / 2^(N-1)`) is written back as exactly `v`; NaN is written as 0. Floats are copied.

use crate::writer::SampleFormat;

/// Fill `dst` with as many whole encoded samples of `src` as fit; returns the bytes used. One
/// loop per format, with the width a constant, so every loop vectorises.
pub fn encode_slice(format: SampleFormat, src: &[f32], dst: &mut [u8]) -> usize {
    match format {
        SampleFormat::Pcm16 => convert_slice(src, dst, pcm16),
        SampleFormat::Pcm24 => pcm24_slice(src, dst),
        SampleFormat::Pcm32 => convert_slice(src, dst, pcm32),
        // A copy (the compiler calls memcpy).
        SampleFormat::Float32 => convert_slice(src, dst, f32::to_le_bytes),
    }
}

/// [`encode_slice`] for one format, `convert` encoding a sample into `W` bytes. Public for the
/// benchmark, which times the previous per-sample encoders through it.
#[doc(hidden)]
pub fn convert_slice<const W: usize>(
    src: &[f32],
    dst: &mut [u8],
    convert: impl Fn(f32) -> [u8; W],
) -> usize {
    let n = src.len().min(dst.len() / W);
    for (slot, &x) in dst[..n * W].chunks_exact_mut(W).zip(&src[..n]) {
        slot.copy_from_slice(&convert(x));
    }
    n * W
}

/// pcm24 four samples at a time: their 12 bytes are packed into three 4-byte words and stored
/// with three 4-byte copies instead of four 3-byte stores (a 2-byte and a 1-byte store each),
/// which lets the loop stay in vector registers. The same bytes as [`pcm24`] one by one.
fn pcm24_slice(src: &[f32], dst: &mut [u8]) -> usize {
    let n = src.len().min(dst.len() / 3);
    let (src, dst) = (&src[..n], &mut dst[..n * 3]);
    let mut groups = dst.chunks_exact_mut(12);
    let mut quads = src.chunks_exact(4);
    for (g, q) in (&mut groups).zip(&mut quads) {
        let [a, b, c, d] = [q[0], q[1], q[2], q[3]].map(|x| pcm24_value(x) as u32);
        // Bytes a0 a1 a2 b0 | b1 b2 c0 c1 | c2 d0 d1 d2.
        let words = [
            a & 0xff_ffff | b << 24,
            (b >> 8) & 0xffff | c << 16,
            (c >> 16) & 0xff | d << 8,
        ];
        for (slot, w) in g.chunks_exact_mut(4).zip(words) {
            slot.copy_from_slice(&w.to_le_bytes());
        }
    }
    convert_slice(quads.remainder(), groups.into_remainder(), pcm24);
    n * 3
}

/// One sample as a 16-bit little-endian integer.
fn pcm16(x: f32) -> [u8; 2] {
    (quantize(x, 32_768.0, 32_767.0) as i16).to_le_bytes()
}

/// One sample as a 24-bit little-endian integer.
fn pcm24(x: f32) -> [u8; 3] {
    let b = pcm24_value(x).to_le_bytes();
    [b[0], b[1], b[2]]
}

/// One sample as a 24-bit integer, in an `i32`.
#[inline(always)]
fn pcm24_value(x: f32) -> i32 {
    quantize(x, 8_388_608.0, 8_388_607.0)
}

/// One sample as a 32-bit little-endian integer.
fn pcm32(x: f32) -> [u8; 4] {
    // 2^31 - 1 is not an f32 (it rounds to 2^31): quantize makes it 2^31 - 1.
    quantize(x, 2_147_483_648.0, 2_147_483_647.0).to_le_bytes()
}

/// The largest f32 below 0.5: added before truncating, it rounds half away from zero with no
/// double rounding (plain `+ 0.5` would turn 0.49999997 into 1).
const JUST_BELOW_HALF: f32 = 0.499_999_97;

/// `x * scale` rounded half away from zero and clamped to `[-scale, max]`, in f32 only (no call
/// into the C library, no f64): `x * scale` is exact (a power of two), the clamp two compares,
/// the rounding an add and a truncating cast, so the loops over samples vectorise. NaN gives 0.
/// Produces the same integer as rounding `x * scale` in f64 for every f32 (tests: all 2^32).
#[inline(always)]
fn quantize(x: f32, scale: f32, max: f32) -> i32 {
    let x = if x.is_nan() { 0.0 } else { x };
    let v = (x * scale).max(-scale).min(max);
    let r = v + JUST_BELOW_HALF.copysign(v);
    // Only pcm32's `max` (2^31 - 1, stored as 2^31) rounds to 2^31 or above. For the narrower
    // formats `r` stays within `max + 0.5` and the first test, false at compile time, takes
    // the check out of their loops.
    if scale > 8_388_608.0 && r >= 2_147_483_648.0 {
        return i32::MAX;
    }
    // SAFETY: `r` is not NaN (mapped to 0 above) and lies in [-scale - 0.5, 2^31): -scale is at
    // least -2^31, and the only values at or above 2^31 (pcm32's max rounds up to 2^31) were
    // returned above (a `scale` of at most 2^23 keeps `r` below 2^23 + 1). So the truncating
    // conversion is defined; unlike `as`, it needs no saturation code per sample, and compiles
    // to one packed instruction in the vectorised loops.
    unsafe { r.to_int_unchecked::<i32>() }
}
