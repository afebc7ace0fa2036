//! `--url A,B`: two independent bookcast servers in-process on port 0 (as two gateways of a
//! cluster would be, each serving the same feed), the bookcast-load binary spreading its
//! clients over both, in one process and as `--processes 2`, and the per-URL breakdown checked.

mod common;

use bookcast::config::Config;
use common::{assert_gap_free_report, report_path, run_load_urls, start_server, take_file};

/// Runs `clients` clients over both servers with `extra` options and checks that each URL got
/// half of them, all connected, with events and no gap, in the JSON report and the printout.
async fn run_over_two_servers(name: &str, clients: u64, extra: &[&str]) {
    let (a, b) = (
        start_server(Config::default()).await,
        start_server(Config::default()).await,
    );
    let urls = [format!("ws://{}", a.addr), format!("ws://{}", b.addr)];

    let json = report_path(name);
    let count = clients.to_string();
    let mut args = vec!["--clients", count.as_str(), "--duration", "3s"];
    args.extend(extra);
    let stdout = run_load_urls(&urls.join(","), &args, &json, None).await;

    let report: serde_json::Value = serde_json::from_str(&take_file(&json)).unwrap();
    assert_gap_free_report(&report, clients, &stdout);
    let per_url = report["per_url"].as_array().expect("per_url in the report");
    assert_eq!(per_url.len(), 2, "{report}");
    let mut events = 0;
    for (entry, url) in per_url.iter().zip(&urls) {
        assert_eq!(entry["url"], url.as_str(), "{entry}");
        assert_eq!(
            entry["clients"],
            clients / 2,
            "half the clients each: {entry}"
        );
        assert_eq!(entry["connected"], clients / 2, "{entry}\n{stdout}");
        assert_eq!(entry["connect_failures"], 0, "{entry}\n{stdout}");
        assert_eq!(entry["gaps"], 0, "{entry}\n{stdout}");
        assert!(entry["events"].as_u64().unwrap() > 0, "{entry}\n{stdout}");
        assert!(entry["events_per_s"].as_f64().unwrap() > 0.0, "{entry}");
        assert!(entry["latency_us"]["p50"].as_u64().unwrap() > 0, "{entry}");
        assert!(entry["latency_us"]["p99"].is_u64(), "{entry}");
        events += entry["events"].as_u64().unwrap();
        // The printout has a row per URL.
        assert!(
            stdout.lines().any(|l| l.starts_with(url.as_str())),
            "no row for {url}: {stdout}"
        );
    }
    assert_eq!(
        report["events"], events,
        "the URLs' events add up: {report}"
    );
    assert!(stdout.contains("per url"), "{stdout}");

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_spread_evenly_over_two_servers_and_each_is_reported() {
    run_over_two_servers("urls", 40, &[]).await;
}

/// 42 clients in two children of 21: only the run-wide rotation gives each URL 21. Each child
/// counting from its own client 0 would give the first URL 11 + 11.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spread_stays_even_across_processes() {
    run_over_two_servers("urls-processes", 42, &["--processes", "2"]).await;
}
