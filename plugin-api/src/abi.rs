//! The types that cross the library boundary.

// abi_stable's `#[sabi_trait]` expands to impls nested in a const, which this lint flags.
#![allow(non_local_definitions)]
//!
//! Everything here is `#[repr(C)]` and derives `StableAbi`, so the host checks at load time that a
//! plugin library was built against the same layout. Plugin authors rarely name these types
//! directly: the safe traits in [`crate::sdk`] and the [`export_plugin!`](crate::export_plugin)
//! macro produce them.

use std::ffi::c_void;
use std::fmt;
use std::marker::PhantomData;

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, ROption, RResult, RSlice, RSliceMut, RStr, RString, RVec},
    type_layout::TypeLayout,
    StableAbi,
};

/// Which role a plugin plays in a pipeline.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginKind {
    /// Produces audio: a device, a file reader, a generator. Listed under `[capture.ID]`.
    Capture = 0,
    /// Transforms audio. Listed under `[process.ID]`.
    Process = 1,
    /// Consumes audio and keeps it. Listed under `[storage.ID]`.
    Storage = 2,
}

impl PluginKind {
    /// The table name used for this kind in pipeline files.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Capture => "capture",
            PluginKind::Process => "process",
            PluginKind::Storage => "storage",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong inside a plugin, as far as the host needs to know to react.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The stage's configuration is wrong. Retrying cannot help; the pipeline file must change.
    InvalidConfig = 0,
    /// The stage cannot handle the channel count or sample rate it was given.
    UnsupportedFormat = 1,
    /// The audio device went away. A restart may help once it is back.
    DeviceLost = 2,
    /// Reading or writing a file or device failed. A restart may help if the cause was transient.
    Io = 3,
    /// The plugin panicked; the message carries the panic text and location.
    Panicked = 4,
    /// Anything else.
    Other = 5,
    /// Set by the host, never by a plugin: a stage running in its own process (`isolate =
    /// true`) died (a signal, an exit, a limit) or was killed by the watchdog in a call that
    /// did not return. A restart starts a fresh process.
    Crashed = 6,
}

impl ErrorKind {
    /// The kind a code on the wire stands for; a code this crate does not know (a kind added
    /// by a later 1.x version) is [`ErrorKind::Other`].
    pub fn from_code(code: u8) -> ErrorKind {
        match code {
            0 => ErrorKind::InvalidConfig,
            1 => ErrorKind::UnsupportedFormat,
            2 => ErrorKind::DeviceLost,
            3 => ErrorKind::Io,
            4 => ErrorKind::Panicked,
            6 => ErrorKind::Crashed,
            _ => ErrorKind::Other,
        }
    }

    /// A short lowercase name, as used in pipeline files (`error_kind = "io"`) and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidConfig => "invalid-config",
            ErrorKind::UnsupportedFormat => "unsupported-format",
            ErrorKind::DeviceLost => "device-lost",
            ErrorKind::Io => "io",
            ErrorKind::Panicked => "panicked",
            ErrorKind::Other => "other",
            ErrorKind::Crashed => "crashed",
        }
    }
}

/// An error returned by a plugin: a kind the host can act on, a message for people, and, for
/// configuration errors, the config key it concerns (empty when none) so the host can point at it
/// in the pipeline file.
///
/// The kind crosses as its code (a `u8`), so that a kind added in a later 1.x version reaches
/// an older host as [`ErrorKind::Other`] instead of a value its enum cannot hold.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    code: u8,
    pub message: RString,
    pub key: RString,
}

impl PluginError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PluginError {
            code: kind as u8,
            message: RString::from(message.into()),
            key: RString::new(),
        }
    }

    /// What went wrong, as far as the host needs to know to react.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::from_code(self.code)
    }

    /// The same error about config key `key` (empty: none).
    pub fn with_key(mut self, key: &str) -> Self {
        self.key = key.into();
        self
    }

    /// The same error with another kind (part of the 1.0 SDK, for plugins that map one kind
    /// of failure to another).
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.code = kind as u8;
        self
    }

    /// An invalid-config error about one key of the stage's table.
    pub fn config(key: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidConfig, message).with_key(key)
    }

    pub fn format(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UnsupportedFormat, message)
    }

    pub fn io(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, message)
    }

    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Other, message)
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The config key this error concerns, if any.
    pub fn key(&self) -> Option<&str> {
        (!self.key.is_empty()).then_some(self.key.as_str())
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

impl From<std::io::Error> for PluginError {
    fn from(e: std::io::Error) -> Self {
        PluginError::io(e.to_string())
    }
}

/// The format of audio on one port.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortFormat {
    pub channels: u32,
    pub sample_rate: u32,
}

impl fmt::Display for PortFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ch = match self.channels {
            1 => "mono".to_string(),
            2 => "stereo".to_string(),
            n => format!("{n} channels"),
        };
        write!(f, "{ch} at {} Hz", self.sample_rate)
    }
}

/// One output port a stage declares once it knows its configuration and inputs.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct OutputPort {
    /// Canonical name (`out`, `0`, `1`, ...).
    pub name: RString,
    /// A second name for the same port (`left`, `right`), or empty.
    pub alias: RString,
    pub format: PortFormat,
    /// Most frames one block on this port can hold; 0 means the pipeline's `block_frames`.
    pub max_frames: u32,
}

impl OutputPort {
    pub fn new(name: &str, format: PortFormat) -> Self {
        OutputPort {
            name: name.into(),
            alias: RString::new(),
            format,
            max_frames: 0,
        }
    }

    pub fn with_alias(mut self, alias: &str) -> Self {
        self.alias = alias.into();
        self
    }

    pub fn with_max_frames(mut self, frames: u32) -> Self {
        self.max_frames = frames;
        self
    }
}

/// What the host tells a stage about where it runs: the fields of API 1.0, frozen.
///
/// A later 1.x host may append fields; its context crosses as a [`ContextRef`] (its address
/// and its layout), never as this type, so the root module's layout does not depend on it.
/// The SDK checks on the plugin's side that the host's context begins with these fields and
/// copies them into its [`StageContext`](crate::StageContext).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct ContextFields<'a> {
    /// The stage id from the pipeline file (`[process.ID]`).
    pub stage_id: RStr<'a>,
    /// The pipeline's sample rate.
    pub sample_rate: u32,
    /// Frames per block the host uses on capture outputs.
    pub block_frames: u32,
    /// Folder of the pipeline file; relative paths in the config resolve against it.
    pub base_dir: RStr<'a>,
    /// The formats arriving on each input port, in the order of the stage's `inputs`.
    pub inputs: RSlice<'a, PortFormat>,
    /// Only in the test fixture of a later 1.x API (`crate::next`): a field a 1.1 host adds.
    #[cfg(tapeline_api_next)]
    pub host_tag: RStr<'a>,
}

/// The host's context as it crosses the boundary: the address of the host's context struct
/// and that struct's layout. Valid for the duration of one call.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct ContextRef<'a> {
    /// The layout of the struct `data` points to: [`ContextFields`], possibly with more fields
    /// at its end (a later 1.x host).
    pub layout: &'static TypeLayout,
    pub data: *const c_void,
    pub lifetime: PhantomData<&'a ()>,
}

impl<'a> ContextRef<'a> {
    /// The reference to a host context of this crate's [`ContextFields`].
    pub fn new(fields: &'a ContextFields<'a>) -> Self {
        ContextRef {
            layout: <ContextFields<'static> as StableAbi>::LAYOUT,
            data: (fields as *const ContextFields<'a>).cast(),
            lifetime: PhantomData,
        }
    }
}

/// A table of functions one side offers the other, found at run time by name and version, as
/// CLAP's extensions are: everything added to the API after 1.0 is one. `layout` is the
/// table's layout, which the side that uses it checks against its own copy of the table type
/// before it reads `table`; a side that does not know the name answers none, and the other
/// does without.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct RawExtension {
    pub layout: &'static TypeLayout,
    /// The table (a `#[repr(C)]` struct of `extern "C"` functions).
    pub table: *const c_void,
    /// What the table's functions take as their first argument: the instance for an
    /// instance's extension, null for a library's.
    pub instance: *const c_void,
}

impl RawExtension {
    /// The answer for `table` (its layout taken from its type), whose functions take
    /// `instance` (null for a library's extension).
    pub fn new<T: StableAbi>(table: &'static T, instance: *const c_void) -> Self {
        RawExtension {
            layout: T::LAYOUT,
            table: (table as *const T).cast(),
            instance,
        }
    }
}

/// The name of the stats extension: a stage's own counters ([`StatsV1`], version 1).
pub const STATS_EXTENSION: &str = "tapeline.stats";

/// Extension `tapeline.stats`, version 1: a stage's own counters (a capture's xruns and gaps, a
/// writer's bytes and syncs), read by the host from the stage's thread between audio calls and
/// shown in monitoring while the run goes on.
#[repr(C)]
#[derive(StableAbi)]
pub struct StatsV1 {
    /// The counters' names, in the order `read` fills them. Called once per instance.
    pub names: extern "C" fn(instance: *const c_void) -> RVec<RString>,
    /// Fills `out` with the counters' current values (at most `out.len()`) and returns how
    /// many it wrote. Must not allocate, lock or block.
    pub read: extern "C" fn(instance: *const c_void, out: RSliceMut<'_, u64>) -> u32,
}

/// Accepted input port count of a plugin.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortCount {
    pub min: u32,
    #[cfg(not(tapeline_abi_drift))]
    pub max: u32,
    /// Only in the test fixture that proves layout mismatches are caught.
    #[cfg(tapeline_abi_drift)]
    pub max: u64,
}

/// The static description of one plugin in a library.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct PluginManifest {
    pub name: RString,
    pub kind: PluginKind,
    pub version: RString,
    /// One line.
    pub description: RString,
    /// How many inputs the plugin takes (0 for captures).
    pub inputs: PortCount,
    /// Human-readable summary of the output ports (`out`, or `0..N-1 (left/right for stereo)`).
    pub outputs: RString,
    /// Channel counts it accepts or produces (inclusive range).
    pub channels: PortCount,
    /// Sample rates it accepts; empty means any.
    pub sample_rates: RVec<u32>,
    /// JSON Schema of the plugin's config table.
    pub config_schema: RString,
    /// A live source (an audio device) whose producer must never wait: the edge right behind
    /// it defaults to `drop-oldest`.
    pub live: bool,
}

/// Flag on a block: the audio before it is not contiguous with this block (e.g. a gap after a
/// recovered device loss).
pub const FLAG_DISCONTINUITY: u32 = 1;

/// Flag on every input of a processor's last call(s): every input has ended. The inputs hold no
/// frames and each output starts at zero frames; a processor with a tail (a resampler's filter
/// delay, a reverb) writes it there. The host repeats the call while any output gets frames, up
/// to [`MAX_TAIL_CALLS`] times. The SDK turns such a call into [`crate::Processor::finish`].
pub const FLAG_END_OF_STREAM: u32 = 2;

/// Most end-of-stream calls the host makes to one processor.
pub const MAX_TAIL_CALLS: u32 = 64;

/// A block of interleaved `f32` audio lent to a plugin for the duration of one call.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct InputBlock<'a> {
    pub samples: RSlice<'a, f32>,
    pub frames: u32,
    pub channels: u32,
    /// Frame index of the first frame since the stream started.
    pub position: u64,
    pub flags: u32,
}

/// A host-owned buffer a plugin writes interleaved `f32` audio into.
///
/// `frames` is preset by the host (to the input's frame count for processors, to the capacity for
/// captures); a plugin that produces a different number of frames sets it.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct OutputBlock<'a> {
    pub samples: RSliceMut<'a, f32>,
    pub frames: u32,
    pub channels: u32,
    pub position: u64,
    pub flags: u32,
}

/// Peak and RMS level of one channel, in dBFS.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq)]
pub struct Level {
    pub peak_db: f32,
    pub rms_db: f32,
}

/// What a capture's `read` produced.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStatus {
    /// `frames` frames were written; more will follow.
    More = 0,
    /// `frames` frames (possibly zero) were written and the source has ended.
    Finished = 1,
}

/// What a storage stage reports when finalised.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageReport {
    pub frames_written: u64,
    /// Files written, as paths.
    pub files: RVec<RString>,
}

/// A capture instance, as the host sees it.
#[sabi_trait]
pub trait CaptureObj: Send {
    fn start(&mut self) -> RResult<(), PluginError>;
    fn read<'a>(&mut self, out: &mut OutputBlock<'a>) -> RResult<ReadStatus, PluginError>;
    fn stop(&mut self) -> RResult<(), PluginError>;
    fn length_frames(&self) -> ROption<u64>;
    /// The instance's extension `name` at `version`, if it has it ([`RawExtension`]).
    #[sabi(last_prefix_field)]
    fn extension(&self, name: RStr<'_>, version: u32) -> ROption<RawExtension>;
}

/// A processor instance, as the host sees it.
#[sabi_trait]
pub trait ProcessorObj: Send {
    /// `'a` is the audio buffers' lifetime, `'b` the lists' (shorter), so the host can read back
    /// `frames`, `position` and `flags` of each output after the call.
    fn process<'a, 'b>(
        &mut self,
        inputs: RSlice<'b, InputBlock<'a>>,
        outputs: RSliceMut<'b, OutputBlock<'a>>,
    ) -> RResult<(), PluginError>;
    fn levels(&self) -> RSlice<'_, Level>;
    /// The instance's extension `name` at `version`, if it has it ([`RawExtension`]).
    #[sabi(last_prefix_field)]
    fn extension(&self, name: RStr<'_>, version: u32) -> ROption<RawExtension>;
}

/// A storage instance, as the host sees it.
#[sabi_trait]
pub trait StorageObj: Send {
    fn write<'a>(&mut self, block: &InputBlock<'a>) -> RResult<(), PluginError>;
    fn flush(&mut self) -> RResult<(), PluginError>;
    fn finalize(&mut self) -> RResult<StorageReport, PluginError>;
    /// The instance's extension `name` at `version`, if it has it ([`RawExtension`]).
    #[sabi(last_prefix_field)]
    fn extension(&self, name: RStr<'_>, version: u32) -> ROption<RawExtension>;
}

pub type CaptureBox = CaptureObj_TO<'static, RBox<()>>;
pub type ProcessorBox = ProcessorObj_TO<'static, RBox<()>>;
pub type StorageBox = StorageObj_TO<'static, RBox<()>>;

/// The root module every plugin library exports (generated by `export_plugin!`).
///
/// Config crosses as JSON text; the plugin deserializes it into its own typed struct.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginLibraryRef)))]
#[sabi(missing_field(panic))]
pub struct PluginLibrary {
    /// Every plugin this library holds.
    pub manifests: extern "C" fn() -> RVec<PluginManifest>,
    /// Validates `config` for plugin `name` given the context, and returns its output ports.
    pub layout: extern "C" fn(
        name: RStr<'_>,
        config: RStr<'_>,
        ctx: ContextRef<'_>,
    ) -> RResult<RVec<OutputPort>, PluginError>,
    pub new_capture: extern "C" fn(
        name: RStr<'_>,
        config: RStr<'_>,
        ctx: ContextRef<'_>,
    ) -> RResult<CaptureBox, PluginError>,
    pub new_processor: extern "C" fn(
        name: RStr<'_>,
        config: RStr<'_>,
        ctx: ContextRef<'_>,
    ) -> RResult<ProcessorBox, PluginError>,
    pub new_storage: extern "C" fn(
        name: RStr<'_>,
        config: RStr<'_>,
        ctx: ContextRef<'_>,
    ) -> RResult<StorageBox, PluginError>,
    /// The library's extension `name` at `version`, if it has it ([`RawExtension`]).
    #[sabi(last_prefix_field)]
    pub extension: extern "C" fn(name: RStr<'_>, version: u32) -> ROption<RawExtension>,
}

impl RootModule for PluginLibraryRef {
    declare_root_module_statics! {PluginLibraryRef}
    const BASE_NAME: &'static str = "tapeline_plugin";
    const NAME: &'static str = "tapeline_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The `tapeline-plugin-api` version this crate is, i.e. the ABI version a library built against
/// it speaks.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");
