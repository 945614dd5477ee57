#!/usr/bin/env bash
# Run every check and test of the workspace: the one test command of the README and of CI.
#
# Needs the system packages below. Run as root (as CI does), it installs whatever is missing;
# otherwise it says what to install and exits 2. Debug profile only, to stay quick on 2 cores.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian/Ubuntu package -> how to tell it is present without dpkg.
missing=()
have_pkg() { dpkg -s "$1" >/dev/null 2>&1; }
have_pkg pkg-config || command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
# ALSA headers, for the device capture plugin (cpal).
have_pkg libasound2-dev || pkg-config --exists alsa 2>/dev/null || missing+=(libasound2-dev)
# JACK: libjack's pkg-config file, which cpal's `jack` backend needs to build (the test crate
# turns it on, so every `cargo build --workspace` uses it), and the server (`jackd`, `jack_lsp`)
# the device-loss test starts and kills.
have_pkg libjack-jackd2-dev || pkg-config --exists jack 2>/dev/null || missing+=(libjack-jackd2-dev)
have_pkg jackd2 || { command -v jackd >/dev/null 2>&1 && command -v jack_lsp >/dev/null 2>&1; } || missing+=(jackd2)
# sox makes the reference files the audio tests compare against.
have_pkg sox || command -v sox >/dev/null 2>&1 || missing+=(sox)
# tmux gives the live-view test of `tapeline run` a real terminal.
have_pkg tmux || command -v tmux >/dev/null 2>&1 || missing+=(tmux)

if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing missing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "error: missing system packages: ${missing[*]}" >&2
    echo "  help: install them, then run this again:" >&2
    echo "        sudo apt-get install ${missing[*]}" >&2
    echo "        (or run this script as root, which installs them)" >&2
    exit 2
  fi
fi

step() { echo "==> $*"; "$@"; }

step cargo fmt --all --check
step cargo build --workspace --all-targets
step cargo clippy --workspace --all-targets -- -D warnings
step cargo test --workspace
echo "==> all checks passed"
