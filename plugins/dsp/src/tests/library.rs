//! The library as the host sees it: the manifests and the `layout` entry point, through the
//! functions `export_plugin!` generated.

use super::*;

#[test]
fn the_library_lists_every_plugin_with_a_documented_schema() {
    let manifests = crate::__tapeline_library().manifests();
    let names: Vec<&str> = manifests.iter().map(|m| m.name()).collect();
    assert_eq!(
        names,
        [
            "channel-split",
            "channel-merge",
            "remap",
            "biquad",
            "meter",
            "resample"
        ]
    );
    for m in manifests.iter() {
        assert_eq!(
            m.kind,
            tapeline_plugin_api::PluginKind::Process,
            "{}",
            m.name()
        );
        assert_eq!(m.version(), env!("CARGO_PKG_VERSION"));
        assert!(!m.description().is_empty());
        let schema: serde_json::Value = serde_json::from_str(m.config_schema()).unwrap();
        // Every field of every config is documented.
        if let Some(props) = schema["properties"].as_object() {
            for (key, prop) in props {
                assert!(
                    prop.get("description").is_some(),
                    "{}: `{key}` has no description",
                    m.name()
                );
            }
        }
        assert_eq!(schema["additionalProperties"], false, "{}", m.name());
    }
    let merge = &manifests[1];
    assert_eq!((merge.inputs.min, merge.inputs.max), (2, 64));
    assert_eq!(
        manifests[0].outputs(),
        "0..N-1 (also left/right for stereo)"
    );
    let biquad: serde_json::Value = serde_json::from_str(manifests[3].config_schema()).unwrap();
    assert!(biquad["properties"]["type"].is_object(), "{biquad}");
    assert!(biquad["required"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("type")));
}

fn layout(name: &str, json: &str, inputs: &[PortFormat]) -> Result<Vec<OutputPort>, PluginError> {
    crate::__tapeline_library().layout(name, json, &ctx(inputs).get())
}

#[test]
fn layout_parses_the_config_text_like_the_host_sends_it() {
    let stereo = [format(2, RATE)];
    let ports = layout("channel-split", "{}", &stereo).unwrap();
    assert_eq!(ports[1].alias(), Some("right"));
    let ports = layout("resample", r#"{"rate": 44100}"#, &stereo).unwrap();
    assert_eq!(ports[0].format, format(2, 44_100));
    assert!(ports[0].max_frames > 441);
    let ports = layout(
        "biquad",
        r#"{"type": "highshelf", "frequency": 8000, "gain_db": -3}"#,
        &stereo,
    )
    .unwrap();
    assert_eq!(ports[0].format, format(2, RATE));

    let e = layout("biquad", r#"{"type": "lowpass", "frequncy": 100}"#, &stereo).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    assert!(e.message().contains("frequncy"), "{e}");
    let e = layout("remap", r#"{"matrix": [[1, 2, 3]]}"#, &stereo).unwrap_err();
    assert_eq!(e.key(), Some("matrix"));
    let e = layout("meter", r#"{"window_ms": "long"}"#, &stereo).unwrap_err();
    assert_eq!(e.key(), Some("window_ms"));
}
