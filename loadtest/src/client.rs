//! One load client: connect, receive until told to stop, check every event on the way.

use crate::stats::{SlowClose, Stats};
use futures_util::StreamExt;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

/// What a client is told to do.
pub struct Plan {
    pub id: usize,
    /// Index of its target in `--url`, for the per-URL breakdown.
    pub url_index: usize,
    pub url: String,
    pub server: SocketAddr,
    pub source: Option<IpAddr>,
    /// Some(delay between reads) for a slow client.
    pub slow_read_every: Option<Duration>,
    pub recv_buffer: usize,
    pub started: Instant,
    /// At the end, how long a slow client may read at full speed to find a close the server
    /// sent behind its backlog.
    pub drain: Duration,
}

/// Only the fields the checks need; simd-json skips the rest (book levels included).
#[derive(Deserialize)]
#[allow(non_snake_case)]
struct Event<'a> {
    #[serde(borrow)]
    e: Option<&'a str>,
    E: Option<u64>,
    #[serde(borrow)]
    s: Option<&'a str>,
    U: Option<u64>,
    u: Option<u64>,
    t: Option<u64>,
}

#[derive(Deserialize)]
struct Combined<'a> {
    #[serde(borrow)]
    data: Option<Event<'a>>,
}

/// Resolves once the run is told to stop (the guard `wait_for` returns is not held).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Last sequence number seen per (kind, symbol), for gap detection.
#[derive(Default)]
struct Sequences {
    seen: Vec<(bool, String, u64)>,
}

impl Sequences {
    /// Records `first..=last` for a stream; true when it does not follow the previous one.
    fn gap(&mut self, trade: bool, symbol: &str, first: u64, last: u64) -> bool {
        match self
            .seen
            .iter_mut()
            .find(|(t, s, _)| *t == trade && s == symbol)
        {
            Some((_, _, previous)) => {
                let gap = first != *previous + 1;
                *previous = last;
                gap
            }
            None => {
                self.seen.push((trade, symbol.to_string(), last));
                false
            }
        }
    }
}

/// Slow clients read through a small buffer, so their backlog stays in the kernel where the
/// server's backpressure sees it, not in a 128 KiB userspace buffer that hides it for minutes.
///
/// Fast clients use 8 KiB, not tungstenite's default 128 KiB: it zero-fills its read chunk
/// before every read, and at 128 KiB that memset was 30% of the load generator's CPU (perf,
/// 3,000 clients), stolen from the server it measures. Events are under 2 KiB; a read that
/// fills 8 KiB simply reads again.
pub fn ws_config(slow: bool) -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(if slow { 4096 } else { 8192 })
}

/// Longest server message quoted in a connect-failure reason.
const MAX_QUOTED: usize = 120;

/// Why a client never got its WebSocket, as the report counts it: the step that failed and
/// the error's kind, or the server's HTTP answer to the upgrade with the Binance error code
/// and message from its body (`HTTP 429 -1003 Too many connection attempts ...`), so a refusal
/// names the limit that was hit.
fn connect_error(step: &str, error: &std::io::Error) -> String {
    format!("{step}: {}", error.kind())
}

fn upgrade_error(error: &tungstenite::Error) -> String {
    match error {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            let mut reason = format!("HTTP {}", status.as_u16());
            let body = response
                .body()
                .as_deref()
                .and_then(|body| serde_json::from_slice::<serde_json::Value>(body).ok());
            let code = body.as_ref().and_then(|b| b["code"].as_i64());
            let msg = body.as_ref().and_then(|b| b["msg"].as_str().map(quote));
            match (code, msg) {
                (Some(code), Some(msg)) => reason.push_str(&format!(" {code} {msg}")),
                (None, Some(msg)) => reason.push_str(&format!(" {msg}")),
                _ => {
                    if let Some(text) = status.canonical_reason() {
                        reason.push_str(&format!(" {text}"));
                    }
                }
            }
            reason
        }
        tungstenite::Error::Io(e) => connect_error("upgrade", e),
        other => format!("upgrade: {}", quote(&other.to_string())),
    }
}

/// Server-supplied text made safe to print and count: printable ASCII, at most [`MAX_QUOTED`]
/// characters.
fn quote(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
        .take(MAX_QUOTED)
        .collect();
    if text.chars().count() > MAX_QUOTED {
        out.push_str("...");
    }
    out
}

pub async fn run(plan: Plan, stats: Arc<Stats>, mut stop: watch::Receiver<bool>) {
    let slow = plan.slow_read_every.is_some();
    let socket = match plan.server {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    };
    let socket = match socket {
        Ok(socket) => socket,
        Err(e) => return stats.connect_failed(plan.url_index, connect_error("socket", &e)),
    };
    if let Some(source) = plan.source {
        if let Err(e) = socket.bind(SocketAddr::new(source, 0)) {
            return stats.connect_failed(plan.url_index, connect_error("bind", &e));
        }
    }
    if plan.recv_buffer > 0 {
        let _ = socket.set_recv_buffer_size(plan.recv_buffer as u32);
    }
    let connect_start = Instant::now();
    let connected = async {
        let stream = socket
            .connect(plan.server)
            .await
            .map_err(|e| connect_error("connect", &e))?;
        let _ = stream.set_nodelay(true);
        tokio_tungstenite::client_async_with_config(
            plan.url.as_str(),
            stream,
            Some(ws_config(slow)),
        )
        .await
        .map_err(|e| upgrade_error(&e))
    };
    let mut ws = tokio::select! {
        ws = connected => match ws {
            Ok((ws, _)) => ws,
            Err(reason) => return stats.connect_failed(plan.url_index, reason),
        },
        _ = stopped(&mut stop) => return,
    };
    stats
        .connect_ms
        .lock()
        .saturating_record(connect_start.elapsed().as_millis().max(1) as u64);
    stats.connected.fetch_add(1, Ordering::Relaxed);
    stats
        .url(plan.url_index)
        .connected
        .fetch_add(1, Ordering::Relaxed);

    let mut checker = Checker {
        id: plan.id,
        url_index: plan.url_index,
        slow,
        sequences: Sequences::default(),
        latencies: Vec::with_capacity(LATENCY_BATCH),
        flushed_at_us: now_us(),
        buffers: simd_json::Buffers::new(1024),
    };
    let mut scratch: Vec<u8> = Vec::with_capacity(4096);
    let counters = &stats.per_client[plan.id];
    let code = loop {
        let message = tokio::select! {
            message = ws.next() => message,
            _ = stopped(&mut stop) => break finish(&mut ws, slow, plan.drain).await,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                let received_us = now_us();
                counters
                    .bytes
                    .fetch_add(text.len() as u64, Ordering::Relaxed);
                counters.events.fetch_add(1, Ordering::Relaxed);
                scratch.clear();
                scratch.extend_from_slice(text.as_bytes());
                checker.check(&mut scratch, received_us, &stats);
                if let Some(every) = plan.slow_read_every {
                    // The stop must not wait out a slow client's pause.
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stopped(&mut stop) => break finish(&mut ws, slow, plan.drain).await,
                    }
                }
            }
            Some(Ok(Message::Close(frame))) => break frame.map_or(1005, |f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break 1006,
        }
    };
    checker.flush(&stats);
    stats.connected.fetch_sub(1, Ordering::Relaxed);
    stats.closed(code);
    if slow {
        let at_s = plan.started.elapsed().as_secs_f64();
        stats.slow_closed.lock().push(SlowClose {
            client: plan.id,
            at_s,
            code,
        });
    }
}

/// Ends a client at the end of the run. A fast client closes normally. A slow one first reads
/// whatever is still in flight at full speed: a server that evicted it put its close frame
/// behind that backlog, and the report must show the code the server sent, not ours.
async fn finish<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    slow: bool,
    drain: Duration,
) -> u16
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if slow {
        let deadline = tokio::time::Instant::now() + drain;
        loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return frame.map_or(1005, |f| u16::from(f.code))
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_)) | None) => return 1006,
                Err(_) => break,
            }
        }
    }
    let _ = ws.close(None).await;
    1000
}

/// Latencies a client buffers before recording them under one lock.
const LATENCY_BATCH: usize = 64;
/// ... or after this long, so per-second percentiles stay current for slow streams.
const FLUSH_EVERY_US: u64 = 200_000;

/// Per-client checking state: gap tracking, buffered latencies, reusable parse buffers.
struct Checker {
    id: usize,
    url_index: usize,
    slow: bool,
    sequences: Sequences,
    latencies: Vec<u32>,
    flushed_at_us: u64,
    buffers: simd_json::Buffers,
}

impl Checker {
    /// Latency and gap checks on one event; `text` is parsed in place.
    fn check(&mut self, text: &mut [u8], received_us: u64, stats: &Stats) {
        let combined = text.starts_with(b"{\"stream\"");
        let event = if combined {
            simd_json::serde::from_slice_with_buffers::<Combined>(text, &mut self.buffers)
                .ok()
                .and_then(|c| c.data)
        } else {
            simd_json::serde::from_slice_with_buffers::<Event>(text, &mut self.buffers).ok()
        };
        let Some(event) = event else { return };
        if let Some(event_us) = event.E {
            let latency = received_us
                .saturating_sub(event_us)
                .min(u64::from(u32::MAX)) as u32;
            self.latencies.push(latency);
        }
        let symbol = event.s.unwrap_or("");
        let gap = match (event.e, event.U, event.u, event.t) {
            (Some("depthUpdate"), Some(first), Some(last), _) => {
                self.sequences.gap(false, symbol, first, last)
            }
            (Some("trade"), _, _, Some(id)) => self.sequences.gap(true, symbol, id, id),
            _ => false,
        };
        if gap {
            stats.gaps.fetch_add(1, Ordering::Relaxed);
            stats
                .url(self.url_index)
                .gaps
                .fetch_add(1, Ordering::Relaxed);
        }
        if self.latencies.len() >= LATENCY_BATCH
            || received_us.saturating_sub(self.flushed_at_us) >= FLUSH_EVERY_US
        {
            self.flushed_at_us = received_us;
            self.flush(stats);
        }
    }

    fn flush(&mut self, stats: &Stats) {
        if self.latencies.is_empty() {
            return;
        }
        stats.latency.record_all(self.id, &self.latencies);
        stats.interval_latency.record_all(self.id, &self.latencies);
        // A URL's clients have every n-th id: by id / n they spread over all its shards.
        stats
            .url(self.url_index)
            .latency
            .record_all(self.id / stats.per_url.len().max(1), &self.latencies);
        if !self.slow {
            stats.fast_latency.record_all(self.id, &self.latencies);
        }
        self.latencies.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_detected_per_stream() {
        let mut seq = Sequences::default();
        assert!(!seq.gap(false, "BTCUSDT", 10, 12));
        assert!(!seq.gap(false, "BTCUSDT", 13, 13));
        assert!(
            !seq.gap(false, "ETHUSDT", 5, 5),
            "first event of another symbol"
        );
        assert!(seq.gap(false, "BTCUSDT", 15, 15), "14 is missing");
        assert!(
            !seq.gap(true, "BTCUSDT", 1, 1),
            "trades are tracked apart from diffs"
        );
        assert!(seq.gap(true, "BTCUSDT", 3, 3));
    }

    #[test]
    fn connect_failures_name_the_refusal() {
        let refusal = |status: u16, body: &[u8]| {
            let response = tungstenite::http::Response::builder()
                .status(status)
                .body(Some(body.to_vec()))
                .unwrap();
            upgrade_error(&tungstenite::Error::Http(Box::new(response)))
        };
        assert_eq!(
            refusal(
                429,
                br#"{"code":-1003,"msg":"Too many connection attempts from this address: at most 300 per 5m."}"#
            ),
            "HTTP 429 -1003 Too many connection attempts from this address: at most 300 per 5m."
        );
        assert_eq!(
            refusal(503, b"<html>busy</html>"),
            "HTTP 503 Service Unavailable"
        );
        let long = format!(r#"{{"msg":"\u0007{}"}}"#, "x".repeat(500));
        let quoted = refusal(403, long.as_bytes());
        assert!(
            quoted.starts_with("HTTP 403  xxx") && quoted.ends_with("x..."),
            "{quoted}"
        );
        assert!(quoted.len() < 140);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            connect_error("connect", &refused),
            "connect: connection refused"
        );
    }

    #[test]
    fn checks_raw_and_combined_payloads() {
        let stats = Stats::new(1, 1, |_| 0);
        let mut checker = Checker {
            id: 0,
            url_index: 0,
            slow: false,
            sequences: Sequences::default(),
            latencies: Vec::new(),
            flushed_at_us: 0,
            buffers: simd_json::Buffers::new(256),
        };
        let now = now_us();
        for (first, last) in [(1, 1), (2, 3), (5, 5)] {
            let raw = format!(
                r#"{{"e":"depthUpdate","E":{now},"s":"BTCUSDT","U":{first},"u":{last},"b":[["1.0","2.0"]],"a":[]}}"#
            );
            checker.check(&mut raw.into_bytes(), now + 100, &stats);
        }
        let combined = format!(
            r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{now},"s":"BTCUSDT","t":7,"p":"1","q":"1","T":{now},"m":true,"M":true}}}}"#
        );
        checker.check(&mut combined.into_bytes(), now + 100, &stats);
        checker.flush(&stats);
        assert_eq!(stats.gaps.load(Ordering::Relaxed), 1);
        assert_eq!(stats.url(0).gaps.load(Ordering::Relaxed), 1);
        let mut merged = crate::stats::histogram();
        stats.latency.merge_into(&mut merged, false);
        assert_eq!(merged.len(), 4);
    }
}
