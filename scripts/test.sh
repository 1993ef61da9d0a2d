#!/usr/bin/env bash
# The project's test command (README, .ci/run): formatting, lints, every test, Autobahn conformance.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Headless Chromium (the dashboard test) and promtool (the shipped Prometheus alert rules) come
# from Debian when the machine lacks them.
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v promtool >/dev/null || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
promtool check rules config/prometheus-alerts.yml
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
scripts/check-cycles.py server/src server/core/src loadtest/src clients/rust/src
scripts/client-size.sh
cargo test --workspace
scripts/python-client-test.sh
scripts/autobahn.sh
