//! Metrics, emitted through typed handles resolved once (Vector's internal-events style).
//!
//! Hot paths hold [`metrics::Counter`]s looked up at construction, so recording is an atomic
//! add: no label formatting or registry lookup per message. Labels are low-cardinality
//! constants (stream kind, close code, path), never per connection, and every series whose
//! labels are known in advance is registered at 0 when the recorder is installed
//! ([`known_series`]), so `/metrics` shows it before its first event.

pub mod cluster;
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
            zero_known_series();
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

/// What kind of metric a family or series is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyKind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family: its name, kind, label key (all of bookcast's have at most one), unit and
/// help text.
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: FamilyKind,
    pub label: Option<&'static str>,
    pub unit: Option<Unit>,
    pub help: &'static str,
}

/// Every metric family the server exposes, with its help text: the one list that describes
/// them, and that the tests use to check each family is on `/metrics` from the start.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "bookcast_publish_to_socket_seconds",
        kind: FamilyKind::Histogram,
        label: None,
        unit: Some(Unit::Seconds),
        help: "Time from the engine publishing an event to its frame being written to a subscriber's socket.",
    },
    Family {
        name: "bookcast_write_batch_frames",
        kind: FamilyKind::Histogram,
        label: None,
        unit: None,
        help: "Frames written per socket write.",
    },
    Family {
        name: "bookcast_queue_depth_bytes",
        kind: FamilyKind::Histogram,
        label: None,
        unit: Some(Unit::Bytes),
        help: "Bytes queued for a subscriber when its writer takes the queue (per-subscriber queue depth).",
    },
    Family {
        name: "bookcast_engine_step_seconds",
        kind: FamilyKind::Histogram,
        label: None,
        unit: Some(Unit::Seconds),
        help: "Time of one engine step of one symbol, publishing included.",
    },
    Family {
        name: "bookcast_connections_open",
        kind: FamilyKind::Gauge,
        label: None,
        unit: None,
        help: "WebSocket connections currently open.",
    },
    Family {
        name: "bookcast_connections_accepted_total",
        kind: FamilyKind::Counter,
        label: None,
        unit: None,
        help: "WebSocket upgrades accepted.",
    },
    Family {
        name: "bookcast_connections_rejected_total",
        kind: FamilyKind::Counter,
        label: Some("reason"),
        unit: None,
        help: "Connections refused before the upgrade, by reason.",
    },
    Family {
        name: "bookcast_auth_failures_total",
        kind: FamilyKind::Counter,
        label: Some("reason"),
        unit: None,
        help: "WebSocket connections closed with 4001 because of a missing or invalid token (--auth-tokens), by reason.",
    },
    Family {
        name: "bookcast_shard_connections",
        kind: FamilyKind::Gauge,
        label: Some("shard"),
        unit: None,
        help: "Connections in each shard's fan-out table (WebSocket sessions, SSE streams, waiting polls), by shard: each shard accepts its own, so this shows how they spread.",
    },
    Family {
        name: "bookcast_subscriptions",
        kind: FamilyKind::Gauge,
        label: Some("kind"),
        unit: None,
        help: "Active stream subscriptions, by stream kind.",
    },
    Family {
        name: "bookcast_resumes_total",
        kind: FamilyKind::Counter,
        label: Some("outcome"),
        unit: None,
        help: "Streams resumed with resume= (SPEC.md), by outcome: up_to_date, caught_up, snapshot (older than --history), gap (resumeGap sent).",
    },
    Family {
        name: "bookcast_resume_events_total",
        kind: FamilyKind::Counter,
        label: None,
        unit: None,
        help: "Missed events sent by resume= catch-ups (diffs, trades, aggregates).",
    },
    Family {
        name: "bookcast_history_bytes",
        kind: FamilyKind::Gauge,
        label: None,
        unit: Some(Unit::Bytes),
        help: "Memory held by the resume= history (--history), every symbol.",
    },
    Family {
        name: "bookcast_transport_requests_total",
        kind: FamilyKind::Counter,
        label: Some("transport"),
        unit: None,
        help: "Requests on the plain-HTTP transports (SPEC.md \"Other transports\"), by transport: sse (streams opened), longpoll, poll (wait=0). WebSocket connections are bookcast_connections_accepted_total.",
    },
    Family {
        name: "bookcast_transport_events_total",
        kind: FamilyKind::Counter,
        label: Some("transport"),
        unit: None,
        help: "Events delivered over the plain-HTTP transports, by transport. WebSocket's are bookcast_frames_delivered_total.",
    },
    Family {
        name: "bookcast_transport_bytes_total",
        kind: FamilyKind::Counter,
        label: Some("transport"),
        unit: Some(Unit::Bytes),
        help: "Bytes written over the plain-HTTP transports, response heads included, by transport. WebSocket's are bookcast_bytes_delivered_total.",
    },
    Family {
        name: "bookcast_transport_open",
        kind: FamilyKind::Gauge,
        label: Some("transport"),
        unit: None,
        help: "Open SSE streams and polls waiting for events, by transport.",
    },
    Family {
        name: "bookcast_engine_updates_total",
        kind: FamilyKind::Counter,
        label: Some("symbol"),
        unit: None,
        help: "Order-book updates produced by the engine, by symbol.",
    },
    Family {
        name: "bookcast_events_serialized_total",
        kind: FamilyKind::Counter,
        label: None,
        unit: None,
        help: "Event payloads rendered (once per distinct payload, not per subscriber).",
    },
    Family {
        name: "bookcast_frames_enqueued_total",
        kind: FamilyKind::Counter,
        label: None,
        unit: None,
        help: "Frames handed to subscriber queues.",
    },
    Family {
        name: "bookcast_frames_delivered_total",
        kind: FamilyKind::Counter,
        label: None,
        unit: None,
        help: "Frames written to subscriber sockets.",
    },
    Family {
        name: "bookcast_bytes_delivered_total",
        kind: FamilyKind::Counter,
        label: None,
        unit: None,
        help: "Bytes written to subscriber sockets.",
    },
    Family {
        name: "bookcast_write_syscalls_total",
        kind: FamilyKind::Counter,
        label: None,
        unit: None,
        help: "Socket writes of frames, direct from a shard or by a session's task.",
    },
    Family {
        name: "bookcast_write_handoffs_total",
        kind: FamilyKind::Counter,
        label: None,
        unit: None,
        help: "Direct writes from a shard that met a full socket and handed the rest to the connection's task.",
    },
    Family {
        name: "bookcast_slow_consumer_disconnects_total",
        kind: FamilyKind::Counter,
        label: None,
        unit: None,
        help: "Connections closed with 4008 because their queue overflowed.",
    },
    Family {
        name: "bookcast_resyncs_total",
        kind: FamilyKind::Counter,
        label: None,
        unit: None,
        help: "Overflows of snapshot=true connections answered by dropping their queued diffs and sending fresh depthSnapshots instead of closing them.",
    },
    Family {
        name: "bookcast_conflated_total",
        kind: FamilyKind::Counter,
        label: None,
        unit: None,
        help: "Queued snapshot-type events (partial depth, bookTicker, tickers, avgPrice) replaced in place by a newer one of the same stream.",
    },
    Family {
        name: "bookcast_closes_total",
        kind: FamilyKind::Counter,
        label: Some("code"),
        unit: None,
        help: "Connections closed, by close code (1006: dropped without a close frame; other: a peer's own code outside 1000-1015 and 4000-4009).",
    },
    Family {
        name: "bookcast_control_messages_total",
        kind: FamilyKind::Counter,
        label: Some("method"),
        unit: None,
        help: "Control messages received from clients, by method (unknown, invalid: unreadable).",
    },
    Family {
        name: "bookcast_control_errors_total",
        kind: FamilyKind::Counter,
        label: Some("code"),
        unit: None,
        help: "Control messages answered with an error, by error code.",
    },
    Family {
        name: "bookcast_ws_api_requests_total",
        kind: FamilyKind::Counter,
        label: Some("method"),
        unit: None,
        help: "WebSocket API requests (/ws-api/v3), by method (unknown: not served; invalid: unreadable).",
    },
    Family {
        name: "bookcast_ws_api_errors_total",
        kind: FamilyKind::Counter,
        label: Some("code"),
        unit: None,
        help: "WebSocket API requests answered with an error, by Binance error code.",
    },
    Family {
        name: "bookcast_rest_errors_total",
        kind: FamilyKind::Counter,
        label: Some("code"),
        unit: None,
        help: "REST requests answered with a Binance error, by its code.",
    },
    Family {
        name: "bookcast_http_requests_total",
        kind: FamilyKind::Counter,
        // And `status`: the one family with two labels, and none known in advance.
        label: Some("path"),
        unit: None,
        help: "Plain HTTP requests, by path and status.",
    },
];

fn describe() {
    for family in FAMILIES {
        let (name, help) = (family.name, family.help);
        match (family.kind, family.unit) {
            (FamilyKind::Counter, None) => describe_counter!(name, help),
            (FamilyKind::Counter, Some(unit)) => describe_counter!(name, unit, help),
            (FamilyKind::Gauge, None) => describe_gauge!(name, help),
            (FamilyKind::Gauge, Some(unit)) => describe_gauge!(name, unit, help),
            (FamilyKind::Histogram, None) => describe_histogram!(name, help),
            (FamilyKind::Histogram, Some(unit)) => describe_histogram!(name, unit, help),
        }
    }
}

/// `bookcast_subscriptions{kind}`: every value of [`crate::protocol::stream::Topic::label`].
/// `bookcast_resumes_total`'s outcomes ([`crate::derive::symbol::Resumed::label`]).
pub const RESUME_OUTCOMES: &[&str] = &["up_to_date", "caught_up", "snapshot", "gap"];

pub const SUBSCRIPTION_KINDS: &[&str] = &[
    "depth",
    "partial_depth",
    "trade",
    "aggTrade",
    "bookTicker",
    "kline",
    "miniTicker",
    "ticker",
    "miniTicker_arr",
    "rollingTicker",
    "avgPrice",
    "rollingTicker_arr",
    "stats",
];

/// `bookcast_control_messages_total{method}`: every label
/// [`crate::protocol::control::Outcome::method`] takes.
pub const CONTROL_METHODS: &[&str] = &[
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "LIST_SUBSCRIPTIONS",
    "SET_PROPERTY",
    "GET_PROPERTY",
    "unknown",
    "invalid",
];

/// `bookcast_control_errors_total{code}`: SPEC.md's error codes (0 unknown property, 1 invalid
/// value type, 2 invalid request, 3 invalid JSON).
pub const CONTROL_ERROR_CODES: &[u8] = &[0, 1, 2, 3];

/// `bookcast_rest_errors_total{code}`: every Binance error code a REST answer can carry.
pub const REST_ERROR_CODES: &[i32] = &[
    -1000, -1003, -1023, -1100, -1101, -1102, -1120, -1121, -1128,
];
/// `bookcast_ws_api_errors_total{code}` registered at zero: the codes the WebSocket API's own
/// checks send (bad JSON, missing method, unsupported method, weight limit, timeout) and the
/// current REST endpoints' parameter errors. Other REST codes are counted as they occur (their
/// values come from the server, never from the client, so the label stays bounded).
pub const WS_API_ERROR_CODES: &[i32] = &[-1000, -1003, -1007, -1020, -1100, -1102, -1121, -1135];

/// One series that exists before its first event: `label` is `(key, value)` for a labelled
/// family.
#[derive(Clone, Debug)]
pub struct KnownSeries {
    pub name: &'static str,
    pub kind: FamilyKind,
    pub label: Option<(&'static str, String)>,
}

/// The values of a labelled family's label that are known before its first event, from the
/// same lists the recording functions use (their `debug_assert!`s, or the [`Rejection`] enum,
/// keep the lists complete). Empty where none is: `bookcast_http_requests_total`'s status is
/// known only once a request is answered, and `bookcast_engine_updates_total`'s symbols come
/// from the feed ([`register_feed`]).
fn known_label_values(family: &str) -> Vec<String> {
    let owned = |values: &[&str]| values.iter().map(|v| v.to_string()).collect();
    match family {
        "bookcast_connections_rejected_total" => Rejection::ALL
            .iter()
            .map(|r| r.label().to_string())
            .collect(),
        "bookcast_auth_failures_total" => owned(AUTH_FAILURE_REASONS),
        "bookcast_subscriptions" => owned(SUBSCRIPTION_KINDS),
        "bookcast_resumes_total" => owned(RESUME_OUTCOMES),
        "bookcast_transport_requests_total"
        | "bookcast_transport_events_total"
        | "bookcast_transport_bytes_total"
        | "bookcast_transport_open" => Transport::ALL
            .iter()
            .map(|t| t.label().to_string())
            .collect(),
        "bookcast_closes_total" => LABELLED_CLOSE_CODES
            .iter()
            .flat_map(|codes| codes.clone().map(close_label))
            // 0 is in no labelled range: the "other" label.
            .chain(std::iter::once(close_label(0)))
            .collect(),
        "bookcast_control_messages_total" => owned(CONTROL_METHODS),
        "bookcast_rest_errors_total" => REST_ERROR_CODES.iter().map(|c| c.to_string()).collect(),
        "bookcast_ws_api_requests_total" => crate::front::ws_api::METHODS
            .iter()
            .map(|(method, _)| *method)
            .chain([
                crate::front::ws_api::UNKNOWN_METHOD,
                crate::front::ws_api::INVALID_REQUEST,
            ])
            .map(str::to_string)
            .collect(),
        "bookcast_ws_api_errors_total" => {
            WS_API_ERROR_CODES.iter().map(|c| c.to_string()).collect()
        }
        "bookcast_control_errors_total" => {
            CONTROL_ERROR_CODES.iter().map(|c| c.to_string()).collect()
        }
        _ => Vec::new(),
    }
}

/// Every series of [`FAMILIES`] that can exist before its first event: each unlabelled family,
/// and each labelled one at every label value known in advance.
pub fn known_series() -> Vec<KnownSeries> {
    let mut all = Vec::new();
    for family in FAMILIES {
        let (name, kind) = (family.name, family.kind);
        match family.label {
            None => all.push(KnownSeries {
                name,
                kind,
                label: None,
            }),
            Some(key) => {
                all.extend(
                    known_label_values(name)
                        .into_iter()
                        .map(|value| KnownSeries {
                            name,
                            kind,
                            label: Some((key, value)),
                        }),
                )
            }
        }
    }
    all
}

/// Registers every [`known_series`] at zero, so `/metrics` shows them from the start: a
/// dashboard or alert on a series that has not happened yet then sees 0, not "no data" (and
/// `rate()` has a starting point for the first event). Adding zero never disturbs a value, so
/// this is safe even if something was recorded before it ran.
fn zero_known_series() {
    for KnownSeries { name, kind, label } in known_series() {
        let labels: Vec<metrics::Label> = label
            .into_iter()
            .map(|(key, value)| metrics::Label::new(key, value))
            .collect();
        match kind {
            FamilyKind::Counter => counter!(name, labels).increment(0),
            FamilyKind::Gauge => gauge!(name, labels).increment(0.0),
            // Registering a histogram exposes it with empty buckets and a count of 0.
            FamilyKind::Histogram => drop(histogram!(name, labels)),
        }
    }
}

/// Registers `bookcast_engine_updates_total{symbol}` at zero for every symbol of the feed, at
/// startup: the engine thread resolves the same handles ([`EngineMetrics::new`]) only once it
/// runs, and a scrape may come first.
pub fn register_feed(feed: &crate::market::feed::Feed) {
    for spec in &feed.symbols {
        counter!("bookcast_engine_updates_total", "symbol" => spec.symbol.clone()).increment(0);
    }
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
        debug_assert!(
            SUBSCRIPTION_KINDS.contains(&kind),
            "topic label {kind:?} missing from SUBSCRIPTION_KINDS"
        );
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
    resyncs: Counter,
    conflated: Counter,
}

impl ShardMetrics {
    pub fn new(session: SessionMetrics) -> Self {
        ShardMetrics {
            session,
            enqueued: counter!("bookcast_frames_enqueued_total"),
            slow_consumers: counter!("bookcast_slow_consumer_disconnects_total"),
            slow_consumers_total: Arc::new(AtomicU64::new(0)),
            resyncs: counter!("bookcast_resyncs_total"),
            conflated: counter!("bookcast_conflated_total"),
        }
    }

    /// One pass over an event's subscribers: `conflated` queued events replaced by it,
    /// `resyncs` connections that overflowed and now wait for snapshots.
    pub fn backlog(&self, conflated: u64, resyncs: u64) {
        if conflated > 0 {
            self.conflated.increment(conflated);
        }
        if resyncs > 0 {
            self.resyncs.increment(resyncs);
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
    resume_events: Counter,
    history_bytes: Gauge,
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
            resume_events: counter!("bookcast_resume_events_total"),
            history_bytes: gauge!("bookcast_history_bytes"),
        }
    }

    /// One stream resumed with `resume=`: how it went, and the missed events sent.
    pub fn resumed(&self, outcome: &'static str, events: usize) {
        debug_assert!(RESUME_OUTCOMES.contains(&outcome));
        counter!("bookcast_resumes_total", "outcome" => outcome).increment(1);
        self.resume_events.increment(events as u64);
    }

    /// What the `resume=` history holds now.
    pub fn history_bytes(&self, bytes: usize) {
        self.history_bytes.set(bytes as f64);
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
        debug_assert!(
            CONTROL_METHODS.contains(&method),
            "control method label {method:?} missing from CONTROL_METHODS"
        );
        counter!("bookcast_control_messages_total", "method" => method).increment(1);
    }

    /// A control message was answered with error `code` (rate-limited by the protocol).
    pub fn control_error(&self, code: u8) {
        debug_assert!(
            CONTROL_ERROR_CODES.contains(&code),
            "control error code {code} missing from CONTROL_ERROR_CODES"
        );
        counter!("bookcast_control_errors_total", "code" => code.to_string()).increment(1);
    }
}

/// Close codes with a label of their own in `bookcast_closes_total`: the protocol's
/// 1000-1015 and the server's own 4000-4009.
const LABELLED_CLOSE_CODES: [std::ops::RangeInclusive<u16>; 2] = [1000..=1015, 4000..=4009];

/// The `code` label of `bookcast_closes_total`. A peer's close code is echoed, and 3000-4999
/// are all legal, so a label per code would let clients mint up to 2000 series; codes outside
/// [`LABELLED_CLOSE_CODES`] are counted together as "other".
fn close_label(code: u16) -> String {
    if LABELLED_CLOSE_CODES
        .iter()
        .any(|codes| codes.contains(&code))
    {
        code.to_string()
    } else {
        "other".to_string()
    }
}

fn count_close(code: u16) {
    counter!("bookcast_closes_total", "code" => close_label(code)).increment(1);
}

/// Declares [`Rejection`] and its list of every variant from one table, so the list that
/// registers the series at zero cannot miss a reason the server counts.
macro_rules! rejections {
    ($($(#[$doc:meta])* $variant:ident => $label:literal,)*) => {
        /// Why a connection was refused before the WebSocket upgrade: the `reason` label of
        /// `bookcast_connections_rejected_total`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Rejection {
            $($(#[$doc])* $variant,)*
        }

        impl Rejection {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Rejection] = &[$(Rejection::$variant,)*];

            /// The metric label.
            pub fn label(self) -> &'static str {
                match self {
                    $(Rejection::$variant => $label,)*
                }
            }
        }
    };
}

rejections! {
    /// No byte of a request arrived before the idle deadline (closed without a response).
    IdleTimeout => "idle_timeout",
    /// A request head started and did not complete in time (408).
    HandshakeTimeout => "handshake_timeout",
    /// A head over the size or header-count bound (431).
    HeadTooLarge => "head_too_large",
    /// Bytes that are not HTTP (400).
    MalformedRequest => "malformed_request",
    /// Too many upgrade attempts from one address (429).
    IpAttemptLimit => "ip_attempt_limit",
    /// An upgrade with bad RFC 6455 headers or method (400, 405, 426).
    BadHandshake => "bad_handshake",
    /// An `Origin` outside `--allowed-origins` (403).
    OriginNotAllowed => "origin_not_allowed",
    /// A bad `timeUnit`, `snapshot` or `resume`, or too many streams in the URL (400).
    BadStreamPath => "bad_stream_path",
    /// Too many open connections from one address (429).
    IpConnectionCap => "ip_connection_cap",
    /// A plain request on a WebSocket-only path (426).
    NotWebsocket => "not_websocket",
    /// The engine did not take the connection in time (503).
    EngineBusy => "engine_busy",
    /// A TLS handshake that failed or did not finish in time.
    TlsHandshake => "tls_handshake",
    /// A connection beyond `--max-connections` (503).
    ConnectionCap => "connection_cap",
    /// A cluster engine (`bookcast engine`) asked for anything but `/metrics` or `/api/v3/ping`.
    ClusterEngineOnly => "cluster_engine_only",
}

/// A connection refused before the WebSocket upgrade.
pub fn rejected(reason: Rejection) {
    counter!("bookcast_connections_rejected_total", "reason" => reason.label()).increment(1);
}

/// The plain-HTTP transports for the same streams (SPEC.md "Other transports").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Sse,
    LongPoll,
    /// Short polling: `wait=0`.
    Poll,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Sse, Transport::LongPoll, Transport::Poll];

    pub fn label(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::LongPoll => "longpoll",
            Transport::Poll => "poll",
        }
    }
}

/// One request on a plain-HTTP transport (an SSE stream opened, a poll answered).
pub fn transport_request(transport: Transport) {
    counter!("bookcast_transport_requests_total", "transport" => transport.label()).increment(1);
}

/// Events delivered over a plain-HTTP transport.
pub fn transport_events(transport: Transport, events: usize) {
    counter!("bookcast_transport_events_total", "transport" => transport.label())
        .increment(events as u64);
}

/// Bytes written over a plain-HTTP transport.
pub fn transport_bytes(transport: Transport, bytes: usize) {
    counter!("bookcast_transport_bytes_total", "transport" => transport.label())
        .increment(bytes as u64);
}

/// A transport's event and byte counters, resolved once (an SSE stream's writes are counted on
/// every write).
pub struct TransportCounters {
    events: Counter,
    bytes: Counter,
}

impl TransportCounters {
    pub fn new(transport: Transport) -> Self {
        TransportCounters {
            events: counter!("bookcast_transport_events_total", "transport" => transport.label()),
            bytes: counter!("bookcast_transport_bytes_total", "transport" => transport.label()),
        }
    }

    pub fn wrote(&self, events: usize, bytes: usize) {
        self.events.increment(events as u64);
        self.bytes.increment(bytes as u64);
    }
}

/// Counts an open SSE stream or waiting poll in `bookcast_transport_open` until dropped.
pub struct TransportOpen(Transport);

impl TransportOpen {
    pub fn new(transport: Transport) -> Self {
        gauge!("bookcast_transport_open", "transport" => transport.label()).increment(1.0);
        TransportOpen(transport)
    }
}

impl Drop for TransportOpen {
    fn drop(&mut self) {
        gauge!("bookcast_transport_open", "transport" => self.0.label()).decrement(1.0);
    }
}

/// `bookcast_auth_failures_total{reason}`: every value of
/// [`crate::front::auth::Refusal::label`] (listed here because metrics sits below `front/`).
pub const AUTH_FAILURE_REASONS: &[&str] = &["missing", "invalid"];

/// A WebSocket connection refused with 4001 after the upgrade; `reason` is
/// [`crate::front::auth::Refusal::label`] ("missing" or "invalid").
pub fn auth_failed(reason: &'static str) {
    debug_assert!(
        AUTH_FAILURE_REASONS.contains(&reason),
        "auth failure reason {reason:?} missing from AUTH_FAILURE_REASONS"
    );
    counter!("bookcast_auth_failures_total", "reason" => reason).increment(1);
}

/// A REST request answered with Binance's error `code`.
pub fn rest_error(code: i32) {
    debug_assert!(
        REST_ERROR_CODES.contains(&code),
        "REST error code {code} missing from REST_ERROR_CODES"
    );
    counter!("bookcast_rest_errors_total", "code" => code.to_string()).increment(1);
}

/// A WebSocket API request answered: `method` is a [`crate::front::ws_api::METHODS`] name or
/// one of its two fixed labels, `error` the code sent if it was refused. Requests are paced by
/// the request-weight limit, so the label lookups are off any hot path.
pub fn ws_api_request(method: &'static str, error: Option<i32>) {
    counter!("bookcast_ws_api_requests_total", "method" => method).increment(1);
    if let Some(code) = error {
        counter!("bookcast_ws_api_errors_total", "code" => code.to_string()).increment(1);
    }
}

/// A plain HTTP request answered; `path` must be one of the server's fixed routes or "other".
pub fn http_request(path: &'static str, status: u16) {
    counter!("bookcast_http_requests_total", "path" => path, "status" => status.to_string())
        .increment(1);
}
