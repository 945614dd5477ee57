#!/usr/bin/env bash
# Resampling against its peers (docs/performance.md, "Resampling"): a LENGTH_S-second 44.1 kHz
# stereo 16-bit WAV of white noise taken to 48 kHz and written as 16-bit WAV, by
#
#   tapeline-fast / -balanced / -best   wav-reader -> resample (rate = 48000, quality = ...)
#                                       -> wav-writer (pcm16), block_frames = 4096
#   ffmpeg-soxr   ffmpeg -y -v error -i in.wav -af aresample=resampler=soxr:osr=48000 -c:a pcm_s16le out.wav
#   sox           sox -D in.wav -r 48000 out.wav
#   sox-v         sox -D in.wav out.wav rate -v 48000
#
# One warm-up run of each, then REPS interleaved rounds; before every run the outputs are removed
# and `sync` runs (untimed). Prints the machine, each tool's median / min / max wall time and
# median CPU time, the ratios the speed issue targets (balanced / ffmpeg-soxr, best / sox -v),
# and checks that every output has the expected length. The spurs of each setting are measured
# by the plugin's unit tests (plugins/dsp/src/tests/resample.rs), not here.
#
# Usage: bash bench/resample.sh        (from any folder)
# Environment: REPS=5, LENGTH_S=600, SKIP_BUILD=1 (use the existing release build).
# Exit codes: 0 success, 1 a run failed or an output has the wrong length, 2 a peer is missing
# and we are not root (the apt-get line is printed).
set -euo pipefail

REPS=${REPS:-5}
LENGTH_S=${LENGTH_S:-600}
TIME=/usr/bin/time
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup resample.sh sox ffmpeg python3 time
cd "$WORK"
sox -D -n -r 44100 -b 16 -c 2 in.wav synth "$LENGTH_S" whitenoise vol 0.4
for q in fast balanced best; do
    cat >"$q.toml" <<EOF
version = 1
[pipeline]
sample_rate = 48000
block_frames = 4096
[capture.src]
plugin = "wav-reader"
path = "in.wav"
[process.to48]
plugin = "resample"
inputs = ["src"]
rate = 48000
quality = "$q"
[storage.file]
plugin = "wav-writer"
inputs = ["to48"]
path = "out-tapeline-$q.wav"
format = "pcm16"
EOF
done

declare -A CMD=(
    [tapeline-fast]="$TAPELINE run fast.toml --quiet"
    [tapeline-balanced]="$TAPELINE run balanced.toml --quiet"
    [tapeline-best]="$TAPELINE run best.toml --quiet"
    [ffmpeg-soxr]="ffmpeg -y -v error -i in.wav -af aresample=resampler=soxr:osr=48000 -c:a pcm_s16le out-ffmpeg-soxr.wav"
    [sox]="sox -D in.wav -r 48000 out-sox.wav"
    [sox-v]="sox -D in.wav out-sox-v.wav rate -v 48000"
)
ORDER=(tapeline-fast tapeline-balanced tapeline-best ffmpeg-soxr sox sox-v)
declare -A TIMES CPU

# run_once TOOL: prints "WALL_S CPU_S".
run_once() {
    rm -f out-*.wav
    sync
    local t0 t1
    t0=$EPOCHREALTIME
    # shellcheck disable=SC2086 # the command lines above are split on purpose
    $TIME -o cpu.txt -f "%U %S" ${CMD[$1]} >run.log 2>&1 || {
        echo "error: $1 failed: ${CMD[$1]}" >&2
        cat run.log >&2
        exit 1
    }
    t1=$EPOCHREALTIME
    awk -v a="$t0" -v b="$t1" '{ printf "%.3f %.2f\n", b - a, $1 + $2 }' cpu.txt
}

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
for k in "${ORDER[@]}"; do run_once "$k" >/dev/null; done
for _ in $(seq 1 "$REPS"); do
    for k in "${ORDER[@]}"; do
        read -r t c < <(run_once "$k")
        TIMES[$k]+="$t "
        CPU[$k]+="$c "
    done
done

echo "$(machine_line); load before: $LOAD"
echo "tools: $("$TAPELINE" --version), $(sox --version 2>&1 | sed 's/^sox: *//'), $(ffmpeg -version | head -n1 | cut -d' ' -f1-3)"
echo "${LENGTH_S} s of 44.1 kHz stereo 16-bit -> 48 kHz 16-bit; median of $REPS interleaved runs"
for k in "${ORDER[@]}"; do
    python3 - "$k" "${TIMES[$k]}" "${CPU[$k]}" <<'PY'
import statistics, sys
k, t, c = sys.argv[1:]
t = [float(x) for x in t.split()]
c = [float(x) for x in c.split()]
print(f"{k:18} median {statistics.median(t):6.3f} s  min {min(t):6.3f}  max {max(t):6.3f}  "
      f"cpu {statistics.median(c):5.2f} s  runs {' '.join(f'{x:.3f}' for x in t)}")
PY
done
python3 - "${TIMES[tapeline-balanced]}" "${TIMES[ffmpeg-soxr]}" "${TIMES[tapeline-best]}" "${TIMES[sox-v]}" <<'PY'
import statistics, sys
bal, soxr, best, soxv = (statistics.median(float(x) for x in a.split()) for a in sys.argv[1:])
print(f"balanced / ffmpeg-soxr = {bal / soxr:.2f} (target: at most 1.0)")
print(f"best / sox -v = {best / soxv:.2f} (target: at most 1.0)")
PY
# Every output holds the input's length at 48 kHz (the last frame rounded up).
run_once tapeline-balanced >/dev/null
python3 - "$LENGTH_S" out-tapeline-balanced.wav <<'PY'
import sys, wave
want = int(sys.argv[1]) * 48000
with wave.open(sys.argv[2], "rb") as w:
    got = w.getnframes()
print(f"length check: {got} frames, expected {want}: {'ok' if got == want else 'WRONG'}")
sys.exit(0 if got == want else 1)
PY
