//! Same feed and seed, same market: two servers started apart publish identical diffs (and
//! trades) for the same update ids.

mod common;

use bookcast::config::Config;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;

/// Collects `count` consecutive real-time diffs keyed by update id, and the trades seen
/// meanwhile keyed by trade id.
async fn collect(
    server: &TestServer,
    count: usize,
) -> (BTreeMap<u64, Value>, BTreeMap<u64, Value>) {
    let mut ws = server
        .connect("/stream?streams=btcusdt@depth@0ms/btcusdt@trade")
        .await;
    let (mut diffs, mut trades) = (BTreeMap::new(), BTreeMap::new());
    while diffs.len() < count {
        let message = next_json(&mut ws).await;
        let data = &message["data"];
        if message["stream"] == "btcusdt@depth@0ms" {
            diffs.insert(
                data["u"].as_u64().unwrap(),
                serde_json::json!([data["b"], data["a"]]),
            );
        } else {
            trades.insert(
                data["t"].as_u64().unwrap(),
                serde_json::json!([data["p"], data["q"], data["m"]]),
            );
        }
    }
    (diffs, trades)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_same_events() {
    let first = TestServer::start(Config::default()).await;
    // The second server starts later, so it lags the first by some updates.
    let mut probe = first.connect("/ws/btcusdt@depth@0ms").await;
    for _ in 0..20 {
        next_json(&mut probe).await;
    }
    drop(probe);
    let second = TestServer::start(Config::default()).await;
    let (a, b) = tokio::join!(collect(&first, 200), collect(&second, 200));
    let common_diffs: Vec<u64> =
        a.0.keys()
            .filter(|u| b.0.contains_key(u))
            .copied()
            .collect();
    assert!(
        common_diffs.len() >= 50,
        "only {} update ids in common",
        common_diffs.len()
    );
    for u in &common_diffs {
        assert_eq!(
            a.0[u], b.0[u],
            "diff {u} differs between two servers on the same seed"
        );
    }
    let common_trades: Vec<u64> =
        a.1.keys()
            .filter(|t| b.1.contains_key(t))
            .copied()
            .collect();
    for t in &common_trades {
        assert_eq!(a.1[t], b.1[t], "trade {t} differs");
    }
    first.stop().await;
    second.stop().await;
}
