//! The write path's hand-off over a real socket (its own test binary, so the process-wide
//! metrics it waits on are this test's alone).

mod common;

use bookcast::config::Config;
use common::*;
use futures_util::StreamExt;
use tokio::net::TcpSocket;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// The write path's hand-off: a reader that pauses fills its socket, the shard's direct write
/// meets `WouldBlock` and hands the backlog to the connection's task, which drains it once the
/// reader resumes; the reader then sees every diff in order, with no gap, and is not evicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_reader_is_handed_to_its_task_and_catches_up_with_no_gap() {
    let config = Config {
        socket_send_buffer: 4096,
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let url = server.ws_url("/stream?streams=btcusdt@depth@0ms/btcusdt@trade");
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (mut paused, _) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .unwrap();

    // Not reading: the kernel buffers fill and the next direct write cannot finish.
    server
        .wait_metric("bookcast_write_handoffs_total", "", 1.0)
        .await;

    let deadline = Instant::now() + PATIENCE;
    let (mut last_u, mut diffs) = (0u64, 0u32);
    while diffs < 300 {
        let message = tokio::time::timeout_at(deadline, paused.next())
            .await
            .expect("the backlog drains in time");
        let Some(Ok(Message::Text(text))) = message else {
            panic!("paused reader lost its stream: {message:?}");
        };
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        if value["stream"] == "btcusdt@depth@0ms" {
            let first = value["data"]["U"].as_u64().unwrap();
            assert!(
                last_u == 0 || first == last_u + 1,
                "gap after the hand-off: {last_u} -> {first}"
            );
            last_u = value["data"]["u"].as_u64().unwrap();
            diffs += 1;
        }
    }
    assert_eq!(
        server
            .metric("bookcast_slow_consumer_disconnects_total", "")
            .await,
        0.0,
        "caught up, not evicted"
    );
    drop(paused);
    server.stop().await;
}
