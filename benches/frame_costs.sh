#!/usr/bin/env bash
# What one delivered frame costs the server: CPU, syscalls, context switches, thread wakeups,
# runtime unparks (eventfd writes), futex calls, socket writes, and hand-offs from a shard's
# direct write to a connection's task.
#
#   benches/frame_costs.sh                       # the release build, 1000 clients on <sym>@depth@0ms
#   benches/frame_costs.sh path/to/old/bookcast  # another build, e.g. an older commit's
#   CLIENTS=3000 STREAM=@trade benches/frame_costs.sh
#
# Starts the server on loopback, loads it with bookcast-load for 10 s, and counts over a 5 s
# window after a 3 s warm-up: the kernel's numbers with `perf stat -p` (Debian's linux-perf;
# installed here if missing and run as root), frames and writes from the server's /metrics.
# Every process started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RELEASE="${CARGO_TARGET_DIR:-$ROOT/target}/release"
SERVER=${1:-$RELEASE/bookcast}
LOAD=$RELEASE/bookcast-load
CLIENTS=${CLIENTS:-1000}
STREAM=${STREAM:-@depth@0ms}
PORT=${PORT:-19720}

log() { printf '[frame_costs] %s\n' "$*" >&2; }
[[ -x "$SERVER" && -x "$LOAD" ]] || {
  log "building release binaries"
  (cd "$ROOT" && cargo build --release --workspace --locked)
}
if ! command -v perf >/dev/null; then
  [[ $(id -u) == 0 ]] || { log "perf is missing: apt-get install linux-perf"; exit 1; }
  log "installing Debian's linux-perf"
  apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null
fi
ulimit -n "$(ulimit -Hn)"

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
OUT=$(mktemp -d)

"$SERVER" --listen "127.0.0.1:$PORT" --max-connection-attempts-per-ip 0 >"$OUT/server.log" 2>&1 &
PIDS+=($!)
SERVER_PID=$!
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$PORT/api/v3/ping" >/dev/null && break
  sleep 0.1
done
"$LOAD" --url "ws://127.0.0.1:$PORT" --clients "$CLIENTS" --duration 10s \
  --streams "<sym>$STREAM" >"$OUT/load.txt" 2>&1 &
PIDS+=($!)
sleep 3

metric() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v k="$1" '$1 == k { print $2 }'; }
frames0=$(metric bookcast_frames_delivered_total)
writes0=$(metric bookcast_write_syscalls_total)
handoffs0=$(metric bookcast_write_handoffs_total)
perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter,sched:sched_wakeup \
  -e syscalls:sys_enter_write,syscalls:sys_enter_futex -p "$SERVER_PID" -- sleep 5 \
  2>"$OUT/perf.csv"
frames1=$(metric bookcast_frames_delivered_total)
writes1=$(metric bookcast_write_syscalls_total)
handoffs1=$(metric bookcast_write_handoffs_total)

python3 - "$OUT/perf.csv" "$frames0" "$frames1" "$writes0" "$writes1" \
  "${handoffs0:-0}" "${handoffs1:-0}" "$CLIENTS" "$STREAM" <<'PY'
import sys
path, f0, f1, w0, w1, h0, h1, clients, stream = sys.argv[1:]
frames = float(f1) - float(f0)
if frames <= 0:
    sys.exit("no frames delivered in the window")
counts = {}
for line in open(path):
    parts = line.strip().split(",")
    if len(parts) > 3 and parts[0] and parts[0][0].isdigit():
        counts[parts[2]] = float(parts[0])
per = lambda key: counts.get(key, 0.0) / frames
print(f"{clients} clients on <sym>{stream}, {frames:.0f} frames in 5 s; per delivered frame:")
print(f"  CPU                     {per('task-clock') * 1000:.2f} µs")
print(f"  syscalls                {per('raw_syscalls:sys_enter'):.3f}")
print(f"  socket writes           {(float(w1) - float(w0)) / frames:.3f}")
print(f"  context switches        {per('context-switches'):.3f}")
print(f"  thread wakeups          {per('sched:sched_wakeup'):.3f}")
print(f"  runtime unparks         {per('syscalls:sys_enter_write'):.3f}  (eventfd writes)")
print(f"  futex calls             {per('syscalls:sys_enter_futex'):.3f}")
print(f"  hand-offs to a task     {(float(h1) - float(h0)) / frames:.4f}")
PY
