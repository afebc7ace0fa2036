#!/usr/bin/env bash
# Checks dashboards/: promtool accepts the Prometheus config and alert rules, and every PromQL
# expression of the Grafana dashboard and the alerts parses and returns data from a real
# Prometheus (Debian's) scraping a real bookcast under load, every second, on loopback.
set -euo pipefail
CHECK=dashboards
source "$(dirname "$0")/lib.sh"

ensure_prometheus
promtool check config "$ROOT/dashboards/prometheus.yml"
promtool check rules "$ROOT/dashboards/alerts.yml"

build_release
BC_PORT="$(free_port)"
# A small queue bound so the slow clients below are evicted (4008) within the run.
start_bookcast "$BC_PORT" --queue-bytes 8192 --socket-send-buffer 4096

PROM_PORT="$(free_port)"
sed -e "s/127.0.0.1:9443/127.0.0.1:$BC_PORT/" -e 's/scrape_interval: 5s/scrape_interval: 1s/' \
    -e 's/evaluation_interval: 5s/evaluation_interval: 1s/' "$ROOT/dashboards/prometheus.yml" >"$WORK/prometheus.yml"
cp "$ROOT/dashboards/alerts.yml" "$WORK/alerts.yml"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$PROM_PORT/-/ready" || { tail -20 "$WORK/prometheus.log"; exit 1; }
say "prometheus on 127.0.0.1:$PROM_PORT scraping bookcast on 127.0.0.1:$BC_PORT every second"

# Load: fast clients on several stream kinds, and slow ones that get evicted.
"$BIN/bookcast-load" --url "ws://127.0.0.1:$BC_PORT" --clients 60 --duration 15s \
    --streams '<sym>@depth,<sym>@trade,<sym>@depth20@100ms' --slow 6 --slow-recv-buffer 4096 >"$WORK/load.log" 2>&1 &
LOAD_PID=$!
PIDS+=("$LOAD_PID")

# Every expression, with Grafana's $__rate_interval as 15s (15 one-second scrapes).
python3 - "$ROOT/dashboards/bookcast.json" "$ROOT/dashboards/alerts.yml" >"$WORK/exprs.txt" <<'PY'
import json, re, sys
dash = json.load(open(sys.argv[1]))
for panel in dash["panels"]:
    for target in panel["targets"]:
        print(panel["title"] + "\t" + target["expr"].replace("$__rate_interval", "15s"))
# Alert expressions: the part before the comparison, so that "returns data" means something.
for line in open(sys.argv[2]):
    m = re.match(r"\s*expr:\s*(.*)", line)
    if m:
        expr = re.split(r"\s+(?:>|==)\s+", m.group(1))[0]
        print("alert\t" + expr)
PY

deadline=$((SECONDS + 60))
while :; do
    missing=0
    while IFS=$'\t' read -r title expr; do
        answer="$(curl -s -G "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$expr")"
        verdict="$(python3 -c '
import json, math, sys
r = json.loads(sys.argv[1])
if r.get("status") != "success":
    print("error: " + r.get("error", "?")); sys.exit()
values = [float(s["value"][1]) for s in r["data"]["result"]]
print("ok" if values and all(not math.isnan(v) for v in values) else "no data")
' "$answer")"
        case "$verdict" in
            ok) ;;
            error*) say "$title: $expr -> $verdict" >&2; exit 1 ;;
            *) missing=$((missing + 1)); last="$title: $expr -> $verdict" ;;
        esac
    done <"$WORK/exprs.txt"
    [[ $missing == 0 ]] && break
    if (( SECONDS > deadline )); then
        say "still without data after 60 s: $last" >&2
        tail -5 "$WORK/load.log" >&2
        exit 1
    fi
    sleep 2
done
say "all $(wc -l <"$WORK/exprs.txt") dashboard and alert expressions parse and return data"
p99="$(curl -s -G "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode \
    'query=histogram_quantile(0.99, sum by (le) (rate(bookcast_publish_to_socket_seconds_bucket[15s])))' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["result"][0]["value"][1])')"
say "publish-to-socket p99 from Prometheus: ${p99} s"
wait "$LOAD_PID" 2>/dev/null || true
