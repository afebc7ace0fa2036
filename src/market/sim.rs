//! A synthetic but market-like order flow for one symbol, deterministic from the feed's seed.
//!
//! Each [`MarketSim::step`] applies one order-flow event to an [`OrderBook`] and reports what
//! changed, the way an exchange's depth stream does: passive adds (mostly at and near the
//! touch, so the book is thickest there), cancels, modifies, and occasional aggressive orders
//! that trade through one or more levels. A slowly wandering trend biases which side gets eaten
//! and which side improves into a gap, so the price drifts like a random walk.
//!
//! Everything is integer (ticks, lots, and `random_ratio`/`random_range` over integers) and the
//! generator is `Pcg64Mcg`, so a seed yields the same market on every platform and build.

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

use crate::market::book::{OrderBook, Side, MAX_LEVEL_LOTS};
use crate::market::feed::SymbolSpec;

/// One execution against a resting level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trade {
    /// Per-symbol trade id: 1 for the first trade, then +1 per trade.
    pub id: u64,
    pub price_tick: u64,
    pub qty_lots: u64,
    /// True when the aggressor sold (hit the bids), as in Binance's `m` field.
    pub buyer_is_maker: bool,
}

/// One engine step's output: a numbered delta (final lots of every level this step changed;
/// 0 = removed) and the trades it made.
///
/// `bids` and `asks` list each changed level once, best first. The vectors are cleared and
/// refilled by every [`MarketSim::step`], so one `Step` reused across calls never reallocates
/// once warm.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub update_id: u64,
    pub bids: Vec<(u64, u64)>,
    pub asks: Vec<(u64, u64)>,
    pub trades: Vec<Trade>,
}

/// Percent of steps that are aggressive orders (before gap refills, which take some steps).
const AGGRESS_PCT: u32 = 11;
/// Percent of steps that add lots (new orders).
const ADD_PCT: u32 = 45;
/// Percent of steps that cancel lots; the rest modify a level's size.
const CANCEL_PCT: u32 = 30;
/// Chance, out of 10, that a step with the spread wider than one tick refills it. High, so the
/// spread is one tick most of the time, as in a liquid market.
const IMPROVE_IN_10: u32 = 6;
/// Near-touch activity lands within this many ticks of the best price.
const NEAR_TOUCH_TICKS: u64 = 24;
/// The trend moves by one notch on average once per this many steps.
const TREND_TURN_ODDS: u32 = 400;
/// The trend is kept within `-TREND_MAX..=TREND_MAX` notches.
const TREND_MAX: i32 = 6;
/// Each trend notch shifts the chance that an aggressor buys by this many percent.
const TREND_PCT_PER_NOTCH: i32 = 4;
/// The trend is forced back toward the start price once the price is more than 1/this of the
/// start away from it. Moves are counted in ticks, so without a band a symbol whose price is
/// few ticks (ETHBTC) would wander far more, relative to its price, than BTCUSDT does.
const PRICE_BAND_DIVISOR: u64 = 10;

/// The market of one symbol: its book, its random state and its id counters.
#[derive(Serialize, Deserialize)]
pub struct MarketSim {
    rng: Pcg64Mcg,
    book: OrderBook,
    /// Levels kept per side; the far end is trimmed above it.
    depth: usize,
    start_ticks: u64,
    update_id: u64,
    trade_id: u64,
    /// Positive: buyers dominate (asks get eaten, bids improve), so the price drifts up.
    trend: i32,
}

impl MarketSim {
    /// Builds the initial book (about `depth` levels per side around the start price, thickest
    /// at the touch) from `spec.seed`. Its update id is 1.
    ///
    /// Expects a spec validated by [`crate::market::feed::Feed`]; anything else is clamped into range
    /// rather than trusted, so this never panics.
    pub fn new(spec: &SymbolSpec) -> Self {
        let mut sim = MarketSim {
            rng: Pcg64Mcg::seed_from_u64(spec.seed),
            book: OrderBook::new(),
            depth: spec.depth.max(2),
            start_ticks: spec.start_price_ticks.max(2),
            update_id: 1,
            trade_id: 0,
            trend: 0,
        };
        sim.seed_side(Side::Bid, sim.start_ticks);
        sim.seed_side(Side::Ask, sim.start_ticks + 1);
        sim
    }

    /// Advances the market by one event. Clears `out` and fills it with this step's delta and
    /// trades; `out.update_id` is the previous update id + 1.
    pub fn step(&mut self, out: &mut Step) {
        out.bids.clear();
        out.asks.clear();
        out.trades.clear();
        self.move_trend();
        self.event(out);
        for side in [Side::Bid, Side::Ask] {
            self.keep_depth(side, out);
        }
        self.finish(out);
    }

    /// The book after the last step.
    pub fn book(&self) -> &OrderBook {
        &self.book
    }

    /// Update id of the last step (1 for the freshly built book).
    pub fn last_update_id(&self) -> u64 {
        self.update_id
    }

    /// Id of the last trade; 0 before any trade.
    pub fn last_trade_id(&self) -> u64 {
        self.trade_id
    }

    /// Lays down `depth` levels from `best` away from the touch: every tick filled near the
    /// touch, gaps appearing farther out, and more orders per level close in.
    fn seed_side(&mut self, side: Side, best: u64) {
        let mut tick = best;
        for i in 0..self.depth {
            let orders = match i {
                0..5 => 1 + self.rng.random_range(1..=6),
                5..20 => 1 + self.rng.random_range(0..=3),
                _ => 1 + self.rng.random_range(0..=1),
            };
            let lots = (0..orders).map(|_| order_lots(&mut self.rng)).sum::<u64>();
            self.book.set(side, tick, lots.min(MAX_LEVEL_LOTS));
            let gap = if i < self.depth / 2 {
                1
            } else {
                self.rng.random_range(1..=2)
            };
            match away(side, tick, gap) {
                Some(next) => tick = next,
                None => break,
            }
        }
    }

    /// Occasionally nudges the trend, and forces it back toward the start price once the price
    /// leaves its band, so a long run wanders without ever heading to zero or running away.
    fn move_trend(&mut self) {
        if self.rng.random_ratio(1, TREND_TURN_ODDS) {
            let notch = if self.rng.random_ratio(1, 2) { 1 } else { -1 };
            self.trend = (self.trend + notch).clamp(-TREND_MAX, TREND_MAX);
        }
        let (bid, ask) = self.touch();
        // Twice the mid and twice the band, to stay in integers.
        let mid2 = bid + ask;
        let start2 = 2 * self.start_ticks;
        let band2 = (start2 / PRICE_BAND_DIVISOR).max(2);
        if mid2 > start2 + band2 {
            self.trend = self.trend.min(-TREND_MAX / 2);
        } else if mid2 + band2 < start2 {
            self.trend = self.trend.max(TREND_MAX / 2);
        }
    }

    /// Picks and applies this step's one order-flow event.
    fn event(&mut self, out: &mut Step) {
        let (bid, ask) = self.touch();
        let gap = ask - bid;
        if gap > 1 && self.rng.random_ratio(IMPROVE_IN_10, 10) {
            self.improve(gap, out);
            return;
        }
        let side = if self.rng.random_ratio(1, 2) {
            Side::Bid
        } else {
            Side::Ask
        };
        let roll = self.rng.random_range(0..100);
        let done = if roll < AGGRESS_PCT {
            self.aggress(out)
        } else if roll < AGGRESS_PCT + ADD_PCT {
            false
        } else if roll < AGGRESS_PCT + ADD_PCT + CANCEL_PCT {
            self.cancel(side, out)
        } else {
            self.modify(side, out)
        };
        if !done {
            // Adding always changes a level, so no step ends with an empty delta.
            self.add(side, out);
        }
    }

    /// A new order inside a spread wider than one tick, usually right next to the touch. The
    /// side follows the trend: in a rally it is the bids that step up.
    fn improve(&mut self, gap: u64, out: &mut Step) {
        let (bid, ask) = self.touch();
        let offset = if gap > 2 && self.rng.random_ratio(1, 4) {
            self.rng.random_range(1..gap)
        } else {
            1
        };
        let lots = order_lots(&mut self.rng);
        if self.aggressor_buys() {
            self.apply(Side::Bid, bid + offset, lots, out);
        } else {
            self.apply(Side::Ask, ask - offset, lots, out);
        }
    }

    /// A passive order: most land at or near the touch, some anywhere in the book, and a side
    /// short of `depth` also grows past its far end.
    fn add(&mut self, side: Side, out: &mut Step) {
        let (best, _) = self.best(side);
        let span = self.span(side);
        let short = self.book.levels(side) < self.depth;
        let mut distance = if self.rng.random_ratio(4, 5) {
            near_touch_distance(&mut self.rng)
        } else if short && self.rng.random_ratio(1, 2) {
            span + self.rng.random_range(1..=2)
        } else {
            self.rng.random_range(0..=span)
        };
        if !short {
            // A full side only thickens existing price range: a new level past the far end
            // would just be trimmed again in this same step.
            distance = distance.min(span);
        }
        let tick = away(side, best, distance).unwrap_or_else(|| self.far_end(side));
        let lots = self.book.get(side, tick);
        let mut new_lots = lots
            .saturating_add(order_lots(&mut self.rng))
            .min(MAX_LEVEL_LOTS);
        if new_lots == lots {
            // Only at the lot ceiling: a large cancel there keeps sizes bounded and still
            // changes the level.
            new_lots = lots / 2;
        }
        self.apply(side, tick, new_lots, out);
    }

    /// Pulls some or all lots of a level, usually near the touch. False when the side is down
    /// to a single one-lot level, which must stay so the side is never empty.
    fn cancel(&mut self, side: Side, out: &mut Step) -> bool {
        let (tick, lots) = self.pick_level(side);
        let last_level = self.book.levels(side) == 1;
        let whole = lots == 1 || self.rng.random_ratio(1, 4);
        let new_lots = match (whole, last_level) {
            (true, false) => 0,
            (true, true) if lots == 1 => return false,
            _ => self.rng.random_range(1..lots),
        };
        self.apply(side, tick, new_lots, out);
        true
    }

    /// Resizes a level to between half and one and a half times its lots (an amended order).
    fn modify(&mut self, side: Side, out: &mut Step) -> bool {
        let (tick, lots) = self.pick_level(side);
        let mut new_lots = self
            .rng
            .random_range(lots / 2..=lots + lots / 2)
            .clamp(1, MAX_LEVEL_LOTS);
        if new_lots == lots {
            new_lots = if lots < MAX_LEVEL_LOTS {
                lots + 1
            } else {
                lots - 1
            };
        }
        self.apply(side, tick, new_lots, out);
        true
    }

    /// An aggressive order that takes the touch: usually part of the best level, sometimes the
    /// whole level and part of the next, rarely a sweep through several. Each level's fill is
    /// split into 1-3 trades, as if it matched several resting orders. At least one level of
    /// the maker side always survives. False when nothing could trade.
    fn aggress(&mut self, out: &mut Step) -> bool {
        let buys = self.aggressor_buys();
        let maker = if buys { Side::Ask } else { Side::Bid };
        let available = self.book.levels(maker);
        let swept = match self.rng.random_range(0..100) {
            0..70 => 0,
            70..90 => 1,
            _ => self.rng.random_range(2..=4),
        }
        .min(available.saturating_sub(1));

        let Self {
            rng,
            book,
            trade_id,
            ..
        } = self;
        let changed = match maker {
            Side::Bid => &mut out.bids,
            Side::Ask => &mut out.asks,
        };
        let first_change = changed.len();
        for (index, (tick, lots)) in book.top(maker).take(swept + 1).enumerate() {
            let fill = if index < swept {
                lots
            } else if lots > 1 {
                rng.random_range(1..lots)
            } else if swept + 1 < available {
                lots
            } else {
                break;
            };
            let pieces = rng.random_range(1..=3).min(fill);
            let mut left = fill;
            for piece in (1..=pieces).rev() {
                let qty = if piece == 1 {
                    left
                } else {
                    rng.random_range(1..=left - (piece - 1))
                };
                left -= qty;
                *trade_id += 1;
                out.trades.push(Trade {
                    id: *trade_id,
                    price_tick: tick,
                    qty_lots: qty,
                    buyer_is_maker: !buys,
                });
            }
            changed.push((tick, lots - fill));
        }
        for &(tick, lots) in &changed[first_change..] {
            book.set(maker, tick, lots);
        }
        !out.trades.is_empty()
    }

    /// Trims a side over `depth` from its far end, and regrows a side that fell below three
    /// quarters of `depth` (after sweeps or a run of cancels) one level per step.
    fn keep_depth(&mut self, side: Side, out: &mut Step) {
        while self.book.levels(side) > self.depth {
            let far = self.far_end(side);
            self.apply(side, far, 0, out);
        }
        if self.book.levels(side) * 4 < self.depth * 3 {
            let gap = self.rng.random_range(1..=2);
            if let Some(tick) = away(side, self.far_end(side), gap) {
                let lots = order_lots(&mut self.rng);
                self.apply(side, tick, lots, out);
            }
        }
    }

    /// Sorts the recorded changes best first, drops repeats, reads each level's final lots and
    /// numbers the step.
    fn finish(&mut self, out: &mut Step) {
        out.bids
            .sort_unstable_by_key(|level| std::cmp::Reverse(level.0));
        out.asks.sort_unstable_by_key(|level| level.0);
        for (side, levels) in [(Side::Bid, &mut out.bids), (Side::Ask, &mut out.asks)] {
            levels.dedup_by_key(|level| level.0);
            for level in levels.iter_mut() {
                level.1 = self.book.get(side, level.0);
            }
        }
        debug_assert!(!out.bids.is_empty() || !out.asks.is_empty(), "empty delta");
        self.update_id += 1;
        out.update_id = self.update_id;
    }

    /// Sets a level and records it as changed; its final lots are read back in `finish`.
    fn apply(&mut self, side: Side, tick: u64, lots: u64, out: &mut Step) {
        self.book.set(side, tick, lots);
        match side {
            Side::Bid => out.bids.push((tick, 0)),
            Side::Ask => out.asks.push((tick, 0)),
        }
    }

    /// A level to cancel or resize: near the touch three times in four, else anywhere.
    fn pick_level(&mut self, side: Side) -> (u64, u64) {
        let (best, best_lots) = self.best(side);
        let distance = if self.rng.random_ratio(1, 2) {
            near_touch_distance(&mut self.rng)
        } else {
            self.rng.random_range(0..=self.span(side))
        };
        away(side, best, distance)
            .and_then(|tick| self.book.at_or_behind(side, tick))
            .or_else(|| self.book.worst(side))
            .unwrap_or((best, best_lots))
    }

    /// Whether the next aggressor buys: even odds shifted by the trend.
    fn aggressor_buys(&mut self) -> bool {
        let pct = 50 + self.trend * TREND_PCT_PER_NOTCH;
        self.rng.random_ratio(pct.unsigned_abs(), 100)
    }

    /// Best bid and best ask ticks. Both sides are never empty (seeded full, and no event
    /// removes a side's last level), so the fallbacks only keep this total.
    fn touch(&self) -> (u64, u64) {
        let bid = self.book.best_bid().map_or(1, |(tick, _)| tick);
        let ask = self.book.best_ask().map_or(bid + 1, |(tick, _)| tick);
        (bid, ask)
    }

    fn best(&self, side: Side) -> (u64, u64) {
        let (bid, ask) = self.touch();
        let tick = match side {
            Side::Bid => bid,
            Side::Ask => ask,
        };
        (tick, self.book.get(side, tick))
    }

    fn far_end(&self, side: Side) -> u64 {
        self.book
            .worst(side)
            .map_or_else(|| self.best(side).0, |(tick, _)| tick)
    }

    /// Ticks between the best and the farthest level of a side.
    fn span(&self, side: Side) -> u64 {
        self.best(side).0.abs_diff(self.far_end(side))
    }
}

/// The tick `distance` ticks behind `tick` on `side`; `None` for a bid at or below zero.
fn away(side: Side, tick: u64, distance: u64) -> Option<u64> {
    match side {
        Side::Bid => tick.checked_sub(distance).filter(|&t| t > 0),
        Side::Ask => tick.checked_add(distance),
    }
}

/// A distance from the touch, falling off with distance: 0 about one time in seven, a few
/// ticks typically, at most [`NEAR_TOUCH_TICKS`].
fn near_touch_distance(rng: &mut Pcg64Mcg) -> u64 {
    let reach = rng.random_range(0..=NEAR_TOUCH_TICKS);
    rng.random_range(0..=reach)
}

/// One order's size: a few lots to tens of thousands, log-spread like real order sizes.
/// Binance's lot sizes are about a dollar's worth of base, so a lot count is meaningful
/// without knowing the price.
fn order_lots(rng: &mut Pcg64Mcg) -> u64 {
    let magnitude = match rng.random_range(0..100) {
        0..10 => 1,
        10..45 => 10,
        45..80 => 100,
        80..95 => 1_000,
        _ => 10_000,
    };
    rng.random_range(magnitude..magnitude * 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64, depth: usize) -> SymbolSpec {
        SymbolSpec {
            symbol: "BTCUSDT".into(),
            base_asset: "BTC".into(),
            quote_asset: "USDT".into(),
            tick_e8: 1_000_000,
            lot_e8: 1_000,
            start_price_ticks: 6_500_000,
            depth,
            rate_hz: 100,
            seed,
        }
    }

    fn run(seed: u64, steps: usize) -> Vec<Step> {
        let mut sim = MarketSim::new(&spec(seed, 200));
        (0..steps)
            .map(|_| {
                let mut out = Step::default();
                sim.step(&mut out);
                out
            })
            .collect()
    }

    #[test]
    fn same_seed_same_market_different_seed_different_market() {
        let a = run(7, 10_000);
        assert_eq!(a, run(7, 10_000));
        assert_ne!(a, run(8, 10_000));
        assert_ne!(a[..10], run(8, 10)[..]);
    }

    #[test]
    fn initial_book_is_full_tight_and_numbered_one() {
        let sim = MarketSim::new(&spec(1, 200));
        let book = sim.book();
        assert_eq!(sim.last_update_id(), 1);
        assert_eq!(sim.last_trade_id(), 0);
        assert_eq!(book.levels(Side::Bid), 200);
        assert_eq!(book.levels(Side::Ask), 200);
        assert_eq!(book.best_bid().unwrap().0, 6_500_000);
        assert_eq!(book.best_ask().unwrap().0, 6_500_001);
    }

    #[test]
    fn reuses_the_output_buffers() {
        let mut sim = MarketSim::new(&spec(3, 200));
        let mut out = Step::default();
        for _ in 0..10_000 {
            sim.step(&mut out);
        }
        let buffers = |out: &Step| (out.bids.as_ptr(), out.asks.as_ptr(), out.trades.as_ptr());
        let warm = buffers(&out);
        for _ in 0..10_000 {
            sim.step(&mut out);
            assert_eq!(buffers(&out), warm, "a warm step reallocated its output");
        }
    }

    /// Checks the trades of one step against the book as it was before the step: they start at
    /// the touch and walk away from it one level at a time, every level but the last emptied.
    fn check_trades(before: &OrderBook, after: &OrderBook, step: &Step, next_trade_id: &mut u64) {
        let Some(first) = step.trades.first() else {
            return;
        };
        let maker = if first.buyer_is_maker {
            Side::Bid
        } else {
            Side::Ask
        };
        let mut levels = before.top(maker);
        let mut current: Option<(u64, u64)> = None;
        let mut filled = 0;
        for trade in &step.trades {
            assert_eq!(trade.id, *next_trade_id, "trade ids must be consecutive");
            *next_trade_id += 1;
            assert!(trade.qty_lots > 0);
            assert_eq!(
                trade.buyer_is_maker, first.buyer_is_maker,
                "one aggressor per step"
            );
            if current.map(|(tick, _)| tick) != Some(trade.price_tick) {
                if let Some((tick, lots)) = current {
                    assert_eq!(filled, lots, "traded through {tick} without emptying it");
                    assert_eq!(after.get(maker, tick), 0);
                }
                current = levels.next();
                filled = 0;
                let (tick, _) = current.expect("traded beyond the book");
                assert_eq!(trade.price_tick, tick, "trade away from the touch");
            }
            filled += trade.qty_lots;
        }
        let (tick, lots) = current.expect("at least one level traded");
        assert!(filled <= lots);
        assert_eq!(after.get(maker, tick), lots - filled);
    }

    /// Replays every delta onto a mirror book, as a client would, and checks after each step
    /// that the mirror equals the simulator's book and that every market invariant holds.
    #[test]
    fn long_run_keeps_every_invariant() {
        const DEPTH: usize = 200;
        const STEPS: usize = 100_000;
        const WARM_UP: usize = 2_000;
        let mut sim = MarketSim::new(&spec(42, DEPTH));
        let start = sim.book().best_bid().unwrap().0;
        let mut mirror = sim.book().clone();
        let mut out = Step::default();
        let mut spreads = Vec::with_capacity(STEPS);
        let (mut trade_steps, mut max_move) = (0usize, 0u64);
        let mut next_trade_id = 1;
        for n in 0..STEPS {
            let previous_id = sim.last_update_id();
            sim.step(&mut out);
            let book = sim.book();

            assert_eq!(out.update_id, previous_id + 1);
            assert_eq!(sim.last_update_id(), out.update_id);
            assert!(
                !out.bids.is_empty() || !out.asks.is_empty(),
                "empty delta at step {n}"
            );
            check_trades(&mirror, book, &out, &mut next_trade_id);
            trade_steps += usize::from(!out.trades.is_empty());
            assert_eq!(sim.last_trade_id(), next_trade_id - 1);

            for (side, delta) in [(Side::Bid, &out.bids), (Side::Ask, &out.asks)] {
                for pair in delta.windows(2) {
                    match side {
                        Side::Bid => assert!(pair[0].0 > pair[1].0, "bids not best first"),
                        Side::Ask => assert!(pair[0].0 < pair[1].0, "asks not best first"),
                    }
                }
                for &(tick, lots) in delta {
                    assert!(tick > 0);
                    assert_ne!(mirror.get(side, tick), lots, "unchanged level in delta");
                    mirror.set(side, tick, lots);
                }
                assert!(book
                    .top(side)
                    .all(|(_, lots)| (1..=MAX_LEVEL_LOTS).contains(&lots)));
                if n >= WARM_UP {
                    let levels = book.levels(side);
                    assert!(
                        (DEPTH / 2..=DEPTH * 11 / 10).contains(&levels),
                        "{side:?} has {levels} levels at step {n}"
                    );
                }
            }
            assert!(
                mirror == *book,
                "replayed deltas diverge from the book at step {n}"
            );

            let (bid, _) = book.best_bid().expect("bids never empty");
            let (ask, _) = book.best_ask().expect("asks never empty");
            assert!(bid < ask, "crossed or locked at step {n}");
            spreads.push(ask - bid);
            max_move = max_move.max(bid.abs_diff(start));
        }
        spreads.sort_unstable();
        assert!(
            spreads[STEPS / 2] <= 2,
            "median spread {} ticks",
            spreads[STEPS / 2]
        );
        let trade_pct = trade_steps * 100 / STEPS;
        assert!(
            (5..=15).contains(&trade_pct),
            "{trade_pct}% of steps traded"
        );
        assert!(
            max_move >= 20,
            "price never drifted (max move {max_move} ticks)"
        );
    }

    #[test]
    fn low_priced_symbol_stays_positive_and_in_band() {
        // 800 ticks and depth 200: the tightest start the feed allows.
        let mut low_spec = spec(5, 200);
        low_spec.start_price_ticks = 800;
        let mut sim = MarketSim::new(&low_spec);
        let mut out = Step::default();
        for _ in 0..50_000 {
            sim.step(&mut out);
            let (bid, _) = sim.book().best_bid().unwrap();
            let (ask, _) = sim.book().best_ask().unwrap();
            assert!(0 < bid && bid < ask);
            assert!(sim.book().worst(Side::Bid).unwrap().0 > 0);
            assert!(
                400 < bid && ask < 1_200,
                "price left its band: {bid}..{ask}"
            );
        }
    }
}
