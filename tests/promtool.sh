#!/usr/bin/env bash
# Checks bookcast's /metrics exposition with Prometheus' own linter (`promtool check metrics`),
# after some real traffic so that every labelled series has appeared. Installs Debian's
# prometheus package (which ships promtool) when it is missing and this runs as root.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"

if ! command -v promtool >/dev/null; then
    if [[ "$(id -u)" == 0 ]]; then
        echo "[promtool] installing Debian's prometheus package (for promtool)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    else
        echo "[promtool] promtool is missing: apt-get install prometheus" >&2
        exit 2
    fi
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
"$BIN/bookcast" --listen "127.0.0.1:$PORT" --feed "$ROOT/feeds/small.toml" \
    --max-connection-attempts-per-ip 0 >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/api/v3/ping" >/dev/null && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/api/v3/ping" >/dev/null || { cat "$WORK/server.log"; exit 1; }

# Traffic that touches every metric family: streams of several kinds, a slow client, REST
# errors, a refused upgrade.
"$BIN/bookcast-load" --url "ws://127.0.0.1:$PORT" --clients 50 --duration 2s \
    --streams '<sym>@depth,<sym>@trade,<sym>@kline_1s' --slow 2 >/dev/null
curl -s "http://127.0.0.1:$PORT/api/v3/depth?symbol=NOPE" >/dev/null
curl -s "http://127.0.0.1:$PORT/ws/btcusdt@trade" >/dev/null
curl -sf "http://127.0.0.1:$PORT/metrics" >"$WORK/metrics.txt"

for family in bookcast_connections_open bookcast_frames_delivered_total bookcast_publish_to_socket_seconds_bucket \
              bookcast_closes_total bookcast_http_requests_total bookcast_subscriptions; do
    grep -q "^$family" "$WORK/metrics.txt" || { echo "[promtool] $family missing from /metrics" >&2; exit 1; }
done
promtool check metrics <"$WORK/metrics.txt"
echo "[promtool] /metrics passes promtool check metrics ($(grep -c '^# HELP' "$WORK/metrics.txt") families)"
