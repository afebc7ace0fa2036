#!/usr/bin/env bash
# Autobahn|Testsuite (the standard WebSocket conformance suite) against bookcast's session code:
# wstest's fuzzing client runs sections 1-7 and 9 against the /echo route that exists only with
# --test-echo-route. wstest exits 0 even when cases fail, so its index.json is read here and any
# behaviour other than OK, NON-STRICT or INFORMATIONAL fails the run. Sections 12 and 13 are
# permessage-deflate, which bookcast does not offer. The report stays in a temporary directory.
set -euo pipefail
CHECK=autobahn
source "$(dirname "$0")/lib.sh"
VENV="${BOOKCAST_AUTOBAHN_VENV:-$HOME/.cache/bookcast-autobahn}"
PY27="${PYENV_ROOT:-$HOME/.pyenv}/versions/2.7.18/bin/python"

if [[ ! -x "$VENV/bin/wstest" ]]; then
    [[ -x "$PY27" ]] || { echo "Python 2.7.18 not found at $PY27 (pyenv install 2.7.18)" >&2; exit 2; }
    say "creating a Python 2.7 virtualenv with autobahntestsuite in $VENV"
    "$PY27" -m virtualenv --version >/dev/null 2>&1 || "$PY27" -m pip install --quiet "virtualenv<20.22"
    rm -rf "$VENV"
    "$PY27" -m virtualenv --quiet "$VENV"
    "$VENV/bin/pip" install --quiet "autobahntestsuite==25.10.1"
fi

build_release
PORT="$(free_port)"
start_bookcast "$PORT" --test-echo-route

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
