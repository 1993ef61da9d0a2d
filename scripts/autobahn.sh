#!/usr/bin/env bash
# scripts/autobahn.sh [OUTDIR]
#
# Runs the Autobahn|Testsuite fuzzing client (wstest 25.10.1) against wsedge's /echo endpoint,
# every case except 12.* and 13.* (permessage-deflate, which wsedge does not negotiate), and
# fails unless every case passes strictly: 0 failed, 0 non-strict.
#
# wstest is Python-2.7-only. This script installs it from package registries alone, under
# $AUTOBAHN_PREFIX (default: target/autobahn; idempotent, ~40 s cold, ~1 s warm):
#   - CPython 2.7: an existing one (PYTHON27, pyenv's 2.7.x, python2.7 on PATH), else Debian
#     bullseye's python2.7 packages unpacked into the prefix with a private apt state;
#   - virtualenv 20.21.1 (the last that creates 2.7 environments) in a Python 3 venv;
#   - autobahntestsuite 25.10.1 with its Python 2.7 dependencies pinned below.
# It runs twice: over plain TCP (ws://) and over TLS (wss://, a throwaway self-signed certificate
# from openssl). Reports: OUTDIR (default target/autobahn-report)/index.html and summary.json,
# and the same under OUTDIR/wss.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${AUTOBAHN_PREFIX:-$ROOT/target/autobahn}
OUT=${1:-$ROOT/target/autobahn-report}
CASES_EXCLUDED='["12.*", "13.*"]'
mkdir -p "$PREFIX" "$OUT"
PREFIX=$(cd "$PREFIX" && pwd)
OUT=$(cd "$OUT" && pwd)
log() { echo "autobahn.sh: $*" >&2; }

# ---------------------------------------------------------------- install
py27_works() { env LD_LIBRARY_PATH="${2:-}" "$1" -c 'import sys, ssl, zlib, ctypes; assert sys.version_info[:2] == (2, 7)' 2>/dev/null; }

install_wstest() {
    local py27="" libpath="" cpath="" c
    for c in "${PYTHON27:-}" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python2.7 "$(command -v python2.7 || true)"; do
        if [ -n "$c" ] && [ -x "$c" ] && py27_works "$c"; then py27=$c; break; fi
    done
    if [ -z "$py27" ]; then
        local deb="$PREFIX/py27" apt="$PREFIX/apt"
        libpath="$deb/usr/lib/x86_64-linux-gnu:$deb/lib/x86_64-linux-gnu"
        if ! py27_works "$deb/usr/bin/python2.7" "$libpath"; then
            log "fetching CPython 2.7 from Debian bullseye (private apt state in $apt)"
            local mirror
            mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
            [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)
            mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/parts" "$apt/debs"
            printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s bullseye main\n' "$mirror" > "$apt/sources.list"
            local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/parts"
                        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt" -o "Dir::State::status=/dev/null"
                        -o APT::Architecture=amd64 -o APT::Architectures=amd64 -o Debug::NoLocking=1)
            apt-get "${opts[@]}" -qq update
            (cd "$apt/debs" && apt-get "${opts[@]}" -qq download python2.7-minimal libpython2.7-minimal \
                libpython2.7-stdlib libpython2.7-dev libpython2.7 libssl1.1 libffi7)
            rm -rf "$deb" && mkdir -p "$deb"
            for d in "$apt"/debs/*.deb; do dpkg -x "$d" "$deb"; done
        fi
        py27="$deb/usr/bin/python2.7"
        cpath="$deb/usr/include/python2.7:$deb/usr/include"
    fi
    log "CPython 2.7: $py27"
    if [ ! -x "$PREFIX/tools/bin/virtualenv" ]; then
        python3 -m venv "$PREFIX/tools"
        "$PREFIX/tools/bin/pip" install -q "virtualenv==20.21.1"
    fi
    export LD_LIBRARY_PATH="${libpath}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    rm -rf "$PREFIX/venv27"
    "$PREFIX/tools/bin/virtualenv" -q --no-periodic-update --no-download -p "$py27" "$PREFIX/venv27"
    cat > "$PREFIX/constraints.txt" <<'PINS'
Automat==22.10.0
PyHamcrest==1.10.1
Twisted==19.10.0
Werkzeug==1.0.1
argparse==1.4.0
attrs==21.4.0
autobahn==0.10.9
cffi==1.15.1
constantly==15.1.0
cryptography==3.3.2
enum34==1.1.10
hyperlink==21.0.0
idna==2.10
incremental==16.10.1
ipaddress==1.0.23
jinja2==2.11.3
klein==17.10.0
linecache2==1.0.0
markupsafe==1.1.1
pyOpenSSL==19.1.0
pyasn1==0.5.1
pyasn1-modules==0.3.0
pycparser==2.21
service-identity==18.1.0
setuptools==44.0.0
six==1.16.0
traceback2==1.4.0
txaio==2.1.0
typing==3.10.0.0
ujson==2.0.3
unittest2==1.1.0
wsaccel==0.6.6
zope.interface==4.6.0
PINS
    log "installing autobahntestsuite 25.10.1"
    env ${cpath:+CPATH="$cpath"} PIP_DISABLE_PIP_VERSION_CHECK=1 "$PREFIX/venv27/bin/pip" install -q \
        -c "$PREFIX/constraints.txt" "autobahntestsuite==25.10.1" 2>&1 | grep -v DEPRECATION || true
    printf '#!/bin/sh\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" PYTHONWARNINGS=ignore exec "%s" "$@"\n' \
        "$libpath" "$PREFIX/venv27/bin/wstest" > "$PREFIX/wstest"
    chmod +x "$PREFIX/wstest"
    "$PREFIX/wstest" -a | grep -q "AutobahnTestSuite 25.10.1"
    touch "$PREFIX/.installed-25.10.1"
}
[ -f "$PREFIX/.installed-25.10.1" ] && [ -x "$PREFIX/wstest" ] || install_wstest

# ---------------------------------------------------------------- server and run
cargo build --release -q -p wsedge --manifest-path "$ROOT/Cargo.toml"

# run_suite SCHEME DIR [WSEDGE_VAR=value ...]: one server, one full wstest run against it.
run_suite() {
    local scheme=$1 dir=$2 addr
    shift 2
    mkdir -p "$dir"
    # 9.* sends messages up to 16 MiB, and 4 MiB in 64-byte fragments (65,536 frames): raise the
    # size limits for this run only, the fragment limit in step (max_message_size / 64).
    env "$@" WSEDGE_CONNECTION_MAX_MESSAGE_SIZE=20000000 WSEDGE_CONNECTION_MAX_FRAGMENTS=312500 \
        WSEDGE_CONNECTION_OUTBOX_MAX_BYTES=48000000 WSEDGE_SERVER_ECHO_ENDPOINT=true WSEDGE_LOG=warn \
        WSEDGE_STORE_PATH="$dir/store" \
        "$ROOT/target/release/wsedge" --listen 127.0.0.1:0 --shards 2 --config "$ROOT/config/wsedge.toml" \
        > "$dir/server.out" &
    server=$!
    trap 'kill "$server" 2>/dev/null || true' EXIT
    for _ in $(seq 100); do grep -q listening "$dir/server.out" 2>/dev/null && break; sleep 0.1; done
    addr=$(awk '/listening/ {print $4}' "$dir/server.out")
    [ -n "$addr" ] || { log "wsedge did not start"; kill "$server" 2>/dev/null; exit 2; }
    cat > "$dir/fuzzingclient.json" <<SPEC
{"outdir": "$dir", "servers": [{"agent": "wsedge", "url": "$scheme://$addr/echo"}],
 "cases": ["*"], "exclude-cases": $CASES_EXCLUDED, "exclude-agent-cases": {}, "options": {}}
SPEC
    log "wstest fuzzingclient -> $scheme://$addr/echo"
    (cd "$dir" && timeout 900 "$PREFIX/wstest" -m fuzzingclient -s "$dir/fuzzingclient.json") > "$dir/wstest.log" 2>&1 || true
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
}

run_suite ws "$OUT"
# The same over TLS, with a throwaway self-signed certificate.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -keyout "$OUT/wss-key.pem" -out "$OUT/wss-cert.pem" 2>/dev/null
run_suite wss "$OUT/wss" WSEDGE_TLS_CERT_FILE="$OUT/wss-cert.pem" WSEDGE_TLS_KEY_FILE="$OUT/wss-key.pem"

# ---------------------------------------------------------------- verdict
status=0
for dir in "$OUT" "$OUT/wss"; do
    python3 - "$dir" <<'PY' || status=1
import collections, json, os, sys
out = sys.argv[1]
cases = json.load(open(os.path.join(out, "index.json")))["wsedge"]
verdicts = collections.defaultdict(list)
for cid, c in cases.items():
    b, bc = c["behavior"], c["behaviorClose"]
    if b == "UNIMPLEMENTED":
        v = "unimplemented"
    elif b not in ("OK", "NON-STRICT", "INFORMATIONAL") or bc in ("UNCLEAN", "FAILED"):
        v = "failed"
    elif b == "NON-STRICT" or bc == "WRONG CODE":
        v = "non-strict"
    else:
        v = "passed"
    verdicts[v].append(cid)
counts = {k: len(verdicts[k]) for k in ("passed", "failed", "non-strict", "unimplemented")}
json.dump({"counts": counts, "failed": sorted(verdicts["failed"]), "non_strict": sorted(verdicts["non-strict"])},
          open(os.path.join(out, "summary.json"), "w"), indent=2)
for k in ("failed", "non-strict"):
    if verdicts[k]:
        print("autobahn: %s: %s" % (k, ", ".join(sorted(verdicts[k]))))
print(("autobahn (wss): " if out.endswith("/wss") else "autobahn (ws): ") + "%(passed)d passed, %(failed)d failed, %(non-strict)d non-strict, %(unimplemented)d unimplemented" % counts)
sys.exit(0 if cases and not verdicts["failed"] and not verdicts["non-strict"] and not verdicts["unimplemented"] else 1)
PY
done
exit $status
