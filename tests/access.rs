//! Access control over real sockets: tokens (close 4001), the per-IP connection cap (HTTP 429)
//! and allowed origins (HTTP 403). All of it is off by default.

mod common;

use bookcast::config::Config;
use common::*;
use futures_util::StreamExt;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::MaybeTlsStream;

const TOKEN: &str = "good-token-0123456789abcdef";

/// A token file unique to this test process and `name`, removed on drop.
struct TokenFile(PathBuf);

impl TokenFile {
    fn new(name: &str, contents: &str) -> TokenFile {
        let path = std::env::temp_dir().join(format!(
            "bookcast-access-{}-{name}.tokens",
            std::process::id()
        ));
        std::fs::write(&path, contents).expect("write token file");
        TokenFile(path)
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn auth_server(name: &str) -> (TestServer, TokenFile) {
    let file = TokenFile::new(name, &format!("# test tokens\n\n{TOKEN}\nsecond-token\n"));
    let config = Config {
        auth_tokens: Some(file.0.clone()),
        ..Config::default()
    };
    (TestServer::start(config).await, file)
}

/// Connects with extra request headers; the HTTP status and body when the upgrade is refused.
async fn connect_with(url: &str, headers: &[(&'static str, &str)]) -> Result<Ws, (u16, String)> {
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, HeaderValue::from_str(value).expect("header value"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, response)) => {
            assert_eq!(response.status(), 101);
            Ok(ws)
        }
        Err(WsError::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((response.status().as_u16(), body))
        }
        Err(e) => panic!("connect to {url}: {e}"),
    }
}

/// Connects from a chosen loopback source address (Linux routes all of 127.0.0.0/8 to lo).
async fn connect_from(source: [u8; 4], server: &TestServer, path: &str) -> Result<Ws, u16> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind source address");
    let stream = MaybeTlsStream::Plain(socket.connect(server.addr).await.expect("connect"));
    match tokio_tungstenite::client_async(server.ws_url(path), stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("connect from {source:?}: {e}"),
    }
}

/// Reads until the server's close frame, failing on any data frame before it, then until the
/// end (which sends the client's close reply); returns the close code and reason.
async fn close_without_data(ws: &mut Ws) -> (u16, String) {
    let deadline = Instant::now() + PATIENCE;
    let close = loop {
        match timeout_at(deadline, ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                break (u16::from(frame.code), frame.reason.to_string())
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected only a close frame, got {other:?}"),
        }
    };
    while let Ok(Some(Ok(_))) = timeout_at(deadline, ws.next()).await {}
    close
}

/// Waits until `path` accepts a connection from 127.0.0.1 again (after a slot was freed).
async fn connect_when_admitted(server: &TestServer, path: &str) -> Ws {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match connect_with(&server.ws_url(path), &[]).await {
            Ok(ws) => return ws,
            Err((429, _)) if Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(refused) => panic!("still refused at the deadline: {refused:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_off_by_default() {
    let server = TestServer::start(Config::default()).await;
    let mut ws = server.connect("/ws/btcusdt@depth@0ms").await;
    assert_eq!(next_json(&mut ws).await["e"], "depthUpdate");
    drop(ws);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_is_closed_with_4001_before_any_data() {
    let (server, _file) = auth_server("missing").await;
    for path in [
        "/ws/btcusdt@depth",
        "/stream?streams=btcusdt@depth&timeUnit=MICROSECOND",
    ] {
        let mut ws = server.connect(path).await;
        let (code, reason) = close_without_data(&mut ws).await;
        assert_eq!(code, 4001, "{path}");
        assert!(reason.starts_with("missing token"), "{reason}");
    }
    // An Authorization header of another scheme offers no token.
    let mut ws = connect_with(
        &server.ws_url("/ws/btcusdt@depth"),
        &[("authorization", "Basic Z29vZC10b2tlbg==")],
    )
    .await
    .expect("upgraded");
    assert!(close_without_data(&mut ws)
        .await
        .1
        .starts_with("missing token"));
    server
        .wait_metric("bookcast_auth_failures_total", "reason=\"missing\"", 3.0)
        .await;
    server
        .wait_metric("bookcast_closes_total", "code=\"4001\"", 3.0)
        .await;
    // REST stays public, like Binance's market-data endpoints.
    assert_eq!(
        server.get("/api/v3/depth?symbol=BTCUSDT&limit=5").await.0,
        200
    );
    assert_eq!(server.get("/metrics").await.0, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_closed_with_4001() {
    let (server, _file) = auth_server("wrong").await;
    let near_miss = &TOKEN[..TOKEN.len() - 1];
    for path in [
        format!("/ws/btcusdt@depth?token={near_miss}"),
        "/ws/btcusdt@depth?token=".to_string(),
        format!("/stream?streams=btcusdt@depth&token={TOKEN}x"),
    ] {
        let mut ws = server.connect(&path).await;
        assert_eq!(
            close_without_data(&mut ws).await,
            (4001, "invalid token".to_string()),
            "{path}"
        );
    }
    let mut ws = connect_with(
        &server.ws_url("/ws/btcusdt@depth"),
        &[("authorization", "Bearer not-a-token")],
    )
    .await
    .expect("upgraded");
    assert_eq!(close_without_data(&mut ws).await.0, 4001);
    server
        .wait_metric("bookcast_auth_failures_total", "reason=\"invalid\"", 4.0)
        .await;
    server.stop().await;
}

/// A refused connection was never open: the open counts (here the per-server `!stats@1s`,
/// since Prometheus gauges are shared by the tests of this process) don't move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_do_not_count_as_open_connections() {
    let (server, _file) = auth_server("refusals").await;
    for _ in 0..3 {
        let mut ws = server.connect("/ws/btcusdt@depth").await;
        assert_eq!(close_without_data(&mut ws).await.0, 4001);
    }
    let mut stats = server
        .connect(&format!("/ws/!stats@1s?token={TOKEN}"))
        .await;
    let event = next_matching(&mut stats, |m| m["e"] == "serverStats").await;
    assert_eq!(event["connections"], 1, "{event}");
    drop(stats);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_query_token_receives_events() {
    let (server, _file) = auth_server("query").await;
    let mut raw = server
        .connect(&format!("/ws/btcusdt@depth@0ms?token={TOKEN}"))
        .await;
    assert_eq!(next_json(&mut raw).await["e"], "depthUpdate");
    // Alongside Binance's own parameters, in any order; the second listed token works too.
    let mut combined = server
        .connect("/stream?token=second-token&streams=btcusdt@depth@0ms&timeUnit=MICROSECOND")
        .await;
    let event = next_json(&mut combined).await;
    assert_eq!(event["stream"], "btcusdt@depth@0ms");
    assert!(
        event["data"]["E"].as_u64().unwrap() > 1_000_000_000_000_000,
        "µs as asked"
    );
    let reply = request(&mut combined, r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#).await;
    assert_eq!(reply["result"], serde_json::json!(["btcusdt@depth@0ms"]));
    drop((raw, combined));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_bearer_token_receives_events() {
    let (server, _file) = auth_server("bearer").await;
    let mut ws = connect_with(
        &server.ws_url("/ws/btcusdt@depth@0ms"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
    )
    .await
    .expect("upgraded");
    assert_eq!(next_json(&mut ws).await["e"], "depthUpdate");
    drop(ws);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_file_is_a_startup_error() {
    let empty = TokenFile::new("empty", "# nothing yet\n\n");
    let spaced = TokenFile::new("spaced", "two words\n");
    let missing = std::env::temp_dir().join("bookcast-access-no-such-file.tokens");
    for (path, expect) in [
        (empty.0.clone(), "no tokens"),
        (spaced.0.clone(), "line 1"),
        (missing, "No such file"),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = Config {
            auth_tokens: Some(path.clone()),
            ..Config::default()
        };
        let run = bookcast::front::server::run(
            listener,
            config,
            small_feed(),
            std::future::pending::<()>(),
        );
        let error = tokio::time::timeout(PATIENCE, run)
            .await
            .expect("fails at once")
            .expect_err("refuses to start");
        let text = error.to_string();
        assert!(
            text.contains(&path.display().to_string()) && text.contains(expect),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_ip_are_capped_with_429_and_freed_on_close() {
    let config = Config {
        max_connections_per_ip: 2,
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let first = server.connect("/ws").await;
    let mut second = server.connect("/ws/btcusdt@depth").await;
    let (status, body) = connect_with(&server.ws_url("/ws"), &[])
        .await
        .expect_err("the third is refused");
    assert_eq!(status, 429);
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(body["code"], -1003);
    assert!(
        body["msg"].as_str().unwrap().contains("at most 2"),
        "{body}"
    );
    server
        .wait_metric(
            "bookcast_connections_rejected_total",
            "reason=\"ip_connection_cap\"",
            1.0,
        )
        .await;
    // Another address is not affected, and REST is not counted.
    let mut other = connect_from([127, 0, 0, 2], &server, "/ws/btcusdt@depth@0ms")
        .await
        .expect("another address connects");
    assert_eq!(next_json(&mut other).await["e"], "depthUpdate");
    assert_eq!(server.get("/api/v3/ping").await.0, 200);

    // A client that just drops its socket frees its slot, and so does a close handshake.
    drop(first);
    let third = connect_when_admitted(&server, "/ws").await;
    second.close(None).await.expect("close sent");
    while let Some(Ok(_)) = second.next().await {}
    let fourth = connect_when_admitted(&server, "/ws").await;
    assert!(
        connect_with(&server.ws_url("/ws"), &[]).await.is_err(),
        "at the cap again"
    );
    drop((third, fourth, other));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_closes_free_per_ip_slots_too() {
    // One slot per address, with auth on: a refused (4001) connection and a server-closed
    // (4009) one must each give the slot back.
    let file = TokenFile::new("cap", &format!("{TOKEN}\n"));
    let config = Config {
        max_connections_per_ip: 1,
        auth_tokens: Some(file.0.clone()),
        max_lifetime: std::time::Duration::from_millis(300),
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let mut refused = server.connect("/ws").await;
    assert_eq!(close_without_data(&mut refused).await.0, 4001);
    let path = format!("/ws?token={TOKEN}");
    let mut admitted = connect_when_admitted(&server, &path).await;
    assert_eq!(close_code(&mut admitted).await, Some(4009));
    while let Some(Ok(_)) = admitted.next().await {}
    drop(connect_when_admitted(&server, &path).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_cap_is_off_by_default() {
    let server = TestServer::start(Config::default()).await;
    let mut open = Vec::new();
    for _ in 0..40 {
        open.push(server.connect("/ws").await);
    }
    drop(open);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_outside_the_list_get_403() {
    let config = Config {
        allowed_origins: vec![
            "https://example.com".to_string(),
            "http://localhost:8080".to_string(),
        ],
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let url = server.ws_url("/ws/btcusdt@depth");
    for origin in ["https://evil.example", "null", "http://example.com"] {
        let (status, body) = connect_with(&url, &[("origin", origin)])
            .await
            .expect_err("refused");
        assert_eq!(status, 403, "{origin}");
        let body: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
        assert_eq!(body["code"], -1002, "{origin}");
    }
    server
        .wait_metric(
            "bookcast_connections_rejected_total",
            "reason=\"origin_not_allowed\"",
            3.0,
        )
        .await;
    // Two Origin headers combine into one value, which matches no entry.
    let mut raw = raw_upgrade_with(
        server.addr,
        "/ws",
        "Origin: https://example.com\r\nOrigin: https://evil.example\r\n",
    )
    .await;
    let mut head = Vec::new();
    timeout_at(Instant::now() + PATIENCE, raw.read_to_end(&mut head))
        .await
        .expect("answered in time")
        .expect("read");
    assert!(
        head.starts_with(b"HTTP/1.1 403 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut allowed = connect_with(&url, &[("origin", "http://localhost:8080")])
        .await
        .expect("an allowed origin upgrades");
    assert_eq!(next_json(&mut allowed).await["e"], "depthUpdate");
    // No Origin header: not a browser, so not what the list guards against.
    let mut absent = connect_with(&url, &[]).await.expect("no Origin upgrades");
    assert_eq!(next_json(&mut absent).await["e"], "depthUpdate");
    // Same-origin: bookcast's own /dashboard page, served from this very host and port.
    let own = format!("http://{}", server.addr);
    let mut same = connect_with(&url, &[("origin", own.as_str())])
        .await
        .expect("same-origin upgrades");
    assert_eq!(next_json(&mut same).await["e"], "depthUpdate");
    drop((allowed, absent, same));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_origin_is_allowed_by_default() {
    let server = TestServer::start(Config::default()).await;
    connect_with(&server.ws_url("/ws"), &[("origin", "https://evil.example")])
        .await
        .expect("no list: no check");
    server.stop().await;
}
