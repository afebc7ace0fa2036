//! Everything derived for one symbol: its own L2 book, the diff windows, trade statistics,
//! the bookTicker change detector and the aggTrade id counter.
//!
//! A [`SymbolStreams`] starts from a book snapshot ([`SymbolStreams::from_snapshot`]) and from
//! then on reads nothing but [`Step`]s: each step's changed levels are applied to its own book,
//! so partial depth, bookTicker, tickers and REST snapshots never look at a simulation.

use super::history::{self, AggRecord, TradeHistory, TradeRecord};
use super::payload;
use super::recent::{has_gap, DiffCatchUp, Missed, Recent};
use super::stats::kline::{Kline, KlineBuilder, KlineInterval};
use super::stats::rolling::{self, Rolling24h, TickerStats};
use super::stats::TradePrint;
use super::window::DiffWindow;
use super::Publisher;
use crate::market::book::{OrderBook, Side};
use crate::market::feed::SymbolSpec;
use crate::market::sim::Step;
use crate::protocol::json::{self, TimeUnit};
use crate::protocol::stream::{Speed, StreamKind, SymbolId, TickerWindow, Topic, UTC8_OFFSET_US};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The rolling ticker's window: 24 hours.
const DAY_US: u64 = 86_400_000_000;
/// The rolling ticker's bucket: one minute.
const MINUTE_US: u64 = 60_000_000;
/// The long rolling ring's bucket: one hour (REST `windowSize` of 2 to 7 days).
const HOUR_US: u64 = 3_600_000_000;
/// The longest REST `windowSize`: 7 days.
pub const MAX_WINDOW_US: u64 = 7 * DAY_US;
/// `@avgPrice`'s window: five minutes, as on Binance.
pub const AVG_PRICE_WINDOW_US: u64 = 5 * MINUTE_US;
/// Levels of the partial depth streams (`depth5`, `depth10`, `depth20`).
const PARTIAL_LEVELS: [u8; 3] = [5, 10, 20];

/// Best bid and best ask as `((price_e8, qty_e8), (price_e8, qty_e8))`; `(0, 0)` for an empty side.
pub type BestQuotes = ((u64, u64), (u64, u64));

/// The derivation state of one symbol.
#[derive(Serialize, Deserialize)]
pub struct SymbolStreams {
    id: SymbolId,
    spec: SymbolSpec,
    /// The book as of `last_update_id`, kept by applying every step's levels.
    book: OrderBook,
    last_update_id: u64,
    window_100ms: DiffWindow,
    window_1000ms: DiffWindow,
    /// A drained window, reused so flushing never allocates once warm.
    #[serde(skip)]
    merged: Step,
    rolling: Rolling24h,
    /// One builder per [`KlineInterval::ALL`], in that order.
    klines: Vec<KlineBuilder>,
    /// One UTC+8 builder per interval an 8-hour shift moves ([`utc8_intervals`]), in
    /// [`KlineInterval::ALL`] order; the other intervals' `@+08:00` streams carry the UTC
    /// builders' klines, which are the same.
    klines_utc8: Vec<KlineBuilder>,
    /// Whether a trade printed since the last 1000 ms tick: the `!…@arr` streams carry only
    /// the symbols that did. Part of the state, so it never depends on who listens.
    traded: bool,
    /// Time of the last trade (`@avgPrice`'s `T`), the stage's start before any.
    last_trade_us: u64,
    /// Rolling windows of 2 to 7 days for REST's `/api/v3/ticker`: hourly buckets, so such a
    /// window opens on an hour (the minute ring covers one day only).
    week: Rolling24h,
    /// The newest trades and aggregates, for REST (`--trade-history`).
    history: TradeHistory,
    last_book_ticker: Option<BestQuotes>,
    next_agg_id: u64,
    /// The newest trade's id (0: none yet), so a `resume=` knows what it may have missed.
    last_trade_id: u64,
    /// What `resume=` replays (`--history`). Not part of snapshots: a node rebuilds it from
    /// the steps it applies (a gateway also from the journal, see `cluster::backfill`).
    #[serde(skip)]
    recent: Recent,
}

impl SymbolStreams {
    /// The entry point of the derivation stage for one symbol: starts deriving from `book`, the
    /// symbol's book as of update `last_update_id`, at wall-clock time `start_us`.
    ///
    /// The all-in-one engine passes a copy of its simulation's freshly built book (update id 1);
    /// a gateway passes the book it rebuilt from the engine's snapshot. Either way the stage
    /// starts with no trades seen: aggTrade ids start at 1, and the rolling 24h ticker and the
    /// klines start empty at `start_us`, priced at the spec's start price.
    ///
    /// Steps handed to [`on_step`](Self::on_step) must continue from `last_update_id` with no
    /// gap: the first is numbered `last_update_id + 1`.
    pub fn from_snapshot(
        id: SymbolId,
        spec: SymbolSpec,
        book: OrderBook,
        last_update_id: u64,
        start_us: u64,
    ) -> Self {
        let reference = spec.start_price_ticks * spec.tick_e8;
        SymbolStreams {
            id,
            book,
            last_update_id,
            window_100ms: DiffWindow::default(),
            window_1000ms: DiffWindow::default(),
            merged: Step::default(),
            rolling: Rolling24h::new(DAY_US, MINUTE_US, start_us, reference),
            klines: KlineInterval::ALL
                .iter()
                .map(|&interval| KlineBuilder::new(interval, start_us, reference))
                .collect(),
            klines_utc8: utc8_intervals()
                .map(|interval| {
                    KlineBuilder::in_zone(interval, UTC8_OFFSET_US, start_us, reference)
                })
                .collect(),
            traded: false,
            last_trade_us: start_us,
            week: Rolling24h::new(MAX_WINDOW_US, HOUR_US, start_us, reference),
            history: TradeHistory::default(),
            last_book_ticker: None,
            next_agg_id: 1,
            last_trade_id: 0,
            recent: Recent::default(),
            spec,
        }
    }

    /// The symbol's index in the feed, as topics name it.
    pub fn id(&self) -> SymbolId {
        self.id
    }

    pub fn spec(&self) -> &SymbolSpec {
        &self.spec
    }

    /// The book as of [`last_update_id`](Self::last_update_id).
    pub fn book(&self) -> &OrderBook {
        &self.book
    }

    /// Update id of the last step applied (the snapshot's before any step).
    pub fn last_update_id(&self) -> u64 {
        self.last_update_id
    }

    /// Best bid and ask of the book in e8 units.
    pub fn best(&self) -> BestQuotes {
        let convert = |level: Option<(u64, u64)>| {
            level.map_or((0, 0), |(tick, lots)| {
                (
                    payload::price(&self.spec, tick),
                    payload::qty(&self.spec, lots),
                )
            })
        };
        (convert(self.book.best_bid()), convert(self.book.best_ask()))
    }

    /// The in-band `depthSnapshot` event at the last applied update id, stamped `now_us`.
    pub fn write_depth_snapshot(&self, out: &mut Vec<u8>, now_us: u64, unit: TimeUnit) {
        payload::write_depth_snapshot(
            out,
            &self.spec,
            &self.book,
            self.last_update_id,
            now_us,
            unit,
        );
    }

    /// `resume=`: renders into `out`, one payload per event in `unit`, what a client holding id
    /// `id` of this symbol's stream `kind` (named `stream` as the client wrote it) missed:
    /// - a diff stream: one catch-up diff from `id + 1` to the last update the stream
    ///   published, or a `depthSnapshot` when the history no longer reaches `id`;
    /// - `@trade` / `@aggTrade`: every missed event in order, with a `resumeGap` ahead of ids the
    ///   history no longer holds.
    ///
    /// Returns `None`, rendering nothing, when `id` is ahead of what this node has published
    /// (the client left a node further along): the caller may wait for it to catch up.
    pub fn catch_up(
        &self,
        kind: StreamKind,
        stream: &str,
        id: u64,
        now_us: u64,
        unit: TimeUnit,
        out: &mut Vec<Vec<u8>>,
    ) -> Option<Resumed> {
        let symbol = self.spec.symbol.as_str();
        let gap = |out: &mut Vec<Vec<u8>>, from, to| {
            let mut payload = Vec::with_capacity(128);
            payload::write_resume_gap(&mut payload, symbol, stream, from, to, now_us, unit);
            out.push(payload);
        };
        match kind {
            StreamKind::Diff(speed) => {
                let upto = self.diff_published_upto(speed);
                let mut payload = Vec::with_capacity(4096);
                let resumed = match self.recent.diff_since(id, upto) {
                    DiffCatchUp::Ahead => return None,
                    DiffCatchUp::UpToDate => return Some(Resumed::UpToDate),
                    DiffCatchUp::Diff { first, step } => {
                        payload::write_diff(&mut payload, &self.spec, &step, first, now_us, unit);
                        Resumed::CaughtUp(1)
                    }
                    DiffCatchUp::Snapshot => {
                        // At the last applied update: the stream's next diff starts at or
                        // before the update after it, as with `snapshot=true`.
                        self.write_depth_snapshot(&mut payload, now_us, unit);
                        Resumed::Snapshot
                    }
                };
                out.push(payload);
                Some(resumed)
            }
            StreamKind::Trade => {
                let missed = self.recent.trades_since(id, self.last_trade_id)?;
                Some(render_missed(missed, out, gap, |payload, timed| {
                    payload::write_trade(payload, &self.spec, &timed.trade, timed.time_us, unit)
                }))
            }
            StreamKind::AggTrade => {
                let missed = self.recent.aggs_since(id, self.next_agg_id - 1)?;
                Some(render_missed(missed, out, gap, |payload, agg| {
                    payload::write_agg_trade(payload, symbol, &agg, unit)
                }))
            }
            // Not resumable (the caller checked); nothing to catch up.
            _ => Some(Resumed::UpToDate),
        }
    }

    /// Whether this node has published id `id` of stream `kind` (an update id for diffs, a
    /// trade or aggregate id): a `resume=` from it can be served now. Streams without ids
    /// have nothing to wait for.
    pub fn is_published(&self, kind: StreamKind, id: u64) -> bool {
        !matches!(
            kind,
            StreamKind::Diff(_) | StreamKind::Trade | StreamKind::AggTrade
        ) || id <= self.latest_id(kind)
    }

    /// The newest id this node has published on stream `kind`: an update id for diffs, a
    /// trade or aggregate id (0: none yet); 0 for streams without ids.
    pub fn latest_id(&self, kind: StreamKind) -> u64 {
        match kind {
            StreamKind::Diff(speed) => self.diff_published_upto(speed),
            StreamKind::Trade => self.last_trade_id,
            StreamKind::AggTrade => self.next_agg_id - 1,
            _ => 0,
        }
    }

    /// Whether the history still holds everything after id `id` of stream `kind`, so a
    /// catch-up needs no snapshot and no `resumeGap` (a poll cursor that has not expired).
    pub fn holds_since(&self, kind: StreamKind, id: u64) -> bool {
        match kind {
            StreamKind::Diff(speed) => !matches!(
                self.recent.diff_since(id, self.diff_published_upto(speed)),
                DiffCatchUp::Snapshot
            ),
            StreamKind::Trade => self
                .recent
                .trades_since(id, self.last_trade_id)
                .is_none_or(|missed| !has_gap(&missed)),
            StreamKind::AggTrade => self
                .recent
                .aggs_since(id, self.next_agg_id - 1)
                .is_none_or(|missed| !has_gap(&missed)),
            _ => true,
        }
    }

    /// The last update id the diff stream of `speed` has published: windows hold back what
    /// they have merged since their last flush.
    fn diff_published_upto(&self, speed: Speed) -> u64 {
        match speed {
            Speed::Ms0 => self.last_update_id,
            Speed::Ms100 => self.window_100ms.published_upto(self.last_update_id),
            Speed::Unspecified | Speed::Ms1000 => {
                self.window_1000ms.published_upto(self.last_update_id)
            }
        }
    }

    /// The id the next aggregate will get.
    pub fn next_agg_id(&self) -> u64 {
        self.next_agg_id
    }

    /// Puts `older` in front of this symbol's `resume=` history.
    pub fn prepend_recent(&mut self, older: Recent) {
        self.recent.prepend(older);
    }

    /// Bytes `resume=`'s history holds for this symbol.
    pub fn recent_bytes(&self) -> usize {
        self.recent.bytes()
    }

    /// Keeps `span_us` of history for `resume=` (0: none).
    pub fn set_recent_span(&mut self, span_us: u64) {
        self.recent.set_span(span_us);
    }

    /// The `/api/v3/depth` body: the best `limit` levels a side at the last applied update id.
    pub fn snapshot(&self, limit: usize) -> Bytes {
        let mut out = Vec::with_capacity(64 + limit * 48);
        payload::write_partial(&mut out, &self.spec, &self.book, self.last_update_id, limit);
        Bytes::from(out)
    }

    /// Where a step enters: applies it to the book and the windows, counts its trades in the
    /// statistics, and publishes `<symbol>@depth@0ms` (the step's own diff), `@trade`,
    /// `@aggTrade` and, if the touch changed, `@bookTicker`. `now_us` is the event time the
    /// payloads carry.
    pub fn on_step<P: Publisher + ?Sized>(&mut self, step: &Step, now_us: u64, out: &mut P) {
        self.apply(step);
        self.window_100ms.add(step);
        self.window_1000ms.add(step);
        self.recent.record_step(step.update_id, step, now_us);
        let spec = &self.spec;
        out.publish(
            self.topic(StreamKind::Diff(Speed::Ms0)),
            &mut |buf, unit| payload::write_diff(buf, spec, step, step.update_id, now_us, unit),
        );
        self.on_trades(step, now_us, out);
        let best = self.best();
        if self.last_book_ticker != Some(best) {
            self.last_book_ticker = Some(best);
            let symbol = self.spec.symbol.as_str();
            out.publish(self.topic(StreamKind::BookTicker), &mut |buf, _| {
                payload::write_book_ticker(buf, symbol, step.update_id, best)
            });
        }
    }

    /// The 100 ms tick: flushes `@depth@100ms` and publishes `@depth<N>@100ms`.
    pub fn every_100ms<P: Publisher + ?Sized>(&mut self, now_us: u64, out: &mut P) {
        self.flush_window(Speed::Ms100, now_us, out);
        for levels in PARTIAL_LEVELS {
            self.publish_partial(levels, Speed::Ms100, out);
        }
    }

    /// This symbol's part of the 1000 ms tick: flushes `@depth` (which `@depth@1000ms`
    /// subscribers get too, see [`Topic::fanout_key`]), publishes `@depth<N>` (likewise
    /// `@depth<N>@1000ms`), closes and pushes klines. `second` numbers the tick (1 for the
    /// stage's first): klines with a push period of `p` seconds are pushed when `second % p == 0`.
    ///
    /// Tickers are not part of it: [`Streams`](super::Streams) publishes them after every
    /// symbol's part, through [`publish_tickers`](Self::publish_tickers).
    pub fn every_1000ms<P: Publisher + ?Sized>(&mut self, now_us: u64, second: u64, out: &mut P) {
        self.flush_window(Speed::Unspecified, now_us, out);
        for levels in PARTIAL_LEVELS {
            self.publish_partial(levels, Speed::Unspecified, out);
        }
        self.publish_klines(now_us, second, out);
        self.publish_avg_price(now_us, out);
    }

    /// Keeps at most `trades` trades and as many aggregates, and `klines` closed klines per
    /// interval and zone, for REST.
    pub fn set_history(&mut self, trades: usize, klines: usize) {
        self.history.set_cap(trades);
        for kline in self.klines.iter_mut().chain(&mut self.klines_utc8) {
            kline.set_history_cap(klines);
        }
    }

    /// The `/api/v3/trades` body: the newest `limit` trades, oldest first.
    pub fn recent_trades_json(&self, limit: usize) -> Vec<u8> {
        let mut out = Vec::new();
        json::push_array(
            &mut out,
            self.history.recent_trades(limit),
            history::write_trade,
        );
        out
    }

    /// The `/api/v3/aggTrades` body (see [`TradeHistory::aggs`]).
    pub fn agg_trades_json(
        &self,
        from_id: Option<u64>,
        start_us: Option<u64>,
        end_us: Option<u64>,
        limit: usize,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        json::push_array(
            &mut out,
            self.history.aggs(from_id, start_us, end_us, limit),
            history::write_agg,
        );
        out
    }

    /// The `/api/v3/klines` body: the kept klines of `interval` in the zone `offset_us` east of
    /// UTC, the open one last, whose open time is within `[start_us, end_us]`; the first
    /// `limit` from `start_us` if given, else the newest `limit`.
    ///
    /// UTC and UTC+8 have builders of their own (an interval that a zone does not move is served
    /// from UTC's); any other zone's klines are regrouped from the kept 1m klines, so they
    /// reach back `--kline-history` minutes.
    pub fn klines_json(
        &self,
        interval: KlineInterval,
        offset_us: i64,
        start_us: Option<u64>,
        end_us: Option<u64>,
        limit: usize,
    ) -> Vec<u8> {
        let index = |wanted: KlineInterval| {
            KlineInterval::ALL
                .iter()
                .position(|&i| i == wanted)
                .unwrap_or(0)
        };
        let series: Vec<Kline> = if interval.offset_neutral(offset_us) {
            self.klines[index(interval)].history().copied().collect()
        } else if let Some(builder) = self
            .klines_utc8
            .iter()
            .find(|b| b.offset_us() == offset_us && b.current().interval == interval)
        {
            builder.history().copied().collect()
        } else {
            let mut groups: Vec<Kline> = Vec::new();
            for minute in self.klines[index(KlineInterval::M1)].history() {
                let open = interval.align(minute.open_time_us, offset_us);
                match groups.last_mut() {
                    Some(group) if group.open_time_us == open => group.merge(minute),
                    _ => groups.push(minute.regrouped(
                        interval,
                        open,
                        interval.next_open(open, offset_us),
                    )),
                }
            }
            groups
        };
        let selected = series.iter().filter(|k| {
            start_us.is_none_or(|s| k.open_time_us >= s)
                && end_us.is_none_or(|e| k.open_time_us <= e)
        });
        let chosen: Vec<&Kline> = if start_us.is_some() {
            selected.take(limit).collect()
        } else {
            let mut newest: Vec<&Kline> = selected.rev().take(limit).collect();
            newest.reverse();
            newest
        };
        let mut out = Vec::with_capacity(2 + chosen.len() * 160);
        json::push_array(&mut out, chosen, |out, kline| kline.write_row(out));
        out
    }

    /// Rolling-window statistics of any REST `windowSize` up to 7 days, ending at `now_us`:
    /// from the minute buckets up to a day, from the hourly ones beyond.
    pub fn stats_over(&self, now_us: u64, window_us: u64) -> TickerStats {
        if window_us <= DAY_US {
            self.rolling.stats_within(now_us, window_us)
        } else {
            self.week.stats_within(now_us, window_us)
        }
    }

    /// `@avgPrice`'s and `/api/v3/avgPrice`'s statistics: the last five minutes.
    pub fn avg_price_stats(&self, now_us: u64) -> TickerStats {
        self.rolling.stats_within(now_us, AVG_PRICE_WINDOW_US)
    }

    /// Time of the last trade (the stage's start before any).
    pub fn last_trade_us(&self) -> u64 {
        self.last_trade_us
    }

    /// Whether a trade printed since the last call, which starts the next second's count: the
    /// 1000 ms tick asks once per symbol.
    pub fn take_traded(&mut self) -> bool {
        std::mem::take(&mut self.traded)
    }

    /// The rolling-window statistics of `window` ending at `now_us` (see
    /// [`Rolling24h::stats_within`]).
    pub fn window_stats(&self, now_us: u64, window: TickerWindow) -> TickerStats {
        self.rolling.stats_within(now_us, window.micros())
    }

    /// Publishes `@ticker_<window>` with `stats` (from [`window_stats`](Self::window_stats)).
    pub fn publish_rolling_ticker<P: Publisher + ?Sized>(
        &self,
        window: TickerWindow,
        stats: &TickerStats,
        now_us: u64,
        out: &mut P,
    ) {
        let symbol = self.spec.symbol.as_str();
        out.publish(
            self.topic(StreamKind::RollingTicker(window)),
            &mut |buf, unit| {
                rolling::write_rolling_ticker(buf, window.event(), symbol, stats, now_us, unit)
            },
        );
    }

    /// Publishes `@avgPrice` if anyone listens: the average price of the last five minutes.
    fn publish_avg_price<P: Publisher + ?Sized>(&self, now_us: u64, out: &mut P) {
        let topic = self.topic(StreamKind::AvgPrice);
        if !out.wants(&topic) {
            return;
        }
        let stats = self.avg_price_stats(now_us);
        let (symbol, last_trade_us) = (self.spec.symbol.as_str(), self.last_trade_us);
        out.publish(topic, &mut |buf, unit| {
            rolling::write_avg_price(buf, symbol, &stats, last_trade_us, now_us, unit)
        });
    }

    /// Publishes `@ticker` and `@miniTicker` for the 24h window ending at `now_us`, if anyone
    /// wants either or `force` is set (the caller needs the statistics for `!miniTicker@arr`).
    /// Returns the statistics when they were computed.
    pub fn publish_tickers<P: Publisher + ?Sized>(
        &mut self,
        now_us: u64,
        force: bool,
        out: &mut P,
    ) -> Option<TickerStats> {
        let ticker = self.topic(StreamKind::Ticker);
        let mini = self.topic(StreamKind::MiniTicker);
        if !(force || out.wants(&ticker) || out.wants(&mini)) {
            return None;
        }
        let stats = self.rolling.stats(now_us);
        let symbol = self.spec.symbol.as_str();
        let (bid, ask) = self.best();
        out.publish(ticker, &mut |buf, unit| {
            rolling::write_ticker(buf, symbol, &stats, bid, ask, now_us, unit)
        });
        out.publish(mini, &mut |buf, unit| {
            rolling::write_mini_ticker(buf, symbol, &stats, now_us, unit)
        });
        Some(stats)
    }

    /// Takes `snapshot`'s state (a later point of the same symbol) in place of steps that can
    /// no longer be fetched, and publishes one diff that bridges the gap on the real-time diff
    /// stream and in both diff windows: every level that differs between this book and the
    /// snapshot's, numbered `U` = this stage's last update id + 1 to `u` = the snapshot's. A
    /// client following the diffs sees no gap and ends with the snapshot's book. Trades in the
    /// gap are not replayed: trade streams resume at the snapshot's trade ids.
    ///
    /// Does nothing when the snapshot is not ahead of this stage.
    pub fn rebase<P: Publisher + ?Sized>(
        &mut self,
        snapshot: SymbolStreams,
        now_us: u64,
        out: &mut P,
    ) {
        if snapshot.last_update_id <= self.last_update_id {
            return;
        }
        let mut bridge = Step {
            update_id: snapshot.last_update_id,
            ..Step::default()
        };
        for side in [Side::Bid, Side::Ask] {
            let levels = match side {
                Side::Bid => &mut bridge.bids,
                Side::Ask => &mut bridge.asks,
            };
            let mut changed: Vec<(u64, u64)> = snapshot
                .book
                .top(side)
                .filter(|&(tick, lots)| self.book.get(side, tick) != lots)
                .collect();
            changed.extend(
                self.book
                    .top(side)
                    .filter(|&(tick, _)| snapshot.book.get(side, tick) == 0)
                    .map(|(tick, _)| (tick, 0)),
            );
            match side {
                Side::Bid => changed.sort_unstable_by_key(|level| std::cmp::Reverse(level.0)),
                Side::Ask => changed.sort_unstable_by_key(|level| level.0),
            }
            *levels = changed;
        }
        let first = self.last_update_id + 1;
        self.window_100ms.add_from(first, &bridge);
        self.window_1000ms.add_from(first, &bridge);
        self.recent.record_step(first, &bridge, now_us);
        let spec = &self.spec;
        out.publish(
            self.topic(StreamKind::Diff(Speed::Ms0)),
            &mut |buf, unit| payload::write_diff(buf, spec, &bridge, first, now_us, unit),
        );
        let SymbolStreams {
            book,
            last_update_id,
            rolling,
            klines,
            klines_utc8,
            traded,
            last_trade_us,
            week,
            history,
            next_agg_id,
            last_trade_id,
            ..
        } = snapshot;
        self.last_trade_id = last_trade_id;
        self.week = week;
        self.history = history;
        self.book = book;
        self.last_update_id = last_update_id;
        self.rolling = rolling;
        self.klines = klines;
        self.klines_utc8 = klines_utc8;
        self.traded = traded;
        self.last_trade_us = last_trade_us;
        self.next_agg_id = next_agg_id;
        let best = self.best();
        if self.last_book_ticker != Some(best) {
            self.last_book_ticker = Some(best);
            let symbol = self.spec.symbol.as_str();
            out.publish(self.topic(StreamKind::BookTicker), &mut |buf, _| {
                payload::write_book_ticker(buf, symbol, last_update_id, best)
            });
        }
    }

    fn topic(&self, kind: StreamKind) -> Topic {
        Topic::Symbol {
            symbol: self.id,
            kind,
        }
    }

    /// Applies a step's changed levels (final lots, 0 = removed) to the book.
    ///
    /// Removals go first: the book then only ever holds levels the step's final book holds, so
    /// it is never crossed in between, whatever order the sides arrive in.
    fn apply(&mut self, step: &Step) {
        debug_assert_eq!(
            step.update_id,
            self.last_update_id + 1,
            "steps must arrive in update-id order without gaps"
        );
        for removals in [true, false] {
            for (side, levels) in [(Side::Bid, &step.bids), (Side::Ask, &step.asks)] {
                for &(tick, lots) in levels {
                    if (lots == 0) == removals {
                        self.book.set(side, tick, lots);
                    }
                }
            }
        }
        self.last_update_id = step.update_id;
    }

    /// Records the step's trades in the statistics and publishes `trade` and `aggTrade`.
    fn on_trades<P: Publisher + ?Sized>(&mut self, step: &Step, now_us: u64, out: &mut P) {
        let trades = &step.trades;
        if trades.is_empty() {
            return;
        }
        for trade in trades {
            let print = TradePrint {
                id: trade.id,
                price_e8: payload::price(&self.spec, trade.price_tick),
                qty_e8: payload::qty(&self.spec, trade.qty_lots),
                time_us: now_us,
                buyer_is_maker: trade.buyer_is_maker,
            };
            self.rolling.record(&print);
            self.week.record(&print);
            self.history.push_trade(TradeRecord {
                id: trade.id,
                price_e8: print.price_e8,
                qty_e8: print.qty_e8,
                time_us: now_us,
                buyer_is_maker: trade.buyer_is_maker,
            });
            for kline in self.klines.iter_mut().chain(&mut self.klines_utc8) {
                kline.record(&print);
            }
            self.recent.record_trade(trade, now_us);
            self.last_trade_id = trade.id;
        }
        self.traded = true;
        self.last_trade_us = now_us;
        let trade_topic = self.topic(StreamKind::Trade);
        let agg_topic = self.topic(StreamKind::AggTrade);
        let spec = &self.spec;
        if out.wants(&trade_topic) {
            for trade in trades {
                out.publish(trade_topic, &mut |buf, unit| {
                    payload::write_trade(buf, spec, trade, now_us, unit)
                });
            }
        }
        // Ids advance whether or not anyone listens.
        for group in history::aggregates(trades) {
            let agg = AggRecord::from_group(spec, self.next_agg_id, group, now_us);
            self.history.push_agg(agg);
            self.recent.record_agg(&agg);
            out.publish(agg_topic, &mut |buf, unit| {
                payload::write_agg_trade(buf, &spec.symbol, &agg, unit)
            });
            self.next_agg_id += 1;
        }
    }

    /// Publishes the window of `speed`: [`Speed::Ms100`], or [`Speed::Unspecified`] for the
    /// 1000 ms one (the fan-out key of both its names).
    fn flush_window<P: Publisher + ?Sized>(&mut self, speed: Speed, now_us: u64, out: &mut P) {
        let window = match speed {
            Speed::Ms100 => &mut self.window_100ms,
            _ => &mut self.window_1000ms,
        };
        let Some(first) = window.drain_into(&mut self.merged) else {
            return;
        };
        let (spec, merged) = (&self.spec, &self.merged);
        out.publish(self.topic(StreamKind::Diff(speed)), &mut |buf, unit| {
            payload::write_diff(buf, spec, merged, first, now_us, unit)
        });
    }

    fn publish_partial<P: Publisher + ?Sized>(&self, levels: u8, speed: Speed, out: &mut P) {
        out.publish(
            self.topic(StreamKind::Partial { levels, speed }),
            &mut |buf, _| {
                payload::write_partial(
                    buf,
                    &self.spec,
                    &self.book,
                    self.last_update_id,
                    usize::from(levels),
                )
            },
        );
    }

    /// Closes and pushes every kline stream: each closed kline once (`"x":true`), then the open
    /// one every push period. An interval UTC+8 does not move is published under its
    /// `@+08:00` name from the UTC builder.
    fn publish_klines<P: Publisher + ?Sized>(&mut self, now_us: u64, second: u64, out: &mut P) {
        let symbol = self.spec.symbol.as_str();
        let id = self.id;
        let topics = |interval: KlineInterval| {
            (
                Topic::Symbol {
                    symbol: id,
                    kind: StreamKind::Kline(interval),
                },
                Topic::Symbol {
                    symbol: id,
                    kind: StreamKind::KlineUtc8(interval),
                },
            )
        };
        let builders = self
            .klines
            .iter_mut()
            .map(|kline| (false, kline))
            .chain(self.klines_utc8.iter_mut().map(|kline| (true, kline)));
        for (utc8, kline) in builders {
            let interval = kline.current().interval;
            let (utc_topic, utc8_topic) = topics(interval);
            let names: &[Topic] = match (utc8, interval.offset_neutral(UTC8_OFFSET_US)) {
                (true, _) => &[utc8_topic],
                (false, true) => &[utc_topic, utc8_topic],
                (false, false) => &[utc_topic],
            };
            kline.roll(now_us);
            while let Some(closed) = kline.pop_closed() {
                for &topic in names {
                    out.publish(topic, &mut |buf, unit| {
                        closed.write(buf, symbol, now_us, unit)
                    });
                }
            }
            let period_s = (interval.push_period_us() / 1_000_000).max(1);
            if second % period_s == 0 {
                let kline = &*kline;
                for &topic in names {
                    out.publish(topic, &mut |buf, unit| {
                        kline.write(buf, symbol, now_us, unit)
                    });
                }
            }
        }
    }
}

/// The intervals whose UTC+8 klines open at other instants than their UTC ones.
/// How a `resume=` of one stream went, for the metric and the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resumed {
    /// The client had the newest event: nothing sent.
    UpToDate,
    /// This many missed events sent.
    CaughtUp(usize),
    /// The history no longer reaches the client's id: a `depthSnapshot` sent.
    Snapshot,
    /// Some trades could no longer be sent: `resumeGap` sent (with this many events after it).
    Gap(usize),
}

impl Resumed {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Resumed::UpToDate => "up_to_date",
            Resumed::CaughtUp(_) => "caught_up",
            Resumed::Snapshot => "snapshot",
            Resumed::Gap(_) => "gap",
        }
    }

    /// Missed events sent (gaps and snapshots not counted).
    pub fn events(self) -> usize {
        match self {
            Resumed::CaughtUp(n) | Resumed::Gap(n) => n,
            Resumed::UpToDate | Resumed::Snapshot => 0,
        }
    }
}

/// Renders missed trades or aggregates, a `resumeGap` for each run of ids no longer held.
fn render_missed<T>(
    missed: Vec<Missed<T>>,
    out: &mut Vec<Vec<u8>>,
    gap: impl Fn(&mut Vec<Vec<u8>>, u64, u64),
    mut event: impl FnMut(&mut Vec<u8>, T),
) -> Resumed {
    let (mut events, mut gaps) = (0, 0);
    for item in missed {
        match item {
            Missed::Gap { from, to } => {
                gaps += 1;
                gap(out, from, to);
            }
            Missed::Event(e) => {
                let mut payload = Vec::with_capacity(256);
                event(&mut payload, e);
                out.push(payload);
                events += 1;
            }
        }
    }
    match (gaps, events) {
        (0, 0) => Resumed::UpToDate,
        (0, n) => Resumed::CaughtUp(n),
        (_, n) => Resumed::Gap(n),
    }
}

fn utc8_intervals() -> impl Iterator<Item = KlineInterval> {
    KlineInterval::ALL
        .into_iter()
        .filter(|interval| !interval.offset_neutral(UTC8_OFFSET_US))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::market::feed::Feed;
    use crate::market::sim::MarketSim;
    use crate::protocol::json::TimeUnit;

    /// 2026-01-01T00:00:00Z.
    pub(crate) const T0: u64 = 1_767_225_600_000_000;

    /// A publisher that, while `wants` is set, listens to every topic and keeps each event as
    /// rendered in ms and in µs.
    #[derive(Default)]
    pub(crate) struct Recorder {
        pub(crate) wants: bool,
        pub(crate) events: Vec<(Topic, Vec<u8>, Vec<u8>)>,
    }

    impl Publisher for Recorder {
        fn wants(&self, _: &Topic) -> bool {
            self.wants
        }

        fn publish(&mut self, topic: Topic, render: &mut dyn FnMut(&mut Vec<u8>, TimeUnit)) {
            if self.wants {
                let (mut ms, mut us) = (Vec::new(), Vec::new());
                render(&mut ms, TimeUnit::Millisecond);
                render(&mut us, TimeUnit::Microsecond);
                self.events.push((topic, ms, us));
            }
        }
    }

    /// The book a gateway would rebuild from a snapshot's levels.
    fn rebuilt(book: &OrderBook) -> OrderBook {
        let mut copy = OrderBook::new();
        for side in [Side::Bid, Side::Ask] {
            for (tick, lots) in book.top(side) {
                copy.set(side, tick, lots);
            }
        }
        copy
    }

    fn assert_same_levels(derived: &OrderBook, sim: &OrderBook, at: u64) {
        for side in [Side::Bid, Side::Ask] {
            assert_eq!(
                derived.levels(side),
                sim.levels(side),
                "{side:?} level count at update {at}"
            );
            for (n, (d, s)) in derived.top(side).zip(sim.top(side)).enumerate() {
                assert_eq!(d, s, "{side:?} level {n} at update {at}");
            }
            assert_eq!(derived.best(side), sim.best(side));
        }
    }

    /// The derivation stage never reads the simulation's book: it rebuilds it from the initial
    /// snapshot and each step's levels. After every step its book must equal the simulation's,
    /// level by level, and so must the REST snapshot rendered from it.
    #[test]
    fn derived_book_follows_the_simulation_level_by_level() {
        const STEPS: u64 = 20_000;
        let feed = Feed::embedded_default();
        for (index, spec) in feed.symbols.iter().enumerate().take(3) {
            let mut sim = MarketSim::new(spec);
            let mut streams = SymbolStreams::from_snapshot(
                index as SymbolId,
                spec.clone(),
                rebuilt(sim.book()),
                sim.last_update_id(),
                T0,
            );
            assert_same_levels(streams.book(), sim.book(), sim.last_update_id());
            let mut nobody = Recorder::default();
            let mut step = Step::default();
            for n in 0..STEPS {
                sim.step(&mut step);
                streams.on_step(&step, T0 + n * 10_000, &mut nobody);
                assert_eq!(streams.last_update_id(), sim.last_update_id());
                assert_eq!(streams.book().best_bid(), sim.book().best_bid());
                assert_eq!(streams.book().best_ask(), sim.book().best_ask());
                if n % 97 == 0 {
                    assert_same_levels(streams.book(), sim.book(), step.update_id);
                }
            }
            assert_same_levels(streams.book(), sim.book(), sim.last_update_id());
            assert!(streams.book() == sim.book());
            let mut expected = Vec::new();
            payload::write_partial(&mut expected, spec, sim.book(), sim.last_update_id(), 5000);
            assert_eq!(&streams.snapshot(5000)[..], &expected[..]);
            assert!(nobody.events.is_empty());
        }
    }

    /// Per step: the diff, each trade, each aggregate (ids counting up from 1 across steps) and,
    /// only when the touch moved, the bookTicker, in that order.
    #[test]
    fn a_step_publishes_diff_trades_aggregates_then_book_ticker() {
        let feed = Feed::embedded_default();
        let spec = &feed.symbols[0];
        let mut sim = MarketSim::new(spec);
        let mut streams = SymbolStreams::from_snapshot(0, spec.clone(), sim.book().clone(), 1, T0);
        let mut out = Recorder {
            wants: true,
            ..Recorder::default()
        };
        let mut step = Step::default();
        let mut next_agg_id = 1;
        let mut touch = None;
        let (mut trade_steps, mut quiet_touches) = (0, 0);
        for n in 0..5_000 {
            out.events.clear();
            sim.step(&mut step);
            streams.on_step(&step, T0 + n * 10_000, &mut out);
            let mut events = out.events.iter();
            let (topic, ms, _) = events.next().expect("a diff per step");
            assert_eq!(*topic, streams.topic(StreamKind::Diff(Speed::Ms0)));
            let u = format!("\"u\":{},", step.update_id);
            assert!(ms.windows(u.len()).any(|w| w == u.as_bytes()));
            for trade in &step.trades {
                let (topic, ms, _) = events.next().expect("a trade event per trade");
                assert_eq!(*topic, streams.topic(StreamKind::Trade));
                let t = format!("\"t\":{},", trade.id);
                assert!(ms.windows(t.len()).any(|w| w == t.as_bytes()));
            }
            trade_steps += usize::from(!step.trades.is_empty());
            let mut rest: Vec<_> = events.collect();
            let book_ticker = rest
                .last()
                .is_some_and(|(topic, _, _)| *topic == streams.topic(StreamKind::BookTicker));
            if book_ticker {
                rest.pop();
            }
            for (topic, ms, _) in rest {
                assert_eq!(*topic, streams.topic(StreamKind::AggTrade));
                let a = format!("\"a\":{next_agg_id},");
                assert!(ms.windows(a.len()).any(|w| w == a.as_bytes()));
                next_agg_id += 1;
            }
            let best = streams.best();
            assert_eq!(
                book_ticker,
                touch != Some(best),
                "bookTicker iff the touch moved"
            );
            quiet_touches += usize::from(!book_ticker);
            touch = Some(best);
        }
        assert!(trade_steps > 100 && next_agg_id > 100 && quiet_touches > 100);
    }
}
