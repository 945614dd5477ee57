//! A plugin that is not isolated and crashes the host: the process dies of the signal (nothing
//! can survive that in-process), but first it says which stage, plugin, call and block, on
//! stderr and in a crash note next to the outputs; the recording left behind is a readable WAV.

use std::os::unix::process::ExitStatusExt;

use tapeline_tests::{run_in, stderr, TempDir};

#[test]
fn an_in_process_crash_leaves_a_note_naming_the_stage_call_and_block() {
    for (kind, signal, name) in [("segv", 11, "SIGSEGV"), ("abort", 6, "SIGABRT")] {
        let dir = TempDir::new("crash-note");
        let toml = format!(
            r#"version = 1
[pipeline]
name = "crashy"
[capture.src]
plugin = "mock-capture"
channels = 2
frames = 48000
[process.mid]
plugin = "mock-process"
inputs = ["src"]
crash = "{kind}"
crash_at_block = 10
[storage.sink]
plugin = "wav-writer"
inputs = ["mid"]
path = "out/take.wav"
"#
        );
        std::fs::write(dir.path().join("p.toml"), toml).unwrap();
        let out = run_in(dir.path(), ["run", "p.toml", "--quiet"]);
        let err = stderr(&out);
        assert_eq!(
            out.status.signal(),
            Some(signal),
            "{kind}: {:?}\n{err}",
            out.status
        );
        let line = err
            .lines()
            .find(|l| l.starts_with("tapeline: crashed: "))
            .unwrap_or_else(|| panic!("{kind}: no crash line\n{err}"));
        assert!(line.contains(name), "{line}");
        assert!(
            line.contains("in stage `mid` (plugin `mock-process`), during `process` at block 10"),
            "{kind}: {line}"
        );
        let notes: Vec<_> = std::fs::read_dir(dir.path().join("out"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().contains("crashy.crash-"))
            .collect();
        assert_eq!(
            notes.len(),
            1,
            "{kind}: one note next to the outputs: {notes:?}"
        );
        let note = std::fs::read_to_string(&notes[0]).unwrap();
        assert_eq!(note.trim_end(), line, "{kind}");
        // What was recorded is a WAV any reader opens.
        let wav = hound::WavReader::open(dir.path().join("out/take.wav"))
            .unwrap_or_else(|e| panic!("{kind}: the recording does not open: {e}"));
        assert_eq!(wav.spec().channels, 2);
    }
}
