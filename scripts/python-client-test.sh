#!/usr/bin/env bash
# scripts/python-client-test.sh: the Python client's conformance tests (clients/python/tests)
# against the debug build of the server (cargo builds it first). The package and pytest are
# installed from PyPI into a venv under target/ (python3 with venv is all the machine needs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build -q -p wsedge
VENV=target/python-client-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "./clients/python[test]"
WSEDGE_BIN=$PWD/target/debug/wsedge "$VENV/bin/python" -m pytest -q -p no:cacheprovider clients/python/tests
