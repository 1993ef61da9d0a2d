#!/usr/bin/env bash
# scripts/client-size.sh: the size of the browser client (server/client/wsedge.js, served at
# /client/wsedge.js): as served, gzipped (-9), and minified (terser, pinned, fetched from npm
# by npx) then gzipped. Fails when minified + gzipped is over the target, 15 kB (15,360 bytes).
# Without npx it checks the unminified file gzipped instead, which is larger (an upper bound).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TARGET=15360
FILE=server/client/wsedge.js
raw=$(wc -c <"$FILE")
gz=$(gzip -9c "$FILE" | wc -c)
if command -v npx >/dev/null; then
    min=$(npx -y terser@5.51.4 "$FILE" --module --compress --mangle | wc -c)
    mingz=$(npx -y terser@5.51.4 "$FILE" --module --compress --mangle | gzip -9c | wc -c)
    echo "client-size: $FILE $raw bytes, gzip $gz, minified $min, minified+gzip $mingz (target <= $TARGET)"
    checked=$mingz
else
    echo "client-size: $FILE $raw bytes, gzip $gz (no npx: the unminified gzip is the bound checked; target <= $TARGET)"
    checked=$gz
fi
[ "$checked" -le "$TARGET" ] || { echo "client-size: over the target" >&2; exit 1; }
