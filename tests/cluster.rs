//! The cluster over a real `nats-server` (Debian's 2.9.10, with JetStream): one engine and two
//! gateways as separate `bookcast` processes, clients over real sockets, and faults made the
//! way they happen: SIGKILL, SIGSTOP, a broker restart.
//!
//! `nats-server` must be on PATH (`.ci/run` installs Debian's package); every process a test
//! starts is killed when the test ends, whatever happens.

mod common;

use common::{next_json, Ws, PATIENCE};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// A `nats-server -js` on a free port and a temporary store, killed on drop.
struct Nats {
    child: Child,
    url: String,
    /// Kept for a restart on the same port (clients reconnect to the URL they know).
    port: u16,
    store: PathBuf,
}

impl Nats {
    fn start(test: &str) -> Nats {
        let store =
            std::env::temp_dir().join(format!("bookcast-nats-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&store);
        std::fs::create_dir_all(&store).expect("temporary store");
        Self::start_in(store, None)
    }

    /// Starts on `store` (a restart keeps the JetStream data) and `port` (0: any free one).
    fn start_in(store: PathBuf, port: Option<u16>) -> Nats {
        let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &port_arg,
                "--ports_file_dir",
            ])
            .arg(&store)
            .arg("-sd")
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (Debian: apt-get install nats-server; .ci/run does it)");
        let ports_file = store.join(format!("nats-server_{}.ports", child.id()));
        let deadline = std::time::Instant::now() + PATIENCE;
        let url = loop {
            if let Ok(text) = std::fs::read_to_string(&ports_file) {
                let parsed: Result<Value, _> = serde_json::from_str(&text);
                if let Some(url) = parsed
                    .ok()
                    .and_then(|v| v["nats"][0].as_str().map(String::from))
                {
                    break url;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server wrote no ports file"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in URL");
        Nats {
            child,
            url,
            port,
            store,
        }
    }

    /// Stops the server (SIGKILL: no goodbye to clients), keeping its store.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same store and port, after [`kill`](Self::kill).
    fn restart(&mut self) {
        let store = self.store.clone();
        let again = Nats::start_in(store, Some(self.port));
        // The new server takes over; the old handle must not delete the store it uses.
        let old = std::mem::replace(self, again);
        std::mem::forget(old);
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// A `bookcast engine` or `bookcast gateway` process, killed on drop.
struct Node {
    child: Child,
    addr: SocketAddr,
}

fn feed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("feeds/small.toml")
}

impl Node {
    fn engine(nats: &Nats, cluster: &str) -> Node {
        let feed = feed();
        let feed = feed.to_str().expect("UTF-8 path");
        Self::spawn(
            &["engine", "--feed", feed, "--retention", "1m"],
            nats,
            cluster,
        )
    }

    fn gateway(nats: &Nats, cluster: &str) -> Node {
        Self::spawn(&["gateway"], nats, cluster)
    }

    fn spawn(role: &[&str], nats: &Nats, cluster: &str) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bookcast"))
            .args(role)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--nats",
                &nats.url,
                "--cluster",
                cluster,
            ])
            .args(["--snapshot-every", "1s"])
            .args([
                "--max-connection-attempts-per-ip",
                "0",
                "--max-connections",
                "1000",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bookcast binary");
        // The banner ("bookcast gateway ... listening on ADDR") names the address; the rest
        // of stdout is drained so the process never blocks on it.
        let stdout = child.stdout.take().expect("stdout");
        let mut node = Node {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let mut lines = BufReader::new(stdout).lines();
        let banner = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|line| line.starts_with("bookcast "))
            .expect("bookcast prints its banner");
        // Warnings and errors (RUST_LOG=warn) stay visible in the test's output.
        let role = role[0].to_string();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("[{role}] {line}");
            }
        });
        node.addr = banner
            .split(|c: char| c.is_whitespace() || c == '/')
            .filter_map(|word| {
                word.trim_end_matches([',', ';', ':'])
                    .parse::<SocketAddr>()
                    .ok()
            })
            .next_back() // the NATS URL comes first
            .unwrap_or_else(|| panic!("no address in the banner '{banner}'"));
        node
    }

    /// SIGKILL: the process gets no chance to say goodbye.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits until the node answers `path` with 200; returns the body.
    async fn get_ok(&self, path: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (status, body) = common::http_get(self.addr, path).await;
            if status == 200 {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "GET {path} on {}: {status} {body}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn connect(&self, path: &str) -> Ws {
        self.get_ok("/api/v3/depth?symbol=BTCUSDT&limit=5").await;
        let url = format!("ws://{}{path}", self.addr);
        let (ws, response) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        assert_eq!(response.status(), 101);
        ws
    }

    async fn metric(&self, name: &str) -> f64 {
        let body = self.get_ok("/metrics").await;
        body.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Streams every comparison reads: real-time-ish diffs, trades, aggregates, the touch, klines
/// (one in UTC+8), a rolling-window ticker.
const STREAMS: &str =
    "/stream?streams=btcusdt@depth@100ms/btcusdt@trade/ethusdt@aggTrade/xrpusdt@bookTicker/btcusdt@kline_1s/btcusdt@ticker_1h/ethusdt@kline_1d@+08:00";

/// Collects the raw text of messages for `span`.
async fn collect(ws: &mut Ws, span: Duration) -> Vec<String> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let until = Instant::now() + span;
    let mut out = Vec::new();
    while let Ok(message) = tokio::time::timeout_at(until, ws.next()).await {
        match message {
            Some(Ok(Message::Text(text))) => out.push(text.to_string()),
            Some(Ok(_)) => {}
            other => panic!("stream ended: {other:?}"),
        }
    }
    out
}

/// Asserts that two clients' message sequences are the same from the first message both saw,
/// over at least `at_least` messages.
fn assert_same_sequence(a: &[String], b: &[String], at_least: usize) {
    let start_b = b.iter().position(|m| m == &a[0]);
    let (a, b) = match start_b {
        Some(i) => (a, &b[i..]),
        None => {
            let i = a
                .iter()
                .position(|m| m == &b[0])
                .expect("the two sequences overlap");
            (&a[i..], b)
        }
    };
    let common = a.len().min(b.len());
    assert!(common >= at_least, "only {common} messages in common");
    for n in 0..common {
        assert_eq!(a[n], b[n], "message {n} differs");
    }
}

/// Follows `<s>@depth@100ms` from a REST snapshot as Binance documents it; checks continuity
/// for `span`. Returns the last `u`.
async fn follow_book(node: &Node, symbol: &str, span: Duration) -> u64 {
    let mut ws = node
        .connect(&format!("/ws/{}@depth@100ms", symbol.to_lowercase()))
        .await;
    let body = node
        .get_ok(&format!("/api/v3/depth?symbol={symbol}&limit=1000"))
        .await;
    let snapshot: Value = serde_json::from_str(&body).expect("JSON");
    let last_id = snapshot["lastUpdateId"].as_u64().expect("lastUpdateId");
    let mut event = next_json(&mut ws).await;
    while event["u"].as_u64().expect("u") <= last_id {
        event = next_json(&mut ws).await;
    }
    let (first, mut previous) = (
        event["U"].as_u64().expect("U"),
        event["u"].as_u64().expect("u"),
    );
    assert!(
        first <= last_id + 1,
        "first diff {first}..{previous} must straddle {last_id}+1"
    );
    let until = Instant::now() + span;
    while Instant::now() < until {
        let event = next_json(&mut ws).await;
        assert_eq!(
            event["U"].as_u64(),
            Some(previous + 1),
            "gap after {previous}"
        );
        previous = event["u"].as_u64().expect("u");
    }
    previous
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_send_identical_payloads_and_their_snapshots_fit_their_diffs() {
    let nats = Nats::start("identical");
    let _engine = Node::engine(&nats, "identical");
    let one = Node::gateway(&nats, "identical");
    let two = Node::gateway(&nats, "identical");
    let (mut a, mut b) = tokio::join!(one.connect(STREAMS), two.connect(STREAMS));
    let (seen_a, seen_b) = tokio::join!(
        collect(&mut a, Duration::from_secs(3)),
        collect(&mut b, Duration::from_secs(3))
    );
    assert_same_sequence(&seen_a, &seen_b, 100);
    for stream in [
        "@depth@100ms",
        "@trade",
        "@aggTrade",
        "@bookTicker",
        "@kline_1s",
        "\"1hTicker\"",
        "\"i\":\"1d\"",
    ] {
        assert!(
            seen_a.iter().any(|m| m.contains(stream)),
            "no {stream} message in {} messages",
            seen_a.len()
        );
    }
    tokio::join!(
        follow_book(&one, "BTCUSDT", Duration::from_secs(2)),
        follow_book(&two, "ETHUSDT", Duration::from_secs(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_and_restarted_catches_up_while_the_other_serves_on() {
    let nats = Nats::start("restart_gw");
    let _engine = Node::engine(&nats, "restart_gw");
    let mut one = Node::gateway(&nats, "restart_gw");
    let two = Node::gateway(&nats, "restart_gw");
    let mut on_two = two.connect(STREAMS).await;
    one.get_ok("/api/v3/depth?symbol=BTCUSDT").await;
    one.kill();
    // The other gateway's clients never notice; the killed one comes back and catches up.
    let watch_two = follow_book(&two, "XRPUSDT", Duration::from_secs(3));
    let restart = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let started = Instant::now();
        let one = Node::gateway(&nats, "restart_gw");
        one.get_ok("/api/v3/depth?symbol=BTCUSDT").await;
        eprintln!(
            "gateway restarted and serving after {:?}",
            started.elapsed()
        );
        one
    };
    let (_, one) = tokio::join!(watch_two, restart);
    let mut on_one = one.connect(STREAMS).await;
    let (seen_one, seen_two) = tokio::join!(
        collect(&mut on_one, Duration::from_secs(2)),
        collect(&mut on_two, Duration::from_secs(3))
    );
    assert_same_sequence(&seen_one, &seen_two, 100);
    assert_eq!(one.metric("bookcast_cluster_gaps_total").await, 0.0);
}

/// Follows `<s>@trade` for `span`; asserts trade ids go up by exactly one. Returns how many.
async fn follow_trades(node: &Node, symbol: &str, span: Duration) -> usize {
    let mut ws = node
        .connect(&format!("/ws/{}@trade", symbol.to_lowercase()))
        .await;
    let mut previous: Option<u64> = None;
    let mut count = 0;
    let until = Instant::now() + span;
    while Instant::now() < until {
        let trade = next_json(&mut ws).await;
        let id = trade["t"].as_u64().expect("t");
        if let Some(previous) = previous {
            assert_eq!(id, previous + 1, "trade ids jump from {previous} to {id}");
        }
        previous = Some(id);
        count += 1;
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_ride_out_a_nats_restart_with_no_gap() {
    let mut nats = Nats::start("nats_restart");
    let _engine = Node::engine(&nats, "nats_restart");
    let one = Node::gateway(&nats, "nats_restart");
    one.get_ok("/api/v3/ping").await;
    let book = follow_book(&one, "BTCUSDT", Duration::from_secs(9));
    let trades = follow_trades(&one, "BTCUSDT", Duration::from_secs(9));
    let outage = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        nats.kill();
        tokio::time::sleep(Duration::from_secs(3)).await;
        nats.restart();
        let back = Instant::now();
        while one.metric("bookcast_cluster_nats_reconnects_total").await < 1.0 {
            assert!(back.elapsed() < PATIENCE, "the gateway never reconnected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "gateway reconnected {:?} after NATS came back",
            back.elapsed()
        );
    };
    let (_, trades, ()) = tokio::join!(book, trades, outage);
    assert!(trades > 10, "only {trades} trades");
    assert_eq!(one.metric("bookcast_cluster_rebases_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_killed_and_restarted_continues_every_id() {
    let nats = Nats::start("engine_restart");
    let mut engine = Node::engine(&nats, "engine_restart");
    let one = Node::gateway(&nats, "engine_restart");
    one.get_ok("/api/v3/ping").await;
    let book = follow_book(&one, "BTCUSDT", Duration::from_secs(7));
    let trades = follow_trades(&one, "BTCUSDT", Duration::from_secs(7));
    let restart = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        engine.kill();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let started = Instant::now();
        let engine = Node::engine(&nats, "engine_restart");
        engine.get_ok("/api/v3/ping").await;
        eprintln!("engine restarted and serving after {:?}", started.elapsed());
        engine
    };
    let (_, trades, _engine) = tokio::join!(book, trades, restart);
    assert!(trades > 10, "only {trades} trades");
    assert_eq!(one.metric("bookcast_cluster_gaps_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_stopped_past_retention_rebases_with_one_bridging_diff() {
    let nats = Nats::start("rebase");
    let _engine = Node::spawn(
        &[
            "engine",
            "--feed",
            feed().to_str().expect("UTF-8 path"),
            "--retention",
            "3s",
        ],
        &nats,
        "rebase",
    );
    let one = Node::gateway(&nats, "rebase");
    one.get_ok("/api/v3/ping").await;
    let book = follow_book(&one, "BTCUSDT", Duration::from_secs(10));
    let stop = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        one.signal("STOP");
        // Past the 3 s retention: the steps the gateway missed are gone from JetStream.
        tokio::time::sleep(Duration::from_secs(6)).await;
        one.signal("CONT");
    };
    let (_, ()) = tokio::join!(book, stop);
    assert!(one.metric("bookcast_cluster_rebases_total").await >= 1.0);
}

/// Waits until `node`'s metric `name` reaches `at_least`.
async fn wait_metric(node: &Node, name: &str, at_least: f64) {
    let deadline = Instant::now() + PATIENCE;
    while node.metric(name).await < at_least {
        assert!(Instant::now() < deadline, "{name} never reached {at_least}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SPEC.md "Resume": every node numbers alike, so a client resumes on any node. Here it
/// resumes on a gateway that did not exist when it left: that gateway started from a snapshot
/// taken after the client's ids, and reads its history back from the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_a_gateway_that_joined_after_it_left() {
    let nats = Nats::start("resume");
    let _engine = Node::engine(&nats, "resume");
    let one = Node::gateway(&nats, "resume");
    let streams = "btcusdt@depth@0ms/btcusdt@trade/btcusdt@aggTrade";
    let mut ws = one
        .connect(&format!("/stream?streams={streams}&snapshot=true"))
        .await;
    let mut book = common::Book::default();
    let (mut last_u, mut last_t, mut last_a) = (0, None, None);
    while last_u == 0 || last_t.is_none() || last_a.is_none() {
        let message = next_json(&mut ws).await;
        let data = &message["data"];
        match (message["stream"].as_str(), data["e"].as_str()) {
            (_, Some("depthSnapshot")) => {
                book.apply(&data["bids"], &data["asks"]);
                last_u = data["lastUpdateId"].as_u64().expect("lastUpdateId");
            }
            (_, Some("depthUpdate")) if last_u > 0 => {
                assert_eq!(data["U"].as_u64(), Some(last_u + 1));
                book.apply(&data["b"], &data["a"]);
                last_u = data["u"].as_u64().expect("u");
            }
            (_, Some("trade")) => last_t = data["t"].as_u64(),
            (_, Some("aggTrade")) => last_a = data["a"].as_u64(),
            _ => {}
        }
    }
    drop(ws);
    let (last_t, last_a) = (last_t.expect("t"), last_a.expect("a"));
    // Away for 2.5 s of market time, while snapshots are taken (every second here): the new
    // gateway starts from one taken after the client left.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let body = one.get_ok("/api/v3/trades?symbol=BTCUSDT&limit=1000").await;
        let trades: Value = serde_json::from_str(&body).expect("JSON");
        let trades = trades.as_array().expect("trades");
        let time_of = |id: u64| {
            trades
                .iter()
                .find(|t| t["id"].as_u64() == Some(id))
                .and_then(|t| t["time"].as_u64())
        };
        let newest = trades.last().and_then(|t| t["time"].as_u64());
        if let (Some(ours), Some(newest)) = (time_of(last_t), newest) {
            if newest > ours + 2500 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "trading stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let two = Node::gateway(&nats, "resume");
    wait_metric(&two, "bookcast_cluster_history_backfills_total", 3.0).await;

    let mut ws = two
        .connect(&format!(
            "/stream?streams={streams}&resume=btcusdt@depth@0ms:{last_u},btcusdt@trade:{last_t},btcusdt@aggTrade:{last_a}"
        ))
        .await;
    let (mut next_t, mut next_a) = (last_t + 1, last_a + 1);
    while next_t <= last_t + 25 || next_a <= last_a + 10 {
        let message = next_json(&mut ws).await;
        let data = &message["data"];
        match data["e"].as_str() {
            Some("depthUpdate") => {
                assert_eq!(data["U"].as_u64(), Some(last_u + 1), "diff gap");
                book.apply(&data["b"], &data["a"]);
                last_u = data["u"].as_u64().expect("u");
            }
            Some("trade") => {
                assert_eq!(data["t"].as_u64(), Some(next_t), "trade gap or repeat");
                next_t += 1;
            }
            Some("aggTrade") => {
                assert_eq!(data["a"].as_u64(), Some(next_a), "aggregate gap or repeat");
                next_a += 1;
            }
            other => panic!("a catch-up, not {other:?}: {data}"),
        }
    }
    // The book the client kept across the two gateways is the new gateway's.
    let body = two.get_ok("/api/v3/depth?symbol=BTCUSDT&limit=5000").await;
    let later: Value = serde_json::from_str(&body).expect("JSON");
    let at = later["lastUpdateId"].as_u64().expect("lastUpdateId");
    while last_u < at {
        let message = next_json(&mut ws).await;
        let data = &message["data"];
        if data["e"] == "depthUpdate" {
            assert_eq!(data["U"].as_u64(), Some(last_u + 1), "diff gap");
            book.apply(&data["b"], &data["a"]);
            last_u = data["u"].as_u64().expect("u");
        }
    }
    let mut expected = common::Book::default();
    expected.apply(&later["bids"], &later["asks"]);
    assert_eq!(book, expected);
    assert_eq!(
        two.metric("bookcast_resumes_total{outcome=\"caught_up\"}")
            .await,
        3.0,
        "caught up from the backfilled history, not a snapshot"
    );
}
