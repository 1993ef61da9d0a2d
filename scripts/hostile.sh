#!/usr/bin/env bash
# scripts/hostile.sh [--binary PATH] [--only ATTACK ...]
#
# Builds the release wsedge and runs scripts/hostile.py: every attack of the hostile-client audit
# against a freshly spawned server on 127.0.0.1, bounded in count and time (about two minutes in
# all), one line per attack (holds / BREAKS, server RSS peak, victim p99). Exit code 1 when any
# attack breaks the server. --binary runs the attacks against another build (e.g. an older one).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -q -p wsedge
exec python3 scripts/hostile.py "$@"
