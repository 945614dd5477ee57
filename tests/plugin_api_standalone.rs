//! The plugin API crate can leave the repository: a copy of `plugin-api/` builds on its own
//! (nothing inherited from this workspace), and a plugin using `export_plugin!` builds under
//! editions 2021 and 2024 against that copy. Offline, from the crates this workspace already
//! fetched; the target folder is the workspace's, so nothing is compiled twice.

use std::path::Path;
use std::process::Command;

use tapeline_tests::{cargo, target_dir, workspace_root, TempDir};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

fn check(dir: &Path, what: &str) {
    let mut cmd: Command = cargo();
    cmd.current_dir(dir)
        .args(["check", "--offline", "--quiet"])
        .env("CARGO_TARGET_DIR", target_dir().join("standalone"));
    let out = cmd.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "{what} does not build:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const PLUGIN: &str = r#"
use tapeline_plugin_api::prelude::*;

#[derive(Deserialize, JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct HalfConfig {}

pub struct Half;

impl Describe for Half {
    type Config = HalfConfig;
    const NAME: &'static str = "half";
    const DESCRIPTION: &'static str = "Halves every sample";
}

impl Processor for Half {
    fn new(_config: HalfConfig, _ctx: &StageContext<'_>) -> PluginResult<Self> {
        Ok(Half)
    }
    fn process(&mut self, inputs: &[InputBlock<'_>], outputs: &mut [OutputBlock<'_>]) -> PluginResult<()> {
        let (input, output) = (&inputs[0], &mut outputs[0]);
        for (o, i) in output.samples.iter_mut().zip(input.samples.iter()) {
            *o = i * 0.5;
        }
        output.frames = input.frames;
        Ok(())
    }
}

tapeline_plugin_api::export_plugin!(process: Half);
"#;

#[test]
fn a_copy_of_the_plugin_api_builds_alone_and_plugins_build_under_editions_2021_and_2024() {
    let dir = TempDir::new("api-standalone");
    let api = dir.path().join("tapeline-plugin-api");
    copy_dir(&workspace_root().join("plugin-api"), &api);
    // Its own lock file, from the crates this workspace resolved (offline).
    std::fs::copy(workspace_root().join("Cargo.lock"), api.join("Cargo.lock")).unwrap();
    check(&api, "a copy of plugin-api/");
    for edition in ["2021", "2024"] {
        let plugin = dir.path().join(format!("half-{edition}"));
        std::fs::create_dir_all(plugin.join("src")).unwrap();
        std::fs::write(
            plugin.join("Cargo.toml"),
            format!(
                "[package]\nname = \"half\"\nversion = \"0.1.0\"\nedition = \"{edition}\"\n\n\
                 [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\n\
                 tapeline-plugin-api = {{ path = \"../tapeline-plugin-api\" }}\n\
                 serde = {{ version = \"1\", features = [\"derive\"] }}\nschemars = \"1\"\n\n\
                 [workspace]\n"
            ),
        )
        .unwrap();
        std::fs::write(plugin.join("src/lib.rs"), PLUGIN).unwrap();
        std::fs::copy(
            workspace_root().join("Cargo.lock"),
            plugin.join("Cargo.lock"),
        )
        .unwrap();
        check(&plugin, &format!("a plugin of edition {edition}"));
    }
}
