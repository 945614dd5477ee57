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
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{ROption, RResult, RSlice, RSliceMut};
use arrayvec::ArrayVec;
use tapeline_plugin_api::abi::{
    CaptureBox, CaptureObj, CaptureObj_TO, ErrorKind, InputBlock, Level, OutputBlock, PluginError,
    ProcessorBox, ProcessorObj, ProcessorObj_TO, ReadStatus, StorageBox, StorageObj, StorageObj_TO,
    StorageReport,
};

use super::exit::describe;
use super::protocol::{decode_error, tag, Channel, Fields, Init, Report};
use super::shm::{Shared, MAX_PORTS};
use crate::config::Limits;
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
    /// The running process (0: none).
    pid: AtomicU32,
    /// The watchdog killed the process in a call that did not return.
    killed_for_stall: AtomicBool,
}

impl Isolation {
    pub fn new(
        limits: Limits,
        stall_timeout_ms: u64,
        in_samples: Vec<usize>,
        out_samples: Vec<usize>,
    ) -> Self {
        Isolation {
            limits,
            stall_timeout_ms,
            in_samples,
            out_samples,
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
}

/// One running process of the stage.
struct Running {
    process: Child,
    ch: Channel<UnixStream>,
    shm: Shared,
    /// The last line the process wrote on stderr (its last words, if it dies).
    last_words: Arc<OrderedMutex<String>>,
    stderr: Option<JoinHandle<()>>,
}

/// An isolated stage's instance: the plugin lives in a child process.
pub struct ChildStage {
    init: Init,
    iso: Arc<Isolation>,
    run: Option<Running>,
    /// A capture that was started is started again in a fresh process.
    started: bool,
    /// Calls for blocks so far (read, process, write), for the crash message.
    block: u64,
    length: Option<u64>,
    levels: ArrayVec<Level, MAX_PORTS>,
    /// The last reply's payload (allocated once; only a long final report grows it).
    reply: Vec<u8>,
}

impl ChildStage {
    /// Start the stage's process and build the plugin instance in it.
    pub fn new(init: Init, iso: Arc<Isolation>) -> Result<ChildStage, PluginError> {
        let mut stage = ChildStage {
            init,
            iso,
            run: None,
            started: false,
            block: 0,
            length: None,
            levels: ArrayVec::new(),
            reply: Vec::with_capacity(4096),
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
        let (shm, path) = Shared::create(&self.init.stage_id, &iso.in_samples, &iso.out_samples)
            .map_err(|e| {
                PluginError::other(format!("isolation: cannot create shared memory: {e}"))
            })?;
        self.init.shm = path.display().to_string();
        let started = spawn(&self.init);
        let answer = started.and_then(|(process, host_end)| {
            let last_words = Arc::new(OrderedMutex::new(LockLevel::ChildOutput, String::new()));
            let mut run = Running {
                process,
                ch: Channel::new(host_end),
                shm,
                last_words,
                stderr: None,
            };
            run.stderr = forward_stderr(
                &mut run.process,
                &self.init.stage_id,
                run.last_words.clone(),
            );
            let json = serde_json::to_vec(&self.init).map_err(std::io::Error::other)?;
            run.ch.begin(tag::INIT).put(&json).send()?;
            Ok(run)
        });
        // The child has the file mapped (or failed): the name is not needed any more.
        let mut run = answer.map_err(|e| {
            PluginError::other(format!("isolation: cannot start the stage's process: {e}"))
        })?;
        self.iso.pid.store(run.process.id(), Ordering::Release);
        let reply = run.ch.recv().map(|(t, p)| (t, decode_error(p)));
        std::fs::remove_file(&path).ok();
        self.run = Some(run);
        match reply {
            Ok((tag::OK, _)) => Ok(()),
            Ok((_, e)) => {
                self.stop_process();
                Err(e)
            }
            Err(_) => Err(self.crashed("new")),
        }
    }

    /// A running process: a fresh one if the last one died (after a crash under `ignore`).
    fn ensure(&mut self) -> Result<(), PluginError> {
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
    fn request(&mut self, call: &str, t: u8, header: &[u8]) -> Result<usize, PluginError> {
        let Some(run) = self.run.as_mut() else {
            return Err(PluginError::new(
                ErrorKind::Crashed,
                "crashed: the stage's process is gone",
            ));
        };
        let sent = run.ch.begin(t).put(header).send();
        let got = sent.and_then(|()| run.ch.recv());
        match got {
            Ok((tag::OK, p)) => {
                self.reply.clear();
                self.reply.extend_from_slice(p);
                Ok(p.len())
            }
            Ok((_, p)) => Err(decode_error(p)),
            Err(_) => Err(self.crashed(call)),
        }
    }

    /// The process is gone: reap it and say how it ended.
    fn crashed(&mut self, call: &str) -> PluginError {
        let Some(mut run) = self.run.take() else {
            return PluginError::new(ErrorKind::Crashed, "crashed: the stage's process is gone");
        };
        self.iso.pid.store(0, Ordering::Release);
        let status = reap(&mut run.process);
        if let Some(h) = run.stderr.take() {
            h.join().ok();
        }
        let last = run.last_words.lock().clone();
        let why = if self.iso.killed_for_stall.swap(false, Ordering::AcqRel) {
            format!(
                "was killed by the watchdog: `{call}` had not returned after stall_timeout_ms = {} ms",
                self.iso.stall_timeout_ms
            )
        } else {
            status.map_or("ended".to_string(), |s| {
                describe(s, &self.iso.limits, &last)
            })
        };
        let words = if last.is_empty() {
            String::new()
        } else {
            format!("; it last wrote: {last}")
        };
        PluginError::new(
            ErrorKind::Crashed,
            format!(
                "crashed: the stage's process {why} during `{call}` at block {}{words}",
                self.block
            ),
        )
    }

    /// Close the socket (the child ends by itself), or kill it after a moment.
    fn stop_process(&mut self) {
        if let Some(mut run) = self.run.take() {
            self.iso.pid.store(0, Ordering::Release);
            drop(run.ch);
            reap(&mut run.process);
            if let Some(h) = run.stderr.take() {
                h.join().ok();
            }
        }
    }

    fn shm(&mut self) -> &mut Shared {
        &mut self.run.as_mut().expect("ensured before use").shm
    }
}

impl Drop for ChildStage {
    fn drop(&mut self) {
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

/// Pass the process's stderr on, each line marked with the stage, and keep the last line.
fn forward_stderr(
    process: &mut Child,
    stage: &str,
    last: Arc<OrderedMutex<String>>,
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
        })
        .ok()
}

/// A line of a Rust backtrace (`RUST_BACKTRACE`), which says nothing about why it ended.
fn is_backtrace(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("stack backtrace:")
        || t.starts_with("note: Some details are omitted")
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

impl CaptureObj for ChildStage {
    fn start(&mut self) -> RResult<(), PluginError> {
        self.started = true;
        self.request("start", tag::START, &[]).map(|_| ()).into()
    }

    fn read<'a>(&mut self, out: &mut OutputBlock<'a>) -> RResult<ReadStatus, PluginError> {
        let read = self.ensure().and_then(|()| {
            let mut h = [0u8; 16];
            h[0..4].copy_from_slice(&out.frames.to_le_bytes());
            h[4..8].copy_from_slice(&out.channels.to_le_bytes());
            h[8..16].copy_from_slice(&out.position.to_le_bytes());
            let n = self.request("read", tag::READ, &h)?;
            let mut f = Fields(&self.reply[..n]);
            let (frames, flags, position, finished) = (f.u32(), f.u32(), f.u64(), f.u8() != 0);
            let k = (frames as usize * out.channels as usize).min(out.samples.len());
            out.samples.as_mut_slice()[..k].copy_from_slice(&self.shm().output(0)[..k]);
            out.frames = frames;
            out.flags = flags;
            out.position = position;
            Ok(if finished {
                ReadStatus::Finished
            } else {
                ReadStatus::More
            })
        });
        // Calls are counted from 0, as plugins count blocks: a crash names the block it hit.
        self.block += 1;
        read.into()
    }

    fn stop(&mut self) -> RResult<(), PluginError> {
        if self.run.is_none() {
            return RResult::ROk(());
        }
        self.request("stop", tag::STOP, &[]).map(|_| ()).into()
    }

    fn length_frames(&self) -> ROption<u64> {
        self.length.into()
    }
}

/// The largest process request header: a count byte and 20 bytes per
/// block (frames, flags, position, channels), for inputs and outputs.
const PROCESS_HEADER: usize = 2 + 2 * MAX_PORTS * 20;

impl ProcessorObj for ChildStage {
    fn process<'a, 'b>(
        &mut self,
        inputs: RSlice<'b, InputBlock<'a>>,
        mut outputs: RSliceMut<'b, OutputBlock<'a>>,
    ) -> RResult<(), PluginError> {
        let done = self.ensure().and_then(|()| {
            let mut h: ArrayVec<u8, PROCESS_HEADER> = ArrayVec::new();
            h.push(inputs.len() as u8);
            for (i, b) in inputs.iter().enumerate() {
                let region = self.shm().input(i);
                let n = b.samples.len().min(region.len());
                region[..n].copy_from_slice(&b.samples[..n]);
                for part in [
                    &b.frames.to_le_bytes()[..],
                    &b.flags.to_le_bytes(),
                    &b.position.to_le_bytes(),
                    &b.channels.to_le_bytes(),
                ] {
                    h.try_extend_from_slice(part).ok();
                }
            }
            h.push(outputs.len() as u8);
            for o in outputs.iter() {
                for part in [
                    &o.frames.to_le_bytes()[..],
                    &o.channels.to_le_bytes(),
                    &o.position.to_le_bytes(),
                    &o.flags.to_le_bytes(),
                ] {
                    h.try_extend_from_slice(part).ok();
                }
            }
            let n = self.request("process", tag::PROCESS, &h)?;
            self.take_outputs(n, outputs.as_mut_slice());
            Ok(())
        });
        self.block += 1;
        done.into()
    }

    fn levels(&self) -> RSlice<'_, Level> {
        RSlice::from_slice(&self.levels)
    }
}

impl ChildStage {
    /// Copy each output the child produced out of the shared memory; keep its levels.
    fn take_outputs(&mut self, n: usize, outputs: &mut [OutputBlock<'_>]) {
        let reply = std::mem::take(&mut self.reply);
        let mut f = Fields(&reply[..n]);
        for (i, o) in outputs.iter_mut().enumerate() {
            let (frames, flags) = (f.u32(), f.u32());
            let k = (frames as usize * o.channels as usize).min(o.samples.len());
            o.samples.as_mut_slice()[..k].copy_from_slice(&self.shm().output(i)[..k]);
            o.frames = frames;
            o.flags = flags;
        }
        self.levels.clear();
        for _ in 0..f.u8() {
            let (peak_db, rms_db) = (f.f32(), f.f32());
            self.levels.push(Level { peak_db, rms_db });
        }
        self.reply = reply;
    }
}

impl StorageObj for ChildStage {
    fn write<'a>(&mut self, block: &InputBlock<'a>) -> RResult<(), PluginError> {
        let done = self.ensure().and_then(|()| {
            let region = self.shm().input(0);
            let n = block.samples.len().min(region.len());
            region[..n].copy_from_slice(&block.samples[..n]);
            let mut h = [0u8; 20];
            h[0..4].copy_from_slice(&block.frames.to_le_bytes());
            h[4..8].copy_from_slice(&block.flags.to_le_bytes());
            h[8..16].copy_from_slice(&block.position.to_le_bytes());
            h[16..20].copy_from_slice(&block.channels.to_le_bytes());
            self.request("write", tag::WRITE, &h).map(|_| ())
        });
        self.block += 1;
        done.into()
    }

    fn flush(&mut self) -> RResult<(), PluginError> {
        if self.run.is_none() {
            return RResult::ROk(());
        }
        self.request("flush", tag::FLUSH, &[]).map(|_| ()).into()
    }

    fn finalize(&mut self) -> RResult<StorageReport, PluginError> {
        let n = match self.request("finalize", tag::FINALIZE, &[]) {
            Ok(n) => n,
            Err(e) => return RResult::RErr(e),
        };
        match serde_json::from_slice::<Report>(&self.reply[..n]) {
            Ok(r) => RResult::ROk(r.into()),
            Err(e) => RResult::RErr(PluginError::other(format!(
                "isolation: a report that does not read: {e}"
            ))),
        }
    }
}
