//! The WAV header `wav-writer` writes, and rewrites as the file grows.
//!
//! Layout: `RIFF` header, a 36-byte `JUNK` chunk reserved for RF64 (as BWF / EBU Tech 3306 do),
//! `fmt `, then `data` to the end of the file. The header's length never changes, so it can be
//! rewritten in place at any time; once the sizes no longer fit in 32 bits the same bytes become
//! an RF64 header whose `ds64` chunk (the former `JUNK`) carries the 64-bit sizes.

/// Bytes of the reserved chunk, header included: the size of a `ds64` chunk with an empty table.
pub const JUNK_LEN: usize = 36;
/// The longest header [`write_header`] produces (with a WAVE_FORMAT_EXTENSIBLE `fmt `).
pub const MAX_HEADER: usize = 12 + JUNK_LEN + 8 + 40 + 8;

const PCM: u16 = 1;
const IEEE_FLOAT: u16 = 3;
const EXTENSIBLE: u16 = 0xFFFE;
/// KSDATAFORMAT_SUBTYPE_PCM / _IEEE_FLOAT without their first two bytes (the format tag).
const GUID_TAIL: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
];

/// What the `fmt ` chunk says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub channels: u16,
    pub sample_rate: u32,
    pub bits: u16,
    pub float: bool,
}

impl Layout {
    pub fn block_align(&self) -> u16 {
        self.channels * (self.bits / 8)
    }

    /// WAVE_FORMAT_EXTENSIBLE is what Microsoft asks for above 2 channels or 16-bit integers;
    /// plain PCM / IEEE float otherwise, which every reader understands.
    fn extensible(&self) -> bool {
        self.channels > 2 || (!self.float && self.bits > 16)
    }

    fn fmt_len(&self) -> usize {
        if self.extensible() {
            40
        } else {
            16
        }
    }

    /// Offset of the first audio byte.
    pub fn header_len(&self) -> usize {
        12 + JUNK_LEN + 8 + self.fmt_len() + 8
    }
}

/// Write the header for `data_bytes` bytes of audio into `buf` and return its length.
///
/// `padded` says whether the file holds the pad byte RIFF requires after odd-sized data (true for
/// a finished file); the RIFF size counts it then. RIFF while the RIFF size fits in 32 bits,
/// RF64 (sizes 0xFFFFFFFF, real sizes in `ds64`) after.
pub fn write_header(
    layout: &Layout,
    data_bytes: u64,
    padded: bool,
    buf: &mut [u8; MAX_HEADER],
) -> usize {
    let len = layout.header_len();
    let pad = u64::from(padded && data_bytes % 2 == 1);
    let riff_size = (len as u64 - 8) + data_bytes + pad;
    let rf64 = riff_size > u64::from(u32::MAX);
    let h = &mut buf[..len];
    h.fill(0);

    let mut w = Cursor { buf: h, pos: 0 };
    if rf64 {
        w.bytes(b"RF64");
        w.u32(u32::MAX);
        w.bytes(b"WAVE");
        w.bytes(b"ds64");
        w.u32(JUNK_LEN as u32 - 8);
        w.u64(riff_size);
        w.u64(data_bytes);
        w.u64(data_bytes / u64::from(layout.block_align().max(1)));
        w.u32(0); // no table entries
    } else {
        w.bytes(b"RIFF");
        w.u32(riff_size as u32);
        w.bytes(b"WAVE");
        w.bytes(b"JUNK");
        w.u32(JUNK_LEN as u32 - 8);
        w.pos += JUNK_LEN - 8;
    }

    let tag = if layout.float { IEEE_FLOAT } else { PCM };
    w.bytes(b"fmt ");
    w.u32(layout.fmt_len() as u32);
    w.u16(if layout.extensible() { EXTENSIBLE } else { tag });
    w.u16(layout.channels);
    w.u32(layout.sample_rate);
    w.u32(layout.sample_rate * u32::from(layout.block_align()));
    w.u16(layout.block_align());
    w.u16(layout.bits);
    if layout.extensible() {
        w.u16(22); // cbSize
        w.u16(layout.bits); // valid bits
        w.u32(match layout.channels {
            1 => 0x4, // front centre
            2 => 0x3, // front left, front right
            _ => 0,   // no speaker assignment: we do not know the channels' meaning
        });
        w.u16(tag);
        w.bytes(&GUID_TAIL);
    }

    w.bytes(b"data");
    w.u32(if rf64 { u32::MAX } else { data_bytes as u32 });
    debug_assert_eq!(w.pos, len);
    len
}

struct Cursor<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    const STEREO_16: Layout = Layout {
        channels: 2,
        sample_rate: 48_000,
        bits: 16,
        float: false,
    };

    #[test]
    fn riff_header_reserves_junk_and_counts_sizes() {
        let mut buf = [0u8; MAX_HEADER];
        let len = write_header(&STEREO_16, 4000, false, &mut buf);
        assert_eq!(len, 80);
        let h = &buf[..len];
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(u32_at(h, 4), 80 - 8 + 4000);
        assert_eq!(&h[8..12], b"WAVE");
        assert_eq!(&h[12..16], b"JUNK");
        assert_eq!(u32_at(h, 16), 28);
        assert!(h[20..48].iter().all(|b| *b == 0));
        assert_eq!(&h[48..52], b"fmt ");
        assert_eq!(&h[72..76], b"data");
        assert_eq!(u32_at(h, 76), 4000);
    }

    #[test]
    fn odd_data_counts_the_pad_byte_only_when_present() {
        let mono24 = Layout {
            channels: 1,
            sample_rate: 48_000,
            bits: 24,
            float: false,
        };
        let mut buf = [0u8; MAX_HEADER];
        let len = write_header(&mono24, 3, false, &mut buf);
        assert_eq!(u32_at(&buf, 4) as usize, len - 8 + 3);
        write_header(&mono24, 3, true, &mut buf);
        assert_eq!(u32_at(&buf, 4) as usize, len - 8 + 4);
        assert_eq!(u32_at(&buf, len - 4), 3);
    }

    #[test]
    fn switches_to_rf64_exactly_when_the_riff_size_overflows() {
        let mut buf = [0u8; MAX_HEADER];
        // The largest data whose RIFF size still fits: header (80) - 8 + data = u32::MAX.
        let last_riff = u64::from(u32::MAX) - (80 - 8);
        let len = write_header(&STEREO_16, last_riff, false, &mut buf);
        assert_eq!(&buf[0..4], b"RIFF");
        assert_eq!(u32_at(&buf, 4), u32::MAX);
        assert_eq!(u32_at(&buf, len - 4) as u64, last_riff);

        let big = 5 * (1u64 << 30) + 4; // 5 GiB + one stereo frame
        let len2 = write_header(&STEREO_16, big, true, &mut buf);
        assert_eq!(len2, len, "the header must keep its length");
        let h = &buf[..len2];
        assert_eq!(&h[0..4], b"RF64");
        assert_eq!(u32_at(h, 4), u32::MAX);
        assert_eq!(&h[8..12], b"WAVE");
        assert_eq!(&h[12..16], b"ds64");
        assert_eq!(u32_at(h, 16), 28);
        assert_eq!(u64_at(h, 20), big + 80 - 8);
        assert_eq!(u64_at(h, 28), big);
        assert_eq!(u64_at(h, 36), big / 4);
        assert_eq!(u32_at(h, 44), 0);
        assert_eq!(&h[48..52], b"fmt ");
        assert_eq!(&h[72..76], b"data");
        assert_eq!(u32_at(h, 76), u32::MAX);
    }

    #[test]
    fn extensible_fmt_for_many_channels_and_deep_integers() {
        let mut buf = [0u8; MAX_HEADER];
        for (layout, ext) in [
            (STEREO_16, false),
            (
                Layout {
                    bits: 24,
                    ..STEREO_16
                },
                true,
            ),
            (
                Layout {
                    bits: 32,
                    float: true,
                    ..STEREO_16
                },
                false,
            ),
            (
                Layout {
                    channels: 6,
                    ..STEREO_16
                },
                true,
            ),
        ] {
            let len = write_header(&layout, 0, false, &mut buf);
            assert_eq!(len, layout.header_len());
            let tag = u16::from_le_bytes([buf[56], buf[57]]);
            assert_eq!(tag == EXTENSIBLE, ext, "{layout:?}");
        }
    }
}
