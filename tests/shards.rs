//! Each shard accepts its own connections (on its own copy of the listening socket):
//! `bookcast_shard_connections{shard}` counts what each holds, over real sockets.
//!
//! One test in its own binary: the metrics recorder is process-wide, and another test's
//! connections would be counted too.

mod common;

use bookcast::config::Config;
use common::*;
use std::time::{Duration, Instant};

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
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = server.metric("bookcast_shard_connections", "").await;
        if left == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} connections still counted after every client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}
