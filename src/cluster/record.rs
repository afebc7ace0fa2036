//! What travels over NATS: the engine's records (steps and ticks), per-symbol state snapshots
//! and the manifest that ties a set of snapshots to a point in the record stream.
//!
//! Everything is encoded with postcard (serde): compact, and the types are the ones the engine
//! and the derivation stage already use, so nothing is converted on either side.

use crate::derive::SymbolStreams;
use crate::engine::Tick;
use crate::market::feed::SymbolSpec;
use crate::market::sim::{MarketSim, Step};
use crate::protocol::stream::SymbolId;
use serde::{Deserialize, Serialize};

/// One entry of the engine's record stream, in the engine's order.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// One symbol's step, with the event time the engine derived it at.
    Step {
        symbol: SymbolId,
        now_us: u64,
        step: Step,
    },
    /// One timer tick.
    Tick(Tick),
}

/// Encodes a step record without cloning the step.
pub fn encode_step(symbol: SymbolId, now_us: u64, step: &Step) -> Vec<u8> {
    /// [`Record::Step`] by reference: the same variant index and fields, so it decodes as one.
    #[derive(Serialize)]
    enum RecordRef<'a> {
        Step {
            symbol: SymbolId,
            now_us: u64,
            step: &'a Step,
        },
    }
    // Writing to a Vec cannot fail; an Err here would be a bug in the types, not the input.
    postcard::to_stdvec(&RecordRef::Step {
        symbol,
        now_us,
        step,
    })
    .unwrap_or_default()
}

/// Encodes a tick record.
pub fn encode_tick(tick: Tick) -> Vec<u8> {
    postcard::to_stdvec(&Record::Tick(tick)).unwrap_or_default()
}

/// Decodes a record; `Err` for bytes that are not one (another version, or not bookcast's).
pub fn decode(bytes: &[u8]) -> Result<Record, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// One symbol's state at a tick: what a gateway derives from, and what an engine simulates.
#[derive(Serialize, Deserialize)]
pub struct SymbolSnapshot {
    pub streams: SymbolStreams,
    pub sim: MarketSim,
}

/// [`SymbolSnapshot`] by reference, for encoding without copying the state.
#[derive(Serialize)]
pub struct SymbolSnapshotRef<'a> {
    pub streams: &'a SymbolStreams,
    pub sim: &'a MarketSim,
}

/// A complete set of snapshots: every symbol's state right after tick `tick`, which is record
/// `steps_seq` of the steps stream. Published after the set, so a manifest only ever names
/// snapshots that are stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub tick: Tick,
    /// The derivation stage's 1000 ms tick count at `tick`.
    pub seconds: u64,
    /// Stream sequence of the tick record in the steps stream: a follower continues at the
    /// next one.
    pub steps_seq: u64,
    /// The feed, in order: a gateway needs no feed file of its own.
    pub symbols: Vec<SymbolSpec>,
    /// Stream sequences of each symbol's snapshot chunks in the snapshots stream, in feed
    /// order (a symbol's state is the concatenation of its chunks).
    pub snapshot_seqs: Vec<Vec<u64>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::feed::Feed;

    #[test]
    fn records_round_trip() {
        let feed = Feed::embedded_default();
        let mut sim = MarketSim::new(&feed.symbols[0]);
        let mut step = Step::default();
        for _ in 0..50 {
            sim.step(&mut step);
            let out = encode_step(3, 1_700_000_000_000_000, &step);
            assert_eq!(
                decode(&out).unwrap(),
                Record::Step {
                    symbol: 3,
                    now_us: 1_700_000_000_000_000,
                    step: step.clone()
                }
            );
        }
        let tick = Tick {
            number: 42,
            now_us: 7,
        };
        assert_eq!(decode(&encode_tick(tick)).unwrap(), Record::Tick(tick));
        assert!(decode(b"\xff\xff\xff").is_err());
    }
}
