//! Property tests of `tapeline repair`'s WAV/RF64 chunk scanner (`repair::repair`): whatever
//! the bytes (up to 64 KiB: RIFF-shaped files with chunks of every kind the scanner knows and
//! sizes at the edges of their ranges, damaged further, or plain noise), it never panics, never
//! allocates much, returns quickly, and
//! - a refusal leaves the file as it was, byte for byte;
//! - a file it calls valid is left as it was;
//! - a file it repairs is valid afterwards: a second repair changes nothing and finds the same
//!   frames and rate, and the file grew by at most a pad byte.
//!
//! 256 cases per property by default, from a fixed seed so that a run is reproducible;
//! `PROPTEST_CASES` and `PROPTEST_RNG_SEED` override both.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod common;

use proptest::prelude::*;
use proptest::sample::Index;
use tapeline::repair::{repair, RepairError, RepairReport};

/// Counts, per thread, the bytes asked for while [`measure`] runs (the largest single request
/// and the total), so that parallel tests do not see each other's allocations.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn count(size: usize) {
    // `try_with` fails only while this thread's locals are being destroyed: allocations then
    // are not counted (nor do they panic); no measurement runs on a thread that is exiting.
    if !COUNTING.try_with(Cell::get).unwrap_or(false) {
        return;
    }
    let largest = LARGEST.try_with(|l| l.set(l.get().max(size)));
    let total = TOTAL.try_with(|t| t.set(t.get().saturating_add(size)));
    if largest.is_err() || total.is_err() {
        // The thread is exiting after all: nothing to count.
    }
}

// SAFETY: every call is forwarded to `System` unchanged; counting only reads and writes
// thread-local cells, which allocate nothing (const-initialised, no destructor).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: as for `dealloc`; `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What `f` returned, with the largest single allocation and the total allocated meanwhile
/// on this thread.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    LARGEST.with(|l| l.set(0));
    TOTAL.with(|t| t.set(0));
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, LARGEST.with(Cell::get), TOTAL.with(Cell::get))
}

/// The largest input: 64 KiB.
const MAX_INPUT: usize = 64 << 10;
/// The most one repair may allocate, in one request and in all (it needs a few small buffers).
const MAX_ALLOCATION: usize = 1 << 20;
const MAX_ALLOCATED: usize = 4 << 20;
/// One repair may take this long before it counts as a hang (a 64 KiB file is a few hundred
/// small reads and writes at most).
const CASE_LIMIT: Duration = Duration::from_secs(5);

fn config() -> ProptestConfig {
    common::proptest_config(0x7A9E_11AE)
}

/// A file of its own for one test thread.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tapeline-{name}-{}", std::process::id()));
        common::remove_dir(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp folder");
        Scratch(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("take.wav")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        common::remove_dir(&self.0);
    }
}

/// One repair of `path`, timed and with its allocations counted.
fn repair_once(path: &std::path::Path) -> Result<Result<RepairReport, RepairError>, TestCaseError> {
    let started = Instant::now();
    let (out, largest, total) = measure(|| repair(path));
    let took = started.elapsed();
    prop_assert!(took < CASE_LIMIT, "repair took {took:?}");
    prop_assert!(
        largest <= MAX_ALLOCATION,
        "one allocation of {largest} bytes"
    );
    prop_assert!(total <= MAX_ALLOCATED, "{total} bytes allocated in all");
    Ok(out)
}

fn check(dir: &Scratch, bytes: &[u8]) -> Result<(), TestCaseError> {
    let path = dir.file();
    std::fs::write(&path, bytes).expect("write the file");
    let first = repair_once(&path)?;
    let after = std::fs::read(&path).expect("read the file back");
    match first {
        Err(RepairError::Io(e)) => {
            return Err(TestCaseError::fail(format!(
                "I/O error on a plain file: {e}"
            )))
        }
        Err(_) => prop_assert!(after == bytes, "a refused file was changed"),
        Ok(r) if r.was_valid => {
            prop_assert!(after == bytes, "a file found valid was changed");
            prop_assert_eq!(r.bytes_dropped, 0);
        }
        Ok(r) => {
            prop_assert!(
                after.len() <= bytes.len() + 1,
                "repair grew the file from {} to {} bytes",
                bytes.len(),
                after.len()
            );
            let again = repair_once(&path)?;
            let again = match again {
                Ok(again) => again,
                Err(e) => return Err(TestCaseError::fail(format!("{r:?}, then {e}"))),
            };
            prop_assert!(
                again.was_valid,
                "not valid after a repair: {r:?}, then {again:?}"
            );
            prop_assert_eq!((again.frames, again.sample_rate), (r.frames, r.sample_rate));
            let last = std::fs::read(&path).expect("read the file back");
            prop_assert!(last == after, "a repaired file was changed again");
        }
    }
    Ok(())
}

/// A 32-bit size field: the true one often, else one at the edges of the range.
fn size32() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![
        4 => Just(None),
        2 => prop::sample::select(vec![0, 1, 2, 3, 15, 16, 17, 27, 28, 29, 0x7FFF_FFFF, u32::MAX - 1, u32::MAX]).prop_map(Some),
        1 => any::<u32>().prop_map(Some),
    ]
}

/// A 64-bit size (`ds64`): small, the true one's neighbours, or at the edges of the range.
fn size64() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => 0..70_000u64,
        1 => (0..16u64).prop_map(|d| u64::MAX - d),
        1 => prop::sample::select(vec![0, 1, u64::from(u32::MAX), 1 << 32, u64::MAX / 2, u64::MAX - 8, u64::MAX - 7, u64::MAX - 1, u64::MAX]),
        1 => any::<u64>(),
    ]
}

#[derive(Debug, Clone)]
enum Chunk {
    /// `fmt `: format tag, channels, rate, block align, bits; `extra` body bytes past 16.
    Fmt {
        channels: u16,
        rate: u32,
        align: u16,
        bits: u16,
        extra: usize,
    },
    /// `ds64`: RIFF size, data size, sample count; `extra` body bytes past 28.
    Ds64 {
        riff: u64,
        data: u64,
        frames: u64,
        extra: usize,
    },
    /// `data` with this many bytes of audio (the last chunk's may run to the end of the file).
    Data(Vec<u8>),
    /// Any other id (`JUNK`, `LIST`, noise) with this body.
    Other([u8; 4], Vec<u8>),
}

fn chunk() -> impl Strategy<Value = Chunk> {
    let id = prop_oneof![
        prop::sample::select(vec![
            *b"JUNK", *b"junk", *b"LIST", *b"fact", *b"bext", *b"PAD "
        ]),
        any::<[u8; 4]>(),
    ];
    prop_oneof![
        3 => (
            prop::sample::select(vec![0u16, 1, 2, 6, 255]),
            prop::sample::select(vec![0u32, 1, 8_000, 44_100, 48_000, u32::MAX]),
            prop_oneof![prop::sample::select(vec![0u16, 1, 2, 3, 4, 6, 8, 12, 255, u16::MAX]), any::<u16>()],
            prop::sample::select(vec![8u16, 16, 24, 32]),
            prop::sample::select(vec![0usize, 2, 24]),
        )
            .prop_map(|(channels, rate, align, bits, extra)| Chunk::Fmt { channels, rate, align, bits, extra }),
        1 => (size64(), size64(), size64(), prop::sample::select(vec![0usize, 1, 12]))
            .prop_map(|(riff, data, frames, extra)| Chunk::Ds64 { riff, data, frames, extra }),
        3 => prop::collection::vec(any::<u8>(), 0..4096).prop_map(Chunk::Data),
        2 => (id, prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(id, b)| Chunk::Other(id, b)),
    ]
}

/// A RIFF/RF64/BW64 WAVE file (or a near miss) made of `chunks`, each size field true or not.
/// Half the RF64 ones say "see ds64" (0xFFFFFFFF) in their RIFF and `data` sizes, as RF64
/// writers do.
fn riff_file() -> impl Strategy<Value = Bytes> {
    (
        prop_oneof![
            4 => prop::sample::select(vec![*b"RIFF", *b"RF64", *b"BW64"]),
            1 => any::<[u8; 4]>(),
        ],
        any::<bool>(),
        size32(),
        prop_oneof![9 => Just(*b"WAVE"), 1 => any::<[u8; 4]>()],
        prop::collection::vec((chunk(), size32()), 0..6),
        prop::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(|(magic, see_ds64, riff_size, wave, chunks, tail)| {
            let see_ds64 = see_ds64 && magic != *b"RIFF";
            let mut f = Vec::new();
            f.extend_from_slice(&magic);
            f.extend_from_slice(&[0; 4]);
            f.extend_from_slice(&wave);
            for (chunk, size) in chunks {
                let (id, body): ([u8; 4], Vec<u8>) = match chunk {
                    Chunk::Fmt {
                        channels,
                        rate,
                        align,
                        bits,
                        extra,
                    } => {
                        let mut b = Vec::new();
                        b.extend_from_slice(&1u16.to_le_bytes());
                        b.extend_from_slice(&channels.to_le_bytes());
                        b.extend_from_slice(&rate.to_le_bytes());
                        b.extend_from_slice(&(rate.wrapping_mul(u32::from(align))).to_le_bytes());
                        b.extend_from_slice(&align.to_le_bytes());
                        b.extend_from_slice(&bits.to_le_bytes());
                        b.resize(16 + extra, 0);
                        (*b"fmt ", b)
                    }
                    Chunk::Ds64 {
                        riff,
                        data,
                        frames,
                        extra,
                    } => {
                        let mut b = Vec::new();
                        for v in [riff, data, frames] {
                            b.extend_from_slice(&v.to_le_bytes());
                        }
                        b.resize(28 + extra, 0);
                        (*b"ds64", b)
                    }
                    Chunk::Data(b) => (*b"data", b),
                    Chunk::Other(id, b) => (id, b),
                };
                let size = match size {
                    Some(s) => s,
                    None if see_ds64 && id == *b"data" => u32::MAX,
                    None => body.len() as u32,
                };
                f.extend_from_slice(&id);
                f.extend_from_slice(&size.to_le_bytes());
                f.extend_from_slice(&body);
                if body.len() % 2 == 1 {
                    f.push(0);
                }
            }
            f.extend_from_slice(&tail);
            let riff = match riff_size {
                Some(s) => s,
                None if see_ds64 => u32::MAX,
                None => f.len() as u32 - 8,
            };
            f[4..8].copy_from_slice(&riff.to_le_bytes());
            f.truncate(MAX_INPUT);
            Bytes(f)
        })
}

/// One way to damage a file: a byte changed, a range cut out, the end cut off.
#[derive(Debug, Clone)]
enum Damage {
    SetByte(Index, u8),
    Delete(Index, usize),
    Truncate(Index),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Damage::SetByte(i, b)),
        (any::<Index>(), 1..16usize).prop_map(|(i, n)| Damage::Delete(i, n)),
        any::<Index>().prop_map(Damage::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, d: &Damage) {
    if bytes.is_empty() {
        return;
    }
    match d {
        Damage::SetByte(i, b) => {
            let i = i.index(bytes.len());
            bytes[i] = *b;
        }
        Damage::Delete(i, n) => {
            let i = i.index(bytes.len());
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        Damage::Truncate(i) => bytes.truncate(i.index(bytes.len())),
    }
}

#[test]
fn the_allocation_count_sees_allocations_on_its_thread_only() {
    let (v, largest, total) = measure(|| {
        let v = vec![0u8; 3 << 20];
        let other = std::thread::spawn(|| vec![0u8; 5 << 20].len());
        (v.len(), other.join().unwrap())
    });
    assert_eq!(v, (3 << 20, 5 << 20));
    assert_eq!(largest, 3 << 20);
    assert!((3 << 20..4 << 20).contains(&total), "{total}");
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

/// An RF64 file whose `ds64` RIFF size is within 8 of u64::MAX once overflowed `riff_size + 8`
/// in repair.rs (a panic in debug builds). Found by
/// `riff_shaped_files_are_repaired_or_refused_safely`; the minimal case, kept.
#[test]
fn a_ds64_riff_size_near_u64_max_is_no_overflow() {
    let mut f = Vec::new();
    f.extend_from_slice(b"RF64\xff\xff\xff\xffWAVE");
    f.extend_from_slice(b"fmt \x10\0\0\0\x01\0\x01\0\x80\xbb\0\0\x80\xbb\0\0\x01\0\x08\0");
    f.extend_from_slice(b"ds64\x1c\0\0\0");
    f.extend_from_slice(&u64::MAX.to_le_bytes());
    f.extend_from_slice(&[0; 20]);
    f.extend_from_slice(b"data\xff\xff\xff\xff");
    let dir = Scratch::new("prop-repair-ds64-overflow");
    check(&dir, &f).unwrap();
}

thread_local! {
    static SCRATCH: Scratch = Scratch::new(&format!("prop-repair-{:?}", std::thread::current().id()).replace(['(', ')'], ""));
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn riff_shaped_files_are_repaired_or_refused_safely(file in riff_file()) {
        SCRATCH.with(|dir| check(dir, &file.0))?;
    }

    #[test]
    fn damaged_riff_files_are_repaired_or_refused_safely(
        file in riff_file(),
        damage in prop::collection::vec(damage(), 1..6),
    ) {
        let mut file = file.0;
        for d in &damage {
            apply(&mut file, d);
        }
        SCRATCH.with(|dir| check(dir, &file))?;
    }

    #[test]
    fn any_bytes_are_repaired_or_refused_safely(
        head in prop::sample::select(vec![&b""[..], &b"RIFF"[..], &b"RF64"[..], &b"RIFF\xff\xff\xff\xffWAVE"[..], &b"RF64\xff\xff\xff\xffWAVEds64"[..]]),
        rest in prop::collection::vec(any::<u8>(), 0..MAX_INPUT).prop_map(Bytes),
    ) {
        let mut file = head.to_vec();
        file.extend_from_slice(&rest.0);
        file.truncate(MAX_INPUT);
        SCRATCH.with(|dir| check(dir, &file))?;
    }
}
