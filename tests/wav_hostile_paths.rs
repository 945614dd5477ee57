//! wav-reader and wav-writer given paths that are not plain files (#14): a FIFO, a device, a
//! /proc file, a symlink, a dangling symlink. Each is a config error at the stage's `path` key
//! in `tapeline validate` and `tapeline run` (exit 2), and nothing ever blocks on open.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tapeline_tests::{code, stderr, tapeline_bin, Output, TempDir};

/// How long `validate` or `run` may take to refuse a path.
const LIMIT: Duration = Duration::from_secs(1);

/// `tapeline ARGS`, timed. A process still running after 10 s (blocked on an open) is killed
/// and the test fails.
fn run_timed(args: &[&str]) -> (Output, Duration) {
    let bin = tapeline_bin(); // builds first, outside the measured time
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(args)
        .env_remove(tapeline::plugins::PLUGIN_PATH_ENV)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tapeline starts");
    while child.try_wait().expect("wait for tapeline").is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            // Not killed, it would never end and the wait below would hang the test.
            child.kill().expect("SIGKILL the blocked tapeline");
            let out = child.wait_with_output().expect("tapeline ends once killed");
            panic!(
                "`tapeline {}` still running after 10 s (blocked?); stderr:\n{}",
                args.join(" "),
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    (
        child.wait_with_output().expect("tapeline's output"),
        elapsed,
    )
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Write `toml` as `p.toml` in `dir`; returns its path.
fn pipeline(dir: &TempDir, toml: &str) -> PathBuf {
    let path = dir.path().join("p.toml");
    std::fs::write(&path, toml).expect("write the pipeline");
    path
}

/// A pipeline reading `path` with wav-reader into a null sink.
fn reader_pipeline(path: &str) -> String {
    format!(
        "version = 1\n\
         [capture.file]\nplugin = \"wav-reader\"\npath = \"{path}\"\n\
         [storage.sink]\nplugin = \"null\"\ninputs = [\"file\"]\n"
    )
}

/// A pipeline writing a short tone to `path` with wav-writer, with `extra` lines.
fn writer_pipeline(path: &str, extra: &str) -> String {
    format!(
        "version = 1\n\
         [capture.tone]\nplugin = \"tone\"\nchannels = 1\nseconds = 0.1\n\
         [storage.file]\nplugin = \"wav-writer\"\ninputs = [\"tone\"]\npath = \"{path}\"\n{extra}\n"
    )
}

/// Exit 2 with an error positioned at the `path = ` line of `file` (whose text is `toml`)
/// that contains each of `words`.
fn assert_error_at_path(out: &Output, file: &Path, toml: &str, words: &[&str], what: &str) {
    let err = stderr(out);
    assert_eq!(code(out), 2, "{what}: {err}");
    let line = toml
        .lines()
        .position(|l| l.starts_with("path = "))
        .expect("the pipeline has a path key")
        + 1;
    let at = format!("{}:{line}:", file.display());
    let first = err
        .lines()
        .find(|l| l.starts_with(&at) && l.contains(": error: "))
        .unwrap_or_else(|| panic!("{what}: no error at {at}\n{err}"));
    for w in words {
        assert!(first.contains(w), "{what}: `{w}` not in `{first}`");
    }
}

/// `validate` and `run` of `toml` each refuse it at the path key, within [`LIMIT`].
fn assert_refused_fast(dir: &TempDir, toml: &str, words: &[&str]) {
    let file = pipeline(dir, toml);
    let file_arg = file.to_str().expect("a UTF-8 path");
    for args in [
        &["validate", file_arg][..],
        &["run", file_arg, "--for", "5s"][..],
    ] {
        let (out, took) = run_timed(args);
        let what = format!("tapeline {}", args[0]);
        assert_error_at_path(&out, &file, toml, words, &what);
        assert!(took < LIMIT, "{what} took {took:?}");
    }
}

#[test]
fn a_fifo_as_wav_reader_path_is_refused_at_the_path_key_by_validate_and_run_within_a_second() {
    let dir = TempDir::new("hostile-fifo-reader");
    mkfifo(&dir.path().join("in.wav"));
    assert_refused_fast(&dir, &reader_pipeline("in.wav"), &["FIFO", "in.wav"]);
}

#[test]
fn a_fifo_as_wav_writer_path_is_refused_at_the_path_key_by_validate_and_run_within_a_second() {
    let dir = TempDir::new("hostile-fifo-writer");
    let fifo = dir.path().join("out.wav");
    mkfifo(&fifo);
    for extra in [
        "",
        "overwrite = true",
        "overwrite = true\nfollow_symlinks = true",
    ] {
        assert_refused_fast(
            &dir,
            &writer_pipeline("out.wav", extra),
            &["FIFO", "out.wav"],
        );
    }
    // A symlink to the FIFO, followed, is refused the same way.
    std::os::unix::fs::symlink(&fifo, dir.path().join("link.wav")).expect("symlink");
    let toml = writer_pipeline("link.wav", "overwrite = true\nfollow_symlinks = true");
    assert_refused_fast(&dir, &toml, &["FIFO", "link.wav"]);
}

#[test]
fn devices_folders_and_proc_files_as_wav_paths_are_refused_at_the_path_key() {
    let dir = TempDir::new("hostile-special");
    std::fs::create_dir(dir.path().join("folder.wav")).expect("mkdir");
    // As writer paths only those that no write could harm, should the check ever fail.
    for (path, words, as_writer) in [
        ("/dev/null", &["character device"][..], true),
        ("/dev/zero", &["character device"], true),
        ("/proc/self/status", &["procfs"], true),
        (
            "/sys/kernel/mm/transparent_hugepage/enabled",
            &["sysfs"],
            false,
        ),
        ("folder.wav", &["folder"], true),
    ] {
        if path.starts_with('/') && !Path::new(path).exists() {
            continue;
        }
        assert_refused_fast(&dir, &reader_pipeline(path), words);
        if as_writer {
            assert_refused_fast(&dir, &writer_pipeline(path, "overwrite = true"), words);
        }
    }
}

#[test]
fn wav_writer_refuses_a_symlink_even_with_overwrite_and_leaves_its_target_alone() {
    let dir = TempDir::new("hostile-symlink");
    let target = dir.path().join("precious.wav");
    std::fs::write(&target, b"a past recording").expect("write the target");
    std::os::unix::fs::symlink(&target, dir.path().join("out.wav")).expect("symlink");

    for extra in ["", "overwrite = true"] {
        let toml = writer_pipeline("out.wav", extra);
        assert_refused_fast(
            &dir,
            &toml,
            &["symbolic link", "precious.wav", "follow_symlinks = true"],
        );
    }
    assert_eq!(
        std::fs::read(&target).expect("the target is still there"),
        b"a past recording"
    );

    // Allowed explicitly: the run writes the target, through the link.
    let toml = writer_pipeline("out.wav", "overwrite = true\nfollow_symlinks = true");
    let file = pipeline(&dir, &toml);
    let (out, _) = run_timed(&["run", file.to_str().expect("UTF-8"), "-q"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let wav = hound::WavReader::open(&target).expect("the target is a WAV file now");
    assert_eq!(wav.duration(), 4800);
    let link = std::fs::symlink_metadata(dir.path().join("out.wav")).expect("the link");
    assert!(link.file_type().is_symlink(), "the link is still a link");
}

#[test]
fn a_dangling_symlink_as_wav_reader_or_writer_path_is_refused_at_the_path_key() {
    let dir = TempDir::new("hostile-dangling");
    std::os::unix::fs::symlink(dir.path().join("gone.wav"), dir.path().join("link.wav"))
        .expect("symlink");
    let words = ["symbolic link", "gone.wav", "does not exist"];
    assert_refused_fast(&dir, &reader_pipeline("link.wav"), &words);
    for extra in [
        "",
        "overwrite = true",
        "overwrite = true\nfollow_symlinks = true",
    ] {
        assert_refused_fast(&dir, &writer_pipeline("link.wav", extra), &words);
    }
    assert!(!dir.path().join("gone.wav").exists(), "nothing was created");
}
