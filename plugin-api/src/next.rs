//! What a later 1.x API adds, compiled only into the test fixture `tests/fixtures/api-1.1-next`
//! (`--cfg tapeline_api_next`, version 1.1.0): a context field (`host_tag`), a manifest field
//! (`Describe::TAGS`, through the library extension `tapeline.next.manifest`) and a trait
//! method (`Processor::latency_frames`, through the instance extension
//! `tapeline.next.latency`). tests/api_compat.rs proves with it that a plugin built against
//! 1.1 runs in this (1.0) host, and that a host built against 1.1 uses the additions when a
//! plugin has them and does without when it was built against 1.0. Not part of the 1.0 API.

use std::ffi::c_void;

use abi_stable::std_types::{RStr, RString};
use abi_stable::StableAbi;

use crate::abi::ContextFields;

/// Extension `tapeline.next.manifest`, version 1: a library's plugins' tags.
pub const MANIFEST_EXTENSION: &str = "tapeline.next.manifest";

#[repr(C)]
#[derive(StableAbi)]
pub struct ManifestV1 {
    /// The tags of plugin `name`, comma-separated (empty: none or no such plugin).
    pub tags: extern "C" fn(name: RStr<'_>) -> RString,
}

/// Extension `tapeline.next.latency`, version 1: a processor's latency.
pub const LATENCY_EXTENSION: &str = "tapeline.next.latency";

#[repr(C)]
#[derive(StableAbi)]
pub struct LatencyV1 {
    /// Frames the processor delays its input by.
    pub latency_frames: extern "C" fn(instance: *const c_void) -> u32,
}

/// The host's context, read field by field: a 1.0 host's struct ends before `host_tag`, so
/// the whole 1.1 struct must not be read from it.
///
/// # Safety
///
/// `data` points to a host context that begins with the 1.0 fields and has `host_fields`
/// fields, valid for `'a`.
pub unsafe fn read_fields<'a>(data: *const c_void, host_fields: usize) -> ContextFields<'a> {
    let p = data.cast::<ContextFields<'a>>();
    // SAFETY: every 1.x host's context has the 1.0 fields; `host_tag` is read only when the
    // host's struct has it.
    unsafe {
        ContextFields {
            stage_id: std::ptr::addr_of!((*p).stage_id).read(),
            sample_rate: std::ptr::addr_of!((*p).sample_rate).read(),
            block_frames: std::ptr::addr_of!((*p).block_frames).read(),
            base_dir: std::ptr::addr_of!((*p).base_dir).read(),
            inputs: std::ptr::addr_of!((*p).inputs).read(),
            host_tag: if host_fields > crate::sdk::FIELDS_1_0 {
                std::ptr::addr_of!((*p).host_tag).read()
            } else {
                RStr::from_str("")
            },
        }
    }
}
