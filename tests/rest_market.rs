//! The REST market-data rows of SPEC.md over a real socket: trades, aggTrades, klines (with
//! `timeZone`), avgPrice and the tickers, their fields and types as Binance documents them,
//! their errors, `X-MBX-USED-WEIGHT-1M` and the per-IP weight limit, and the bounded history.

mod common;

use bookcast::config::Config;
use common::*;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DAY_MS: u64 = 86_400_000;

/// GET `path`: status, header block and body.
async fn get_full(server: &TestServer, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw))
        .await
        .expect("answered in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn header(head: &str, name: &str) -> Option<u64> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
}

async fn get_ok(server: &TestServer, path: &str) -> Value {
    let (status, head, body) = get_full(server, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    assert!(
        header(&head, "X-MBX-USED-WEIGHT-1M").is_some(),
        "{path}: no weight header in {head}"
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn is_decimal8(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.split_once('.').is_some_and(|(i, f)| {
            !i.is_empty() && f.len() == 8 && (i.to_owned() + f).bytes().all(|b| b.is_ascii_digit())
        })
    })
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn check_kline_row(row: &Value, span_ms: Option<u64>) -> (u64, u64) {
    let row = row.as_array().expect("a kline row is an array");
    assert_eq!(row.len(), 12, "{row:?}");
    let (open, close) = (row[0].as_u64().unwrap(), row[6].as_u64().unwrap());
    for i in [1, 2, 3, 4, 5, 7, 9, 10] {
        assert!(is_decimal8(&row[i]), "field {i} of {row:?}");
    }
    assert!(row[8].is_u64() && row[11] == "0");
    if let Some(span) = span_ms {
        assert_eq!(close - open + 1, span, "{row:?}");
    }
    (open, close)
}

const DAY_FIELDS: [&str; 21] = [
    "symbol",
    "priceChange",
    "priceChangePercent",
    "weightedAvgPrice",
    "prevClosePrice",
    "lastPrice",
    "lastQty",
    "bidPrice",
    "bidQty",
    "askPrice",
    "askQty",
    "openPrice",
    "highPrice",
    "lowPrice",
    "volume",
    "quoteVolume",
    "openTime",
    "closeTime",
    "firstId",
    "lastId",
    "count",
];
const ROLLING_FIELDS: [&str; 15] = [
    "symbol",
    "priceChange",
    "priceChangePercent",
    "weightedAvgPrice",
    "openPrice",
    "highPrice",
    "lowPrice",
    "lastPrice",
    "volume",
    "quoteVolume",
    "openTime",
    "closeTime",
    "firstId",
    "lastId",
    "count",
];
const MINI_FIELDS: [&str; 12] = [
    "symbol",
    "openPrice",
    "highPrice",
    "lowPrice",
    "lastPrice",
    "volume",
    "quoteVolume",
    "openTime",
    "closeTime",
    "firstId",
    "lastId",
    "count",
];

/// A trade seen on `@trade` is in `/api/v3/trades` with the same price and quantity, and its
/// aggregate in `/api/v3/aggTrades`: REST reads what the streams sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trades_and_agg_trades_hold_what_the_streams_sent() {
    let server = TestServer::start(Config::default()).await;
    let mut ws = server.connect("/ws/btcusdt@trade/btcusdt@aggTrade").await;
    let trade = next_matching(&mut ws, |v| v["e"] == "trade").await;
    let agg = next_matching(&mut ws, |v| v["e"] == "aggTrade").await;

    let trades = get_ok(&server, "/api/v3/trades?symbol=BTCUSDT&limit=1000").await;
    let trades = trades.as_array().unwrap();
    assert!(!trades.is_empty() && trades.len() <= 1000);
    for t in trades {
        assert_eq!(
            keys(t),
            [
                "id",
                "price",
                "qty",
                "quoteQty",
                "time",
                "isBuyerMaker",
                "isBestMatch"
            ]
        );
        assert!(is_decimal8(&t["price"]) && is_decimal8(&t["qty"]) && is_decimal8(&t["quoteQty"]));
        assert!(t["time"].is_u64() && t["isBuyerMaker"].is_boolean() && t["isBestMatch"] == true);
    }
    let ids: Vec<u64> = trades.iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive ids, oldest first"
    );
    let same = trades
        .iter()
        .find(|t| t["id"] == trade["t"])
        .expect("the streamed trade");
    assert_eq!(
        (&same["price"], &same["qty"], &same["time"]),
        (&trade["p"], &trade["q"], &trade["T"])
    );
    assert_eq!(same["isBuyerMaker"], trade["m"]);
    let last_two = get_ok(&server, "/api/v3/trades?symbol=BTCUSDT&limit=2").await;
    assert_eq!(last_two.as_array().unwrap().len(), 2);

    let from = agg["a"].as_u64().unwrap();
    let aggs = get_ok(
        &server,
        &format!("/api/v3/aggTrades?symbol=BTCUSDT&fromId={from}&limit=3"),
    )
    .await;
    let aggs = aggs.as_array().unwrap();
    assert!(!aggs.is_empty() && aggs.len() <= 3);
    // The stream's event without its head is the REST entry.
    let streamed: serde_json::Map<String, Value> = agg
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !["e", "E", "s"].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(aggs[0], Value::Object(streamed));
    assert_eq!(keys(&aggs[0]), ["a", "p", "q", "f", "l", "T", "m", "M"]);
    let t = agg["T"].as_u64().unwrap();
    let window = get_ok(
        &server,
        &format!("/api/v3/aggTrades?symbol=BTCUSDT&startTime={t}&endTime={t}"),
    )
    .await;
    let window = window.as_array().unwrap();
    assert!(window.iter().all(|a| a["T"] == t) && window.iter().any(|a| a["a"] == from));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn klines_in_utc_and_other_time_zones() {
    let server = TestServer::start(Config::default()).await;
    // Two closed 1s klines at least.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let rows = get_ok(&server, "/api/v3/klines?symbol=ETHUSDT&interval=1s&limit=3").await;
    let rows = rows.as_array().unwrap();
    assert!((2..=3).contains(&rows.len()), "{rows:?}");
    let opens: Vec<u64> = rows
        .iter()
        .map(|r| check_kline_row(r, Some(1000)).0)
        .collect();
    assert!(opens.windows(2).all(|w| w[1] == w[0] + 1000), "{opens:?}");
    let from = opens[1];
    let since = get_ok(
        &server,
        &format!("/api/v3/klines?symbol=ETHUSDT&interval=1s&startTime={from}&limit=1"),
    )
    .await;
    assert_eq!(since[0][0], from);
    let until = get_ok(
        &server,
        &format!("/api/v3/klines?symbol=ETHUSDT&interval=1s&endTime={from}"),
    )
    .await;
    assert_eq!(until.as_array().unwrap().last().unwrap()[0], from);

    for (interval, zone, span, offset_in_day) in [
        ("1m", "", Some(60_000), None),
        ("3m", "", Some(180_000), None),
        ("1d", "", Some(DAY_MS), Some(0)),
        ("1d", "&timeZone=8", Some(DAY_MS), Some(16 * 3_600_000)),
        (
            "1d",
            "&timeZone=%2B08:00",
            Some(DAY_MS),
            Some(16 * 3_600_000),
        ),
        ("1d", "&timeZone=-1:00", Some(DAY_MS), Some(3_600_000)),
        ("1h", "&timeZone=05:45", Some(3_600_000), None),
        ("1w", "", Some(7 * DAY_MS), None),
        ("1M", "", None, Some(0)),
    ] {
        let path = format!("/api/v3/klines?symbol=BTCUSDT&interval={interval}{zone}");
        let rows = get_ok(&server, &path).await;
        let rows = rows.as_array().unwrap();
        assert!(!rows.is_empty(), "{path}");
        let (open, close) = check_kline_row(rows.last().unwrap(), span);
        let now = bookcast::clock::wall_us() / 1000;
        assert!(
            open <= now && now <= close + 1000,
            "{path}: {open}..{close} vs {now}"
        );
        if let Some(offset) = offset_in_day {
            assert_eq!(open % DAY_MS, offset, "{path}");
        }
        if zone == "&timeZone=05:45" {
            assert_eq!(
                open % 3_600_000,
                15 * 60_000,
                "hours open at :15 UTC in +05:45"
            );
        }
        if interval == "1w" {
            // 1970-01-05 was a Monday.
            assert_eq!(
                (open - 4 * DAY_MS) % (7 * DAY_MS),
                0,
                "weeks open on Monday"
            );
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avg_price_and_tickers_have_binance_fields() {
    let server = TestServer::start(Config::default()).await;
    let mut ws = server.connect("/ws/btcusdt@trade").await;
    next_json(&mut ws).await;
    let avg = get_ok(&server, "/api/v3/avgPrice?symbol=BTCUSDT").await;
    assert_eq!(keys(&avg), ["mins", "price", "closeTime"]);
    assert_eq!(avg["mins"], 5);
    assert!(is_decimal8(&avg["price"]) && avg["closeTime"].is_u64());

    let day = get_ok(&server, "/api/v3/ticker/24hr?symbol=BTCUSDT").await;
    assert_eq!(keys(&day), DAY_FIELDS);
    assert!(day["count"].as_u64().unwrap() > 0 && day["firstId"].as_i64().unwrap() >= 1);
    assert!(day["priceChangePercent"].as_str().unwrap().contains('.'));
    let all = get_ok(&server, "/api/v3/ticker/24hr").await;
    assert_eq!(all.as_array().unwrap().len(), 3);
    let two = get_ok(
        &server,
        "/api/v3/ticker/24hr?symbols=%5B%22BTCUSDT%22,%22XRPUSDT%22%5D&type=MINI",
    )
    .await;
    let two = two.as_array().unwrap();
    assert_eq!((two.len(), &two[1]["symbol"]), (2, &Value::from("XRPUSDT")));
    assert_eq!(keys(&two[0]), MINI_FIELDS);

    let price = get_ok(&server, "/api/v3/ticker/price?symbol=ETHUSDT").await;
    assert_eq!(keys(&price), ["symbol", "price"]);
    assert!(is_decimal8(&price["price"]));
    assert_eq!(
        get_ok(&server, "/api/v3/ticker/price")
            .await
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let book = get_ok(&server, "/api/v3/ticker/bookTicker?symbol=BTCUSDT").await;
    assert_eq!(
        keys(&book),
        ["symbol", "bidPrice", "bidQty", "askPrice", "askQty"]
    );
    let p = |f: &str| book[f].as_str().unwrap().parse::<f64>().unwrap();
    assert!(p("bidPrice") < p("askPrice"));
    let books = get_ok(
        &server,
        "/api/v3/ticker/bookTicker?symbols=%5B%22ETHUSDT%22%5D",
    )
    .await;
    assert_eq!(books[0]["symbol"], "ETHUSDT");

    for (window, hours) in [
        ("", 24),
        ("&windowSize=1h", 1),
        ("&windowSize=30m", 0),
        ("&windowSize=7d", 168),
    ] {
        let path = format!("/api/v3/ticker?symbol=BTCUSDT{window}");
        let t = get_ok(&server, &path).await;
        assert_eq!(keys(&t), ROLLING_FIELDS, "{path}");
        let width = t["closeTime"].as_u64().unwrap() - t["openTime"].as_u64().unwrap();
        let wanted = if hours == 0 {
            1_800_000
        } else {
            hours * 3_600_000
        };
        // Minute buckets up to a day, hourly ones beyond.
        let slack = if hours > 24 { 3_600_000 } else { 60_000 };
        assert!(width >= wanted && width < wanted + slack, "{path}: {width}");
    }
    let mini = get_ok(
        &server,
        "/api/v3/ticker?symbols=%5B%22BTCUSDT%22,%22ETHUSDT%22%5D&type=MINI",
    )
    .await;
    assert_eq!(keys(&mini[1]), MINI_FIELDS);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_market_parameters_get_binance_errors() {
    let server = TestServer::start(Config::default()).await;
    let cases: &[(&str, u16, i64)] = &[
        ("/api/v3/trades", 400, -1102),
        ("/api/v3/trades?symbol=NOPE", 400, -1121),
        ("/api/v3/trades?symbol=btcusdt", 400, -1100),
        ("/api/v3/trades?symbol=BTCUSDT&limit=0", 400, -1100),
        ("/api/v3/trades?symbol=BTCUSDT&limit=x", 400, -1100),
        ("/api/v3/aggTrades?symbol=BTCUSDT&fromId=-1", 400, -1100),
        (
            "/api/v3/aggTrades?symbol=BTCUSDT&startTime=5&endTime=4",
            400,
            -1023,
        ),
        ("/api/v3/aggTrades?symbol=BTCUSDT&startTime=now", 400, -1100),
        ("/api/v3/klines?symbol=BTCUSDT", 400, -1102),
        ("/api/v3/klines?symbol=BTCUSDT&interval=", 400, -1102),
        ("/api/v3/klines?symbol=BTCUSDT&interval=2m", 400, -1120),
        ("/api/v3/klines?symbol=BTCUSDT&interval=1mo", 400, -1120),
        ("/api/v3/klines?interval=1m", 400, -1102),
        (
            "/api/v3/klines?symbol=BTCUSDT&interval=1m&timeZone=15",
            400,
            -1100,
        ),
        (
            "/api/v3/klines?symbol=BTCUSDT&interval=1m&timeZone=UTC",
            400,
            -1100,
        ),
        (
            "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=-1",
            400,
            -1100,
        ),
        ("/api/v3/avgPrice", 400, -1102),
        ("/api/v3/avgPrice?symbol=XYZ", 400, -1121),
        (
            "/api/v3/ticker/24hr?symbol=BTCUSDT&symbols=%5B%22BTCUSDT%22%5D",
            400,
            -1128,
        ),
        ("/api/v3/ticker/24hr?symbols=BTCUSDT", 400, -1100),
        ("/api/v3/ticker/24hr?symbols=%5B%22NOPE%22%5D", 400, -1121),
        ("/api/v3/ticker/24hr?symbol=BTCUSDT&type=SMALL", 400, -1100),
        ("/api/v3/ticker/price?symbol=", 400, -1102),
        ("/api/v3/ticker/bookTicker?symbol=b", 400, -1100),
        ("/api/v3/ticker", 400, -1102),
        ("/api/v3/ticker?symbol=BTCUSDT&windowSize=8d", 400, -1100),
        ("/api/v3/ticker?symbol=BTCUSDT&windowSize=60m", 400, -1100),
        ("/api/v3/ticker?symbol=BTCUSDT&type=mini", 400, -1100),
    ];
    for &(path, status, code) in cases {
        let (got, head, body) = get_full(&server, path).await;
        assert_eq!(got, status, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(body["code"], code, "{path}: {body}");
        assert!(body["msg"].is_string(), "{path}");
        assert!(header(&head, "X-MBX-USED-WEIGHT-1M").is_some(), "{path}");
    }
    let too_many = (0..101)
        .map(|_| "%22BTCUSDT%22")
        .collect::<Vec<_>>()
        .join(",");
    let (status, _, body) =
        get_full(&server, &format!("/api/v3/ticker?symbols=%5B{too_many}%5D")).await;
    assert_eq!(
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap()["code"].as_i64()
        ),
        (400, Some(-1101))
    );
    for (code, at_least) in [
        ("-1100", 12.0),
        ("-1102", 6.0),
        ("-1120", 2.0),
        ("-1121", 3.0),
        ("-1023", 1.0),
        ("-1128", 1.0),
        ("-1101", 1.0),
    ] {
        server
            .wait_metric(
                "bookcast_rest_errors_total",
                &format!("code=\"{code}\""),
                at_least,
            )
            .await;
    }
    server.stop().await;
}

/// Each request adds its weight to the IP's minute; past `--rest-weight-limit` the answer is
/// 429 with -1003 and `Retry-After`, and the weight header says what was used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_weight_limit_requests_get_429_with_retry_after() {
    let config = Config {
        rest_weight_limit: 60,
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let (_, head, _) = get_full(&server, "/api/v3/ping").await;
    let first = header(&head, "X-MBX-USED-WEIGHT-1M").unwrap();
    // Unless the minute turns in between: then the count starts again, which is also right.
    let (_, head, _) = get_full(&server, "/api/v3/trades?symbol=BTCUSDT").await;
    let second = header(&head, "X-MBX-USED-WEIGHT-1M").unwrap();
    assert!(
        second == first + 25 || second == 25,
        "{first} then {second}"
    );
    let mut refused = None;
    for _ in 0..3 {
        let (status, head, body) = get_full(&server, "/api/v3/trades?symbol=BTCUSDT").await;
        if status == 429 {
            refused = Some((head, body));
            break;
        }
    }
    let (head, body) = refused.expect("a 429 within 3 requests of weight 25 under a limit of 60");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], -1003);
    let retry = header(&head, "Retry-After").expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(header(&head, "X-MBX-USED-WEIGHT-1M").unwrap() <= 60);
    server
        .wait_metric("bookcast_rest_errors_total", "code=\"-1003\"", 1.0)
        .await;
    server.stop().await;
}

/// `--trade-history` and `--kline-history` bound what REST can serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_bounded_by_configuration() {
    let config = Config {
        trade_history: 10,
        kline_history: 2,
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let trades = get_ok(&server, "/api/v3/trades?symbol=BTCUSDT&limit=1000").await;
    assert_eq!(trades.as_array().unwrap().len(), 10);
    let aggs = get_ok(&server, "/api/v3/aggTrades?symbol=BTCUSDT&limit=1000").await;
    assert!(aggs.as_array().unwrap().len() <= 10);
    let klines = get_ok(
        &server,
        "/api/v3/klines?symbol=BTCUSDT&interval=1s&limit=1000",
    )
    .await;
    assert_eq!(
        klines.as_array().unwrap().len(),
        3,
        "two closed and the open one"
    );
    server.stop().await;
}
