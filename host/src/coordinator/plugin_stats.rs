//! A stage's own counters, reported by its plugin through the `tapeline.stats` extension (a
//! capture's xruns and gaps, a writer's bytes and syncs): read on the stage's thread between
//! audio calls into atomics, which monitoring, metrics and the summary read.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

use abi_stable::std_types::{ROption, RSliceMut, RStr};
use tapeline_plugin_api::abi::{PluginError, RawExtension, StatsV1, STATS_EXTENSION};

use super::component::Component;
use super::policy::Severity;
use super::stage_loop::StageWork;

/// Most counters a stage publishes; a plugin naming more has the rest left out.
pub const MAX_PLUGIN_STATS: usize = 16;

/// Calls between two readings of the counters (and one after the last call).
const EVERY_CALLS: u32 = 16;

/// The published counters of one stage: names set once, values by the stage thread.
#[derive(Debug)]
pub struct PublishedStats {
    names: OnceLock<Vec<String>>,
    values: [AtomicU64; MAX_PLUGIN_STATS],
    len: AtomicU32,
}

impl Default for PublishedStats {
    fn default() -> Self {
        PublishedStats {
            names: OnceLock::new(),
            values: std::array::from_fn(|_| AtomicU64::new(0)),
            len: AtomicU32::new(0),
        }
    }
}

impl PublishedStats {
    /// The counters by name, as last read (empty: the plugin reports none).
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let Some(names) = self.names.get() else {
            return BTreeMap::new();
        };
        let len = (self.len.load(Ordering::Acquire) as usize).min(names.len());
        names[..len]
            .iter()
            .zip(&self.values)
            .map(|(n, v)| (n.clone(), v.load(Ordering::Relaxed)))
            .collect()
    }
}

/// The stage thread's reader of its instance's counters.
pub struct PluginStats {
    table: Option<(&'static StatsV1, *const c_void)>,
    scratch: [u64; MAX_PLUGIN_STATS],
    calls: u32,
    /// What the stage's earlier instances counted (a restarted instance counts from zero; the
    /// stage's counters go on from these).
    base: [u64; MAX_PLUGIN_STATS],
}

impl PluginStats {
    /// A reader with nothing to read.
    pub fn none() -> PluginStats {
        PluginStats {
            table: None,
            scratch: [0; MAX_PLUGIN_STATS],
            calls: 0,
            base: [0; MAX_PLUGIN_STATS],
        }
    }

    /// A reader for the table an instance's `extension(tapeline.stats, 1)` answered, and the
    /// counters' names; nothing to read (and no names) when it answered none.
    pub fn from_answer(
        answer: ROption<RawExtension>,
    ) -> Result<(PluginStats, Vec<String>), String> {
        let mut me = Self::none();
        let ROption::RSome(raw) = answer else {
            return Ok((me, Vec::new()));
        };
        // SAFETY: `raw` is what the instance's `extension` call returned.
        let table = unsafe { tapeline_plugin_api::extension::table::<StatsV1>(&raw) }?;
        let names: Vec<String> = (table.names)(raw.instance)
            .into_iter()
            .take(MAX_PLUGIN_STATS)
            .map(String::from)
            .collect();
        me.table = Some((table, raw.instance));
        Ok((me, names))
    }

    /// A reader for `instance`'s counters, publishing to the stage's counters; nothing to read
    /// when the plugin has none or its table is not the host's `StatsV1`.
    pub fn attach<W: StageWork>(instance: &W::Instance, c: &Component) -> PluginStats {
        let answer = W::extension(instance, RStr::from_str(STATS_EXTENSION), 1);
        let (mut me, names) = match Self::from_answer(answer) {
            Ok(found) => found,
            Err(e) => {
                // Through the coordinator, as every stage error: a warning in the summary.
                let e = PluginError::other(format!("its counters are not read: {e}"));
                c.report(Severity::Warning, e);
                return Self::none();
            }
        };
        // A restarted instance of the same plugin keeps the names already set, and goes on
        // from the counts so far.
        c.stats.plugin.names.get_or_init(|| names);
        for (b, v) in me.base.iter_mut().zip(&c.stats.plugin.values) {
            *b = v.load(Ordering::Relaxed);
        }
        me.read(c);
        me
    }

    /// Called after every call: reads the counters every [`EVERY_CALLS`] calls.
    pub fn tick(&mut self, c: &Component) {
        self.calls += 1;
        if self.calls >= EVERY_CALLS {
            self.read(c);
        }
    }

    /// Read the counters now into the stage's published counters.
    pub fn read(&mut self, c: &Component) {
        self.calls = 0;
        self.read_into(&c.stats.plugin.values, &c.stats.plugin.len);
    }

    /// Read the counters into `values` and say how many in `len` (no allocation: into a fixed
    /// scratch, then the atomics). An isolated stage's process publishes into shared memory.
    pub fn read_into(&mut self, values: &[AtomicU64], len: &AtomicU32) {
        let Some((table, instance)) = self.table else {
            return;
        };
        let n = (table.read)(instance, RSliceMut::from_mut_slice(&mut self.scratch)) as usize;
        let n = n.min(MAX_PLUGIN_STATS).min(values.len());
        for ((slot, v), b) in values.iter().zip(&self.scratch[..n]).zip(&self.base) {
            slot.store(b + v, Ordering::Relaxed);
        }
        len.store(n as u32, Ordering::Release);
    }

    /// Read the counters one last time and forget the instance (it is about to be dropped or
    /// replaced): the next instance's counts go on from these.
    pub fn detach(&mut self, c: &Component) {
        self.read(c);
        self.table = None;
    }
}
