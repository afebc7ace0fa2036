//! Heartbeats, rate limits, lifetime and graceful shutdown, with short configured intervals.

mod common;

use bookcast::config::Config;
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;

fn quick_heartbeat() -> Config {
    // Pongs count against the 5 messages/s limit too, so ping at most 4 times a second.
    Config {
        ping_interval: Duration::from_millis(250),
        pong_timeout: Duration::from_millis(700),
        ..Config::default()
    }
}

/// A raw client that completes the handshake and then never reads or answers pings.
async fn silent_client(server: &TestServer) -> TcpStream {
    raw_upgrade(server.addr, "/ws/btcusdt@trade").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_terminated_and_live_ones_kept() {
    let server = TestServer::start(quick_heartbeat()).await;
    let mut silent = silent_client(&server).await;
    let mut live = server.connect("/ws").await;
    // A live client keeps reading, which makes tungstenite answer every ping.
    let (stop_reading, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => return live,
                message = live.next() => assert!(matches!(message, Some(Ok(_))), "live client lost: {message:?}"),
            }
        }
    });

    // The silent client is pinged, never answers, and is dropped without a close frame.
    let mut received = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    let mut chunk = [0u8; 4096];
    loop {
        match timeout_at(deadline, silent.read(&mut chunk))
            .await
            .expect("terminated in time")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(
        received.windows(2).any(|w| w == [0x89, 0x00]),
        "the server pinged before giving up"
    );
    server
        .wait_metric("bookcast_closes_total", "code=\"1006\"", 1.0)
        .await;

    // The reading client answered every ping, so it outlived several pong timeouts.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop_reading.send(()).unwrap();
    let mut live = reader.await.unwrap();
    let reply = request(&mut live, r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#).await;
    assert_eq!(reply["result"], serde_json::json!([]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pings_get_pongs_with_the_payload() {
    let server = TestServer::start(Config::default()).await;
    let mut ws = server.connect("/ws").await;
    ws.send(Message::Ping(b"hello".to_vec().into()))
        .await
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        match timeout_at(deadline, ws.next()).await.expect("pong in time") {
            Some(Ok(Message::Pong(payload))) => {
                assert_eq!(&payload[..], b"hello");
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_five_messages_a_second_closes_with_4002() {
    let server = TestServer::start(Config::default()).await;
    let mut ws = server.connect("/ws").await;
    for id in 0..8 {
        let _ = ws
            .send(Message::text(format!(
                r#"{{"method":"LIST_SUBSCRIPTIONS","id":{id}}}"#
            )))
            .await;
    }
    assert_eq!(close_code(&mut ws).await, Some(4002));
    server
        .wait_metric("bookcast_closes_total", "code=\"4002\"", 1.0)
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetime_ends_with_4009() {
    let config = Config {
        max_lifetime: Duration::from_millis(300),
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let mut ws = server.connect("/ws/btcusdt@depth").await;
    assert_eq!(close_code(&mut ws).await, Some(4009));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_sends_server_shutdown_then_1001() {
    let server = TestServer::start(Config::default()).await;
    let mut raw = server
        .connect("/ws/btcusdt@depth@0ms?timeUnit=MICROSECOND")
        .await;
    let mut combined = server.connect("/stream?streams=btcusdt@trade").await;
    next_json(&mut raw).await;
    let stopping = tokio::spawn(server.stop());
    let event = next_matching(&mut raw, |v| v["e"] == "serverShutdown").await;
    assert!(
        event["E"].as_u64().unwrap() > 1_000_000_000_000_000,
        "µs as asked"
    );
    assert_eq!(close_code(&mut raw).await, Some(1001));
    let wrapped = next_matching(&mut combined, |v| v["stream"] == "!serverShutdown").await;
    assert_eq!(wrapped["data"]["e"], "serverShutdown");
    assert_eq!(close_code(&mut combined).await, Some(1001));
    drop((raw, combined));
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_is_echoed() {
    let server = TestServer::start(Config::default()).await;
    let mut ws = server.connect("/ws/btcusdt@depth").await;
    ws.close(None).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        match timeout_at(deadline, ws.next())
            .await
            .expect("close completes in time")
        {
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("close handshake failed: {e}"),
        }
    }
    server
        .wait_metric("bookcast_closes_total", "code=\"1000\"", 1.0)
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_attempts_per_ip_are_limited_with_429() {
    let config = Config {
        max_connection_attempts_per_ip: 2,
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let _first = server.connect("/ws").await;
    let _second = server.connect("/ws").await;
    match tokio_tungstenite::connect_async(server.ws_url("/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429)
        }
        other => panic!("expected HTTP 429, got {other:?}"),
    }
    assert_eq!(
        server.get("/api/v3/ping").await.0,
        200,
        "REST is not counted"
    );
    server
        .wait_metric(
            "bookcast_connections_rejected_total",
            "reason=\"ip_attempt_limit\"",
            1.0,
        )
        .await;
    server.stop().await;
}
