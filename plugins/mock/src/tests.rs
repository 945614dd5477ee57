use tapeline_plugin_api::abi_stable::std_types::RSlice;
use tapeline_plugin_api::sdk::parse_config;
use tapeline_plugin_api::{ErrorKind, InputBlock, FLAG_DISCONTINUITY};

use crate::signal::{decode, encode, Verifier, FRAME_PERIOD, MAX_CHANNELS};
use crate::{MockCaptureConfig, MockProcessConfig, MockStorageConfig};

/// Interleaved mock signal for `frames`, `channels` channels.
fn signal(frames: std::ops::Range<u64>, channels: u32) -> Vec<f32> {
    frames
        .flat_map(|f| (0..channels).map(move |c| encode(f, c)))
        .collect()
}

fn block(samples: &[f32], channels: u32, flags: u32) -> InputBlock<'_> {
    InputBlock {
        samples: RSlice::from_slice(samples),
        frames: samples.len() as u32 / channels,
        channels,
        position: 0,
        flags,
    }
}

mod signal_encoding {
    use super::*;

    #[test]
    fn every_frame_and_channel_round_trips_exactly() {
        for frame in (0..FRAME_PERIOD).step_by(997).chain([FRAME_PERIOD - 1]) {
            for channel in [0, 1, 31, MAX_CHANNELS - 1] {
                let s = encode(frame, channel);
                assert!((0.0..1.0).contains(&s));
                assert_eq!(decode(s), Some((frame, channel)));
            }
        }
        assert_eq!(decode(encode(FRAME_PERIOD + 5, 3)), Some((5, 3)));
    }

    #[test]
    fn values_off_the_grid_do_not_decode() {
        // Every f32 in [0.5, 1) is on the 2^-24 grid; the verifier's sequence check covers those.
        let half_step = 1.5 / (1u32 << 24) as f32;
        for v in [-0.5, 1.0, 7.0, f32::NAN, f32::INFINITY, half_step, 1e-9] {
            assert_eq!(decode(v), None, "{v}");
        }
    }
}

mod verifier {
    use super::*;

    #[test]
    fn an_unbroken_stream_has_no_findings() {
        let mut v = Verifier::new(0);
        for start in (0..4800).step_by(480) {
            let s = signal(start..start + 480, 2);
            assert!(!v.check(&block(&s, 2, 0)).is_bad());
        }
        assert_eq!(v.expected, 4800);
    }

    #[test]
    fn a_dropped_block_is_one_gap_with_its_frame_count() {
        let mut v = Verifier::new(0);
        v.check(&block(&signal(0..480, 2), 2, 0));
        let found = v.check(&block(&signal(960..1440, 2), 2, 0));
        assert_eq!((found.gaps, found.missing_frames), (1, 480));
        assert_eq!(v.expected, 1440);
    }

    #[test]
    fn a_gap_on_a_discontinuity_block_counts_as_announced() {
        let mut v = Verifier::new(0);
        v.check(&block(&signal(0..480, 1), 1, 0));
        let found = v.check(&block(&signal(5000..5480, 1), 1, FLAG_DISCONTINUITY));
        assert_eq!((found.gaps, found.announced_gaps), (0, 1));
        assert_eq!(found.announced_missing_frames, 4520);
        assert!(!found.is_bad());
    }

    #[test]
    fn a_repeated_block_counts_as_reordered() {
        let mut v = Verifier::new(0);
        let first = signal(0..480, 2);
        v.check(&block(&first, 2, 0));
        let found = v.check(&block(&first, 2, 0));
        assert_eq!(found.reordered, 1);
        assert_eq!(found.gaps, 0);
        assert_eq!(v.expected, 480);
    }

    #[test]
    fn swapped_channels_and_altered_samples_are_corrupt() {
        let mut v = Verifier::new(0);
        v.check(&block(&signal(0..10, 2), 2, 0));
        let mut swapped = signal(10..20, 2);
        swapped.swap(0, 1);
        assert_eq!(v.check(&block(&swapped, 2, 0)).corrupt_frames, 1);
        let halved: Vec<f32> = signal(20..30, 2).iter().map(|s| s * 0.5).collect();
        assert_eq!(v.check(&block(&halved, 2, 0)).corrupt_frames, 10);
        assert_eq!(v.expected, 30);
    }

    #[test]
    fn one_channel_split_out_of_a_stereo_stream_verifies() {
        let right: Vec<f32> = signal(0..480, 2).chunks(2).map(|f| f[1]).collect();
        let mut v = Verifier::new(0);
        assert!(!v.check(&block(&right, 1, 0)).is_bad());
    }
}

mod config {
    use super::*;

    fn key_of(err: tapeline_plugin_api::PluginError) -> String {
        assert_eq!(err.kind, ErrorKind::InvalidConfig);
        err.key().unwrap_or("").to_string()
    }

    #[test]
    fn unknown_keys_are_rejected_by_every_mock() {
        assert!(parse_config::<MockCaptureConfig>(r#"{"panic_at": 1}"#).is_err());
        assert!(parse_config::<MockProcessConfig>(r#"{"frames": 1}"#).is_err());
        assert!(parse_config::<MockStorageConfig>(r#"{"channels": 1}"#).is_err());
    }

    #[test]
    fn half_given_fault_pairs_name_the_missing_key() {
        let c: MockProcessConfig = parse_config(r#"{"stall_at_block": 3}"#).unwrap();
        assert_eq!(key_of(c.faults().unwrap_err()), "stall_ms");
        let c: MockProcessConfig = parse_config(r#"{"error_kind": "io"}"#).unwrap();
        assert_eq!(key_of(c.faults().unwrap_err()), "error_kind");
    }

    #[test]
    fn error_kind_names_match_the_api_names() {
        for kind in [
            "invalid-config",
            "unsupported-format",
            "device-lost",
            "io",
            "other",
        ] {
            let c: MockStorageConfig = parse_config(&format!(
                r#"{{"error_at_block": 0, "error_kind": "{kind}"}}"#
            ))
            .unwrap();
            let k: ErrorKind = c.error_kind.unwrap().into();
            assert_eq!(k.as_str(), kind);
        }
    }
}
