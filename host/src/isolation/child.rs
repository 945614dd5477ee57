//! The child side: `tapeline __stage`, started by the host with its socket as standard input.
//! It applies the stage's limits to itself, loads the plugin library through the same checks
//! as the host, builds the instance, and then makes each call the host asks for, with the
//! samples in the shared memory.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use abi_stable::std_types::{ROption, RSlice, RSliceMut, RStr};
use arrayvec::ArrayVec;
use tapeline_plugin_api::abi::{
    CaptureBox, ContextFields, ContextRef, InputBlock, OutputBlock, PluginError, PortFormat,
    ProcessorBox, RawExtension, ReadStatus, StorageBox, STATS_EXTENSION,
};

use super::protocol::{encode_error, recv_fd, tag, Channel, Fields, Init, Report};
use super::ring;
use super::shm::{Shared, MAX_PORTS, REPLY_AT};
use crate::config::Limits;
use crate::coordinator::plugin_stats::PluginStats;
use crate::plugins::Registry;

enum Instance {
    Capture(CaptureBox),
    Process(ProcessorBox),
    Storage(StorageBox),
}

/// Serve one stage until the host closes the socket. Exit 0 then; 2 if it never could start.
pub fn serve() -> ExitCode {
    let Ok(fd) = io::stdin().as_fd().try_clone_to_owned() else {
        eprintln!("error: `tapeline __stage` is started by `tapeline run` for an isolated stage");
        return ExitCode::from(2);
    };
    let mut ch = Channel::new(UnixStream::from(fd));
    let Some((mut instance, mut shm, mut stats)) = setup(&mut ch) else {
        return ExitCode::from(2);
    };
    serve_ring(&mut ch, &mut instance, &mut shm, &mut stats);
    ExitCode::SUCCESS
}

/// Answer the request just received (tag `t`), then publish the plugin's counters.
fn respond(
    ch: &mut Channel<UnixStream>,
    instance: &mut Instance,
    shm: &mut Shared,
    stats: &mut PluginStats,
    t: u8,
) -> io::Result<()> {
    let answered = answer(ch, instance, t);
    publish(stats, shm);
    answered
}

/// The plugin's own counters, into the shared memory for the host to read.
fn publish(stats: &mut PluginStats, shm: &Shared) {
    let ring = shm.ring();
    stats.read_into(&ring.stats, &ring.stats_len);
}

impl Instance {
    fn extension(&self, name: &str, version: u32) -> ROption<RawExtension> {
        let name = RStr::from_str(name);
        match self {
            Instance::Capture(c) => c.extension(name, version),
            Instance::Process(p) => p.extension(name, version),
            Instance::Storage(s) => s.extension(name, version),
        }
    }
}

/// INIT: limits, library, instance, shared memory. The reply says whether it worked and, when
/// it did, names the plugin's own counters (JSON; `tapeline.stats`).
fn setup(ch: &mut Channel<UnixStream>) -> Option<(Instance, Shared, PluginStats)> {
    let memory = recv_fd(&ch.stream).ok()?;
    let init: Init = match ch.recv() {
        Ok((tag::INIT, p)) => serde_json::from_slice(p).ok()?,
        _ => return None,
    };
    let built = apply_limits(&init.limits)
        .map_err(|e| PluginError::other(format!("cannot apply the stage's limits: {e}")))
        .and_then(|()| build(&init))
        .and_then(|i| {
            let shm = Shared::open(memory, &init.in_samples, &init.out_samples, init.slots)
                .map_err(|e| PluginError::other(format!("cannot map the shared memory: {e}")))?;
            Ok((i, shm))
        });
    let built = built.map(|(i, shm)| {
        // As in the host: a stats table of another layout is left unread, with a warning.
        let answer = i.extension(STATS_EXTENSION, 1);
        let (stats, names) = PluginStats::from_answer(answer).unwrap_or_else(|e| {
            eprintln!("warning: its counters are not read: {e}");
            (PluginStats::none(), Vec::new())
        });
        (i, shm, stats, names)
    });
    let sent = match &built {
        Ok((.., names)) => {
            let json = serde_json::to_vec(names).unwrap_or_default();
            ch.begin(tag::OK).put(&json).send()
        }
        Err(e) => ch.begin(tag::ERR).put(&encode_error(e)).send(),
    };
    sent.ok()?;
    built.ok().map(|(i, shm, stats, _)| (i, shm, stats))
}

fn build(init: &Init) -> Result<Instance, PluginError> {
    let mut reg = Registry::default();
    reg.add_library(Path::new(&init.library))
        .map_err(|e| PluginError::other(format!("{e}")))?;
    let entry = reg
        .get(&init.plugin)
        .map_err(|e| PluginError::other(format!("{e}")))?;
    let inputs: Vec<PortFormat> = init
        .inputs
        .iter()
        .map(|&(channels, sample_rate)| PortFormat {
            channels,
            sample_rate,
        })
        .collect();
    let ctx = ContextFields {
        stage_id: RStr::from_str(&init.stage_id),
        sample_rate: init.sample_rate,
        block_frames: init.block_frames,
        base_dir: RStr::from_str(&init.base_dir),
        inputs: RSlice::from_slice(&inputs),
    };
    let (name, config) = (RStr::from_str(&init.plugin), RStr::from_str(&init.config));
    let m = entry.module;
    let ctx = ContextRef::new(&ctx);
    Ok(match init.kind.as_str() {
        "capture" => Instance::Capture((m.new_capture())(name, config, ctx).into_result()?),
        "process" => Instance::Process((m.new_processor())(name, config, ctx).into_result()?),
        _ => Instance::Storage((m.new_storage())(name, config, ctx).into_result()?),
    })
}

/// The stage's limits, applied to this process before the plugin is loaded.
fn apply_limits(limits: &Limits) -> io::Result<()> {
    use rustix::process::{setrlimit, Resource, Rlimit};
    let set = |resource, n: u64, hard: u64| {
        setrlimit(
            resource,
            Rlimit {
                current: Some(n),
                maximum: Some(hard),
            },
        )
        .map_err(io::Error::from)
    };
    if let Some(mb) = limits.memory_mb {
        let bytes = mb.saturating_mul(1 << 20);
        set(Resource::As, bytes, bytes)?;
    }
    if let Some(s) = limits.cpu_seconds {
        // SIGXCPU at the limit; a hard limit equal to it would make the kernel send SIGKILL
        // instead, which does not say why.
        set(Resource::Cpu, s, s.saturating_add(1))?;
    }
    if let Some(n) = limits.open_files {
        set(Resource::Nofile, n, n)?;
    }
    Ok(())
}

/// One request (its tag says it all), one reply.
fn answer(ch: &mut Channel<UnixStream>, instance: &mut Instance, t: u8) -> io::Result<()> {
    let mut reply = [0u8; 9];
    let result: Result<usize, PluginError> = match (t, instance) {
        (tag::START, Instance::Capture(c)) => c.start().into_result().map(|()| 0),
        (tag::STOP, Instance::Capture(c)) => c.stop().into_result().map(|()| 0),
        (tag::LENGTH, Instance::Capture(c)) => {
            let n = c.length_frames().into_option();
            reply[0] = u8::from(n.is_some());
            reply[1..9].copy_from_slice(&n.unwrap_or(0).to_le_bytes());
            Ok(9)
        }
        (tag::FLUSH, Instance::Storage(s)) => s.flush().into_result().map(|()| 0),
        (tag::FINALIZE, Instance::Storage(s)) => {
            let report = s.finalize().into_result();
            return match report {
                Ok(r) => {
                    let json = serde_json::to_vec(&Report::from(&r)).unwrap_or_default();
                    ch.begin(tag::OK).put(&json).send()
                }
                Err(e) => ch.begin(tag::ERR).put(&encode_error(&e)).send(),
            };
        }
        _ => Err(PluginError::other(format!(
            "request {t} does not fit this stage"
        ))),
    };
    match result {
        Ok(n) => ch.begin(tag::OK).put(&reply[..n]).send(),
        Err(e) => ch.begin(tag::ERR).put(&encode_error(&e)).send(),
    }
}

/// Answer the calls the host puts in the ring (a capture's reads, a processor's calls, a
/// storage's writes), in order, and the requests it sends between them, until the host closes
/// the socket. After a failed call, wait for the host to say go on.
fn serve_ring(
    ch: &mut Channel<UnixStream>,
    instance: &mut Instance,
    shm: &mut Shared,
    stats: &mut PluginStats,
) {
    let slots = shm.slots() as u64;
    let mut done = 0u64;
    let mut positions: ArrayVec<u64, MAX_PORTS> = ArrayVec::new();
    let mut source = Source::default();
    loop {
        match ring::wait_call(shm, ch, done) {
            ring::Next::End => return,
            ring::Next::Request(t) => {
                if respond(ch, instance, shm, stats, t).is_err() {
                    return;
                }
                continue;
            }
            ring::Next::Call => {}
        }
        let s = (done % slots) as usize;
        let result = match instance {
            Instance::Process(p) => process(p, shm, s, &mut positions),
            Instance::Storage(st) => write_slot(st, shm, s),
            Instance::Capture(c) => read_slot(c, shm, s, &mut source),
        };
        let failed = match result {
            Ok(()) => false,
            Err(e) => {
                // The error first: the host reads it when it meets the failed answer.
                if ch.begin(tag::ERR).put(&encode_error(&e)).send().is_err() {
                    return;
                }
                shm.meta(s)[REPLY_AT] = 1;
                true
            }
        };
        publish(stats, shm);
        done += 1;
        shm.ring().completed.store(done, Ordering::SeqCst);
        if ring::wake_host(shm, ch, done).is_err() {
            return;
        }
        if failed && !resumed(ch, instance, shm, stats) {
            return;
        }
    }
}

/// One call from slot `s`: each input's `frames flags position channels`, each output's
/// `frames channels position flags` → status 0, each output's `frames flags`, then the levels.
/// `positions` carries each output's position from call to call (the host's, set when it put
/// the call in the slot, does not count the calls still in flight).
fn process(
    p: &mut ProcessorBox,
    shm: &mut Shared,
    s: usize,
    positions: &mut ArrayVec<u64, MAX_PORTS>,
) -> Result<(), PluginError> {
    let (meta, ins, outs) = shm.split(s);
    let (request, reply) = meta.split_at_mut(REPLY_AT);
    let mut f = Fields(request);
    let mut inputs: ArrayVec<InputBlock<'_>, MAX_PORTS> = ArrayVec::new();
    for region in ins.iter().take(f.u8() as usize) {
        let (frames, flags, position, channels) = (f.u32(), f.u32(), f.u64(), f.u32());
        let n = (frames as usize * channels as usize).min(region.len());
        inputs.push(InputBlock {
            samples: RSlice::from_slice(&region[..n]),
            frames,
            channels,
            position,
            flags,
        });
    }
    let mut outputs: ArrayVec<OutputBlock<'_>, MAX_PORTS> = ArrayVec::new();
    let n_out = f.u8() as usize;
    for (i, region) in outs.into_iter().take(n_out).enumerate() {
        let (frames, channels, position, flags) = (f.u32(), f.u32(), f.u64(), f.u32());
        outputs.push(OutputBlock {
            samples: RSliceMut::from_mut_slice(region),
            frames,
            channels,
            position: positions.get(i).copied().unwrap_or(position),
            flags,
        });
    }
    p.process(
        RSlice::from_slice(&inputs),
        RSliceMut::from_mut_slice(&mut outputs),
    )
    .into_result()?;
    positions.clear();
    positions.extend(outputs.iter().map(|o| o.position + u64::from(o.frames)));
    let mut put = ring::Put::new(reply);
    put.u8(0);
    for o in &outputs {
        put.u32(o.frames).u32(o.flags);
    }
    let levels = p.levels();
    let levels = &levels.as_slice()[..levels.len().min(MAX_PORTS)];
    put.u8(levels.len() as u8);
    for l in levels {
        put.f32(l.peak_db).f32(l.rms_db);
    }
    Ok(())
}

/// After a failed call: wait until the host says go on (true), answering a storage's flush
/// or finalise meanwhile; false when the host closed the socket.
fn resumed(
    ch: &mut Channel<UnixStream>,
    instance: &mut Instance,
    shm: &mut Shared,
    stats: &mut PluginStats,
) -> bool {
    loop {
        match ring::wait_resume(ch) {
            ring::Next::Call => return true,
            ring::Next::End => return false,
            ring::Next::Request(t) => {
                if respond(ch, instance, shm, stats, t).is_err() {
                    return false;
                }
            }
        }
    }
}

/// Where a capture's source stands, from read to read.
#[derive(Default)]
struct Source {
    /// Where the next block starts (from the first read's request until then).
    next: Option<u64>,
    /// The source said it finished: the reads still in flight are answered as finished.
    finished: bool,
}

/// A capture's read into slot `s`: no input, one output's `frames channels position flags` →
/// status 0, the output's `frames flags`, no levels, then the block's position and whether the
/// source finished (1) or has more (0).
fn read_slot(
    c: &mut CaptureBox,
    shm: &mut Shared,
    s: usize,
    source: &mut Source,
) -> Result<(), PluginError> {
    source.finished |= shm.ring().stopping.load(Ordering::Acquire) != 0;
    let (meta, _, mut outs) = shm.split(s);
    let (request, reply) = meta.split_at_mut(REPLY_AT);
    let mut f = Fields(request);
    let (0, 1, Some(region)) = (f.u8(), f.u8(), outs.pop()) else {
        return Err(PluginError::other("a capture's read has one output"));
    };
    let (frames, channels, position, _) = (f.u32(), f.u32(), f.u64(), f.u32());
    let (frames, n) = match source.finished {
        true => (0, 0),
        false => (
            frames,
            (frames as usize * channels as usize).min(region.len()),
        ),
    };
    let mut block = OutputBlock {
        samples: RSliceMut::from_mut_slice(&mut region[..n]),
        frames,
        channels,
        position: source.next.unwrap_or(position),
        flags: 0,
    };
    if !source.finished {
        source.finished = c.read(&mut block).into_result()? == ReadStatus::Finished;
    }
    source.next = Some(block.position + u64::from(block.frames));
    let mut put = ring::Put::new(reply);
    put.u8(0).u32(block.frames).u32(block.flags).u8(0);
    put.u64(block.position).u8(u8::from(source.finished));
    Ok(())
}

/// A storage's write from slot `s`: its input's `frames flags position channels` (as a
/// processor's call describes it, with no output) → status 0 and no levels.
fn write_slot(st: &mut StorageBox, shm: &mut Shared, s: usize) -> Result<(), PluginError> {
    let (meta, ins, _) = shm.split(s);
    let (request, reply) = meta.split_at_mut(REPLY_AT);
    let mut f = Fields(request);
    let (Some(region), 1) = (ins.first(), f.u8()) else {
        return Err(PluginError::other("a storage's call has one input"));
    };
    let (frames, flags, position, channels) = (f.u32(), f.u32(), f.u64(), f.u32());
    let n = (frames as usize * channels as usize).min(region.len());
    let block = InputBlock {
        samples: RSlice::from_slice(&region[..n]),
        frames,
        channels,
        position,
        flags,
    };
    st.write(&block).into_result()?;
    ring::Put::new(reply).u8(0).u8(0);
    Ok(())
}
