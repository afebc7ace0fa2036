#!/usr/bin/env bash
# Transport comparison (issue 13; SPEC.md "Other transports for the same streams"): the seed's
# claims measured on one server. The same N clients, each following one symbol's
# <sym>@depth@100ms and <sym>@trade (the symbols round-robin over the default feed), over short
# polling every POLL_INTERVAL (3 s: the seed's Slack setup), long polling, SSE and WebSocket,
# one transport after the other, DURATION each, against ONE release bookcast started once for
# all of them (so every transport sees the same warmed-up engine and feed).
#
#   benches/transports.sh                  # CLIENTS=1000, DURATION=20s, poll longpoll sse ws
#   CLIENTS=2000 DURATION=30s benches/transports.sh
#   TRANSPORTS="longpoll ws" benches/transports.sh
#   benches/transports.sh --smoke          # (or SMOKE=1) 50 clients, 3 s each, POLL_INTERVAL=1s
#                                          # (a 3 s poll would answer most clients once in 3 s);
#                                          # fails on any gap, connect failure, HTTP error,
#                                          # transport without events or missing report field
#
# Environment: CLIENTS, DURATION, TRANSPORTS, POLL_INTERVAL, IDLE (5s: the server alone, for
# its own CPU floor), OUT (/tmp/bookcast-transports), PORT (19650), SKIP_BUILD=1.
#
# Measured per transport, over the bookcast-load run (ramp, DURATION, stop):
# - server CPU: utime+stime of the bookcast process (/proc/PID/stat), per delivered event,
#   events as the server counts them (bookcast_transport_events_total{transport=..}, for ws
#   bookcast_frames_delivered_total); also as a share of one core, and above the idle floor
#   (the engine steps and derives every stream whether anyone listens or not);
# - bytes per event on the wire: what the clients' sockets read, heads and framing included
#   (over loopback, exactly what the server's kernel sent), next to the server's own count
#   (bookcast_transport_bytes_total / bookcast_bytes_delivered_total) and the framing alone
#   (wire bytes minus the event payloads), of which HTTP response heads; and the bytes the
#   clients sent (requests);
# - wire kB/s read by all clients: the same users' traffic, whatever an "event" is (a short
#   poll gets one catch-up diff merging every update since its cursor, where WebSocket gets
#   one diff per 100 ms window, so per-event numbers compare unlike events);
# - requests per second, p50/p99 latency (receive time minus the event's E: for polls, how
#   stale each event was when it arrived), gaps and HTTP errors, from bookcast-load's report.
# Loopback only; every wait is bounded; every process started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"

SMOKE=${SMOKE:-0}
for a in "$@"; do
  case "$a" in
    --smoke) SMOKE=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -n 's/^# \{0,1\}//p'; exit 0 ;;
    *) echo "transports.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done
if [[ "$SMOKE" == 1 ]]; then
  CLIENTS=50
  DURATION=3s
  POLL_INTERVAL=1s
  IDLE=2s
fi
CLIENTS=${CLIENTS:-1000}
DURATION=${DURATION:-20s}
TRANSPORTS=${TRANSPORTS:-poll longpoll sse ws}
POLL_INTERVAL=${POLL_INTERVAL:-3s}
IDLE=${IDLE:-5s}
OUT=${OUT:-/tmp/bookcast-transports}
PORT=${PORT:-19650}
STREAMS='<sym>@depth@100ms,<sym>@trade'

log() { printf '[transports] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ "$CLIENTS" =~ ^[1-9][0-9]*$ ]] || die "bad CLIENTS '$CLIENTS'"
for t in $TRANSPORTS; do
  case "$t" in poll|longpoll|sse|ws) ;; *) die "unknown transport '$t' (poll, longpoll, sse, ws)" ;; esac
done
seconds() { # 20s, 2m, 500ms -> whole seconds (at least 1)
  case "$1" in
    *ms) echo 1 ;;
    *s) echo "${1%s}" ;;
    *m) echo $(( ${1%m} * 60 )) ;;
    *) echo "$1" ;;
  esac
}
DUR_S=$(seconds "$DURATION")
IDLE_S=$(seconds "$IDLE")
[[ "$DUR_S" =~ ^[0-9]+$ && "$IDLE_S" =~ ^[0-9]+$ ]] || die "DURATION and IDLE look like 20s or 2m"

SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cpu_ticks() { # utime + stime in clock ticks (fields 14 and 15; comm may hold spaces)
  local stat
  stat=$(<"/proc/$1/stat")
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  echo $(( ${12} + ${13} ))
}
metrics() { curl -fsS --max-time 5 "http://127.0.0.1:$PORT/metrics" >"$1"; }

command -v curl >/dev/null || die "curl is needed"
command -v python3 >/dev/null || die "python3 is needed (for the summary)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  log "cargo build --release -p bookcast -p bookcast-load"
  (cd "$ROOT" && cargo build --release -p bookcast -p bookcast-load --quiet)
fi
[[ -x "$BIN/bookcast" && -x "$BIN/bookcast-load" ]] || die "$BIN/bookcast{,-load} missing"

mkdir -p "$OUT/runs"
rm -f "$OUT"/runs/*
CLK_TCK=$(getconf CLK_TCK)

# One server for every transport. No per-IP attempt limit: a rerun within 5 minutes would
# otherwise meet a default server's 300 attempts per address (SSE counts like WebSocket).
curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/" 2>/dev/null && die "port $PORT is in use (set PORT)"
"$BIN/bookcast" --listen "127.0.0.1:$PORT" --max-connection-attempts-per-ip 0 \
  --shutdown-timeout 2s >"$OUT/runs/server.log" 2>&1 &
SERVER_PID=$!
for ((i = 0; i < 150; i++)); do
  kill -0 "$SERVER_PID" 2>/dev/null || die "bookcast exited (see $OUT/runs/server.log)"
  curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/api/v3/exchangeInfo" 2>/dev/null && break
  sleep 0.1
done
curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/api/v3/exchangeInfo" \
  || die "bookcast did not start (see $OUT/runs/server.log)"

# The server alone: the engine's CPU floor.
sleep 1
cpu0=$(cpu_ticks "$SERVER_PID")
sleep "$IDLE_S"
cpu1=$(cpu_ticks "$SERVER_PID")
echo "{\"idle_cpu_s\": $(awk -v a="$cpu0" -v b="$cpu1" -v t="$CLK_TCK" 'BEGIN { printf "%.3f", (b - a) / t }'), \"idle_s\": $IDLE_S}" >"$OUT/runs/idle.json"

# Whether this server serves SSE yet (404 before it landed): probe one stream for a second.
symbol=$(curl -fsS --max-time 5 "http://127.0.0.1:$PORT/api/v3/exchangeInfo" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["symbols"][0]["symbol"].lower())')
sse_status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 \
  "http://127.0.0.1:$PORT/sse?streams=$symbol@trade" 2>/dev/null || true)

RAN=""
for t in $TRANSPORTS; do
  if [[ "$t" == sse && "$sse_status" != 200 ]]; then
    log "sse: this bookcast answers /sse with '$sse_status', not 200 (not landed yet?): skipped"
    echo '{"skipped": "the server does not serve /sse (HTTP '"$sse_status"')"}' >"$OUT/runs/sse.meta.json"
    continue
  fi
  arg=$t
  [[ "$t" == poll ]] && arg="poll=$POLL_INTERVAL"
  run="$OUT/runs/$t"
  log "$t: $CLIENTS clients on $STREAMS, $DURATION"
  metrics "$run.metrics.before"
  cpu0=$(cpu_ticks "$SERVER_PID")
  start_ns=$(date +%s%N)
  set +e
  timeout --kill-after=5 $((DUR_S + CLIENTS / 500 + 60)) "$BIN/bookcast-load" \
    --url "ws://127.0.0.1:$PORT" --clients "$CLIENTS" --streams "$STREAMS" \
    --duration "$DURATION" --transport "$arg" --json "$run.json" >"$run.load.txt" 2>&1
  rc=$?
  set -e
  end_ns=$(date +%s%N)
  cpu1=$(cpu_ticks "$SERVER_PID")
  kill -0 "$SERVER_PID" 2>/dev/null || die "bookcast exited during $t (see $OUT/runs/server.log)"
  metrics "$run.metrics.after"
  [[ $rc == 0 && -s "$run.json" ]] || die "bookcast-load failed for $t (exit $rc, see $run.load.txt)"
  cat >"$run.meta.json" <<EOF
{"transport": "$t", "arg": "$arg", "cpu_s": $(awk -v a="$cpu0" -v b="$cpu1" -v t="$CLK_TCK" 'BEGIN { printf "%.3f", (b - a) / t }'),
 "wall_s": $(awk -v a="$start_ns" -v b="$end_ns" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')}
EOF
  grep -E '^(events|gaps|latency|transport|wire) ' "$run.load.txt" | sed 's/^/    /' >&2 || true
  RAN="$RAN $t"
  sleep 2 # let the last connections close before the next transport's baseline
done

OUT="$OUT" RAN="$RAN" TRANSPORTS="$TRANSPORTS" CLIENTS="$CLIENTS" DURATION="$DURATION" \
  POLL_INTERVAL="$POLL_INTERVAL" SMOKE="$SMOKE" STREAMS="$STREAMS" python3 - <<'PY'
import json, os, re, sys

out = os.environ["OUT"]
smoke = os.environ["SMOKE"] == "1"
idle = json.load(open(f"{out}/runs/idle.json"))
idle_cores = idle["idle_cpu_s"] / max(idle["idle_s"], 1e-9)

def scrape(path):
    values = {}
    for line in open(path):
        m = re.match(r'^(bookcast_[a-z_]+)(\{transport="([a-z]+)"\})?\s+([0-9.e+-]+)$', line.strip())
        if m:
            values[(m.group(1), m.group(3))] = float(m.group(4))
    return values

def server_counts(t, before, after):
    d = lambda name, label=None: after.get((name, label), 0) - before.get((name, label), 0)
    if t == "ws":
        return d("bookcast_frames_delivered_total"), d("bookcast_bytes_delivered_total")
    return d("bookcast_transport_events_total", t), d("bookcast_transport_bytes_total", t)

rows, problems, skipped = [], [], []
for t in os.environ["TRANSPORTS"].split():
    if t not in os.environ["RAN"].split():
        skipped.append(t)
        continue
    base = f"{out}/runs/{t}"
    report = json.load(open(base + ".json"))
    meta = json.load(open(base + ".meta.json"))
    tr = report.get("transport")
    if not tr or "latency_us" not in report:
        problems.append(f"{t}: report lacks transport or latency_us")
        continue
    events_server, bytes_server = server_counts(t, scrape(base + ".metrics.before"),
                                                scrape(base + ".metrics.after"))
    events = report["events"]
    per = lambda x, n=events: round(x / n, 1) if n else None
    cpu_us = meta["cpu_s"] * 1e6
    cpu_above_idle_us = max(meta["cpu_s"] - idle_cores * meta["wall_s"], 0) * 1e6
    name = t if t != "poll" else f"poll every {os.environ['POLL_INTERVAL']}"
    rows.append({
        "transport": name,
        "clients": report["clients"],
        "connected": report["connected"],
        "events": events,
        "events_server": int(events_server),
        "events_per_s": round(report["events_per_s"]),
        "requests_per_s": round(tr["requests_per_s"], 1),
        "events_per_request": round(events / tr["requests"], 1) if tr["requests"] else None,
        "cpu_s": meta["cpu_s"],
        "cpu_share": round(meta["cpu_s"] / meta["wall_s"] * 100, 1),
        "cpu_above_idle_s": cpu_above_idle_us / 1e6,
        "wire_kb_per_s": round(tr["wire_bytes_received"] / meta["wall_s"] / 1e3),
        "cpu_us_per_event": round(cpu_us / events_server, 2) if events_server else None,
        "cpu_us_per_event_above_idle": round(cpu_above_idle_us / events_server, 2) if events_server else None,
        "wire_bytes_per_event": per(tr["wire_bytes_received"]),
        "server_bytes_per_event": round(bytes_server / events_server, 1) if events_server else None,
        "payload_bytes_per_event": per(report["bytes"]),
        "framing_bytes_per_event": per(tr["wire_bytes_received"] - report["bytes"]),
        "head_bytes_per_event": per(tr["response_head_bytes"]),
        "sent_bytes_per_event": per(tr["wire_bytes_sent"]),
        "p50_ms": round(report["latency_us"]["p50"] / 1e3, 2),
        "p99_ms": round(report["latency_us"]["p99"] / 1e3, 2),
        "gaps": report["gaps"],
        "http_errors": tr["http_errors"],
        "connect_failures": report["connect_failures"],
    })
    if report["gaps"]:
        problems.append(f"{t}: {report['gaps']} gaps")
    if report["connect_failures"]:
        problems.append(f"{t}: {report['connect_failures']} connect failures {report.get('connect_failure_reasons')}")
    if tr["http_errors"]:
        problems.append(f"{t}: HTTP errors {tr['http_errors']}")
    if events == 0 or not events_server:
        problems.append(f"{t}: no events delivered")

ws = next((r for r in rows if r["transport"] == "ws"), None)
for r in rows:
    # Slack's measure: the server's load for the same users, here above the engine's idle floor.
    r["cpu_vs_ws"] = (round(r["cpu_above_idle_s"] / ws["cpu_above_idle_s"], 2)
                      if ws and ws["cpu_above_idle_s"] else None)

cols = [("transport", "transport"), ("connected", "clients"), ("events_per_s", "events/s"),
        ("requests_per_s", "requests/s"), ("events_per_request", "events / request"),
        ("cpu_share", "server CPU %"), ("cpu_vs_ws", "CPU above idle × ws"),
        ("cpu_us_per_event", "CPU µs / event"),
        ("cpu_us_per_event_above_idle", "CPU µs / event above idle"),
        ("wire_bytes_per_event", "wire B / event"), ("server_bytes_per_event", "server B / event"),
        ("framing_bytes_per_event", "framing B / event"), ("head_bytes_per_event", "of it heads B / event"),
        ("sent_bytes_per_event", "sent B / event"), ("wire_kb_per_s", "wire kB/s"),
        ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("gaps", "gaps")]
md = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
md += ["| " + " | ".join("-" if r[k] is None else str(r[k]) for k, _ in cols) + " |" for r in rows]
title = (f"{os.environ['CLIENTS']} clients, each on one symbol's {os.environ['STREAMS'].replace('<sym>', '<s>')}, "
         f"{os.environ['DURATION']} per transport, one bookcast; idle server {idle_cores * 100:.1f}% of a core")
notes = [f"{t}: not run (the server does not serve it)" for t in skipped]
json.dump({"title": title, "idle_cpu_share": idle_cores, "rows": rows, "skipped": skipped,
           "problems": problems}, open(f"{out}/results.json", "w"), indent=2)
open(f"{out}/results.md", "w").write(title + "\n\n" + "\n".join(md) + "\n" +
                                     "".join(f"\n{n}\n" for n in notes))
print(title + "\n")
print("\n".join(md))
for n in notes:
    print("\n" + n)
print(f"\n(written to {out}/results.json and {out}/results.md)")
if problems:
    print("\n".join("PROBLEM: " + p for p in problems), file=sys.stderr)
    sys.exit(1 if smoke else 0)
PY
