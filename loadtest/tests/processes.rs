//! `--processes 2` for real: bookcast in-process on port 0, the bookcast-load binary as a
//! coordinator of two children against it, and the merged report checked.

mod common;

use bookcast::config::Config;
use common::{
    assert_gap_free_report, report_path, run_load, start_server, take_file, take_html_report,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_report_one_merged_run() {
    let server = start_server(Config::default()).await;

    let json = report_path("processes");
    let html = json.with_extension("html");
    let stdout = run_load(
        server.addr,
        &[
            "--processes",
            "2",
            "--clients",
            "200",
            "--slow",
            "10",
            "--duration",
            "3s",
        ],
        &json,
        Some(&html),
    )
    .await;
    assert!(stdout.contains("processes          2"), "{stdout}");
    assert!(
        !stdout.contains("bookcast-load-progress"),
        "the children's progress lines are the coordinator's to read: {stdout}"
    );

    let text = take_file(&json);
    take_html_report(&html);
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_gap_free_report(&report, 200, &stdout);
    // The merged report is an ordinary report: the children's raw histograms and per-client
    // counts stay in their temporary files.
    for raw in [
        "raw_histograms",
        "per_client_event_counts",
        "ramp_s",
        "buckets",
    ] {
        assert!(!text.contains(raw), "the merged report has {raw}");
    }
    assert_eq!(report["slow_clients"], 10, "{stdout}");
    let closed: u64 = report["closes"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(
        closed, 200,
        "every client's close is counted once: {report}"
    );

    server.stop().await;
}
