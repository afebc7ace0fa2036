//! The fan-out hub: who listens to what, and handing each event to all of them.
//!
//! The hub has exactly one owner, the engine thread, which both changes subscriptions (applying
//! commands between engine steps) and publishes. So the subscriber lists need no lock at all;
//! the only synchronisation on the data path is each outbox's short mutex, and publishing never
//! waits on a subscriber: a full outbox evicts its connection instead.
//!
//! Serialize once: an event is rendered once per time unit its subscribers asked for (once in
//! all for payloads without time fields), wrapped once more for combined subscribers, and each
//! rendering becomes one finished WebSocket frame shared by refcount with every subscriber of
//! that variant. Nothing is rendered for a topic nobody listens to.

use crate::feed::Feed;
use crate::frame;
use crate::json::TimeUnit;
use crate::metrics::HubMetrics;
use crate::outbox::{Outbox, Push};
use crate::stream::Topic;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;

/// A connection's identity for the hub's lifetime.
pub type ConnId = u64;

/// The payload variants a topic may need: raw or combined, in ms or µs.
const VARIANTS: usize = 4;

fn variant(combined: bool, unit: TimeUnit) -> usize {
    usize::from(combined) * 2 + usize::from(unit == TimeUnit::Microsecond)
}

struct Subscriber {
    conn: ConnId,
    outbox: Arc<Outbox>,
}

struct TopicEntry {
    /// `{"stream":"<name>","data":`, the combined wrapper's prefix.
    combined_prefix: Box<[u8]>,
    subscribers: [Vec<Subscriber>; VARIANTS],
}

impl TopicEntry {
    fn is_empty(&self) -> bool {
        self.subscribers.iter().all(Vec::is_empty)
    }
}

struct Connection {
    outbox: Arc<Outbox>,
    combined: bool,
    unit: TimeUnit,
    topics: Vec<Topic>,
}

pub struct Hub {
    feed: Arc<Feed>,
    topics: HashMap<Topic, TopicEntry>,
    connections: HashMap<ConnId, Connection>,
    /// Reused payload buffers, one per time unit.
    scratch: [Vec<u8>; 2],
    metrics: HubMetrics,
}

impl Hub {
    pub fn new(feed: Arc<Feed>) -> Self {
        Hub {
            feed,
            topics: HashMap::new(),
            connections: HashMap::new(),
            scratch: [Vec::with_capacity(4096), Vec::with_capacity(4096)],
            metrics: HubMetrics::new(),
        }
    }

    /// Registers a connection with its payload format; it listens to nothing yet.
    pub fn attach(&mut self, conn: ConnId, outbox: Arc<Outbox>, combined: bool, unit: TimeUnit) {
        self.connections.insert(
            conn,
            Connection {
                outbox,
                combined,
                unit,
                topics: Vec::new(),
            },
        );
    }

    /// Adds topics to a connection (already subscribed ones are left as they are).
    pub fn subscribe(&mut self, conn: ConnId, topics: &[Topic]) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        let slot = variant(connection.combined, connection.unit);
        for &topic in topics {
            if connection.topics.contains(&topic) {
                continue;
            }
            connection.topics.push(topic);
            let feed = &self.feed;
            let entry = self.topics.entry(topic).or_insert_with(|| TopicEntry {
                combined_prefix: format!("{{\"stream\":\"{}\",\"data\":", topic.name(feed))
                    .into_bytes()
                    .into_boxed_slice(),
                subscribers: Default::default(),
            });
            entry.subscribers[slot].push(Subscriber {
                conn,
                outbox: connection.outbox.clone(),
            });
            self.metrics.subscribed(topic.label());
        }
    }

    /// Removes topics from a connection (unknown ones are ignored).
    pub fn unsubscribe(&mut self, conn: ConnId, topics: &[Topic]) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        let slot = variant(connection.combined, connection.unit);
        for topic in topics {
            if let Some(at) = connection.topics.iter().position(|t| t == topic) {
                connection.topics.swap_remove(at);
                remove_subscriber(&mut self.topics, *topic, slot, conn);
                self.metrics.unsubscribed(topic.label());
            }
        }
    }

    /// Switches a connection between raw and combined payloads (`SET_PROPERTY combined`).
    pub fn set_combined(&mut self, conn: ConnId, combined: bool) {
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        if connection.combined == combined {
            return;
        }
        let topics = connection.topics.clone();
        self.unsubscribe(conn, &topics);
        if let Some(connection) = self.connections.get_mut(&conn) {
            connection.combined = combined;
        }
        self.subscribe(conn, &topics);
    }

    /// Forgets a connection and all its subscriptions.
    pub fn detach(&mut self, conn: ConnId) {
        if let Some(connection) = self.connections.remove(&conn) {
            let slot = variant(connection.combined, connection.unit);
            for topic in connection.topics {
                remove_subscriber(&mut self.topics, topic, slot, conn);
                self.metrics.unsubscribed(topic.label());
            }
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

    /// The outbox of a connection, to queue a control reply behind its data.
    pub fn outbox(&self, conn: ConnId) -> Option<&Arc<Outbox>> {
        self.connections.get(&conn).map(|c| &c.outbox)
    }

    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    /// Whether anyone listens to `topic`, so the engine can skip work nobody would see.
    pub fn wants(&self, topic: &Topic) -> bool {
        self.topics.contains_key(topic)
    }

    /// Renders `topic`'s event with `render(payload, unit)` once per needed time unit and
    /// queues the shared frames on every subscriber.
    pub fn publish(&mut self, topic: Topic, mut render: impl FnMut(&mut Vec<u8>, TimeUnit)) {
        let Some(entry) = self.topics.get(&topic) else {
            return;
        };
        let time_dependent = topic.has_time_fields();
        let born_us = crate::clock::monotonic_us();
        let mut rendered = [false; 2];
        for (slot, subscribers) in entry.subscribers.iter().enumerate() {
            if subscribers.is_empty() {
                continue;
            }
            let combined = slot >= 2;
            let unit = if slot % 2 == 1 && time_dependent {
                TimeUnit::Microsecond
            } else {
                TimeUnit::Millisecond
            };
            let unit_index = usize::from(unit == TimeUnit::Microsecond);
            if !rendered[unit_index] {
                let payload = &mut self.scratch[unit_index];
                payload.clear();
                render(payload, unit);
                rendered[unit_index] = true;
                self.metrics.serialized();
            }
            let payload = &self.scratch[unit_index];
            let frame = build_frame(combined.then_some(&entry.combined_prefix[..]), payload);
            let mut evicted = 0u64;
            for subscriber in subscribers {
                if subscriber.outbox.push_data(&frame, born_us) == Push::Overflowed {
                    evicted += 1;
                }
            }
            self.metrics.enqueued(subscribers.len() as u64, evicted);
        }
    }
}

fn remove_subscriber(
    topics: &mut HashMap<Topic, TopicEntry>,
    topic: Topic,
    slot: usize,
    conn: ConnId,
) {
    if let Some(entry) = topics.get_mut(&topic) {
        let list = &mut entry.subscribers[slot];
        if let Some(at) = list.iter().position(|s| s.conn == conn) {
            list.swap_remove(at);
        }
        if entry.is_empty() {
            topics.remove(&topic);
        }
    }
}

/// One finished text frame: the payload, wrapped as `{"stream":..,"data":<payload>}` if combined.
fn build_frame(combined_prefix: Option<&[u8]>, payload: &[u8]) -> Bytes {
    let prefix = combined_prefix.unwrap_or_default();
    let mut buf = frame::text_buffer(prefix.len() + payload.len() + 1);
    buf.extend_from_slice(prefix);
    buf.extend_from_slice(payload);
    if combined_prefix.is_some() {
        buf.push(b'}');
    }
    frame::finish_text(buf)
}
