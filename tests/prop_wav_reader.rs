//! Property tests of `wav-reader`'s WAV/RIFF parsing through the real plugin library and the
//! real ABI (#14). Whatever the file holds (up to 64 KiB: RIFF/RIFX/RF64/BW64-shaped files made
//! of chunks with sizes at the edges of their ranges, `fmt ` chunks with odd formats, bit depths,
//! channel counts 0..=65535 and block alignments, `data` larger than the file, odd-sized
//! chunks, `JUNK`/`LIST`/`ds64`/`fact`; such files damaged further by bit flips, changed,
//! deleted or inserted bytes and truncation; plain random bytes):
//! - the plugin's layout function (`outputs`) and its constructor either refuse the file with an
//!   error or accept it, never with a panic (the ABI turns one into kind `panicked`), and the
//!   constructor accepts nothing the layout refused;
//! - an accepted file (not looping) is read block by block until `Finished`, within 10 000 reads
//!   and 5 s, without a panic; every read fills at most the block, none returns `More` with no
//!   frames (the host would call it again at once: a spin), and the frames read add up to the
//!   length the reader announced (unless a read fails: a truncated file);
//! - a looping reader runs two passes over the file the same way, never `Finished`.
//!
//! And a well-formed file (8/16/24/32-bit integer, 24-bit in 4 bytes, 32-bit float; PCM,
//! WAVEFORMATEX, EXTENSIBLE headers; 1 to 64 channels; even-sized chunks around `fmt ` and
//! `data`) is accepted with its channels and rate, and read sample for sample as decoded here
//! from the bytes, once or in a loop.
//!
//! Each case runs on a thread of its own, so a call that never returns fails the case after 5 s
//! instead of hanging the test.
//!
//! 256 cases per property by default, from a fixed seed so that a run is reproducible;
//! `PROPTEST_CASES` and `PROPTEST_RNG_SEED` override both.
//!
//! Known bugs in plugins/wav, kept as ignored tests with their minimal cases: an odd-sized
//! chunk before `data` (followed by its RIFF pad byte) makes a valid file unreadable; a looping
//! reader of a file with no frames returns `More` with no frames for ever.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::RngSeed;
use tapeline_plugin_api::abi::{CaptureBox, ContextRef, PluginLibraryRef};
use tapeline_plugin_api::{ErrorKind, OutputPort, PluginError, ReadStatus};
use tapeline_tests::{
    context, output_block, registry, remove_dir, remove_file, unique_stage_id, Rng, BLOCK_FRAMES,
};

/// The largest file: 64 KiB.
const MAX_INPUT: usize = 64 << 10;
/// Reads one file may take before it counts as a spin (a 64 KiB file of 8-bit mono audio is
/// 137 blocks).
const MAX_READS: usize = 10_000;
/// One case (layout, construction and every read) may take this long before it counts as a
/// hang.
const CASE_LIMIT: Duration = Duration::from_secs(5);
const PLUGIN: &str = "wav-reader";

fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 256;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(0x3A7E_11E5);
    }
    // A failure prints its input; nothing is written next to the sources.
    c.failure_persistence = None;
    c.max_shrink_time = 60_000;
    c
}

/// The wav library's root module, loaded once (through the host's registry and its checks).
fn wav_library() -> PluginLibraryRef {
    static LIB: OnceLock<PluginLibraryRef> = OnceLock::new();
    *LIB.get_or_init(|| {
        let reg = registry();
        let entry = reg.get(PLUGIN).unwrap_or_else(|e| panic!("{e}"));
        entry.module
    })
}

/// A folder for this test process's files, made once; each case writes a file of its own.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("tapeline-prop-wav-reader-{}", std::process::id()));
        remove_dir(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp folder");
        dir
    })
}

/// Removes the case's file when the case ends (a hung case leaves it).
struct CaseFile(PathBuf);

impl CaseFile {
    fn new(bytes: &[u8]) -> CaseFile {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = scratch().join(format!("{}.wav", NEXT.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&path, bytes).expect("write the case's file");
        CaseFile(path)
    }
}

impl Drop for CaseFile {
    fn drop(&mut self) {
        remove_file(&self.0);
    }
}

/// A panic inside the plugin, turned into an error by the ABI: always a failure here.
fn not_panicked(what: &str, e: &PluginError) -> Result<(), String> {
    if e.kind() == ErrorKind::Panicked {
        return Err(format!("{what} panicked: {e}"));
    }
    Ok(())
}

/// What a well-formed file holds, decoded here from its bytes.
#[derive(Debug, Clone)]
struct Expected {
    channels: u32,
    rate: u32,
    /// Interleaved.
    samples: Vec<f32>,
}

impl Expected {
    fn frames(&self) -> u64 {
        (self.samples.len() / self.channels as usize) as u64
    }
}

/// Build a reader of `path` through the ABI (layout first, as validation does, then the
/// constructor) and read it as the host would. With `expected`, the file must be accepted and
/// read as it says. `Err` is a broken property.
fn play(path: &Path, looping: bool, expected: Option<&Expected>) -> Result<(), String> {
    let lib = wav_library();
    let config = serde_json::json!({ "path": path, "loop": looping }).to_string();
    let stage = unique_stage_id("prop-wav-reader");
    let ctx = context(&stage, &[]);

    let layout =
        (lib.layout())(PLUGIN.into(), config.as_str().into(), ContextRef::new(&ctx)).into_result();
    let channels = match &layout {
        Err(e) => {
            not_panicked("the layout function", e)?;
            if expected.is_some() {
                return Err(format!("the layout function refused a valid file: {e}"));
            }
            None
        }
        Ok(ports) => Some(one_port(ports, expected)?),
    };
    let built = (lib.new_capture())(PLUGIN.into(), config.as_str().into(), ContextRef::new(&ctx))
        .into_result();
    let (mut capture, channels) = match (built, channels) {
        (Err(e), _) => {
            not_panicked("the constructor", &e)?;
            if expected.is_some() {
                return Err(format!("the constructor refused a valid file: {e}"));
            }
            return Ok(());
        }
        (Ok(_), None) => {
            return Err(format!(
                "the constructor accepted a file the layout function refused: {}",
                layout.err().map(|e| e.to_string()).unwrap_or_default()
            ))
        }
        (Ok(c), Some(channels)) => (c, channels),
    };
    if let Err(e) = capture.start().into_result() {
        not_panicked("start", &e)?;
        if expected.is_some() {
            return Err(format!("start failed on a valid file: {e}"));
        }
        return stop(&mut capture);
    }
    read_all(&mut capture, channels, looping, expected)?;
    stop(&mut capture)
}

/// The channel count of the reader's only port (and its rate, if `expected`).
fn one_port(ports: &[OutputPort], expected: Option<&Expected>) -> Result<u32, String> {
    match (ports, expected) {
        ([port], Some(e))
            if (port.format.channels, port.format.sample_rate) != (e.channels, e.rate) =>
        {
            Err(format!(
                "the layout gave {port:?} for {} channels at {} Hz",
                e.channels, e.rate
            ))
        }
        ([port], _) if (1..=64).contains(&port.format.channels) => Ok(port.format.channels),
        (other, _) => Err(format!("the layout gave {other:?}")),
    }
}

fn stop(capture: &mut CaptureBox) -> Result<(), String> {
    match capture.stop().into_result() {
        Err(e) => not_panicked("stop", &e),
        Ok(()) => Ok(()),
    }
}

/// Read until `Finished` (not looping) or two passes (looping), or the first error; with
/// `expected`, every sample is compared, bit for bit, and no read may fail.
fn read_all(
    capture: &mut CaptureBox,
    channels: u32,
    looping: bool,
    expected: Option<&Expected>,
) -> Result<(), String> {
    let length = capture.length_frames().into_option();
    // Looping, a file has no length, unless it has no frames (then it just ends).
    if (looping && length.is_some_and(|n| n > 0)) || (!looping && length.is_none()) {
        return Err(format!("loop = {looping}, but length_frames is {length:?}"));
    }
    if let (Some(n), Some(e)) = (length, expected) {
        if n != e.frames() {
            return Err(format!(
                "length_frames is {n}, the file holds {}",
                e.frames()
            ));
        }
    }
    // Two passes over the longest file (one frame per byte), and a block more.
    let reads = if looping {
        2 * MAX_INPUT / BLOCK_FRAMES as usize + 2
    } else {
        MAX_READS
    };
    let ch = channels as usize;
    let mut buf = vec![0.0f32; BLOCK_FRAMES as usize * ch];
    let mut total = 0u64;
    for i in 0..reads {
        let mut out = output_block(&mut buf, channels);
        let status = capture.read(&mut out).into_result();
        let frames = out.frames;
        match status {
            Err(e) => {
                not_panicked(&format!("read {i}"), &e)?;
                if expected.is_some() {
                    return Err(format!("read {i} of a valid file failed: {e}"));
                }
                // `on_error = "ignore"` reads again: that must not panic either.
                let mut out = output_block(&mut buf, channels);
                if let Err(e) = capture.read(&mut out).into_result() {
                    not_panicked(&format!("the read after a failed read {i}"), &e)?;
                }
                return Ok(());
            }
            Ok(_) if frames > BLOCK_FRAMES => {
                return Err(format!(
                    "read {i} gave {frames} frames into a {BLOCK_FRAMES}-frame block"
                ))
            }
            Ok(ReadStatus::More) if frames == 0 => {
                return Err(format!(
                    "read {i} returned More with no frames (after {total} frames, \
                     loop = {looping}): the host would call it again at once, for ever"
                ))
            }
            // Looping ends only a file with nothing in it.
            Ok(ReadStatus::Finished) if looping && total + u64::from(frames) > 0 => {
                return Err(format!("a looping reader finished at read {i}"))
            }
            Ok(status) => {
                if let Some(e) = expected {
                    same_samples(e, total, &buf[..frames as usize * ch])?;
                }
                total += u64::from(frames);
                if let Some(n) = length {
                    if total > n {
                        return Err(format!("{total} frames read; length_frames said {n}"));
                    }
                    if status == ReadStatus::Finished {
                        if total != n {
                            return Err(format!(
                                "finished after {total} frames; length_frames said {n}"
                            ));
                        }
                        return Ok(());
                    }
                }
                if let Some(e) = expected.filter(|_| looping) {
                    if total >= 2 * e.frames() {
                        return Ok(());
                    }
                }
            }
        }
    }
    if looping && expected.is_none() {
        Ok(())
    } else {
        Err(format!(
            "not finished after {reads} reads ({total} frames of {length:?}, loop = {looping})"
        ))
    }
}

/// `got` (frames from frame `at` of the stream) is the file's audio, bit for bit (looping: the
/// stream is the file over and over).
fn same_samples(e: &Expected, at: u64, got: &[f32]) -> Result<(), String> {
    let ch = e.channels as usize;
    let n = e.samples.len();
    if n == 0 {
        if !got.is_empty() {
            return Err(format!("{} samples read from a file with none", got.len()));
        }
        return Ok(());
    }
    let first = (at % e.frames()) as usize * ch;
    for (k, g) in got.iter().enumerate() {
        let want = e.samples[(first + k) % n];
        if g.to_bits() != want.to_bits() {
            return Err(format!(
                "frame {} channel {} of the stream is {g:?}; the file holds {want:?}",
                at + (k / ch) as u64,
                k % ch
            ));
        }
    }
    Ok(())
}

/// [`play`] the bytes on a thread of its own, within [`CASE_LIMIT`].
fn check(bytes: &[u8], looping: bool, expected: Option<Expected>) -> Result<(), TestCaseError> {
    // Loaded (and the workspace built) before the clock starts.
    wav_library();
    let file = CaseFile::new(bytes);
    let path = file.0.clone();
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    std::thread::Builder::new()
        .name("wav-reader-case".into())
        .spawn(move || {
            if tx.send(play(&path, looping, expected.as_ref())).is_err() {
                // The case timed out (a failure already reported) and no one waits for it.
            }
        })
        .expect("start the case's thread");
    match rx.recv_timeout(CASE_LIMIT) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(broken)) => Err(TestCaseError::fail(broken)),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            // The thread is left behind, spinning or blocked in the plugin.
            std::mem::forget(file);
            Err(TestCaseError::fail(format!(
                "the case still runs after {:?} (a hang or a spin in the plugin)",
                started.elapsed()
            )))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(TestCaseError::fail(
            "the case's thread panicked (in the test's own code)",
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Generated files
// ---------------------------------------------------------------------------------------------

const PCM: u16 = 1;
const IEEE_FLOAT: u16 = 3;
const EXTENSIBLE: u16 = 0xFFFE;
/// KSDATAFORMAT_SUBTYPE_PCM / _IEEE_FLOAT without their first two bytes (the format tag).
const GUID_TAIL: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
];

/// Little-endian fields, or big-endian ones for RIFX.
struct Out {
    bytes: Vec<u8>,
    big_endian: bool,
}

impl Out {
    fn u16(&mut self, v: u16) {
        let b = if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.bytes.extend_from_slice(&b);
    }
    fn u32(&mut self, v: u32) {
        let b = if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.bytes.extend_from_slice(&b);
    }
    fn u64(&mut self, v: u64) {
        let b = if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.bytes.extend_from_slice(&b);
    }
}

/// A `fmt ` chunk's fields; the `None`s are the values that agree with the others.
#[derive(Debug, Clone)]
struct Fmt {
    tag: u16,
    channels: u16,
    rate: u32,
    bits: u16,
    /// Bytes per sample; `None`: `bits` rounded up to whole bytes.
    container: Option<u16>,
    /// `None`: channels × container.
    align: Option<u16>,
    /// `None`: align × rate.
    byte_rate: Option<u32>,
    /// The body's length: 16 (PCMWAVEFORMAT), 18 (WAVEFORMATEX), 40 (EXTENSIBLE) or another.
    len: usize,
    /// `None`: 22 for EXTENSIBLE, 0 otherwise.
    cb_size: Option<u16>,
    /// `None`: `bits`.
    valid_bits: Option<u16>,
    sub_format: [u8; 16],
}

impl Fmt {
    fn block_align(&self) -> u16 {
        self.align.unwrap_or_else(|| {
            let container = self.container.unwrap_or(self.bits.div_ceil(8));
            self.channels.wrapping_mul(container)
        })
    }

    fn body(&self, big_endian: bool) -> Vec<u8> {
        let align = self.block_align();
        let mut w = Out {
            bytes: Vec::new(),
            big_endian,
        };
        w.u16(self.tag);
        w.u16(self.channels);
        w.u32(self.rate);
        w.u32(
            self.byte_rate
                .unwrap_or(u32::from(align).wrapping_mul(self.rate)),
        );
        w.u16(align);
        w.u16(self.bits);
        w.u16(
            self.cb_size
                .unwrap_or(if self.tag == EXTENSIBLE { 22 } else { 0 }),
        );
        w.u16(self.valid_bits.unwrap_or(self.bits));
        w.u32(0x3);
        w.bytes.extend_from_slice(&self.sub_format);
        w.bytes.resize(self.len, 0);
        w.bytes
    }
}

fn fmt_chunk() -> impl Strategy<Value = Fmt> {
    let tag = prop_oneof![
        12 => prop::sample::select(vec![PCM, IEEE_FLOAT, EXTENSIBLE]),
        1 => prop::sample::select(vec![0u16, 2, 0x11, 0x55, 0xFFFF]),
        1 => any::<u16>(),
    ];
    let channels = prop_oneof![
        12 => 1..=8u16,
        2 => prop::sample::select(vec![0u16, 1, 2, 63, 64, 65, 255, 256, 0x7FFF, u16::MAX]),
        1 => any::<u16>(),
    ];
    let rate = prop_oneof![
        16 => prop::sample::select(vec![8_000u32, 44_100, 48_000, 96_000]),
        1 => prop::sample::select(vec![0u32, 1, u32::MAX]),
        1 => any::<u32>(),
    ];
    let bits = prop_oneof![
        12 => prop::sample::select(vec![8u16, 16, 24, 32]),
        2 => prop::sample::select(vec![0u16, 1, 4, 7, 12, 20, 40, 48, 64, u16::MAX]),
        1 => any::<u16>(),
    ];
    let container = prop_oneof![
        12 => Just(None),
        1 => prop::sample::select(vec![0u16, 1, 2, 3, 4, 5, 8]).prop_map(Some),
    ];
    let align = prop_oneof![
        16 => Just(None),
        1 => prop::sample::select(vec![0u16, 1, u16::MAX]).prop_map(Some),
        1 => any::<u16>().prop_map(Some),
    ];
    let byte_rate = prop_oneof![
        30 => Just(None),
        1 => prop::sample::select(vec![0u32, u32::MAX]).prop_map(Some),
        1 => any::<u32>().prop_map(Some),
    ];
    let len = prop_oneof![
        12 => prop::sample::select(vec![16usize, 18, 40]),
        1 => prop::sample::select(vec![0usize, 2, 14, 15, 17, 20, 39, 41, 42, 64]),
    ];
    let cb_size = prop_oneof![
        12 => Just(None),
        1 => prop::sample::select(vec![0u16, 2, 21, 23, u16::MAX]).prop_map(Some),
    ];
    let valid_bits = prop_oneof![
        8 => Just(None),
        1 => prop::sample::select(vec![0u16, 8, 12, 16, 24, 32, 64, u16::MAX]).prop_map(Some),
        1 => any::<u16>().prop_map(Some),
    ];
    let sub_format = prop_oneof![
        12 => prop::sample::select(vec![PCM, IEEE_FLOAT]).prop_map(guid),
        1 => any::<[u8; 16]>(),
    ];
    (
        (tag, channels, rate, bits),
        (container, align, byte_rate),
        (len, cb_size, valid_bits, sub_format),
    )
        .prop_map(
            |(
                (tag, channels, rate, bits),
                (container, align, byte_rate),
                (len, cb_size, valid_bits, sub_format),
            )| {
                // A float tag with anything but 32 bits is refused at once: mostly give 32.
                let bits = if tag == IEEE_FLOAT && bits % 8 == 0 && bits != 0 {
                    32
                } else {
                    bits
                };
                // The body lengths each tag is read with, mostly.
                let len = match (tag, len) {
                    (EXTENSIBLE, 16 | 18) => 40,
                    (IEEE_FLOAT, 40) => 18,
                    _ => len,
                };
                Fmt {
                    tag,
                    channels,
                    rate,
                    bits,
                    container,
                    align,
                    byte_rate,
                    len,
                    cb_size,
                    valid_bits,
                    sub_format,
                }
            },
        )
}

/// A chunk's size field: the true one, larger than the body (past the end of the file), or
/// one at the edges of the range.
#[derive(Debug, Clone, Copy)]
enum Size {
    True,
    Plus(u32),
    Exactly(u32),
}

fn size() -> impl Strategy<Value = Size> {
    prop_oneof![
        40 => Just(Size::True),
        1 => (1..70_000u32).prop_map(Size::Plus),
        1 => prop::sample::select(vec![0u32, 1, 2, 3, 15, 16, 17, 39, 40, 0x7FFF_FFFF, u32::MAX - 1, u32::MAX]).prop_map(Size::Exactly),
        1 => any::<u32>().prop_map(Size::Exactly),
    ]
}

#[derive(Debug, Clone)]
enum Chunk {
    Fmt(Fmt),
    /// `data`: random audio bytes; `whole`: cut to whole frames of the first `fmt `.
    Data {
        bytes: Vec<u8>,
        whole: bool,
    },
    /// `ds64`: RIFF size, data size, sample count; `extra` body bytes past 28.
    Ds64 {
        riff: u64,
        data: u64,
        frames: u64,
        extra: usize,
    },
    /// `fact`: a body of 0 to 8 bytes (the usual one is 4).
    Fact(Vec<u8>),
    /// Any other id (`JUNK`, `LIST`, noise) with this body (odd sizes included).
    Other([u8; 4], Vec<u8>),
}

fn size64() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => 0..70_000u64,
        1 => prop::sample::select(vec![0u64, u64::from(u32::MAX), 1 << 32, u64::MAX - 8, u64::MAX]),
        1 => any::<u64>(),
    ]
}

fn data_chunk() -> impl Strategy<Value = Chunk> {
    (
        prop_oneof![
            3 => prop::collection::vec(any::<u8>(), 0..4096),
            1 => prop::collection::vec(any::<u8>(), 0..32_768),
        ],
        prop_oneof![4 => Just(true), 1 => Just(false)],
    )
        .prop_map(|(bytes, whole)| Chunk::Data { bytes, whole })
}

/// A side chunk's body: mostly of even length (an odd one before `data`, followed by its pad
/// byte, makes wav-reader refuse the file: see
/// [`an_odd_sized_chunk_before_data_is_skipped_with_its_pad_byte`]).
fn body() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(any::<u8>(), 0..64),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(mut b, even)| {
            if even {
                b.truncate(b.len() & !1);
            }
            b
        })
}

/// The chunks around `fmt ` and `data`.
fn side_chunk() -> impl Strategy<Value = Chunk> {
    let id = prop_oneof![
        3 => prop::sample::select(vec![*b"JUNK", *b"LIST", *b"junk", *b"bext", *b"PAD ", *b"FLLR"]),
        1 => any::<[u8; 4]>(),
    ];
    prop_oneof![
        3 => (id, body()).prop_map(|(id, b)| Chunk::Other(id, b)),
        1 => (size64(), size64(), size64(), prop::sample::select(vec![0usize, 1, 12]))
            .prop_map(|(riff, data, frames, extra)| Chunk::Ds64 { riff, data, frames, extra }),
        1 => prop_oneof![
            3 => prop::collection::vec(any::<u8>(), 4),
            1 => prop::collection::vec(any::<u8>(), 0..8),
        ]
        .prop_map(Chunk::Fact),
    ]
}

/// A side chunk, or another `fmt ` or `data`.
fn any_chunk() -> impl Strategy<Value = Chunk> {
    prop_oneof![
        4 => side_chunk(),
        1 => fmt_chunk().prop_map(Chunk::Fmt),
        1 => data_chunk(),
    ]
}

/// The file's bytes, shown in hex when a case fails.
#[derive(Clone)]
struct Bytes(Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes: ", self.0.len())?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A RIFF/RIFX/RF64/BW64 WAVE file (or a near miss): chunks, `fmt ` (mostly), more chunks,
/// `data` (mostly; sometimes before `fmt `), more chunks, a few stray bytes. Half the RF64 and
/// BW64 ones say "see ds64" (0xFFFFFFFF) in their RIFF and `data` sizes, as RF64 writers do.
fn riff_file() -> impl Strategy<Value = Bytes> {
    let layout = (
        prop_oneof![
            16 => Just(*b"RIFF"),
            1 => prop::sample::select(vec![*b"RIFX", *b"RF64", *b"BW64"]),
            1 => any::<[u8; 4]>(),
        ],
        any::<bool>(),
        prop_oneof![4 => Just(None), 1 => any::<u32>().prop_map(Some)],
        prop_oneof![19 => Just(*b"WAVE"), 1 => any::<[u8; 4]>()],
    );
    let chunks = (
        prop::collection::vec((side_chunk(), size()), 0..3),
        prop::option::weighted(
            0.95,
            (
                prop_oneof![fmt_chunk(), readable_fmt()].prop_map(Chunk::Fmt),
                size(),
            ),
        ),
        prop::collection::vec((side_chunk(), size()), 0..2),
        prop::option::weighted(0.95, (data_chunk(), size())),
        prop::collection::vec((any_chunk(), size()), 0..2),
        prop_oneof![19 => Just(false), 1 => Just(true)],
        prop::collection::vec(any::<u8>(), 0..8),
    );
    (layout, chunks).prop_map(
        |((magic, see_ds64, riff_size, wave), (pre, fmt, mid, data, post, data_first, tail))| {
            let big_endian = magic == *b"RIFX";
            let see_ds64 = see_ds64 && matches!(&magic, b"RF64" | b"BW64");
            let mut list: Vec<(Chunk, Size)> = pre;
            let (fmt, data) = if data_first { (data, fmt) } else { (fmt, data) };
            list.extend(fmt);
            list.extend(mid);
            list.extend(data);
            list.extend(post);
            let align = list.iter().find_map(|(c, _)| match c {
                Chunk::Fmt(f) => Some(usize::from(f.block_align())),
                _ => None,
            });

            let mut w = Out {
                bytes: Vec::new(),
                big_endian,
            };
            w.bytes.extend_from_slice(&magic);
            w.u32(0);
            w.bytes.extend_from_slice(&wave);
            for (chunk, size) in list {
                let (id, body): ([u8; 4], Vec<u8>) = match chunk {
                    Chunk::Fmt(f) => (*b"fmt ", f.body(big_endian)),
                    Chunk::Data { mut bytes, whole } => {
                        if let (true, Some(a)) = (whole, align.filter(|a| *a > 0)) {
                            bytes.truncate(bytes.len() - bytes.len() % a);
                        }
                        (*b"data", bytes)
                    }
                    Chunk::Ds64 {
                        riff,
                        data,
                        frames,
                        extra,
                    } => {
                        let mut b = Out {
                            bytes: Vec::new(),
                            big_endian,
                        };
                        for v in [riff, data, frames] {
                            b.u64(v);
                        }
                        b.bytes.resize(28 + extra, 0);
                        (*b"ds64", b.bytes)
                    }
                    Chunk::Fact(b) => (*b"fact", b),
                    Chunk::Other(id, b) => (id, b),
                };
                let len = body.len() as u32;
                let size = match size {
                    Size::True if see_ds64 && id == *b"data" => u32::MAX,
                    Size::True => len,
                    Size::Plus(k) => len.saturating_add(k),
                    Size::Exactly(s) => s,
                };
                w.bytes.extend_from_slice(&id);
                w.u32(size);
                w.bytes.extend_from_slice(&body);
                if body.len() % 2 == 1 {
                    w.bytes.push(0);
                }
            }
            w.bytes.extend_from_slice(&tail);
            let riff = match riff_size {
                Some(s) => s,
                None if see_ds64 => u32::MAX,
                None => w.bytes.len() as u32 - 8,
            };
            let riff = if big_endian {
                riff.to_be_bytes()
            } else {
                riff.to_le_bytes()
            };
            w.bytes[4..8].copy_from_slice(&riff);
            w.bytes.truncate(MAX_INPUT);
            Bytes(w.bytes)
        },
    )
}

/// One way to damage a file.
#[derive(Debug, Clone)]
enum Damage {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Delete(Index, usize),
    Insert(Index, Vec<u8>),
    Truncate(Index),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        3 => (any::<Index>(), 0..8u8).prop_map(|(i, b)| Damage::FlipBit(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Damage::SetByte(i, b)),
        1 => (any::<Index>(), 1..16usize).prop_map(|(i, n)| Damage::Delete(i, n)),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Damage::Insert(i, b)),
        1 => any::<Index>().prop_map(Damage::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, d: &Damage) {
    if bytes.is_empty() {
        return;
    }
    match d {
        Damage::FlipBit(i, bit) => {
            let i = i.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        Damage::SetByte(i, b) => {
            let i = i.index(bytes.len());
            bytes[i] = *b;
        }
        Damage::Delete(i, n) => {
            let i = i.index(bytes.len());
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        Damage::Insert(i, b) => {
            let i = i.index(bytes.len());
            bytes.splice(i..i, b.iter().copied());
        }
        Damage::Truncate(i) => bytes.truncate(i.index(bytes.len())),
    }
    bytes.truncate(MAX_INPUT);
}

// ---------------------------------------------------------------------------------------------
// Well-formed files
// ---------------------------------------------------------------------------------------------

/// How samples are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    U8,
    I16,
    I24,
    I32,
    F32,
    /// 24-bit integers in 4-byte containers (WAVE_FORMAT_EXTENSIBLE, 24 valid bits of 32).
    I24In4,
}

impl Encoding {
    fn container(self) -> u16 {
        match self {
            Encoding::U8 => 1,
            Encoding::I16 => 2,
            Encoding::I24 => 3,
            Encoding::I32 | Encoding::F32 | Encoding::I24In4 => 4,
        }
    }

    fn valid_bits(self) -> u16 {
        match self {
            Encoding::U8 => 8,
            Encoding::I16 => 16,
            Encoding::I24 | Encoding::I24In4 => 24,
            Encoding::I32 | Encoding::F32 => 32,
        }
    }

    /// One stored sample as `f32`: integers of N valid bits times 1 / 2^(N-1) (8-bit ones are
    /// unsigned, offset by 128; the top byte of a 24-in-4 container is ignored), floats as
    /// they are.
    fn decode(self, b: &[u8]) -> f32 {
        let int = match self {
            Encoding::F32 => return f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Encoding::U8 => i32::from(b[0]) - 128,
            Encoding::I16 => i32::from(i16::from_le_bytes([b[0], b[1]])),
            Encoding::I24 | Encoding::I24In4 => i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8,
            Encoding::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        };
        int as f32 * (1.0 / (1u64 << (self.valid_bits() - 1)) as f32)
    }
}

/// The header forms of `fmt `.
#[derive(Debug, Clone, Copy)]
enum Header {
    /// PCMWAVEFORMAT (16 bytes).
    Plain,
    /// WAVEFORMATEX (18 bytes, cbSize 0).
    Ex,
    /// WAVE_FORMAT_EXTENSIBLE (40 bytes).
    Extensible,
}

/// A valid WAV file and what it holds.
#[derive(Clone)]
struct WellFormed {
    bytes: Vec<u8>,
    expected: Expected,
    what: String,
}

impl std::fmt::Debug for WellFormed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; {:?}", self.what, Bytes(self.bytes.clone()))
    }
}

fn well_formed() -> impl Strategy<Value = WellFormed> {
    (
        (
            encoding(),
            header(),
            prop_oneof![6 => 1..=8u32, 1 => 9..=64u32],
            prop::sample::select(vec![1u32, 8_000, 22_050, 44_100, 48_000, 96_000, 192_000]),
        ),
        prop_oneof![
            1 => prop::sample::select(vec![0usize, 1, 2, 479, 480, 481, 960, 961]),
            3 => 0..3_000usize,
        ],
        any::<u64>(),
        (
            prop::collection::vec(even_chunk(), 0..3),
            prop::collection::vec(even_chunk(), 0..2),
            prop::collection::vec(even_chunk(), 0..2),
        ),
    )
        .prop_map(
            |((enc, header, channels, rate), frames, seed, (pre, mid, post))| {
                let header = readable_header(enc, header);
                let container = enc.container();
                let frame_bytes = channels as usize * usize::from(container);
                let frames = frames.min((MAX_INPUT - 1024) / frame_bytes);
                let mut rng = Rng(seed);
                let data: Vec<u8> = (0..frames * frame_bytes)
                    .map(|_| rng.next_u64() as u8)
                    .collect();
                let fmt = valid_fmt(enc, header, channels as u16, rate);
                let what = format!(
                "{enc:?} in a {header:?} header, {channels} channels at {rate} Hz, {frames} frames"
            );
                let mut f = Vec::new();
                f.extend_from_slice(b"RIFF\0\0\0\0WAVE");
                let chunk = |f: &mut Vec<u8>, id: &[u8; 4], body: &[u8]| {
                    f.extend_from_slice(id);
                    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
                    f.extend_from_slice(body);
                    if body.len() % 2 == 1 {
                        f.push(0);
                    }
                };
                for (id, body) in &pre {
                    chunk(&mut f, id, body);
                }
                chunk(&mut f, b"fmt ", &fmt.body(false));
                for (id, body) in &mid {
                    chunk(&mut f, id, body);
                }
                chunk(&mut f, b"data", &data);
                for (id, body) in &post {
                    chunk(&mut f, id, body);
                }
                let riff = (f.len() - 8) as u32;
                f[4..8].copy_from_slice(&riff.to_le_bytes());
                let samples = data
                    .chunks_exact(usize::from(container))
                    .map(|b| enc.decode(b))
                    .collect();
                WellFormed {
                    bytes: f,
                    expected: Expected {
                        channels,
                        rate,
                        samples,
                    },
                    what,
                }
            },
        )
}

/// The forms hound reads for each encoding: WAVEFORMATEX for PCM up to 24 bits and for float
/// (cbSize 0); 24-in-4 only as EXTENSIBLE.
fn readable_header(enc: Encoding, header: Header) -> Header {
    match (enc, header) {
        (Encoding::I24In4, _) | (Encoding::I32, Header::Ex) => Header::Extensible,
        (_, h) => h,
    }
}

/// A `fmt ` chunk wav-reader reads (with [`readable_header`]).
fn valid_fmt(enc: Encoding, header: Header, channels: u16, rate: u32) -> Fmt {
    let float = enc == Encoding::F32;
    Fmt {
        tag: match header {
            Header::Extensible => EXTENSIBLE,
            _ if float => IEEE_FLOAT,
            _ => PCM,
        },
        channels,
        rate,
        bits: enc.container() * 8,
        container: None,
        align: None,
        byte_rate: None,
        len: match header {
            Header::Plain => 16,
            Header::Ex => 18,
            Header::Extensible => 40,
        },
        cb_size: None,
        valid_bits: Some(enc.valid_bits()),
        sub_format: guid(if float { IEEE_FLOAT } else { PCM }),
    }
}

fn encoding() -> impl Strategy<Value = Encoding> {
    prop::sample::select(vec![
        Encoding::U8,
        Encoding::I16,
        Encoding::I24,
        Encoding::I32,
        Encoding::F32,
        Encoding::I24In4,
    ])
}

fn header() -> impl Strategy<Value = Header> {
    prop::sample::select(vec![Header::Plain, Header::Ex, Header::Extensible])
}

/// A `fmt ` chunk wav-reader reads, of 1 to 8 channels.
fn readable_fmt() -> impl Strategy<Value = Fmt> {
    (
        encoding(),
        header(),
        1..=8u16,
        prop::sample::select(vec![8_000u32, 44_100, 48_000]),
    )
        .prop_map(|(enc, header, channels, rate)| {
            valid_fmt(enc, readable_header(enc, header), channels, rate)
        })
}

fn guid(tag: u16) -> [u8; 16] {
    let mut g = [0u8; 16];
    g[..2].copy_from_slice(&tag.to_le_bytes());
    g[2..].copy_from_slice(&GUID_TAIL);
    g
}

/// An even-sized chunk a reader skips: `JUNK`, `LIST`, `bext`, a `fact` of 4 bytes, any id.
fn even_chunk() -> impl Strategy<Value = ([u8; 4], Vec<u8>)> {
    prop_oneof![
        3 => (
            prop_oneof![
                3 => prop::sample::select(vec![*b"JUNK", *b"LIST", *b"bext", *b"PAD ", *b"cue "]),
                1 => any::<[u8; 4]>().prop_filter("not a chunk the reader reads", |id| {
                    !matches!(id, b"fmt " | b"data" | b"fact")
                }),
            ],
            (0..32usize).prop_map(|n| vec![0x5A; 2 * n]),
        ),
        1 => any::<[u8; 4]>().prop_map(|v| (*b"fact", v.to_vec())),
    ]
}

// ---------------------------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------------------------

/// A 16-bit stereo file of `frames` frames (0x11 bytes), with `before` chunks ahead of `fmt `.
fn plain_file(frames: u32, before: &[(&[u8; 4], &[u8])]) -> (Vec<u8>, Expected) {
    let mut f = Vec::new();
    f.extend_from_slice(b"RIFF\0\0\0\0WAVE");
    for (id, body) in before {
        f.extend_from_slice(*id);
        f.extend_from_slice(&(body.len() as u32).to_le_bytes());
        f.extend_from_slice(body);
        if body.len() % 2 == 1 {
            f.push(0);
        }
    }
    f.extend_from_slice(b"fmt \x10\0\0\0\x01\0\x02\0");
    f.extend_from_slice(&48_000u32.to_le_bytes());
    f.extend_from_slice(&(48_000u32 * 4).to_le_bytes());
    f.extend_from_slice(b"\x04\0\x10\0data");
    f.extend_from_slice(&(frames * 4).to_le_bytes());
    f.resize(f.len() + frames as usize * 4, 0x11);
    let riff = (f.len() - 8) as u32;
    f[4..8].copy_from_slice(&riff.to_le_bytes());
    let expected = Expected {
        channels: 2,
        rate: 48_000,
        samples: vec![Encoding::I16.decode(&[0x11, 0x11]); frames as usize * 2],
    };
    (f, expected)
}

/// The checks themselves see a plain, valid file through: the layout's port, every read and
/// sample, the frame count; and a truncated one fails a read without a panic.
#[test]
fn a_plain_file_is_read_to_the_end_and_a_truncated_one_fails_cleanly() {
    let (f, expected) = plain_file(1000, &[(b"LIST", b"INFO")]);
    check(&f, false, Some(expected.clone())).unwrap();
    check(&f, true, Some(expected.clone())).unwrap();
    // Cut short of its header's length: a read fails, and the checks see that.
    check(&f[..2000], false, None).unwrap();
    let err = check(&f[..2000], false, Some(expected)).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

/// A `LIST` chunk of 3 bytes followed by its pad byte, as RIFF requires (and ffmpeg and sox
/// write), before `fmt `: wav-reader (through hound 3.5, which skips 3 bytes, not 4) reads the
/// next chunk header one byte off and refuses the file: "`…` is not a valid WAV file: Failed to
/// read enough bytes". Found by `riff_shaped_files_are_played_or_refused_without_panics`.
#[test]
#[ignore = "known bug in plugins/wav (hound): the pad byte after an odd-sized chunk is not skipped"]
fn an_odd_sized_chunk_before_data_is_skipped_with_its_pad_byte() {
    let (f, expected) = plain_file(2, &[(b"LIST", b"abc")]);
    check(&f, false, Some(expected)).unwrap();
}

/// A looping reader of a valid file with no frames returned `More` with no frames on every read:
/// the host's capture loop called it again at once, for ever, at 100 % of a core (a run never
/// ended). Found by `riff_shaped_files_are_played_or_refused_without_panics`; fixed: it ends.
#[test]
fn looping_over_a_file_with_no_frames_does_not_spin() {
    let (f, _) = plain_file(0, &[]);
    check(&f, true, None).unwrap();
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn riff_shaped_files_are_played_or_refused_without_panics(
        file in riff_file(),
        looping in prop::bool::weighted(0.25),
    ) {
        check(&file.0, looping, None)?;
    }

    #[test]
    fn damaged_riff_files_are_played_or_refused_without_panics(
        file in prop_oneof![
            riff_file().prop_map(|f| f.0),
            well_formed().prop_map(|f| f.bytes),
        ],
        damage in prop::collection::vec(damage(), 1..6),
        looping in prop::bool::weighted(0.25),
    ) {
        let mut file = file;
        for d in &damage {
            apply(&mut file, d);
        }
        check(&file, looping, None)?;
    }

    #[test]
    fn any_bytes_are_played_or_refused_without_panics(
        head in prop::sample::select(vec![
            &b""[..],
            &b"RIFF"[..],
            &b"RIFX"[..],
            &b"RF64\xff\xff\xff\xffWAVEds64"[..],
            &b"RIFF\xff\xff\xff\xffWAVE"[..],
            &b"RIFF\xff\xff\xff\xffWAVEfmt \x10\0\0\0\x01\0\x01\0\x80\xbb\0\0\x00\x77\x01\0\x02\0\x10\0"[..],
        ]),
        rest in prop::collection::vec(any::<u8>(), 0..MAX_INPUT).prop_map(Bytes),
    ) {
        let mut file = head.to_vec();
        file.extend_from_slice(&rest.0);
        file.truncate(MAX_INPUT);
        check(&file, false, None)?;
    }

    #[test]
    fn well_formed_files_are_read_sample_for_sample(
        file in well_formed(),
        looping in prop::bool::weighted(0.25),
    ) {
        // A looping file with no frames spins: the ignored test above.
        let looping = looping && file.expected.frames() > 0;
        check(&file.bytes, looping, Some(file.expected))?;
    }
}
