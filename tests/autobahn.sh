#!/usr/bin/env bash
# Autobahn|Testsuite (the standard WebSocket conformance suite) against bookcast's session code:
# wstest's fuzzing client runs sections 1-7 and 9 against the /echo route that exists only with
# --test-echo-route. wstest exits 0 even when cases fail, so its index.json is read here and any
# behaviour other than OK, NON-STRICT or INFORMATIONAL fails the run. Sections 12 and 13 are
# permessage-deflate, which bookcast does not offer. The report stays in a temporary directory.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
VENV="${BOOKCAST_AUTOBAHN_VENV:-$HOME/.cache/bookcast-autobahn}"
PY27="${PYENV_ROOT:-$HOME/.pyenv}/versions/2.7.18/bin/python"
say() { echo "[autobahn] $*"; }

if [[ ! -x "$VENV/bin/wstest" ]]; then
    [[ -x "$PY27" ]] || { echo "Python 2.7.18 not found at $PY27 (pyenv install 2.7.18)" >&2; exit 2; }
    say "creating a Python 2.7 virtualenv with autobahntestsuite in $VENV"
    "$PY27" -m virtualenv --version >/dev/null 2>&1 || "$PY27" -m pip install --quiet "virtualenv<20.22"
    rm -rf "$VENV"
    "$PY27" -m virtualenv --quiet "$VENV"
    "$VENV/bin/pip" install --quiet "autobahntestsuite==25.10.1"
fi

(cd "$ROOT" && cargo build --release --workspace --quiet)
WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$BIN/bookcast" --listen "127.0.0.1:$PORT" --feed "$ROOT/feeds/small.toml" --test-echo-route \
    --max-connection-attempts-per-ip 0 >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/api/v3/ping" >/dev/null && break; sleep 0.1; done

cat >"$WORK/spec.json" <<JSON
{"outdir": "$WORK/report", "servers": [{"agent": "bookcast", "url": "ws://127.0.0.1:$PORT/echo"}],
 "cases": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*"], "exclude-cases": [], "exclude-agent-cases": {}}
JSON
say "wstest -m fuzzingclient: sections 1-7 and 9 against ws://127.0.0.1:$PORT/echo"
(cd "$WORK" && timeout 1200 "$VENV/bin/wstest" -m fuzzingclient -s spec.json >"$WORK/wstest.log" 2>&1) ||
    { tail -20 "$WORK/wstest.log"; exit 1; }
python3 - "$WORK/report/index.json" <<'PY'
import collections, json, sys
cases = json.load(open(sys.argv[1]))["bookcast"]
counts = collections.Counter(c["behavior"] for c in cases.values())
bad = sorted((k, c["behavior"], c["behaviorClose"]) for k, c in cases.items()
             if c["behavior"] not in ("OK", "NON-STRICT", "INFORMATIONAL")
             or c["behaviorClose"] not in ("OK", "INFORMATIONAL"))
print("[autobahn] %d cases: %s" % (len(cases), ", ".join("%s %d" % kv for kv in sorted(counts.items()))))
if bad:
    for case in bad:
        print("[autobahn] FAILED case %s: behavior %s, close %s" % case)
    sys.exit(1)
PY
