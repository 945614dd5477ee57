//! Property tests of the pipeline-file checks (`config::load`: read, parse, validate against the
//! real plugins): whatever the text, and however an example file is damaged, loading never
//! panics nor hangs, a refused file always says why, and every diagnostic is placed inside the
//! file (a line and a column that exist).
//!
//! 256 cases per property by default, from a fixed seed so that a run is reproducible;
//! `PROPTEST_CASES` and `PROPTEST_RNG_SEED` override both.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;

use proptest::prelude::*;
use proptest::sample::Index;
use tapeline::config::{self, Report, Severity};
use tapeline::plugins::Registry;

/// One case (load, check, render) may take this long before it counts as a hang.
const CASE_LIMIT: Duration = Duration::from_secs(5);

fn config() -> ProptestConfig {
    common::proptest_config(0x7A9E_114E)
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ is inside the workspace")
}

/// The built plugins, as `tapeline` finds them next to itself: `cargo build --workspace` (as
/// the workspace's integration tests run it, so nothing is rebuilt when they are current),
/// then every library in this test binary's profile folder. Once per test process.
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(discover)
}

fn discover() -> Registry {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/<test binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--workspace", "--quiet"]);
    if profile_dir.file_name() == Some(OsStr::new("release")) {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo build --workspace failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let registry = Registry::discover(&[profile_dir]);
    for name in ["tone", "gain", "meter", "wav-writer", "mock-capture"] {
        assert!(
            registry.get(name).is_ok(),
            "plugin `{name}` not found in {:?}",
            registry.searched
        );
    }
    registry
}

/// A folder of its own for one property's pipeline file (relative paths in it resolve there).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tapeline-{name}-{}", std::process::id()));
        common::remove_dir(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp folder");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        common::remove_dir(&self.0);
    }
}

/// The example pipelines, `pipelines/*.toml`.
fn examples() -> Vec<(String, Vec<u8>)> {
    let dir = workspace_root().join("pipelines");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("pipelines/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read an example pipeline"))
        })
        .collect();
    files.sort();
    assert!(files.len() >= 5, "example pipelines: {files:?}");
    files
}

/// Load `bytes` as a pipeline file and check what the report says about it.
fn check(dir: &Scratch, bytes: &[u8], registry: &Registry) -> Result<(), TestCaseError> {
    let path = dir.0.join("pipeline.toml");
    std::fs::write(&path, bytes).expect("write the pipeline file");
    let started = Instant::now();
    let (plan, report) = config::load(&path, registry);
    check_report(&report, plan.is_some())?;
    // What `tapeline validate` prints, in both forms.
    let rendered = report.render(false);
    let json = serde_json::to_string(&report.json()).expect("diagnostics serialise");
    let took = started.elapsed();
    prop_assert!(took < CASE_LIMIT, "loading took {took:?}");
    prop_assert!(report.diagnostics.is_empty() || !rendered.is_empty());
    prop_assert!(json.starts_with('['));
    Ok(())
}

fn check_report(report: &Report, planned: bool) -> Result<(), TestCaseError> {
    let text = &report.source.text;
    prop_assert_eq!(
        planned,
        !report.has_errors(),
        "a plan exactly when there is no error: {:#?}",
        report.diagnostics
    );
    let lines: Vec<&str> = text.split('\n').collect();
    for (d, j) in report.diagnostics.iter().zip(report.json()) {
        let Some(span) = &d.span else {
            prop_assert!(
                d.severity == Severity::Warning,
                "an error without a position: {d:#?}"
            );
            continue;
        };
        prop_assert!(
            span.start <= span.end && span.end <= text.len(),
            "span {span:?} outside the file ({} bytes): {d:#?}",
            text.len()
        );
        let (Some(line), Some(column)) = (j.line, j.column) else {
            return Err(TestCaseError::fail(format!("no line/column: {d:#?}")));
        };
        prop_assert!(
            (1..=lines.len()).contains(&line),
            "line {line} of {}: {d:#?}",
            lines.len()
        );
        let width = lines[line - 1].chars().count();
        prop_assert!(
            (1..=width + 1).contains(&column),
            "column {column} on line {line} of {width} characters: {d:#?}"
        );
    }
    Ok(())
}

/// Pieces of pipeline files, and of TOML, to build text from.
const TOKENS: &[&str] = &[
    "version",
    "1",
    "2",
    "0",
    "-1",
    " = ",
    "=",
    "\"",
    "'",
    "\"\"\"",
    "'''",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    ",",
    ".",
    "\n",
    "\r\n",
    " ",
    "\t",
    "#",
    "\\",
    "pipeline",
    "capture",
    "process",
    "storage",
    "host",
    "tone",
    "gain",
    "meter",
    "wav-writer",
    "mock-capture",
    "mock-storage",
    "plugin",
    "inputs",
    "channels",
    "buffer",
    "capacity_blocks",
    "when_full",
    "\"block\"",
    "\"drop-oldest\"",
    "on_error",
    "\"restart\"",
    "max_restarts",
    "isolate",
    "limits",
    "memory_mb",
    "sample_rate",
    "block_frames",
    "48000",
    "480",
    "4294967296",
    "1e400",
    "nan",
    "inf",
    "0x10",
    "true",
    "false",
    "1979-05-27",
    "path",
    "\"out.wav\"",
    "\"../x/y.wav\"",
    "[capture.t]",
    "[process.p]",
    "[storage.s]",
    "inputs = [\"t\"]",
    "inputs = [\"p\", \"t\"]",
    "plugin = \"tone\"",
    "plugin = \"gain\"",
    "plugin = \"wav-writer\"",
    "é",
    "日本",
    "\u{0}",
    "\u{FEFF}",
    "\u{202E}",
    "\u{1F3B5}",
];

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(TOKENS).prop_map(str::to_string),
        1 => "[a-z_.-]{1,8}",
        1 => any::<char>().prop_map(String::from),
    ]
}

/// Text made of pipeline-file pieces, or any characters at all.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(token(), 0..200).prop_map(|t| t.concat()),
        1 => any::<String>(),
    ]
}

/// Keys a pipeline file may hold: the host's (top, `[pipeline]`, a stage's, its `buffer`,
/// `on_error` and `limits`), some plugins', and some nobody's.
const KEYS: &[&str] = &[
    "version",
    "name",
    "sample_rate",
    "block_frames",
    "monitor_interval_ms",
    "stall_timeout_ms",
    "isolate",
    "plugin",
    "inputs",
    "buffer",
    "on_error",
    "limits",
    "capacity_blocks",
    "when_full",
    "policy",
    "max_restarts",
    "backoff_ms",
    "reset_after_ms",
    "memory_mb",
    "cpu_seconds",
    "open_files",
    "frequency",
    "amplitude_db",
    "channels",
    "seconds",
    "db",
    "path",
    "format",
    "overwrite",
    "rate",
    "kind",
    "gain_db",
    "q",
    "device",
    "fault",
    "at_block",
    "verify",
    "matrix",
    "nope",
];

/// Plugin names: every installed kind, one of the device capture, one that does not exist.
const PLUGINS: &[&str] = &[
    "tone",
    "gain",
    "meter",
    "biquad",
    "channel-merge",
    "channel-split",
    "remap",
    "resample",
    "mock-capture",
    "mock-process",
    "mock-storage",
    "null",
    "wav-writer",
    "wav-reader",
    "cpal-capture",
    "gian",
    "",
];

const IDS: &[&str] = &["t", "p", "s", "tone", "gain", "out", "a.b", "x y", "é", ""];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => "[a-z_]{1,10}",
    ]
}

/// A TOML value, of any type and often a plausible one.
fn value() -> impl Strategy<Value = toml::Value> {
    use toml::Value as V;
    let leaf = prop_oneof![
        prop::sample::select(
            &[
                0i64,
                1,
                2,
                -1,
                3,
                64,
                480,
                1000,
                48_000,
                1 << 32,
                i64::MAX,
                i64::MIN
            ][..]
        )
        .prop_map(V::Integer),
        any::<i64>().prop_map(V::Integer),
        prop::sample::select(
            &[
                0.0,
                -6.0,
                0.5,
                440.0,
                1e300,
                -1e-300,
                f64::NAN,
                f64::INFINITY
            ][..]
        )
        .prop_map(V::Float),
        any::<bool>().prop_map(V::Boolean),
        prop::sample::select(PLUGINS).prop_map(|s| V::String(s.into())),
        prop::sample::select(
            &[
                "block",
                "drop-oldest",
                "drop-newest",
                "restart",
                "ignore",
                "fail",
                "pcm16",
                "pcm24",
                "float32",
                "out.wav",
                "../../x.wav",
                "/dev/null"
            ][..]
        )
        .prop_map(|s| V::String(s.into())),
        any::<String>().prop_map(V::String),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(V::Array),
            prop::collection::vec((key(), inner), 0..4)
                .prop_map(|kv| V::Table(kv.into_iter().collect())),
        ]
    })
}

/// A stage table: usually an installed plugin, inputs among the usual ids, and some keys.
fn stage() -> impl Strategy<Value = toml::Table> {
    (
        prop::option::weighted(0.95, prop::sample::select(PLUGINS)),
        prop::option::weighted(0.7, prop::collection::vec(prop::sample::select(IDS), 0..3)),
        prop::collection::vec((key(), value()), 0..5),
    )
        .prop_map(|(plugin, inputs, keys)| {
            let mut t: toml::Table = keys.into_iter().collect();
            if let Some(p) = plugin {
                t.insert("plugin".into(), toml::Value::String(p.into()));
            }
            if let Some(inputs) = inputs {
                let ids = inputs.into_iter().map(|i| toml::Value::String(i.into()));
                t.insert("inputs".into(), toml::Value::Array(ids.collect()));
            }
            t
        })
}

/// A whole pipeline file as TOML that parses: `version`, maybe `[pipeline]`, stages of each
/// kind under the usual ids, and maybe a stray top-level key.
fn document() -> impl Strategy<Value = String> {
    let stages = || prop::collection::vec((prop::sample::select(IDS), stage()), 0..4);
    (
        prop::option::weighted(
            0.9,
            prop_oneof![9 => Just(toml::Value::Integer(1)), 1 => value()],
        ),
        prop::option::weighted(0.6, prop::collection::vec((key(), value()), 0..5)),
        [stages(), stages(), stages()],
        prop::option::weighted(0.1, (key(), value())),
    )
        .prop_filter_map(
            "TOML that serialises",
            |(version, pipeline, stages, stray)| {
                let mut root = toml::Table::new();
                if let Some(v) = version {
                    root.insert("version".into(), v);
                }
                if let Some(p) = pipeline {
                    root.insert(
                        "pipeline".into(),
                        toml::Value::Table(p.into_iter().collect()),
                    );
                }
                for (kind, stages) in ["capture", "process", "storage"].into_iter().zip(stages) {
                    if !stages.is_empty() {
                        let t = stages
                            .into_iter()
                            .map(|(id, s)| (id.to_string(), toml::Value::Table(s)));
                        root.insert(kind.into(), toml::Value::Table(t.collect()));
                    }
                }
                if let Some((k, v)) = stray {
                    root.insert(k, v);
                }
                toml::to_string(&root).ok()
            },
        )
}

/// One way to damage a file.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Delete(Index, usize),
    /// Copy `len` bytes from the first place to the second.
    Duplicate(Index, usize, Index),
    Insert(Index, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<(Index, u8)>().prop_map(|(i, b)| Mutation::FlipBit(i, b % 8)),
        any::<(Index, u8)>().prop_map(|(i, b)| Mutation::SetByte(i, b)),
        (any::<Index>(), 1..64usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), 1..256usize, any::<Index>())
            .prop_map(|(from, n, to)| Mutation::Duplicate(from, n, to)),
        (any::<Index>(), token()).prop_map(|(i, t)| Mutation::Insert(i, t)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    // Places range over the bytes and the end of the file.
    let at = |i: &Index, len: usize| i.index(len + 1);
    match m {
        Mutation::FlipBit(i, bit) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        Mutation::SetByte(i, b) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            bytes[i] = *b;
        }
        Mutation::Delete(i, n) => {
            let i = at(i, bytes.len());
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        Mutation::Duplicate(from, n, to) => {
            let from = at(from, bytes.len());
            let end = (from + n).min(bytes.len());
            let piece = bytes[from..end].to_vec();
            let to = at(to, bytes.len());
            bytes.splice(to..to, piece);
        }
        Mutation::Insert(i, t) => {
            let i = at(i, bytes.len());
            bytes.splice(i..i, t.bytes());
        }
        Mutation::FlipBit(..) | Mutation::SetByte(..) => {}
    }
}

#[test]
fn every_example_is_valid_to_start_with() {
    let registry = registry();
    let dir = Scratch::new("prop-examples");
    for (name, bytes) in examples() {
        let path = dir.0.join(&name);
        std::fs::write(&path, &bytes).unwrap();
        let (plan, report) = config::load(&path, registry);
        assert!(plan.is_some(), "{name}: {}", report.render(false));
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_is_refused_or_planned_with_every_diagnostic_inside_the_file(text in text()) {
        thread_local! {
            static SETUP: (&'static Registry, Scratch) = (registry(), Scratch::new("prop-text"));
        }
        SETUP.with(|(registry, dir)| check(dir, text.as_bytes(), registry))?;
    }

    #[test]
    fn generated_pipelines_are_refused_or_planned_with_every_diagnostic_inside_the_file(
        text in document(),
        mutations in prop::collection::vec(mutation(), 0..3),
    ) {
        thread_local! {
            static SETUP: (&'static Registry, Scratch) =
                (registry(), Scratch::new("prop-generated"));
        }
        let mut bytes = text.into_bytes();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        SETUP.with(|(registry, dir)| check(dir, &bytes, registry))?;
    }

    #[test]
    fn damaged_examples_are_refused_or_planned_with_every_diagnostic_inside_the_file(
        example in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        thread_local! {
            static SETUP: (&'static Registry, Scratch, Vec<(String, Vec<u8>)>) =
                (registry(), Scratch::new("prop-damaged"), examples());
        }
        SETUP.with(|(registry, dir, examples)| {
            let mut bytes = examples[example.index(examples.len())].1.clone();
            for m in &mutations {
                apply(&mut bytes, m);
            }
            check(dir, &bytes, registry)
        })?;
    }
}
