#!/usr/bin/env bash
# scripts/compare-reference.sh [PAIRS] [SECONDS]
#
# Does loadtest measure what a bare client measures? Runs the reference client
# (benches/refclient.rs: one thread, plain sockets, a hand-written WebSocket client, no goose and
# no wsedge code) and loadtest on the same workloads against the same wsedge, interleaved
# (reference, loadtest, reference, loadtest ...; PAIRS pairs per workload, default 3, each pair
# on a fresh server):
#   echo          50 users x 100 round trips/s                          (scenario peer_echo)
#   fanout        2 publishers x 500/s to 200 subscribers, 200,000/s    (peer_fanout_wide)
#   fanout_light  1 publisher x 200/s to 100 subscribers, 20,000/s      (peer_fanout_wide, --set)
# (one publisher, so that its deliveries are never held by the server's 3 ms write coalescing:
# with two, how many were held depended on the publishers' relative phase, which is set by when
# each started and not by the client being measured)
# and prints per workload the medians of p50 and p99 (from the intended send time, and from the
# actual one) and of client CPU per message, with the loadtest/reference ratios. Targets: p50
# and p99 within 10 %, client CPU per message at most 2x. Everything runs on 127.0.0.1 and stops
# by itself. Results: target/compare-reference/<time>/ (summary.json).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PAIRS=${1:-3}
SECONDS_=${2:-10}
OUT=$ROOT/target/compare-reference/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT/cwd"
cargo build --release -q -p wsedge -p loadtest
cargo build --release -q -p wsedge-benches --bin refclient
BIN=$ROOT/target/release
SCALE=$(python3 -c "print($SECONDS_ / 10)")

# start_server: a fresh wsedge (2 shards, embedded defaults, empty store) on a free port.
start_server() {
    rm -rf "$OUT/cwd" && mkdir -p "$OUT/cwd"
    (cd "$OUT/cwd" && exec "$BIN/wsedge" --listen 127.0.0.1:0 --shards 2 >"$OUT/server.log" 2>&1) &
    server=$!
    for _ in $(seq 100); do grep -q "listening on" "$OUT/server.log" 2>/dev/null && break; sleep 0.1; done
    addr=$(grep -o "listening on [0-9.:]*" "$OUT/server.log" | awk '{print $3}')
    [ -n "$addr" ] || { echo "compare-reference: wsedge did not start" >&2; exit 1; }
}
stop_server() { kill "$server" && wait "$server" 2>/dev/null || true; }

# workload NAME -> "refclient args|loadtest args"
workload() {
    case $1 in
        echo) echo "echo 50 100 $SECONDS_|--scenario peer_echo" ;;
        fanout) echo "fanout 2 500 200 $SECONDS_|--scenario peer_fanout_wide" ;;
        fanout_light) echo "fanout 1 200 100 $SECONDS_|--scenario peer_fanout_wide --set publishers=1 --set publish_rate=200 --set subscribers=100" ;;
    esac
}

for pair in $(seq "$PAIRS"); do
    for name in ${COMPARE_WORKLOADS:-echo fanout fanout_light}; do
        IFS='|' read -r ref lt <<<"$(workload "$name")"
        start_server
        echo "compare-reference: pair $pair/$PAIRS $name: reference" >&2
        # shellcheck disable=SC2086
        "$BIN/refclient" "ws://$addr/ws" $ref >>"$OUT/reference-$name.jsonl"
        echo "compare-reference: pair $pair/$PAIRS $name: loadtest" >&2
        # shellcheck disable=SC2086
        "$BIN/loadtest" run $lt --target "ws://$addr/ws" --server-pid "$server" \
            --duration-scale "$SCALE" --allow-noisy --out "$OUT/loadtest-$name" >"$OUT/loadtest.log" 2>&1 || true
        stop_server
    done
done

python3 - "$OUT" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
summary = {}
print(f"{'workload':<13} {'metric':<26} {'reference':>10} {'loadtest':>10} {'ratio':>7}  target")
for name in ["echo", "fanout", "fanout_light"]:
    ref = [json.loads(l) for l in open(f"{out}/reference-{name}.jsonl")] if glob.glob(f"{out}/reference-{name}.jsonl") else []
    lt = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/loadtest-{name}/*/result.json"))]
    if not ref or not lt:
        continue
    w = "echo" if name == "echo" else "fanout"
    def lat(r, key):
        return r["workloads"][w][key]
    metrics = [
        ("p50_ms (intended)", lambda r: r["p50_us"] / 1e3, lambda r: lat(r, "latency_us")["p50"] / 1e3, 0.10),
        ("p99_ms (intended)", lambda r: r["p99_us"] / 1e3, lambda r: lat(r, "latency_us")["p99"] / 1e3, 0.10),
        ("p50_ms (from send)", lambda r: r["p50_from_send_us"] / 1e3, lambda r: lat(r, "latency_from_send_us")["p50"] / 1e3, None),
        ("p99_ms (from send)", lambda r: r["p99_from_send_us"] / 1e3, lambda r: lat(r, "latency_from_send_us")["p99"] / 1e3, None),
        ("per_s", lambda r: r["per_s"], lambda r: r["workloads"][w]["throughput_per_s"], None),
        ("client_cpu_us_per_msg", lambda r: r["cpu_us_per_message"], lambda r: r["client"]["cpu_us_per_message"], "2x"),
    ]
    rows = {}
    for metric, get_ref, get_lt, target in metrics:
        a, b = statistics.median(map(get_ref, ref)), statistics.median(map(get_lt, lt))
        ratio = b / a if a else None
        ok = "" if target is None else (
            ("ok" if ratio is not None and ratio <= 2 else "MISSED") + " (<= 2x)" if target == "2x"
            else ("ok" if ratio is not None and abs(ratio - 1) <= target else "MISSED") + " (within 10 %)")
        rows[metric] = {"reference": a, "loadtest": b, "ratio": ratio, "target": ok,
                        "reference_runs": [get_ref(r) for r in ref], "loadtest_runs": [get_lt(r) for r in lt]}
        print(f"{name:<13} {metric:<26} {a:>10.3f} {b:>10.3f} {ratio if ratio else float('nan'):>7.3f}  {ok}")
    summary[name] = rows
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)
print(f"compare-reference: {len(ref)} pairs per workload; details in {out}/summary.json")
PY
