//! A load run against a server's per-IP limits: on defaults it just works, and when the
//! server refuses connections the report says why.

mod common;

use bookcast::config::Config;
use common::{report_path, run_load, start_server_as_configured, take_file};

/// `cargo run --release`, then `bookcast-load --clients N` with N past the server's default
/// 300 connection attempts per IP per 5 minutes: the clients are spread over loopback source
/// addresses (100 each by default), so every one of them connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_server_admits_a_run_larger_than_its_per_ip_limit() {
    let config = Config::default();
    const CLIENTS: u64 = 700;
    assert!(CLIENTS > u64::from(config.max_connection_attempts_per_ip));
    let server = start_server_as_configured(config).await;
    let json = report_path("default-limits");
    let clients = CLIENTS.to_string();
    let stdout = run_load(
        server.addr,
        &["--clients", &clients, "--duration", "2s"],
        &json,
        None,
    )
    .await;
    let report: serde_json::Value = serde_json::from_str(&take_file(&json)).unwrap();
    assert_eq!(report["connect_failures"], 0, "{stdout}");
    assert_eq!(report["connect_failure_reasons"], serde_json::json!({}));
    assert_eq!(report["connected"], CLIENTS, "{stdout}");
    assert_eq!(report["gaps"], 0, "{stdout}");
    assert!(!stdout.contains("connect failures"), "{stdout}");
    server.stop().await;
}

/// All clients from one address, against a server admitting 20 attempts per address: the ten
/// refused are counted under the server's 429 and its message, and the printed report says
/// what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_counted_with_the_servers_reason() {
    let server = start_server_as_configured(Config {
        max_connection_attempts_per_ip: 20,
        ..Config::default()
    })
    .await;
    let json = report_path("refused");
    let stdout = run_load(
        server.addr,
        &[
            "--clients",
            "30",
            "--per-source-address",
            "30",
            "--duration",
            "1s",
        ],
        &json,
        None,
    )
    .await;
    let report: serde_json::Value = serde_json::from_str(&take_file(&json)).unwrap();
    let reason =
        "HTTP 429 -1003 Too many connection attempts from this address: at most 20 per 5m.";
    assert_eq!(report["connect_failures"], 10, "{stdout}");
    assert_eq!(
        report["connect_failure_reasons"],
        serde_json::json!({ reason: 10 }),
        "{stdout}"
    );
    assert_eq!(report["connected"], 20, "{stdout}");
    assert!(
        stdout.contains(&format!("connect failures   10 {reason}")),
        "{stdout}"
    );
    assert!(stdout.contains("--per-source-address"), "{stdout}");
    server.stop().await;
}
