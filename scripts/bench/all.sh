#!/usr/bin/env bash
# The whole Polykey benchmark, one command: installs the baseline tools Debian has (pass with
# gnupg, gopass, gocryptfs, hyperfine; a missing one is reported "not installed", never fatal),
# builds release, runs the node and mount benches and the CLI baselines, then prints every
# figure beside its baselines from the same run, with ratios, and the targets.
#
# Usage: scripts/bench/all.sh [--full]
#   sizes: POLYKEY_BENCH_SIZES (default 10,100,1000,10000); --full or POLYKEY_BENCH_FULL=1
#   adds 100000. Bounded: about 5 minutes by default on 2 shared cores (each step has a
#   time limit; --full takes longer).
# Writes: target/bench/{node,mount,baselines}.json (records), target/bench/growth.md (the
#   storage growth table of scripts/bench/growth.sh), target/bench/results.{csv,json}
#   (all raw numbers), target/bench/table.md, and the plot docs/perf/latency.svg.
# Not part of scripts/test.sh: benchmarks are run by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."

full=${POLYKEY_BENCH_FULL:-0}
for a in "$@"; do
    case $a in
        --full) full=1 ;;
        *) echo "usage: scripts/bench/all.sh [--full]" >&2; exit 2 ;;
    esac
done
sizes=${POLYKEY_BENCH_SIZES:-10,100,1000,10000}
if [ "$full" = 1 ] && [[ ",$sizes," != *",100000,"* ]]; then
    sizes="$sizes,100000"
fi
export POLYKEY_BENCH_SIZES=$sizes POLYKEY_BENCH_FULL=$full
out=$(pwd)/target/bench
mkdir -p "$out"
rm -f "$out"/{node,mount,baselines}.json
start=$(date +%s)

# Never leave a mount behind: the benches unmount what they mount, even when they panic; this
# catches a bench killed by its time limit.
cleanup() {
    local m
    for m in $(awk '$2 ~ /\/target\/tmp\/polykey-bench-/ {print $2}' /proc/mounts); do
        fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system target/tmp/polykey-bench-* /dev/shm/polykey-bench-* 2>/dev/null || true
}
trap cleanup EXIT

echo "== tools"
scripts/install-deps.sh
if [ "$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    updated=0
    for pkg in hyperfine gnupg pass gopass gocryptfs; do
        tool=$pkg
        [ "$pkg" = gnupg ] && tool=gpg
        command -v "$tool" >/dev/null 2>&1 && continue
        if [ $updated = 0 ]; then
            DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq >/dev/null 2>&1 || true
            updated=1
        fi
        DEBIAN_FRONTEND=noninteractive timeout 300 $sudo apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1 || true
    done
fi
for tool in hyperfine gpg pass gopass gocryptfs; do
    if command -v "$tool" >/dev/null 2>&1; then
        printf '%-10s %s\n' "$tool" "$(command -v "$tool")"
    else
        printf '%-10s not installed\n' "$tool"
    fi
done
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); node disk: $(findmnt -no FSTYPE -T target 2>/dev/null || echo '?')"
echo "sizes: $sizes; commit: $(git describe --always --dirty 2>/dev/null || echo '?'); $(date -u '+%Y-%m-%d %H:%M UTC'); load: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== build (release)"
cargo build --release --workspace --bins --examples --quiet
cargo build --release --workspace --benches --quiet

limit=600
[ "$full" = 1 ] && limit=1800
echo "== node bench (library)"
POLYKEY_BENCH_OUT=$out/node.json timeout "$limit" cargo bench --quiet -p polykey --bench node
echo "== mount bench"
POLYKEY_BENCH_OUT=$out/mount.json timeout "$limit" cargo bench --quiet -p polykey-mountd --bench mount
echo "== CLI baselines (polykey --help, pass, gopass)"
timeout "$limit" scripts/bench/baselines.sh "$out/baselines.json" "$sizes" || echo "(baselines failed or timed out: their figures are missing)"

echo "== growth bench (one repository: import against one secret at a time)"
timeout "$limit" scripts/bench/growth.sh | tee "$out/growth.md" || echo "(growth bench failed or timed out)"

echo "== sync bench (two nodes: merge, identical, 1,000 changed)"
timeout "$limit" scripts/bench/sync.sh | tee "$out/sync.md" || echo "(sync bench failed or timed out)"

echo "== report"
python3 scripts/bench/report.py "$out" docs/perf/latency.svg
echo "(total $(($(date +%s) - start)) s)"
