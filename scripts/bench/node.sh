#!/usr/bin/env bash
# Node benchmark alone (scripts/bench/all.sh runs everything and prints the table): bulk import
# through the library, open time, bytes and latency per one-secret save, polykey get wall time.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --workspace --quiet
cargo bench -p polykey --bench node "$@"
