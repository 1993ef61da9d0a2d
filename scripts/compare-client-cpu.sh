#!/usr/bin/env bash
# scripts/compare-client-cpu.sh: usage without arguments; results in target/compare-client-cpu.
# Rust client (clients/rust/examples/fanout_cpu.rs) vs the reference client, CPU per delivery,
# 1 publisher x 200/s -> 100 subscribers (20,000/s), interleaved pairs, fresh server each run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -q -p wsedge -p wsedge-benches --bin refclient
cargo build --release -q -p wsedge-client --example fanout_cpu
B=$PWD/target/release
OUT=${OUT:-$PWD/target/compare-client-cpu}; mkdir -p $OUT; : > $OUT/results.jsonl
run_server() {
  rm -rf $OUT/cwd; mkdir -p $OUT/cwd
  (cd $OUT/cwd && exec $B/wsedge --listen 127.0.0.1:0 --shards 2 > $OUT/server.log 2>&1) & server=$!
  for _ in $(seq 50); do grep -q "listening on" $OUT/server.log 2>/dev/null && break; sleep 0.1; done
  addr=$(grep -o "listening on [0-9.:]*" $OUT/server.log | awk '{print $3}')
}
for pair in 1 2 3; do
  run_server
  $B/examples/fanout_cpu ws://$addr/ws 100 10 > $OUT/a.json 2>/dev/null & client=$!
  sleep 1.5
  $B/refclient ws://$addr/ws fanout 1 200 0 11 > /dev/null
  wait $client
  echo "{\"pair\":$pair,\"client\":\"wsedge-client\",\"result\":$(cat $OUT/a.json)}" >> $OUT/results.jsonl
  kill $server; wait $server 2>/dev/null || true
  run_server
  $B/refclient ws://$addr/ws fanout 1 200 100 10 > $OUT/b.json
  echo "{\"pair\":$pair,\"client\":\"reference\",\"result\":$(cat $OUT/b.json)}" >> $OUT/results.jsonl
  kill $server; wait $server 2>/dev/null || true
done
cat $OUT/results.jsonl
