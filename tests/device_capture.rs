//! `cpal-capture` on the real cpal + ALSA path, without a sound card: the ALSA configuration in
//! tests/alsa/ adds `tapeline_test`, ALSA's `file` device over `null`, which captures the raw
//! file named by TAPELINE_TEST_INFILE. A ramp goes in; the WAV that comes out must hold the same
//! samples, one for one.
//!
//! - a plain file: an unpaced device (ALSA reads it as fast as it is asked), opened in exactly
//!   the file's format (no `plug`, so nothing converts), stopped after `frames`;
//! - a FIFO fed in real time: a paced device, like a sound card;
//! - the FIFO's writer pausing: the device delivers nothing, `timeout_ms` declares it lost, the
//!   host's restart policy rebuilds the stage, and the outage comes out as a counted gap of
//!   silence of the right length.
//!
//! Needs ALSA's library and configuration (`libasound2-dev` brings both; scripts/test.sh
//! installs it) and `mkfifo`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use tapeline_tests::{
    code, kill_and_reap, remove_file, stderr, stdout, summary_stage, tapeline_bin, workspace_root,
    TempDir,
};

const ALSA_SYSTEM_CONF: &str = "/usr/share/alsa/alsa.conf";

/// Fail (not skip) when ALSA's configuration is missing.
fn require_alsa() {
    assert!(
        Path::new(ALSA_SYSTEM_CONF).is_file(),
        "{ALSA_SYSTEM_CONF} is missing: ALSA is not installed. Run `bash scripts/test.sh` \
         (as root it installs libasound2-dev, which brings ALSA's library and configuration)"
    );
}

fn alsa_conf() -> PathBuf {
    workspace_root().join("tests/alsa/tapeline-test.conf")
}

/// `tapeline ARGS` with the test ALSA configuration, capturing from `infile`.
fn tapeline(infile: &Path, args: &[&str]) -> Output {
    require_alsa();
    Command::new(tapeline_bin())
        .args(args)
        .env("ALSA_CONFIG_PATH", alsa_conf())
        .env("TAPELINE_TEST_INFILE", infile)
        .env_remove(tapeline::plugins::PLUGIN_PATH_ENV)
        .env_remove("RUST_LOG")
        .output()
        .expect("tapeline runs")
}

/// Write `toml` as a pipeline in `dir`, run it, return the output and the summary.
fn run_pipeline(dir: &TempDir, infile: &Path, toml: &str) -> (Output, Value) {
    let pipeline = dir.path().join("p.toml");
    std::fs::write(&pipeline, toml).unwrap();
    let sum = dir.path().join("summary.json");
    let out = tapeline(
        infile,
        &[
            "run",
            "-q",
            pipeline.to_str().unwrap(),
            "--summary-json",
            sum.to_str().unwrap(),
        ],
    );
    let summary = std::fs::read_to_string(&sum)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    (out, summary)
}

/// The i16 stereo ramp: frame `i`, channel `c` is `(2i + c) mod 65536 - 32768`.
fn ramp16(i: u64, c: u64) -> i16 {
    (((2 * i + c) % 65_536) as i32 - 32_768) as i16
}

fn ramp16_bytes(from: u64, frames: u64) -> Vec<u8> {
    (from..from + frames)
        .flat_map(|i| [ramp16(i, 0), ramp16(i, 1)])
        .flat_map(i16::to_le_bytes)
        .collect()
}

fn wav_i32(path: &Path) -> (hound::WavSpec, Vec<i32>) {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    (spec, r.samples::<i32>().map(|s| s.unwrap()).collect())
}

/// Index of the first sample that differs, with both values.
fn first_difference(got: &[i32], want: impl Iterator<Item = i32>) -> Option<(usize, i32, i32)> {
    got.iter()
        .zip(want)
        .enumerate()
        .find(|(_, (g, w))| *g != w)
        .map(|(i, (g, w))| (i, *g, w))
}

fn stereo_i16_pipeline(frames: u64, extra: &str) -> String {
    format!(
        r#"version = 1
[pipeline]
sample_rate = 48000
block_frames = 480

[capture.dev]
plugin = "cpal-capture"
device = "tapeline_test"
channels = 2
sample_rate = 48000
sample_format = "i16"
frames = {frames}
{extra}

[storage.out]
plugin = "wav-writer"
inputs = ["dev"]
path = "out.wav"
format = "pcm16"
buffer = {{ capacity_blocks = 64, when_full = "block" }}
"#
    )
}

#[test]
fn an_unpaced_file_device_delivers_the_ramp_sample_for_sample() {
    let dir = TempDir::new("devcap-file");
    let raw = dir.path().join("ramp.raw");
    std::fs::write(&raw, ramp16_bytes(0, 96_000)).unwrap();
    // The ring holds all 48000 frames: the unpaced device outruns the pipeline, and what does
    // not fit would be dropped (as a counted gap, see the next test).
    let (out, s) = run_pipeline(&dir, &raw, &stereo_i16_pipeline(48_000, "buffer_ms = 2000"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let (spec, got) = wav_i32(&dir.path().join("out.wav"));
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 48_000, 16)
    );
    assert_eq!(got.len(), 96_000, "48000 stereo frames");
    let want = (0..48_000u64).flat_map(|i| [ramp16(i, 0) as i32, ramp16(i, 1) as i32]);
    assert_eq!(first_difference(&got, want), None, "sample differs");

    let dev = summary_stage(&s, "dev");
    assert_eq!(dev["frames_out"], 48_000, "{dev:#}");
    assert_eq!(dev["gaps"], 0, "{dev:#}");
    assert_eq!(s["storage"][0]["frames_written"], 48_000);
}

#[test]
fn with_gap_skip_lost_frames_are_counted_and_no_silence_is_inserted() {
    let dir = TempDir::new("devcap-skip");
    let raw = dir.path().join("ramp.raw");
    std::fs::write(&raw, ramp16_bytes(0, 96_000)).unwrap();
    // The same 20 ms ring behind the unpaced device, but gaps are skipped, not filled.
    let pipeline = stereo_i16_pipeline(24_000, "buffer_ms = 20\ngap = \"skip\"");
    let (out, s) = run_pipeline(&dir, &raw, &pipeline);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let dev = summary_stage(&s, "dev");
    assert_eq!(dev["gaps"], 0, "the host inserted nothing: {dev:#}");
    assert_eq!(dev["gap_frames"], 0, "{dev:#}");
    assert_eq!(dev["frames_out"], 24_000, "{dev:#}");
    // What was skipped is counted, in the warning the stage gives when it stops.
    let warning = s["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["stage"] == "dev")
        .filter_map(|e| e["message"].as_str())
        .find(|m| m.contains("skipped"))
        .unwrap_or_else(|| panic!("no skip count in {:#}", s["errors"]))
        .to_string();
    let skipped: u64 = warning
        .rsplit("skipped (gap = \"skip\"): ")
        .next()
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in: {warning}"));
    assert!(skipped > 0, "{warning}");
    // Every frame in the file is device audio (a ramp frame: right = left + 1), no silence.
    let (_, got) = wav_i32(&dir.path().join("out.wav"));
    assert_eq!(got.len(), 2 * 24_000);
    for (i, f) in got.chunks_exact(2).enumerate() {
        assert_eq!(
            f[1] as i16,
            (f[0] as i16).wrapping_add(1),
            "frame {i} is not device audio: {f:?}"
        );
    }
}

#[test]
fn frames_that_do_not_fit_the_ring_become_counted_gaps_at_their_place() {
    let dir = TempDir::new("devcap-overflow");
    let raw = dir.path().join("ramp.raw");
    std::fs::write(&raw, ramp16_bytes(0, 96_000)).unwrap();
    // A 20 ms ring behind an unpaced device: most frames are dropped.
    let (out, s) = run_pipeline(&dir, &raw, &stereo_i16_pipeline(96_000, "buffer_ms = 20"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let dev = summary_stage(&s, "dev");
    let gaps = dev["gaps"].as_u64().unwrap();
    let gap_frames = dev["gap_frames"].as_u64().unwrap();
    let frames_out = dev["frames_out"].as_u64().unwrap();
    assert!(gaps > 0 && gap_frames > 0, "{dev:#}");
    // The timeline is complete: audio plus silence is exactly `frames`.
    assert_eq!(frames_out + gap_frames, 96_000, "{dev:#}");
    // The drops are reported (as the stage's warning on stop).
    let warned =
        s["errors"].as_array().unwrap().iter().any(|e| {
            e["stage"] == "dev" && e["message"].as_str().unwrap().contains("ring overflows")
        });
    assert!(warned, "{:#}", s["errors"]);

    // Every frame that was kept sits at its own position: each output frame is either the
    // ramp's frame at that position or gap silence.
    let (_, got) = wav_i32(&dir.path().join("out.wav"));
    assert_eq!(got.len(), 2 * 96_000);
    let mut kept = 0u64;
    for (i, f) in got.chunks_exact(2).enumerate() {
        let want = [ramp16(i as u64, 0) as i32, ramp16(i as u64, 1) as i32];
        if f == want {
            kept += 1;
        } else {
            assert_eq!(f, [0, 0], "frame {i} is neither the ramp nor gap silence");
        }
    }
    assert!(kept >= frames_out, "kept {kept}, delivered {frames_out}");
}

#[test]
fn a_mono_i32_device_defaults_to_the_pipeline_rate_and_converts_exactly() {
    let dir = TempDir::new("devcap-i32");
    let raw = dir.path().join("ramp32.raw");
    // 24-bit values in the top bits of i32, so f32 and a 24-bit WAV hold them exactly.
    let value = |i: u64| ((i * 97) % (1 << 24)) as i32 - (1 << 23);
    let bytes: Vec<u8> = (0..30_000u64)
        .flat_map(|i| (value(i) << 8).to_le_bytes())
        .collect();
    std::fs::write(&raw, bytes).unwrap();
    // No `sample_rate`: the device supports the pipeline's 44100 Hz, so that is what it opens.
    let (out, s) = run_pipeline(
        &dir,
        &raw,
        r#"version = 1
[pipeline]
sample_rate = 44100

[capture.dev]
plugin = "cpal-capture"
device = "tapeline_test"
channels = 1
sample_format = "i32"
frames = 22050
buffer_ms = 2000

[storage.out]
plugin = "wav-writer"
inputs = ["dev"]
path = "out.wav"
format = "pcm24"
buffer = { capacity_blocks = 64, when_full = "block" }
"#,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (spec, got) = wav_i32(&dir.path().join("out.wav"));
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (1, 44_100, 24)
    );
    assert_eq!(got.len(), 22_050);
    assert_eq!(first_difference(&got, (0..22_050).map(value)), None);
    assert_eq!(summary_stage(&s, "dev")["gaps"], 0);
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs (coreutils; run scripts/test.sh on a Debian/Ubuntu machine)");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Feed the ramp into `fifo` in real time, 10 ms at a time, from frame 0 for `frames` frames,
/// pausing `pause` once `pause_at` frames are written. Opens the FIFO read-write so neither
/// side's open blocks on the other.
fn feed(fifo: PathBuf, frames: u64, pause_at: u64, pause: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .expect("open the FIFO");
        let chunk = 480u64;
        let start = Instant::now();
        let mut paused = Duration::ZERO;
        let mut i = 0;
        while i < frames {
            if i == pause_at && !pause.is_zero() {
                std::thread::sleep(pause);
                paused = pause;
            }
            let due = start + paused + Duration::from_micros(i * 1_000_000 / 48_000);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let n = chunk.min(frames - i);
            if f.write_all(&ramp16_bytes(i, n)).is_err() {
                return;
            }
            i += n;
        }
        // Keep the FIFO open a little so the reader never sees its end mid-block.
        std::thread::sleep(Duration::from_millis(300));
    })
}

/// One second of the ramp fed in real time through a FIFO to the paced device, with `extra`
/// in the capture's table: the run ends cleanly and the WAV holds the ramp sample for sample.
/// Returns how long the run took and its summary.
fn paced_ramp_run(name: &str, extra: &str) -> (Duration, Value) {
    let dir = TempDir::new(name);
    let fifo = dir.path().join("ramp.fifo");
    mkfifo(&fifo);
    let writer = feed(fifo.clone(), 60_000, 0, Duration::ZERO);
    let started = Instant::now();
    // Wake-up jitter of the feeding thread is not an xrun: a high threshold.
    let keys = format!("period_frames = 240\nxrun_threshold_ms = 1000\n{extra}");
    let (out, s) = run_pipeline(&dir, &fifo, &stereo_i16_pipeline(48_000, &keys));
    let took = started.elapsed();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    finish_feeding(&fifo, writer);
    let (_, got) = wav_i32(&dir.path().join("out.wav"));
    assert_eq!(got.len(), 96_000);
    let want = (0..48_000u64).flat_map(|i| [ramp16(i, 0) as i32, ramp16(i, 1) as i32]);
    assert_eq!(first_difference(&got, want), None, "sample differs");
    assert_eq!(summary_stage(&s, "dev")["gaps"], 0);
    (took, s)
}

#[test]
fn a_fifo_fed_in_real_time_is_a_paced_device_and_arrives_intact() {
    let (took, _) = paced_ramp_run("devcap-fifo", "");
    assert!(
        took >= Duration::from_millis(900),
        "one second of audio in {took:?}: not paced"
    );
}

/// The same paced device with the capture isolated (`isolate = true`): the device and its
/// callback thread live in the stage's process, which answers one read at a time (a live source
/// keeps one slot in flight), and the ramp arrives intact.
#[test]
fn a_paced_device_in_an_isolated_stage_arrives_intact() {
    let (_, s) = paced_ramp_run("devcap-fifo-isolated", "isolate = true");
    let dev = summary_stage(&s, "dev");
    assert_eq!(dev["isolated"], true, "{dev:#}");
    // Its own counters (xruns, gaps) crossed from the process.
    assert!(dev["stats"].get("xruns_detected").is_some(), "{dev:#}");
}

#[test]
fn a_device_that_goes_silent_is_lost_restarted_and_the_outage_is_a_counted_gap() {
    let dir = TempDir::new("devcap-loss");
    let fifo = dir.path().join("ramp.fifo");
    mkfifo(&fifo);
    // 0.5 s of audio, 1.5 s of nothing, then more audio.
    let pause = Duration::from_millis(1500);
    let writer = feed(fifo.clone(), 96_000, 24_000, pause);
    let (out, s) = run_pipeline(
        &dir,
        &fifo,
        &stereo_i16_pipeline(
            120_000,
            "period_frames = 240\nxrun_threshold_ms = 1000\ntimeout_ms = 300\n\
             on_error = { policy = \"restart\", max_restarts = 20, backoff_ms = 20 }",
        ),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    finish_feeding(&fifo, writer);
    let dev = summary_stage(&s, "dev");
    assert!(dev["restarts"].as_u64().unwrap() >= 1, "{dev:#}");
    assert!(dev["gaps"].as_u64().unwrap() >= 1, "{dev:#}");
    let lost = s["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["stage"] == "dev" && e["kind"] == "device-lost")
        .unwrap_or_else(|| panic!("a device-lost error: {:#}", s["errors"]));
    assert!(
        lost["message"]
            .as_str()
            .unwrap()
            .contains("no audio from the device"),
        "{lost:#}"
    );
    // The gap is the outage: 1.5 s, plus up to a restart cycle (the host notices the device is
    // back only when a restarted instance gets audio: `timeout_ms` plus the backoff).
    let gap = dev["gap_frames"].as_u64().unwrap();
    assert!(
        (1.3 * 48_000.0..2.8 * 48_000.0).contains(&(gap as f64)),
        "gap of {gap} frames for a 1.5 s outage: {dev:#}"
    );
    // Everything before the loss arrived intact, at its place.
    let (_, got) = wav_i32(&dir.path().join("out.wav"));
    assert_eq!(got.len(), 2 * 120_000, "the timeline is complete");
    let want = (0..24_000u64).flat_map(|i| [ramp16(i, 0) as i32, ramp16(i, 1) as i32]);
    assert_eq!(first_difference(&got[..48_000], want), None);
    // After the gap: real audio again, a contiguous run of the ramp (from wherever the feed
    // was when the new instance started reading), up to the end.
    let tail = &got[2 * (24_000 + gap as usize)..];
    assert!(tail.len() >= 2 * 1_000, "audio after the gap: {dev:#}");
    let step_ok = tail
        .chunks_exact(2)
        .collect::<Vec<_>>()
        .windows(2)
        .all(|w| (w[1][0] - w[0][0]).rem_euclid(65_536) == 2 && w[1][1] - w[1][0] == 1);
    assert!(step_ok, "the audio after the gap is a contiguous ramp");
}

/// After a run: read the FIFO empty until the feeding thread is done (it would block on a full
/// FIFO with nobody reading), then join it.
fn finish_feeding(fifo: &Path, writer: std::thread::JoinHandle<()>) {
    let fifo = fifo.to_path_buf();
    let drain = std::thread::spawn(move || {
        use std::io::Read;
        // Does not block: the writer holds the FIFO open. Ends when the writer closes it.
        let mut f = std::fs::File::open(&fifo).expect("open the FIFO to drain it");
        let mut buf = [0u8; 65_536];
        while matches!(f.read(&mut buf), Ok(n) if n > 0) {}
    });
    writer.join().unwrap();
    drain.join().unwrap();
}

#[test]
fn devices_lists_the_test_device_with_an_index_the_plugin_accepts() {
    let out = tapeline(Path::new("/dev/null"), &["devices", "--format", "json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let list: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let test = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "tapeline_test")
        .unwrap_or_else(|| panic!("tapeline_test listed: {list:#}"));
    assert!(
        test["formats"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "i16"),
        "{test:#}"
    );
    assert_eq!(
        list.as_array()
            .unwrap()
            .iter()
            .filter(|d| d["default"] == true)
            .count(),
        1
    );

    // The index it printed selects the same device.
    let dir = TempDir::new("devcap-index");
    let raw = dir.path().join("ramp.raw");
    std::fs::write(&raw, ramp16_bytes(0, 4_800)).unwrap();
    let toml = stereo_i16_pipeline(4_800, "buffer_ms = 2000").replace(
        "device = \"tapeline_test\"",
        &format!("device = \"{}\"", test["index"]),
    );
    let (out, _) = run_pipeline(&dir, &raw, &toml);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (_, got) = wav_i32(&dir.path().join("out.wav"));
    let want = (0..4_800u64).flat_map(|i| [ramp16(i, 0) as i32, ramp16(i, 1) as i32]);
    assert_eq!(first_difference(&got, want), None);
}

#[test]
fn an_unknown_device_is_a_validation_error_naming_the_key() {
    let dir = TempDir::new("devcap-unknown");
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        stereo_i16_pipeline(480, "")
            .replace("channels = 2\nsample_rate = 48000\n", "")
            .replace("tapeline_test", "no-such-device-xyz"),
    )
    .unwrap();
    let out = tapeline(
        Path::new("/dev/null"),
        &["validate", pipeline.to_str().unwrap()],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("no input device matches"), "{text}");
    assert!(
        text.contains("tapeline_test"),
        "lists the devices there are: {text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Device loss on a real audio server: cpal's JACK backend (the `jack` feature of
// tapeline-devices, which this crate turns on) against a throwaway `jackd` with the dummy
// driver, killed with SIGKILL mid-recording and started again a second later.
//
// Needs `jackd` and `jack_lsp` (package `jackd2`) and, to build, libjack's pkg-config file
// (`libjack-jackd2-dev`); scripts/test.sh installs both. The dummy driver's capture ports
// deliver silence, so this checks detection, the gap and the recovery, not the content.

/// The environment every JACK client of a test gets: its own server, and never an automatic
/// server start (a client must not bring up a server of its own while the test's is down).
fn jack_env(cmd: &mut Command, server: &str) {
    cmd.env("JACK_DEFAULT_SERVER", server)
        .env("JACK_NO_START_SERVER", "1")
        .env("JACK_NO_AUDIO_RESERVATION", "1");
}

/// A `jackd -d dummy` of the test's own, under a unique server name so that parallel tests (and
/// a JACK server of the user's) do not collide. Killed and reaped when dropped, whatever
/// happened.
struct JackServer {
    name: String,
    log: PathBuf,
    child: Option<std::process::Child>,
    starts: u32,
}

impl JackServer {
    fn start(dir: &TempDir) -> JackServer {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut server = JackServer {
            name: format!("tapeline_test_{}_{nanos}", std::process::id()),
            log: dir.path().join("jackd.log"),
            child: None,
            starts: 0,
        };
        server.spawn();
        server
    }

    /// Start the server (non-realtime, 48 kHz, 256-frame periods) and wait until a client can
    /// connect.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the JACK server is already running");
        self.starts += 1;
        let log = std::fs::File::create(self.log.with_extension(format!("{}.log", self.starts)))
            .expect("create the jackd log");
        let mut cmd = Command::new("jackd");
        jack_env(&mut cmd, &self.name);
        cmd.args(["-n", &self.name, "--no-realtime", "-d", "dummy"])
            .args(["-r", "48000", "-p", "256"])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run jackd ({e}): the JACK device-loss test needs the JACK server. Run \
                 `bash scripts/test.sh` (as root it installs jackd2 and libjack-jackd2-dev)"
            )
        });
        self.child = Some(child);
        let ready = self.wait_for(Duration::from_secs(10), |ports| {
            ports.iter().any(|p| p == "system:capture_1")
        });
        assert!(ready, "the JACK server did not come up:\n{}", self.logs());
    }

    /// The server's ports (`jack_lsp`), or `None` while no client can connect.
    fn ports(&self) -> Option<Vec<String>> {
        let mut cmd = Command::new("jack_lsp");
        jack_env(&mut cmd, &self.name);
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("cannot run jack_lsp ({e}): run `bash scripts/test.sh` (it installs jackd2)")
        });
        out.status
            .success()
            .then(|| stdout(&out).lines().map(str::to_string).collect())
    }

    /// Poll the ports every 20 ms until `until` holds them (true) or `limit` passes (false).
    /// Fails at once if the server process ended.
    fn wait_for(&mut self, limit: Duration, until: impl Fn(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!("jackd exited ({status}):\n{}", self.logs());
                }
            }
            if self.ports().is_some_and(|p| until(&p)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGKILL, and reap it (a zombie would make the next start say "server already active").
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the JACK server");
            child.wait().expect("reap the JACK server");
        }
    }

    /// SIGTERM (a clean exit removes its shared memory), SIGKILL after 5 s.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        sigterm(&child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_and_reap(&mut child);
    }

    fn logs(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.log.with_extension(format!("{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("--- restarted ---\n")
    }
}

impl Drop for JackServer {
    fn drop(&mut self) {
        self.stop();
        // What a SIGKILLed server leaves behind under its name (the next server start cleans
        // the shared segments themselves).
        if let Ok(entries) = std::fs::read_dir("/dev/shm") {
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                if file.contains(&format!("_{}_", self.name)) {
                    remove_file(&e.path());
                }
            }
        }
    }
}

/// A child process killed and reaped when dropped (a failing test leaves no `tapeline` behind).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        kill_and_reap(&mut self.0);
    }
}

/// SIGTERM to `child`, through kill(1) (std sends only SIGKILL). A failure is noted; the
/// caller waits for the exit either way, and says so if it does not come.
fn sigterm(child: &std::process::Child) {
    match Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
    {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("note: kill -TERM {} failed: {status}", child.id()),
        Err(e) => eprintln!("note: cannot run kill -TERM {}: {e}", child.id()),
    }
}

/// `at_ms` of the first transition `from` -> `to` in the stage's history at or after `after`.
/// The frames a capture's xruns left as gaps (they count in `gap_frames` with the outage), from
/// every count the plugin wrote in `texts` (a failure's reason, a stop warning, the log): each
/// instance's counts once.
fn xrun_gap_frames<'a>(texts: impl IntoIterator<Item = &'a str>) -> u64 {
    const COUNTS: &str = " frames from the device in ";
    const END: &str = " frames); skipped";
    let mut seen = std::collections::BTreeSet::new();
    for text in texts {
        let mut rest = text;
        while let Some(i) = rest.find(COUNTS) {
            let start = rest[..i]
                .rfind(|c: char| !c.is_ascii_digit())
                .map_or(0, |j| j + 1);
            let Some(end) = rest[start..].find(END) else {
                break;
            };
            seen.insert(&rest[start..start + end]);
            rest = &rest[start + end..];
        }
    }
    seen.iter()
        .map(|counts| counts.rsplit('(').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn transition_at(stage: &Value, from: &str, to: &str, after: u64) -> Option<u64> {
    stage["history"].as_array()?.iter().find_map(|h| {
        let at = h["at_ms"].as_u64()?;
        (h["from"] == from && h["to"] == to && at >= after).then_some(at)
    })
}

#[test]
fn a_jack_server_killed_mid_recording_is_a_lost_device_a_counted_gap_and_a_recovery() {
    const RATE: f64 = 48_000.0;
    let dir = TempDir::new("devcap-jack");
    let mut server = JackServer::start(&dir);
    let pipeline = dir.path().join("p.toml");
    // `timeout_ms` is only the fallback: cpal's JACK host reports the server's death through
    // libjack's shutdown callback (`DeviceNotAvailable`) at once. The backoff doubles with
    // every restart (10, 20, 40, ... ms), so the retries while the server is down stay few.
    std::fs::write(
        &pipeline,
        r#"version = 1
[pipeline]
sample_rate = 48000
block_frames = 480

[capture.dev]
plugin = "cpal-capture"
host = "jack"
device = "default"
channels = 2
sample_rate = 48000
timeout_ms = 500
on_error = { policy = "restart", max_restarts = 30, backoff_ms = 10 }

[storage.out]
plugin = "wav-writer"
inputs = ["dev"]
path = "out.wav"
format = "pcm16"
buffer = { capacity_blocks = 64, when_full = "block" }
"#,
    )
    .unwrap();
    let summary = dir.path().join("summary.json");
    let mut cmd = Command::new(tapeline_bin());
    jack_env(&mut cmd, &server.name);
    cmd.args(["run", "-q", pipeline.to_str().unwrap()])
        .args(["--for", "60s", "--summary-json", summary.to_str().unwrap()])
        .env_remove(tapeline::plugins::PLUGIN_PATH_ENV)
        .env_remove("RUST_LOG")
        .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
    let spawned = Instant::now();
    let mut run = Reaped(cmd.spawn().expect("tapeline runs"));
    let ms_since_spawn = |t: Instant| t.duration_since(spawned).as_secs_f64() * 1000.0;
    // cpal's client of this process: `cpal_client_<pid>_in`, ports `in_0`, `in_1`.
    let port = format!("cpal_client_{}_in:in_0", run.0.id());
    let recording = |ports: &[String]| ports.contains(&port);
    let output = |dir: &TempDir| {
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
        format!("stdout:\n{}\nstderr:\n{}", read("stdout"), read("stderr"))
    };

    assert!(
        server.wait_for(Duration::from_secs(15), recording),
        "the capture never connected to the JACK server\n{}",
        output(&dir)
    );
    std::thread::sleep(Duration::from_millis(700));
    let killed = Instant::now();
    server.kill();
    std::thread::sleep(Duration::from_millis(1000));
    let respawned = Instant::now();
    server.spawn();
    let ready = Instant::now();
    assert!(
        server.wait_for(Duration::from_secs(15), recording),
        "the capture did not come back after the server did\n{}",
        output(&dir)
    );
    let recovered = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    // Stop the recording as Ctrl-C would (storage is finalised, the summary written).
    sigterm(&run.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = run.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "tapeline did not stop\n{}",
            output(&dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = spawned.elapsed();
    server.stop();
    assert_eq!(status.code(), Some(0), "{}", output(&dir));
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let dev = summary_stage(&s, "dev");

    // Detected: a device-lost error, and the history running -> failed -> recovering ->
    // running.
    let lost = s["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["stage"] == "dev" && e["kind"] == "device-lost")
        .unwrap_or_else(|| panic!("a device-lost error: {:#}", s["errors"]));
    let why = lost["message"].as_str().unwrap();
    let path = if why.contains("JACK server shut down") {
        "libjack's shutdown callback (cpal: DeviceNotAvailable)"
    } else if why.contains("no audio from the device") {
        "timeout_ms (no audio)"
    } else {
        panic!("an unexpected reason for the loss: {lost:#}")
    };
    let failed_at = transition_at(dev, "running", "failed", 0)
        .unwrap_or_else(|| panic!("running -> failed in the history: {dev:#}"));
    transition_at(dev, "failed", "recovering", failed_at)
        .unwrap_or_else(|| panic!("failed -> recovering: {dev:#}"));
    let resumed_at = transition_at(dev, "recovering", "running", failed_at)
        .unwrap_or_else(|| panic!("recovering -> running: {dev:#}"));
    let stopped_at = transition_at(dev, "running", "stopping", resumed_at)
        .unwrap_or_else(|| panic!("running -> stopping after the recovery: {dev:#}"));
    assert!(
        stopped_at - resumed_at >= 800,
        "recorded for a second after the recovery: {dev:#}"
    );
    // `at_ms` counts from the run's start, a little after the spawn: this slightly
    // underestimates how long the detection took.
    let detection_ms = failed_at as f64 - ms_since_spawn(killed);
    assert!(
        detection_ms < 500.0 + 400.0,
        "the loss took {detection_ms:.0} ms to be noticed: {dev:#}"
    );

    // Counted: restarts (the failed attempts while the server was down included) and the gap.
    let restarts = dev["restarts"].as_u64().unwrap();
    assert!(restarts >= 1, "{dev:#}");
    assert!(dev["gaps"].as_u64().unwrap() >= 1, "{dev:#}");
    // The outage's gap: under load the streams also report xruns, each a gap of its own.
    let log = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
    let reasons = dev["history"].as_array().unwrap().iter();
    let messages = s["errors"].as_array().unwrap().iter();
    let xruns = xrun_gap_frames(
        reasons
            .filter_map(|h| h["reason"].as_str())
            .chain(messages.filter_map(|e| e["message"].as_str()))
            .chain(std::iter::once(log.as_str())),
    );
    let all_gaps = dev["gap_frames"].as_u64().unwrap();
    let gap = (all_gaps - xruns) as f64;
    let gap_ms = gap / RATE * 1000.0;
    // The gap runs from the last audio before the kill to the first audio after the restart.
    // - It is at least the time the server was certainly down (killed until started again),
    //   less 10 ms: the first period's start is estimated from its callback's time.
    // - It is at most: the time until the new server answered, plus the wait for the next
    //   restart attempt after that (the backoff doubles, so that wait is at most the time
    //   since the loss, plus one backoff), plus building the instance and its first period
    //   (0.5 s is generous: about 120 ms here).
    let down_ms = respawned.duration_since(killed).as_secs_f64() * 1000.0;
    let until_ready_ms = ready.duration_since(killed).as_secs_f64() * 1000.0;
    assert!(
        gap_ms >= down_ms - 10.0 && gap_ms <= 2.0 * until_ready_ms + 500.0,
        "a gap of {gap} frames ({gap_ms:.0} ms) for a server down {down_ms:.0} ms (answering \
         again after {until_ready_ms:.0} ms): {dev:#}"
    );
    // And it is the stage's own time away, as its history tells it: from the failure to the
    // restart, plus at most the detection and the new stream's first period.
    let away_ms = (resumed_at - failed_at) as f64;
    assert!(
        (away_ms - 50.0..=away_ms + 300.0).contains(&gap_ms),
        "a gap of {gap_ms:.0} ms, away {away_ms:.0} ms by the history: {dev:#}"
    );

    // The file is valid and holds the whole timeline: the audio plus the gap's silence.
    let frames_out = dev["frames_out"].as_u64().unwrap();
    let (spec, got) = wav_i32(&dir.path().join("out.wav"));
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 48_000, 16)
    );
    assert_eq!(got.len() as u64, 2 * (frames_out + all_gaps), "{dev:#}");
    assert_eq!(s["storage"][0]["frames_written"], frames_out + all_gaps);
    eprintln!(
        "JACK loss: detected by {path} ~{detection_ms:.0} ms after the kill; server down \
         {down_ms:.0} ms (answering after {until_ready_ms:.0} ms); capture back {:.0} ms after \
         the kill; gap {gap} frames = {gap_ms:.0} ms (history: away {away_ms:.0} ms; xruns' gaps \
         {xruns} frames more); restarts {restarts}; {frames_out} frames of audio; test took \
         {took:.1?}",
        recovered.duration_since(killed).as_secs_f64() * 1000.0
    );
}

/// A device given with its channels and rate needs no device to validate (it may be on the
/// machine that runs the pipeline): one that matches nothing here is a warning listing what is
/// here, and validation passes.
#[test]
fn a_device_absent_here_is_a_warning_listing_the_present_ones_when_its_format_is_given() {
    let dir = TempDir::new("devcap-absent");
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        stereo_i16_pipeline(480, "").replace("tapeline_test", "no-such-device-xyz"),
    )
    .unwrap();
    let out = tapeline(
        Path::new("/dev/null"),
        &["validate", pipeline.to_str().unwrap()],
    );
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(code(&out), 0, "{text}");
    assert!(
        text.contains("warning: cpal-capture: no input device here matches `no-such-device-xyz`"),
        "{text}"
    );
    assert!(
        text.contains("tapeline_test"),
        "lists the devices there are: {text}"
    );
}
