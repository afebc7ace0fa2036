//! The live page's data and assets: `!stats@1s` over a real socket, and `/dashboard` served
//! with everything it references. (The page itself is driven in a browser by
//! tests/browser/dashboard.mjs.)

mod common;

use bookcast::config::Config;
use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// A GET returning status, headers (lower-cased names) and body.
async fn get_full(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    timeout_at(Instant::now() + PATIENCE, stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

#[tokio::test]
async fn the_page_and_every_asset_it_names_are_served() {
    let server = TestServer::start(Config::default()).await;
    let (status, headers, page) = get_full(server.addr, "/dashboard").await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type").starts_with("text/html"));
    let csp = header(&headers, "content-security-policy");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let assets: Vec<&str> = page
        .split('"')
        .filter(|s| s.starts_with("/dashboard/"))
        .collect();
    assert!(assets.len() >= 4, "{assets:?}");
    for asset in assets {
        let (status, headers, body) = get_full(server.addr, asset).await;
        assert_eq!(status, 200, "{asset}");
        assert!(!body.is_empty(), "{asset}");
        let kind = header(&headers, "content-type");
        if asset.ends_with(".js") {
            assert!(kind.starts_with("text/javascript"), "{asset}: {kind}");
        } else if asset.ends_with(".css") {
            assert!(kind.starts_with("text/css"), "{asset}: {kind}");
        }
    }
    let (status, _, _) = get_full(server.addr, "/dashboard/nope.js").await;
    assert_eq!(status, 404);
    server.stop().await;
}

/// Waits for a `serverStats` event satisfying `want`.
async fn stats_until(ws: &mut Ws, mut want: impl FnMut(&Value) -> bool) -> Value {
    next_matching(ws, |m| {
        let data = &m["data"];
        assert_eq!(m["stream"], "!stats@1s", "{m}");
        assert_eq!(data["e"], "serverStats", "{m}");
        want(data)
    })
    .await["data"]
        .clone()
}

#[tokio::test]
async fn the_stats_stream_reports_connections_delivery_and_latency() {
    let server = TestServer::start(Config::default()).await;
    let mut stats = server
        .connect("/stream?streams=!stats@1s&timeUnit=MICROSECOND")
        .await;
    let mut subscriber = server.connect("/ws/btcusdt@depth@0ms").await;
    // Keep the subscriber reading so its frames are delivered, not queued.
    let reader = tokio::spawn(async move {
        while let Some(Ok(_)) = futures_util::StreamExt::next(&mut subscriber).await {}
    });

    let busy = stats_until(&mut stats, |d| {
        d["connections"] == 2 && d["framesPerSec"].as_u64() > Some(0)
    })
    .await;
    // E in the requested unit (µs: 16 digits).
    assert!(
        busy["E"].as_u64().unwrap() > 1_000_000_000_000_000,
        "{busy}"
    );
    assert!(busy["engineUpdatesPerSec"].as_u64() > Some(0), "{busy}");
    assert!(
        busy["bytesPerSec"].as_u64() > busy["framesPerSec"].as_u64(),
        "{busy}"
    );
    assert_eq!(busy["slowConsumerDisconnects"], 0);
    let latency = &busy["latencyUs"];
    assert!(latency["count"].as_u64() > Some(0), "{busy}");
    let p = |k: &str| latency[k].as_u64().expect("a number");
    assert!(p("p50") <= p("p99") && p("p99") <= p("p999") && p("p999") <= p("max"));

    reader.abort();
    let _ = reader.await;
    stats_until(&mut stats, |d| d["connections"] == 1).await;
    server.stop().await;
}

#[tokio::test]
async fn the_stats_stream_can_be_subscribed_and_listed() {
    let server = TestServer::start(Config::default()).await;
    let mut ws = server.connect("/ws").await;
    let reply = request(
        &mut ws,
        r#"{"method":"SUBSCRIBE","params":["!stats@1s"],"id":1}"#,
    )
    .await;
    assert_eq!(reply["result"], Value::Null, "{reply}");
    let event = next_matching(&mut ws, |m| m["e"] == "serverStats").await;
    assert!(
        event.get("s").is_none(),
        "server-wide: no symbol field: {event}"
    );
    let list = request(&mut ws, r#"{"method":"LIST_SUBSCRIPTIONS","id":2}"#).await;
    assert_eq!(list["result"], serde_json::json!(["!stats@1s"]));
    server.stop().await;
}
