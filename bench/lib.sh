# What bench/isolation.sh, bench/topology.sh and bench/resample.sh share; sourced, not run.
#
#   bench_setup SCRIPT TOOL...   set ROOT, TAPELINE and a scratch folder WORK (removed on exit);
#                                install the Debian packages that provide missing TOOLs when
#                                root, else print the apt-get line and exit 2; build release
#                                unless SKIP_BUILD=1
#   median "A B C ..."           the median of the numbers
#   machine_line                 "machine: N cores, CPU, kernel"

bench_setup() {
    local script=$1 tool
    shift
    ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    TAPELINE=$ROOT/target/release/tapeline
    local -a missing=()
    # Each TOOL is also the name of its Debian package (`time` is GNU time, /usr/bin/time).
    for tool in "$@"; do
        if [[ $tool == time ]]; then
            [[ -x /usr/bin/time ]] || missing+=(time)
        else
            command -v "$tool" >/dev/null || missing+=("$tool")
        fi
    done
    if ((${#missing[@]})); then
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "${missing[@]}" >/dev/null
        else
            echo "error: bench/$script needs ${missing[*]}" >&2
            echo "  help: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
            exit 2
        fi
    fi
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        (cd "$ROOT" && cargo build --release --quiet)
    fi
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
}

median() {
    tr ' ' '\n' <<<"$1" | grep . | sort -g |
        awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

machine_line() {
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -r)"
}
