//! What `resume=` replays: each symbol's recent updates, trades and aggregates, kept for a
//! bounded time (`--history`, default 5 minutes).
//!
//! The derivation stage records every step here as it publishes it, so the history holds exactly
//! what the streams sent, numbered as they numbered it; every node of a cluster derives the same
//! steps and so keeps the same history. Recording is a few copies into ring buffers per step on
//! the engine thread; nothing is done per subscriber, and nothing at all when `--history 0`.
//!
//! Levels are stored flat (one ring for every step's levels, one small entry per step) rather
//! than as a `Step` per update: no allocation per step once warm, and 16 bytes per level.
//! An entry covers update ids `first..=last`: one step, or a gateway's bridge over a gap it
//! could not fetch ([`super::SymbolStreams::rebase`]). A catch-up can start only where an entry
//! starts.

use super::history::AggRecord;
use crate::market::sim::{Step, Trade};
use std::collections::{HashMap, VecDeque};

/// The top bit of a stored tick marks an ask (ticks never come near 2^63).
const ASK_BIT: u64 = 1 << 63;

struct Entry {
    first: u64,
    last: u64,
    time_us: u64,
    /// Absolute index (since the ring started) one past this entry's last level.
    levels_end: u64,
}

/// A trade as it was published, with its event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedTrade {
    pub trade: Trade,
    pub time_us: u64,
}

/// What a diff stream's client missed since update `id`.
#[derive(Debug, PartialEq, Eq)]
pub enum DiffCatchUp {
    /// Nothing: the client holds the stream's latest update.
    UpToDate,
    /// One diff covering `first..=step.update_id`, every changed level with its final lots.
    Diff { first: u64, step: Step },
    /// `id` is older than the history (or falls inside a bridge): send a snapshot.
    Snapshot,
    /// `id` is newer than anything this node has published on the stream (a node behind the
    /// one the client left).
    Ahead,
}

/// One missed event of a trade stream, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Missed<T> {
    /// Ids `from..=to` can no longer be sent (older than the history, or lost in a rebase).
    Gap {
        from: u64,
        to: u64,
    },
    Event(T),
}

/// One symbol's recent updates, trades and aggregates.
#[derive(Default)]
pub struct Recent {
    /// How long anything is kept; 0 keeps nothing.
    span_us: u64,
    entries: VecDeque<Entry>,
    /// `(tick | ASK_BIT for asks, lots)` of every entry, in order.
    levels: VecDeque<(u64, u64)>,
    /// Absolute index of `levels`' front.
    levels_start: u64,
    trades: VecDeque<TimedTrade>,
    aggs: VecDeque<AggRecord>,
}

impl Recent {
    /// Keeps everything published in the last `span_us` from now on (0: nothing).
    pub fn set_span(&mut self, span_us: u64) {
        self.span_us = span_us;
        if span_us == 0 {
            *self = Recent::default();
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.span_us > 0
    }

    /// Records one step's levels, covering `first..=step.update_id` (`first` is the step's own id
    /// except for a bridge), published at `time_us`.
    pub fn record_step(&mut self, first: u64, step: &Step, time_us: u64) {
        if !self.is_enabled() {
            return;
        }
        self.trim(time_us);
        let bids = step.bids.iter().map(|&(tick, lots)| (tick, lots));
        let asks = step.asks.iter().map(|&(tick, lots)| (tick | ASK_BIT, lots));
        self.levels.extend(bids.chain(asks));
        self.entries.push_back(Entry {
            first,
            last: step.update_id,
            time_us,
            levels_end: self.levels_start + self.levels.len() as u64,
        });
    }

    pub fn record_trade(&mut self, trade: &Trade, time_us: u64) {
        if self.is_enabled() {
            self.trades.push_back(TimedTrade {
                trade: *trade,
                time_us,
            });
        }
    }

    pub fn record_agg(&mut self, agg: &AggRecord) {
        if self.is_enabled() {
            self.aggs.push_back(*agg);
        }
    }

    /// Forgets what is older than the span at `now_us`.
    fn trim(&mut self, now_us: u64) {
        let horizon = now_us.saturating_sub(self.span_us);
        while let Some(entry) = self.entries.front() {
            if entry.time_us >= horizon {
                break;
            }
            let drop = (entry.levels_end - self.levels_start) as usize;
            self.levels.drain(..drop);
            self.levels_start = entry.levels_end;
            self.entries.pop_front();
        }
        while self.trades.front().is_some_and(|t| t.time_us < horizon) {
            self.trades.pop_front();
        }
        while self.aggs.front().is_some_and(|a| a.time_us < horizon) {
            self.aggs.pop_front();
        }
    }

    /// The catch-up for a diff stream whose client holds update `id`, the stream having
    /// published up to update `upto`.
    pub fn diff_since(&self, id: u64, upto: u64) -> DiffCatchUp {
        if id == upto {
            return DiffCatchUp::UpToDate;
        }
        if id > upto {
            return DiffCatchUp::Ahead;
        }
        // Entries are contiguous and ordered by id: the catch-up starts at the one that starts
        // at `id + 1`, if the history still holds it.
        let start = self.entries.partition_point(|e| e.first < id + 1);
        if self.entries.get(start).is_none_or(|e| e.first != id + 1) {
            return DiffCatchUp::Snapshot;
        }
        let mut bids: HashMap<u64, u64> = HashMap::new();
        let mut asks: HashMap<u64, u64> = HashMap::new();
        let mut level_at = if start == 0 {
            self.levels_start
        } else {
            self.entries[start - 1].levels_end
        };
        for entry in self.entries.range(start..) {
            if entry.first > upto {
                break;
            }
            let from = (level_at - self.levels_start) as usize;
            let to = (entry.levels_end - self.levels_start) as usize;
            for &(key, lots) in self.levels.range(from..to) {
                if key & ASK_BIT != 0 {
                    asks.insert(key & !ASK_BIT, lots);
                } else {
                    bids.insert(key, lots);
                }
            }
            level_at = entry.levels_end;
            if entry.last == upto {
                let mut step = Step {
                    update_id: upto,
                    bids: bids.into_iter().collect(),
                    asks: asks.into_iter().collect(),
                    trades: Vec::new(),
                };
                step.bids
                    .sort_unstable_by_key(|&(tick, _)| std::cmp::Reverse(tick));
                step.asks.sort_unstable_by_key(|&(tick, _)| tick);
                return DiffCatchUp::Diff {
                    first: id + 1,
                    step,
                };
            }
        }
        // `upto` is not the end of an entry: the history does not reach it (never expected).
        DiffCatchUp::Snapshot
    }

    /// The trades a client holding trade `id` missed, `last` being the newest trade id
    /// published (0: none yet); `None` when `id` is newer than that.
    pub fn trades_since(&self, id: u64, last: u64) -> Option<Vec<Missed<TimedTrade>>> {
        since(self.trades.iter().copied(), |t| t.trade.id, id, last)
    }

    /// The aggregates a client holding aggregate `id` missed; as [`Self::trades_since`].
    pub fn aggs_since(&self, id: u64, last: u64) -> Option<Vec<Missed<AggRecord>>> {
        since(self.aggs.iter().copied(), |a| a.id, id, last)
    }

    /// Puts `older`, the history of what came before everything here (a gateway's backfill
    /// from the journal), in front. Each part (updates, trades, aggregates) joins only if its
    /// ids run on without a gap into this one's; a part that does not is left out.
    pub fn prepend(&mut self, mut older: Recent) {
        if !self.is_enabled() {
            return;
        }
        let joins = match (older.entries.back(), self.entries.front()) {
            (Some(old), Some(new)) => old.last + 1 == new.first,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if joins {
            let older_end = older.levels_start + older.levels.len() as u64;
            for entry in &mut self.entries {
                entry.levels_end = entry.levels_end - self.levels_start + older_end;
            }
            older.levels.append(&mut self.levels);
            older.entries.append(&mut self.entries);
            self.levels = older.levels;
            self.entries = older.entries;
            self.levels_start = older.levels_start;
        }
        if joined(
            older.trades.back().map(|t| t.trade.id),
            self.trades.front().map(|t| t.trade.id),
        ) {
            older.trades.append(&mut self.trades);
            self.trades = older.trades;
        }
        if joined(
            older.aggs.back().map(|a| a.id),
            self.aggs.front().map(|a| a.id),
        ) {
            older.aggs.append(&mut self.aggs);
            self.aggs = older.aggs;
        }
    }

    /// Adds `offset` to every aggregate id: a backfill counts its aggregates before it knows
    /// the id they end at.
    pub fn renumber_aggs(&mut self, offset: u64) {
        for agg in &mut self.aggs {
            agg.id += offset;
        }
    }

    /// Bytes held, for the history gauge.
    pub fn bytes(&self) -> usize {
        self.entries.len() * std::mem::size_of::<Entry>()
            + self.levels.len() * 16
            + self.trades.len() * std::mem::size_of::<TimedTrade>()
            + self.aggs.len() * std::mem::size_of::<AggRecord>()
    }
}

/// Whether a catch-up has ids it can no longer send.
pub fn has_gap<T>(missed: &[Missed<T>]) -> bool {
    missed.iter().any(|m| matches!(m, Missed::Gap { .. }))
}

/// Whether events ending at id `older` run on into events starting at `newer` (or there are
/// none newer).
fn joined(older: Option<u64>, newer: Option<u64>) -> bool {
    match (older, newer) {
        (Some(old), Some(new)) => old + 1 == new,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Events with ids after `id` up to `last`, oldest first, with a gap for every id the history
/// cannot send.
fn since<T>(
    kept: impl Iterator<Item = T>,
    id_of: impl Fn(&T) -> u64,
    id: u64,
    last: u64,
) -> Option<Vec<Missed<T>>> {
    if id > last {
        return None;
    }
    let mut missed = Vec::new();
    let mut expected = id + 1;
    for event in kept {
        let event_id = id_of(&event);
        if event_id < expected {
            continue;
        }
        if event_id > expected {
            missed.push(Missed::Gap {
                from: expected,
                to: event_id - 1,
            });
        }
        expected = event_id + 1;
        missed.push(Missed::Event(event));
    }
    if expected <= last {
        missed.push(Missed::Gap {
            from: expected,
            to: last,
        });
    }
    Some(missed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: u64, bids: &[(u64, u64)], asks: &[(u64, u64)]) -> Step {
        Step {
            update_id: id,
            bids: bids.to_vec(),
            asks: asks.to_vec(),
            trades: Vec::new(),
        }
    }

    fn trade(id: u64) -> Trade {
        Trade {
            id,
            price_tick: 100,
            qty_lots: 1,
            buyer_is_maker: false,
        }
    }

    #[test]
    fn a_catch_up_merges_every_level_to_its_final_lots_best_first() {
        let mut recent = Recent::default();
        recent.set_span(1_000_000);
        recent.record_step(11, &step(11, &[(100, 5)], &[(101, 2)]), 10);
        recent.record_step(12, &step(12, &[(99, 1), (100, 0)], &[]), 20);
        recent.record_step(13, &step(13, &[(98, 4)], &[(101, 7), (103, 1)]), 30);
        assert_eq!(recent.diff_since(13, 13), DiffCatchUp::UpToDate);
        assert_eq!(recent.diff_since(14, 13), DiffCatchUp::Ahead);
        assert_eq!(recent.diff_since(9, 13), DiffCatchUp::Snapshot, "before 11");
        assert_eq!(
            recent.diff_since(10, 13),
            DiffCatchUp::Diff {
                first: 11,
                step: step(13, &[(100, 0), (99, 1), (98, 4)], &[(101, 7), (103, 1)]),
            }
        );
        assert_eq!(
            recent.diff_since(11, 12),
            DiffCatchUp::Diff {
                first: 12,
                step: step(12, &[(100, 0), (99, 1)], &[]),
            },
            "a window's stream stops where it last published"
        );
    }

    #[test]
    fn a_bridge_is_one_entry_a_catch_up_cannot_start_inside() {
        let mut recent = Recent::default();
        recent.set_span(1_000_000);
        recent.record_step(5, &step(5, &[(1, 1)], &[]), 1);
        recent.record_step(6, &step(20, &[(2, 2)], &[]), 2);
        recent.record_step(21, &step(21, &[(3, 3)], &[]), 3);
        assert_eq!(recent.diff_since(10, 21), DiffCatchUp::Snapshot);
        assert!(matches!(
            recent.diff_since(5, 21),
            DiffCatchUp::Diff { first: 6, .. }
        ));
        assert!(matches!(
            recent.diff_since(20, 21),
            DiffCatchUp::Diff { first: 21, .. }
        ));
    }

    #[test]
    fn old_entries_and_trades_leave_after_the_span() {
        let mut recent = Recent::default();
        recent.set_span(100);
        recent.record_step(1, &step(1, &[(1, 1)], &[]), 1_000);
        recent.record_trade(&trade(1), 1_000);
        recent.record_trade(&trade(2), 1_050);
        recent.record_step(2, &step(2, &[(2, 1)], &[]), 1_150);
        assert_eq!(recent.diff_since(0, 2), DiffCatchUp::Snapshot);
        assert!(matches!(
            recent.diff_since(1, 2),
            DiffCatchUp::Diff { first: 2, .. }
        ));
        assert_eq!(
            recent.levels.len(),
            1,
            "the dropped entry's levels went with it"
        );
        let missed = recent.trades_since(0, 3).expect("not ahead");
        let ids: Vec<String> = missed
            .iter()
            .map(|m| match m {
                Missed::Gap { from, to } => format!("gap {from}-{to}"),
                Missed::Event(t) => format!("{}", t.trade.id),
            })
            .collect();
        assert_eq!(ids, ["gap 1-1", "2", "gap 3-3"]);
        assert_eq!(recent.trades_since(3, 3), Some(Vec::new()));
        assert_eq!(recent.trades_since(4, 3), None, "ahead");
    }

    #[test]
    fn an_older_history_joins_in_front_only_where_ids_run_on() {
        let mut recent = Recent::default();
        recent.set_span(1_000_000);
        recent.record_step(3, &step(3, &[(3, 3)], &[]), 30);
        recent.record_trade(&trade(7), 30);
        let mut older = Recent::default();
        older.set_span(1_000_000);
        older.record_step(1, &step(1, &[(1, 1)], &[(5, 1)]), 10);
        older.record_step(2, &step(2, &[(2, 2)], &[]), 20);
        older.record_trade(&trade(5), 10);
        recent.prepend(older);
        assert_eq!(
            recent.diff_since(0, 3),
            DiffCatchUp::Diff {
                first: 1,
                step: step(3, &[(3, 3), (2, 2), (1, 1)], &[(5, 1)]),
            }
        );
        let missed = recent.trades_since(6, 7).expect("not ahead");
        assert_eq!(missed.len(), 1, "trade 5 did not join trade 7: {missed:?}");
    }

    #[test]
    fn a_zero_span_keeps_nothing() {
        let mut recent = Recent::default();
        recent.record_step(1, &step(1, &[(1, 1)], &[]), 1);
        recent.record_trade(&trade(1), 1);
        assert_eq!(recent.bytes(), 0);
        assert_eq!(recent.diff_since(0, 1), DiffCatchUp::Snapshot);
    }
}
