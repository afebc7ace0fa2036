//! A gateway's `resume=` history from before it started: read back from the journal.
//!
//! A gateway starts from a snapshot set, so on its own its history would begin there, and a
//! client that left another gateway a minute earlier would get a snapshot instead of its
//! catch-up. The steps stream holds `--retention` (default 10 minutes) of the engine's records,
//! which are exactly what every node derived its history from, so a new gateway reads back
//! `--history` of them up to its snapshot and puts their history in front of its own. It does
//! so beside serving: until it is done, a resume from before the snapshot gets the snapshot
//! fallback, which is correct, only larger.

use super::follow::Inbound;
use super::record::{self, Record};
use super::Names;
use crate::derive::history::{aggregates, AggRecord};
use crate::derive::recent::Recent;
use crate::derive::Streams;
use crate::engine::EngineWaker;
use crate::market::feed::SymbolSpec;
use crate::protocol::stream::SymbolId;
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long to wait for the next record before taking what was read.
const RECORD_WAIT: Duration = Duration::from_secs(5);

/// Where one symbol's backfill must end: its state in the snapshot the gateway started from.
pub struct SnapshotPoint {
    spec: SymbolSpec,
    last_update_id: u64,
    next_agg_id: u64,
}

/// Each symbol's point in `streams`, a freshly restored snapshot set.
pub fn points(streams: &Streams) -> Vec<SnapshotPoint> {
    streams
        .symbols()
        .iter()
        .map(|s| SnapshotPoint {
            spec: s.spec().clone(),
            last_update_id: s.last_update_id(),
            next_agg_id: s.next_agg_id(),
        })
        .collect()
}

/// One symbol's history as it is read back: it must run without a gap up to the snapshot.
struct Builder {
    recent: Recent,
    last_update_id: Option<u64>,
    aggs: u64,
}

impl Builder {
    fn new(span_us: u64) -> Self {
        let mut recent = Recent::default();
        recent.set_span(span_us);
        Builder {
            recent,
            last_update_id: None,
            aggs: 0,
        }
    }
}

/// Reads `span` of the steps stream up to record `upto_seq` (the snapshot's place) and hands
/// each symbol's history to the engine thread through `tx`. Symbols whose records do not run
/// without a gap up to the snapshot are left out.
pub async fn run(
    js: jetstream::Context,
    names: Names,
    upto_seq: u64,
    points: Vec<SnapshotPoint>,
    span: Duration,
    tx: mpsc::Sender<Inbound>,
    waker: EngineWaker,
) {
    let started = std::time::Instant::now();
    match read(&js, &names, upto_seq, &points, span).await {
        Ok(histories) => {
            let symbols = histories.len();
            if tx.send(Inbound::Backfill(histories)).await.is_ok() {
                waker.wake();
            }
            tracing::info!(
                "resume history backfilled from the journal for {symbols} symbols in {:?}",
                started.elapsed()
            );
        }
        Err(e) => tracing::warn!("resume history not backfilled from the journal: {e}"),
    }
}

async fn read(
    js: &jetstream::Context,
    names: &Names,
    upto_seq: u64,
    points: &[SnapshotPoint],
    span: Duration,
) -> Result<Vec<(SymbolId, Recent)>, Error> {
    let span_us = u64::try_from(span.as_micros()).unwrap_or(u64::MAX);
    let from_us = crate::clock::wall_us().saturating_sub(span_us);
    let start_time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(from_us) * 1000)?;
    let stream = js.get_stream(&names.steps_stream).await?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: names.steps_filter(),
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time },
            ..Default::default()
        })
        .await?;
    let mut builders: Vec<Builder> = points.iter().map(|_| Builder::new(span_us)).collect();
    let mut messages = consumer.messages().await?;
    // Records keep coming while the engine runs; one that does not come in this long means it
    // stopped, and what was read so far is all there is.
    while let Ok(Some(message)) = tokio::time::timeout(RECORD_WAIT, messages.next()).await {
        let message = message?;
        let seq = message.info()?.stream_sequence;
        if seq > upto_seq {
            break;
        }
        let Ok(Record::Step {
            symbol,
            now_us,
            step,
        }) = record::decode(&message.payload)
        else {
            continue;
        };
        let index = usize::from(symbol);
        let (Some(builder), Some(point)) = (builders.get_mut(index), points.get(index)) else {
            continue;
        };
        if step.update_id > point.last_update_id
            || builder
                .last_update_id
                .is_some_and(|last| step.update_id <= last)
        {
            continue; // past the snapshot, or a duplicate the stream kept
        }
        if builder
            .last_update_id
            .is_some_and(|last| step.update_id != last + 1)
        {
            *builder = Builder::new(span_us); // a hole: only what follows it can join
        }
        builder.last_update_id = Some(step.update_id);
        builder.recent.record_step(step.update_id, &step, now_us);
        for trade in &step.trades {
            builder.recent.record_trade(trade, now_us);
        }
        for group in aggregates(&step.trades) {
            // Numbered from 0 here; shifted once the count up to the snapshot is known.
            let agg = AggRecord::from_group(&point.spec, builder.aggs, group, now_us);
            builder.recent.record_agg(&agg);
            builder.aggs += 1;
        }
        if seq == upto_seq {
            break;
        }
    }
    Ok(builders
        .into_iter()
        .zip(points)
        .enumerate()
        .filter(|(_, (builder, point))| builder.last_update_id == Some(point.last_update_id))
        .filter_map(|(index, (mut builder, point))| {
            let first_agg_id = point.next_agg_id.checked_sub(builder.aggs)?;
            builder.recent.renumber_aggs(first_agg_id);
            Some((index as SymbolId, builder.recent))
        })
        .collect())
}
