//! `tapeline repair FILE.wav...`: fix the header of recordings a crash left behind.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::{CliError, CliResult, GlobalArgs};
use crate::repair::{self, RepairError, RepairReport};

#[derive(Args, Debug)]
pub struct RepairArgs {
    /// WAV or RF64 files to repair, in place.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Repair every file, one line each on stdout; a file that cannot be repaired gets an error (and
/// a help line) on stderr and the others are still done. Exit 0 if every file is fine now, else
/// the worse code of the failures: 2 (bad input) over 1 (runtime failure).
pub fn repair(_global: &GlobalArgs, args: RepairArgs) -> CliResult {
    let mut worst = 0u8;
    for file in &args.files {
        match repair_one(file) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("error: {}", e.message);
                if let Some(help) = &e.help {
                    eprintln!("  help: {help}");
                }
                worst = worst.max(e.code);
            }
        }
    }
    Ok(ExitCode::from(worst))
}

fn repair_one(file: &Path) -> Result<String, CliError> {
    let shown = file.display();
    // Only regular files: never a device, a fifo or a folder.
    match std::fs::metadata(file) {
        Ok(m) if m.is_dir() => {
            return Err(CliError::input(
                format!("{shown}: is a folder, not a WAV file"),
                format!("name the files in it, e.g. `tapeline repair {shown}/*.wav`"),
            ))
        }
        Ok(m) if !m.is_file() => {
            return Err(CliError::input(
                format!("{shown}: not a regular file; nothing was changed"),
                "repair only works on WAV files on disk",
            ))
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CliError::input(
                format!("{shown}: no such file"),
                "check the path (wav-writer records to its `path`, relative to the pipeline file)",
            ))
        }
        Err(e) => {
            return Err(CliError::input(
                format!("{shown}: cannot read it: {e}"),
                "check the path and its permissions",
            ))
        }
    }
    let report = repair::repair(file).map_err(|e| error(file, e))?;
    Ok(describe(file, &report))
}

/// The line printed for a file that is fine now.
fn describe(file: &Path, r: &RepairReport) -> String {
    let frames = format!("{} frames", r.frames);
    let time = (r.sample_rate > 0).then(|| {
        format!(
            "{:.3} s at {} Hz",
            r.frames as f64 / f64::from(r.sample_rate),
            r.sample_rate
        )
    });
    if r.was_valid {
        let what = match time {
            Some(t) => format!("{frames}, {t}"),
            None => frames,
        };
        return format!(
            "{}: header already valid ({what}); nothing changed",
            file.display()
        );
    }
    let what = match time {
        Some(t) => format!("{frames} ({t})"),
        None => frames,
    };
    let cut = match r.bytes_dropped {
        0 => String::new(),
        1 => ", cut 1 byte of a partial frame".to_string(),
        n => format!(", cut {n} bytes of a partial frame"),
    };
    format!("{}: repaired: {what}{cut}", file.display())
}

fn error(file: &Path, e: RepairError) -> CliError {
    let shown = file.display();
    let refused = |help: &str| CliError::input(format!("{shown}: {e}; nothing was changed"), help);
    match &e {
        RepairError::NotWav => refused(
            "repair only fixes WAV/RF64 recordings (e.g. from wav-writer); check the file name",
        ),
        RepairError::NoFmt | RepairError::NoData => {
            refused("the start of the file is damaged or cut off, beyond what repair can fix")
        }
        RepairError::TooLarge => {
            refused("players still read the audio its header counts; repair cannot add RF64 sizes")
        }
        RepairError::Io(io) if io.kind() == io::ErrorKind::PermissionDenied => CliError::input(
            format!("{shown}: cannot open it for writing: {io}"),
            "repair rewrites the header in place: make the file writable (chmod u+w), then run \
             it again",
        ),
        RepairError::Io(io) => CliError {
            message: format!("{shown}: repair failed: {io}"),
            help: Some(
                "the file may be partly repaired: fix the cause, then run `tapeline repair` on \
                 it again"
                    .to_string(),
            ),
            detail: None,
            code: 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(frames: u64, bytes_dropped: u64, was_valid: bool) -> RepairReport {
        RepairReport {
            frames,
            bytes_dropped,
            was_valid,
            sample_rate: 48_000,
        }
    }

    #[test]
    fn one_line_per_outcome() {
        let f = Path::new("rec.wav");
        assert_eq!(
            describe(f, &report(123_456, 3, false)),
            "rec.wav: repaired: 123456 frames (2.572 s at 48000 Hz), cut 3 bytes of a partial frame"
        );
        assert_eq!(
            describe(f, &report(48_000, 0, false)),
            "rec.wav: repaired: 48000 frames (1.000 s at 48000 Hz)"
        );
        assert_eq!(
            describe(f, &report(10, 0, true)),
            "rec.wav: header already valid (10 frames, 0.000 s at 48000 Hz); nothing changed"
        );
    }

    #[test]
    fn errors_are_one_line_with_help() {
        for e in [
            RepairError::NotWav,
            RepairError::NoFmt,
            RepairError::NoData,
            RepairError::TooLarge,
            RepairError::Io(io::Error::from(io::ErrorKind::PermissionDenied)),
            RepairError::Io(io::Error::other("disk on fire")),
        ] {
            let c = error(Path::new("x.wav"), e);
            assert!(!c.message.contains('\n'), "{}", c.message);
            assert!(c.help.as_deref().is_some_and(|h| !h.contains('\n')));
            assert!(c.message.starts_with("x.wav: "));
        }
    }
}
