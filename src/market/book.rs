//! An L2 order book keyed by integer price ticks, holding integer lots per level.
//!
//! Integer keys make every price exact and ordered (no float keys, no rounding when a level is
//! looked up again). As in hftbacktest's depth books, the best prices are cached so the touch,
//! which every consumer reads on every update, costs O(1), and a level whose lots reach zero is
//! removed rather than stored, so "present" always means "has liquidity".

use serde::{Deserialize, Serialize};
use std::collections::btree_map;
use std::collections::BTreeMap;

/// Largest lot count any level may hold. Keeps `lots * lot_e8` (a quantity in e8 units) and
/// sums of a few levels far inside `u64`; the feed validates `lot_size` against it.
pub const MAX_LEVEL_LOTS: u64 = 1_000_000_000;

/// Which side of the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Buy orders; best is the highest price.
    Bid,
    /// Sell orders; best is the lowest price.
    Ask,
}

/// Price levels of one symbol: tick -> lots per side, with the best tick of each side cached.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderBook {
    bids: BTreeMap<u64, u64>,
    asks: BTreeMap<u64, u64>,
    best_bid: Option<u64>,
    best_ask: Option<u64>,
}

impl OrderBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the lots resting at `tick`; `lots == 0` removes the level. Keeps the cached best
    /// prices right: removing the best level looks up the next one, which is O(log n).
    pub fn set(&mut self, side: Side, tick: u64, lots: u64) {
        debug_assert!(
            lots <= MAX_LEVEL_LOTS,
            "{lots} lots at tick {tick} exceeds MAX_LEVEL_LOTS"
        );
        let (levels, best) = match side {
            Side::Bid => (&mut self.bids, &mut self.best_bid),
            Side::Ask => (&mut self.asks, &mut self.best_ask),
        };
        if lots == 0 {
            if levels.remove(&tick).is_some() && *best == Some(tick) {
                *best = match side {
                    Side::Bid => levels.last_key_value(),
                    Side::Ask => levels.first_key_value(),
                }
                .map(|(&t, _)| t);
            }
        } else {
            levels.insert(tick, lots);
            let improves = match (side, *best) {
                (_, None) => true,
                (Side::Bid, Some(b)) => tick > b,
                (Side::Ask, Some(b)) => tick < b,
            };
            if improves {
                *best = Some(tick);
            }
        }
        debug_assert!(
            !matches!((self.best_bid, self.best_ask), (Some(b), Some(a)) if b >= a),
            "book crossed or locked: best bid {:?} >= best ask {:?}",
            self.best_bid,
            self.best_ask
        );
    }

    /// Lots resting at `tick`; 0 when there is no level there.
    pub fn get(&self, side: Side, tick: u64) -> u64 {
        self.side(side).get(&tick).copied().unwrap_or(0)
    }

    /// `(tick, lots)` of the highest bid, from the cache.
    pub fn best_bid(&self) -> Option<(u64, u64)> {
        self.best(Side::Bid)
    }

    /// `(tick, lots)` of the lowest ask, from the cache.
    pub fn best_ask(&self) -> Option<(u64, u64)> {
        self.best(Side::Ask)
    }

    /// `(tick, lots)` of the best level of `side`.
    pub fn best(&self, side: Side) -> Option<(u64, u64)> {
        let tick = match side {
            Side::Bid => self.best_bid,
            Side::Ask => self.best_ask,
        }?;
        Some((tick, self.get(side, tick)))
    }

    /// `(tick, lots)` of the level farthest from the touch: where a book over its depth is trimmed.
    pub fn worst(&self, side: Side) -> Option<(u64, u64)> {
        match side {
            Side::Bid => self.bids.first_key_value(),
            Side::Ask => self.asks.last_key_value(),
        }
        .map(|(&t, &l)| (t, l))
    }

    /// The first level at `tick` or farther from the touch (lower for bids, higher for asks).
    /// Lets a caller aim at a price and land on the nearest real level behind it.
    pub fn at_or_behind(&self, side: Side, tick: u64) -> Option<(u64, u64)> {
        match side {
            Side::Bid => self.bids.range(..=tick).next_back(),
            Side::Ask => self.asks.range(tick..).next(),
        }
        .map(|(&t, &l)| (t, l))
    }

    /// Number of price levels on `side`.
    pub fn levels(&self, side: Side) -> usize {
        self.side(side).len()
    }

    /// Levels best first: bids by descending tick, asks by ascending tick.
    pub fn top(&self, side: Side) -> impl Iterator<Item = (u64, u64)> + '_ {
        match side {
            Side::Bid => Top::Bids(self.bids.iter().rev()),
            Side::Ask => Top::Asks(self.asks.iter()),
        }
    }

    fn side(&self, side: Side) -> &BTreeMap<u64, u64> {
        match side {
            Side::Bid => &self.bids,
            Side::Ask => &self.asks,
        }
    }
}

/// Best-first iterator over one side; an enum so [`OrderBook::top`] needs no boxing.
enum Top<'a> {
    Bids(std::iter::Rev<btree_map::Iter<'a, u64, u64>>),
    Asks(btree_map::Iter<'a, u64, u64>),
}

impl Iterator for Top<'_> {
    type Item = (u64, u64);

    #[inline]
    fn next(&mut self) -> Option<(u64, u64)> {
        match self {
            Top::Bids(it) => it.next(),
            Top::Asks(it) => it.next(),
        }
        .map(|(&t, &l)| (t, l))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Top::Bids(it) => it.size_hint(),
            Top::Asks(it) => it.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> OrderBook {
        let mut book = OrderBook::new();
        for (tick, lots) in [(98, 5), (99, 7), (97, 1)] {
            book.set(Side::Bid, tick, lots);
        }
        for (tick, lots) in [(102, 4), (101, 3), (105, 9)] {
            book.set(Side::Ask, tick, lots);
        }
        book
    }

    #[test]
    fn empty_book_has_no_bests() {
        let book = OrderBook::new();
        assert_eq!(book.best_bid(), None);
        assert_eq!(book.best_ask(), None);
        assert_eq!(book.worst(Side::Bid), None);
        assert_eq!(book.levels(Side::Ask), 0);
        assert_eq!(book.get(Side::Bid, 1), 0);
        assert_eq!(book.top(Side::Ask).count(), 0);
    }

    #[test]
    fn caches_best_prices_on_insert() {
        let book = sample();
        assert_eq!(book.best_bid(), Some((99, 7)));
        assert_eq!(book.best_ask(), Some((101, 3)));
        assert_eq!(book.worst(Side::Bid), Some((97, 1)));
        assert_eq!(book.worst(Side::Ask), Some((105, 9)));
        assert_eq!(book.levels(Side::Bid), 3);
    }

    #[test]
    fn top_is_best_first() {
        let book = sample();
        assert_eq!(
            book.top(Side::Bid).collect::<Vec<_>>(),
            [(99, 7), (98, 5), (97, 1)]
        );
        assert_eq!(
            book.top(Side::Ask).collect::<Vec<_>>(),
            [(101, 3), (102, 4), (105, 9)]
        );
    }

    #[test]
    fn removing_the_best_level_moves_the_cache_to_the_next() {
        let mut book = sample();
        book.set(Side::Bid, 99, 0);
        assert_eq!(book.best_bid(), Some((98, 5)));
        book.set(Side::Ask, 101, 0);
        assert_eq!(book.best_ask(), Some((102, 4)));
        book.set(Side::Ask, 102, 0);
        book.set(Side::Ask, 105, 0);
        assert_eq!(book.best_ask(), None);
        assert_eq!(book.levels(Side::Ask), 0);
        book.set(Side::Bid, 98, 0);
        book.set(Side::Bid, 97, 0);
        assert_eq!(book.best_bid(), None);
    }

    #[test]
    fn removing_other_levels_keeps_the_cache() {
        let mut book = sample();
        book.set(Side::Bid, 97, 0);
        book.set(Side::Ask, 105, 0);
        assert_eq!(book.best_bid(), Some((99, 7)));
        assert_eq!(book.best_ask(), Some((101, 3)));
        // Removing an absent level is a no-op, even at a tick better than the best.
        book.set(Side::Bid, 100, 0);
        book.set(Side::Ask, 100, 0);
        assert_eq!(book.best_bid(), Some((99, 7)));
        assert_eq!(book.levels(Side::Bid), 2);
    }

    #[test]
    fn zero_lots_are_never_stored_and_updates_replace() {
        let mut book = sample();
        book.set(Side::Bid, 98, 11);
        assert_eq!(book.get(Side::Bid, 98), 11);
        assert_eq!(book.best_bid(), Some((99, 7)));
        book.set(Side::Bid, 99, 2);
        assert_eq!(book.best_bid(), Some((99, 2)));
        book.set(Side::Bid, 98, 0);
        assert_eq!(book.get(Side::Bid, 98), 0);
        assert!(book.top(Side::Bid).all(|(_, lots)| lots > 0));
        assert_eq!(book.levels(Side::Bid), 2);
    }

    #[test]
    fn improving_inside_the_spread_updates_the_cache() {
        let mut book = sample();
        book.set(Side::Bid, 100, 1);
        assert_eq!(book.best_bid(), Some((100, 1)));
        book.set(Side::Bid, 100, 0);
        book.set(Side::Ask, 100, 6);
        assert_eq!(book.best_ask(), Some((100, 6)));
        assert_eq!(book.best_bid(), Some((99, 7)));
    }

    #[test]
    fn at_or_behind_finds_the_next_real_level_away_from_the_touch() {
        let book = sample();
        assert_eq!(book.at_or_behind(Side::Bid, 99), Some((99, 7)));
        assert_eq!(book.at_or_behind(Side::Bid, 100), Some((99, 7)));
        assert_eq!(book.at_or_behind(Side::Bid, 96), None);
        assert_eq!(book.at_or_behind(Side::Ask, 103), Some((105, 9)));
        assert_eq!(book.at_or_behind(Side::Ask, 106), None);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "crossed or locked")]
    fn locking_the_book_is_a_bug() {
        let mut book = sample();
        book.set(Side::Bid, 101, 1);
    }
}
