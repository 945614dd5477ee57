//! Lending: a producing stage fills a pooled block in place instead of its own buffer, so a
//! sample is written once per stage rather than written, then copied into the edge's block.
//!
//! [`Producer::lend`] hands out a free pooled block, never waiting and never evicting: when
//! none is free now (the consumer is behind, or the edge is closed), the stage writes into its
//! own buffer and [`Producer::push`] copies it, waiting or dropping by the edge's policy as
//! always. [`Producer::commit`] queues a lent block exactly as `push` queues a copied one: same
//! policy, same counters, same wake-ups. A lent block that is never committed goes back with
//! [`Producer::give_back`]. Neither allocates.

use super::{Block, Closed, Producer, PushOutcome, ORD};

impl Producer {
    /// A free pooled block of at least `samples` samples to fill in place, if there is one now.
    pub fn lend(&mut self, samples: usize) -> Option<Block> {
        if self.stats.closed.load(ORD) {
            return None;
        }
        let block = self.take_free()?;
        if block.samples.len() < samples {
            // Never happens for a port's own edges (their blocks hold the port's largest block).
            self.spares.push(block);
            return None;
        }
        Some(block)
    }

    /// Queue a lent block holding `frames` frames, per the edge's policy, as [`Producer::push`]
    /// would queue a copy of them.
    ///
    /// # Panics
    /// If `frames > max_frames` (a host bug).
    pub fn commit(
        &mut self,
        block: Block,
        at: (u32, u64, u32),
        stamp_us: u64,
    ) -> Result<PushOutcome, Closed> {
        assert!(
            at.0 <= self.stats.max_frames,
            "edge `{}`: block of {} frames exceeds max_frames {}",
            self.stats.label,
            at.0,
            self.stats.max_frames
        );
        self.queue_filled(block, at, stamp_us, PushOutcome::Queued)
    }

    /// A lent block that will not be committed goes back to the pool.
    pub fn give_back(&mut self, block: Block) {
        self.spares.push(block);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::spec;
    use super::super::{edge, WhenFull};
    use super::*;

    /// A lent block filled in place arrives as a pushed copy would, and the accounting holds.
    #[test]
    fn buffers_a_lent_block_arrives_like_a_pushed_one() {
        let (mut p, c, stats) = edge(spec(WhenFull::Block, 2));
        let mut b = p.lend(8).expect("a fresh edge has free blocks");
        b.samples[..6].copy_from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(p.commit(b, (3, 10, 7), 42), Ok(PushOutcome::Queued));
        p.push(&[9.0, 9.0], 1, 13, 0).unwrap();
        let got = c.recv().unwrap();
        assert_eq!(got.data(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!((got.position, got.flags, got.stamp_us), (10, 7, 42));
        drop(got);
        assert_eq!(c.recv().unwrap().data(), &[9.0, 9.0]);
        let s = stats.snapshot();
        assert!(s.invariant_holds(), "{s:?}");
        assert_eq!((s.pushed, s.pushed_frames, s.popped_frames), (2, 4, 4));
    }

    /// Lending never waits: with every block queued or held it says no, and the pool is whole
    /// again once the consumer catches up (a block given back is lent again).
    #[test]
    fn buffers_lending_never_waits_and_gives_back() {
        let (mut p, c, stats) = edge(spec(WhenFull::Block, 2));
        // Pool of 4: two queued, one held by the consumer, one lent.
        p.push(&[0.0; 2], 1, 0, 0).unwrap();
        p.push(&[0.0; 2], 1, 1, 0).unwrap();
        let held = c.recv().unwrap();
        p.push(&[0.0; 2], 1, 2, 0).unwrap();
        let lent = p.lend(8).expect("one block is still free");
        assert!(p.lend(8).is_none(), "nothing free: no waiting, no eviction");
        p.give_back(lent);
        assert!(p.lend(1000).is_none(), "blocks hold 8 samples, not 1000");
        assert!(p.lend(8).is_some(), "the given-back block is lent again");
        drop(held);
        let s = stats.snapshot();
        assert_eq!((s.pushed, s.dropped()), (3, 0));
    }

    /// A commit after the consumer left is refused and counted as a `shutdown` drop, like a push.
    #[test]
    fn buffers_a_commit_after_the_consumer_left_is_counted() {
        let (mut p, c, stats) = edge(spec(WhenFull::DropNewest, 1));
        let b = p.lend(8).unwrap();
        drop(c);
        assert!(p.lend(8).is_none(), "a closed edge lends nothing");
        assert_eq!(p.commit(b, (4, 0, 0), 0), Err(Closed));
        let s = stats.snapshot();
        assert!(s.invariant_holds(), "{s:?}");
        assert_eq!(s.dropped_shutdown, 1);
    }

    /// Under `drop-newest`, a lent block committed to a full queue is discarded and counted.
    #[test]
    fn buffers_a_commit_to_a_full_drop_newest_edge_is_an_overflow() {
        let (mut p, _c, stats) = edge(spec(WhenFull::DropNewest, 1));
        p.push(&[0.0; 2], 1, 0, 0).unwrap();
        let b = p.lend(8).unwrap();
        assert_eq!(p.commit(b, (1, 1, 0), 0), Ok(PushOutcome::Discarded));
        let s = stats.snapshot();
        assert!(s.invariant_holds(), "{s:?}");
        assert_eq!(s.dropped_overflow, 1);
    }
}
