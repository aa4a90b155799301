#!/usr/bin/env bash
# Sync between two nodes (benches/sync.rs): merge time beside unlock time, bytes written by a
# merge, by a sync of identical nodes (0), and by 1,000 changed secrets. Prints a Markdown
# table (docs/PERFORMANCE.md, "Sync between nodes").
#
# Usage: scripts/bench/sync.sh      sizes: POLYKEY_SYNC_SIZES (default 10000)
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "code: $(git describe --always --dirty 2>/dev/null || echo '?'); $(date -u '+%Y-%m-%d %H:%M UTC'); load: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench --quiet -p polykey --bench sync
