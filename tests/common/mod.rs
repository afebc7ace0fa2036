//! A real server on a real socket (port 0) for every integration test, plus small clients.
#![allow(dead_code)]

use bookcast::config::Config;
use bookcast::market::feed::Feed;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Every wait in the tests ends by this deadline at the latest.
pub const PATIENCE: Duration = Duration::from_secs(15);

pub fn small_feed() -> Feed {
    Feed::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("feeds/small.toml"))
        .expect("feeds/small.toml loads")
}

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        Self::start_with_feed(config, small_feed()).await
    }

    pub async fn start_with_feed(config: Config, feed: Feed) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(bookcast::front::server::run(
            listener,
            config,
            feed,
            async move {
                let _ = stopped.await;
            },
        ));
        TestServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub async fn connect(&self, path: &str) -> Ws {
        let (ws, response) = tokio_tungstenite::connect_async(self.ws_url(path))
            .await
            .expect("websocket connect");
        assert_eq!(response.status(), 101);
        ws
    }

    /// GET `path`; returns status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("JSON body")
    }

    /// The value of a Prometheus sample (summing over labels matching `labels`), 0 if absent.
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let (_, body) = self.get("/metrics").await;
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until `metric(name, labels) >= at_least`.
    pub async fn wait_metric(&self, name: &str, labels: &str, at_least: f64) -> f64 {
        self.wait_metric_until(name, labels, &format!(">= {at_least}"), |v| v >= at_least)
            .await
    }

    /// Waits until `metric(name, labels)` satisfies `wanted` (described as `what`).
    pub async fn wait_metric_until(
        &self,
        name: &str,
        labels: &str,
        what: &str,
        wanted: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.metric(name, labels).await;
            if wanted(value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{{{labels}}} stayed at {value}, wanted {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Graceful shutdown; returns once `run` returned.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(PATIENCE, task)
                .await
                .expect("server stops in time");
            result.expect("server task").expect("server run");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Sends a WebSocket upgrade for `path` by hand on a raw socket, reading nothing back: for
/// clients that must misbehave (never read, send broken frames).
pub async fn raw_upgrade(addr: SocketAddr, path: &str) -> TcpStream {
    raw_upgrade_with(addr, path, "").await
}

/// Like [`raw_upgrade`], with extra header lines (each ending in CRLF).
pub async fn raw_upgrade_with(addr: SocketAddr, path: &str, headers: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).await.expect("connect");
    write_upgrade(stream, addr, path, headers).await
}

/// Like [`raw_upgrade`], on a socket whose receive buffer is as small as the kernel allows:
/// once the client stops reading, the server's writes to it block within a few frames.
pub async fn raw_upgrade_small_buffer(addr: SocketAddr, path: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(1024).expect("SO_RCVBUF");
    let stream = socket.connect(addr).await.expect("connect");
    write_upgrade(stream, addr, path, "").await
}

async fn write_upgrade(
    mut stream: TcpStream,
    addr: SocketAddr,
    path: &str,
    headers: &str,
) -> TcpStream {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write upgrade");
    stream
}

pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut raw = Vec::new();
    timeout_at(Instant::now() + PATIENCE, stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Next text message as JSON (pings and pongs skipped); panics on close or deadline.
pub async fn next_json(ws: &mut Ws) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let message = timeout_at(deadline, ws.next())
            .await
            .expect("a message in time");
        match message {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).expect("valid JSON")
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Reads until a message satisfies `want`; returns it.
pub async fn next_matching(ws: &mut Ws, mut want: impl FnMut(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "no matching message in time");
        let value = next_json(ws).await;
        if want(&value) {
            return value;
        }
    }
}

pub async fn send_json(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// Sends a request and returns the reply with the same id (events in between are skipped).
pub async fn request(ws: &mut Ws, text: &str) -> Value {
    let id: Value = serde_json::from_str::<Value>(text).expect("request JSON")["id"].clone();
    send_json(ws, text).await;
    next_matching(ws, |v| {
        v.get("id") == Some(&id) && (v.get("result").is_some() || v.get("error").is_some())
    })
    .await
}

/// Reads until the server closes; returns the close code (None: dropped without a close frame).
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match timeout_at(deadline, ws.next())
            .await
            .expect("the server closes in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// A book keyed by price strings, as a client keeps one.
#[derive(Debug, Default, PartialEq)]
pub struct Book {
    pub bids: BTreeMap<String, String>,
    pub asks: BTreeMap<String, String>,
}

impl Book {
    /// Applies one side's levels each (`[["price","qty"],..]`; a zero quantity removes).
    pub fn apply(&mut self, bids: &Value, asks: &Value) {
        for (side, levels) in [(&mut self.bids, bids), (&mut self.asks, asks)] {
            for level in levels.as_array().expect("levels") {
                let price = level[0].as_str().expect("price").to_string();
                let qty = level[1].as_str().expect("qty").to_string();
                if qty == "0.00000000" {
                    side.remove(&price);
                } else {
                    side.insert(price, qty);
                }
            }
        }
    }
}
