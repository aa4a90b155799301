#!/usr/bin/env bash
# Mount benchmark alone (scripts/bench/all.sh runs everything and prints the table): release
# build of both binaries and the minimal FUSE example, then the figures (Polykey mount beside
# tmpfs, a minimal FUSE fs, a plain fsync and gocryptfs when installed), one run, interleaved.
# Sizes: POLYKEY_BENCH_SIZES (default 10,100,1000,10000); POLYKEY_BENCH_FULL=1 adds 100000.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/install-deps.sh
cargo build --release --workspace --bins --examples --quiet
cargo bench -p polykey-mountd --bench mount "$@"
