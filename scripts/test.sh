#!/usr/bin/env bash
# Runs every test: installs what the tests need, checks formatting and lints, builds the
# workspace (the mount tests need the polykey-mountd binary), runs the test suites, and fails
# if any FUSE mount is left behind. The one command for developers and CI alike.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== build"
cargo build --workspace --all-targets

echo "== tests"
# Mount tests start daemons: give them their own runtime folder.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR"
status=0
cargo test --workspace -- --test-threads="${POLYKEY_TEST_THREADS:-2}" || status=$?

echo "== leftovers"
if grep -q " fuse.polykey " /proc/mounts; then
    echo "test.sh: a test left a Polykey mount behind:" >&2
    grep " fuse.polykey " /proc/mounts >&2
    status=1
fi
exit "$status"
