//! The cluster engine's side: every step and tick of the simulation goes to JetStream, in order,
//! with periodic state snapshots.
//!
//! The engine thread encodes ([`NatsJournal`], a [`Journal`]) and hands records over a bounded
//! channel to [`publish`], a task that keeps up to [`MAX_IN_FLIGHT`] publishes waiting for
//! their acknowledgements (NATS.md: awaiting each ack in turn caps out near 5-8k/s). When the
//! channel is full (JetStream down or slow) the engine thread blocks: the market pauses, and
//! nothing is lost.

use super::record::{self, Manifest, SymbolSnapshotRef};
use super::Names;
use crate::derive::Streams;
use crate::engine::simulate::Journal;
use crate::engine::Tick;
use crate::market::feed::SymbolSpec;
use crate::market::sim::{MarketSim, Step};
use crate::metrics::cluster::ClusterMetrics;
use crate::protocol::stream::SymbolId;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self};
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::mpsc;

/// Publishes waiting for an acknowledgement at most.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Records the engine may be ahead of the publisher (about 10 s of the default feed).
pub const CHANNEL_CAPACITY: usize = 16_384;

/// What the engine thread hands the publisher.
pub enum Outbound {
    Record(Pending),
    /// A complete snapshot set taken right after `tick`: published once every record before it
    /// is acknowledged, followed by its manifest.
    Snapshot {
        tick: Tick,
        seconds: u64,
        specs: Vec<SymbolSpec>,
        symbols: Vec<Pending>,
    },
}

/// One message to publish, kept until JetStream acknowledges it.
#[derive(Clone)]
pub struct Pending {
    subject: String,
    id: String,
    payload: Bytes,
}

/// The [`Journal`] the engine thread writes to.
pub struct NatsJournal {
    tx: mpsc::Sender<Outbound>,
    names: Names,
    /// Each symbol's step subject and name, in feed order.
    subjects: Vec<(String, String)>,
    specs: Vec<SymbolSpec>,
    /// Snapshots are taken every this many ticks (a multiple of 10: on 1000 ms ticks).
    snapshot_ticks: u64,
    buf: Vec<u8>,
    closed: bool,
}

impl NatsJournal {
    pub fn new(
        tx: mpsc::Sender<Outbound>,
        names: Names,
        specs: Vec<SymbolSpec>,
        snapshot_every: Duration,
    ) -> Self {
        let subjects = specs
            .iter()
            .map(|spec| (names.step_subject(&spec.symbol), spec.symbol.clone()))
            .collect();
        NatsJournal {
            tx,
            names,
            subjects,
            specs,
            snapshot_ticks: snapshot_every.as_secs().max(1) * 10,
            buf: Vec::new(),
            closed: false,
        }
    }

    fn send(&mut self, outbound: Outbound) {
        if self.closed {
            return;
        }
        // Blocks while the publisher is behind: the engine pauses rather than dropping.
        if self.tx.blocking_send(outbound).is_err() {
            tracing::error!("the NATS publisher stopped: records are no longer journaled");
            self.closed = true;
        }
    }

    /// The set of snapshots of every symbol's state, taken now.
    pub fn snapshot(&self, tick: Tick, sims: &[&MarketSim], streams: &Streams) -> Outbound {
        let symbols = streams
            .symbols()
            .iter()
            .zip(sims)
            .map(|(symbol, sim)| {
                let name = &symbol.spec().symbol;
                let state = SymbolSnapshotRef {
                    streams: symbol,
                    sim,
                };
                Pending {
                    subject: self.names.snapshot_subject(name),
                    id: format!("snap:{name}:{}", tick.number),
                    payload: Bytes::from(postcard::to_stdvec(&state).unwrap_or_default()),
                }
            })
            .collect();
        Outbound::Snapshot {
            tick,
            seconds: streams.seconds(),
            specs: self.specs.clone(),
            symbols,
        }
    }
}

impl Journal for NatsJournal {
    fn step(&mut self, symbol: SymbolId, step: &Step, now_us: u64) {
        record::encode_step(&mut self.buf, symbol, now_us, step);
        let Some((subject, name)) = self.subjects.get(usize::from(symbol)) else {
            return;
        };
        let pending = Pending {
            subject: subject.clone(),
            id: format!("{name}:{}", step.update_id),
            payload: Bytes::copy_from_slice(&self.buf),
        };
        self.send(Outbound::Record(pending));
    }

    fn tick(&mut self, tick: Tick, sims: &[&MarketSim], streams: &Streams) {
        let pending = Pending {
            subject: self.names.tick_subject(),
            id: format!("tick:{}", tick.number),
            payload: Bytes::from(record::encode_tick(tick)),
        };
        self.send(Outbound::Record(pending));
        if tick.number % self.snapshot_ticks == 0 {
            let snapshot = self.snapshot(tick, sims, streams);
            self.send(snapshot);
        }
    }
}

/// The publisher task: runs until the engine's journal is dropped. `steps_seq` is the steps
/// stream's last sequence before the engine's first record.
pub async fn publish(
    js: jetstream::Context,
    names: Names,
    mut rx: mpsc::Receiver<Outbound>,
    steps_seq: u64,
    metrics: ClusterMetrics,
) {
    let mut publisher = Publisher {
        js,
        in_flight: VecDeque::new(),
        last_seq: steps_seq,
        metrics,
    };
    while let Some(outbound) = rx.recv().await {
        match outbound {
            Outbound::Record(pending) => publisher.pipelined(pending).await,
            Outbound::Snapshot {
                tick,
                seconds,
                specs,
                symbols,
            } => {
                // Every record up to the tick acknowledged: `last_seq` is the tick's.
                publisher.settle_all().await;
                let steps_seq = publisher.last_seq;
                let mut snapshot_seqs = Vec::with_capacity(symbols.len());
                for pending in symbols {
                    snapshot_seqs.push(publisher.acknowledged(pending).await);
                    publisher.metrics.snapshots_published.increment(1);
                }
                let manifest = Manifest {
                    tick,
                    seconds,
                    steps_seq,
                    symbols: specs,
                    snapshot_seqs,
                };
                let pending = Pending {
                    subject: names.manifest_subject(),
                    id: format!("manifest:{}", tick.number),
                    payload: Bytes::from(postcard::to_stdvec(&manifest).unwrap_or_default()),
                };
                publisher.acknowledged(pending).await;
            }
        }
    }
    publisher.settle_all().await;
}

struct Publisher {
    js: jetstream::Context,
    in_flight: VecDeque<(Pending, PublishAckFuture)>,
    /// Stream sequence of the newest acknowledged record.
    last_seq: u64,
    metrics: ClusterMetrics,
}

impl Publisher {
    async fn send(&self, pending: &Pending) -> Result<PublishAckFuture, async_nats::Error> {
        let publish = PublishMessage::build()
            .payload(pending.payload.clone())
            .message_id(&pending.id);
        Ok(self
            .js
            .send_publish(pending.subject.clone(), publish)
            .await?)
    }

    /// Publishes without waiting for the ack, unless [`MAX_IN_FLIGHT`] are already waiting.
    async fn pipelined(&mut self, pending: Pending) {
        loop {
            match self.send(&pending).await {
                Ok(ack) => {
                    self.in_flight.push_back((pending, ack));
                    break;
                }
                Err(e) => self.retry_later(&e).await,
            }
        }
        while self.in_flight.len() > MAX_IN_FLIGHT {
            self.settle_oldest().await;
        }
    }

    async fn settle_all(&mut self) {
        while !self.in_flight.is_empty() {
            self.settle_oldest().await;
        }
    }

    /// Waits for the oldest ack. On failure, publishes it and every later one again, in
    /// order and one at a time, until each is acknowledged: message ids make the ones already
    /// stored duplicates, and the order stays the engine's.
    async fn settle_oldest(&mut self) {
        let Some((pending, ack)) = self.in_flight.pop_front() else {
            return;
        };
        match ack.await {
            Ok(ack) => {
                self.last_seq = ack.sequence;
                self.metrics.records_published.increment(1);
            }
            Err(e) => {
                tracing::warn!(
                    "JetStream did not acknowledge {}: {e}; publishing again",
                    pending.id
                );
                let mut again: Vec<Pending> = vec![pending];
                again.extend(self.in_flight.drain(..).map(|(pending, _)| pending));
                for pending in again {
                    self.last_seq = self.acknowledged(pending).await;
                    self.metrics.records_published.increment(1);
                }
            }
        }
    }

    /// Publishes and waits for the ack, retrying until there is one; returns its sequence.
    async fn acknowledged(&mut self, pending: Pending) -> u64 {
        loop {
            let result = match self.send(&pending).await {
                Ok(ack) => ack.await.map_err(async_nats::Error::from),
                Err(e) => Err(e),
            };
            match result {
                Ok(ack) => return ack.sequence,
                Err(e) => self.retry_later(&e).await,
            }
        }
    }

    async fn retry_later(&self, error: &async_nats::Error) {
        self.metrics.publish_retries.increment(1);
        tracing::warn!("publishing to JetStream failed: {error}; retrying");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
