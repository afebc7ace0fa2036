//! Bad HTTP before the upgrade, over a real socket: each request gets its status and Binance-shaped
//! body, and `bookcast_connections_rejected_total{reason}` counts it.
//!
//! The metrics recorder is process-wide, so tests running side by side in this binary share
//! counters: each test waits on a reason no other test here produces.

mod common;

use bookcast::config::Config;
use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// A response as read off the socket: status, head (lower-cased) and body.
struct Reply {
    status: u16,
    head: String,
    body: serde_json::Value,
}

impl Reply {
    /// Whether the head has this header line (lower case).
    fn has_header(&self, line: &str) -> bool {
        self.head.lines().any(|l| l == line)
    }
}

/// Writes `request` as is, reads until the server closes, parses the response.
async fn send_raw(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may answer (and close) before it has read everything: a failed write is fine.
    let _ = stream.write_all(request).await;
    read_reply(&mut stream).await
}

async fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + PATIENCE;
    loop {
        match timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("the server answers and closes in time")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head: head.to_ascii_lowercase(),
        body: serde_json::from_str(body).unwrap_or_else(|e| panic!("JSON body ({e}): {text:?}")),
    }
}

fn upgrade_request(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n")
}

const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
const VERSION: &str = "Sec-WebSocket-Version: 13\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_get_on_a_stream_path_gets_426() {
    let server = TestServer::start(Config::default()).await;
    for path in ["/ws/btcusdt@depth", "/ws", "/stream?streams=btcusdt@trade"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let reply = send_raw(server.addr, request.as_bytes()).await;
        assert_eq!(reply.status, 426, "{path}");
        assert!(reply.has_header("upgrade: websocket"), "{path}");
        assert!(reply.has_header("sec-websocket-version: 13"), "{path}");
        assert_eq!(reply.body["code"], -1000);
    }
    server
        .wait_metric(
            "bookcast_connections_rejected_total",
            "reason=\"not_websocket\"",
            3.0,
        )
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upgrades_get_400_426_or_405() {
    let server = TestServer::start(Config::default()).await;
    let missing_key = upgrade_request("/ws/btcusdt@depth", VERSION);
    let short_key = upgrade_request("/ws", &format!("Sec-WebSocket-Key: c2hvcnQ=\r\n{VERSION}"));
    // 24 characters, but `!` is not base64.
    let bad_alphabet = upgrade_request(
        "/ws",
        &format!("Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==\r\n{VERSION}"),
    );
    // Base64 of 17 bytes, not 16.
    let long_key = upgrade_request(
        "/ws",
        &format!("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZTE=\r\n{VERSION}"),
    );
    for request in [&missing_key, &short_key, &bad_alphabet, &long_key] {
        let reply = send_raw(server.addr, request.as_bytes()).await;
        assert_eq!(reply.status, 400, "{request}");
        assert_eq!(reply.body["code"], -1000);
        assert!(reply.body["msg"]
            .as_str()
            .unwrap()
            .contains("Sec-WebSocket-Key"));
    }
    for version in ["Sec-WebSocket-Version: 8\r\n", ""] {
        let request = upgrade_request("/ws", &format!("{KEY}{version}"));
        let reply = send_raw(server.addr, request.as_bytes()).await;
        assert_eq!(reply.status, 426, "{request}");
        assert!(
            reply.has_header("sec-websocket-version: 13"),
            "426 names the version spoken: {}",
            reply.head
        );
    }
    let post = upgrade_request("/ws", &format!("{KEY}{VERSION}")).replacen("GET", "POST", 1);
    assert_eq!(send_raw(server.addr, post.as_bytes()).await.status, 405);
    server
        .wait_metric(
            "bookcast_connections_rejected_total",
            "reason=\"bad_handshake\"",
            7.0,
        )
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_get_431() {
    let server = TestServer::start(Config::default()).await;
    let long_line = format!(
        "GET /ws/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(bookcast::front::http::MAX_HEAD + 1024)
    );
    let long_header = format!(
        "GET /api/v3/ping HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
        "b".repeat(bookcast::front::http::MAX_HEAD + 1024)
    );
    // Small, but more header fields than the server keeps room for.
    let many_headers = format!(
        "GET /api/v3/ping HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..64).map(|i| format!("X-{i}: y\r\n")).collect::<String>()
    );
    for request in [&long_line, &long_header, &many_headers] {
        let reply = send_raw(server.addr, request.as_bytes()).await;
        assert_eq!(reply.status, 431, "{}", &request[..40]);
        assert_eq!(reply.body["code"], -1000);
    }
    server
        .wait_metric(
            "bookcast_connections_rejected_total",
            "reason=\"head_too_large\"",
            3.0,
        )
        .await;
    // Garbage that is not HTTP at all is a 400.
    let reply = send_raw(server.addr, b"\x16\x03\x01 not http\r\n\r\n").await;
    assert_eq!(reply.status, 400);
    server
        .wait_metric(
            "bookcast_connections_rejected_total",
            "reason=\"malformed_request\"",
            1.0,
        )
        .await;
    server.stop().await;
}

/// Reads exactly one response (head and `Content-Length` body) off a keep-alive connection,
/// leaving the connection open.
async fn read_one_response(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + PATIENCE;
    let (head_len, body_len) = loop {
        let n = timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "closed before a whole response: {raw:?}");
        raw.extend_from_slice(&chunk[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .expect("Content-Length");
        break (end + 4, length);
    };
    while raw.len() < head_len + body_len {
        let n = timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("the body in time")
            .expect("read");
        assert!(n > 0, "closed inside a body");
        raw.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(raw.len(), head_len + body_len, "nothing after the response");
    let head = String::from_utf8_lossy(&raw[..head_len - 4]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head,
        body: serde_json::from_slice(&raw[head_len..]).expect("JSON body"),
    }
}

/// Waits for the server to end the connection (EOF or reset) and returns every byte it sent
/// before that. Fails if the connection is still open after [`PATIENCE`].
async fn bytes_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + PATIENCE;
    loop {
        match timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("the server closes in time")
        {
            Ok(0) | Err(_) => return raw,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
}

const PING: &[u8] = b"GET /api/v3/ping HTTP/1.1\r\nHost: x\r\n\r\n";

/// SPEC.md's keep-alive rule: a connection with no request under way is closed without a
/// response when the timeout passes. A 408 there is what python-binance's AsyncClient read as
/// the answer to the request it sent next (issue 11, item 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_without_a_response() {
    let handshake_timeout = Duration::from_millis(300);
    let server = TestServer::start(Config {
        handshake_timeout,
        ..Config::default()
    })
    .await;

    // Idle after a request, on a keep-alive connection.
    let started = Instant::now();
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(PING).await.unwrap();
    let reply = read_one_response(&mut kept).await;
    assert_eq!(reply.status, 200);
    assert!(reply.has_header("connection: keep-alive"), "{}", reply.head);
    let sent = bytes_until_closed(&mut kept).await;
    assert_eq!(
        String::from_utf8_lossy(&sent),
        "",
        "an idle keep-alive connection gets no response"
    );
    assert!(
        started.elapsed() >= handshake_timeout,
        "not closed before the timeout"
    );

    // Empty lines between requests (RFC 9112 §2.2) start no request: still idle.
    let mut blank = TcpStream::connect(server.addr).await.unwrap();
    blank.write_all(PING).await.unwrap();
    assert_eq!(read_one_response(&mut blank).await.status, 200);
    blank.write_all(b"\r\n").await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&bytes_until_closed(&mut blank).await),
        ""
    );

    // Idle from the start: a connection that never sends a byte.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&bytes_until_closed(&mut silent).await),
        ""
    );

    // Only the connection that never sent a request counts as refused; the others were
    // keep-alive connections ending as they should. Every close above happened after its
    // count, and no other test here leaves a connection idle.
    let idle = server
        .metric(
            "bookcast_connections_rejected_total",
            "reason=\"idle_timeout\"",
        )
        .await;
    assert_eq!(idle, 1.0);
    server.stop().await;
}

/// A request head that starts to arrive and stalls gets 408, on a new connection and on a
/// keep-alive one after a request was answered: the only case SPEC.md answers with 408.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_partial_head_gets_408_after_the_handshake_timeout() {
    let handshake_timeout = Duration::from_millis(300);
    let server = TestServer::start(Config {
        handshake_timeout,
        ..Config::default()
    })
    .await;
    let started = Instant::now();
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    // Half a head: the blank line never comes.
    stalled
        .write_all(b"GET /ws/btcusdt@depth HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(PING).await.unwrap();
    assert_eq!(read_one_response(&mut kept).await.status, 200);
    kept.write_all(b"GET /api/v3/ping HTTP/1.1\r\nHo")
        .await
        .unwrap();
    for stream in [&mut stalled, &mut kept] {
        let reply = read_reply(stream).await;
        assert_eq!(reply.status, 408);
        assert_eq!(reply.body["code"], -1000);
        assert!(reply.has_header("connection: close"), "{}", reply.head);
    }
    assert!(
        started.elapsed() >= handshake_timeout,
        "not before the timeout"
    );
    server
        .wait_metric(
            "bookcast_connections_rejected_total",
            "reason=\"handshake_timeout\"",
            2.0,
        )
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_get_503_before_the_upgrade() {
    let server = TestServer::start(Config {
        max_connections: 2,
        ..Config::default()
    })
    .await;
    let first = server.connect("/ws/btcusdt@depth").await;
    let second = server.connect("/ws").await;
    match tokio_tungstenite::connect_async(server.ws_url("/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected HTTP 503, got {other:?}"),
    }
    let request = upgrade_request("/ws", &format!("{KEY}{VERSION}"));
    let reply = send_raw(server.addr, request.as_bytes()).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body["code"], -1003);
    drop(first);
    // /metrics itself needs a free slot; wait_metric retries until the dropped one is freed.
    server
        .wait_metric(
            "bookcast_connections_rejected_total",
            "reason=\"connection_cap\"",
            2.0,
        )
        .await;
    drop(second);
    server.stop().await;
}

/// What the URL of an upgrade can get wrong: a bad `timeUnit` or too many streams is refused
/// (400; the limit counts names as written), while names that are not streams are ignored, as
/// Binance does (ccxt connects to `/ws/<n>` and subscribes afterwards).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upgrade_urls() {
    let server = TestServer::start(Config {
        max_streams: 3,
        ..Config::default()
    })
    .await;
    for path in [
        "/ws/btcusdt@trade?timeUnit=NANOSECOND",
        "/stream?streams=btcusdt@trade&timeUnit=",
        "/stream?streams=a/b/c/d",
    ] {
        let request = upgrade_request(path, &format!("{KEY}{VERSION}"));
        let reply = send_raw(server.addr, request.as_bytes()).await;
        assert_eq!(reply.status, 400, "{path}");
        assert!(reply.body["code"].as_i64().is_some_and(|c| c < 0), "{path}");
    }
    server
        .wait_metric(
            "bookcast_connections_rejected_total",
            "reason=\"bad_stream_path\"",
            3.0,
        )
        .await;
    match tokio_tungstenite::connect_async(server.ws_url("/wss")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("expected HTTP 404 for an unknown path, got {other:?}"),
    }

    let mut ws = server
        .connect("/ws/nosuch@trade/%ZZ%00/btcusdt@trade")
        .await;
    let list = request(&mut ws, r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#).await;
    assert_eq!(list["result"], serde_json::json!(["btcusdt@trade"]));
    drop(ws);
    server.stop().await;
}
