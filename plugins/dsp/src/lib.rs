//! Processing plugins of general use, in one library:
//!
//! - `channel-split`: one input of N channels → N mono ports `0`..`N-1` (`left`/`right` too for
//!   stereo).
//! - `channel-merge`: several inputs → one output holding all their channels, in input order.
//! - `remap`: a mixing matrix from input channels to output channels.
//! - `biquad`: one RBJ Audio EQ Cookbook filter per channel.
//! - `meter`: passes audio through untouched and measures peak and RMS per channel.
//! - `resample`: converts to another sample rate (rubato's FFT resampler, or its windowed-sinc
//!   one for a ratio too fine for FFT units).

mod biquad;
mod meter;
mod remap;
mod resample;
mod routing;

pub use biquad::{Biquad, BiquadConfig, Coefficients, FilterType};
pub use meter::{Meter, MeterConfig};
pub use remap::{Remap, RemapConfig};
pub use resample::{Quality, Resample, ResampleConfig};
pub use routing::{ChannelMerge, ChannelMergeConfig, ChannelSplit, ChannelSplitConfig};

tapeline_plugin_api::export_plugin!(
    process: ChannelSplit,
    process: ChannelMerge,
    process: Remap,
    process: Biquad,
    process: Meter,
    process: Resample,
);

#[cfg(test)]
mod tests;
