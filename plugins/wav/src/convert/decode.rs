//! File bytes to `f32` samples, one function per stored format. Each converts as many samples
//! as both slices hold (`min(dst.len(), bytes.len() / width)`) and gives, bit for bit, the value
//! hound's sample-by-sample path gives: an N-bit integer `v` becomes `v / 2^(N-1)` (exact for
//! N <= 24, rounded to nearest for N = 32), a float is copied.

/// 2^-7, 2^-15, 2^-31: exact, so multiplying by them is dividing by 2^(N-1).
const SCALE8: f32 = 1.0 / 128.0;
const SCALE16: f32 = 1.0 / 32_768.0;
const SCALE32: f32 = 1.0 / 2_147_483_648.0;

/// 8-bit samples are unsigned: `byte - 128`, as hound reads them.
pub fn pcm8(bytes: &[u8], dst: &mut [f32]) {
    for (d, &b) in dst.iter_mut().zip(bytes) {
        *d = (i32::from(b) - 128) as f32 * SCALE8;
    }
}

/// 16-bit little-endian signed integers.
pub fn pcm16(bytes: &[u8], dst: &mut [f32]) {
    for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(2)) {
        *d = f32::from(i16::from_le_bytes([b[0], b[1]])) * SCALE16;
    }
}

/// 24-bit little-endian signed integers, four at a time from two 8-byte words: bytes 0..8 hold
/// samples 0 and 1 at bits 0 and 24, bytes 6..14 samples 2 and 3 at the same bits, so the same
/// shifts and masks on both words put each sample into the top 24 bits of an `i32` (`v * 2^8`);
/// the compiler does them on both words at once in vector registers (no byte gathers, which
/// SSE2 has no cheap form for). `v * 2^8` has 24 significant bits, so it converts to `f32`
/// exactly, and `* 2^-31` is exact: the result is `v * 2^-23`, as before.
pub fn pcm24(bytes: &[u8], dst: &mut [f32]) {
    let n = dst.len().min(bytes.len() / 3);
    let (bytes, dst) = (&bytes[..n * 3], &mut dst[..n]);
    // The second word reaches 2 bytes past its group: the groups followed by 2 more bytes go
    // through the loop, the last 1 to 4 samples one by one.
    let groups = bytes.len().saturating_sub(2) / 12;
    let (head, tail) = dst.split_at_mut(groups * 4);
    for (i, q) in head.chunks_exact_mut(4).enumerate() {
        let g = &bytes[i * 12..i * 12 + 14];
        let (lo, hi) = (le_u64(&g[..8]), le_u64(&g[6..]));
        let top = [
            (lo << 8) as u32,
            (lo >> 16) as u32 & !0xff,
            (hi << 8) as u32,
            (hi >> 16) as u32 & !0xff,
        ];
        for (d, t) in q.iter_mut().zip(top) {
            *d = t as i32 as f32 * SCALE32;
        }
    }
    pcm24_one_by_one(&bytes[groups * 12..], tail);
}

/// [`pcm24`] for the last samples, one by one.
fn pcm24_one_by_one(bytes: &[u8], dst: &mut [f32]) {
    for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(3)) {
        *d = i32::from_le_bytes([0, b[0], b[1], b[2]]) as f32 * SCALE32;
    }
}

/// The first 8 bytes of `b` (which holds at least 8) as a little-endian word.
#[inline(always)]
fn le_u64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// 32-bit little-endian signed integers, rounded to the nearest `f32` (ties to even).
pub fn pcm32(bytes: &[u8], dst: &mut [f32]) {
    for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(4)) {
        *d = i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 * SCALE32;
    }
}

/// 32-bit little-endian floats, bit for bit (NaN payloads included): a copy.
pub fn float32(bytes: &[u8], dst: &mut [f32]) {
    for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(4)) {
        *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}
