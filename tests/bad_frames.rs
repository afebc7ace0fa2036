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
