//! Server-Sent Events (SPEC.md "Other transports for the same streams"): the same streams and
//! payloads as WebSocket on `GET /sse`, ids as `resume=` takes them, `Last-Event-ID` resume, a
//! keep-alive comment, the same limits, and slow consumers ended. Each over a real socket,
//! read as raw bytes, the way a browser's `EventSource` reads them.

mod common;

use bookcast::config::Config;
use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// One parsed event: its `event:`, `id:` (if any) and `data:` lines, or a comment.
#[derive(Debug)]
enum Item {
    Event {
        event: String,
        id: Option<String>,
        data: Value,
    },
    Comment(String),
}

/// An open `/sse` response, read incrementally.
struct EventStream {
    socket: TcpStream,
    buffer: Vec<u8>,
    /// The response head, once read.
    head: String,
}

impl EventStream {
    async fn open(addr: SocketAddr, path: &str, headers: &str) -> EventStream {
        let mut socket = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{headers}\r\n"
        );
        socket.write_all(request.as_bytes()).await.expect("request");
        let mut stream = EventStream {
            socket,
            buffer: Vec::new(),
            head: String::new(),
        };
        let head = stream.until(b"\r\n\r\n").await.expect("a response head");
        stream.head = String::from_utf8_lossy(&head).into_owned();
        stream
    }

    fn status(&self) -> u16 {
        self.head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status")
    }

    /// Reads up to and including `end`; `None` at EOF.
    async fn until(&mut self, end: &[u8]) -> Option<Vec<u8>> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(at) = self.buffer.windows(end.len()).position(|w| w == end) {
                let rest = self.buffer.split_off(at + end.len());
                return Some(std::mem::replace(&mut self.buffer, rest));
            }
            let mut chunk = [0u8; 8192];
            let n = timeout_at(deadline, self.socket.read(&mut chunk))
                .await
                .expect("bytes in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next event or comment; `None` once the server ended the response.
    async fn next(&mut self) -> Option<Item> {
        let block = self.until(b"\n\n").await?;
        let text = String::from_utf8(block).expect("UTF-8");
        if let Some(comment) = text.strip_prefix(':') {
            return Some(Item::Comment(comment.trim().to_string()));
        }
        let (mut event, mut id, mut data) = (None, None, None);
        for line in text.trim_end().lines() {
            let (field, value) = line.split_once(": ").expect("field: value");
            match field {
                "event" => event = Some(value.to_string()),
                "id" => id = Some(value.to_string()),
                "data" => data = Some(serde_json::from_str(value).expect("one JSON line")),
                other => panic!("unexpected field {other}"),
            }
        }
        Some(Item::Event {
            event: event.expect("event:"),
            id,
            data: data.expect("data:"),
        })
    }

    /// The next event (comments skipped).
    async fn event(&mut self) -> (String, Option<String>, Value) {
        loop {
            match self.next().await.expect("the stream goes on") {
                Item::Event { event, id, data } => return (event, id, data),
                Item::Comment(_) => continue,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_the_stream_name_its_id_and_the_websocket_payload() {
    let server = TestServer::start(Config::default()).await;
    let mut sse = EventStream::open(
        server.addr,
        "/sse?streams=btcusdt@depth@100ms/btcusdt@trade/btcusdt@bookTicker&timeUnit=MICROSECOND",
        "",
    )
    .await;
    assert_eq!(sse.status(), 200, "{}", sse.head);
    assert!(
        sse.head.contains("Content-Type: text/event-stream"),
        "{}",
        sse.head
    );
    let (mut diffs, mut trades, mut tickers) = (0, 0, 0);
    let (mut last_u, mut last_t) = (None::<u64>, None::<u64>);
    while diffs < 5 || trades < 5 || tickers < 5 {
        let (event, id, data) = sse.event().await;
        assert!(
            data["E"].as_u64().is_none_or(|e| e > 1_000_000_000_000_000),
            "µs"
        );
        match event.as_str() {
            "btcusdt@depth@100ms" => {
                assert_eq!(data["e"], "depthUpdate");
                let u = data["u"].as_u64().expect("u");
                assert_eq!(id, Some(format!("btcusdt@depth@100ms:{u}")));
                if let Some(last) = last_u {
                    assert_eq!(data["U"].as_u64(), Some(last + 1), "diff gap");
                }
                last_u = Some(u);
                diffs += 1;
            }
            "btcusdt@trade" => {
                let t = data["t"].as_u64().expect("t");
                assert_eq!(id, Some(format!("btcusdt@trade:{t}")));
                if let Some(last) = last_t {
                    assert_eq!(t, last + 1, "trade gap");
                }
                last_t = Some(t);
                trades += 1;
            }
            "btcusdt@bookTicker" => {
                assert_eq!(id, None, "snapshot-type streams carry no id");
                assert_eq!(data["s"], "BTCUSDT");
                tickers += 1;
            }
            other => panic!("unexpected event {other}"),
        }
    }
    server
        .wait_metric("bookcast_transport_open", "transport=\"sse\"", 1.0)
        .await;
    assert!(
        server
            .metric("bookcast_transport_events_total", "transport=\"sse\"")
            .await
            > 0.0
    );
    drop(sse);
    // The client left: the stream is closed and detached.
    let deadline = Instant::now() + PATIENCE;
    while server
        .metric("bookcast_transport_open", "transport=\"sse\"")
        .await
        > 0.0
    {
        assert!(Instant::now() < deadline, "the stream outlived its client");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_that_stream_with_nothing_missed() {
    let server = TestServer::start(Config::default()).await;
    let path = "/sse?streams=btcusdt@trade/btcusdt@depth@0ms";
    let mut sse = EventStream::open(server.addr, path, "").await;
    let mut last_trade_id = None;
    while last_trade_id.is_none() {
        let (event, id, _) = sse.event().await;
        if event == "btcusdt@trade" {
            last_trade_id = id;
        }
    }
    drop(sse);
    let last_trade_id = last_trade_id.expect("an id");
    let t: u64 = last_trade_id
        .rsplit_once(':')
        .and_then(|(_, id)| id.parse().ok())
        .expect("stream:id");
    // Away while trading goes on.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let trades = server
            .get_json("/api/v3/trades?symbol=BTCUSDT&limit=1")
            .await;
        if trades[0]["id"].as_u64().is_some_and(|id| id > t + 10) {
            break;
        }
        assert!(Instant::now() < deadline, "trading stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut sse = EventStream::open(
        server.addr,
        path,
        &format!("Last-Event-ID: {last_trade_id}\r\n"),
    )
    .await;
    let mut next = t + 1;
    while next <= t + 15 {
        let (event, id, data) = sse.event().await;
        if event == "btcusdt@trade" {
            assert_eq!(
                data["t"].as_u64(),
                Some(next),
                "resumed from the id after ours"
            );
            assert_eq!(id, Some(format!("btcusdt@trade:{next}")));
            next += 1;
        }
    }
    assert!(
        server
            .metric("bookcast_resumes_total", "outcome=\"caught_up\"")
            .await
            >= 1.0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_keeps_the_stream_alive_and_shutdown_ends_it() {
    let server = TestServer::start_with_feed(
        Config {
            sse_keep_alive: Duration::from_millis(200),
            ..Config::default()
        },
        small_feed(),
    )
    .await;
    // A quiet stream: XRPUSDT's 1000 ms diffs.
    let mut sse = EventStream::open(server.addr, "/sse?streams=xrpusdt@depth", "").await;
    let mut comments = 0;
    while comments < 3 {
        if let Some(Item::Comment(text)) = sse.next().await {
            assert_eq!(text, "ping");
            comments += 1;
        }
    }
    server.stop().await;
    // Ended by the server: whatever was queued, then EOF.
    while sse.next().await.is_some() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_limits_apply() {
    let server = TestServer::start(Config {
        max_streams: 2,
        max_connections_per_ip: 1,
        ..Config::default()
    })
    .await;
    for (path, status) in [
        (
            "/sse?streams=btcusdt@trade/ethusdt@trade/xrpusdt@trade",
            400,
        ),
        ("/sse?streams=nosuch@trade", 400),
        ("/sse?streams=btcusdt@trade&timeUnit=SECOND", 400),
        ("/sse", 400),
    ] {
        let (got, body) = http_get(server.addr, path).await;
        assert_eq!(got, status, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).expect("JSON error");
        assert_eq!(body["code"], -1100, "{path}");
    }
    let first = EventStream::open(server.addr, "/sse?streams=btcusdt@trade", "").await;
    assert_eq!(first.status(), 200);
    let second = EventStream::open(server.addr, "/sse?streams=btcusdt@trade", "").await;
    assert_eq!(
        second.status(),
        429,
        "one stream per address: {}",
        second.head
    );
    drop(first);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_ended_and_counted_like_4008() {
    let server = TestServer::start(Config {
        queue_bytes: 16 * 1024,
        socket_send_buffer: 4096,
        ..Config::default()
    })
    .await;
    // Never reads, with a tiny receive buffer: the server's queue fills within seconds.
    let mut raw = raw_upgrade_small_buffer(
        server.addr,
        "/sse?streams=btcusdt@depth@0ms/ethusdt@depth@0ms/xrpusdt@depth@0ms",
    )
    .await;
    server
        .wait_metric("bookcast_slow_consumer_disconnects_total", "", 1.0)
        .await;
    server
        .wait_metric("bookcast_closes_total", "code=\"4008\"", 1.0)
        .await;
    // Whatever was sent before, then the end of the response.
    let deadline = Instant::now() + PATIENCE;
    let mut chunk = vec![0u8; 65536];
    loop {
        let n = timeout_at(deadline, raw.read(&mut chunk))
            .await
            .expect("the server ends the response")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
    }
    let deadline = Instant::now() + PATIENCE;
    while server
        .metric("bookcast_transport_open", "transport=\"sse\"")
        .await
        > 0.0
    {
        assert!(
            Instant::now() < deadline,
            "the ended stream is still counted open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}
