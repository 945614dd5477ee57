//! An isolated stage's own counters (`tapeline.stats`): its process reads them from the plugin
//! after every call into the shared memory's header; the host's side answers the extension
//! with a table of its own that reads them from there, so the stage loop reads an isolated
//! stage's counters as it reads any other's.

use std::ffi::c_void;
use std::sync::atomic::Ordering;

use abi_stable::std_types::{ROption, RSliceMut, RStr, RString, RVec};
use tapeline_plugin_api::abi::{RawExtension, StatsV1, STATS_EXTENSION};

use super::proxy::ChildStage;

const TABLE: &StatsV1 = &StatsV1 { names, read };

impl ChildStage {
    /// `tapeline.stats` 1 when the plugin in the process has counters.
    pub(super) fn stats_extension(&self, name: RStr<'_>, version: u32) -> ROption<RawExtension> {
        if name.as_str() != STATS_EXTENSION || version != 1 || self.stat_names.is_empty() {
            return ROption::RNone;
        }
        ROption::RSome(RawExtension::new(TABLE, (self as *const ChildStage).cast()))
    }
}

/// # Safety (of both)
///
/// `instance` is the `ChildStage` that answered the extension, alive and called from the
/// thread that owns it, as the stage loop does.
extern "C" fn names(instance: *const c_void) -> RVec<RString> {
    // SAFETY: see above.
    let me = unsafe { &*instance.cast::<ChildStage>() };
    me.stat_names
        .iter()
        .map(|n| RString::from(n.as_str()))
        .collect()
}

extern "C" fn read(instance: *const c_void, mut out: RSliceMut<'_, u64>) -> u32 {
    // SAFETY: see above.
    let me = unsafe { &*instance.cast::<ChildStage>() };
    let Some(run) = me.run.as_ref() else {
        return 0;
    };
    let ring = run.shm.ring();
    let n = (ring.stats_len.load(Ordering::Acquire) as usize).min(out.len());
    for (o, v) in out.as_mut_slice()[..n].iter_mut().zip(&ring.stats) {
        *o = v.load(Ordering::Relaxed);
    }
    n as u32
}
