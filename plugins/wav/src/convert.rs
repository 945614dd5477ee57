//! Sample conversions between the bytes of a WAV file and `f32` samples: [`decode`] for the
//! reader, [`encode`] for the writer. Each format has one loop, written in plain safe Rust so
//! that the compiler turns it into packed SSE2 code on x86-64 (`cvtdq2ps`/`mulps` reading,
//! `mulps`/`maxps`/`minps`/`cvttps2dq` writing); `benches/convert.rs` times them.
//!
//! Public (hidden from the docs) only for that benchmark: the plugin's interface is the two
//! stages.

pub mod decode;
pub mod encode;

#[cfg(test)]
pub(crate) mod tests;
