#!/usr/bin/env bash
# The main job in one command: build Polykey, create a demo node, store and tag a secret,
# mount the node, and show the secret through the mount with plain `cat`.
#
# Usage: scripts/demo.sh [DIR]   (default: a new temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --workspace --quiet

pk="$PWD/target/release/polykey"
dir="${1:-$(mktemp -d -t polykey-demo.XXXXXX)}"
mkdir -p "$dir/mnt"
export POLYKEY_NODE="$dir/demo.node"
# A demo passphrase in a private file; real users type theirs at the prompt.
umask 077
printf 'demo passphrase, change me\n' > "$dir/passphrase"
export POLYKEY_PASSWORD_FILE="$dir/passphrase"

[ -e "$POLYKEY_NODE" ] || "$pk" init
printf 'AKIAIOSFODNN7EXAMPLE' | "$pk" put aws-prod/key
"$pk" tag aws aws-prod/key
"$pk" mount "$dir/mnt"

echo
echo "\$ ls -l $dir/mnt/tags/aws"
ls -l "$dir/mnt/tags/aws"
echo "\$ cat $dir/mnt/tags/aws/key"
cat "$dir/mnt/tags/aws/key"; echo
echo "\$ polykey log aws-prod"
"$pk" log aws-prod
echo
echo "The node $POLYKEY_NODE is mounted at $dir/mnt."
echo "Edit secrets with any editor there; every save is a commit. When done:"
echo "  POLYKEY_NODE=$POLYKEY_NODE $pk unmount $dir/mnt"
