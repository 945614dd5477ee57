//! The mock signal: every sample says which frame and channel it belongs to, exactly.
//!
//! `sample(frame, channel) = ((frame mod 2^18) * 64 + channel) / 2^24`: an integer below 2^24
//! divided by a power of two, so the `f32` holds it exactly and [`decode`] recovers both parts.
//! Values lie in [0, 1). Any stage that changes sample values (a gain, a resampler) makes the
//! signal unreadable; routing stages that move whole channels (a channel split) keep it readable.
//!
//! Every sample carries its channel number, so the verifier also sees channels that arrive out
//! of order: a frame whose channel numbers do not rise from left to right (channel 3 before
//! channel 2) has swapped channels. A subset in order (channel 2 alone, out of a split) is fine.

use tapeline_plugin_api::InputBlock;

/// Frames before the encoded frame number wraps (about 5.5 s at 48 kHz).
pub const FRAME_PERIOD: u64 = 1 << 18;
/// Most channels the encoding can tell apart.
pub const MAX_CHANNELS: u32 = 64;
const SCALE: f32 = (1u32 << 24) as f32;

/// The sample for `frame` on `channel` (`channel < 64`).
pub fn encode(frame: u64, channel: u32) -> f32 {
    let code = (frame % FRAME_PERIOD) as u32 * MAX_CHANNELS + channel;
    code as f32 / SCALE
}

/// `(frame mod 2^18, channel)` of a sample made by [`encode`]; `None` for any other value.
pub fn decode(sample: f32) -> Option<(u64, u32)> {
    let code = sample * SCALE;
    if !(0.0..SCALE).contains(&code) || code.fract() != 0.0 {
        return None;
    }
    let code = code as u32;
    Some((u64::from(code / MAX_CHANNELS), code % MAX_CHANNELS))
}

/// What [`Verifier::check`] found in one block.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockCheck {
    /// Places where frames were missing and the block did not announce it.
    pub gaps: u64,
    /// Frames missing at those places.
    pub missing_frames: u64,
    /// Gaps at the start of a block flagged as a discontinuity (e.g. after a device loss).
    pub announced_gaps: u64,
    pub announced_missing_frames: u64,
    /// Frames that went backwards (duplicated or reordered audio).
    pub reordered: u64,
    /// Frames whose samples are not the mock signal, or whose channels moved.
    pub corrupt_frames: u64,
    /// Frames of the signal whose channels arrived out of order: some channel came before one
    /// with a lower number (e.g. `[0, 1, 3, 2]`), as wrongly wired routing delivers them.
    pub swapped_channels: u64,
}

impl BlockCheck {
    /// True when the block shows loss, reordering, corruption or swapped channels that nobody
    /// announced.
    pub fn is_bad(&self) -> bool {
        self.gaps + self.reordered + self.corrupt_frames + self.swapped_channels > 0
    }
}

/// Follows the stream frame by frame and classifies every departure from the expected sequence.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// The next frame expected (full count, not wrapped).
    pub expected: u64,
    /// The channel numbers seen in the first frame; later frames must carry the same.
    channel_map: [u8; MAX_CHANNELS as usize],
    channels: usize,
    /// The channel map is out of order (some channel before a lower-numbered one).
    swapped: bool,
}

impl Verifier {
    /// A verifier expecting `expected` next (0 for a stream that starts now).
    pub fn new(expected: u64) -> Self {
        Verifier {
            expected,
            channel_map: [0; MAX_CHANNELS as usize],
            channels: 0,
            swapped: false,
        }
    }

    /// Check one block. Never allocates.
    pub fn check(&mut self, block: &InputBlock<'_>) -> BlockCheck {
        let mut found = BlockCheck::default();
        let ch = block.channels() as usize;
        if ch == 0 || ch > MAX_CHANNELS as usize {
            found.corrupt_frames = u64::from(block.frames());
            self.expected += u64::from(block.frames());
            return found;
        }
        let announced = block.is_discontinuity();
        for (i, frame) in block.samples().chunks_exact(ch).enumerate() {
            let Some(low) = self.frame_number(frame) else {
                found.corrupt_frames += 1;
                self.expected += 1;
                continue;
            };
            if self.swapped {
                found.swapped_channels += 1;
            }
            let want = self.expected % FRAME_PERIOD;
            let ahead = (low + FRAME_PERIOD - want) % FRAME_PERIOD;
            if ahead == 0 {
                // In sequence.
            } else if ahead < FRAME_PERIOD / 2 {
                if announced && i == 0 {
                    found.announced_gaps += 1;
                    found.announced_missing_frames += ahead;
                } else {
                    found.gaps += 1;
                    found.missing_frames += ahead;
                }
                self.expected += ahead;
            } else {
                found.reordered += 1;
                self.expected -= (FRAME_PERIOD - ahead).min(self.expected);
            }
            self.expected += 1;
        }
        found
    }

    /// The frame number all samples of `frame` agree on, with the same channel layout as the
    /// first frame seen; `None` otherwise.
    fn frame_number(&mut self, frame: &[f32]) -> Option<u64> {
        if self.channels != frame.len() {
            if self.channels != 0 {
                return None;
            }
            for (slot, s) in self.channel_map.iter_mut().zip(frame) {
                *slot = decode(*s)?.1 as u8;
            }
            self.channels = frame.len();
            self.swapped = self.channel_map[..frame.len()]
                .windows(2)
                .any(|w| w[0] > w[1]);
        }
        let mut number = None;
        for (s, want_channel) in frame.iter().zip(&self.channel_map) {
            let (low, channel) = decode(*s)?;
            if channel != u32::from(*want_channel) || number.is_some_and(|n| n != low) {
                return None;
            }
            number = Some(low);
        }
        number
    }
}
