#!/usr/bin/env bash
# Fuzzes Polykey's parsers (tests/fuzz/): builds every target with cargo-fuzz on stable Rust,
# runs each for a bounded time from its seed corpus, prints the executions per target, and
# fails if any target crashes, panics, hangs or runs out of memory.
#
#   scripts/fuzz.sh                  every target, $POLYKEY_FUZZ_SECONDS (default 30) each
#   scripts/fuzz.sh log journal      only these targets
#   POLYKEY_FUZZ_SECONDS=3600 scripts/fuzz.sh node     a long run by hand
#
# On stable Rust, cargo-fuzz works with `--sanitizer none` (the sanitizers need -Z flags).
# POLYKEY_FUZZ_SANITIZER=address builds with AddressSanitizer instead, through
# RUSTC_BOOTSTRAP=1 (slower, and only useful for the C code linked in: Polykey has no unsafe).
#
# Inputs the fuzzer finds interesting go to tests/fuzz/corpus/<target>/ (not committed; it
# makes later runs start further). A crashing input goes to tests/fuzz/artifacts/<target>/;
# reproduce it with `cargo fuzz run --fuzz-dir tests/fuzz --sanitizer none <target> <file>`,
# minimise it with `cargo fuzz tmin` (same flags), fix the bug, and commit the input as a
# regression test. Non-interactive and bounded in time: safe for CI.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${POLYKEY_FUZZ_SECONDS:-30}"
sanitizer="${POLYKEY_FUZZ_SANITIZER:-none}"
fuzz_dir=tests/fuzz
opts=(--fuzz-dir "$fuzz_dir" --sanitizer "$sanitizer")
if [ "$sanitizer" != none ]; then
    export RUSTC_BOOTSTRAP=1
    # A build of its own, so that switching back and forth does not rebuild everything.
    opts+=(--target-dir "$fuzz_dir/target/$sanitizer")
fi

if ! command -v c++ >/dev/null 2>&1; then
    echo "fuzz.sh: installing a C++ compiler (libFuzzer is C++)" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends g++ >/dev/null
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --version 0.13.2 --locked
fi

if (($#)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir "$fuzz_dir")
fi

echo "== build (sanitizer: $sanitizer)"
cargo fuzz build "${opts[@]}"

status=0
summary=()
for t in "${targets[@]}"; do
    echo "== $t: ${seconds}s"
    mkdir -p "$fuzz_dir/corpus/$t"
    log="$(mktemp)"
    # -timeout: an input slower than this is a hang (an error); the RSS limit is libFuzzer's.
    if cargo fuzz run "${opts[@]}" "$t" "$fuzz_dir/corpus/$t" "$fuzz_dir/seeds/$t" -- \
        -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
        grep -E '^Done [0-9]+ runs' "$log" || true
        summary+=("$t: ${runs:-?} executions in ${seconds}s")
    else
        status=1
        # The crash report: the panic or signal, and the input libFuzzer saved.
        grep -E -A3 'panicked at|ERROR: libFuzzer|==[0-9]+== ?ERROR|deadly signal|Test unit written|^Base64' "$log" | head -n 60 ||
            tail -n 40 "$log"
        summary+=("$t: FAILED (see tests/fuzz/artifacts/$t/)")
    fi
    rm -f "$log"
done

echo "== summary"
printf '%s\n' "${summary[@]}"
exit "$status"
