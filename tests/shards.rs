//! Each shard accepts its own connections (on its own copy of the listening socket):
//! `bookcast_shard_connections{shard}` counts what each holds, over real sockets.
//!
//! One test in its own binary: the metrics recorder is process-wide, and another test's
//! connections would be counted too.

mod common;

use bookcast::config::Config;
use common::*;

const CLIENTS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_is_counted_on_the_shard_that_accepted_it() {
    let server = TestServer::start(Config {
        shards: 2,
        ..Config::default()
    })
    .await;
    let (_, body) = server.get("/metrics").await;
    for shard in 0..2 {
        let series = format!("bookcast_shard_connections{{shard=\"{shard}\"}} 0");
        assert!(body.contains(&series), "{series} missing:\n{body}");
    }

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(server.connect("/ws/btcusdt@trade").await);
    }
    // A connection is in its shard's table before its 101, so the count is exact at once.
    assert_eq!(
        server.metric("bookcast_shard_connections", "").await,
        CLIENTS as f64
    );

    drop(clients);
    server
        .wait_metric_until(
            "bookcast_shard_connections",
            "",
            "0 once every client left",
            |v| v == 0.0,
        )
        .await;
    server.stop().await;
}
