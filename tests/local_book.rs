//! Binance's documented local order book algorithm against bookcast: `/api/v3/depth` plus
//! `<s>@depth`, keyed by price strings as python-binance's DepthCache does.

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

/// Reads the next diff, checks it follows `previous` with no gap, applies it; returns its `u`.
async fn apply_next(ws: &mut Ws, book: &mut LocalBook, previous: u64) -> u64 {
    let event = next_json(ws).await;
    assert_eq!(
        event["U"].as_u64().unwrap(),
        previous + 1,
        "gap after {previous}"
    );
    book.apply(&event);
    event["u"].as_u64().unwrap()
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
    let last_id = first_snapshot["lastUpdateId"].as_u64().unwrap();
    let mut book = LocalBook::from_snapshot(&first_snapshot);

    // Drop events the snapshot already covers; the first kept one must straddle it.
    let mut event = next_json(&mut ws).await;
    while event["u"].as_u64().unwrap() <= last_id {
        event = next_json(&mut ws).await;
    }
    let (first, last) = (event["U"].as_u64().unwrap(), event["u"].as_u64().unwrap());
    assert!(
        first <= last_id + 1 && last_id < last,
        "first event {first}..{last} must straddle {last_id}+1"
    );
    book.apply(&event);
    let mut previous = last;
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
    follow(&server, "BTCUSDT", "", Duration::from_secs(4), true).await;
    follow(&server, "XRPUSDT", "", Duration::from_secs(2), true).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_diffs_have_no_gaps() {
    let server = TestServer::start(Config::default()).await;
    let fast = follow(&server, "BTCUSDT", "@100ms", Duration::from_secs(3), false);
    let slow = follow(&server, "ETHUSDT", "@1000ms", Duration::from_secs(3), false);
    tokio::join!(fast, slow);
    server.stop().await;
}
