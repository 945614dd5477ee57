//! The safe traits plugin authors implement.
//!
//! A plugin is a type implementing one of [`Capture`], [`Processor`] or [`Storage`], listed in
//! [`export_plugin!`](crate::export_plugin). The host owns every thread, lock, queue and
//! lifecycle decision; a plugin only answers calls. The wrapper the macro generates catches
//! panics (they become [`ErrorKind::Panicked`] errors) and, in debug builds, reports allocations
//! made on the audio path.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::abi::{
    ErrorKind, InputBlock, Level, OutputBlock, OutputPort, PluginError, PortFormat, ReadStatus,
    StageContext, StorageReport,
};

/// Result type of every plugin call.
pub type PluginResult<T> = Result<T, PluginError>;

/// What every plugin declares about itself, whatever its kind.
pub trait Describe {
    /// The config table's type. Deserialized from the stage's table in the pipeline file with
    /// unknown keys rejected (put `#[serde(deny_unknown_fields)]` on it). Doc comments on its
    /// fields become the descriptions `tapeline plugins inspect` and editors show.
    type Config: DeserializeOwned + JsonSchema;
    /// The name pipeline files use in `plugin = "..."`.
    const NAME: &'static str;
    /// One line.
    const DESCRIPTION: &'static str;
    /// Accepted channel counts, inclusive.
    const CHANNELS: (u32, u32) = (1, 64);
    /// Accepted sample rates; empty means any.
    const SAMPLE_RATES: &'static [u32] = &[];
    /// Human-readable summary of the output ports.
    const OUTPUTS: &'static str = "out";
    /// True for live sources (devices): the edge behind them defaults to `drop-oldest`.
    const LIVE: bool = false;
}

/// A source of audio: a generator, a file reader, a device.
///
/// Lifecycle: [`outputs`](Capture::outputs) may be called any number of times to validate (no
/// side effects); then [`new`](Capture::new) once, [`start`](Capture::start), repeated
/// [`read`](Capture::read) from one host thread until it returns [`ReadStatus::Finished`] or the
/// host stops, then [`stop`](Capture::stop). `read` must not allocate, lock or log: allocate
/// in `new`.
pub trait Capture: Describe + Sized + Send + 'static {
    /// The output ports this configuration produces. Validation only: reading (a file header,
    /// a device's formats) is fine; create or start nothing here.
    fn outputs(config: &Self::Config, ctx: &StageContext<'_>) -> PluginResult<Vec<OutputPort>>;
    fn new(config: Self::Config, ctx: &StageContext<'_>) -> PluginResult<Self>;
    fn start(&mut self) -> PluginResult<()> {
        Ok(())
    }
    /// Fill `out` with up to `out.frames` frames (preset by the host to the block size, never more
    /// than [`OutputBlock::capacity_frames`]) and set `out.frames` to what was written.
    fn read(&mut self, out: &mut OutputBlock<'_>) -> PluginResult<ReadStatus>;
    fn stop(&mut self) -> PluginResult<()> {
        Ok(())
    }
    /// Total frames this source will produce, when known (for progress and ETA).
    fn length_frames(&self) -> Option<u64> {
        None
    }
}

/// A transformation of audio.
///
/// `process` is called on the stage's own thread with one block per input (equal frame counts)
/// and one buffer per output port; outputs arrive with `frames` preset to the input's frame
/// count. `process` must not allocate, lock, log or block: allocate in `new`.
pub trait Processor: Describe + Sized + Send + 'static {
    /// How many inputs it takes, inclusive.
    const INPUTS: (u32, u32) = (1, 1);
    /// The output ports for this configuration and these input formats. The default passes the
    /// single input's format through on one port named `out`.
    fn outputs(_config: &Self::Config, ctx: &StageContext<'_>) -> PluginResult<Vec<OutputPort>> {
        let input = single_input(ctx)?;
        Ok(vec![OutputPort::new("out", input)])
    }
    fn new(config: Self::Config, ctx: &StageContext<'_>) -> PluginResult<Self>;
    fn process(
        &mut self,
        inputs: &[InputBlock<'_>],
        outputs: &mut [OutputBlock<'_>],
    ) -> PluginResult<()>;
    /// End of stream: every input has ended. Write what the processor still holds (a filter's
    /// tail) into `outputs`, setting each one's frames (they start at zero); it is called again
    /// while it writes frames, so a long tail can take several calls. The default writes
    /// nothing. After it, the instance may be given a new stream from the start.
    fn finish(&mut self, outputs: &mut [OutputBlock<'_>]) -> PluginResult<()> {
        for out in outputs {
            out.frames = 0;
        }
        Ok(())
    }
    /// Levels to show in monitoring, one per channel; empty when the plugin measures nothing.
    fn levels(&self) -> &[Level] {
        &[]
    }
}

/// A sink that keeps audio: a file writer, a counter.
///
/// `write` is called on the stage's own thread for every block, in order; `flush` when the host
/// wants what was written so far made durable; `finalize` once at the end, also after errors and
/// on shutdown, so that what was recorded is kept.
pub trait Storage: Describe + Sized + Send + 'static {
    /// Check the configuration against the input format. Validation only: create nothing here,
    /// but do report an output that would be clobbered or cannot be written.
    fn check(_config: &Self::Config, _ctx: &StageContext<'_>) -> PluginResult<()> {
        Ok(())
    }
    fn new(config: Self::Config, ctx: &StageContext<'_>) -> PluginResult<Self>;
    fn write(&mut self, block: &InputBlock<'_>) -> PluginResult<()>;
    fn flush(&mut self) -> PluginResult<()> {
        Ok(())
    }
    fn finalize(&mut self) -> PluginResult<StorageReport>;
}

/// The format of the only input, or an error if there is not exactly one.
pub fn single_input(ctx: &StageContext<'_>) -> PluginResult<PortFormat> {
    match ctx.inputs.as_slice() {
        [one] => Ok(*one),
        other => Err(PluginError::format(format!(
            "takes exactly one input, got {}",
            other.len()
        ))),
    }
}

impl StageContext<'_> {
    /// Resolve a path from the config against the pipeline file's folder.
    pub fn resolve(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        if path.is_absolute() || self.base_dir.is_empty() {
            path.to_path_buf()
        } else {
            Path::new(self.base_dir.as_str()).join(path)
        }
    }

    /// The pipeline's format with `channels` channels.
    pub fn format(&self, channels: u32) -> PortFormat {
        PortFormat {
            channels,
            sample_rate: self.sample_rate,
        }
    }
}

impl InputBlock<'_> {
    /// The interleaved samples of this block (`frames * channels`).
    pub fn samples(&self) -> &[f32] {
        let n = self.frames as usize * self.channels as usize;
        &self.samples.as_slice()[..n]
    }

    pub fn is_discontinuity(&self) -> bool {
        self.flags & crate::abi::FLAG_DISCONTINUITY != 0
    }
}

impl OutputBlock<'_> {
    /// The interleaved samples for `frames` frames.
    pub fn samples_mut(&mut self) -> &mut [f32] {
        let n = self.frames as usize * self.channels as usize;
        &mut self.samples.as_mut_slice()[..n]
    }

    /// Frames this buffer can hold.
    pub fn capacity_frames(&self) -> u32 {
        (self.samples.len() / self.channels.max(1) as usize) as u32
    }

    /// Set how many frames were produced. Clamped to the capacity.
    pub fn set_frames(&mut self, frames: u32) {
        self.frames = frames.min(self.capacity_frames());
    }
}

/// Separates the errors of one config when [`parse_config`] found several: the host shows each
/// at its own key. (One `PluginError` carries them, so the ABI does not change; a host that does
/// not split shows them on one line.)
pub const ERROR_SEPARATOR: char = '\u{1e}';

/// Deserialize a plugin config from the JSON text the host passes, naming the offending key.
/// Every key that is wrong is reported, not only the first: after an error the key is set aside
/// and the rest read again (an unknown key, a value of the wrong type or out of its enum each
/// count once; a key the config cannot do without ends the search).
pub fn parse_config<C: DeserializeOwned>(text: &str) -> PluginResult<C> {
    let mut errors: Vec<(String, String)> = Vec::new();
    let mut value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Err(config_error(String::new(), e.to_string())),
    };
    loop {
        match serde_path_to_error::deserialize::<_, C>(&value) {
            Ok(c) if errors.is_empty() => return Ok(c),
            Ok(_) => break,
            Err(e) => {
                let key = e.path().to_string();
                let key = if key == "." { String::new() } else { key };
                let top = key.split(['.', '[']).next().unwrap_or("").to_string();
                let message = e.inner().to_string();
                let message = match message.find(" at line ") {
                    Some(i) => message[..i].to_string(),
                    None => message,
                };
                errors.push((key, message));
                // Set the key aside and look for more; without a key to set aside (a missing
                // key, a config that is not a table) the search ends here.
                let removed = value.as_object_mut().and_then(|o| o.remove(&top));
                if top.is_empty() || removed.is_none() || errors.len() >= 32 {
                    break;
                }
            }
        }
    }
    // A key the config needs (it was set aside above) is only a consequence: not reported.
    let first_keys: Vec<String> = errors.iter().map(|(k, _)| k.clone()).collect();
    errors.retain(|(k, m)| {
        !(k.is_empty()
            && m.starts_with("missing field `")
            && first_keys.iter().any(|f| m.contains(&format!("`{f}`"))))
    });
    let sep = ERROR_SEPARATOR.to_string();
    let keys: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
    let messages: Vec<&str> = errors.iter().map(|(_, m)| m.as_str()).collect();
    Err(config_error(keys.join(&sep), messages.join(&sep)))
}

fn config_error(key: String, message: String) -> PluginError {
    PluginError {
        kind: ErrorKind::InvalidConfig,
        message: message.into(),
        key: key.into(),
    }
}

/// Convert decibels to a linear factor.
pub fn db_to_gain(db: f32) -> f32 {
    10f32.powf(db / 20.0)
}

/// Convert a linear amplitude to dBFS (−∞ clamps to −200).
pub fn gain_to_db(gain: f32) -> f32 {
    if gain <= 1e-10 {
        -200.0
    } else {
        20.0 * gain.log10()
    }
}

#[cfg(test)]
mod parse_config_tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Config {
        level: Option<f32>,
        mode: Option<Mode>,
        seconds: f64,
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
    }

    #[test]
    fn every_wrong_key_is_reported_at_once_each_with_its_key() {
        let e =
            parse_config::<Config>(r#"{"levle": 1, "level": "x", "mode": "slow", "seconds": 1}"#)
                .unwrap_err();
        let keys: Vec<&str> = e.key.as_str().split(ERROR_SEPARATOR).collect();
        let messages: Vec<&str> = e.message.as_str().split(ERROR_SEPARATOR).collect();
        let mut pairs: Vec<(&str, &str)> = keys.into_iter().zip(messages).collect();
        pairs.sort();
        assert_eq!(pairs.len(), 3, "{pairs:?}");
        assert!(
            pairs[0].0 == "level" && pairs[0].1.starts_with("invalid type"),
            "{pairs:?}"
        );
        assert!(
            pairs[1].0 == "levle" && pairs[1].1.starts_with("unknown field"),
            "{pairs:?}"
        );
        assert!(
            pairs[2].0 == "mode" && pairs[2].1.starts_with("unknown variant"),
            "{pairs:?}"
        );
    }

    #[test]
    fn one_error_reads_as_before_and_a_missing_key_is_said_once() {
        let e = parse_config::<Config>(r#"{"level": 1}"#).unwrap_err();
        assert_eq!(e.key.as_str(), "");
        assert_eq!(e.message.as_str(), "missing field `seconds`");
        // A required key of the wrong type: reported as such, not also as missing.
        let e = parse_config::<Config>(r#"{"seconds": "one"}"#).unwrap_err();
        assert_eq!(e.key.as_str(), "seconds");
        assert!(
            !e.message.as_str().contains(ERROR_SEPARATOR),
            "{}",
            e.message
        );
        assert!(parse_config::<Config>(r#"{"seconds": 2}"#).is_ok());
    }
}
