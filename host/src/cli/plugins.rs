//! `tapeline plugins`, `tapeline plugins inspect NAME`, `tapeline doctor FILE`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;
use tapeline_plugin_api::abi::PluginManifest;

use super::{registry, CliError, CliResult, GlobalArgs};
use crate::plugins::{
    load_with_steps, LookupError, Step, BUILD_DEVICE_SUPPORT, DEVICE_CAPTURE_PLUGIN,
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
    /// Describe one plugin: ports, formats, and every config key with type, default and meaning.
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
        print!("{}", describe(&entry.manifest, &entry.library));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 4]> = reg
        .plugins()
        .map(|p| {
            [
                p.name().to_string(),
                p.kind().to_string(),
                p.manifest.version.to_string(),
                p.library.display().to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no plugins found");
    } else {
        print!("{}", table(["NAME", "KIND", "VERSION", "LIBRARY"], &rows));
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

/// Left-aligned columns.
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// The text of `plugins inspect`.
pub fn describe(m: &PluginManifest, library: &std::path::Path) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{} {} ({} plugin)", m.name, m.version, m.kind);
    let _ = writeln!(s, "  {}", m.description);
    let _ = writeln!(s, "  library: {}", library.display());
    let inputs = match (m.inputs.min, m.inputs.max) {
        (0, 0) => "none".to_string(),
        (a, b) if a == b => a.to_string(),
        (a, b) => format!("{a} to {b}"),
    };
    let _ = writeln!(s, "  inputs: {inputs}");
    let _ = writeln!(
        s,
        "  outputs: {}",
        if m.kind == tapeline_plugin_api::PluginKind::Storage {
            "none"
        } else {
            &m.outputs
        }
    );
    let _ = writeln!(s, "  channels: {} to {}", m.channels.min, m.channels.max);
    let rates = if m.sample_rates.is_empty() {
        "any".to_string()
    } else {
        m.sample_rates
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(s, "  sample rates: {rates}");
    let keys = config_keys(&m.config_schema);
    if keys.is_empty() {
        let _ = writeln!(s, "  config: no keys");
    } else {
        let _ = writeln!(s, "  config:");
        let rows: Vec<[String; 4]> = keys
            .into_iter()
            .map(|k| [format!("    {}", k.name), k.ty, k.default, k.description])
            .collect();
        s.push_str(&table(["    KEY", "TYPE", "DEFAULT", "DESCRIPTION"], &rows));
    }
    s
}

/// One config key as `inspect` shows it.
pub struct ConfigKey {
    pub name: String,
    pub ty: String,
    pub default: String,
    pub description: String,
}

/// The keys of a plugin's config schema, with type, default and description.
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
                Some(d) => d.to_string(),
                None if required.contains(&name.as_str()) => "(required)".into(),
                None => "-".into(),
            },
            description: description(p, &schema).replace('\n', " "),
        })
        .collect()
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
                println!();
                print!("{}", describe(m, &lib.path));
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
