//! The fan-out hub, the engine's side of fan-out: who listens to what, on which shard, and
//! rendering each event once for all of them.
//!
//! The hub has exactly one owner, the engine thread, which both changes subscriptions (applying
//! commands between engine steps) and publishes, so its tables need no lock. It keeps, per
//! topic, how many subscribers of each payload variant every shard has; the subscriber lists
//! themselves live on the shards ([`super::shard::ShardTable`]), which mirror every change in
//! the order the engine made it, through the same channel as the events.
//!
//! Serialize once: an event is rendered once per time unit its subscribers asked for (once in
//! all for payloads without time fields), wrapped once more for combined subscribers, and each
//! rendering becomes one finished WebSocket frame. The frame goes to each shard with a
//! subscriber for it, once, and from there to every subscriber by refcount. Nothing is
//! rendered for a topic nobody listens to, and nothing is sent to a shard that has no
//! subscriber for it.
//!
//! Two names of one stream (`btcusdt@depth` and `btcusdt@depth@1000ms`) share one fan-out key
//! ([`Topic::fanout_key`]): one route, one rendering per event, one set of subscriber lists.
//! Only the combined wrapper differs, so a key has a second pair of combined lists whose
//! wrapper spells the synonym ([`super::shard::LISTS`]). A connection subscribed under both
//! names is a member twice and gets the event under each name, as two subscriptions should.

use super::outbox::Outbox;
use super::shard::{
    is_microseconds, list, shape_of, spells_synonym, unit_of, variant, ConnId, Frames, Shape,
    ShardLink, ShardMsg, LISTS,
};
use crate::market::feed::Feed;
use crate::metrics::{HubMetrics, ShardMetrics};
use crate::protocol::control::Change;
use crate::protocol::frame;
use crate::protocol::json::TimeUnit;
use crate::protocol::stream::{StreamKind, SymbolId, Topic, TopicList};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::oneshot;

struct Route {
    /// The key's own name, then its synonym's (the key's again if it has none; never used then).
    names: [Naming; 2],
    /// Subscribers per shard, per list.
    counts: Vec<[u32; LISTS]>,
}

/// A stream's name, pre-rendered into what the named shapes put around a payload.
struct Naming {
    /// `{"stream":"<name>","data":`, the combined wrapper's prefix.
    combined: Box<[u8]>,
    /// `event: <name>\n`, and for numbered streams `id: <name>:` (the id and `\n` follow).
    sse_event: Box<[u8]>,
    sse_id: Option<Box<[u8]>>,
}

impl Naming {
    fn new(feed: &Feed, topic: Topic) -> Self {
        let name = topic.name(feed);
        Naming {
            combined: format!("{{\"stream\":\"{name}\",\"data\":")
                .into_bytes()
                .into_boxed_slice(),
            sse_event: format!("event: {name}\n").into_bytes().into_boxed_slice(),
            sse_id: topic
                .is_resumable()
                .then(|| format!("id: {name}:").into_bytes().into_boxed_slice()),
        }
    }
}

impl Route {
    fn total(&self, slot: usize) -> u32 {
        self.counts.iter().map(|c| c[slot]).sum()
    }
}

/// One per connection, in a hash table that grows to the next power of two: its fields are
/// narrow (16 bytes less here is about 27 less per connection at 19,000).
struct Connection {
    /// Only to notice connections that ended without a detach (see [`Hub::sweep`]).
    outbox: Arc<Outbox>,
    /// As the client named them (synonyms included), in subscription order.
    topics: TopicList,
    /// Its shard's index ([`Connection::shard`]).
    shard: u16,
    /// Its list slot ([`Connection::slot`]): one of [`LISTS`].
    slot: u8,
    /// `snapshot=true`: the engine sends each diff stream subscribed a `depthSnapshot` first,
    /// and the outbox resyncs on overflow instead of evicting (mirrored on it, since the shard
    /// decides that without asking the engine).
    snapshot: bool,
}

impl Connection {
    fn shard(&self) -> usize {
        usize::from(self.shard)
    }

    fn slot(&self) -> usize {
        usize::from(self.slot)
    }
}

pub struct Hub {
    feed: Arc<Feed>,
    naive: bool,
    shards: Vec<ShardLink>,
    topics: HashMap<Topic, Route>,
    connections: HashMap<ConnId, Connection>,
    /// Reused payload buffers, one per time unit.
    scratch: [Vec<u8>; 2],
    metrics: HubMetrics,
    /// The shards' counters, for the slow-consumer total.
    shard_metrics: ShardMetrics,
}

impl Hub {
    /// A hub publishing to `shards`. `naive`: render and frame every event once per
    /// subscriber, the way a straightforward server does; a benchmark baseline that shows what
    /// serialize-once buys.
    pub fn new(
        feed: Arc<Feed>,
        naive: bool,
        shards: Vec<ShardLink>,
        shard_metrics: ShardMetrics,
    ) -> Self {
        Hub {
            feed,
            naive,
            shards,
            topics: HashMap::new(),
            connections: HashMap::new(),
            scratch: [Vec::with_capacity(4096), Vec::with_capacity(4096)],
            metrics: HubMetrics::new(),
            shard_metrics,
        }
    }

    /// Subscribers evicted as slow consumers since the server started, every shard.
    pub fn slow_consumers_total(&self) -> u64 {
        self.shard_metrics.slow_consumers_total()
    }

    /// Registers a connection living on `shard` with its payload format and the streams named
    /// in its URL; `ready` fires once those are live on the shard. Returns the topics added.
    #[allow(clippy::too_many_arguments)]
    pub fn attach(
        &mut self,
        conn: ConnId,
        shard: usize,
        outbox: Arc<Outbox>,
        shape: Shape,
        unit: TimeUnit,
        snapshot: bool,
        topics: &[Topic],
        ready: oneshot::Sender<()>,
    ) -> Vec<Topic> {
        let Some(index) = u16::try_from(shard)
            .ok()
            .filter(|_| shard < self.shards.len())
        else {
            return Vec::new();
        };
        outbox.set_resyncable(snapshot);
        let slot = variant(shape, unit == TimeUnit::Microsecond);
        self.connections.insert(
            conn,
            Connection {
                outbox: outbox.clone(),
                topics: TopicList::new(),
                shard: index,
                slot: slot as u8, // < LISTS
                snapshot,
            },
        );
        let topics = self.add_interest(conn, topics);
        self.shards[shard].send(ShardMsg::Attach {
            conn,
            outbox,
            slot,
            topics: topics.clone(),
            ready,
        });
        topics
    }

    /// Adds topics to a connection (already subscribed ones are left as they are); returns
    /// those added.
    pub fn subscribe(&mut self, conn: ConnId, topics: &[Topic]) -> Vec<Topic> {
        let added = self.add_interest(conn, topics);
        if let (false, Some(connection)) = (added.is_empty(), self.connections.get(&conn)) {
            self.shards[connection.shard()].send(ShardMsg::Subscribe {
                conn,
                topics: added.clone(),
            });
        }
        added
    }

    /// Whether the connection asked for in-band snapshots (`snapshot=true`).
    pub fn wants_snapshots(&self, conn: ConnId) -> bool {
        self.connections.get(&conn).is_some_and(|c| c.snapshot)
    }

    /// Queues one event of `topic` to one connection only, behind everything already sent to
    /// it (an in-band `depthSnapshot`), in the connection's own payload shape and time unit.
    pub fn send_to_one(
        &mut self,
        conn: ConnId,
        topic: Topic,
        render: impl FnOnce(&mut Vec<u8>, TimeUnit),
    ) {
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        let frame = frame_for_one(&self.feed, connection.slot(), topic, render);
        self.metrics.serialized();
        self.shards[connection.shard()].send(ShardMsg::Reply { conn, frame });
    }

    /// Queues a `resume=` catch-up to one connection ahead of the stream's live events: each
    /// payload of `payloads` as one frame of `topic`, in the connection's shape. The frames are
    /// admitted above the queue bound (see [`Outbox::push_catch_up`]): they are bounded by
    /// `--history`, and refusing them would evict exactly the clients resume is for.
    pub fn send_catch_up(&mut self, conn: ConnId, topic: Topic, payloads: Vec<Vec<u8>>) {
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        if payloads.is_empty() {
            return;
        }
        let (shape, naming) = (shape_of(connection.slot()), Naming::new(&self.feed, topic));
        let frames = payloads
            .iter()
            .map(|payload| build_frame(shape, &naming, topic, payload))
            .collect();
        self.metrics.serialized_many(payloads.len() as u64);
        self.shards[connection.shard()].send(ShardMsg::CatchUp { conn, frames });
    }

    /// Answers a shard's resync request: renders a `depthSnapshot` of every diff stream the
    /// connection has with `render(symbol, payload, unit)`, as [`Hub::send_to_one`] would,
    /// and sends them to its shard in one message, which lets its diffs through again (see
    /// [`super::outbox`]). A connection that is gone gets nothing.
    pub fn resync(
        &mut self,
        conn: ConnId,
        mut render: impl FnMut(SymbolId, &mut Vec<u8>, TimeUnit),
    ) {
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        let mut snapshots = Vec::new();
        for &topic in &connection.topics {
            if let Topic::Symbol {
                symbol,
                kind: StreamKind::Diff(_),
            } = topic
            {
                snapshots.push(frame_for_one(
                    &self.feed,
                    connection.slot(),
                    topic,
                    |out, unit| render(symbol, out, unit),
                ));
                self.metrics.serialized();
            }
        }
        self.shards[connection.shard()].send(ShardMsg::Resynced { conn, snapshots });
    }

    /// Counts the connection in each topic it did not have yet; returns those topics.
    fn add_interest(&mut self, conn: ConnId, topics: &[Topic]) -> Vec<Topic> {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return Vec::new();
        };
        let mut added = Vec::with_capacity(topics.len());
        for &topic in topics {
            if connection.topics.contains(&topic) || added.contains(&topic) {
                continue;
            }
            added.push(topic);
            add_interest(
                &mut self.topics,
                &self.feed,
                self.shards.len(),
                topic,
                connection,
            );
            self.metrics.subscribed(topic.label());
        }
        connection.topics.extend_from_slice(&added);
        added
    }

    /// Removes topics from a connection (unknown ones are ignored).
    pub fn unsubscribe(&mut self, conn: ConnId, topics: &[Topic]) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        let mut removed = Vec::with_capacity(topics.len());
        for topic in topics {
            if let Some(at) = connection.topics.iter().position(|t| t == topic) {
                connection.topics.swap_remove(at);
                remove_interest(&mut self.topics, *topic, connection);
                self.metrics.unsubscribed(topic.label());
                removed.push(*topic);
            }
        }
        if !removed.is_empty() {
            self.shards[connection.shard()].send(ShardMsg::Unsubscribe {
                conn,
                topics: removed,
            });
        }
    }

    /// Switches a connection between raw and combined payloads (`SET_PROPERTY combined`).
    pub fn set_combined(&mut self, conn: ConnId, combined: bool) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        if shape_of(connection.slot()) == Shape::Sse {
            return; // a WebSocket property; an SSE stream has no control messages anyway
        }
        let shape = if combined {
            Shape::Combined
        } else {
            Shape::Raw
        };
        let slot = variant(shape, is_microseconds(connection.slot()));
        if connection.slot() == slot {
            return;
        }
        for &topic in &connection.topics {
            remove_interest(&mut self.topics, topic, connection);
        }
        connection.slot = slot as u8; // < LISTS
        for &topic in &connection.topics {
            add_interest(
                &mut self.topics,
                &self.feed,
                self.shards.len(),
                topic,
                connection,
            );
        }
        let topics = connection.topics.to_vec();
        self.shards[connection.shard()].send(ShardMsg::Reslot { conn, slot, topics });
    }

    /// Applies a control message's change, then queues its reply behind everything already
    /// sent to the connection, so the reply follows its effect. Returns the topics subscribed.
    pub fn control(&mut self, conn: ConnId, change: Change, reply: Bytes) -> Vec<Topic> {
        let mut added = Vec::new();
        match change {
            Change::None => {}
            Change::Subscribe(topics) => added = self.subscribe(conn, &topics),
            Change::Unsubscribe(topics) => self.unsubscribe(conn, &topics),
            Change::SetCombined(combined) => self.set_combined(conn, combined),
            Change::SetSnapshot(snapshot) => {
                if let Some(connection) = self.connections.get_mut(&conn) {
                    connection.snapshot = snapshot;
                    connection.outbox.set_resyncable(snapshot);
                }
            }
        }
        if let Some(connection) = self.connections.get(&conn) {
            self.shards[connection.shard()].send(ShardMsg::Reply { conn, frame: reply });
        }
        added
    }

    /// Forgets a connection and all its subscriptions.
    pub fn detach(&mut self, conn: ConnId) {
        if let Some(connection) = self.connections.remove(&conn) {
            for topic in &connection.topics {
                remove_interest(&mut self.topics, *topic, &connection);
                self.metrics.unsubscribed(topic.label());
            }
            let shard = connection.shard();
            let topics = connection.topics.into_vec();
            self.shards[shard].send(ShardMsg::Detach { conn, topics });
        }
    }

    /// Detaches every connection whose outbox is closing: a backstop for detach commands that
    /// could not be delivered, so a dead connection's subscriptions never outlive it for long.
    pub fn sweep(&mut self) {
        let closing: Vec<ConnId> = self
            .connections
            .iter()
            .filter(|(_, c)| c.outbox.is_closing())
            .map(|(&id, _)| id)
            .collect();
        for conn in closing {
            self.detach(conn);
        }
    }

    /// Whether anyone listens to `topic` (under any of its names), so the engine can skip work
    /// nobody would see.
    pub fn wants(&self, topic: &Topic) -> bool {
        self.topics.contains_key(&topic.fanout_key())
    }

    /// Renders `topic`'s event with `render(payload, unit)` once per needed time unit and
    /// sends the shared frames to every shard with a subscriber for them, under whichever of
    /// the topic's names each subscriber used. `topic` is a fan-out key: events are published
    /// once per stream, never once per spelling.
    pub fn publish(&mut self, topic: Topic, mut render: impl FnMut(&mut Vec<u8>, TimeUnit)) {
        debug_assert!(!topic.is_synonym(), "publish under the fan-out key");
        let Some(route) = self.topics.get(&topic) else {
            return;
        };
        let born_us = crate::clock::monotonic_us();
        let time_dependent = topic.has_time_fields();
        let unit_of = |slot: usize| {
            if is_microseconds(slot) && time_dependent {
                TimeUnit::Microsecond
            } else {
                TimeUnit::Millisecond
            }
        };
        if self.naive {
            for (link, counts) in self.shards.iter_mut().zip(&route.counts) {
                if counts.iter().all(|&c| c == 0) {
                    continue;
                }
                let mut each: Box<[Vec<Bytes>; LISTS]> = Box::default();
                for (slot, frames) in each.iter_mut().enumerate() {
                    for _ in 0..counts[slot] {
                        let payload = &mut self.scratch[0];
                        payload.clear();
                        render(payload, unit_of(slot));
                        frames.push(route.frame(slot, topic, payload));
                    }
                    self.metrics.serialized_many(u64::from(counts[slot]));
                }
                link.send(ShardMsg::Publish {
                    topic,
                    frames: Frames::PerSubscriber(each),
                    born_us,
                });
            }
            return;
        }
        let mut rendered = [false; 2];
        let mut frames: [Option<Bytes>; LISTS] = Default::default();
        for (slot, frame) in frames.iter_mut().enumerate() {
            if route.total(slot) == 0 {
                continue;
            }
            let unit = unit_of(slot);
            let unit_index = usize::from(unit == TimeUnit::Microsecond);
            if !rendered[unit_index] {
                let payload = &mut self.scratch[unit_index];
                payload.clear();
                render(payload, unit);
                rendered[unit_index] = true;
                self.metrics.serialized();
            }
            *frame = Some(route.frame(slot, topic, &self.scratch[unit_index]));
        }
        for (link, counts) in self.shards.iter_mut().zip(&route.counts) {
            if counts.iter().all(|&c| c == 0) {
                continue;
            }
            let mut mine: [Option<Bytes>; LISTS] = Default::default();
            for (slot, frame) in mine.iter_mut().enumerate() {
                if counts[slot] > 0 {
                    frame.clone_from(&frames[slot]);
                }
            }
            link.send(ShardMsg::Publish {
                topic,
                frames: Frames::Shared(mine),
                born_us,
            });
        }
    }

    /// The engine finished a batch of steps and commands: wake the shards it sent anything to.
    pub fn end_batch(&mut self) {
        for link in &mut self.shards {
            link.end_batch();
        }
    }
}

impl Route {
    /// `key`'s event `payload` as list `list` receives it.
    fn frame(&self, list: usize, key: Topic, payload: &[u8]) -> Bytes {
        let naming = &self.names[usize::from(spells_synonym(list))];
        build_frame(shape_of(list), naming, key, payload)
    }
}

/// The route of fan-out key `key`.
fn new_route(feed: &Feed, shards: usize, key: Topic) -> Route {
    Route {
        names: [key, key.synonym().unwrap_or(key)].map(|topic| Naming::new(feed, topic)),
        counts: vec![[0; LISTS]; shards],
    }
}

/// Counts `connection` in the list of its key that `topic` (a name) puts it in.
fn add_interest(
    topics: &mut HashMap<Topic, Route>,
    feed: &Feed,
    shards: usize,
    topic: Topic,
    connection: &Connection,
) {
    let key = topic.fanout_key();
    let route = topics
        .entry(key)
        .or_insert_with(|| new_route(feed, shards, key));
    route.counts[connection.shard()][list(connection.slot(), topic)] += 1;
}

fn remove_interest(topics: &mut HashMap<Topic, Route>, topic: Topic, connection: &Connection) {
    let key = topic.fanout_key();
    if let Some(route) = topics.get_mut(&key) {
        let count = &mut route.counts[connection.shard()][list(connection.slot(), topic)];
        *count = count.saturating_sub(1);
        if route.counts.iter().all(|c| c.iter().all(|&n| n == 0)) {
            topics.remove(&key);
        }
    }
}

/// One event for one connection receiving `slot`'s variant, named as `topic`.
fn frame_for_one(
    feed: &Feed,
    slot: usize,
    topic: Topic,
    render: impl FnOnce(&mut Vec<u8>, TimeUnit),
) -> Bytes {
    let unit = unit_of(slot);
    let mut payload = Vec::with_capacity(16 * 1024);
    render(&mut payload, unit);
    build_frame(shape_of(slot), &Naming::new(feed, topic), topic, &payload)
}

/// One finished event in `shape`: a WebSocket text frame of the payload, wrapped as
/// `{"stream":..,"data":<payload>}` when combined; or an SSE event, with the event's id when
/// `topic` is numbered.
fn build_frame(shape: Shape, naming: &Naming, topic: Topic, payload: &[u8]) -> Bytes {
    match shape {
        Shape::Raw => frame::text(payload),
        Shape::Combined => {
            let prefix = &naming.combined;
            let mut buf = frame::text_buffer(prefix.len() + payload.len() + 1);
            buf.extend_from_slice(prefix);
            buf.extend_from_slice(payload);
            buf.push(b'}');
            frame::finish_text(buf)
        }
        Shape::Sse => {
            let mut buf = Vec::with_capacity(naming.sse_event.len() * 2 + payload.len() + 40);
            buf.extend_from_slice(&naming.sse_event);
            if let (Some(id_prefix), Some(id)) = (&naming.sse_id, event_id(topic, payload)) {
                buf.extend_from_slice(id_prefix);
                crate::protocol::json::push_u64(&mut buf, id);
                buf.push(b'\n');
            }
            buf.extend_from_slice(b"data: ");
            buf.extend_from_slice(payload);
            buf.extend_from_slice(b"\n\n");
            Bytes::from(buf)
        }
    }
}

/// The id an event of a numbered stream carries (SPEC.md: `u` for diffs, and a
/// `depthSnapshot`'s `lastUpdateId`; `t` for trades; `a` for aggregates), as `resume=` takes
/// it; `None` for events without one (a `resumeGap`).
pub fn event_id(topic: Topic, payload: &[u8]) -> Option<u64> {
    use crate::protocol::json::find_u64_field as find;
    match topic {
        Topic::Symbol {
            kind: StreamKind::Diff(_),
            ..
        } => find(payload, b"\"u\":").or_else(|| find(payload, b"\"lastUpdateId\":")),
        Topic::Symbol {
            kind: StreamKind::Trade,
            ..
        } => find(payload, b"\"t\":"),
        Topic::Symbol {
            kind: StreamKind::AggTrade,
            ..
        } => find(payload, b"\"a\":"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::outbox::{QueueBound, Queued};
    use crate::fanout::shard::ShardTable;
    use crate::metrics::{live_stats::LiveStats, SessionMetrics, ShardMetrics};
    use crate::protocol::stream::{Speed, StreamKind};
    use crossbeam_channel::Receiver;
    use std::collections::VecDeque;
    use std::task::{Context, Poll, Waker};

    const BOUND: QueueBound = QueueBound {
        max_bytes: 1 << 20,
        max_frames: 1024,
    };

    fn drain(outbox: &Outbox) -> Vec<Queued> {
        let mut batch = VecDeque::new();
        let mut cx = Context::from_waker(Waker::noop());
        let mut offset = 0;
        match outbox.poll_next(&mut cx, &mut batch, &mut offset, true) {
            Poll::Ready(None) => batch.into_iter().collect(),
            _ => Vec::new(),
        }
    }

    /// A hub with `shards` shard tables driven by hand on this thread.
    struct Rig {
        hub: Hub,
        tables: Vec<(ShardTable, Receiver<ShardMsg>)>,
    }

    impl Rig {
        fn new(naive: bool, shards: usize) -> Self {
            let metrics = ShardMetrics::new(SessionMetrics::new(Arc::new(LiveStats::default())));
            let (links, tables): (Vec<_>, Vec<_>) = (0..shards)
                .map(|_| {
                    let (link, rx) = ShardLink::detached();
                    (link, (ShardTable::new(metrics.clone()), rx))
                })
                .unzip();
            Rig {
                hub: Hub::new(Arc::new(Feed::embedded_default()), naive, links, metrics),
                tables,
            }
        }

        /// Delivers everything the hub sent, as the shards' drain tasks would.
        fn pump(&mut self) {
            for (table, rx) in &mut self.tables {
                while let Ok(message) = rx.try_recv() {
                    table.apply(message);
                }
                table.flush();
            }
        }

        fn attach(
            &mut self,
            conn: ConnId,
            shard: usize,
            combined: bool,
            unit: TimeUnit,
        ) -> Arc<Outbox> {
            let outbox = Arc::new(Outbox::new(BOUND));
            let (ready, mut live) = oneshot::channel();
            self.hub.attach(
                conn,
                shard,
                outbox.clone(),
                if combined {
                    Shape::Combined
                } else {
                    Shape::Raw
                },
                unit,
                false,
                &[],
                ready,
            );
            self.pump();
            assert!(live.try_recv().is_ok(), "attached on the shard");
            outbox
        }
    }

    fn diff_topic() -> Topic {
        Topic::Symbol {
            symbol: 0,
            kind: StreamKind::Diff(Speed::Unspecified),
        }
    }

    /// Publishes one event to `n` raw-ms subscribers, one combined-µs subscriber, spread over
    /// two shards, and counts renders.
    fn publish_to(naive: bool, n: usize) -> (usize, Vec<Vec<Queued>>) {
        let mut rig = Rig::new(naive, 2);
        let topic = diff_topic();
        let outboxes: Vec<Arc<Outbox>> = (0..=n)
            .map(|i| {
                let combined = i == n;
                let unit = if combined {
                    TimeUnit::Microsecond
                } else {
                    TimeUnit::Millisecond
                };
                let outbox = rig.attach(i as ConnId, i % 2, combined, unit);
                rig.hub.subscribe(i as ConnId, &[topic]);
                outbox
            })
            .collect();
        let mut renders = 0;
        rig.hub.publish(topic, |out, unit| {
            renders += 1;
            out.extend_from_slice(if unit == TimeUnit::Microsecond {
                b"{\"E\":1000001}"
            } else {
                b"{\"E\":1000}"
            });
        });
        rig.pump();
        (renders, outboxes.iter().map(|o| drain(o)).collect())
    }

    #[test]
    fn one_rendering_and_one_frame_per_variant_across_shards() {
        let (renders, received) = publish_to(false, 3);
        assert_eq!(
            renders, 2,
            "once per time unit, not per subscriber or shard"
        );
        let raw: Vec<&Queued> = received[..3].iter().map(|r| &r[0]).collect();
        assert!(
            raw.iter()
                .all(|q| q.frame.as_ptr() == raw[0].frame.as_ptr()),
            "raw subscribers on both shards share one frame"
        );
        assert_eq!(&raw[0].frame[..], b"\x81\x0a{\"E\":1000}");
        let combined = &received[3][0].frame;
        assert!(
            combined.ends_with(b"\"data\":{\"E\":1000001}}"),
            "{combined:?}"
        );
    }

    #[test]
    fn naive_mode_renders_per_subscriber_with_the_same_bytes() {
        let (renders, received) = publish_to(true, 3);
        assert_eq!(renders, 4);
        assert_ne!(received[0][0].frame.as_ptr(), received[2][0].frame.as_ptr());
        assert_eq!(received[0][0].frame, received[2][0].frame);
    }

    #[test]
    fn nothing_is_rendered_or_sent_without_subscribers() {
        let mut rig = Rig::new(false, 2);
        let topic = Topic::Symbol {
            symbol: 1,
            kind: StreamKind::Trade,
        };
        let mut renders = 0;
        rig.hub.publish(topic, |_, _| renders += 1);
        assert_eq!(renders, 0);
        let outbox = rig.attach(7, 1, false, TimeUnit::Millisecond);
        rig.hub.subscribe(7, &[topic]);
        rig.hub
            .publish(topic, |out, _| out.extend_from_slice(b"{}"));
        assert!(rig.tables[0].1.is_empty(), "shard 0 has no subscriber");
        rig.pump();
        assert_eq!(drain(&outbox).len(), 1);
        rig.hub.detach(7);
        rig.hub.publish(topic, |_, _| renders += 1);
        assert_eq!(renders, 0, "detached subscribers are gone");
        assert!(!rig.hub.wants(&topic));
        rig.pump();
        assert_eq!(rig.tables[1].0.connections(), 0, "the shard forgot it too");
    }

    /// `@depth` and `@depth@1000ms` are one stream: one rendering per event, one frame for
    /// every raw subscriber whichever name it used, and combined subscribers get the name they
    /// used. A connection with both names gets the event under each; dropping one name, or
    /// switching to combined, keeps the other's.
    #[test]
    fn both_spellings_of_a_stream_share_one_rendering_and_keep_their_names() {
        let mut rig = Rig::new(false, 2);
        let key = diff_topic();
        let synonym = key.synonym().expect("@depth has a synonym");
        let raw_key = rig.attach(1, 0, false, TimeUnit::Millisecond);
        let raw_synonym = rig.attach(2, 1, false, TimeUnit::Millisecond);
        let combined_both = rig.attach(3, 1, true, TimeUnit::Millisecond);
        rig.hub.subscribe(1, &[key]);
        rig.hub.subscribe(2, &[synonym]);
        rig.hub.subscribe(3, &[synonym, key]);
        assert!(rig.hub.wants(&key) && rig.hub.wants(&synonym));
        let mut renders = 0;
        let mut publish = |rig: &mut Rig| {
            rig.hub.publish(key, |out, _| {
                renders += 1;
                out.extend_from_slice(b"{}");
            });
            rig.pump();
        };
        publish(&mut rig);
        let (a, b) = (drain(&raw_key), drain(&raw_synonym));
        assert_eq!((a.len(), b.len()), (1, 1));
        assert_eq!(a[0].frame.as_ptr(), b[0].frame.as_ptr(), "one raw frame");
        let names: Vec<String> = drain(&combined_both)
            .iter()
            .map(|q| String::from_utf8_lossy(&q.frame[2..]).into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.contains(&r#"{"stream":"btcusdt@depth","data":{}}"#.to_string()));
        assert!(names.contains(&r#"{"stream":"btcusdt@depth@1000ms","data":{}}"#.to_string()));

        rig.hub.unsubscribe(3, &[key]);
        rig.hub.set_combined(2, true);
        publish(&mut rig);
        assert_eq!(renders, 2, "once per event, not per name");
        let got = drain(&combined_both);
        assert_eq!(got.len(), 1);
        assert!(got[0]
            .frame
            .ends_with(b"\"stream\":\"btcusdt@depth@1000ms\",\"data\":{}}"));
        let got = drain(&raw_synonym);
        assert!(got[0]
            .frame
            .ends_with(b"\"stream\":\"btcusdt@depth@1000ms\",\"data\":{}}"));
        rig.hub.detach(1);
        rig.hub.detach(2);
        rig.hub.unsubscribe(3, &[synonym]);
        assert!(!rig.hub.wants(&key), "no list left for the key");
    }

    #[test]
    fn a_reply_follows_its_subscription_and_switching_to_combined_reroutes() {
        let mut rig = Rig::new(false, 1);
        let topic = diff_topic();
        let outbox = rig.attach(1, 0, false, TimeUnit::Millisecond);
        rig.hub.control(
            1,
            Change::Subscribe(vec![topic]),
            Bytes::from_static(b"reply"),
        );
        rig.hub
            .publish(topic, |out, _| out.extend_from_slice(b"{}"));
        rig.pump();
        let got = drain(&outbox);
        assert_eq!(&got[0].frame[..], b"reply");
        assert_eq!(&got[1].frame[..], b"\x81\x02{}");
        rig.hub.set_combined(1, true);
        rig.hub
            .publish(topic, |out, _| out.extend_from_slice(b"{}"));
        rig.pump();
        let got = drain(&outbox);
        assert!(
            got[0].frame.ends_with(b"\"data\":{}}"),
            "{:?}",
            got[0].frame
        );
    }
}
