#!/usr/bin/env bash
# CLI baselines for the Polykey benchmark, measured in the same run as the Rust benches:
# `polykey --help`, and pass (and gopass, Debian's Go pass, on the same store) at the same
# sizes: `show` of one secret and `ls` of the whole store. A store of N secrets costs N gpg
# encryptions to make, so the insert cost is measured on 200 real `pass insert`s and
# extrapolated to N (said so in the records), and the store is filled up to N by copying the
# encrypted file of a real insert (pass does not bind a file to its name: each copy shows).
# The GPG key is a throwaway one without a passphrase, in a temporary GNUPGHOME.
#
# Usage: scripts/bench/baselines.sh OUT.json SIZES (comma-separated). Needs hyperfine for the
# CLI figures (else a plain timed loop). Prints "not installed" for what is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$1
sizes=$2
root=$(realpath target)/bench
work=$(mktemp -d "$root/baselines.XXXXXX")
records="$work/records.jsonl"
: >"$records"

cleanup() {
    if [ -n "${GNUPGHOME:-}" ] && [ -d "$GNUPGHOME" ]; then
        gpgconf --kill all >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

rec() { # key size value unit note
    printf '{"bench":"baselines","key":"%s","size":%s,"value":%s,"unit":"%s","note":"%s"}\n' "$1" "$2" "$3" "$4" "$5" >>"$records"
}

have() { command -v "$1" >/dev/null 2>&1; }

# Median wall time in ms of a command (no shell): hyperfine -N, else timed runs.
median_ms() { # runs label cmd...
    local runs=$1 label=$2
    shift 2
    if have hyperfine; then
        hyperfine -N --warmup 3 --runs "$runs" --style none --export-json "$work/$label.json" "$*" >/dev/null 2>&1 || return 1
        python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print(r["median"]*1e3, r["min"]*1e3)' "$work/$label.json"
    else
        python3 - "$runs" "$@" <<'EOF'
import statistics, subprocess, sys, time
runs, cmd = int(sys.argv[1]), sys.argv[2:]
ts = []
for _ in range(runs):
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    ts.append(time.perf_counter() - t)
print(statistics.median(ts) * 1e3, min(ts) * 1e3)
EOF
    fi
}

how="hyperfine -N, median"
have hyperfine || how="timed runs, median (no hyperfine)"

# polykey --help: the floor of any CLI call.
read -r help help_min < <(median_ms 100 help target/release/polykey --help)
rec cli.help 0 "$help" ms "polykey --help; $how of 100"
rec cli.help_min 0 "$help_min" ms "polykey --help, least of 100"
read -r true_ms true_min < <(median_ms 100 true /bin/true)
rec cli.true 0 "$true_ms" ms "/bin/true: process start floor; $how of 100"
rec cli.true_min 0 "$true_min" ms "/bin/true, least of 100"
printf '%-46s %.2f ms (least %.2f ms; /bin/true %.2f ms)\n' "polykey --help" "$help" "$help_min" "$true_ms"

if ! have pass || ! have gpg; then
    echo "pass                                           not installed"
    rec pass.missing 0 0 "" "pass not installed"
else
    export GNUPGHOME="$work/gnupg"
    mkdir -m 700 "$GNUPGHOME"
    gpg --batch --quiet --passphrase '' --quick-gen-key "Polykey Bench <bench@example.invalid>" future-default default never 2>/dev/null
    fpr=$(gpg --batch --list-secret-keys --with-colons | awk -F: '/^fpr/ {print $10; exit}')
    export PASSWORD_STORE_DIR="$work/store"
    pass init "$fpr" >/dev/null 2>&1
    # 200 real inserts, 4 to a folder like the Polykey nodes.
    n_ins=200
    t0=$(date +%s.%N)
    for ((i = 0; i < n_ins; i++)); do
        printf 'value %026d\n' "$i" | pass insert -m -f "repo-$(printf %05d $((i / 4)))/secret-$(printf %05d "$i")" >/dev/null 2>&1
    done
    t1=$(date +%s.%N)
    per=$(python3 -c "print(($t1 - $t0) / $n_ins * 1e3)")
    rec pass.insert 0 "$per" ms "pass insert -m, mean of $n_ins real inserts (gpg encryption each; no git)"
    echo "pass insert (one secret)                       $(printf '%.1f' "$per") ms"
    show_cmd=(pass show repo-00000/secret-00000)
    for n in ${sizes//,/ }; do
        # Fill the store to n secrets by copying one real entry's file.
        python3 - "$PASSWORD_STORE_DIR" "$n" <<'EOF'
import os, shutil, sys
store, n = sys.argv[1], int(sys.argv[2])
src = os.path.join(store, "repo-00000", "secret-00000.gpg")
for i in range(n):
    d = os.path.join(store, "repo-%05d" % (i // 4))
    f = os.path.join(d, "secret-%05d.gpg" % i)
    if not os.path.exists(f):
        os.makedirs(d, exist_ok=True)
        shutil.copyfile(src, f)
EOF
        # Below 200 the store holds more than n: drop the extra folders for ls.
        if [ "$n" -lt "$n_ins" ]; then
            cp -r "$PASSWORD_STORE_DIR" "$work/small"
            find "$work/small" -name 'secret-*.gpg' | while read -r f; do
                i=$(basename "$f" .gpg)
                i=$((10#${i#secret-}))
                [ "$i" -lt "$n" ] || rm "$f"
            done
            find "$work/small" -mindepth 1 -type d -empty -delete
            store_n="$work/small"
        else
            store_n="$PASSWORD_STORE_DIR"
        fi
        rec pass.import_extrapolated "$n" "$(python3 -c "print($per * $n)")" ms "$n × the mean pass insert (extrapolated from $n_ins real inserts)"
        read -r show _ < <(median_ms 30 "pass-show-$n" "${show_cmd[@]}")
        rec pass.show "$n" "$show" ms "pass show of one secret; $how of 30"
        runs=20
        [ "$n" -ge 10000 ] && runs=5
        read -r ls _ < <(PASSWORD_STORE_DIR="$store_n" median_ms "$runs" "pass-ls-$n" pass ls)
        rec pass.ls "$n" "$ls" ms "pass ls (tree of the whole store); $how of $runs"
        line="pass show / ls at $n"
        printf '%-46s %.1f ms / %.1f ms' "$line" "$show" "$ls"
        if have gopass; then
            read -r gshow _ < <(median_ms 30 "gopass-show-$n" gopass show repo-00000/secret-00000 || echo)
            if [ -n "$gshow" ]; then
                rec gopass.show "$n" "$gshow" ms "gopass (Debian's Go pass) show of one secret, same store; $how of 30"
                printf '; gopass show %.1f ms' "$gshow"
            fi
        fi
        echo
        rm -rf "$work/small"
    done
    if ! have gopass; then
        echo "gopass                                         not installed"
    fi
fi

python3 -c 'import json,sys; print(json.dumps([json.loads(l) for l in open(sys.argv[1])], indent=1))' "$records" >"$out"
