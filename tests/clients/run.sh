#!/usr/bin/env bash
# Runs unmodified Binance client libraries against a local bookcast and checks that each keeps a
# correct local order book. See README.md beside this file.
#
#   tests/clients/run.sh [LIBRARY...]       LIBRARY: python-binance binance-connector
#                                           binance-connector-ws-api binance-sdk-spot
#                                           cryptofeed ccxt binance-npm example-resume
#                                           (default: all; example-resume runs the README's
#                                           resume client, with websockets only)
# Environment:
#   BOOKCAST_BIN            server binary to use; default: cargo build --release, then
#                           ${CARGO_TARGET_DIR:-target}/release/bookcast
#   BOOKCAST_CLIENTS_VENV   where the virtualenvs live (default ~/.cache/bookcast-clients)
#   BOOKCAST_CLIENTS_PYTHON interpreter for the virtualenvs (default python3, >= 3.10)
#   BOOKCAST_CLIENT_TIMEOUT seconds one client script may take (default 120)
#   BOOKCAST_CLIENTS_RUN_SECONDS  how long each library keeps its book before the check (9)
#
# cryptofeed only speaks wss://, so when it is selected a second bookcast serves HTTPS and wss://
# (--tls-cert/--tls-key) with a throwaway self-signed certificate made by the openssl CLI.
#
# Prints one `PASS name: ...` / `FAIL name: ...` line per library, then `N passed, M failed`;
# exits non-zero if any failed. Reads no stdin.
set -euo pipefail
exec </dev/null

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENVS="${BOOKCAST_CLIENTS_VENV:-$HOME/.cache/bookcast-clients}"
PY="${BOOKCAST_CLIENTS_PYTHON:-python3}"
CLIENT_TIMEOUT="${BOOKCAST_CLIENT_TIMEOUT:-120}"

# library name -> script (the lock file is requirements/<name>.txt)
declare -A SCRIPT=(
  [python-binance]=python_binance.py
  [binance-connector]=binance_connector.py
  [binance-connector-ws-api]=binance_connector_ws_api.py
  [binance-sdk-spot]=binance_sdk_spot.py
  [cryptofeed]=cryptofeed_book.py
  [ccxt]=ccxt_book.py
  [binance-npm]=binance_npm.js
  [example-resume]=example_resume.py
)
ALL=(python-binance binance-connector binance-connector-ws-api binance-sdk-spot cryptofeed ccxt binance-npm example-resume)
# Node libraries: run with node, installed by `npm ci` from <dir>/package-lock.json
declare -A NODE_DIR=([binance-npm]=binance-npm)
# entries that run another entry's library (its virtualenv and lock file) with another script
declare -A VENV_OF=([binance-connector-ws-api]=binance-connector)
venv_of() { printf '%s' "${VENV_OF[$1]:-$1}"; }
if (($#)); then LIBS=("$@"); else LIBS=("${ALL[@]}"); fi
# libraries that get the TLS server (arguments: TLS port, certificate) instead of the plain one
declare -A NEEDS_TLS=([cryptofeed]=1)
WANT_TLS=0
WANT_PLAIN=0
for lib in "${LIBS[@]}"; do
  [[ -n "${SCRIPT[$lib]:-}" ]] || { echo "unknown library '$lib' (known: ${ALL[*]})" >&2; exit 2; }
  if [[ -n "${NEEDS_TLS[$lib]:-}" ]]; then WANT_TLS=1; else WANT_PLAIN=1; fi
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bookcast-clients.XXXXXX")"
SERVER_PID=""
TLS_SERVER_PID=""
BUILD_PID=""
stop_pid() { # pid: SIGTERM, up to 5 s, then SIGKILL
  local pid="$1"
  [[ -n "$pid" ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  stop_pid "$SERVER_PID"
  stop_pid "$TLS_SERVER_PID"
  if [[ -n "$BUILD_PID" ]] && kill -0 "$BUILD_PID" 2>/dev/null; then
    kill "$BUILD_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*"; }
indent() { sed 's/^/    /' "$@"; }

# --- throwaway TLS certificate (only if a selected library needs TLS); before the slow steps ------
CERT="$WORK/tls/cert.pem"
KEY="$WORK/tls/key.pem"
if ((WANT_TLS)); then
  if ! command -v openssl >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
      say "openssl CLI not found; installing it with apt-get"
      { DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl ||
          { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl; }
      } >"$WORK/apt.log" 2>&1 || { say "apt-get install openssl failed:"; indent "$WORK/apt.log" | tail -n 20; }
    fi
    command -v openssl >/dev/null 2>&1 || {
      say "cryptofeed needs a TLS server, and the certificate is made with the openssl CLI, which is"
      say "not installed (install it, e.g. apt-get install openssl, or leave cryptofeed out:"
      say "  $0 python-binance binance-connector binance-sdk-spot ccxt)"
      exit 2
    }
  fi
  mkdir -p "$WORK/tls"
  if ! openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=localhost" \
      -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
      -keyout "$KEY" -out "$CERT" >"$WORK/openssl.log" 2>&1; then
    say "openssl could not make a self-signed certificate:"; indent "$WORK/openssl.log" | tail -n 20
    exit 1
  fi
fi

# --- server binary: build in the background while the virtualenvs install ----------------------
if [[ -n "${BOOKCAST_BIN:-}" ]]; then
  BIN="$BOOKCAST_BIN"
else
  TARGET="${CARGO_TARGET_DIR:-target}"
  [[ "$TARGET" = /* ]] || TARGET="$ROOT/$TARGET"
  BIN="$TARGET/release/bookcast"
  say "building bookcast (cargo build --release, target dir $TARGET)"
  (cd "$ROOT" && cargo build --release --quiet) >"$WORK/build.log" 2>&1 &
  BUILD_PID=$!
fi

# --- one virtualenv per library, pinned by requirements/<name>.txt ------------------------------
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
  { say "$PY is older than Python 3.10"; exit 2; }
PYVER="$("$PY" -c 'import sys; print(sys.version.split()[0])')"
mkdir -p "$VENVS"

setup_venv() { # name -> 0 if the venv holds exactly the pinned set
  local name="$1" venv="$VENVS/$1" lock="$HERE/requirements/$1.txt" stamp
  stamp="$(printf 'python %s\n' "$PYVER"; cat "$lock")"
  if [[ -x "$venv/bin/python" && -f "$venv/.bookcast-pins" ]] &&
     [[ "$(cat "$venv/.bookcast-pins")" == "$stamp" ]]; then
    echo "up to date"
    return 0
  fi
  rm -rf "$venv"
  "$PY" -m venv "$venv" &&
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$lock" &&
    printf '%s' "$stamp" >"$venv/.bookcast-pins"
}

setup_node() { # dir -> 0 once npm ci installed exactly its lock file (three tries: the registry)
  local dir="$HERE/$1" try
  for try in 1 2 3; do
    (cd "$dir" && npm ci --no-audit --no-fund --silent) && return 0
    echo "npm ci failed (try $try of 3)"
    sleep $((try * 5))
  done
  return 1
}

declare -A SETUP_PID=()
t0=$SECONDS
for lib in "${LIBS[@]}"; do
  if [[ -n "${NODE_DIR[$lib]:-}" ]]; then
    command -v node >/dev/null && command -v npm >/dev/null ||
      { say "$lib needs node and npm"; exit 2; }
    setup_node "${NODE_DIR[$lib]}" >"$WORK/venv-$lib.log" 2>&1 &
    SETUP_PID[$lib]=$!
    continue
  fi
  venv="$(venv_of "$lib")"
  [[ -z "${SETUP_PID[$venv]:-}" ]] || continue # one setup per virtualenv, however many entries use it
  setup_venv "$venv" >"$WORK/venv-$venv.log" 2>&1 &
  SETUP_PID[$venv]=$!
done
declare -A SETUP_OK=()
for venv in "${!SETUP_PID[@]}"; do
  if wait "${SETUP_PID[$venv]}"; then SETUP_OK[$venv]=1; else SETUP_OK[$venv]=0; fi
done
say "virtualenvs ready in $((SECONDS - t0))s under $VENVS"

if [[ -n "$BUILD_PID" ]]; then
  if ! wait "$BUILD_PID"; then
    BUILD_PID=""
    say "cargo build failed:"; indent "$WORK/build.log"
    exit 1
  fi
  BUILD_PID=""
fi
[[ -x "$BIN" ]] || { say "no server binary at $BIN"; exit 1; }

# --- start bookcast on a free loopback port (and the TLS one on another) -------------------------
# start_server LOGNAME [EXTRA ARGS...]: sets STARTED_PORT and STARTED_PID, returns 0 once
# /api/v3/ping answers (over https, trusting $CERT, when EXTRA ARGS hold --tls-cert).
start_server() {
  local logname="$1" scheme=http
  shift
  [[ " $* " != *" --tls-cert "* ]] || scheme=https
  STARTED_PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  "$BIN" --listen "127.0.0.1:$STARTED_PORT" --feed "$ROOT/feeds/small.toml" "$@" >"$WORK/$logname.log" 2>&1 &
  STARTED_PID=$!
  "$PY" - "$scheme" "$STARTED_PORT" "$STARTED_PID" "$CERT" <<'EOF'
import os, ssl, sys, time, urllib.request
scheme, port, pid, cert = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=cert) if scheme == "https" else None
end = time.monotonic() + 20
while time.monotonic() < end:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)  # the server exited (port taken?)
    try:
        with urllib.request.urlopen("%s://127.0.0.1:%d/api/v3/ping" % (scheme, port), timeout=1,
                                    context=ctx) as r:
            if r.read().strip() == b"{}":
                sys.exit(0)
    except OSError:  # includes ssl.SSLError and urllib.error.URLError
        pass
    time.sleep(0.1)
sys.exit(1)
EOF
}
start_server_retrying() { # like start_server, up to 3 tries (a free port can be taken meanwhile)
  for _ in 1 2 3; do
    if start_server "$@"; then return 0; fi
    stop_pid "$STARTED_PID"; STARTED_PID=""
  done
  return 1
}
if ((WANT_PLAIN)); then
  if ! start_server_retrying server; then
    say "bookcast did not answer /api/v3/ping within 20s:"; indent "$WORK/server.log"
    exit 1
  fi
  PORT="$STARTED_PORT"; SERVER_PID="$STARTED_PID"
  say "bookcast $BIN listening on 127.0.0.1:$PORT (feeds/small.toml)"
fi
if ((WANT_TLS)); then
  if ! start_server_retrying server-tls --tls-cert "$CERT" --tls-key "$KEY"; then
    say "bookcast (TLS) did not answer https://127.0.0.1:PORT/api/v3/ping within 20s:"
    indent "$WORK/server-tls.log"
    exit 1
  fi
  TLS_PORT="$STARTED_PORT"; TLS_SERVER_PID="$STARTED_PID"
  say "bookcast $BIN serving HTTPS/wss on 127.0.0.1:$TLS_PORT (feeds/small.toml, self-signed certificate)"
fi

# --- run each client ------------------------------------------------------------------------------
passed=0
failed=0
for lib in "${LIBS[@]}"; do
  log="$WORK/client-$lib.log"
  venv="$(venv_of "$lib")"
  if [[ "${SETUP_OK[$venv]}" != 1 ]]; then
    say "FAIL $lib: could not install requirements/$venv.txt"
    indent "$WORK/venv-$venv.log" | tail -n 20
    failed=$((failed + 1))
    continue
  fi
  if [[ -n "${NEEDS_TLS[$lib]:-}" ]]; then args=("$TLS_PORT" "$CERT"); else args=("$PORT"); fi
  if [[ -n "${NODE_DIR[$lib]:-}" ]]; then run=(node); else run=("$VENVS/$venv/bin/python" -u); fi
  t1=$SECONDS
  set +e
  (cd "$HERE" && timeout --kill-after=5 "$CLIENT_TIMEOUT" \
    "${run[@]}" "${SCRIPT[$lib]}" "${args[@]}") >"$log" 2>"$log.err"
  rc=$?
  set -e
  verdict="$(grep -E '^(OK|FAIL): ' "$log" | tail -n 1 || true)"
  secs=$((SECONDS - t1))
  if [[ $rc -eq 0 && "$verdict" == OK:* ]]; then
    say "PASS $lib: ${verdict#OK: } [${secs}s]"
    passed=$((passed + 1))
  else
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
      reason="timed out after ${CLIENT_TIMEOUT}s"
    elif [[ "$verdict" == FAIL:* ]]; then
      reason="${verdict#FAIL: }"
    else
      reason="exit code $rc"
    fi
    say "FAIL $lib: $reason [${secs}s]"
    say "  --- $lib stdout"; indent "$log" | tail -n 40
    say "  --- $lib stderr"; indent "$log.err" | tail -n 40
    failed=$((failed + 1))
  fi
  if [[ -n "$SERVER_PID" ]] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
    say "bookcast exited during $lib:"; indent "$WORK/server.log" | tail -n 40
    SERVER_PID=""
    break
  fi
  if [[ -n "$TLS_SERVER_PID" ]] && ! kill -0 "$TLS_SERVER_PID" 2>/dev/null; then
    say "bookcast (TLS) exited during $lib:"; indent "$WORK/server-tls.log" | tail -n 40
    TLS_SERVER_PID=""
    break
  fi
done

# libraries not run because the server died count as failed
ran=$((passed + failed))
if ((ran < ${#LIBS[@]})); then
  for lib in "${LIBS[@]:ran}"; do say "FAIL $lib: not run (bookcast exited)"; done
  failed=$((failed + ${#LIBS[@]} - ran))
fi

echo "$passed passed, $failed failed"
((failed == 0))
