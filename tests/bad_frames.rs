//! Frames a client must not send get the RFC 6455 close code, written before the socket closes.

mod common;

use bookcast::config::Config;
use common::*;
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Opens a raw WebSocket (handshake by hand) and returns the stream after the 101 head.
async fn raw_ws(server: &TestServer) -> TcpStream {
    let mut stream = raw_upgrade(server.addr, "/ws").await;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    stream
}

/// A masked client frame.
fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![first_byte];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads server frames until a close frame; returns its code.
async fn read_close_code(stream: &mut TcpStream) -> u16 {
    let deadline = Instant::now() + PATIENCE;
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Scan complete frames for a close (server frames are unmasked).
        let mut at = 0;
        while data.len() >= at + 2 {
            let (opcode, len7) = (data[at] & 0x0f, usize::from(data[at + 1] & 0x7f));
            let (len, header) = match len7 {
                126 if data.len() >= at + 4 => (
                    usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]])),
                    4,
                ),
                126 => break,
                127 => panic!("unexpected huge frame"),
                n => (n, 2),
            };
            if data.len() < at + header + len {
                break;
            }
            if opcode == 0x8 {
                let payload = &data[at + header..at + header + len];
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
            at += header + len;
        }
        let n = timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("close frame in time")
            .unwrap_or(0);
        assert!(n > 0, "connection closed without a close frame");
        data.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_get_1003() {
    let server = TestServer::start(Config::default()).await;
    let mut ws = server.connect("/ws").await;
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1003));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_4_kib_get_1009() {
    let server = TestServer::start(Config::default()).await;
    let mut stream = raw_ws(&server).await;
    stream
        .write_all(&client_frame(0x81, &[b' '; 5000]))
        .await
        .unwrap();
    assert_eq!(read_close_code(&mut stream).await, 1009);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_gets_1007() {
    let server = TestServer::start(Config::default()).await;
    let mut stream = raw_ws(&server).await;
    stream
        .write_all(&client_frame(0x81, b"{\"a\":\"\xff\xfe\"}"))
        .await
        .unwrap();
    assert_eq!(read_close_code(&mut stream).await, 1007);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_opcodes_get_1002() {
    let server = TestServer::start(Config::default()).await;
    let mut stream = raw_ws(&server).await;
    stream.write_all(&client_frame(0x83, b"x")).await.unwrap();
    assert_eq!(read_close_code(&mut stream).await, 1002);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_route_exists_only_with_its_test_flag() {
    let server = TestServer::start(Config::default()).await;
    match tokio_tungstenite::connect_async(server.ws_url("/echo")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("expected 404 without --test-echo-route, got {other:?}"),
    }
    server.stop().await;

    let server = TestServer::start(Config {
        test_echo_route: true,
        ..Config::default()
    })
    .await;
    let mut ws = server.connect("/echo").await;
    let big = "x".repeat(100_000);
    ws.send(Message::text(big.clone())).await.unwrap();
    ws.send(Message::Binary(vec![0u8, 159, 146, 150].into()))
        .await
        .unwrap();
    let mut echoed = Vec::new();
    while echoed.len() < 2 {
        match tokio::time::timeout(PATIENCE, futures_util::StreamExt::next(&mut ws))
            .await
            .expect("echo in time")
        {
            Some(Ok(Message::Text(text))) => echoed.push(Message::Text(text)),
            Some(Ok(Message::Binary(data))) => echoed.push(Message::Binary(data)),
            Some(Ok(_)) => {}
            other => panic!("echo route ended: {other:?}"),
        }
    }
    assert_eq!(
        echoed[0],
        Message::text(big),
        "text over the 4 KiB stream limit is echoed whole"
    );
    assert_eq!(echoed[1], Message::Binary(vec![0u8, 159, 146, 150].into()));
    server.stop().await;
}

/// A client frame sent without a mask, as only servers may (RFC 6455 §5.1).
fn unmasked_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![first_byte, payload.len() as u8];
    frame.extend_from_slice(payload);
    frame
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    payload
}

/// A healthy subscriber to `btcusdt@depth@0ms` (real time) that checks every diff continues
/// the last one (`U == prev u + 1`) and publishes how many it has seen; it panics on a gap or a
/// lost connection.
struct Witness {
    seen: tokio::sync::watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Witness {
    async fn start(server: &TestServer) -> Witness {
        let mut ws = server.connect("/ws/btcusdt@depth@0ms").await;
        let (count, seen) = tokio::sync::watch::channel(0u64);
        let task = tokio::spawn(async move {
            let mut last_u = 0u64;
            loop {
                let event = next_json(&mut ws).await;
                let (first, last) = (event["U"].as_u64().unwrap(), event["u"].as_u64().unwrap());
                assert!(
                    last_u == 0 || first == last_u + 1,
                    "gap: U {first} after u {last_u}"
                );
                last_u = last;
                count.send_modify(|n| *n += 1);
            }
        });
        Witness { seen, task }
    }

    /// Waits until `more` further events have arrived, each continuing the last.
    async fn sees_more(&mut self, more: u64) {
        let target = *self.seen.borrow() + more;
        let waited = timeout_at(
            Instant::now() + PATIENCE,
            self.seen.wait_for(|n| *n >= target),
        );
        assert!(
            matches!(waited.await, Ok(Ok(_))),
            "the witness stopped receiving (or found a gap)"
        );
    }
}

/// Every RFC 6455 protocol violation a client can commit in one frame (or two) gets a 1002
/// close, one connection each, while a healthy subscriber on the same server keeps receiving
/// gap-free diffs throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_get_1002_and_a_healthy_subscriber_sees_no_gap() {
    let server = TestServer::start(Config::default()).await;
    let mut witness = Witness::start(&server).await;
    witness.sees_more(5).await;

    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("unmasked text".into(), unmasked_frame(0x81, b"{}")),
        ("unmasked ping".into(), unmasked_frame(0x89, b"")),
        ("RSV1 set".into(), client_frame(0xC1, b"{}")),
        ("RSV2 set".into(), client_frame(0xA1, b"{}")),
        ("RSV3 set".into(), client_frame(0x91, b"{}")),
        ("ping with FIN=0".into(), client_frame(0x09, b"x")),
        (
            "close with FIN=0".into(),
            client_frame(0x08, &close_payload(1000, b"")),
        ),
        ("continuation first".into(), client_frame(0x80, b"x")),
        ("continuation first, FIN=0".into(), client_frame(0x00, b"x")),
        (
            "new text inside a fragmented one".into(),
            [client_frame(0x01, b"{"), client_frame(0x81, b"}")].concat(),
        ),
        (
            "ping over 125 bytes".into(),
            client_frame(0x89, &[b'p'; 126]),
        ),
        (
            "pong over 125 bytes".into(),
            client_frame(0x8A, &[b'p'; 126]),
        ),
        (
            "close over 125 bytes".into(),
            client_frame(0x88, &close_payload(1000, &[b'r'; 124])),
        ),
        (
            "close with a 1-byte payload".into(),
            client_frame(0x88, &[0x03]),
        ),
    ];
    // RFC 6455 §7.4: below 1000 is unused, 1004-1006 and 1015 must never be sent, 1016-2999 are
    // reserved for the protocol (1014, registered later, is refused by tungstenite too), and
    // nothing above 4999 exists.
    for code in [
        0u16, 999, 1004, 1005, 1006, 1014, 1015, 1016, 2999, 5000, 65535,
    ] {
        cases.push((
            format!("close code {code}"),
            client_frame(0x88, &close_payload(code, b"")),
        ));
    }
    for (what, bytes) in &cases {
        let mut stream = raw_ws(&server).await;
        stream.write_all(bytes).await.unwrap();
        assert_eq!(read_close_code(&mut stream).await, 1002, "{what}");
    }
    server
        .wait_metric("bookcast_closes_total", "code=\"1002\"", cases.len() as f64)
        .await;
    witness.sees_more(20).await;
    assert!(!witness.task.is_finished());
    witness.task.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_frames_with_valid_codes_are_echoed_and_a_bad_reason_gets_1007() {
    let server = TestServer::start(Config::default()).await;
    for code in [1000u16, 1001, 1003, 1011, 3000, 4000, 4999] {
        let mut stream = raw_ws(&server).await;
        stream
            .write_all(&client_frame(0x88, &close_payload(code, b"bye")))
            .await
            .unwrap();
        assert_eq!(read_close_code(&mut stream).await, code);
    }
    let mut stream = raw_ws(&server).await;
    stream
        .write_all(&client_frame(0x88, &close_payload(1000, b"\xff\xfe")))
        .await
        .unwrap();
    assert_eq!(read_close_code(&mut stream).await, 1007);
    // Echoed application codes share one label: a client cannot mint a series per code.
    server
        .wait_metric("bookcast_closes_total", "code=\"other\"", 2.0)
        .await;
    let (_, exposition) = server.get("/metrics").await;
    assert!(
        !exposition.contains("code=\"3000\"") && !exposition.contains("code=\"4999\""),
        "{exposition}"
    );
    // Gone before the stop, so the stop need not wait out the close timeout.
    drop(stream);
    server.stop().await;
}

/// The 4 KiB bound holds for a message sent in small fragments, not just for one big frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_message_over_4_kib_gets_1009() {
    let server = TestServer::start(Config::default()).await;
    let mut stream = raw_ws(&server).await;
    let piece = [b' '; 1024];
    let mut frames = client_frame(0x01, &piece);
    for _ in 0..4 {
        frames.extend(client_frame(0x00, &piece));
    }
    frames.extend(client_frame(0x80, &piece));
    stream.write_all(&frames).await.unwrap();
    assert_eq!(read_close_code(&mut stream).await, 1009);
    drop(stream);
    server.stop().await;
}
