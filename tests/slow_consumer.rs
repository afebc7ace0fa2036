//! A subscriber that stops reading is closed with 4008 while a reading subscriber on the same
//! streams sees no gap, and the server's memory stays bounded meanwhile.

mod common;

use bookcast::config::Config;
use common::*;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::net::TcpSocket;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const STREAMS: &str = "btcusdt@depth@0ms/btcusdt@depth20@100ms/btcusdt@trade/btcusdt@bookTicker/ethusdt@depth@0ms/ethusdt@depth20@100ms/xrpusdt@depth20@100ms";

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_closed_with_4008_and_the_fast_one_sees_no_gap() {
    let bound = 64 * 1024;
    let config = Config {
        queue_bytes: bound,
        socket_send_buffer: 4096,
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let url = server.ws_url(&format!("/stream?streams={STREAMS}"));

    // The slow client: tiny receive buffer, and it does not read until told to.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .unwrap();

    // The fast client on the same streams checks real-time diff continuity as it goes.
    let mut fast = server.connect(&format!("/stream?streams={STREAMS}")).await;
    let (stop_fast, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let fast_reader = tokio::spawn(async move {
        let mut last_u = 0u64;
        let mut diffs = 0u64;
        loop {
            tokio::select! {
                _ = &mut stopped => return diffs,
                message = fast.next() => {
                    let Some(Ok(Message::Text(text))) = message else {
                        assert!(matches!(message, Some(Ok(_))), "fast client lost: {message:?}");
                        continue;
                    };
                    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                    if value["stream"] == "btcusdt@depth@0ms" {
                        let (first, last) = (value["data"]["U"].as_u64().unwrap(), value["data"]["u"].as_u64().unwrap());
                        assert!(last_u == 0 || first == last_u + 1, "fast client gap: {last_u} -> {first}");
                        last_u = last;
                        diffs += 1;
                    }
                }
            }
        }
    });

    let baseline = rss_bytes();
    server
        .wait_metric("bookcast_slow_consumer_disconnects_total", "", 1.0)
        .await;
    let during = rss_bytes();
    assert!(
        during < baseline + 32 * 1024 * 1024,
        "RSS grew from {baseline} to {during} while a consumer was stalled"
    );

    // The fast one keeps receiving for a while after the eviction, still with no gap.
    let evicted_at = Instant::now();
    let before = server.metric("bookcast_frames_delivered_total", "").await;
    server
        .wait_metric("bookcast_frames_delivered_total", "", before + 200.0)
        .await;
    assert!(evicted_at.elapsed() < Duration::from_secs(10));
    stop_fast.send(()).unwrap();
    let diffs = fast_reader.await.expect("fast client saw no gap");
    assert!(diffs > 50, "fast client got only {diffs} diffs");

    // The slow one now reads what was already in flight, then the close frame.
    let deadline = Instant::now() + PATIENCE;
    let close = loop {
        let message = tokio::time::timeout_at(deadline, slow.next())
            .await
            .expect("close in time");
        match message {
            Some(Ok(Message::Close(frame))) => break frame.expect("a close code"),
            Some(Ok(_)) => continue,
            other => panic!("slow client ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 4008);
    assert!(
        close.reason.contains(&bound.to_string()),
        "reason names the bound: {}",
        close.reason
    );
    // Hanging up ends the server's wait for our side of the close handshake.
    drop(slow);
    server
        .wait_metric("bookcast_closes_total", "code=\"4008\"", 1.0)
        .await;
    server.stop().await;
}
