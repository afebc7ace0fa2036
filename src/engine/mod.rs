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

use crate::derive::recent::Recent;
use crate::derive::{Publisher, Streams, SymbolStreams};
use crate::fanout::hub::Hub;
use crate::fanout::outbox::Outbox;
use crate::fanout::shard::{ConnId, Shape, ShardLink};
use crate::market::feed::Feed;
use crate::market::sim::Step;
use crate::metrics::live_stats::{self, LiveStats, StatsWindow};
use crate::metrics::{EngineMetrics, ShardMetrics};
use crate::protocol::control::Change;
use crate::protocol::json::TimeUnit;
use crate::protocol::stream::{StreamKind, SymbolId, Topic};
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use std::sync::atomic::{fence, AtomicU64, Ordering};
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
/// A command sent while the parked engine will wake by itself within this long anyway (its
/// next batch of book steps is due) does not unpark it: at the default feed the engine steps
/// every [`simulate::STEP_QUANTUM`] (2 ms), so connections opening, closing and subscribing
/// cost no thread wakeup and context switch of their own, for at most this much more latency.
const LAZY_WAKE_US: u64 = 2_000;

/// A new connection on `shard` and the streams named in its URL; `ready` fires once they are
/// live there (and anything `snapshot` or `resume` asked for is queued ahead of their events).
pub struct Attach {
    pub conn: ConnId,
    pub shard: usize,
    pub outbox: Arc<Outbox>,
    /// Raw, combined or SSE events (see [`Shape`]).
    pub shape: Shape,
    pub unit: TimeUnit,
    /// `snapshot=true`: each diff stream starts with a `depthSnapshot`.
    pub snapshot: bool,
    pub topics: Vec<Topic>,
    /// `resume=`: streams of `topics` and the last id the client holds of each.
    pub resume: Vec<(Topic, u64)>,
    /// A poll cursor rather than `resume=`: if the history no longer holds everything after an
    /// id, nothing is attached; the outbox is closed with [`EXPIRED`] and `ready` dropped.
    pub strict: bool,
    pub ready: oneshot::Sender<()>,
}

/// The close code a strict attach's outbox gets when its cursor is older than the history (the
/// poll answers `410 Gone`).
pub const EXPIRED: u16 = 410;

/// How long an attach whose `resume=` names ids this node has not published yet waits for them
/// (a gateway slightly behind the one the client left), well within the handshake's 5 s.
const RESUME_WAIT: Duration = Duration::from_secs(2);

pub enum Command {
    Attach(Box<Attach>),
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
    /// The engine thread, unparked after a send unless it wakes soon anyway (see
    /// [`Engine::run`]).
    engine: std::thread::Thread,
    wakes_at: Arc<WakesAt>,
}

impl EngineHandle {
    /// Sends without waiting; `Err` means the engine is saturated or gone.
    pub fn try_send(&self, command: Command) -> Result<(), Command> {
        self.tx.try_send(command).map_err(|e| e.into_inner())?;
        if !self.wakes_at.soon() {
            self.engine.unpark();
        }
        Ok(())
    }
}

/// When the parked engine thread will wake by itself, in [`crate::clock::monotonic_us`]; 0
/// while it runs. The engine stores it before it looks at its channels one last time and
/// parks; a sender reads it after its send (both with `SeqCst`), so either the engine sees
/// the command or the sender sees a deadline it cannot rely on and unparks.
#[derive(Default)]
struct WakesAt(AtomicU64);

impl WakesAt {
    /// Whether the engine is parked and will wake within [`LAZY_WAKE_US`] by itself.
    fn soon(&self) -> bool {
        fence(Ordering::SeqCst);
        let at = self.0.load(Ordering::SeqCst);
        at != 0 && at <= crate::clock::monotonic_us() + LAZY_WAKE_US
    }

    fn parking_until(&self, at_us: u64) {
        self.0.store(at_us, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    fn running(&self) {
        self.0.store(0, Ordering::SeqCst);
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
    let wakes_at = Arc::new(WakesAt::default());
    let engine_wakes_at = wakes_at.clone();
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
                feed,
                deferred: Vec::new(),
                resyncs,
                wakes_at: engine_wakes_at,
            }
            .run(rx)
        })?;
    let engine = thread.thread().clone();
    Ok((
        EngineHandle {
            tx,
            engine,
            wakes_at,
        },
        thread,
    ))
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
            self.metrics.history_bytes(self.streams.recent_bytes());
        }
    }

    /// Replaces every symbol's state with `snapshot`'s (a gateway that lost steps it can no
    /// longer fetch), publishing per symbol one diff that bridges its book to the snapshot's:
    /// see [`Streams::rebase`].
    pub fn rebase(&mut self, snapshot: Streams, now_us: u64) {
        self.streams.rebase(snapshot, now_us, &mut self.hub);
    }

    /// Puts each symbol's older `resume=` history in front of what it has kept since (a
    /// gateway's backfill from the journal).
    pub fn prepend_history(&mut self, histories: Vec<(SymbolId, Recent)>) {
        self.streams.prepend_recent(histories);
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
    feed: Arc<Feed>,
    /// Attaches waiting for this node to publish the ids their `resume=` names, with when to
    /// stop waiting. Bounded by the command channel and the connection limit.
    deferred: Vec<(Instant, Box<Attach>)>,
    /// Connections whose shard asks for resync snapshots.
    resyncs: Receiver<ConnId>,
    /// Published before each park, for senders (see [`EngineHandle::try_send`]).
    wakes_at: Arc<WakesAt>,
}

/// Whether `topic` is a diff depth stream.
fn is_diff(topic: Topic) -> bool {
    matches!(
        topic,
        Topic::Symbol {
            kind: StreamKind::Diff(_),
            ..
        }
    )
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
            let mut deadline = self
                .market
                .advance(&mut self.stage)
                .unwrap_or_else(|| Instant::now() + IDLE_WAIT);
            if !self.deferred.is_empty() {
                self.retry_deferred();
                // Look again soon: a gateway's steps do not always wake the engine on time.
                deadline = deadline.min(Instant::now() + Duration::from_millis(10));
            }
            // Everything this turn published is in the shards' channels: wake those parked.
            self.stage.hub.end_batch();
            // Parked rather than blocked in `recv_deadline`: crossbeam spins and yields before
            // it sleeps, which cost thousands of `sched_yield` calls a second at ~2,000 wakeups a
            // second. Senders unpark the thread; a send between this check and the park leaves
            // the unpark token set, so the park returns at once. Once every sender is gone,
            // `try_recv` at the top of the loop sees it within one timer period (100 ms).
            // Commands sent while the engine will wake within LAZY_WAKE_US anyway do not
            // unpark it: the deadline is published before the last look at the channels.
            if let Some(wait) = deadline.checked_duration_since(Instant::now()) {
                let wait = wait.min(IDLE_WAIT);
                self.wakes_at
                    .parking_until(crate::clock::monotonic_us() + wait.as_micros() as u64);
                if rx.is_empty() && self.resyncs.is_empty() {
                    std::thread::park_timeout(wait);
                }
                self.wakes_at.running();
            }
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Attach(attach) => {
                if !self.is_resumable_now(&attach) {
                    self.deferred.push((Instant::now() + RESUME_WAIT, attach));
                    return;
                }
                self.attach(*attach, false);
            }
            Command::Control {
                conn,
                change,
                reply,
            } => {
                let added = self.stage.hub.control(conn, change, reply);
                self.send_snapshots(conn, &added);
            }
            Command::Detach { conn } => {
                self.deferred.retain(|(_, a)| a.conn != conn);
                self.stage.hub.detach(conn)
            }
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

    /// Registers a connection, then queues ahead of any live event what it asked for: each
    /// `resume=` stream's missed events, and with `snapshot=true` a `depthSnapshot` for every
    /// other diff stream. `late`: the wait for ids this node had not published is over; such
    /// a diff stream gets a snapshot, such a trade stream nothing more.
    fn attach(&mut self, attach: Attach, late: bool) {
        if attach.strict && !self.holds_history_for(&attach) {
            attach
                .outbox
                .close(EXPIRED, "cursor older than the history", None);
            return;
        }
        let Attach {
            conn,
            shard,
            outbox,
            shape,
            unit,
            snapshot,
            topics,
            resume,
            strict,
            ready,
        } = attach;
        let hub = &mut self.stage.hub;
        let added = hub.attach(conn, shard, outbox, shape, unit, snapshot, &topics, ready);
        let mut snapshots: Vec<Topic> = Vec::new();
        for &(topic, id) in &resume {
            if !added.contains(&topic) {
                continue;
            }
            if !self.resume(conn, topic, id, unit) && late && is_diff(topic) && !strict {
                snapshots.push(topic);
            }
        }
        if strict {
            // Marks the end of the catch-up for a poll: everything before it was missed, and a
            // poll with nothing missed may answer at once.
            self.stage.hub.control(conn, Change::None, Bytes::new());
            return;
        }
        if snapshot {
            snapshots.extend(
                added
                    .iter()
                    .filter(|topic| !resume.iter().any(|(t, _)| t == *topic)),
            );
        }
        self.send_snapshots_to(conn, &snapshots);
    }

    /// Whether every id `attach` resumes from has been published here, so its catch-up can be
    /// rendered now.
    fn is_resumable_now(&self, attach: &Attach) -> bool {
        self.every_resume(attach, |symbol, kind, id| symbol.is_published(kind, id))
    }

    /// Whether the history holds everything after each id `attach` resumes from.
    fn holds_history_for(&self, attach: &Attach) -> bool {
        self.every_resume(attach, |symbol, kind, id| symbol.holds_since(kind, id))
    }

    /// Whether `check(symbol's state, stream kind, id)` holds for every stream `attach`
    /// resumes (streams of unknown symbols pass: nothing to resume there).
    fn every_resume(
        &self,
        attach: &Attach,
        check: impl Fn(&SymbolStreams, StreamKind, u64) -> bool,
    ) -> bool {
        attach.resume.iter().all(|&(topic, id)| match topic {
            Topic::Symbol { symbol, kind } => self
                .stage
                .streams
                .symbols()
                .get(usize::from(symbol))
                .is_none_or(|state| check(state, kind, id)),
            _ => true,
        })
    }

    /// Attaches the deferred connections whose ids have now been published, or whose wait is
    /// over.
    fn retry_deferred(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        let now = Instant::now();
        for (deadline, attach) in std::mem::take(&mut self.deferred) {
            let late = now >= deadline;
            if late || self.is_resumable_now(&attach) {
                self.attach(*attach, late);
            } else {
                self.deferred.push((deadline, attach));
            }
        }
    }

    /// Queues `topic`'s missed events since `id` to `conn`; `false` if `id` is ahead of what
    /// this node has published (nothing queued).
    fn resume(&mut self, conn: ConnId, topic: Topic, id: u64, unit: TimeUnit) -> bool {
        let Topic::Symbol { symbol, kind } = topic else {
            return true;
        };
        let streams = &self.stage.streams;
        let Some(state) = streams.symbols().get(usize::from(symbol)) else {
            return true;
        };
        let name = topic.name(&*self.feed);
        let unit = if topic.has_time_fields() {
            unit
        } else {
            TimeUnit::Millisecond
        };
        let mut payloads = Vec::new();
        let now_us = crate::clock::wall_us();
        let Some(resumed) = state.catch_up(kind, &name, id, now_us, unit, &mut payloads) else {
            return false;
        };
        self.stage
            .metrics
            .resumed(resumed.label(), resumed.events());
        self.stage.hub.send_catch_up(conn, topic, payloads);
        true
    }

    /// `snapshot=true`: each diff stream just subscribed gets a `depthSnapshot` at the last
    /// published update id, queued behind the subscription and ahead of any diff, so its first
    /// diff has `U <= lastUpdateId + 1 <= u`.
    fn send_snapshots(&mut self, conn: ConnId, added: &[Topic]) {
        if added.is_empty() || !self.stage.hub.wants_snapshots(conn) {
            return;
        }
        self.send_snapshots_to(conn, added);
    }

    /// A `depthSnapshot` for each diff stream of `topics` (others are skipped).
    fn send_snapshots_to(&mut self, conn: ConnId, topics: &[Topic]) {
        let now_us = crate::clock::wall_us();
        for &topic in topics {
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
