//! Bad REST requests over a real socket: Binance's error codes and HTTP statuses, each counted in
//! `bookcast_http_requests_total{path,status}` under a bounded set of path labels.

mod common;

use bookcast::config::Config;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;

/// The only path label values the REST metric may ever have.
const PATH_LABELS: &[&str] = &[
    "/api/v3/ping",
    "/api/v3/time",
    "/api/v3/exchangeInfo",
    "/api/v3/depth",
    "/api/v3/trades",
    "/api/v3/aggTrades",
    "/api/v3/klines",
    "/api/v3/avgPrice",
    "/api/v3/ticker/24hr",
    "/api/v3/ticker/price",
    "/api/v3/ticker/bookTicker",
    "/api/v3/ticker",
    "/metrics",
    "other",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_get_binance_error_codes() {
    let server = TestServer::start(Config::default()).await;
    let illegal_symbol =
        "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'.";
    let cases: &[(&str, u16, i64, Option<&str>)] = &[
        // Missing or empty symbol.
        ("/api/v3/depth", 400, -1102, None),
        ("/api/v3/depth?symbol=", 400, -1102, None),
        ("/api/v3/depth?limit=5", 400, -1102, None),
        ("/api/v3/exchangeInfo?symbol=", 400, -1102, None),
        // Well formed but unknown: -1121.
        (
            "/api/v3/depth?symbol=NOPE",
            400,
            -1121,
            Some("Invalid symbol."),
        ),
        ("/api/v3/depth?symbol=BTCUSDT2", 400, -1121, None),
        ("/api/v3/exchangeInfo?symbol=BAD", 400, -1121, None),
        (
            "/api/v3/exchangeInfo?symbols=%5B%22BTCUSDT%22,%22NOPE%22%5D",
            400,
            -1121,
            None,
        ),
        // Not symbol-shaped (lower case, too long, odd characters): -1100, as Binance.
        (
            "/api/v3/depth?symbol=btcusdt",
            400,
            -1100,
            Some(illegal_symbol),
        ),
        (
            "/api/v3/depth?symbol=ABCDEFGHIJKLMNOPQRSTU",
            400,
            -1100,
            None,
        ),
        ("/api/v3/depth?symbol=BTC%2FUSDT", 400, -1100, None),
        ("/api/v3/depth?symbol=BTC%00USDT", 400, -1100, None),
        ("/api/v3/depth?symbol=%E2%82%BFUSDT", 400, -1100, None),
        (
            "/api/v3/exchangeInfo?symbol=bad!",
            400,
            -1100,
            Some(illegal_symbol),
        ),
        (
            "/api/v3/exchangeInfo?symbols=%5B%22btcusdt%22%5D",
            400,
            -1100,
            None,
        ),
        // limit: digits only, 1 or more; larger than 5000 is truncated, not refused.
        ("/api/v3/depth?symbol=BTCUSDT&limit=0", 400, -1100, None),
        ("/api/v3/depth?symbol=BTCUSDT&limit=-5", 400, -1100, None),
        ("/api/v3/depth?symbol=BTCUSDT&limit=%2B5", 400, -1100, None),
        ("/api/v3/depth?symbol=BTCUSDT&limit=abc", 400, -1100, None),
        ("/api/v3/depth?symbol=BTCUSDT&limit=1.5", 400, -1100, None),
        ("/api/v3/depth?symbol=BTCUSDT&limit=", 400, -1100, None),
        (
            "/api/v3/depth?symbol=BTCUSDT&limit=123456789012345678901",
            400,
            -1100,
            None,
        ),
        // Unknown paths and methods.
        ("/api/v3/nothing", 404, -1000, None),
        ("/api/v3/depth/", 404, -1000, None),
        ("/api/v1/depth?symbol=BTCUSDT", 404, -1000, None),
        ("/", 404, -1000, None),
    ];
    for &(path, status, code, msg) in cases {
        let (got, body) = server.get(path).await;
        assert_eq!(got, status, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(body["code"], code, "{path}: {body}");
        assert!(body["msg"].is_string(), "{path}");
        if let Some(msg) = msg {
            assert_eq!(body["msg"], msg, "{path}");
        }
    }
    for limit in ["5001", "99999999999999999999"] {
        let path = format!("/api/v3/depth?symbol=XRPUSDT&limit={limit}");
        let (status, body) = server.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    server
        .wait_metric(
            "bookcast_http_requests_total",
            "path=\"/api/v3/depth\",status=\"400\"",
            17.0,
        )
        .await;
    server
        .wait_metric(
            "bookcast_http_requests_total",
            "path=\"/api/v3/exchangeInfo\",status=\"400\"",
            5.0,
        )
        .await;
    server.stop().await;
}

/// Every unknown path is counted under `path="other"`: scanning cannot create series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_share_one_metric_label() {
    let server = TestServer::start(Config::default()).await;
    for i in 0..40 {
        let (status, _) = server.get(&format!("/scan/{i}/wp-login.php?x={i}")).await;
        assert_eq!(status, 404);
    }
    let mut post = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut post,
        b"POST /api/v3/order HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(
        PATIENCE,
        tokio::io::AsyncReadExt::read_to_end(&mut post, &mut raw),
    )
    .await
    .expect("answered in time")
    .unwrap();
    assert!(raw.starts_with(b"HTTP/1.1 405 "));
    server
        .wait_metric(
            "bookcast_http_requests_total",
            "path=\"other\",status=\"404\"",
            40.0,
        )
        .await;
    server
        .wait_metric(
            "bookcast_http_requests_total",
            "path=\"other\",status=\"405\"",
            1.0,
        )
        .await;
    let (_, exposition) = server.get("/metrics").await;
    let paths: BTreeSet<&str> = exposition
        .lines()
        .filter(|l| l.starts_with("bookcast_http_requests_total{"))
        .filter_map(|l| l.split("path=\"").nth(1)?.split('"').next())
        .collect();
    assert!(
        paths.iter().all(|p| PATH_LABELS.contains(p)),
        "unexpected path labels: {paths:?}"
    );
    server.stop().await;
}
