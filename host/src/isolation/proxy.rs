//! The host side of an isolated stage: a [`ChildStage`] stands where the plugin instance would
//! stand (it implements the same ABI traits, so the coordinator, its state machine, policies
//! and counters do not change) and makes each call in the stage's own process.
//!
//! When that process dies (a signal, an exit, a limit) or the watchdog kills it in a call that
//! does not return, the call returns an error of kind `crashed` saying how it ended, in which
//! call, at which block, and the last line it wrote. The stage's `on_error` policy does the rest:
//! `restart` builds a fresh `ChildStage` (a fresh process); `ignore` goes on with this one, which
//! starts a fresh process at its next call; `fail` ends the run.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{ROption, RResult, RStr};
use arrayvec::ArrayVec;
use crossbeam_utils::atomic::AtomicCell;
use tapeline_plugin_api::abi::{
    CaptureBox, CaptureObj_TO, ErrorKind, InputBlock, Level, PluginError, ProcessorBox,
    ProcessorObj_TO, RawExtension, StorageBox, StorageObj, StorageObj_TO, StorageReport,
    FLAG_END_OF_STREAM,
};

use super::exit::describe;
use super::protocol::{decode_error, send_fd, tag, Channel, Fields, Init, Report};
use super::proxy_process::{Flight, MAX_SLOTS};
use super::shm::{Shared, MAX_PORTS};
use crate::config::Limits;
use crate::coordinator::plugin_stats::MAX_PLUGIN_STATS;
use crate::discipline::lock_order::{LockLevel, OrderedMutex};

/// What an isolated stage shares between its factory (which starts processes) and its
/// component (whose watchdog may kill one).
#[derive(Debug)]
pub struct Isolation {
    pub limits: Limits,
    pub stall_timeout_ms: u64,
    /// Each input's and each output's capacity in samples (the shared memory's regions).
    pub in_samples: Vec<usize>,
    pub out_samples: Vec<usize>,
    /// A processor's calls in flight at most (the slots of its ring; 1 behind a live source).
    pub slots: usize,
    /// Frames of the calls a processor's instance holds (put in a slot, not yet returned),
    /// including those waiting for the next process: lost if the stage stops without its tail.
    pub held_frames: AtomicU64,
    /// Frames of the calls that failed, not yet counted by the stage.
    lost_frames: AtomicU64,
    /// Frames of the calls answered without failure, not yet counted by the stage (a storage
    /// counts what it wrote from these: its writes return before they are made).
    done_frames: AtomicU64,
    /// The calls a dead process never began, for the stage's next process.
    pub orphans: OrphanCell,
    /// The running process (0: none).
    pid: AtomicU32,
    /// The watchdog killed the process in a call that did not return.
    killed_for_stall: AtomicBool,
}

/// Where a process's orphans wait: a pointer swap (lock-free), looked at on every call.
pub struct OrphanCell(AtomicCell<Option<Box<Orphans>>>);

impl OrphanCell {
    pub fn take(&self) -> Option<Box<Orphans>> {
        self.0.take()
    }
    pub fn store(&self, o: Box<Orphans>) {
        self.0.store(Some(o));
    }
}

impl std::fmt::Debug for OrphanCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrphanCell")
    }
}

/// Calls a processor's dead (or dropped) process was given and never began: their slots in its
/// shared memory, which the host still maps.
pub struct Orphans {
    pub shm: Shared,
    pub base: u64,
    pub calls: std::ops::Range<u64>,
    pub frames: [u32; MAX_SLOTS],
}

impl Isolation {
    pub fn new(
        limits: Limits,
        stall_timeout_ms: u64,
        in_samples: Vec<usize>,
        out_samples: Vec<usize>,
        slots: usize,
    ) -> Self {
        Isolation {
            limits,
            stall_timeout_ms,
            in_samples,
            out_samples,
            slots: slots.clamp(1, MAX_SLOTS),
            held_frames: AtomicU64::new(0),
            lost_frames: AtomicU64::new(0),
            done_frames: AtomicU64::new(0),
            orphans: OrphanCell(AtomicCell::new(None)),
            pid: AtomicU32::new(0),
            killed_for_stall: AtomicBool::new(false),
        }
    }

    /// The watchdog: kill the process of a call that does not return. The call then returns a
    /// `crashed` error. False if no process was running.
    pub fn kill_stuck(&self) -> bool {
        let pid = self.pid.load(Ordering::Acquire);
        let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
            return false;
        };
        self.killed_for_stall.store(true, Ordering::Release);
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok()
    }

    /// A process of the stage ended: the watchdog has nothing to kill, unless a fresh one of
    /// the same stage runs already (a restart starts it before the old one is dropped).
    fn forget_pid(&self, pid: u32) {
        self.pid
            .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Acquire)
            .ok();
    }

    /// Count `frames` as lost by a failed call.
    pub fn lose(&self, frames: u64) {
        self.lost_frames.fetch_add(frames, Ordering::Relaxed);
    }

    /// Count `frames` as taken by a call answered without failure.
    pub(super) fn did(&self, frames: u64) {
        self.done_frames.fetch_add(frames, Ordering::Relaxed);
    }

    /// The frames failed calls lost since the last time (the stage counts them).
    pub fn take_lost(&self) -> u64 {
        self.lost_frames.swap(0, Ordering::Relaxed)
    }

    /// The frames answered calls took since the last time (a storage stage counts them).
    pub fn take_done(&self) -> u64 {
        self.done_frames.swap(0, Ordering::Relaxed)
    }

    /// The frames still held when the stage stops (and forget them).
    pub fn take_held(&self) -> u64 {
        self.orphans.take();
        self.held_frames.swap(0, Ordering::Relaxed)
    }
}

/// One running process of the stage.
pub(super) struct Running {
    process: Child,
    pub(super) ch: Channel<UnixStream>,
    pub(super) shm: Shared,
    /// The last line the process wrote on stderr (its last words, if it dies).
    last_words: Arc<OrderedMutex<String>>,
    stderr: Option<JoinHandle<()>>,
    /// Its counters were added to `ChildStage::stats_gone` (it died).
    stats_kept: bool,
    /// Its stderr closed: it has ended (or is ending). Seen by a call that does not wait for
    /// the process (calls in flight), which would otherwise learn of the end only once the ring
    /// is full.
    gone: Arc<AtomicBool>,
}

impl Running {
    /// The process has ended: its stderr closed and it exited (a plugin that closes its own
    /// stderr does not count as ended).
    pub(super) fn ended(&mut self) -> bool {
        self.gone.load(Ordering::Acquire) && matches!(self.process.try_wait(), Ok(Some(_)))
    }
}

/// An isolated stage's instance: the plugin lives in a child process.
pub struct ChildStage {
    init: Init,
    pub(super) iso: Arc<Isolation>,
    pub(super) run: Option<Running>,
    /// A processor's calls in flight.
    pub(super) flight: Flight,
    /// A capture that was started is started again in a fresh process.
    pub(super) started: bool,
    /// A capture's length (`length_frames`), asked once.
    pub(super) length: Option<u64>,
    pub(super) levels: ArrayVec<Level, MAX_PORTS>,
    /// The last reply's payload (allocated once; only a long final report grows it).
    reply: Vec<u8>,
    /// The names of the plugin's own counters (`tapeline.stats`), as the process said.
    pub(super) stat_names: Vec<String>,
    /// A storage's frames written: by the running process, and by processes that ended without
    /// a report (they are added to the last process's report).
    pub(super) written_here: u64,
    written_gone: u64,
    /// The plugin's own counters as the processes that died left them (a fresh process counts
    /// from zero; the stage's counters go on from these).
    pub(super) stats_gone: [u64; MAX_PLUGIN_STATS],
}

impl ChildStage {
    /// Start the stage's process and build the plugin instance in it.
    pub fn new(init: Init, iso: Arc<Isolation>) -> Result<ChildStage, PluginError> {
        let mut stage = ChildStage {
            init,
            iso,
            run: None,
            flight: Flight::default(),
            started: false,
            length: None,
            levels: ArrayVec::new(),
            reply: Vec::with_capacity(4096),
            stat_names: Vec::new(),
            written_here: 0,
            written_gone: 0,
            stats_gone: [0; MAX_PLUGIN_STATS],
        };
        stage.launch()?;
        if stage.init.kind == "capture" {
            let n = stage.request("length_frames", tag::LENGTH, &[])?;
            let mut f = Fields(&stage.reply[..n]);
            let has = f.u8() != 0;
            stage.length = has.then(|| f.u64());
        }
        Ok(stage)
    }

    pub fn into_capture(self) -> CaptureBox {
        CaptureObj_TO::from_value(self, TD_Opaque)
    }
    pub fn into_processor(self) -> ProcessorBox {
        ProcessorObj_TO::from_value(self, TD_Opaque)
    }
    pub fn into_storage(self) -> StorageBox {
        StorageObj_TO::from_value(self, TD_Opaque)
    }

    fn launch(&mut self) -> Result<(), PluginError> {
        let iso = &self.iso;
        let slots = iso.slots;
        let created = Shared::create(
            &self.init.stage_id,
            &iso.in_samples,
            &iso.out_samples,
            slots,
        );
        let (shm, memory) = created.map_err(|e| {
            PluginError::other(format!("isolation: cannot create shared memory: {e}"))
        })?;
        self.init.slots = slots;
        self.written_gone += std::mem::take(&mut self.written_here);
        self.flight = Flight {
            sent: self.flight.got,
            got: self.flight.got,
            base: self.flight.got,
            ..Flight::default()
        };
        let started = spawn(&self.init);
        let answer = started.and_then(|(process, host_end)| {
            let last_words = Arc::new(OrderedMutex::new(LockLevel::ChildOutput, String::new()));
            let mut run = Running {
                process,
                ch: Channel::new(host_end),
                shm,
                last_words,
                stderr: None,
                stats_kept: false,
                gone: Arc::new(AtomicBool::new(false)),
            };
            run.stderr = forward_stderr(
                &mut run.process,
                &self.init.stage_id,
                run.last_words.clone(),
                run.gone.clone(),
            );
            send_fd(&run.ch.stream, memory.as_fd())?;
            let json = serde_json::to_vec(&self.init).map_err(std::io::Error::other)?;
            run.ch.begin(tag::INIT).put(&json).send()?;
            Ok(run)
        });
        let mut run = answer.map_err(|e| {
            PluginError::other(format!("isolation: cannot start the stage's process: {e}"))
        })?;
        self.iso.pid.store(run.process.id(), Ordering::Release);
        let reply = run.ch.recv().map(|(t, p)| match t {
            tag::OK => (t, Ok(serde_json::from_slice(p).unwrap_or_default())),
            _ => (t, Err(decode_error(p))),
        });
        // The child has its own descriptor of the memory (or failed).
        drop(memory);
        self.run = Some(run);
        match reply {
            Ok((_, Ok(names))) => {
                self.stat_names = names;
                Ok(())
            }
            Ok((_, Err(e))) => {
                self.stop_process();
                Err(e)
            }
            Err(_) => Err(self.crashed("new")),
        }
    }

    /// A running process: a fresh one if the last one died (after a crash under `ignore`).
    pub(super) fn ensure(&mut self) -> Result<(), PluginError> {
        if self.run.is_some() {
            return Ok(());
        }
        self.launch()?;
        if self.started {
            self.request("start", tag::START, &[])?;
        }
        Ok(())
    }

    /// Send one request; the reply's payload is in `self.reply[..n]`.
    pub(super) fn request(
        &mut self,
        call: &str,
        t: u8,
        header: &[u8],
    ) -> Result<usize, PluginError> {
        let Some(run) = self.run.as_mut() else {
            return Err(PluginError::new(
                ErrorKind::Crashed,
                format!("crashed: the stage's process had ended before `{call}` (see its crash)"),
            ));
        };
        let sent = run.ch.begin(t).put(header).send();
        // A doorbell the ring's last wait did not need may still be on its way.
        let got = sent.and_then(|()| loop {
            match run.ch.recv() {
                Ok((tag::DOORBELL, _)) => {}
                Ok((t, _)) => break Ok(t),
                Err(e) => break Err(e),
            }
        });
        match got {
            Ok(tag::OK) => {
                let p = run.ch.last_payload();
                self.reply.clear();
                self.reply.extend_from_slice(p);
                Ok(p.len())
            }
            Ok(_) => Err(decode_error(run.ch.last_payload())),
            Err(_) => Err(self.crashed(call)),
        }
    }

    /// The process is gone: reap it and say how it ended.
    fn crashed(&mut self, call: &str) -> PluginError {
        if self.run.is_none() {
            return PluginError::new(ErrorKind::Crashed, "crashed: the stage's process is gone");
        }
        let (how, words) = self.ended(call);
        self.run = None;
        PluginError::new(
            ErrorKind::Crashed,
            format!(
                "crashed: the stage's process {how} at block {}{words}",
                self.flight.got
            ),
        )
    }

    /// Reap the process that is gone (it stays in `self.run`): how it ended and in which call,
    /// and (to follow the block number) its last words.
    pub(super) fn ended(&mut self, call: &str) -> (String, String) {
        let Some(run) = self.run.as_mut() else {
            return ("ended".into(), String::new());
        };
        self.iso.forget_pid(run.process.id());
        let status = reap(&mut run.process);
        if let Some(h) = run.stderr.take() {
            h.join().ok();
        }
        if !std::mem::replace(&mut run.stats_kept, true) {
            let ring = run.shm.ring();
            for (gone, v) in self.stats_gone.iter_mut().zip(&ring.stats) {
                *gone += v.load(Ordering::Relaxed);
            }
        }
        let last = run.last_words.lock().clone();
        let (how, limit) = if self.iso.killed_for_stall.swap(false, Ordering::AcqRel) {
            let ms = self.iso.stall_timeout_ms;
            let how = format!(
                "was killed by the watchdog (no return within stall_timeout_ms = {ms} ms) \
                 during `{call}`"
            );
            (how, None)
        } else {
            let (how, limit) = status.map_or(("ended".to_string(), None), |s| {
                describe(s, &self.iso.limits, &last)
            });
            (
                format!("{how} during `{call}`"),
                limit.map(|l| format!("limit: {l}")),
            )
        };
        let mut words = limit.map(|l| format!("; {l}")).unwrap_or_default();
        if !last.is_empty() {
            words.push_str(&format!("; it last wrote: {last}"));
        }
        (how, words)
    }

    /// Close the socket (the child ends by itself), or kill it after a moment.
    fn stop_process(&mut self) {
        if let Some(run) = self.run.take() {
            drop(self.close(run));
        }
    }

    /// End a process (it ends by itself when its socket closes; killed after a moment if not)
    /// and keep its shared memory.
    pub(super) fn close(&mut self, mut run: Running) -> Shared {
        self.iso.forget_pid(run.process.id());
        run.ch.stream.shutdown(std::net::Shutdown::Both).ok();
        reap(&mut run.process);
        if let Some(h) = run.stderr.take() {
            h.join().ok();
        }
        run.shm
    }

    /// The call the ring carries, for a crash message.
    pub(super) fn ring_call(&self) -> &'static str {
        match self.init.kind.as_str() {
            "capture" => "read",
            "storage" => "write",
            _ => "process",
        }
    }

    pub(super) fn is_capture(&self) -> bool {
        self.init.kind == "capture"
    }
}

impl Drop for ChildStage {
    fn drop(&mut self) {
        // A stage dropped for a restart: its calls in flight go to the fresh process (a
        // capture's reads, which carry no data, are dropped there).
        self.orphan_rest();
        self.stop_process();
    }
}

/// Start `tapeline __stage` with one end of a socket pair as its standard input.
fn spawn(init: &Init) -> std::io::Result<(Child, UnixStream)> {
    let (host_end, child_end) = UnixStream::pair()?;
    // What the plugin prints on stdout would mix with the host's results: it goes to stderr.
    let stdout = std::io::stderr().as_fd().try_clone_to_owned()?;
    let process = Command::new(stage_program()?)
        .arg("__stage")
        .stdin(Stdio::from(OwnedFd::from(child_end)))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::piped())
        .env("TAPELINE_HOST_PID", std::process::id().to_string())
        .env("TAPELINE_STAGE", &init.stage_id)
        .spawn()?;
    Ok((process, host_end))
}

/// The program that serves an isolated stage: the `tapeline` binary itself, or the one
/// `TAPELINE_STAGE_EXE` names (for a program that embeds the host library, such as a test).
/// On Linux the running binary itself (`/proc/self/exe`), so that a binary replaced on disk
/// during a long recording (an upgrade, a rebuild) does not stop restarts.
fn stage_program() -> std::io::Result<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("TAPELINE_STAGE_EXE") {
        return Ok(p.into());
    }
    let own = std::path::Path::new("/proc/self/exe");
    if own.exists() {
        return Ok(own.to_path_buf());
    }
    std::env::current_exe()
}

/// Pass the process's stderr on, each line marked with the stage, keep the last line, and say
/// when it closed (the process ended).
fn forward_stderr(
    process: &mut Child,
    stage: &str,
    last: Arc<OrderedMutex<String>>,
    gone: Arc<AtomicBool>,
) -> Option<JoinHandle<()>> {
    let stderr = process.stderr.take()?;
    let stage = stage.to_string();
    std::thread::Builder::new()
        .name(format!("stderr-of-{stage}"))
        .spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{stage}] {line}");
                if !is_backtrace(&line) {
                    *last.lock() = line;
                }
            }
            gone.store(true, Ordering::Release);
        })
        .ok()
}

/// A line of a Rust backtrace (`RUST_BACKTRACE`), which says nothing about why it ended.
fn is_backtrace(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("stack backtrace:")
        || t.starts_with("note: Some details are omitted")
        // What std prints after a panic's message with RUST_BACKTRACE unset.
        || t.starts_with("note: run with `RUST_BACKTRACE=")
        // What std prints after "memory allocation of N bytes failed" with RUST_BACKTRACE set.
        || t.starts_with("skipping backtrace printing")
        || t.starts_with("at ")
        || t.split_once(':')
            .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// Wait for a process that is ending; kill it if it has not within a second.
fn reap(process: &mut Child) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + Duration::from_secs(1);
    loop {
        match process.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                process.kill().ok();
                return process.wait().ok();
            }
            Err(_) => return None,
        }
    }
}

impl StorageObj for ChildStage {
    /// Into the ring, as a processor's call without outputs: the write returns at once and a
    /// write that failed returns its error from a later call. A zero-frame end-of-stream block
    /// is not written: it waits for the writes in flight (the stage's end, see `StorageStage`).
    fn write<'a>(&mut self, block: &InputBlock<'a>) -> RResult<(), PluginError> {
        if block.frames == 0 && block.flags & FLAG_END_OF_STREAM != 0 {
            return self.drain().into();
        }
        self.call(std::slice::from_ref(block), &mut []).into()
    }

    /// When every write in flight is answered and none failed (a failure is left for the next
    /// write or the end of the stream to return, under the stage's policy).
    fn flush(&mut self) -> RResult<(), PluginError> {
        if self.run.is_none() || !self.settled() {
            return RResult::ROk(());
        }
        self.request("flush", tag::FLUSH, &[]).map(|_| ()).into()
    }

    /// After the writes in flight (one that failed is counted lost, `Isolation::take_lost`),
    /// unless a write failed and the process waits to be told to go on: then the writes after
    /// it are not made (the stage gave up, or a fresh process takes them over). A process that
    /// is gone is not started again to finalise.
    fn finalize(&mut self) -> RResult<StorageReport, PluginError> {
        for _ in 0..=MAX_SLOTS {
            if self.run.is_none() || self.flight.paused || self.drain().is_ok() {
                break;
            }
        }
        let n = match self.request("finalize", tag::FINALIZE, &[]) {
            Ok(n) => n,
            Err(e) => return RResult::RErr(e),
        };
        match serde_json::from_slice::<Report>(&self.reply[..n]) {
            Ok(r) => {
                let mut r: StorageReport = r.into();
                r.frames_written += self.written_gone;
                RResult::ROk(r)
            }
            Err(e) => RResult::RErr(PluginError::other(format!(
                "isolation: a report that does not read: {e}"
            ))),
        }
    }
    fn extension(&self, name: RStr<'_>, version: u32) -> ROption<RawExtension> {
        self.stats_extension(name, version)
    }
}

#[cfg(test)]
mod tests {
    use super::is_backtrace;

    #[test]
    fn what_rust_adds_after_the_reason_is_not_taken_for_last_words() {
        for line in [
            "stack backtrace:",
            "   0: __rustc::rust_begin_unwind",
            "             at /rustc/x/library/std/src/panicking.rs:689:5",
            "note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.",
            "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
            "skipping backtrace printing to avoid potential recursion",
        ] {
            assert!(is_backtrace(line), "{line}");
        }
        for line in [
            "memory allocation of 16777216 bytes failed",
            "thread 'main' panicked at src/lib.rs:3:5:",
            "error: 12: not a frame",
        ] {
            assert!(!is_backtrace(line), "{line}");
        }
    }
}
