//! A small real run: bookcast in-process on port 0, the bookcast-load binary against it.

mod common;

use bookcast::config::Config;
use common::{
    assert_gap_free_report, report_path, run_load, start_server, take_file, take_html_report,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_hundred_clients_see_no_gaps_and_the_report_has_its_keys() {
    let server = start_server(Config::default()).await;

    let json = report_path("smoke");
    let html = json.with_extension("html");
    let stdout = run_load(
        server.addr,
        &[
            "--clients",
            "300",
            "--streams",
            "<sym>@depth@0ms,<sym>@trade",
            "--duration",
            "3s",
            "--slow",
            "10",
        ],
        &json,
        Some(&html),
    )
    .await;

    let report: serde_json::Value = serde_json::from_str(&take_file(&json)).unwrap();
    let page = take_html_report(&html);
    assert!(page.contains("uPlot"), "the HTML report embeds uPlot");
    assert_gap_free_report(&report, 300, &stdout);

    server.stop().await;
}
