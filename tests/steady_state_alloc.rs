//! After a pipeline starts, the host's audio path does not allocate: a counting global allocator
//! counts the allocations made on the stage threads (`tapeline-<stage id>`) while blocks flow
//! through capture → process → storage. The coordinator and the monitoring thread
//! (`tapeline-monitor`, which builds snapshots) are not the audio path and are not counted.
//!
//! The bound is exact: zero allocations in the window. (A per-block allocation planted in the
//! processor loop shows up as thousands; the waiter list crossbeam-channel grows the first time a
//! thread blocks on a channel showed up as 1 before edges waited with `park` instead.)
//! Plugins are separate libraries with allocators of their own; their audio-path calls are
//! checked by the SDK's debug-build allocation check instead.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tapeline::config;
use tapeline::coordinator::{self, RunOptions};
use tapeline::plugins::Registry;
use tapeline_tests::{plugin_dir, TempDir};

struct Counting;
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Whether this thread is a stage thread: 0 not known yet, 1 yes, 2 no.
    static STAGE_THREAD: Cell<u8> = const { Cell::new(0) };
}

/// Count an allocation if it happens on a stage thread.
fn count() {
    let kind = STAGE_THREAD.with(|k| {
        if k.get() == 0 {
            // Looking at the name may itself allocate: meanwhile this thread counts as "no".
            k.set(2);
            let current = std::thread::current();
            let name = current.name().unwrap_or("");
            if name.starts_with("tapeline-") && name != "tapeline-monitor" {
                k.set(1);
            }
        }
        k.get()
    });
    if kind == 1 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const PIPELINE: &str = "version = 1\n[capture.t]\nplugin = \"tone\"\nchannels = 2\n[process.pace]\nplugin = \"mock-process\"\ninputs = [\"t\"]\nslow_us = 500\n[process.split]\nplugin = \"channel-split\"\ninputs = [\"pace\"]\n[process.merge]\nplugin = \"channel-merge\"\ninputs = [\"split.left\", \"split.right\"]\n[storage.n]\nplugin = \"null\"\ninputs = [\"merge\"]\n";

/// Run `toml` and count the host's allocations on its stage threads in a window of its steady
/// state: `(blocks the storage took, allocations)`.
fn steady_window(toml: &str) -> (u64, u64) {
    // One window at a time: the count is process-wide, and another test's run starting or
    // stopping on its own stage threads would be counted in this one's window.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _window = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("steady-alloc");
    let pipeline = dir.path().join("p.toml");
    std::fs::write(&pipeline, toml).unwrap();
    let registry = Registry::discover(&[plugin_dir()]);
    let (plan, report) = config::load(&pipeline, &registry);
    let plan = plan.unwrap_or_else(|| panic!("{}", report.render(false)));

    let interrupts = Arc::new(AtomicU32::new(0));
    let options = RunOptions {
        duration: None,
        interrupts: interrupts.clone(),
        monitor: None,
    };
    let runner = std::thread::spawn(move || coordinator::run(&plan, &options));

    // Let every thread reach its steady state, then watch a window of it.
    std::thread::sleep(Duration::from_millis(800));
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(800));
    let after = ALLOCATIONS.load(Ordering::SeqCst);
    interrupts.store(1, Ordering::SeqCst);
    let summary = runner.join().expect("the run returns");
    assert_eq!(summary.internal_errors, 0);
    let blocks = summary
        .stages
        .iter()
        .find(|s| s.id == "n")
        .map_or(0, |s| s.blocks);
    (blocks, after - before)
}

#[test]
fn the_host_does_not_allocate_while_blocks_flow() {
    let (blocks, allocated) = steady_window(PIPELINE);
    assert!(
        blocks > 500,
        "blocks must have flowed during the window: {blocks}"
    );
    assert_eq!(
        allocated, 0,
        "the host allocated {allocated} time(s) while {blocks} blocks flowed through its audio path"
    );
}

#[test]
fn the_host_does_not_allocate_while_blocks_flow_through_isolated_stages() {
    // The isolated stage's process is the tapeline binary (this test embeds the host library).
    std::env::set_var("TAPELINE_STAGE_EXE", tapeline_tests::tapeline_bin());
    // A processor and a storage: each kind's calls go through the ring.
    let toml = PIPELINE
        .replace("slow_us = 500", "slow_us = 500\nisolate = true")
        .replace("plugin = \"null\"", "plugin = \"null\"\nisolate = true");
    assert_eq!(toml.matches("isolate = true").count(), 2);
    let (blocks, allocated) = steady_window(&toml);
    assert!(
        blocks > 500,
        "blocks must have flowed during the window: {blocks}"
    );
    assert_eq!(
        allocated, 0,
        "the host allocated {allocated} time(s) while {blocks} blocks flowed through isolated stages"
    );
}
