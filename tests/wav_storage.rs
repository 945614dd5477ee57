//! What `wav-writer` leaves on disk, read back by independent readers (hound, `sox --i`):
//!
//! - every sample format round-trips exactly, interleaved and `per_channel`;
//! - a recording killed with SIGKILL at 20 seeded random moments is readable as it is, lost at
//!   most about one sync interval, and holds exactly the right samples;
//! - `tapeline repair` makes the header of a killed recording cover every complete frame on disk,
//!   and leaves valid files and non-WAV files byte for byte as they were.
//!
//! `sox` must be installed: `scripts/test.sh` installs it (as root) or says how.

// SIGKILL, and `ExitStatusExt::signal` to see it.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tapeline_tests::{
    code, kill_and_reap, run, stderr, stdout, tapeline_bin, Rng, TempDir, BLOCK_FRAMES, SAMPLE_RATE,
};

// ------------------------------------------------------------------------------------------
// Shared helpers
// ------------------------------------------------------------------------------------------

/// The sample formats of `wav-writer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fmt {
    Pcm16,
    Pcm24,
    Pcm32,
    Float32,
}

impl Fmt {
    const ALL: [Fmt; 4] = [Fmt::Pcm16, Fmt::Pcm24, Fmt::Pcm32, Fmt::Float32];

    /// The `format` key's value.
    fn key(self) -> &'static str {
        match self {
            Fmt::Pcm16 => "pcm16",
            Fmt::Pcm24 => "pcm24",
            Fmt::Pcm32 => "pcm32",
            Fmt::Float32 => "float32",
        }
    }
    fn bits(self) -> u16 {
        match self {
            Fmt::Pcm16 => 16,
            Fmt::Pcm24 => 24,
            Fmt::Pcm32 | Fmt::Float32 => 32,
        }
    }
    fn spec(self, channels: u16) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: self.bits(),
            sample_format: if self == Fmt::Float32 {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        }
    }
    /// What `sox --i` calls it: (Precision, Sample Encoding).
    fn sox_names(self) -> (&'static str, &'static str) {
        match self {
            Fmt::Pcm16 => ("16-bit", "16-bit Signed Integer PCM"),
            Fmt::Pcm24 => ("24-bit", "24-bit Signed Integer PCM"),
            Fmt::Pcm32 => ("32-bit", "32-bit Signed Integer PCM"),
            // sox counts the implicit mantissa bit.
            Fmt::Float32 => ("25-bit", "32-bit Floating Point PCM"),
        }
    }
}

/// Interleaved samples as stored: integers, or floats compared by their bits (so -0.0 != 0.0).
#[derive(Debug, Clone)]
enum Samples {
    Int(Vec<i32>),
    Float(Vec<f32>),
}

impl Samples {
    fn len(&self) -> usize {
        match self {
            Samples::Int(v) => v.len(),
            Samples::Float(v) => v.len(),
        }
    }

    /// Channel `c` of `channels`.
    fn channel(&self, c: usize, channels: usize) -> Samples {
        match self {
            Samples::Int(v) => Samples::Int(v.iter().skip(c).step_by(channels).copied().collect()),
            Samples::Float(v) => {
                Samples::Float(v.iter().skip(c).step_by(channels).copied().collect())
            }
        }
    }

    /// The first `n` samples.
    fn prefix(&self, n: usize) -> Samples {
        match self {
            Samples::Int(v) => Samples::Int(v[..n].to_vec()),
            Samples::Float(v) => Samples::Float(v[..n].to_vec()),
        }
    }

    fn write(&self, path: &Path, spec: hound::WavSpec) {
        let mut w = hound::WavWriter::create(path, spec).expect("create the source WAV");
        match self {
            Samples::Int(v) => v.iter().for_each(|s| w.write_sample(*s).unwrap()),
            Samples::Float(v) => v.iter().for_each(|s| w.write_sample(*s).unwrap()),
        }
        w.finalize().expect("finish the source WAV");
    }
}

/// `None` if `got` equals `want` exactly (floats bit for bit), else where and how they differ.
fn difference(want: &Samples, got: &Samples, channels: usize) -> Option<String> {
    let at = |i: usize| {
        format!(
            "sample {i} (frame {}, channel {})",
            i / channels,
            i % channels
        )
    };
    if want.len() != got.len() {
        return Some(format!(
            "{} samples expected, {} read ({} vs {} frames)",
            want.len(),
            got.len(),
            want.len() / channels,
            got.len() / channels
        ));
    }
    match (want, got) {
        (Samples::Int(a), Samples::Int(b)) => a
            .iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .map(|i| format!("{}: expected {}, read {}", at(i), a[i], b[i])),
        (Samples::Float(a), Samples::Float(b)) => a
            .iter()
            .zip(b)
            .position(|(x, y)| x.to_bits() != y.to_bits())
            .map(|i| format!("{}: expected {:e}, read {:e}", at(i), a[i], b[i])),
        _ => Some("integer and float samples".to_string()),
    }
}

/// Open `path` with hound and read every sample its header covers.
fn read_wav(path: &Path) -> (hound::WavSpec, Samples) {
    let mut r = hound::WavReader::open(path)
        .unwrap_or_else(|e| panic!("hound cannot open {}: {e}", path.display()));
    let spec = r.spec();
    let samples = match spec.sample_format {
        hound::SampleFormat::Float => Samples::Float(
            r.samples::<f32>()
                .collect::<Result<_, _>>()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        ),
        hound::SampleFormat::Int => Samples::Int(
            r.samples::<i32>()
                .collect::<Result<_, _>>()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        ),
    };
    (spec, samples)
}

/// What `sox --i` says about a file.
#[derive(Debug)]
struct SoxInfo {
    channels: u32,
    sample_rate: u32,
    precision: String,
    encoding: String,
    /// From the Duration line; sox leaves the line out for a header that claims no audio.
    frames: Option<u64>,
}

/// Run `sox --i FILE`; it must succeed. Fails the test if sox is not installed.
fn sox_info(path: &Path) -> SoxInfo {
    let out = match Command::new("sox").arg("--i").arg(path).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "sox is not installed, and these tests read every file back with `sox --i`: run \
             scripts/test.sh (as root it installs sox; otherwise it prints the apt-get line)"
        ),
        Err(e) => panic!("cannot run sox: {e}"),
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sox --i {} failed ({}): {}{}",
        path.display(),
        out.status,
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |key: &str| -> Option<String> {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    let number = |key: &str| -> u32 {
        field(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no `{key}` in sox --i output:\n{text}"))
    };
    SoxInfo {
        channels: number("Channels"),
        sample_rate: number("Sample Rate"),
        precision: field("Precision").unwrap_or_default(),
        encoding: field("Sample Encoding").unwrap_or_default(),
        frames: field("Duration").map(|d| {
            // "00:00:00.92 = 44160 samples ~ 69 CDDA sectors"; sox's "samples" are frames.
            d.split_once(" = ")
                .and_then(|(_, r)| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("cannot read the Duration line of sox --i:\n{text}"))
        }),
    }
}

/// `sox --i` reads `path` as `channels` channels of `fmt` at the pipeline rate, `frames` long.
fn assert_sox_reads(path: &Path, channels: u32, fmt: Fmt, frames: u64) {
    let info = sox_info(path);
    let (precision, encoding) = fmt.sox_names();
    assert_eq!(
        (
            info.channels,
            info.sample_rate,
            info.precision.as_str(),
            info.encoding.as_str()
        ),
        (channels, SAMPLE_RATE, precision, encoding),
        "sox --i {}: {info:?}",
        path.display()
    );
    if frames > 0 {
        assert_eq!(info.frames, Some(frames), "sox --i {}", path.display());
    } else {
        assert!(matches!(info.frames, None | Some(0)), "{info:?}");
    }
}

/// Write `toml` as `p.toml` in `dir` and run it to the end; it must succeed.
fn run_to_end(dir: &Path, toml: &str) {
    let pipeline = dir.join("p.toml");
    std::fs::write(&pipeline, toml).unwrap();
    let out = run(["run", pipeline.to_str().unwrap()]);
    assert_eq!(
        code(&out),
        0,
        "tapeline run failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
}

// ------------------------------------------------------------------------------------------
// a. Every sample format round-trips exactly
// ------------------------------------------------------------------------------------------

/// Frames of the round-trip sources: not a whole number of blocks, and odd, so that a mono
/// 24-bit file needs the RIFF pad byte.
const SOURCE_FRAMES: usize = 28_837;

/// Deterministic source audio for `fmt`, interleaved: the extremes of the format first, then on
/// even channels a ramp over the whole range, on odd channels seeded noise. Every value is one
/// the pipeline's `f32` samples carry exactly, so the round trip must be exact: for pcm32 that
/// means at most 24 significant bits (an f32 mantissa), which is all a float pipeline can carry.
fn source(fmt: Fmt, channels: usize, seed: u64) -> Samples {
    let mut rng = Rng(seed);
    let n = SOURCE_FRAMES * channels;
    let ramp = |i: usize, lo: f64, hi: f64| lo + (hi - lo) * i as f64 / (SOURCE_FRAMES - 1) as f64;
    match fmt {
        Fmt::Float32 => {
            // Above full scale is kept: that is what float32 is for. Signed zeros and a
            // subnormal must survive too.
            let specials = [
                0.0f32,
                -0.0,
                1.0,
                -1.0,
                3.5,
                -7.25,
                f32::EPSILON,
                f32::MIN_POSITIVE,
                1.0e-40,
                -1.0e-40,
                0.999_999_94,
            ];
            Samples::Float(
                (0..n)
                    .map(|i| {
                        let (frame, c) = (i / channels, i % channels);
                        if i < specials.len() {
                            specials[i]
                        } else if c % 2 == 0 {
                            ramp(frame, -2.0, 2.0) as f32
                        } else {
                            (rng.unit() * 2.0 - 1.0) as f32
                        }
                    })
                    .collect(),
            )
        }
        _ => {
            let bits = u32::from(fmt.bits());
            let (min, max) = (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1);
            // Round to a value an f32 holds exactly (a no-op below 25 bits); the largest
            // 32-bit one is 2^31 - 128.
            let carry = |v: i64| -> i32 {
                let f = v as f32;
                if f64::from(f) > max as f64 {
                    (max - 127) as i32
                } else {
                    f as i32
                }
            };
            let specials = [min, max, 0, -1, 1, min + 1, max - 1];
            Samples::Int(
                (0..n)
                    .map(|i| {
                        let (frame, c) = (i / channels, i % channels);
                        let v = if i < specials.len() {
                            specials[i]
                        } else if c % 2 == 0 {
                            ramp(frame, min as f64, max as f64).round() as i64
                        } else {
                            // Full-range noise; for pcm32 also at smaller magnitudes (shifted
                            // right by 0..23 bits), where the low bits are set.
                            let r = (rng.next_u64() >> (64 - bits)) as i64 + min;
                            let shift = if bits == 32 { rng.next_u64() % 24 } else { 0 };
                            r >> shift
                        };
                        carry(v)
                    })
                    .collect(),
            )
        }
    }
}

/// Play a source WAV in `fmt` through `wav-reader → wav-writer` in `fmt`; return the folder and
/// the source samples.
fn round_trip(fmt: Fmt, channels: u16, per_channel: bool) -> (TempDir, Samples) {
    let dir = TempDir::new(&format!("wav-{}-{channels}", fmt.key()));
    let want = source(fmt, usize::from(channels), 0x5eed ^ u64::from(fmt.bits()));
    want.write(&dir.path().join("in.wav"), fmt.spec(channels));
    run_to_end(
        dir.path(),
        &format!(
            r#"version = 1
[capture.src]
plugin = "wav-reader"
path = "in.wav"
[storage.out]
plugin = "wav-writer"
inputs = ["src"]
path = "out.wav"
format = "{}"
per_channel = {per_channel}
"#,
            fmt.key()
        ),
    );
    (dir, want)
}

fn assert_interleaved_round_trip_is_exact(fmt: Fmt) {
    let channels = 2;
    let (dir, want) = round_trip(fmt, channels, false);
    let out = dir.path().join("out.wav");
    let (spec, got) = read_wav(&out);
    assert_eq!(spec, fmt.spec(channels), "{fmt:?}: the header hound reads");
    if let Some(d) = difference(&want, &got, channels.into()) {
        panic!("{fmt:?}: out.wav differs from in.wav: {d}");
    }
    assert_sox_reads(&out, channels.into(), fmt, SOURCE_FRAMES as u64);
}

#[test]
fn pcm16_round_trip_is_exact() {
    assert_interleaved_round_trip_is_exact(Fmt::Pcm16);
}

#[test]
fn pcm24_round_trip_is_exact() {
    assert_interleaved_round_trip_is_exact(Fmt::Pcm24);
}

#[test]
fn pcm32_round_trip_is_exact() {
    assert_interleaved_round_trip_is_exact(Fmt::Pcm32);
}

#[test]
fn float32_round_trip_is_exact() {
    assert_interleaved_round_trip_is_exact(Fmt::Float32);
}

#[test]
fn per_channel_writes_one_exact_mono_file_per_channel_in_every_format() {
    let channels = 3;
    for fmt in Fmt::ALL {
        let (dir, want) = round_trip(fmt, channels, true);
        assert!(
            !dir.path().join("out.wav").exists(),
            "{fmt:?}: per_channel must not write out.wav itself"
        );
        for c in 0..usize::from(channels) {
            // Named `<stem>-<channel>.wav`, as the writer's `per_channel` documents.
            let file = dir.path().join(format!("out-{c}.wav"));
            let (spec, got) = read_wav(&file);
            assert_eq!(spec, fmt.spec(1), "{fmt:?}: {}", file.display());
            if let Some(d) = difference(&want.channel(c, channels.into()), &got, 1) {
                panic!("{fmt:?}: out-{c}.wav is not channel {c} of in.wav: {d}");
            }
            assert_sox_reads(&file, 1, fmt, SOURCE_FRAMES as u64);
            if fmt == Fmt::Pcm24 {
                // 3 bytes × an odd number of frames: the RIFF pad byte must follow the audio.
                let len = std::fs::metadata(&file).unwrap().len() as usize;
                let data = 3 * SOURCE_FRAMES;
                assert_eq!((len - data) % 2, 1, "{}: a pad byte", file.display());
            }
        }
        assert!(!dir.path().join(format!("out-{channels}.wav")).exists());
    }
}

// ------------------------------------------------------------------------------------------
// b, c. Killed recordings, and `tapeline repair`
// ------------------------------------------------------------------------------------------

/// Channels of the killed recordings. Many, so that many bytes a second reach the writer and its
/// 256 KiB user-space buffer holds little audio (see `kill_9_at_20_random_moments...`).
const KILL_CHANNELS: u16 = 8;
/// Their format: 3-byte samples, so a frame (24 bytes) does not divide the writer's buffer.
const KILL_FORMAT: Fmt = Fmt::Pcm24;
/// Bytes per frame.
const KILL_ALIGN: u64 = KILL_CHANNELS as u64 * 3;
/// The pace stage sleeps this long per block: at most real time (480 frames per 10 ms).
const PACE_US: u64 = 10_000;
/// Blocks the queue in front of the writer holds (set explicitly in the pipeline).
const QUEUE_BLOCKS: u64 = 64;
/// The writer's default `sync_interval_ms`.
const SYNC_INTERVAL_MS: u64 = 1000;
/// Length of the finished reference recording: longer than any killed one can get.
const REFERENCE_FRAMES: u64 = 6 * SAMPLE_RATE as u64;
/// The writer's user-space buffer (`WRITE_BUFFER` in plugins/wav/src/writer.rs), for the report
/// only: no assertion depends on it.
const WRITER_BUFFER_BYTES: u64 = 256 * 1024;

/// A seeded noise tone (every frame different, so a shifted or repeated block cannot match),
/// paced to at most real time, recorded by `wav-writer` with its default sync interval. With
/// `frames` the tone ends; without, it never does. Without `pace` nothing is slowed down.
fn tone_pipeline(frames: Option<u64>, pace: bool) -> String {
    let length = frames.map_or(String::new(), |f| format!("frames = {f}\n"));
    let slow = if pace {
        format!("slow_us = {PACE_US}\n")
    } else {
        String::new()
    };
    format!(
        r#"version = 1
[capture.tone]
plugin = "tone"
waveform = "noise"
seed = 4242
amplitude_db = -1.0
channels = {KILL_CHANNELS}
{length}
[process.pace]
plugin = "mock-process"
inputs = ["tone"]
{slow}
[storage.file]
plugin = "wav-writer"
inputs = ["pace"]
path = "rec.wav"
format = "{}"
buffer = {{ capacity_blocks = {QUEUE_BLOCKS}, when_full = "block" }}
"#,
        KILL_FORMAT.key()
    )
}

/// The finished recording of the same tone the killed runs record: what their samples must be.
fn reference() -> Samples {
    let dir = TempDir::new("wav-reference");
    run_to_end(dir.path(), &tone_pipeline(Some(REFERENCE_FRAMES), false));
    let (spec, samples) = read_wav(&dir.path().join("rec.wav"));
    assert_eq!(spec, KILL_FORMAT.spec(KILL_CHANNELS));
    assert_eq!(
        samples.len() as u64,
        REFERENCE_FRAMES * u64::from(KILL_CHANNELS)
    );
    samples
}

/// Start the endless paced recording in `dir` and wait until the writer has created its file.
/// Returns the child, the recording, and when the file was first seen.
fn start_endless(dir: &Path) -> (Child, PathBuf, Instant) {
    let pipeline = dir.join("p.toml");
    std::fs::write(&pipeline, tone_pipeline(None, true)).unwrap();
    let mut child = Command::new(tapeline_bin())
        .args(["run", pipeline.to_str().unwrap()])
        .env_remove(tapeline::plugins::PLUGIN_PATH_ENV)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tapeline starts");
    let rec = dir.join("rec.wav");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rec.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("tapeline ended before recording anything: {status}");
        }
        if Instant::now() > deadline {
            kill_and_reap(&mut child);
            panic!("no recording within 30 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    (child, rec, Instant::now())
}

/// SIGKILL (`kill -9`): no signal handler, no finalize, no destructor runs.
fn kill_9(mut child: Child) {
    child.kill().expect("SIGKILL");
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "tapeline ended before the kill: {status}"
    );
}

/// Offset of the first audio byte: walk the RIFF chunks to `data`.
fn data_start(bytes: &[u8]) -> u64 {
    let mut pos = 12usize;
    while pos + 8 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if &bytes[pos..pos + 4] == b"data" {
            return pos as u64 + 8;
        }
        pos += 8 + size + (size & 1);
    }
    panic!("no data chunk");
}

/// Complete frames on disk after the header, whatever the header says.
fn frames_on_disk(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    (bytes.len() as u64 - data_start(&bytes)) / KILL_ALIGN
}

/// `tapeline repair FILES`.
fn repair(files: &[&Path]) -> tapeline_tests::Output {
    let mut args = vec!["repair".as_ref()];
    args.extend(files.iter().map(|f| f.as_os_str()));
    run(args)
}

/// The samples of `file`'s header-covered frames must be the reference's first frames.
fn assert_samples_match_reference(file: &Path, reference: &Samples, what: &str) -> u64 {
    let (spec, got) = read_wav(file);
    assert_eq!(spec, KILL_FORMAT.spec(KILL_CHANNELS), "{what}");
    let channels = usize::from(KILL_CHANNELS);
    assert!(
        got.len() <= reference.len(),
        "{what}: {} frames, longer than the {REFERENCE_FRAMES}-frame reference",
        got.len() / channels
    );
    if let Some(d) = difference(&reference.prefix(got.len()), &got, channels) {
        panic!("{what}: differs from the finished reference recording: {d}");
    }
    (got.len() / channels) as u64
}

/// The killed runs, in sequence, at seeded random moments.
///
/// Each run records an endless noise tone (8 channels, pcm24, default `sync_interval_ms` =
/// 1000) paced by a `mock-process` stage that sleeps 10 ms per 480-frame block, so the writer
/// gets at most 48 000 frames a second (the tone alone is unpaced: without pacing, "one second
/// of sync interval" would be many seconds of audio). At a moment 0.3–4 s after the file
/// appeared, the process gets SIGKILL.
///
/// What "a kill -9 loses at most about one sync interval" means, in frames:
/// - `H`: frames the header covers at the kill: what any reader plays without repair.
/// - `G`: frames the writer had accepted (`write` returned) by the kill. Not observable from
///   outside: a killed run writes no summary.
/// - `D`: complete frames in the file after the header: what `tapeline repair` keeps.
///
/// The writer syncs (data, then header) at the first `write` at least 1 s after the previous
/// sync. In that second it can accept at most 1 s of paced audio, plus whatever was queued in
/// front of it at the sync (64 blocks), plus the block in hand and one block of rounding. So the
/// claim is `G − H ≤ B = 48 000 + 66 × 480` frames (1.66 s; ≈ 1 s when the writer keeps up, as
/// it does here).
///
/// `G` is bounded below by `D` (every byte on disk went through `write`), so the test asserts
/// `D − H ≤ B`: it holds whenever the claim does (no false failures), and a writer that stops
/// updating its header, or updates it late, fails it. What it cannot see is audio still in the
/// writer's user-space buffer at the kill (`G − D` ≤ 256 KiB, here ≤ 10 922 frames ≈ 0.23 s):
/// kill -9 discards that, and nothing outside the process can count it. That is why the runs
/// record 8 channels: at 1.15 MB/s the buffer holds a fifth of a second, not seconds as it would
/// for mono 16-bit, where `D` would equal `H` almost always and the check would be vacuous.
///
/// Besides: every file opens with hound and `sox --i` as it is; its frames (without and after
/// repair) equal the finished reference recording of the same tone, sample for sample; and a
/// kill late enough must find the header synced at least once.
#[test]
fn kill_9_at_20_random_moments_loses_at_most_one_sync_interval_and_keeps_exact_samples() {
    const KILLS: usize = 20;
    const SEED: u64 = 0x6b69_6c6c_2d39; // "kill-9"
    let block = u64::from(BLOCK_FRAMES);
    let bound = SYNC_INTERVAL_MS * u64::from(SAMPLE_RATE) / 1000 + (QUEUE_BLOCKS + 2) * block;
    let reference = reference();
    let mut rng = Rng(SEED);
    let started = Instant::now();
    let mut rows = Vec::new();
    for k in 0..KILLS {
        let moment = Duration::from_secs_f64(0.3 + 3.7 * rng.unit());
        let dir = TempDir::new(&format!("wav-kill-{k}"));
        let (child, rec, seen) = start_endless(dir.path());
        std::thread::sleep(moment.saturating_sub(seen.elapsed()));
        let killed_after = seen.elapsed();
        kill_9(child);
        let what = format!("kill {k} at {:.3} s", killed_after.as_secs_f64());

        // As it is, without repair.
        let header = assert_samples_match_reference(&rec, &reference, &what);
        assert_sox_reads(&rec, KILL_CHANNELS.into(), KILL_FORMAT, header);
        let on_disk = frames_on_disk(&rec);

        // After repair: every complete frame on disk, still the reference's samples.
        let out = repair(&[&rec]);
        assert_eq!(code(&out), 0, "{what}: repair: {}", stderr(&out));
        let repaired = assert_samples_match_reference(&rec, &reference, &what);
        assert_eq!(
            repaired, on_disk,
            "{what}: repair keeps every complete frame"
        );

        let lost = on_disk - header;
        assert!(
            lost <= bound,
            "{what}: the header covers {header} frames but {on_disk} were on disk: {lost} \
             frames ({:.3} s) behind, more than the {bound} frames one sync interval and a full \
             queue allow",
            lost as f64 / f64::from(SAMPLE_RATE)
        );
        if killed_after >= Duration::from_millis(2500) {
            assert!(
                header > 0,
                "{what}: the header was never synced ({on_disk} frames on disk)"
            );
        }
        // Not asserted (pacing bounds the rate only from above): the most the pace stage can
        // have passed on since the file appeared (+ 2 blocks for the polling), for the report.
        let paced_max = (killed_after.as_micros() as u64 / PACE_US + 2) * block;
        rows.push((killed_after, header, on_disk, lost, paced_max));
    }

    let mut lost: Vec<u64> = rows.iter().map(|r| r.3).collect();
    lost.sort_unstable();
    let secs = |f: u64| f as f64 / f64::from(SAMPLE_RATE);
    eprintln!("kill  at (s)  header  on disk  lost (D-H)  paced max - H");
    for (k, (at, h, d, l, p)) in rows.iter().enumerate() {
        eprintln!(
            "{k:>4}  {:>6.3}  {h:>6}  {d:>7}  {l:>10}  {:>13}",
            at.as_secs_f64(),
            p.saturating_sub(*h)
        );
    }
    eprintln!(
        "lost in the header-visible part (D - H): min {} / median {} / max {} frames \
         ({:.3} / {:.3} / {:.3} s); bound {bound} ({:.3} s); unseen writer buffer <= {} frames; \
         {KILLS} kills in {:.1} s",
        lost[0],
        lost[KILLS / 2],
        lost[KILLS - 1],
        secs(lost[0]),
        secs(lost[KILLS / 2]),
        secs(lost[KILLS - 1]),
        secs(bound),
        WRITER_BUFFER_BYTES / KILL_ALIGN,
        started.elapsed().as_secs_f64()
    );
}

/// Kill a recording after `after`; returns its folder and file.
fn killed_recording(name: &str, after: Duration) -> (TempDir, PathBuf) {
    let dir = TempDir::new(name);
    let (child, rec, seen) = start_endless(dir.path());
    std::thread::sleep(after.saturating_sub(seen.elapsed()));
    kill_9(child);
    (dir, rec)
}

#[test]
fn repair_makes_the_header_of_a_killed_recording_cover_every_complete_frame() {
    let reference = reference();
    let (dir, rec) = killed_recording("wav-repair-killed", Duration::from_millis(1700));
    // The same recording as a power loss mid-write could leave it: cut inside a frame.
    let torn = dir.path().join("torn.wav");
    let bytes = std::fs::read(&rec).unwrap();
    let start = data_start(&bytes) as usize;
    assert!(
        bytes.len() > start + 10 * KILL_ALIGN as usize,
        "audio on disk"
    );
    std::fs::write(&torn, &bytes[..bytes.len() - 7]).unwrap();

    for file in [&rec, &torn] {
        let before = std::fs::read(file).unwrap();
        let header_before = hound::WavReader::open(file).unwrap().duration() as u64;
        let audio = (before.len() - start) as u64;
        let (complete, partial) = (audio / KILL_ALIGN, audio % KILL_ALIGN);
        // The torn copy always needs repair; the killed file does unless the kill came right
        // after a sync (header == disk), and then repair must see that it is valid.
        let valid = header_before == complete && partial == 0;
        assert!(!(valid && file == &torn));

        let out = repair(&[file]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let seconds = complete as f64 / f64::from(SAMPLE_RATE);
        let cut = match partial {
            0 => String::new(),
            n => format!(", cut {n} bytes of a partial frame"),
        };
        let time = format!("{seconds:.3} s at {SAMPLE_RATE} Hz");
        let line = if valid {
            format!("header already valid ({complete} frames, {time}); nothing changed")
        } else {
            format!("repaired: {complete} frames ({time}){cut}")
        };
        assert_eq!(stdout(&out), format!("{}: {line}\n", file.display()));
        assert_eq!(stderr(&out), "");

        // hound and sox read every complete frame, and they are the reference's.
        let frames = assert_samples_match_reference(file, &reference, &file.display().to_string());
        assert_eq!(frames, complete);
        assert_sox_reads(file, KILL_CHANNELS.into(), KILL_FORMAT, complete);
        // Only the header changed, and only the partial frame was cut (24-byte frames: an even
        // length, no pad byte).
        let after = std::fs::read(file).unwrap();
        let end = start + (complete * KILL_ALIGN) as usize;
        assert_eq!(after.len(), end);
        assert!(
            after[start..] == before[start..end],
            "the audio bytes changed"
        );

        // Once repaired, a file is valid: a second repair changes nothing.
        let out = repair(&[file]);
        assert_eq!(code(&out), 0);
        assert!(
            stdout(&out).contains(": header already valid ("),
            "{}",
            stdout(&out)
        );
        assert!(std::fs::read(file).unwrap() == after);
    }
}

#[test]
fn repair_leaves_a_finished_recording_byte_for_byte_alone() {
    // A finished mono 24-bit file with an odd frame count: odd data, then the pad byte.
    let dir = TempDir::new("wav-repair-valid");
    let frames = 4_801;
    run_to_end(
        dir.path(),
        &format!(
            "version = 1\n[capture.t]\nplugin = \"tone\"\nchannels = 1\nframes = {frames}\n\
             [storage.w]\nplugin = \"wav-writer\"\ninputs = [\"t\"]\npath = \"ok.wav\"\n\
             format = \"pcm24\"\n"
        ),
    );
    let file = dir.path().join("ok.wav");
    let before = std::fs::read(&file).unwrap();
    assert_eq!(before.len() % 2, 0, "padded");
    let out = repair(&[&file]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "{}: header already valid ({frames} frames, 0.100 s at 48000 Hz); nothing changed\n",
            file.display()
        )
    );
    assert!(std::fs::read(&file).unwrap() == before, "bytes changed");
}

#[test]
fn repair_refuses_a_text_file_with_one_line_and_exit_2_and_leaves_it_untouched() {
    let dir = TempDir::new("wav-repair-text");
    let text = dir.path().join("notes.wav");
    let content = "RIFF-looking? No: these are notes about the session.\n".repeat(40);
    std::fs::write(&text, &content).unwrap();

    let out = repair(&[&text]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "one error line and one help line:\n{err}");
    assert!(
        lines[0].starts_with(&format!("error: {}: not a WAV file", text.display())),
        "{err}"
    );
    assert!(lines[1].starts_with("  help: "), "{err}");
    assert_eq!(std::fs::read_to_string(&text).unwrap(), content);

    // A missing file is bad input too; a good file named with it is still repaired.
    let (_killed_dir, rec) = killed_recording("wav-repair-mixed", Duration::from_millis(300));
    let missing = dir.path().join("missing.wav");
    let out = repair(&[&missing, &rec, &text]);
    assert_eq!(code(&out), 2);
    assert!(
        stdout(&out).starts_with(&format!("{}: ", rec.display())),
        "{}",
        stdout(&out)
    );
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "error: {}: no such file\n  help: ",
            missing.display()
        )),
        "{err}"
    );
    assert_eq!(err.lines().filter(|l| l.starts_with("error: ")).count(), 2);
    assert!(!missing.exists());
    assert_eq!(std::fs::read_to_string(&text).unwrap(), content);
}

#[test]
fn repair_help_says_when_to_use_it() {
    let out = run(["repair", "--help"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let help = stdout(&out).replace('\n', " ");
    for words in [
        "crash",
        "power loss",
        "kill -9",
        "every complete frame",
        "untouched",
    ] {
        assert!(help.contains(words), "`{words}` in:\n{}", stdout(&out));
    }
    let top = stdout(&run(["--help"]));
    assert!(
        top.lines().any(|l| l.trim_start().starts_with("repair ")),
        "{top}"
    );
}
