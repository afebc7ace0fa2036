//! Server-Sent Events (SPEC.md "Other transports"): `GET /sse?streams=<s1>/<s2>` answers `200
//! text/event-stream` and then one event per message, for as long as the client stays.
//!
//! An SSE stream is a subscriber like a WebSocket connection: the same hub, shard and outbox,
//! and the same direct writes from the shard, with one more payload shape
//! ([`Shape::Sse`]): `event: <stream>`, `id: <stream>:<id>` for numbered streams, `data:
//! <payload>`, rendered once per event for every SSE subscriber. What differs is the session
//! around it, which is this file: the HTTP response head instead of a `101`, a `: ping` comment
//! every 15 s (`--sse-keep-alive`) instead of ping frames, no input but the end of the request, and no close frame
//! (a slow consumer's response is ended, and counted like a 4008).
//!
//! A reconnecting `EventSource` sends `Last-Event-ID: <stream>:<id>`, and that stream resumes
//! from it exactly as `resume=` would: missed events first (or a `depthSnapshot` / `resumeGap`
//! from beyond the history), then live ones.

use super::admission::Slots;
use super::context::Context;
use super::http::{self, Head, Response};
use super::session::{poll_write_batch, Attached};
use super::transport::Transport as Stream;
use super::upgrade;
use crate::engine::{Attach, Command};
use crate::fanout::outbox::{self, Closing, Outbox, Queued};
use crate::fanout::shard::{Placement, Shape};
use crate::metrics::{Rejection, Transport, TransportOpen};
use crate::protocol::stream::Topic;
use bytes::Bytes;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::{sleep_until, timeout, Instant};

const KEEP_ALIVE_COMMENT: &[u8] = b": ping\n\n";

/// What an SSE request asks for.
struct Request {
    topics: Vec<Topic>,
    unit: crate::protocol::json::TimeUnit,
    resume: Vec<(Topic, u64)>,
}

/// Serves `GET /sse` on an accepted connection, which it then owns until the stream ends.
/// Admission is a WebSocket upgrade's: the per-IP attempt limit, `--allowed-origins`, the
/// per-IP connection cap and `--auth-tokens` (a refusal is an HTTP status here: there is no
/// socket yet to send a close code on).
pub async fn serve<S: Stream>(
    mut stream: S,
    peer: IpAddr,
    head: Box<Head>,
    ctx: Arc<Context>,
    permit: tokio::sync::OwnedSemaphorePermit,
    placement: Placement,
) {
    let request = match admit(&head, peer, &ctx) {
        Ok(request) => request,
        Err(response) => {
            let _ = http::write_response(&mut stream, &response, true).await;
            return;
        }
    };
    let ip_slot = match ctx.acquire_ip_slot(peer) {
        Ok(slot) => slot,
        Err(response) => {
            let _ = http::write_response(&mut stream, &response, true).await;
            return;
        }
    };
    drop(head);
    let slots = Slots::new(permit, ip_slot);
    let conn = ctx.next_conn_id();
    let outbox = Arc::new(Outbox::for_transport(
        ctx.config.queue_bound(),
        Transport::Sse,
    ));
    let guard = Attached {
        conn,
        outbox: outbox.clone(),
        ctx: ctx.clone(),
    };
    let (ready, attached) = oneshot::channel();
    let attach = Command::Attach(Box::new(Attach {
        conn,
        shard: placement.shard,
        outbox: outbox.clone(),
        shape: Shape::Sse,
        unit: request.unit,
        snapshot: false,
        topics: request.topics,
        resume: request.resume,
        strict: false,
        ready,
    }));
    let live = ctx.engine.try_send(attach).is_ok()
        && matches!(timeout(Duration::from_secs(5), attached).await, Ok(Ok(())));
    if !live {
        crate::metrics::rejected(Rejection::EngineBusy);
        let busy = Response::error(503, -1003, "Server busy; try again.");
        let _ = http::write_response(&mut stream, &busy, true).await;
        return;
    }
    // No Content-Length: the body is the stream, ended by closing the connection.
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\nX-Accel-Buffering: no\r\n\r\n";
    let written = timeout(http::WRITE_TIMEOUT, stream.write_all(head)).await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    crate::metrics::transport_request(Transport::Sse);
    outbox.count_transport(0, head.len());
    let _open = TransportOpen::new(Transport::Sse);
    let slow = run(stream, &outbox, &ctx).await;
    if slow {
        // Counted like a WebSocket slow consumer's 4008 (the shard counted the eviction).
        ctx.metrics.refused(4008);
    }
    drop(guard);
    drop(slots);
}

/// Checks everything a request can get wrong; returns what it asks for.
fn admit(head: &Head, peer: IpAddr, ctx: &Context) -> Result<Request, Response> {
    if head.method != "GET" {
        crate::metrics::rejected(Rejection::BadHandshake);
        return Err(Response::error(405, -1000, "/sse takes GET."));
    }
    ctx.admit_attempt(peer)?;
    if !super::admission::origin_allowed(
        &ctx.config.allowed_origins,
        head.origin.as_deref(),
        head.host.as_deref(),
    ) {
        crate::metrics::rejected(Rejection::OriginNotAllowed);
        return Err(Response::error(403, -1002, "Origin not allowed."));
    }
    if let Err(refusal) = super::auth::check(ctx.tokens.as_ref(), head) {
        crate::metrics::auth_failed(refusal.label());
        return Err(Response::error(401, -1002, refusal.reason()));
    }
    let (topics, names) = upgrade::parse_named_streams(head, ctx)?;
    let unit = upgrade::parse_time_unit(head)?;
    // `<stream>:<id>` of one of these numbered streams; anything else (another stream, an id
    // of a stream without ids) is ignored, as a browser may send whatever id it saw last.
    let resume = head
        .last_event_id
        .as_deref()
        .and_then(|id| id.rsplit_once(':'))
        .and_then(|(name, id)| {
            let index = names.iter().position(|n| n == name)?;
            let topic = topics[index];
            Some((topic, id.parse().ok()?)).filter(|_| topic.is_resumable())
        })
        .into_iter()
        .collect();
    Ok(Request {
        topics,
        unit,
        resume,
    })
}

/// Streams the outbox to the socket until the client leaves, the server shuts down, the
/// connection's lifetime ends, or it falls behind; returns whether it fell behind.
async fn run<S: Stream>(stream: S, outbox: &Outbox, ctx: &Context) -> bool {
    let (mut read, mut write) = stream.split();
    if let Some(socket) = S::direct(&write) {
        outbox.set_direct(socket);
    }
    let config = &ctx.config;
    let mut shutdown = ctx.shutdown.clone();
    let mut shutdown_seen = *shutdown.borrow();
    if shutdown_seen {
        outbox.close(1001, "server shutting down", None);
    }
    let lifetime_end = Instant::now() + config.max_lifetime;
    let mut next_comment = Instant::now() + config.sse_keep_alive;
    let sleep = sleep_until(next_comment);
    tokio::pin!(sleep);
    let (mut pending, mut batch): (VecDeque<Queued>, VecDeque<Queued>) = Default::default();
    let (mut offset, mut batch_offset) = (0usize, 0usize);
    let mut closing: Option<(Closing, Instant)> = None;
    let mut input = [0u8; 256];
    loop {
        let timer = match &closing {
            Some((_, deadline)) => *deadline,
            None => next_comment.min(lifetime_end),
        };
        if sleep.deadline() != timer {
            sleep.as_mut().reset(timer);
        }
        tokio::select! {
            biased;
            changed = shutdown.changed(), if !shutdown_seen => {
                shutdown_seen = true;
                if changed.is_ok() {
                    outbox.close(1001, "server shutting down", None);
                }
            }
            // The request was the whole input: anything more is drained, and the end of it is
            // the client leaving.
            read = poll_fn(|cx| {
                let mut buf = ReadBuf::new(&mut input);
                match Pin::new(&mut read).poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            }) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return false;
                }
            }
            written = poll_fn(|cx| poll_write_batch(&mut write, &pending, offset, cx)), if !pending.is_empty() => {
                match written {
                    Ok(n) if n > 0 => {
                        let (frames, bytes) = outbox::wrote(&mut pending, &mut offset, n, &ctx.metrics);
                        outbox.written(frames, bytes);
                        outbox.count_transport(frames, n);
                    }
                    _ => return false,
                }
            }
            event = poll_fn(|cx| outbox.poll_next(cx, &mut batch, &mut batch_offset, pending.is_empty())),
                if closing.is_none() || pending.is_empty() =>
            {
                match event {
                    None => {
                        std::mem::swap(&mut pending, &mut batch);
                        offset = batch_offset;
                    }
                    // No close frame to deliver behind a backlog: a slow consumer ends now.
                    Some(Closing::SlowConsumer { .. }) => return true,
                    Some(why) => {
                        if !pending.is_empty() {
                            // Noticed mid-batch: finish it (within the deadline), then end.
                            if closing.is_none() {
                                let deadline = Instant::now() + config.close_timeout;
                                closing = Some((why, deadline));
                            }
                            continue;
                        }
                        let _ = write.shutdown().await;
                        return false;
                    }
                }
            }
            _ = &mut sleep => {
                let now = Instant::now();
                if let Some((why, deadline)) = &closing {
                    if now >= *deadline {
                        return matches!(why, Closing::SlowConsumer { .. });
                    }
                } else if now >= lifetime_end {
                    outbox.close(4009, "connection lifetime reached", None);
                } else if now >= next_comment {
                    next_comment = now + config.sse_keep_alive;
                    outbox.push_control(Bytes::from_static(KEEP_ALIVE_COMMENT));
                }
            }
        }
    }
}
