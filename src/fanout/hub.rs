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

use crate::fanout::outbox::{Outbox, Push};
use crate::market::feed::Feed;
use crate::metrics::HubMetrics;
use crate::protocol::frame;
use crate::protocol::json::TimeUnit;
use crate::protocol::stream::Topic;
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
    naive: bool,
    topics: HashMap<Topic, TopicEntry>,
    connections: HashMap<ConnId, Connection>,
    /// Reused payload buffers, one per time unit.
    scratch: [Vec<u8>; 2],
    metrics: HubMetrics,
}

impl Hub {
    /// `naive`: render and frame every event once per subscriber, the way a straightforward
    /// server does; a benchmark baseline that shows what serialize-once buys.
    pub fn new(feed: Arc<Feed>, naive: bool) -> Self {
        Hub {
            feed,
            naive,
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
                combined_prefix: format!("{{\"stream\":\"{}\",\"data\":", topic.name(&**feed))
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

    /// Subscribers evicted as slow consumers since the hub started.
    pub fn slow_consumers_total(&self) -> u64 {
        self.metrics.slow_consumers_total()
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
            if !rendered[unit_index] && !self.naive {
                let payload = &mut self.scratch[unit_index];
                payload.clear();
                render(payload, unit);
                rendered[unit_index] = true;
                self.metrics.serialized();
            }
            let prefix = combined.then_some(&entry.combined_prefix[..]);
            let mut evicted = 0u64;
            if self.naive {
                for subscriber in subscribers {
                    let payload = &mut self.scratch[unit_index];
                    payload.clear();
                    render(payload, unit);
                    let frame = build_frame(prefix, payload);
                    if subscriber.outbox.push_data(&frame, born_us) == Push::Overflowed {
                        evicted += 1;
                    }
                }
                self.metrics.serialized_many(subscribers.len() as u64);
                self.metrics.enqueued(subscribers.len() as u64, evicted);
                continue;
            }
            let frame = build_frame(prefix, &self.scratch[unit_index]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::outbox::{QueueBound, Queued};
    use crate::protocol::stream::{Speed, StreamKind};
    use std::collections::VecDeque;
    use std::task::{Context, Poll, Waker};

    const BOUND: QueueBound = QueueBound {
        max_bytes: 1 << 20,
        max_frames: 1024,
    };

    fn drain(outbox: &Outbox) -> Vec<Queued> {
        let mut batch = VecDeque::new();
        let mut cx = Context::from_waker(Waker::noop());
        match outbox.poll_next(&mut cx, &mut batch, true) {
            Poll::Ready(None) => batch.into_iter().collect(),
            _ => Vec::new(),
        }
    }

    /// Publishes one event to `n` raw-ms subscribers, one combined-µs subscriber, and counts renders.
    fn publish_to(naive: bool, n: usize) -> (usize, Vec<Vec<Queued>>) {
        let mut hub = Hub::new(Arc::new(Feed::embedded_default()), naive);
        let topic = Topic::Symbol {
            symbol: 0,
            kind: StreamKind::Diff(Speed::Unspecified),
        };
        let outboxes: Vec<Arc<Outbox>> = (0..=n).map(|_| Arc::new(Outbox::new(BOUND))).collect();
        for (i, outbox) in outboxes.iter().enumerate() {
            let combined = i == n;
            let unit = if combined {
                TimeUnit::Microsecond
            } else {
                TimeUnit::Millisecond
            };
            hub.attach(i as ConnId, outbox.clone(), combined, unit);
            hub.subscribe(i as ConnId, &[topic]);
        }
        let mut renders = 0;
        hub.publish(topic, |out, unit| {
            renders += 1;
            out.extend_from_slice(if unit == TimeUnit::Microsecond {
                b"{\"E\":1000001}"
            } else {
                b"{\"E\":1000}"
            });
        });
        (renders, outboxes.iter().map(|o| drain(o)).collect())
    }

    #[test]
    fn one_rendering_and_one_frame_per_variant() {
        let (renders, received) = publish_to(false, 3);
        assert_eq!(renders, 2, "once per time unit, not per subscriber");
        let raw: Vec<&Queued> = received[..3].iter().map(|r| &r[0]).collect();
        assert!(
            raw.iter()
                .all(|q| q.frame.as_ptr() == raw[0].frame.as_ptr()),
            "raw subscribers share one frame"
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
        assert_ne!(received[0][0].frame.as_ptr(), received[1][0].frame.as_ptr());
        assert_eq!(received[0][0].frame, received[1][0].frame);
    }

    #[test]
    fn nothing_is_rendered_for_a_topic_without_subscribers() {
        let mut hub = Hub::new(Arc::new(Feed::embedded_default()), false);
        let topic = Topic::Symbol {
            symbol: 1,
            kind: StreamKind::Trade,
        };
        let mut renders = 0;
        hub.publish(topic, |_, _| renders += 1);
        assert_eq!(renders, 0);
        let outbox = Arc::new(Outbox::new(BOUND));
        hub.attach(7, outbox.clone(), false, TimeUnit::Millisecond);
        hub.subscribe(7, &[topic]);
        hub.detach(7);
        hub.publish(topic, |_, _| renders += 1);
        assert_eq!(renders, 0, "detached subscribers are gone");
        assert!(!hub.wants(&topic));
    }
}
