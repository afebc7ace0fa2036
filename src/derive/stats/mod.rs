//! Trade statistics: Binance's rolling 24h ticker ([`rolling`]) and interval klines ([`kline`]).
//!
//! Both consume the same [`TradePrint`]s and keep every price and volume as integer e8 counts,
//! so a statistic always formats to the same bytes Binance would send and never drifts through
//! float rounding. Quote volumes are summed exactly (see `Notional`) and only truncated to
//! 8 decimals when rendered, so long windows do not accumulate per-trade rounding error.

pub mod kline;
pub mod rolling;

use crate::protocol::decimal::SCALE;
use serde::{Deserialize, Serialize};

/// One trade as the statistics see it.
#[derive(Clone, Copy, Debug)]
pub struct TradePrint {
    /// Trade id; Binance ids increase by one per trade within a symbol.
    pub id: u64,
    pub price_e8: u64,
    pub qty_e8: u64,
    /// Trade time in microseconds since the Unix epoch.
    pub time_us: u64,
    /// True when the buyer's order was resting, i.e. the taker sold.
    pub buyer_is_maker: bool,
}

/// An exact running sum of `price_e8 * qty_e8`, kept as whole e8 units plus the sub-e8 remainder.
///
/// The product of two e8 numbers is in e16 units and overflows `u64` for ordinary trades, while a
/// `u128` per accumulator would bloat every rolling-window bucket. Carrying the remainder (< 1e8)
/// in a `u32` keeps the sum exact in 12 bytes; it saturates instead of wrapping on absurd input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Notional {
    e8: u64,
    rem: u32,
}

impl Notional {
    /// Adds `price_e8 * qty_e8 / 1e8` exactly.
    #[inline]
    pub(crate) fn add(&mut self, price_e8: u64, qty_e8: u64) {
        let product = u128::from(price_e8) * u128::from(qty_e8) + u128::from(self.rem);
        self.add_parts(product / u128::from(SCALE), product % u128::from(SCALE));
    }

    /// Adds another exact sum.
    #[inline]
    pub(crate) fn merge(&mut self, other: Notional) {
        let rem = u128::from(self.rem) + u128::from(other.rem);
        self.e8 = self.e8.saturating_add(other.e8);
        self.add_parts(rem / u128::from(SCALE), rem % u128::from(SCALE));
    }

    /// The sum truncated to 8 decimals, as Binance renders quote volumes.
    #[inline]
    pub(crate) fn e8(self) -> u64 {
        self.e8
    }

    #[inline]
    fn add_parts(&mut self, whole: u128, rem: u128) {
        let whole = u64::try_from(whole).unwrap_or(u64::MAX);
        self.e8 = self.e8.saturating_add(whole);
        // `rem` is a remainder modulo 1e8, which always fits a u32.
        self.rem = u32::try_from(rem).unwrap_or(0);
    }
}

/// Converts a trade id to Binance's signed id field (where -1 means "no trade").
#[inline]
pub(crate) fn signed_id(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notional_is_exact_across_remainders() {
        let mut sum = Notional::default();
        // 0.5 * 0.00000001 = 0.000000005: invisible alone, exact when doubled.
        sum.add(SCALE / 2, 1);
        assert_eq!(sum.e8(), 0);
        sum.add(SCALE / 2, 1);
        assert_eq!(sum.e8(), 1);

        let mut a = Notional::default();
        a.add(SCALE / 2, 1);
        let mut b = Notional::default();
        b.add(SCALE / 2, 1);
        a.merge(b);
        assert_eq!(a.e8(), 1);
    }

    #[test]
    fn notional_saturates_instead_of_wrapping() {
        let mut sum = Notional::default();
        sum.add(u64::MAX, u64::MAX);
        sum.add(u64::MAX, u64::MAX);
        assert_eq!(sum.e8(), u64::MAX);
        assert_eq!(signed_id(u64::MAX), i64::MAX);
    }
}
