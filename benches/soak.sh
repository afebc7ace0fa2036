#!/usr/bin/env bash
# Churn soak: a release bookcast serves HEALTHY steady bookcast-load clients (gap-checked) while
# CHURNERS clients connect, subscribe, take a few diffs and leave, over and over, every way a
# peer leaves (close handshake, FIN without a close frame, reset, and silent until the server's
# heartbeat ends them). Fails unless, once the churn stops and connections settle, the server's
# open descriptors are back at the baseline and its RSS grew less than the bound below, the
# healthy clients saw no gap and no disconnect, and the churners saw no gap and no error.
# Meanwhile benches/hostile.py sends bad HTTP, bad frames and bad JSON in a loop and fails the
# soak if any answer differs from the README's bad-input table.
#
#   benches/soak.sh                  # 3 minutes of churn
#   benches/soak.sh --short          # 20 s (CI)
#   benches/soak.sh --duration 10m
#
# Environment: HEALTHY (200), CHURNERS (200), CHURN_RATE (connects/s; 0, the default: as fast
# as they go), WARMUP (10s), SKIP_BUILD=1. Loopback only; every wait is bounded; every process
# started here is stopped on exit.
set -euo pipefail
CHECK=soak
# shellcheck source=../tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../tests/lib.sh"

DURATION=3m
while [[ $# -gt 0 ]]; do
    case "$1" in
        --short) DURATION=20s ;;
        --duration) DURATION="${2:?--duration needs a value}"; shift ;;
        -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "soak.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
HEALTHY=${HEALTHY:-200}
CHURNERS=${CHURNERS:-200}
CHURN_RATE=${CHURN_RATE:-0}
WARMUP=${WARMUP:-10s}

# Server heartbeat: silent churners are ended 3 s after their last message, so they hold their
# sockets 5 s before checking that the server closed them.
PING=1s
PONG=3s
SILENT_HOLD=5s
MIX="clean=4,drop=3,rst=3,silent=1"
# Descriptors may differ from the baseline by a /metrics request in flight, nothing more.
FD_SLACK=2
# RSS bound: 10% + 8 MiB over the baseline. The baseline is taken after a warm-up churn at the
# same concurrency, so the allocator's arenas already hold the working set of thousands of
# short-lived connections (glibc keeps freed memory in per-thread arenas rather than returning
# it), and what is left to grow is fragmentation, bounded by that working set. Measured here:
# +0.7 MB after 470,000 connections in 3 minutes (32.7 MB at start), so a leak of 25 bytes per
# connection would cross the bound in the 3-minute soak, and of about 250 bytes in --short.
RSS_GROWTH_PCT=10
RSS_GROWTH_KB=$((8 * 1024))
SETTLE_S=60

seconds() { # 20s, 3m, 500ms -> whole seconds (at least 1)
    case "$1" in
        *ms) echo 1 ;;
        *s) echo "${1%s}" ;;
        *m) echo $((${1%m} * 60)) ;;
        *h) echo $((${1%h} * 3600)) ;;
        *) echo "$1" ;;
    esac
}
DUR_S=$(seconds "$DURATION")
WARMUP_S=$(seconds "$WARMUP")
[[ "$DUR_S" =~ ^[0-9]+$ && "$WARMUP_S" =~ ^[0-9]+$ ]] || { echo "soak.sh: durations look like 20s, 3m" >&2; exit 2; }

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    say "building release binaries"
    build_release
fi

PORT=$(free_port)
URL="ws://127.0.0.1:$PORT"
start_bookcast "$PORT" --ping-interval "$PING" --pong-timeout "$PONG"
SERVER=${PIDS[-1]}

metric() { # metric NAME: its value summed over labels (0 if absent)
    curl -sf "http://127.0.0.1:$PORT/metrics" | awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { print s + 0 }'
}
fds() { find "/proc/$SERVER/fd" -mindepth 1 -maxdepth 1 | wc -l; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER/status"; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$SERVER/status"; }

# wait_open N: until exactly N WebSocket connections are open (SETTLE_S at most).
wait_open() {
    local open
    for _ in $(seq 1 $((SETTLE_S * 5))); do
        open=$(metric bookcast_connections_open)
        [[ "$open" == "$1" ]] && return 0
        sleep 0.2
    done
    say "FAIL: $open connections open after ${SETTLE_S}s, expected $1"
    exit 1
}

# The fewest descriptors seen over a second: a /metrics connection of ours may be in flight.
fds_settled() {
    local least=1000000000 n
    for _ in 1 2 3 4 5; do
        n=$(fds)
        ((n < least)) && least=$n
        sleep 0.2
    done
    echo "$least"
}

churn() { # churn DURATION JSON: the churners, bounded by a watchdog
    timeout $(($(seconds "$1") + 60)) "$BIN/bookcast-load" --url "$URL" --clients 0 \
        --churn "$CHURNERS" --churn-rate "$CHURN_RATE" --churn-mix "$MIX" \
        --churn-silent-hold "$SILENT_HOLD" --duration "$1" --grace 10s --json "$2" \
        >"$2.txt" 2>&1 || { cat "$2.txt" >&2; say "FAIL: churner exited non-zero"; exit 1; }
}

# Healthy clients for the whole soak; stopped with SIGTERM once the last sample is taken (their
# own --duration only bounds them if this script dies first).
HEALTHY_LIMIT=$((WARMUP_S + DUR_S + 3 * SETTLE_S + 60))
"$BIN/bookcast-load" --url "$URL" --clients "$HEALTHY" --streams '<sym>@depth@0ms,<sym>@trade' \
    --duration "${HEALTHY_LIMIT}s" --json "$WORK/healthy.json" >"$WORK/healthy.txt" 2>&1 &
LOAD=$!
PIDS+=("$LOAD")
wait_open "$HEALTHY"

say "warm-up: $CHURNERS churners for $WARMUP beside $HEALTHY healthy clients"
churn "$WARMUP" "$WORK/warmup.json"
wait_open "$HEALTHY"
FD_START=$(fds_settled)
RSS_START=$(rss_kb)
say "baseline: $FD_START fds, RSS $RSS_START kB"

say "soak: $CHURNERS churners ($MIX) for $DURATION"
(
    while sleep 10; do
        echo "  $(date +%T) fds $(fds) rss_kb $(rss_kb) open $(metric bookcast_connections_open)"
    done
) &
SAMPLER=$!
PIDS+=("$SAMPLER")
# Hostile input for as long as the churn runs (bounded by its own deadline and a watchdog).
timeout $(($(seconds "$DURATION") + 60)) python3 "$ROOT/benches/hostile.py" "127.0.0.1:$PORT" \
    "$(seconds "$DURATION")" >"$WORK/hostile.json" 2>&1 &
HOSTILE=$!
PIDS+=("$HOSTILE")
churn "$DURATION" "$WORK/churn.json"
kill "$SAMPLER" 2>/dev/null || true
wait "$HOSTILE" || { cat "$WORK/hostile.json" >&2; say "FAIL: a bad input got an answer other than the documented one"; exit 1; }
say "hostile input: $(cat "$WORK/hostile.json")"

wait_open "$HEALTHY"
FD_END=$(fds_settled)
for _ in $(seq 1 $((SETTLE_S * 2))); do
    ((FD_END <= FD_START + FD_SLACK)) && break
    sleep 0.5
    FD_END=$(fds_settled)
done
RSS_END=$(rss_kb)
HWM=$(hwm_kb)

kill -TERM "$LOAD"
for _ in $(seq 1 300); do kill -0 "$LOAD" 2>/dev/null || break; sleep 0.1; done
kill -0 "$LOAD" 2>/dev/null && { say "FAIL: healthy load still running 30 s after SIGTERM"; exit 1; }
wait "$LOAD" || { cat "$WORK/healthy.txt" >&2; say "FAIL: healthy load exited non-zero"; exit 1; }

cat "$WORK/churn.json.txt"
VERDICT=0
python3 - "$WORK/healthy.json" "$WORK/churn.json" "$HEALTHY" <<'EOF' >"$WORK/verdict.txt" || VERDICT=$?
import json, sys
healthy, churn, want = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))["churn"], int(sys.argv[3])
problems = []
if healthy["gaps"]:
    problems.append(f"healthy clients saw {healthy['gaps']} gaps")
if healthy["connected"] != want or healthy["closes"] != {"1000": want}:
    problems.append(f"healthy clients: {healthy['connected']} connected, closes {healthy['closes']}")
if churn["gaps"]:
    problems.append(f"churners saw {churn['gaps']} gaps")
if churn["errors"]:
    problems.append(f"churn errors {churn['errors']}")
if churn["cycles"] == 0:
    problems.append("no churn cycle completed")
print(f"healthy: {healthy['connected']} clients, {healthy['events']} events, {healthy['gaps']} gaps, "
      f"closes {healthy['closes']}, fast p99 {healthy['fast_latency_us']['p99']} µs")
print(f"churn: {churn['cycles']} cycles, {churn['connects']} connects ({churn['connects_per_s']:.0f}/s), "
      f"endings {churn['endings']}, errors {churn['errors']}, gaps {churn['gaps']}")
for p in problems:
    print("FAIL: " + p)
sys.exit(1 if problems else 0)
EOF
sed "s/^/[$CHECK] /" "$WORK/verdict.txt"

RSS_LIMIT=$((RSS_START + RSS_START * RSS_GROWTH_PCT / 100 + RSS_GROWTH_KB))
say "server fds: $FD_START at start, $FD_END at end (slack $FD_SLACK)"
say "server RSS: $RSS_START kB at start, $RSS_END kB at end (limit $RSS_LIMIT kB), peak $HWM kB"
status=$VERDICT
if ((FD_END > FD_START + FD_SLACK)); then
    say "FAIL: descriptors did not return to the baseline"
    status=1
fi
if ((RSS_END > RSS_LIMIT)); then
    say "FAIL: RSS grew past the bound"
    status=1
fi
((status == 0)) && say "ok"
exit "$status"
