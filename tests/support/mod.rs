//! What the workspace-level integration tests share: the built host and plugins, the CLI, and
//! plugin instances made through the real ABI.
//!
//! The first test that needs a binary or a plugin runs `cargo build --workspace` once for the
//! whole test process, in the profile the tests themselves were built with, so the `.so` files
//! under test are always the current ones.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
pub use std::process::Output;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use tapeline::plugins::Registry;
use tapeline_plugin_api::abi::{CaptureBox, ProcessorBox, StorageBox};
use tapeline_plugin_api::abi::{ContextFields, ContextRef};
use tapeline_plugin_api::abi_stable::std_types::{RSlice, RSliceMut, RStr};
use tapeline_plugin_api::{InputBlock, OutputBlock, PluginError, PortFormat};

/// The sample rate every helper here runs at.
pub const SAMPLE_RATE: u32 = 48_000;
/// Frames per block the helpers use.
pub const BLOCK_FRAMES: u32 = 480;

/// The workspace root (the folder holding the workspace `Cargo.toml`).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent folder")
}

/// The cargo that runs these tests (`CARGO` is set by `cargo test`), else `cargo` on PATH.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// Where cargo put this test binary's profile: `target/debug` or `target/release`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The cargo target folder (`target/`).
pub fn target_dir() -> PathBuf {
    profile_dir()
        .parent()
        .expect("the profile folder is inside the target folder")
        .to_path_buf()
}

/// Build the host and every plugin of the workspace, once per test process. Cargo's output is
/// shown only if the build fails.
pub fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut cmd = cargo();
        cmd.args(["build", "--workspace", "--quiet"]);
        if profile_dir().file_name() == Some(OsStr::new("release")) {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("cargo runs");
        assert!(
            out.status.success(),
            "cargo build --workspace failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// The folder the built plugins are in (the host's own folder, where it looks by default).
pub fn plugin_dir() -> PathBuf {
    ensure_built();
    profile_dir()
}

/// The built `tapeline` binary.
pub fn tapeline_bin() -> PathBuf {
    ensure_built();
    profile_dir().join(format!("tapeline{}", std::env::consts::EXE_SUFFIX))
}

/// Run `tapeline` with `args`. Plugins come from its own folder and `--plugin-dir` only:
/// `TAPELINE_PLUGIN_PATH` and `RUST_LOG` of the caller are cleared.
pub fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(tapeline_bin())
        .args(args)
        .env_remove(tapeline::plugins::PLUGIN_PATH_ENV)
        .env_remove("RUST_LOG")
        .output()
        .expect("tapeline runs")
}

/// The exit code; panics if the process was killed by a signal, or if the host reported an
/// internal error (a state transition its own table refuses: always a bug).
pub fn code(out: &Output) -> i32 {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("internal error:"),
        "the host reported internal errors:\n{err}"
    );
    out.status
        .code()
        .unwrap_or_else(|| panic!("tapeline was killed: {:?}", out.status))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The file name cargo gives the `cdylib` of a lib target named `lib_name` on this platform.
pub fn library_file_name(lib_name: &str) -> String {
    format!(
        "{}{lib_name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// Every plugin in the built plugin folder, loaded through the real ABI.
pub fn registry() -> Registry {
    Registry::discover(&[plugin_dir()])
}

/// A fresh stage id, so that plugins keeping per-stage state (the mocks) never see two tests as
/// one stage.
pub fn unique_stage_id(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A stage context at [`SAMPLE_RATE`] and [`BLOCK_FRAMES`] with the given input formats.
pub fn context<'a>(stage_id: &'a str, inputs: &'a [PortFormat]) -> ContextFields<'a> {
    ContextFields {
        stage_id: RStr::from_str(stage_id),
        sample_rate: SAMPLE_RATE,
        block_frames: BLOCK_FRAMES,
        base_dir: RStr::from_str(""),
        inputs: RSlice::from_slice(inputs),
    }
}

/// The format of `channels` channels at [`SAMPLE_RATE`].
pub fn format(channels: u32) -> PortFormat {
    PortFormat {
        channels,
        sample_rate: SAMPLE_RATE,
    }
}

/// A processor built by its library's constructor, through the ABI.
pub fn new_processor(
    reg: &Registry,
    name: &str,
    config_json: &str,
    ctx: &ContextFields<'_>,
) -> Result<ProcessorBox, PluginError> {
    let entry = reg.get(name).unwrap_or_else(|e| panic!("{e}"));
    (entry.module.new_processor())(name.into(), config_json.into(), ContextRef::new(ctx))
        .into_result()
}

/// A capture built by its library's constructor, through the ABI.
pub fn new_capture(
    reg: &Registry,
    name: &str,
    config_json: &str,
    ctx: &ContextFields<'_>,
) -> Result<CaptureBox, PluginError> {
    let entry = reg.get(name).unwrap_or_else(|e| panic!("{e}"));
    (entry.module.new_capture())(name.into(), config_json.into(), ContextRef::new(ctx))
        .into_result()
}

/// A storage built by its library's constructor, through the ABI.
pub fn new_storage(
    reg: &Registry,
    name: &str,
    config_json: &str,
    ctx: &ContextFields<'_>,
) -> Result<StorageBox, PluginError> {
    let entry = reg.get(name).unwrap_or_else(|e| panic!("{e}"));
    (entry.module.new_storage())(name.into(), config_json.into(), ContextRef::new(ctx))
        .into_result()
}

/// An input block over `samples` (interleaved, `channels` channels) starting at `position`.
pub fn input_block(samples: &[f32], channels: u32, position: u64) -> InputBlock<'_> {
    InputBlock {
        samples: RSlice::from_slice(samples),
        frames: (samples.len() / channels as usize) as u32,
        channels,
        position,
        flags: 0,
    }
}

/// An output block over `samples` with `frames` preset to its capacity, as the host presets it.
pub fn output_block(samples: &mut [f32], channels: u32) -> OutputBlock<'_> {
    OutputBlock {
        frames: (samples.len() / channels as usize) as u32,
        samples: RSliceMut::from_mut_slice(samples),
        channels,
        position: 0,
        flags: 0,
    }
}

/// Run one block through a single-input, single-output processor; returns the output buffer,
/// as many frames as the input.
///
/// The output block cannot be read back after the call: `ProcessorObj::process` borrows the
/// output slice for as long as the audio buffers it points into live (`RSliceMut<'a,
/// OutputBlock<'a>>`), so a frame count the plugin sets is not visible here.
pub fn process_block(
    p: &mut ProcessorBox,
    input: &[f32],
    channels: u32,
) -> Result<Vec<f32>, PluginError> {
    let mut out = vec![0.0f32; input.len()];
    let inputs = [input_block(input, channels, 0)];
    let mut outputs = [output_block(&mut out, channels)];
    p.process(
        RSlice::from_slice(&inputs),
        RSliceMut::from_mut_slice(&mut outputs),
    )
    .into_result()?;
    Ok(out)
}

/// Run cargo with `args` in `dir` with `target` as its target folder; its stdout and stderr,
/// or a panic that shows both.
pub fn cargo_in(dir: &Path, args: &[&str], target: &Path) -> (String, String) {
    let out = cargo()
        .current_dir(dir)
        .args(args)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("cargo runs");
    let (so, se) = (stdout(&out), stderr(&out));
    assert!(
        out.status.success(),
        "cargo {args:?} in {} failed:\n{so}\n{se}",
        dir.display()
    );
    (so, se)
}

/// Build the fixture workspace `tests/fixtures/NAME` (a plugin or a host built against another
/// copy of the plugin API) into `target/fixtures`, with the main lock file's versions, offline.
/// Returns the folder its libraries and binaries land in.
pub fn build_fixture(name: &str) -> PathBuf {
    let target = target_dir().join("fixtures");
    let dir = workspace_root().join("tests/fixtures").join(name);
    std::fs::copy(workspace_root().join("Cargo.lock"), dir.join("Cargo.lock"))
        .expect("copy Cargo.lock into the fixture");
    let out = cargo()
        .args(["build", "--quiet", "--offline", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "building the {name} fixture failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("debug")
}

/// Stage `id` of a run summary or a monitoring snapshot (both list `stages` with an `id`).
pub fn summary_stage<'a>(s: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    s["stages"]
        .as_array()
        .unwrap_or_else(|| panic!("no stages in {s}"))
        .iter()
        .find(|x| x["id"] == id)
        .unwrap_or_else(|| panic!("no stage `{id}` in {s}"))
}

/// A folder under the system temp folder, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tapeline-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        remove_dir(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp folder");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        remove_dir(&self.0);
    }
}

/// Remove the folder `dir` and everything in it, if it is there. A failure is only noted: a
/// temp folder left behind does not change a test's outcome.
pub fn remove_dir(dir: &Path) {
    note_unless_gone(std::fs::remove_dir_all(dir), dir);
}

/// Remove the file `path`, if it is there; a failure is only noted, as by [`remove_dir`].
pub fn remove_file(path: &Path) {
    note_unless_gone(std::fs::remove_file(path), path);
}

fn note_unless_gone(removed: std::io::Result<()>, path: &Path) {
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            eprintln!("note: could not remove {}: {e}", path.display());
        }
        _ => {}
    }
}

/// SIGKILL `child` (if it has exited, that does nothing) and reap it, so that neither it nor
/// a zombie is left behind. For cleanup: a failure is only noted.
pub fn kill_and_reap(child: &mut Child) {
    if let Err(e) = child.kill() {
        eprintln!("note: could not kill process {}: {e}", child.id());
    }
    if let Err(e) = child.wait() {
        eprintln!("note: could not reap process {}: {e}", child.id());
    }
}

/// A real shared library of the system that is not a plugin (libm or libc), if one is found.
pub fn system_library() -> Option<PathBuf> {
    [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib/aarch64-linux-gnu/libm.so.6",
        "/usr/lib/aarch64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
        "/usr/lib64/libm.so.6",
        "/lib/libm.so.6",
        "/usr/lib/libm.so.6",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/libc.so.6",
        "/usr/lib/libSystem.B.dylib",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// Run `tapeline` with `args` in the folder `dir`, so relative paths in its output are as given.
/// Otherwise as [`run`].
pub fn run_in<I, S>(dir: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(tapeline_bin())
        .args(args)
        .current_dir(dir)
        .env_remove(tapeline::plugins::PLUGIN_PATH_ENV)
        .env_remove("RUST_LOG")
        .output()
        .expect("tapeline runs")
}

/// Write `toml` as `p.toml` in `dir` and `tapeline run` it with `--summary-json`. Returns the
/// output and where the summary was written (if the run got that far).
pub fn run_toml(dir: &TempDir, toml: &str) -> (Output, PathBuf) {
    run_toml_with(dir, toml, &[])
}

/// [`run_toml`] with more arguments for `tapeline run` (e.g. `["--for", "1s"]`).
pub fn run_toml_with(dir: &TempDir, toml: &str, more: &[&str]) -> (Output, PathBuf) {
    let pipeline = dir.path().join("p.toml");
    std::fs::write(&pipeline, toml).expect("write the pipeline");
    let summary = dir.path().join("summary.json");
    let mut args = vec![
        "run",
        pipeline.to_str().expect("a UTF-8 path"),
        "--summary-json",
        summary.to_str().expect("a UTF-8 path"),
    ];
    args.extend_from_slice(more);
    let out = run(args);
    (out, summary)
}

/// The mock chain most fault tests run: `mock-capture` (`src`, stereo, `frames` frames) →
/// `mock-process` (`mid`) → `mock-storage` (`sink`, its report in `report.json`), with extra
/// lines for `[pipeline]` and for each stage's table.
pub fn mock_chain(frames: u64, pipeline: &str, src: &str, mid: &str, sink: &str) -> String {
    format!(
        r#"version = 1
[pipeline]
{pipeline}

[capture.src]
plugin = "mock-capture"
channels = 2
frames = {frames}
{src}

[process.mid]
plugin = "mock-process"
inputs = ["src"]
{mid}

[storage.sink]
plugin = "mock-storage"
inputs = ["mid"]
report = "report.json"
{sink}
"#
    )
}

/// The state dump a failed run announced in its error's help line
/// (`  help: state dump: PATH (…)`), if any.
pub fn state_dump_path(stderr: &str) -> Option<PathBuf> {
    stderr.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix("help: state dump: ")?;
        Some(PathBuf::from(rest.split(" (").next()?))
    })
}

/// SplitMix64: a small seeded generator, so every "random" input of a test is reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f64 {
        self.unit() * 2.0 - 1.0
    }
}
