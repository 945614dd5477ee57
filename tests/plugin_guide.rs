//! docs/plugin-guide.md, compiled, loaded and run: the guide's examples are the code an
//! integrator pastes, so a block that stops compiling or loading fails here.
//!
//! What is taken from the guide:
//! - every fenced block whose info string has the word `plugin` (```` ```rust,plugin ````) is a
//!   whole `src/lib.rs`: each becomes a crate of its own, named after the first plugin `NAME`
//!   it declares;
//! - a ```` ```rust,plugin-tests ```` block is appended to the `src/lib.rs` of the `plugin`
//!   block before it, and those crates' unit tests run (`cargo test --lib`);
//! - the ```` ```toml ```` block with `crate-type` is the `Cargo.toml` every example crate gets,
//!   with its `name` and the path of `plugin-api` put in;
//! - the ```` ```toml,pipeline ```` block is the pipeline run with the built examples.
//!
//! Plain ```` ```rust ```` blocks are fragments (a method or two out of context) and are not
//! compiled. The examples must be formatted as `cargo fmt` formats them and build without a
//! warning.
//!
//! The example crates form one cargo workspace under `target/plugin-guide/` (rewritten only where
//! the guide changed, so a second run rebuilds nothing), built offline with the workspace's
//! `Cargo.lock`, in the target folder `tests/new_plugin.rs` and `tests/plugin_api_standalone.rs`
//! use (`target/standalone`): the API's dependencies are compiled once for all three.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tapeline_tests::{
    cargo_in, code, library_file_name, run_in, stderr, stdout, target_dir, workspace_root, TempDir,
};

/// One fenced block of the guide: the words of its info string and its text.
struct Block {
    info: Vec<String>,
    text: String,
}

impl Block {
    fn has(&self, lang: &str, word: &str) -> bool {
        self.info.first().map(String::as_str) == Some(lang) && self.info.iter().any(|w| w == word)
    }
}

/// Every fenced block of `markdown` (fences of three backticks, not indented).
fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for line in markdown.lines() {
        match (open.take(), line.strip_prefix("```")) {
            (None, Some(info)) => {
                let info = info
                    .split([',', ' ', '\t'])
                    .filter(|w| !w.is_empty())
                    .map(str::to_string)
                    .collect();
                open = Some(Block {
                    info,
                    text: String::new(),
                });
            }
            (Some(block), Some(rest)) if rest.trim().is_empty() => out.push(block),
            (Some(mut block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
                open = Some(block);
            }
            (None, None) => {}
        }
    }
    assert!(
        open.is_none(),
        "the guide has a code block that never closes"
    );
    out
}

/// An example crate: its name, its `src/lib.rs`, the plugins it declares, and how many unit
/// tests the guide gives it.
struct Example {
    name: String,
    lib: String,
    plugins: Vec<String>,
    tests: usize,
}

/// The plugin names a `src/lib.rs` declares (`const NAME: &'static str = "...";`).
fn plugin_names(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("const NAME: &'static str = \"")?;
            Some(rest.split('"').next()?.to_string())
        })
        .collect()
}

fn examples(blocks: &[Block]) -> Vec<Example> {
    let mut out: Vec<Example> = Vec::new();
    for b in blocks {
        if b.has("rust", "plugin") {
            let plugins = plugin_names(&b.text);
            let name = plugins
                .first()
                .unwrap_or_else(|| panic!("a `rust,plugin` block declares no NAME:\n{}", b.text))
                .clone();
            out.push(Example {
                name,
                lib: b.text.clone(),
                plugins,
                tests: 0,
            });
        } else if b.has("rust", "plugin-tests") {
            let last = out
                .last_mut()
                .expect("a `rust,plugin-tests` block follows a `rust,plugin` block");
            last.lib.push('\n');
            last.lib.push_str(&b.text);
            last.tests += b.text.matches("#[test]").count();
        }
    }
    out
}

/// The guide's `Cargo.toml` for the crate `name`, depending on this checkout's `plugin-api`.
fn cargo_toml(template: &str, name: &str) -> String {
    let api = workspace_root().join("plugin-api");
    let mut named = false;
    let text: Vec<String> = template
        .lines()
        .map(|l| {
            if !named && l.starts_with("name = ") {
                named = true;
                format!("name = \"{name}\"")
            } else {
                l.to_string()
            }
        })
        .collect();
    let text = text.join("\n") + "\n";
    const API: &str = "/path/to/tapeline/plugin-api";
    assert!(
        named && text.contains(API),
        "the guide's Cargo.toml no longer has a `name = ` line and the path {API}:\n{template}"
    );
    text.replace(API, api.to_str().expect("a UTF-8 path"))
}

/// Write `text` to `path` unless it holds that already (an unchanged file keeps its time, so
/// cargo does not rebuild).
fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return;
    }
    std::fs::create_dir_all(path.parent().expect("a file in a folder")).expect("create a folder");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Stage `id` of a run summary, and its index there.
fn stage<'a>(summary: &'a Value, id: &str) -> (usize, &'a Value) {
    summary["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .enumerate()
        .find(|(_, s)| s["id"] == id)
        .unwrap_or_else(|| panic!("no stage `{id}` in the summary"))
}

// What the guide's pipeline promises (`the_pipeline_says` checks that it still says so).
const RATE: usize = 48_000;
const BLOCK: usize = 400;
/// One second.
const SINE_FRAMES: usize = RATE;
const FREQUENCY: f64 = 1000.0;
const CHANNELS: usize = 2;
/// 10 ms.
const DELAY_FRAMES: usize = RATE / 100;
/// -6 dBFS from `my-sine`, -6 dB from `my-gain`.
const PEAK_DB: f64 = -12.0;

/// Fail unless the guide's pipeline still has the settings the constants above follow from.
fn the_pipeline_says(pipeline: &str) {
    for line in [
        "sample_rate = 48000",
        "block_frames = 400",
        "seconds = 1.0",
        "frequency = 1000.0",
        "amplitude_db = -6.0",
        "channels = 2",
        "db = -6.0",
        "ms = 10.0",
        "path = \"sine.f32\"",
    ] {
        assert!(
            pipeline.lines().any(|l| l == line),
            "the guide's pipeline no longer says `{line}`: update this test with it"
        );
    }
}

/// The examples as one cargo workspace under `target/plugin-guide/`, built (and their unit tests
/// run) in the shared target folder, which is returned.
fn build(examples: &[Example], template: &str) -> PathBuf {
    let names: BTreeSet<&str> = examples.iter().map(|e| e.name.as_str()).collect();
    let root = target_dir().join("plugin-guide");
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            let stale = entry.path().is_dir()
                && !names.contains(entry.file_name().to_str().unwrap_or_default());
            if stale {
                std::fs::remove_dir_all(entry.path()).expect("remove an old example");
            }
        }
    }
    let members: Vec<String> = examples.iter().map(|e| format!("\"{}\"", e.name)).collect();
    write_if_changed(
        &root.join("Cargo.toml"),
        &format!(
            "[workspace]\nresolver = \"2\"\nmembers = [{}]\n",
            members.join(", ")
        ),
    );
    std::fs::copy(workspace_root().join("Cargo.lock"), root.join("Cargo.lock"))
        .expect("copy Cargo.lock");
    for e in examples {
        let dir = root.join(&e.name);
        write_if_changed(&dir.join("Cargo.toml"), &cargo_toml(template, &e.name));
        write_if_changed(&dir.join("src/lib.rs"), &e.lib);
    }
    let target = target_dir().join("standalone");
    // As `cargo fmt` leaves them: what an integrator pastes is formatted already.
    cargo_in(&root, &["fmt", "--check"], &target);
    let (_, built) = cargo_in(&root, &["build", "--offline"], &target);
    assert!(
        !built.contains("warning"),
        "a guide example builds with warnings:\n{built}"
    );

    // The unit tests the guide shows, run.
    let tested: Vec<&Example> = examples.iter().filter(|e| e.tests > 0).collect();
    assert!(!tested.is_empty(), "the guide's unit test is not found");
    let mut args = vec!["test", "--offline", "--lib"];
    for e in &tested {
        args.extend(["-p", e.name.as_str()]);
    }
    let (ran, _) = cargo_in(&root, &args, &target);
    let passed: usize = ran
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse::<usize>().ok())
        .sum();
    let expected: usize = tested.iter().map(|e| e.tests).sum();
    assert_eq!(passed, expected, "the guide's unit tests:\n{ran}");
    target
}

/// The file `my-raw-writer` wrote: `bytes` long, the delay's silence, then the sine at -12 dBFS
/// on both channels.
fn check_samples(path: &Path, bytes: usize) {
    let raw_file = std::fs::read(path).expect("sine.f32 is written");
    assert_eq!(raw_file.len(), bytes);
    let samples: Vec<f32> = raw_file
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let amplitude = 10f64.powf(PEAK_DB / 20.0);
    for (n, frame) in samples.chunks_exact(CHANNELS).enumerate() {
        let want = match n.checked_sub(DELAY_FRAMES) {
            None => 0.0,
            Some(k) => {
                (std::f64::consts::TAU * FREQUENCY * k as f64 / RATE as f64).sin() * amplitude
            }
        };
        for &s in frame {
            assert!(
                (f64::from(s) - want).abs() < 1e-5,
                "frame {n}: {s}, expected {want}"
            );
        }
    }
}

#[test]
fn the_guides_examples_build_load_and_run_as_it_says() {
    let guide_path = workspace_root().join("docs/plugin-guide.md");
    let guide = std::fs::read_to_string(&guide_path).expect("read docs/plugin-guide.md");
    let blocks = blocks(&guide);
    let examples = examples(&blocks);

    // A processor, a capture and a storage, each a whole crate.
    let all: String = examples.iter().map(|e| e.lib.as_str()).collect();
    for kind in ["process", "capture", "storage"] {
        assert!(
            all.contains(&format!("export_plugin!({kind}: ")),
            "the guide has no complete {kind} example"
        );
    }
    let names: BTreeSet<&str> = examples.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names.len(), examples.len(), "two examples share a name");
    for want in ["my-gain", "my-sine", "my-delay", "my-raw-writer"] {
        assert!(
            names.contains(want),
            "no example declares `{want}`: {names:?}"
        );
    }

    let template = blocks
        .iter()
        .find(|b| b.info == ["toml"] && b.text.contains("crate-type"))
        .expect("the guide shows a plugin's Cargo.toml");
    let pipelines: Vec<&Block> = blocks
        .iter()
        .filter(|b| b.has("toml", "pipeline"))
        .collect();
    assert_eq!(pipelines.len(), 1, "one `toml,pipeline` block");
    let pipeline = pipelines[0].text.as_str();

    let target = build(&examples, &template.text);

    // Each library loads, with the plugins it declares; where the guide shows what `tapeline
    // doctor target/debug/LIBRARY` prints, it prints that. (A fresh copy of the libraries: one
    // the guide no longer has is not there.)
    let dir = TempDir::new("plugin-guide");
    let plugins = dir.path().join("target/debug");
    std::fs::create_dir_all(&plugins).expect("create the plugin folder");
    let mut shown = 0;
    for e in &examples {
        let file = library_file_name(&e.name.replace('-', "_"));
        std::fs::copy(target.join("debug").join(&file), plugins.join(&file))
            .unwrap_or_else(|err| panic!("{file} was not built: {err}"));
        let relative = format!("target/debug/{file}");
        let doctor = run_in(dir.path(), ["doctor", relative.as_str()]);
        let said = stdout(&doctor);
        assert_eq!(code(&doctor), 0, "{}: {said}", e.name);
        for p in &e.plugins {
            assert!(
                said.contains(&format!("ok    lists its plugins: {p} (")),
                "doctor does not list `{p}`:\n{said}"
            );
        }
        let first = format!("ok    file exists: {relative}\n");
        if let Some(b) = blocks.iter().find(|b| b.text.starts_with(&first)) {
            assert_eq!(said, b.text, "the guide's `tapeline doctor {relative}`");
            shown += 1;
        }
    }
    assert_eq!(shown, 1, "the guide shows doctor's report of one example");

    // The pipeline, with the numbers the guide gives for it.
    the_pipeline_says(pipeline);
    let frames = SINE_FRAMES + DELAY_FRAMES;
    let bytes = frames * CHANNELS * 4;
    // The path is the pipeline folder's: the guide's is `/home/me`.
    let wrote = format!(
        "sine.f32 ({frames} frames, {:.2} s)",
        frames as f64 / RATE as f64
    );
    let guide_wrote = format!("wrote /home/me/{wrote}");
    assert!(
        guide.contains(&guide_wrote),
        "the guide does not say `{guide_wrote}`"
    );

    let work = dir.path().join("run");
    write_if_changed(&work.join("guide.toml"), pipeline);
    let plugin_dir = plugins.to_str().expect("a UTF-8 path");
    let ran = run_in(
        &work,
        [
            "--plugin-dir",
            plugin_dir,
            "run",
            "guide.toml",
            "--summary-json",
            "summary.json",
            "--metrics",
            "metrics.jsonl",
        ],
    );
    assert_eq!(code(&ran), 0, "{}\n{}", stdout(&ran), stderr(&ran));
    let text = stdout(&ran);
    assert!(guide.contains("`peak -12.0 dBFS`"), "the guide's peak");
    let wrote = format!("wrote {}/{wrote}", work.display());
    for promised in [wrote.as_str(), "lost frames: none", "peak -12.0 dBFS"] {
        assert!(text.contains(promised), "no `{promised}` in:\n{text}");
    }

    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(work.join("summary.json")).expect("the summary is written"),
    )
    .expect("the summary is JSON");
    assert!(summary["failure"].is_null(), "{summary:#}");
    let storage = &summary["storage"][0];
    assert_eq!(storage["frames_written"], frames as u64, "{storage:#}");
    assert_eq!(
        storage["files"].as_array().map(Vec::len),
        Some(1),
        "{storage:#}"
    );
    let (_, sine) = stage(&summary, "sine");
    assert_eq!(sine["frames_out"], SINE_FRAMES as u64, "{sine:#}");
    assert_eq!(
        sine["blocks"],
        (SINE_FRAMES / BLOCK) as u64,
        "my-sine writes whole blocks of block_frames: {sine:#}"
    );
    let (delay_index, delay) = stage(&summary, "delay");
    assert_eq!(delay["frames_out"], frames as u64, "the tail: {delay:#}");
    let peak = summary["monitoring"]["max_peak_db"][delay_index]
        .as_f64()
        .expect("my-delay reports levels");
    assert!((peak - PEAK_DB).abs() < 0.05, "peak {peak} dBFS");
    let (_, raw) = stage(&summary, "raw");
    assert_eq!(raw["stats"]["bytes"], bytes as u64, "{raw:#}");
    assert!(
        raw["stats"]["flushes"].as_u64().is_some_and(|n| n >= 1),
        "{raw:#}"
    );
    let metrics = std::fs::read_to_string(work.join("metrics.jsonl")).expect("metrics written");
    let last: Value = serde_json::from_str(metrics.lines().last().expect("a snapshot"))
        .expect("a snapshot is JSON");
    let snap = last["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == "raw"))
        .expect("the storage stage in the last snapshot");
    assert!(snap["stats"]["bytes"].as_u64().is_some(), "{snap:#}");

    check_samples(&work.join("sine.f32"), bytes);

    // Run again: the file is there and `overwrite` is not set, so `new` refuses it, at its key.
    let again = run_in(&work, ["--plugin-dir", plugin_dir, "run", "guide.toml"]);
    assert_eq!(code(&again), 2, "{}", stdout(&again));
    let refused = stderr(&again);
    assert!(
        refused.contains("guide.toml:28:1: error: my-raw-writer: ")
            && refused.contains("sine.f32 exists: set `overwrite = true` to replace it"),
        "{refused}"
    );
    assert_eq!(
        std::fs::read(work.join("sine.f32")).map(|b| b.len()).ok(),
        Some(bytes),
        "the first take is kept"
    );

    // `check` reports a folder that is not there at its key, as the guide shows.
    let bad = dir.path().join("bad");
    write_if_changed(
        &bad.join("guide.toml"),
        &pipeline.replace("path = \"sine.f32\"", "path = \"no-such-folder/sine.f32\""),
    );
    let checked = run_in(&bad, ["--plugin-dir", plugin_dir, "validate", "guide.toml"]);
    assert_eq!(code(&checked), 2, "{}", stdout(&checked));
    let said = stderr(&checked) + &stdout(&checked);
    let at = "guide.toml:28:1: error: my-raw-writer: the folder ";
    assert!(guide.contains(at), "the guide does not show `{at}`");
    assert!(
        said.contains(at) && said.contains("no-such-folder does not exist [stage raw]"),
        "{said}"
    );
    assert!(
        !bad.join("no-such-folder").exists(),
        "check created nothing"
    );
}
