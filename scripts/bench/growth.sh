#!/usr/bin/env bash
# Storage growth: one repository of N secrets made by `polykey import` and one secret at a
# time (benches/growth.rs), with node size, peak RSS, bytes per save, open and CLI times.
# Prints a Markdown table (docs/PERFORMANCE.md, "Storage growth").
#
# Usage: scripts/bench/growth.sh [--before COMMIT]
#   --before COMMIT: measures COMMIT's code instead (its tree exported to a temporary folder,
#   this bench file added), for before/after figures. POLYKEY_GROWTH_BEFORE_TARGET names a
#   cargo target folder to reuse for it.
#   Sizes: POLYKEY_GROWTH_SIZES (default 1000,10000).
set -euo pipefail
cd "$(dirname "$0")/../.."
export POLYKEY_GROWTH_SIZES=${POLYKEY_GROWTH_SIZES:-1000,10000}

measure() { # $1: source tree
    (
        cd "$1"
        cargo build --release -p polykey --bin polykey --quiet
        cargo bench --quiet -p polykey --bench growth
    )
}

case ${1:-} in
    "") echo "code: $(git describe --always --dirty 2>/dev/null || echo '?'); $(date -u '+%Y-%m-%d %H:%M UTC'); load: $(cut -d' ' -f1-3 /proc/loadavg)"
        measure . ;;
    --before)
        [ $# = 2 ] || { echo "usage: scripts/bench/growth.sh [--before COMMIT]" >&2; exit 2; }
        tree=$(mktemp -d)
        trap 'rm -rf "$tree"' EXIT
        git archive "$2" | tar -x -C "$tree"
        cp benches/growth.rs "$tree/benches/"
        grep -q '^name = "growth"' "$tree/Cargo.toml" || printf '\n[[bench]]\nname = "growth"\nharness = false\n' >>"$tree/Cargo.toml"
        echo "code: $(git rev-parse --short "$2") (before); $(date -u '+%Y-%m-%d %H:%M UTC'); load: $(cut -d' ' -f1-3 /proc/loadavg)"
        CARGO_TARGET_DIR=${POLYKEY_GROWTH_BEFORE_TARGET:-$tree/target} measure "$tree" ;;
    *) echo "usage: scripts/bench/growth.sh [--before COMMIT]" >&2; exit 2 ;;
esac
