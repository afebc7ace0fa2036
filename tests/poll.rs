//! Long and short polling (SPEC.md "Other transports for the same streams"): the same streams
//! and payloads as WebSocket over plain HTTP requests, every event after a cursor from the
//! history `resume=` uses, and `410` once the cursor is older than that history.

mod common;

use bookcast::config::Config;
use common::*;
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

async fn poll(server: &TestServer, query: &str) -> (u16, Value) {
    let (status, body) = server.get(&format!("/poll?{query}")).await;
    let json = serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON body: {body}"));
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successive_polls_deliver_every_event_once_in_order() {
    let server = TestServer::start(Config::default()).await;
    let streams = "btcusdt@depth@100ms/btcusdt@trade/btcusdt@aggTrade";
    // Without a cursor: at once, nothing, and where "now" is.
    let started = Instant::now();
    let (status, first) = poll(&server, &format!("streams={streams}")).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once"
    );
    assert_eq!(first["events"], serde_json::json!([]));
    let mut cursor = first["cursor"].as_str().expect("cursor").to_string();
    let ids: Vec<u64> = cursor
        .split('.')
        .map(|id| id.parse().expect("id"))
        .collect();
    assert_eq!(ids.len(), 3, "one id per stream: {cursor}");
    let (mut last_u, mut last_t, mut last_a) = (ids[0], ids[1], ids[2]);
    let (mut diffs, mut trades, mut aggs) = (0, 0, 0);
    let deadline = Instant::now() + PATIENCE;
    while diffs < 10 || trades < 10 || aggs < 5 {
        assert!(Instant::now() < deadline, "too few events");
        let (status, answer) = poll(
            &server,
            &format!("streams={streams}&cursor={cursor}&wait=5000"),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let events = answer["events"].as_array().expect("events");
        assert!(
            !events.is_empty(),
            "a long poll answers with at least one event"
        );
        for event in events {
            let data = &event["data"];
            match event["stream"].as_str().expect("stream") {
                "btcusdt@depth@100ms" => {
                    assert_eq!(data["e"], "depthUpdate");
                    assert_eq!(data["U"].as_u64(), Some(last_u + 1), "diff gap: {data}");
                    last_u = data["u"].as_u64().expect("u");
                    diffs += 1;
                }
                "btcusdt@trade" => {
                    assert_eq!(data["t"].as_u64(), Some(last_t + 1), "trade gap or repeat");
                    last_t += 1;
                    trades += 1;
                }
                "btcusdt@aggTrade" => {
                    assert_eq!(
                        data["a"].as_u64(),
                        Some(last_a + 1),
                        "aggregate gap or repeat"
                    );
                    last_a += 1;
                    aggs += 1;
                }
                other => panic!("unexpected stream {other}"),
            }
        }
        cursor = answer["cursor"].as_str().expect("cursor").to_string();
        assert_eq!(
            cursor,
            format!("{last_u}.{last_t}.{last_a}"),
            "the cursor follows the events"
        );
    }
    assert!(
        server
            .metric(
                "bookcast_transport_requests_total",
                "transport=\"longpoll\""
            )
            .await
            >= 2.0
    );
    assert!(
        server
            .metric("bookcast_transport_events_total", "transport=\"longpoll\"")
            .await
            >= 25.0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_poll_answers_at_once_and_a_long_poll_waits_for_the_first_event() {
    let server = TestServer::start_with_feed(Config::default(), small_feed()).await;
    // XRPUSDT's 1000 ms diff: at most one event a second.
    let streams = "xrpusdt@depth";
    let (_, now) = poll(&server, &format!("streams={streams}")).await;
    let cursor = now["cursor"].as_str().expect("cursor").to_string();
    let started = Instant::now();
    let (status, short) = poll(
        &server,
        &format!("streams={streams}&cursor={cursor}&wait=0"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "wait=0 does not wait"
    );
    if short["events"].as_array().expect("events").is_empty() {
        assert_eq!(
            short["cursor"].as_str(),
            Some(cursor.as_str()),
            "no event, same cursor"
        );
    }
    let (_, long) = poll(
        &server,
        &format!("streams={streams}&cursor={cursor}&wait=3000"),
    )
    .await;
    let events = long["events"].as_array().expect("events");
    assert_eq!(
        events.len(),
        1,
        "the next 1000 ms diff, within the wait: {long}"
    );
    assert_eq!(
        events[0]["data"]["U"].as_u64(),
        Some(cursor.parse::<u64>().expect("id") + 1)
    );
    server
        .wait_metric(
            "bookcast_transport_requests_total",
            "transport=\"poll\"",
            1.0,
        )
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_cursor_gets_410_and_bad_polls_get_400() {
    let server = TestServer::start(Config {
        history: Duration::from_secs(1),
        max_streams: 2,
        ..Config::default()
    })
    .await;
    let (_, now) = poll(&server, "streams=btcusdt@depth@0ms").await;
    let old = now["cursor"]
        .as_str()
        .expect("cursor")
        .parse::<u64>()
        .expect("id");
    // Wait until the update after the cursor is older than the 1 s history (server time).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let depth = server
            .get_json("/api/v3/depth?symbol=BTCUSDT&limit=5")
            .await;
        if depth["lastUpdateId"]
            .as_u64()
            .is_some_and(|u| u > old + 250)
        {
            break; // BTCUSDT makes 100 updates a second: 2.5 s of them
        }
        assert!(Instant::now() < deadline, "the market stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, expired) = poll(
        &server,
        &format!("streams=btcusdt@depth@0ms&cursor={old}&wait=0"),
    )
    .await;
    assert_eq!(status, 410, "{expired}");
    assert_eq!(
        expired,
        serde_json::json!({"code":-1000,"msg":"Cursor expired; start again from a snapshot."})
    );
    for (query, says) in [
        ("streams=btcusdt@bookTicker&cursor=1", "cannot be polled"),
        ("streams=nosuch@trade", "Invalid stream name"),
        ("streams=", "at least one stream"),
        (
            "streams=btcusdt@trade/ethusdt@trade/xrpusdt@trade",
            "Too many streams",
        ),
        ("streams=btcusdt@trade&cursor=1.2", "Invalid cursor"),
        ("streams=btcusdt@trade&cursor=x", "Invalid cursor"),
        ("streams=btcusdt@trade&cursor=1&wait=60001", "Invalid wait"),
        ("streams=btcusdt@trade&timeUnit=SECOND", "Invalid timeUnit"),
    ] {
        let (status, body) = poll(&server, query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["code"], -1100, "{query}");
        assert!(
            body["msg"].as_str().expect("msg").contains(says),
            "{query}: {body}"
        );
    }
    server.stop().await;
}
