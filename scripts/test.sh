#!/usr/bin/env bash
# Runs every test: installs what the tests need, checks formatting and lints, builds the
# workspace (the mount tests need the polykey-mountd binary), runs the test suites, fuzzes each
# parser briefly, and fails if any FUSE mount is left behind. The one command for developers
# and CI alike.
#
#   scripts/test.sh           the CI run (crash storm 8 rounds, 10 s of fuzzing per target)
#   scripts/test.sh --long    longer soaks: 50 crash-storm rounds, 5 minutes per fuzz target
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = --long ]; then
    export POLYKEY_CRASH_ROUNDS="${POLYKEY_CRASH_ROUNDS:-50}"
    export POLYKEY_FUZZ_SECONDS="${POLYKEY_FUZZ_SECONDS:-300}"
fi

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

if [ -x scripts/fuzz.sh ] && [ "${POLYKEY_SKIP_FUZZ:-0}" != 1 ]; then
    echo "== fuzzing (${POLYKEY_FUZZ_SECONDS:-10} s per target)"
    POLYKEY_FUZZ_SECONDS="${POLYKEY_FUZZ_SECONDS:-10}" scripts/fuzz.sh || status=1
fi

if [ "$status" = 0 ]; then
    echo "test.sh: all passed"
fi
exit "$status"
