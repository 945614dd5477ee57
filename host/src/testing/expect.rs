//! Checking a finished run against a test file's `[expect]`: every mismatch becomes one line,
//! `where: expected X, got Y`.

use std::path::Path;

use serde_json::Value;

use super::spec::{Expect, FileExpect};

/// Every mismatch between `expect` and the run (its exit code and summary). `outputs` is the
/// folder output paths are relative to (the pipeline's); `fixtures` the test file's folder.
pub fn check(
    expect: &Expect,
    exit: i32,
    summary: &Value,
    outputs: &Path,
    fixtures: &Path,
) -> Vec<String> {
    let mut diffs = Vec::new();
    let want_exit = expect.exit.unwrap_or(0);
    if exit != want_exit {
        diffs.push(format!("exit: expected {want_exit}, got {exit}"));
    }
    if let Some(end) = &expect.end {
        compare(
            &mut diffs,
            "end",
            &Value::from(end.as_str()),
            &summary["end"],
        );
    }
    let sections = [
        ("stages", "id", &expect.stages),
        ("edges", "label", &expect.edges),
        ("storage", "stage", &expect.storage),
    ];
    for (section, key, wanted) in sections {
        for (name, fields) in wanted {
            let list = summary[section]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            let Some(item) = list.iter().find(|i| i[key] == name.as_str()) else {
                let names: Vec<&str> = list.iter().filter_map(|i| i[key].as_str()).collect();
                diffs.push(format!(
                    "{section}.{name}: not in the summary (there: {})",
                    names.join(", ")
                ));
                continue;
            };
            for (field, want) in fields {
                let want = serde_json::to_value(want).unwrap_or(Value::Null);
                compare(
                    &mut diffs,
                    &format!("{section}.{name}.{field}"),
                    &want,
                    &item[field],
                );
            }
        }
    }
    for (path, want) in &expect.json {
        let want = serde_json::to_value(want).unwrap_or(Value::Null);
        compare(&mut diffs, path, &want, &at_path(summary, path));
    }
    for (file, want) in &expect.files {
        check_file(&mut diffs, &outputs.join(file), file, want, fixtures);
    }
    diffs
}

/// `a.b.0.c` in a JSON value (`Null` where there is nothing).
fn at_path(v: &Value, path: &str) -> Value {
    let mut here = v;
    for part in path.split('.') {
        here = match (here, part.parse::<usize>()) {
            (Value::Array(a), Ok(i)) => a.get(i).unwrap_or(&Value::Null),
            _ => here.get(part).unwrap_or(&Value::Null),
        };
    }
    here.clone()
}

/// Equal, numbers by value (an integer in the test file matches a float in the summary).
fn compare(diffs: &mut Vec<String>, what: &str, want: &Value, got: &Value) {
    let same = match (want.as_f64(), got.as_f64()) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
        _ => want == got,
    };
    if !same {
        diffs.push(format!("{what}: expected {want}, got {got}"));
    }
}

/// A WAV file the run wrote: its length, levels, and equality with a reference.
fn check_file(
    diffs: &mut Vec<String>,
    path: &Path,
    name: &str,
    want: &FileExpect,
    fixtures: &Path,
) {
    let samples = match read_wav(path) {
        Ok(s) => s,
        Err(e) => {
            diffs.push(format!("files.{name}: cannot read it: {e}"));
            return;
        }
    };
    let (channels, data, _) = &samples;
    let frames = (data.len() / usize::from((*channels).max(1))) as u64;
    if let Some(n) = want.frames {
        compare(
            diffs,
            &format!("files.{name}.frames"),
            &n.into(),
            &frames.into(),
        );
    }
    if let Some(c) = want.channels {
        compare(
            diffs,
            &format!("files.{name}.channels"),
            &c.into(),
            &(*channels).into(),
        );
    }
    let tolerance = want.tolerance_db.unwrap_or(0.1);
    for (what, wanted, levels) in [
        ("peak_db", &want.peak_db, levels(&samples, true)),
        ("rms_db", &want.rms_db, levels(&samples, false)),
    ] {
        let Some(wanted) = wanted else { continue };
        for (ch, w) in wanted.iter().enumerate() {
            let got = levels.get(ch).copied().unwrap_or(f64::NEG_INFINITY);
            if (got - w).abs() > tolerance {
                diffs.push(format!(
                    "files.{name}.{what}[{ch}]: expected {w} ± {tolerance}, got {got:.3}"
                ));
            }
        }
    }
    if let Some(reference) = &want.reference {
        match read_wav(&fixtures.join(reference)) {
            Ok(r) => compare_samples(
                diffs,
                name,
                reference,
                &samples,
                &r,
                want.max_lsb.unwrap_or(0),
            ),
            Err(e) => diffs.push(format!(
                "files.{name}.reference: cannot read {reference}: {e}"
            )),
        }
    }
}

/// Channels, every sample as an integer of the file's resolution, and that resolution in bits
/// (float files: scaled to 24 bits).
type Wav = (u16, Vec<i64>, u16);

fn read_wav(path: &Path) -> Result<Wav, String> {
    let mut r = hound::WavReader::open(path).map_err(|e| e.to_string())?;
    let spec = r.spec();
    let data: Result<Vec<i64>, _> = match spec.sample_format {
        hound::SampleFormat::Int => r.samples::<i32>().map(|s| s.map(i64::from)).collect(),
        hound::SampleFormat::Float => r
            .samples::<f32>()
            .map(|s| s.map(|v| (f64::from(v) * f64::from(1 << 23)).round() as i64))
            .collect(),
    };
    let bits = if spec.sample_format == hound::SampleFormat::Float {
        24
    } else {
        spec.bits_per_sample
    };
    Ok((spec.channels, data.map_err(|e| e.to_string())?, bits))
}

/// Per channel, the peak (or RMS) in dBFS.
fn levels((channels, data, bits): &Wav, peak: bool) -> Vec<f64> {
    let full = (1u64 << (bits - 1)) as f64;
    let ch = usize::from((*channels).max(1));
    (0..ch)
        .map(|c| {
            let values = data.iter().skip(c).step_by(ch).map(|&s| s as f64 / full);
            let level = if peak {
                values.fold(0.0f64, |m, v| m.max(v.abs()))
            } else {
                let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v * v, n + 1));
                (sum / n.max(1) as f64).sqrt()
            };
            20.0 * level.max(1e-12).log10()
        })
        .collect()
}

fn compare_samples(
    diffs: &mut Vec<String>,
    name: &str,
    reference: &str,
    got: &Wav,
    want: &Wav,
    max_lsb: u64,
) {
    if got.0 != want.0 || got.1.len() != want.1.len() {
        diffs.push(format!(
            "files.{name}: {} channel(s), {} samples; {reference}: {} channel(s), {} samples",
            got.0,
            got.1.len(),
            want.0,
            want.1.len()
        ));
        return;
    }
    let worst = got
        .1
        .iter()
        .zip(&want.1)
        .enumerate()
        .map(|(i, (a, b))| (a.abs_diff(*b), i))
        .max();
    if let Some((lsb, i)) = worst.filter(|(lsb, _)| *lsb > max_lsb) {
        let frame = i / usize::from(got.0.max(1));
        diffs.push(format!(
            "files.{name}: differs from {reference} by {lsb} LSB at frame {frame} (allowed {max_lsb})"
        ));
    }
}
