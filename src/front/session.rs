//! One WebSocket connection after the handshake: its reader, its writer and its timers, in one
//! task.
//!
//! Reading goes through tungstenite (RFC 6455 validation, fragmentation, UTF-8, size limits);
//! writing bypasses it: the connection's [`Outbox`] holds finished frames shared with every other
//! subscriber, and the writer hands a whole backlog to one `writev`, so a busy subscriber costs
//! about one syscall per wakeup. Tungstenite's own automatic replies (pongs) reach the socket
//! through the same outbox ([`WsReader`]), so frames are never interleaved mid-way.
//!
//! One task (rather than a reader and a writer task) keeps per-connection memory small: one
//! future, one small read buffer, no channel between the halves.

use crate::config::Config;
use crate::engine::{Attach, Command};
use crate::fanout::outbox::{self, Closing, Outbox, QueueBound, Queued, MAX_IOV};
use crate::fanout::shard::{Placement, Shape};
use crate::front::context::Context;
use crate::front::http;
use crate::front::transport::Transport;
use crate::front::upgrade::Upgrade;
use crate::front::ws_api;
use crate::front::ws_read::WsReader;
use crate::protocol::control::{self, Subscriptions};
use crate::protocol::frame;
use crate::protocol::json::TimeUnit;
use crate::protocol::stream::TopicList;
use bytes::Bytes;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Message, WebSocketConfig};

/// Largest client message or frame (SPEC.md: larger is closed with 1009).
pub const MAX_INCOMING: usize = 4 * 1024;
/// Tungstenite's read buffer: eagerly allocated per connection, so sized for what subscribers
/// mostly send, pongs and small control messages (a SUBSCRIBE for two streams, about 100 bytes,
/// takes two reads: tungstenite reads at most this much per call, though the buffer grows to
/// hold a larger frame once its header is read). Its 128 KiB default would cost 1.3 GB at 10k
/// clients.
const READ_BUFFER: usize = 64;
/// Code recorded for connections that ended without a close handshake.
pub const CLOSE_ABNORMAL: u16 = 1006;

/// Largest message on the conformance echo route (Autobahn's section 9 sends 16 MiB).
const MAX_ECHO: usize = 16 << 20;

fn ws_config(echo: bool) -> WebSocketConfig {
    let max = if echo { MAX_ECHO } else { MAX_INCOMING };
    // The echo route takes 16 MiB messages: read them in bigger bites.
    let read_buffer = if echo { 64 * 1024 } else { READ_BUFFER };
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// Detaches the connection from the hub however the session ends (even by panic or abort).
pub(crate) struct Attached {
    pub(crate) conn: u64,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) ctx: Arc<Context>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        // Closing the outbox stops the hub queueing to it at once; the detach command frees the
        // subscriptions promptly, and the hub's periodic sweep catches it if the queue is full.
        self.outbox.close(CLOSE_ABNORMAL, "connection ended", None);
        self.outbox.release_direct();
        let _ = self
            .ctx
            .engine
            .try_send(Command::Detach { conn: self.conn });
    }
}

/// Completes a validated upgrade: registers the URL's streams with the hub *before* sending
/// 101, so a client that fetches a depth snapshot right after connecting cannot miss a diff.
///
/// The session then runs as a task of its own: the HTTP task's future (request parsing, REST
/// handlers) is several times larger than the session's, and a connection would otherwise pay
/// for it for its whole life.
#[allow(clippy::too_many_arguments)]
pub async fn upgrade<S: Transport>(
    stream: S,
    peer: IpAddr,
    leftover: Vec<u8>,
    key: String,
    upgrade: Upgrade,
    ctx: Arc<Context>,
    permit: crate::front::admission::Slots,
    placement: Placement,
) {
    let conn = ctx.next_conn_id();
    // The echo route queues whole echoed messages (up to 16 MiB each), not market data.
    let bound = if upgrade.echo {
        QueueBound {
            max_bytes: 4 * MAX_ECHO,
            max_frames: 1 << 16,
        }
    } else {
        ctx.config.queue_bound()
    };
    let outbox = Arc::new(Outbox::websocket(bound));
    let guard = Attached {
        conn,
        outbox: outbox.clone(),
        ctx: ctx.clone(),
    };
    let shard = placement.shard;
    let Some(stream) = handshake(stream, conn, shard, &outbox, &key, &upgrade, &ctx).await else {
        return;
    };
    // Split and wrapped here, in the handshake's short-lived future, so the session's task
    // holds only the finished halves.
    let (read, write) = stream.split();
    if let Some(socket) = S::direct(&write) {
        outbox.set_direct(socket);
    }
    let ws = WsReader::new(read, leftover, ws_config(upgrade.echo));
    ctx.metrics.opened();
    let mut session = Session::<S> {
        ws,
        write,
        attached: guard,
        echo: upgrade.echo,
        api: upgrade.api.then_some(peer),
        subscriptions: Subscriptions {
            // Inline, not the parsed Vec's heap buffer: this list lives as long as the session.
            topics: TopicList::from_slice(&upgrade.topics),
            combined: upgrade.combined,
            snapshot: upgrade.snapshot,
        },
        unit: upgrade.unit,
        _slots: permit,
    };
    // The task's future is the session itself plus `run`'s locals: every byte of it is paid
    // once per connection for the connection's whole life.
    tokio::spawn(async move {
        let code = session.run().await;
        session.attached.ctx.metrics.closed(code);
    });
}

/// Attaches the connection and its URL streams to the hub, then answers 101. Its own async fn
/// so that nothing it allocates stays in the connection's future.
async fn handshake<S: Transport>(
    mut stream: S,
    conn: u64,
    shard: usize,
    outbox: &Arc<Outbox>,
    key: &str,
    upgrade: &Upgrade,
    ctx: &Context,
) -> Option<S> {
    let (ready, attached) = oneshot::channel();
    let attach = Command::Attach(Box::new(Attach {
        conn,
        shard,
        outbox: outbox.clone(),
        shape: if upgrade.combined {
            Shape::Combined
        } else {
            Shape::Raw
        },
        unit: upgrade.unit,
        snapshot: upgrade.snapshot,
        topics: upgrade.topics.clone(),
        resume: upgrade.resume.clone(),
        strict: false,
        ready,
    }));
    let live = ctx.engine.try_send(attach).is_ok()
        && matches!(timeout(Duration::from_secs(5), attached).await, Ok(Ok(())));
    if !live {
        crate::metrics::rejected(crate::metrics::Rejection::EngineBusy);
        let busy = http::Response::error(503, -1003, "Server busy; try again.");
        let _ = http::write_response(&mut stream, &busy, true).await;
        return None;
    }
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    let written =
        tokio::time::timeout(http::WRITE_TIMEOUT, stream.write_all(response.as_bytes())).await;
    if !matches!(written, Ok(Ok(()))) {
        return None;
    }
    Some(stream)
}

/// Counts incoming messages in one-second windows (SPEC.md: 5 per second, all kinds).
struct RateWindow {
    limit: u32,
    started: Instant,
    count: u32,
}

impl RateWindow {
    /// Records one message; true when it exceeds the limit.
    fn exceeded(&mut self, now: Instant) -> bool {
        if now.duration_since(self.started) >= Duration::from_secs(1) {
            self.started = now;
            self.count = 0;
        }
        self.count += 1;
        self.count > self.limit
    }
}

/// Where a closing connection stands. Created the moment a close is decided (here or by the
/// hub), so `deadline` bounds the whole close, however backed up the socket is.
struct Close {
    /// Code sent (or echoed) in our close frame; what the metrics record.
    code: u16,
    /// Give up and drop the socket at this instant.
    deadline: Instant,
    /// Our close frame has been queued behind the last data.
    frame_queued: bool,
    /// Our close frame is written and the write side shut down.
    write_shut: bool,
    /// The peer closed first; nothing more to wait for once our reply is out.
    peer_closed: bool,
}

/// The close code and reason an outbox's closing turns into.
fn describe(closing: &Closing) -> (u16, String) {
    match closing {
        Closing::SlowConsumer { queued_bytes, queued_frames, bound } => (
            4008,
            format!(
                "slow consumer: queue {queued_bytes} B/{queued_frames} frames hit bound {} B/{} frames",
                bound.max_bytes, bound.max_frames
            ),
        ),
        Closing::Close { code, reason } => (*code, reason.clone()),
    }
}

/// The code to record if the connection ends now: the close under way's, else 1006.
fn close_code(close: &Option<Close>) -> u16 {
    close.as_ref().map_or(CLOSE_ABNORMAL, |c| c.code)
}

/// A connection after its handshake: its socket halves and everything it holds until it ends.
/// Dropped in field order: the socket's halves, then the hub attachment (which releases the
/// shard's share of a plain socket, so the socket closes, and detaches the connection), then
/// its admission slots.
struct Session<S: Transport> {
    ws: WsReader<S::Read>,
    write: S::Write,
    attached: Attached,
    /// The conformance echo route: messages are echoed instead of parsed as control messages.
    echo: bool,
    /// A WebSocket API connection (`/ws-api/v3`) and its peer, whose request weight its
    /// requests spend: text messages are requests for [`ws_api::answer`], not control messages.
    api: Option<IpAddr>,
    subscriptions: Subscriptions,
    unit: TimeUnit,
    _slots: crate::front::admission::Slots,
}

/// What one pass of the loop decided.
enum Next {
    Continue,
    /// A WebSocket API request to answer (its text).
    Request(Vec<u8>),
    /// Drop the socket now and record this close code.
    End(u16),
    /// Our close frame is written: shut the write side. Awaited in `run` once the event is
    /// handled, so that the handler's locals are not kept in the future (per connection).
    ShutWrite,
}

/// What the connection is waiting on, in priority order: what [`Session::poll_event`] found
/// ready. Handled after the poll, so nothing the handlers use is kept in the future.
enum Event {
    Input(Input),
    Answer(ws_api::Answer),
    Written(io::Result<usize>),
    /// The outbox handed over a batch (`None`) or reports the connection closing.
    Outbox(Option<Closing>),
    Timer,
}

/// Everything the loop keeps between wakeups. One struct that one poll function borrows:
/// a `select!` over five futures kept a borrow of these per branch (about 100 bytes more per
/// connection, for its whole life).
struct LoopState {
    /// The batch being written, and how much of its first frame is already out.
    pending: VecDeque<Queued>,
    offset: usize,
    /// Filled by the outbox while `pending` is still being written.
    batch: VecDeque<Queued>,
    /// Bytes of the batch's first frame the shard already wrote directly.
    batch_offset: usize,
    close: Option<Close>,
    rate: RateWindow,
    last_heard: Instant,
    next_ping: Instant,
    lifetime_end: Instant,
    /// Tungstenite reported an error or the peer's close: from here on the socket's input is
    /// only drained (unread input would turn our close into a reset) until EOF.
    read_done: bool,
    /// The WebSocket API request being answered, if any. One at a time: input is not read
    /// while it runs, so answers keep the requests' order and a client that sends faster than
    /// it is answered is held back by TCP rather than queued here.
    answering: Option<Pin<Box<dyn Future<Output = ws_api::Answer> + Send>>>,
}

impl LoopState {
    fn close_code(&self) -> u16 {
        close_code(&self.close)
    }

    /// When the connection's one timer should fire next.
    fn deadline(&self, config: &Config) -> Instant {
        match &self.close {
            Some(state) => state.deadline,
            None => self
                .next_ping
                .min(self.last_heard + config.pong_timeout)
                .min(self.lifetime_end),
        }
    }
}

impl<S: Transport> Session<S> {
    /// Runs the connection to its end and returns the close code to record.
    async fn run(&mut self) -> u16 {
        // Shutdown reaches a running session through its outbox (its shard closes it), so
        // the session's future holds no watch of its own; this covers one whose attach the
        // shard applied after it had closed the others.
        if *self.attached.ctx.shutdown.borrow() {
            self.begin_shutdown();
        }
        let started = Instant::now();
        let config = &self.attached.ctx.config;
        let mut state = LoopState {
            pending: VecDeque::new(),
            offset: 0,
            batch: VecDeque::new(),
            batch_offset: 0,
            close: None,
            rate: RateWindow {
                limit: config.max_messages_per_second,
                started,
                count: 0,
            },
            last_heard: started,
            next_ping: started + config.ping_interval,
            lifetime_end: started + config.max_lifetime,
            read_done: false,
            answering: None,
        };
        // One timer for the connection, moved only when its deadline changes (rarely): creating
        // a fresh one per wakeup would register with the timer wheel on every frame written.
        let sleep = sleep_until(state.next_ping);
        tokio::pin!(sleep);
        loop {
            {
                let deadline = state.deadline(&self.attached.ctx.config);
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
            }
            let event = poll_fn(|cx| self.poll_event(&mut state, sleep.as_mut(), cx)).await;
            // Handled in a plain function, so that nothing it uses lives in the future (a
            // local that lived across an await would be stored there, per connection).
            match self.on_event(event, &mut state) {
                Next::End(code) => return code,
                Next::Request(text) => {
                    if let Some(peer) = self.api {
                        let ctx = self.attached.ctx.clone();
                        state.answering =
                            Some(Box::pin(
                                async move { ws_api::answer(text, peer, &ctx).await },
                            ));
                    }
                }
                Next::ShutWrite => {
                    let _ = self.write.shutdown().await;
                    if let Some(close) = state.close.as_mut() {
                        close.write_shut = true;
                        if close.peer_closed || close.code == CLOSE_ABNORMAL {
                            return close.code;
                        }
                    }
                }
                Next::Continue => {}
            }
        }
    }

    /// Acts on what [`Session::poll_event`] found.
    fn on_event(&mut self, event: Event, state: &mut LoopState) -> Next {
        let ctx = &*self.attached.ctx;
        let config = &ctx.config;
        match event {
            Event::Input(Input::Message(incoming)) => {
                state.last_heard = Instant::now();
                // A local Arc, so the config can be borrowed while `self` is mutated (only
                // here: the count is shared by every connection, so no other event touches it).
                let ctx = self.attached.ctx.clone();
                self.on_incoming(incoming, state, &ctx.config)
            }
            Event::Input(Input::Drained(Ok(0) | Err(_))) => Next::End(state.close_code()),
            Event::Input(Input::Drained(Ok(_))) => Next::Continue,
            Event::Answer(answer) => {
                state.answering = None;
                crate::metrics::ws_api_request(answer.method, answer.error);
                // Dropped by the outbox if the connection is closing meanwhile.
                self.attached.outbox.push_control(frame::text(&answer.json));
                Next::Continue
            }
            Event::Written(Ok(0) | Err(_)) => Next::End(state.close_code()),
            Event::Written(Ok(n)) => {
                let (frames, bytes) =
                    outbox::wrote(&mut state.pending, &mut state.offset, n, &ctx.metrics);
                self.attached.outbox.written(frames, bytes);
                Next::Continue
            }
            Event::Outbox(None) => {
                std::mem::swap(&mut state.pending, &mut state.batch);
                state.offset = state.batch_offset;
                let queued: usize = state.pending.iter().map(|q| q.frame.len()).sum();
                ctx.metrics.queue_depth_bytes.record(queued as f64);
                Next::Continue
            }
            Event::Outbox(Some(closing)) => {
                let idle = state.pending.is_empty();
                let close = self.closing(&mut state.close, &closing, config);
                if !idle {
                    // Noticed mid-batch: the deadline runs; the close frame follows the batch.
                    Next::Continue
                } else if !close.frame_queued {
                    close.frame_queued = true;
                    if close.code != CLOSE_ABNORMAL {
                        let frame = frame::close(close.code, &describe(&closing).1);
                        state.pending.push_back(Queued::control(frame));
                    }
                    Next::Continue
                } else {
                    Next::ShutWrite
                }
            }
            Event::Timer => {
                let now = Instant::now();
                match &state.close {
                    Some(close) => {
                        if now >= close.deadline {
                            return Next::End(close.code);
                        }
                    }
                    None if now >= state.last_heard + config.pong_timeout => {
                        // Dead peer: no close handshake, nobody would read it.
                        return Next::End(CLOSE_ABNORMAL);
                    }
                    None if now >= state.lifetime_end => {
                        let reason = format!(
                            "connection lifetime of {} reached",
                            humantime::format_duration(config.max_lifetime)
                        );
                        self.begin_close(&mut state.close, 4009, reason, config);
                    }
                    None => {
                        if now >= state.next_ping {
                            state.next_ping = now + config.ping_interval;
                            self.attached
                                .outbox
                                .push_control(Bytes::from_static(frame::PING));
                        }
                    }
                }
                Next::Continue
            }
        }
    }

    /// Polls what the connection waits on, in a fixed order (a biased `select!`, written out):
    /// input first, so a client's close is seen before more data is queued for it; then a
    /// WebSocket API answer; the batch being written; the outbox, armed while a batch is being
    /// written too (for closing only), so an eviction or shutdown starts the close deadline
    /// even when the socket is backed up; and the timer.
    fn poll_event(
        &mut self,
        state: &mut LoopState,
        sleep: Pin<&mut tokio::time::Sleep>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Event> {
        let draining = state.read_done && state.close.as_ref().is_some_and(|c| !c.peer_closed);
        if (!state.read_done || draining) && state.answering.is_none() {
            let input = poll_input(&mut self.ws, &self.attached.outbox, state.read_done, cx);
            if let Poll::Ready(input) = input {
                return Poll::Ready(Event::Input(input));
            }
        }
        if let Some(answering) = state.answering.as_mut() {
            if let Poll::Ready(answer) = answering.as_mut().poll(cx) {
                return Poll::Ready(Event::Answer(answer));
            }
        }
        if !state.pending.is_empty() {
            let written = poll_write_batch(&mut self.write, &state.pending, state.offset, cx);
            if let Poll::Ready(written) = written {
                return Poll::Ready(Event::Written(written));
            }
        }
        let idle = state.pending.is_empty();
        if state.close.as_ref().is_none_or(|c| idle && !c.write_shut) {
            let event =
                self.attached
                    .outbox
                    .poll_next(cx, &mut state.batch, &mut state.batch_offset, idle);
            if let Poll::Ready(event) = event {
                return Poll::Ready(Event::Outbox(event));
            }
        }
        if sleep.poll(cx).is_ready() {
            return Poll::Ready(Event::Timer);
        }
        Poll::Pending
    }

    /// The connection's close state, created on first sight of the outbox's closing.
    ///
    /// A slow consumer gets `slow_close_timeout` rather than `close_timeout`: its socket buffers
    /// are full of data sent before the eviction, and it can only see its 4008 once it has read
    /// them. Its queue is already freed, so waiting costs a small task and kernel buffers.
    fn closing<'a>(
        &self,
        close: &'a mut Option<Close>,
        closing: &Closing,
        config: &Config,
    ) -> &'a mut Close {
        let timeout = match closing {
            Closing::SlowConsumer { .. } => config.slow_close_timeout,
            Closing::Close { .. } => config.close_timeout,
        };
        close.get_or_insert_with(|| Close {
            code: describe(closing).0,
            deadline: Instant::now() + timeout,
            frame_queued: false,
            write_shut: false,
            peer_closed: false,
        })
    }

    /// Closes from inside the session: queue the close and start its deadline now.
    fn begin_close(&self, close: &mut Option<Close>, code: u16, reason: String, config: &Config) {
        self.attached.outbox.close(code, reason, None);
        if let Some(closing) = self.attached.outbox.closing() {
            self.closing(close, &closing, config);
        }
    }

    /// Queues the `serverShutdown` event and a 1001 close behind what is already queued, for
    /// a session that starts after its shard closed every connection it had
    /// ([`crate::fanout::shard`] does it for the others).
    fn begin_shutdown(&self) {
        let event = frame::server_shutdown(self.subscriptions.combined, self.unit);
        self.attached.outbox.shut_down(event);
    }

    fn on_incoming(
        &mut self,
        incoming: Option<Result<Message, WsError>>,
        state: &mut LoopState,
        config: &Config,
    ) -> Next {
        // Set by the caller as the message arrived.
        let now = state.last_heard;
        let LoopState {
            rate,
            close,
            read_done,
            ..
        } = state;
        let message = match incoming {
            None => return Next::End(close_code(close)),
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                *read_done = true;
                let (code, reason) = match error {
                    WsError::Capacity(CapacityError::MessageTooLong { .. }) => (
                        1009,
                        format!("message too large: at most {MAX_INCOMING} bytes"),
                    ),
                    WsError::Utf8(_) => (1007, "invalid UTF-8 in text message".to_string()),
                    WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                        return Next::End(close_code(close))
                    }
                    WsError::Protocol(e) => (1002, format!("protocol error: {e}")),
                    _ => return Next::End(close_code(close)),
                };
                self.begin_close(close, code, reason, config);
                return Next::Continue;
            }
        };
        if let Message::Close(frame) = &message {
            // Echo the peer's code (RFC 6455 §5.5.1) and end once it is written.
            *read_done = true;
            let code = frame.as_ref().map_or(1000, |f| u16::from(f.code));
            self.begin_close(close, code, String::new(), config);
            if let Some(state) = close.as_mut() {
                state.peer_closed = true;
                if state.write_shut {
                    return Next::End(state.code);
                }
            }
            return Next::Continue;
        }
        if close.is_some() || self.attached.outbox.is_closing() {
            // Closing: the peer's messages no longer matter.
            return Next::Continue;
        }
        if self.echo {
            match message {
                Message::Text(text) => self
                    .attached
                    .outbox
                    .push_control(frame::text(text.as_bytes())),
                Message::Binary(data) => self.attached.outbox.push_control(frame::binary(&data)),
                _ => {}
            }
            return Next::Continue;
        }
        // A WebSocket API connection is not under the 5 messages/s limit of stream connections:
        // its requests spend request weight instead (SPEC.md, as on Binance), in
        // `ws_api::answer`, and it reads one request at a time.
        if self.api.is_none() && rate.exceeded(now) {
            let reason = format!(
                "rate limit: more than {} incoming messages per second",
                rate.limit
            );
            self.begin_close(close, 4002, reason, config);
            return Next::Continue;
        }
        match message {
            Message::Text(text) if self.api.is_some() => {
                return Next::Request(text.as_bytes().to_vec());
            }
            Message::Text(text) => {
                let mut bytes = text.as_bytes().to_vec();
                let outcome = control::handle(
                    &mut bytes,
                    &mut self.subscriptions,
                    &*self.attached.ctx.feed,
                    config.max_streams,
                );
                self.attached.ctx.metrics.control_message(outcome.method);
                if let Some(code) = outcome.error {
                    self.attached.ctx.metrics.control_error(code);
                }
                let command = Command::Control {
                    conn: self.attached.conn,
                    change: outcome.change,
                    reply: frame::text(&outcome.reply),
                };
                if self.attached.ctx.engine.try_send(command).is_err() {
                    self.begin_close(close, 1013, "server busy: try again later".into(), config);
                }
            }
            Message::Binary(_) => {
                self.begin_close(close, 1003, "binary frames are not accepted".into(), config)
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_) => {}
        }
        Next::Continue
    }
}

/// What the read side produced.
enum Input {
    /// A message (or error, or end) from tungstenite.
    Message(Option<Result<Message, WsError>>),
    /// Bytes discarded after tungstenite is done (0: end of input).
    Drained(io::Result<usize>),
}

fn poll_input<R: AsyncRead + Unpin>(
    ws: &mut WsReader<R>,
    outbox: &Outbox,
    read_done: bool,
    cx: &mut TaskContext<'_>,
) -> Poll<Input> {
    if read_done {
        poll_discard(ws.socket(), cx).map(Input::Drained)
    } else {
        ws.poll_next(cx, outbox).map(Input::Message)
    }
}

/// Reads and discards input while a close completes: a socket closed with unread input sends a
/// reset, which can destroy the close frame before the peer reads it.
fn poll_discard<R: AsyncRead + Unpin>(
    read: &mut R,
    cx: &mut TaskContext<'_>,
) -> Poll<io::Result<usize>> {
    let mut scratch = [0u8; 512];
    let mut buf = ReadBuf::new(&mut scratch);
    match Pin::new(read).poll_read(cx, &mut buf) {
        Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// One vectored write of up to [`MAX_IOV`] queued frames, the first from `offset`. The slices
/// are rebuilt on each poll rather than kept in the future, keeping the task small.
pub(crate) fn poll_write_batch<W: AsyncWrite + Unpin>(
    write: &mut W,
    pending: &VecDeque<Queued>,
    offset: usize,
    cx: &mut TaskContext<'_>,
) -> Poll<io::Result<usize>> {
    let mut slices = [IoSlice::new(&[]); MAX_IOV];
    let count = outbox::fill_slices(&mut slices, pending, offset);
    if count == 1 {
        // The common case at moderate load: `send` skips writev's file-position locking.
        return Pin::new(write).poll_write(cx, &slices[0]);
    }
    Pin::new(write).poll_write_vectored(cx, &slices[..count])
}
