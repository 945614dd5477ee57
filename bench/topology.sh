#!/usr/bin/env bash
# What the shape of a pipeline costs (docs/performance.md, "Fan-out, chains and memory"):
#
#   fanout  a LENGTH_S-second 48 kHz stereo WAV read once and passed to 1 and to 8 `null`
#           storages, at block 480 (the default): the ratio of the two wall times
#   chain   a CHAIN_S-second file through 1, 4, 16 and 64 `gain` stages (0 dB) into `null`, at
#           block 4096: the least-squares slope of wall time against stage count, per block
#           per stage, and the 64-stage chain's peak RSS
#
# Runs are interleaved (each repetition runs every variant once) after one untimed warm-up of
# each; prints the machine, the median wall time of each variant and the derived figures.
#
# Usage: bash bench/topology.sh        (from any folder)
# Environment: REPS=5, LENGTH_S=600, CHAIN_S=600, SKIP_BUILD=1 (use the existing release build).
# Exit codes: 0 success, 1 a run failed, 2 sox or GNU time is missing and we are not root.
set -euo pipefail

REPS=${REPS:-5}
LENGTH_S=${LENGTH_S:-600}
CHAIN_S=${CHAIN_S:-600}
TIME=/usr/bin/time
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup topology.sh sox time
sox -D -n -r 48000 -b 16 -c 2 "$WORK/in.wav" synth "$LENGTH_S" whitenoise vol 0.4
sox -D -n -r 48000 -b 16 -c 2 "$WORK/chain.wav" synth "$CHAIN_S" whitenoise vol 0.4

# fanout_pipeline NAME CONSUMERS
fanout_pipeline() {
    {
        printf 'version = 1\n[capture.in]\nplugin = "wav-reader"\npath = "in.wav"\n'
        for i in $(seq 1 "$2"); do
            printf '[storage.sink%d]\nplugin = "null"\ninputs = ["in"]\n' "$i"
        done
    } >"$WORK/$1.toml"
}

# chain_pipeline NAME STAGES
chain_pipeline() {
    {
        printf 'version = 1\n[pipeline]\nblock_frames = 4096\n'
        printf '[capture.s0]\nplugin = "wav-reader"\npath = "chain.wav"\n'
        for i in $(seq 1 "$2"); do
            printf '[process.s%d]\nplugin = "gain"\ninputs = ["s%d"]\ndb = 0.0\n' "$i" $((i - 1))
        done
        printf '[storage.out]\nplugin = "null"\ninputs = ["s%d"]\n' "$2"
    } >"$WORK/$1.toml"
}

fanout_pipeline fan1 1
fanout_pipeline fan8 8
CHAINS=(1 4 16 64)
for n in "${CHAINS[@]}"; do chain_pipeline "chain$n" "$n"; done
VARIANTS=(fan1 fan8 chain1 chain4 chain16 chain64)

# run_once NAME: prints "seconds peak-KiB".
run_once() {
    (cd "$WORK" && "$TIME" -f '%e %M' -o "$WORK/$1.time" \
        "$TAPELINE" run "$WORK/$1.toml" --quiet >/dev/null 2>"$WORK/$1.err") || {
        echo "error: $1 failed:" >&2
        cat "$WORK/$1.err" >&2
        exit 1
    }
    cat "$WORK/$1.time"
}

declare -A TIMES RSS
for v in "${VARIANTS[@]}"; do run_once "$v" >/dev/null; done
for _ in $(seq 1 "$REPS"); do
    for v in "${VARIANTS[@]}"; do
        read -r t m < <(run_once "$v")
        TIMES[$v]+="$t "
        RSS[$v]+="$m "
    done
done

machine_line
echo "tapeline: $("$TAPELINE" --version), median of $REPS interleaved runs"
printf '%-34s %10s %12s\n' variant "wall s" "peak RSS MiB"
declare -A MED
for v in "${VARIANTS[@]}"; do
    MED[$v]=$(median "${TIMES[$v]}")
    rss=$(median "${RSS[$v]}")
    printf '%-34s %10s %12.1f\n' "$v" "${MED[$v]}" "$(echo "$rss / 1024" | bc -l)"
done
awk -v a="${MED[fan1]}" -v b="${MED[fan8]}" \
    'BEGIN { printf "fan-out 1 -> 8 null storages, block 480: %.2fx the time of 1 -> 1\n", b / a }'
blocks=$(((CHAIN_S * 48000 + 4095) / 4096))
{
    for n in "${CHAINS[@]}"; do echo "$n ${MED[chain$n]}"; done
} | awk -v blocks="$blocks" '
    { x[NR] = $1; y[NR] = $2; sx += $1; sy += $2; n++ }
    END {
        mx = sx / n; my = sy / n
        for (i = 1; i <= n; i++) { sxy += (x[i] - mx) * (y[i] - my); sxx += (x[i] - mx) ^ 2 }
        slope = sxy / sxx
        printf "chain of gain stages, block 4096: %.3f s per stage, %.2f us per block per stage (%d blocks)\n", slope, slope / blocks * 1e6, blocks
    }'
