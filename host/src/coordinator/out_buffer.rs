//! Where a stage's plugin writes one output port's block: a pooled block lent by the port's
//! first edge, filled in place and then queued (one write per sample), or, when that edge has
//! no block free at the moment, the stage's own buffer, copied into each edge's block on push.
//!
//! Both are set up before the call, while the stage thread holds its edges; during the call
//! the buffer belongs to the stage's work (the edges may be handed to another thread then).
//! A port with several consumers (fan-out) fills the first edge's block and copies it to the
//! others. Nothing here allocates after [`OutBuffer::new`]. A block lent to a call the
//! watchdog gives up stays with that call's thread (the plugin may still write into it) and is
//! freed when that thread ends: the edge's pool is one block smaller from then on, and the
//! stage's next thread writes into its own buffer whenever the pool is short.

use crate::discipline::buffers::{Block, Closed, Producer};

pub struct OutBuffer {
    /// A pooled block of the port's first edge, when one was free before the call.
    lent: Option<Block>,
    /// The stage's own buffer, for when none was.
    own: Vec<f32>,
}

impl OutBuffer {
    /// Room for `samples` samples (the port's largest block, all channels).
    pub fn new(samples: usize) -> Self {
        OutBuffer {
            lent: None,
            own: vec![0.0; samples],
        }
    }

    /// Before a call: borrow a pooled block of the port's first edge, if one is free now.
    pub fn lend(&mut self, edges: &mut [Producer]) {
        if self.lent.is_none() {
            self.lent = edges.first_mut().and_then(|p| p.lend(self.own.len()));
        }
    }

    /// What the plugin writes into: the port's largest block.
    pub fn samples_mut(&mut self) -> &mut [f32] {
        let n = self.own.len();
        match self.lent.as_mut() {
            Some(b) => &mut b.samples[..n],
            None => &mut self.own,
        }
    }

    /// After the call: pass `frames` frames of `channels` channels on to every edge of the port
    /// (`at` = frames, position, flags).
    pub fn deliver(
        &mut self,
        edges: &mut [Producer],
        channels: u32,
        at: (u32, u64, u32),
        stamp_us: u64,
    ) {
        let n = at.0 as usize * channels as usize;
        match (self.lent.take(), edges.split_first_mut()) {
            (Some(block), Some((first, rest))) => {
                push_all(rest, &block.samples[..n], at, stamp_us);
                // Whatever happened to it (queued, an overflow, the consumer gone), the edge
                // counted it.
                match first.commit(block, at, stamp_us) {
                    Ok(_) | Err(Closed) => {}
                }
            }
            _ => push_all(edges, &self.own[..n], at, stamp_us),
        }
    }

    /// The stage is done with the port: a block still lent goes back to its edge.
    pub fn give_back(&mut self, edges: &mut [Producer]) {
        if let (Some(block), Some(first)) = (self.lent.take(), edges.first_mut()) {
            first.give_back(block);
        }
    }
}

/// Push one block to every edge consuming a port: `(frames, position, flags)`.
pub fn push_all(producers: &mut [Producer], samples: &[f32], at: (u32, u64, u32), stamp_us: u64) {
    let (frames, position, flags) = at;
    for p in producers {
        // A consumer that is gone (its stage failed) cannot take more: the edge counts the
        // block as dropped (`shutdown`), nothing else to do.
        if p.push_stamped(samples, frames, position, flags, stamp_us)
            .is_err()
        {
            continue;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discipline::buffers::tests::spec;
    use crate::discipline::buffers::{edge, WhenFull};

    /// The plugin writes into the first edge's pooled block itself (the consumer gets that very
    /// memory), the other edges of a fan-out get copies, and every edge counts the block.
    #[test]
    fn a_lent_block_is_what_the_first_consumer_receives() {
        let (p1, c1, s1) = edge(spec(WhenFull::Block, 2));
        let (p2, c2, s2) = edge(spec(WhenFull::Block, 2));
        let mut edges = vec![p1, p2];
        let mut out = OutBuffer::new(8);
        out.lend(&mut edges);
        let written = out.samples_mut().as_ptr();
        out.samples_mut()[..4].copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
        out.deliver(&mut edges, 2, (2, 100, 0), 7);
        let (got1, got2) = (c1.recv().unwrap(), c2.recv().unwrap());
        assert_eq!(
            got1.samples.as_ptr(),
            written,
            "filled in place, not copied"
        );
        assert_eq!(
            (got1.data(), got2.data()),
            (&[1.0, 2.0, 3.0, 4.0][..], &[1.0, 2.0, 3.0, 4.0][..])
        );
        assert_eq!((got1.position, got2.position, got1.stamp_us), (100, 100, 7));
        for s in [s1, s2] {
            let s = s.snapshot();
            assert!(s.invariant_holds(), "{s:?}");
            assert_eq!((s.pushed_frames, s.popped_frames), (2, 2));
        }
    }

    /// With no pooled block free (the consumer is behind), the stage's own buffer is used and
    /// copied on push: nothing waits before the call and nothing is lost.
    #[test]
    fn without_a_free_block_the_own_buffer_is_pushed() {
        let (p, c, stats) = edge(spec(WhenFull::Block, 2));
        let mut edges = vec![p];
        // Pool of 4: two queued, one held by the consumer, one lent and kept by `hoard`.
        let mut hoard = OutBuffer::new(8);
        hoard.lend(&mut edges);
        edges[0].push(&[0.0; 2], 1, 0, 0).unwrap();
        edges[0].push(&[0.0; 2], 1, 1, 0).unwrap();
        let held = c.recv().unwrap();
        edges[0].push(&[0.0; 2], 1, 2, 0).unwrap();
        let mut out = OutBuffer::new(8);
        out.lend(&mut edges);
        let own = out.samples_mut().as_ptr();
        out.samples_mut()[..2].copy_from_slice(&[5.0, 6.0]);
        // The consumer catches up by one block: room in the queue, a block back in the pool.
        drop(held);
        let second = c.recv().unwrap();
        out.deliver(&mut edges, 2, (1, 3, 0), 0);
        drop(second);
        hoard.give_back(&mut edges);
        let rest: Vec<_> = std::iter::from_fn(|| c.try_recv().ok()).collect();
        let last = rest.last().unwrap();
        assert_ne!(last.samples.as_ptr(), own);
        assert_eq!((last.position, last.data()), (3, &[5.0, 6.0][..]));
        assert_eq!(stats.snapshot().pushed, 4);
    }
}
