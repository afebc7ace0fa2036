//! A small HTTP/1.1 client for the plain-HTTP transports: one keep-alive connection per client,
//! requests written by hand, response heads parsed with httparse, bodies read by
//! `Content-Length`, chunked encoding or to the end of the connection. Hand-written rather than
//! hyper or reqwest so that every byte on the wire is ours to count (see
//! [`crate::transport::Counted`]) and nothing pools, retries or decompresses behind the
//! measurement's back. Everything read from the server is bounded.

use crate::stats::Stats;
use crate::transport::Counted;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Longest response head accepted (bookcast's are about 100 bytes).
const MAX_HEAD: usize = 16 * 1024;
/// Largest response body accepted: a short poll every 3 s of a busy diff stream is a few
/// hundred KiB; past this the server is not one we can measure.
pub const MAX_BODY: usize = 64 * 1024 * 1024;
/// Bound on opening a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request got no usable response.
#[derive(Debug)]
pub enum HttpError {
    Io(io::Error),
    /// The connection ended before a complete response (a keep-alive the server closed).
    Closed,
    /// Not HTTP as we know it, or larger than our bounds.
    Malformed(&'static str),
}

impl From<io::Error> for HttpError {
    fn from(e: io::Error) -> Self {
        HttpError::Io(e)
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Io(e) => write!(f, "{}", e.kind()),
            HttpError::Closed => f.write_str("connection closed"),
            HttpError::Malformed(what) => f.write_str(what),
        }
    }
}

/// What a response head says about its body.
#[derive(Debug, PartialEq)]
pub struct Head {
    pub status: u16,
    /// Bytes of the head, status line to the blank line.
    pub len: usize,
    pub content_length: Option<usize>,
    pub chunked: bool,
    /// `Connection: close`: the server ends the connection after this response.
    pub close: bool,
}

/// Parses a complete response head at the start of `buf`, or says more is needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(HttpError::Malformed("response head too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HttpError::Malformed("malformed response head")),
    };
    let status = response
        .code
        .ok_or(HttpError::Malformed("no status code"))?;
    let mut head = Head {
        status,
        len,
        content_length: None,
        chunked: false,
        close: response.version == Some(0),
    };
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        let has = |token: &str| {
            value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .map_err(|_| HttpError::Malformed("bad Content-Length"))?;
            head.content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = has("chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            head.close |= has("close");
        }
    }
    Ok(Some(head))
}

/// Chunked transfer coding, undone incrementally: bytes in as they arrive, the body's bytes
/// out, stopping at the end of the last chunk's trailer.
#[derive(Debug, Default)]
pub struct Dechunk {
    state: ChunkState,
    line: Vec<u8>,
}

#[derive(Debug, Default, PartialEq)]
enum ChunkState {
    /// Reading a chunk-size line.
    #[default]
    Size,
    /// This many body bytes to go in the current chunk.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last (zero) chunk, up to an empty line.
    Trailer,
    Done,
}

/// Longest chunk-size or trailer line accepted.
const MAX_CHUNK_LINE: usize = 1024;

impl Dechunk {
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Takes what it can of `input`, appending body bytes to `out`; returns how many bytes of
    /// `input` belonged to the chunked body (the rest, after the end, is the next response's).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, HttpError> {
        let mut at = 0;
        while at < input.len() {
            match self.state {
                ChunkState::Done => break,
                ChunkState::Data(left) => {
                    let take = (left.min((input.len() - at) as u64)) as usize;
                    out.extend_from_slice(&input[at..at + take]);
                    at += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::Size | ChunkState::DataEnd | ChunkState::Trailer => {
                    let byte = input[at];
                    at += 1;
                    if byte != b'\n' {
                        if self.line.len() >= MAX_CHUNK_LINE {
                            return Err(HttpError::Malformed("chunk line too long"));
                        }
                        self.line.push(byte);
                        continue;
                    }
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.state = match self.state {
                        ChunkState::DataEnd if line.is_empty() => ChunkState::Size,
                        ChunkState::DataEnd => {
                            return Err(HttpError::Malformed("chunk data longer than its size"))
                        }
                        ChunkState::Trailer if line.is_empty() => ChunkState::Done,
                        ChunkState::Trailer => ChunkState::Trailer,
                        _ => {
                            let digits = line.split(|&b| b == b';').next().unwrap_or_default();
                            let size = std::str::from_utf8(digits)
                                .ok()
                                .and_then(|d| u64::from_str_radix(d.trim(), 16).ok())
                                .ok_or(HttpError::Malformed("bad chunk size"))?;
                            if size == 0 {
                                ChunkState::Trailer
                            } else {
                                ChunkState::Data(size)
                            }
                        }
                    };
                }
            }
        }
        Ok(at)
    }
}

/// One client's HTTP connection, with what it has read and not yet used.
pub struct Conn {
    io: Counted<TcpStream>,
    buf: Vec<u8>,
    host: String,
}

/// Why a connection could not be opened: the step and the error's kind, as the WebSocket
/// client reports it.
pub type OpenError = String;

/// Opens a connection to `addr` from `source` (the per-source-address spread), its bytes
/// counted for client `client`.
pub async fn open(
    addr: SocketAddr,
    source: Option<IpAddr>,
    stats: &Arc<Stats>,
    client: usize,
) -> Result<Conn, OpenError> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| format!("socket: {}", e.kind()))?;
    if let Some(source) = source {
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| format!("bind: {}", e.kind()))?;
    }
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr))
        .await
        .map_err(|_| "connect: timed out".to_string())?
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = stream.set_nodelay(true);
    Ok(Conn {
        io: Counted::new(stream, stats.clone(), client),
        buf: Vec::with_capacity(8192),
        host: addr.to_string(),
    })
}

impl Conn {
    /// Writes `GET path` with a browser-like minimum of headers (`Host`, `Accept`,
    /// `User-Agent`) and whatever `extra` header lines (each ending in CRLF) add. Keep-alive is
    /// HTTP/1.1's default, so no `Connection` header.
    pub async fn send(&mut self, path: &str, accept: &str, extra: &str) -> io::Result<()> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: {accept}\r\nUser-Agent: bookcast-load\r\n{extra}\r\n",
            self.host
        );
        self.io.write_all(request.as_bytes()).await
    }

    /// Reads more from the socket into the buffer; false at the end of the connection.
    async fn fill(&mut self) -> io::Result<bool> {
        let before = self.buf.len();
        self.buf.reserve(8192);
        let n = self.io.read_buf(&mut self.buf).await?;
        Ok(n > 0 && self.buf.len() > before)
    }

    /// Reads a response head.
    pub async fn head(&mut self) -> Result<Head, HttpError> {
        loop {
            if let Some(head) = parse_head(&self.buf)? {
                self.buf.drain(..head.len);
                return Ok(head);
            }
            if !self.fill().await? {
                return Err(HttpError::Closed);
            }
        }
    }

    /// Reads the body `head` announces, at most [`MAX_BODY`] bytes.
    pub async fn body(&mut self, head: &Head) -> Result<Vec<u8>, HttpError> {
        if head.chunked {
            let mut out = Vec::new();
            let mut dechunk = Dechunk::default();
            loop {
                let used = dechunk.feed(&self.buf, &mut out)?;
                self.buf.drain(..used);
                if dechunk.done() {
                    return Ok(out);
                }
                if out.len() > MAX_BODY {
                    return Err(HttpError::Malformed("response body too large"));
                }
                if !self.fill().await? {
                    return Err(HttpError::Closed);
                }
            }
        }
        match head.content_length {
            Some(n) if n > MAX_BODY => Err(HttpError::Malformed("response body too large")),
            Some(n) => {
                while self.buf.len() < n {
                    if !self.fill().await? {
                        return Err(HttpError::Closed);
                    }
                }
                Ok(self.buf.drain(..n).collect())
            }
            // Neither: the body runs to the end of the connection.
            None => {
                while self.fill().await? {
                    if self.buf.len() > MAX_BODY {
                        return Err(HttpError::Malformed("response body too large"));
                    }
                }
                Ok(std::mem::take(&mut self.buf))
            }
        }
    }

    /// For a streamed body (SSE): moves whatever has arrived into `out`, reading once if
    /// nothing has; false at the end of the connection.
    pub async fn some(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        if self.buf.is_empty() && !self.fill().await? {
            return Ok(false);
        }
        out.append(&mut self.buf);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_say_how_the_body_ends() {
        let head = parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n{\"cursor\"",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            head,
            Head {
                status: 200,
                len: 95,
                content_length: Some(12),
                chunked: false,
                close: false
            }
        );
        let head = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: Close\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(head.chunked && head.close && head.content_length.is_none());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-")
            .unwrap()
            .is_none());
        assert!(parse_head(b"\x00garbage\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "y".repeat(MAX_HEAD));
        assert!(parse_head(huge.as_bytes()).is_err());
    }

    #[test]
    fn chunks_are_undone_across_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nHTTP/1.1";
        for split in 0..wire.len() {
            let mut d = Dechunk::default();
            let mut out = Vec::new();
            let a = d.feed(&wire[..split], &mut out).unwrap();
            let body_len = wire.len() - b"HTTP/1.1".len();
            assert_eq!(
                a,
                split.min(body_len),
                "the body's bytes, not the next response's"
            );
            let b = d.feed(&wire[split..], &mut out).unwrap();
            assert!(d.done());
            assert_eq!(out, b"hello, world");
            assert_eq!(&wire[a + b..], b"HTTP/1.1", "split at {split}");
        }
        let mut d = Dechunk::default();
        assert!(d.feed(b"zz\r\n", &mut Vec::new()).is_err());
        let mut d = Dechunk::default();
        assert!(d.feed(b"2\r\nabc\r\n", &mut Vec::new()).is_err());
        let mut d = Dechunk::default();
        assert!(d.feed(&[b'1'; 2000], &mut Vec::new()).is_err());
    }
}
