//! What a capture stage does in the stage loop: read a block from its source, fill any gap the
//! source reports with silence, push the block to every consumer.

use std::time::Duration;

use abi_stable::std_types::{ROption, RSliceMut, RStr};
use tapeline_plugin_api::abi::{
    CaptureBox, OutputBlock, PluginError, RawExtension, ReadStatus, FLAG_DISCONTINUITY,
};

use super::component::{Component, Event};
use super::factory::Factory;
use super::out_buffer::{push_all, OutBuffer};
use super::policy::Severity;
use super::stage_io::StageIo;
use super::stage_loop::{CallTime, Flow, StageExit, StageWork, Take};
use super::stage_stats::Call;
use crate::discipline::state_machine::State;

pub struct CaptureStage {
    frames: u32,
    channels: u32,
    /// Where the source writes: a pooled block of the output edge when one is free.
    out: OutBuffer,
    silence: Vec<f32>,
    /// The last read: frames, flags and position it reported, and its status.
    read: (u32, u32, u64, ReadStatus),
    /// Where the next block starts (copied from the edges' position for the call).
    position: u64,
}

impl CaptureStage {
    pub fn new(block_frames: u32, channels: u32) -> Self {
        let n = block_frames as usize * channels as usize;
        CaptureStage {
            frames: block_frames,
            channels,
            out: OutBuffer::new(n),
            silence: vec![0.0; n],
            read: (0, 0, 0, ReadStatus::More),
            position: 0,
        }
    }

    /// The source skipped frames (a device gap): silence keeps the timeline.
    fn fill_gap(&self, io: &mut StageIo, c: &Component, gap: u64, stamp: u64) {
        c.stats.count_gap(gap);
        let mut left = gap;
        let mut flags = FLAG_DISCONTINUITY;
        while left > 0 {
            let k = left.min(u64::from(self.frames)) as u32;
            let samples = &self.silence[..k as usize * self.channels as usize];
            push_all(
                &mut io.outputs[0],
                samples,
                (k, io.positions[0], flags),
                stamp,
            );
            io.positions[0] += u64::from(k);
            left -= u64::from(k);
            flags = 0;
        }
    }
}

impl StageWork for CaptureStage {
    type Instance = CaptureBox;
    type Factory = Factory;
    const CALL: Call = Call::Read;

    fn build(f: &Factory) -> Result<CaptureBox, PluginError> {
        f.capture()
    }
    fn start(c: &mut CaptureBox) -> Result<(), PluginError> {
        c.start().into_result()
    }

    fn started(&mut self, instance: &CaptureBox, c: &Component) {
        if let Some(n) = instance.length_frames().into_option() {
            c.stats
                .length_frames
                .store(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn take(&mut self, io: &mut StageIo, c: &Component, _given_up: bool) -> Take {
        if c.stop().captures_stopped() {
            return Take::Ended;
        }
        self.position = io.positions[0];
        self.out.lend(&mut io.outputs[0]);
        io.in_flight = 0;
        Take::Ready
    }

    fn call(&mut self, instance: &mut CaptureBox, _c: &Component) -> Result<(), PluginError> {
        let mut out = OutputBlock {
            samples: RSliceMut::from_mut_slice(self.out.samples_mut()),
            frames: self.frames,
            channels: self.channels,
            position: self.position,
            flags: 0,
        };
        let status = instance.read(&mut out).into_result()?;
        self.read = (out.frames.min(self.frames), out.flags, out.position, status);
        Ok(())
    }

    fn deliver(&mut self, io: &mut StageIo, c: &Component, t: CallTime) -> Flow {
        let stamp = t.end_us;
        let (n, flags, at, status) = self.read;
        c.stats.record_busy(t.busy, 0, u64::from(n));
        if flags & FLAG_DISCONTINUITY != 0 && at > io.positions[0] {
            self.fill_gap(io, c, at - io.positions[0], stamp);
        }
        if n > 0 {
            let at = (n, io.positions[0], flags);
            self.out
                .deliver(&mut io.outputs[0], self.channels, at, stamp);
            io.positions[0] += u64::from(n);
        }
        if status == ReadStatus::Finished {
            c.send(Event::Ended { stage: c.who.index });
            return Flow::Ended;
        }
        Flow::Continue
    }

    fn lost(&mut self, _io: &mut StageIo, _c: &Component) {
        // A failed read produced nothing: nothing to count.
    }

    fn ignored(&mut self, c: &Component) {
        // A source that keeps failing (a device that is gone) is not polled in a loop.
        let wait = c.on_error_policy().backoff_ms.clamp(10, 1000);
        c.stop().nap(Duration::from_millis(wait));
    }

    fn extension(instance: &CaptureBox, name: RStr<'_>, version: u32) -> ROption<RawExtension> {
        instance.extension(name, version)
    }

    fn finish(&mut self, mut instance: CaptureBox, io: &mut StageIo, c: &Component) -> StageExit {
        if let Some(port) = io.outputs.first_mut() {
            self.out.give_back(port);
        }
        // Recorded before the outputs close, so downstream stages stop after this one.
        c.wind_down(State::Stopping, "source ended or stop requested");
        if let Err(e) = instance.stop().into_result() {
            c.report(Severity::Warning, e);
        }
        StageExit {
            instance: Some(Box::new(instance)),
            ..StageExit::default()
        }
    }
}
