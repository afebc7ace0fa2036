//! A connection's bounded send queue: the one place its shard and its session meet.
//!
//! Both live on the same shard thread (see [`super::shard`]), so the mutex is never contended;
//! it is there because the two hold the outbox through an `Arc`.
//!
//! Two writers, never at once:
//! - **Direct.** While the session is idle (waiting for data, holding no batch), the shard
//!   writes what it queued in one pass straight to the socket with one `send` (`sendmsg` for
//!   several frames) ([`Outbox::flush`]): no task is woken, and the socket's edge-triggered
//!   registration costs no `epoll_ctl`. This is the common case, one `send` per socket per
//!   pass.
//! - **Session.** On `WouldBlock`, a partial write, TLS (bytes are encrypted per connection) or
//!   a close, the rest is handed to the session's task, which takes up to 32 KiB of it at a
//!   time (the rest stays queued, where a resync can still drop diffs and conflation replace
//!   events), waits for the socket to drain and writes with vectored writes until the queue is
//!   empty; then the direct path resumes.
//!
//! The bound is enforced on push, in bytes and in frames, counting frames taken by the session
//! until they reach the socket, so memory per connection never exceeds the bound plus one batch
//! of control replies. Overflow never blocks the publisher: the outbox is emptied at once,
//! marked with why, and the session closes the connection with 4008. Other closes (shutdown,
//! limits) let the queue drain first, within the session's close timeout.
//!
//! Each frame carries a [`Class`], so that a connection that falls behind loses only what a
//! newer frame makes worthless (SPEC.md, "Resync instead of eviction"):
//! - **Conflation.** A snapshot-type event (partial depth, `bookTicker`, tickers, `avgPrice`)
//!   says everything its stream has to say, so a newer one of the same stream replaces a
//!   queued one in place instead of queueing behind it: a backed-up reader gets the latest
//!   state sooner and the queue holds one frame per such stream. Only the backlog qualifies:
//!   frames a flush already failed to write, not those of the current pass (a connection that
//!   keeps up sees every event, however many one engine batch holds), nor a partly written
//!   front frame or what the session took. A queue without a conflatable backlog frame is never
//!   scanned, so a healthy connection (empty queue) pays nothing.
//! - **Resync.** On a `snapshot=true` connection ([`Outbox::set_resyncable`]) an overflow
//!   drops the queued diffs instead of the connection: the diffs are worthless anyway once one
//!   is missing, and the engine can replace them with one `depthSnapshot` per diff stream.
//!   The outbox then skips every diff until those snapshots arrive ([`Outbox::resynced`]);
//!   since the shard applies the engine's messages in order, the diffs it skipped are exactly
//!   those published before the snapshot, so each stream is contiguous again from it. If the
//!   frame still does not fit once the diffs are gone (the queue is full of trades), or the
//!   connection overflows again within [`RESYNC_GRACE`] of a resync (it reads slower than
//!   snapshots arrive), it is evicted as before.

use crate::metrics::{SessionMetrics, Transport, TransportCounters};
use crate::protocol::stream::Topic;
use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};
use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Frames handed to one vectored write at most (well under IOV_MAX).
pub const MAX_IOV: usize = 64;

/// Bytes of backlog the session takes from the queue at once, at most (one frame at least).
const BATCH_BYTES: usize = 32 * 1024;

/// Room above the byte bound for control replies, so a reply is not what tips a connection
/// over; one LIST_SUBSCRIPTIONS reply for 1024 streams is about 30 KiB.
pub const CONTROL_SLACK: usize = 64 * 1024;

/// A connection that overflows again this soon after a resync reads slower than snapshots
/// arrive: resyncing it again would only send snapshots it cannot take, so it is evicted.
pub const RESYNC_GRACE: Duration = Duration::from_secs(1);

/// How much one connection may have queued before it counts as a slow consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueBound {
    pub max_bytes: usize,
    pub max_frames: usize,
}

/// A queued frame and when it was published, so the writer can measure publish-to-socket time.
#[derive(Clone, Debug)]
pub struct Queued {
    pub frame: Bytes,
    /// [`crate::clock::monotonic_us`] at publish; 0 for replies and control frames.
    pub born_us: u64,
    /// What the outbox may do with the frame before it is written.
    pub class: Class,
}

impl Queued {
    /// A reply or control frame: no publish time, never dropped or replaced.
    pub fn control(frame: Bytes) -> Self {
        Queued {
            frame,
            born_us: 0,
            class: Class::Other,
        }
    }
}

/// What a frame is, as far as a backed-up queue is concerned (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Class {
    /// Written in order, never dropped or replaced: trades, klines, ticker arrays (which carry
    /// only the symbols that changed), replies, control frames.
    #[default]
    Other,
    /// A diff-depth event, or a resync's `depthSnapshot`: dropped when the connection resyncs,
    /// which replaces them all with fresh snapshots.
    Diff,
    /// A snapshot-type event: a newer one with the same key replaces it while it is queued.
    Conflate(ConflateKey),
}

/// Which stream a conflatable frame belongs to on one connection: its fan-out key and the
/// subscriber list ([`super::shard::LISTS`]) it was queued from, because one connection can be
/// in two lists of one key (both spellings, combined) and each name gets its own events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConflateKey {
    pub topic: Topic,
    pub list: u8,
}

/// Why an outbox stopped accepting frames; the writer turns it into a close frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closing {
    /// The queue overflowed: close 4008 naming the bound.
    SlowConsumer {
        queued_bytes: usize,
        queued_frames: usize,
        bound: QueueBound,
    },
    /// Someone else (shutdown, lifetime, rate limit, ...) asked to close with this code.
    Close { code: u16, reason: String },
}

/// What the publisher learns from a push.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    /// Queued; `flush`: the first frame since the last [`Outbox::flush`], so the publisher
    /// must call it once its pass is over.
    Queued { flush: bool },
    /// Replaced a queued event of the same stream in place (conflated); nothing new to flush.
    Conflated,
    /// A diff dropped because the connection waits for its resync snapshots.
    Skipped,
    /// This push overflowed the bound of a connection that resyncs: its queued diffs are gone
    /// and the publisher must ask the engine for snapshots (and call
    /// [`Outbox::resync_failed`] if it cannot). `flush` as for `Queued`: the frame itself
    /// was queued unless it was a diff.
    Resync { flush: bool },
    /// This push overflowed the bound: the connection is now closing as a slow consumer.
    Overflowed,
    /// The connection was already closing; the frame was dropped.
    Closed,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Queued>,
    /// Bytes of the front frame already written by a direct write.
    offset: usize,
    /// Bytes queued plus bytes taken by the writer and not yet written.
    bytes: usize,
    /// Frames queued plus frames taken and not yet written.
    count: usize,
    /// Why the outbox is closing, once it is. Boxed: set at most once in a connection's life,
    /// so the connections that are not closing do not carry its size.
    closing: Option<Box<Closing>>,
    /// The writer's waker while it waits: for data and closing, or (while it is busy writing a
    /// batch) for closing only. Taken by whoever wakes it, so a busy writer costs pushes nothing.
    waker: Option<Waker>,
    /// The session holds no batch and waits for data: the shard may write directly.
    wants_data: bool,
    /// Pushed to since the last flush (the publisher has it on its list).
    dirty: bool,
    /// The plain-TCP socket, shared with the session, for direct writes; `None`
    /// for TLS and once the session has ended.
    direct: Option<Arc<TcpStream>>,
    /// A conflatable frame may be in `frames`: set when one is queued, cleared whenever
    /// `frames` empties, so pushes to a queue without one never scan it.
    may_conflate: bool,
    /// How many frames at the front of `frames` were already there at the last flush: the
    /// backlog, the only frames conflation may replace. Frames pushed in the current pass are
    /// about to be written at its end, so a connection that keeps up sees every event (as on
    /// Binance) however many the engine published in one batch.
    backlog: usize,
    /// `snapshot=true`: an overflow resyncs instead of evicting.
    resyncable: bool,
    /// Diffs are skipped until the engine's snapshots arrive.
    resyncing: bool,
    /// A WebSocket session's: its shard closes it with `serverShutdown` and 1001 when the
    /// server shuts down (SSE and polls end on their own).
    websocket: bool,
    /// What only resyncing and resuming connections use, allocated on first use.
    rare: Option<Box<Rare>>,
}

/// The outbox state few connections ever need, boxed so that the others do not carry it: an
/// outbox costs 160 bytes of heap rather than 208 (`tests`: `an_outbox_stays_small`).
#[derive(Default)]
struct Rare {
    /// When the last resync started, for [`RESYNC_GRACE`].
    last_resync: Option<Instant>,
    /// Bytes and frames of a `resume=` catch-up admitted above the bound; reset once the queue
    /// has drained, so it lets exactly that backlog through once.
    allowance: (usize, usize),
}

impl State {
    /// The newest backlog frame of `key` that may still be replaced (not a partly written one).
    fn conflatable(&self, key: ConflateKey) -> Option<usize> {
        let first = usize::from(self.offset > 0);
        (first..self.backlog)
            .rev()
            .find(|&at| self.frames[at].class == Class::Conflate(key))
    }

    /// Drops every queued diff but a partly written front frame.
    fn drop_diffs(&mut self) {
        let (keep_front, backlog) = (self.offset > 0, self.backlog);
        let (mut at, mut frames, mut bytes, mut dropped_backlog) = (0, 0, 0, 0);
        self.frames.retain(|queued| {
            let started = at == 0 && keep_front;
            let in_backlog = at < backlog;
            at += 1;
            if queued.class == Class::Diff && !started {
                frames += 1;
                bytes += queued.frame.len();
                dropped_backlog += usize::from(in_backlog);
                false
            } else {
                true
            }
        });
        self.count -= frames;
        self.bytes -= bytes;
        self.backlog -= dropped_backlog;
    }

    fn fits(&self, bound: QueueBound, len: usize) -> bool {
        let allowance = self.rare.as_ref().map_or((0, 0), |rare| rare.allowance);
        self.bytes + len <= bound.max_bytes + allowance.0
            && self.count < bound.max_frames + allowance.1
    }

    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// The queue drained: a catch-up's allowance is spent.
    fn drained(&mut self) {
        if let Some(rare) = &mut self.rare {
            rare.allowance = (0, 0);
        }
    }

    fn push(&mut self, queued: Queued) {
        self.bytes += queued.frame.len();
        self.count += 1;
        if self.frames.capacity() == 0 {
            // Most passes queue one frame per connection, written at the pass's end and freed:
            // room for one, rather than `VecDeque`'s default four, keeps what every
            // connection holds at the moment a burst is queued (all of them at once) small.
            self.frames.reserve_exact(1);
        }
        self.frames.push_back(queued);
    }
}

/// A [`QueueBound`] in half the room: every outbox holds one. Bounds above 4 GiB or 4 G
/// frames saturate there (far above any useful queue).
#[derive(Clone, Copy)]
struct Bound {
    max_bytes: u32,
    max_frames: u32,
}

impl From<QueueBound> for Bound {
    fn from(bound: QueueBound) -> Self {
        Bound {
            max_bytes: u32::try_from(bound.max_bytes).unwrap_or(u32::MAX),
            max_frames: u32::try_from(bound.max_frames).unwrap_or(u32::MAX),
        }
    }
}

impl From<Bound> for QueueBound {
    fn from(bound: Bound) -> Self {
        QueueBound {
            max_bytes: bound.max_bytes as usize,
            max_frames: bound.max_frames as usize,
        }
    }
}

pub struct Outbox {
    state: Mutex<State>,
    bound: Bound,
    /// A plain-HTTP transport's own counters (SSE), fed by every write; `None` for WebSocket,
    /// whose writes `SessionMetrics` counts alone.
    transport: Option<Box<TransportCounters>>,
}

impl Outbox {
    pub fn new(bound: QueueBound) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            bound: bound.into(),
            transport: None,
        }
    }

    /// A WebSocket session's outbox (see [`Outbox::is_websocket`]).
    pub fn websocket(bound: QueueBound) -> Self {
        let outbox = Outbox::new(bound);
        outbox.state.lock().websocket = true;
        outbox
    }

    /// Whether the shard closes this outbox at shutdown.
    pub fn is_websocket(&self) -> bool {
        self.state.lock().websocket
    }

    fn bound(&self) -> QueueBound {
        self.bound.into()
    }

    /// An outbox whose writes are also counted as `transport`'s events and bytes.
    pub fn for_transport(bound: QueueBound, transport: Transport) -> Self {
        Outbox {
            transport: Some(Box::new(TransportCounters::new(transport))),
            ..Outbox::new(bound)
        }
    }

    /// Counts `frames` events in `bytes` written, for a plain-HTTP transport's metrics.
    pub fn count_transport(&self, frames: usize, bytes: usize) {
        if let Some(counters) = &self.transport {
            counters.wrote(frames, bytes);
        }
    }

    /// Queues a data frame of `class`: replaces a queued one it supersedes (conflation), skips
    /// a diff while a resync is under way, and on overflow resyncs or evicts the connection
    /// (see the module docs).
    pub fn push_data(&self, frame: &Bytes, born_us: u64, class: Class) -> Push {
        let mut state = self.state.lock();
        if state.closing.is_some() {
            return Push::Closed;
        }
        match class {
            Class::Diff if state.resyncing => return Push::Skipped,
            Class::Conflate(key) if state.may_conflate => {
                if let Some(at) = state.conflatable(key) {
                    let old = state.frames[at].frame.len();
                    if state.bytes - old + frame.len() <= self.bound().max_bytes {
                        state.bytes = state.bytes - old + frame.len();
                        state.frames[at] = Queued {
                            frame: frame.clone(),
                            born_us,
                            class,
                        };
                        return Push::Conflated;
                    }
                }
            }
            _ => {}
        }
        if !state.fits(self.bound(), frame.len()) {
            return self.overflow(state, frame, born_us, class);
        }
        state.may_conflate |= matches!(class, Class::Conflate(_));
        state.push(Queued {
            frame: frame.clone(),
            born_us,
            class,
        });
        let flush = !state.dirty;
        state.dirty = true;
        Push::Queued { flush }
    }

    /// A data frame does not fit: resync if the connection may and that makes room, else evict.
    fn overflow(
        &self,
        mut state: MutexGuard<'_, State>,
        frame: &Bytes,
        born_us: u64,
        class: Class,
    ) -> Push {
        let now = Instant::now();
        let recently = state
            .rare
            .as_ref()
            .and_then(|rare| rare.last_resync)
            .is_some_and(|at| now.duration_since(at) < RESYNC_GRACE);
        if state.resyncable && !state.resyncing && !recently {
            state.drop_diffs();
            // A diff is skipped like the ones just dropped; anything else must fit now.
            if class == Class::Diff || state.fits(self.bound(), frame.len()) {
                state.resyncing = true;
                state.rare().last_resync = Some(now);
                let mut flush = false;
                if class != Class::Diff {
                    state.may_conflate |= matches!(class, Class::Conflate(_));
                    state.push(Queued {
                        frame: frame.clone(),
                        born_us,
                        class,
                    });
                    flush = !state.dirty;
                    state.dirty = true;
                }
                return Push::Resync { flush };
            }
        }
        self.evict(state);
        Push::Overflowed
    }

    /// Closes the connection as a slow consumer and frees its backlog.
    fn evict(&self, mut state: MutexGuard<'_, State>) {
        state.closing = Some(Box::new(Closing::SlowConsumer {
            queued_bytes: state.bytes,
            queued_frames: state.count,
            bound: self.bound(),
        }));
        // Free the backlog now: a slow consumer must not hold memory while it is closed. A
        // frame already partly on the wire stays, or the close frame would land inside it.
        let started = if state.offset > 0 {
            state.frames.pop_front()
        } else {
            None
        };
        let dropped = std::mem::take(&mut state.frames);
        state.frames.extend(started);
        state.bytes -= dropped.iter().map(|q| q.frame.len()).sum::<usize>();
        state.count -= dropped.len();
        state.may_conflate = false;
        state.backlog = 0;
        let waker = state.waker.take();
        drop(state);
        drop(dropped);
        wake(waker);
    }

    /// Whether an overflow may resync instead of evicting (`snapshot=true`); the hub keeps it
    /// in step with the connection's property.
    pub fn set_resyncable(&self, resyncable: bool) {
        self.state.lock().resyncable = resyncable;
    }

    /// The engine could not be asked for snapshots (its request channel is full): evict after
    /// all, since the diffs are gone.
    pub fn resync_failed(&self) {
        let state = self.state.lock();
        if state.closing.is_none() {
            self.evict(state);
        }
    }

    /// The engine's snapshots for a resync, one per diff stream, rendered after every diff
    /// the outbox skipped: queues them and lets diffs through again. They may use the
    /// [`CONTROL_SLACK`] like replies, since the queue just shed its diffs for them; if even
    /// that is not enough the connection is evicted, and this returns true.
    pub fn resynced(&self, snapshots: Vec<Bytes>) -> bool {
        let mut state = self.state.lock();
        if state.closing.is_some() {
            return false;
        }
        state.resyncing = false;
        let bytes: usize = snapshots.iter().map(Bytes::len).sum();
        if state.bytes + bytes > self.bound().max_bytes + CONTROL_SLACK {
            self.evict(state);
            return true;
        }
        for frame in snapshots {
            // Diffs in all but name: the next resync replaces them too.
            state.push(Queued {
                frame,
                born_us: 0,
                class: Class::Diff,
            });
        }
        Self::wake_if_waiting(state);
        false
    }

    /// Queues a `resume=` catch-up. It may be far larger than the bound (minutes of trades), so
    /// it raises the bound by its own size until the queue next drains: live frames behind it
    /// still overflow at the usual bound above it, and a client that does not read it is
    /// evicted as usual. Its size is bounded by `--history`. Never conflated or dropped by a
    /// resync: the client asked for exactly these events.
    pub fn push_catch_up(&self, frames: Vec<Bytes>) {
        let mut state = self.state.lock();
        if state.closing.is_some() {
            return;
        }
        let bytes: usize = frames.iter().map(Bytes::len).sum();
        let allowance = &mut state.rare().allowance;
        allowance.0 += bytes;
        allowance.1 += frames.len();
        for frame in frames {
            state.push(Queued::control(frame));
        }
        Self::wake_if_waiting(state);
    }

    /// Lets the shard write to this plain-TCP socket directly (see the module docs).
    pub fn set_direct(&self, socket: Arc<TcpStream>) {
        self.state.lock().direct = Some(socket);
    }

    /// Drops the shard's reference to the socket, so it closes with the session.
    pub fn release_direct(&self) {
        let socket = self.state.lock().direct.take();
        drop(socket);
    }

    /// Writes what was queued since the last flush, once the publisher's pass is over: directly
    /// to the socket while the session is idle; otherwise (backlog, TLS, closing) by waking
    /// the session if it waits. Records what reached the socket in `metrics`.
    pub fn flush(&self, metrics: &SessionMetrics) {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        state.dirty = false;
        if state.frames.is_empty() {
            return;
        }
        let socket = match &state.direct {
            Some(socket) if state.wants_data && state.closing.is_none() => socket,
            _ => {
                state.backlog = state.frames.len();
                Self::wake_if_waiting(guard);
                return;
            }
        };
        metrics.queue_depth_bytes.record(state.bytes as f64);
        // `send` straight on the descriptor, not tokio's `try_write`: that one first reads the
        // socket's readiness from tokio's per-socket record, a cache miss per socket per pass
        // (a few percent of the whole server's CPU), to learn what `send` says anyway. The
        // record may then still claim writability after a `WouldBlock` here; the session's
        // first write finds out and clears it, as tokio's own writes do.
        let socket = socket2::SockRef::from(&**socket);
        loop {
            let written = {
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                let count = fill_slices(&mut slices, &state.frames, state.offset);
                if count == 1 {
                    socket.send(&slices[0])
                } else {
                    socket.send_vectored(&slices[..count])
                }
            };
            let n = match written {
                Ok(n) if n > 0 => n,
                // WouldBlock, or an error the session meets on its own next write.
                _ => break,
            };
            let (frames, bytes) = wrote(&mut state.frames, &mut state.offset, n, metrics);
            self.count_transport(frames, n);
            state.bytes -= bytes;
            state.count -= frames;
            if state.frames.is_empty() {
                // Idle again: hold no buffer until the next frame (one small allocation per
                // pass, against one `send`).
                state.frames = VecDeque::new();
                state.may_conflate = false;
                state.backlog = 0;
                state.drained();
                return;
            }
        }
        // A backlog: the session takes over until the socket drains.
        state.backlog = state.frames.len();
        metrics.write_handoffs.increment(1);
        state.wants_data = false;
        let waker = state.waker.take();
        drop(guard);
        wake(waker);
    }

    /// Queues a reply or control frame. These are few (each answers one rate-limited client
    /// message, or is a ping) and must not be refused because market data filled the queue, so
    /// they may exceed the bound by [`CONTROL_SLACK`]; a client that lets even that pile up is
    /// a slow consumer like any other.
    pub fn push_control(&self, frame: Bytes) {
        let mut state = self.state.lock();
        if state.closing.is_some() {
            return;
        }
        if state.bytes + frame.len() > self.bound().max_bytes + CONTROL_SLACK {
            // Never a resync: replies are not diffs, and nothing here could ask for snapshots.
            self.evict(state);
            return;
        }
        state.push(Queued::control(frame));
        Self::wake_if_waiting(state);
    }

    fn wake_if_waiting(mut state: parking_lot::MutexGuard<'_, State>) {
        let waker = if state.wants_data {
            state.waker.take()
        } else {
            None
        };
        drop(state);
        wake(waker);
    }

    /// Asks the writer to close the connection with `code` once what is queued is written
    /// (first caller wins). `last` is queued before the close, e.g. the `serverShutdown` event.
    pub fn close(&self, code: u16, reason: impl Into<String>, last: Option<Bytes>) {
        let mut state = self.state.lock();
        if state.closing.is_some() {
            return;
        }
        if let Some(frame) = last {
            state.push(Queued::control(frame));
        }
        state.closing = Some(Box::new(Closing::Close {
            code,
            reason: reason.into(),
        }));
        let waker = state.waker.take();
        drop(state);
        wake(waker);
    }

    /// Closes for the server's shutdown: `event` (the connection's `serverShutdown` frame)
    /// last, then 1001.
    pub fn shut_down(&self, event: Bytes) {
        self.close(
            crate::protocol::frame::SHUTDOWN_CODE,
            crate::protocol::frame::SHUTDOWN_REASON,
            Some(event),
        );
    }

    pub fn is_closing(&self) -> bool {
        self.state.lock().closing.is_some()
    }

    /// Why the outbox is closing, if it is.
    pub fn closing(&self) -> Option<Closing> {
        self.state.lock().closing.as_deref().cloned()
    }

    /// The session's one way in. With `want_data`, moves the queued frames, up to
    /// [`BATCH_BYTES`], into `batch` (which must be empty) in one lock hold, with `offset`, the bytes of its first frame already
    /// written directly; once the outbox is closing and everything queued has been handed
    /// out, returns why, so the session sends its close frame last. Without `want_data` (the
    /// session is busy with a batch) it only reports a closing, so an eviction or shutdown
    /// starts the close deadline even while a write is blocked. Otherwise it registers the
    /// waker: a flush it cannot finish and control frames wake it when it wants data, closes
    /// always.
    pub fn poll_next(
        &self,
        cx: &mut Context<'_>,
        batch: &mut VecDeque<Queued>,
        offset: &mut usize,
        want_data: bool,
    ) -> Poll<Option<Closing>> {
        let mut state = self.state.lock();
        if want_data && !state.frames.is_empty() {
            debug_assert!(batch.is_empty());
            // At most BATCH_BYTES (one frame at least): what the session holds is committed
            // to the socket, so the rest of a backlog stays here, where a resync can still
            // drop its diffs and conflation can still replace its snapshot-type events.
            let mut taken = (0, 0);
            for queued in &state.frames {
                if taken.0 > 0 && taken.1 + queued.frame.len() > BATCH_BYTES {
                    break;
                }
                taken = (taken.0 + 1, taken.1 + queued.frame.len());
            }
            if taken.0 == state.frames.len() {
                std::mem::swap(&mut state.frames, batch);
                state.may_conflate = false;
            } else {
                batch.extend(state.frames.drain(..taken.0));
            }
            state.backlog = state.backlog.saturating_sub(taken.0);
            *offset = std::mem::take(&mut state.offset);
            state.wants_data = false;
            return Poll::Ready(None);
        }
        if let Some(closing) = &state.closing {
            return Poll::Ready(Some(Closing::clone(closing)));
        }
        if !state
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.waker = Some(cx.waker().clone());
        }
        state.wants_data = want_data;
        Poll::Pending
    }

    /// Tells the outbox that `frames` frames of `bytes` bytes reached the socket.
    pub fn written(&self, frames: usize, bytes: usize) {
        let mut state = self.state.lock();
        state.bytes = state.bytes.saturating_sub(bytes);
        state.count = state.count.saturating_sub(frames);
        if state.count == 0 {
            state.drained();
        }
    }

    /// Bytes queued or in flight.
    #[cfg(test)]
    fn queued_bytes(&self) -> usize {
        self.state.lock().bytes
    }
}

/// Points `slices` at the queued frames, the first from `offset`; returns how many.
pub(crate) fn fill_slices<'a>(
    slices: &mut [IoSlice<'a>; MAX_IOV],
    frames: &'a VecDeque<Queued>,
    offset: usize,
) -> usize {
    let mut count = 0;
    for (slot, queued) in slices.iter_mut().zip(frames.iter()) {
        let frame = &queued.frame[..];
        *slot = IoSlice::new(if count == 0 { &frame[offset..] } else { frame });
        count += 1;
    }
    count
}

/// Drops fully written frames from `pending`, calling `done` for each; returns how many frames
/// and their total bytes.
pub(crate) fn advance(
    pending: &mut VecDeque<Queued>,
    offset: &mut usize,
    mut written: usize,
    mut done: impl FnMut(&Queued),
) -> (usize, usize) {
    let (mut frames, mut bytes) = (0, 0);
    while let Some(front) = pending.front() {
        let remaining = front.frame.len() - *offset;
        if written < remaining {
            *offset += written;
            break;
        }
        written -= remaining;
        frames += 1;
        bytes += front.frame.len();
        done(front);
        *offset = 0;
        pending.pop_front();
    }
    (frames, bytes)
}

/// One socket write of `written` bytes from `pending` (the first frame from `offset`): drops
/// the frames it completed and records the write and each frame's publish-to-socket time.
/// Returns the frames completed and their bytes. Shared by the shard's direct writes and the
/// session's backlog writes, so both count alike.
pub(crate) fn wrote(
    pending: &mut VecDeque<Queued>,
    offset: &mut usize,
    written: usize,
    metrics: &SessionMetrics,
) -> (usize, usize) {
    let now_us = crate::clock::monotonic_us();
    let (frames, bytes) = advance(pending, offset, written, |done| {
        if done.born_us != 0 {
            metrics.publish_to_socket_us(now_us.saturating_sub(done.born_us));
        }
    });
    metrics.wrote(frames, written);
    (frames, bytes)
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Bytes {
        Bytes::from(vec![b'x'; len])
    }

    /// `poll_next` wanting data, outside a task.
    fn take(outbox: &Outbox, batch: &mut VecDeque<Queued>) -> Option<Closing> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut offset = 0;
        match outbox.poll_next(&mut cx, batch, &mut offset, true) {
            Poll::Ready(closing) => closing,
            Poll::Pending => None,
        }
    }

    /// Every connection holds an outbox for its whole life, behind an `Arc` (16 bytes of
    /// counts). glibc serves up to 152 bytes from a 160-byte chunk; a word more costs 16 bytes
    /// per connection.
    #[test]
    fn an_outbox_stays_small() {
        let size = std::mem::size_of::<Outbox>();
        assert!(size <= 136, "Outbox is {size} bytes");
    }

    #[test]
    fn overflow_evicts_and_frees_the_backlog() {
        let outbox = Outbox::new(QueueBound {
            max_bytes: 100,
            max_frames: 10,
        });
        assert!(matches!(
            outbox.push_data(&frame(60), 1, Class::Other),
            Push::Queued { .. }
        ));
        assert_eq!(
            outbox.push_data(&frame(60), 1, Class::Other),
            Push::Overflowed
        );
        assert_eq!(outbox.push_data(&frame(1), 1, Class::Other), Push::Closed);
        let mut batch = VecDeque::new();
        match take(&outbox, &mut batch) {
            Some(Closing::SlowConsumer {
                queued_bytes: 60,
                queued_frames: 1,
                ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(batch.is_empty());
    }

    #[test]
    fn bytes_in_flight_count_until_written() {
        let outbox = Outbox::new(QueueBound {
            max_bytes: 100,
            max_frames: 10,
        });
        assert!(matches!(
            outbox.push_data(&frame(60), 1, Class::Other),
            Push::Queued { .. }
        ));
        let mut batch = VecDeque::new();
        assert_eq!(take(&outbox, &mut batch), None);
        assert_eq!(batch.len(), 1);
        assert_eq!(
            outbox.push_data(&frame(60), 1, Class::Other),
            Push::Overflowed,
            "the taken frame still counts"
        );
        let outbox = Outbox::new(QueueBound {
            max_bytes: 100,
            max_frames: 2,
        });
        outbox.push_data(&frame(10), 1, Class::Other);
        batch.clear();
        take(&outbox, &mut batch);
        outbox.written(1, 10);
        assert_eq!(outbox.queued_bytes(), 0);
        assert!(matches!(
            outbox.push_data(&frame(10), 1, Class::Other),
            Push::Queued { .. }
        ));
        assert!(matches!(
            outbox.push_data(&frame(10), 1, Class::Other),
            Push::Queued { .. }
        ));
        assert_eq!(
            outbox.push_data(&frame(10), 1, Class::Other),
            Push::Overflowed,
            "frame bound"
        );
    }

    /// Ends a shard pass: no socket here, so whatever is queued becomes the backlog.
    fn end_pass(outbox: &Outbox) {
        let metrics =
            SessionMetrics::new(Arc::new(crate::metrics::live_stats::LiveStats::default()));
        outbox.flush(&metrics);
    }

    fn key(list: u8) -> ConflateKey {
        ConflateKey {
            topic: Topic::ServerStats,
            list,
        }
    }

    fn tagged(len: usize, tag: u8) -> Bytes {
        Bytes::from(vec![tag; len])
    }

    /// What was queued, as (first byte, length, class).
    fn contents(batch: &VecDeque<Queued>) -> Vec<(u8, usize, Class)> {
        batch
            .iter()
            .map(|q| (q.frame[0], q.frame.len(), q.class))
            .collect()
    }

    #[test]
    fn a_newer_snapshot_type_event_replaces_the_queued_one_in_place() {
        let outbox = Outbox::new(QueueBound {
            max_bytes: 1000,
            max_frames: 10,
        });
        let (a, b) = (Class::Conflate(key(0)), Class::Conflate(key(1)));
        assert_eq!(
            outbox.push_data(&tagged(10, b'a'), 1, a),
            Push::Queued { flush: true }
        );
        outbox.push_data(&tagged(10, b't'), 1, Class::Other);
        outbox.push_data(&tagged(10, b'b'), 1, b);
        end_pass(&outbox);
        assert_eq!(outbox.push_data(&tagged(25, b'A'), 2, a), Push::Conflated);
        assert_eq!(
            outbox.queued_bytes(),
            45,
            "the replaced frame's bytes are gone"
        );
        let mut batch = VecDeque::new();
        take(&outbox, &mut batch);
        assert_eq!(
            contents(&batch),
            [(b'A', 25, a), (b't', 10, Class::Other), (b'b', 10, b)],
            "same place, newest content; another list of one key is another stream"
        );
        assert_eq!(batch[0].born_us, 2);
        // What the session took is on its way: a new event queues behind it.
        assert!(matches!(
            outbox.push_data(&tagged(10, b'a'), 3, a),
            Push::Queued { .. }
        ));
    }

    #[test]
    fn conflation_spares_a_partly_written_frame_and_respects_the_bound() {
        let outbox = Outbox::new(QueueBound {
            max_bytes: 40,
            max_frames: 10,
        });
        let a = Class::Conflate(key(0));
        outbox.push_data(&tagged(10, b'a'), 1, a);
        outbox.state.lock().offset = 4;
        end_pass(&outbox);
        assert!(matches!(
            outbox.push_data(&tagged(10, b'b'), 1, a),
            Push::Queued { .. }
        ));
        end_pass(&outbox);
        assert_eq!(outbox.push_data(&tagged(10, b'c'), 1, a), Push::Conflated);
        assert_eq!(
            outbox.push_data(&tagged(35, b'd'), 1, a),
            Push::Overflowed,
            "a replacement that would not fit overflows"
        );
    }

    #[test]
    fn events_of_one_pass_are_all_kept() {
        let outbox = Outbox::new(QueueBound {
            max_bytes: 1000,
            max_frames: 10,
        });
        let a = Class::Conflate(key(0));
        for tag in [b'a', b'b'] {
            assert!(matches!(
                outbox.push_data(&tagged(10, tag), 1, a),
                Push::Queued { .. }
            ));
        }
        end_pass(&outbox);
        assert_eq!(outbox.push_data(&tagged(10, b'c'), 1, a), Push::Conflated);
        assert!(matches!(
            outbox.push_data(&tagged(10, b'd'), 1, a),
            Push::Conflated
        ));
        let mut batch = VecDeque::new();
        take(&outbox, &mut batch);
        assert_eq!(
            contents(&batch),
            [(b'a', 10, a), (b'd', 10, a)],
            "the newest event replaced the backlog's newest"
        );
    }

    #[test]
    fn a_resync_drops_queued_diffs_and_skips_them_until_the_snapshots() {
        let outbox = Outbox::new(QueueBound {
            max_bytes: 100,
            max_frames: 10,
        });
        outbox.set_resyncable(true);
        outbox.push_data(&tagged(30, b'd'), 1, Class::Diff);
        outbox.state.lock().offset = 5;
        outbox.push_data(&tagged(20, b't'), 1, Class::Other);
        outbox.push_data(&tagged(30, b'd'), 1, Class::Diff);
        // Overflow: the diffs go, but not the one partly on the wire.
        assert_eq!(
            outbox.push_data(&tagged(30, b'd'), 1, Class::Diff),
            Push::Resync { flush: false }
        );
        assert_eq!(outbox.queued_bytes(), 50);
        assert_eq!(
            outbox.push_data(&tagged(10, b'd'), 1, Class::Diff),
            Push::Skipped
        );
        assert!(matches!(
            outbox.push_data(&tagged(10, b'k'), 1, Class::Other),
            Push::Queued { .. }
        ));
        assert!(!outbox.resynced(vec![tagged(15, b's')]));
        assert!(matches!(
            outbox.push_data(&tagged(5, b'd'), 1, Class::Diff),
            Push::Queued { .. }
        ));
        let mut batch = VecDeque::new();
        take(&outbox, &mut batch);
        assert_eq!(
            contents(&batch),
            [
                (b'd', 30, Class::Diff),
                (b't', 20, Class::Other),
                (b'k', 10, Class::Other),
                (b's', 15, Class::Diff),
                (b'd', 5, Class::Diff),
            ]
        );
    }

    /// The session holds at most BATCH_BYTES of a backlog: the rest stays queued, so a resync
    /// can drop its diffs and make room for the snapshots (had the session taken the whole
    /// backlog, nothing could be dropped and the snapshot would evict the reader instead).
    #[test]
    fn the_session_takes_a_bounded_batch_so_a_resync_can_make_room() {
        let frame = 1024;
        let outbox = Outbox::new(QueueBound {
            max_bytes: 96 * frame,
            max_frames: 1000,
        });
        outbox.set_resyncable(true);
        for _ in 0..90 {
            outbox.push_data(&tagged(frame, b'd'), 1, Class::Diff);
        }
        let mut batch = VecDeque::new();
        take(&outbox, &mut batch);
        assert_eq!(batch.len() * frame, BATCH_BYTES, "a bounded batch");
        // The socket stays blocked: the queue overflows and resyncs.
        let mut pushed = 0;
        while !matches!(
            outbox.push_data(&tagged(frame, b'd'), 1, Class::Diff),
            Push::Resync { .. }
        ) {
            pushed += 1;
            assert!(pushed < 100, "never overflowed");
        }
        assert_eq!(
            outbox.queued_bytes(),
            BATCH_BYTES,
            "only the batch held is left"
        );
        assert!(
            !outbox.resynced(vec![tagged(100 * frame, b's')]),
            "the snapshot fits beside the batch: resynced, not evicted"
        );
    }

    #[test]
    fn overflowing_again_within_the_grace_evicts_and_later_resyncs_again() {
        let outbox = Outbox::new(QueueBound {
            max_bytes: 100,
            max_frames: 10,
        });
        outbox.set_resyncable(true);
        // Diffs until one does not simply queue.
        let fill = |outbox: &Outbox| loop {
            match outbox.push_data(&tagged(30, b'd'), 1, Class::Diff) {
                Push::Queued { .. } => continue,
                other => break other,
            }
        };
        assert_eq!(fill(&outbox), Push::Resync { flush: false });
        assert!(!outbox.resynced(vec![tagged(30, b's')]));
        // Long enough ago: another resync, which drops the old snapshot too.
        let backdate = |outbox: &Outbox| {
            let mut state = outbox.state.lock();
            let rare = state.rare();
            rare.last_resync = rare.last_resync.and_then(|at| at.checked_sub(RESYNC_GRACE));
        };
        backdate(&outbox);
        assert_eq!(fill(&outbox), Push::Resync { flush: false });
        assert_eq!(outbox.queued_bytes(), 0);
        assert!(!outbox.resynced(vec![tagged(30, b's')]));
        assert_eq!(fill(&outbox), Push::Overflowed, "within a second");
        assert!(matches!(
            outbox.closing(),
            Some(Closing::SlowConsumer { .. })
        ));
    }

    #[test]
    fn a_resync_that_frees_too_little_evicts() {
        let bound = QueueBound {
            max_bytes: 100,
            max_frames: 10,
        };
        // The queue is full of trades: dropping its one diff does not make room.
        let outbox = Outbox::new(bound);
        outbox.set_resyncable(true);
        outbox.push_data(&tagged(90, b't'), 1, Class::Other);
        outbox.push_data(&tagged(5, b'd'), 1, Class::Diff);
        assert_eq!(
            outbox.push_data(&tagged(20, b't'), 1, Class::Other),
            Push::Overflowed
        );

        // A trade that does not fit while the snapshots are awaited.
        let outbox = Outbox::new(bound);
        outbox.set_resyncable(true);
        outbox.push_data(&tagged(60, b't'), 1, Class::Other);
        outbox.push_data(&tagged(30, b'd'), 1, Class::Diff);
        assert_eq!(
            outbox.push_data(&tagged(30, b't'), 1, Class::Other),
            Push::Resync { flush: false }
        );
        assert_eq!(
            outbox.push_data(&tagged(20, b't'), 1, Class::Other),
            Push::Overflowed
        );

        // Snapshots too big even for the slack.
        let outbox = Outbox::new(bound);
        outbox.set_resyncable(true);
        outbox.push_data(&tagged(90, b'd'), 1, Class::Diff);
        outbox.push_data(&tagged(20, b'd'), 1, Class::Diff);
        assert!(outbox.resynced(vec![tagged(CONTROL_SLACK + 101, b's')]));
        assert!(outbox.is_closing());

        // The engine could not be asked.
        let outbox = Outbox::new(bound);
        outbox.set_resyncable(true);
        outbox.push_data(&tagged(90, b'd'), 1, Class::Diff);
        assert!(matches!(
            outbox.push_data(&tagged(20, b'd'), 1, Class::Diff),
            Push::Resync { .. }
        ));
        outbox.resync_failed();
        assert_eq!(
            outbox.push_data(&tagged(1, b'd'), 1, Class::Diff),
            Push::Closed
        );
    }

    #[test]
    fn advance_handles_partial_frames() {
        let queued = |b: &'static [u8]| Queued {
            frame: Bytes::from_static(b),
            born_us: 7,
            class: Class::Other,
        };
        let mut pending: VecDeque<Queued> = [queued(b"abcd"), queued(b"ef")].into();
        let mut offset = 0;
        let mut done = 0;
        assert_eq!(advance(&mut pending, &mut offset, 3, |_| done += 1), (0, 0));
        assert_eq!(offset, 3);
        assert_eq!(advance(&mut pending, &mut offset, 2, |_| done += 1), (1, 4));
        assert_eq!((pending.len(), offset), (1, 1));
        assert_eq!(advance(&mut pending, &mut offset, 1, |_| done += 1), (1, 2));
        assert!(pending.is_empty());
        assert_eq!(done, 2);
    }
}
