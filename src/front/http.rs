//! HTTP/1.1 on the one port: reading request heads and writing responses.
//!
//! REST and WebSocket share a port (as on Binance's test setups and in SPEC.md), so every
//! connection starts with a head read here (see [`super::router`]). Heads are parsed with
//! httparse from a bounded buffer under a deadline, so a slow or oversized request costs at
//! most one small buffer for a bounded time. This module knows nothing of what is routed where.

use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};

/// Largest request head accepted; larger gets 431.
pub const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;
/// Time a peer has to take a whole HTTP response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// `Last-Event-ID`, sent by a reconnecting `EventSource` (`/sse`).
    pub last_event_id: Option<String>,
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

pub(crate) enum ReadHead {
    /// Boxed: a head is far larger than the other outcomes.
    Head(Box<Head>, usize),
    Closed,
    /// Not one byte of a request arrived before the idle deadline. SPEC.md: such a connection
    /// is closed without a response, because a keep-alive client that sends its next request
    /// just as a 408 leaves would read that 408 as the answer to it.
    Idle,
    TooLarge,
    Malformed,
    /// A head started to arrive and was not complete in time: the one case that gets 408.
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
pub(crate) enum BadHead {
    TooLarge,
    Malformed,
}

pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, BadHead> {
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
        last_event_id: None,
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
        } else if header.name.eq_ignore_ascii_case("last-event-id") {
            head.last_event_id = Some(text());
        }
    }
    Ok(Some((head, consumed)))
}

/// Whether `buf` holds the start of a request. Empty lines before a request line do not count:
/// RFC 9112 §2.2 lets a client send them (some do after a body), and httparse skips them.
fn request_started(buf: &[u8]) -> bool {
    buf.iter().any(|&b| b != b'\r' && b != b'\n')
}

/// Reads one request head into `buf`.
///
/// Two clocks, as SPEC.md's keep-alive rule needs: until the first byte of a request arrives
/// the connection is idle, and at `idle_deadline` it ends with [`ReadHead::Idle`] (no
/// response); from that first byte on, the head has `head_timeout` to complete, or it ends
/// with [`ReadHead::TimedOut`] (408). A head counted from its own first byte means a client
/// that starts a request just before the idle deadline still gets the whole `head_timeout`.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    idle_deadline: Instant,
    head_timeout: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> ReadHead {
    let mut head_deadline = None;
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
        if head_deadline.is_none() && request_started(buf) {
            head_deadline = Some(Instant::now() + head_timeout);
        }
        buf.reserve(MAX_HEAD - buf.len());
        tokio::select! {
            read = timeout_at(head_deadline.unwrap_or(idle_deadline), stream.read_buf(buf)) => match read {
                Err(_) if head_deadline.is_some() => return ReadHead::TimedOut,
                Err(_) => return ReadHead::Idle,
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
    /// Header lines, each ending in CRLF.
    pub extra_headers: std::borrow::Cow<'static, str>,
    /// Binance's error code when the body is an error (for `bookcast_rest_errors_total`).
    pub error_code: Option<i32>,
}

impl Response {
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            content_type: "application/json",
            body: body.into(),
            extra_headers: std::borrow::Cow::Borrowed(""),
            error_code: None,
        }
    }

    /// A Binance-shaped error: `{"code":-1121,"msg":"Invalid symbol."}`.
    pub fn error(status: u16, code: i32, msg: &str) -> Self {
        let mut body = Vec::new();
        body.extend_from_slice(format!("{{\"code\":{code},\"msg\":").as_bytes());
        crate::protocol::json::push_escaped_str(&mut body, msg);
        body.push(b'}');
        let mut response = Response::json(status, body);
        response.error_code = Some(code);
        response
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
) -> std::io::Result<usize> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n{}\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len(),
        if close { "close" } else { "keep-alive" },
        response.extra_headers.as_ref(),
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
        Ok(out.len())
    };
    match tokio::time::timeout(WRITE_TIMEOUT, send).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "response not taken in time",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_lines_do_not_start_a_request() {
        assert!(!request_started(b""));
        assert!(!request_started(b"\r\n\r\n"));
        assert!(request_started(b"\r\nG"));
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
