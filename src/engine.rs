//! The engine thread: steps every symbol's book on its own clock, derives every stream's events
//! from the steps, and publishes them through the [`Hub`], which it alone owns.
//!
//! Commands from connections (subscribe, unsubscribe, replies, snapshots) arrive on one bounded
//! channel and are applied between steps, so a subscription's reply is queued after the
//! subscription is live and a depth snapshot is taken exactly at the last published update id:
//! Binance's snapshot-plus-diff algorithm then works with no special cases.

use crate::derive::payload;
use crate::derive::stats::kline::{KlineBuilder, KlineInterval};
use crate::derive::stats::rolling::{self, Rolling24h, TickerStats};
use crate::derive::stats::TradePrint;
use crate::fanout::hub::{ConnId, Hub};
use crate::fanout::outbox::Outbox;
use crate::market::feed::{Feed, SymbolSpec};
use crate::market::sim::{MarketSim, Step};
use crate::metrics::live_stats::{self, LiveStats, StatsWindow};
use crate::metrics::EngineMetrics;
use crate::protocol::control::Change;
use crate::protocol::json::TimeUnit;
use crate::protocol::stream::{Speed, StreamKind, SymbolId, Topic};
use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How many commands may wait for the engine; beyond that, senders are told the server is busy.
pub const COMMAND_CAPACITY: usize = 65_536;
/// Commands applied per loop turn at most, so a storm of subscriptions cannot stall the books.
const COMMANDS_PER_TURN: usize = 4_096;
const DAY_US: u64 = 86_400_000_000;
const MINUTE_US: u64 = 60_000_000;

pub enum Command {
    /// A new connection and the streams named in its URL; `ready` fires once they are live.
    Attach {
        conn: ConnId,
        outbox: Arc<Outbox>,
        combined: bool,
        unit: TimeUnit,
        topics: Vec<Topic>,
        ready: oneshot::Sender<()>,
    },
    /// Apply `change`, then queue `reply` to the connection behind everything already queued.
    Control {
        conn: ConnId,
        change: Change,
        reply: Bytes,
    },
    Detach {
        conn: ConnId,
    },
    /// Render `/api/v3/depth` for a symbol at the last published update id.
    Snapshot {
        symbol: SymbolId,
        limit: usize,
        reply: oneshot::Sender<Bytes>,
    },
}

/// The connection-side handle: a clonable sender of commands.
#[derive(Clone)]
pub struct EngineHandle {
    tx: Sender<Command>,
}

impl EngineHandle {
    /// Sends without waiting; `Err` means the engine is saturated or gone.
    pub fn try_send(&self, command: Command) -> Result<(), Command> {
        self.tx.try_send(command).map_err(|e| e.into_inner())
    }
}

/// Starts the engine thread. It stops when every [`EngineHandle`] is dropped.
/// `naive_fanout` makes the hub serialize per subscriber (see [`Hub::new`]).
/// `live` is where connections count what `!stats@1s` reports.
pub fn spawn(
    feed: Arc<Feed>,
    naive_fanout: bool,
    live: Arc<LiveStats>,
) -> std::io::Result<(EngineHandle, JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::bounded(COMMAND_CAPACITY);
    let thread = std::thread::Builder::new()
        .name("bookcast-engine".into())
        .spawn(move || Engine::new(feed, naive_fanout, live).run(rx))?;
    Ok((EngineHandle { tx }, thread))
}

/// Depth changes merged over a 100 ms or 1000 ms window.
#[derive(Default)]
struct DiffWindow {
    first_update_id: u64,
    last_update_id: u64,
    bids: HashMap<u64, u64>,
    asks: HashMap<u64, u64>,
}

impl DiffWindow {
    fn add(&mut self, step: &Step) {
        if self.first_update_id == 0 {
            self.first_update_id = step.update_id;
        }
        self.last_update_id = step.update_id;
        self.bids.extend(step.bids.iter().copied());
        self.asks.extend(step.asks.iter().copied());
    }

    /// Moves the window's levels into `out` sorted best-first and resets it.
    fn drain_into(&mut self, out: &mut Step) {
        out.update_id = self.last_update_id;
        out.bids.clear();
        out.asks.clear();
        out.trades.clear();
        out.bids.extend(self.bids.drain());
        out.asks.extend(self.asks.drain());
        out.bids
            .sort_unstable_by_key(|level| std::cmp::Reverse(level.0));
        out.asks.sort_unstable_by_key(|level| level.0);
        self.first_update_id = 0;
    }
}

/// Everything the engine keeps for one symbol.
struct SymbolState {
    id: SymbolId,
    spec: SymbolSpec,
    sim: MarketSim,
    step: Step,
    period: Duration,
    next_step: Instant,
    window_100ms: DiffWindow,
    window_1000ms: DiffWindow,
    rolling: Rolling24h,
    klines: Vec<KlineBuilder>,
    last_book_ticker: Option<((u64, u64), (u64, u64))>,
    next_agg_id: u64,
}

impl SymbolState {
    fn price(&self, tick: u64) -> u64 {
        tick * self.spec.tick_e8
    }

    fn qty(&self, lots: u64) -> u64 {
        lots * self.spec.lot_e8
    }

    fn topic(&self, kind: StreamKind) -> Topic {
        Topic::Symbol {
            symbol: self.id,
            kind,
        }
    }

    fn best(&self) -> ((u64, u64), (u64, u64)) {
        let book = self.sim.book();
        let convert =
            |level: Option<(u64, u64)>| level.map_or((0, 0), |(t, l)| (self.price(t), self.qty(l)));
        (convert(book.best_bid()), convert(book.best_ask()))
    }
}

/// When a symbol first steps, as an offset into its period: symbol `index` of `count` starts
/// `index / count` of the way in.
///
/// The feed's rates divide a second evenly (10 to 100 Hz), so symbols started together would
/// all step at once every 100 ms and every subscriber's frame would be queued in the same
/// instant. The writers then drain the whole burst one socket at a time, and the last
/// subscriber waits for all the others (measured: publish-to-socket p99 5-10 ms at 1,000
/// subscribers on 2 cores). Spread over the period, each step wakes only its own symbol's
/// subscribers. Real venues don't tick in lockstep either. Offsets are fixed per feed, so
/// event contents stay deterministic per seed.
fn first_step_offset(index: usize, count: usize, period: Duration) -> Duration {
    let count = u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    let index = u32::try_from(index).unwrap_or(0) % count;
    period / count * index
}

struct Engine {
    symbols: Vec<SymbolState>,
    hub: Hub,
    metrics: EngineMetrics,
    scratch: Step,
    /// 1000 ms ticks since start, to push non-1s klines every other second as Binance does.
    seconds: u64,
    live: Arc<LiveStats>,
    stats_window: StatsWindow,
    /// Engine updates since start, all symbols (the per-symbol Prometheus counters can't be
    /// read back).
    updates_total: u64,
}

impl Engine {
    fn new(feed: Arc<Feed>, naive_fanout: bool, live: Arc<LiveStats>) -> Self {
        let now = Instant::now();
        let now_us = crate::clock::wall_us();
        let symbols = feed
            .symbols
            .iter()
            .enumerate()
            .map(|(index, spec)| {
                let sim = MarketSim::new(spec);
                let reference = spec.start_price_ticks * spec.tick_e8;
                let period = Duration::from_secs(1) / spec.rate_hz.max(1);
                SymbolState {
                    id: index as SymbolId,
                    spec: spec.clone(),
                    sim,
                    step: Step::default(),
                    period,
                    next_step: now + first_step_offset(index, feed.symbols.len(), period),
                    window_100ms: DiffWindow::default(),
                    window_1000ms: DiffWindow::default(),
                    rolling: Rolling24h::new(DAY_US, MINUTE_US, now_us, reference),
                    klines: KlineInterval::ALL
                        .iter()
                        .map(|&i| KlineBuilder::new(i, now_us, reference))
                        .collect(),
                    last_book_ticker: None,
                    next_agg_id: 1,
                }
            })
            .collect();
        let metrics = EngineMetrics::new(&feed);
        let hub = Hub::new(feed, naive_fanout);
        Engine {
            symbols,
            hub,
            metrics,
            scratch: Step::default(),
            seconds: 0,
            live,
            stats_window: StatsWindow::new(now),
            updates_total: 0,
        }
    }

    fn run(mut self, rx: Receiver<Command>) {
        let start = Instant::now();
        let mut next_100ms = start + Duration::from_millis(100);
        let mut next_1000ms = start + Duration::from_secs(1);
        loop {
            for _ in 0..COMMANDS_PER_TURN {
                match rx.try_recv() {
                    Ok(command) => self.apply(command),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            let now = Instant::now();
            let now_us = crate::clock::wall_us();
            for index in 0..self.symbols.len() {
                let state = &mut self.symbols[index];
                if state.next_step <= now {
                    state.next_step += state.period;
                    if state.next_step + Duration::from_secs(1) < now {
                        // Fell far behind (a stalled machine): skip instead of bursting.
                        state.next_step = now + state.period;
                    }
                    self.step_symbol(index, now_us);
                }
            }
            if now >= next_100ms {
                next_100ms += Duration::from_millis(100);
                if next_100ms < now {
                    next_100ms = now + Duration::from_millis(100);
                }
                self.every_100ms(now_us);
            }
            if now >= next_1000ms {
                next_1000ms += Duration::from_secs(1);
                if next_1000ms < now {
                    next_1000ms = now + Duration::from_secs(1);
                }
                self.every_1000ms(now_us);
            }
            let next_step = self
                .symbols
                .iter()
                .map(|s| s.next_step)
                .min()
                .unwrap_or(next_100ms);
            let deadline = next_step.min(next_100ms).min(next_1000ms);
            match rx.recv_deadline(deadline) {
                Ok(command) => self.apply(command),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Attach {
                conn,
                outbox,
                combined,
                unit,
                topics,
                ready,
            } => {
                self.hub.attach(conn, outbox, combined, unit);
                self.hub.subscribe(conn, &topics);
                let _ = ready.send(());
            }
            Command::Control {
                conn,
                change,
                reply,
            } => {
                match change {
                    Change::None => {}
                    Change::Subscribe(topics) => self.hub.subscribe(conn, &topics),
                    Change::Unsubscribe(topics) => self.hub.unsubscribe(conn, &topics),
                    Change::SetCombined(combined) => self.hub.set_combined(conn, combined),
                }
                if let Some(outbox) = self.hub.outbox(conn) {
                    outbox.push_control(reply);
                }
            }
            Command::Detach { conn } => self.hub.detach(conn),
            Command::Snapshot {
                symbol,
                limit,
                reply,
            } => {
                let _ = reply.send(self.snapshot(symbol, limit));
            }
        }
    }

    fn snapshot(&self, symbol: SymbolId, limit: usize) -> Bytes {
        let state = &self.symbols[usize::from(symbol)];
        let mut out = Vec::with_capacity(64 + limit * 48);
        payload::write_partial(
            &mut out,
            &state.spec,
            state.sim.book(),
            state.sim.last_update_id(),
            limit,
        );
        Bytes::from(out)
    }

    fn step_symbol(&mut self, index: usize, now_us: u64) {
        let started = std::time::Instant::now();
        let state = &mut self.symbols[index];
        state.sim.step(&mut state.step);
        self.metrics.updated(index);
        self.updates_total += 1;
        state.window_100ms.add(&state.step);
        state.window_1000ms.add(&state.step);
        let state = &self.symbols[index];
        self.hub.publish(
            state.topic(StreamKind::Diff(Speed::Unspecified)),
            |out, unit| {
                payload::write_diff(
                    out,
                    &state.spec,
                    &state.step,
                    state.step.update_id,
                    now_us,
                    unit,
                )
            },
        );
        self.publish_trades(index, now_us);
        let state = &mut self.symbols[index];
        let best = state.best();
        if state.last_book_ticker != Some(best) {
            state.last_book_ticker = Some(best);
            let state = &self.symbols[index];
            self.hub
                .publish(state.topic(StreamKind::BookTicker), |out, _| {
                    payload::write_book_ticker(out, &state.spec.symbol, state.step.update_id, best)
                });
        }
        self.metrics
            .step_seconds
            .record(started.elapsed().as_secs_f64());
    }

    /// Records the step's trades in the statistics and publishes `trade` and `aggTrade`.
    fn publish_trades(&mut self, index: usize, now_us: u64) {
        let state = &mut self.symbols[index];
        if state.step.trades.is_empty() {
            return;
        }
        for trade in &state.step.trades {
            let print = TradePrint {
                id: trade.id,
                price_e8: trade.price_tick * state.spec.tick_e8,
                qty_e8: trade.qty_lots * state.spec.lot_e8,
                time_us: now_us,
                buyer_is_maker: trade.buyer_is_maker,
            };
            state.rolling.record(&print);
            for kline in &mut state.klines {
                kline.record(&print);
            }
        }
        let state = &self.symbols[index];
        let trade_topic = state.topic(StreamKind::Trade);
        if self.hub.wants(&trade_topic) {
            for trade in &state.step.trades {
                self.hub.publish(trade_topic, |out, unit| {
                    payload::write_trade(out, &state.spec, trade, now_us, unit)
                });
            }
        }
        // aggTrade: consecutive fills at one price by one aggressor are one aggregate.
        let trades = &state.step.trades;
        let mut agg_id = state.next_agg_id;
        let agg_topic = state.topic(StreamKind::AggTrade);
        let mut start = 0;
        while start < trades.len() {
            let mut end = start + 1;
            while end < trades.len()
                && trades[end].price_tick == trades[start].price_tick
                && trades[end].buyer_is_maker == trades[start].buyer_is_maker
            {
                end += 1;
            }
            let group = &trades[start..end];
            self.hub.publish(agg_topic, |out, unit| {
                payload::write_agg_trade(out, &state.spec, agg_id, group, now_us, unit)
            });
            agg_id += 1;
            start = end;
        }
        self.symbols[index].next_agg_id = agg_id;
    }

    fn every_100ms(&mut self, now_us: u64) {
        for index in 0..self.symbols.len() {
            self.flush_window(index, Speed::Ms100, now_us);
            for levels in [5u8, 10, 20] {
                self.publish_partial(index, levels, Speed::Ms100);
            }
        }
    }

    fn every_1000ms(&mut self, now_us: u64) {
        self.seconds += 1;
        for index in 0..self.symbols.len() {
            self.flush_window(index, Speed::Ms1000, now_us);
            for levels in [5u8, 10, 20] {
                self.publish_partial(index, levels, Speed::Unspecified);
                self.publish_partial(index, levels, Speed::Ms1000);
            }
            self.publish_klines(index, now_us);
        }
        self.publish_tickers(now_us);
        self.publish_server_stats(now_us);
        self.hub.sweep();
    }

    fn flush_window(&mut self, index: usize, speed: Speed, now_us: u64) {
        let state = &mut self.symbols[index];
        let window = match speed {
            Speed::Ms100 => &mut state.window_100ms,
            _ => &mut state.window_1000ms,
        };
        if window.first_update_id == 0 {
            return;
        }
        let first = window.first_update_id;
        window.drain_into(&mut self.scratch);
        let state = &self.symbols[index];
        let merged = &self.scratch;
        self.hub
            .publish(state.topic(StreamKind::Diff(speed)), |out, unit| {
                payload::write_diff(out, &state.spec, merged, first, now_us, unit)
            });
    }

    fn publish_partial(&mut self, index: usize, levels: u8, speed: Speed) {
        let state = &self.symbols[index];
        self.hub.publish(
            state.topic(StreamKind::Partial { levels, speed }),
            |out, _| {
                payload::write_partial(
                    out,
                    &state.spec,
                    state.sim.book(),
                    state.sim.last_update_id(),
                    usize::from(levels),
                )
            },
        );
    }

    fn publish_klines(&mut self, index: usize, now_us: u64) {
        let seconds = self.seconds;
        let state = &mut self.symbols[index];
        for slot in 0..state.klines.len() {
            let interval = KlineInterval::ALL[slot];
            let topic = state.topic(StreamKind::Kline(interval));
            let symbol = state.spec.symbol.as_str();
            state.klines[slot].roll(now_us);
            while let Some(closed) = state.klines[slot].pop_closed() {
                self.hub
                    .publish(topic, |out, unit| closed.write(out, symbol, now_us, unit));
            }
            let period_s = (interval.push_period_us() / 1_000_000).max(1);
            if seconds % period_s == 0 {
                let kline = &state.klines[slot];
                self.hub
                    .publish(topic, |out, unit| kline.write(out, symbol, now_us, unit));
            }
        }
    }

    /// `!stats@1s`. The window is sampled every second even with nobody listening, so a first
    /// subscriber's first sample covers one second, not the time since the last listener left.
    fn publish_server_stats(&mut self, now_us: u64) {
        let sample = self.stats_window.sample(
            &self.live,
            self.updates_total,
            self.hub.slow_consumers_total(),
            Instant::now(),
        );
        self.hub.publish(Topic::ServerStats, |out, unit| {
            live_stats::write_stats(out, &sample, now_us, unit)
        });
    }

    fn publish_tickers(&mut self, now_us: u64) {
        let all = Topic::AllMiniTickers;
        let want_all = self.hub.wants(&all);
        let mut every: Vec<(usize, TickerStats)> = Vec::new();
        for index in 0..self.symbols.len() {
            let state = &self.symbols[index];
            let ticker = state.topic(StreamKind::Ticker);
            let mini = state.topic(StreamKind::MiniTicker);
            if !(want_all || self.hub.wants(&ticker) || self.hub.wants(&mini)) {
                continue;
            }
            let stats = self.symbols[index].rolling.stats(now_us);
            let state = &self.symbols[index];
            let symbol = state.spec.symbol.as_str();
            let (bid, ask) = state.best();
            self.hub.publish(ticker, |out, unit| {
                rolling::write_ticker(out, symbol, &stats, bid, ask, now_us, unit)
            });
            self.hub.publish(mini, |out, unit| {
                rolling::write_mini_ticker(out, symbol, &stats, now_us, unit)
            });
            if want_all {
                every.push((index, stats));
            }
        }
        if want_all {
            let symbols = &self.symbols;
            self.hub.publish(all, |out, unit| {
                out.push(b'[');
                for (n, (index, stats)) in every.iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    rolling::write_mini_ticker(
                        out,
                        &symbols[*index].spec.symbol,
                        stats,
                        now_us,
                        unit,
                    );
                }
                out.push(b']');
            });
        }
    }
}
