//! `--transport`: which protocol the clients follow their streams over (SPEC.md, "Other
//! transports for the same streams"), and the byte counter every client socket reads and writes
//! through, so each transport's cost on the wire is measured the same way: every byte the
//! socket moved, HTTP heads and framing included.

use crate::stats::Stats;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How a client follows its streams.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transport {
    /// One WebSocket per client (`/ws/<s1>/<s2>`, or `/stream?streams=` with `--combined`).
    Ws,
    /// `GET /sse?streams=..`: one long `text/event-stream` response.
    Sse,
    /// `GET /poll?streams=..&cursor=..` in a loop, each answered when there is something new.
    LongPoll,
    /// `GET /poll?..&wait=0` every interval, answered at once (empty or not).
    Poll(Duration),
}

/// The short-poll interval when `--transport poll` names none: the seed's setup (Slack's
/// browsers asked every 3 s before they moved to WebSocket).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(3);

impl Transport {
    /// Parses `ws`, `sse`, `longpoll`, `poll` or `poll=<interval>` (`poll=500ms`).
    pub fn parse(text: &str) -> Result<Transport, String> {
        let (name, interval) = match text.split_once('=') {
            Some((name, interval)) => (name, Some(interval)),
            None => (text, None),
        };
        let transport = match (name, interval) {
            ("ws", None) => Transport::Ws,
            ("sse", None) => Transport::Sse,
            ("longpoll", None) => Transport::LongPoll,
            ("poll", None) => Transport::Poll(DEFAULT_POLL_INTERVAL),
            ("poll", Some(interval)) => {
                let every = humantime::parse_duration(interval)
                    .map_err(|e| format!("--transport {text}: {e}"))?;
                if every.is_zero() {
                    return Err(format!(
                        "--transport {text}: the interval must be positive (use longpoll for \
                         answers as soon as there are events)"
                    ));
                }
                Transport::Poll(every)
            }
            _ => {
                return Err(format!(
                    "--transport {text}: expected ws, sse, longpoll, poll or poll=<interval>"
                ))
            }
        };
        Ok(transport)
    }

    pub fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::LongPoll => "longpoll",
            Transport::Poll(_) => "poll",
        }
    }
}

/// A socket whose every byte read and written is added to its client's `wire_in` and
/// `wire_out`. Counting here, under the protocol code, is what makes the transports comparable:
/// tungstenite's frame headers, the 101 response, HTTP response heads, SSE field names and the
/// poll envelope all pass through, which a count of payloads would miss. Over loopback, the
/// bytes read are exactly the bytes the server's kernel sent.
pub struct Counted<S> {
    inner: S,
    stats: Arc<Stats>,
    client: usize,
}

impl<S> Counted<S> {
    pub fn new(inner: S, stats: Arc<Stats>, client: usize) -> Self {
        Counted {
            inner,
            stats,
            client,
        }
    }

    fn add_in(&self, n: usize) {
        if let Some(c) = self.stats.per_client.get(self.client) {
            c.wire_in.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    fn add_out(&self, n: usize) {
        if let Some(c) = self.stats.per_client.get(self.client) {
            c.wire_out.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.add_in(buf.filled().len().saturating_sub(before));
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.add_out(n);
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result {
            this.add_out(n);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_parse_with_the_seeds_poll_interval_by_default() {
        assert_eq!(Transport::parse("ws"), Ok(Transport::Ws));
        assert_eq!(Transport::parse("sse"), Ok(Transport::Sse));
        assert_eq!(Transport::parse("longpoll"), Ok(Transport::LongPoll));
        assert_eq!(
            Transport::parse("poll"),
            Ok(Transport::Poll(Duration::from_secs(3)))
        );
        assert_eq!(
            Transport::parse("poll=500ms"),
            Ok(Transport::Poll(Duration::from_millis(500)))
        );
        for bad in ["poll=0s", "poll=soon", "http", "sse=1s", "longpoll=1s", ""] {
            assert!(Transport::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn counted_sockets_add_every_byte_to_their_client() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let stats = Arc::new(Stats::new(2, 1, |_| 0));
        let (a, mut b) = tokio::io::duplex(64);
        let mut counted = Counted::new(a, stats.clone(), 1);
        counted.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        b.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = counted.read(&mut buf).await.unwrap();
        assert_eq!(n, 17);
        assert_eq!(stats.wire_totals(), (17, 18));
        assert_eq!(stats.per_client[0].wire_in.load(Ordering::Relaxed), 0);
    }
}
