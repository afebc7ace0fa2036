//! Metrics, emitted through typed handles resolved once (Vector's internal-events style).
//!
//! Hot paths hold [`metrics::Counter`]s looked up at construction, so recording is an atomic
//! add: no label formatting or registry lookup per message. Labels are low-cardinality
//! constants (stream kind, close code, path), never per connection.

pub mod live_stats;

use live_stats::LiveStats;
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle.
///
/// Must run before any handle below is created: a handle made before a recorder exists is a
/// no-op forever. [`crate::front::server::run`] calls it first thing.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = match builder().install_recorder() {
                Ok(handle) => handle,
                // Another recorder owns the process (an embedding application): keep serving
                // our own exposition from a recorder that only we render.
                Err(_) => builder().build_recorder().handle(),
            };
            describe();
            handle
        })
        .clone()
}

/// Seconds from publish to socket: 50 µs to 2.5 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];
/// Frames per vectored write.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
/// Queue depth in bytes, up to the default 256 KiB bound.
const QUEUE_BUCKETS: &[f64] = &[256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0];
/// One engine step: 1 µs to 10 ms.
const STEP_BUCKETS: &[f64] = &[
    0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.001, 0.01,
];

fn builder() -> PrometheusBuilder {
    // Both bucket lists are non-empty constants, the only way set_buckets_for_metric fails.
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("bookcast_publish_to_socket_seconds".into()),
            LATENCY_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("bookcast_write_batch_frames".into()),
                BATCH_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("bookcast_queue_depth_bytes".into()),
                QUEUE_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("bookcast_engine_step_seconds".into()),
                STEP_BUCKETS,
            )
        })
        .expect("bucket lists are non-empty")
}

fn describe() {
    describe_histogram!(
        "bookcast_publish_to_socket_seconds",
        Unit::Seconds,
        "Time from the engine publishing an event to its frame being written to a subscriber's socket."
    );
    describe_histogram!(
        "bookcast_write_batch_frames",
        "Frames written per socket write."
    );
    describe_histogram!(
        "bookcast_queue_depth_bytes",
        Unit::Bytes,
        "Bytes queued for a subscriber when its writer takes the queue (per-subscriber queue depth)."
    );
    describe_histogram!(
        "bookcast_engine_step_seconds",
        Unit::Seconds,
        "Time of one engine step of one symbol, publishing included."
    );
    describe_gauge!(
        "bookcast_connections_open",
        "WebSocket connections currently open."
    );
    describe_counter!(
        "bookcast_connections_accepted_total",
        "WebSocket upgrades accepted."
    );
    describe_counter!(
        "bookcast_connections_rejected_total",
        "Connections refused before the upgrade, by reason."
    );
    describe_counter!(
        "bookcast_auth_failures_total",
        "WebSocket connections closed with 4001 because of a missing or invalid token (--auth-tokens), by reason."
    );
    describe_gauge!(
        "bookcast_subscriptions",
        "Active stream subscriptions, by stream kind."
    );
    describe_counter!(
        "bookcast_engine_updates_total",
        "Order-book updates produced by the engine, by symbol."
    );
    describe_counter!(
        "bookcast_events_serialized_total",
        "Event payloads rendered (once per distinct payload, not per subscriber)."
    );
    describe_counter!(
        "bookcast_frames_enqueued_total",
        "Frames handed to subscriber queues."
    );
    describe_counter!(
        "bookcast_frames_delivered_total",
        "Frames written to subscriber sockets."
    );
    describe_counter!(
        "bookcast_bytes_delivered_total",
        "Bytes written to subscriber sockets."
    );
    describe_counter!(
        "bookcast_write_syscalls_total",
        "Socket writes of frames, direct from a shard or by a session's task."
    );
    describe_counter!(
        "bookcast_write_handoffs_total",
        "Direct writes from a shard that met a full socket and handed the rest to the connection's task."
    );
    describe_counter!(
        "bookcast_slow_consumer_disconnects_total",
        "Connections closed with 4008 because their queue overflowed."
    );
    describe_counter!(
        "bookcast_closes_total",
        "Connections closed, by close code (1006: dropped without a close frame; other: a peer's own code outside 1000-1015 and 4000-4009)."
    );
    describe_counter!(
        "bookcast_control_messages_total",
        "Control messages received from clients, by method (unknown, invalid: unreadable)."
    );
    describe_counter!(
        "bookcast_control_errors_total",
        "Control messages answered with an error, by error code."
    );
    describe_counter!(
        "bookcast_http_requests_total",
        "Plain HTTP requests, by path and status."
    );
}

/// The hub's handles (engine thread).
pub struct HubMetrics {
    serialized: Counter,
}

impl HubMetrics {
    pub fn new() -> Self {
        HubMetrics {
            serialized: counter!("bookcast_events_serialized_total"),
        }
    }

    pub fn serialized(&self) {
        self.serialized.increment(1);
    }

    pub fn serialized_many(&self, count: u64) {
        self.serialized.increment(count);
    }

    pub fn subscribed(&self, kind: &'static str) {
        gauge!("bookcast_subscriptions", "kind" => kind).increment(1.0);
    }

    pub fn unsubscribed(&self, kind: &'static str) {
        gauge!("bookcast_subscriptions", "kind" => kind).decrement(1.0);
    }
}

/// A shard's handles: what it queues, evicts and writes. Cloned into every shard.
#[derive(Clone)]
pub struct ShardMetrics {
    pub session: SessionMetrics,
    enqueued: Counter,
    slow_consumers: Counter,
    /// The same count, readable by the engine for `!stats@1s`.
    slow_consumers_total: Arc<AtomicU64>,
}

impl ShardMetrics {
    pub fn new(session: SessionMetrics) -> Self {
        ShardMetrics {
            session,
            enqueued: counter!("bookcast_frames_enqueued_total"),
            slow_consumers: counter!("bookcast_slow_consumer_disconnects_total"),
            slow_consumers_total: Arc::new(AtomicU64::new(0)),
        }
    }

    /// One pass over an event's subscribers: `queued` frames queued, `evicted` subscribers
    /// evicted as slow consumers.
    pub fn enqueued(&self, queued: u64, evicted: u64) {
        self.enqueued.increment(queued);
        if evicted > 0 {
            self.slow_consumers.increment(evicted);
            self.slow_consumers_total
                .fetch_add(evicted, Ordering::Relaxed);
        }
    }

    /// Subscribers evicted as slow consumers since the server started, every shard.
    pub fn slow_consumers_total(&self) -> u64 {
        self.slow_consumers_total.load(Ordering::Relaxed)
    }
}

impl Default for HubMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The engine's handles: one update counter per symbol (feeds are small, so the label is
/// bounded), resolved once.
pub struct EngineMetrics {
    updates: Vec<Counter>,
    pub step_seconds: Histogram,
}

impl EngineMetrics {
    pub fn new(feed: &crate::market::feed::Feed) -> Self {
        EngineMetrics {
            updates: feed
                .symbols
                .iter()
                .map(|s| counter!("bookcast_engine_updates_total", "symbol" => s.symbol.clone()))
                .collect(),
            step_seconds: histogram!("bookcast_engine_step_seconds"),
        }
    }

    /// One update of the symbol at `index` in the feed.
    pub fn updated(&self, index: usize) {
        if let Some(counter) = self.updates.get(index) {
            counter.increment(1);
        }
    }
}

/// Handles shared by every connection's writer (cloning a handle is a refcount bump).
///
/// Also feeds the server's [`LiveStats`] (the `!stats@1s` stream), so every recording site
/// updates both through one call.
#[derive(Clone)]
pub struct SessionMetrics {
    pub live: Arc<LiveStats>,
    pub frames_delivered: Counter,
    pub bytes_delivered: Counter,
    pub write_syscalls: Counter,
    /// Direct writes that could not finish and handed the rest to the session's task.
    pub write_handoffs: Counter,
    pub open: Gauge,
    pub accepted: Counter,
    pub publish_to_socket: Histogram,
    pub write_batch_frames: Histogram,
    pub queue_depth_bytes: Histogram,
}

impl SessionMetrics {
    pub fn new(live: Arc<LiveStats>) -> Self {
        SessionMetrics {
            live,
            frames_delivered: counter!("bookcast_frames_delivered_total"),
            bytes_delivered: counter!("bookcast_bytes_delivered_total"),
            write_syscalls: counter!("bookcast_write_syscalls_total"),
            write_handoffs: counter!("bookcast_write_handoffs_total"),
            open: gauge!("bookcast_connections_open"),
            accepted: counter!("bookcast_connections_accepted_total"),
            publish_to_socket: histogram!("bookcast_publish_to_socket_seconds"),
            write_batch_frames: histogram!("bookcast_write_batch_frames"),
            queue_depth_bytes: histogram!("bookcast_queue_depth_bytes"),
        }
    }

    /// A WebSocket connection was accepted and is now open.
    pub fn opened(&self) {
        self.accepted.increment(1);
        self.open.increment(1.0);
        self.live.connection_opened();
    }

    /// An open connection ended with `code` (cold path: once per connection).
    pub fn closed(&self, code: u16) {
        count_close(code);
        self.open.decrement(1.0);
        self.live.connection_closed();
    }

    /// A connection refused with `code` right after its upgrade (4001): counted as a close,
    /// but it was never open, so the open gauges stay as they are.
    pub fn refused(&self, code: u16) {
        count_close(code);
    }

    /// One socket write of `frames` frames, `bytes` bytes.
    #[inline]
    pub fn wrote(&self, frames: usize, bytes: usize) {
        self.write_syscalls.increment(1);
        self.write_batch_frames.record(frames as f64);
        self.frames_delivered.increment(frames as u64);
        self.bytes_delivered.increment(bytes as u64);
        self.live.delivered(frames as u64, bytes as u64);
    }

    /// One frame reached the socket `micros` after the engine published it.
    #[inline]
    pub fn publish_to_socket_us(&self, micros: u64) {
        self.publish_to_socket.record(micros as f64 * 1e-6);
        self.live.latency_us(micros);
    }

    /// A control message arrived; `method` is one of control's fixed labels (rate-limited by
    /// the protocol, so the label lookup is off the hot path).
    pub fn control_message(&self, method: &'static str) {
        counter!("bookcast_control_messages_total", "method" => method).increment(1);
    }

    /// A control message was answered with error `code` (rate-limited by the protocol).
    pub fn control_error(&self, code: u8) {
        counter!("bookcast_control_errors_total", "code" => code.to_string()).increment(1);
    }
}

/// `bookcast_closes_total{code}`. A peer's close code is echoed, and 3000-4999 are all legal, so
/// a label per code would let clients mint up to 2000 series; codes outside the protocol's
/// 1000-1015 and the server's own 4000-4009 are counted together as "other".
fn count_close(code: u16) {
    let label = match code {
        1000..=1015 | 4000..=4009 => code.to_string(),
        _ => "other".to_string(),
    };
    counter!("bookcast_closes_total", "code" => label).increment(1);
}

/// A connection refused before the WebSocket upgrade.
pub fn rejected(reason: &'static str) {
    counter!("bookcast_connections_rejected_total", "reason" => reason).increment(1);
}

/// A WebSocket connection refused with 4001 after the upgrade; `reason` is
/// [`crate::front::auth::Refusal::label`] ("missing" or "invalid").
pub fn auth_failed(reason: &'static str) {
    counter!("bookcast_auth_failures_total", "reason" => reason).increment(1);
}

/// A plain HTTP request answered; `path` must be one of the server's fixed routes or "other".
pub fn http_request(path: &'static str, status: u16) {
    counter!("bookcast_http_requests_total", "path" => path, "status" => status.to_string())
        .increment(1);
}
