#!/usr/bin/env bash
# Checks dashboards/: promtool accepts the Prometheus config and alert rules, and the alerts' unit
# tests (alerts_test.yml) pass; every query of the Grafana dashboard filters on its `instance`
# variable; and every PromQL expression of the dashboard and the alerts parses and returns data
# from a real Prometheus (Debian's) scraping, every second on loopback, an all-in-one bookcast
# and a small cluster (Debian's nats-server with JetStream, one `bookcast engine`, one
# `bookcast gateway`), both under load.
set -euo pipefail
CHECK=dashboards
source "$(dirname "$0")/lib.sh"

ensure_prometheus
ensure_nats
promtool check config "$ROOT/dashboards/prometheus.yml"
promtool check rules "$ROOT/dashboards/alerts.yml"
# The cluster alerts fire after their `for` on the node concerned (synthetic series).
promtool test rules "$ROOT/dashboards/alerts_test.yml"

build_release
BC_PORT="$(free_port)"
# A small queue bound so the slow clients below are evicted (4008) within the run.
start_bookcast "$BC_PORT" --queue-bytes 8192 --socket-send-buffer 4096

# The cluster: NATS with a store under $WORK, the engine, then a gateway (which answers once it
# has loaded the engine's first snapshots).
NATS_PORT="$(free_port)"
start_nats "$NATS_PORT"
ENGINE_PORT="$(free_port)"
start_bookcast_role engine "$ENGINE_PORT" --nats "nats://127.0.0.1:$NATS_PORT" --cluster dash \
    --feed "$ROOT/feeds/small.toml"
GATEWAY_PORT="$(free_port)"
start_bookcast_role gateway "$GATEWAY_PORT" --nats "nats://127.0.0.1:$NATS_PORT" --cluster dash
TARGETS="127.0.0.1:$BC_PORT 127.0.0.1:$ENGINE_PORT 127.0.0.1:$GATEWAY_PORT"

PROM_PORT="$(free_port)"
sed -e "s/\"127.0.0.1:9443\"/\"${TARGETS// /\", \"}\"/" -e 's/scrape_interval: 5s/scrape_interval: 1s/' \
    -e 's/evaluation_interval: 5s/evaluation_interval: 1s/' "$ROOT/dashboards/prometheus.yml" >"$WORK/prometheus.yml"
grep -q "127.0.0.1:$GATEWAY_PORT" "$WORK/prometheus.yml" || { say "the targets line of dashboards/prometheus.yml changed" >&2; exit 1; }
cp "$ROOT/dashboards/alerts.yml" "$WORK/alerts.yml"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$PROM_PORT/-/ready" || { tail -20 "$WORK/prometheus.log"; exit 1; }
say "prometheus on 127.0.0.1:$PROM_PORT scraping every second: bookcast on 127.0.0.1:$BC_PORT," \
    "engine on 127.0.0.1:$ENGINE_PORT, gateway on 127.0.0.1:$GATEWAY_PORT (NATS on 127.0.0.1:$NATS_PORT)"

# Load on the all-in-one server: fast clients on several stream kinds, and slow ones that get
# evicted. On the gateway: fast clients only.
"$BIN/bookcast-load" --url "ws://127.0.0.1:$BC_PORT" --clients 60 --duration 15s \
    --streams '<sym>@depth,<sym>@trade,<sym>@depth20@100ms' --slow 6 --slow-recv-buffer 4096 >"$WORK/load.log" 2>&1 &
LOAD_PID=$!
PIDS+=("$LOAD_PID")
"$BIN/bookcast-load" --url "ws://127.0.0.1:$GATEWAY_PORT" --clients 30 --duration 15s \
    --streams '<sym>@depth@0ms,<sym>@trade,<sym>@bookTicker' >"$WORK/load-gateway.log" 2>&1 &
GATEWAY_LOAD_PID=$!
PIDS+=("$GATEWAY_LOAD_PID")

# Every expression of the dashboard (with Grafana's $__rate_interval as 15s, 15 one-second
# scrapes, and $instance as its "All" value) and of the alerts (the part before the comparison,
# so that "returns data" means something) must return at least one series and no NaN within 60 s.
# Those that only move after a fault (gaps, rebases, reconnects, retries) return 0: their series
# are on /metrics from the start. Then every cluster node must be connected to NATS.
python3 - "$ROOT/dashboards/bookcast.json" "$ROOT/dashboards/alerts.yml" "http://127.0.0.1:$PROM_PORT" \
    "127.0.0.1:$GATEWAY_PORT" <<'PY'
import json, math, re, sys, time, urllib.parse, urllib.request

dash_path, alerts_path, prom, gateway = sys.argv[1:5]
def say(text):
    print("[dashboards] " + text, flush=True)
def fail(text):
    say(text)
    sys.exit(1)

dash = json.load(open(dash_path))
variables = {v["name"]: v for v in dash["templating"]["list"]}
instance = variables.get("instance")
if not (instance and instance.get("multi") and instance.get("includeAll") and instance.get("allValue") == ".*"
        and "label_values(bookcast_" in instance.get("definition", "")):
    fail("the dashboard needs a multi-select `instance` variable with All (.*) from label_values of a bookcast metric")

def panels(items):
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))  # rows, collapsed or not

exprs = []
for panel in panels(dash["panels"]):
    for target in panel.get("targets", []):
        expr = target["expr"]
        # Every selector of a bookcast metric filters on the variable.
        for m in re.finditer(r"\b(bookcast_\w+)(\{[^}]*\})?", expr):
            if 'instance=~"$instance"' not in (m.group(2) or ""):
                fail(f'{panel["title"]}: {m.group(1)} does not filter on instance=~"$instance"')
        exprs.append((panel["title"], expr.replace("$__rate_interval", "15s").replace("$instance", ".*")))
for line in open(alerts_path):
    m = re.match(r"\s*expr:\s*(.*)", line)
    if m:
        exprs.append(("alert", re.split(r"\s+(?:>|==)\s+", m.group(1))[0]))

def query(expr):
    url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as e:
        answer = json.load(e)
    if answer.get("status") != "success":
        fail(f"{expr} -> error: {answer.get('error', '?')}")
    return [(s["metric"], float(s["value"][1])) for s in answer["data"]["result"]]

deadline = time.monotonic() + 60
while True:
    missing, zeros = [], 0
    for title, expr in exprs:
        values = [v for _, v in query(expr)]
        if not values or any(math.isnan(v) for v in values):
            missing.append(f"{title}: {expr} -> {'NaN' if values else 'no data'}")
        elif not any(values):
            zeros += 1
    if not missing:
        break
    if time.monotonic() > deadline:
        # (Once the loads have ended, 15 s in, the latency quantiles go NaN too.)
        fail(f"{len(missing)} still without data after 60 s:\n  " + "\n  ".join(missing))
    time.sleep(2)
say(f"all {len(exprs)} dashboard and alert expressions parse and return data ({zeros} of them only 0s)")

connected = {m.get("instance"): v for m, v in query("bookcast_cluster_nats_connected")}
if len(connected) != 2 or set(connected.values()) != {1.0}:
    fail(f"bookcast_cluster_nats_connected should be 1 on the engine and the gateway: {connected}")
lag = query(f'bookcast_cluster_consumer_lag{{instance="{gateway}"}}')
say(f"cluster: engine and gateway connected to NATS; the gateway's consumer lag: {lag[0][1]:g} records")
p99 = query("histogram_quantile(0.99, sum by (instance, le) (rate(bookcast_publish_to_socket_seconds_bucket[15s]))) >= 0")
say("publish-to-socket p99 from Prometheus: " + ", ".join(f"{m.get('instance')} {v:.4f} s" for m, v in p99))
PY
wait "$LOAD_PID" "$GATEWAY_LOAD_PID" 2>/dev/null || true
