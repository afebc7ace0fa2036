//! Long and short polling (SPEC.md "Other transports"): `GET /poll?streams=..&cursor=..&wait=..`
//! answers with every event of those streams after the cursor, waiting up to `wait` for the
//! first one.
//!
//! A poll is a WebSocket connection that lives for one request: it is attached to the hub like
//! one, with its cursor as a strict `resume=` (a cursor the history no longer holds is refused
//! with `410` rather than answered with a snapshot), receives the combined payload
//! `{"stream":..,"data":..}` that WebSocket clients get, rendered once for all of them, and is
//! detached when it answers. So polling shares the history, ids and payloads of `resume=`, and
//! what it costs over a WebSocket is exactly the per-request work: a request head parsed, an
//! attach and detach, a response head written.
//!
//! The cursor is the last id the client holds of each stream, in the order of `streams`,
//! joined by `.`: readable, and enough to resume on any node of a cluster.

use super::context::Context;
use super::http::{Head, Response};
use super::session::Attached;
use super::upgrade;
use crate::engine::{Attach, Command, EXPIRED};
use crate::fanout::outbox::{Closing, Outbox, Queued};
use crate::fanout::shard::Shape;
use crate::metrics::Transport;
use crate::protocol::frame;
use crate::protocol::json::TimeUnit;
use crate::protocol::stream::Topic;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::timeout;

/// `wait` when the request names none (SPEC.md), and the most it may ask for.
const DEFAULT_WAIT: Duration = Duration::from_secs(25);
const MAX_WAIT: Duration = Duration::from_secs(60);

/// What a poll asks for.
struct Request {
    topics: Vec<Topic>,
    names: Vec<String>,
    cursor: Option<Vec<u64>>,
    wait: Duration,
    unit: TimeUnit,
}

/// Answers one `/poll` request on shard `shard`, with its transport (long or short polling;
/// none for a request refused before that was known), under which the router counts the
/// bytes it writes.
pub async fn handle(
    head: &Head,
    shard: usize,
    ctx: &Arc<Context>,
) -> (Response, Option<Transport>) {
    let request = match parse(head, ctx) {
        Ok(request) => request,
        Err(response) => return (response, None),
    };
    let transport = if request.wait.is_zero() {
        Transport::Poll
    } else {
        Transport::LongPoll
    };
    (
        answer_poll(request, shard, ctx, transport).await,
        Some(transport),
    )
}

/// Answers a parsed poll.
async fn answer_poll(
    request: Request,
    shard: usize,
    ctx: &Arc<Context>,
    transport: Transport,
) -> Response {
    crate::metrics::transport_request(transport);
    let Some(cursor) = &request.cursor else {
        // No cursor: the current one, at once, so the next poll starts from now.
        return match latest_ids(&request.topics, ctx).await {
            Some(ids) => answer(&ids, &[]),
            None => busy(),
        };
    };
    let conn = ctx.next_conn_id();
    let outbox = Arc::new(Outbox::new(ctx.config.queue_bound()));
    let (ready, attached) = oneshot::channel();
    let attach = Command::Attach(Box::new(Attach {
        conn,
        shard,
        outbox: outbox.clone(),
        shape: Shape::Combined,
        unit: request.unit,
        snapshot: false,
        topics: request.topics.clone(),
        resume: request
            .topics
            .iter()
            .copied()
            .zip(cursor.iter().copied())
            .collect(),
        strict: true,
        ready,
    }));
    let _guard = Attached {
        conn,
        outbox: outbox.clone(),
        ctx: ctx.clone(),
    };
    if ctx.engine.try_send(attach).is_err() {
        return busy();
    }
    if !matches!(timeout(Duration::from_secs(5), attached).await, Ok(Ok(()))) {
        return match outbox.closing() {
            Some(Closing::Close { code: EXPIRED, .. }) => {
                Response::error(410, -1000, "Cursor expired; start again from a snapshot.")
            }
            _ => busy(),
        };
    }
    let _open = crate::metrics::TransportOpen::new(transport);
    let events = collect(&outbox, request.wait, ctx).await;
    let mut ids = cursor.clone();
    for event in &events {
        note_id(&request, &mut ids, event);
    }
    crate::metrics::transport_events(transport, events.len());
    answer(&ids, &events)
}

/// Waits for the catch-up to land (up to its end marker), then, if it was empty, up to `wait`
/// for the first live events; returns the combined payloads, WebSocket framing removed.
async fn collect(outbox: &Outbox, wait: Duration, ctx: &Context) -> Vec<Vec<u8>> {
    let mut events = Vec::new();
    let mut marker_seen = false;
    let mut shutdown = ctx.shutdown.clone();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut batch: VecDeque<Queued> = VecDeque::new();
        let mut offset = 0;
        let next = poll_fn(|cx| outbox.poll_next(cx, &mut batch, &mut offset, true));
        // The catch-up is on its way from the engine: always wait for its marker.
        let until = if marker_seen {
            deadline
        } else {
            tokio::time::Instant::now() + Duration::from_secs(5)
        };
        tokio::select! {
            closing = tokio::time::timeout_at(until, next) => match closing {
                Ok(None) => {}
                // Closed (shutdown, slow consumer) or timed out: answer with what there is.
                Ok(Some(_)) | Err(_) => return events,
            },
            _ = shutdown.changed() => return events,
        }
        for queued in batch {
            if queued.frame.is_empty() {
                marker_seen = true;
            } else if let Some(payload) = frame::text_payload(&queued.frame) {
                events.push(payload.to_vec());
            }
        }
        if marker_seen && (!events.is_empty() || wait.is_zero()) {
            return events;
        }
    }
}

/// Advances the cursor past `event` (`{"stream":"<name>","data":{..}}`).
fn note_id(request: &Request, ids: &mut [u64], event: &[u8]) {
    let Some(index) = request.names.iter().position(|name| {
        event
            .strip_prefix(b"{\"stream\":\"")
            .and_then(|rest| rest.strip_prefix(name.as_bytes()))
            .is_some_and(|rest| rest.starts_with(b"\","))
    }) else {
        return;
    };
    if let Some(id) = crate::fanout::hub::event_id(request.topics[index], event) {
        ids[index] = id;
    }
}

/// `{"cursor":"<ids>","events":[..]}`.
fn answer(ids: &[u64], events: &[Vec<u8>]) -> Response {
    let mut body = Vec::with_capacity(64 + events.iter().map(|e| e.len() + 1).sum::<usize>());
    body.extend_from_slice(b"{\"cursor\":\"");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            body.push(b'.');
        }
        body.extend_from_slice(id.to_string().as_bytes());
    }
    body.extend_from_slice(b"\",\"events\":[");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event);
    }
    body.extend_from_slice(b"]}");
    Response::json(200, body)
}

fn busy() -> Response {
    crate::metrics::rejected(crate::metrics::Rejection::EngineBusy);
    Response::error(503, -1003, "Server busy; try again.")
}

/// The newest id of each of `topics` on this node.
async fn latest_ids(topics: &[Topic], ctx: &Context) -> Option<Vec<u64>> {
    let (tx, rx) = oneshot::channel();
    let topics = topics.to_vec();
    let read = Command::Read(Box::new(move |streams| {
        let ids = topics
            .iter()
            .map(|topic| match *topic {
                Topic::Symbol { symbol, kind } => streams
                    .symbols()
                    .get(usize::from(symbol))
                    .map_or(0, |s| s.latest_id(kind)),
                _ => 0,
            })
            .collect();
        let _ = tx.send(ids);
    }));
    ctx.engine.try_send(read).ok()?;
    timeout(Duration::from_secs(5), rx).await.ok()?.ok()
}

fn parse(head: &Head, ctx: &Context) -> Result<Request, Response> {
    let (topics, names) = upgrade::parse_named_streams(head, ctx)?;
    if let Some(name) = topics
        .iter()
        .zip(&names)
        .find(|(topic, _)| !topic.is_resumable())
        .map(|(_, name)| name)
    {
        return Err(bad(&format!(
            "{name} cannot be polled: only diff depth, trade and aggTrade streams, whose events are numbered."
        )));
    }
    let cursor = match head.param("cursor") {
        None => None,
        Some(text) => {
            let ids: Option<Vec<u64>> = text.split('.').map(|id| id.parse().ok()).collect();
            match ids {
                Some(ids) if ids.len() == topics.len() => Some(ids),
                _ => return Err(bad(
                    "Invalid cursor; use the cursor of the previous answer for the same streams.",
                )),
            }
        }
    };
    let wait = match head.param("wait") {
        None => DEFAULT_WAIT,
        Some(ms) => match ms.parse::<u64>() {
            Ok(ms) if Duration::from_millis(ms) <= MAX_WAIT => Duration::from_millis(ms),
            _ => return Err(bad("Invalid wait; use 0 to 60000 milliseconds.")),
        },
    };
    let unit = upgrade::parse_time_unit(head)?;
    Ok(Request {
        topics,
        names,
        cursor,
        wait,
        unit,
    })
}

fn bad(msg: &str) -> Response {
    crate::metrics::rejected(crate::metrics::Rejection::BadStreamPath);
    Response::error(400, -1100, msg)
}
