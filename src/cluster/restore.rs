//! Reading a cluster's state back: the newest manifest, its snapshots, and the records after it.

use super::record::{self, Manifest, Record, SymbolSnapshot};
use super::Names;
use crate::derive::{Discard, Streams};
use crate::engine::Tick;
use crate::market::feed::Feed;
use crate::market::sim::{MarketSim, Step};
use crate::protocol::stream::SymbolId;
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use std::time::Duration;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A cluster's state at the newest manifest.
pub struct Restored {
    pub manifest: Manifest,
    pub feed: Feed,
    /// The derivation stage at the manifest's tick.
    pub streams: Streams,
    /// Every symbol's simulation at the manifest's tick, in feed order.
    pub sims: Vec<MarketSim>,
}

/// The newest manifest, or `None` when the cluster has none yet (a first engine start).
pub async fn manifest(js: &jetstream::Context, names: &Names) -> Result<Option<Manifest>, Error> {
    let snapshots = js.get_stream(&names.snapshots_stream).await?;
    match snapshots
        .get_last_raw_message_by_subject(&names.manifest_subject())
        .await
    {
        Ok(message) => Ok(Some(postcard::from_bytes(&message.payload)?)),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Loads the snapshots `manifest` names.
pub async fn load(
    js: &jetstream::Context,
    names: &Names,
    manifest: Manifest,
) -> Result<Restored, Error> {
    let snapshots = js.get_stream(&names.snapshots_stream).await?;
    if manifest.snapshot_seqs.len() != manifest.symbols.len() {
        return Err("the manifest names a snapshot per symbol: it does not".into());
    }
    let mut symbols = Vec::with_capacity(manifest.symbols.len());
    let mut sims = Vec::with_capacity(manifest.symbols.len());
    for (index, seqs) in manifest.snapshot_seqs.iter().enumerate() {
        let mut bytes = Vec::new();
        for &seq in seqs {
            bytes.extend_from_slice(&snapshots.get_raw_message(seq).await?.payload);
        }
        let snapshot: SymbolSnapshot = postcard::from_bytes(&bytes)?;
        if usize::from(snapshot.streams.id()) != index
            || snapshot.streams.spec() != &manifest.symbols[index]
        {
            return Err(format!("snapshot {seqs:?} is not symbol {index}'s").into());
        }
        symbols.push(snapshot.streams);
        sims.push(snapshot.sim);
    }
    let streams = Streams::restore(symbols, manifest.seconds);
    let feed = Feed {
        symbols: manifest.symbols.clone(),
    };
    Ok(Restored {
        manifest,
        feed,
        streams,
        sims,
    })
}

/// Waits for a manifest (a gateway started before the engine's first one), polling.
pub async fn wait_for_manifest(js: &jetstream::Context, names: &Names) -> Result<Manifest, Error> {
    let mut warned = false;
    loop {
        match manifest(js, names).await {
            Ok(Some(manifest)) => return Ok(manifest),
            Ok(None) => {}
            Err(e) if !warned => {
                tracing::warn!("no cluster state yet ({e}); waiting for the engine")
            }
            Err(_) => {}
        }
        if !warned {
            tracing::info!("waiting for the engine's first snapshot in NATS");
            warned = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A restarted engine's catch-up: regenerates, from the snapshot's simulations, every step the
/// steps stream holds after the manifest (checking each against the stored one: the simulation
/// is deterministic, so a mismatch means another feed or version wrote them), and derives them
/// and the ticks between them. Returns the last tick number.
pub async fn replay(
    js: &jetstream::Context,
    names: &Names,
    state: &mut Restored,
) -> Result<u64, Error> {
    let mut steps_stream = js.get_stream(&names.steps_stream).await?;
    let last = steps_stream.info().await?.state.last_sequence;
    let mut tick = state.manifest.tick.number;
    let from = state.manifest.steps_seq + 1;
    if last < from {
        return Ok(tick);
    }
    let consumer = steps_stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: names.steps_filter(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut regenerated = Step::default();
    let mut next_seq = from;
    while next_seq <= last {
        let Some(message) = messages.next().await else {
            return Err("the steps stream ended before its last record".into());
        };
        let message = message?;
        let seq = message.info()?.stream_sequence;
        if seq != next_seq {
            return Err(format!(
                "the steps stream has no record {next_seq} (next is {seq}): the engine cannot continue from its snapshot; raise --retention or start a new --cluster"
            )
            .into());
        }
        next_seq = seq + 1;
        match record::decode(&message.payload)? {
            Record::Step {
                symbol,
                now_us,
                step,
            } => {
                let index = usize::from(symbol);
                let Some(sim) = state.sims.get_mut(index) else {
                    return Err(format!("record {seq}: no symbol {symbol}").into());
                };
                if step.update_id <= sim.last_update_id() {
                    continue; // a duplicate the stream kept (published outside its window)
                }
                sim.step(&mut regenerated);
                if regenerated != step {
                    return Err(format!(
                        "record {seq}: {}'s step {} differs from the simulation's: another feed or version wrote this cluster",
                        state.feed.symbols[index].symbol, step.update_id
                    )
                    .into());
                }
                state
                    .streams
                    .on_step(symbol as SymbolId, &step, now_us, &mut Discard);
            }
            Record::Tick(Tick { number, now_us }) => {
                if number != tick + 1 {
                    continue;
                }
                tick = number;
                state.streams.every_100ms(now_us, &mut Discard);
                if (Tick { number, now_us }).closes_second() {
                    state.streams.every_1000ms(now_us, &mut Discard);
                }
            }
        }
    }
    Ok(tick)
}
