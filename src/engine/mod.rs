//! The engine thread: steps every symbol's simulation on its own clock, hands each step to the
//! derivation stage, and publishes through the [`Hub`], which it alone owns.
//!
//! The engine keeps the simulations and their clocks, the 100 ms and 1000 ms timers, the
//! command loop and the hub. Everything published is derived from the steps by
//! [`crate::derive`]: per step, `step_symbol` calls `MarketSim::step` and hands the step to
//! [`Streams::on_step`]; the timers call [`Streams::every_100ms`] and
//! [`Streams::every_1000ms`]. The stage publishes through the hub's [`Publisher`] impl at the
//! end of this file. It starts from a copy of each simulation's initial book
//! ([`crate::derive::SymbolStreams::from_snapshot`]) and never reads a simulation again, so a gateway that
//! receives the same steps can derive the same bytes. Only `!stats@1s` is published here,
//! because it describes this server rather than the market.
//!
//! Commands from connections (subscribe, unsubscribe, replies, snapshots) arrive on one bounded
//! channel and are applied between steps, so a subscription's reply is queued after the
//! subscription is live and a depth snapshot is taken exactly at the last published update id:
//! Binance's snapshot-plus-diff algorithm then works with no special cases.
//!
//! Shards ask for resync snapshots (a `snapshot=true` connection whose queue overflowed, see
//! [`crate::fanout::outbox`]) on a second bounded channel, read at the top of every turn for
//! the same reason: each snapshot is taken between steps, at the last published update id.

use crate::derive::{Publisher, Streams};
use crate::fanout::hub::Hub;
use crate::fanout::outbox::Outbox;
use crate::fanout::shard::{ConnId, ShardLink};
use crate::market::feed::Feed;
use crate::market::sim::Step;
use crate::metrics::live_stats::{self, LiveStats, StatsWindow};
use crate::metrics::{EngineMetrics, ShardMetrics};
use crate::protocol::control::Change;
use crate::protocol::json::TimeUnit;
use crate::protocol::stream::{StreamKind, SymbolId, Topic};
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub mod simulate;

/// How many commands may wait for the engine; beyond that, senders are told the server is busy.
pub const COMMAND_CAPACITY: usize = 65_536;
/// Commands applied per loop turn at most, so a storm of subscriptions cannot stall the books.
const COMMANDS_PER_TURN: usize = 4_096;
/// Resync requests answered per loop turn at most: each renders a snapshot per diff stream.
const RESYNCS_PER_TURN: usize = 64;

pub enum Command {
    /// A new connection on `shard` and the streams named in its URL; `ready` fires once they
    /// are live there.
    Attach {
        conn: ConnId,
        shard: usize,
        outbox: Arc<Outbox>,
        combined: bool,
        unit: TimeUnit,
        /// `snapshot=true`: each diff stream starts with a `depthSnapshot`.
        snapshot: bool,
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
    /// Run `read` on the derivation stage between two steps: REST reads of trades, klines and
    /// tickers see exactly what the streams have published, and nothing half-applied. `read`
    /// carries its own reply channel.
    Read(Box<dyn FnOnce(&Streams) + Send>),
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

/// Wakes the engine thread from outside its command channel: whoever feeds a [`Market`] from
/// another thread (a gateway's follower) calls it after handing something over, and shards
/// after a resync request. Before the thread has started it does nothing; the thread's first
/// turn looks anyway.
#[derive(Clone, Default)]
pub struct EngineWaker(Arc<OnceLock<std::thread::Thread>>);

impl EngineWaker {
    pub fn wake(&self) {
        if let Some(thread) = self.0.get() {
            thread.unpark();
        }
    }
}

/// Starts the engine thread. It stops when every [`EngineHandle`] is dropped.
///
/// `market` drives it and `streams` is the derivation stage it starts from (see
/// [`simulate::Simulation::new`] for the all-in-one server's). `naive_fanout` makes the hub
/// serialize per subscriber (see [`Hub::new`]). `live` is where connections count what
/// `!stats@1s` reports; `shards` are the write path's threads, in order, `shard_metrics`
/// their counters, and `resyncs` their resync requests
/// ([`crate::fanout::shard::ResyncLink`], which must wake `start.waker`).
pub fn spawn(
    feed: Arc<Feed>,
    start: Start,
    naive_fanout: bool,
    live: Arc<LiveStats>,
    shards: Vec<ShardLink>,
    shard_metrics: ShardMetrics,
    resyncs: Receiver<ConnId>,
) -> std::io::Result<(EngineHandle, JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::bounded(COMMAND_CAPACITY);
    let thread = std::thread::Builder::new()
        .name("bookcast-engine".into())
        .spawn(move || {
            let hub = Hub::new(feed.clone(), naive_fanout, shards, shard_metrics);
            let Start {
                streams,
                market,
                waker,
            } = start;
            let _ = waker.0.set(std::thread::current());
            let stage = Stage {
                streams,
                hub,
                metrics: EngineMetrics::new(&feed),
                live,
                stats_window: StatsWindow::new(Instant::now()),
                updates_total: 0,
            };
            Engine {
                stage,
                market,
                resyncs,
            }
            .run(rx)
        })?;
    let engine = thread.thread().clone();
    Ok((EngineHandle { tx, engine }, thread))
}

/// What an engine thread starts with: the derivation stage's state and what drives it.
pub struct Start {
    pub streams: Streams,
    pub market: Box<dyn Market>,
    /// Set to the engine thread once it runs.
    pub waker: EngineWaker,
}

impl Start {
    /// The all-in-one server's: a fresh simulation of `feed`.
    pub fn simulate(feed: &Feed) -> Self {
        let (simulation, streams) = simulate::Simulation::new(feed, None);
        Start {
            streams,
            market: Box::new(simulation),
            waker: EngineWaker::default(),
        }
    }
}

/// What drives the derivation stage: a local simulation ([`simulate::Simulation`]) or steps
/// that arrive from elsewhere (a cluster gateway's follower).
///
/// The engine loop calls [`advance`](Market::advance) once per turn, between command batches.
/// Everything it hands to the [`Stage`] is published at once, and the shards are woken at the
/// end of the turn.
pub trait Market: Send + 'static {
    /// Hands every step and tick due by now to `stage`; returns when to be called again
    /// (`None`: when woken, or within [`IDLE_WAIT`] at the latest).
    fn advance(&mut self, stage: &mut Stage) -> Option<Instant>;
}

/// How long the engine sleeps at most when its market names no deadline: commands and
/// records wake it sooner, and a dropped command channel is noticed within this.
pub const IDLE_WAIT: Duration = Duration::from_millis(100);

/// One timer tick: every 100 ms, and every tenth of them is also the 1000 ms tick.
///
/// Numbered from 1 since the stage started, so a follower can tell a missing tick from a
/// repeated one, and all-in-one servers and gateways put the same ticks between the same steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tick {
    pub number: u64,
    pub now_us: u64,
}

impl Tick {
    /// Whether this tick also closes a second (`@depth@1000ms`, klines, tickers, `!stats@1s`).
    pub fn closes_second(&self) -> bool {
        self.number % 10 == 0
    }
}

/// The derivation stage and the hub it publishes to, as a [`Market`] sees them.
pub struct Stage {
    /// The derivation stage: every step is handed to it, and it publishes through `hub`.
    streams: Streams,
    hub: Hub,
    metrics: EngineMetrics,
    live: Arc<LiveStats>,
    stats_window: StatsWindow,
    /// Engine updates since start, all symbols (the per-symbol Prometheus counters can't be
    /// read back).
    updates_total: u64,
}

impl Stage {
    /// Hands one symbol's step to the derivation stage, which publishes what it derives.
    pub fn step(&mut self, symbol: SymbolId, step: &Step, now_us: u64) {
        self.metrics.updated(usize::from(symbol));
        self.updates_total += 1;
        self.streams.on_step(symbol, step, now_us, &mut self.hub);
    }

    /// One timer tick: the 100 ms streams, and on every tenth tick the 1000 ms ones, this
    /// server's `!stats@1s` and the hub's sweep.
    pub fn tick(&mut self, tick: Tick) {
        self.streams.every_100ms(tick.now_us, &mut self.hub);
        if tick.closes_second() {
            self.streams.every_1000ms(tick.now_us, &mut self.hub);
            self.publish_server_stats(tick.now_us);
            self.hub.sweep();
        }
    }

    /// Replaces every symbol's state with `snapshot`'s (a gateway that lost steps it can no
    /// longer fetch), publishing per symbol one diff that bridges its book to the snapshot's:
    /// see [`Streams::rebase`].
    pub fn rebase(&mut self, snapshot: Streams, now_us: u64) {
        self.streams.rebase(snapshot, now_us, &mut self.hub);
    }

    /// The derivation stage, for snapshots of its state.
    pub fn streams(&self) -> &Streams {
        &self.streams
    }

    pub fn metrics(&self) -> &EngineMetrics {
        &self.metrics
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

struct Engine {
    stage: Stage,
    market: Box<dyn Market>,
    /// Connections whose shard asks for resync snapshots.
    resyncs: Receiver<ConnId>,
}

impl Engine {
    fn run(mut self, rx: Receiver<Command>) {
        loop {
            for _ in 0..COMMANDS_PER_TURN {
                match rx.try_recv() {
                    Ok(command) => self.apply(command),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            for _ in 0..RESYNCS_PER_TURN {
                let Ok(conn) = self.resyncs.try_recv() else {
                    break;
                };
                self.resync(conn);
            }
            let deadline = self
                .market
                .advance(&mut self.stage)
                .unwrap_or_else(|| Instant::now() + IDLE_WAIT);
            // Everything this turn published is in the shards' channels: wake those parked.
            self.stage.hub.end_batch();
            // Parked rather than blocked in `recv_deadline`: crossbeam spins and yields before
            // it sleeps, which cost thousands of `sched_yield` calls a second at ~2,000 wakeups a
            // second. Senders unpark the thread; a send between this check and the park leaves
            // the unpark token set, so the park returns at once. Once every sender is gone,
            // `try_recv` at the top of the loop sees it within one timer period (100 ms).
            if rx.is_empty() && self.resyncs.is_empty() {
                if let Some(wait) = deadline.checked_duration_since(Instant::now()) {
                    std::thread::park_timeout(wait.min(IDLE_WAIT));
                }
            }
        }
    }

    fn apply(&mut self, command: Command) {
        let hub = &mut self.stage.hub;
        match command {
            Command::Attach {
                conn,
                shard,
                outbox,
                combined,
                unit,
                snapshot,
                topics,
                ready,
            } => {
                let added = hub.attach(
                    conn, shard, outbox, combined, unit, snapshot, &topics, ready,
                );
                self.send_snapshots(conn, &added);
            }
            Command::Control {
                conn,
                change,
                reply,
            } => {
                let added = hub.control(conn, change, reply);
                self.send_snapshots(conn, &added);
            }
            Command::Detach { conn } => hub.detach(conn),
            Command::Snapshot {
                symbol,
                limit,
                reply,
            } => {
                let _ = reply.send(self.stage.streams.snapshot(symbol, limit));
            }
            Command::Read(read) => read(&self.stage.streams),
        }
    }

    /// `snapshot=true`: each diff stream just subscribed gets a `depthSnapshot` at the last
    /// published update id, queued behind the subscription and ahead of any diff, so its first
    /// diff has `U <= lastUpdateId + 1 <= u`.
    fn send_snapshots(&mut self, conn: ConnId, added: &[Topic]) {
        if added.is_empty() || !self.stage.hub.wants_snapshots(conn) {
            return;
        }
        let now_us = crate::clock::wall_us();
        for &topic in added {
            if let Topic::Symbol {
                symbol,
                kind: StreamKind::Diff(_),
            } = topic
            {
                let streams = &self.stage.streams;
                self.stage.hub.send_to_one(conn, topic, |out, unit| {
                    streams
                        .symbol(symbol)
                        .write_depth_snapshot(out, now_us, unit)
                });
            }
        }
    }

    /// A shard dropped `conn`'s queued diffs: send a `depthSnapshot` of each of its diff
    /// streams, at the last published update id like [`Engine::send_snapshots`], so the
    /// first diff after each has `U <= lastUpdateId + 1 <= u`.
    fn resync(&mut self, conn: ConnId) {
        let now_us = crate::clock::wall_us();
        let streams = &self.stage.streams;
        self.stage.hub.resync(conn, |symbol, out, unit| {
            streams
                .symbol(symbol)
                .write_depth_snapshot(out, now_us, unit)
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
