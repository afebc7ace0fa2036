#!/usr/bin/env bash
# The live page in a real browser: Debian's chromium, headless, driven by playwright-core
# (tests/browser/dashboard.mjs). bookcast-load drives traffic meanwhile so the numbers move.
# Installs chromium (Debian) and playwright-core (npm, pinned by package-lock.json) itself.
# Writes the screenshot to target/browser/dashboard.png. Then the browser's own EventSource follows
# /sse on a server that ends every event stream after 3 s (tests/browser/eventsource.mjs): it must
# reconnect with Last-Event-ID and miss nothing.
set -euo pipefail
CHECK=browser
source "$(dirname "$0")/lib.sh"

ensure_debian_package chromium /usr/bin/chromium
command -v npm >/dev/null || { echo "[$CHECK] the browser test needs node and npm" >&2; exit 2; }
(cd "$ROOT/tests/browser" && npm ci --silent --no-audit --no-fund >/dev/null)

build_release
PORT="$(free_port)"
start_bookcast "$PORT"
# Bounded: stops by itself after 40 s; the page check takes well under that.
"$BIN/bookcast-load" --url "ws://127.0.0.1:$PORT" --clients 100 --duration 40s \
    --streams '<sym>@depth@0ms,<sym>@trade' >"$WORK/load.log" 2>&1 &
PIDS+=($!)

SHOT="$ROOT/target/browser/dashboard.png"
node "$ROOT/tests/browser/dashboard.mjs" "http://127.0.0.1:$PORT" "$SHOT"
say "the live page drew data in chromium; screenshot at $SHOT"

# EventSource: a second server whose connections live 3 s, so every event stream is dropped by
# the server and the browser reconnects by itself.
SSE_PORT="$(free_port)"
start_bookcast "$SSE_PORT" --max-lifetime 3s
node "$ROOT/tests/browser/eventsource.mjs" "http://127.0.0.1:$SSE_PORT"
say "chromium's EventSource reconnected with Last-Event-ID and missed nothing"
