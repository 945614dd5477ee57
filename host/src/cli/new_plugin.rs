//! `tapeline new-plugin NAME --kind process|capture|storage`: a plugin crate that builds, tests
//! itself, loads (`tapeline doctor`) and runs in the example pipeline it comes with.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::{CliError, CliResult, GlobalArgs};

#[derive(Args, Debug)]
pub struct NewPluginArgs {
    /// The plugin's name, as pipelines will say it (`plugin = "NAME"`): lowercase letters,
    /// digits and dashes. The crate is created in DIR/NAME.
    pub name: String,
    /// What the plugin is.
    #[arg(long, value_enum)]
    pub kind: Kind,
    /// Where to create the crate's folder.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// The `plugin-api` folder of a Tapeline checkout, for a path dependency (the API crate is
    /// not published yet). Default: the checkout this tapeline was built from, if it is there.
    #[arg(long, value_name = "PATH")]
    pub api_path: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Takes blocks in, gives blocks out (a gain by `db`).
    Process,
    /// A source (a sine of `frequency` Hz for `seconds`).
    Capture,
    /// A sink (counts frames, finds the peak, writes them to `path`).
    Storage,
}

pub fn new_plugin(_global: &GlobalArgs, args: NewPluginArgs) -> CliResult {
    let name = &args.name;
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(CliError::input(
            format!("`{name}` is not a plugin name"),
            "use lowercase letters, digits and dashes, starting with a letter, e.g. `my-gain`",
        ));
    }
    let api = api_path(args.api_path.as_deref())?;
    let root = args.dir.join(name);
    if root.exists() {
        return Err(CliError::input(
            format!("{} already exists", root.display()),
            "pick another name or --dir, or remove it",
        ));
    }
    write_crate(&root, name, args.kind, &api).map_err(|e| {
        CliError::input(
            format!("cannot create {}: {e}", root.display()),
            "check that --dir exists and is writable",
        )
    })?;
    println!(
        "created {} ({} plugin `{name}`)",
        root.display(),
        kind_word(args.kind)
    );
    println!("next:   cd {} && cargo build && cargo test", root.display());
    println!(
        "        tapeline doctor target/debug/{}",
        library_file(name)
    );
    println!("        tapeline --plugin-dir target/debug run example.toml");
    Ok(ExitCode::SUCCESS)
}

/// The plugin-api folder to depend on.
fn api_path(given: Option<&Path>) -> Result<PathBuf, CliError> {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-api");
    let path = given.map_or(built_from, Path::to_path_buf);
    match std::fs::canonicalize(&path) {
        Ok(p) if p.join("Cargo.toml").is_file() => Ok(p),
        _ => Err(CliError::input(
            format!("no tapeline-plugin-api crate at {}", path.display()),
            "pass --api-path /path/to/tapeline/plugin-api (the API crate is not published yet)",
        )),
    }
}

fn kind_word(kind: Kind) -> &'static str {
    match kind {
        Kind::Process => "processing",
        Kind::Capture => "capture",
        Kind::Storage => "storage",
    }
}

/// `libmy_gain.so` for `my-gain` (on Linux).
fn library_file(name: &str) -> String {
    format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    )
}

/// `MyGain` for `my-gain`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            c.next().map_or(String::new(), |f| {
                f.to_ascii_uppercase().to_string() + c.as_str()
            })
        })
        .collect()
}

fn write_crate(root: &Path, name: &str, kind: Kind, api: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(root.join("src"))?;
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{Type}}", &type_name(name))
            .replace("{{api}}", &api.display().to_string())
    };
    std::fs::write(root.join("Cargo.toml"), fill(CARGO_TOML))?;
    let (lib, example) = match kind {
        Kind::Process => (PROCESS_LIB, PROCESS_EXAMPLE),
        Kind::Capture => (CAPTURE_LIB, CAPTURE_EXAMPLE),
        Kind::Storage => (STORAGE_LIB, STORAGE_EXAMPLE),
    };
    std::fs::write(root.join("src/lib.rs"), fill(lib))?;
    std::fs::write(root.join("example.toml"), fill(example))?;
    std::fs::write(root.join(".gitignore"), "/target\n*.wav\nreport.txt\n")
}

const CARGO_TOML: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2021"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
tapeline-plugin-api = { path = "{{api}}" }
serde = { version = "1", features = ["derive"] }
schemars = "1"

# A crate of its own, also when created inside another workspace.
[workspace]
"#;

const PROCESS_LIB: &str = r#"//! `{{name}}`: multiplies every sample by a gain.

use tapeline_plugin_api::prelude::*;

/// The keys of `[process.ID]` that are not the host's.
#[derive(Deserialize, JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Gain in decibels.
    #[serde(default)]
    pub db: f32,
}

pub struct {{Type}} {
    factor: f32,
}

impl Describe for {{Type}} {
    type Config = Config;
    const NAME: &'static str = "{{name}}";
    const DESCRIPTION: &'static str = "Multiplies every sample by a gain";
}

impl Processor for {{Type}} {
    fn new(config: Config, _ctx: &StageContext<'_>) -> PluginResult<Self> {
        if !config.db.is_finite() {
            return Err(PluginError::config("db", "must be a finite number of decibels"));
        }
        Ok({{Type}} { factor: db_to_gain(config.db) })
    }

    fn process(&mut self, inputs: &[InputBlock<'_>], outputs: &mut [OutputBlock<'_>]) -> PluginResult<()> {
        for (o, i) in outputs[0].samples_mut().iter_mut().zip(inputs[0].samples()) {
            *o = i * self.factor;
        }
        Ok(())
    }
}

export_plugin!(process: {{Type}});

#[cfg(test)]
mod tests {
    use super::*;
    use tapeline_plugin_api::testing::{context, input, output};

    #[test]
    fn minus_six_db_halves_every_sample() {
        let ctx = context(&[PortFormat { channels: 2, sample_rate: 48_000 }]);
        let mut p = {{Type}}::new(Config { db: -6.0206 }, &ctx.get()).unwrap();
        let samples = [0.5f32, -0.25, 1.0, 0.0];
        let mut out = [0.0f32; 4];
        p.process(&[input(&samples, 2)], &mut [output(&mut out, 2)]).unwrap();
        for (o, i) in out.iter().zip(samples) {
            assert!((o - i / 2.0).abs() < 1e-5, "{o} for {i}");
        }
    }
}
"#;

const PROCESS_EXAMPLE: &str = r#"# A second of a tone through `{{name}}` into a WAV file. Run it with
#   tapeline --plugin-dir target/debug run example.toml
version = 1

[capture.tone]
plugin = "tone"
channels = 2
seconds = 1.0

[process.{{name}}]
plugin = "{{name}}"
inputs = ["tone"]
db = -6.0

[storage.out]
plugin = "wav-writer"
inputs = ["{{name}}"]
path = "out.wav"
overwrite = true
"#;

const CAPTURE_LIB: &str = r#"//! `{{name}}`: a sine of `frequency` Hz for `seconds`, on every channel.

use tapeline_plugin_api::prelude::*;

/// The keys of `[capture.ID]` that are not the host's.
#[derive(Deserialize, JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Frequency in Hz.
    #[serde(default = "default_frequency")]
    pub frequency: f64,
    /// Length in seconds.
    #[serde(default = "default_seconds")]
    pub seconds: f64,
    /// Channels.
    #[serde(default = "default_channels")]
    pub channels: u32,
}

fn default_frequency() -> f64 {
    440.0
}
fn default_seconds() -> f64 {
    1.0
}
fn default_channels() -> u32 {
    1
}

pub struct {{Type}} {
    step: f64,
    phase: f64,
    left: u64,
    total: u64,
    channels: usize,
}

impl Describe for {{Type}} {
    type Config = Config;
    const NAME: &'static str = "{{name}}";
    const DESCRIPTION: &'static str = "A sine of `frequency` Hz for `seconds`";
}

impl Capture for {{Type}} {
    fn outputs(config: &Config, ctx: &StageContext<'_>) -> PluginResult<Vec<OutputPort>> {
        if !(1..=64).contains(&config.channels) {
            return Err(PluginError::config("channels", "must be from 1 to 64"));
        }
        let format = PortFormat { channels: config.channels, sample_rate: ctx.sample_rate() };
        Ok(vec![OutputPort::new("out", format)])
    }

    fn new(config: Config, ctx: &StageContext<'_>) -> PluginResult<Self> {
        if !(config.seconds >= 0.0 && config.seconds.is_finite()) {
            return Err(PluginError::config("seconds", "must be 0 or more"));
        }
        let total = (config.seconds * f64::from(ctx.sample_rate())).round() as u64;
        Ok({{Type}} {
            step: std::f64::consts::TAU * config.frequency / f64::from(ctx.sample_rate()),
            phase: 0.0,
            left: total,
            total,
            channels: config.channels as usize,
        })
    }

    fn read(&mut self, out: &mut OutputBlock<'_>) -> PluginResult<ReadStatus> {
        // `out.frames()` is preset by the host to the pipeline's block size.
        let frames = u64::from(out.frames()).min(self.left) as usize;
        for frame in out.samples_mut().chunks_exact_mut(self.channels).take(frames) {
            frame.fill(self.phase.sin() as f32 * 0.5);
            self.phase = (self.phase + self.step) % std::f64::consts::TAU;
        }
        out.set_frames(frames as u32);
        self.left -= frames as u64;
        Ok(if self.left == 0 { ReadStatus::Finished } else { ReadStatus::More })
    }

    fn length_frames(&self) -> Option<u64> {
        Some(self.total)
    }
}

export_plugin!(capture: {{Type}});

#[cfg(test)]
mod tests {
    use super::*;
    use tapeline_plugin_api::testing::{context, output};

    #[test]
    fn it_ends_after_its_seconds() {
        let ctx = context(&[]);
        let config = Config { frequency: 1000.0, seconds: 0.015, channels: 2 };
        let mut c = {{Type}}::new(config, &ctx.get()).unwrap();
        let mut buf = [0.0f32; 2 * 480];
        let mut total = 0;
        loop {
            let mut out = output(&mut buf, 2);
            let status = c.read(&mut out).unwrap();
            total += out.frames();
            if status == ReadStatus::Finished {
                break;
            }
        }
        assert_eq!(total, 720);
    }
}
"#;

const CAPTURE_EXAMPLE: &str = r#"# Two seconds of `{{name}}` into a WAV file. Run it with
#   tapeline --plugin-dir target/debug run example.toml
version = 1

[capture.{{name}}]
plugin = "{{name}}"
frequency = 440.0
seconds = 2.0
channels = 2

[storage.out]
plugin = "wav-writer"
inputs = ["{{name}}"]
path = "out.wav"
overwrite = true
"#;

const STORAGE_LIB: &str = r#"//! `{{name}}`: counts the frames it is given and finds their peak; writes both to `path`.

use std::path::PathBuf;

use tapeline_plugin_api::prelude::*;

/// The keys of `[storage.ID]` that are not the host's.
#[derive(Deserialize, JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The text file to write when the stream ends (relative to the pipeline file).
    pub path: String,
}

pub struct {{Type}} {
    path: PathBuf,
    frames: u64,
    peak: f32,
}

impl Describe for {{Type}} {
    type Config = Config;
    const NAME: &'static str = "{{name}}";
    const DESCRIPTION: &'static str = "Counts frames and finds the peak; writes both to `path`";
}

impl Storage for {{Type}} {
    fn new(config: Config, ctx: &StageContext<'_>) -> PluginResult<Self> {
        if config.path.is_empty() {
            return Err(PluginError::config("path", "must name a file"));
        }
        Ok({{Type}} { path: ctx.resolve(&config.path), frames: 0, peak: 0.0 })
    }

    fn write(&mut self, block: &InputBlock<'_>) -> PluginResult<()> {
        self.frames += u64::from(block.frames());
        self.peak = block.samples().iter().fold(self.peak, |p, s| p.max(s.abs()));
        Ok(())
    }

    fn finalize(&mut self) -> PluginResult<StorageReport> {
        let text = format!("frames {}\npeak {}\n", self.frames, self.peak);
        std::fs::write(&self.path, text)?;
        Ok(StorageReport::new().frames(self.frames).file(&self.path))
    }
}

export_plugin!(storage: {{Type}});

#[cfg(test)]
mod tests {
    use super::*;
    use tapeline_plugin_api::testing::{context, input};

    #[test]
    fn it_counts_frames_and_writes_the_peak() {
        let path = std::env::temp_dir().join(format!("{{name}}-{}.txt", std::process::id()));
        let ctx = context(&[PortFormat { channels: 2, sample_rate: 48_000 }]);
        let config = Config { path: path.display().to_string() };
        let mut s = {{Type}}::new(config, &ctx.get()).unwrap();
        s.write(&input(&[0.25, -0.75, 0.5, 0.0], 2)).unwrap();
        let report = s.finalize().unwrap();
        assert_eq!(report.frames_written(), 2);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "frames 2\npeak 0.75\n");
        std::fs::remove_file(path).ok();
    }
}
"#;

const STORAGE_EXAMPLE: &str = r#"# A second of a tone into `{{name}}`. Run it with
#   tapeline --plugin-dir target/debug run example.toml
version = 1

[capture.tone]
plugin = "tone"
channels = 2
seconds = 1.0

[storage.{{name}}]
plugin = "{{name}}"
inputs = ["tone"]
path = "report.txt"
"#;
