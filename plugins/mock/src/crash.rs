//! Crash faults (`crash` + `crash_at_block`): faults the host cannot turn into an error, because
//! they take the whole process down (`segv`, `abort`, `stack-overflow`, `exit`, `oom`), leave a
//! call that never returns (`hang`) or panic on a thread the host does not own (`thread-panic`).
//!
//! They fire once per stage like every mock fault, and that must hold even when each instance of
//! the stage runs in a fresh process (a host that isolates a stage in a child process starts a new
//! child on restart, so the statics of [`crate::faults`] start over). So the first instance to
//! reach the block creates a marker file in [`std::env::temp_dir`] before it performs the fault,
//! and an instance that finds the marker of its run and stage does not fire. The marker is named
//! from the run id (`TAPELINE_HOST_PID` when the host sets it for its children, else this
//! process's id), the plugin and the stage id. It holds the run id and that process's start time,
//! so a marker left behind by an earlier run whose process had the same id (ids are reused) is
//! recognised as stale and replaced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tapeline_plugin_api::prelude::*;

use crate::faults::Fired;

/// What `crash` does.
#[derive(Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CrashKind {
    Segv,
    Abort,
    StackOverflow,
    Exit,
    Oom,
    ThreadPanic,
    Hang,
}

impl CrashKind {
    pub const ALL: [CrashKind; 7] = [
        CrashKind::Segv,
        CrashKind::Abort,
        CrashKind::StackOverflow,
        CrashKind::Exit,
        CrashKind::Oom,
        CrashKind::ThreadPanic,
        CrashKind::Hang,
    ];

    /// The name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            CrashKind::Segv => "segv",
            CrashKind::Abort => "abort",
            CrashKind::StackOverflow => "stack-overflow",
            CrashKind::Exit => "exit",
            CrashKind::Oom => "oom",
            CrashKind::ThreadPanic => "thread-panic",
            CrashKind::Hang => "hang",
        }
    }

    /// What happens, for the line printed just before it does.
    fn effect(self) -> &'static str {
        match self {
            CrashKind::Segv => "writing through a null pointer (SIGSEGV)",
            CrashKind::Abort => "calling abort() (SIGABRT)",
            CrashKind::StackOverflow => "recursing without end until the stack overflows",
            CrashKind::Exit => "calling exit(3)",
            CrashKind::Oom => {
                "allocating memory until the allocator fails or the process is killed"
            }
            CrashKind::ThreadPanic => "panicking on a thread of the plugin's own",
            CrashKind::Hang => "never returning from this call",
        }
    }
}

/// A validated crash fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crash {
    pub kind: CrashKind,
    pub at_block: u64,
}

impl Crash {
    /// Both keys or neither.
    pub fn from_config(
        crash: Option<CrashKind>,
        crash_at_block: Option<u64>,
    ) -> PluginResult<Option<Crash>> {
        match (crash, crash_at_block) {
            (Some(kind), Some(at_block)) => Ok(Some(Crash { kind, at_block })),
            (Some(_), None) => Err(PluginError::config(
                "crash_at_block",
                "`crash` needs `crash_at_block`, the block at which it happens",
            )),
            (None, Some(_)) => Err(PluginError::config(
                "crash",
                "`crash_at_block` needs `crash`, what happens: \"segv\", \"abort\", \
                 \"stack-overflow\", \"exit\", \"oom\", \"thread-panic\" or \"hang\"",
            )),
            (None, None) => Ok(None),
        }
    }
}

/// The run a marker belongs to: the host's process id and, where the system tells it, that
/// process's start time (which tells a reused process id apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunId {
    pub id: String,
    pub started: Option<u64>,
}

impl RunId {
    /// `TAPELINE_HOST_PID` if set (the host sets it for the children it runs stages in), else this
    /// process's id.
    pub fn current() -> RunId {
        let id = std::env::var("TAPELINE_HOST_PID")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| std::process::id().to_string());
        let started = process_start_time(&id);
        RunId { id, started }
    }
}

/// The start time (in clock ticks since boot) of process `pid`, from `/proc/PID/stat` (Linux).
fn process_start_time(pid: &str) -> Option<u64> {
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces and parentheses itself:
    // the fields after the last ')' start at field 3, and the start time is field 22.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The marker file that says "this stage's crash has fired in this run".
#[derive(Debug, Clone)]
pub struct Marker {
    path: PathBuf,
    /// What the marker holds: the run id and its start time.
    stamp: String,
}

impl Marker {
    /// The marker of the stage's crash fault.
    pub fn new(dir: &Path, run: &RunId, plugin: &str, stage_id: &str) -> Marker {
        Marker::for_fault(dir, run, plugin, stage_id, Fired::Crash.name())
    }

    /// The marker of the stage's fault `fault` (`crash`, `error`, `panic`, `stall`).
    pub fn for_fault(dir: &Path, run: &RunId, plugin: &str, stage_id: &str, fault: &str) -> Marker {
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(|| sweep_stale(dir));
        let mut name = String::from(MARKER_PREFIX);
        escape(&run.id, &mut name);
        name.push('.');
        escape(plugin, &mut name);
        name.push('.');
        escape(stage_id, &mut name);
        name.push('.');
        name.push_str(fault);
        let started = run.started.map_or("-".to_string(), |t| t.to_string());
        Marker {
            path: dir.join(name),
            stamp: format!("{} {started}\n", run.id),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Create the marker: true if this call created it (the fault is to fire now), false if the
    /// run already has it (the fault fired in an earlier instance, maybe in another process).
    /// Allocation-free, so that a call that does not fire may still run on the audio path.
    pub fn claim(&self) -> io::Result<bool> {
        for _ in 0..3 {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&self.path)
            {
                Ok(mut f) => {
                    f.write_all(self.stamp.as_bytes())?;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            match self.holds_stamp() {
                Ok(true) => return Ok(false),
                // Left by an earlier run whose process had the same id: not this run's.
                Ok(false) => match fs::remove_file(&self.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        // Something else keeps recreating it: count the fault as fired rather than fire twice.
        Ok(false)
    }

    /// True if the marker holds this run's stamp.
    fn holds_stamp(&self) -> io::Result<bool> {
        let mut f = File::open(&self.path)?;
        let want = self.stamp.as_bytes();
        let mut buf = [0u8; 256];
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(if want.len() < buf.len() {
            &buf[..n] == want
        } else {
            // A very long run id: the first 256 bytes decide.
            n == buf.len() && buf[..] == want[..buf.len()]
        })
    }
}

const MARKER_PREFIX: &str = "tapeline-mock.";

/// Remove the markers in `dir` of runs that have ended (their process is gone, or its id now
/// belongs to another process): nothing else removes them, and every run with a fault leaves
/// some. Done once per process, before its first marker; what cannot be read or removed is left.
pub fn sweep_stale(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(MARKER_PREFIX)) else {
            continue;
        };
        let id = rest.split('.').next().unwrap_or("");
        let Ok(stamp) = fs::read_to_string(entry.path()) else {
            continue;
        };
        let live = process_start_time(id).is_some_and(|t| stamp == format!("{id} {t}\n"));
        if !live && fs::remove_file(entry.path()).is_err() {
            // Another sweep got there first, or it is not ours to remove: it is left.
        }
    }
}

/// Append `s` to `out` as a file-name component: ASCII letters, digits, `-` and `_` as they are,
/// every other byte as `%XX` (so `.` separates the components and no two ids share a name).
fn escape(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// One instance's means to perform its stage's crash fault: the marker, and for `thread-panic`
/// the thread that panics, started by the constructor. (In debug builds the plugin wrapper fails
/// an audio-path call that allocates, so a call that returns must not.)
#[derive(Debug, Default)]
pub struct CrashSite {
    marker: Option<Marker>,
    thread: Option<PanicThread>,
    thread_panicked: bool,
    /// The markers of the stage's other faults that fire once per stage (`panic_at_block`,
    /// `error_at_block`, `stall_at_block`), so that they too fire once when each instance runs
    /// in a fresh process.
    once: Vec<(Fired, Marker)>,
}

impl CrashSite {
    /// No crash fault.
    pub fn none() -> CrashSite {
        CrashSite::default()
    }

    /// For stage `stage_id` of mock `plugin`, with its marker in the temp folder under the
    /// current run id.
    pub fn for_stage(
        crash: Option<Crash>,
        plugin: &'static str,
        stage_id: &str,
    ) -> PluginResult<CrashSite> {
        match crash {
            None => Ok(CrashSite::none()),
            Some(c) => CrashSite::new(
                c,
                Marker::new(&std::env::temp_dir(), &RunId::current(), plugin, stage_id),
                plugin,
            ),
        }
    }

    pub fn new(crash: Crash, marker: Marker, plugin: &'static str) -> PluginResult<CrashSite> {
        let thread = match crash.kind {
            CrashKind::ThreadPanic => Some(PanicThread::spawn(plugin)?),
            _ => None,
        };
        Ok(CrashSite {
            marker: Some(marker),
            thread,
            thread_panicked: false,
            once: Vec::new(),
        })
    }

    /// Markers for the stage's once-per-stage faults in `faults`.
    pub fn with_once(mut self, faults: &[Fired], plugin: &str, stage_id: &str) -> CrashSite {
        let (dir, run) = (std::env::temp_dir(), RunId::current());
        self.once = faults
            .iter()
            .map(|&f| (f, Marker::for_fault(&dir, &run, plugin, stage_id, f.name())))
            .collect();
        self
    }

    /// Whether fault `f`, due now and not yet fired in this process, is this run's first: its
    /// marker is claimed (or it has none, or the marker cannot be made: then it fires).
    pub fn first_in_run(&self, f: Fired) -> bool {
        match self.once.iter().find(|(g, _)| *g == f) {
            Some((_, m)) => m.claim().unwrap_or(true),
            None => true,
        }
    }

    /// True once the `thread-panic` thread has panicked.
    pub fn thread_panicked(&self) -> bool {
        self.thread_panicked
    }

    /// Perform `kind` now, unless the marker says it already fired in this run. Returns only
    /// if it did not fire, for `thread-panic` (after the thread has panicked), or with an error
    /// if the marker cannot be created.
    pub fn fire(&mut self, kind: CrashKind, name: &str, block: u64) -> PluginResult<()> {
        let Some(marker) = &self.marker else {
            return Ok(());
        };
        match marker.claim() {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => {
                return Err(PluginError::io(format!(
                    "{name}: cannot create the crash marker {}: {e} (crash = \"{}\" not performed)",
                    marker.path.display(),
                    kind.as_str()
                )))
            }
        }
        eprintln!(
            "{name}: injected crash \"{}\" at block {block} (crash_at_block): {}",
            kind.as_str(),
            kind.effect()
        );
        match kind {
            CrashKind::Segv => segv(),
            CrashKind::Abort => std::process::abort(),
            CrashKind::StackOverflow => {
                recurse(0);
                std::process::abort()
            }
            CrashKind::Exit => std::process::exit(3),
            CrashKind::Oom => oom(),
            CrashKind::Hang => hang(),
            CrashKind::ThreadPanic => {
                if let Some(t) = &mut self.thread {
                    self.thread_panicked = t.panic_now();
                }
                if self.thread_panicked {
                    // The library's panic hook keeps panic messages for the host's error
                    // reports instead of printing them: say that it happened.
                    eprintln!("{name}: the thread has panicked; the call returns normally");
                }
                Ok(())
            }
        }
    }
}

fn segv() -> ! {
    // SAFETY: deliberately NOT safe: writing through a null pointer is undefined behaviour, and
    // here it is the point: this is the injected fault, a real invalid memory access that the
    // operating system answers with SIGSEGV. The volatile write cannot be optimised away.
    unsafe { std::ptr::null_mut::<u32>().write_volatile(0xDEAD_BEEF) };
    // Only if the platform maps address 0 writable.
    std::process::abort()
}

/// Recursion over a 64 KiB stack array the optimiser cannot remove (`black_box` makes every frame
/// observable, and the frame is used after the call returns). The test on `depth` is never true;
/// it only keeps the function from being provably endless.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 64 * 1024];
    frame[depth as usize % frame.len()] = 1;
    std::hint::black_box(&mut frame);
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(depth + 1).wrapping_add(u64::from(frame[1]))
}

/// Allocate 16 MiB chunks, fill each with non-zero bytes (so every page is really used) and keep
/// them all, until the allocator fails (which aborts the process) or the system kills it.
fn oom() -> ! {
    const CHUNK: usize = 16 << 20;
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![0xA5; CHUNK]);
        std::hint::black_box(&mut hoard);
    }
}

fn hang() -> ! {
    loop {
        std::thread::park();
    }
}

const WAIT: u8 = 0;
const PANIC: u8 = 1;
const QUIT: u8 = 2;

/// A thread of the plugin's own that panics when told to.
#[derive(Debug)]
struct PanicThread {
    order: Arc<AtomicU8>,
    handle: Option<JoinHandle<()>>,
}

impl PanicThread {
    fn spawn(plugin: &'static str) -> PluginResult<PanicThread> {
        let order = Arc::new(AtomicU8::new(WAIT));
        let o = Arc::clone(&order);
        let handle = std::thread::Builder::new()
            .name(format!("{plugin} crash"))
            .spawn(move || loop {
                match o.load(Ordering::Acquire) {
                    WAIT => std::thread::park(),
                    PANIC => panic!("{plugin}: injected panic on a thread of the plugin's own (crash = \"thread-panic\")"),
                    _ => return,
                }
            })
            .map_err(|e| PluginError::other(format!("{plugin}: cannot start a thread: {e}")))?;
        Ok(PanicThread {
            order,
            handle: Some(handle),
        })
    }

    /// Make the thread panic, and wait until it has; true if it did.
    fn panic_now(&mut self) -> bool {
        let Some(h) = self.handle.take() else {
            return false;
        };
        self.order.store(PANIC, Ordering::Release);
        h.thread().unpark();
        h.join().is_err()
    }
}

impl Drop for PanicThread {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.order.store(QUIT, Ordering::Release);
            h.thread().unpark();
            let thread = h.thread().clone();
            if let Err(payload) = h.join() {
                // It panics only when told to, and `panic_now` takes the handle first: a bug.
                // Not resumed (a panic in a destructor may abort the host): said instead.
                eprintln!(
                    "{}: panicked instead of stopping: {}",
                    thread.name().unwrap_or("the crash thread"),
                    panic_text(&*payload)
                );
            }
        }
    }
}

/// The message of a panic's payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic with a non-text payload")
}
