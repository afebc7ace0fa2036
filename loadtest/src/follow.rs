//! What a client checks on every event of the streams it follows: latency, sequence
//! continuity per stream (diff `U`/`u`, trade `t`, aggTrade `a`), and in the book modes a local
//! order book (from an in-band `depthSnapshot` or, the Binance way, a REST snapshot bridged to
//! buffered diffs). Resumed connections are checked against the ids the client held: the
//! catch-up must start at id + 1, or the server must say it cannot (`depthSnapshot`,
//! `resumeGap`). The state survives reconnects; each connection says how it starts
//! ([`Session::begin`]).

use crate::book::{Book, CombinedLevels, DepthLevels, RestSnapshot};
use crate::stats::Stats;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::sync::atomic::Ordering;

/// Only the fields the checks need; simd-json skips the rest (book levels included).
#[derive(Deserialize)]
#[allow(non_snake_case)]
struct Event<'a> {
    #[serde(borrow)]
    e: Option<&'a str>,
    E: Option<u64>,
    #[serde(borrow)]
    s: Option<&'a str>,
    U: Option<u64>,
    u: Option<u64>,
    t: Option<u64>,
    /// An aggTrade's id; a diff's asks (an array) are skipped.
    #[serde(default, deserialize_with = "id_or_skip")]
    a: Option<u64>,
    #[serde(rename = "lastUpdateId")]
    last_update_id: Option<u64>,
    /// `resumeGap`: the stream it is about, and the trades lost.
    #[serde(borrow)]
    stream: Option<&'a str>,
    from: Option<u64>,
    to: Option<u64>,
}

#[derive(Deserialize)]
struct Combined<'a> {
    #[serde(borrow)]
    stream: Option<&'a str>,
    #[serde(borrow)]
    data: Option<Event<'a>>,
}

/// A number, or anything else skipped: `a` is an aggTrade's id but a diff's ask levels.
fn id_or_skip<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct IdOrSkip;
    impl<'de> Visitor<'de> for IdOrSkip {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an id, or anything to skip")
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(u64::try_from(v).ok())
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }
    d.deserialize_any(IdOrSkip)
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Kind {
    /// A diff-depth stream (`@depth`, `@depth@100ms`, `@depth@1000ms`, `@depth@0ms`).
    Diff,
    Trade,
    AggTrade,
    /// Anything else: latency only.
    Other,
}

impl Kind {
    pub fn of(stream: &str) -> Kind {
        let Some((_, rest)) = stream.split_once('@') else {
            return Kind::Other;
        };
        match rest {
            "depth" | "depth@100ms" | "depth@1000ms" | "depth@0ms" => Kind::Diff,
            "trade" => Kind::Trade,
            "aggTrade" => Kind::AggTrade,
            _ => Kind::Other,
        }
    }

    /// Whether `resume=` names it: streams with ids (SPEC.md, "Resume").
    pub fn resumable(self) -> bool {
        self != Kind::Other
    }
}

/// A buffered diff, waiting for a REST snapshot to bridge it (`--rest-book`).
#[derive(Debug)]
struct OwnedDiff {
    first: u64,
    last: u64,
    bids: Vec<(String, String)>,
    asks: Vec<(String, String)>,
}

/// Where a stream's sequence stands on the current connection.
#[derive(Debug)]
enum Phase {
    /// A fresh connection without a book: the first event starts the sequence.
    Fresh,
    /// `snapshot=true`: a `depthSnapshot` comes first.
    AwaitSnapshot,
    /// After a snapshot at N: the first diff must have `U <= N+1 <= u`.
    AfterSnapshot(u64),
    /// Resumed from this id: the next diff must have `U` = id + 1, the next trade `t` = id + 1
    /// (or the server says it cannot: `depthSnapshot`, `resumeGap`).
    Resumed(u64),
    /// `--rest-book`: diffs buffered until a REST snapshot bridges them.
    Rest {
        buffer: Vec<OwnedDiff>,
        snapshot: Option<Book>,
        /// A fetch is wanted and not yet started.
        want_fetch: bool,
    },
    /// Contiguous: the next diff's `U` is the last `u` + 1, the next trade's id the last + 1.
    Live,
    /// A book mode after a gap: no book until the next snapshot.
    Broken,
}

/// Diffs a `--rest-book` client buffers while its REST snapshot is on the way; past it the
/// oldest is dropped and the bridge check will ask for a newer snapshot.
const MAX_BUFFERED: usize = 100_000;

/// One stream a client follows.
pub struct Followed {
    pub name: String,
    pub kind: Kind,
    /// Upper case, as events carry it in `s`.
    pub symbol: String,
    /// The last id held: `u` of a diff stream, `t` of trades, `a` of aggTrades.
    pub last: Option<u64>,
    phase: Phase,
    pub book: Option<Book>,
    /// Book live (or sequence started) on this connection.
    synced: bool,
}

impl Followed {
    pub fn new(name: &str) -> Self {
        Followed {
            name: name.to_string(),
            kind: Kind::of(name),
            symbol: name.split('@').next().unwrap_or_default().to_uppercase(),
            last: None,
            phase: Phase::Fresh,
            book: None,
            synced: false,
        }
    }

    /// Whether its book is current and contiguous (for the end-of-run check).
    pub fn book_live(&self) -> bool {
        matches!(self.phase, Phase::Live) && self.book.is_some()
    }
}

/// How a client follows its streams.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mode {
    /// `snapshot=true`: each diff stream starts with a `depthSnapshot`; keep books.
    pub snapshot: bool,
    /// Keep books the Binance way: buffer diffs, fetch a REST snapshot, bridge.
    pub rest_book: bool,
    /// Reconnect with `resume=` for every stream with an id.
    pub resume: bool,
}

impl Mode {
    pub fn books(self) -> bool {
        self.snapshot || self.rest_book
    }
}

/// Latencies a client buffers before recording them under one lock.
const LATENCY_BATCH: usize = 64;
/// ... or after this long, so per-second percentiles stay current for slow streams.
const FLUSH_EVERY_US: u64 = 200_000;

/// A client's checking state across its connections.
pub struct Session {
    pub id: usize,
    pub url_index: usize,
    pub slow: bool,
    pub mode: Mode,
    pub streams: Vec<Followed>,
    /// The connection was resumed (`resume=` sent): trades older than it are catch-up.
    resumed: bool,
    /// When the current connection was opened, µs since the epoch (the event times' clock).
    connected_at_us: u64,
    /// µs since the run started when the previous connection was lost, until recovered.
    lost_at: Option<u64>,
    /// Whether this client was resynced at least once.
    pub resynced: bool,
    latencies: Vec<u32>,
    flushed_at_us: u64,
    buffers: simd_json::Buffers,
    /// A copy of the event for the book modes' second parse (levels).
    levels_scratch: Vec<u8>,
    /// Event times are in µs (`timeUnit=MICROSECOND`), else ms.
    pub micros: bool,
}

impl Session {
    pub fn new(id: usize, url_index: usize, slow: bool, mode: Mode, streams: &[String]) -> Self {
        Session {
            id,
            url_index,
            slow,
            mode,
            streams: streams.iter().map(|s| Followed::new(s)).collect(),
            resumed: false,
            connected_at_us: 0,
            lost_at: None,
            resynced: false,
            latencies: Vec::with_capacity(LATENCY_BATCH),
            flushed_at_us: crate::client::now_us(),
            buffers: simd_json::Buffers::new(1024),
            levels_scratch: Vec::new(),
            micros: true,
        }
    }

    /// The `resume=` value for the next connection (empty when there is nothing to resume).
    pub fn resume_param(&self) -> String {
        if !self.mode.resume {
            return String::new();
        }
        self.streams
            .iter()
            .filter(|f| f.kind.resumable())
            .filter_map(|f| f.last.map(|id| format!("{}:{id}", f.name)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A new connection starts; `resumed` when it was opened with [`Session::resume_param`].
    pub fn begin(&mut self, resumed: bool, connected_at_us: u64) {
        self.resumed = resumed;
        self.connected_at_us = connected_at_us;
        for f in &mut self.streams {
            f.synced = false;
            f.phase = match (f.kind, resumed, f.last) {
                (Kind::Other, _, _) => Phase::Live,
                (_, true, Some(id)) => Phase::Resumed(id),
                (Kind::Diff, _, _) if self.mode.snapshot => Phase::AwaitSnapshot,
                (Kind::Diff, _, _) if self.mode.rest_book => Phase::Rest {
                    buffer: Vec::new(),
                    snapshot: None,
                    want_fetch: true,
                },
                _ => Phase::Fresh,
            };
            if !matches!(f.phase, Phase::Resumed(_)) {
                // Starting over: the old book and ids mean nothing on this connection.
                f.book = None;
                f.last = None;
            }
        }
    }

    /// The connection was lost at `at_us` (µs since the run started) and will be opened again.
    pub fn lost(&mut self, at_us: u64) {
        self.lost_at.get_or_insert(at_us);
    }

    /// A diff stream whose REST snapshot should be fetched now (`--rest-book`), marked as
    /// being fetched.
    pub fn next_fetch(&mut self) -> Option<usize> {
        let i = self.streams.iter().position(|f| {
            matches!(
                f.phase,
                Phase::Rest {
                    want_fetch: true,
                    ..
                }
            )
        })?;
        if let Phase::Rest { want_fetch, .. } = &mut self.streams[i].phase {
            *want_fetch = false;
        }
        Some(i)
    }

    /// The REST snapshot for stream `i` arrived (or did not: then it is asked for again).
    pub fn on_rest(
        &mut self,
        i: usize,
        rest: Option<(RestSnapshot, usize)>,
        stats: &Stats,
        started_us: u64,
    ) {
        let recovering = self.lost_at.is_some();
        let Some(f) = self.streams.get_mut(i) else {
            return;
        };
        if let Phase::Rest {
            snapshot,
            want_fetch,
            ..
        } = &mut f.phase
        {
            match rest {
                Some((rest, bytes)) => {
                    stats.sync.rest_snapshots.fetch_add(1, Ordering::Relaxed);
                    if recovering {
                        stats
                            .sync
                            .recovery_rest_bytes
                            .fetch_add(bytes as u64, Ordering::Relaxed);
                    }
                    *snapshot = Some(Book::from_rest(&rest));
                }
                None => *want_fetch = true,
            }
        }
        self.bridge(i, stats, started_us);
    }

    /// `--rest-book`: Binance's local-book algorithm on the buffer. Drop diffs the snapshot
    /// already holds (`u <= lastUpdateId`); the first kept must have `U <= lastUpdateId + 1`,
    /// else the snapshot is too old and another is fetched.
    fn bridge(&mut self, i: usize, stats: &Stats, started_us: u64) {
        let f = &mut self.streams[i];
        let Phase::Rest {
            buffer,
            snapshot,
            want_fetch,
        } = &mut f.phase
        else {
            return;
        };
        let Some(book) = snapshot else { return };
        let from = book.u;
        buffer.retain(|d| d.last > from);
        let Some(first) = buffer.first() else { return };
        if first.first > from + 1 {
            stats.sync.rest_refetches.fetch_add(1, Ordering::Relaxed);
            *snapshot = None;
            *want_fetch = true;
            return;
        }
        let (mut book, buffer) = (book.clone(), std::mem::take(buffer));
        let mut missed = 0;
        for d in &buffer {
            if d.first > book.u + 1 {
                missed += d.first - book.u - 1;
            }
            book.apply(d.last, &d.bids, &d.asks);
        }
        f.last = Some(book.u);
        f.book = Some(book);
        f.phase = Phase::Live;
        if missed > 0 {
            self.missed(i, missed, stats);
        } else {
            self.synced(i, stats, started_us);
        }
    }

    /// Stream `i` is live on this connection; once all are, a pending recovery is recorded.
    fn synced(&mut self, i: usize, stats: &Stats, started_us: u64) {
        self.streams[i].synced = true;
        if self.lost_at.is_none() {
            return;
        }
        // Books decide; a client without diff streams is back with its first trades.
        let has_diffs = self.streams.iter().any(|f| f.kind == Kind::Diff);
        let all = self
            .streams
            .iter()
            .filter(|f| {
                if has_diffs {
                    f.kind == Kind::Diff
                } else {
                    f.kind != Kind::Other
                }
            })
            .all(|f| f.synced);
        if all {
            if let Some(lost) = self.lost_at.take() {
                let now = crate::client::now_us().saturating_sub(started_us);
                stats.sync.recovered(lost, now);
            }
        }
    }

    /// `count` ids of stream `i` never arrived: a gap. A book is broken until its next
    /// snapshot (a `--rest-book` client fetches one).
    fn missed(&mut self, i: usize, count: u64, stats: &Stats) {
        let f = &mut self.streams[i];
        stats.gaps.fetch_add(1, Ordering::Relaxed);
        stats
            .url(self.url_index)
            .gaps
            .fetch_add(1, Ordering::Relaxed);
        match f.kind {
            Kind::Diff => stats
                .sync
                .missed_updates
                .fetch_add(count, Ordering::Relaxed),
            _ => stats.sync.missed_trades.fetch_add(count, Ordering::Relaxed),
        };
        if f.kind == Kind::Diff && self.mode.books() {
            f.book = None;
            f.phase = if self.mode.rest_book {
                Phase::Rest {
                    buffer: Vec::new(),
                    snapshot: None,
                    want_fetch: true,
                }
            } else {
                Phase::Broken
            };
        }
    }

    /// An overlap or repeat (an id at or below the last held): a gap in the old sense, but
    /// nothing is missing.
    fn repeated(&self, stats: &Stats) {
        stats.gaps.fetch_add(1, Ordering::Relaxed);
        stats
            .url(self.url_index)
            .gaps
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Which followed stream an event belongs to: by the combined wrapper's name, else by
    /// kind and symbol (raw connections carry no stream name).
    fn route(&self, name: Option<&str>, kind: Kind, symbol: &str) -> Option<usize> {
        if let Some(name) = name {
            if let Some(i) = self.streams.iter().position(|f| f.name == name) {
                return Some(i);
            }
        }
        self.streams
            .iter()
            .position(|f| f.kind == kind && f.symbol == symbol)
    }

    /// Checks one event; `text` is parsed in place. `started_us`: the run's start, µs since
    /// the epoch.
    pub fn check(&mut self, text: &mut [u8], received_us: u64, started_us: u64, stats: &Stats) {
        let books = self.mode.books();
        if books {
            self.levels_scratch.clear();
            self.levels_scratch.extend_from_slice(text);
        }
        let combined = text.starts_with(b"{\"stream\"");
        let (name, event) = if combined {
            match simd_json::serde::from_slice_with_buffers::<Combined>(text, &mut self.buffers) {
                Ok(c) => (c.stream, c.data),
                Err(_) => (None, None),
            }
        } else {
            (
                None,
                simd_json::serde::from_slice_with_buffers::<Event>(text, &mut self.buffers).ok(),
            )
        };
        let Some(event) = event else { return };
        let symbol = event.s.unwrap_or("");
        let mut catchup = false;
        match event.e {
            Some(e @ ("depthUpdate" | "depthSnapshot")) => {
                if let Some(i) = self.route(name, Kind::Diff, symbol) {
                    let mut scratch = std::mem::take(&mut self.levels_scratch);
                    let levels = if books {
                        parse_levels(&mut scratch, combined, &mut self.buffers)
                    } else {
                        None
                    };
                    catchup = if e == "depthSnapshot" {
                        self.on_snapshot(i, event.last_update_id, levels, stats, started_us);
                        false
                    } else {
                        match (event.U, event.u) {
                            (Some(first), Some(last)) => {
                                self.on_diff(i, first, last, levels, stats, started_us)
                            }
                            _ => false,
                        }
                    };
                    self.levels_scratch = scratch;
                }
            }
            Some(e @ ("trade" | "aggTrade")) => {
                let (kind, id) = if e == "trade" {
                    (Kind::Trade, event.t)
                } else {
                    (Kind::AggTrade, event.a)
                };
                if let (Some(i), Some(id)) = (self.route(name, kind, symbol), id) {
                    let time_us = event.E.map(|t| if self.micros { t } else { t * 1000 });
                    catchup = self.resumed && time_us.is_some_and(|t| t < self.connected_at_us);
                    if catchup {
                        stats.sync.catchup_trades.fetch_add(1, Ordering::Relaxed);
                    }
                    self.on_trade(i, id, stats, started_us);
                }
            }
            Some("resumeGap") => {
                let i = event
                    .stream
                    .and_then(|n| self.streams.iter().position(|f| f.name == n));
                stats.sync.resume_gaps.fetch_add(1, Ordering::Relaxed);
                if let (Some(from), Some(to)) = (event.from, event.to) {
                    stats
                        .sync
                        .resume_gap_trades
                        .fetch_add((to + 1).saturating_sub(from), Ordering::Relaxed);
                    if let Some(f) = i.and_then(|i| self.streams.get_mut(i)) {
                        // The next trade sent is `to` + 1.
                        f.last = Some(to);
                        f.phase = Phase::Resumed(to);
                    }
                }
                return;
            }
            _ => {}
        }
        // A replay's event times are those of the original events: not a latency; nor is what
        // arrives once the run stops (see `Stats::stopped_at_us`).
        if let (Some(event_us), false, true) = (event.E, catchup, stats.measures(received_us)) {
            let latency = received_us
                .saturating_sub(event_us)
                .min(u64::from(u32::MAX)) as u32;
            self.latencies.push(latency);
        }
        if self.latencies.len() >= LATENCY_BATCH
            || received_us.saturating_sub(self.flushed_at_us) >= FLUSH_EVERY_US
        {
            self.flushed_at_us = received_us;
            self.flush(stats);
        }
    }

    fn on_snapshot(
        &mut self,
        i: usize,
        last_update_id: Option<u64>,
        levels: Option<DepthLevels>,
        stats: &Stats,
        started_us: u64,
    ) {
        stats.sync.snapshots.fetch_add(1, Ordering::Relaxed);
        let books = self.mode.books();
        let f = &mut self.streams[i];
        match f.phase {
            Phase::Resumed(_) => {
                stats.sync.resume_snapshots.fetch_add(1, Ordering::Relaxed);
            }
            Phase::Live | Phase::AfterSnapshot(_) | Phase::Broken => {
                stats.sync.resyncs.fetch_add(1, Ordering::Relaxed);
                self.resynced = true;
            }
            _ => {}
        }
        let Some(n) = last_update_id else {
            f.phase = Phase::Broken;
            return;
        };
        f.book = match (books, levels) {
            (true, Some(l)) => Some(Book::from_snapshot(
                n,
                l.bids.as_deref().unwrap_or_default(),
                l.asks.as_deref().unwrap_or_default(),
            )),
            _ => None,
        };
        f.last = Some(n);
        f.phase = Phase::AfterSnapshot(n);
        self.synced(i, stats, started_us);
    }

    /// Checks a diff's place in its stream and applies it to the book; returns whether it
    /// was a catch-up diff.
    fn on_diff(
        &mut self,
        i: usize,
        first: u64,
        last: u64,
        levels: Option<DepthLevels>,
        stats: &Stats,
        started_us: u64,
    ) -> bool {
        enum Step {
            Start,
            Apply,
            CatchUp { overlap: bool },
            Drop,
            Repeat { apply: bool },
            Missed(u64),
            Buffer,
        }
        let books = self.mode.books();
        let f = &self.streams[i];
        let step = match f.phase {
            Phase::Fresh => Step::Start,
            // snapshot=true promises the snapshot first: a diff before it breaks the
            // contract, counted as a gap.
            Phase::AwaitSnapshot => Step::Repeat { apply: false },
            Phase::AfterSnapshot(n) if last <= n => Step::Drop,
            Phase::AfterSnapshot(n) if first > n + 1 => Step::Missed(first - n - 1),
            Phase::AfterSnapshot(_) => Step::Apply,
            Phase::Resumed(id) if last <= id => Step::Repeat { apply: false },
            Phase::Resumed(id) if first > id + 1 => Step::Missed(first - id - 1),
            Phase::Resumed(id) => Step::CatchUp {
                overlap: first < id + 1,
            },
            Phase::Rest { .. } => Step::Buffer,
            Phase::Live => {
                let previous = f.last.unwrap_or(0);
                if first == previous + 1 {
                    Step::Apply
                } else if first > previous + 1 {
                    Step::Missed(first - previous - 1)
                } else {
                    Step::Repeat {
                        apply: last > previous,
                    }
                }
            }
            Phase::Broken => Step::Drop,
        };
        let apply = |f: &mut Followed| {
            if let (Some(book), Some(l)) = (f.book.as_mut(), &levels) {
                book.apply(
                    last,
                    l.b.as_deref().unwrap_or_default(),
                    l.a.as_deref().unwrap_or_default(),
                );
            }
            f.last = Some(last);
            f.phase = Phase::Live;
        };
        match step {
            Step::Start => {
                let f = &mut self.streams[i];
                f.last = Some(last);
                f.phase = Phase::Live;
                self.synced(i, stats, started_us);
            }
            Step::Apply => apply(&mut self.streams[i]),
            Step::CatchUp { overlap } => {
                if overlap {
                    self.repeated(stats);
                }
                stats.sync.catchup_diffs.fetch_add(1, Ordering::Relaxed);
                apply(&mut self.streams[i]);
                self.synced(i, stats, started_us);
                return true;
            }
            Step::Drop => {}
            Step::Repeat { apply: also } => {
                self.repeated(stats);
                if also {
                    apply(&mut self.streams[i]);
                }
            }
            Step::Missed(count) => {
                self.missed(i, count, stats);
                if !books {
                    // No book to break: the sequence goes on from here.
                    let f = &mut self.streams[i];
                    f.last = Some(last);
                    f.phase = Phase::Live;
                    self.synced(i, stats, started_us);
                } else if self.mode.rest_book {
                    // This diff is the first one the new REST snapshot must bridge.
                    self.buffer(i, first, last, &levels, stats, started_us);
                }
            }
            Step::Buffer => self.buffer(i, first, last, &levels, stats, started_us),
        }
        false
    }

    /// `--rest-book`: keeps a diff until a REST snapshot bridges it.
    fn buffer(
        &mut self,
        i: usize,
        first: u64,
        last: u64,
        levels: &Option<DepthLevels>,
        stats: &Stats,
        started_us: u64,
    ) {
        let Phase::Rest { buffer, .. } = &mut self.streams[i].phase else {
            return;
        };
        if buffer.len() >= MAX_BUFFERED {
            buffer.remove(0);
        }
        let own = |l: &Option<crate::book::Levels>| -> Vec<(String, String)> {
            l.iter()
                .flatten()
                .map(|(p, q)| (p.to_string(), q.to_string()))
                .collect()
        };
        let (bids, asks) = match levels {
            Some(l) => (own(&l.b), own(&l.a)),
            None => (Vec::new(), Vec::new()),
        };
        buffer.push(OwnedDiff {
            first,
            last,
            bids,
            asks,
        });
        self.bridge(i, stats, started_us);
    }

    fn on_trade(&mut self, i: usize, id: u64, stats: &Stats, started_us: u64) {
        let f = &mut self.streams[i];
        match f.phase {
            Phase::Resumed(held) | Phase::AfterSnapshot(held) => {
                f.phase = Phase::Live;
                f.last = Some(id.max(held));
                if id > held + 1 {
                    self.missed(i, id - held - 1, stats);
                } else if id <= held {
                    self.repeated(stats);
                }
                self.synced(i, stats, started_us);
            }
            Phase::Live => {
                let previous = f.last.unwrap_or(0);
                f.last = Some(id.max(previous));
                if id > previous + 1 {
                    self.missed(i, id - previous - 1, stats);
                } else if id <= previous {
                    self.repeated(stats);
                }
            }
            _ => {
                f.last = Some(id);
                f.phase = Phase::Live;
                self.synced(i, stats, started_us);
            }
        }
    }

    pub fn flush(&mut self, stats: &Stats) {
        if self.latencies.is_empty() {
            return;
        }
        stats.latency.record_all(self.id, &self.latencies);
        stats.interval_latency.record_all(self.id, &self.latencies);
        // A URL's clients have every n-th id: by id / n they spread over all its shards.
        stats
            .url(self.url_index)
            .latency
            .record_all(self.id / stats.per_url.len().max(1), &self.latencies);
        if !self.slow {
            stats.fast_latency.record_all(self.id, &self.latencies);
        }
        self.latencies.clear();
    }
}

/// The level arrays of a depth event, from the copy made before the first parse.
fn parse_levels<'a>(
    text: &'a mut [u8],
    combined: bool,
    buffers: &mut simd_json::Buffers,
) -> Option<DepthLevels<'a>> {
    if combined {
        simd_json::serde::from_slice_with_buffers::<CombinedLevels>(text, buffers)
            .ok()
            .and_then(|c| c.data)
    } else {
        simd_json::serde::from_slice_with_buffers::<DepthLevels>(text, buffers).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(mode: Mode, streams: &[&str]) -> Session {
        let names: Vec<String> = streams.iter().map(|s| s.to_string()).collect();
        let mut s = Session::new(0, 0, false, mode, &names);
        s.begin(false, 0);
        s
    }

    fn feed(s: &mut Session, stats: &Stats, text: String) {
        s.check(&mut text.into_bytes(), crate::client::now_us(), 0, stats);
    }

    fn diff(first: u64, last: u64, bid: &str) -> String {
        format!(
            r#"{{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":{first},"u":{last},"b":[["{bid}","1.00000000"]],"a":[["9.00000000","0.00000000"]]}}"#
        )
    }

    fn snapshot(n: u64) -> String {
        format!(
            r#"{{"e":"depthSnapshot","E":1,"s":"BTCUSDT","lastUpdateId":{n},"bids":[["1.00000000","2.00000000"]],"asks":[["9.00000000","1.00000000"]]}}"#
        )
    }

    fn trade(t: u64) -> String {
        format!(
            r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":1,"s":"BTCUSDT","t":{t},"p":"1","q":"1","T":1,"m":true,"M":true}}}}"#
        )
    }

    fn count(a: &std::sync::atomic::AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }

    #[test]
    fn gaps_are_detected_per_stream_raw_and_combined() {
        let stats = Stats::new(1, 1, |_| 0);
        let mut s = session(Mode::default(), &["btcusdt@depth@0ms", "btcusdt@trade"]);
        for (first, last) in [(1, 1), (2, 3), (5, 5)] {
            feed(&mut s, &stats, diff(first, last, "1.00000000"));
        }
        feed(&mut s, &stats, trade(7));
        feed(&mut s, &stats, trade(8));
        feed(&mut s, &stats, trade(10));
        s.flush(&stats);
        assert_eq!(count(&stats.gaps), 2);
        assert_eq!(count(&stats.url(0).gaps), 2);
        assert_eq!(count(&stats.sync.missed_updates), 1);
        assert_eq!(count(&stats.sync.missed_trades), 1);
        let mut merged = crate::stats::histogram();
        stats.latency.merge_into(&mut merged, false);
        assert_eq!(merged.len(), 6);
    }

    #[test]
    fn a_snapshot_starts_the_book_and_a_later_one_is_a_resync() {
        let stats = Stats::new(1, 1, |_| 0);
        let mode = Mode {
            snapshot: true,
            ..Mode::default()
        };
        let mut s = session(mode, &["btcusdt@depth@0ms"]);
        feed(&mut s, &stats, snapshot(10));
        feed(&mut s, &stats, diff(9, 10, "5.00000000")); // held already: dropped
        feed(&mut s, &stats, diff(10, 12, "2.00000000")); // U <= 11 <= u
        feed(&mut s, &stats, diff(13, 13, "3.00000000"));
        assert!(s.streams[0].book_live());
        let book = s.streams[0].book.clone().unwrap();
        assert_eq!(book.u, 13);
        let rest = RestSnapshot {
            last_update_id: 13,
            bids: vec![
                ("3.00000000".into(), "1.00000000".into()),
                ("2.00000000".into(), "1.00000000".into()),
                ("1.00000000".into(), "2.00000000".into()),
            ],
            asks: vec![],
        };
        assert_eq!(book.compare(&rest, 100), Ok(()));
        feed(&mut s, &stats, snapshot(20));
        feed(&mut s, &stats, diff(21, 21, "4.00000000"));
        assert_eq!(count(&stats.sync.snapshots), 2);
        assert_eq!(count(&stats.sync.resyncs), 1);
        assert_eq!(count(&stats.gaps), 0);
        feed(&mut s, &stats, diff(23, 23, "4.00000000"));
        assert_eq!(count(&stats.sync.missed_updates), 1);
        assert!(!s.streams[0].book_live(), "a gap breaks the book");
    }

    #[test]
    fn a_resumed_connection_must_start_at_the_next_id() {
        let stats = Stats::new(1, 1, |_| 0);
        let mode = Mode {
            snapshot: true,
            resume: true,
            ..Mode::default()
        };
        let mut s = session(mode, &["btcusdt@depth@0ms", "btcusdt@trade"]);
        feed(&mut s, &stats, snapshot(10));
        feed(&mut s, &stats, diff(11, 11, "2.00000000"));
        feed(&mut s, &stats, trade(5));
        assert_eq!(s.resume_param(), "btcusdt@depth@0ms:11,btcusdt@trade:5");
        s.lost(1);
        s.begin(true, crate::client::now_us());
        feed(&mut s, &stats, diff(12, 20, "3.00000000"));
        feed(&mut s, &stats, trade(6));
        feed(&mut s, &stats, diff(21, 21, "3.00000000"));
        assert_eq!(count(&stats.sync.catchup_diffs), 1);
        assert_eq!(
            count(&stats.sync.catchup_trades),
            1,
            "E=1 is before the connection"
        );
        assert_eq!(count(&stats.sync.missed_updates), 0);
        assert_eq!(stats.sync.recovery_us.lock().len(), 1);
        // Next time the server no longer has id 21: a snapshot and a resumeGap instead.
        s.lost(2);
        s.begin(true, crate::client::now_us());
        feed(&mut s, &stats, snapshot(40));
        feed(
            &mut s,
            &stats,
            r#"{"stream":"!resumeGap","data":{"e":"resumeGap","E":1,"s":"BTCUSDT","stream":"btcusdt@trade","from":7,"to":9}}"#.into(),
        );
        feed(&mut s, &stats, trade(10));
        feed(&mut s, &stats, diff(41, 41, "3.00000000"));
        assert_eq!(count(&stats.sync.resume_snapshots), 1);
        assert_eq!(count(&stats.sync.resume_gaps), 1);
        assert_eq!(count(&stats.sync.resume_gap_trades), 3);
        assert_eq!(count(&stats.sync.missed_trades), 0);
        assert_eq!(count(&stats.gaps), 0);
        // A catch-up that skips ids is a miss.
        s.lost(3);
        s.begin(true, crate::client::now_us());
        feed(&mut s, &stats, diff(44, 45, "3.00000000"));
        assert_eq!(count(&stats.sync.missed_updates), 2);
    }

    #[test]
    fn rest_books_bridge_buffered_diffs_or_refetch() {
        let stats = Stats::new(1, 1, |_| 0);
        let mode = Mode {
            rest_book: true,
            ..Mode::default()
        };
        let mut s = session(mode, &["btcusdt@depth@100ms"]);
        assert_eq!(s.next_fetch(), Some(0));
        assert_eq!(s.next_fetch(), None, "one fetch at a time");
        feed(&mut s, &stats, diff(8, 9, "1.50000000"));
        feed(&mut s, &stats, diff(10, 12, "2.00000000"));
        let rest = |id| RestSnapshot {
            last_update_id: id,
            bids: vec![("1.00000000".into(), "2.00000000".into())],
            asks: vec![],
        };
        // Older than the first buffered diff can bridge: fetch again.
        s.on_rest(0, Some((rest(5), 100)), &stats, 0);
        assert_eq!(count(&stats.sync.rest_refetches), 1);
        assert_eq!(s.next_fetch(), Some(0));
        s.on_rest(0, Some((rest(10), 100)), &stats, 0);
        assert!(s.streams[0].book_live());
        assert_eq!(s.streams[0].book.as_ref().unwrap().u, 12);
        feed(&mut s, &stats, diff(13, 14, "2.00000000"));
        assert_eq!(count(&stats.sync.rest_snapshots), 2);
        assert_eq!(count(&stats.gaps), 0);
    }

    #[test]
    fn stream_kinds() {
        assert_eq!(Kind::of("btcusdt@depth"), Kind::Diff);
        assert_eq!(Kind::of("btcusdt@depth@0ms"), Kind::Diff);
        assert_eq!(Kind::of("btcusdt@depth5@100ms"), Kind::Other);
        assert_eq!(Kind::of("btcusdt@aggTrade"), Kind::AggTrade);
        assert_eq!(Kind::of("!miniTicker@arr"), Kind::Other);
    }
}
