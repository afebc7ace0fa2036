#!/usr/bin/env bash
# Checks bookcast's /metrics exposition with Prometheus' own linter (`promtool check metrics`),
# after some real traffic: every series is registered at startup, but the lint should see
# non-zero samples too, and bookcast_http_requests_total appears only with a request. Installs
# Debian's prometheus package (which ships promtool) when it is missing and this runs as root.
set -euo pipefail
CHECK=promtool
source "$(dirname "$0")/lib.sh"

ensure_prometheus
build_release
PORT="$(free_port)"
start_bookcast "$PORT"

# Traffic that touches every metric family: streams of several kinds, a slow client, REST
# errors, a refused upgrade.
"$BIN/bookcast-load" --url "ws://127.0.0.1:$PORT" --clients 50 --duration 2s \
    --streams '<sym>@depth@0ms,<sym>@trade,<sym>@kline_1s' --slow 2 >/dev/null
curl -s "http://127.0.0.1:$PORT/api/v3/depth?symbol=NOPE" >/dev/null
curl -s "http://127.0.0.1:$PORT/ws/btcusdt@trade" >/dev/null
curl -sf "http://127.0.0.1:$PORT/metrics" >"$WORK/metrics.txt"

for family in bookcast_connections_open bookcast_frames_delivered_total bookcast_publish_to_socket_seconds_bucket \
              bookcast_closes_total bookcast_http_requests_total bookcast_subscriptions; do
    grep -q "^$family" "$WORK/metrics.txt" || { say "$family missing from /metrics" >&2; exit 1; }
done
promtool check metrics <"$WORK/metrics.txt"
say "/metrics passes promtool check metrics ($(grep -c '^# HELP' "$WORK/metrics.txt") families)"
