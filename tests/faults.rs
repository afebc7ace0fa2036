//! Clients that vanish without a goodbye, a thousand at a time, over real sockets: the server
//! must notice every one, free its connection, its subscriptions and its file descriptor, and
//! keep a healthy subscriber's diff stream gap-free meanwhile.
//!
//! Three ways to vanish, all at once:
//! - silent: the peer completes the upgrade, then never reads and never answers a ping (a
//!   dropped-packet or frozen peer). Its tiny receive buffer and the server's tiny send buffer
//!   fill within a fraction of a second, so the writer is stuck on a full socket when the
//!   heartbeat (`pong_timeout`) has to end it.
//! - aborted: the peer resets the connection (`SO_LINGER` 0, then close) right after its first
//!   event.
//! - stalled handshake: the peer opens TCP and sends half a request head, or nothing; the
//!   handshake deadline (408) or the idle deadline (a silent close) has to end it.
//!
//! One test, not one per kind: metrics and `/proc/self/fd` are process-wide, and tests in one
//! binary run in parallel.

mod common;

use bookcast::config::Config;
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Vanishing WebSocket clients (half silent, half aborted).
const VANISHING: usize = 1000;
/// Peers that never finish their request head.
const STALLED_HANDSHAKES: usize = 50;
/// Streams for the silent clients: busy ones, so their buffers fill fast.
const BUSY: &str =
    "/stream?streams=btcusdt@depth@0ms/btcusdt@depth20@100ms/ethusdt@depth@0ms/btcusdt@trade";

fn config() -> Config {
    Config {
        // 250 ms, not 200: the healthy client's pongs count against the 5 messages/s limit.
        ping_interval: Duration::from_millis(250),
        pong_timeout: Duration::from_secs(1),
        handshake_timeout: Duration::from_secs(1),
        // Tiny send buffers: a silent peer's socket is full almost at once.
        socket_send_buffer: 4096,
        max_connection_attempts_per_ip: 0,
        ..Config::default()
    }
}

/// Open file descriptors of this process (the server's sockets and the test's alike).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

/// Waits until the metric (summed over its labels) equals `want`: gauges that must come back
/// down, where `TestServer::wait_metric`'s "at least" does not fit.
async fn wait_metric_eq(server: &TestServer, name: &str, want: f64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let value = server.metric(name, "").await;
        if value == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed at {value}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw client that upgrades to `path`, reads the 101 head and then never reads again nor
/// answers a ping. Its receive buffer is as small as the kernel allows.
async fn silent_client(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = raw_upgrade_small_buffer(addr, path).await;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = Instant::now() + PATIENCE;
    // Byte by byte, so nothing past the head is consumed: every frame stays in the kernel.
    while !head.ends_with(b"\r\n\r\n") {
        let n = timeout_at(deadline, stream.read(&mut byte))
            .await
            .expect("101 in time")
            .expect("read head");
        assert_eq!(n, 1, "closed during the handshake");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// A client that subscribes (in the URL or with SUBSCRIBE), waits for its first event, and
/// then resets the connection instead of closing it.
async fn aborted_client(server_url: String, by_url: bool) {
    let addr: SocketAddr = server_url["ws://".len()..]
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("address in URL");
    let stream = TcpStream::connect(addr).await.expect("connect");
    let url = if by_url {
        format!("{server_url}/ws/ethusdt@depth@0ms/xrpusdt@trade")
    } else {
        format!("{server_url}/ws")
    };
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("upgrade");
    if !by_url {
        ws.send(Message::text(
            r#"{"method":"SUBSCRIBE","params":["ethusdt@depth@0ms","xrpusdt@trade"],"id":1}"#,
        ))
        .await
        .expect("SUBSCRIBE");
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let message = timeout_at(deadline, ws.next())
            .await
            .expect("an event in time");
        match message {
            Some(Ok(Message::Text(text))) if text.contains("\"e\":") => break,
            Some(Ok(_)) => continue,
            other => panic!("aborted client lost before its first event: {other:?}"),
        }
    }
    ws.get_ref().set_zero_linger().expect("SO_LINGER 0");
    drop(ws);
}

/// A peer that opens TCP and sends part of a request head (or nothing), then waits.
async fn stalled_handshake(addr: SocketAddr, partial: bool) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    if partial {
        stream
            .write_all(b"GET /ws/btcusdt@depth HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("partial head");
    }
    stream
}

/// Reads and discards until EOF or reset: proof from the peer's side that the server closed.
async fn read_to_end(mut stream: TcpStream) {
    let deadline = Instant::now() + PATIENCE;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("the server closes the vanished connection")
        {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_clients_are_all_reaped_and_a_healthy_one_sees_no_gap() {
    // Each vanishing client costs two descriptors here (both ends live in this process).
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("RLIMIT_NOFILE");
    let needed = 2 * (VANISHING + STALLED_HANDSHAKES) as u64 + 256;
    assert!(
        limit >= needed,
        "open-file limit {limit} < {needed}: raise ulimit -Hn"
    );

    let server = TestServer::start(config()).await;
    let base_url = format!("ws://{}", server.addr);

    // The healthy subscriber checks real-time diff continuity throughout.
    let mut healthy = server.connect("/ws/btcusdt@depth@0ms").await;
    let (stop_healthy, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let healthy_reader = tokio::spawn(async move {
        let (mut last_u, mut diffs) = (0u64, 0u64);
        loop {
            tokio::select! {
                _ = &mut stopped => return (healthy, diffs),
                message = healthy.next() => {
                    let Some(Ok(Message::Text(text))) = message else {
                        assert!(matches!(message, Some(Ok(_))), "healthy client lost: {message:?}");
                        continue;
                    };
                    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                    let (first, last) = (value["U"].as_u64().expect("U"), value["u"].as_u64().expect("u"));
                    assert!(last_u == 0 || first == last_u + 1, "healthy client gap: {last_u} -> {first}");
                    last_u = last;
                    diffs += 1;
                }
            }
        }
    });
    wait_metric_eq(&server, "bookcast_connections_open", 1.0).await;
    wait_metric_eq(&server, "bookcast_subscriptions", 1.0).await;
    let fd_baseline = open_fds();
    let accepted_before = server
        .metric("bookcast_connections_accepted_total", "")
        .await;
    let abnormal_before = server
        .metric("bookcast_closes_total", "code=\"1006\"")
        .await;

    // Vanish, a thousand at a time (at most 100 handshakes in flight).
    let gate = std::sync::Arc::new(Semaphore::new(100));
    let mut silent = JoinSet::new();
    let mut aborted = JoinSet::new();
    for i in 0..VANISHING {
        let permit = gate.clone().acquire_owned().await.expect("semaphore");
        if i % 2 == 0 {
            let addr = server.addr;
            silent.spawn(async move {
                let stream = silent_client(addr, BUSY).await;
                drop(permit);
                stream
            });
        } else {
            let url = base_url.clone();
            aborted.spawn(async move {
                aborted_client(url, i % 4 == 1).await;
                drop(permit);
            });
        }
    }
    let mut stalled = Vec::new();
    for i in 0..STALLED_HANDSHAKES {
        stalled.push(stalled_handshake(server.addr, i % 2 == 0).await);
    }
    let silent: Vec<TcpStream> = silent.join_all().await;
    aborted.join_all().await;
    let accepted = server
        .metric("bookcast_connections_accepted_total", "")
        .await;
    assert_eq!(
        accepted - accepted_before,
        VANISHING as f64,
        "every client upgraded"
    );

    // The server notices all of them: connections and subscriptions fall back to the healthy
    // client's, and every vanished connection was recorded as ended without a close.
    wait_metric_eq(&server, "bookcast_connections_open", 1.0).await;
    wait_metric_eq(&server, "bookcast_subscriptions", 1.0).await;
    let abnormal = server
        .metric("bookcast_closes_total", "code=\"1006\"")
        .await;
    assert_eq!(
        abnormal - abnormal_before,
        VANISHING as f64,
        "all ended as 1006"
    );
    // Half the stalled peers sent part of a head (408), half nothing at all (closed silently).
    server
        .wait_metric(
            "bookcast_connections_rejected_total",
            "reason=\"handshake_timeout\"",
            (STALLED_HANDSHAKES / 2) as f64,
        )
        .await;
    server
        .wait_metric(
            "bookcast_connections_rejected_total",
            "reason=\"idle_timeout\"",
            (STALLED_HANDSHAKES / 2) as f64,
        )
        .await;

    // From the peers' side too: each silent and stalled socket reaches EOF (after whatever was
    // in flight). Then, with our ends dropped, no descriptor is left behind in the server.
    let mut drains = JoinSet::new();
    for stream in silent.into_iter().chain(stalled) {
        drains.spawn(read_to_end(stream));
    }
    drains.join_all().await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let fds = open_fds();
        if fds <= fd_baseline {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{fds} descriptors open, {fd_baseline} before"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The healthy client rode it out: a steady gap-free stream the whole time.
    stop_healthy.send(()).expect("healthy reader running");
    let (mut healthy, diffs) = healthy_reader.await.expect("healthy client saw no gap");
    assert!(diffs > 50, "healthy client got only {diffs} diffs");
    healthy.close(None).await.expect("close");
    let deadline = Instant::now() + PATIENCE;
    while let Ok(Some(Ok(_))) = timeout_at(deadline, healthy.next()).await {}
    wait_metric_eq(&server, "bookcast_connections_open", 0.0).await;
    wait_metric_eq(&server, "bookcast_subscriptions", 0.0).await;
    server.stop().await;
}
