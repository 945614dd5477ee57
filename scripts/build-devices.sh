#!/usr/bin/env bash
# Build Tapeline with audio-device support, in release: the host with its `devices` feature
# (`tapeline devices`) and the cpal-capture plugin, next to everything a plain
# `cargo build --release` builds, in target/release/.
#
# cpal's ALSA binding needs `pkg-config` and `libasound2-dev` to build. Run as root, this installs
# whichever is missing; otherwise it prints the `sudo apt-get install` line and exits 2. Extra
# arguments go to cargo (e.g. `--features tapeline-cpal-capture/jack` for cpal's JACK backend,
# which also needs `libjack-jackd2-dev`).
#
# A later plain `cargo build --release` builds the host without `devices` again (the plugin
# stays and still records); run this again to get `tapeline devices` back.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/system-packages.sh
need_package pkg-config has_commands pkg-config
need_package libasound2-dev pkg-config --exists alsa
install_missing_packages

# Every member but the tests crate (which would turn on cpal's JACK backend too).
cmd=(cargo build --release --workspace --exclude tapeline-tests --features tapeline/devices "$@")
echo "==> ${cmd[*]}"
"${cmd[@]}"
echo "==> built with device support: target/release/tapeline devices lists the input devices"
