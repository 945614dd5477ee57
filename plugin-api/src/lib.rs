//! # tapeline-plugin-api
//!
//! The stable ABI between the `tapeline` host and its plugins, and the safe SDK plugin authors
//! use. An integrator depends on this crate only, implements one of the traits in [`sdk`]
//! ([`Capture`], [`Processor`], [`Storage`]), lists the type in [`export_plugin!`] and builds a
//! `cdylib`. No `unsafe`, threads, locks or lifecycle code: the host supplies all of that.
//!
//! The config derives need `serde` (with `derive`) and `schemars = "1"` in the plugin's own
//! `Cargo.toml` (the code they generate names those crates); `docs/plugin-guide.md` walks
//! through it.
//!
//! ```ignore
//! use tapeline_plugin_api::prelude::*;
//!
//! #[derive(Deserialize, JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! pub struct Config {
//!     /// Gain in decibels.
//!     #[serde(default)]
//!     db: f32,
//! }
//!
//! pub struct Gain(f32);
//!
//! impl Describe for Gain {
//!     type Config = Config;
//!     const NAME: &'static str = "my-gain";
//!     const DESCRIPTION: &'static str = "Multiplies every sample by a constant";
//! }
//!
//! impl Processor for Gain {
//!     fn new(config: Config, _ctx: &StageContext<'_>) -> PluginResult<Self> {
//!         Ok(Gain(db_to_gain(config.db)))
//!     }
//!     fn process(&mut self, inputs: &[InputBlock<'_>], outputs: &mut [OutputBlock<'_>]) -> PluginResult<()> {
//!         for (o, i) in outputs[0].samples_mut().iter_mut().zip(inputs[0].samples()) {
//!             *o = i * self.0;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! export_plugin!(process: Gain);
//! ```

pub mod abi;
#[doc(hidden)]
pub mod export;
pub mod extension;
#[cfg(tapeline_api_next)]
pub mod next;
pub mod sdk;
pub mod testing;

#[doc(hidden)]
pub use abi_stable;
pub use schemars;
pub use serde;

pub use abi::{
    ErrorKind, InputBlock, Level, OutputBlock, OutputPort, PluginError, PluginKind, PortFormat,
    ReadStatus, StorageReport, API_VERSION, FLAG_DISCONTINUITY, FLAG_END_OF_STREAM, MAX_TAIL_CALLS,
};
pub use sdk::{
    db_to_gain, gain_to_db, single_input, Capture, Describe, PluginResult, Processor, StageContext,
    Storage, ERROR_SEPARATOR,
};

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::abi::{
        ErrorKind, InputBlock, Level, OutputBlock, OutputPort, PluginError, PortFormat, ReadStatus,
        StorageReport,
    };
    pub use crate::export_plugin;
    pub use crate::sdk::{
        db_to_gain, gain_to_db, single_input, Capture, Describe, PluginResult, Processor,
        StageContext, Storage,
    };
    pub use schemars::JsonSchema;
    pub use serde::Deserialize;
}
