//! `--churn` for real: bookcast in-process on port 0 with a short heartbeat, the bookcast-load
//! binary churning against it every way a client can leave.

use bookcast::config::Config;
use bookcast::feed::Feed;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
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
    let feed =
        Feed::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../feeds/small.toml")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config {
        max_connection_attempts_per_ip: 0,
        // Silent churners must be ended by the heartbeat within their 2 s hold.
        ping_interval: Duration::from_millis(250),
        pong_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bookcast::server::run(listener, config, feed, async move {
        let _ = stopped.await;
    }));

    let json =
        std::env::temp_dir().join(format!("bookcast-load-churn-{}.json", std::process::id()));
    let binary = env!("CARGO_BIN_EXE_bookcast-load");
    let args = [
        "--url".to_string(),
        format!("ws://{addr}"),
        "--clients".into(),
        "0".into(),
        "--churn".into(),
        "20".into(),
        "--churn-rate".into(),
        "200".into(),
        "--churn-mix".into(),
        "clean=1,drop=1,rst=1,silent=1".into(),
        "--churn-silent-hold".into(),
        "2s".into(),
        "--duration".into(),
        "4s".into(),
        "--json".into(),
        json.display().to_string(),
    ];
    let output = tokio::task::spawn_blocking(move || Command::new(binary).args(args).output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bookcast-load failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("churn "), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
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
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
