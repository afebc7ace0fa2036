# Shared by the shell checks in tests/ (source it after setting CHECK to the check's name):
# paths, a temporary directory and process cleanup, free loopback ports, starting bookcast,
# installing Debian packages (prometheus, chromium, nats-server), starting nats-server.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Where cargo puts release binaries (CI sets CARGO_TARGET_DIR to share builds between runs).
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK="$(mktemp -d)"
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

say() { echo "[$CHECK] $*"; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to 15 s for URL to answer 2xx.
wait_http() {
    for _ in $(seq 1 150); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done
    return 1
}

build_release() {
    (cd "$ROOT" && cargo build --release --workspace --quiet)
}

# start_bookcast PORT [ARGS...]: the release bookcast on 127.0.0.1:PORT with the small feed and no
# per-IP attempt limit, stopped on exit; fails the check (showing its log) if it does not answer.
start_bookcast() {
    local port="$1"
    shift
    start_bookcast_role "" "$port" --feed "$ROOT/feeds/small.toml" "$@"
}

# start_bookcast_role ROLE PORT [ARGS...]: `bookcast ROLE` (engine or gateway; "" for the
# all-in-one server) on 127.0.0.1:PORT with no per-IP attempt limit, stopped on exit; fails the
# check (showing its log) if /api/v3/ping does not answer within 15 s (a gateway answers once it
# has loaded the cluster's snapshots). Pass the feed, NATS and cluster options in ARGS.
start_bookcast_role() {
    local role="$1" port="$2"
    shift 2
    "$BIN/bookcast" ${role:+"$role"} --listen "127.0.0.1:$port" \
        --max-connection-attempts-per-ip 0 "$@" >"$WORK/bookcast-$port.log" 2>&1 &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$port/api/v3/ping" || { cat "$WORK/bookcast-$port.log" >&2; exit 1; }
}

# ensure_debian_package PACKAGE NEEDED...: installs Debian's PACKAGE when any NEEDED is missing
# (a command name, or an executable's path if it has a slash); not being root, fails the check
# naming what is missing and the apt-get line that would install it.
ensure_debian_package() {
    local package="$1" need missing=() shown
    shift
    for need in "$@"; do
        if [[ "$need" == */* ]]; then
            [[ -x "$need" ]] || missing+=("$need")
        else
            command -v "$need" >/dev/null || missing+=("$need")
        fi
    done
    if [[ ${#missing[@]} == 0 ]]; then
        return 0
    fi
    if [[ "$(id -u)" != 0 ]]; then
        printf -v shown '%s/' "${missing[@]}"
        echo "[$CHECK] ${shown%/} missing: apt-get install $package" >&2
        exit 2
    fi
    say "installing Debian's $package package"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null
}

# Debian's prometheus package (prometheus and promtool).
ensure_prometheus() {
    ensure_debian_package prometheus prometheus promtool
}

# Debian's nats-server (JetStream; the cluster's transport).
ensure_nats() {
    ensure_debian_package nats-server nats-server
}

# start_nats PORT: nats-server with JetStream on 127.0.0.1:PORT, its store under $WORK, stopped
# on exit; fails the check (showing its log) if it does not accept connections within 10 s.
start_nats() {
    local port="$1"
    nats-server -js -sd "$WORK/nats-$port" -a 127.0.0.1 -p "$port" >"$WORK/nats-$port.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    cat "$WORK/nats-$port.log" >&2
    exit 1
}
