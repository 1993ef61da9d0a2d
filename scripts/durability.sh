#!/usr/bin/env bash
# scripts/durability.sh [DURATION_SCALE]
#
# The crash proof, short: the durability scenario against a spawned release wsedge. Agents make
# persisted sends and ack what they receive; halfway through, the harness SIGKILLs the server
# and restarts it on the same port and store. Fails unless the run graded as required and every
# message confirmed to its sender was delivered (lost 0) and every repeat said "redelivered".
# Results go to target/durability/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCALE=${1:-0.5}
cargo build --release -q -p wsedge -p loadtest
OUT=target/durability
rm -rf "$OUT"
status=0
# --allow-noisy: the restarted server is a new process, which the interference meter counts as
# another; this run is judged by what it lost, not by its latency.
target/release/loadtest run --scenario durability --spawn-server --processes 1 --allow-noisy \
    --duration-scale "$SCALE" --out "$OUT" || status=$?
result=$(ls "$OUT"/*/result.json 2>/dev/null | head -1 || true)
[ -n "$result" ] || { echo "durability: no result" >&2; exit 1; }
python3 - "$result" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
f = r["reliable"]
print(f"durability: kill9 at {f['at_s']:.1f} s, restarted in {f['restart_ms']} ms, first ok after "
      f"{f['recovered_ms']} ms; confirmed {f['confirmed']}, delivered {f['delivered']}, lost "
      f"{f['lost']}, redelivered {f['redelivered']}, repeats without redelivered "
      f"{f['duplicated_unmarked']}; confirm latency p50 {r['workloads']['reliable']['latency_us']['p50']} us")
ok = f["kind"] == "kill9" and f["confirmed"] > 0 and f["lost"] == 0 and f["duplicated_unmarked"] == 0
sys.exit(0 if ok else 1)
PY
if [ "$status" -ne 0 ]; then
    echo "durability: FAILED (loadtest exit $status)" >&2
    exit 1
fi
echo "durability: passed"
