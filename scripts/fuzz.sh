#!/usr/bin/env bash
# scripts/fuzz.sh [RUNS] [SECONDS]
#
# Builds the libFuzzer targets in fuzz/ on the stable toolchain (rustc's SanitizerCoverage passes,
# as cargo-fuzz sets them, without a sanitizer) and runs each for RUNS executions (default
# 1,000,000) or SECONDS seconds (default 120), whichever ends first, from the corpus in
# target/fuzz-corpus/<target> (kept between runs). Fails on the first crash, leaving the input in
# target/fuzz-artifacts/<target>/. Runs only in-process: no network.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${1:-1000000}
SECONDS_EACH=${2:-120}
export CARGO_TARGET_DIR="$ROOT/target/fuzz-build"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS off the build scripts, which must not be instrumented.
HOST=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release -q --target "$HOST" --manifest-path "$ROOT/fuzz/Cargo.toml"
for target in decode_frames parse_envelope; do
    corpus="$ROOT/target/fuzz-corpus/$target" artifacts="$ROOT/target/fuzz-artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    echo "fuzz.sh: $target: up to $RUNS runs or ${SECONDS_EACH}s" >&2
    log="$artifacts/last-run.log" status=0
    "$CARGO_TARGET_DIR/$HOST/release/$target" "$corpus" -runs="$RUNS" -max_total_time="$SECONDS_EACH" \
        -max_len=65536 -artifact_prefix="$artifacts/" -print_final_stats=1 > "$log" 2>&1 || status=$?
    grep -E "^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)" "$log" |
        sed "s/^/fuzz.sh: $target: /" || true
    if [ "$status" -ne 0 ]; then
        tail -40 "$log" >&2
        echo "fuzz.sh: $target crashed (exit $status); the input is in $artifacts" >&2
        exit 1
    fi
done
