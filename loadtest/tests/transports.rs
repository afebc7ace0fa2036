//! `--transport`: the same streams over long polling and short polling against a real
//! bookcast, followed without a gap, with the report's transport section filled in.

mod common;

use bookcast::config::Config;
use common::{report_path, run_load, start_server, take_file};
use serde_json::Value;

/// Runs a few clients on `<sym>@depth@100ms,<sym>@trade` over `transport` and returns the
/// report, checked for what every transport must show: all connected, events, no gap, no
/// HTTP error, latency recorded, wire bytes above the payload bytes they carried.
async fn run(addr: std::net::SocketAddr, transport: &str, clients: u64) -> Value {
    let json = report_path(&format!("transport-{}", transport.replace('=', "-")));
    let clients_arg = clients.to_string();
    let stdout = run_load(
        addr,
        &[
            "--clients",
            &clients_arg,
            "--streams",
            "<sym>@depth@100ms,<sym>@trade",
            "--duration",
            "3s",
            "--transport",
            transport,
        ],
        &json,
        None,
    )
    .await;
    let report: Value = serde_json::from_str(&take_file(&json)).unwrap();
    assert_eq!(report["connected"], clients, "{stdout}");
    assert_eq!(report["connect_failures"], 0, "{stdout}");
    assert_eq!(report["gaps"], 0, "{stdout}");
    let events = report["events"].as_u64().unwrap();
    assert!(events > 0, "{stdout}");
    assert!(
        report["latency_us"]["p50"].as_u64().unwrap() > 0,
        "{stdout}"
    );
    let t = &report["transport"];
    assert_eq!(t["http_errors"], serde_json::json!({}), "{stdout}");
    let payload = report["bytes"].as_u64().unwrap();
    assert!(
        t["wire_bytes_received"].as_u64().unwrap() > payload,
        "framing costs something: {stdout}"
    );
    assert!(stdout.contains("wire bytes"), "{stdout}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_and_short_polls_follow_their_streams_without_a_gap() {
    let server = start_server(Config::default()).await;

    let long = run(server.addr, "longpoll", 10).await;
    let t = &long["transport"];
    assert_eq!(t["name"], "longpoll");
    // Each long poll is answered once there is something new: many requests, few events each.
    let requests = t["requests"].as_u64().unwrap();
    assert!(requests > 10 * 3, "{long}");
    assert!(t["response_head_bytes"].as_u64().unwrap() > requests * 50);

    let short = run(server.addr, "poll=500ms", 10).await;
    let t = &short["transport"];
    assert_eq!(t["name"], "poll");
    assert_eq!(t["poll_interval_ms"], 500);
    // One request at the start and one every 500 ms over 3 s (and the stop), per client.
    let requests = t["requests"].as_u64().unwrap();
    assert!((10 * 5..=10 * 9).contains(&requests), "{short}");
    // Events wait on the server until the next poll: stale by up to the interval.
    let p50 = short["latency_us"]["p50"].as_u64().unwrap();
    assert!((50_000..1_000_000).contains(&p50), "{short}");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_clients_follow_their_streams_without_a_gap() {
    let server = start_server(Config::default()).await;
    let report = run(server.addr, "sse", 10).await;
    let t = &report["transport"];
    assert_eq!(t["name"], "sse");
    // One request per client for the whole run: the stream stays open.
    assert_eq!(t["requests"].as_u64(), Some(10), "{report}");
    server.stop().await;
}
