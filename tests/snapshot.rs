//! bookcast's in-band snapshot (`snapshot=true`, SPEC.md "Snapshot in band"): a diff stream
//! starts with one `depthSnapshot` on that same stream, and the first diff after it brackets
//! its `lastUpdateId`. No REST call, no buffering, no race.

mod common;

use bookcast::config::Config;
use common::*;
use serde_json::Value;

fn assert_depth_snapshot(event: &Value, symbol: &str) -> u64 {
    assert_eq!(event["e"], "depthSnapshot", "{event}");
    assert_eq!(event["s"], symbol);
    assert!(event["E"].as_u64().is_some());
    assert!(!event["bids"].as_array().expect("bids").is_empty());
    assert!(!event["asks"].as_array().expect("asks").is_empty());
    event["lastUpdateId"].as_u64().expect("lastUpdateId")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diff_stream_starts_with_a_snapshot_that_its_first_diff_continues() {
    let server = TestServer::start(Config::default()).await;
    let mut ws = server.connect("/ws/btcusdt@depth@0ms?snapshot=true").await;
    let snapshot = next_json(&mut ws).await;
    let last_id = assert_depth_snapshot(&snapshot, "BTCUSDT");
    let mut book = Book::default();
    book.apply(&snapshot["bids"], &snapshot["asks"]);

    let first = next_json(&mut ws).await;
    assert_eq!(first["e"], "depthUpdate");
    assert_eq!(
        first["U"].as_u64(),
        Some(last_id + 1),
        "real time continues at once"
    );
    book.apply(&first["b"], &first["a"]);
    let mut previous = first["u"].as_u64().expect("u");
    // Contiguous from there, and the book it builds is the server's at a later update.
    let later = server
        .get_json("/api/v3/depth?symbol=BTCUSDT&limit=5000")
        .await;
    let at = later["lastUpdateId"].as_u64().expect("lastUpdateId");
    while previous < at {
        let diff = next_json(&mut ws).await;
        assert_eq!(
            diff["U"].as_u64(),
            Some(previous + 1),
            "gap after {previous}"
        );
        book.apply(&diff["b"], &diff["a"]);
        previous = diff["u"].as_u64().expect("u");
    }
    let mut expected = Book::default();
    expected.apply(&later["bids"], &later["asks"]);
    assert_eq!(book, expected, "snapshot + diffs = the REST book at {at}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_windowed_streams_get_a_wrapped_snapshot_and_trades_none() {
    let server = TestServer::start(Config::default()).await;
    let mut ws = server
        .connect(
            "/stream?streams=ethusdt@trade/ethusdt@depth@100ms&snapshot=true&timeUnit=MICROSECOND",
        )
        .await;
    let mut snapshot_id = None;
    // The snapshot comes before any diff of its stream; trades have none.
    loop {
        let message = next_json(&mut ws).await;
        let data = &message["data"];
        match message["stream"].as_str() {
            Some("ethusdt@trade") => assert_eq!(data["e"], "trade"),
            Some("ethusdt@depth@100ms") if snapshot_id.is_none() => {
                snapshot_id = Some(assert_depth_snapshot(data, "ETHUSDT"));
                assert!(data["E"].as_u64().expect("E") > 1_000_000_000_000_000, "µs");
            }
            Some("ethusdt@depth@100ms") => {
                let last_id = snapshot_id.expect("snapshot first");
                let (first, last) = (
                    data["U"].as_u64().expect("U"),
                    data["u"].as_u64().expect("u"),
                );
                if last <= last_id {
                    continue; // a window the snapshot already covers
                }
                assert!(
                    first <= last_id + 1 && last_id < last,
                    "{first}..{last} brackets {last_id}+1"
                );
                break;
            }
            other => panic!("unexpected stream {other:?}: {message}"),
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_property_snapshot_applies_to_later_subscriptions() {
    // Seven requests in a row: past Binance's five a second.
    let server = TestServer::start(Config {
        max_messages_per_second: 50,
        ..Config::default()
    })
    .await;
    let mut ws = server.connect("/ws").await;
    let reply = request(
        &mut ws,
        r#"{"method":"GET_PROPERTY","params":["snapshot"],"id":1}"#,
    )
    .await;
    assert_eq!(reply["result"], false);
    // Without it, a subscription starts with a plain diff.
    let reply = request(
        &mut ws,
        r#"{"method":"SUBSCRIBE","params":["xrpusdt@depth@0ms"],"id":2}"#,
    )
    .await;
    assert_eq!(reply["result"], Value::Null);
    assert_eq!(next_json(&mut ws).await["e"], "depthUpdate");
    let reply = request(
        &mut ws,
        r#"{"method":"SET_PROPERTY","params":["snapshot",true],"id":3}"#,
    )
    .await;
    assert_eq!(reply["result"], Value::Null);
    let reply = request(
        &mut ws,
        r#"{"method":"GET_PROPERTY","params":["snapshot"],"id":4}"#,
    )
    .await;
    assert_eq!(reply["result"], true);
    let reply = request(
        &mut ws,
        r#"{"method":"SUBSCRIBE","params":["btcusdt@depth@0ms"],"id":5}"#,
    )
    .await;
    assert_eq!(reply["result"], Value::Null);
    // The new stream's first event is its snapshot; the old one gets none.
    let snapshot = next_matching(&mut ws, |v| v["s"] == "BTCUSDT").await;
    let last_id = assert_depth_snapshot(&snapshot, "BTCUSDT");
    let diff = next_matching(&mut ws, |v| v["s"] == "BTCUSDT").await;
    assert_eq!(diff["U"].as_u64(), Some(last_id + 1));
    let xrp = next_matching(&mut ws, |v| v["s"] == "XRPUSDT").await;
    assert_eq!(xrp["e"], "depthUpdate");
    let reply = request(
        &mut ws,
        r#"{"method":"SET_PROPERTY","params":["snapshot","yes"],"id":6}"#,
    )
    .await;
    assert_eq!(reply["error"]["code"], 1, "{reply}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_snapshot_parameter_is_refused_before_the_upgrade() {
    let server = TestServer::start(Config::default()).await;
    let response =
        tokio_tungstenite::connect_async(server.ws_url("/ws/btcusdt@depth@0ms?snapshot=yes")).await;
    match response {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400)
        }
        other => panic!("expected HTTP 400, got {other:?}"),
    }
    server.stop().await;
}
