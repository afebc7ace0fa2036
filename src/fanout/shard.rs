//! Shards: the threads that own the connections and write to their sockets.
//!
//! Each shard is one thread running a tokio `current_thread` runtime, and accepts connections
//! itself (see [`crate::front::server`]). A connection stays on the shard that accepted it: its
//! HTTP requests, WebSocket session, timers and every write to its socket run on that thread,
//! so nothing about a connection ever crosses threads.
//!
//! The engine (one thread) reaches a shard only through its bounded channel ([`ShardLink`]):
//! subscription changes, replies, and each published event as finished frames, once per shard
//! that has a subscriber for it. A shard's drain task applies the messages in order (so a
//! subscription is live exactly from the point the engine sequenced it) and, per event, queues
//! the shared frame on each subscriber's [`Outbox`]; at the end of the pass it flushes every
//! outbox it touched: one direct `send` per socket per pass, no task woken (uWebSockets'
//! publish-then-drain, `TopicTree.h`). Only a socket that cannot take everything
//! hands its backlog to its session's task.
//!
//! The engine wakes a shard at most once per engine batch, and only if the shard is parked:
//! a busy shard sees new messages on its next pass without any wakeup.
//!
//! The shard knows each event's stream, so it tells the outbox what kind of frame it queues
//! ([`Class`]): diffs, which a `snapshot=true` connection that overflows drops and gets back
//! as fresh snapshots, and snapshot-type events, which a newer one of the same stream replaces
//! while queued (SPEC.md, "Resync instead of eviction"). On such an overflow the shard asks
//! the engine for the snapshots through a [`ResyncLink`], a bounded channel the other way; the
//! engine answers through this shard's channel ([`ShardMsg::Resynced`]), so the answer is
//! ordered after every diff published before the snapshots were taken and before every diff
//! published after. When the request channel is full the connection is evicted instead: no
//! queue anywhere grows without bound.
//!
//! Shutdown reaches WebSocket sessions the same way as data: the drain task watches the
//! server's shutdown signal and closes every WebSocket outbox it holds with `serverShutdown`
//! and 1001, behind what is queued, so a session's own future needs no watch of its own
//! (one fewer waiter, and about 140 bytes less, per connection).

use super::outbox::{Class, ConflateKey, Outbox, Push};
use crate::engine::EngineWaker;
use crate::metrics::ShardMetrics;
use crate::protocol::frame;
use crate::protocol::json::TimeUnit;
use crate::protocol::stream::{StreamKind, Topic};
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::{oneshot, watch, Notify};

/// A connection's identity for the server's lifetime.
pub type ConnId = u64;

/// How a connection receives events: the shape of what its socket is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// WebSocket text frames holding the bare payload (`/ws`).
    Raw,
    /// WebSocket text frames holding `{"stream":"<name>","data":<payload>}` (`/stream`, and
    /// polls, which answer with these objects).
    Combined,
    /// Server-Sent Events: `event: <name>`, `id: <name>:<id>` for numbered streams,
    /// `data: <payload>`, a blank line; raw bytes on an HTTP response (`/sse`).
    Sse,
}

/// The payload variants a topic may need: each [`Shape`], in ms or µs.
pub const VARIANTS: usize = 6;

/// Which of the [`VARIANTS`] a connection receives.
pub fn variant(shape: Shape, microseconds: bool) -> usize {
    shape as usize * 2 + usize::from(microseconds)
}

/// The shape of variant (or list) `slot`.
pub fn shape_of(slot: usize) -> Shape {
    let variant = if spells_synonym(slot) { slot - 4 } else { slot };
    match variant / 2 {
        0 => Shape::Raw,
        1 => Shape::Combined,
        _ => Shape::Sse,
    }
}

/// Whether variant (or list) `slot` carries times in microseconds.
pub fn is_microseconds(slot: usize) -> bool {
    slot % 2 == 1
}

/// The time unit of variant (or list) `slot`.
pub fn unit_of(slot: usize) -> TimeUnit {
    if is_microseconds(slot) {
        TimeUnit::Microsecond
    } else {
        TimeUnit::Millisecond
    }
}

/// Subscriber lists per fan-out key ([`Topic::fanout_key`]): one per variant, then the four
/// named variants (combined and SSE, which carry the stream's name) again for subscribers who
/// used the key's synonym (`btcusdt@depth@1000ms` for `btcusdt@depth`), whose name must echo
/// their spelling. Raw payloads carry no name, so every raw subscriber shares the variant's
/// list. List `l >= VARIANTS` is variant `l - 4` spelling the synonym.
pub const LISTS: usize = VARIANTS + 4;

/// The list that a connection receiving `slot`'s variant joins when it subscribes to `topic`,
/// a name as the client wrote it.
pub fn list(slot: usize, topic: Topic) -> usize {
    if shape_of(slot) != Shape::Raw && topic.is_synonym() {
        slot + 4
    } else {
        slot
    }
}

/// Whether list `list` spells its key's synonym.
pub fn spells_synonym(list: usize) -> bool {
    list >= VARIANTS
}

#[cfg(test)]
mod list_tests {
    use super::*;

    #[test]
    fn every_list_knows_its_shape_unit_and_spelling() {
        for shape in [Shape::Raw, Shape::Combined, Shape::Sse] {
            for micro in [false, true] {
                let slot = variant(shape, micro);
                assert_eq!((shape_of(slot), is_microseconds(slot)), (shape, micro));
                assert!(!spells_synonym(slot));
                if shape != Shape::Raw {
                    let synonym = slot + 4;
                    assert!(synonym < LISTS && spells_synonym(synonym));
                    assert_eq!(
                        (shape_of(synonym), is_microseconds(synonym)),
                        (shape, micro)
                    );
                }
            }
        }
    }
}

/// Messages a shard's channel holds; when one is full the engine waits for that shard (no
/// message is ever dropped, so healthy subscribers never see a gap). At 29 symbols updating up
/// to 100 times a second this is over a second of backlog.
pub const CHANNEL_CAPACITY: usize = 4096;

/// Messages applied per pass at most, so sessions (reads, timers) on the shard get their turn.
const MESSAGES_PER_PASS: usize = 1024;

/// Resync requests that may wait for the engine, all shards together. Each costs the engine a
/// snapshot per diff stream of the connection, so a burst beyond this evicts instead.
pub const RESYNC_CAPACITY: usize = 256;

/// What the engine tells a shard.
// Most messages are `Publish`, which holds its frames inline (one per list, 320 bytes): boxing
// them would allocate once more per event and shard, for the sake of the rarer messages.
#[allow(clippy::large_enum_variant)]
pub enum ShardMsg {
    /// A new connection receiving `slot`'s variant, with the streams named in its URL; `ready`
    /// fires once they are live on the shard.
    Attach {
        conn: ConnId,
        outbox: Arc<Outbox>,
        slot: usize,
        topics: Vec<Topic>,
        ready: oneshot::Sender<()>,
    },
    /// Topics the connection did not have (the engine keeps each connection's list, so the
    /// shard is only ever told changes). Topics in these messages are names as the client
    /// wrote them; the shard files each under its fan-out key.
    Subscribe {
        conn: ConnId,
        topics: Vec<Topic>,
    },
    Unsubscribe {
        conn: ConnId,
        topics: Vec<Topic>,
    },
    /// The connection now receives another variant (`SET_PROPERTY combined`).
    Reslot {
        conn: ConnId,
        slot: usize,
        topics: Vec<Topic>,
    },
    /// A control reply, queued behind everything sent to the connection before it.
    Reply {
        conn: ConnId,
        frame: Bytes,
    },
    /// A `resume=` catch-up, queued ahead of the stream's live events (see
    /// [`Outbox::push_catch_up`]).
    CatchUp {
        conn: ConnId,
        frames: Vec<Bytes>,
    },
    /// The connection is gone; `topics` are all it was subscribed to.
    Detach {
        conn: ConnId,
        topics: Vec<Topic>,
    },
    /// The answer to a [`ResyncLink::request`]: a `depthSnapshot` frame per diff stream of
    /// the connection, taken after every diff already sent to this shard; see
    /// [`Outbox::resynced`].
    Resynced {
        conn: ConnId,
        snapshots: Vec<Bytes>,
    },
    /// One event for every subscriber of `topic` (a fan-out key) on this shard.
    Publish {
        topic: Topic,
        frames: Frames,
        /// [`crate::clock::monotonic_us`] at publish, for publish-to-socket latency.
        born_us: u64,
    },
}

/// An event's frames for one shard.
#[allow(clippy::large_enum_variant)] // see ShardMsg: the shared case is the common one
pub enum Frames {
    /// One finished frame per list ([`LISTS`]) this shard needs, shared by all its members.
    Shared([Option<Bytes>; LISTS]),
    /// `--naive-fanout`: a frame rendered for each subscriber, per list in member order.
    PerSubscriber(Box<[Vec<Bytes>; LISTS]>),
}

/// Parking state shared by a shard and the engine.
#[derive(Default)]
struct Wake {
    /// The drain task found nothing to do and waits on `notify`.
    parked: AtomicBool,
    notify: Notify,
}

/// The engine's end of one shard's channel.
pub struct ShardLink {
    /// `None` once dropped, so the shard sees the channel disconnected before its last wake.
    tx: Option<Sender<ShardMsg>>,
    wake: Arc<Wake>,
    /// Something was sent since the last [`ShardLink::end_batch`].
    sent: bool,
}

impl ShardLink {
    /// Queues a message for the shard. Waits if the shard is a whole channel behind, after
    /// making sure it is awake.
    pub fn send(&mut self, message: ShardMsg) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(message) {
            Ok(()) => self.sent = true,
            Err(TrySendError::Full(message)) => {
                self.wake();
                if tx.send(message).is_ok() {
                    self.sent = true;
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// The engine finished a batch: wake the shard if it was sent anything and is parked.
    pub fn end_batch(&mut self) {
        if std::mem::take(&mut self.sent) {
            self.wake();
        }
    }

    fn wake(&self) {
        // Pairs with the fence in `drain`: either the shard sees the message before parking,
        // or this sees it parked.
        fence(Ordering::SeqCst);
        if self.wake.parked.load(Ordering::Relaxed)
            && self.wake.parked.swap(false, Ordering::SeqCst)
        {
            self.wake.notify.notify_one();
        }
    }

    /// A link to no thread, for tests and benchmarks that drive a [`ShardTable`] by hand.
    pub fn detached() -> (ShardLink, Receiver<ShardMsg>) {
        let (tx, rx) = crossbeam_channel::bounded(CHANNEL_CAPACITY);
        let link = ShardLink {
            tx: Some(tx),
            wake: Arc::new(Wake::default()),
            sent: false,
        };
        (link, rx)
    }
}

impl Drop for ShardLink {
    fn drop(&mut self) {
        drop(self.tx.take());
        self.wake.notify.notify_one();
    }
}

/// The shards' way to ask the engine for a connection's resync snapshots (see the module docs).
#[derive(Clone)]
pub struct ResyncLink {
    tx: Sender<ConnId>,
    /// The engine parks when it has nothing to do; a request must not wait for its next timer.
    waker: EngineWaker,
}

impl ResyncLink {
    /// A bounded channel of [`RESYNC_CAPACITY`] requests; the engine reads the receiver and
    /// `waker` wakes it.
    pub fn channel(waker: EngineWaker) -> (ResyncLink, Receiver<ConnId>) {
        let (tx, rx) = crossbeam_channel::bounded(RESYNC_CAPACITY);
        (ResyncLink { tx, waker }, rx)
    }

    /// Asks for `conn`'s snapshots; false if the channel is full or the engine gone.
    pub fn request(&self, conn: ConnId) -> bool {
        let sent = self.tx.try_send(conn).is_ok();
        if sent {
            self.waker.wake();
        }
        sent
    }
}

/// The front's end of a shard: where its connections are spawned.
pub struct Shard {
    pub index: usize,
    runtime: tokio::runtime::Handle,
}

impl Shard {
    /// Runs `task` on this shard's thread.
    pub fn spawn_task(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(task);
    }

    /// Where a connection accepted by this shard lives.
    pub fn place(&self) -> Placement {
        Placement { shard: self.index }
    }
}

/// Which shard a connection lives on: the one whose accept loop took it.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub shard: usize,
}

/// Every shard, each running an accept loop.
pub struct Shards {
    shards: Vec<Shard>,
    /// Each thread ends once the engine drops its [`ShardLink`].
    _threads: Vec<JoinHandle<()>>,
}

impl Shards {
    /// Starts `count` shard threads; returns them and the engine's links to them, in order.
    /// `resync` is how they ask the engine for resync snapshots.
    /// `shutdown` flips to true when the server shuts down.
    pub fn start(
        count: usize,
        metrics: &ShardMetrics,
        resync: ResyncLink,
        shutdown: watch::Receiver<bool>,
    ) -> io::Result<(Shards, Vec<ShardLink>)> {
        let mut shards = Vec::with_capacity(count);
        let mut links = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (link, rx) = ShardLink::detached();
            let table = ShardTable::new(metrics.clone())
                .resync_to(resync.clone())
                .counted_as(index);
            let wake = link.wake.clone();
            let shutdown = shutdown.clone();
            shards.push(Shard {
                index,
                runtime: runtime.handle().clone(),
            });
            links.push(link);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("bookcast-shard-{index}"))
                    .spawn(move || runtime.block_on(drain(rx, wake, table, shutdown)))?,
            );
        }
        Ok((
            Shards {
                shards,
                _threads: threads,
            },
            links,
        ))
    }

    /// The shards, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Shard> {
        self.shards.iter()
    }
}

/// A shard's drain task: applies the engine's messages in passes, flushing after each, and
/// parks when the channel is empty. Ends when the engine drops its link.
async fn drain(
    rx: Receiver<ShardMsg>,
    wake: Arc<Wake>,
    mut table: ShardTable,
    mut shutdown: watch::Receiver<bool>,
) {
    // Until the server shuts down (or can no longer say so).
    let mut watching = true;
    loop {
        if watching && *shutdown.borrow() {
            watching = false;
            table.close_websockets();
        }
        let mut handled = 0;
        let disconnected = loop {
            match rx.try_recv() {
                Ok(message) => {
                    table.apply(message);
                    handled += 1;
                    if handled == MESSAGES_PER_PASS {
                        break false;
                    }
                }
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        table.flush();
        if disconnected {
            return;
        }
        // More waiting: let the shard's other tasks (handshakes, reads, timers, backlogs) run
        // first. The runtime cannot preempt this task, so without the yield a shard kept busy
        // by the engine would never serve them.
        if handled == MESSAGES_PER_PASS || !rx.is_empty() {
            tokio::task::yield_now().await;
            continue;
        }
        wake.parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !rx.is_empty() {
            wake.parked.store(false, Ordering::Relaxed);
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = wake.notify.notified() => {}
            changed = shutdown.changed(), if watching => watching = changed.is_ok(),
        }
        wake.parked.store(false, Ordering::Relaxed);
    }
}

struct Member {
    conn: ConnId,
    outbox: Arc<Outbox>,
}

struct Local {
    outbox: Arc<Outbox>,
    slot: usize,
}

/// A shard's own view of who listens to what: fan-out key -> subscribers per list ([`LISTS`]). Only its drain
/// task touches it, so it takes no lock. Each connection's topic list lives in the engine's
/// hub alone: the shard is told only changes (new topics, removed ones, and the whole list on
/// a reslot or detach), so it keeps no second copy.
pub struct ShardTable {
    topics: HashMap<Topic, [Vec<Member>; LISTS]>,
    connections: HashMap<ConnId, Local>,
    /// Outboxes pushed to in this pass, flushed at its end.
    dirty: Vec<Arc<Outbox>>,
    metrics: ShardMetrics,
    /// Where resync requests go; without one (tables driven by hand) overflows evict.
    resync: Option<ResyncLink>,
    /// `bookcast_shard_connections{shard}`; `None` for tables driven by hand.
    counted: Option<::metrics::Gauge>,
}

impl ShardTable {
    pub fn new(metrics: ShardMetrics) -> Self {
        ShardTable {
            topics: HashMap::new(),
            connections: HashMap::new(),
            dirty: Vec::new(),
            metrics,
            resync: None,
            counted: None,
        }
    }

    /// Reports how many connections this table holds as shard `index`'s
    /// `bookcast_shard_connections`.
    pub fn counted_as(mut self, index: usize) -> Self {
        let gauge = ::metrics::gauge!("bookcast_shard_connections", "shard" => index.to_string());
        gauge.set(0.0);
        self.counted = Some(gauge);
        self
    }

    fn count_connections(&self) {
        if let Some(gauge) = &self.counted {
            gauge.set(self.connections.len() as f64);
        }
    }

    /// Lets overflowing `snapshot=true` connections resync through `link`.
    pub fn resync_to(mut self, link: ResyncLink) -> Self {
        self.resync = Some(link);
        self
    }

    /// Applies one message from the engine.
    pub fn apply(&mut self, message: ShardMsg) {
        match message {
            ShardMsg::Attach {
                conn,
                outbox,
                slot,
                topics,
                ready,
            } => {
                self.connections.insert(conn, Local { outbox, slot });
                self.count_connections();
                self.subscribe(conn, &topics);
                let _ = ready.send(());
            }
            ShardMsg::Subscribe { conn, topics } => self.subscribe(conn, &topics),
            ShardMsg::Unsubscribe { conn, topics } => self.unsubscribe(conn, &topics),
            ShardMsg::Reslot { conn, slot, topics } => {
                self.unsubscribe(conn, &topics);
                if let Some(local) = self.connections.get_mut(&conn) {
                    local.slot = slot;
                }
                self.subscribe(conn, &topics);
            }
            ShardMsg::Reply { conn, frame } => {
                if let Some(local) = self.connections.get(&conn) {
                    local.outbox.push_control(frame);
                }
            }
            ShardMsg::CatchUp { conn, frames } => {
                if let Some(local) = self.connections.get(&conn) {
                    local.outbox.push_catch_up(frames);
                }
            }
            ShardMsg::Resynced { conn, snapshots } => {
                if let Some(local) = self.connections.get(&conn) {
                    if local.outbox.resynced(snapshots) {
                        self.metrics.enqueued(0, 1);
                    }
                }
            }
            ShardMsg::Detach { conn, topics } => {
                self.unsubscribe(conn, &topics);
                self.connections.remove(&conn);
                self.count_connections();
            }
            ShardMsg::Publish {
                topic,
                frames,
                born_us,
            } => self.publish(topic, frames, born_us),
        }
    }

    fn subscribe(&mut self, conn: ConnId, topics: &[Topic]) {
        let Some(local) = self.connections.get(&conn) else {
            return;
        };
        for &topic in topics {
            let lists = self.topics.entry(topic.fanout_key()).or_default();
            lists[list(local.slot, topic)].push(Member {
                conn,
                outbox: local.outbox.clone(),
            });
        }
    }

    fn unsubscribe(&mut self, conn: ConnId, topics: &[Topic]) {
        let Some(local) = self.connections.get(&conn) else {
            return;
        };
        for &topic in topics {
            let key = topic.fanout_key();
            if let Some(lists) = self.topics.get_mut(&key) {
                // A raw connection subscribed to both spellings is in one list twice; either
                // entry will do, they are the same.
                let members = &mut lists[list(local.slot, topic)];
                if let Some(at) = members.iter().position(|m| m.conn == conn) {
                    members.swap_remove(at);
                }
                if lists.iter().all(Vec::is_empty) {
                    self.topics.remove(&key);
                }
            }
        }
    }

    fn publish(&mut self, topic: Topic, frames: Frames, born_us: u64) {
        let Some(lists) = self.topics.get(&topic) else {
            return;
        };
        let classes: [Class; LISTS] = std::array::from_fn(|list| class_of(topic, list));
        let (mut queued, mut evicted, mut conflated, mut resyncs) = (0u64, 0u64, 0u64, 0u64);
        let resync = &self.resync;
        let mut push = |member: &Member, frame: &Bytes, class: Class, dirty: &mut Vec<_>| {
            let flush = match member.outbox.push_data(frame, born_us, class) {
                Push::Queued { flush } => {
                    queued += 1;
                    flush
                }
                Push::Conflated => {
                    conflated += 1;
                    false
                }
                Push::Resync { flush } => {
                    if resync
                        .as_ref()
                        .is_some_and(|link| link.request(member.conn))
                    {
                        resyncs += 1;
                    } else {
                        member.outbox.resync_failed();
                        evicted += 1;
                    }
                    flush
                }
                Push::Overflowed => {
                    evicted += 1;
                    false
                }
                Push::Skipped | Push::Closed => false,
            };
            if flush {
                dirty.push(member.outbox.clone());
            }
        };
        match &frames {
            Frames::Shared(shared) => {
                for ((list, frame), &class) in lists.iter().zip(shared).zip(&classes) {
                    let Some(frame) = frame else { continue };
                    for member in list {
                        push(member, frame, class, &mut self.dirty);
                    }
                }
            }
            Frames::PerSubscriber(each) => {
                for ((list, frames), &class) in lists.iter().zip(each.iter()).zip(&classes) {
                    for (member, frame) in list.iter().zip(frames) {
                        push(member, frame, class, &mut self.dirty);
                    }
                }
            }
        }
        self.metrics.enqueued(queued, evicted);
        self.metrics.backlog(conflated, resyncs);
    }

    /// Ends a pass: writes each outbox pushed to in it (see [`Outbox::flush`]).
    pub fn flush(&mut self) {
        for outbox in self.dirty.drain(..) {
            outbox.flush(&self.metrics.session);
        }
    }

    /// Closes every WebSocket connection of this shard for shutdown: `serverShutdown` in its
    /// format, then 1001, behind what it has queued. Later attaches close themselves (their
    /// session sees the signal when it starts).
    pub fn close_websockets(&mut self) {
        let mut events: [Option<Bytes>; VARIANTS] = Default::default();
        for local in self.connections.values() {
            if !local.outbox.is_websocket() {
                continue;
            }
            let event = events[local.slot].get_or_insert_with(|| {
                frame::server_shutdown(shape_of(local.slot) == Shape::Combined, unit_of(local.slot))
            });
            local.outbox.shut_down(event.clone());
        }
    }

    /// Connections this shard knows.
    pub fn connections(&self) -> usize {
        self.connections.len()
    }
}

/// What a frame of fan-out key `topic`, queued from list `list`, is to a backed-up queue.
/// Ticker arrays (`!miniTicker@arr`, `!ticker_<w>@arr`) carry only the symbols that changed,
/// so a newer one does not supersede an older one; neither do trades or klines (a kline's
/// final update of an interval must not be replaced by the next interval's first).
fn class_of(topic: Topic, list: usize) -> Class {
    let Topic::Symbol { kind, .. } = topic else {
        return Class::Other;
    };
    match kind {
        StreamKind::Diff(_) => Class::Diff,
        StreamKind::Partial { .. }
        | StreamKind::BookTicker
        | StreamKind::MiniTicker
        | StreamKind::Ticker
        | StreamKind::RollingTicker(_)
        | StreamKind::AvgPrice => Class::Conflate(ConflateKey {
            topic,
            list: list as u8,
        }),
        StreamKind::Trade
        | StreamKind::AggTrade
        | StreamKind::Kline(_)
        | StreamKind::KlineUtc8(_) => Class::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::stream::{Speed, TickerWindow};

    #[test]
    fn diffs_resync_snapshot_types_conflate_and_the_rest_stay() {
        let on = |kind| Topic::Symbol { symbol: 0, kind };
        assert_eq!(class_of(on(StreamKind::Diff(Speed::Ms100)), 2), Class::Diff);
        let partial = on(StreamKind::Partial {
            levels: 5,
            speed: Speed::Unspecified,
        });
        assert_eq!(
            class_of(partial, 4),
            Class::Conflate(ConflateKey {
                topic: partial,
                list: 4
            }),
            "each list of a key is its own stream"
        );
        for kind in [
            StreamKind::BookTicker,
            StreamKind::Ticker,
            StreamKind::MiniTicker,
            StreamKind::RollingTicker(TickerWindow::H1),
            StreamKind::AvgPrice,
        ] {
            assert!(matches!(class_of(on(kind), 0), Class::Conflate(_)));
        }
        for topic in [
            on(StreamKind::Trade),
            on(StreamKind::AggTrade),
            Topic::AllMiniTickers,
            Topic::AllRollingTickers(TickerWindow::D1),
            Topic::ServerStats,
        ] {
            assert_eq!(class_of(topic, 0), Class::Other, "{topic:?}");
        }
    }
}
