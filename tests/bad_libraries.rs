//! Files that are not plugins give one clear line, a hint, and exit code 2 from `tapeline
//! doctor`; on the search path they are listed as rejected and never hide the real plugins.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tapeline_tests::{code, run, stderr, stdout, system_library, Output, TempDir};

fn doctor(path: &Path) -> Output {
    run([OsString::from("doctor"), path.as_os_str().to_owned()])
}

/// The `error:` line and the `help:` line of a failed command.
fn error_and_help(out: &Output) -> (String, String) {
    let err = stderr(out);
    let line = |prefix: &str| {
        err.lines()
            .map(str::trim_start)
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line on stderr:\n{err}"))
            .to_string()
    };
    (line("error: "), line("help: "))
}

fn text_file_named_so(dir: &Path) -> PathBuf {
    let path = dir.join("x.so");
    std::fs::write(&path, "this is text, not a library\n").expect("write x.so");
    path
}

fn system_lib() -> PathBuf {
    system_library().expect("a system libm or libc to load (looked in /lib, /usr/lib, /lib64)")
}

#[test]
fn text_file_named_so_is_not_a_loadable_library() {
    let dir = TempDir::new("text-so");
    let path = text_file_named_so(dir.path());
    let out = doctor(&path);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let (error, help) = error_and_help(&out);
    assert!(error.contains("x.so"), "{error}");
    assert!(error.contains("not a loadable shared library"), "{error}");
    assert!(help.contains("cdylib"), "{help}");
    assert!(stderr(&out).lines().count() < 5, "{}", stderr(&out));
}

#[test]
fn system_library_is_a_library_but_not_a_tapeline_plugin() {
    let lib = system_lib();
    let out = doctor(&lib);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let (error, help) = error_and_help(&out);
    assert!(error.contains(&*lib.to_string_lossy()), "{error}");
    assert!(
        error.contains("a shared library, but not a Tapeline plugin"),
        "{error}"
    );
    assert!(help.contains("export_plugin!"), "{help}");
    assert!(stderr(&out).lines().count() < 5, "{}", stderr(&out));
    // Doctor's step list shows how far the file got.
    assert!(
        stdout(&out).contains("ok    file exists"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn missing_file_says_so() {
    let dir = TempDir::new("missing");
    let out = doctor(&dir.path().join("nothing-here.so"));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let (error, _) = error_and_help(&out);
    assert!(
        error.contains("nothing-here.so") && error.contains("no such file"),
        "{error}"
    );
}

#[test]
fn plugins_all_lists_bad_files_as_rejected_and_still_lists_the_real_plugins() {
    let dir = TempDir::new("rejected");
    text_file_named_so(dir.path());
    // Named *.so so that discovery picks it up (libm.so.6 would be skipped by its extension).
    std::fs::copy(system_lib(), dir.path().join("libm.so")).expect("copy the system library");

    let out = run([
        OsString::from("plugins"),
        "--all".into(),
        "--plugin-dir".into(),
        dir.path().as_os_str().to_owned(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let (table, rest) = text
        .split_once("rejected files:")
        .unwrap_or_else(|| panic!("no rejected section:\n{text}"));
    assert!(
        rest.lines()
            .any(|l| l.contains("x.so") && l.contains("not a loadable shared library")),
        "{text}"
    );
    assert!(
        rest.lines()
            .any(|l| l.contains("libm.so") && l.contains("not a Tapeline plugin")),
        "{text}"
    );
    for name in ["gain", "mock-process"] {
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} is not listed:\n{text}"
        );
    }

    // Without --all, one note on stderr points at --all; the table is unchanged.
    let out = run([
        OsString::from("plugins"),
        "--plugin-dir".into(),
        dir.path().as_os_str().to_owned(),
    ]);
    assert_eq!(code(&out), 0);
    assert!(
        stderr(&out).contains("2 file(s) on the search path are not usable plugins"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).lines().any(|l| l.starts_with("gain ")));
}
