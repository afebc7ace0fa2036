//! Refusing a WebSocket connection *after* the upgrade, with a close code (4001: not
//! authenticated).
//!
//! Binance-style clients report an HTTP error at connect as an opaque handshake failure, but a
//! close code and reason reach their logs and reconnect logic, so authentication failures
//! complete the upgrade and close at once. The connection is never attached to the hub, so
//! not one event reaches it; it gets the 101, the close frame, and `close_timeout` to answer.

use crate::front::context::Context;
use crate::front::transport::Transport;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// Answers 101, sends a close frame with `code` and `reason`, and waits (bounded by
/// `close_timeout`) for the client's close reply before dropping the socket: dropping it with
/// unread input would reset the connection and could destroy the close frame in flight.
pub async fn after_upgrade<S: Transport>(
    mut stream: S,
    leftover: Vec<u8>,
    key: &str,
    code: u16,
    reason: &str,
    ctx: &Context,
) {
    ctx.metrics.refused(code);
    // The same 101 as a served connection's (session::handshake), so clients cannot tell apart.
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    let config = WebSocketConfig::default()
        .read_buffer_size(512)
        .max_message_size(Some(crate::front::session::MAX_INCOMING))
        .max_frame_size(Some(crate::front::session::MAX_INCOMING));
    let close = async {
        stream.write_all(response.as_bytes()).await?;
        let mut ws =
            WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(config))
                .await;
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        ws.close(Some(frame)).await.map_err(std::io::Error::other)?;
        // Whatever the client sends until its close reply is read and ignored.
        while let Some(Ok(_)) = ws.next().await {}
        ws.get_mut().shutdown().await
    };
    let _ = tokio::time::timeout(ctx.config.close_timeout, close).await;
}
