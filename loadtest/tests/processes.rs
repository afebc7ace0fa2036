//! `--processes 2` for real: bookcast in-process on port 0, the bookcast-load binary as a
//! coordinator of two children against it, and the merged report checked.

use bookcast::config::Config;
use bookcast::feed::Feed;
use std::path::Path;
use std::process::Command;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_report_one_merged_run() {
    let feed =
        Feed::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../feeds/small.toml")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config {
        max_connection_attempts_per_ip: 0,
        ..Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bookcast::server::run(listener, config, feed, async move {
        let _ = stopped.await;
    }));

    let json = std::env::temp_dir().join(format!(
        "bookcast-load-processes-{}.json",
        std::process::id()
    ));
    let html = json.with_extension("html");
    let binary = env!("CARGO_BIN_EXE_bookcast-load");
    let args = [
        "--url".to_string(),
        format!("ws://{addr}"),
        "--processes".into(),
        "2".into(),
        "--clients".into(),
        "200".into(),
        "--slow".into(),
        "10".into(),
        "--duration".into(),
        "3s".into(),
        "--json".into(),
        json.display().to_string(),
        "--html".into(),
        html.display().to_string(),
    ];
    let output = tokio::task::spawn_blocking(move || Command::new(binary).args(args).output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bookcast-load --processes 2 failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("processes          2"), "{stdout}");
    assert!(
        !stdout.contains("bookcast-load-progress"),
        "the children's progress lines are the coordinator's to read: {stdout}"
    );

    let text = std::fs::read_to_string(&json).unwrap();
    let _ = std::fs::remove_file(&json);
    let page = std::fs::read_to_string(&html).unwrap();
    let _ = std::fs::remove_file(&html);
    assert!(page.contains("\"latency_us\"") && !page.contains("/*REPORT*/"));
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in [
        "clients",
        "connected",
        "duration_s",
        "events",
        "events_per_s",
        "bytes",
        "gaps",
        "latency_us",
        "fast_latency_us",
        "closes",
        "slow_closed",
    ] {
        assert!(report.get(key).is_some(), "report lacks {key}: {report}");
    }
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(report["latency_us"][key].is_u64(), "latency_us.{key}");
        assert!(
            report["fast_latency_us"][key].is_u64(),
            "fast_latency_us.{key}"
        );
    }
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
    assert_eq!(report["clients"], 200);
    assert_eq!(report["connected"], 200, "{stdout}");
    assert_eq!(report["slow_clients"], 10, "{stdout}");
    assert_eq!(report["gaps"], 0, "{stdout}");
    assert!(report["events"].as_u64().unwrap() > 1000, "{stdout}");
    assert!(report["latency_us"]["p50"].as_u64().unwrap() > 0);
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

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
