//! Bad control messages over a real socket. SPEC.md: each gets `{"error":{"code":N,"msg":..},
//! "id":..}` and the connection stays usable; only a message over the 4 KiB limit ends it (1009).

mod common;

use bookcast::config::Config;
use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;

/// High enough that the cases below are not cut short by the 5 messages/s limit.
fn config() -> Config {
    Config {
        max_messages_per_second: 10_000,
        ..Config::default()
    }
}

/// Sends `text` and checks the very next message is error `code` echoing `id`; returns it.
async fn refused(ws: &mut Ws, text: &str, code: u8, id: Value) -> Value {
    send_json(ws, text).await;
    // next_json panics unless the reply is valid JSON, however odd the input.
    let reply = next_json(ws).await;
    let shown: String = text.chars().take(120).collect();
    assert_eq!(reply["error"]["code"], code, "{shown}: {reply}");
    assert!(reply["error"]["msg"].is_string(), "{shown}: {reply}");
    assert_eq!(reply["id"], id, "{shown}: {reply}");
    assert_eq!(reply.as_object().map(|o| o.len()), Some(2), "{reply}");
    reply
}

/// The connection still works: a SUBSCRIBE takes effect, LIST shows it, events flow.
async fn still_usable(ws: &mut Ws) {
    let reply = request(
        ws,
        r#"{"method":"SUBSCRIBE","params":["ethusdt@depth@0ms"],"id":"after"}"#,
    )
    .await;
    assert_eq!(reply, json!({"result": null, "id": "after"}));
    let list = request(ws, r#"{"method":"LIST_SUBSCRIPTIONS","id":424242}"#).await;
    assert_eq!(list, json!({"result": ["ethusdt@depth@0ms"], "id": 424242}));
    let event = next_matching(ws, |v| v.get("e").is_some()).await;
    assert_eq!(event["s"], "ETHUSDT");
}

fn subscribe(params: &str) -> String {
    format!(r#"{{"method":"SUBSCRIBE","params":{params},"id":7}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_codes_0_to_3_and_the_connection_stays_usable() {
    let server = TestServer::start(config()).await;
    let mut ws = server.connect("/ws").await;
    let mut sent: HashMap<u8, f64> = HashMap::new();
    let null = Value::Null;
    let cases: Vec<(String, u8, Value)> = vec![
        // Not JSON: code 3, and no id can be read.
        ("{not json".into(), 3, null.clone()),
        ("".into(), 3, null.clone()),
        ("   ".into(), 3, null.clone()),
        ("\"unterminated".into(), 3, null.clone()),
        (
            r#"{"method":"LIST_SUBSCRIPTIONS","id":1,}"#.into(),
            3,
            null.clone(),
        ),
        (
            r#"{"method":"LIST_SUBSCRIPTIONS","id":1} {}"#.into(),
            3,
            null.clone(),
        ),
        (
            r#"{"method":'LIST_SUBSCRIPTIONS',"id":1}"#.into(),
            3,
            null.clone(),
        ),
        // JSON, but not a request object.
        ("[1,2]".into(), 2, null.clone()),
        ("null".into(), 2, null.clone()),
        ("42".into(), 2, null.clone()),
        (r#""SUBSCRIBE""#.into(), 2, null.clone()),
        // An id that cannot be echoed: refused, answered with id null.
        (
            r#"{"method":"LIST_SUBSCRIPTIONS","id":{"x":1}}"#.into(),
            2,
            null.clone(),
        ),
        (
            r#"{"method":"LIST_SUBSCRIPTIONS","id":-1}"#.into(),
            2,
            null.clone(),
        ),
        (
            r#"{"method":"LIST_SUBSCRIPTIONS","id":1.5}"#.into(),
            2,
            null.clone(),
        ),
        (
            r#"{"method":"LIST_SUBSCRIPTIONS","id":true}"#.into(),
            2,
            null.clone(),
        ),
        (
            r#"{"method":"LIST_SUBSCRIPTIONS","id":[1]}"#.into(),
            2,
            null.clone(),
        ),
        // Integers past u64 are valid JSON, but simd-json refuses them as numbers: code 3.
        (
            r#"{"method":"LIST_SUBSCRIPTIONS","id":18446744073709551616}"#.into(),
            3,
            null.clone(),
        ),
        (
            format!(
                r#"{{"method":"LIST_SUBSCRIPTIONS","id":"{}"}}"#,
                "i".repeat(37)
            ),
            2,
            null.clone(),
        ),
        // A bad method: the id is echoed.
        (r#"{"params":[],"id":1}"#.into(), 2, json!(1)),
        (r#"{"method":1,"id":2}"#.into(), 2, json!(2)),
        (r#"{"method":null,"id":3}"#.into(), 2, json!(3)),
        (r#"{"method":["SUBSCRIBE"],"id":4}"#.into(), 2, json!(4)),
        (r#"{"method":"subscribe","id":5}"#.into(), 2, json!(5)),
        (r#"{"method":"PUBLISH","id":"x"}"#.into(), 2, json!("x")),
        (
            format!(r#"{{"method":"{}","id":6}}"#, "M".repeat(3000)),
            2,
            json!(6),
        ),
        // Params of the wrong type.
        (subscribe(r#""btcusdt@trade""#), 2, json!(7)),
        (subscribe(r#"{"0":"btcusdt@trade"}"#), 2, json!(7)),
        (subscribe("1"), 2, json!(7)),
        (subscribe("[1]"), 2, json!(7)),
        (subscribe("[null]"), 2, json!(7)),
        (subscribe(r#"[["btcusdt@trade"]]"#), 2, json!(7)),
        // Properties: 0 unknown property, 1 wrong value type.
        (
            r#"{"method":"GET_PROPERTY","params":["colour"],"id":8}"#.into(),
            0,
            json!(8),
        ),
        (
            r#"{"method":"SET_PROPERTY","params":["combined","true"],"id":8}"#.into(),
            1,
            json!(8),
        ),
        (
            r#"{"method":"SET_PROPERTY","params":["combined",1],"id":8}"#.into(),
            1,
            json!(8),
        ),
        (
            r#"{"method":"SET_PROPERTY","params":["combined"],"id":8}"#.into(),
            1,
            json!(8),
        ),
        (
            r#"{"method":"SET_PROPERTY","params":[true,"combined"],"id":8}"#.into(),
            2,
            json!(8),
        ),
        (
            r#"{"method":"SET_PROPERTY","params":["combined",true,1],"id":8}"#.into(),
            2,
            json!(8),
        ),
        // Unknown symbols and stream kinds.
        (subscribe(r#"["dogeusdt@trade"]"#), 2, json!(7)),
        (
            subscribe(r#"["btcusdt@trade","dogeusdt@trade"]"#),
            2,
            json!(7),
        ),
        (subscribe(r#"["btcusdt@depth7"]"#), 2, json!(7)),
        (subscribe(r#"["btcusdt@TRADE"]"#), 2, json!(7)),
        (
            r#"{"method":"UNSUBSCRIBE","params":["nosuch@trade"],"id":9}"#.into(),
            2,
            json!(9),
        ),
        // Names with odd characters: refused as names, never echoed as broken JSON.
        (subscribe(r#"["btcusdt@tr\u0430de"]"#), 2, json!(7)),
        (subscribe(r#"["биткоин@trade"]"#), 2, json!(7)),
        (subscribe(r#"["😀@trade"]"#), 2, json!(7)),
        (subscribe(r#"["%62tcusdt@trade"]"#), 2, json!(7)),
        (subscribe(r#"["btcusdt%40trade"]"#), 2, json!(7)),
        (subscribe(r#"["btcusdt@trade\u0000"]"#), 2, json!(7)),
        (subscribe(r#"["\u0000"]"#), 2, json!(7)),
        (subscribe(r#"["btcusdt@trade\n"]"#), 2, json!(7)),
        (subscribe(r#"[" btcusdt@trade"]"#), 2, json!(7)),
        (subscribe(r#"["\"},{\"x\":\""]"#), 2, json!(7)),
        (subscribe(r#"[""]"#), 2, json!(7)),
        (
            subscribe(&format!(r#"["btcusdt@trade{}"]"#, "x".repeat(3500))),
            2,
            json!(7),
        ),
        // More params than the 1024-stream limit (they fit in 4 KiB only as tiny values).
        (
            subscribe(&format!("[{}\"\"]", "\"\",".repeat(1024))),
            2,
            json!(7),
        ),
        (subscribe(&format!("[{}0]", "0,".repeat(2000))), 2, json!(7)),
        // Nesting deeper than a request can be, refused before parsing (simd-json builds values
        // recursively), so the id is not read.
        (
            format!("{}{}", "[".repeat(1000), "]".repeat(1000)),
            3,
            null.clone(),
        ),
        ("[".repeat(4000), 3, null.clone()),
        (
            format!("{}1{}", r#"{"a":"#.repeat(500), "}".repeat(500)),
            3,
            null.clone(),
        ),
        (
            subscribe(&format!("{}{}", "[".repeat(1000), "]".repeat(1000))),
            3,
            null.clone(),
        ),
    ];
    for (text, code, id) in &cases {
        assert!(text.len() <= 4096, "each case fits the message limit");
        refused(&mut ws, text, *code, id.clone()).await;
        *sent.entry(*code).or_default() += 1.0;
    }
    // A lone surrogate is either invalid JSON or an invalid name (simd-json 0.15 decodes it
    // lossily, and the name is refused); either way an error reply.
    send_json(&mut ws, &subscribe(r#"["\ud800@trade"]"#)).await;
    let reply = next_json(&mut ws).await;
    assert!(
        reply["error"]["code"] == 2 || reply["error"]["code"] == 3,
        "{reply}"
    );
    still_usable(&mut ws).await;
    for (code, count) in sent {
        server
            .wait_metric(
                "bookcast_control_errors_total",
                &format!("code=\"{code}\""),
                count,
            )
            .await;
    }
    drop(ws);
    server.stop().await;
}

/// A SUBSCRIBE a client can actually send: as many names as fit in 4 KiB works (duplicates
/// count once), and 10,000 names cannot be sent at all: the message is over the limit, 1009.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_subscribe_requests() {
    let server = TestServer::start(config()).await;
    let mut ws = server.connect("/ws").await;
    let names: Vec<String> = (0..240).map(|_| "\"btcusdt@trade\"".to_string()).collect();
    let full = subscribe(&format!("[{}]", names.join(",")));
    assert!(full.len() > 3800 && full.len() <= 4096, "{}", full.len());
    let reply = request(&mut ws, &full).await;
    assert_eq!(reply, json!({"result": null, "id": 7}));
    let list = request(&mut ws, r#"{"method":"LIST_SUBSCRIPTIONS","id":8}"#).await;
    assert_eq!(list["result"], json!(["btcusdt@trade"]));

    let symbols = ["btcusdt", "ethusdt", "xrpusdt"];
    let kinds = ["trade", "aggTrade", "depth", "bookTicker", "ticker"];
    let huge: Vec<String> = (0..10_000)
        .map(|i| format!("\"{}@{}\"", symbols[i % 3], kinds[(i / 3) % 5]))
        .collect();
    send_json(&mut ws, &subscribe(&format!("[{}]", huge.join(",")))).await;
    assert_eq!(close_code(&mut ws).await, Some(1009));
    // Counted when the session ends: at once when the client goes, else after the close timeout.
    drop(ws);
    server
        .wait_metric("bookcast_closes_total", "code=\"1009\"", 1.0)
        .await;
    server.stop().await;
}

/// Bad messages are errors for their sender only: another subscriber is not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_do_not_disturb_other_connections() {
    let server = TestServer::start(config()).await;
    let mut other = server.connect("/ws/btcusdt@depth@0ms").await;
    let mut bad = server.connect("/ws").await;
    for _ in 0..50 {
        refused(&mut bad, "{not json", 3, Value::Null).await;
        refused(&mut bad, &subscribe(r#"["nosuch@trade"]"#), 2, json!(7)).await;
    }
    let mut last_u = 0u64;
    for _ in 0..20 {
        let event = next_json(&mut other).await;
        let (first, last) = (event["U"].as_u64().unwrap(), event["u"].as_u64().unwrap());
        assert!(last_u == 0 || first == last_u + 1, "gap");
        last_u = last;
    }
    still_usable(&mut bad).await;
    drop((other, bad));
    server.stop().await;
}
