//! What a processing stage does in the stage loop: one block from every input, one `process`
//! call, every output port pushed to its consumers; at the end of the stream, the tail.

use std::time::Duration;

use abi_stable::std_types::{ROption, RSlice, RSliceMut, RStr};
use arrayvec::ArrayVec;
use tapeline_plugin_api::abi::{
    InputBlock, OutputBlock, PluginError, PortFormat, ProcessorBox, RawExtension,
    FLAG_END_OF_STREAM, MAX_TAIL_CALLS,
};

use super::component::Component;
use super::factory::Factory;
use super::out_buffer::OutBuffer;
use super::stage_io::StageIo;
use super::stage_loop::{CallTime, Flow, StageExit, StageWork, Take};
use super::stage_stats::Call;
use crate::discipline::buffers::{DropReason, Received, RecvTimeoutError};
use crate::discipline::state_machine::State;

/// Most input or output ports of one stage.
pub const MAX_PORTS: usize = 64;

/// How long a wait for input lasts before the stop flags are looked at again.
const POLL: Duration = Duration::from_millis(50);

pub struct ProcessStage {
    input_formats: Vec<PortFormat>,
    /// Each output port's format and most frames per block.
    out_ports: Vec<(PortFormat, u32)>,
    /// Silence standing in for an input that ended while others go on.
    silence: Vec<Vec<f32>>,
    /// Where each output port's block is written: a lent pooled block when one is free.
    out: Vec<OutBuffer>,
    /// Output positions for the call (copied from the edges').
    positions: Vec<u64>,
    ended: Vec<bool>,
    held: Vec<Option<Received>>,
    /// Frames of the call (the longest input), its flags, and the oldest capture stamp.
    frames: u32,
    flags: u32,
    stamp: u64,
    /// Frames and flags each output port got from the last call.
    produced: ArrayVec<(u32, u32), MAX_PORTS>,
    /// Every input ended: the calls left for the tail (end-of-stream calls, made in the stage
    /// loop like any other, so that a failing one meets the policy too).
    tail: Option<u32>,
}

impl ProcessStage {
    pub fn new(
        input_formats: Vec<PortFormat>,
        out_ports: Vec<(PortFormat, u32)>,
        block_frames: u32,
    ) -> Self {
        // Only a stage with several inputs goes on after one of them ended.
        let several = input_formats.len() > 1;
        let silence = input_formats
            .iter()
            .map(|f| {
                let n = if several { 4 * f.channels as usize } else { 0 };
                vec![0.0; block_frames as usize * n]
            })
            .collect();
        let out = out_ports
            .iter()
            .map(|(f, max)| OutBuffer::new(*max as usize * f.channels as usize))
            .collect();
        let n_in = input_formats.len();
        ProcessStage {
            positions: vec![0; out_ports.len()],
            ended: vec![false; n_in],
            held: Vec::with_capacity(n_in),
            input_formats,
            out_ports,
            silence,
            out,
            frames: 0,
            flags: 0,
            stamp: 0,
            produced: ArrayVec::new(),
            tail: None,
        }
    }

    /// Every input ended: the next tail call (up to `MAX_TAIL_CALLS`, after the calls an
    /// isolated processor still has in flight), or the end once a tail call wrote nothing.
    fn tail_call(&mut self, io: &mut StageIo, c: &Component) -> Take {
        let in_flight = c.isolation().map_or(0, |i| i.slots as u32);
        let left = *self.tail.get_or_insert(MAX_TAIL_CALLS + in_flight);
        if left == 0 {
            return Take::Ended;
        }
        self.tail = Some(left - 1);
        self.held.clear();
        (self.frames, self.flags, self.stamp) = (0, 0, 0);
        self.positions.copy_from_slice(&io.positions);
        self.lend(io);
        io.in_flight = 0;
        Take::Ready
    }

    /// One call of the processor with the held input (or end of stream when `eos`).
    fn process(&mut self, instance: &mut ProcessorBox, eos: bool) -> Result<(), PluginError> {
        let mut ins: ArrayVec<InputBlock<'_>, MAX_PORTS> = ArrayVec::new();
        for (i, f) in self.input_formats.iter().enumerate() {
            let ch = f.channels;
            ins.push(match self.held.get(i).and_then(Option::as_ref) {
                Some(b) if !eos => InputBlock {
                    samples: RSlice::from_slice(b.data()),
                    frames: b.frames,
                    channels: ch,
                    position: b.position,
                    flags: b.flags,
                },
                _ => {
                    let n = if eos {
                        0
                    } else {
                        (self.frames as usize * ch as usize).min(self.silence[i].len())
                    };
                    InputBlock {
                        samples: RSlice::from_slice(&self.silence[i][..n]),
                        frames: (n / ch.max(1) as usize) as u32,
                        channels: ch,
                        position: 0,
                        flags: if eos { FLAG_END_OF_STREAM } else { 0 },
                    }
                }
            });
        }
        let (frames, flags) = if eos {
            (0, 0)
        } else {
            (self.frames, self.flags)
        };
        let mut outs: ArrayVec<OutputBlock<'_>, MAX_PORTS> = ArrayVec::new();
        for (p, buf) in self.out.iter_mut().enumerate() {
            outs.push(OutputBlock {
                samples: RSliceMut::from_mut_slice(buf.samples_mut()),
                frames: frames.min(self.out_ports[p].1),
                channels: self.out_ports[p].0.channels,
                position: self.positions[p],
                flags,
            });
        }
        let result = instance
            .process(
                RSlice::from_slice(&ins),
                RSliceMut::from_mut_slice(&mut outs),
            )
            .into_result();
        self.produced.clear();
        self.produced
            .extend(outs.iter().map(|o| (o.frames, o.flags)));
        result
    }

    /// Push what the last call produced on every output port; returns the frames pushed.
    fn push_produced(&mut self, io: &mut StageIo, stamp: u64) -> u64 {
        let mut out_frames = 0;
        for (p, &(n, f)) in self.produced.iter().enumerate() {
            let n = n.min(self.out_ports[p].1);
            if n == 0 && f == 0 {
                // Nothing yet (a processor with latency, an isolated one's first calls).
                continue;
            }
            let ch = self.out_ports[p].0.channels;
            let at = (n, io.positions[p], f);
            self.out[p].deliver(&mut io.outputs[p], ch, at, stamp);
            io.positions[p] += u64::from(n);
            out_frames += u64::from(n);
        }
        out_frames
    }
}

impl StageWork for ProcessStage {
    type Instance = ProcessorBox;
    type Factory = Factory;
    const CALL: Call = Call::Process;

    fn build(f: &Factory) -> Result<ProcessorBox, PluginError> {
        f.processor()
    }

    fn take(&mut self, io: &mut StageIo, c: &Component, _given_up: bool) -> Take {
        self.held.clear();
        for (i, input) in io.inputs.iter().enumerate() {
            if self.ended[i] {
                self.held.push(None);
                continue;
            }
            let got = loop {
                match input.recv_timeout(POLL) {
                    Ok(b) => break Some(b),
                    Err(RecvTimeoutError::Disconnected) => break None,
                    Err(RecvTimeoutError::Timeout) if c.stop().is_abandoned() => {
                        self.abandon_held(io);
                        return Take::Ended;
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                }
            };
            self.ended[i] = got.is_none();
            self.held.push(got);
        }
        if c.stop().is_abandoned() {
            self.abandon_held(io);
            return Take::Ended;
        }
        if self.ended.iter().all(|e| *e) {
            return self.tail_call(io, c);
        }
        let blocks = self.held.iter().flatten();
        self.frames = blocks.clone().map(|b| b.frames).max().unwrap_or(0);
        self.flags = blocks.clone().fold(0, |f, b| f | b.flags);
        // The oldest audio in this call, for capture → storage latency.
        self.stamp = blocks
            .map(|b| b.stamp_us)
            .filter(|&t| t != 0)
            .min()
            .unwrap_or(0);
        self.positions.copy_from_slice(&io.positions);
        self.lend(io);
        io.in_flight = u64::from(self.frames);
        Take::Ready
    }

    fn call_kind(&self) -> Call {
        if self.tail.is_some() {
            Call::Finish
        } else {
            Call::Process
        }
    }

    fn call(&mut self, instance: &mut ProcessorBox, c: &Component) -> Result<(), PluginError> {
        let result = self.process(instance, self.tail.is_some());
        let levels = instance.levels();
        if !levels.is_empty() {
            c.stats.publish_levels(levels.as_slice());
        }
        result
    }

    fn deliver(&mut self, io: &mut StageIo, c: &Component, t: CallTime) -> Flow {
        let out_frames = self.push_produced(io, self.stamp);
        if self.tail.is_none() {
            c.stats
                .record_busy(t.busy, u64::from(self.frames), out_frames);
        } else {
            // A tail call took no block (an isolated processor's returns calls in flight).
            c.stats.record_call(t.busy, 0, out_frames);
            if out_frames == 0 {
                // The tail is written.
                self.tail = Some(0);
            }
        }
        self.held.clear();
        io.in_flight = 0;
        Flow::Continue
    }

    fn lost(&mut self, io: &mut StageIo, c: &Component) {
        // The block this call failed on is dropped (stage error), whatever follows. An isolated
        // processor has calls in flight: it says which failed.
        let frames = match c.isolation() {
            Some(iso) => iso.take_lost(),
            None => u64::from(self.frames),
        };
        // A failed tail call of a processor in the host held no block.
        if self.tail.is_none() || frames > 0 {
            io.count_dropped(DropReason::StageError, frames);
        }
        self.held.clear();
        io.in_flight = 0;
    }

    fn extension(instance: &ProcessorBox, name: RStr<'_>, version: u32) -> ROption<RawExtension> {
        instance.extension(name, version)
    }

    fn finish(&mut self, instance: ProcessorBox, io: &mut StageIo, c: &Component) -> StageExit {
        if let Some(iso) = c.isolation() {
            // A failing tail's call, and calls in flight when the stage stops without its tail.
            for (reason, frames) in [
                (DropReason::StageError, iso.take_lost()),
                (DropReason::Shutdown, iso.take_held()),
            ] {
                if frames > 0 {
                    io.count_dropped(reason, frames);
                }
            }
        }
        for (out, port) in self.out.iter_mut().zip(&mut io.outputs) {
            out.give_back(port);
        }
        c.wind_down(State::Stopping, "inputs ended");
        for input in &io.inputs {
            input.discard_all(DropReason::Shutdown);
        }
        StageExit {
            instance: Some(Box::new(instance)),
            ..StageExit::default()
        }
    }
}

impl ProcessStage {
    /// Before a call: every output port borrows a pooled block of its first edge, if free.
    fn lend(&mut self, io: &mut StageIo) {
        for (out, port) in self.out.iter_mut().zip(&mut io.outputs) {
            out.lend(port);
        }
    }

    /// Blocks held when a fast stop abandons them: counted as `shutdown`.
    fn abandon_held(&mut self, io: &StageIo) {
        let frames = self
            .held
            .iter()
            .flatten()
            .map(|b| b.frames)
            .max()
            .unwrap_or(0);
        if frames > 0 {
            io.count_dropped(DropReason::Shutdown, u64::from(frames));
        }
        self.held.clear();
    }
}
