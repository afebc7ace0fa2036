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
use std::future::IntoFuture;
use std::time::Duration;
use tokio::sync::mpsc;

/// Bytes of one snapshot message at most: a quarter of nats-server's default 1 MiB limit.
pub const SNAPSHOT_CHUNK: usize = 256 * 1024;
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
        /// Each symbol's state, in [`SNAPSHOT_CHUNK`]-byte messages.
        symbols: Vec<Vec<Pending>>,
    },
}

/// One message to publish, kept until JetStream acknowledges it.
#[derive(Clone)]
pub struct Pending {
    /// Bytes-backed: a clone per publish shares it.
    subject: async_nats::Subject,
    id: String,
    payload: Bytes,
}

/// The [`Journal`] the engine thread writes to.
pub struct NatsJournal {
    tx: mpsc::Sender<Outbound>,
    names: Names,
    /// Each symbol's step subject and name, in feed order.
    subjects: Vec<(async_nats::Subject, String)>,
    specs: Vec<SymbolSpec>,
    /// Snapshots are taken every this many ticks (a multiple of 10: on 1000 ms ticks).
    snapshot_ticks: u64,
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
            .map(|spec| (names.step_subject(&spec.symbol).into(), spec.symbol.clone()))
            .collect();
        NatsJournal {
            tx,
            names,
            subjects,
            specs,
            snapshot_ticks: snapshot_every.as_secs().max(1) * 10,
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
                let bytes = Bytes::from(postcard::to_stdvec(&state).unwrap_or_default());
                // In chunks: with long kline history a symbol's state passes NATS's 1 MiB
                // message limit, and a publish over it could never be acknowledged.
                chunks(&bytes, SNAPSHOT_CHUNK)
                    .into_iter()
                    .enumerate()
                    .map(|(chunk, payload)| Pending {
                        subject: self.names.snapshot_subject(name, chunk).into(),
                        id: format!("snap:{name}:{}:{chunk}", tick.number),
                        payload,
                    })
                    .collect()
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

/// `bytes` in pieces of at most `size` (at least one piece, empty for empty input), sharing
/// its buffer.
fn chunks(bytes: &Bytes, size: usize) -> Vec<Bytes> {
    let size = size.max(1);
    (0..bytes.len().div_ceil(size).max(1))
        .map(|chunk| bytes.slice(chunk * size..((chunk + 1) * size).min(bytes.len())))
        .collect()
}

impl Journal for NatsJournal {
    fn step(&mut self, symbol: SymbolId, step: &Step, now_us: u64) {
        let Some((subject, name)) = self.subjects.get(usize::from(symbol)) else {
            return;
        };
        let pending = Pending {
            subject: subject.clone(),
            id: format!("{name}:{}", step.update_id),
            payload: Bytes::from(record::encode_step(symbol, now_us, step)),
        };
        self.send(Outbound::Record(pending));
    }

    fn tick(&mut self, tick: Tick, sims: &[&MarketSim], streams: &Streams) {
        let pending = Pending {
            subject: self.names.tick_subject().into(),
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
        stream: names.steps_stream.clone(),
        in_flight: VecDeque::new(),
        history: VecDeque::new(),
        last_seq: steps_seq,
        tail: steps_seq,
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
                for chunks in symbols {
                    let mut seqs = Vec::with_capacity(chunks.len());
                    for pending in chunks {
                        seqs.push(publisher.acknowledged(pending).await);
                    }
                    snapshot_seqs.push(seqs);
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
                    subject: names.manifest_subject().into(),
                    id: format!("manifest:{}", tick.number),
                    payload: Bytes::from(postcard::to_stdvec(&manifest).unwrap_or_default()),
                };
                publisher.acknowledged(pending).await;
            }
        }
    }
    publisher.settle_all().await;
}

/// Sends one message. A record carries `Nats-Expected-Last-Sequence`: JetStream refuses it
/// unless the record before it is stored, so the stream never holds a record whose predecessor
/// was lost. Message ids are checked first, so sending a stored record again is a harmless
/// duplicate whatever its expectation. (A free function: the publisher's pending
/// acknowledgements are not `Sync`, so no `&Publisher` may be held across an await.)
async fn send(
    js: &jetstream::Context,
    pending: &Pending,
    after: Option<u64>,
) -> Result<PublishAckFuture, async_nats::Error> {
    let mut publish = PublishMessage::build()
        .payload(pending.payload.clone())
        .message_id(&pending.id);
    if let Some(after) = after {
        publish = publish.expected_last_sequence(after);
    }
    Ok(js.send_publish(pending.subject.clone(), publish).await?)
}

/// The steps stream's last sequence, asked until JetStream answers.
async fn stream_last_seq(js: &jetstream::Context, name: &str) -> u64 {
    loop {
        let answer = async {
            let mut stream = js.get_stream(name).await?;
            Ok::<u64, async_nats::Error>(stream.info().await?.state.last_sequence)
        };
        match answer.await {
            Ok(last) => return last,
            Err(e) => {
                tracing::warn!("cannot read the steps stream's state: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

struct Publisher {
    js: jetstream::Context,
    stream: String,
    /// Records sent and not yet acknowledged, each with the stream sequence it must get.
    in_flight: VecDeque<(u64, Pending, AckFuture)>,
    /// The newest acknowledged records, kept for [`HISTORY`] records: a broker killed right
    /// after acknowledging can lose them (it acknowledges before its writes reach the disk),
    /// and the engine then publishes them again from here.
    history: VecDeque<(u64, Pending)>,
    /// Stream sequence of the newest acknowledged record.
    last_seq: u64,
    /// The sequence of the newest record sent: the engine is the stream's only writer, so every
    /// record's place is known when it is sent.
    tail: u64,
    metrics: ClusterMetrics,
}

/// An acknowledgement being waited for (polled without blocking by [`Publisher::settle_ready`]).
type AckFuture = <PublishAckFuture as std::future::IntoFuture>::IntoFuture;

/// Acknowledged records kept for republishing (about a minute of the default feed).
const HISTORY: usize = 65_536;

impl Publisher {
    /// Publishes a record without waiting for the ack, unless [`MAX_IN_FLIGHT`] are already
    /// waiting.
    async fn pipelined(&mut self, pending: Pending) {
        let seq = self.tail + 1;
        match send(&self.js, &pending, Some(seq - 1)).await {
            Ok(ack) => {
                self.in_flight.push_back((seq, pending, ack.into_future()));
                self.tail = seq;
            }
            Err(e) => {
                self.note_failure(&e);
                self.tail = seq;
                self.recover(Some((seq, pending))).await;
            }
        }
        while self.in_flight.len() > MAX_IN_FLIGHT {
            self.settle_oldest().await;
        }
        self.settle_ready().await;
    }

    /// Settles the acknowledgements that have already arrived, oldest first, without waiting:
    /// the published counter stays current and a failure is noticed at once.
    async fn settle_ready(&mut self) {
        while let Some((_, _, ack)) = self.in_flight.front_mut() {
            match futures_util::FutureExt::now_or_never(&mut *ack) {
                None => return,
                Some(Ok(ack)) => {
                    if let Some((_, pending, _)) = self.in_flight.pop_front() {
                        self.stored(ack.sequence, pending);
                    }
                }
                Some(Err(e)) => {
                    let e = async_nats::Error::from(e);
                    self.note_failure(&e);
                    if let Some((seq, pending, _)) = self.in_flight.pop_front() {
                        self.recover(Some((seq, pending))).await;
                    }
                    return;
                }
            }
        }
    }

    async fn settle_all(&mut self) {
        while !self.in_flight.is_empty() {
            self.settle_oldest().await;
        }
    }

    /// Waits for the oldest ack; on failure, [`recover`](Self::recover)s.
    async fn settle_oldest(&mut self) {
        let Some((seq, pending, ack)) = self.in_flight.pop_front() else {
            return;
        };
        match ack.await {
            Ok(ack) => self.stored(ack.sequence, pending),
            Err(e) => {
                let e = async_nats::Error::from(e);
                self.note_failure(&e);
                self.recover(Some((seq, pending))).await;
            }
        }
    }

    fn stored(&mut self, seq: u64, pending: Pending) {
        self.last_seq = seq;
        self.metrics.records_published.increment(1);
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back((seq, pending));
    }

    /// Brings the stream back to the engine's order after a failure: asks JetStream for its
    /// last sequence, then publishes every record after it again (from the history, the
    /// in-flight ones, and `extra`), in order, one at a time, each expecting its predecessor.
    /// Repeats from the start whenever a publish fails, so it ends with every record stored.
    async fn recover(&mut self, extra: Option<(u64, Pending)>) {
        let mut records: Vec<(u64, Pending)> = self
            .in_flight
            .drain(..)
            .map(|(seq, pending, _)| (seq, pending))
            .collect();
        records.extend(extra);
        records.sort_by_key(|(seq, _)| *seq);
        loop {
            let last = stream_last_seq(&self.js, &self.stream).await;
            let mut redo: Vec<(u64, Pending)> = self
                .history
                .iter()
                .filter(|(seq, _)| *seq > last)
                .cloned()
                .collect();
            redo.extend(records.iter().filter(|(seq, _)| *seq > last).cloned());
            if let Some(&(first, _)) = redo.first() {
                if first > last + 1 {
                    // Lost before what the history reaches: renumber after the hole. Gateways
                    // see the jump in update ids and rebase on a snapshot.
                    tracing::error!(
                        "JetStream lost records {}..{first} and they are no longer kept here: gateways will rebase",
                        last + 1
                    );
                    for (n, record) in redo.iter_mut().enumerate() {
                        record.0 = last + 1 + n as u64;
                    }
                }
            }
            self.history.retain(|(seq, _)| *seq <= last);
            let mut failed = false;
            for (seq, pending) in redo {
                let result = match send(&self.js, &pending, Some(seq - 1)).await {
                    Ok(ack) => ack.await.map_err(async_nats::Error::from),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(ack) => self.stored(ack.sequence, pending),
                    Err(e) => {
                        self.note_failure(&e);
                        failed = true;
                        break;
                    }
                }
            }
            if !failed {
                self.tail = self.last_seq;
                return;
            }
            records = Vec::new(); // everything left is in the history or was never stored
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Publishes and waits for the ack, retrying until there is one; returns its sequence.
    /// For snapshots and manifests, which go to their own stream.
    async fn acknowledged(&mut self, pending: Pending) -> u64 {
        loop {
            let result = match send(&self.js, &pending, None).await {
                Ok(ack) => ack.await.map_err(async_nats::Error::from),
                Err(e) => Err(e),
            };
            match result {
                Ok(ack) => return ack.sequence,
                Err(e) => {
                    self.note_failure(&e);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    fn note_failure(&self, error: &async_nats::Error) {
        self.metrics.publish_retries.increment(1);
        tracing::warn!("publishing to JetStream failed: {error}; publishing again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::record::SymbolSnapshot;
    use crate::market::feed::Feed;

    /// A symbol's state split into chunks decodes, once the chunks are joined, to the same
    /// state (checked by encoding it again).
    #[test]
    fn a_snapshot_in_chunks_joins_back_to_the_same_state() {
        let feed = Feed::embedded_default();
        let sims: Vec<MarketSim> = feed.symbols.iter().take(2).map(MarketSim::new).collect();
        let streams = Streams::from_simulations(&feed.symbols[..2], &sims, 1_700_000_000_000_000);
        let state = SymbolSnapshotRef {
            streams: &streams.symbols()[1],
            sim: &sims[1],
        };
        let bytes = Bytes::from(postcard::to_stdvec(&state).unwrap());
        let pieces = chunks(&bytes, 1000);
        assert_eq!(pieces.len(), bytes.len().div_ceil(1000));
        assert!(pieces.iter().all(|p| p.len() <= 1000));
        let joined: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        let back: SymbolSnapshot = postcard::from_bytes(&joined).unwrap();
        let again = SymbolSnapshotRef {
            streams: &back.streams,
            sim: &back.sim,
        };
        assert_eq!(postcard::to_stdvec(&again).unwrap(), bytes.to_vec());
        assert_eq!(chunks(&Bytes::new(), 1000), vec![Bytes::new()]);
    }
}
