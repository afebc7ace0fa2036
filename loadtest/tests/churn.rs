//! `--churn` for real: bookcast in-process on port 0 with a short heartbeat, the bookcast-load
//! binary churning against it every way a client can leave.

mod common;

use bookcast::config::Config;
use common::{report_path, run_load, start_server, take_file};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// `bookcast_connections_open` from the server's /metrics.
async fn connections_open(addr: SocketAddr) -> f64 {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut body))
        .await
        .expect("metrics in time")
        .expect("read");
    body.lines()
        .find_map(|l| l.strip_prefix("bookcast_connections_open "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churners_cycle_every_way_without_errors_and_leave_nothing_open() {
    let server = start_server(Config {
        // Silent churners must be ended by the heartbeat within their 2 s hold.
        ping_interval: Duration::from_millis(250),
        pong_timeout: Duration::from_secs(1),
        ..Config::default()
    })
    .await;
    let addr = server.addr;

    let json = report_path("churn");
    let stdout = run_load(
        addr,
        &[
            "--clients",
            "0",
            "--churn",
            "20",
            "--churn-rate",
            "200",
            "--churn-mix",
            "clean=1,drop=1,rst=1,silent=1",
            "--churn-silent-hold",
            "2s",
            "--duration",
            "4s",
        ],
        &json,
        None,
    )
    .await;
    assert!(stdout.contains("churn "), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&take_file(&json)).unwrap();
    let churn = &report["churn"];
    assert_eq!(churn["errors"], serde_json::json!({}), "{churn}");
    assert_eq!(churn["gaps"], 0, "{churn}");
    for ending in ["clean", "drop", "rst", "silent"] {
        assert!(
            churn["endings"][ending].as_u64().unwrap_or(0) > 0,
            "no completed {ending} cycle: {churn}"
        );
    }
    assert!(churn["connects"].as_u64().unwrap() >= churn["cycles"].as_u64().unwrap());

    // Every churned connection is gone from the server once the run has ended.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let open = connections_open(addr).await;
        if open == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} connections still open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}
