#!/usr/bin/env bash
# The cluster measured on one machine: what the NATS hop adds to latency, one gateway against
# two, and how fast the engine can publish.
#
#   benches/cluster.sh                    # CLIENTS=1000, DURATION=10s, STREAM=@depth@0ms
#   CLIENTS=2000 benches/cluster.sh
#
# Starts Debian's nats-server (JetStream, temporary store), then in turn, each loaded by
# bookcast-load with CLIENTS clients on '<sym>STREAM' for DURATION:
#   1. the all-in-one server (no NATS): the baseline;
#   2. one engine + one gateway: the same load on the gateway (latency is measured from the
#      event time the engine stamped, so the difference to 1 is what the NATS hop adds);
#   3. one engine + two gateways: the load split over both (bookcast-load --url A,B).
# Then the engine's publish limit: an engine on a generated feed of STRESS_SYMBOLS symbols at
# 100 updates/s each, its records acknowledged per second against the steps it made.
# Prints one table. Loopback only; every wait is bounded; everything started is stopped on exit.
#
# Environment: CLIENTS (1000), DURATION (10s), STREAM (@depth@0ms), STRESS_SYMBOLS (300),
# PORT_BASE (19700), OUT (/tmp/bookcast-cluster), SKIP_BUILD=1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
CLIENTS=${CLIENTS:-1000}
DURATION=${DURATION:-10s}
STREAM=${STREAM:-@depth@0ms}
STRESS_SYMBOLS=${STRESS_SYMBOLS:-300}
PORT_BASE=${PORT_BASE:-19700}
OUT=${OUT:-/tmp/bookcast-cluster}
log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

command -v nats-server >/dev/null || die "nats-server is missing: apt-get install nats-server"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  log "building release binaries"
  (cd "$ROOT" && cargo build --release --workspace --locked >&2)
fi
ulimit -n "$(ulimit -Hn)"
rm -rf "$OUT" && mkdir -p "$OUT"

PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
trap stop_all EXIT

wait_http() {
  for _ in $(seq 200); do curl -sf "$1" >/dev/null && return 0; sleep 0.05; done
  die "no answer from $1"
}

NATS_PORT=$((PORT_BASE))
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

# role PORT [args...]: starts bookcast in a role on 127.0.0.1:PORT, waits until it answers.
start_node() {
  local name=$1 port=$2
  shift 2
  "$BIN/bookcast" "$@" --listen "127.0.0.1:$port" --max-connection-attempts-per-ip 0 \
    >"$OUT/$name.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$port/api/v3/ping"
}

metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v k="$2" '$1 == k { print $2 }'; }

# load NAME URLS: bookcast-load, JSON report in $OUT/NAME.json.
load() {
  "$BIN/bookcast-load" --url "$2" --clients "$CLIENTS" --duration "$DURATION" \
    --streams "<sym>$STREAM" --json "$OUT/$1.json" >"$OUT/$1.txt" 2>&1 \
    || die "bookcast-load failed ($1): $(tail -3 "$OUT/$1.txt")"
}

row() {
  python3 - "$OUT/$1.json" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latency_us"]
print(f"| {sys.argv[2]} | {r['connected']} | {r['events_per_s']:,.0f} | {l['p50']:,} | {l['p99']:,} | {r['gaps']} |")
PY
}

CLUSTER=bench$$
ENGINE_PORT=$((PORT_BASE + 1))
A_PORT=$((PORT_BASE + 2))
B_PORT=$((PORT_BASE + 3))
ALL_PORT=$((PORT_BASE + 4))

log "1/4 all-in-one, $CLIENTS clients on <sym>$STREAM"
start_node all-in-one "$ALL_PORT"
load all-in-one "ws://127.0.0.1:$ALL_PORT"
stop_all

log "2/4 engine + one gateway"
start_nats
start_node engine "$ENGINE_PORT" engine --nats "nats://127.0.0.1:$NATS_PORT" --cluster "$CLUSTER"
start_node gateway-a "$A_PORT" gateway --nats "nats://127.0.0.1:$NATS_PORT" --cluster "$CLUSTER"
load one-gateway "ws://127.0.0.1:$A_PORT"

log "3/4 engine + two gateways"
start_node gateway-b "$B_PORT" gateway --nats "nats://127.0.0.1:$NATS_PORT" --cluster "$CLUSTER"
load two-gateways "ws://127.0.0.1:$A_PORT,ws://127.0.0.1:$B_PORT"
lag_a=$(metric "$A_PORT" bookcast_cluster_consumer_lag)
gaps_a=$(metric "$A_PORT" bookcast_cluster_gaps_total)
stop_all

log "4/4 the engine's publish limit: $STRESS_SYMBOLS symbols at 100 updates/s"
python3 - "$OUT/stress.toml" "$STRESS_SYMBOLS" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(n):
        base = "S" + "".join(chr(65 + (i // 26 ** k) % 26) for k in range(3))
        f.write(f'[[symbol]]\nsymbol = "{base}USDT"\nbase_asset = "{base}"\nquote_asset = "USDT"\n'
                f'tick_size = "0.01"\nlot_size = "0.00001"\nstart_price = "100.00"\ndepth = 100\n'
                f'rate = 100\nseed = {i + 1}\n\n')
PY
start_nats
start_node engine-stress "$ENGINE_PORT" engine --nats "nats://127.0.0.1:$NATS_PORT" \
  --cluster "${CLUSTER}s" --feed "$OUT/stress.toml"
sleep 2
p0=$(metric "$ENGINE_PORT" bookcast_cluster_records_published_total)
sleep 10
p1=$(metric "$ENGINE_PORT" bookcast_cluster_records_published_total)
stop_all
offered=$((STRESS_SYMBOLS * 100 + 10))

echo
echo "$CLIENTS clients on <sym>$STREAM, $DURATION each (latency: client receive time - the engine's event time)"
echo
echo "| setup | connected | events/s | p50 µs | p99 µs | gaps |"
echo "|---|---|---|---|---|---|"
row all-in-one "all-in-one (no NATS)"
row one-gateway "engine + 1 gateway"
row two-gateways "engine + 2 gateways (split)"
echo
echo "gateway A after the two-gateway run: consumer lag ${lag_a:-?}, gaps ${gaps_a:-?}"
python3 - "$p0" "$p1" "$offered" <<'PY'
import sys
p0, p1, offered = float(sys.argv[1] or 0), float(sys.argv[2] or 0), int(sys.argv[3])
rate = (p1 - p0) / 10
print(f"engine publish: {rate:,.0f} records/s acknowledged with {offered:,} steps+ticks/s offered "
      f"({'keeps up' if rate >= 0.95 * offered else 'behind: the market pauses to match'})")
PY
