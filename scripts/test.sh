#!/usr/bin/env bash
# The project's test command (README, .ci/run): formatting, lints, every test, Autobahn conformance.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
scripts/check-cycles.py server/src server/core/src loadtest/src
cargo test --workspace
scripts/autobahn.sh
