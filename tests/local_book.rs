//! Binance's documented local order book algorithm against bookcast: `/api/v3/depth` plus
//! the diff streams (`<s>@depth@0ms` real time, `@depth@100ms`, `@depth` = `@depth@1000ms`),
//! keyed by price strings as python-binance's DepthCache does.

mod common;

use bookcast::config::Config;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Default, Debug, PartialEq)]
struct LocalBook {
    bids: BTreeMap<String, String>,
    asks: BTreeMap<String, String>,
}

impl LocalBook {
    fn from_snapshot(snapshot: &Value) -> Self {
        let mut book = LocalBook::default();
        book.apply_side(true, &snapshot["bids"]);
        book.apply_side(false, &snapshot["asks"]);
        book
    }

    fn apply_side(&mut self, bids: bool, levels: &Value) {
        let side = if bids { &mut self.bids } else { &mut self.asks };
        for level in levels.as_array().expect("levels") {
            let price = level[0].as_str().unwrap().to_string();
            let qty = level[1].as_str().unwrap().to_string();
            if qty == "0.00000000" {
                side.remove(&price);
            } else {
                side.insert(price, qty);
            }
        }
    }

    fn apply(&mut self, event: &Value) {
        self.apply_side(true, &event["b"]);
        self.apply_side(false, &event["a"]);
    }
}

/// Reads the next diff, checks it follows `previous` with no gap, applies it; returns it.
async fn apply_next_event(ws: &mut Ws, book: &mut LocalBook, previous: u64) -> Value {
    let event = next_json(ws).await;
    assert_eq!(
        event["U"].as_u64().unwrap(),
        previous + 1,
        "gap after {previous}"
    );
    book.apply(&event);
    event
}

/// [`apply_next_event`], returning the event's `u`.
async fn apply_next(ws: &mut Ws, book: &mut LocalBook, previous: u64) -> u64 {
    apply_next_event(ws, book, previous).await["u"]
        .as_u64()
        .unwrap()
}

/// Binance's start: drops the events `snapshot` already covers, checks the first kept one
/// straddles it and applies it to a book made from the snapshot. Returns the book and the
/// event's `u`.
async fn start_from(ws: &mut Ws, snapshot: &Value) -> (LocalBook, u64) {
    let last_id = snapshot["lastUpdateId"].as_u64().unwrap();
    let mut book = LocalBook::from_snapshot(snapshot);
    let mut event = next_json(ws).await;
    while event["u"].as_u64().unwrap() <= last_id {
        event = next_json(ws).await;
    }
    let (first, last) = (event["U"].as_u64().unwrap(), event["u"].as_u64().unwrap());
    assert!(
        first <= last_id + 1 && last_id < last,
        "first event {first}..{last} must straddle {last_id}+1"
    );
    book.apply(&event);
    (book, last)
}

async fn snapshot(server: &TestServer, symbol: &str) -> Value {
    server
        .get_json(&format!("/api/v3/depth?symbol={symbol}&limit=5000"))
        .await
}

async fn follow(
    server: &TestServer,
    symbol: &str,
    stream_suffix: &str,
    run_for: Duration,
    compare_at_end: bool,
) {
    let mut ws = server
        .connect(&format!(
            "/ws/{}@depth{stream_suffix}",
            symbol.to_lowercase()
        ))
        .await;
    let first_snapshot = snapshot(server, symbol).await;
    let (mut book, mut previous) = start_from(&mut ws, &first_snapshot).await;
    let mut events = 1u64;

    let until = Instant::now() + run_for;
    while Instant::now() < until {
        previous = apply_next(&mut ws, &mut book, previous).await;
        events += 1;
    }
    assert!(events >= 2, "only {events} events");
    if compare_at_end {
        let later = snapshot(server, symbol).await;
        let at = later["lastUpdateId"].as_u64().unwrap();
        assert!(at >= previous);
        while previous < at {
            previous = apply_next(&mut ws, &mut book, previous).await;
        }
        assert_eq!(
            previous, at,
            "a real-time diff ends exactly at every update id"
        );
        assert_eq!(
            book,
            LocalBook::from_snapshot(&later),
            "local book equals the snapshot at update {at}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_book_from_snapshot_and_realtime_diffs_matches_a_later_snapshot() {
    let server = TestServer::start(Config::default()).await;
    follow(&server, "BTCUSDT", "@0ms", Duration::from_secs(4), true).await;
    follow(&server, "XRPUSDT", "@0ms", Duration::from_secs(2), true).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_diffs_have_no_gaps() {
    let server = TestServer::start(Config::default()).await;
    let fast = follow(&server, "BTCUSDT", "@100ms", Duration::from_secs(3), false);
    let slow = follow(&server, "ETHUSDT", "@1000ms", Duration::from_secs(3), false);
    let unsuffixed = follow(&server, "XRPUSDT", "", Duration::from_secs(3), false);
    tokio::join!(fast, slow, unsuffixed);
    server.stop().await;
}

/// SPEC.md: `<s>@depth` is Binance's 1000 ms diff and `<s>@depth@0ms` bookcast's real-time one,
/// numbering the same updates. One REST snapshot starts a book on each; `@depth` events come
/// once a second (by their `E`, and as received), each spanning many updates and continuing
/// the last (`U` = previous `u` + 1); `@0ms` events carry one update each; and the 1000 ms
/// book, at each event's `u`, equals the real-time book at the same update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_snapshot_fits_the_1000ms_and_the_realtime_diffs() {
    const SECONDS: usize = 3;
    let server = TestServer::start(Config::default()).await;
    let mut slow = server.connect("/ws/btcusdt@depth").await;
    let mut fast = server.connect("/ws/btcusdt@depth@0ms").await;
    let first_snapshot = snapshot(&server, "BTCUSDT").await;
    let (mut slow_book, mut slow_u) = start_from(&mut slow, &first_snapshot).await;
    let (mut fast_book, mut fast_u) = start_from(&mut fast, &first_snapshot).await;

    let mut last_e = None;
    let mut last_arrival = Instant::now();
    for second in 0..SECONDS {
        let event = apply_next_event(&mut slow, &mut slow_book, slow_u).await;
        let arrival = Instant::now();
        let (first, u) = (event["U"].as_u64().unwrap(), event["u"].as_u64().unwrap());
        let e = event["E"].as_u64().unwrap();
        assert!(
            u - first >= 10,
            "a second of BTCUSDT (100 updates/s) merges many updates: {first}..{u}"
        );
        if let Some(last_e) = last_e {
            let gap_ms = e - last_e;
            assert!(
                (900..=1100).contains(&gap_ms),
                "@depth events are 1000 ms apart by E, got {gap_ms} ms"
            );
        }
        if second > 0 {
            let waited = arrival - last_arrival;
            assert!(
                waited >= Duration::from_millis(500) && waited <= Duration::from_millis(2500),
                "@depth events arrive about once a second, waited {waited:?}"
            );
        }
        (last_e, last_arrival, slow_u) = (Some(e), arrival, u);

        // The real-time stream, one update per event, up to the same update id.
        while fast_u < slow_u {
            let event = apply_next_event(&mut fast, &mut fast_book, fast_u).await;
            assert_eq!(event["U"], event["u"], "@depth@0ms: one event per update");
            fast_u = event["u"].as_u64().unwrap();
        }
        assert_eq!(fast_u, slow_u, "both streams number the same updates");
        assert_eq!(
            slow_book, fast_book,
            "the two books agree at update {slow_u}"
        );
    }
    server.stop().await;
}
