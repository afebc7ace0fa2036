//! The book and resume modes against a real bookcast (in-process on port 0): books built from
//! `snapshot=true` equal REST at the end, and clients that reconnect every second with
//! `resume=` miss nothing.

mod common;

use bookcast::config::Config;
use common::{report_path, run_load_urls, start_server, take_file};

/// Runs bookcast-load over `urls` with `args` and returns its JSON report's `sync` section
/// (the run itself must succeed: a missed update or a mismatch fails it).
async fn sync_report(name: &str, urls: &str, args: &[&str]) -> (serde_json::Value, String) {
    let json = report_path(name);
    let stdout = run_load_urls(urls, args, &json, None).await;
    let report: serde_json::Value = serde_json::from_str(&take_file(&json)).unwrap();
    assert_eq!(report["gaps"], 0, "{stdout}");
    let sync = report["sync"].clone();
    assert!(sync.is_object(), "no sync section: {report}");
    (sync, stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn books_from_in_band_snapshots_equal_rest_at_the_end() {
    let server = start_server(Config::default()).await;
    let (sync, stdout) = sync_report(
        "sync-snapshot",
        &format!("ws://{}", server.addr),
        &[
            "--clients",
            "3",
            "--snapshot",
            "--streams",
            "<sym>@depth@0ms,<sym>@trade",
            "--duration",
            "3s",
        ],
    )
    .await;
    assert!(sync["snapshots"].as_u64().unwrap() >= 3, "{stdout}");
    assert_eq!(sync["book_mismatches"], 0, "{stdout}");
    assert!(sync["book_checks"].as_u64().unwrap() >= 1, "{stdout}");
    assert_eq!(sync["missed_updates"], 0, "{stdout}");
    assert_eq!(sync["missed_trades"], 0, "{stdout}");
    assert!(stdout.contains("book checks"), "{stdout}");
    server.stop().await;
}

/// One server listed twice (every gateway of a cluster numbers alike, but this test has no
/// NATS): each reconnect takes the other entry. The 300 ms pause before reconnecting lets
/// every symbol (20-100 updates/s) move on, so each resume has something to catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_resuming_every_second_miss_nothing() {
    let server = start_server(Config::default()).await;
    let url = format!("ws://{}", server.addr);
    let (sync, stdout) = sync_report(
        "sync-resume",
        &format!("{url},{url}"),
        &[
            "--clients",
            "4",
            "--snapshot",
            "--resume",
            "--reconnect-every",
            "1s",
            "--reconnect-delay",
            "300ms",
            "--streams",
            "<sym>@depth@0ms,<sym>@trade",
            "--duration",
            "4s",
        ],
    )
    .await;
    assert!(sync["reconnects"].as_u64().unwrap() >= 4, "{stdout}");
    assert!(sync["catchup_diffs"].as_u64().unwrap() >= 1, "{stdout}");
    assert_eq!(sync["missed_updates"], 0, "{stdout}");
    assert_eq!(sync["missed_trades"], 0, "{stdout}");
    assert_eq!(sync["resume_snapshots"], 0, "{stdout}");
    assert_eq!(sync["resume_gaps"], 0, "{stdout}");
    assert_eq!(sync["book_mismatches"], 0, "{stdout}");
    assert!(sync["recoveries"].as_u64().unwrap() >= 4, "{stdout}");
    server.stop().await;
}
