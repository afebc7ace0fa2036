//! The byte streams a connection can run over: plain TCP, or TLS over TCP (`--tls-cert`).
//!
//! Sessions are generic over [`Transport`] so the plain path keeps one shared TCP socket (no
//! lock between reader and writer), also held by the connection's shard for direct writes,
//! while TLS goes through `tokio::io::split` and only its session writes (its bytes are
//! encrypted per connection anyway).

use std::io::{self, IoSlice};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A connection's stream, splittable into independently owned read and write halves.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type Read: AsyncRead + Unpin + Send + 'static;
    type Write: AsyncWrite + Unpin + Send + 'static;
    fn split(self) -> (Self::Read, Self::Write);
    /// The socket the shard may write to directly, if this transport allows it.
    fn direct(write: &Self::Write) -> Option<Arc<TcpStream>>;
}

impl Transport for TcpStream {
    type Read = SharedRead;
    type Write = SharedWrite;

    /// Both halves share one `Arc<TcpStream>`: tokio's `into_split` would allocate its own
    /// Arc, and the shard's share of the write half another, per connection.
    fn split(self) -> (SharedRead, SharedWrite) {
        let socket = Arc::new(self);
        (SharedRead(socket.clone()), SharedWrite(socket))
    }

    fn direct(write: &SharedWrite) -> Option<Arc<TcpStream>> {
        Some(write.0.clone())
    }
}

/// The read side of a shared TCP socket: tokio's readiness and `try_read`, which take `&self`.
pub struct SharedRead(Arc<TcpStream>);

impl AsyncRead for SharedRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            // `try_read` clears the readiness on `WouldBlock`, so the next poll waits again.
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// A TCP socket's write side, shared by the session and its shard (both on one thread, never
/// writing at once: see [`crate::fanout::outbox`]). The session's writes go through tokio's
/// readiness and `try_write`, which take `&self` (the shard's `send` straight on the
/// descriptor); the socket closes when the last holder drops it.
pub struct SharedWrite(Arc<TcpStream>);

impl SharedWrite {
    /// Waits for write readiness, then tries `write`; on `WouldBlock` (readiness cleared) waits
    /// again, as tokio's own `TcpStream` does.
    fn poll_try(
        &self,
        cx: &mut Context<'_>,
        write: impl Fn(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match write(&self.0) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }
}

impl AsyncWrite for SharedWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_try(cx, |socket| socket.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_try(cx, |socket| socket.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let socket = socket2::SockRef::from(&*self.0);
        Poll::Ready(socket.shutdown(std::net::Shutdown::Write))
    }
}

impl Transport for TlsStream<TcpStream> {
    type Read = ReadHalf<TlsStream<TcpStream>>;
    type Write = WriteHalf<TlsStream<TcpStream>>;

    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }

    fn direct(_: &Self::Write) -> Option<Arc<TcpStream>> {
        None
    }
}

/// Loads a PEM certificate chain and private key into a TLS acceptor (TLS 1.2 and 1.3, ring).
pub fn acceptor(cert: &Path, key: &Path) -> io::Result<TlsAcceptor> {
    let invalid = |what: &Path, e: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: {e}", what.display()),
        )
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| invalid(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(cert, &e))?;
    if chain.is_empty() {
        return Err(invalid(cert, &"no certificate found"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(key, &e))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(cert, &e))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| invalid(cert, &e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
