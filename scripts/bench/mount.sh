#!/usr/bin/env bash
# Mount benchmark: release build of both binaries and the minimal FUSE example, then the
# figures (Polykey mount vs tmpfs, a minimal FUSE fs and a plain fsync), one run, side by side.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/install-deps.sh
cargo build --release --workspace --examples --quiet
cargo bench -p polykey-mountd --bench mount "$@"
