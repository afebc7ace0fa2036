//! The WebSocket API subset at `/ws-api/v3` over real sockets (SPEC.md): each served method,
//! Binance's error shape and codes, `id` echo, request weight and its limit, order of answers,
//! the connection limits shared with stream connections, and the metrics.

mod common;

use bookcast::config::Config;
use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use std::collections::HashSet;
use tokio_tungstenite::tungstenite::Message;

/// Sends a request and returns the next message, which must be its answer (the WebSocket API
/// sends nothing unasked).
async fn call(ws: &mut Ws, text: &str) -> Value {
    send_json(ws, text).await;
    next_json(ws).await
}

/// Checks Binance's envelope of a successful answer and returns its `result`.
fn ok(answer: &Value, id: Value) -> Value {
    assert_eq!(answer["id"], id, "{answer}");
    assert_eq!(answer["status"], 200, "{answer}");
    assert!(answer.get("error").is_none(), "{answer}");
    check_rate_limits(answer);
    answer["result"].clone()
}

/// Checks Binance's envelope of an error answer and returns the error code.
fn refused(answer: &Value, id: Value, status: u16) -> i64 {
    assert_eq!(answer["id"], id, "{answer}");
    assert_eq!(answer["status"], status, "{answer}");
    assert!(answer.get("result").is_none(), "{answer}");
    assert!(answer["error"]["msg"].is_string(), "{answer}");
    check_rate_limits(answer);
    answer["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("an integer error code: {answer}"))
}

/// `rateLimits`: the one REQUEST_WEIGHT entry, as Binance's WebSocket API sends it.
fn check_rate_limits(answer: &Value) {
    let limits = answer["rateLimits"].as_array().expect("rateLimits array");
    assert_eq!(limits.len(), 1, "{answer}");
    let limit = &limits[0];
    assert_eq!(limit["rateLimitType"], "REQUEST_WEIGHT");
    assert_eq!(limit["interval"], "MINUTE");
    assert_eq!(limit["intervalNum"], 1);
    assert_eq!(limit["limit"], 6000);
    assert!(limit["count"].is_u64(), "{answer}");
}

fn used(answer: &Value) -> u64 {
    answer["rateLimits"][0]["count"].as_u64().unwrap_or(0)
}

fn is_e8(value: &Value) -> bool {
    value
        .as_str()
        .and_then(|s| s.split_once('.'))
        .is_some_and(|(int, frac)| !int.is_empty() && frac.len() == 8)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_time_exchange_info_and_depth_answer_as_on_binance() {
    let server = TestServer::start(Config::default()).await;
    let mut ws = server.connect("/ws-api/v3").await;

    let answer = call(&mut ws, r#"{"id":1,"method":"ping"}"#).await;
    assert_eq!(ok(&answer, json!(1)), json!({}));
    let first = used(&answer);
    assert!(first >= 1, "{answer}");

    let answer = call(&mut ws, r#"{"id":2,"method":"time","params":{}}"#).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let server_time = ok(&answer, json!(2))["serverTime"].as_i64().unwrap_or(0);
    assert!((server_time - now_ms).abs() < 5_000, "{answer}");
    assert_eq!(used(&answer), first + 1, "time weighs 1: {answer}");

    let answer = call(
        &mut ws,
        r#"{"id":3,"method":"exchangeInfo","params":{"symbol":"ETHUSDT"}}"#,
    )
    .await;
    let info = ok(&answer, json!(3));
    assert_eq!(info["symbols"].as_array().map(Vec::len), Some(1));
    assert_eq!(info["symbols"][0]["symbol"], "ETHUSDT");
    assert_eq!(info["rateLimits"][0]["limit"], 6000);
    assert_eq!(
        used(&answer),
        first + 21,
        "exchangeInfo weighs 20: {answer}"
    );

    let answer = call(
        &mut ws,
        r#"{"id":4,"method":"exchangeInfo","params":{"symbols":["BTCUSDT","XRPUSDT"]}}"#,
    )
    .await;
    let names: HashSet<String> = ok(&answer, json!(4))["symbols"]
        .as_array()
        .expect("symbols")
        .iter()
        .filter_map(|s| s["symbol"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names, HashSet::from(["BTCUSDT".into(), "XRPUSDT".into()]));

    let answer = call(&mut ws, r#"{"id":5,"method":"exchangeInfo"}"#).await;
    assert_eq!(
        ok(&answer, json!(5))["symbols"].as_array().map(Vec::len),
        Some(3)
    );

    let before = used(&answer);
    let answer = call(
        &mut ws,
        r#"{"id":6,"method":"depth","params":{"symbol":"BTCUSDT","limit":5}}"#,
    )
    .await;
    let book = ok(&answer, json!(6));
    assert!(
        book["lastUpdateId"].as_u64().is_some_and(|u| u > 0),
        "{book}"
    );
    for side in ["bids", "asks"] {
        let levels = book[side].as_array().expect("levels");
        assert!(!levels.is_empty() && levels.len() <= 5, "{book}");
        for level in levels {
            assert!(is_e8(&level[0]) && is_e8(&level[1]), "{level}");
        }
    }
    assert_eq!(
        used(&answer),
        before + 5,
        "depth limit 5 weighs 5: {answer}"
    );

    // The REST weights by limit: 101-500 weighs 25, 1001-5000 weighs 250.
    let before = used(&answer);
    let answer = call(
        &mut ws,
        r#"{"id":7,"method":"depth","params":{"symbol":"ETHUSDT","limit":"500"}}"#,
    )
    .await;
    ok(&answer, json!(7));
    assert_eq!(used(&answer), before + 25, "{answer}");
    let answer = call(
        &mut ws,
        r#"{"id":8,"method":"depth","params":{"symbol":"ETHUSDT","limit":5000}}"#,
    )
    .await;
    ok(&answer, json!(8));
    assert_eq!(used(&answer), before + 275, "{answer}");
    server.stop().await;
}

/// SPEC.md: `depth`'s `lastUpdateId` follows the REST rule, so Binance's local-book algorithm
/// works with the snapshot taken over the WebSocket API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_depth_snapshot_lines_up_with_the_diff_stream() {
    let server = TestServer::start(Config::default()).await;
    let mut stream = server.connect("/ws/btcusdt@depth@0ms").await;
    let mut api = server.connect("/ws-api/v3").await;
    let answer = call(
        &mut api,
        r#"{"id":"snap","method":"depth","params":{"symbol":"BTCUSDT","limit":1000}}"#,
    )
    .await;
    let last = ok(&answer, json!("snap"))["lastUpdateId"]
        .as_u64()
        .expect("lastUpdateId");
    let first = next_matching(&mut stream, |e| e["u"].as_u64().is_some_and(|u| u > last)).await;
    let (big_u, u) = (
        first["U"].as_u64().unwrap_or(0),
        first["u"].as_u64().unwrap_or(0),
    );
    assert!(big_u <= last + 1 && last < u, "U {big_u} L {last} u {u}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_echoed_as_strings_numbers_or_null() {
    let server = TestServer::start(Config::default()).await;
    let mut ws = server.connect("/ws-api/v3").await;
    let uuid = "e2a85d9f-07a5-4f94-8d5f-789dc3deb097";
    let cases = [
        (format!(r#"{{"id":"{uuid}","method":"ping"}}"#), json!(uuid)),
        (r#"{"id":"","method":"ping"}"#.into(), json!("")),
        (
            r#"{"id":"a\"b\\c","method":"ping"}"#.into(),
            json!("a\"b\\c"),
        ),
        (r#"{"id":0,"method":"ping"}"#.into(), json!(0)),
        (r#"{"id":-42,"method":"ping"}"#.into(), json!(-42)),
        (
            r#"{"id":18446744073709551615,"method":"ping"}"#.into(),
            json!(u64::MAX),
        ),
        (r#"{"id":null,"method":"ping"}"#.into(), Value::Null),
        (r#"{"method":"ping"}"#.into(), Value::Null),
    ];
    for (text, id) in cases {
        let answer = call(&mut ws, &text).await;
        assert_eq!(ok(&answer, id), json!({}), "{text}");
    }
    // Errors echo the id too, when it could be read.
    let answer = call(&mut ws, r#"{"id":"x-1","method":"nope"}"#).await;
    assert_eq!(refused(&answer, json!("x-1"), 400), -1020);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_binance_codes_and_the_connection_stays_usable() {
    let server = TestServer::start(Config::default()).await;
    let mut ws = server.connect("/ws-api/v3").await;
    let null = Value::Null;
    let long_id = "i".repeat(37);
    let cases: Vec<(String, Value, i64)> = vec![
        // Not JSON, or not a request object: -1135 INVALID_JSON, and no id can be read.
        ("{not json".into(), null.clone(), -1135),
        ("".into(), null.clone(), -1135),
        (r#"{"id":1,"method":"ping",}"#.into(), null.clone(), -1135),
        ("[1,2]".into(), null.clone(), -1135),
        ("42".into(), null.clone(), -1135),
        (
            "[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]".into(),
            null.clone(),
            -1135,
        ),
        // An id that cannot be echoed.
        (r#"{"id":1.5,"method":"ping"}"#.into(), null.clone(), -1135),
        (
            r#"{"id":{"a":1},"method":"ping"}"#.into(),
            null.clone(),
            -1135,
        ),
        (r#"{"id":true,"method":"ping"}"#.into(), null.clone(), -1135),
        (
            format!(r#"{{"id":"{long_id}","method":"ping"}}"#),
            null.clone(),
            -1135,
        ),
        // params not an object, or a parameter that is not a value.
        (
            r#"{"id":2,"method":"ping","params":[]}"#.into(),
            json!(2),
            -1135,
        ),
        (
            r#"{"id":3,"method":"depth","params":"BTCUSDT"}"#.into(),
            json!(3),
            -1135,
        ),
        (
            r#"{"id":4,"method":"depth","params":{"symbol":{"a":1}}}"#.into(),
            json!(4),
            -1135,
        ),
        // No method, or one the server does not serve.
        (r#"{"id":5}"#.into(), json!(5), -1102),
        (r#"{"id":6,"method":null}"#.into(), json!(6), -1102),
        (r#"{"id":7,"method":7}"#.into(), json!(7), -1102),
        (r#"{"id":8,"method":"order.place"}"#.into(), json!(8), -1020),
        (r#"{"id":9,"method":"PING"}"#.into(), json!(9), -1020),
        (
            r#"{"id":10,"method":"SUBSCRIBE","params":["btcusdt@trade"]}"#.into(),
            json!(10),
            -1020,
        ),
        // The REST endpoint's own validation, translated: missing, malformed, unknown symbol,
        // bad limit.
        (r#"{"id":11,"method":"depth"}"#.into(), json!(11), -1102),
        (
            r#"{"id":12,"method":"depth","params":{"symbol":""}}"#.into(),
            json!(12),
            -1102,
        ),
        (
            r#"{"id":13,"method":"depth","params":{"symbol":"btcusdt"}}"#.into(),
            json!(13),
            -1100,
        ),
        (
            r#"{"id":14,"method":"depth","params":{"symbol":"NOPEUSDT"}}"#.into(),
            json!(14),
            -1121,
        ),
        (
            r#"{"id":15,"method":"depth","params":{"symbol":"BTCUSDT","limit":0}}"#.into(),
            json!(15),
            -1100,
        ),
        (
            r#"{"id":16,"method":"depth","params":{"symbol":"BTCUSDT","limit":-5}}"#.into(),
            json!(16),
            -1100,
        ),
        (
            r#"{"id":17,"method":"exchangeInfo","params":{"symbols":["BTCUSDT","NOPE"]}}"#.into(),
            json!(17),
            -1121,
        ),
    ];
    for (text, id, code) in &cases {
        let answer = call(&mut ws, text).await;
        assert_eq!(refused(&answer, id.clone(), 400), *code, "{text}: {answer}");
    }
    let answer = call(&mut ws, r#"{"id":"after","method":"ping"}"#).await;
    assert_eq!(ok(&answer, json!("after")), json!({}));
    assert!(
        server
            .metric("bookcast_ws_api_errors_total", "code=\"-1135\"")
            .await
            >= 12.0
    );
    assert!(
        server
            .metric("bookcast_ws_api_requests_total", "method=\"invalid\"")
            .await
            >= 13.0
    );
    server.stop().await;
}

/// Methods of SPEC.md's list whose REST endpoint is not served (yet) answer Binance's
/// unsupported-operation error, and nothing breaks; once the endpoint exists, they answer it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_without_their_endpoint_yet_are_unsupported_not_a_crash() {
    let server = TestServer::start(Config::default()).await;
    let mut ws = server.connect("/ws-api/v3").await;
    let requests = [
        r#""method":"trades.recent","params":{"symbol":"BTCUSDT"}"#,
        r#""method":"klines","params":{"symbol":"BTCUSDT","interval":"1m"}"#,
        r#""method":"avgPrice","params":{"symbol":"BTCUSDT"}"#,
        r#""method":"ticker.24hr","params":{"symbol":"BTCUSDT"}"#,
        r#""method":"ticker.price","params":{"symbol":"BTCUSDT"}"#,
        r#""method":"ticker.book","params":{"symbol":"BTCUSDT"}"#,
    ];
    for (i, request) in requests.iter().enumerate() {
        let answer = call(&mut ws, &format!(r#"{{"id":{i},{request}}}"#)).await;
        // Every endpoint of the list is served now: each method answers it.
        assert_eq!(answer["status"], 200, "{request}: {answer}");
        ok(&answer, json!(i));
    }
    let answer = call(&mut ws, r#"{"id":"alive","method":"ping"}"#).await;
    ok(&answer, json!("alive"));
    server.stop().await;
}

/// Answers come in the order of the requests, even when a slower one (depth, answered by the
/// engine thread) is followed by quick ones sent before its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_keep_the_order_of_pipelined_requests() {
    let server = TestServer::start(Config::default()).await;
    let mut ws = server.connect("/ws-api/v3").await;
    let mut ids = Vec::new();
    for i in 0..30u64 {
        let text = match i % 3 {
            0 => format!(
                r#"{{"id":{i},"method":"depth","params":{{"symbol":"BTCUSDT","limit":1000}}}}"#
            ),
            1 => format!(r#"{{"id":{i},"method":"ping"}}"#),
            _ => format!(r#"{{"id":{i},"method":"nope"}}"#),
        };
        ws.feed(Message::text(text)).await.expect("queue");
        ids.push(json!(i));
    }
    ws.flush().await.expect("send");
    let mut answered = Vec::new();
    for _ in 0..ids.len() {
        answered.push(next_json(&mut ws).await["id"].clone());
    }
    assert_eq!(answered, ids);
    server.stop().await;
}

/// Request weight per IP per minute (6000, as on Binance and REST): past it, 429 -1003 with
/// `retryAfter` at the next minute; the weight is shared by the address's connections, and the
/// connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_weight_past_the_limit_gets_429_and_retry_after() {
    let server = TestServer::start(Config::default()).await;
    let mut ws = server.connect("/ws-api/v3").await;
    let heavy = |i: usize| {
        format!(r#"{{"id":{i},"method":"depth","params":{{"symbol":"XRPUSDT","limit":5000}}}}"#)
    };
    // 24 requests of weight 250 fill one minute; a minute boundary during the loop starts the
    // count again, so allow for two windows.
    let mut limited = None;
    for i in 0..60 {
        let answer = call(&mut ws, &heavy(i)).await;
        if answer["status"] == 429 {
            limited = Some(answer);
            break;
        }
        ok(&answer, json!(i));
        assert_eq!(used(&answer) % 250, 0, "{answer}");
    }
    let answer = limited.expect("a 429 within two minutes' weight");
    let id = answer["id"].clone();
    assert_eq!(refused(&answer, id, 429), -1003);
    assert!(used(&answer) + 250 > 6000, "{answer}");
    let data = &answer["error"]["data"];
    let (server_time, retry_after) = (
        data["serverTime"].as_u64().unwrap_or(0),
        data["retryAfter"].as_u64().unwrap_or(0),
    );
    assert!(
        retry_after > server_time && retry_after - server_time <= 60_000,
        "{answer}"
    );
    assert_eq!(retry_after % 60_000, 0, "the next minute: {answer}");
    assert!(
        server
            .metric("bookcast_ws_api_errors_total", "code=\"-1003\"")
            .await
            >= 1.0
    );

    // The same address on another connection: refused too (unless a new minute began).
    let mut other = server.connect("/ws-api/v3").await;
    let answer = call(&mut other, heavy(99).as_str()).await;
    if answer["status"] == 429 {
        assert_eq!(refused(&answer, json!(99), 429), -1003);
    } else {
        assert!(
            used(&answer) <= 500,
            "only a new minute admits it: {answer}"
        );
    }
    // Still open: a cheap request is answered (200 or 429, never a close).
    let answer = call(&mut ws, r#"{"id":"still","method":"ping"}"#).await;
    assert_eq!(answer["id"], "still");
    server.stop().await;
}

/// WebSocket API connections are admitted like stream connections: the per-IP cap holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_apply_as_to_stream_connections() {
    let config = Config {
        max_connections_per_ip: 1,
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let mut first = server.connect("/ws-api/v3").await;
    let refused = tokio_tungstenite::connect_async(server.ws_url("/ws-api/v3")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429)
        }
        other => panic!("expected HTTP 429, got {other:?}"),
    }
    let answer = call(&mut first, r#"{"id":1,"method":"ping"}"#).await;
    ok(&answer, json!(1));
    // A plain GET on the path is told to upgrade, as on the stream paths.
    let (status, _) = server.get("/ws-api/v3").await;
    assert_eq!(status, 426);
    // Binary frames are refused as on stream connections.
    first
        .send(Message::binary(vec![1, 2, 3]))
        .await
        .expect("send");
    assert_eq!(close_code(&mut first).await, Some(1003));
    server.stop().await;
}

/// Counted by method and error code. Counters are per process and the tests of this file run
/// in parallel, so the checks are on growth, not on exact values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_method_and_error_code() {
    let server = TestServer::start(Config::default()).await;
    let mut ws = server.connect("/ws-api/v3").await;
    let series = [
        ("bookcast_ws_api_requests_total", "method=\"time\""),
        ("bookcast_ws_api_requests_total", "method=\"exchangeInfo\""),
        ("bookcast_ws_api_requests_total", "method=\"unknown\""),
        ("bookcast_ws_api_errors_total", "code=\"-1020\""),
    ];
    let mut before = Vec::new();
    for (name, labels) in series {
        before.push(server.metric(name, labels).await);
    }
    for (i, method) in ["time", "exchangeInfo", "time", "nope"].iter().enumerate() {
        call(&mut ws, &format!(r#"{{"id":{i},"method":"{method}"}}"#)).await;
    }
    for ((name, labels), (before, grew)) in
        series.iter().zip(before.iter().zip([2.0, 1.0, 1.0, 1.0]))
    {
        let after = server.metric(name, labels).await;
        assert!(
            after >= before + grew,
            "{name}{{{labels}}}: {before} -> {after}"
        );
    }
    server.stop().await;
}
