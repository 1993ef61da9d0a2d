#!/usr/bin/env bash
# scripts/compare-peer.sh [PAIRS] [DURATION_SCALE]
#
# Runs the same echo and fan-out workloads (scenarios peer_echo, peer_fanout: one busy channel,
# peer_fanout_wide: more subscribers at a tenth of the rate) against wsedge
# (protocol v1, 2 shards) and against a plain fastwebsockets server (benches/peer.rs, driven in
# loadtest's --raw mode), interleaved A B A B ... (PAIRS pairs per workload, default 3), and
# prints, per workload, the medians and the wsedge/peer ratios of server CPU per message and of
# p99 latency. Everything runs on 127.0.0.1 and stops by itself. Results: target/compare-peer/.
#
# With BASELINE_WSEDGE=/path/to/an/older/wsedge, each pair also runs that build (A B C A B C ...),
# and the table adds its figures and the ratios of this build to it: the before/after of a change.
# Servers run from an empty folder, so each uses its own embedded default config.
# COMPARE_WORKLOADS="peer_fanout peer_fanout_wide" runs only those (default: all three).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PAIRS=${1:-3}
SCALE=${2:-1}
BASELINE=${BASELINE_WSEDGE:-}
OUT=$ROOT/target/compare-peer/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT/cwd"
cargo build --release -q -p wsedge -p loadtest
cargo build --release -q -p wsedge-benches --bin fws-peer

# run_wsedge NAME BINARY WORKLOAD: one loadtest run against a spawned BINARY.
run_wsedge() {
    (cd "$OUT/cwd" && LOADTEST_WSEDGE_BIN=$2 "$ROOT/target/release/loadtest" run --scenario "$3" \
        --spawn-server --shards 2 --duration-scale "$SCALE" --out "$OUT/$1" >"$OUT/$1.log" 2>&1) || true
}

for pair in $(seq "$PAIRS"); do
    for workload in ${COMPARE_WORKLOADS:-peer_echo peer_fanout peer_fanout_wide}; do
        echo "compare-peer: pair $pair/$PAIRS $workload: wsedge" >&2
        run_wsedge wsedge "$ROOT/target/release/wsedge" "$workload"
        if [ -n "$BASELINE" ]; then
            echo "compare-peer: pair $pair/$PAIRS $workload: baseline $BASELINE" >&2
            run_wsedge baseline "$BASELINE" "$workload"
        fi
        echo "compare-peer: pair $pair/$PAIRS $workload: fastwebsockets peer" >&2
        target/release/fws-peer > "$OUT/peer.addr" &
        peer=$!
        for _ in $(seq 50); do grep -q listening "$OUT/peer.addr" && break; sleep 0.1; done
        addr=$(awk '{print $4}' "$OUT/peer.addr")
        target/release/loadtest run --scenario "$workload" --target "ws://$addr/" --server-pid "$peer" --raw \
            --duration-scale "$SCALE" --out "$OUT/peer" >/dev/null 2>&1 || true
        kill "$peer" && wait "$peer" 2>/dev/null || true
    done
done

python3 - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
def runs(server, scenario):
    return [json.load(open(p)) for p in sorted(glob.glob(f"{out}/{server}/*-{scenario}/result.json"))]
summary = {}
scenarios = [(s, w) for s, w in [("peer_echo", "echo"), ("peer_fanout", "fanout"),
                                  ("peer_fanout_wide", "fanout")]
             if runs("wsedge", s)]
with_base = bool(runs("baseline", scenarios[0][0]))
extra = f" {'baseline':>10} {'ws/base':>7}" if with_base else ""
print(f"{'scenario':<17} {'metric':<22} {'wsedge':>10} {'peer':>10} {'ratio':>7}{extra}  (medians of {len(runs('wsedge', scenarios[0][0]))} runs each)")
for scenario, workload in scenarios:
    w, p = runs("wsedge", scenario), runs("peer", scenario)
    if not w or not p:
        print(f"{scenario}: missing runs"); sys.exit(1)
    rows = {}
    for metric, get in [("server_cpu_us_per_msg", lambda r: r["server"]["cpu_us_per_message"]),
                        ("p99_us", lambda r: r["workloads"][workload]["latency_us"]["p99"]),
                        ("throughput_per_s", lambda r: r["workloads"][workload]["throughput_per_s"]),
                        ("lost", lambda r: r["workloads"][workload]["lost"])]:
        a, b = statistics.median(map(get, w)), statistics.median(map(get, p))
        rows[metric] = {"wsedge": a, "peer": b, "ratio": a / b if b else None,
                        "wsedge_runs": [get(r) for r in w], "peer_runs": [get(r) for r in p]}
        line = f"{scenario:<17} {metric:<22} {a:>10.2f} {b:>10.2f} {a / b if b else float('nan'):>7.3f}"
        if with_base:
            base = runs("baseline", scenario)
            c = statistics.median(map(get, base))
            rows[metric].update(baseline=c, baseline_runs=[get(r) for r in base],
                                baseline_ratio_to_peer=c / b if b else None)
            line += f" {c:>10.2f} {a / c if c else float('nan'):>7.3f}"
        print(line)
    summary[scenario] = rows
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)
print(f"compare-peer: details in {out}/summary.json")
PY
