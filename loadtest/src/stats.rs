//! What the clients measure, shared lock-light: atomic counters, and latency histograms sharded
//! by client so thousands of clients recording at once rarely meet on a lock.

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

const SHARDS: usize = 32;
/// Highest latency tracked: one minute, in µs (beyond is clamped, and counted as such).
const MAX_LATENCY_US: u64 = 60_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// A histogram split in shards; `record` locks one shard picked by the caller's id.
pub struct ShardedHistogram {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl ShardedHistogram {
    pub fn new() -> Self {
        Self::with_shards(SHARDS)
    }

    /// With `shards` shards (at least one): each holds a full histogram (about 140 KB).
    pub fn with_shards(shards: usize) -> Self {
        ShardedHistogram {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(histogram()))
                .collect(),
        }
    }

    /// Records a batch of latencies under one lock.
    pub fn record_all(&self, shard: usize, values_us: &[u32]) {
        let mut histogram = self.shards[shard % self.shards.len()].lock();
        for &value in values_us {
            histogram.saturating_record(u64::from(value).clamp(1, MAX_LATENCY_US));
        }
    }

    /// Merges all shards into `into`; with `reset`, empties them (interval histograms).
    pub fn merge_into(&self, into: &mut Histogram<u64>, reset: bool) {
        for shard in &self.shards {
            let mut shard = shard.lock();
            let _ = into.add(&*shard);
            if reset {
                shard.reset();
            }
        }
    }
}

/// How one slow client ended.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SlowClose {
    pub client: usize,
    /// Seconds after the run started.
    pub at_s: f64,
    /// Close code; 1006 when the connection dropped without a close frame.
    pub code: u16,
}

/// One client's counters, on a cache line of its own so clients on different threads never
/// contend for it.
#[repr(align(64))]
#[derive(Default)]
pub struct ClientCounters {
    pub events: AtomicU64,
    /// Payload bytes: the events' JSON as the server rendered it, without any framing.
    pub bytes: AtomicU64,
    /// What the client's sockets read and wrote, every byte: HTTP heads, WebSocket frame
    /// headers, SSE field names, poll envelopes (see `transport::Counted`).
    pub wire_in: AtomicU64,
    pub wire_out: AtomicU64,
    /// Index of the URL it loads (see `target::url_index`), for the per-URL event counts.
    pub url: usize,
}

/// Shards of each URL's latency histogram: fewer than the run's [`SHARDS`], since a URL has
/// a share of the clients and each shard costs a full histogram.
const URL_SHARDS: usize = 8;

/// What the clients of one URL measured; their events are summed from [`ClientCounters`].
pub struct UrlStats {
    /// Clients that got their WebSocket (each client connects once).
    pub connected: AtomicU64,
    pub connect_failures: AtomicU64,
    pub gaps: AtomicU64,
    pub latency: ShardedHistogram,
}

impl UrlStats {
    fn new() -> Self {
        UrlStats {
            connected: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            latency: ShardedHistogram::with_shards(URL_SHARDS),
        }
    }
}

/// Distinct connect-failure reasons kept; later new ones are counted under [`OTHER_REASONS`].
/// The reasons quote the server's answers, so a hostile or broken server must not be able to
/// grow the report without bound.
const MAX_REASONS: usize = 32;
/// Where reasons past [`MAX_REASONS`] are counted.
pub const OTHER_REASONS: &str = "other reasons";

/// What the book, resume and reconnect modes count (`--snapshot`, `--rest-book`, `--resume`,
/// `--reconnect-every`, `--reconnect-on-close`); all zero in a plain run.
pub struct SyncStats {
    /// `depthSnapshot` events received (first ones, resyncs and resume fallbacks).
    pub snapshots: AtomicU64,
    /// `depthSnapshot`s in the middle of a live diff stream: the server resynced the client.
    pub resyncs: AtomicU64,
    /// Slow clients that were resynced at least once.
    pub slow_resynced: AtomicU64,
    /// Catch-up diffs (`U` = the resumed id + 1) received on resumed connections.
    pub catchup_diffs: AtomicU64,
    /// Trades and aggTrades received on a resumed stream with an event time before the
    /// connection was opened: the server's replay of what the client missed.
    pub catchup_trades: AtomicU64,
    /// `depthSnapshot`s instead of a catch-up diff: the resumed id was older than the
    /// server's history (or unknown to it).
    pub resume_snapshots: AtomicU64,
    /// `resumeGap` events, and the trades they said are lost.
    pub resume_gaps: AtomicU64,
    pub resume_gap_trades: AtomicU64,
    /// Update ids and trade ids never received and never announced (a gap, or a resume that
    /// did not start at id + 1).
    pub missed_updates: AtomicU64,
    pub missed_trades: AtomicU64,
    /// REST depth snapshots fetched to build books the Binance way (`--rest-book`), and
    /// refetches because one was older than the first buffered diff.
    pub rest_snapshots: AtomicU64,
    pub rest_refetches: AtomicU64,
    /// Bytes of the REST responses fetched to recover after a lost connection (what the
    /// server sent for them, head included): a reconnect storm's REST cost.
    pub recovery_rest_bytes: AtomicU64,
    /// End-of-run comparisons with REST: equal, different, not made at one update id in
    /// time, refused by the server's REST weight limit.
    pub book_checks: AtomicU64,
    pub book_mismatches: AtomicU64,
    pub book_checks_inconclusive: AtomicU64,
    pub book_checks_limited: AtomicU64,
    /// The first few mismatches, described.
    pub mismatch_examples: Mutex<Vec<String>>,
    /// Connections opened again after one ended, and attempts that failed on the way.
    pub reconnects: AtomicU64,
    pub reconnect_failures: AtomicU64,
    /// From losing a connection to having every diff stream's book live again (or, without
    /// diff streams, the first event), in µs.
    pub recovery_us: Mutex<Histogram<u64>>,
    /// µs since the run started: the first connection lost, the last recovery.
    pub first_lost_us: AtomicU64,
    pub last_live_us: AtomicU64,
}

/// Mismatches described in the report; the rest are only counted.
const MISMATCH_EXAMPLES: usize = 5;

impl SyncStats {
    fn new() -> Self {
        SyncStats {
            snapshots: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            slow_resynced: AtomicU64::new(0),
            catchup_diffs: AtomicU64::new(0),
            catchup_trades: AtomicU64::new(0),
            resume_snapshots: AtomicU64::new(0),
            resume_gaps: AtomicU64::new(0),
            resume_gap_trades: AtomicU64::new(0),
            missed_updates: AtomicU64::new(0),
            missed_trades: AtomicU64::new(0),
            rest_snapshots: AtomicU64::new(0),
            rest_refetches: AtomicU64::new(0),
            recovery_rest_bytes: AtomicU64::new(0),
            book_checks: AtomicU64::new(0),
            book_mismatches: AtomicU64::new(0),
            book_checks_inconclusive: AtomicU64::new(0),
            book_checks_limited: AtomicU64::new(0),
            mismatch_examples: Mutex::new(Vec::new()),
            reconnects: AtomicU64::new(0),
            reconnect_failures: AtomicU64::new(0),
            recovery_us: Mutex::new(histogram()),
            first_lost_us: AtomicU64::new(u64::MAX),
            last_live_us: AtomicU64::new(0),
        }
    }

    pub fn mismatch(&self, example: String) {
        self.book_mismatches.fetch_add(1, Ordering::Relaxed);
        let mut examples = self.mismatch_examples.lock();
        if examples.len() < MISMATCH_EXAMPLES {
            examples.push(example);
        }
    }

    /// A recovery that took `us`, from a loss at `lost_us` (both µs since the run started).
    pub fn recovered(&self, lost_us: u64, live_us: u64) {
        self.recovery_us
            .lock()
            .saturating_record(live_us.saturating_sub(lost_us).clamp(1, MAX_LATENCY_US));
        self.first_lost_us.fetch_min(lost_us, Ordering::Relaxed);
        self.last_live_us.fetch_max(live_us, Ordering::Relaxed);
    }
}

/// What `--transport` counts beyond events: requests and what HTTP framing cost.
#[derive(Default)]
pub struct TransportStats {
    /// HTTP requests sent: WebSocket upgrades, SSE streams opened, polls.
    pub requests: AtomicU64,
    /// Bytes of the HTTP response heads read (status line and headers, up to the blank line).
    pub response_head_bytes: AtomicU64,
    /// Non-200 answers by status (a 410 for an expired cursor, a 429, ...).
    pub http_errors: Mutex<BTreeMap<u16, u64>>,
    /// Connections opened again after one ended (an SSE stream that ended, a keep-alive the
    /// server closed), and attempts that failed on the way.
    pub reconnects: AtomicU64,
    pub reconnect_failures: AtomicU64,
}

impl TransportStats {
    pub fn http_error(&self, status: u16) {
        *self.http_errors.lock().entry(status).or_default() += 1;
    }
}

pub struct Stats {
    pub gaps: AtomicU64,
    pub sync: SyncStats,
    pub transport: TransportStats,
    pub connected: AtomicU64,
    pub connect_failures: AtomicU64,
    /// [`Stats::connect_failures`] by why: see `client::ConnectError`.
    pub connect_failure_reasons: Mutex<BTreeMap<String, u64>>,
    pub latency: ShardedHistogram,
    pub fast_latency: ShardedHistogram,
    /// Since the last progress tick; reset by the sampler.
    pub interval_latency: ShardedHistogram,
    pub connect_ms: Mutex<Histogram<u64>>,
    /// When the run was told to stop, µs since the epoch (the event times' clock); 0 while it
    /// runs. Latencies are recorded for events received before it: what clients read
    /// afterwards (while every book client fetches a REST snapshot at once to check its book,
    /// and all of them close) measures the test's own teardown, not the fan-out. Clients see
    /// the stop one by one, so a flag of their own would still let in events delayed by the
    /// first clients' teardown.
    pub stopped_at_us: AtomicU64,
    pub closes: Mutex<BTreeMap<u16, u64>>,
    pub slow_closed: Mutex<Vec<SlowClose>>,
    pub per_client: Vec<ClientCounters>,
    /// By URL index, as `--url` lists them.
    pub per_url: Vec<UrlStats>,
}

impl Stats {
    /// For `clients` clients over `urls` URLs, client `i` loading URL `url_of(i)` (an index
    /// below `urls`; larger ones are counted under the last URL rather than lost).
    pub fn new(clients: usize, urls: usize, url_of: impl Fn(usize) -> usize) -> Self {
        let urls = urls.max(1);
        Stats {
            gaps: AtomicU64::new(0),
            sync: SyncStats::new(),
            transport: TransportStats::default(),
            connected: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            connect_failure_reasons: Mutex::new(BTreeMap::new()),
            latency: ShardedHistogram::new(),
            fast_latency: ShardedHistogram::new(),
            interval_latency: ShardedHistogram::new(),
            connect_ms: Mutex::new(histogram()),
            stopped_at_us: AtomicU64::new(0),
            closes: Mutex::new(BTreeMap::new()),
            slow_closed: Mutex::new(Vec::new()),
            per_client: (0..clients)
                .map(|i| ClientCounters {
                    url: url_of(i).min(urls - 1),
                    ..ClientCounters::default()
                })
                .collect(),
            per_url: (0..urls).map(|_| UrlStats::new()).collect(),
        }
    }

    /// Whether an event received at `received_us` counts toward latency (see
    /// [`Stats::stopped_at_us`]).
    pub fn measures(&self, received_us: u64) -> bool {
        let stopped = self.stopped_at_us.load(Ordering::Relaxed);
        stopped == 0 || received_us < stopped
    }

    /// Events received so far by the clients of each URL.
    pub fn events_by_url(&self) -> Vec<u64> {
        let mut events = vec![0; self.per_url.len()];
        for client in &self.per_client {
            if let Some(sum) = events.get_mut(client.url) {
                *sum += client.events.load(Ordering::Relaxed);
            }
        }
        events
    }

    /// Clients of each URL.
    pub fn clients_by_url(&self) -> Vec<usize> {
        let mut clients = vec![0; self.per_url.len()];
        for client in &self.per_client {
            if let Some(n) = clients.get_mut(client.url) {
                *n += 1;
            }
        }
        clients
    }

    /// The stats of URL `url` (the last one for an index past the end, as in [`Stats::new`]).
    pub fn url(&self, url: usize) -> &UrlStats {
        &self.per_url[url.min(self.per_url.len() - 1)]
    }

    /// Events and bytes received so far, over all clients.
    pub fn totals(&self) -> (u64, u64) {
        self.per_client.iter().fold((0, 0), |(e, b), c| {
            (
                e + c.events.load(Ordering::Relaxed),
                b + c.bytes.load(Ordering::Relaxed),
            )
        })
    }

    /// Bytes read and written on the wire so far, over all clients.
    pub fn wire_totals(&self) -> (u64, u64) {
        self.per_client.iter().fold((0, 0), |(i, o), c| {
            (
                i + c.wire_in.load(Ordering::Relaxed),
                o + c.wire_out.load(Ordering::Relaxed),
            )
        })
    }

    pub fn closed(&self, code: u16) {
        *self.closes.lock().entry(code).or_default() += 1;
    }

    /// Counts a client of URL `url` that never got its WebSocket, and why.
    pub fn connect_failed(&self, url: usize, reason: String) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
        self.url(url)
            .connect_failures
            .fetch_add(1, Ordering::Relaxed);
        let mut reasons = self.connect_failure_reasons.lock();
        let key = if reasons.len() < MAX_REASONS || reasons.contains_key(&reason) {
            reason
        } else {
            OTHER_REASONS.to_string()
        };
        *reasons.entry(key).or_default() += 1;
    }
}
