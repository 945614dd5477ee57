#!/usr/bin/env bash
# Tapeline against its peers (sox, GStreamer, ffmpeg, and cp as the floor) on two jobs:
#
#   gain  a 10-minute 48 kHz stereo 16-bit WAV, -6 dB, written back as 16-bit WAV
#   tone  a 10-minute 48 kHz stereo 1 kHz sine, written as 16-bit WAV
#
# Gain-job variants: tapeline (BLOCK_FRAMES, the writer's default durability: data and header
# synced every second), tapeline-end (the same with `sync = "end"`: one fsync when finalised),
# tapeline480 (the default block of 480 frames), gst (GStreamer through F32, exact), gst16
# (GStreamer's S16 path: `volume` on S16LE, its fastest, up to 4 LSB off), ffmpeg, sox -D, cp,
# and cp-sync (`cp`, then `sync` of the copy: the same durability as a synced write).
#
# Runs are interleaved (each repetition runs every tool once, in a fixed order) after one
# untimed warm-up run of each, and `sync` runs (untimed) before every timed run so that no tool
# pays for the write-back of the file the previous one left in the page cache. Prints the
# machine, the tool versions, a table (median wall time, peak RSS, ratio to Tapeline), the
# Tapeline / cp ratio, how Tapeline's peak RSS changes with the length of a recording, and
# checks that every gain output agrees with sox's within 1 LSB on every sample.
#
# Usage: bash bench/peers.sh          (from any folder)
# Environment:
#   REPS=5               timed repetitions per tool and job
#   LENGTH_S=600         length of both jobs, in seconds (120: the issue's 2-minute job that
#                        overwrites its previous output; every timed run overwrites the last)
#   MEM_LENGTHS="60 600 3600"   tone lengths (s) at which Tapeline's peak RSS is measured
#   BLOCK_FRAMES=4096    Tapeline's [pipeline] block_frames: larger blocks for an offline file job
#                        (the default, 480 = 10 ms, is for low latency behind a live device)
#   SKIP_BUILD=1         do not run `cargo build --release` first
# Exit codes: 0 success, 1 a run failed or a gain output differs from sox's by more than
# 1 LSB, 2 a peer is missing and we are not root (the line to install it is printed).
set -euo pipefail

REPS=${REPS:-5}
LENGTH_S=${LENGTH_S:-600}
MEM_LENGTHS=${MEM_LENGTHS:-"60 600 3600"}
BLOCK_FRAMES=${BLOCK_FRAMES:-4096}
RATE=48000
GAIN_DB=-6
GAIN_LINEAR=0.501187 # 10^(-6/20), for GStreamer's `volume`, which takes a factor

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TAPELINE=$ROOT/target/release/tapeline
TIME=/usr/bin/time

GAIN_TOOLS=(tapeline tapeline-end tapeline480 sox gst gst16 ffmpeg cp cp-sync)
# Outputs that are not held to sox's within 1 LSB (their difference is printed).
INEXACT_TOOLS=" gst16 "
TONE_TOOLS=(tapeline sox gst ffmpeg)

log() { printf '%s\n' "$*" >&2; }
die() {
    log "peers.sh: $*"
    exit 1
}

# --- 1. build ------------------------------------------------------------------------------

build() {
    if [[ ${SKIP_BUILD:-0} == 1 ]]; then
        log "SKIP_BUILD=1: using the existing $TAPELINE"
    else
        log "building release (cargo build --release in $ROOT)..."
        (cd "$ROOT" && cargo build --release --quiet)
    fi
    [[ -x $TAPELINE ]] || die "$TAPELINE not found after the build"
}

# --- 2. peers ------------------------------------------------------------------------------

# Prints the Debian packages that provide whatever is missing, one per line.
missing_packages() {
    command -v sox >/dev/null || echo sox
    command -v ffmpeg >/dev/null || echo ffmpeg
    command -v python3 >/dev/null || echo python3
    [[ -x $TIME ]] || echo time
    if ! command -v gst-launch-1.0 >/dev/null || ! command -v gst-inspect-1.0 >/dev/null; then
        echo gstreamer1.0-tools
    fi
    # Elements: audiotestsrc/audioconvert/volume are in -base, wavparse/wavenc in -good.
    local element
    for element in audiotestsrc audioconvert volume; do
        gst-inspect-1.0 "$element" >/dev/null 2>&1 || {
            echo gstreamer1.0-plugins-base
            break
        }
    done
    for element in wavparse wavenc; do
        gst-inspect-1.0 "$element" >/dev/null 2>&1 || {
            echo gstreamer1.0-plugins-good
            break
        }
    done
}

install_peers() {
    local -a pkgs
    mapfile -t pkgs < <(missing_packages | sort -u)
    ((${#pkgs[@]} == 0)) && return 0
    if ((EUID != 0)); then
        log "missing: ${pkgs[*]}"
        log "install them with:"
        log "  sudo apt-get install -y --no-install-recommends ${pkgs[*]}"
        exit 2
    fi
    log "installing ${pkgs[*]}..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" >/dev/null
    mapfile -t pkgs < <(missing_packages | sort -u)
    ((${#pkgs[@]} == 0)) || die "still missing after apt-get install: ${pkgs[*]}"
}

# --- 3. machine and versions -----------------------------------------------------------------

print_machine() {
    local cpu
    cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
    echo "== machine"
    echo "cpus:    $(nproc)"
    echo "cpu:     ${cpu:-unknown}"
    echo "kernel:  $(uname -sr)"
    echo "memory:  $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "scratch: $SCRATCH ($(df -T "$SCRATCH" | awk 'NR == 2 { print $2 }'))"
    echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the runs)"
    echo
    echo "== versions"
    local rev
    if rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
        git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || rev+=', work tree modified'
    else
        rev='not a git checkout'
    fi
    echo "tapeline: $("$TAPELINE" --version) ($rev), $(rustc --version 2>/dev/null || echo 'rustc ?')"
    echo "sox:      $(sox --version 2>&1 | sed 's/^sox: *//')"
    echo "gst:      $(gst-launch-1.0 --version | sed -n 2p)"
    echo "ffmpeg:   $(ffmpeg -version | head -n1 | cut -d' ' -f1-3)"
    echo "cp:       $(cp --version | head -n1)"
    echo
}

# --- 4. inputs and pipeline files ------------------------------------------------------------

# White noise at 0.4 of full scale on both channels (independent per channel): every sample
# differs, so no tool can take a shortcut, and -6 dB never clips.
make_input() {
    log "making the ${LENGTH_S} s input..."
    sox -D -n -r "$RATE" -c 2 -b 16 "$SCRATCH/in.wav" synth "$LENGTH_S" whitenoise vol 0.4
}

# write_pipelines: the two Tapeline pipelines, in the scratch folder.
write_pipelines() {
    cat >"$SCRATCH/gain.toml" <<EOF
version = 1

[pipeline]
name = "bench-gain"
sample_rate = $RATE
block_frames = $BLOCK_FRAMES

[capture.in]
plugin = "wav-reader"
path = "$SCRATCH/in.wav"

[process.gain]
plugin = "gain"
inputs = ["in"]
db = $GAIN_DB.0

[storage.out]
plugin = "wav-writer"
inputs = ["gain"]
path = "$SCRATCH/gain-tapeline.wav"
format = "pcm16"
overwrite = true
EOF
    sed -e 's/gain-tapeline.wav/gain-tapeline-end.wav/' -e 's/^overwrite = true$/&\nsync = "end"/' \
        "$SCRATCH/gain.toml" >"$SCRATCH/gain-end.toml"
    sed -e 's/gain-tapeline.wav/gain-tapeline480.wav/' -e "s/^block_frames = .*/block_frames = 480/" \
        "$SCRATCH/gain.toml" >"$SCRATCH/gain-480.toml"
    write_tone_pipeline "$LENGTH_S" "$SCRATCH/tone.toml" "$SCRATCH/tone-tapeline.wav"
}

# write_tone_pipeline SECONDS TOML OUT
write_tone_pipeline() {
    cat >"$2" <<EOF
version = 1

[pipeline]
name = "bench-tone"
sample_rate = $RATE
block_frames = $BLOCK_FRAMES

[capture.tone]
plugin = "tone"
waveform = "sine"
frequency = 1000.0
channels = 2
seconds = $1.0

[storage.out]
plugin = "wav-writer"
inputs = ["tone"]
path = "$3"
format = "pcm16"
overwrite = true
EOF
}

# --- 5. the commands -------------------------------------------------------------------------

# cmd_gain TOOL: the command line of TOOL for the gain job, into the array CMD.
cmd_gain() {
    local in=$SCRATCH/in.wav out=$SCRATCH/gain-$1.wav
    case $1 in
    tapeline) CMD=("$TAPELINE" run "$SCRATCH/gain.toml") ;;
    tapeline-end) CMD=("$TAPELINE" run "$SCRATCH/gain-end.toml") ;;
    tapeline480) CMD=("$TAPELINE" run "$SCRATCH/gain-480.toml") ;;
    sox) CMD=(sox -D "$in" "$out" gain "$GAIN_DB") ;;
    gst16)
        # The S16 path: wavparse gives S16LE, `volume` works on it directly (13-bit fixed-point
        # factor, truncating), wavenc writes it: no conversion at all.
        CMD=(gst-launch-1.0 -q filesrc location="$in" ! wavparse ! volume volume="$GAIN_LINEAR"
            ! wavenc ! filesink location="$out")
        ;;
    gst)
        # volume in F32: on S16LE it uses 13-bit fixed-point factors and truncates, up to
        # 4 LSB away from sox. Back to S16LE stereo without dither or noise shaping.
        CMD=(gst-launch-1.0 -q filesrc location="$in" ! wavparse ! audioconvert
            ! "audio/x-raw,format=F32LE" ! volume volume="$GAIN_LINEAR"
            ! audioconvert dithering=none noise-shaping=none
            ! "audio/x-raw,format=S16LE,channels=2" ! wavenc ! filesink location="$out")
        ;;
    ffmpeg) CMD=(ffmpeg -nostdin -y -loglevel error -i "$in" -af "volume=${GAIN_DB}dB" -c:a pcm_s16le "$out") ;;
    cp) CMD=(cp "$in" "$out") ;;
    cp-sync) CMD=(sh -c 'cp "$1" "$2" && sync "$2"' cp-sync "$in" "$out") ;;
    *) die "unknown tool $1" ;;
    esac
}

# cmd_tone TOOL: the command line of TOOL for the tone job, into the array CMD.
cmd_tone() {
    local out=$SCRATCH/tone-$1.wav
    local frames=$((LENGTH_S * RATE))
    case $1 in
    tapeline) CMD=("$TAPELINE" run "$SCRATCH/tone.toml") ;;
    sox) CMD=(sox -n -r "$RATE" -c 2 -b 16 "$out" synth "$LENGTH_S" sine 1000) ;;
    gst)
        # Whole buffers of 1024 frames, rounded up: exact when LENGTH_S * RATE is a multiple
        # of 1024 (600 s at 48 kHz is 28125 buffers; 10 s would be 256 frames long).
        CMD=(gst-launch-1.0 -q audiotestsrc wave=sine freq=1000 samplesperbuffer=1024
            num-buffers=$(((frames + 1023) / 1024))
            ! "audio/x-raw,rate=$RATE,channels=2,format=S16LE" ! wavenc ! filesink location="$out")
        ;;
    ffmpeg) CMD=(ffmpeg -nostdin -y -loglevel error -f lavfi
        -i "sine=frequency=1000:sample_rate=$RATE:duration=$LENGTH_S" -ac 2 -c:a pcm_s16le "$out") ;;
    *) die "unknown tool $1" ;;
    esac
}

# --- 6. timing -------------------------------------------------------------------------------

# run_once JOB TOOL: run it once under /usr/bin/time; prints "WALL_S PEAK_RSS_KIB".
# The output file is removed first (so every tool creates a fresh file) and `sync` flushes
# what earlier runs left dirty; neither is timed. Wall time comes from bash's EPOCHREALTIME
# (microseconds; /usr/bin/time's %e has only 10 ms), peak RSS from /usr/bin/time's %M.
run_once() {
    local job=$1 tool=$2 t0 t1 rss
    local -a CMD
    "cmd_$job" "$tool"
    rm -f "$SCRATCH/$job-$tool.wav"
    sync
    t0=$EPOCHREALTIME
    if ! "$TIME" -f '%M' -o "$SCRATCH/time.out" "${CMD[@]}" >"$SCRATCH/run.log" 2>&1; then
        log "FAILED ($job, $tool): ${CMD[*]}"
        cat "$SCRATCH/run.log" >&2
        exit 1
    fi
    t1=$EPOCHREALTIME
    rss=$(tail -n1 "$SCRATCH/time.out")
    awk -v a="$t0" -v b="$t1" -v r="$rss" 'BEGIN { printf "%.4f %d\n", b - a, r }'
}

# bench JOB TOOL...: one warm-up run of each tool, then REPS interleaved rounds. Appends
# "JOB TOOL WALL_S RSS_KIB" lines to $SCRATCH/results.
bench() {
    local job=$1 tool rep
    shift
    log "$job: warm-up..."
    for tool in "$@"; do run_once "$job" "$tool" >/dev/null; done
    for ((rep = 1; rep <= REPS; rep++)); do
        log "$job: round $rep/$REPS"
        for tool in "$@"; do
            echo "$job $tool $(run_once "$job" "$tool")" >>"$SCRATCH/results"
        done
    done
}

# --- 7. report -------------------------------------------------------------------------------

# report: the table, from $SCRATCH/results.
report() {
    echo "== results: median of $REPS interleaved runs each, after one warm-up; ${LENGTH_S} s of 48 kHz stereo 16-bit"
    echo "   vs tapeline = tool time / tapeline time (above 1: Tapeline is faster)"
    echo
    awk '
        { key = $1 " " $2; t[key, ++n[key]] = $3; if ($4 > rss[key]) rss[key] = $4
          if (!(key in seen)) { seen[key] = 1; order[++k] = key } }
        function median(key,   i, j, m, v, tmp) {
            m = n[key]
            for (i = 1; i <= m; i++) v[i] = t[key, i]
            for (i = 2; i <= m; i++)            # insertion sort: a handful of values
                for (j = i; j > 1 && v[j - 1] > v[j]; j--) { tmp = v[j]; v[j] = v[j - 1]; v[j - 1] = tmp }
            lo[key] = v[1]; hi[key] = v[m]
            return m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
        }
        END {
            for (i = 1; i <= k; i++) med[order[i]] = median(order[i])
            printf "%-5s %-9s %9s %9s %9s %13s %12s\n", "job", "tool", "median_s", "min_s", "max_s", "peak_rss_MiB", "vs_tapeline"
            for (i = 1; i <= k; i++) {
                key = order[i]; split(key, p, " ")
                base = med[p[1] " tapeline"]
                printf "%-5s %-9s %9.3f %9.3f %9.3f %13.1f %12s\n", p[1], p[2], med[key], lo[key], hi[key],
                    rss[key] / 1024, (base > 0 ? sprintf("%.2f", med[key] / base) : "-")
            }
            if (med["gain cp"] > 0) {
                printf "\ngain: tapeline / cp = %.2f\n", med["gain tapeline"] / med["gain cp"]
                printf "gain: tapeline / cp-sync = %.2f, tapeline-end / cp-sync = %.2f (target: at most 1.5)\n",
                    med["gain tapeline"] / med["gain cp-sync"], med["gain tapeline-end"] / med["gain cp-sync"]
                printf "gain: tapeline / gst16 = %.2f, tapeline-end / gst16 = %.2f (target: at most 0.8); tapeline480 / gst16 = %.2f (target: at most 1.0)\n",
                    med["gain tapeline"] / med["gain gst16"], med["gain tapeline-end"] / med["gain gst16"],
                    med["gain tapeline480"] / med["gain gst16"]
                printf "gain: tapeline / sox = %.2f, tapeline480 / sox = %.2f (every timed run overwrites the output of the one before, synced: with LENGTH_S=120, the 2-minute overwrite job, target at most 0.8)\n",
                    med["gain tapeline"] / med["gain sox"], med["gain tapeline480"] / med["gain sox"]
            }
            printf "\nall runs (s):\n"
            for (i = 1; i <= k; i++) {
                key = order[i]; line = ""
                for (j = 1; j <= n[key]; j++) line = line sprintf(" %.3f", t[key, j])
                printf "  %-15s%s\n", key, line
            }
        }' "$SCRATCH/results"
    echo
}

# --- 8. checks -------------------------------------------------------------------------------

# compare_to_sox TOOL...: the largest difference of any sample of each gain output from sox's,
# in LSB, read through a WAV parser (Python's `wave`, which skips LIST/JUNK chunks). Fails when
# a tool differs by more than 1 LSB or writes a different number of frames.
compare_to_sox() {
    echo "== check: gain outputs against sox -D (max |difference| over every sample, 16-bit LSB)"
    INEXACT="$INEXACT_TOOLS" python3 - "$SCRATCH/gain-sox.wav" "$@" <<'PY'
import array, os, sys, wave

INEXACT = os.environ["INEXACT"].split()

CHUNK = 1 << 20  # frames per read

def info(path):
    with wave.open(path, "rb") as w:
        return w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()

ref_path, others = sys.argv[1], sys.argv[2:]
ref_info = info(ref_path)
bad = False
for path in others:
    tool = path.rsplit("gain-", 1)[1][:-4]
    got = info(path)
    if got != ref_info:
        print(f"  {tool:9} FAIL: (channels, bytes/sample, rate, frames) = {got}, sox has {ref_info}")
        bad = True
        continue
    worst = 0
    with wave.open(ref_path, "rb") as a, wave.open(path, "rb") as b:
        while True:
            ra, rb = a.readframes(CHUNK), b.readframes(CHUNK)
            if not ra:
                break
            if ra == rb:
                continue
            xa, xb = array.array("h", ra), array.array("h", rb)
            if sys.byteorder == "big":
                xa.byteswap(); xb.byteswap()
            worst = max(worst, max(map(abs, map(int.__sub__, xa, xb))))
    if tool in INEXACT:
        verdict = "(not held to 1 LSB)"
    else:
        verdict = "ok" if worst <= 1 else "FAIL"
        bad |= worst > 1
    print(f"  {tool:9} max diff {worst} LSB over {got[3]} frames: {verdict}")
sys.exit(1 if bad else 0)
PY
    echo
}

# check_tone_lengths TOOL...: every tone output holds LENGTH_S seconds.
check_tone_lengths() {
    echo "== check: tone outputs (frames, expected $((LENGTH_S * RATE)))"
    python3 - "$((LENGTH_S * RATE))" "$@" <<'PY'
import sys, wave
want = int(sys.argv[1])
for path in sys.argv[2:]:
    with wave.open(path, "rb") as w:
        n = w.getnframes()
        print(f"  {path.rsplit('tone-', 1)[1][:-4]:9} {n} frames, {w.getnchannels()} ch, "
              f"{8 * w.getsampwidth()}-bit, {w.getframerate()} Hz{'' if n == want else '  (differs)'}")
PY
    echo
}

# --- 9. memory against length --------------------------------------------------------------

# memory_vs_length: Tapeline's peak RSS for the tone job at each of MEM_LENGTHS seconds.
memory_vs_length() {
    echo "== Tapeline peak RSS against recording length (tone job, one run each)"
    printf "%-10s %9s %13s\n" "length_s" "wall_s" "peak_rss_MiB"
    local s t0 t1 rss
    for s in $MEM_LENGTHS; do
        write_tone_pipeline "$s" "$SCRATCH/tone-mem.toml" "$SCRATCH/tone-mem.wav"
        rm -f "$SCRATCH/tone-mem.wav"
        sync
        t0=$EPOCHREALTIME
        "$TIME" -f '%M' -o "$SCRATCH/time.out" "$TAPELINE" run "$SCRATCH/tone-mem.toml" \
            >"$SCRATCH/run.log" 2>&1 || {
            cat "$SCRATCH/run.log" >&2
            die "tapeline failed on the ${s} s tone"
        }
        t1=$EPOCHREALTIME
        rss=$(tail -n1 "$SCRATCH/time.out")
        awk -v s="$s" -v a="$t0" -v b="$t1" -v r="$rss" \
            'BEGIN { printf "%-10s %9.3f %13.1f\n", s, b - a, r / 1024 }'
        rm -f "$SCRATCH/tone-mem.wav"
    done
    echo
}

# --- main ------------------------------------------------------------------------------------

main() {
    install_peers # first: a missing peer stops the script before a long build
    build
    SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/tapeline-bench.XXXXXX")
    trap 'rm -rf "$SCRATCH"' EXIT
    trap 'exit 130' INT TERM # exit through the EXIT trap, so the scratch folder goes too
    : >"$SCRATCH/results"

    print_machine
    make_input
    write_pipelines

    bench gain "${GAIN_TOOLS[@]}"
    bench tone "${TONE_TOOLS[@]}"

    report
    local tool
    local -a outs=()
    for tool in "${GAIN_TOOLS[@]}"; do
        # sox is the reference; cp and cp-sync apply no gain.
        [[ $tool == sox || $tool == cp || $tool == cp-sync ]] || outs+=("$SCRATCH/gain-$tool.wav")
    done
    local status=0
    compare_to_sox "${outs[@]}" || status=1
    outs=()
    for tool in "${TONE_TOOLS[@]}"; do outs+=("$SCRATCH/tone-$tool.wav"); done
    check_tone_lengths "${outs[@]}"
    [[ -z $MEM_LENGTHS ]] || memory_vs_length
    if ((status != 0)); then
        echo "FAIL: a gain output differs from sox's by more than 1 LSB"
        exit 1
    fi
}

main "$@"
