#!/usr/bin/env bash
# What stage isolation costs (docs/isolation.md): the same jobs with stages in the host and with
# stages in their own processes (`isolate = true`).
#
#   gain   a LENGTH_S-second 48 kHz stereo 16-bit WAV -> gain -6 dB -> 16-bit WAV, the gain stage
#          in-process vs isolated, at block 480 (the default) and 4096
#   writer the same job at block 480 with the wav-writer isolated instead of the gain stage
#   reader the same with the wav-reader isolated
#   all    the same with reader, gain and writer isolated
#   chain  a CHAIN_S-second file through 16 gain stages at block 480, all in-process vs all
#          isolated: the cost of one isolated stage per block
#
# Runs are interleaved (each repetition runs every variant once) after one untimed warm-up of
# each; prints the machine, the median wall time of each variant, the ratios, and the cost per
# block per isolated stage. Outputs are compared sample by sample (isolated = in-process).
#
# Usage: bash bench/isolation.sh        (from any folder)
# Environment: REPS=5, LENGTH_S=600, CHAIN_S=60, SKIP_BUILD=1 (use the existing release build).
# Exit codes: 0 success, 1 a run failed or outputs differ, 2 sox is missing and we are not root.
set -euo pipefail

REPS=${REPS:-5}
LENGTH_S=${LENGTH_S:-600}
CHAIN_S=${CHAIN_S:-60}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup isolation.sh sox
sox -n -r 48000 -b 16 -c 2 "$WORK/in.wav" synth "$LENGTH_S" sine 997 sine 1499 gain -3
sox -n -r 48000 -b 16 -c 2 "$WORK/short.wav" synth "$CHAIN_S" sine 997 sine 1499 gain -3

# gain_pipeline NAME BLOCK ISOLATE [WRITER_ISOLATE] [READER_ISOLATE]
gain_pipeline() {
    cat >"$WORK/$1.toml" <<EOF
version = 1
[pipeline]
block_frames = $2
[capture.in]
plugin = "wav-reader"
path = "in.wav"
isolate = ${5:-false}
[process.g]
plugin = "gain"
inputs = ["in"]
db = -6.0
isolate = $3
[storage.out]
plugin = "wav-writer"
inputs = ["g"]
path = "$1.wav"
format = "pcm16"
overwrite = true
isolate = ${4:-false}
EOF
}

# chain_pipeline NAME ISOLATE: 16 gain stages of -0.375 dB each (-6 dB in all).
chain_pipeline() {
    {
        printf 'version = 1\n[capture.in]\nplugin = "wav-reader"\npath = "short.wav"\n'
        local prev=in
        for i in $(seq 1 16); do
            printf '[process.g%d]\nplugin = "gain"\ninputs = ["%s"]\ndb = -0.375\nisolate = %s\n' "$i" "$prev" "$2"
            prev=g$i
        done
        printf '[storage.out]\nplugin = "wav-writer"\ninputs = ["%s"]\npath = "%s.wav"\nformat = "pcm16"\noverwrite = true\n' "$prev" "$1"
    } >"$WORK/$1.toml"
}

gain_pipeline gain480 480 false
gain_pipeline gain480iso 480 true
gain_pipeline gain4096 4096 false
gain_pipeline gain4096iso 4096 true
gain_pipeline writer480iso 480 false true
gain_pipeline reader480iso 480 false false true
gain_pipeline all480iso 480 true true true
chain_pipeline chain false
chain_pipeline chainiso true
VARIANTS=(gain480 gain480iso gain4096 gain4096iso writer480iso reader480iso all480iso chain chainiso)

# Seconds of one run (wall clock).
run_once() {
    local t0 t1
    t0=$(date +%s.%N)
    "$TAPELINE" run "$WORK/$1.toml" --quiet >/dev/null 2>"$WORK/$1.err" || {
        cat "$WORK/$1.err" >&2
        exit 1
    }
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }' 
}

declare -A TIMES
for v in "${VARIANTS[@]}"; do run_once "$v" >/dev/null; done
for _ in $(seq 1 "$REPS"); do
    for v in "${VARIANTS[@]}"; do
        TIMES[$v]+="$(run_once "$v") "
    done
done

cmp -s "$WORK/gain480.wav" "$WORK/gain480iso.wav" || { echo "isolated gain output differs" >&2; exit 1; }
for v in writer480iso reader480iso all480iso; do
    cmp -s "$WORK/gain480.wav" "$WORK/$v.wav" || { echo "$v: output differs" >&2; exit 1; }
done
cmp -s "$WORK/chain.wav" "$WORK/chainiso.wav" || { echo "isolated chain output differs" >&2; exit 1; }

machine_line
echo "median of $REPS interleaved runs, wall seconds; outputs identical (cmp)"
printf '%-38s %10s %10s %8s\n' job in-process isolated ratio
for pair in "gain480 gain job, block 480 (${LENGTH_S} s)" "gain4096 gain job, block 4096 (${LENGTH_S} s)" "chain 16 gain stages, block 480 (${CHAIN_S} s)"; do
    v=${pair%% *}
    label=${pair#* }
    a=$(median "${TIMES[$v]}")
    b=$(median "${TIMES[${v}iso]}")
    printf '%-38s %10.3f %10.3f %8.2f\n' "$label" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN { print b / a }')"
done
a=$(median "${TIMES[gain480]}")
for pair in "writer480iso writer isolated" "reader480iso reader isolated" "all480iso all three isolated"; do
    v=${pair%% *}
    b=$(median "${TIMES[$v]}")
    printf '%-38s %10.3f %10.3f %8.2f\n' "${pair#* }, block 480 (${LENGTH_S} s)" "$a" "$b" \
        "$(awk -v a="$a" -v b="$b" 'BEGIN { print b / a }')"
done
blocks=$((CHAIN_S * 48000 / 480))
a=$(median "${TIMES[chain]}")
b=$(median "${TIMES[chainiso]}")
printf 'cost of one isolated stage: %.1f us per block (%d blocks x 16 stages)\n' \
    "$(awk -v a="$a" -v b="$b" -v n="$blocks" 'BEGIN { print (b - a) * 1e6 / (n * 16) }')" "$blocks"
