#!/usr/bin/env bash
# Run every check and test of the workspace: the one test command of the README and of CI.
#
# Needs the system packages below. Run as root (as CI does), it installs whatever is missing;
# otherwise it says what to install and exits 2. Debug profile only, to stay quick on 2 cores.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian/Ubuntu package, and how to tell it is there without dpkg.
source scripts/system-packages.sh
need_package pkg-config has_commands pkg-config
# ALSA headers, for the device capture plugin (cpal).
need_package libasound2-dev pkg-config --exists alsa
# JACK: libjack's pkg-config file, which cpal's `jack` backend needs to build (the test crate
# turns it on, so every `cargo build --workspace` uses it), and the server (`jackd`, `jack_lsp`)
# the device-loss test starts and kills.
need_package libjack-jackd2-dev pkg-config --exists jack
need_package jackd2 has_commands jackd jack_lsp
# sox makes the reference files the audio tests compare against.
need_package sox has_commands sox
# tmux gives the live-view test of `tapeline run` a real terminal.
need_package tmux has_commands tmux
install_missing_packages

step() { echo "==> $*"; "$@"; }

step cargo fmt --all --check
step cargo build --workspace --all-targets
step cargo clippy --workspace --all-targets -- -D warnings
step cargo test --workspace

# The loom model of the edges' wake-up protocol (host/src/discipline/buffers/wake_slot.rs): the
# host's unit tests built with `--cfg loom` for the host crate alone (`cargo rustc`, so that no
# dependency is rebuilt), of which only the `loom_` tests run.
echo "==> loom model of the wake-up protocol: cargo rustc -p tapeline --lib --profile test -- --cfg loom, then its loom_ tests"
loom_tests=$(cargo rustc -p tapeline --lib --profile test --message-format=json-render-diagnostics -- --cfg loom |
  sed -n 's/^{"reason":"compiler-artifact".*"executable":"\([^"]*\)".*/\1/p')
"${loom_tests:?cargo rustc named no test binary}" loom_ --test-threads=1

# The README's main command as a fresh machine runs it: the default members must build with no
# system library (a `pkg-config` that always fails stands in for a machine without any), and the
# demo must run. Debug profile and the same target folder, so only the host is rebuilt (without
# its `devices` feature). Build scripts that already ran would not call pkg-config again, so the
# default members must not depend on the pkg-config crate at all.
echo "==> fresh machine: cargo build (default members, no pkg-config), then the demo"
default_deps=$(cargo tree -e normal,build --prefix none --format '{p}')
if grep '^pkg-config ' <<<"$default_deps"; then
  echo "error: the default members (default-members in Cargo.toml) build with pkg-config" >&2
  exit 1
fi
no_pkg_config=$(mktemp -d)
trap 'rm -rf "$no_pkg_config"' EXIT
printf '#!/bin/sh\nexit 1\n' >"$no_pkg_config/pkg-config"
chmod +x "$no_pkg_config/pkg-config"
PATH="$no_pkg_config:$PATH" cargo build
tapeline=${CARGO_TARGET_DIR:-target}/debug/tapeline
"$tapeline" run pipelines/demo.toml --quiet | tee "$no_pkg_config/demo.out"
grep -q '^wrote .*/demo\.wav ' "$no_pkg_config/demo.out"
# Without device support `tapeline devices` exits 2 and names the script that builds it.
rc=0
"$tapeline" devices 2>"$no_pkg_config/devices.err" || rc=$?
cat "$no_pkg_config/devices.err"
if [[ $rc -ne 2 ]] || ! grep -q 'scripts/build-devices\.sh' "$no_pkg_config/devices.err"; then
  echo "error: \`tapeline devices\` without device support: exit $rc, expected 2 and the build line" >&2
  exit 1
fi
echo "==> all checks passed"
