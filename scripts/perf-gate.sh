#!/usr/bin/env bash
# scripts/perf-gate.sh [DURATION_SCALE] [REPEAT]
#
# CI's performance gate: builds release, runs a short baseline REPEAT times (default 3) against
# a fresh spawned wsedge each time, and fails when the median run's grade is below the
# scenario's required grade (config/grading.toml), or when most runs were inconclusive (the
# machine too busy to measure: loadtest exit 3). With PERF_BASELINE=a.json[,b.json...] it also
# compares the runs against those (loadtest compare) and fails on a FAIL row. Results go to
# target/perf-gate/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCALE=${1:-0.5}
REPEAT=${2:-3}
cargo build --release -q -p wsedge -p loadtest
OUT=target/perf-gate
rm -rf "$OUT"
status=0
target/release/loadtest run --scenario baseline --spawn-server --duration-scale "$SCALE" \
    --repeat "$REPEAT" --out "$OUT" || status=$?
results=$(ls "$OUT"/*/result.json 2>/dev/null | paste -sd, || true)
[ -n "$results" ] && cat "$(dirname "${results%%,*}")/report.md"
if [ "$status" -ne 0 ]; then
    echo "perf-gate: FAILED (loadtest exit $status)" >&2
    exit 1
fi
if [ -n "${PERF_BASELINE:-}" ]; then
    target/release/loadtest compare "$PERF_BASELINE" "$results"
fi
echo "perf-gate: passed"
