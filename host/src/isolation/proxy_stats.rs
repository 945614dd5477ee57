//! An isolated stage's own counters (`tapeline.stats`): its process reads them from the plugin
//! after every call into the shared memory's header; the host's side answers the extension
//! with a table of its own that reads them from there, so the stage loop reads an isolated
//! stage's counters as it reads any other's. A process that dies leaves its counts to the
//! next one: they go on, as the stage's counters go on over restarts.

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

/// The running process's counters, on top of what the processes that died had counted (while
/// none runs, those alone).
extern "C" fn read(instance: *const c_void, mut out: RSliceMut<'_, u64>) -> u32 {
    // SAFETY: see above.
    let me = unsafe { &*instance.cast::<ChildStage>() };
    let n = me.stat_names.len().min(out.len()).min(me.stats_gone.len());
    let out = &mut out.as_mut_slice()[..n];
    out.copy_from_slice(&me.stats_gone[..n]);
    if let Some(run) = me.run.as_ref() {
        let ring = run.shm.ring();
        let len = ring.stats_len.load(Ordering::Acquire) as usize;
        for (o, v) in out.iter_mut().zip(&ring.stats[..len.min(n)]) {
            *o += v.load(Ordering::Relaxed);
        }
    }
    n as u32
}
