//! The gateway's side: follow the engine's records from JetStream into the derivation stage,
//! with no gap.
//!
//! Two halves:
//! - [`Follower`], a task on the gateway's runtime, reads the steps stream with an ordered
//!   consumer and checks continuity: every symbol's update ids and the tick numbers must go up
//!   by one. It hands contiguous records over a bounded channel, then wakes the engine thread.
//!   On a gap it reads again from the record after the last one it handed over; if JetStream
//!   no longer has it (retention), it loads the newest snapshot set and hands over a rebase.
//!   After a NATS reconnect it recreates its consumer (an ephemeral consumer does not survive
//!   a server restart).
//! - [`Follow`], the engine thread's [`Market`], applies what arrives, in order.

use super::record::{self, Record};
use super::restore;
use super::Names;
use crate::derive::recent::Recent;
use crate::derive::Streams;
use crate::engine::{EngineWaker, Market, Stage, Tick};
use crate::market::sim::Step;
use crate::metrics::cluster::ClusterMetrics;
use crate::protocol::stream::SymbolId;
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Records waiting for the engine thread at most: a gateway that falls behind stops reading
/// JetStream (its consumer lags, visibly) instead of buffering without bound.
pub const CHANNEL_CAPACITY: usize = 8_192;
/// How often the consumer lag is measured against the stream's last sequence.
const LAG_EVERY: Duration = Duration::from_secs(1);
/// Records applied per engine turn at most, so commands are never starved.
const RECORDS_PER_TURN: usize = 2_048;

/// What the follower hands the engine thread.
pub enum Inbound {
    Step {
        symbol: SymbolId,
        now_us: u64,
        step: Step,
    },
    Tick(Tick),
    /// Continue from this snapshot set, bridging every symbol's book to it.
    Rebase(Box<Streams>),
    /// `resume=` history from before the gateway started ([`super::backfill`]).
    Backfill(Vec<(SymbolId, Recent)>),
}

/// The engine thread's [`Market`] on a gateway.
pub struct Follow {
    rx: mpsc::Receiver<Inbound>,
    metrics: ClusterMetrics,
}

impl Follow {
    pub fn new(rx: mpsc::Receiver<Inbound>, metrics: ClusterMetrics) -> Self {
        Follow { rx, metrics }
    }
}

impl Market for Follow {
    fn advance(&mut self, stage: &mut Stage) -> Option<Instant> {
        for _ in 0..RECORDS_PER_TURN {
            match self.rx.try_recv() {
                Ok(Inbound::Step {
                    symbol,
                    now_us,
                    step,
                }) => stage.step(symbol, &step, now_us),
                Ok(Inbound::Tick(tick)) => stage.tick(tick),
                Ok(Inbound::Rebase(streams)) => stage.rebase(*streams, crate::clock::wall_us()),
                Ok(Inbound::Backfill(histories)) => {
                    // Counted once applied, so a client that sees the count resumes from it.
                    let symbols = histories.len() as u64;
                    stage.prepend_history(histories);
                    self.metrics.history_backfills.increment(symbols);
                }
                Err(_) => return None,
            }
        }
        // More may be waiting: come back right after the commands.
        Some(Instant::now())
    }
}

/// Where the follower is: the last record it handed over, and what must come next.
pub struct Position {
    /// Stream sequence of the last record handed over (or of the manifest's tick).
    pub applied_seq: u64,
    /// Next update id, per symbol.
    pub next_update: Vec<u64>,
    /// Next tick number.
    pub next_tick: u64,
}

impl Position {
    /// Right after a snapshot set: the manifest's tick.
    pub fn at(streams: &Streams, steps_seq: u64, tick: u64) -> Self {
        Position {
            applied_seq: steps_seq,
            next_update: streams
                .symbols()
                .iter()
                .map(|s| s.last_update_id() + 1)
                .collect(),
            next_tick: tick + 1,
        }
    }
}

/// Whether a record continues the position.
enum Continuity {
    Next,
    /// Already handed over (a consumer restarted before it).
    Duplicate,
    Gap,
}

pub struct Follower {
    pub js: jetstream::Context,
    pub names: Names,
    pub position: Position,
    pub tx: mpsc::Sender<Inbound>,
    pub waker: EngineWaker,
    pub metrics: ClusterMetrics,
    /// Bumped by the NATS client on every reconnect.
    pub reconnected: watch::Receiver<u64>,
}

impl Follower {
    /// Follows until the engine thread is gone.
    pub async fn run(mut self) {
        // A gap seen twice at the same place is in the stream itself (records it lost or holds
        // out of order), not a consumer that skipped: reading again cannot help there.
        let mut last_gap_at: Option<u64> = None;
        loop {
            self.reconnected.borrow_and_update();
            let from = self.position.applied_seq + 1;
            let mut messages = match self.consumer(from).await {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::warn!("cannot read the steps stream from {from}: {e}; retrying");
                    if self.lost_before(from).await {
                        self.rebase().await;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            self.metrics.consumers_created.increment(1);
            // The lag is also measured on a timer: set only as records arrive, it would freeze
            // at its last (small) value exactly when the gateway stops receiving.
            let mut lag_tick = tokio::time::interval(LAG_EVERY);
            let gap = loop {
                let message = tokio::select! {
                    message = messages.next() => message,
                    _ = self.reconnected.changed() => break false,
                    _ = lag_tick.tick() => {
                        self.measure_lag().await;
                        continue;
                    }
                };
                let Some(message) = message else { break false };
                let message = match message {
                    Ok(message) => message,
                    Err(e) => {
                        tracing::warn!("the steps consumer failed: {e}; recreating it");
                        break false;
                    }
                };
                let Ok(info) = message.info() else { continue };
                let (seq, pending) = (info.stream_sequence, info.pending);
                if seq <= self.position.applied_seq {
                    self.metrics.records_duplicate.increment(1);
                    continue;
                }
                self.metrics.consumer_lag.set(pending as f64);
                let record = match record::decode(&message.payload) {
                    Ok(record) => record,
                    Err(e) => {
                        tracing::error!("record {seq} is not a bookcast record ({e}); skipped");
                        self.position.applied_seq = seq;
                        continue;
                    }
                };
                match self.check(&record) {
                    Continuity::Duplicate => {
                        self.metrics.records_duplicate.increment(1);
                        self.position.applied_seq = seq;
                    }
                    Continuity::Gap => break true,
                    Continuity::Next => {
                        if !self.hand_over(record).await {
                            return;
                        }
                        self.position.applied_seq = seq;
                    }
                }
            };
            if gap {
                self.metrics.gaps.increment(1);
                let at = self.position.applied_seq;
                tracing::warn!("gap in the steps after record {at}: reading again from there");
                if last_gap_at == Some(at) || self.lost_before(at + 1).await {
                    self.rebase().await;
                    last_gap_at = None;
                } else {
                    last_gap_at = Some(at);
                }
            }
            if self.tx.is_closed() {
                return;
            }
        }
    }

    async fn consumer(
        &self,
        from: u64,
    ) -> Result<consumer::pull::Ordered, Box<dyn std::error::Error + Send + Sync>> {
        let stream = self.js.get_stream(&self.names.steps_stream).await?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: self.names.steps_filter(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            })
            .await?;
        Ok(consumer.messages().await?)
    }

    /// `consumer_lag` = records in the steps stream after the last one handed over; left as it
    /// was when JetStream does not answer (`nats_connected` says why).
    async fn measure_lag(&self) {
        if let Ok(mut stream) = self.js.get_stream(&self.names.steps_stream).await {
            if let Ok(info) = stream.info().await {
                let lag = info
                    .state
                    .last_sequence
                    .saturating_sub(self.position.applied_seq);
                self.metrics.consumer_lag.set(lag as f64);
            }
        }
    }

    /// Whether the steps stream no longer holds record `seq` (retention deleted it).
    async fn lost_before(&self, seq: u64) -> bool {
        match self.js.get_stream(&self.names.steps_stream).await {
            Ok(mut stream) => match stream.info().await {
                Ok(info) => info.state.first_sequence > seq,
                Err(_) => false,
            },
            Err(_) => false,
        }
    }

    fn check(&self, record: &Record) -> Continuity {
        let (got, expected) = match record {
            Record::Step { symbol, step, .. } => {
                match self.position.next_update.get(usize::from(*symbol)) {
                    Some(&next) => (step.update_id, next),
                    None => return Continuity::Duplicate, // not a symbol of this feed
                }
            }
            Record::Tick(tick) => (tick.number, self.position.next_tick),
        };
        match got.cmp(&expected) {
            std::cmp::Ordering::Equal => Continuity::Next,
            std::cmp::Ordering::Less => Continuity::Duplicate,
            std::cmp::Ordering::Greater => Continuity::Gap,
        }
    }

    /// Hands a contiguous record to the engine thread; false once the thread is gone.
    async fn hand_over(&mut self, record: Record) -> bool {
        let inbound = match record {
            Record::Step {
                symbol,
                now_us,
                step,
            } => {
                self.position.next_update[usize::from(symbol)] = step.update_id + 1;
                Inbound::Step {
                    symbol,
                    now_us,
                    step,
                }
            }
            Record::Tick(tick) => {
                self.position.next_tick = tick.number + 1;
                Inbound::Tick(tick)
            }
        };
        if self.tx.send(inbound).await.is_err() {
            return false;
        }
        self.metrics.records_consumed.increment(1);
        self.waker.wake();
        true
    }

    /// Continues from the newest snapshot set, once there is one newer than the position.
    async fn rebase(&mut self) {
        loop {
            match restore::manifest(&self.js, &self.names).await {
                Ok(Some(manifest)) if manifest.steps_seq > self.position.applied_seq => {
                    let (steps_seq, tick) = (manifest.steps_seq, manifest.tick.number);
                    match restore::load(&self.js, &self.names, manifest).await {
                        Ok(restored) => {
                            let position = Position::at(&restored.streams, steps_seq, tick);
                            tracing::warn!(
                                "steps after record {} are gone from JetStream: rebasing on the snapshot at record {steps_seq}",
                                self.position.applied_seq
                            );
                            if self
                                .tx
                                .send(Inbound::Rebase(Box::new(restored.streams)))
                                .await
                                .is_err()
                            {
                                return;
                            }
                            self.waker.wake();
                            self.metrics.rebases.increment(1);
                            self.metrics
                                .bridging_diffs
                                .increment(position.next_update.len() as u64);
                            self.position = position;
                            return;
                        }
                        Err(e) => tracing::warn!("cannot load the newest snapshots: {e}"),
                    }
                }
                Ok(_) => {} // none newer yet: the engine writes one every --snapshot-every
                Err(e) => tracing::warn!("cannot read the newest manifest: {e}"),
            }
            if self.tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
