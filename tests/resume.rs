//! bookcast's resume after reconnect (`resume=<stream>:<id>,..`, SPEC.md "Resume"): a
//! reconnecting client names the last id it holds of each stream and gets what it missed, then
//! the live stream, with nothing lost and nothing twice; from beyond the history (`--history`)
//! it gets a `depthSnapshot` or a `resumeGap` instead. Every check is over a real socket.

mod common;

use bookcast::config::Config;
use common::*;
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

/// Waits until `symbol`'s book is at update `id` or later (REST, at the last published update,
/// five levels: the lightest request weight); returns that update id.
async fn wait_for_update(server: &TestServer, symbol: &str, id: u64) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let depth = server
            .get_json(&format!("/api/v3/depth?symbol={symbol}&limit=5"))
            .await;
        let at = depth["lastUpdateId"].as_u64().expect("lastUpdateId");
        if at >= id {
            return at;
        }
        assert!(
            Instant::now() < deadline,
            "{symbol} never reached update {id}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server's newest trades of `symbol` (REST), oldest first.
async fn recent_trades(server: &TestServer, symbol: &str) -> Vec<Value> {
    let trades = server
        .get_json(&format!("/api/v3/trades?symbol={symbol}&limit=1000"))
        .await;
    trades.as_array().expect("a trade list").clone()
}

/// Waits until `symbol` has printed trade `id` or later.
async fn wait_for_trade(server: &TestServer, symbol: &str, id: u64) {
    let deadline = Instant::now() + PATIENCE;
    while recent_trades(server, symbol)
        .await
        .last()
        .and_then(|t| t["id"].as_u64())
        .is_none_or(|newest| newest < id)
    {
        assert!(
            Instant::now() < deadline,
            "{symbol} never printed trade {id}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diff_stream_resumes_with_one_catch_up_diff_then_live_diffs() {
    let server = TestServer::start(Config::default()).await;
    let mut ws = server.connect("/ws/btcusdt@depth@0ms?snapshot=true").await;
    let snapshot = next_json(&mut ws).await;
    assert_eq!(snapshot["e"], "depthSnapshot");
    let mut book = Book::default();
    book.apply(&snapshot["bids"], &snapshot["asks"]);
    let mut last = snapshot["lastUpdateId"].as_u64().expect("lastUpdateId");
    for _ in 0..5 {
        let diff = next_json(&mut ws).await;
        assert_eq!(diff["U"].as_u64(), Some(last + 1));
        book.apply(&diff["b"], &diff["a"]);
        last = diff["u"].as_u64().expect("u");
    }
    drop(ws);
    // Away for 50 updates.
    wait_for_update(&server, "BTCUSDT", last + 50).await;

    let mut ws = server
        .connect(&format!(
            "/ws/btcusdt@depth@0ms?resume=btcusdt@depth@0ms:{last}"
        ))
        .await;
    let catch_up = next_json(&mut ws).await;
    assert_eq!(catch_up["e"], "depthUpdate", "{catch_up}");
    assert_eq!(
        catch_up["U"].as_u64(),
        Some(last + 1),
        "from the update after ours"
    );
    let caught_up_to = catch_up["u"].as_u64().expect("u");
    assert!(caught_up_to >= last + 50, "to the latest update");
    book.apply(&catch_up["b"], &catch_up["a"]);
    last = caught_up_to;
    // Live and contiguous from there, building the server's book.
    wait_for_update(&server, "BTCUSDT", last + 5).await;
    let later = server
        .get_json("/api/v3/depth?symbol=BTCUSDT&limit=5000")
        .await;
    let at = later["lastUpdateId"].as_u64().expect("lastUpdateId");
    while last < at {
        let diff = next_json(&mut ws).await;
        assert_eq!(diff["U"].as_u64(), Some(last + 1), "gap after {last}");
        book.apply(&diff["b"], &diff["a"]);
        last = diff["u"].as_u64().expect("u");
    }
    let mut expected = Book::default();
    expected.apply(&later["bids"], &later["asks"]);
    assert_eq!(
        book, expected,
        "kept book + catch-up + diffs = the REST book"
    );
    assert!(
        server
            .metric("bookcast_resumes_total", "outcome=\"caught_up\"")
            .await
            >= 1.0
    );
    server.stop().await;
}

/// Reads a combined stream, returning each event's stream name and data.
async fn next_event(ws: &mut Ws) -> (String, Value) {
    let message = next_json(ws).await;
    let stream = message["stream"].as_str().expect("combined").to_string();
    (stream, message["data"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_diffs_trades_and_aggregates_resume_together_with_nothing_lost_or_repeated() {
    let server = TestServer::start(Config::default()).await;
    let streams = "btcusdt@depth@100ms/btcusdt@trade/btcusdt@aggTrade";
    let mut ws = server
        .connect(&format!("/stream?streams={streams}&timeUnit=MICROSECOND"))
        .await;
    let (mut last_u, mut last_t, mut last_a) = (None, None, None);
    while last_u.is_none() || last_t.is_none() || last_a.is_none() {
        let (stream, data) = next_event(&mut ws).await;
        match stream.as_str() {
            "btcusdt@depth@100ms" => last_u = data["u"].as_u64(),
            "btcusdt@trade" => last_t = data["t"].as_u64(),
            "btcusdt@aggTrade" => last_a = data["a"].as_u64(),
            other => panic!("unexpected {other}"),
        }
    }
    drop(ws);
    let (mut last_u, mut last_t, mut last_a) = (last_u.unwrap(), last_t.unwrap(), last_a.unwrap());
    wait_for_trade(&server, "BTCUSDT", last_t + 10).await;

    let mut ws = server
        .connect(&format!(
            "/stream?streams={streams}&timeUnit=MICROSECOND&resume=btcusdt@depth@100ms:{last_u},btcusdt@trade:{last_t},btcusdt@aggTrade:{last_a}"
        ))
        .await;
    let (mut diffs, mut trades, mut aggs) = (0, 0, 0);
    let mut last_agg_trade = None;
    while diffs < 5 || trades < 20 || aggs < 10 {
        let (stream, data) = next_event(&mut ws).await;
        assert!(data["E"].as_u64().expect("E") > 1_000_000_000_000_000, "µs");
        match stream.as_str() {
            "btcusdt@depth@100ms" => {
                assert_eq!(data["e"], "depthUpdate");
                assert_eq!(data["U"].as_u64(), Some(last_u + 1), "diff gap");
                last_u = data["u"].as_u64().expect("u");
                diffs += 1;
            }
            "btcusdt@trade" => {
                assert_eq!(data["e"], "trade", "{data}");
                assert_eq!(data["t"].as_u64(), Some(last_t + 1), "trade gap or repeat");
                last_t += 1;
                trades += 1;
            }
            "btcusdt@aggTrade" => {
                assert_eq!(data["e"], "aggTrade", "{data}");
                assert_eq!(data["a"].as_u64(), Some(last_a + 1), "aggregate gap");
                if let Some(previous_last) = last_agg_trade {
                    assert_eq!(data["f"].as_u64(), Some(previous_last + 1));
                }
                last_agg_trade = data["l"].as_u64();
                last_a += 1;
                aggs += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        server.metric("bookcast_resume_events_total", "").await >= 10.0,
        "the missed trades came from the history"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_history_a_diff_gets_a_snapshot_and_trades_a_resume_gap() {
    let server = TestServer::start(Config {
        history: Duration::from_secs(1),
        ..Config::default()
    })
    .await;
    let mut ws = server
        .connect("/stream?streams=btcusdt@depth@0ms/btcusdt@trade")
        .await;
    let (mut last_u, mut last_t) = (None, None);
    while last_u.is_none() || last_t.is_none() {
        let (stream, data) = next_event(&mut ws).await;
        match stream.as_str() {
            "btcusdt@depth@0ms" => last_u = data["u"].as_u64(),
            _ => last_t = data["t"].as_u64(),
        }
    }
    drop(ws);
    let (last_u, last_t) = (last_u.unwrap(), last_t.unwrap());
    // Wait until the trade after ours printed over 1.5 s (server time) before the newest.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let trades = recent_trades(&server, "BTCUSDT").await;
        let time_of = |id: u64| {
            trades
                .iter()
                .find(|t| t["id"].as_u64() == Some(id))
                .and_then(|t| t["time"].as_u64())
        };
        let newest = trades.last().and_then(|t| t["time"].as_u64());
        if let (Some(ours), Some(newest)) = (time_of(last_t + 1), newest) {
            if newest > ours + 1500 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "trading went on");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut ws = server
        .connect(&format!(
            "/stream?streams=btcusdt@depth@0ms/btcusdt@trade&resume=btcusdt@depth@0ms:{last_u},btcusdt@trade:{last_t}"
        ))
        .await;
    let (mut snapshot_at, mut gap_to) = (None, None);
    loop {
        let (stream, data) = next_event(&mut ws).await;
        match (stream.as_str(), data["e"].as_str()) {
            ("btcusdt@depth@0ms", Some("depthSnapshot")) => {
                assert!(snapshot_at.is_none(), "one snapshot");
                snapshot_at = data["lastUpdateId"].as_u64();
            }
            ("btcusdt@depth@0ms", Some("depthUpdate")) => {
                let at = snapshot_at.expect("the snapshot comes before any diff");
                assert_eq!(data["U"].as_u64(), Some(at + 1));
            }
            ("btcusdt@trade", Some("resumeGap")) => {
                assert!(gap_to.is_none(), "one gap");
                assert_eq!(data["s"], "BTCUSDT");
                assert_eq!(data["stream"], "btcusdt@trade");
                assert_eq!(data["from"].as_u64(), Some(last_t + 1));
                let to = data["to"].as_u64().expect("to");
                assert!(to > last_t, "{data}");
                gap_to = Some(to);
            }
            ("btcusdt@trade", Some("trade")) => {
                let to = gap_to.expect("the gap comes before the trades");
                assert_eq!(data["t"].as_u64(), Some(to + 1), "the trades after the gap");
                if snapshot_at.is_some() {
                    break;
                }
            }
            other => panic!("unexpected {other:?}: {data}"),
        }
        if snapshot_at.is_some() && gap_to.is_some() {
            break;
        }
    }
    server
        .wait_metric("bookcast_resumes_total", "outcome=\"snapshot\"", 1.0)
        .await;
    server
        .wait_metric("bookcast_resumes_total", "outcome=\"gap\"", 1.0)
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_this_node_has_not_published_yet_is_waited_for() {
    // A client that left a node further along than this one: its catch-up starts right after
    // its id once this node gets there, with nothing sent twice.
    let server = TestServer::start(Config::default()).await;
    let now = wait_for_update(&server, "BTCUSDT", 0).await;
    let ahead = now + 30;
    let mut ws = server
        .connect(&format!(
            "/ws/btcusdt@depth@0ms?resume=btcusdt@depth@0ms:{ahead}"
        ))
        .await;
    let first = next_json(&mut ws).await;
    assert_eq!(first["e"], "depthUpdate");
    assert_eq!(first["U"].as_u64(), Some(ahead + 1), "{first}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_naming_another_or_an_unnumbered_stream_is_refused() {
    let server = TestServer::start(Config::default()).await;
    for (path, says) in [
        (
            "/ws/btcusdt@trade?resume=ethusdt@trade:5",
            "not a stream of this URL",
        ),
        (
            "/ws/btcusdt@trade?resume=nosuch@trade:5",
            "not a stream of this URL",
        ),
        (
            "/ws/btcusdt@bookTicker?resume=btcusdt@bookTicker:5",
            "cannot be resumed",
        ),
        (
            "/ws/btcusdt@trade?resume=btcusdt@trade",
            "expected <stream>:<id>",
        ),
        ("/ws/btcusdt@trade?resume=btcusdt@trade:x", "not a number"),
        (
            "/ws/btcusdt@trade?resume=btcusdt@trade:1,btcusdt@trade:2",
            "named twice",
        ),
    ] {
        match tokio_tungstenite::connect_async(server.ws_url(path)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "{path}");
                let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or(b""))
                    .expect("a JSON error");
                assert_eq!(body["code"], -1100, "{path}");
                let msg = body["msg"].as_str().expect("msg");
                assert!(
                    msg.starts_with("Invalid resume") && msg.contains(says),
                    "{path}: {msg}"
                );
            }
            other => panic!("{path}: expected 400, got {other:?}"),
        }
    }
    server
        .wait_metric(
            "bookcast_connections_rejected_total",
            "reason=\"bad_stream_path\"",
            6.0,
        )
        .await;
    // Up to date: nothing extra, the live stream as usual.
    let mut ws = server.connect("/ws/btcusdt@depth@0ms").await;
    let u = next_json(&mut ws).await["u"].as_u64().expect("u");
    drop(ws);
    let latest = wait_for_update(&server, "BTCUSDT", u).await;
    let mut ws = server
        .connect(&format!(
            "/ws/btcusdt@depth@0ms?resume=btcusdt@depth@0ms:{latest}"
        ))
        .await;
    let next = next_json(&mut ws).await;
    assert_eq!(next["U"].as_u64(), Some(latest + 1), "{next}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_larger_than_the_queue_bound_is_delivered_not_evicted() {
    // Minutes of trades can exceed the slow-consumer bound; refusing them would evict exactly
    // the clients resume is for.
    let server = TestServer::start(Config {
        queue_frames: 8,
        ..Config::default()
    })
    .await;
    wait_for_trade(&server, "BTCUSDT", 30).await;
    let mut ws = server
        .connect("/ws/btcusdt@trade?resume=btcusdt@trade:0")
        .await;
    for id in 1..=35 {
        let trade = next_json(&mut ws).await;
        assert_eq!(trade["t"].as_u64(), Some(id), "{trade}");
    }
    server.stop().await;
}
