//! SIGTERM under load, against the real binary: every reading client gets `serverShutdown` and
//! then a 1001 close, clients that stopped reading cannot hold the process past
//! `--shutdown-timeout`, and the process exits with status 0.
//!
//! Process-level on purpose: the signal handling, the runtime's teardown after `server::run`
//! returns and the exit status live in `main.rs`, which the in-process tests never run.

mod common;

use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Clients that keep reading.
const READERS: usize = 200;
/// Clients that stopped reading with data in flight.
const STALLED: usize = 8;
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// Exit within `SHUTDOWN_TIMEOUT` plus this: runtime teardown on a loaded 2-core machine.
const EXIT_MARGIN: Duration = Duration::from_secs(2);
/// Every other wait ends by this.
const PATIENCE: Duration = Duration::from_secs(15);

/// The bookcast process; killed (SIGKILL) if the test fails before it exits.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// Everything it printed (stdout and stderr), for failure messages.
    output: mpsc::Receiver<String>,
}

impl Server {
    fn start() -> Server {
        let feed = Path::new(env!("CARGO_MANIFEST_DIR")).join("feeds/small.toml");
        let mut child = Command::new(env!("CARGO_BIN_EXE_bookcast"))
            .arg("--listen=127.0.0.1:0")
            .arg(format!("--feed={}", feed.display()))
            .arg("--max-connection-attempts-per-ip=0")
            .arg(format!(
                "--shutdown-timeout={}s",
                SHUTDOWN_TIMEOUT.as_secs()
            ))
            // Long close deadlines, so only --shutdown-timeout can end the stalled clients.
            .arg("--close-timeout=60s")
            .arg("--slow-close-timeout=60s")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bookcast");
        // Drained on threads so the child never blocks on a full pipe.
        let (lines, output) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for pipe in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { return };
                    if lines.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        // "bookcast listening on 127.0.0.1:PORT (3 symbols): ..."
        let deadline = std::time::Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = output
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no listening line ({e}); output: {seen:?}"));
            if let Some(rest) = line.strip_prefix("bookcast listening on ") {
                let addr = rest.split(' ').next().and_then(|a| a.parse().ok());
                break addr.unwrap_or_else(|| panic!("unparsable address in {line:?}"));
            }
            seen.push(line);
        };
        Server {
            child,
            addr,
            output,
        }
    }

    fn printed(&self) -> String {
        self.output.try_iter().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a reading client's connection ended.
#[derive(Debug)]
struct Ending {
    events: u64,
    /// Events after the first `serverShutdown` (must be none).
    after_shutdown: u64,
    shutdown_event: Option<serde_json::Value>,
    close_code: Option<u16>,
}

/// A client that reads everything: raw or combined, subscribed in the URL or with SUBSCRIBE,
/// checking diff continuity. Reports once live, then reads until the server ends it.
async fn reader(
    addr: SocketAddr,
    index: usize,
    live: tokio::sync::mpsc::Sender<()>,
) -> Result<Ending, String> {
    let symbol = ["btcusdt", "ethusdt", "xrpusdt"][index % 3];
    let streams = format!("{symbol}@depth/{symbol}@trade/btcusdt@depth20@100ms");
    let (path, subscribe) = match index % 3 {
        0 => (format!("/ws/{streams}"), false),
        1 => (format!("/stream?streams={streams}"), false),
        _ => ("/ws".to_string(), true),
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .map_err(|e| format!("client {index}: connect: {e}"))?;
    if subscribe {
        let params: Vec<&str> = streams.split('/').collect();
        let request = serde_json::json!({"method": "SUBSCRIBE", "params": params, "id": index});
        ws.send(Message::text(request.to_string()))
            .await
            .map_err(|e| format!("client {index}: SUBSCRIBE: {e}"))?;
    }
    let mut ending = Ending {
        events: 0,
        after_shutdown: 0,
        shutdown_event: None,
        close_code: None,
    };
    let mut last_u = 0u64;
    let deadline = Instant::now() + PATIENCE * 2;
    loop {
        let message = timeout_at(deadline, ws.next())
            .await
            .map_err(|_| format!("client {index}: not closed in time: {ending:?}"))?;
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                ending.close_code = frame.map(|f| u16::from(f.code));
                return Ok(ending);
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("client {index}: {e} after {ending:?}")),
            None => return Err(format!("client {index}: ended without a close: {ending:?}")),
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("client {index}: {e}: {text}"))?;
        let event = value.get("data").unwrap_or(&value);
        if ending.shutdown_event.is_some() {
            ending.after_shutdown += 1;
        } else if event["e"] == "serverShutdown" || value["stream"] == "!serverShutdown" {
            ending.shutdown_event = Some(value);
        } else if event["e"] == "depthUpdate" {
            let (first, last) = (event["U"].as_u64(), event["u"].as_u64());
            let (Some(first), Some(last)) = (first, last) else {
                return Err(format!("client {index}: malformed diff {text}"));
            };
            if last_u != 0 && first != last_u + 1 {
                return Err(format!("client {index}: gap {last_u} -> {first}"));
            }
            last_u = last;
            ending.events += 1;
            if ending.events == 1 {
                let _ = live.send(()).await;
            }
        }
    }
}

/// A raw client that upgrades and then never reads: its socket fills and the server's queue
/// for it grows behind a blocked write.
async fn stalled(addr: SocketAddr) -> TcpStream {
    common::raw_upgrade_small_buffer(
        addr,
        "/stream?streams=btcusdt@depth/btcusdt@depth20@100ms/ethusdt@depth",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_readers_with_1001_and_exits_0_within_the_shutdown_timeout() {
    let mut server = Server::start();
    let addr = server.addr;

    let (live_tx, mut live_rx) = tokio::sync::mpsc::channel(READERS);
    let mut readers = JoinSet::new();
    for index in 0..READERS {
        readers.spawn(reader(addr, index, live_tx.clone()));
    }
    drop(live_tx);
    let mut stalled_clients = Vec::new();
    for _ in 0..STALLED {
        stalled_clients.push(stalled(addr).await);
    }
    // Every reader has its first diff.
    let deadline = Instant::now() + PATIENCE;
    for n in 0..READERS {
        let live = timeout_at(deadline, live_rx.recv()).await;
        assert!(
            matches!(live, Ok(Some(()))),
            "only {n} of {READERS} readers live; server said:\n{}",
            server.printed()
        );
    }
    // Every stalled client has unread data waiting: the server is writing to it, and no one reads.
    for stream in &stalled_clients {
        let mut peeked = [0u8; 4096];
        let deadline = Instant::now() + PATIENCE;
        loop {
            let n = timeout_at(deadline, stream.peek(&mut peeked))
                .await
                .expect("data for the stalled client")
                .expect("peek");
            if n >= 1024 {
                break;
            }
            assert!(n > 0, "stalled client closed before the shutdown");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let pid = server.child.id().to_string();
    let signalled = Instant::now();
    let kill = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(kill.is_ok_and(|s| s.success()), "kill -TERM {pid}");

    // The process exits 0 by the bound (polled: std's wait has no timeout).
    let bound = signalled + SHUTDOWN_TIMEOUT + EXIT_MARGIN;
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < bound,
            "still running {:?} after SIGTERM; server said:\n{}",
            signalled.elapsed(),
            server.printed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = signalled.elapsed();
    assert!(
        status.success(),
        "exit status {status}; server said:\n{}",
        server.printed()
    );
    // The stalled clients' closes could not complete (their close deadline is 60 s), so they did
    // hold the server until --shutdown-timeout: the bound is what ended them, not luck.
    assert!(
        took >= SHUTDOWN_TIMEOUT - Duration::from_millis(200),
        "exited after {took:?}: the stalled clients were not holding it"
    );

    // Every reader: the serverShutdown event (combined ones wrapped), nothing after it, then 1001.
    let mut endings = 0;
    while let Some(joined) = readers.join_next().await {
        let ending = joined
            .expect("reader task")
            .unwrap_or_else(|e| panic!("{e}"));
        let event = ending
            .shutdown_event
            .as_ref()
            .expect("serverShutdown event");
        let payload = event.get("data").unwrap_or(event);
        assert_eq!(payload["e"], "serverShutdown", "{event}");
        assert!(
            payload["E"]
                .as_u64()
                .is_some_and(|ms| ms > 1_600_000_000_000),
            "{event}"
        );
        assert_eq!(ending.after_shutdown, 0, "nothing follows serverShutdown");
        assert_eq!(ending.close_code, Some(1001), "{ending:?}");
        assert!(ending.events > 0);
        endings += 1;
    }
    assert_eq!(endings, READERS);

    // The stalled clients' sockets were closed when the process exited.
    for mut stream in stalled_clients {
        let mut chunk = [0u8; 16 * 1024];
        let deadline = Instant::now() + PATIENCE;
        loop {
            match timeout_at(deadline, stream.read(&mut chunk))
                .await
                .expect("EOF after exit")
            {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}
