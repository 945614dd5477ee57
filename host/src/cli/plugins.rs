//! `tapeline plugins`, `tapeline plugins inspect NAME`, `tapeline doctor FILE`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;
use tapeline_plugin_api::abi::PluginManifest;

use super::text::{put, putln};
use super::{print_out, registry, text_width, CliError, CliResult, GlobalArgs};
use crate::plugins::{
    load_with_steps, LookupError, PluginEntry, Step, BUILD_DEVICE_SUPPORT, DEVICE_CAPTURE_PLUGIN,
};

#[derive(Args, Debug)]
pub struct PluginsArgs {
    /// Also list files on the search path that were rejected, and why, and shadowed duplicates.
    #[arg(long)]
    pub all: bool,
    #[command(subcommand)]
    pub command: Option<PluginsCommand>,
}

#[derive(Subcommand, Debug)]
pub enum PluginsCommand {
    /// Describe one plugin: ports, formats, and every config key with type, default, range, unit
    /// and meaning (wrapped to the terminal's width; 100 columns when stdout is not a terminal).
    Inspect {
        /// The plugin name, as used in `plugin = "..."`.
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The library file (.so, .dylib or .dll) to check.
    pub file: PathBuf,
}

pub fn plugins(global: &GlobalArgs, args: PluginsArgs) -> CliResult {
    let reg = registry(global);
    if let Some(PluginsCommand::Inspect { name }) = args.command {
        let entry = reg
            .get(&name)
            .map_err(|e| CliError::input(e.to_string(), e.help()))?;
        print_out(&describe(&entry.manifest, &entry.library, text_width()));
        return Ok(ExitCode::SUCCESS);
    }
    let listed: Vec<_> = reg.plugins().collect();
    if listed.is_empty() {
        print_out("no plugins found\n");
    } else {
        print_out(&listing(&listed, text_width()));
    }
    if matches!(
        reg.get(DEVICE_CAPTURE_PLUGIN),
        Err(LookupError::Unknown { .. })
    ) {
        eprintln!(
            "note: audio-device capture ({DEVICE_CAPTURE_PLUGIN}) is not built; \
             `{BUILD_DEVICE_SUPPORT}` builds it"
        );
    }
    for c in reg.conflicts.iter().filter(|c| !c.shadowed) {
        eprintln!(
            "warning: plugin `{}` is defined by both {} and {}; it cannot be used until one is removed",
            c.name,
            c.first.display(),
            c.second.display()
        );
    }
    if args.all {
        let shadowed: Vec<_> = reg.conflicts.iter().filter(|c| c.shadowed).collect();
        if !shadowed.is_empty() {
            println!("\nshadowed (an earlier folder on the search path wins):");
            for c in shadowed {
                println!(
                    "  {} in {} (using {})",
                    c.name,
                    c.second.display(),
                    c.first.display()
                );
            }
        }
        if !reg.rejected.is_empty() {
            println!("\nrejected files:");
            for r in &reg.rejected {
                println!("  {}", r.error);
                println!("    help: {}", r.error.help());
            }
        }
        println!("\nsearched: {}", join_paths(&reg.searched));
    } else if !reg.rejected.is_empty() {
        eprintln!(
            "note: {} file(s) on the search path are not usable plugins; `tapeline plugins --all` says why",
            reg.rejected.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The plugin table: name, kind, version, library, and what each plugin does (wrapped to
/// `width`). Libraries all in one folder are named by file, and the folder said once below.
fn listing(plugins: &[&PluginEntry], width: usize) -> String {
    let folder = |p: &PluginEntry| p.library.parent().map(std::path::Path::to_path_buf);
    let one_folder =
        folder(plugins[0]).filter(|f| plugins.iter().all(|p| folder(p).as_ref() == Some(f)));
    let rows: Vec<Vec<String>> = plugins
        .iter()
        .map(|p| {
            let library = match (&one_folder, p.library.file_name()) {
                (Some(_), Some(name)) => name.to_string_lossy().into_owned(),
                _ => p.library.display().to_string(),
            };
            vec![
                p.name().to_string(),
                p.kind().to_string(),
                p.manifest.version.to_string(),
                library,
                p.manifest.description.to_string(),
            ]
        })
        .collect();
    let header = ["NAME", "KIND", "VERSION", "LIBRARY", "DESCRIPTION"];
    let mut out = table(&header, &rows, width);
    if let Some(f) = one_folder {
        putln!(out, "\nlibraries in {}", f.display());
    }
    out
}

/// Left-aligned columns, the table at most `width` wide where it can be: the last column
/// (then the widest others) wraps at spaces, its lines under one another. The first header
/// cell's leading spaces indent every row.
pub fn table(header: &[&str], rows: &[Vec<String>], width: usize) -> String {
    let n = header.len();
    let widths = column_widths(header, rows, width);
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let wrapped: Vec<Vec<String>> = cells
            .iter()
            .zip(widths.iter().copied())
            .enumerate()
            .map(|(i, (c, w))| {
                // The first column keeps its indent.
                if i == 0 {
                    vec![c.to_string()]
                } else {
                    wrap(c, w)
                }
            })
            .collect();
        let height = wrapped.iter().map(Vec::len).max().unwrap_or(1);
        for row in 0..height {
            let mut l = String::new();
            for (i, (cell, &w)) in wrapped.iter().zip(&widths).enumerate() {
                let text = cell.get(row).map_or("", String::as_str);
                if i + 1 == n {
                    l.push_str(text);
                } else {
                    put!(l, "{text:<w$}  ");
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        }
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Narrowest a wrapped column gets.
const MIN_COLUMN: usize = 24;
/// The width the last column keeps while other columns can still give up characters.
const PREFERRED_LAST_COLUMN: usize = 40;

/// Each column's width: its widest cell, unless the table is wider than `width`. Then, until
/// it fits: the last column gives up characters down to [`PREFERRED_LAST_COLUMN`], the widest
/// of the others (but the first) down to [`MIN_COLUMN`], then the last down to
/// [`MIN_COLUMN`]; never below a column's longest word.
fn column_widths(header: &[&str], rows: &[Vec<String>], width: usize) -> Vec<usize> {
    let column = |i: usize| {
        rows.iter()
            .map(move |r| r.get(i).map_or("", String::as_str))
            .chain([header[i]])
    };
    let natural: Vec<usize> = (0..header.len())
        .map(|i| column(i).map(|c| c.chars().count()).max().unwrap_or(0))
        .collect();
    let longest_word: Vec<usize> = (0..header.len())
        .map(|i| {
            column(i)
                .flat_map(words)
                .map(|w| w.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut widths = natural.clone();
    let total = |w: &[usize]| w.iter().sum::<usize>() + 2 * w.len().saturating_sub(1);
    let Some(last) = header.len().checked_sub(1) else {
        return widths;
    };
    let floor = |i: usize, least: usize| longest_word[i].max(least.min(natural[i]));
    let mut excess = total(&widths).saturating_sub(width);
    // The last column, down to its preferred width.
    let give = excess.min(widths[last].saturating_sub(floor(last, PREFERRED_LAST_COLUMN)));
    widths[last] -= give;
    excess -= give;
    // The widest of the others, one character at a time.
    while excess > 0 {
        let Some(i) = (1..last)
            .filter(|&i| widths[i] > floor(i, MIN_COLUMN))
            .max_by_key(|&i| widths[i])
        else {
            break;
        };
        widths[i] -= 1;
        excess -= 1;
    }
    // The last column again, down to the narrowest.
    let give = excess.min(widths[last].saturating_sub(floor(last, MIN_COLUMN)));
    widths[last] -= give;
    widths
}

/// The words of a cell; in a list of alternatives (`"a" | "b"`) each `|` stays with the word
/// before it, so that a wrapped line never starts with one.
fn words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in text.split(' ').filter(|w| !w.is_empty()) {
        match out.last_mut() {
            Some(last) if w == "|" => {
                last.push_str(" |");
            }
            _ => out.push(w.to_string()),
        }
    }
    out
}

/// `text` in lines of at most `width` characters, broken at spaces (a longer word has a line
/// of its own).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    for w in words(text) {
        if !current.is_empty() && current.chars().count() + 1 + w.chars().count() > width {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(&w);
    }
    if !current.is_empty() || lines.is_empty() {
        lines.push(current);
    }
    lines
}

/// The text of `plugins inspect`, wrapped to `width` columns.
pub fn describe(m: &PluginManifest, library: &std::path::Path, width: usize) -> String {
    let mut s = String::new();
    putln!(s, "{} {} ({} plugin)", m.name, m.version, m.kind);
    for line in wrap(&m.description, width.saturating_sub(2).max(MIN_COLUMN)) {
        putln!(s, "  {line}");
    }
    putln!(s, "  library: {}", library.display());
    let inputs = match (m.inputs.min, m.inputs.max) {
        (0, 0) => "none".to_string(),
        (a, b) if a == b => a.to_string(),
        (a, b) => format!("{a} to {b}"),
    };
    putln!(s, "  inputs: {inputs}");
    putln!(
        s,
        "  outputs: {}",
        if m.kind == tapeline_plugin_api::PluginKind::Storage {
            "none"
        } else {
            &m.outputs
        }
    );
    putln!(s, "  channels: {} to {}", m.channels.min, m.channels.max);
    let rates = if m.sample_rates.is_empty() {
        "any".to_string()
    } else {
        m.sample_rates
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    putln!(s, "  sample rates: {rates}");
    let keys = config_keys(&m.config_schema);
    if keys.is_empty() {
        s.push_str("  config: no keys\n");
    } else {
        s.push_str("  config:\n");
        s.push_str(&key_table(&keys, width));
    }
    s
}

/// The config keys as a table; the RANGE and UNIT columns only when some key has one.
fn key_table(keys: &[ConfigKey], width: usize) -> String {
    let ranges = keys.iter().any(|k| !k.range.is_empty());
    let units = keys.iter().any(|k| !k.unit.is_empty());
    // (header, cell of a key, shown)
    type Cell = fn(&ConfigKey) -> String;
    let columns: [(&str, Cell, bool); 6] = [
        ("    KEY", |k| format!("    {}", k.name), true),
        ("TYPE", |k| k.ty.clone(), true),
        ("DEFAULT", |k| k.default.clone(), true),
        ("RANGE", |k| k.range.clone(), ranges),
        ("UNIT", |k| k.unit.clone(), units),
        ("DESCRIPTION", |k| k.description.clone(), true),
    ];
    let shown: Vec<&(&str, Cell, bool)> = columns.iter().filter(|c| c.2).collect();
    let header: Vec<&str> = shown.iter().map(|c| c.0).collect();
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| shown.iter().map(|c| (c.1)(k)).collect())
        .collect();
    table(&header, &rows, width)
}

/// What `inspect` shows in DEFAULT for a key without one.
pub const NO_DEFAULT: &str = "-";

/// One config key as `inspect` shows it.
pub struct ConfigKey {
    pub name: String,
    pub ty: String,
    /// The default as TOML-ish JSON, `(required)`, or [`NO_DEFAULT`].
    pub default: String,
    /// From the schema's `minimum`/`maximum` (and exclusive ones), e.g. `1 to 64`, `≥ 1`; empty
    /// when it has none beyond what its integer format implies.
    pub range: String,
    /// The schema's `unit` (or `x-unit`), if it has one.
    pub unit: String,
    pub description: String,
}

/// The keys of a plugin's config schema, with type, default, range, unit and description.
pub fn config_keys(schema: &str) -> Vec<ConfigKey> {
    let Ok(schema) = serde_json::from_str::<Value>(schema) else {
        return Vec::new();
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(name, p)| ConfigKey {
            name: name.clone(),
            ty: type_name(p, &schema),
            default: match p.get("default") {
                // `null`: an optional key whose absence is its default.
                Some(d) if !d.is_null() => d.to_string(),
                _ if required.contains(&name.as_str()) => "(required)".into(),
                _ => NO_DEFAULT.into(),
            },
            range: range(p, &schema),
            unit: ["unit", "x-unit"]
                .iter()
                .find_map(|k| {
                    p.get(*k)
                        .or_else(|| resolve(p, &schema).get(*k))
                        .and_then(Value::as_str)
                })
                .unwrap_or("")
                .to_string(),
            description: description(p, &schema).replace('\n', " "),
        })
        .collect()
}

/// `1 to 64`, `≥ 1`, `≤ 100`, `> 0`, from the schema's bounds; a bound its integer `format`
/// implies (`uint32`'s 0) is not shown.
fn range(p: &Value, root: &Value) -> String {
    let node = if p.get("minimum").is_some() || p.get("maximum").is_some() {
        p
    } else {
        resolve(p, root)
    };
    let implied = implied_bounds(node.get("format").and_then(Value::as_str).unwrap_or(""));
    let bound = |key: &str, implied: Option<f64>| {
        node.get(key)
            .filter(|v| v.as_f64().is_some() && v.as_f64() != implied)
            .map(Value::to_string)
    };
    let (min, max) = (bound("minimum", implied.0), bound("maximum", implied.1));
    let (xmin, xmax) = (
        bound("exclusiveMinimum", None),
        bound("exclusiveMaximum", None),
    );
    let low = min.map(|m| (m, true)).or(xmin.map(|m| (m, false)));
    let high = max.map(|m| (m, true)).or(xmax.map(|m| (m, false)));
    match (low, high) {
        (Some((lo, true)), Some((hi, true))) => format!("{lo} to {hi}"),
        (Some((lo, li)), Some((hi, hi_incl))) => format!(
            "{} {lo}, {} {hi}",
            if li { "≥" } else { ">" },
            if hi_incl { "≤" } else { "<" }
        ),
        (Some((lo, true)), None) => format!("≥ {lo}"),
        (Some((lo, false)), None) => format!("> {lo}"),
        (None, Some((hi, true))) => format!("≤ {hi}"),
        (None, Some((hi, false))) => format!("< {hi}"),
        (None, None) => String::new(),
    }
}

/// The bounds schemars writes for an integer format (not a choice of the plugin's).
fn implied_bounds(format: &str) -> (Option<f64>, Option<f64>) {
    match format {
        "uint8" => (Some(0.0), Some(u8::MAX as f64)),
        "uint16" => (Some(0.0), Some(u16::MAX as f64)),
        "uint32" => (Some(0.0), Some(u32::MAX as f64)),
        "uint64" | "uint" => (Some(0.0), Some(u64::MAX as f64)),
        "int8" => (Some(i8::MIN as f64), Some(i8::MAX as f64)),
        "int16" => (Some(i16::MIN as f64), Some(i16::MAX as f64)),
        "int32" => (Some(i32::MIN as f64), Some(i32::MAX as f64)),
        "int64" | "int" => (Some(i64::MIN as f64), Some(i64::MAX as f64)),
        _ => (None, None),
    }
}

fn resolve<'a>(v: &'a Value, root: &'a Value) -> &'a Value {
    if let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        if let Some(def) = root.get("$defs").and_then(|d| d.get(name)) {
            return def;
        }
    }
    if let Some(all) = v.get("allOf").and_then(Value::as_array) {
        if let Some(first) = all.first() {
            return resolve(first, root);
        }
    }
    v
}

fn description(v: &Value, root: &Value) -> String {
    v.get("description")
        .or_else(|| resolve(v, root).get("description"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// A short type name from a schema node: `number`, `string`, `"a" | "b"`, `integer or null`.
pub fn type_name(v: &Value, root: &Value) -> String {
    let v = resolve(v, root);
    if let Some(e) = v.get("enum").and_then(Value::as_array) {
        return e
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(" | ");
    }
    if let Some(c) = v.get("const") {
        return c.to_string();
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = v.get(key).and_then(Value::as_array) {
            let parts: Vec<String> = alts
                .iter()
                .filter(|a| a.get("type").and_then(Value::as_str) != Some("null"))
                .map(|a| type_name(a, root))
                .collect();
            return parts.join(" | ");
        }
    }
    match v.get("type") {
        Some(Value::String(t)) if t == "array" => {
            let item = v
                .get("items")
                .map(|i| type_name(i, root))
                .unwrap_or_default();
            format!("array of {item}")
        }
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => {
            let ts: Vec<&str> = ts
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect();
            match ts.as_slice() {
                ["array"] => {
                    let item = v
                        .get("items")
                        .map(|i| type_name(i, root))
                        .unwrap_or_default();
                    format!("array of {item}")
                }
                _ => ts.join(" | "),
            }
        }
        _ => "any".into(),
    }
}

pub fn doctor(global: &GlobalArgs, args: DoctorArgs) -> CliResult {
    let mut steps: Vec<Step> = Vec::new();
    let result = load_with_steps(&args.file, &mut steps);
    for step in &steps {
        match &step.outcome {
            Ok(what) => println!("ok    {}: {what}", step.what),
            Err(e) => println!("FAIL  {}: {e}", step.what),
        }
    }
    match result {
        Ok(lib) => {
            println!(
                "\n{} is a usable Tapeline plugin library.",
                args.file.display()
            );
            for m in &lib.manifests {
                print_out(&format!("\n{}", describe(m, &lib.path, text_width())));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let detail = e.detail().map(str::to_string);
            if global.verbose {
                if let Some(d) = &detail {
                    println!("\n{d}");
                }
            }
            Err(
                CliError::input(e.to_string(), e.help()).with_detail(if global.verbose {
                    None
                } else {
                    detail
                }),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r##"{
        "type": "object",
        "required": ["rate"],
        "properties": {
            "rate": { "type": "integer", "format": "uint32", "minimum": 8000, "maximum": 192000,
                      "unit": "Hz", "description": "Output rate." },
            "count": { "type": "integer", "format": "uint32", "minimum": 0, "default": 2 },
            "window_ms": { "type": ["number", "null"], "default": null, "exclusiveMinimum": 0,
                           "x-unit": "ms" },
            "db": { "type": "number", "maximum": 24, "default": 0.0 },
            "mode": { "$ref": "#/$defs/Mode" }
        },
        "$defs": { "Mode": { "enum": ["a", "b"], "description": "Which one." } }
    }"##;

    fn key<'a>(keys: &'a [ConfigKey], name: &str) -> &'a ConfigKey {
        keys.iter().find(|k| k.name == name).expect("the key")
    }

    #[test]
    fn keys_show_ranges_and_units_from_the_schema_and_no_default_one_way() {
        let keys = config_keys(SCHEMA);
        let rate = key(&keys, "rate");
        assert_eq!(
            (
                rate.default.as_str(),
                rate.range.as_str(),
                rate.unit.as_str()
            ),
            ("(required)", "8000 to 192000", "Hz")
        );
        // uint32's 0 is the format's, not a range of the plugin's.
        let count = key(&keys, "count");
        assert_eq!((count.default.as_str(), count.range.as_str()), ("2", ""));
        let window = key(&keys, "window_ms");
        assert_eq!(
            (
                window.default.as_str(),
                window.range.as_str(),
                window.unit.as_str()
            ),
            (NO_DEFAULT, "> 0", "ms")
        );
        assert_eq!(key(&keys, "db").range, "≤ 24");
        let mode = key(&keys, "mode");
        assert_eq!(
            (mode.ty.as_str(), mode.default.as_str()),
            ("\"a\" | \"b\"", NO_DEFAULT)
        );
        assert_eq!(mode.description, "Which one.");
    }

    #[test]
    fn a_wrapped_table_fits_the_width_and_keeps_each_row_on_its_first_line() {
        let rows = [
            vec![
                "    channels".to_string(),
                "integer".to_string(),
                "2".to_string(),
                "Number of output channels, one to sixty-four; each carries the same signal \
                 and nothing else at all."
                    .to_string(),
            ],
            vec![
                "    waveform".to_string(),
                "\"sine\" | \"square\" | \"noise\" | \"sweep\" | \"other\"".to_string(),
                "\"sine\"".to_string(),
                "Signal shape.".to_string(),
            ],
        ];
        let text = table(&["    KEY", "TYPE", "DEFAULT", "DESCRIPTION"], &rows, 80);
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "{line}\n{text}");
            assert!(!line.trim_start().starts_with('|'), "{text}");
        }
        let first: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            &first[..4],
            ["channels", "integer", "2", "Number"],
            "{text}"
        );
        // Wide enough: one line per row.
        assert_eq!(
            table(&["    KEY", "TYPE", "DEFAULT", "DESCRIPTION"], &rows, 300)
                .lines()
                .count(),
            3
        );
    }

    #[test]
    fn wrap_breaks_at_spaces_and_gives_a_long_word_its_own_line() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("a verylongword b", 4), ["a", "verylongword", "b"]);
        assert_eq!(wrap("", 4), [""]);
    }
}
