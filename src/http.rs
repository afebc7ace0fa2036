//! The HTTP side of the one port: reading request heads, the REST endpoints, and routing
//! WebSocket upgrades to [`crate::session`].
//!
//! REST and WebSocket share a port (as on Binance's test setups and in SPEC.md), so every
//! connection starts here. Heads are parsed with httparse from a bounded buffer under a
//! deadline, so a slow or oversized request costs at most one small buffer for a bounded time.

use crate::json::TimeUnit;
use crate::rest;
use crate::server::Context;
use crate::stream::{self, Topic};
use crate::transport::Transport;
use bytes::{Buf, BytesMut};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::{timeout_at, Instant};

/// Largest request head accepted; larger gets 431.
pub const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;
/// Time a peer has to take a whole HTTP response.
pub const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The parts of a request head bookcast looks at.
pub struct Head {
    pub method: String,
    pub path: String,
    pub query: String,
    pub upgrade_websocket: bool,
    pub connection_upgrade: bool,
    pub connection_close: bool,
    pub ws_key: Option<String>,
    pub ws_version: Option<String>,
    pub content_length: usize,
    pub http10: bool,
    /// `Origin` (browsers only), checked against `--allowed-origins`.
    pub origin: Option<String>,
    /// `Host`, to recognise same-origin requests from bookcast's own pages.
    pub host: Option<String>,
    /// `Authorization`, for a Bearer token under `--auth-tokens`.
    pub authorization: Option<String>,
}

impl Head {
    /// Query parameters, percent-decoded.
    pub fn params(
        &self,
    ) -> impl Iterator<Item = (std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> {
        form_urlencoded::parse(self.query.as_bytes())
    }

    pub fn param(&self, name: &str) -> Option<String> {
        self.params()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

enum ReadHead {
    /// Boxed: a head is far larger than the other outcomes.
    Head(Box<Head>, usize),
    Closed,
    TooLarge,
    Malformed,
    TimedOut,
}

fn header_has_token(value: &[u8], token: &str) -> bool {
    std::str::from_utf8(value)
        .map(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
        .unwrap_or(false)
}

/// Repeated headers combine into one comma-separated value (RFC 9110 §5.3); a repeated
/// `Origin` or `Authorization` then matches nothing, as it should.
fn combine(slot: &mut Option<String>, value: String) {
    match slot {
        Some(existing) => {
            existing.push_str(", ");
            existing.push_str(&value);
        }
        None => *slot = Some(value),
    }
}

/// Why a head was refused. More header fields than [`MAX_HEADERS`] is a size problem (431, as
/// hyper answers), not a syntax one (400).
#[derive(Debug)]
enum BadHead {
    TooLarge,
    Malformed,
}

fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, BadHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let consumed = match request.parse(buf) {
        // The buffer may hold more than MAX_HEAD after a keep-alive request; the bound is the
        // head's size, wherever it starts.
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => return Err(BadHead::TooLarge),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadHead::TooLarge),
        Err(_) => return Err(BadHead::Malformed),
    };
    let target = request.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut head = Head {
        method: request.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query: query.to_string(),
        upgrade_websocket: false,
        connection_upgrade: false,
        connection_close: false,
        ws_key: None,
        ws_version: None,
        content_length: 0,
        http10: request.version == Some(0),
        origin: None,
        host: None,
        authorization: None,
    };
    for header in request.headers.iter() {
        let value = header.value;
        let text = || String::from_utf8_lossy(value).trim().to_string();
        // Repeated headers combine (RFC 9110 §5.3), so flags accumulate.
        if header.name.eq_ignore_ascii_case("upgrade") {
            head.upgrade_websocket |= header_has_token(value, "websocket");
        } else if header.name.eq_ignore_ascii_case("connection") {
            head.connection_upgrade |= header_has_token(value, "upgrade");
            head.connection_close |= header_has_token(value, "close");
        } else if header.name.eq_ignore_ascii_case("sec-websocket-key") {
            head.ws_key = Some(text());
        } else if header.name.eq_ignore_ascii_case("sec-websocket-version") {
            head.ws_version = Some(text());
        } else if header.name.eq_ignore_ascii_case("content-length") {
            head.content_length = text().parse().map_err(|_| BadHead::Malformed)?;
        } else if header.name.eq_ignore_ascii_case("origin") {
            combine(&mut head.origin, text());
        } else if header.name.eq_ignore_ascii_case("host") {
            combine(&mut head.host, text());
        } else if header.name.eq_ignore_ascii_case("authorization") {
            combine(&mut head.authorization, text());
        }
    }
    Ok(Some((head, consumed)))
}

async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    deadline: Instant,
    shutdown: &mut watch::Receiver<bool>,
) -> ReadHead {
    loop {
        if !buf.is_empty() {
            match parse_head(buf) {
                Ok(Some((head, consumed))) => return ReadHead::Head(Box::new(head), consumed),
                Ok(None) => {}
                Err(BadHead::TooLarge) => return ReadHead::TooLarge,
                Err(BadHead::Malformed) => return ReadHead::Malformed,
            }
        }
        if buf.len() >= MAX_HEAD {
            return ReadHead::TooLarge;
        }
        buf.reserve(MAX_HEAD - buf.len());
        tokio::select! {
            read = timeout_at(deadline, stream.read_buf(buf)) => match read {
                Err(_) => return ReadHead::TimedOut,
                Ok(Ok(0)) | Ok(Err(_)) => return ReadHead::Closed,
                Ok(Ok(_)) => {}
            },
            // An idle keep-alive connection must not hold up shutdown.
            _ = shutdown.wait_for(|stopping| *stopping) => return ReadHead::Closed,
        }
    }
}

/// A response to write before closing or continuing a keep-alive connection.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub extra_headers: &'static str,
}

impl Response {
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            content_type: "application/json",
            body: body.into(),
            extra_headers: "",
        }
    }

    /// A Binance-shaped error: `{"code":-1121,"msg":"Invalid symbol."}`.
    pub fn error(status: u16, code: i32, msg: &str) -> Self {
        let mut body = Vec::new();
        body.extend_from_slice(format!("{{\"code\":{code},\"msg\":").as_bytes());
        crate::json::push_escaped_str(&mut body, msg);
        body.push(b'}');
        Response::json(status, body)
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

pub async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    response: &Response,
    close: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n{}\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len(),
        if close { "close" } else { "keep-alive" },
        response.extra_headers,
    );
    let mut out = Vec::with_capacity(head.len() + response.body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(&response.body);
    let send = async {
        stream.write_all(&out).await?;
        if close {
            // A clean end: FIN on TCP, close_notify on TLS (clients treat a bare EOF as an error).
            stream.shutdown().await?;
        }
        Ok(())
    };
    match tokio::time::timeout(WRITE_TIMEOUT, send).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "response not taken in time",
        )),
    }
}

/// What a WebSocket path asks for.
pub struct Upgrade {
    /// The `/echo` conformance route (only with `--test-echo-route`).
    pub echo: bool,
    pub combined: bool,
    pub unit: TimeUnit,
    pub topics: Vec<Topic>,
}

/// Parses `/ws`, `/ws/<s1>/<s2>`, `/stream?streams=<s1>/<s2>` and `timeUnit`.
///
/// Like Binance, names in the URL that are not streams are ignored rather than refused (ccxt
/// connects to `/ws/<n>` with a number and subscribes afterwards); the count limit holds.
pub fn parse_upgrade(head: &Head, ctx: &Context) -> Result<Upgrade, Response> {
    if head.path == "/echo" && ctx.config.test_echo_route {
        return Ok(Upgrade {
            echo: true,
            combined: false,
            unit: TimeUnit::Millisecond,
            topics: Vec::new(),
        });
    }
    let (combined, names): (bool, Vec<String>) =
        if head.path == "/stream" || head.path == "/stream/" {
            let streams = head.param("streams").unwrap_or_default();
            (
                true,
                streams
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            )
        } else if head.path == "/ws" || head.path.starts_with("/ws/") {
            let rest = head.path.strip_prefix("/ws").unwrap_or_default();
            let decoded: Vec<String> = rest
                .split('/')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    form_urlencoded::parse(format!("x={s}").as_bytes())
                        .map(|(_, v)| v.into_owned())
                        .next()
                        .unwrap_or_default()
                })
                .collect();
            (false, decoded)
        } else {
            return Err(Response::error(
                404,
                -1000,
                "Unknown WebSocket path; use /ws, /ws/<stream> or /stream?streams=<a>/<b>.",
            ));
        };
    let unit = match head.param("timeUnit") {
        None => TimeUnit::Millisecond,
        Some(value) => TimeUnit::parse(&value).ok_or_else(|| {
            Response::error(
                400,
                -1100,
                "Invalid timeUnit; use MILLISECOND or MICROSECOND.",
            )
        })?,
    };
    if names.len() > ctx.config.max_streams {
        let msg = format!(
            "Too many streams: at most {} per connection.",
            ctx.config.max_streams
        );
        return Err(Response::error(400, -1101, &msg));
    }
    let mut topics: Vec<Topic> = Vec::with_capacity(names.len());
    for name in &names {
        if let Ok(topic) = stream::parse(name, &ctx.feed) {
            if !topics.contains(&topic) {
                topics.push(topic);
            }
        }
    }
    Ok(Upgrade {
        echo: false,
        combined,
        unit,
        topics,
    })
}

/// Checks the RFC 6455 handshake headers; `Err` is the response to refuse with.
fn check_handshake(head: &Head) -> Result<String, Response> {
    if head.method != "GET" {
        return Err(Response::error(
            405,
            -1000,
            "WebSocket upgrades must use GET.",
        ));
    }
    if !head.upgrade_websocket || !head.connection_upgrade {
        let mut response = Response::error(
            426,
            -1000,
            "This path serves WebSocket only: send an Upgrade: websocket request.",
        );
        response.extra_headers = "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n";
        return Err(response);
    }
    if head.ws_version.as_deref() != Some("13") {
        let mut response = Response::error(
            426,
            -1000,
            "Unsupported Sec-WebSocket-Version; this server speaks 13.",
        );
        response.extra_headers = "Sec-WebSocket-Version: 13\r\n";
        return Err(response);
    }
    let key = head.ws_key.clone().unwrap_or_default();
    let valid_key = key.len() == 24
        && key.ends_with("==")
        && key[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !valid_key {
        return Err(Response::error(
            400,
            -1000,
            "Missing or invalid Sec-WebSocket-Key.",
        ));
    }
    Ok(key)
}

fn is_websocket_path(path: &str) -> bool {
    path == "/ws"
        || path.starts_with("/ws/")
        || path == "/stream"
        || path == "/stream/"
        || path == "/echo"
}

/// Serves one accepted connection (TCP or TLS): REST requests (keep-alive) until it upgrades or
/// ends.
/// `permit` is the connection's slot under `--max-connections`; it lives as long as the
/// connection, in whichever task ends up owning it.
pub async fn serve<S: Transport>(
    mut stream: S,
    peer: IpAddr,
    ctx: Arc<Context>,
    permit: OwnedSemaphorePermit,
) {
    let mut buf = BytesMut::with_capacity(1024);
    let mut deadline = Instant::now() + ctx.config.handshake_timeout;
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let (head, consumed) = match read_head(&mut stream, &mut buf, deadline, &mut shutdown).await
        {
            ReadHead::Head(head, consumed) => (head, consumed),
            ReadHead::Closed => return,
            ReadHead::TimedOut => {
                crate::metrics::rejected("handshake_timeout");
                let _ = write_response(
                    &mut stream,
                    &Response::error(408, -1000, "Request head not received in time."),
                    true,
                )
                .await;
                return;
            }
            ReadHead::TooLarge => {
                crate::metrics::rejected("head_too_large");
                let _ = write_response(
                    &mut stream,
                    &Response::error(431, -1000, "Request head too large."),
                    true,
                )
                .await;
                return;
            }
            ReadHead::Malformed => {
                crate::metrics::rejected("malformed_request");
                let _ = write_response(
                    &mut stream,
                    &Response::error(400, -1000, "Malformed HTTP request."),
                    true,
                )
                .await;
                return;
            }
        };
        buf.advance(consumed);
        if is_websocket_path(&head.path) && (head.upgrade_websocket || head.ws_key.is_some()) {
            if !ctx.attempts.admit(peer) {
                crate::metrics::rejected("ip_attempt_limit");
                let msg = format!(
                    "Too many connection attempts from this address: at most {} per {}.",
                    ctx.config.max_connection_attempts_per_ip,
                    humantime::format_duration(ctx.config.connection_attempt_window)
                );
                let _ = write_response(&mut stream, &Response::error(429, -1003, &msg), true).await;
                return;
            }
            let key = match check_handshake(&head) {
                Ok(key) => key,
                Err(response) => {
                    crate::metrics::rejected("bad_handshake");
                    let _ = write_response(&mut stream, &response, true).await;
                    return;
                }
            };
            if !crate::admission::origin_allowed(
                &ctx.config.allowed_origins,
                head.origin.as_deref(),
                head.host.as_deref(),
            ) {
                crate::metrics::rejected("origin_not_allowed");
                let response = Response::error(403, -1002, "Origin not allowed.");
                let _ = write_response(&mut stream, &response, true).await;
                return;
            }
            let upgrade = match parse_upgrade(&head, &ctx) {
                Ok(upgrade) => upgrade,
                Err(response) => {
                    crate::metrics::rejected("bad_stream_path");
                    let _ = write_response(&mut stream, &response, true).await;
                    return;
                }
            };
            let Ok(ip_slot) = ctx.ip_connections.acquire(peer) else {
                crate::metrics::rejected("ip_connection_cap");
                let msg = format!(
                    "Too many open connections from this address: at most {}.",
                    ctx.config.max_connections_per_ip
                );
                let _ = write_response(&mut stream, &Response::error(429, -1003, &msg), true).await;
                return;
            };
            let slots = crate::admission::Slots::new(permit, ip_slot);
            // Checked after the upgrade is known to be valid, answered after it completes
            // (SPEC.md: close 4001), and before anything is attached to the hub.
            if let Err(refusal) = crate::auth::check(ctx.tokens.as_ref(), &head) {
                drop(head);
                crate::metrics::auth_failed(refusal.label());
                let (leftover, reason) = (buf.to_vec(), refusal.reason());
                crate::refuse::after_upgrade(stream, leftover, &key, 4001, reason, &ctx).await;
                return;
            }
            // Nothing of the request may stay alive for the connection's lifetime.
            drop(head);
            crate::session::upgrade(stream, buf.to_vec(), key, upgrade, ctx, slots).await;
            return;
        }
        let close = head.connection_close || head.http10 || head.content_length > 0;
        let response = if is_websocket_path(&head.path) {
            crate::metrics::rejected("not_websocket");
            let mut response = Response::error(
                426,
                -1000,
                "This path serves WebSocket only: send an Upgrade: websocket request.",
            );
            response.extra_headers = "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n";
            response
        } else {
            rest::handle(&head, &ctx).await
        };
        if write_response(&mut stream, &response, close).await.is_err() || close {
            return;
        }
        deadline = Instant::now() + ctx.config.handshake_timeout;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_websocket_upgrade_head() {
        let raw = b"GET /stream?streams=btcusdt@depth/ethusdt@trade&timeUnit=MICROSECOND HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nrest";
        let Ok(Some((head, consumed))) = parse_head(raw) else {
            panic!("a complete head parses");
        };
        assert_eq!(&raw[consumed..], b"rest");
        assert!(head.upgrade_websocket && head.connection_upgrade);
        assert_eq!(head.path, "/stream");
        assert_eq!(
            head.param("streams").as_deref(),
            Some("btcusdt@depth/ethusdt@trade")
        );
        assert_eq!(check_handshake(&head).unwrap(), "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn partial_and_malformed_heads() {
        assert!(matches!(parse_head(b"GET / HTTP/1.1\r\nHost"), Ok(None)));
        assert!(matches!(
            parse_head(b"\x00\x01 nonsense\r\n\r\n"),
            Err(BadHead::Malformed)
        ));
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(
            parse_head(many.as_bytes()),
            Err(BadHead::TooLarge)
        ));
    }
}
