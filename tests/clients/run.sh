#!/usr/bin/env bash
# Runs unmodified Binance client libraries against a local bookcast and checks that each keeps a
# correct local order book. See README.md beside this file.
#
#   tests/clients/run.sh [LIBRARY...]       LIBRARY: python-binance binance-connector
#                                           binance-sdk-spot cryptofeed ccxt (default: all)
# Environment:
#   BOOKCAST_BIN            server binary to use; default: cargo build --release, then
#                           ${CARGO_TARGET_DIR:-target}/release/bookcast
#   BOOKCAST_CLIENTS_VENV   where the virtualenvs live (default ~/.cache/bookcast-clients)
#   BOOKCAST_CLIENTS_PYTHON interpreter for the virtualenvs (default python3, >= 3.10)
#   BOOKCAST_CLIENT_TIMEOUT seconds one client script may take (default 120)
#   BOOKCAST_CLIENTS_RUN_SECONDS  how long each library keeps its book before the check (9)
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
  [binance-sdk-spot]=binance_sdk_spot.py
  [cryptofeed]=cryptofeed_book.py
  [ccxt]=ccxt_book.py
)
ALL=(python-binance binance-connector binance-sdk-spot cryptofeed ccxt)
if (($#)); then LIBS=("$@"); else LIBS=("${ALL[@]}"); fi
for lib in "${LIBS[@]}"; do
  [[ -n "${SCRIPT[$lib]:-}" ]] || { echo "unknown library '$lib' (known: ${ALL[*]})" >&2; exit 2; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bookcast-clients.XXXXXX")"
SERVER_PID=""
BUILD_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ -n "$BUILD_PID" ]] && kill -0 "$BUILD_PID" 2>/dev/null; then
    kill "$BUILD_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*"; }
indent() { sed 's/^/    /' "$@"; }

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

declare -A SETUP_PID=()
t0=$SECONDS
for lib in "${LIBS[@]}"; do
  setup_venv "$lib" >"$WORK/venv-$lib.log" 2>&1 &
  SETUP_PID[$lib]=$!
done
declare -A SETUP_OK=()
for lib in "${LIBS[@]}"; do
  if wait "${SETUP_PID[$lib]}"; then SETUP_OK[$lib]=1; else SETUP_OK[$lib]=0; fi
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

# --- start bookcast on a free loopback port -------------------------------------------------------
start_server() {
  PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  "$BIN" --listen "127.0.0.1:$PORT" --feed "$ROOT/feeds/small.toml" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  "$PY" - "$PORT" "$SERVER_PID" <<'EOF'
import os, sys, time, urllib.request
port, pid = int(sys.argv[1]), int(sys.argv[2])
end = time.monotonic() + 20
while time.monotonic() < end:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)  # the server exited (port taken?)
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/api/v3/ping" % port, timeout=1) as r:
            if r.read().strip() == b"{}":
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
EOF
}
started=0
for _ in 1 2 3; do
  if start_server; then started=1; break; fi
  kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
done
if ((!started)); then
  say "bookcast did not answer /api/v3/ping within 20s:"; indent "$WORK/server.log"
  exit 1
fi
say "bookcast $BIN listening on 127.0.0.1:$PORT (feeds/small.toml)"

# --- run each client ------------------------------------------------------------------------------
passed=0
failed=0
for lib in "${LIBS[@]}"; do
  log="$WORK/client-$lib.log"
  if [[ "${SETUP_OK[$lib]}" != 1 ]]; then
    say "FAIL $lib: could not install requirements/$lib.txt"
    indent "$WORK/venv-$lib.log" | tail -n 20
    failed=$((failed + 1))
    continue
  fi
  t1=$SECONDS
  set +e
  (cd "$HERE" && timeout --kill-after=5 "$CLIENT_TIMEOUT" \
    "$VENVS/$lib/bin/python" -u "${SCRIPT[$lib]}" "$PORT") >"$log" 2>"$log.err"
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
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    say "bookcast exited during $lib:"; indent "$WORK/server.log" | tail -n 40
    SERVER_PID=""
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
