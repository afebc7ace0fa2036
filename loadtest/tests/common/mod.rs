//! What the bookcast-load integration tests share: bookcast in-process on port 0, the
//! bookcast-load binary run against it with its output collected, and the report's checks.
#![allow(dead_code)]

use bookcast::config::Config;
use bookcast::market::feed::Feed;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// bookcast serving feeds/small.toml on 127.0.0.1, port 0, until [`Server::stop`].
pub struct Server {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

/// Starts bookcast with `config`, except that the per-IP connection-attempt limit is off, so
/// runs can pick any `--per-source-address`.
pub async fn start_server(config: Config) -> Server {
    start_server_as_configured(Config {
        max_connection_attempts_per_ip: 0,
        ..config
    })
    .await
}

/// Starts bookcast with `config` exactly as given, per-IP limits included.
pub async fn start_server_as_configured(config: Config) -> Server {
    let feed =
        Feed::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../feeds/small.toml")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(bookcast::front::server::run(
        listener,
        config,
        feed,
        async move {
            let _ = stopped.await;
        },
    ));
    Server { addr, stop, task }
}

impl Server {
    /// Shuts the server down and checks that it ended cleanly.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// A per-process temporary path for a report: `bookcast-load-{name}-{pid}.json`.
pub fn report_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("bookcast-load-{name}-{}.json", std::process::id()))
}

/// Runs the bookcast-load binary as `--url ws://{addr} {args} --json {json} [--html {html}]`
/// off the runtime, asserts it succeeded (showing its stdout and stderr if not) and returns
/// its stdout.
pub async fn run_load(addr: SocketAddr, args: &[&str], json: &Path, html: Option<&Path>) -> String {
    run_load_urls(&format!("ws://{addr}"), args, json, html).await
}

/// [`run_load`] with `--url {urls}` as given (e.g. a comma-separated list).
pub async fn run_load_urls(urls: &str, args: &[&str], json: &Path, html: Option<&Path>) -> String {
    let binary = env!("CARGO_BIN_EXE_bookcast-load");
    let mut all = vec!["--url".to_string(), urls.to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    all.extend(["--json".into(), json.display().to_string()]);
    if let Some(html) = html {
        all.extend(["--html".into(), html.display().to_string()]);
    }
    let shown = all.join(" ");
    let output = tokio::task::spawn_blocking(move || Command::new(binary).args(all).output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "bookcast-load {shown} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The file's contents; the file is removed.
pub fn take_file(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let _ = std::fs::remove_file(path);
    text
}

/// The `--html` page, checked to have the report filled in; the file is removed.
pub fn take_html_report(path: &Path) -> String {
    let page = take_file(path);
    assert!(
        page.contains("\"latency_us\""),
        "the HTML report embeds the report"
    );
    assert!(
        !page.contains("/*REPORT*/"),
        "the report JSON was filled in"
    );
    page
}

/// Asserts that a (single or merged) report has every key and latency percentile, and that its
/// run of `clients` clients all connected and saw events and no gap (`stdout` is shown if not).
pub fn assert_gap_free_report(report: &serde_json::Value, clients: u64, stdout: &str) {
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
    assert_eq!(report["clients"], clients);
    assert_eq!(report["connected"], clients, "{stdout}");
    assert_eq!(report["gaps"], 0, "{stdout}");
    assert!(report["events"].as_u64().unwrap() > 1000, "{stdout}");
    assert!(report["latency_us"]["p50"].as_u64().unwrap() > 0);
}
