//! Every stream kind's payload shape, raw and combined, in ms and µs, over a real socket.

mod common;

use bookcast::config::Config;
use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

const STREAMS: &[&str] = &[
    "btcusdt@depth",
    "btcusdt@depth@0ms",
    "btcusdt@depth@100ms",
    "btcusdt@depth@1000ms",
    "btcusdt@depth5",
    "btcusdt@depth10@100ms",
    "btcusdt@depth20@1000ms",
    "btcusdt@trade",
    "btcusdt@aggTrade",
    "btcusdt@bookTicker",
    "btcusdt@kline_1s",
    "btcusdt@kline_1m",
    "btcusdt@kline_3m",
    "btcusdt@kline_1d",
    "btcusdt@kline_1d@+08:00",
    "btcusdt@kline_1M",
    "btcusdt@miniTicker",
    "btcusdt@ticker",
    "btcusdt@ticker_1h",
    "btcusdt@ticker_1d",
    "btcusdt@avgPrice",
    "!miniTicker@arr",
    "!ticker_4h@arr",
];

const DAY_MS: u64 = 86_400_000;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn is_decimal8(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        let (int, frac) = s.split_once('.').unwrap_or(("", ""));
        !int.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.len() == 8
            && frac.bytes().all(|b| b.is_ascii_digit())
    })
}

fn is_signed_decimal(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.trim_start_matches('-').split_once('.').is_some())
}

fn levels_ok(v: &Value) -> bool {
    v.as_array().is_some_and(|levels| {
        levels.iter().all(|l| {
            l.as_array()
                .is_some_and(|pq| pq.len() == 2 && is_decimal8(&pq[0]) && is_decimal8(&pq[1]))
        })
    })
}

/// Checks a time field is "now" in the expected unit (within five minutes: kline open times are aligned).
fn check_time(v: &Value, micros: bool, what: &str) {
    let t = v
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: not an integer: {v}"));
    let now = if micros { now_us() } else { now_us() / 1000 };
    let slack = if micros { 300_000_000 } else { 300_000 };
    assert!(
        t + slack > now && t < now + slack,
        "{what}={t} is not a current time in {}",
        if micros { "µs" } else { "ms" }
    );
}

fn check_shape(stream: &str, p: &Value, micros: bool) {
    let fields = |keys: &[&str]| {
        let object = p
            .as_object()
            .unwrap_or_else(|| panic!("{stream}: not an object: {p}"));
        let got: Vec<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(got, keys, "{stream}: fields in Binance order");
    };
    if let Some(kind) = stream
        .strip_prefix('!')
        .and_then(|s| s.strip_suffix("@arr"))
    {
        let array = p.as_array().expect("array");
        // Only the symbols that traded in that second, and never an empty array.
        assert!((1..=3).contains(&array.len()), "{stream}: {}", array.len());
        let mut symbols: Vec<&str> = array.iter().map(|t| t["s"].as_str().unwrap()).collect();
        symbols.dedup();
        assert_eq!(symbols.len(), array.len(), "one entry per symbol");
        for t in array {
            let symbol = t["s"].as_str().unwrap().to_lowercase();
            check_shape(&format!("{symbol}@{kind}"), t, micros);
        }
        return;
    }
    let kind = stream.split('@').nth(1).unwrap();
    match kind {
        "depth" if !stream.contains("depth5") => {
            fields(&["e", "E", "s", "U", "u", "b", "a"]);
            assert_eq!(p["e"], "depthUpdate");
            assert_eq!(p["s"], stream.split('@').next().unwrap().to_uppercase());
            check_time(&p["E"], micros, "E");
            assert!(p["U"].as_u64().unwrap() <= p["u"].as_u64().unwrap());
            assert!(levels_ok(&p["b"]) && levels_ok(&p["a"]));
            if stream.ends_with("@0ms") {
                assert_eq!(p["U"], p["u"], "real-time diffs carry one update");
            }
        }
        k if k.starts_with("depth") => {
            fields(&["lastUpdateId", "bids", "asks"]);
            let n: usize = k.trim_start_matches("depth").parse().unwrap();
            assert_eq!(p["bids"].as_array().unwrap().len(), n);
            assert_eq!(p["asks"].as_array().unwrap().len(), n);
            assert!(levels_ok(&p["bids"]) && levels_ok(&p["asks"]));
        }
        "trade" => {
            fields(&["e", "E", "s", "t", "p", "q", "T", "m", "M"]);
            assert_eq!(p["e"], "trade");
            check_time(&p["E"], micros, "E");
            check_time(&p["T"], micros, "T");
            assert!(
                is_decimal8(&p["p"])
                    && is_decimal8(&p["q"])
                    && p["t"].is_u64()
                    && p["m"].is_boolean()
            );
        }
        "aggTrade" => {
            fields(&["e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M"]);
            assert_eq!(p["e"], "aggTrade");
            check_time(&p["T"], micros, "T");
            assert!(p["f"].as_u64().unwrap() <= p["l"].as_u64().unwrap());
        }
        "bookTicker" => {
            fields(&["u", "s", "b", "B", "a", "A"]);
            assert!(is_decimal8(&p["b"]) && is_decimal8(&p["A"]));
            let (bid, ask): (f64, f64) = (
                p["b"].as_str().unwrap().parse().unwrap(),
                p["a"].as_str().unwrap().parse().unwrap(),
            );
            assert!(bid < ask, "never crossed");
        }
        k if k.starts_with("kline_") => {
            fields(&["e", "E", "s", "k"]);
            assert_eq!(p["e"], "kline");
            let interval = k.trim_start_matches("kline_");
            let interval = interval.split('@').next().unwrap();
            let k = &p["k"];
            let keys: Vec<&str> = k.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                [
                    "t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q",
                    "B"
                ]
            );
            assert_eq!(k["i"], interval);
            check_time(&p["E"], micros, "E");
            // The open kline holds the event time.
            let per_ms = if micros { 1000 } else { 1 };
            let (t, close) = (k["t"].as_u64().unwrap(), k["T"].as_u64().unwrap());
            let event = p["E"].as_u64().unwrap();
            assert!(t <= event && (k["x"] == true || event <= close), "{p}");
            let span = (close - t + 1) / per_ms;
            let expected = match interval {
                "1s" => 1000,
                "1m" => 60_000,
                "3m" => 180_000,
                "1d" => DAY_MS,
                "1M" => [28, 29, 30, 31]
                    .map(|d| d * DAY_MS)
                    .into_iter()
                    .find(|&n| n == span)
                    .unwrap_or(0),
                other => panic!("unchecked interval {other}"),
            };
            assert_eq!(span, expected, "{stream}: kline T = t + interval - 1");
            // UTC+8 days open at 16:00 UTC; UTC days and months at midnight.
            let midnight_offset = if stream.ends_with("@+08:00") {
                16 * 3_600_000
            } else {
                0
            };
            if interval == "1d" || interval == "1M" {
                assert_eq!((t / per_ms) % DAY_MS, midnight_offset, "{stream}: {t}");
            }
            for field in ["o", "c", "h", "l", "v", "q", "V", "Q"] {
                assert!(is_decimal8(&k[field]), "{stream}: {field}");
            }
            assert!(k["f"].is_i64() && k["L"].is_i64() && k["n"].is_u64() && k["x"].is_boolean());
        }
        "miniTicker" => {
            fields(&["e", "E", "s", "c", "o", "h", "l", "v", "q"]);
            assert_eq!(p["e"], "24hrMiniTicker");
            check_time(&p["E"], micros, "E");
        }
        "ticker" => {
            fields(&[
                "e", "E", "s", "p", "P", "w", "x", "c", "Q", "b", "B", "a", "A", "o", "h", "l",
                "v", "q", "O", "C", "F", "L", "n",
            ]);
            assert_eq!(p["e"], "24hrTicker");
            assert!(is_signed_decimal(&p["p"]) && is_signed_decimal(&p["P"]));
            check_time(&p["C"], micros, "C");
        }
        k if k.starts_with("ticker_") => {
            fields(&[
                "e", "E", "s", "p", "P", "o", "h", "l", "c", "w", "v", "q", "O", "C", "F", "L", "n",
            ]);
            let window = k.trim_start_matches("ticker_");
            assert_eq!(p["e"], format!("{window}Ticker"));
            assert!(is_signed_decimal(&p["p"]) && is_signed_decimal(&p["P"]));
            for field in ["o", "h", "l", "c", "w", "v", "q"] {
                assert!(is_decimal8(&p[field]), "{stream}: {field}");
            }
            check_time(&p["E"], micros, "E");
            check_time(&p["C"], micros, "C");
            let (open, close) = (p["O"].as_u64().unwrap(), p["C"].as_u64().unwrap());
            let hours: u64 = window.trim_end_matches(['h', 'd']).parse().unwrap();
            let hours = if window.ends_with('d') {
                24 * hours
            } else {
                hours
            };
            let per_ms = if micros { 1000 } else { 1 };
            // The window opens on a minute, up to a minute before C - window.
            let width = (close - open) / per_ms;
            assert!(
                width >= hours * 3_600_000 && width < hours * 3_600_000 + 60_000,
                "{stream}: O..C spans {width} ms"
            );
            assert!(p["F"].is_i64() && p["L"].is_i64() && p["n"].is_u64());
        }
        "avgPrice" => {
            fields(&["e", "E", "s", "i", "w", "T"]);
            assert_eq!(p["e"], "avgPrice");
            assert_eq!(p["i"], "5m");
            assert!(is_decimal8(&p["w"]));
            check_time(&p["E"], micros, "E");
            check_time(&p["T"], micros, "T");
        }
        other => panic!("unchecked stream kind {other}"),
    }
}

/// Collects one event of every stream in STREAMS from one connection.
async fn collect(server: &TestServer, combined: bool, micros: bool) {
    let query = if micros {
        "timeUnit=MICROSECOND"
    } else {
        "timeUnit=millisecond"
    };
    let path = if combined {
        format!("/stream?streams={}&{query}", STREAMS.join("/"))
    } else {
        format!("/ws/{}?{query}", STREAMS.join("/"))
    };
    let mut ws = server.connect(&path).await;
    let mut seen: HashMap<String, Value> = HashMap::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while seen.len() < STREAMS.len() {
        let missing: Vec<&&str> = STREAMS.iter().filter(|s| !seen.contains_key(**s)).collect();
        assert!(
            tokio::time::Instant::now() < deadline,
            "combined={combined} micros={micros}: no event of {missing:?}"
        );
        let message = next_json(&mut ws).await;
        if combined {
            let keys: Vec<&str> = message
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(keys, ["stream", "data"]);
            let stream = message["stream"].as_str().unwrap().to_string();
            assert!(
                STREAMS.contains(&stream.as_str()),
                "unexpected stream {stream}"
            );
            check_shape(&stream, &message["data"], micros);
            seen.insert(stream, message["data"].clone());
        } else {
            // Raw payloads do not name their stream: identify by shape.
            let stream = match (message.get("e").and_then(Value::as_str), message.is_array()) {
                (_, true) if message[0]["e"] == "4hTicker" => "!ticker_4h@arr".to_string(),
                (_, true) => "!miniTicker@arr".to_string(),
                (Some("1hTicker"), _) => "btcusdt@ticker_1h".into(),
                (Some("1dTicker"), _) => "btcusdt@ticker_1d".into(),
                (Some("avgPrice"), _) => "btcusdt@avgPrice".into(),
                (Some("kline"), _)
                    if message["k"]["i"] == "1d"
                        && message["k"]["t"].as_u64().unwrap() / if micros { 1000 } else { 1 }
                            % DAY_MS
                            != 0 =>
                {
                    "btcusdt@kline_1d@+08:00".into()
                }
                (Some("depthUpdate"), _) => continue, // the diff streams share a shape
                (Some("trade"), _) => "btcusdt@trade".into(),
                (Some("aggTrade"), _) => "btcusdt@aggTrade".into(),
                (Some("kline"), _) => {
                    format!("btcusdt@kline_{}", message["k"]["i"].as_str().unwrap())
                }
                (Some("24hrMiniTicker"), _) => "btcusdt@miniTicker".into(),
                (Some("24hrTicker"), _) => "btcusdt@ticker".into(),
                (None, _) if message.get("lastUpdateId").is_some() => {
                    format!("btcusdt@depth{}", message["bids"].as_array().unwrap().len())
                }
                (None, _) if message.get("u").is_some() => "btcusdt@bookTicker".into(),
                _ => panic!("unknown payload {message}"),
            };
            let name = STREAMS
                .iter()
                .find(|s| **s == stream)
                .or_else(|| STREAMS.iter().find(|s| s.starts_with(&stream)))
                .map_or(stream.clone(), |s| s.to_string());
            check_shape(&name, &message, micros);
            seen.insert(name, message);
            // Mark the diff streams seen once any depthUpdate shape has been checked below.
        }
        if !combined && !seen.contains_key("btcusdt@depth") {
            for diff in [
                "btcusdt@depth",
                "btcusdt@depth@0ms",
                "btcusdt@depth@100ms",
                "btcusdt@depth@1000ms",
            ] {
                seen.insert(diff.to_string(), Value::Null);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_kind_in_every_variant() {
    let server = TestServer::start(Config::default()).await;
    for (combined, micros) in [(true, false), (true, true), (false, false), (false, true)] {
        collect(&server, combined, micros).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_diff_events_have_the_diff_shape_in_both_units() {
    let server = TestServer::start(Config::default()).await;
    for micros in [false, true] {
        let query = if micros { "?timeUnit=MICROSECOND" } else { "" };
        let mut ws = server
            .connect(&format!("/ws/ethusdt@depth@0ms{query}"))
            .await;
        for _ in 0..5 {
            let event = next_json(&mut ws).await;
            assert_eq!(event["s"], "ETHUSDT");
            check_shape("ethusdt@depth@0ms", &event, micros);
        }
    }
    server.stop().await;
}

/// `@depth@1000ms` is another name of `@depth` (SPEC.md): the same events, each echoed under
/// the name the client used. A client holding both names has two subscriptions and gets every
/// event under each; dropping one keeps the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_and_depth_1000ms_are_one_stream_under_two_names() {
    let server = TestServer::start(Config::default()).await;
    let mut raw = server.connect("/ws/btcusdt@depth@1000ms").await;
    let mut both = server
        .connect("/stream?streams=btcusdt@depth/btcusdt@depth@1000ms")
        .await;
    let list = request(&mut both, r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#).await;
    assert_eq!(
        list["result"],
        serde_json::json!(["btcusdt@depth", "btcusdt@depth@1000ms"])
    );
    let first = next_json(&mut both).await;
    let second = next_json(&mut both).await;
    let mut names = [first["stream"].clone(), second["stream"].clone()];
    names.sort_by_key(|v| v.to_string());
    assert_eq!(names, ["btcusdt@depth", "btcusdt@depth@1000ms"]);
    assert_eq!(first["data"], second["data"], "one event, two names");
    let event = &first["data"];
    // The raw synonym subscriber gets the very same event (it may have had an earlier one).
    let u = event["u"].as_u64().unwrap();
    let same = next_matching(&mut raw, |v| v["u"].as_u64().unwrap() >= u).await;
    assert_eq!(&same, event);

    let reply = request(
        &mut both,
        r#"{"method":"UNSUBSCRIBE","params":["btcusdt@depth"],"id":2}"#,
    )
    .await;
    assert_eq!(reply["result"], Value::Null);
    for _ in 0..2 {
        let next = next_json(&mut both).await;
        assert_eq!(next["stream"], "btcusdt@depth@1000ms", "{next}");
        assert!(next["data"]["u"].as_u64().unwrap() > u);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_endpoints_answer_like_binance() {
    let server = TestServer::start(Config::default()).await;
    assert_eq!(server.get("/api/v3/ping").await, (200, "{}".to_string()));
    let time = server.get_json("/api/v3/time").await;
    check_time(&time["serverTime"], false, "serverTime");
    let info = server.get_json("/api/v3/exchangeInfo").await;
    let symbols = info["symbols"].as_array().unwrap();
    assert_eq!(symbols.len(), 3);
    assert_eq!(symbols[0]["symbol"], "BTCUSDT");
    assert_eq!(symbols[0]["status"], "TRADING");
    assert_eq!(symbols[0]["baseAsset"], "BTC");
    assert_eq!(symbols[0]["filters"][0]["filterType"], "PRICE_FILTER");
    assert_eq!(symbols[0]["filters"][0]["tickSize"], "0.01000000");
    let one = server.get_json("/api/v3/exchangeInfo?symbol=ETHUSDT").await;
    assert_eq!(one["symbols"].as_array().unwrap().len(), 1);
    let two = server
        .get_json("/api/v3/exchangeInfo?symbols=%5B%22ETHUSDT%22,%22XRPUSDT%22%5D")
        .await;
    assert_eq!(two["symbols"].as_array().unwrap().len(), 2);
    let depth = server
        .get_json("/api/v3/depth?symbol=BTCUSDT&limit=5")
        .await;
    assert!(depth["lastUpdateId"].is_u64());
    assert_eq!(depth["bids"].as_array().unwrap().len(), 5);
    assert!(levels_ok(&depth["bids"]) && levels_ok(&depth["asks"]));
    let deep = server
        .get_json("/api/v3/depth?symbol=BTCUSDT&limit=5000")
        .await;
    assert!(deep["bids"].as_array().unwrap().len() > 20);
    for (path, status, code) in [
        ("/api/v3/depth?symbol=NOPE", 400, -1121),
        ("/api/v3/depth", 400, -1102),
        ("/api/v3/depth?symbol=BTCUSDT&limit=abc", 400, -1100),
        ("/api/v3/depth?symbol=BTCUSDT&limit=0", 400, -1100),
        ("/api/v3/exchangeInfo?symbol=NOPE", 400, -1121),
        ("/api/v3/nothing", 404, -1000),
    ] {
        let (got, body) = server.get(path).await;
        assert_eq!(got, status, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["code"], code, "{path}");
        assert!(body["msg"].is_string());
    }
    let (status, _) = server.get("/ws/btcusdt@trade").await;
    assert_eq!(
        status, 426,
        "plain HTTP on a stream path asks for the upgrade"
    );
    server.stop().await;
}
