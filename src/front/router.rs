//! Every accepted connection starts here: REST requests (keep-alive) until one upgrades to a
//! WebSocket, which is admitted (attempt limit, origin, per-IP cap, token) and handed to a
//! [`super::session`], or refused with the documented status or close code.

use super::context::Context;
use super::http::{read_head, write_response, ReadHead, Response, WRITE_TIMEOUT};
use super::rest;
use super::transport::Transport;
use super::upgrade::{check_handshake, is_websocket_path, parse_upgrade};
use crate::fanout::shard::Placement;
use crate::metrics::Rejection;
use bytes::Buf;
use bytes::BytesMut;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// Serves one accepted connection (TCP or TLS): REST requests (keep-alive) until it upgrades or
/// ends.
/// `permit` is the connection's slot under `--max-connections`; it lives as long as the
/// connection, in whichever task ends up owning it.
pub async fn serve<S: Transport>(
    mut stream: S,
    peer: IpAddr,
    ctx: Arc<Context>,
    permit: OwnedSemaphorePermit,
    placement: Placement,
) {
    let mut buf = BytesMut::with_capacity(1024);
    // The connection may sit idle this long before its first request and after each response
    // (keep-alive); a head, once started, has as long again from its first byte.
    let timeout = ctx.config.handshake_timeout;
    let mut idle_deadline = Instant::now() + timeout;
    let mut served = false;
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let read = read_head(&mut stream, &mut buf, idle_deadline, timeout, &mut shutdown).await;
        let (head, consumed) = match read {
            ReadHead::Head(head, consumed) => (head, consumed),
            ReadHead::Closed => return,
            ReadHead::Idle => {
                // SPEC.md: closed without a response. A keep-alive client may be sending its
                // next request right now, and would read a 408 as the answer to it.
                // A connection that never sent a request is counted; one that went quiet
                // after its requests is a keep-alive ending as it should.
                if !served {
                    crate::metrics::rejected(Rejection::IdleTimeout);
                }
                // FIN (close_notify on TLS): a clean end, which pooling clients recognise.
                let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.shutdown()).await;
                return;
            }
            ReadHead::TimedOut => {
                crate::metrics::rejected(Rejection::HandshakeTimeout);
                let _ = write_response(
                    &mut stream,
                    &Response::error(408, -1000, "Request head not received in time."),
                    true,
                )
                .await;
                return;
            }
            ReadHead::TooLarge => {
                crate::metrics::rejected(Rejection::HeadTooLarge);
                let _ = write_response(
                    &mut stream,
                    &Response::error(431, -1000, "Request head too large."),
                    true,
                )
                .await;
                return;
            }
            ReadHead::Malformed => {
                crate::metrics::rejected(Rejection::MalformedRequest);
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
        if ctx.config.engine_only && !serves_on_cluster_engine(&head.path) {
            crate::metrics::rejected(Rejection::ClusterEngineOnly);
            let response = Response::error(
                404,
                -1000,
                "A cluster engine serves only /metrics and /api/v3/ping: connect clients to a gateway.",
            );
            let _ = write_response(&mut stream, &response, true).await;
            return;
        }
        if is_websocket_path(&head.path) && (head.upgrade_websocket || head.ws_key.is_some()) {
            if let Err(response) = ctx.admit_attempt(peer) {
                let _ = write_response(&mut stream, &response, true).await;
                return;
            }
            let key = match check_handshake(&head) {
                Ok(key) => key,
                Err(response) => {
                    crate::metrics::rejected(Rejection::BadHandshake);
                    let _ = write_response(&mut stream, &response, true).await;
                    return;
                }
            };
            if !crate::front::admission::origin_allowed(
                &ctx.config.allowed_origins,
                head.origin.as_deref(),
                head.host.as_deref(),
            ) {
                crate::metrics::rejected(Rejection::OriginNotAllowed);
                let response = Response::error(403, -1002, "Origin not allowed.");
                let _ = write_response(&mut stream, &response, true).await;
                return;
            }
            let upgrade = match parse_upgrade(&head, &ctx) {
                Ok(upgrade) => upgrade,
                Err(response) => {
                    crate::metrics::rejected(Rejection::BadStreamPath);
                    let _ = write_response(&mut stream, &response, true).await;
                    return;
                }
            };
            let ip_slot = match ctx.acquire_ip_slot(peer) {
                Ok(slot) => slot,
                Err(response) => {
                    let _ = write_response(&mut stream, &response, true).await;
                    return;
                }
            };
            let slots = crate::front::admission::Slots::new(permit, ip_slot);
            // Checked after the upgrade is known to be valid, answered after it completes
            // (SPEC.md: close 4001), and before anything is attached to the hub.
            if let Err(refusal) = crate::front::auth::check(ctx.tokens.as_ref(), &head) {
                drop(head);
                crate::metrics::auth_failed(refusal.label());
                let (leftover, reason) = (buf.to_vec(), refusal.reason());
                crate::front::refuse::after_upgrade(stream, leftover, &key, 4001, reason, &ctx)
                    .await;
                return;
            }
            // Nothing of the request may stay alive for the connection's lifetime.
            drop(head);
            crate::front::session::upgrade(
                stream,
                peer,
                buf.to_vec(),
                key,
                upgrade,
                ctx,
                slots,
                placement,
            )
            .await;
            return;
        }
        if head.path == "/sse" {
            // An event stream takes the connection over until it ends.
            crate::front::sse::serve(stream, peer, head, ctx, permit, placement).await;
            return;
        }
        let close = head.connection_close || head.http10 || head.content_length > 0;
        // The poll's transport, if it is one, to count its bytes (response head included).
        let (response, transport) = if is_websocket_path(&head.path) {
            crate::metrics::rejected(Rejection::NotWebsocket);
            let mut response = Response::error(
                426,
                -1000,
                "This path serves WebSocket only: send an Upgrade: websocket request.",
            );
            response.extra_headers = "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n".into();
            (response, None)
        } else if head.path == "/poll" {
            crate::front::poll::handle(&head, placement.shard, &ctx).await
        } else {
            (rest::handle(&head, peer, &ctx).await, None)
        };
        match write_response(&mut stream, &response, close).await {
            Ok(bytes) => {
                if let Some(transport) = transport {
                    crate::metrics::transport_bytes(transport, bytes);
                }
            }
            Err(_) => return,
        }
        if close {
            return;
        }
        served = true;
        idle_deadline = Instant::now() + timeout;
    }
}

/// What a cluster engine (`bookcast engine`) serves: it has no clients, only its metrics and a
/// liveness check.
fn serves_on_cluster_engine(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    path == "/metrics" || path == "/api/v3/ping"
}
