#!/usr/bin/env bash
# Reconnect storm: a cluster gateway restarts under CLIENTS clients, each following one symbol's
# diff stream (<sym>STREAM, the default feed's symbols round-robin), and every client reconnects
# at once. Two ways to get a correct book back, one run each:
#   rest    the Binance way: reconnect, buffer diffs, fetch /api/v3/depth?limit=5000, drop what
#           it holds, bridge (bookcast-load --rest-book; the first book is built the same way);
#   resume  reconnect with resume=<stream>:<last u>: one catch-up diff, then live diffs
#           (bookcast-load --snapshot --resume; the first book comes from snapshot=true).
#
#   benches/storm.sh                      # CLIENTS=1000, STREAM=@depth@100ms, WINDOW=8
#   SKIP_BUILD=1 MODES=resume benches/storm.sh
#
# Each run: nats-server (JetStream, temporary store), `bookcast engine` and one `bookcast
# gateway` started with --rest-weight-limit 0 (no REST weight limit: 1,000 snapshots at weight
# 250 would be 429'd by the default 6,000 per minute and IP) and --max-connection-attempts-per-ip
# 0. bookcast-load connects its clients (--reconnect-on-close, retrying every 20 ms) and after
# WARMUP seconds the script measures the gateway for WINDOW seconds in steady state, restarts
# it (SIGTERM: serverShutdown and close 1001 to every client; a new gateway on the same port as
# soon as the old one has exited), and measures the new gateway for WINDOW seconds from its
# start. Measured:
#   - gateway CPU: utime+stime of the gateway process (/proc/PID/stat), over each window; the
#     storm window starts with the new process, so it includes the gateway's own restore
#     (printed apart: CPU when it first answered /api/v3/ping);
#   - gateway bytes sent: its own socket counter bookcast_bytes_delivered_total (/metrics: bytes
#     written to WebSocket subscriber sockets, frame headers included) over the same windows,
#     plus the REST responses the clients fetched to recover, as bookcast-load counts them
#     (head and body: what the gateway sent for them). /proc/PID/io's wchar is no use here: the
#     gateway's socket writes bypass it (it moved 57 KB while the gateway delivered 944 KB);
#     system-wide counters would include the other processes on loopback;
#   - recovery per client (bookcast-load): from its connection closing to its book being live
#     again, p50/p99/max, and from the first close to the last client live ("all").
# At the end every client compares its book with REST (mismatches fail bookcast-load).
# Prints one markdown table. Loopback only; every wait is bounded; everything started here is
# stopped on exit.
#
# Environment: CLIENTS (1000), STREAM (@depth@100ms), MODES ("rest resume"), WARMUP (6),
# WINDOW (8), PORT_BASE (19760), OUT (/tmp/bookcast-storm), SKIP_BUILD=1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
CLIENTS=${CLIENTS:-1000}
STREAM=${STREAM:-@depth@100ms}
MODES=${MODES:-rest resume}
WARMUP=${WARMUP:-6}
WINDOW=${WINDOW:-8}
PORT_BASE=${PORT_BASE:-19760}
OUT=${OUT:-/tmp/bookcast-storm}
log() { printf '[storm] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ "$CLIENTS" =~ ^[1-9][0-9]*$ ]] || die "bad CLIENTS '$CLIENTS'"
[[ "$WARMUP" =~ ^[0-9]+$ && "$WINDOW" =~ ^[1-9][0-9]*$ ]] || die "WARMUP and WINDOW are whole seconds"
[[ "$STREAM" =~ ^@[A-Za-z0-9_@]+$ ]] || die "STREAM must look like @depth@100ms"
for m in $MODES; do [[ "$m" == rest || "$m" == resume ]] || die "unknown mode '$m'"; done
command -v nats-server >/dev/null || die "nats-server is missing: apt-get install nats-server"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  log "building release binaries"
  (cd "$ROOT" && cargo build --release -p bookcast -p bookcast-load --locked >&2)
fi
ulimit -n "$(ulimit -Hn)"
rm -rf "$OUT" && mkdir -p "$OUT"
TCK=$(getconf CLK_TCK)

PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
trap stop_all EXIT

NATS_PORT=$PORT_BASE
ENGINE_PORT=$((PORT_BASE + 1))
GW_PORT=$((PORT_BASE + 2))

now_ms() { date +%s%3N; }

ping_ok() { curl -sf -m 1 "http://127.0.0.1:$1/api/v3/ping" >/dev/null; }

wait_ping() {
  for _ in $(seq 1000); do ping_ok "$1" && return 0; sleep 0.01; done
  die "no answer on port $1"
}

start_nats() {
  rm -rf "$OUT/nats" && mkdir -p "$OUT/nats"
  nats-server -js -sd "$OUT/nats" -a 127.0.0.1 -p "$NATS_PORT" >"$OUT/nats.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && return 0
    sleep 0.05
  done
  die "nats-server did not start"
}

# start_node NAME PORT ARGS...: bookcast on 127.0.0.1:PORT; its pid in NODE_PID.
start_node() {
  local name=$1 port=$2
  shift 2
  "$BIN/bookcast" "$@" --listen "127.0.0.1:$port" --max-connection-attempts-per-ip 0 \
    >>"$OUT/$name.log" 2>&1 &
  NODE_PID=$!
  PIDS+=("$NODE_PID")
}

# usage PID PORT: CPU ms of PID and WebSocket bytes delivered by the node on PORT, so far.
usage() {
  local stat bytes
  stat=$(cut -d')' -f2- "/proc/$1/stat")
  bytes=$(curl -s -m 2 "http://127.0.0.1:$2/metrics" |
    awk '$1 == "bookcast_bytes_delivered_total" { print $2 }')
  awk -v s="$stat" -v b="${bytes:-0}" -v tck="$TCK" \
    'BEGIN { split(s, f, " "); printf "%d %d\n", (f[12] + f[13]) * 1000 / tck, b }'
}

for mode in $MODES; do
  case "$mode" in
    rest) flags=(--rest-book) ;;
    resume) flags=(--snapshot --resume) ;;
  esac
  log "$mode: nats-server, engine, gateway; $CLIENTS clients on <sym>$STREAM"
  CLUSTER=storm$$$mode
  start_nats
  start_node "$mode-engine" "$ENGINE_PORT" engine --nats "nats://127.0.0.1:$NATS_PORT" --cluster "$CLUSTER"
  wait_ping "$ENGINE_PORT"
  gateway=(gateway --nats "nats://127.0.0.1:$NATS_PORT" --cluster "$CLUSTER" --rest-weight-limit 0)
  start_node "$mode-gateway" "$GW_PORT" "${gateway[@]}"
  GW=$NODE_PID
  wait_ping "$GW_PORT"

  duration=$((WARMUP + 2 * WINDOW + 6))
  timeout $((duration + 60)) "$BIN/bookcast-load" --url "ws://127.0.0.1:$GW_PORT" \
    --clients "$CLIENTS" --streams "<sym>$STREAM" --duration "${duration}s" --grace 20s \
    --reconnect-on-close --reconnect-delay 20ms "${flags[@]}" \
    --json "$OUT/$mode.json" >"$OUT/$mode.txt" 2>&1 &
  LOAD=$!
  PIDS+=("$LOAD")

  sleep "$WARMUP"
  read -r c0 w0 < <(usage "$GW" "$GW_PORT")
  sleep "$WINDOW"
  read -r c1 w1 < <(usage "$GW" "$GW_PORT")

  log "$mode: restarting the gateway"
  t_kill=$(now_ms)
  kill -TERM "$GW"
  for _ in $(seq 300); do kill -0 "$GW" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$GW" 2>/dev/null && die "the gateway did not stop within 15 s"
  wait "$GW" 2>/dev/null || true
  t_exit=$(now_ms)
  start_node "$mode-gateway" "$GW_PORT" "${gateway[@]}"
  GW=$NODE_PID
  t_start=$(now_ms)
  wait_ping "$GW_PORT"
  t_ready=$(now_ms)
  read -r cr wr < <(usage "$GW" "$GW_PORT")
  rest_ms=$((t_start + WINDOW * 1000 - $(now_ms)))
  ((rest_ms > 0)) && sleep "$(awk -v m="$rest_ms" 'BEGIN { printf "%.3f", m / 1000 }')"
  read -r c2 w2 < <(usage "$GW" "$GW_PORT")

  log "$mode: waiting for bookcast-load"
  status=0
  wait "$LOAD" || status=$?
  [[ $status == 0 ]] || log "$mode: bookcast-load exited with $status: $(tail -3 "$OUT/$mode.txt")"
  cat >"$OUT/$mode.gateway" <<EOF
steady_cpu_ms=$((c1 - c0))
steady_ws_bytes=$((w1 - w0))
storm_cpu_ms=$c2
storm_ws_bytes=$w2
ready_cpu_ms=$cr
ready_ws_bytes=$wr
stop_ms=$((t_exit - t_kill))
start_to_ready_ms=$((t_ready - t_start))
load_status=$status
EOF
  stop_all
done

python3 - "$OUT" "$CLIENTS" "$STREAM" "$WINDOW" $MODES <<'PY'
import json, sys
out, clients, stream, window, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
print(f"\n{clients} clients on <sym>{stream}, one gateway restarted under them; "
      f"gateway measured over {window} s windows (steady: before; storm: from the new process's start)\n")
print("| way back | recovered | per client p50 ms | p99 ms | max ms | all live after ms | "
      "gateway CPU ms steady / storm | gateway WebSocket MB steady / storm | REST MB to recover | catch-up diffs | "
      "snapshots instead | missed | book mismatches |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
notes = []
for mode in modes:
    g = dict(line.strip().split("=", 1) for line in open(f"{out}/{mode}.gateway") if "=" in line)
    g = {k: int(v) for k, v in g.items()}
    try:
        r = json.load(open(f"{out}/{mode}.json"))
    except (OSError, ValueError):
        print(f"| {mode} | no report (bookcast-load status {g['load_status']}) |")
        continue
    s = r.get("sync") or {}
    rec = s.get("recovery_us", {})
    ms = lambda us: f"{us / 1000:,.0f}"
    span = max(0.0, s.get("last_live_s", 0) - s.get("first_lost_s", 0)) * 1000
    name = {"rest": "REST snapshot (Binance way)", "resume": "resume="}[mode]
    print(f"| {name} | {s.get('recoveries', 0)}/{clients} | {ms(rec.get('p50', 0))} | {ms(rec.get('p99', 0))} | "
          f"{ms(rec.get('max', 0))} | {span:,.0f} | {g['steady_cpu_ms']:,} / {g['storm_cpu_ms']:,} | "
          f"{g['steady_ws_bytes'] / 1e6:,.1f} / {g['storm_ws_bytes'] / 1e6:,.1f} | {s.get('recovery_rest_bytes', 0) / 1e6:,.1f} | "
          f"{s.get('catchup_diffs', 0):,} | {s.get('resume_snapshots', 0)} | "
          f"{s.get('missed_updates', 0)} | {s.get('book_mismatches', 0)} |")
    notes.append(f"{mode}: old gateway stopped in {g['stop_ms']} ms; new one answered ping "
                 f"{g['start_to_ready_ms']} ms after its start, with {g['ready_cpu_ms']} ms CPU and "
                 f"{g['ready_ws_bytes'] / 1e6:.1f} MB delivered by then; {s.get('rest_snapshots', 0):,} REST "
                 f"snapshots over the run ({s.get('rest_refetches', 0)} refetched); {s.get('reconnect_failures', 0):,} "
                 f"refused reconnect attempts; end-of-run book checks: {s.get('book_checks', 0)} equal, "
                 f"{s.get('book_checks_inconclusive', 0)} inconclusive; bookcast-load status {g['load_status']}")
print()
for n in notes:
    print(f"- {n}")
PY
