//! The safe traits plugin authors implement.
//!
//! A plugin is a type implementing one of [`Capture`], [`Processor`] or [`Storage`], listed in
//! [`export_plugin!`](crate::export_plugin). The host owns every thread, lock, queue and
//! lifecycle decision; a plugin only answers calls. The wrapper the macro generates catches
//! panics (they become [`ErrorKind::Panicked`](crate::ErrorKind::Panicked) errors) and, in
//! debug builds, reports allocations made on the audio path.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::abi::{
    ContextFields, InputBlock, Level, OutputBlock, OutputPort, PluginError, PluginManifest,
    PortFormat, ReadStatus, StorageReport, FLAG_DISCONTINUITY, FLAG_END_OF_STREAM,
};

/// Result type of every plugin call.
pub type PluginResult<T> = Result<T, PluginError>;

/// What every plugin declares about itself, whatever its kind.
pub trait Describe {
    /// The config table's type. Deserialized from the stage's table in the pipeline file; a
    /// key its JSON Schema does not list is refused at that key (with or without
    /// `#[serde(deny_unknown_fields)]`), every wrong key at once. Doc comments on its fields
    /// become the descriptions `tapeline plugins inspect` and editors show.
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
    /// Names of the counters the stage reports while it runs (a capture's xruns, a writer's
    /// bytes and syncs), in the order [`stats`](Describe::stats) fills them; empty: none. They
    /// appear as `stats` in monitoring snapshots (`--metrics`) and in the run summary (under
    /// the stage's line, and in `--summary-json`).
    const STATS: &'static [&'static str] = &[];
    /// Fill `values` (one per name in [`STATS`](Describe::STATS)) with the counters' current
    /// values. Called by the host on the stage's thread between audio calls: must not
    /// allocate, lock or block.
    fn stats(&self, _values: &mut [u64]) {}
    /// Only in the test fixture of a later 1.x API (`crate::next`): the plugin's tags.
    #[cfg(tapeline_api_next)]
    const TAGS: &'static str = "";
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
    /// Fill `out` with up to [`out.frames()`](OutputBlock::frames) frames (preset by the host to
    /// the block size, never more than [`OutputBlock::capacity_frames`]) and
    /// [set](OutputBlock::set_frames) how many were written.
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
            out.set_frames(0);
        }
        Ok(())
    }
    /// Levels to show in monitoring, one per channel; empty when the plugin measures nothing.
    fn levels(&self) -> &[Level] {
        &[]
    }
    /// Only in the test fixture of a later 1.x API (`crate::next`): frames of delay.
    #[cfg(tapeline_api_next)]
    fn latency_frames(&self) -> u32 {
        0
    }
}

/// A sink that keeps audio: a file writer, a counter.
///
/// `write` is called on the stage's own thread for every block, in order; `flush` when the host
/// wants what was written so far made durable; `finalize` once at the end, also after errors and
/// on shutdown, so that what was recorded is kept.
pub trait Storage: Describe + Sized + Send + 'static {
    /// Check the configuration against the input format. Validation only: create nothing here,
    /// but do report an output that cannot be written (an existing take is better refused in `new`,
    /// so that validating a pipeline does not fail because it already ran once).
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
    match ctx.inputs() {
        [one] => Ok(*one),
        other => Err(PluginError::format(format!(
            "takes exactly one input, got {}",
            other.len()
        ))),
    }
}

/// What the host tells a stage about where it runs: its id, the pipeline's rate and block
/// size, the pipeline file's folder, its inputs' formats. Valid for the duration of one call
/// (`outputs`, `check`, `new`); keep copies of what you need.
#[derive(Debug, Clone, Copy)]
pub struct StageContext<'a> {
    fields: ContextFields<'a>,
    /// Fields the host's context has (fields of this crate's it lacks hold defaults).
    #[cfg_attr(not(tapeline_api_next), allow(dead_code))]
    host_fields: usize,
}

/// Fields of [`ContextFields`] in API 1.0: every 1.x host's context has at least these.
pub(crate) const FIELDS_1_0: usize = 5;

/// The host context layout last found compatible, and how many fields it has: the check runs
/// once per host, not once per call.
static ACCEPTED: std::sync::Mutex<Option<(usize, usize)>> = std::sync::Mutex::new(None);

impl<'a> StageContext<'a> {
    /// The context a host passed, checked: the host's context must begin with the fields this
    /// crate knows, each of the same type (a later 1.x host may have more; they are not read).
    pub(crate) fn from_host(ctx: crate::abi::ContextRef<'a>) -> PluginResult<Self> {
        let host_fields = accept(ctx.layout)?;
        if host_fields < FIELDS_1_0 {
            return Err(PluginError::other(format!(
                "the host's stage context has {host_fields} fields, fewer than API 1.0's \
                 {FIELDS_1_0}: the host is not a 1.x host"
            )));
        }
        // SAFETY: `accept` checked that the host's struct begins with the fields of
        // `ContextFields`, with the same layouts, and has at least all of API 1.0's, which are
        // all of them in 1.0; `data` is valid for `'a` (the call), as `ContextRef` says.
        #[cfg(not(tapeline_api_next))]
        let fields = unsafe { *ctx.data.cast::<ContextFields<'a>>() };
        // SAFETY: as above; a later version's fields are read only when the host has them.
        #[cfg(tapeline_api_next)]
        let fields = unsafe { crate::next::read_fields(ctx.data, host_fields) };
        Ok(StageContext {
            fields,
            host_fields,
        })
    }

    /// A context made of these fields (the testing module's).
    pub(crate) fn from_fields(fields: ContextFields<'a>) -> Self {
        let all = <ContextFields<'static> as abi_stable::StableAbi>::LAYOUT.get_fields();
        StageContext {
            fields,
            host_fields: all.map_or(0, |f| f.len()),
        }
    }

    /// Only in the test fixture of a later 1.x API (`crate::next`): the host's tag, when the
    /// host's context has the field (a 1.1 host); none from a 1.0 host.
    #[cfg(tapeline_api_next)]
    pub fn host_tag(&self) -> Option<&'a str> {
        (self.host_fields > FIELDS_1_0).then(|| self.fields.host_tag.as_str())
    }

    /// The fields as they cross to a plugin (the testing module's).
    pub(crate) fn fields(&self) -> &ContextFields<'a> {
        &self.fields
    }

    /// The stage id from the pipeline file (`[process.ID]`).
    pub fn stage_id(&self) -> &'a str {
        self.fields.stage_id.as_str()
    }

    /// The pipeline file's folder, against which relative paths in the config resolve (see
    /// [`resolve`](Self::resolve)). Empty when the host has none to give.
    pub fn base_dir(&self) -> &'a Path {
        Path::new(self.fields.base_dir.as_str())
    }

    /// The formats arriving on each input port, in the order of the stage's `inputs` (empty
    /// for a capture).
    pub fn inputs(&self) -> &'a [PortFormat] {
        self.fields.inputs.as_slice()
    }

    /// The pipeline's sample rate.
    pub fn sample_rate(&self) -> u32 {
        self.fields.sample_rate
    }

    /// Frames per block the host uses on capture outputs.
    pub fn block_frames(&self) -> u32 {
        self.fields.block_frames
    }

    /// Resolve a path from the config against the pipeline file's folder.
    pub fn resolve(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        if path.is_absolute() || self.fields.base_dir.is_empty() {
            path.to_path_buf()
        } else {
            self.base_dir().join(path)
        }
    }

    /// The pipeline's format with `channels` channels.
    pub fn format(&self, channels: u32) -> PortFormat {
        PortFormat {
            channels,
            sample_rate: self.fields.sample_rate,
        }
    }
}

/// How many fields the host's context (of layout `host`) has, once it is known to begin with
/// this crate's [`ContextFields`]; an error naming the first field that differs otherwise.
fn accept(host: &'static abi_stable::type_layout::TypeLayout) -> PluginResult<usize> {
    let key = host as *const _ as usize;
    let mut accepted = ACCEPTED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((k, n)) = *accepted {
        if k == key {
            return Ok(n);
        }
    }
    let mine = <ContextFields<'static> as abi_stable::StableAbi>::LAYOUT;
    let n = crate::extension::prefix_of(mine, host)
        .map_err(|e| PluginError::other(format!("the host's stage context does not match: {e}")))?;
    *accepted = Some((key, n));
    Ok(n)
}

/// Asserts that `channel` is one of `channels`, for the per-channel views.
fn check_channel(channel: usize, channels: u32) -> usize {
    let channels = channels as usize;
    assert!(
        channel < channels,
        "channel {channel} of a block with {channels} channel(s)"
    );
    channels
}

impl<'a> InputBlock<'a> {
    /// The interleaved samples of this block (`frames * channels`).
    pub fn samples(&self) -> &'a [f32] {
        let n = self.frames as usize * self.channels as usize;
        &self.samples.as_slice()[..n]
    }

    /// Frames in this block. Blocks vary in size: a short one is not the end of the stream.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Samples per frame.
    pub fn channels(&self) -> u32 {
        self.channels
    }

    /// Frame index of the first frame since the stream started.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The block's flags ([`FLAG_DISCONTINUITY`], [`FLAG_END_OF_STREAM`]).
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// The audio before this block is not contiguous with it (a gap after a recovered device
    /// loss): [`FLAG_DISCONTINUITY`] is set.
    pub fn is_discontinuity(&self) -> bool {
        self.flags & FLAG_DISCONTINUITY != 0
    }

    /// Every input has ended: [`FLAG_END_OF_STREAM`] is set. A processor never sees such a
    /// block in `process` (the SDK calls [`Processor::finish`] instead).
    pub fn is_end_of_stream(&self) -> bool {
        self.flags & FLAG_END_OF_STREAM != 0
    }

    /// The samples of one channel (0-based), one per frame: a planar view of the interleaved
    /// block.
    ///
    /// # Panics
    ///
    /// If `channel` is not below [`channels`](Self::channels), as indexing out of bounds does.
    pub fn channel(
        &self,
        channel: usize,
    ) -> impl ExactSizeIterator<Item = f32> + DoubleEndedIterator + 'a {
        let step = check_channel(channel, self.channels);
        let samples = self.samples().get(channel..).unwrap_or_default();
        samples.iter().step_by(step).copied()
    }

    /// The same block with `position` set (for tests; the host sets it).
    pub fn with_position(mut self, position: u64) -> Self {
        self.position = position;
        self
    }

    /// The same block with `flags` set (for tests; the host sets them).
    pub fn with_flags(mut self, flags: u32) -> Self {
        self.flags = flags;
        self
    }
}

impl OutputBlock<'_> {
    /// The interleaved samples for `frames` frames.
    pub fn samples_mut(&mut self) -> &mut [f32] {
        let n = self.frames as usize * self.channels as usize;
        &mut self.samples.as_mut_slice()[..n]
    }

    /// The interleaved samples for `frames` frames, read back (what was written).
    pub fn samples(&self) -> &[f32] {
        let n = self.frames as usize * self.channels as usize;
        &self.samples.as_slice()[..n]
    }

    /// The whole buffer, [`capacity_frames`](Self::capacity_frames) frames, whatever `frames`
    /// says: for a plugin that writes first and then [sets](Self::set_frames) how many frames
    /// it wrote.
    pub fn buffer_mut(&mut self) -> &mut [f32] {
        let n = self.capacity_frames() as usize * self.channels as usize;
        &mut self.samples.as_mut_slice()[..n]
    }

    /// Frames this buffer can hold.
    pub fn capacity_frames(&self) -> u32 {
        (self.samples.len() / self.channels.max(1) as usize) as u32
    }

    /// Frames produced: preset by the host (to the input's frame count for processors, to the
    /// block size for captures, to 0 in [`Processor::finish`]) until the plugin
    /// [sets](Self::set_frames) it.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Set how many frames were produced. Clamped to [`capacity_frames`](Self::capacity_frames):
    /// a larger count sets the capacity.
    pub fn set_frames(&mut self, frames: u32) {
        self.frames = frames.min(self.capacity_frames());
    }

    /// Samples per frame.
    pub fn channels(&self) -> u32 {
        self.channels
    }

    /// Frame index of the block's first frame in this output's stream.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Set the frame index of the block's first frame (a capture numbering its own stream, a
    /// processor whose output runs at another rate).
    pub fn set_position(&mut self, position: u64) {
        self.position = position;
    }

    /// The block's flags, e.g. [`FLAG_DISCONTINUITY`].
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Set the block's flags, e.g. [`FLAG_DISCONTINUITY`] after a gap.
    pub fn set_flags(&mut self, flags: u32) {
        self.flags = flags;
    }

    /// One channel (0-based) of the `frames` frames, one sample per frame, to write: a planar
    /// view of the interleaved buffer.
    ///
    /// ```ignore
    /// for (o, i) in out.channel_mut(1).zip(input.channel(0)) {
    ///     *o = i;
    /// }
    /// ```
    ///
    /// # Panics
    ///
    /// If `channel` is not below [`channels`](Self::channels), as indexing out of bounds does.
    pub fn channel_mut(
        &mut self,
        channel: usize,
    ) -> impl ExactSizeIterator<Item = &mut f32> + DoubleEndedIterator + '_ {
        let step = check_channel(channel, self.channels);
        let samples = self.samples_mut().get_mut(channel..).unwrap_or_default();
        samples.iter_mut().step_by(step)
    }

    /// The same buffer with `frames` preset to `frames`, clamped to the capacity (for tests;
    /// the host presets it).
    pub fn with_frames(mut self, frames: u32) -> Self {
        self.set_frames(frames);
        self
    }

    /// The same buffer with `position` preset (for tests; the host presets it).
    pub fn with_position(mut self, position: u64) -> Self {
        self.position = position;
        self
    }
}

impl OutputPort {
    /// The port's canonical name (`out`, `0`, `1`, ...).
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The port's second name (`left`, `right`), if it has one.
    pub fn alias(&self) -> Option<&str> {
        (!self.alias.is_empty()).then_some(self.alias.as_str())
    }
}

impl StorageReport {
    /// A report of no frames and no files.
    pub fn new() -> Self {
        Self::default()
    }

    /// The report with `frames_written` set to `frames`.
    pub fn frames(mut self, frames: u64) -> Self {
        self.frames_written = frames;
        self
    }

    /// The report with `path` added to its files (shown as [`Path::display`] shows it).
    pub fn file(mut self, path: impl AsRef<Path>) -> Self {
        self.push_file(path);
        self
    }

    /// Add `path` to the report's files (shown as [`Path::display`] shows it).
    pub fn push_file(&mut self, path: impl AsRef<Path>) {
        self.files.push(path.as_ref().display().to_string().into());
    }

    /// Frames the stage kept.
    pub fn frames_written(&self) -> u64 {
        self.frames_written
    }

    /// The files written, as paths, in the order they were added.
    pub fn files(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.files.iter().map(|f| f.as_str())
    }
}

impl PluginManifest {
    /// The name pipeline files use in `plugin = "..."`.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The version of the crate the plugin was built from.
    pub fn version(&self) -> &str {
        self.version.as_str()
    }

    /// One line about the plugin.
    pub fn description(&self) -> &str {
        self.description.as_str()
    }

    /// Summary of the output ports.
    pub fn outputs(&self) -> &str {
        self.outputs.as_str()
    }

    /// JSON Schema of the plugin's config table, as text.
    pub fn config_schema(&self) -> &str {
        self.config_schema.as_str()
    }
}

/// Separates the errors of one config when [`parse_config`] found several: the host shows each
/// at its own key. (One `PluginError` carries them, so the ABI does not change; a host that does
/// not split shows them on one line.)
pub const ERROR_SEPARATOR: char = '\u{1e}';

/// Deserialize a plugin config from the JSON text the host passes, naming the offending key.
/// Every key that is wrong is reported, not only the first: after an error the key is set aside
/// and the rest read again (an unknown key, a value of the wrong type or out of its enum each
/// count once; a key the config cannot do without ends the search). A key the config's schema
/// does not list is unknown whether or not the type says `#[serde(deny_unknown_fields)]`.
pub fn parse_config<C: DeserializeOwned + JsonSchema>(text: &str) -> PluginResult<C> {
    let mut value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Err(PluginError::config("", e.to_string())),
    };
    let mut errors = unknown_keys::<C>(&mut value);
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
    Err(PluginError::config(&keys.join(&sep), messages.join(&sep)))
}

/// The top-level keys of `value` the schema of `C` does not list, taken out of it, each with
/// serde's message for an unknown field. None when the schema allows other keys (a map, an
/// enum of tables): then serde decides.
fn unknown_keys<C: JsonSchema>(value: &mut serde_json::Value) -> Vec<(String, String)> {
    let schema = serde_json::to_value(schemars::schema_for!(C)).unwrap_or_default();
    let closed = schema
        .get("additionalProperties")
        .is_none_or(|a| a == false);
    let (Some(known), Some(given), true) = (
        schema.get("properties").and_then(|p| p.as_object()),
        value.as_object_mut(),
        closed,
    ) else {
        return Vec::new();
    };
    let unknown: Vec<String> = given
        .keys()
        .filter(|k| !known.contains_key(*k))
        .cloned()
        .collect();
    let expected: Vec<String> = known.keys().map(|k| format!("`{k}`")).collect();
    unknown
        .into_iter()
        .map(|k| {
            given.remove(&k);
            let message = match expected.len() {
                0 => format!("unknown field `{k}`, there are no fields"),
                _ => format!(
                    "unknown field `{k}`, expected one of {}",
                    expected.join(", ")
                ),
            };
            (k, message)
        })
        .collect()
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

    #[derive(Deserialize, JsonSchema, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Config {
        level: Option<f32>,
        mode: Option<Mode>,
        seconds: f64,
    }

    #[derive(Deserialize, JsonSchema, Debug)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
    }

    /// As an author who forgot `deny_unknown_fields` writes it.
    #[derive(Deserialize, JsonSchema, Debug)]
    #[allow(dead_code)]
    struct Forgetful {
        #[serde(default)]
        level: f32,
        #[serde(rename = "max-db", default)]
        max_db: f32,
    }

    #[test]
    fn an_unknown_key_is_refused_without_deny_unknown_fields_each_at_its_key() {
        let e = parse_config::<Forgetful>(r#"{"levle": 1, "max-db": 2, "maxdb": 3}"#).unwrap_err();
        let keys: Vec<&str> = e.key.as_str().split(ERROR_SEPARATOR).collect();
        assert_eq!(keys, ["levle", "maxdb"], "{e:?}");
        assert!(
            e.message
                .as_str()
                .starts_with("unknown field `levle`, expected one of `level`, `max-db`"),
            "{e:?}"
        );
        assert!(parse_config::<Forgetful>(r#"{"level": 1, "max-db": 2}"#).is_ok());
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

#[cfg(test)]
mod accessor_tests {
    use std::path::Path;

    use super::*;
    use crate::testing::{context, input, output};

    const STEREO: PortFormat = PortFormat {
        channels: 2,
        sample_rate: 44_100,
    };

    #[test]
    fn the_context_reads_as_plain_rust() {
        let c = context(&[STEREO, STEREO])
            .with_stage_id("mic")
            .with_base_dir("/rec")
            .with_sample_rate(96_000)
            .with_block_frames(64);
        let ctx = c.get();
        assert_eq!(ctx.stage_id(), "mic");
        assert_eq!(ctx.base_dir(), Path::new("/rec"));
        assert_eq!(ctx.inputs(), &[STEREO, STEREO]);
        assert_eq!((ctx.sample_rate(), ctx.block_frames()), (96_000, 64));
        assert_eq!(ctx.resolve("a.wav"), Path::new("/rec/a.wav"));
        let none = context(&[]).with_base_dir("");
        assert_eq!(none.get().base_dir(), Path::new(""));
        assert_eq!(none.get().resolve("a.wav"), Path::new("a.wav"));
    }

    #[test]
    fn an_input_block_reads_by_frame_and_by_channel() {
        let samples = [0.0, 1.0, 2.0, 10.0, 11.0, 12.0];
        let block = input(&samples, 3)
            .with_position(960)
            .with_flags(FLAG_DISCONTINUITY);
        assert_eq!((block.frames(), block.channels()), (2, 3));
        assert_eq!((block.position(), block.flags()), (960, FLAG_DISCONTINUITY));
        assert!(block.is_discontinuity() && !block.is_end_of_stream());
        assert_eq!(block.samples(), &samples);
        assert_eq!(block.channel(0).collect::<Vec<_>>(), [0.0, 10.0]);
        assert_eq!(block.channel(2).rev().collect::<Vec<_>>(), [12.0, 2.0]);
        assert_eq!(block.channel(1).len(), 2);
        assert_eq!(input(&[], 2).channel(1).count(), 0);
        let end = input(&[], 1).with_flags(FLAG_END_OF_STREAM);
        assert!(end.is_end_of_stream() && !end.is_discontinuity());
    }

    #[test]
    #[should_panic(expected = "channel 2 of a block with 2 channel(s)")]
    fn a_channel_past_the_last_panics() {
        drop(input(&[0.0; 4], 2).channel(2));
    }

    #[test]
    fn an_output_block_writes_by_channel_within_its_frames() {
        let mut buffer = [0.0f32; 8];
        let mut out = output(&mut buffer, 2).with_frames(3).with_position(7);
        assert_eq!(
            (out.frames(), out.capacity_frames(), out.position()),
            (3, 4, 7)
        );
        for (i, s) in out.channel_mut(1).enumerate() {
            *s = i as f32 + 1.0;
        }
        assert_eq!(out.samples(), &[0.0, 1.0, 0.0, 2.0, 0.0, 3.0]);
        out.set_frames(100);
        assert_eq!(out.frames(), 4, "clamped to the capacity");
        out.set_frames(1);
        assert_eq!(out.channel_mut(0).len(), 1);
        assert_eq!(out.buffer_mut().len(), 8, "the whole capacity");
        out.set_position(9);
        out.set_flags(FLAG_DISCONTINUITY);
        assert_eq!((out.position(), out.flags()), (9, FLAG_DISCONTINUITY));
        assert_eq!(output(&mut [0.0; 5], 2).buffer_mut().len(), 4);
    }

    #[test]
    #[should_panic(expected = "channel 1 of a block with 1 channel(s)")]
    fn an_output_channel_past_the_last_panics() {
        let mut buffer = [0.0f32; 4];
        drop(output(&mut buffer, 1).channel_mut(1));
    }

    #[test]
    fn a_storage_report_builds_in_plain_rust() {
        let empty = StorageReport::new();
        assert_eq!(empty, StorageReport::default());
        assert_eq!((empty.frames_written(), empty.files().len()), (0, 0));
        let mut report = StorageReport::new()
            .frames(480)
            .file("a.wav")
            .file(Path::new("/rec/b.wav"));
        report.push_file("c.wav");
        assert_eq!(report.frames_written(), 480);
        assert_eq!(
            report.files().collect::<Vec<_>>(),
            ["a.wav", "/rec/b.wav", "c.wav"]
        );
    }

    #[test]
    fn ports_read_as_plain_rust() {
        let port = OutputPort::new("0", STEREO);
        assert_eq!((port.name(), port.alias()), ("0", None));
        assert_eq!(port.with_alias("left").alias(), Some("left"));
    }
}
