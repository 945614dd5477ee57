//! `tapeline graph` draws the checked pipeline with each edge's format and buffer policy;
//! `tapeline schema` describes pipeline files including every installed plugin's config keys.

use tapeline_tests::{code, run, stderr, stdout, workspace_root};

fn pipeline(name: &str) -> String {
    workspace_root()
        .join("pipelines")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn dot_graph_lists_every_stage_and_edge_with_format_and_policy() {
    let out = run(["graph", &pipeline("eq-meter.toml")]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let dot = stdout(&out);
    assert!(dot.starts_with("digraph \"eq-meter\" {"), "{dot}");
    for stage in ["noise", "lowpass", "meter", "sink"] {
        assert!(
            dot.contains(&format!("  \"{stage}\" [label=")),
            "{stage} missing:\n{dot}"
        );
    }
    assert!(
        dot.contains("\"noise\" -> \"lowpass\" [label=\"out: 2 ch, 48000 Hz · block ×64\"]"),
        "{dot}"
    );
    assert!(
        dot.contains("\"lowpass\" -> \"meter\" [label=\"out: 2 ch, 48000 Hz · drop-newest ×8\"]"),
        "{dot}"
    );
    assert_eq!(dot.matches(" -> ").count(), 3);
}

#[test]
fn mermaid_graph_names_ports_of_a_split() {
    let out = run([
        "graph",
        "--format",
        "mermaid",
        &pipeline("split-stereo.toml"),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let m = stdout(&out);
    assert!(m.starts_with("flowchart LR\n"), "{m}");
    assert!(
        m.contains("-- \"0: 1 ch, 48000 Hz · block ×64\" -->"),
        "{m}"
    );
    assert!(
        m.contains("-- \"1: 1 ch, 48000 Hz · block ×64\" -->"),
        "{m}"
    );
}

#[test]
fn graph_of_an_invalid_file_exits_2_with_its_diagnostics() {
    let out = run(["graph", "no/such.toml"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("cannot read the pipeline file"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn schema_holds_every_installed_plugin_with_its_keys_and_rejects_unknown_ones() {
    let out = run(["schema"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let schema: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(
        schema["properties"]["version"]["enum"],
        serde_json::json!([1])
    );
    let storage = schema["properties"]["storage"]["additionalProperties"]["anyOf"]
        .as_array()
        .expect("storage alternatives");
    let writer = storage
        .iter()
        .find(|a| a["title"] == "wav-writer")
        .expect("wav-writer in the schema");
    for key in [
        "plugin",
        "inputs",
        "buffer",
        "on_error",
        "path",
        "format",
        "overwrite",
    ] {
        assert!(
            writer["properties"].get(key).is_some(),
            "no `{key}` in {writer:#}"
        );
    }
    assert_eq!(writer["additionalProperties"], false);
    let capture = schema["properties"]["capture"]["additionalProperties"]["anyOf"]
        .as_array()
        .expect("capture alternatives");
    let tone = capture.iter().find(|a| a["title"] == "tone").expect("tone");
    assert!(
        tone["properties"].get("inputs").is_none(),
        "captures take no inputs"
    );
    // Every plugin-local reference points at a definition that exists at the root.
    let text = stdout(&out);
    for r in text.split("\"$ref\": \"#/$defs/").skip(1) {
        let name = r.split('"').next().unwrap_or_default();
        assert!(schema["$defs"].get(name).is_some(), "dangling $ref {name}");
    }
}
