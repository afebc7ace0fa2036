//! A WebSocket connection's read side: tungstenite's protocol state driven directly over the
//! socket's read half, polled from the session's task.
//!
//! Tungstenite does the protocol (RFC 6455 validation, fragmentation, UTF-8, size limits);
//! this drives it without tokio-tungstenite's `WebSocketStream`, which is built for a stream
//! that both reads and writes: it keeps two heap-allocated waker proxies and its own copy of the
//! stream per connection. Here writing never goes through tungstenite (the session writes from
//! the [`Outbox`]), so one poll needs only the task's context, lent for the call: tungstenite
//! reads through [`PollIo`], which turns `Pending` into `WouldBlock`, and what it writes by
//! itself (pongs, the close echo) is queued on the outbox as a control frame, so frames are
//! never interleaved mid-way.

use crate::fanout::outbox::Outbox;
use bytes::Bytes;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::{Message, Role, WebSocketConfig, WebSocketContext};
use tokio_tungstenite::tungstenite::Error as WsError;

/// The read half and the protocol state of one server-side WebSocket connection.
pub struct WsReader<R> {
    context: WebSocketContext,
    read: R,
    /// Tungstenite reported the end or an error: like a fused stream, nothing more is read.
    ended: bool,
}

impl<R: AsyncRead + Unpin> WsReader<R> {
    /// Starts reading after the handshake; `leftover` is what the client sent after its
    /// request, already read from the socket.
    pub fn new(read: R, leftover: Vec<u8>, config: WebSocketConfig) -> Self {
        WsReader {
            context: WebSocketContext::from_partially_read(leftover, Role::Server, Some(config)),
            read,
            ended: false,
        }
    }

    /// The next message; `None` once the connection is closed (after the peer's close frame,
    /// or at the end of input), then forever. Errors are returned once, then `None`.
    pub fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        outbox: &Outbox,
    ) -> Poll<Option<Result<Message, WsError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let mut io = PollIo {
            read: &mut self.read,
            cx,
            outbox,
        };
        match self.context.read(&mut io) {
            Ok(message) => Poll::Ready(Some(Ok(message))),
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(WsError::AlreadyClosed | WsError::ConnectionClosed) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Err(e) => {
                self.ended = true;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    /// The socket's read half, for draining input once tungstenite is done with it.
    pub fn socket(&mut self) -> &mut R {
        &mut self.read
    }
}

/// The read half and the task's context for one poll, as the blocking-style stream
/// tungstenite reads from: `Pending` becomes `WouldBlock` (and the task is woken when the
/// socket is readable again); writes go to the outbox.
struct PollIo<'a, 'b, R> {
    read: &'a mut R,
    cx: &'a mut Context<'b>,
    outbox: &'a Outbox,
}

impl<R: AsyncRead + Unpin> Read for PollIo<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut *self.read).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<R> Write for PollIo<'_, '_, R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbox.push_control(Bytes::copy_from_slice(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
