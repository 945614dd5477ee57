//! A JSON Schema of the pipeline format with every installed plugin's config merged in, so TOML
//! editors (taplo / Even Better TOML) complete and check pipeline files.

use serde_json::{json, Map, Value};
use tapeline_plugin_api::PluginKind;

use super::parse::{Limits, Policy, WhenFull, SUPPORTED_VERSIONS};
use crate::plugins::{PluginEntry, Registry};

/// The schema, as JSON.
pub fn pipeline_schema(registry: &Registry) -> Value {
    let mut defs = host_defs();
    let mut properties = Map::new();
    properties.insert(
        "version".into(),
        json!({ "enum": SUPPORTED_VERSIONS, "description": "Pipeline file format version." }),
    );
    properties.insert("pipeline".into(), pipeline_table());
    for kind in [
        PluginKind::Capture,
        PluginKind::Process,
        PluginKind::Storage,
    ] {
        properties.insert(
            kind.as_str().into(),
            stage_section(registry, kind, &mut defs),
        );
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Tapeline pipeline",
        "type": "object",
        "required": ["version"],
        "additionalProperties": false,
        "properties": properties,
        "$defs": defs,
    })
}

/// `[pipeline]`.
fn pipeline_table() -> Value {
    json!({
        "type": "object", "additionalProperties": false,
        "properties": {
            "name": { "type": "string" },
            "sample_rate": { "type": "integer", "minimum": 1000, "maximum": 768000, "default": 48000 },
            "block_frames": { "type": "integer", "minimum": 16, "default": 480 },
            "monitor_interval_ms": { "type": "integer", "minimum": 10, "default": 500 },
            "stall_timeout_ms": { "type": "integer", "minimum": 10, "default": 2000 },
            "isolate": {
                "type": "boolean", "default": false,
                "description": "Run every stage's plugin in a child process (a stage's own `isolate` overrides it)."
            }
        }
    })
}

/// `[KIND]`: its stages, keyed by id, each one of the installed plugins of that kind. Their
/// definitions go to `defs`.
fn stage_section(registry: &Registry, kind: PluginKind, defs: &mut Map<String, Value>) -> Value {
    let alternatives: Vec<Value> = registry
        .plugins()
        .filter(|p| p.kind() == kind)
        .map(|p| stage_schema(p, defs))
        .collect();
    json!({
        "type": "object",
        "description": format!("{kind} stages, keyed by stage id: [{kind}.ID]"),
        "additionalProperties": { "anyOf": alternatives },
    })
}

/// A stage of plugin `p`: the host's keys and the plugin's own. The plugin's definitions move
/// to the root `defs`, prefixed with its name, with their references rewritten.
fn stage_schema(p: &PluginEntry, defs: &mut Map<String, Value>) -> Value {
    let kind = p.kind();
    let plugin_schema: Value = serde_json::from_str(&p.manifest.config_schema).unwrap_or(json!({}));
    let prefix = format!("{}.", p.name());
    if let Some(Value::Object(d)) = plugin_schema.get("$defs") {
        for (k, v) in d {
            defs.insert(format!("{prefix}{k}"), rewrite_refs(v.clone(), &prefix));
        }
    }
    let mut properties = Map::new();
    properties.insert(
        "plugin".into(),
        json!({ "const": p.name(), "description": p.manifest.description.as_str() }),
    );
    if kind != PluginKind::Capture {
        properties.insert("inputs".into(), json!({ "$ref": "#/$defs/inputs" }));
        properties.insert("buffer".into(), json!({ "$ref": "#/$defs/buffer" }));
    }
    properties.insert("on_error".into(), json!({ "$ref": "#/$defs/on_error" }));
    properties.insert("isolate".into(), json!({ "$ref": "#/$defs/isolate" }));
    properties.insert("limits".into(), json!({ "$ref": "#/$defs/limits" }));
    if let Some(Value::Object(props)) = plugin_schema.get("properties") {
        for (k, v) in props {
            properties.insert(k.clone(), rewrite_refs(v.clone(), &prefix));
        }
    }
    let mut required = vec![json!("plugin")];
    if kind != PluginKind::Capture {
        required.push(json!("inputs"));
    }
    if let Some(Value::Array(r)) = plugin_schema.get("required") {
        required.extend(r.iter().cloned());
    }
    json!({
        "title": p.name(),
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// Definitions of the stage keys owned by the host.
fn host_defs() -> Map<String, Value> {
    let mut defs = Map::new();
    defs.insert(
        "inputs".into(),
        json!({
            "type": "array", "minItems": 1,
            "items": { "type": "string", "pattern": "^[^.]+(\\.[^.]+)?$" },
            "description": "Stages this one consumes: \"stage\" or \"stage.port\"."
        }),
    );
    defs.insert("buffer".into(), json!({
        "type": "object", "additionalProperties": false,
        "description": "The queue on each input edge of this stage.",
        "properties": {
            "capacity_blocks": { "type": "integer", "minimum": 2, "maximum": 65536, "description": "default: room for 30720 frames (64 blocks of 480), 8 to 64 blocks" },
            "when_full": { "enum": WhenFull::NAMES, "description": "block (default; drop-oldest behind a live device)" }
        }
    }));
    defs.insert(
        "on_error".into(),
        json!({
            "type": "object", "additionalProperties": false,
            "properties": {
                "policy": { "enum": Policy::NAMES, "default": "fail" },
                "max_restarts": { "type": "integer", "minimum": 0, "default": 3 },
                "backoff_ms": { "type": "integer", "minimum": 0, "default": 200 },
                "reset_after_ms": { "type": "integer", "minimum": 1, "default": 60000 }
            }
        }),
    );
    defs.insert(
        "isolate".into(),
        json!({
            "type": "boolean",
            "description": "Run this stage's plugin in a child process: a crash, abort, exit, \
                            out-of-memory or hung call then ends only that process and meets \
                            `on_error` as a `crashed` error. Default: [pipeline] isolate (false)."
        }),
    );
    defs.insert("limits".into(), limits_def());
    defs
}

/// `limits`: each a positive whole number within its range, each optional.
fn limits_def() -> Value {
    let limit = |(min, max, _): (u64, u64, u64), description: &str| {
        json!({
            "type": "integer", "minimum": min, "maximum": max,
            "description": description
        })
    };
    json!({
        "type": "object", "additionalProperties": false,
        "description": "Resource limits of an isolated stage's process (setrlimit); needs `isolate = true`. \
                        Exceeding one is a `crashed` error naming the limit.",
        "properties": {
            "memory_mb": limit(Limits::MEMORY_MB, "Address space, in MiB."),
            "cpu_seconds": limit(Limits::CPU_SECONDS, "CPU time, in seconds."),
            "open_files": limit(Limits::OPEN_FILES, "Open file descriptors.")
        }
    })
}

fn rewrite_refs(v: Value, prefix: &str) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        let name = r.rsplit('/').next().unwrap_or(&r).to_string();
                        (k, Value::String(format!("#/$defs/{prefix}{name}")))
                    }
                    (_, v) => (k, rewrite_refs(v, prefix)),
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(|x| rewrite_refs(x, prefix)).collect()),
        other => other,
    }
}
