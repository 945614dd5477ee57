//! Tests of both plugins against real files in the system temp folder, read back with hound.

use std::fs;
use std::path::{Path, PathBuf};

use hound::{SampleFormat as HoundFormat, WavSpec};
use tapeline_plugin_api::prelude::*;
use tapeline_plugin_api::sdk::parse_config;
use tapeline_plugin_api::testing::{self, audio_call, context, output, Context};

use crate::convert::encode::encode_slice;
use crate::convert::tests::encoded_one_by_one;
use crate::header::Layout;
use crate::writer::SampleFormat;
use crate::{WavFileReader, WavWriter};

/// A fresh folder under the temp dir, removed at the end of the test.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("tapeline-wav-{}-{name}", std::process::id()));
        remove_dir(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn base(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        remove_dir(&self.0);
    }
}

/// Remove a test folder if it is there; anything but "not found" is noted (a folder left
/// behind changes no test's outcome).
fn remove_dir(p: &Path) {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            eprintln!("note: could not remove {}: {e}", p.display());
        }
        _ => {}
    }
}

const RATE: u32 = 48_000;

/// Stage `test` at 48 kHz with blocks of 480 frames, its pipeline file in `base` (`.get()` it).
fn ctx(base: &str, inputs: &[PortFormat]) -> Context {
    context(inputs)
        .with_stage_id("test")
        .with_base_dir(base)
        .with_sample_rate(RATE)
        .with_block_frames(480)
}

fn input(channels: u32) -> [PortFormat; 1] {
    [PortFormat {
        channels,
        sample_rate: RATE,
    }]
}

fn json_path(p: &Path) -> String {
    serde_json::to_string(p.to_str().unwrap()).unwrap()
}

fn new_writer(dir: &TempDir, extra: &str, channels: u32) -> PluginResult<WavWriter> {
    let cfg = parse_config(&format!("{{{extra}}}"))?;
    WavWriter::new(cfg, &ctx(dir.base(), &input(channels)).get())
}

fn write_block(w: &mut WavWriter, samples: &[f32], channels: u32) {
    w.write(&testing::input(samples, channels)).unwrap();
}

fn bits(format: SampleFormat) -> u32 {
    match format {
        SampleFormat::Pcm16 => 16,
        SampleFormat::Pcm24 => 24,
        SampleFormat::Pcm32 | SampleFormat::Float32 => 32,
    }
}

/// Stored values covering both extremes, and the f32 samples a reader would have produced for
/// them (`v / 2^(N-1)`, exact in f32 for every value used).
fn test_signal(format: SampleFormat, n: usize) -> (Vec<i64>, Vec<f32>) {
    if format == SampleFormat::Float32 {
        let f: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 1.5).collect();
        return (Vec::new(), f);
    }
    let b = bits(format);
    let full = 1i64 << (b - 1);
    // Pcm32: f32 carries 24 significant bits, so only multiples of 2^8 are exact.
    let quantum = if b == 32 { 256 } else { 1 };
    let ints: Vec<i64> = (0..n)
        .map(|i| match i {
            0 => -full,
            1 => full - quantum,
            2 => 0,
            _ => ((i as i64 * 7919 * quantum) % (2 * full)) - full,
        })
        .map(|v| v / quantum * quantum)
        .collect();
    let floats = ints
        .iter()
        .map(|v| (*v as f64 / full as f64) as f32)
        .collect();
    (ints, floats)
}

fn read_all(path: &Path) -> (WavSpec, Vec<i64>, Vec<f32>) {
    let mut r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    match spec.sample_format {
        HoundFormat::Float => {
            let f = r.samples::<f32>().map(Result::unwrap).collect();
            (spec, Vec::new(), f)
        }
        HoundFormat::Int => {
            let i = r.samples::<i32>().map(|s| i64::from(s.unwrap())).collect();
            (spec, i, Vec::new())
        }
    }
}

const FORMATS: [(&str, SampleFormat); 4] = [
    ("pcm16", SampleFormat::Pcm16),
    ("pcm24", SampleFormat::Pcm24),
    ("pcm32", SampleFormat::Pcm32),
    ("float32", SampleFormat::Float32),
];

#[test]
fn header_after_n_frames_is_sample_exact_for_every_format() {
    let dir = TempDir::new("formats");
    for (name, format) in FORMATS {
        for channels in [1u32, 2] {
            let path = dir.path(&format!("{name}-{channels}.wav"));
            let cfg = format!(
                r#""path": {}, "format": "{name}", "sync_interval_ms": 3600000"#,
                json_path(&path)
            );
            let mut w = new_writer(&dir, &cfg, channels).unwrap();
            let frames = 1001;
            let (ints, floats) = test_signal(format, frames * channels as usize);
            let split = 480 * channels as usize;
            write_block(&mut w, &floats[..split], channels);
            write_block(&mut w, &floats[split..], channels);
            // After flush(): what a kill -9 would leave, read while the writer is still open.
            w.flush().unwrap();
            for stage in ["flushed", "finalized"] {
                let (spec, got_ints, got_floats) = read_all(&path);
                let what = format!("{name}, {channels} ch, {stage}");
                assert_eq!(spec.channels as u32, channels, "{what}");
                assert_eq!(spec.sample_rate, RATE, "{what}");
                assert_eq!(u32::from(spec.bits_per_sample), bits(format), "{what}");
                if format == SampleFormat::Float32 {
                    assert_eq!(spec.sample_format, HoundFormat::Float, "{what}");
                    let same = got_floats.len() == floats.len()
                        && got_floats
                            .iter()
                            .zip(&floats)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{what}: float samples differ");
                } else {
                    assert!(got_ints == ints, "{what}: integer samples differ");
                }
                if stage == "flushed" {
                    let report = w.finalize().unwrap();
                    assert_eq!(report.frames_written(), frames as u64);
                    assert_eq!(report.files().len(), 1);
                }
            }
        }
    }
}

#[test]
fn a_block_is_on_disk_without_flush_when_syncing_every_block() {
    let dir = TempDir::new("sync0");
    let path = dir.path("live.wav");
    let cfg = format!(r#""path": {}, "sync_interval_ms": 0"#, json_path(&path));
    let mut w = new_writer(&dir, &cfg, 2).unwrap();
    // Valid and empty right after creation.
    assert_eq!(hound::WavReader::open(&path).unwrap().duration(), 0);
    let block = [0.5f32; 960];
    let input = testing::input(&block, 2);
    // write(), sync included, passes the host's audio-path allocation check.
    audio_call("write", || w.write(&input)).expect("write succeeds without allocating");
    assert_eq!(hound::WavReader::open(&path).unwrap().duration(), 480);
    drop(w); // Drop finalizes a writer the host forgot to finalize.
    assert_eq!(hound::WavReader::open(&path).unwrap().duration(), 480);
}

#[test]
fn sync_end_syncs_only_when_finalised() {
    let dir = TempDir::new("sync-end");
    let path = dir.path("job.wav");
    let cfg = format!(
        r#""path": {}, "sync_interval_ms": 0, "sync": "end""#,
        json_path(&path)
    );
    let mut w = new_writer(&dir, &cfg, 2).unwrap();
    let block = [0.25f32; 960];
    let input = testing::input(&block, 2);
    for _ in 0..3 {
        w.write(&input).unwrap();
    }
    w.flush().unwrap();
    // Nothing synced yet: the header still counts no audio, though every interval has passed.
    assert_eq!(hound::WavReader::open(&path).unwrap().duration(), 0);
    assert_eq!(w.finalize().unwrap().frames_written(), 1440);
    assert_eq!(hound::WavReader::open(&path).unwrap().duration(), 1440);
}

#[test]
fn per_channel_writes_one_mono_file_per_channel() {
    let dir = TempDir::new("per-channel");
    let path = dir.path("rec.wav");
    let cfg = format!(r#""path": {}, "per_channel": true"#, json_path(&path));
    let mut w = new_writer(&dir, &cfg, 3).unwrap();
    let (ints, floats) = test_signal(SampleFormat::Pcm16, 300);
    write_block(&mut w, &floats, 3);
    let report = w.finalize().unwrap();
    assert_eq!(report.frames_written(), 100);
    let names: Vec<String> = report.files().map(str::to_string).collect();
    assert_eq!(
        names,
        (0..3)
            .map(|c| dir.path(&format!("rec-{c}.wav")).display().to_string())
            .collect::<Vec<_>>()
    );
    assert!(!path.exists());
    for c in 0..3 {
        let (spec, got, _) = read_all(&dir.path(&format!("rec-{c}.wav")));
        assert_eq!(spec.channels, 1);
        let want: Vec<i64> = ints.iter().skip(c).step_by(3).copied().collect();
        assert_eq!(got, want, "channel {c}");
    }
}

#[test]
fn finalize_after_no_writes_leaves_a_valid_empty_file() {
    let dir = TempDir::new("empty");
    let path = dir.path("nothing.wav");
    let cfg = format!(r#""path": {}, "format": "pcm24""#, json_path(&path));
    let mut w = new_writer(&dir, &cfg, 2).unwrap();
    let report = w.finalize().unwrap();
    assert_eq!(report.frames_written(), 0);
    assert_eq!(w.finalize().unwrap(), report, "finalize is idempotent");
    let r = hound::WavReader::open(&path).unwrap();
    assert_eq!(r.duration(), 0);
    assert_eq!(r.spec().bits_per_sample, 24);
    assert!(w.write(&testing::input(&[0.0; 2], 2)).is_err());
}

#[test]
fn odd_sized_data_gets_its_pad_byte() {
    let dir = TempDir::new("pad");
    let path = dir.path("odd.wav");
    let cfg = format!(r#""path": {}, "format": "pcm24""#, json_path(&path));
    let mut w = new_writer(&dir, &cfg, 1).unwrap();
    write_block(&mut w, &[0.25, -0.25, 0.5], 1);
    w.finalize().unwrap();
    let layout = Layout {
        channels: 1,
        sample_rate: RATE,
        bits: 24,
        float: false,
    };
    let len = fs::metadata(&path).unwrap().len();
    assert_eq!(len, layout.header_len() as u64 + 9 + 1);
    let (_, got, _) = read_all(&path);
    assert_eq!(got, vec![2_097_152, -2_097_152, 4_194_304]);
}

#[test]
fn conversion_clamps_and_rounds() {
    let mut buf = [0u8; 64];
    let src = [1.5f32, 1.0, -1.0, -1.5, f32::NAN, 0.6 / 32768.0];
    let n = encode_slice(SampleFormat::Pcm16, &src, &mut buf);
    let got: Vec<i16> = buf[..n]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert_eq!(got, vec![32767, 32767, -32768, -32768, 0, 1]);
    let n = encode_slice(SampleFormat::Pcm32, &[1.0f32, -1.0], &mut buf);
    let got: Vec<i32> = buf[..n]
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(got, vec![i32::MAX, i32::MIN]);
    // Only whole samples fit: 7 bytes hold two 24-bit samples.
    let n = encode_slice(SampleFormat::Pcm24, &[0.0f32; 5], &mut buf[..7]);
    assert_eq!(n, 6);
}

#[test]
fn check_leaves_an_existing_file_to_new_which_refuses_it_and_creates_nothing() {
    let dir = TempDir::new("check");
    let inputs = input(2);
    let cx = ctx(dir.base(), &inputs);
    let c = cx.get();
    let existing = dir.path("take1.wav");
    fs::write(&existing, b"old recording").unwrap();

    // check() (validate, graph) does not fail because a take was already recorded...
    let cfg = parse_config(&format!(r#"{{"path": {}}}"#, json_path(&existing))).unwrap();
    WavWriter::check(&cfg, &c).unwrap();
    // ...new() (run) refuses it, at the key, and leaves the old file alone.
    let cfg = parse_config(&format!(r#"{{"path": {}}}"#, json_path(&existing))).unwrap();
    let e = WavWriter::new(cfg, &c)
        .err()
        .expect("new refuses an existing file");
    assert_eq!(e.key(), Some("path"));
    assert!(e.message().contains("overwrite = true"), "{e}");
    assert!(e.message().contains("take1.wav"), "{e}");
    assert_eq!(fs::read(&existing).unwrap(), b"old recording");

    let cfg = parse_config(&format!(
        r#"{{"path": {}, "overwrite": true}}"#,
        json_path(&existing)
    ))
    .unwrap();
    WavWriter::check(&cfg, &c).unwrap();

    // Relative path, missing folders: fine, and check() creates nothing.
    let cfg = parse_config(r#"{"path": "new/deeper/take.wav"}"#).unwrap();
    WavWriter::check(&cfg, &c).unwrap();
    assert!(!dir.path("new").exists());

    // per_channel checks the files it would write.
    fs::write(dir.path("multi-1.wav"), b"x").unwrap();
    let cfg = parse_config(r#"{"path": "multi.wav", "per_channel": true}"#).unwrap();
    let e = WavWriter::new(cfg, &c)
        .err()
        .expect("new refuses an existing file");
    assert!(e.message().contains("multi-1.wav"), "{e}");

    // A file where a folder is needed.
    let cfg = parse_config(r#"{"path": "take1.wav/inside.wav"}"#).unwrap();
    let e = WavWriter::check(&cfg, &c).unwrap_err();
    assert_eq!(e.key(), Some("path"));
    assert!(e.message().contains("not a folder"), "{e}");

    // A folder where the file should go.
    let cfg = parse_config(r#"{"path": "."}"#).unwrap();
    assert_eq!(WavWriter::check(&cfg, &c).unwrap_err().key(), Some("path"));
}

#[test]
fn new_creates_missing_folders() {
    let dir = TempDir::new("mkdir");
    let mut w = new_writer(&dir, r#""path": "a/b/c.wav""#, 1).unwrap();
    w.finalize().unwrap();
    assert!(dir.path("a/b/c.wav").is_file());
}

/// A plugin's counters by name, read as the host reads them: between calls, without allocating.
fn stats<P: Describe>(p: &P) -> Vec<(&'static str, u64)> {
    let mut values = vec![u64::MAX; P::STATS.len()];
    audio_call("stats", || {
        p.stats(&mut values);
        Ok(())
    })
    .expect("stats() does not allocate");
    P::STATS.iter().copied().zip(values).collect()
}

/// The size field of the file's `data` chunk, read from its RIFF header.
fn data_chunk_size(path: &Path) -> u64 {
    let bytes = fs::read(path).unwrap();
    assert_eq!(&bytes[..4], b"RIFF", "{}", path.display());
    assert_eq!(&bytes[8..12], b"WAVE", "{}", path.display());
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
        if &bytes[at..at + 4] == b"data" {
            return u64::from(size);
        }
        at += 8 + size as usize + size as usize % 2;
    }
    panic!("no data chunk in {}", path.display());
}

#[test]
fn writer_stats_count_data_bytes_and_every_sync() {
    let dir = TempDir::new("stats");
    let path = dir.path("counted.wav");
    let cfg = format!(
        r#""path": {}, "format": "pcm16", "sync_interval_ms": 3600000"#,
        json_path(&path)
    );
    let mut w = new_writer(&dir, &cfg, 2).unwrap();
    // Creating the file synced it and its folder.
    assert_eq!(stats(&w), [("bytes_written", 0), ("syncs", 2)]);
    let (_, floats) = test_signal(SampleFormat::Pcm16, 1001 * 2);
    write_block(&mut w, &floats[..960], 2);
    write_block(&mut w, &floats[960..1920], 2);
    write_block(&mut w, &floats[1920..], 2);
    // 1001 stereo 16-bit frames; no interval has passed, so no sync yet.
    assert_eq!(stats(&w), [("bytes_written", 1001 * 4), ("syncs", 2)]);
    // A sync: the data, then the header.
    w.flush().unwrap();
    assert_eq!(stats(&w), [("bytes_written", 4004), ("syncs", 4)]);
    assert_eq!(
        data_chunk_size(&path),
        4004,
        "the synced header counts them"
    );
    w.finalize().unwrap();
    assert_eq!(stats(&w), [("bytes_written", 4004), ("syncs", 5)]);
    assert_eq!(data_chunk_size(&path), 4004);

    // Syncing after every block: two per block.
    let path = dir.path("every-block.wav");
    let cfg = format!(
        r#""path": {}, "format": "float32", "sync_interval_ms": 0"#,
        json_path(&path)
    );
    let mut w = new_writer(&dir, &cfg, 1).unwrap();
    for _ in 0..3 {
        write_block(&mut w, &[0.5; 480], 1);
    }
    assert_eq!(
        stats(&w),
        [("bytes_written", 3 * 480 * 4), ("syncs", 2 + 3 * 2)]
    );
    drop(w);
    assert_eq!(data_chunk_size(&path), 3 * 480 * 4);
}

#[test]
fn writer_stats_add_up_every_file_of_a_per_channel_recording() {
    let dir = TempDir::new("stats-per-channel");
    let path = dir.path("rec.wav");
    let cfg = format!(
        r#""path": {}, "format": "pcm24", "per_channel": true"#,
        json_path(&path)
    );
    let mut w = new_writer(&dir, &cfg, 3).unwrap();
    let (_, floats) = test_signal(SampleFormat::Pcm24, 300);
    write_block(&mut w, &floats, 3);
    w.finalize().unwrap();
    // Three files of 100 mono 24-bit frames, each created (2 syncs) and finished (1).
    assert_eq!(stats(&w), [("bytes_written", 900), ("syncs", 9)]);
    let sizes: Vec<u64> = (0..3)
        .map(|c| data_chunk_size(&dir.path(&format!("rec-{c}.wav"))))
        .collect();
    assert_eq!(sizes, [300, 300, 300]);
}

/// Write `samples` (whole frames) in blocks of `frames[0]`, `frames[1]`, ... frames (round
/// again at the end, each at least 1), without allocating, with a sync every `sync_every`
/// blocks; then finalize.
fn write_in_blocks(
    w: &mut WavWriter,
    samples: &[f32],
    channels: usize,
    frames: &[usize],
    sync_every: usize,
) {
    let mut rest = samples;
    for (k, &frames) in frames.iter().cycle().enumerate() {
        if rest.is_empty() {
            break;
        }
        let (block, tail) = rest.split_at(frames.min(rest.len() / channels) * channels);
        let input = testing::input(block, channels as u32);
        audio_call("write", || w.write(&input)).expect("write succeeds without allocating");
        if k % sync_every == sync_every - 1 {
            w.flush().unwrap();
        }
        rest = tail;
    }
    w.finalize().unwrap();
}

/// Check that the file at `path` is a finished WAV file whose data chunk is `want`.
fn assert_data_is(path: &Path, layout: &Layout, want: &[u8]) {
    let bytes = fs::read(path).unwrap();
    let start = layout.header_len();
    let pad = want.len() % 2;
    assert_eq!(bytes.len(), start + want.len() + pad, "{}", path.display());
    assert!(
        bytes[start..start + want.len()] == *want,
        "{}",
        path.display()
    );
    assert_eq!(data_chunk_size(path), want.len() as u64);
}

/// The writer encodes straight into its write buffer: one block larger than the buffer, and
/// many small blocks of uneven sizes with syncs among them, give the file the same bytes as
/// the samples encoded one by one, in every format, interleaved and per channel.
#[test]
fn big_and_small_blocks_write_exactly_the_samples_encoded_one_by_one() {
    let dir = TempDir::new("blocks");
    // 140_001 frames of 3 channels: more than the 256 KiB write buffer holds in every format,
    // interleaved or per channel (pcm16 per channel: 280_002 bytes), with an odd data size
    // (pcm24 per channel) and buffers that end mid-frame and mid-sample (pcm24).
    let channels = 3;
    let samples: Vec<f32> = (0..140_001 * channels)
        .map(|i| (i as f32 * 0.0137).sin() * 1.05)
        .collect();
    for (name, format) in FORMATS {
        for per_channel in [false, true] {
            let layout = Layout {
                channels: if per_channel { 1 } else { channels as u16 },
                sample_rate: RATE,
                bits: bits(format) as u16,
                float: format == SampleFormat::Float32,
            };
            for (how, frames, sync_every) in [
                ("big", &[usize::MAX][..], 1),
                ("small", &[1, 5, 2, 37, 13, 8, 21, 3], 1000),
            ] {
                let path = dir.path(&format!("{how}-{name}-{per_channel}.wav"));
                let cfg = format!(
                    r#""path": {}, "format": "{name}", "per_channel": {per_channel}"#,
                    json_path(&path)
                );
                let mut w = new_writer(&dir, &cfg, channels as u32).unwrap();
                write_in_blocks(&mut w, &samples, channels, frames, sync_every);
                if !per_channel {
                    let want = encoded_one_by_one(format, samples.iter().copied());
                    assert_data_is(&path, &layout, &want);
                    continue;
                }
                for c in 0..channels {
                    let want = samples.iter().skip(c).step_by(channels).copied();
                    let want = encoded_one_by_one(format, want);
                    let path = dir.path(&format!("{how}-{name}-{per_channel}-{c}.wav"));
                    assert_data_is(&path, &layout, &want);
                }
            }
        }
    }
}

// ---- wav-reader ----

fn write_fixture(path: &Path, spec: WavSpec, samples: &[i32]) {
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in samples {
        match spec.bits_per_sample {
            8 => w.write_sample(*s as i8).unwrap(),
            16 => w.write_sample(*s as i16).unwrap(),
            _ => w.write_sample(*s).unwrap(),
        }
    }
    w.finalize().unwrap();
}

fn int_spec(channels: u16, bits: u16, rate: u32) -> WavSpec {
    WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: HoundFormat::Int,
    }
}

fn open_reader(dir: &TempDir, extra: &str) -> PluginResult<WavFileReader> {
    let cfg = parse_config(&format!("{{{extra}}}"))?;
    let cx = ctx(dir.base(), &[]);
    let c = cx.get();
    let ports = WavFileReader::outputs(&cfg, &c)?;
    let r = WavFileReader::new(cfg, &c)?;
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name(), "out");
    assert_eq!(ports[0].format.sample_rate, RATE);
    Ok(r)
}

/// Read blocks of `block` frames through the allocation-checking guard the host uses.
fn read_blocks(
    r: &mut WavFileReader,
    channels: usize,
    block: usize,
    max_blocks: usize,
) -> (Vec<f32>, Vec<(u32, ReadStatus)>) {
    let mut buf = vec![0.0f32; block * channels];
    let mut all = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..max_blocks {
        let mut out = output(&mut buf, channels as u32);
        let status =
            audio_call("read", || r.read(&mut out)).expect("read succeeds without allocating");
        all.extend_from_slice(out.samples());
        statuses.push((out.frames(), status));
        if status == ReadStatus::Finished {
            break;
        }
    }
    (all, statuses)
}

#[test]
fn reads_int16_exactly_and_round_trips_through_the_writer() {
    let dir = TempDir::new("roundtrip");
    let src = dir.path("in.wav");
    let values: Vec<i32> = (0..400).map(|i| ((i * 331) % 65536) - 32768).collect();
    let mut values = values;
    values[0] = -32768;
    values[1] = 32767;
    write_fixture(&src, int_spec(2, 16, RATE), &values);

    let mut r = open_reader(&dir, r#""path": "in.wav""#).unwrap();
    assert_eq!(r.length_frames(), Some(200));
    let (samples, statuses) = read_blocks(&mut r, 2, 64, 100);
    assert_eq!(
        statuses,
        vec![
            (64, ReadStatus::More),
            (64, ReadStatus::More),
            (64, ReadStatus::More),
            (8, ReadStatus::Finished)
        ]
    );
    let want: Vec<f32> = values.iter().map(|v| *v as f32 / 32768.0).collect();
    assert_eq!(samples, want);
    assert_eq!(samples[0], -1.0);

    let out = dir.path("out.wav");
    let mut w = new_writer(&dir, &format!(r#""path": {}"#, json_path(&out)), 2).unwrap();
    write_block(&mut w, &samples, 2);
    w.finalize().unwrap();
    let (_, got, _) = read_all(&out);
    assert_eq!(
        got,
        values.iter().map(|v| i64::from(*v)).collect::<Vec<_>>()
    );
}

#[test]
fn reads_8_24_32_bit_integers_and_float() {
    let dir = TempDir::new("depths");
    for (bits, values, scale) in [
        (8u16, vec![-128, 127, 0, 5], 128.0f64),
        (24, vec![-8_388_608, 8_388_607, 0, 12_345], 8_388_608.0),
        (32, vec![i32::MIN, 1 << 30, 0, -256], 2_147_483_648.0),
    ] {
        let name = format!("int{bits}.wav");
        write_fixture(&dir.path(&name), int_spec(1, bits, RATE), &values);
        let mut r = open_reader(&dir, &format!(r#""path": "{name}""#)).unwrap();
        let (got, _) = read_blocks(&mut r, 1, 16, 10);
        let want: Vec<f32> = values
            .iter()
            .map(|v| (f64::from(*v) / scale) as f32)
            .collect();
        assert_eq!(got, want, "{bits}-bit");
    }
    let spec = WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 32,
        sample_format: HoundFormat::Float,
    };
    let mut w = hound::WavWriter::create(dir.path("float.wav"), spec).unwrap();
    for s in [0.5f32, -1.25, 3.0] {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    let mut r = open_reader(&dir, r#""path": "float.wav""#).unwrap();
    assert_eq!(read_blocks(&mut r, 1, 16, 10).0, vec![0.5, -1.25, 3.0]);
}

/// Files larger than the read buffer, in every width, read in blocks of an odd size: samples
/// that the buffer's end splits (24-bit samples never fit it whole) come out exactly as hound
/// reads them one by one.
#[test]
fn samples_split_by_the_read_buffer_are_read_exactly() {
    let dir = TempDir::new("split");
    for (bits, channels) in [(8u16, 1u16), (16, 2), (24, 2), (24, 3), (32, 1)] {
        let max = (1i64 << (bits - 1)) - 1;
        let n = 3 * super::reader::RAW_BUFFER / usize::from(bits / 8) + 7;
        let values: Vec<i32> = (0..n as i64)
            .map(|i| ((i * 7919 + 13) % (2 * max + 1) - max) as i32)
            .collect();
        let values = &values[..n / usize::from(channels) * usize::from(channels)];
        let name = format!("big{bits}x{channels}.wav");
        write_fixture(&dir.path(&name), int_spec(channels, bits, RATE), values);
        let want: Vec<f32> = hound::WavReader::open(dir.path(&name))
            .unwrap()
            .samples::<i32>()
            .map(|s| (f64::from(s.unwrap()) / (max + 1) as f64) as f32)
            .collect();
        let mut r = open_reader(&dir, &format!(r#""path": "{name}""#)).unwrap();
        let (got, _) = read_blocks(&mut r, usize::from(channels), 999, 10_000);
        assert_eq!(got.len(), want.len(), "{bits}-bit x {channels}");
        assert!(got == want, "{bits}-bit x {channels}: samples differ");
    }
}

#[test]
fn loops_seamlessly_with_24_bit_samples_in_4_byte_containers() {
    let dir = TempDir::new("loop");
    let values: Vec<i32> = (0..100).map(|i| i * 1000 - 50_000).collect();
    let path = dir.path("loop.wav");
    // 24 valid bits in 4-byte containers: hound's own seek gets these wrong.
    let spec = hound::WavSpecEx {
        spec: int_spec(1, 24, RATE),
        bytes_per_sample: 4,
    };
    let mut w = hound::WavWriter::new_with_spec_ex(fs::File::create(&path).unwrap(), spec).unwrap();
    for v in &values {
        w.write_sample(*v).unwrap();
    }
    w.finalize().unwrap();
    assert!(
        fs::metadata(&path).unwrap().len() >= 400,
        "4 bytes per sample"
    );

    let mut r = open_reader(&dir, r#""path": "loop.wav", "loop": true"#).unwrap();
    assert_eq!(r.length_frames(), None);
    let (got, statuses) = read_blocks(&mut r, 1, 64, 5);
    assert!(statuses.iter().all(|s| *s == (64, ReadStatus::More)));
    for (k, s) in got.iter().enumerate() {
        assert_eq!(*s, values[k % 100] as f32 / 8_388_608.0, "frame {k}");
    }
}

#[test]
fn reader_stats_count_the_data_bytes_read_every_loop_included() {
    let dir = TempDir::new("stats-reader");
    write_fixture(&dir.path("in.wav"), int_spec(2, 16, RATE), &[7; 400]);
    let mut r = open_reader(&dir, r#""path": "in.wav""#).unwrap();
    assert_eq!(stats(&r), [("bytes_read", 0)]);
    read_blocks(&mut r, 2, 64, 1);
    assert_eq!(stats(&r), [("bytes_read", 64 * 4)]);
    let (_, statuses) = read_blocks(&mut r, 2, 64, 100);
    assert_eq!(statuses.last(), Some(&(8, ReadStatus::Finished)));
    assert_eq!(stats(&r), [("bytes_read", 200 * 4)]);

    // Read through hound (24-bit samples in 4-byte containers), looping: 320 frames of a
    // 100-frame file, 4 bytes each as stored.
    let spec = hound::WavSpecEx {
        spec: int_spec(1, 24, RATE),
        bytes_per_sample: 4,
    };
    let path = dir.path("loop.wav");
    let mut w = hound::WavWriter::new_with_spec_ex(fs::File::create(&path).unwrap(), spec).unwrap();
    for v in 0..100 {
        w.write_sample(v).unwrap();
    }
    w.finalize().unwrap();
    let mut r = open_reader(&dir, r#""path": "loop.wav", "loop": true"#).unwrap();
    read_blocks(&mut r, 1, 64, 5);
    assert_eq!(stats(&r), [("bytes_read", 320 * 4)]);
}

#[test]
fn a_file_at_another_rate_is_offered_at_its_own_rate() {
    // The host, not the reader, asks for a `resample` stage behind it (see the host's validation).
    let dir = TempDir::new("rate");
    write_fixture(&dir.path("cd.wav"), int_spec(2, 16, 44_100), &[0, 0]);
    let cfg = parse_config(r#"{"path": "cd.wav"}"#).unwrap();
    let ports =
        WavFileReader::outputs(&cfg, &ctx(dir.base(), &[]).get()).expect("a 44.1 kHz file opens");
    assert_eq!(ports[0].format.sample_rate, 44_100);
    assert_eq!(ports[0].format.channels, 2);
}

#[test]
fn missing_invalid_and_truncated_files() {
    let dir = TempDir::new("bad");
    let e = open_reader(&dir, r#""path": "nope.wav""#).err().unwrap();
    assert_eq!(e.key(), Some("path"));
    assert!(
        e.message()
            .contains(&dir.path("nope.wav").display().to_string()),
        "{e}"
    );

    fs::write(dir.path("text.wav"), b"this is not audio at all").unwrap();
    let e = open_reader(&dir, r#""path": "text.wav""#).err().unwrap();
    assert_eq!(e.key(), Some("path"));
    assert!(e.message().contains("not a valid WAV"), "{e}");

    let path = dir.path("cut.wav");
    write_fixture(&path, int_spec(1, 16, RATE), &[1; 1000]);
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 1001)
        .unwrap();
    let mut r = open_reader(&dir, r#""path": "cut.wav""#).unwrap();
    let mut buf = [0.0f32; 1000];
    let mut out = output(&mut buf, 1);
    let e = r.read(&mut out).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(e.message().contains("truncated"), "{e}");
}

#[test]
fn integer_rounding_is_half_away_from_zero_exactly_like_f32_round() {
    // The encoder rounds in f32 without calling `round`; it must agree with `(x * 2^15).round()`
    // everywhere, the half-LSB edges included.
    let lsb = 1.0 / 32768.0f32;
    let mut edges = vec![0.5 * lsb, -0.5 * lsb, 1.5 * lsb, -1.5 * lsb, 0.0, -0.0];
    edges.extend([
        0.49999997 * lsb,
        -0.49999997 * lsb,
        32766.5 * lsb,
        -32767.5 * lsb,
    ]);
    // And a spread of ordinary values (a simple LCG, deterministic).
    let mut state = 12345u32;
    for _ in 0..100_000 {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        edges.push((state as f32 / u32::MAX as f32) * 2.2 - 1.1);
    }
    let mut buf = vec![0u8; edges.len() * 2];
    let n = encode_slice(SampleFormat::Pcm16, &edges, &mut buf);
    assert_eq!(n, edges.len() * 2);
    for (x, b) in edges.iter().zip(buf.chunks_exact(2)) {
        let want = (x * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16;
        assert_eq!(i16::from_le_bytes([b[0], b[1]]), want, "x = {x:e}");
    }
    let mut buf = vec![0u8; edges.len() * 3];
    encode_slice(SampleFormat::Pcm24, &edges, &mut buf);
    for (x, b) in edges.iter().zip(buf.chunks_exact(3)) {
        let want = (x * 8_388_608.0).round().clamp(-8_388_608.0, 8_388_607.0) as i32;
        assert_eq!(
            i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8,
            want,
            "x = {x:e}"
        );
    }
}

// ---- special files and symlinks ----

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}

/// `f` on another thread; panics if it has not returned within a second (it would block).
fn within_a_second<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if tx.send(f()).is_err() {
            // The test stopped waiting (its second passed) and has failed on that already.
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(1))
        .expect("returned within a second instead of blocking")
}

fn check_writer(dir: &TempDir, json: &str) -> PluginResult<()> {
    let cfg = parse_config(&format!("{{{json}}}"))?;
    WavWriter::check(&cfg, &ctx(dir.base(), &input(1)).get())
}

#[test]
fn a_fifo_is_refused_by_reader_and_writer_without_blocking() {
    let dir = TempDir::new("fifo");
    let fifo = dir.path("pipe.wav");
    mkfifo(&fifo);
    let base = dir.base().to_string();
    // The reader, in validation (outputs) and construction alike.
    let e = within_a_second(move || {
        let cfg: crate::WavReaderConfig = parse_config(r#"{"path": "pipe.wav"}"#).unwrap();
        WavFileReader::outputs(&cfg, &ctx(&base, &[]).get()).unwrap_err()
    });
    assert_eq!(e.key(), Some("path"));
    assert!(e.message().contains("FIFO"), "{e}");
    // The writer's check, with and without overwrite, and its constructor.
    for extra in ["", r#", "overwrite": true"#, r#", "follow_symlinks": true"#] {
        let e = check_writer(&dir, &format!(r#""path": "pipe.wav"{extra}"#)).unwrap_err();
        assert_eq!(e.key(), Some("path"), "{extra}");
        assert!(e.message().contains("FIFO"), "{extra}: {e}");
    }
    let base = dir.base().to_string();
    let e = within_a_second(move || {
        let cfg = parse_config(r#"{"path": "pipe.wav", "overwrite": true}"#).unwrap();
        WavWriter::new(cfg, &ctx(&base, &input(1)).get())
            .err()
            .unwrap()
    });
    assert_eq!(e.key(), Some("path"));
    assert!(e.message().contains("FIFO"), "{e}");
    assert!(rustix::fs::stat(&fifo).is_ok(), "the FIFO is left alone");
}

#[test]
fn devices_folders_and_proc_files_are_not_regular_files() {
    let dir = TempDir::new("special");
    for (path, words) in [
        ("/dev/null", "character device"),
        ("/proc/self/status", "procfs"),
        ("/proc/uptime", "procfs"),
    ] {
        let reader = format!(r#""path": "{path}""#);
        let e = open_reader(&dir, &reader).err().unwrap();
        assert_eq!(e.key(), Some("path"), "{path}");
        assert!(e.message().contains(words), "{path}: {e}");
        let e = check_writer(&dir, &format!(r#""path": "{path}", "overwrite": true"#)).unwrap_err();
        assert_eq!(e.key(), Some("path"), "{path}");
        assert!(e.message().contains(words), "{path}: {e}");
        let e = new_writer(&dir, &format!(r#""path": "{path}", "overwrite": true"#), 1)
            .err()
            .unwrap();
        assert_eq!(e.key(), Some("path"), "{path}");
    }
    fs::create_dir(dir.path("folder.wav")).unwrap();
    let e = open_reader(&dir, r#""path": "folder.wav""#).err().unwrap();
    assert_eq!(e.key(), Some("path"));
    assert!(e.message().contains("folder"), "{e}");
}

#[test]
fn writer_refuses_a_symlink_unless_follow_symlinks_and_never_replaces_its_target() {
    let dir = TempDir::new("symlink");
    let target = dir.path("precious.wav");
    fs::write(&target, b"a past recording").unwrap();
    std::os::unix::fs::symlink(&target, dir.path("link.wav")).unwrap();

    for extra in ["", r#", "overwrite": true"#] {
        let e = check_writer(&dir, &format!(r#""path": "link.wav"{extra}"#)).unwrap_err();
        assert_eq!(e.key(), Some("path"));
        assert!(e.message().contains("symbolic link"), "{e}");
        assert!(e.message().contains("follow_symlinks = true"), "{e}");
        let e = new_writer(&dir, &format!(r#""path": "link.wav"{extra}"#), 1)
            .err()
            .unwrap();
        assert_eq!(e.key(), Some("path"));
        assert!(e.message().contains("symbolic link"), "{e}");
    }
    assert_eq!(fs::read(&target).unwrap(), b"a past recording");
    assert!(fs::symlink_metadata(dir.path("link.wav"))
        .unwrap()
        .file_type()
        .is_symlink());

    // Allowed: the target is written, the link stays.
    let json = r#""path": "link.wav", "overwrite": true, "follow_symlinks": true"#;
    check_writer(&dir, json).unwrap();
    let mut w = new_writer(&dir, json, 1).unwrap();
    write_block(&mut w, &[0.5; 10], 1);
    w.finalize().unwrap();
    assert_eq!(read_all(&target).1.len(), 10);
    assert!(fs::symlink_metadata(dir.path("link.wav"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_dangling_symlink_is_refused_by_reader_and_writer() {
    let dir = TempDir::new("dangling");
    std::os::unix::fs::symlink(dir.path("gone.wav"), dir.path("link.wav")).unwrap();
    let e = open_reader(&dir, r#""path": "link.wav""#).err().unwrap();
    assert_eq!(e.key(), Some("path"));
    assert!(e.message().contains("does not exist"), "{e}");
    for extra in ["", r#", "overwrite": true, "follow_symlinks": true"#] {
        let e = check_writer(&dir, &format!(r#""path": "link.wav"{extra}"#)).unwrap_err();
        assert_eq!(e.key(), Some("path"));
        assert!(e.message().contains("does not exist"), "{e}");
    }
    assert!(!dir.path("gone.wav").exists());
}

#[test]
fn reader_follows_a_symlink_to_a_wav_file() {
    let dir = TempDir::new("reader-link");
    write_fixture(&dir.path("real.wav"), int_spec(1, 16, RATE), &[100; 48]);
    std::os::unix::fs::symlink(dir.path("real.wav"), dir.path("link.wav")).unwrap();
    let mut r = open_reader(&dir, r#""path": "link.wav""#).unwrap();
    let (samples, _) = read_blocks(&mut r, 1, 480, 2);
    assert_eq!(samples.len(), 48);
}

/// The f32 quantizer gives, for every one of the 2^32 f32 bit patterns (NaNs, infinities,
/// subnormals included), the same pcm16 and pcm24 bytes as rounding `x * 2^(N-1)` half away
/// from zero in f64 and clamping, as the writer did before; pcm32 on a dense sample.
mod quantize_is_exact {
    use crate::convert::encode::encode_slice;
    use crate::writer::SampleFormat;

    fn reference(x: f32, scale: f64, lo: i64, hi: i64) -> i64 {
        let v = f64::from(x) * scale;
        ((v + 0.5f64.copysign(v)) as i64).clamp(lo, hi)
    }

    fn encoded<const W: usize>(format: SampleFormat, x: f32) -> [u8; W] {
        let mut out = [0u8; W];
        assert_eq!(encode_slice(format, &[x], &mut out), W);
        out
    }

    /// Every f32 from `from` to `to`, in batches through the writer's own slice encoder.
    fn check_range(from: u32, to: u32) {
        const BATCH: u32 = 1 << 16;
        let mut xs = vec![0f32; BATCH as usize];
        let (mut b16, mut b24) = (vec![0u8; 2 * BATCH as usize], vec![0u8; 3 * BATCH as usize]);
        let mut start = from;
        loop {
            let n = (to - start).min(BATCH - 1) + 1;
            for (i, x) in xs[..n as usize].iter_mut().enumerate() {
                *x = f32::from_bits(start + i as u32);
            }
            let xs = &xs[..n as usize];
            encode_slice(SampleFormat::Pcm16, xs, &mut b16);
            encode_slice(SampleFormat::Pcm24, xs, &mut b24);
            for (i, &x) in xs.iter().enumerate() {
                let want16 = (reference(x, 32_768.0, -32_768, 32_767) as i16).to_le_bytes();
                let want24 =
                    (reference(x, 8_388_608.0, -8_388_608, 8_388_607) as i32).to_le_bytes();
                let bits = x.to_bits();
                assert_eq!(b16[2 * i..2 * i + 2], want16, "pcm16 of {x:e} ({bits:#x})");
                assert_eq!(
                    b24[3 * i..3 * i + 3],
                    want24[..3],
                    "pcm24 of {x:e} ({bits:#x})"
                );
            }
            if to - start < BATCH {
                break;
            }
            start += BATCH;
        }
    }

    #[test]
    fn pcm16_and_pcm24_for_every_f32() {
        // Two halves on two threads (the test profile optimises this crate: see Cargo.toml).
        let half = std::thread::spawn(|| check_range(0x8000_0000, u32::MAX));
        check_range(0, 0x7fff_ffff);
        half.join().unwrap();
    }

    #[test]
    fn pcm32_on_a_dense_sample() {
        for i in 0..=1_000_000u32 {
            let x = f32::from_bits(i.wrapping_mul(4_294_967_291 / 1_000_000 + 1));
            for x in [x, -x, (i as f32) / 1e6, -(i as f32) / 1e6] {
                let want = reference(x, 2_147_483_648.0, -2_147_483_648, 2_147_483_647) as i32;
                assert_eq!(
                    encoded::<4>(SampleFormat::Pcm32, x),
                    want.to_le_bytes(),
                    "pcm32 of {x:e}"
                );
            }
        }
    }
}
