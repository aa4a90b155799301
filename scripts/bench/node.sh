#!/usr/bin/env bash
# Node benchmark: open time, bytes and latency per one-secret save, polykey get wall time.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --workspace --quiet
cargo bench -p polykey --bench node "$@"
