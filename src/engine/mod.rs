//! The engine thread: steps every symbol's simulation on its own clock, hands each step to the
//! derivation stage, and publishes through the [`Hub`], which it alone owns.
//!
//! The engine keeps the simulations and their clocks, the 100 ms and 1000 ms timers, the
//! command loop and the hub. Everything published is derived from the steps by
//! [`crate::derive`]: per step, `step_symbol` calls `MarketSim::step` and hands the step to
//! [`Streams::on_step`]; the timers call [`Streams::every_100ms`] and
//! [`Streams::every_1000ms`]. The stage publishes through the hub's [`Publisher`] impl at the
//! end of this file. It starts from a copy of each simulation's initial book
//! ([`SymbolStreams::from_snapshot`]) and never reads a simulation again, so a gateway that
//! receives the same steps can derive the same bytes. Only `!stats@1s` is published here,
//! because it describes this server rather than the market.
//!
//! Commands from connections (subscribe, unsubscribe, replies, snapshots) arrive on one bounded
//! channel and are applied between steps, so a subscription's reply is queued after the
//! subscription is live and a depth snapshot is taken exactly at the last published update id:
//! Binance's snapshot-plus-diff algorithm then works with no special cases.

use crate::derive::{Publisher, Streams, SymbolStreams};
use crate::fanout::hub::Hub;
use crate::fanout::outbox::Outbox;
use crate::fanout::shard::{ConnId, ShardLink};
use crate::market::feed::Feed;
use crate::market::sim::{MarketSim, Step};
use crate::metrics::live_stats::{self, LiveStats, StatsWindow};
use crate::metrics::{EngineMetrics, ShardMetrics};
use crate::protocol::control::Change;
use crate::protocol::json::TimeUnit;
use crate::protocol::stream::{SymbolId, Topic};
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How many commands may wait for the engine; beyond that, senders are told the server is busy.
pub const COMMAND_CAPACITY: usize = 65_536;
/// Commands applied per loop turn at most, so a storm of subscriptions cannot stall the books.
const COMMANDS_PER_TURN: usize = 4_096;

pub enum Command {
    /// A new connection on `shard` and the streams named in its URL; `ready` fires once they
    /// are live there.
    Attach {
        conn: ConnId,
        shard: usize,
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
    /// The engine thread, unparked after each send (see [`Engine::run`]).
    engine: std::thread::Thread,
}

impl EngineHandle {
    /// Sends without waiting; `Err` means the engine is saturated or gone.
    pub fn try_send(&self, command: Command) -> Result<(), Command> {
        self.tx.try_send(command).map_err(|e| e.into_inner())?;
        self.engine.unpark();
        Ok(())
    }
}

/// Starts the engine thread. It stops when every [`EngineHandle`] is dropped.
/// `naive_fanout` makes the hub serialize per subscriber (see [`Hub::new`]).
/// `live` is where connections count what `!stats@1s` reports; `shards` are the write path's
/// threads, in order, and `shard_metrics` their counters.
pub fn spawn(
    feed: Arc<Feed>,
    naive_fanout: bool,
    live: Arc<LiveStats>,
    shards: Vec<ShardLink>,
    shard_metrics: ShardMetrics,
) -> std::io::Result<(EngineHandle, JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::bounded(COMMAND_CAPACITY);
    let thread = std::thread::Builder::new()
        .name("bookcast-engine".into())
        .spawn(move || {
            let hub = Hub::new(feed.clone(), naive_fanout, shards, shard_metrics);
            Engine::new(feed, hub, live).run(rx)
        })?;
    let engine = thread.thread().clone();
    Ok((EngineHandle { tx, engine }, thread))
}

/// One symbol's simulation and its clock.
struct SimSymbol {
    sim: MarketSim,
    period: Duration,
    next_step: Instant,
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
    sims: Vec<SimSymbol>,
    /// The derivation stage: every step is handed to it, and it publishes through `hub`.
    streams: Streams,
    hub: Hub,
    metrics: EngineMetrics,
    /// The step being handed from a simulation to the derivation stage, reused.
    step: Step,
    live: Arc<LiveStats>,
    stats_window: StatsWindow,
    /// Engine updates since start, all symbols (the per-symbol Prometheus counters can't be
    /// read back).
    updates_total: u64,
}

impl Engine {
    fn new(feed: Arc<Feed>, hub: Hub, live: Arc<LiveStats>) -> Self {
        let now = Instant::now();
        let now_us = crate::clock::wall_us();
        let count = feed.symbols.len();
        let mut sims = Vec::with_capacity(count);
        let mut symbols = Vec::with_capacity(count);
        for (index, spec) in feed.symbols.iter().enumerate() {
            let sim = MarketSim::new(spec);
            // The derivation stage starts from the simulation's freshly built book, exactly as
            // a gateway starts from the engine's snapshot.
            symbols.push(SymbolStreams::from_snapshot(
                index as SymbolId,
                spec.clone(),
                sim.book().clone(),
                sim.last_update_id(),
                now_us,
            ));
            let period = Duration::from_secs(1) / spec.rate_hz.max(1);
            sims.push(SimSymbol {
                sim,
                period,
                next_step: now + first_step_offset(index, count, period),
            });
        }
        let metrics = EngineMetrics::new(&feed);
        Engine {
            sims,
            streams: Streams::new(symbols),
            hub,
            metrics,
            step: Step::default(),
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
            for index in 0..self.sims.len() {
                let state = &mut self.sims[index];
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
                .sims
                .iter()
                .map(|s| s.next_step)
                .min()
                .unwrap_or(next_100ms);
            let deadline = next_step.min(next_100ms).min(next_1000ms);
            // Everything this turn published is in the shards' channels: wake those parked.
            self.hub.end_batch();
            // Parked rather than blocked in `recv_deadline`: crossbeam spins and yields before
            // it sleeps, which cost thousands of `sched_yield` calls a second at ~2,000 wakeups a
            // second. Senders unpark the thread; a send between this check and the park leaves
            // the unpark token set, so the park returns at once. Once every sender is gone,
            // `try_recv` at the top of the loop sees it within one timer period (100 ms).
            if rx.is_empty() {
                if let Some(wait) = deadline.checked_duration_since(Instant::now()) {
                    std::thread::park_timeout(wait);
                }
            }
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Attach {
                conn,
                shard,
                outbox,
                combined,
                unit,
                topics,
                ready,
            } => self
                .hub
                .attach(conn, shard, outbox, combined, unit, &topics, ready),
            Command::Control {
                conn,
                change,
                reply,
            } => self.hub.control(conn, change, reply),
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
        self.streams.snapshot(symbol, limit)
    }

    /// Steps one symbol's simulation and hands the step to the derivation stage.
    fn step_symbol(&mut self, index: usize, now_us: u64) {
        let started = std::time::Instant::now();
        self.sims[index].sim.step(&mut self.step);
        self.metrics.updated(index);
        self.updates_total += 1;
        self.streams
            .on_step(index as SymbolId, &self.step, now_us, &mut self.hub);
        self.metrics
            .step_seconds
            .record(started.elapsed().as_secs_f64());
    }

    fn every_100ms(&mut self, now_us: u64) {
        self.streams.every_100ms(now_us, &mut self.hub);
    }

    fn every_1000ms(&mut self, now_us: u64) {
        self.streams.every_1000ms(now_us, &mut self.hub);
        self.publish_server_stats(now_us);
        self.hub.sweep();
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
}

/// The engine's side of the seam: derived events go to the fan-out hub.
impl Publisher for Hub {
    fn wants(&self, topic: &Topic) -> bool {
        Hub::wants(self, topic)
    }

    fn publish(&mut self, topic: Topic, render: &mut dyn FnMut(&mut Vec<u8>, TimeUnit)) {
        Hub::publish(self, topic, render);
    }
}
