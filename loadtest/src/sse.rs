//! `--transport sse`: each client opens `GET /sse?streams=..` and reads one long
//! `text/event-stream` response, event by event; if it ends, the client opens it again with
//! `Last-Event-ID`, as a browser's `EventSource` does.
//!
//! The parser is a few dozen lines of the WHATWG rules (fields `event`, `id`, `data`, comment
//! lines, any of CRLF, LF or CR ending a line) rather than a crate: the well-kept SSE crates
//! are clients that bring their own HTTP stack, and the byte count must see every byte.

use crate::client::{now_us, Plan};
use crate::follow::Session;
use crate::http::{self, Conn, Dechunk, HttpError};
use crate::stats::Stats;
use crate::target;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// Longest line accepted: an event is one `data:` line, and bookcast's are under 100 KiB.
const MAX_LINE: usize = 4 * 1024 * 1024;

/// The event-stream parser's state between reads.
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    /// The previous byte ended a line with CR: a following LF belongs to it.
    after_cr: bool,
    event: Vec<u8>,
    data: Vec<u8>,
    /// The last `id:` seen (the `Last-Event-ID` to send when reconnecting).
    pub last_id: Option<String>,
}

impl Parser {
    /// Parses `bytes`, calling `dispatch(event type, data)` for every complete event.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        mut dispatch: impl FnMut(&[u8], &mut Vec<u8>),
    ) -> Result<(), HttpError> {
        for &byte in bytes {
            if self.after_cr && byte == b'\n' {
                self.after_cr = false;
                continue;
            }
            self.after_cr = byte == b'\r';
            if byte != b'\n' && byte != b'\r' {
                if self.line.len() >= MAX_LINE {
                    return Err(HttpError::Malformed("event-stream line too long"));
                }
                self.line.push(byte);
                continue;
            }
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, &mut dispatch);
            self.line = line;
            self.line.clear();
        }
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], dispatch: &mut impl FnMut(&[u8], &mut Vec<u8>)) {
        if line.is_empty() {
            // Dispatch: an event without data is no event (WHATWG "dispatch the event").
            if !self.data.is_empty() {
                self.data.pop(); // the LF after the last data line
                dispatch(&self.event, &mut self.data);
            }
            self.data.clear();
            self.event.clear();
            return;
        }
        if line[0] == b':' {
            return; // a comment: `: ping`
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            // Data past the line bound is dropped (the line bound already stops a runaway line).
            b"data" if self.data.len() < MAX_LINE => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"id" if !value.contains(&0) => {
                self.last_id = Some(String::from_utf8_lossy(value).into_owned());
            }
            _ => {}
        }
    }
}

/// One SSE client until the run stops.
pub async fn run(
    plan: &Plan,
    session: &mut Session,
    stats: &Arc<Stats>,
    stop: &mut watch::Receiver<bool>,
    started_us: u64,
) {
    let connecting = &plan.connecting;
    let targets = &connecting.targets;
    let mut parser = Parser::default();
    let mut connections = 0usize;
    loop {
        let target = &targets[(plan.url_index + connections) % targets.len().max(1)];
        let source = target::source_for(target, &plan.sources, plan.id);
        let mut query = vec![format!("streams={}", plan.streams.join("/"))];
        if connecting.micros {
            query.push("timeUnit=MICROSECOND".into());
        }
        let path = format!("/sse?{}", query.join("&"));
        let last_id = parser
            .last_id
            .as_ref()
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        let connect_start = Instant::now();
        let opened = tokio::select! {
            opened = open_stream(target.addr, source, stats, plan.id, &path, &last_id) => opened,
            _ = crate::client::stopped(stop) => return,
        };
        let (mut conn, head) = match opened {
            Ok(opened) => opened,
            Err(reason) if connections == 0 => {
                return stats.connect_failed(plan.url_index, reason);
            }
            Err(_) => {
                stats
                    .transport
                    .reconnect_failures
                    .fetch_add(1, Ordering::Relaxed);
                connections += 1;
                tokio::select! {
                    _ = tokio::time::sleep(connecting.reconnect_delay) => continue,
                    _ = crate::client::stopped(stop) => return,
                }
            }
        };
        if connections == 0 {
            stats
                .connect_ms
                .lock()
                .saturating_record(connect_start.elapsed().as_millis().max(1) as u64);
            stats
                .url(plan.url_index)
                .connected
                .fetch_add(1, Ordering::Relaxed);
        } else {
            stats.transport.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        stats.connected.fetch_add(1, Ordering::Relaxed);
        let stopped = read_events(
            plan,
            &mut conn,
            &head,
            &mut parser,
            session,
            stats,
            stop,
            started_us,
        )
        .await;
        stats.connected.fetch_sub(1, Ordering::Relaxed);
        connections += 1;
        if stopped {
            return;
        }
        // The stream ended: reconnect with Last-Event-ID after the usual pause. What the
        // server does not replay shows up as gaps, as it would for a browser.
        tokio::select! {
            _ = tokio::time::sleep(connecting.reconnect_delay) => {}
            _ = crate::client::stopped(stop) => return,
        }
    }
}

/// Opens the stream: connect, send, read a `200` head (anything else is a refusal, described
/// as the WebSocket client describes a refused upgrade).
async fn open_stream(
    addr: std::net::SocketAddr,
    source: Option<std::net::IpAddr>,
    stats: &Arc<Stats>,
    client: usize,
    path: &str,
    extra: &str,
) -> Result<(Conn, http::Head), String> {
    let mut conn = http::open(addr, source, stats, client).await?;
    stats.transport.requests.fetch_add(1, Ordering::Relaxed);
    conn.send(path, "text/event-stream", extra)
        .await
        .map_err(|e| format!("request: {}", e.kind()))?;
    let head = conn.head().await.map_err(|e| format!("response: {e}"))?;
    stats
        .transport
        .response_head_bytes
        .fetch_add(head.len as u64, Ordering::Relaxed);
    if head.status != 200 {
        stats.transport.http_error(head.status);
        let body = tokio::time::timeout(std::time::Duration::from_secs(2), conn.body(&head))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        return Err(crate::client::refusal(head.status, &body));
    }
    Ok((conn, head))
}

/// Reads events until the stream ends (false) or the run stops (true).
#[allow(clippy::too_many_arguments)]
async fn read_events(
    plan: &Plan,
    conn: &mut Conn,
    head: &http::Head,
    parser: &mut Parser,
    session: &mut Session,
    stats: &Stats,
    stop: &mut watch::Receiver<bool>,
    started_us: u64,
) -> bool {
    let mut dechunk = head.chunked.then(Dechunk::default);
    let mut raw = Vec::with_capacity(16 * 1024);
    let mut body = Vec::with_capacity(16 * 1024);
    loop {
        raw.clear();
        let more = tokio::select! {
            more = conn.some(&mut raw) => more,
            _ = crate::client::stopped(stop) => return true,
        };
        if !matches!(more, Ok(true)) {
            return false;
        }
        let bytes = match dechunk.as_mut() {
            Some(d) => {
                body.clear();
                if d.feed(&raw, &mut body).is_err() {
                    return false;
                }
                &body
            }
            None => &raw,
        };
        let received_us = now_us();
        let parsed = parser.feed(bytes, |_event, data| {
            crate::client::deliver(plan.id, session, data, stats, received_us, started_us);
        });
        if parsed.is_err() || dechunk.as_ref().is_some_and(Dechunk::done) {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(wire: &[&[u8]]) -> (Vec<(String, String)>, Option<String>) {
        let mut parser = Parser::default();
        let mut out = Vec::new();
        for piece in wire {
            parser
                .feed(piece, |event, data| {
                    out.push((
                        String::from_utf8_lossy(event).into_owned(),
                        String::from_utf8_lossy(data).into_owned(),
                    ))
                })
                .unwrap();
        }
        (out, parser.last_id)
    }

    #[test]
    fn events_parse_across_any_split_and_line_ending() {
        let wire: &[u8] = b": ping\n\nevent: btcusdt@trade\nid: btcusdt@trade:7\ndata: {\"t\":7}\n\nevent:btcusdt@depth@100ms\r\nid: btcusdt@depth@100ms:41\r\ndata: {\"u\":41}\r\n\r\ndata: a\rdata: b\r\r";
        let expected = vec![
            ("btcusdt@trade".to_string(), "{\"t\":7}".to_string()),
            ("btcusdt@depth@100ms".to_string(), "{\"u\":41}".to_string()),
            (String::new(), "a\nb".to_string()),
        ];
        for split in 0..wire.len() {
            let (got, last) = events(&[&wire[..split], &wire[split..]]);
            assert_eq!(got, expected, "split at {split}");
            assert_eq!(last.as_deref(), Some("btcusdt@depth@100ms:41"));
        }
        // No blank line yet: not dispatched. An id without data dispatches nothing but counts.
        let (got, last) = events(&[b"id: x:1\n\ndata: {}\n"]);
        assert!(got.is_empty());
        assert_eq!(last.as_deref(), Some("x:1"));
    }

    #[test]
    fn lines_are_bounded() {
        let mut parser = Parser::default();
        let long = vec![b'x'; MAX_LINE + 1];
        assert!(parser.feed(&long, |_, _| {}).is_err());
    }
}
