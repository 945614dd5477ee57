//! `channel-split`, `channel-merge` and `remap`: channels move, samples stay exact.

use super::*;
use crate::{ChannelMerge, ChannelSplit, Remap};

mod split {
    use super::*;

    #[test]
    fn stereo_gets_numbered_ports_with_left_right_aliases() {
        let inputs = [format(2, RATE)];
        let ports = ChannelSplit::outputs(&config("{}"), &ctx(&inputs).get()).unwrap();
        let names: Vec<(&str, &str)> = ports
            .iter()
            .map(|p| (p.name(), p.alias().unwrap_or("")))
            .collect();
        assert_eq!(names, [("0", "left"), ("1", "right")]);
        assert!(ports.iter().all(|p| p.format == format(1, RATE)));
    }

    #[test]
    fn other_counts_get_numbers_only() {
        for channels in [1, 3, 6] {
            let inputs = [format(channels, 44_100)];
            let ports = ChannelSplit::outputs(&config("{}"), &ctx(&inputs).get()).unwrap();
            assert_eq!(ports.len(), channels as usize);
            for (i, p) in ports.iter().enumerate() {
                assert_eq!(p.name(), i.to_string());
                assert_eq!(p.alias(), None);
                assert_eq!(p.format, format(1, 44_100));
            }
        }
    }

    #[test]
    fn each_port_carries_its_channel() {
        let inputs = [format(3, RATE)];
        let cx = ctx(&inputs);
        let c = cx.get();
        let ports = ChannelSplit::outputs(&config("{}"), &c).unwrap();
        let mut split: ChannelSplit = build("{}", &c);
        let signal: Vec<f32> = (0..3000).map(|i| i as f32).collect();
        let outs = run(&mut split, &[(&signal, 3)], &ports, BLOCK);
        for (ch, out) in outs.iter().enumerate() {
            let want: Vec<f32> = signal.iter().skip(ch).step_by(3).copied().collect();
            assert!(same_bits(out, &want), "port {ch}");
        }
    }

    #[test]
    fn refuses_keys_and_needs_one_input() {
        assert!(parse_config::<crate::ChannelSplitConfig>(r#"{"channels": 2}"#).is_err());
        let inputs = [format(1, RATE), format(1, RATE)];
        let e = ChannelSplit::outputs(&config("{}"), &ctx(&inputs).get()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnsupportedFormat);
    }
}

mod merge {
    use super::*;

    #[test]
    fn concatenates_channels_in_input_order() {
        let inputs = [format(1, RATE), format(2, RATE), format(1, RATE)];
        let cx = ctx(&inputs);
        let c = cx.get();
        let ports = ChannelMerge::outputs(&config("{}"), &c).unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].name(), "out");
        assert_eq!(ports[0].format, format(4, RATE));
        let mut merge: ChannelMerge = build("{}", &c);
        let frames = 1000;
        let a: Vec<f32> = (0..frames).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..frames * 2).map(|i| -(i as f32)).collect();
        let d: Vec<f32> = (0..frames).map(|i| 0.5 + i as f32).collect();
        let out = run(&mut merge, &[(&a, 1), (&b, 2), (&d, 1)], &ports, BLOCK).remove(0);
        assert_eq!(out.len(), frames * 4);
        for (f, frame) in out.chunks_exact(4).enumerate() {
            assert_eq!(frame, [a[f], b[2 * f], b[2 * f + 1], d[f]], "frame {f}");
        }
    }

    #[test]
    fn mixed_rates_are_refused_naming_both() {
        let inputs = [format(2, RATE), format(1, RATE), format(1, 44_100)];
        let e = rejection::<ChannelMerge>("{}", &ctx(&inputs).get());
        assert_eq!(e.kind(), ErrorKind::UnsupportedFormat);
        assert!(e.message().contains("48000 Hz"), "{e}");
        assert!(e.message().contains("44100 Hz"), "{e}");
        assert!(e.message().contains("input 3"), "{e}");
    }

    #[test]
    fn more_than_64_channels_are_refused() {
        let inputs = [format(40, RATE), format(30, RATE)];
        let e = rejection::<ChannelMerge>("{}", &ctx(&inputs).get());
        assert_eq!(e.kind(), ErrorKind::UnsupportedFormat);
        assert!(e.message().contains("70"), "{e}");
    }

    #[test]
    fn split_then_merge_gives_back_the_input_exactly() {
        for channels in [2u32, 5] {
            let input = [format(channels, RATE)];
            let cx = ctx(&input);
            let c = cx.get();
            let split_ports = ChannelSplit::outputs(&config("{}"), &c).unwrap();
            let mut split: ChannelSplit = build("{}", &c);
            // Noise with a short last block (2345 = 4 * 480 + 425), plus values that only
            // survive a bit-exact path: -0.0, subnormals, extremes.
            let mut signal = noise(2345, channels as usize, 1.0, 7);
            signal[..4].copy_from_slice(&[-0.0, f32::MIN_POSITIVE / 2.0, f32::MAX, -1.0]);
            let monos = run(&mut split, &[(&signal, channels)], &split_ports, BLOCK);

            let mono_formats: Vec<PortFormat> = split_ports.iter().map(|p| p.format).collect();
            let cx2 = ctx(&mono_formats);
            let c2 = cx2.get();
            let merge_ports = ChannelMerge::outputs(&config("{}"), &c2).unwrap();
            assert_eq!(merge_ports[0].format, format(channels, RATE));
            let mut merge: ChannelMerge = build("{}", &c2);
            let merge_inputs: Vec<(&[f32], u32)> = monos.iter().map(|m| (&m[..], 1)).collect();
            let back = run(&mut merge, &merge_inputs, &merge_ports, BLOCK).remove(0);
            assert!(same_bits(&back, &signal), "{channels} channels");
        }
    }
}

mod remap {
    use super::*;

    #[test]
    fn identity_is_exact() {
        let input = [format(3, RATE)];
        let cx = ctx(&input);
        let c = cx.get();
        let json = r#"{"matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}"#;
        let ports = Remap::outputs(&config(json), &c).unwrap();
        assert_eq!(ports[0].format, format(3, RATE));
        let mut remap: Remap = build(json, &c);
        let signal = noise(2000, 3, 1.0, 3);
        let out = run(&mut remap, &[(&signal, 3)], &ports, BLOCK).remove(0);
        assert_eq!(out, signal);
    }

    #[test]
    fn rows_are_outputs_and_columns_inputs() {
        let input = [format(2, RATE)];
        let cx = ctx(&input);
        let c = cx.get();
        // mono mix, right only, left minus right
        let json = r#"{"matrix": [[0.5, 0.5], [0, 1], [1, -1]]}"#;
        let ports = Remap::outputs(&config(json), &c).unwrap();
        assert_eq!(ports[0].format, format(3, RATE));
        let mut remap: Remap = build(json, &c);
        let signal = noise(1000, 2, 1.0, 5);
        let out = run(&mut remap, &[(&signal, 2)], &ports, BLOCK).remove(0);
        assert_eq!(out.len(), 3000);
        for (o, i) in out.chunks_exact(3).zip(signal.chunks_exact(2)) {
            assert_eq!(o, [0.5 * i[0] + 0.5 * i[1], i[1], i[0] - i[1]]);
        }
    }

    #[test]
    fn a_row_of_the_wrong_length_is_named() {
        let input = [format(2, RATE)];
        let e = rejection::<Remap>(r#"{"matrix": [[1, 0], [0, 1, 0]]}"#, &ctx(&input).get());
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert_eq!(e.key(), Some("matrix"));
        assert!(e.message().contains("row 2 of 2"), "{e}");
        assert!(e.message().contains("3 coefficient"), "{e}");
        assert!(e.message().contains("2 channel"), "{e}");

        let e = rejection::<Remap>(r#"{"matrix": []}"#, &ctx(&input).get());
        assert_eq!(e.key(), Some("matrix"));
        let e = parse_config::<crate::RemapConfig>(r#"{"matrix": [[1]], "gain": 1}"#)
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    }
}
