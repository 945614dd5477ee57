//! Tests of every plugin through its real `Processor` impl, one module per topic. Every
//! `process` call goes through the SDK's audio-path guard, which fails it if it allocated.

use std::f64::consts::PI;

use serde::de::DeserializeOwned;
use tapeline_plugin_api::prelude::*;
use tapeline_plugin_api::sdk::parse_config;
use tapeline_plugin_api::testing::{audio_call, context, input, output, Context};

mod biquad;
mod library;
mod meter;
mod resample;
mod routing;

const RATE: u32 = 48_000;
const BLOCK: usize = 480;

fn format(channels: u32, sample_rate: u32) -> PortFormat {
    PortFormat {
        channels,
        sample_rate,
    }
}

/// A context at the pipeline rate of 48 kHz with blocks of 480 frames (`.get()` it).
fn ctx(inputs: &[PortFormat]) -> Context {
    ctx_at(RATE, inputs)
}

fn ctx_at(sample_rate: u32, inputs: &[PortFormat]) -> Context {
    context(inputs)
        .with_stage_id("t")
        .with_base_dir("")
        .with_sample_rate(sample_rate)
        .with_block_frames(BLOCK as u32)
}

fn config<C: DeserializeOwned + JsonSchema>(json: &str) -> C {
    parse_config(json).expect("valid test config")
}

/// Build processor `P` from JSON config text, as the host would.
fn build<P: Processor>(json: &str, ctx: &StageContext<'_>) -> P {
    match P::new(config(json), ctx) {
        Ok(p) => p,
        Err(e) => panic!("{} rejected {json}: {e}", P::NAME),
    }
}

/// The error `P` gives for this config, from `outputs` (validation) and `new` alike.
fn rejection<P: Processor>(json: &str, ctx: &StageContext<'_>) -> PluginError {
    let e = P::outputs(&config(json), ctx).expect_err("outputs() rejects the config");
    let e2 = P::new(config(json), ctx)
        .err()
        .expect("new() rejects the config");
    assert_eq!(e, e2, "outputs() and new() disagree");
    e
}

/// Run `p` over whole signals (one interleaved signal per input, equal frame counts) in blocks
/// of `block` frames, the last possibly shorter, with one output buffer per port sized as
/// the port declares, then end the stream as the host does ([`finish`]). Returns each port's
/// interleaved output.
fn run<P: Processor>(
    p: &mut P,
    inputs: &[(&[f32], u32)],
    ports: &[OutputPort],
    block: usize,
) -> Vec<Vec<f32>> {
    let mut results = run_blocks(p, inputs, ports, block);
    for (result, tail) in results.iter_mut().zip(finish(p, ports)) {
        result.extend(tail);
    }
    results
}

/// Port buffers as the host sizes them, filled with NaN so unwritten samples show.
fn port_buffers(ports: &[OutputPort], block: usize) -> Vec<Vec<f32>> {
    ports
        .iter()
        .map(|port| {
            let frames = (port.max_frames as usize).max(block);
            vec![f32::NAN; frames * port.format.channels as usize]
        })
        .collect()
}

/// End of stream as the host signals it: `finish` (through the audio-path guard) until it
/// writes nothing. Returns each port's interleaved tail.
fn finish<P: Processor>(p: &mut P, ports: &[OutputPort]) -> Vec<Vec<f32>> {
    let mut bufs = port_buffers(ports, BLOCK);
    let mut results: Vec<Vec<f32>> = vec![Vec::new(); ports.len()];
    for _ in 0..tapeline_plugin_api::MAX_TAIL_CALLS {
        let mut outs: Vec<OutputBlock<'_>> = bufs
            .iter_mut()
            .zip(ports)
            .map(|(buf, port)| output(buf, port.format.channels).with_frames(0))
            .collect();
        audio_call("finish", || p.finish(&mut outs))
            .unwrap_or_else(|e| panic!("finish failed: {e}"));
        let produced: Vec<usize> = outs
            .iter()
            .map(|o| o.frames() as usize * o.channels() as usize)
            .collect();
        drop(outs);
        if produced.iter().all(|n| *n == 0) {
            break;
        }
        for ((result, buf), n) in results.iter_mut().zip(&bufs).zip(produced) {
            result.extend_from_slice(&buf[..n]);
        }
    }
    results
}

/// [`run`] without the end of the stream: the blocks only.
fn run_blocks<P: Processor>(
    p: &mut P,
    inputs: &[(&[f32], u32)],
    ports: &[OutputPort],
    block: usize,
) -> Vec<Vec<f32>> {
    let total = inputs[0].0.len() / inputs[0].1 as usize;
    for (signal, ch) in inputs {
        assert_eq!(
            signal.len() / *ch as usize,
            total,
            "inputs differ in length"
        );
    }
    let mut bufs = port_buffers(ports, block);
    let mut results: Vec<Vec<f32>> = vec![Vec::new(); ports.len()];
    let mut start = 0;
    while start < total {
        let frames = block.min(total - start);
        let ins: Vec<InputBlock<'_>> = inputs
            .iter()
            .map(|(signal, ch)| {
                let samples = &signal[start * *ch as usize..(start + frames) * *ch as usize];
                input(samples, *ch).with_position(start as u64)
            })
            .collect();
        let mut outs: Vec<OutputBlock<'_>> = bufs
            .iter_mut()
            .zip(ports)
            .map(|(buf, port)| {
                output(buf, port.format.channels)
                    .with_frames(frames as u32)
                    .with_position(start as u64)
            })
            .collect();
        audio_call("process", || p.process(&ins, &mut outs))
            .unwrap_or_else(|e| panic!("process failed: {e}"));
        let produced: Vec<usize> = outs
            .iter()
            .map(|o| o.frames() as usize * o.channels() as usize)
            .collect();
        drop(outs);
        for ((result, buf), n) in results.iter_mut().zip(&bufs).zip(produced) {
            result.extend_from_slice(&buf[..n]);
        }
        start += frames;
    }
    results
}

/// `frames` frames of a sine of amplitude `amp` at `freq` Hz, the same on `channels` channels.
fn sine(freq: f64, sample_rate: u32, amp: f64, frames: usize, channels: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(frames * channels);
    for n in 0..frames {
        let x = (amp * (2.0 * PI * freq * n as f64 / f64::from(sample_rate)).sin()) as f32;
        v.extend(std::iter::repeat_n(x, channels));
    }
    v
}

/// Deterministic white noise in [-amp, amp).
fn noise(frames: usize, channels: usize, amp: f32, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..frames * channels)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
        })
        .collect()
}

fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>() / x.len() as f64).sqrt()
}

fn db(ratio: f64) -> f64 {
    20.0 * ratio.log10()
}

/// Bit-for-bit equality, NaNs and signed zeros included.
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}
