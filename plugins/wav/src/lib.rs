//! WAV files: `wav-reader` plays one, `wav-writer` records one (or one per channel) that stays
//! readable after a crash and turns into RF64 past 4 GiB.

#[doc(hidden)]
pub mod convert;
mod files;
mod header;
mod reader;
mod write_back;
mod write_buffer;
mod writer;

pub use reader::{WavFileReader, WavReaderConfig};
pub use writer::{SampleFormat, WavWriter, WavWriterConfig};

tapeline_plugin_api::export_plugin!(capture: WavFileReader, storage: WavWriter);

#[cfg(test)]
mod tests;
