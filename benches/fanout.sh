#!/usr/bin/env bash
# Macro fan-out benchmark: bookcast against its own naive baseline and three relay peers
# (Node.js + ws, Go + gorilla/websocket, Bun.serve), each loaded by bookcast-load over loopback
# with N clients on '<sym>$STREAM' (STREAM=@depth@0ms unless set: bookcast's real-time diff,
# every engine update; one stream per client, the symbols round-robin).
#
#   benches/fanout.sh                     # SCALES="1000 3000 5000", DURATION=10s, all five servers
#   SCALES="1000" DURATION=10s benches/fanout.sh
#   SERVERS="bookcast go" benches/fanout.sh
#   SERVERS="bookcast bun" benches/fanout.sh
#   SERVERS="bookcast bookcast-1shard bun" benches/fanout.sh   # bookcast-1shard: --shards 1,
#                                         # one writer thread like Bun's, leaving the other
#                                         # core to the load generator on a 2-core machine
#   STREAM=@depth benches/fanout.sh       # Binance's 1000 ms diff (bursts: every symbol's
#                                         # window closes at once); or @trade, @depth20@100ms, ...
#   benches/fanout.sh --smoke             # (or SMOKE=1) 200 clients, 3 s, @depth@0ms, bookcast +
#                                         # SMOKE_PEER (node); fails unless 0 gaps and the
#                                         # report's keys exist
#
# Environment: SCALES, DURATION, SERVERS, STREAM (@depth@0ms: the stream name after the symbol,
# matching ^@[A-Za-z0-9_@]+$), OUT (/tmp/bookcast-fanout), PORT_BASE (19600), REPEAT (1: runs
# of each server/scale, each its own row), SMOKE_PEER (node), SKIP_BUILD=1.
#
# The peers relay: one upstream bookcast (started once, on PORT_BASE) generates the feed; each
# peer (given --stream STREAM) subscribes to every symbol's <sym>STREAM there through one
# combined connection and fans the raw payloads out to clients at /ws/<sym>STREAM. bookcast and
# bookcast-naive generate the feed themselves. The node and bun peers come from npm ci with
# their lockfiles (bun: the npm package's Linux binary, run directly, so the measured process is
# bun itself, not npm's shim). Measured per run: the server process's CPU seconds (utime+stime
# of all its threads from /proc/PID/stat, over the bookcast-load run) and memory (VmRSS once
# the server is ready, VmHWM after the run). Loopback only; every wait is bounded; every
# process started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS="$ROOT/benches/peers"
# Where cargo puts release binaries (CI sets CARGO_TARGET_DIR to share builds between runs).
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"

SMOKE=${SMOKE:-0}
for a in "$@"; do
  case "$a" in
    --smoke) SMOKE=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -n 's/^# \{0,1\}//p'; exit 0 ;;
    *) echo "fanout.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done
if [[ "$SMOKE" == 1 ]]; then
  SCALES=200
  DURATION=3s
  SERVERS="bookcast ${SMOKE_PEER:-node}"
  STREAM=@depth@0ms
fi
SCALES=${SCALES:-1000 3000 5000}
DURATION=${DURATION:-10s}
SERVERS=${SERVERS:-bookcast bookcast-naive node go bun}
STREAM=${STREAM:-@depth@0ms}
REPEAT=${REPEAT:-1}
[[ "$SMOKE" == 1 ]] && REPEAT=1
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || { echo "fanout.sh: bad REPEAT '$REPEAT'" >&2; exit 2; }
OUT=${OUT:-/tmp/bookcast-fanout}
PORT_BASE=${PORT_BASE:-19600}
UPSTREAM_PORT=$PORT_BASE

log() { printf '[fanout] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for s in $SERVERS; do
  case "$s" in bookcast|bookcast-naive|bookcast-1shard|node|go|bun) ;; *) die "unknown server '$s'" ;; esac
done
for n in $SCALES; do [[ "$n" =~ ^[0-9]+$ ]] || die "bad scale '$n'"; done
# The suffix after '<sym>' (the peers relay <sym>$STREAM for every symbol); the servers refuse
# names they don't know, so a typo fails the first run.
[[ "$STREAM" =~ ^@[A-Za-z0-9_@]+$ ]] || die "STREAM must match ^@[A-Za-z0-9_@]+\$, like @depth@0ms or @depth (got '$STREAM')"
wants() { [[ " $SERVERS " == *" $1 "* ]]; }
relay() { [[ "$1" == node || "$1" == go || "$1" == bun ]]; } # peers fed by the upstream bookcast

# DURATION as whole seconds, for the watchdog around bookcast-load.
duration_s() {
  local d=$1
  case "$d" in
    *ms) echo 1 ;;
    *s) echo "${d%s}" ;;
    *m) echo $(( ${d%m} * 60 )) ;;
    *) echo "$d" ;;
  esac
}
DUR_S=$(duration_s "$DURATION")
[[ "$DUR_S" =~ ^[0-9]+$ ]] || die "DURATION must look like 10s, 2m or 500ms (got '$DURATION')"

# ---------------------------------------------------------------- processes we started
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops one process we started: SIGTERM, then SIGKILL after 10 s.
stop() {
  local pid=$1 i
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local kept=()
  for i in "${PIDS[@]}"; do [[ "$i" == "$pid" ]] || kept+=("$i"); done
  PIDS=("${kept[@]+"${kept[@]}"}")
}

# Waits (at most 15 s) until PORT answers /api/v3/exchangeInfo; fails if PID dies first.
wait_ready() {
  local pid=$1 port=$2 i
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || return 1
    if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port/api/v3/exchangeInfo" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

port_free() { ! curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/" 2>/dev/null; }

cpu_ticks() { # utime + stime of a live process, in clock ticks (fields 14 and 15; comm may hold spaces)
  local stat
  stat=$(<"/proc/$1/stat")
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  echo $(( ${12} + ${13} ))
}
mem_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# ---------------------------------------------------------------- build
command -v curl >/dev/null || die "curl is needed"
command -v python3 >/dev/null || die "python3 is needed (for the summary)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

install_go() {
  if command -v go >/dev/null && [[ -d /usr/share/gocode/src/github.com/gorilla/websocket ]]; then
    return 0
  fi
  [[ "$(id -u)" == 0 || "$(awk '/^Uid:/ { print $2 }' /proc/self/status)" == 0 ]] \
    || die "the go peer needs: apt-get install golang golang-github-gorilla-websocket-dev (run as root, or install them)"
  log "installing Go and gorilla/websocket from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang golang-github-gorilla-websocket-dev >/dev/null
}

# npm ci in DIR, three tries: the registry fetch can fail for a moment (seen once in CI as a bare
# exit status 228 with --silent), and a red CI for that would say nothing about bookcast.
npm_ci() {
  local dir=$1 try
  for try in 1 2 3; do
    (cd "$dir" && npm ci --silent --no-audit --no-fund >/dev/null) && return 0
    log "npm ci in ${dir#"$ROOT"/} failed (try $try of 3)"
    sleep $((try * 5))
  done
  die "npm ci in ${dir#"$ROOT"/} failed three times"
}

# The bun executable npm ci put in benches/peers/bun: bun's postinstall moves the platform
# package's binary (@oven/bun-linux-x64, or -baseline on CPUs without AVX2) over the
# bin/bun.exe placeholder that node_modules/.bin/bun links to; without the postinstall
# (--ignore-scripts) it is still in the platform package. Only a native binary that runs
# qualifies, never a wrapper script, so the PID measured is bun's own.
bun_bin() {
  local c
  for c in "$PEERS/bun/node_modules/bun/bin/bun.exe" "$PEERS"/bun/node_modules/@oven/bun-linux-x64*/bin/bun; do
    [[ -f "$c" && -x "$c" ]] || continue
    c=$(readlink -f "$c")
    [[ "$(head -c 4 "$c")" == $'\177ELF' ]] || continue
    "$c" --version >/dev/null 2>&1 || continue
    echo "$c"
    return 0
  done
  return 1
}

# npm ci in benches/peers/bun unless node_modules already holds a working bun installed from
# this very package.json + package-lock.json (bun's tarball is ~40 MB; node_modules ~100 MB).
install_bun() {
  local dir="$PEERS/bun" stamp
  command -v npm >/dev/null || die "the bun peer needs npm (and node, for bun's postinstall)"
  stamp=$(cat "$dir/package.json" "$dir/package-lock.json" | cksum)
  if [[ -f "$dir/node_modules/.bookcast-stamp" && "$(<"$dir/node_modules/.bookcast-stamp")" == "$stamp" ]] \
    && bun_bin >/dev/null; then
    return 0
  fi
  log "npm ci (benches/peers/bun)"
  npm_ci "$dir"
  bun_bin >/dev/null || die "npm ci in benches/peers/bun left no runnable bun binary"
  echo "$stamp" >"$dir/node_modules/.bookcast-stamp"
}

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  log "cargo build --release --workspace"
  (cd "$ROOT" && cargo build --release --workspace --quiet)
  if wants node; then
    command -v npm >/dev/null || die "the node peer needs node and npm"
    log "npm ci (benches/peers/node)"
    npm_ci "$PEERS/node"
  fi
  if wants go; then
    install_go
    log "go build (benches/peers/go, GOPATH mode against Debian's gorilla/websocket)"
    (cd "$PEERS/go" && GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS='' GOPROXY=off \
      go build -o peer-go main.go)
  fi
  if wants bun; then
    install_bun
  fi
fi
[[ -x "$BIN/bookcast" && -x "$BIN/bookcast-load" ]] || die "$BIN/bookcast{,-load} missing"
BUN_BIN=""
if wants bun; then
  BUN_BIN=$(bun_bin) || die "no runnable bun in benches/peers/bun/node_modules (run without SKIP_BUILD=1)"
  log "bun $("$BUN_BIN" --version) ($BUN_BIN)"
fi

mkdir -p "$OUT/runs"
rm -f "$OUT"/runs/*
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- servers
UPSTREAM_PID=""
start_upstream() {
  [[ -n "$UPSTREAM_PID" ]] && return 0
  port_free "$UPSTREAM_PORT" || die "port $UPSTREAM_PORT is in use (set PORT_BASE)"
  "$BIN/bookcast" --listen "127.0.0.1:$UPSTREAM_PORT" >"$OUT/runs/upstream.log" 2>&1 &
  UPSTREAM_PID=$!
  PIDS+=("$UPSTREAM_PID")
  wait_ready "$UPSTREAM_PID" "$UPSTREAM_PORT" || die "upstream bookcast did not start (see $OUT/runs/upstream.log)"
}

# Starts server $1 on port $2, logging to $3; sets SERVER_PID.
start_server() {
  local name=$1 port=$2 logf=$3
  port_free "$port" || die "port $port is in use (set PORT_BASE)"
  case "$name" in
    bookcast | bookcast-naive | bookcast-1shard)
      local extra=()
      [[ "$name" == bookcast-naive ]] && extra=(--naive-fanout)
      [[ "$name" == bookcast-1shard ]] && extra=(--shards 1)
      "$BIN/bookcast" --listen "127.0.0.1:$port" --max-connection-attempts-per-ip 0 \
        --shutdown-timeout 2s "${extra[@]+"${extra[@]}"}" >"$logf" 2>&1 &
      ;;
    node)
      start_upstream
      node "$PEERS/node/server.js" --listen "127.0.0.1:$port" \
        --upstream "127.0.0.1:$UPSTREAM_PORT" --stream "$STREAM" >"$logf" 2>&1 &
      ;;
    go)
      start_upstream
      "$PEERS/go/peer-go" -listen "127.0.0.1:$port" \
        -upstream "127.0.0.1:$UPSTREAM_PORT" -stream "$STREAM" >"$logf" 2>&1 &
      ;;
    bun)
      start_upstream
      # No .env files or auto-install from wherever this runs: the peer needs neither.
      "$BUN_BIN" --no-env-file --no-install "$PEERS/bun/server.js" --listen "127.0.0.1:$port" \
        --upstream "127.0.0.1:$UPSTREAM_PORT" --stream "$STREAM" >"$logf" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  wait_ready "$SERVER_PID" "$port" || die "$name did not start (see $logf)"
  if [[ "$name" == bun && "$(readlink "/proc/$SERVER_PID/exe")" != "$BUN_BIN" ]]; then
    die "the bun PID $SERVER_PID is not $BUN_BIN; its CPU and memory would be another process's"
  fi
}

port_of() {
  case "$1" in
    bookcast) echo $((PORT_BASE + 1)) ;;
    bookcast-naive) echo $((PORT_BASE + 2)) ;;
    bookcast-1shard) echo $((PORT_BASE + 6)) ;;
    node) echo $((PORT_BASE + 3)) ;;
    go) echo $((PORT_BASE + 4)) ;;
    bun) echo $((PORT_BASE + 5)) ;;
  esac
}

# ---------------------------------------------------------------- runs
for n in $SCALES; do
 for rep in $(seq 1 "$REPEAT"); do
  for name in $SERVERS; do
    port=$(port_of "$name")
    run="$OUT/runs/$name-$n-$rep"
    log "$name, $n clients on <sym>$STREAM, $DURATION (run $rep of $REPEAT)"
    start_server "$name" "$port" "$run.server.log"
    sleep 1 # let start-up allocations settle before the baseline
    rss0=$(mem_kib "$SERVER_PID" VmRSS)
    cpu0=$(cpu_ticks "$SERVER_PID")
    up0=0
    [[ -n "$UPSTREAM_PID" ]] && up0=$(cpu_ticks "$UPSTREAM_PID")
    # Ramp (2000/s) + duration + grace (5 s) + slack; bookcast-load stops by itself well before.
    limit=$((DUR_S + n / 500 + 60))
    set +e
    timeout --kill-after=5 "$limit" "$BIN/bookcast-load" --url "ws://127.0.0.1:$port" \
      --clients "$n" --streams "<sym>$STREAM" --duration "$DURATION" \
      --per-source-address 2500 --json "$run.json" >"$run.load.txt" 2>&1
    rc=$?
    set -e
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      die "$name exited during the run (see $run.server.log)"
    fi
    cpu1=$(cpu_ticks "$SERVER_PID")
    hwm=$(mem_kib "$SERVER_PID" VmHWM)
    rss1=$(mem_kib "$SERVER_PID" VmRSS)
    up1=0
    [[ -n "$UPSTREAM_PID" ]] && up1=$(cpu_ticks "$UPSTREAM_PID")
    relay "$name" || up1=$up0
    stop "$SERVER_PID"
    [[ $rc == 0 && -s "$run.json" ]] || die "bookcast-load failed for $name/$n (exit $rc, see $run.load.txt)"
    cat >"$run.meta.json" <<EOF
{"server": "$name", "clients": $n, "cpu_s": $(awk -v a="$cpu0" -v b="$cpu1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }'),
 "upstream_cpu_s": $(awk -v a="$up0" -v b="$up1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }'),
 "rss_before_kib": $rss0, "rss_peak_kib": $hwm, "rss_after_kib": $rss1}
EOF
    grep -E '^(events|gaps|latency) ' "$run.load.txt" | sed 's/^/    /' >&2 || true
  done
 done
done
[[ -n "$UPSTREAM_PID" ]] && stop "$UPSTREAM_PID"

# ---------------------------------------------------------------- summary
OUT="$OUT" SERVERS="$SERVERS" SCALES="$SCALES" DURATION="$DURATION" STREAM="$STREAM" SMOKE="$SMOKE" \
  REPEAT="$REPEAT" python3 - <<'PY'
import json, os, sys

out = os.environ["OUT"]
rows, problems = [], []
required = ["clients", "connected", "events", "events_per_s", "gaps", "latency_us", "closes"]
runs = [(n, name, rep) for n in os.environ["SCALES"].split()
        for name in os.environ["SERVERS"].split()
        for rep in range(1, int(os.environ["REPEAT"]) + 1)]
for n, name, rep in runs:
    base = f"{out}/runs/{name}-{n}-{rep}"
    report = json.load(open(base + ".json"))
    meta = json.load(open(base + ".meta.json"))
    missing = [k for k in required if k not in report]
    missing += [f"latency_us.{k}" for k in ("p50", "p99", "p999") if k not in report.get("latency_us", {})]
    if missing:
        problems.append(f"{name}/{n}: report lacks {', '.join(missing)}")
        continue
    lat = report["latency_us"]
    events = report["events"]
    rows.append({
        "server": name,
        "clients": int(n),
        "run": rep,
        "connected": report["connected"],
        "events_per_s": round(report["events_per_s"]),
        "events": events,
        "p50_us": lat["p50"], "p99_us": lat["p99"], "p999_us": lat["p999"],
        "gaps": report["gaps"],
        "closes": report["closes"],
        "cpu_s": meta["cpu_s"],
        "cpu_s_per_m_events": round(meta["cpu_s"] / (events / 1e6), 2) if events else None,
        "upstream_cpu_s": meta["upstream_cpu_s"],
        "rss_before_kib": meta["rss_before_kib"],
        "rss_peak_kib": meta["rss_peak_kib"],
        # per connection that was actually open at the peak (a saturated server may not
        # have accepted them all)
        "rss_kib_per_conn": round((meta["rss_peak_kib"] - meta["rss_before_kib"])
                                  / max(report["connected"], 1), 1),
    })
    if report["gaps"] != 0:
        problems.append(f"{name}/{n}: {report['gaps']} gaps")
    if report["connected"] != int(n):
        problems.append(f"{name}/{n}: {report['connected']} of {n} clients connected")
    if events == 0:
        problems.append(f"{name}/{n}: no events delivered")

cols = [("server", "server"), ("clients", "clients")] + \
    ([("run", "run")] if int(os.environ["REPEAT"]) > 1 else []) + [("connected", "connected"),
        ("events_per_s", "events/s"),
        ("p50_us", "p50 µs"), ("p99_us", "p99 µs"), ("p999_us", "p99.9 µs"), ("gaps", "gaps"),
        ("cpu_s_per_m_events", "CPU s / M events"), ("rss_kib_per_conn", "RSS KiB / conn"),
        ("cpu_s", "CPU s"), ("upstream_cpu_s", "upstream CPU s")]
cells = [[h for _, h in cols]] + [[str(r[k]) for k, _ in cols] for r in rows]
widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
lines = ["  ".join(c[i].rjust(widths[i]) if i else c[i].ljust(widths[i]) for i in range(len(cols)))
         for c in cells]
lines.insert(1, "  ".join("-" * w for w in widths))
md = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
md += ["| " + " | ".join(str(r[k]) for k, _ in cols) + " |" for r in rows]
stream = os.environ["STREAM"]
result = {"stream": stream, "streams": f"<sym>{stream}", "duration": os.environ["DURATION"],
          "rows": rows, "problems": problems}
json.dump(result, open(f"{out}/results.json", "w"), indent=2)
title = f"bookcast fan-out, `<sym>{stream}`, {os.environ['DURATION']} per run"
open(f"{out}/results.md", "w").write(
    f"{title} (CPU and RSS: the server process; upstream CPU: the relays' feed, not counted in "
    "theirs)\n\n" + "\n".join(md) + "\n")
print(title.replace("`", "") + "\n")
print("\n".join(lines))
print(f"\n(written to {out}/results.json and {out}/results.md)")
if problems:
    print("\n".join("PROBLEM: " + p for p in problems), file=sys.stderr)
    sys.exit(1 if os.environ["SMOKE"] == "1" else 0)
PY
