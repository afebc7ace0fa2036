//! Binance's rolling 24h window statistics (`<symbol>@ticker`, `<symbol>@miniTicker`).
//!
//! Trades are folded into a ring of fixed-length buckets (one minute in production) aligned on the
//! wall clock, so recording a trade is O(1) and memory is fixed however busy the symbol is. A
//! query sums the buckets still inside the window. As in Binance's rolling-window ticker, the
//! window opens on a bucket boundary, so it is up to one bucket wider than `window_us`; that is
//! the price of not keeping every trade.

use super::{signed_id, Notional, TradePrint};
use crate::protocol::decimal::SCALE;
use crate::protocol::json::{
    push_e8_str, push_event_head, push_i64, push_signed_e8_str, push_time, push_u64, TimeUnit,
};
use serde::{Deserialize, Serialize};

/// Upper bound on ring slots; a finer bucket than this allows is coarsened instead of allocating
/// an arbitrarily large ring for a misconfigured window.
const MAX_BUCKETS: u64 = 1 << 16;

/// The statistics of one window, as the ticker payloads need them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickerStats {
    pub open_e8: u64,
    pub high_e8: u64,
    pub low_e8: u64,
    pub last_e8: u64,
    pub last_qty_e8: u64,
    /// Binance's `x`: the last price before the window, the reference price if there is none.
    pub prev_close_e8: u64,
    pub volume_e8: u64,
    pub quote_volume_e8: u64,
    /// Id of the first trade in the window, -1 when there is none.
    pub first_id: i64,
    /// Id of the last trade in the window, -1 when there is none.
    pub last_id: i64,
    pub count: u64,
    pub open_time_us: u64,
    pub close_time_us: u64,
}

/// The trades of one bucket. `count == 0` marks a free slot whatever its other fields hold.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Bucket {
    /// Absolute bucket number (`time_us / bucket_us`), so stale slots are recognisable.
    index: u64,
    count: u32,
    open_e8: u64,
    high_e8: u64,
    low_e8: u64,
    close_e8: u64,
    close_qty_e8: u64,
    volume_e8: u64,
    quote: Notional,
    first_id: u64,
    last_id: u64,
}

impl Bucket {
    fn start(index: u64, trade: &TradePrint) -> Bucket {
        let mut quote = Notional::default();
        quote.add(trade.price_e8, trade.qty_e8);
        Bucket {
            index,
            count: 1,
            open_e8: trade.price_e8,
            high_e8: trade.price_e8,
            low_e8: trade.price_e8,
            close_e8: trade.price_e8,
            close_qty_e8: trade.qty_e8,
            volume_e8: trade.qty_e8,
            quote,
            first_id: trade.id,
            last_id: trade.id,
        }
    }

    fn add(&mut self, trade: &TradePrint) {
        self.count = self.count.saturating_add(1);
        self.high_e8 = self.high_e8.max(trade.price_e8);
        self.low_e8 = self.low_e8.min(trade.price_e8);
        self.close_e8 = trade.price_e8;
        self.close_qty_e8 = trade.qty_e8;
        self.volume_e8 = self.volume_e8.saturating_add(trade.qty_e8);
        self.quote.add(trade.price_e8, trade.qty_e8);
        self.last_id = trade.id;
    }
}

/// Rolling-window statistics for one symbol.
#[derive(Serialize, Deserialize)]
pub struct Rolling24h {
    /// Slot `index % len` holds bucket `index`; the length covers a whole window plus the bucket
    /// being filled, so no bucket inside the window is ever overwritten.
    buckets: Vec<Bucket>,
    window_us: u64,
    bucket_us: u64,
    /// Newest bucket index seen by `record` or `stats`: anything a ring length older is gone.
    head: u64,
    /// Close of the newest bucket that left the window (Binance's `x`).
    prev_close_e8: u64,
    /// Bucket index `prev_close_e8` came from; `None` while it is still the reference price.
    prev_close_index: Option<u64>,
}

impl Rolling24h {
    /// A window of `window_us` made of `bucket_us` buckets, starting empty at `start_us` with
    /// `reference_price_e8` as the last known price.
    pub fn new(window_us: u64, bucket_us: u64, start_us: u64, reference_price_e8: u64) -> Self {
        let bucket_us = bucket_us.max(1).max(window_us.div_ceil(MAX_BUCKETS - 1));
        let slots = window_us.div_ceil(bucket_us) + 1;
        // `slots <= MAX_BUCKETS`, so the conversion cannot fail on any supported target.
        let slots = usize::try_from(slots).unwrap_or(1);
        Rolling24h {
            buckets: vec![Bucket::default(); slots],
            window_us,
            bucket_us,
            head: start_us / bucket_us,
            prev_close_e8: reference_price_e8,
            prev_close_index: None,
        }
    }

    /// Counts one trade. O(1).
    ///
    /// A trade older than the ring can hold only updates the pre-window price (`x`).
    pub fn record(&mut self, trade: &TradePrint) {
        let index = trade.time_us / self.bucket_us;
        if self.head.saturating_sub(index) >= self.ring_len() {
            self.retire(index, trade.price_e8);
            return;
        }
        self.head = self.head.max(index);
        let slot = self.slot(index);
        let bucket = self.buckets[slot];
        if bucket.count == 0 || bucket.index != index {
            // The slot held a bucket at least a ring length older: it has left the window.
            if bucket.count > 0 {
                self.retire(bucket.index, bucket.close_e8);
            }
            self.buckets[slot] = Bucket::start(index, trade);
        } else {
            self.buckets[slot].add(trade);
        }
    }

    /// The statistics of the window ending at `now_us`, after expiring the buckets it has left.
    ///
    /// O(buckets): called at the ticker push rate, not per trade.
    pub fn stats(&mut self, now_us: u64) -> TickerStats {
        self.head = self.head.max(now_us / self.bucket_us);
        let open_index = now_us.saturating_sub(self.window_us) / self.bucket_us;
        self.expire_before(open_index);
        self.stats_within(now_us, self.window_us)
    }

    /// The statistics of the window of `window_us` (at most this ring's) ending at `now_us`,
    /// without changing anything: the shorter rolling windows (`@ticker_1h`, `@avgPrice`'s five
    /// minutes) and REST read the same buckets as the 24h ticker. The window opens on the bucket
    /// boundary at or before `now_us - window_us`, as Binance's opens on a minute.
    ///
    /// A window with no trade reports the newest earlier price: the close of the newest bucket
    /// before the window, else the price the last expired bucket left.
    pub fn stats_within(&self, now_us: u64, window_us: u64) -> TickerStats {
        let window_us = window_us.min(self.window_us);
        let open_index = now_us.saturating_sub(window_us) / self.bucket_us;
        let now_index = now_us / self.bucket_us;
        let mut first: Option<Bucket> = None;
        let mut last: Option<Bucket> = None;
        let mut before: Option<Bucket> = None;
        let mut high_e8 = 0;
        let mut low_e8 = u64::MAX;
        let mut volume_e8: u64 = 0;
        let mut quote = Notional::default();
        let mut count: u64 = 0;
        for bucket in self.buckets.iter().filter(|b| b.count > 0) {
            if bucket.index < open_index {
                if before.is_none_or(|b| bucket.index > b.index) {
                    before = Some(*bucket);
                }
                continue;
            }
            if bucket.index > now_index {
                continue;
            }
            if first.is_none_or(|f| bucket.index < f.index) {
                first = Some(*bucket);
            }
            if last.is_none_or(|l| bucket.index > l.index) {
                last = Some(*bucket);
            }
            high_e8 = high_e8.max(bucket.high_e8);
            low_e8 = low_e8.min(bucket.low_e8);
            volume_e8 = volume_e8.saturating_add(bucket.volume_e8);
            quote.merge(bucket.quote);
            count += u64::from(bucket.count);
        }
        let prev_close_e8 = before.map_or(self.prev_close_e8, |b| b.close_e8);

        let open_time_us = open_index.saturating_mul(self.bucket_us);
        match (first, last) {
            (Some(first), Some(last)) => TickerStats {
                open_e8: first.open_e8,
                high_e8,
                low_e8,
                last_e8: last.close_e8,
                last_qty_e8: last.close_qty_e8,
                prev_close_e8,
                volume_e8,
                quote_volume_e8: quote.e8(),
                first_id: signed_id(first.first_id),
                last_id: signed_id(last.last_id),
                count,
                open_time_us,
                close_time_us: now_us,
            },
            // Binance reports a quiet window at the last known price with no trade ids.
            _ => TickerStats {
                open_e8: prev_close_e8,
                high_e8: prev_close_e8,
                low_e8: prev_close_e8,
                last_e8: prev_close_e8,
                last_qty_e8: 0,
                prev_close_e8,
                volume_e8: 0,
                quote_volume_e8: 0,
                first_id: -1,
                last_id: -1,
                count: 0,
                open_time_us,
                close_time_us: now_us,
            },
        }
    }

    fn expire_before(&mut self, open_index: u64) {
        for slot in 0..self.buckets.len() {
            let bucket = self.buckets[slot];
            if bucket.count > 0 && bucket.index < open_index {
                self.buckets[slot].count = 0;
                self.retire(bucket.index, bucket.close_e8);
            }
        }
    }

    /// Remembers the close of a bucket leaving the window if it is the newest to have left.
    fn retire(&mut self, index: u64, close_e8: u64) {
        if self.prev_close_index.is_none_or(|newest| index >= newest) {
            self.prev_close_index = Some(index);
            self.prev_close_e8 = close_e8;
        }
    }

    fn ring_len(&self) -> u64 {
        self.buckets.len() as u64
    }

    fn slot(&self, index: u64) -> usize {
        // The remainder is below the ring length, which is a usize.
        (index % self.ring_len()) as usize
    }
}

/// Appends a `24hrTicker` event.
///
/// `bid` and `ask` are the best (price, qty) in e8 units.
pub fn write_ticker(
    out: &mut Vec<u8>,
    symbol: &str,
    s: &TickerStats,
    bid: (u64, u64),
    ask: (u64, u64),
    event_us: u64,
    unit: TimeUnit,
) {
    push_event_head(out, "24hrTicker", event_us, unit, symbol);
    out.extend_from_slice(b",\"p\":");
    push_signed_e8_str(out, price_change_e8(s.open_e8, s.last_e8));
    out.extend_from_slice(b",\"P\":");
    push_percent_change(out, s.open_e8, s.last_e8);
    out.extend_from_slice(b",\"w\":");
    push_e8_str(out, weighted_average_e8(s));
    out.extend_from_slice(b",\"x\":");
    push_e8_str(out, s.prev_close_e8);
    out.extend_from_slice(b",\"c\":");
    push_e8_str(out, s.last_e8);
    out.extend_from_slice(b",\"Q\":");
    push_e8_str(out, s.last_qty_e8);
    out.extend_from_slice(b",\"b\":");
    push_e8_str(out, bid.0);
    out.extend_from_slice(b",\"B\":");
    push_e8_str(out, bid.1);
    out.extend_from_slice(b",\"a\":");
    push_e8_str(out, ask.0);
    out.extend_from_slice(b",\"A\":");
    push_e8_str(out, ask.1);
    out.extend_from_slice(b",\"o\":");
    push_e8_str(out, s.open_e8);
    out.extend_from_slice(b",\"h\":");
    push_e8_str(out, s.high_e8);
    out.extend_from_slice(b",\"l\":");
    push_e8_str(out, s.low_e8);
    push_window_tail(out, s, unit);
}

/// The fields both ticker events end with: volumes, the window's open and close times, its
/// first and last trade ids and the trade count, then the closing brace.
fn push_window_tail(out: &mut Vec<u8>, s: &TickerStats, unit: TimeUnit) {
    out.extend_from_slice(b",\"v\":");
    push_e8_str(out, s.volume_e8);
    out.extend_from_slice(b",\"q\":");
    push_e8_str(out, s.quote_volume_e8);
    out.extend_from_slice(b",\"O\":");
    push_time(out, s.open_time_us, unit);
    out.extend_from_slice(b",\"C\":");
    push_time(out, s.close_time_us, unit);
    out.extend_from_slice(b",\"F\":");
    push_i64(out, s.first_id);
    out.extend_from_slice(b",\"L\":");
    push_i64(out, s.last_id);
    out.extend_from_slice(b",\"n\":");
    push_u64(out, s.count);
    out.push(b'}');
}

/// Appends a rolling-window ticker event (`1hTicker`, `4hTicker`, `1dTicker`): Binance's
/// field list for `<symbol>@ticker_<window>`, which has no prev close, quotes or last qty.
pub fn write_rolling_ticker(
    out: &mut Vec<u8>,
    event: &str,
    symbol: &str,
    s: &TickerStats,
    event_us: u64,
    unit: TimeUnit,
) {
    push_event_head(out, event, event_us, unit, symbol);
    out.extend_from_slice(b",\"p\":");
    push_signed_e8_str(out, price_change_e8(s.open_e8, s.last_e8));
    out.extend_from_slice(b",\"P\":");
    push_percent_change(out, s.open_e8, s.last_e8);
    out.extend_from_slice(b",\"o\":");
    push_e8_str(out, s.open_e8);
    out.extend_from_slice(b",\"h\":");
    push_e8_str(out, s.high_e8);
    out.extend_from_slice(b",\"l\":");
    push_e8_str(out, s.low_e8);
    out.extend_from_slice(b",\"c\":");
    push_e8_str(out, s.last_e8);
    out.extend_from_slice(b",\"w\":");
    push_e8_str(out, weighted_average_e8(s));
    push_window_tail(out, s, unit);
}

/// Appends an `avgPrice` event: the volume-weighted average price of `s`'s window (Binance's
/// five minutes), and `T`, the last trade's time.
pub fn write_avg_price(
    out: &mut Vec<u8>,
    symbol: &str,
    s: &TickerStats,
    last_trade_us: u64,
    event_us: u64,
    unit: TimeUnit,
) {
    push_event_head(out, "avgPrice", event_us, unit, symbol);
    out.extend_from_slice(b",\"i\":\"5m\",\"w\":");
    push_e8_str(out, weighted_average_e8(s));
    out.extend_from_slice(b",\"T\":");
    push_time(out, last_trade_us, unit);
    out.push(b'}');
}

/// Appends a `24hrMiniTicker` event.
pub fn write_mini_ticker(
    out: &mut Vec<u8>,
    symbol: &str,
    s: &TickerStats,
    event_us: u64,
    unit: TimeUnit,
) {
    push_event_head(out, "24hrMiniTicker", event_us, unit, symbol);
    out.extend_from_slice(b",\"c\":");
    push_e8_str(out, s.last_e8);
    out.extend_from_slice(b",\"o\":");
    push_e8_str(out, s.open_e8);
    out.extend_from_slice(b",\"h\":");
    push_e8_str(out, s.high_e8);
    out.extend_from_slice(b",\"l\":");
    push_e8_str(out, s.low_e8);
    out.extend_from_slice(b",\"v\":");
    push_e8_str(out, s.volume_e8);
    out.extend_from_slice(b",\"q\":");
    push_e8_str(out, s.quote_volume_e8);
    out.push(b'}');
}

/// `last - open`, clamped to the i64 range the signed writer takes.
pub(crate) fn price_change_e8(open_e8: u64, last_e8: u64) -> i64 {
    let change = i128::from(last_e8) - i128::from(open_e8);
    i64::try_from(change).unwrap_or(if change < 0 { i64::MIN } else { i64::MAX })
}

/// Appends Binance's `P`: the change from `open` to `last` in percent with 3 decimals, rounded
/// half away from zero, e.g. `"-1.234"`. A zero open (no meaningful base) and any change that
/// rounds to zero render as `"0.000"`, never `"-0.000"`.
pub(crate) fn push_percent_change(out: &mut Vec<u8>, open_e8: u64, last_e8: u64) {
    let (negative, magnitude) = if last_e8 >= open_e8 {
        (false, last_e8 - open_e8)
    } else {
        (true, open_e8 - last_e8)
    };
    // Thousandths of a percent: change / open * 100 * 1000.
    let thousandths = if open_e8 == 0 {
        0
    } else {
        let numerator = u128::from(magnitude) * 100_000;
        let open = u128::from(open_e8);
        let quotient = numerator / open;
        if (numerator % open) * 2 >= open {
            quotient + 1
        } else {
            quotient
        }
    };
    out.push(b'"');
    if negative && thousandths > 0 {
        out.push(b'-');
    }
    let mut whole = itoa::Buffer::new();
    out.extend_from_slice(whole.format(thousandths / 1000).as_bytes());
    let frac = (thousandths % 1000) as u16;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
        b'"',
    ]);
}

/// Binance's `w`: quote volume / volume as an e8 price rounded to nearest, or the last price
/// when nothing traded (a zero would read as a crash to charting clients).
pub(crate) fn weighted_average_e8(s: &TickerStats) -> u64 {
    if s.volume_e8 == 0 {
        return s.last_e8;
    }
    let volume = u128::from(s.volume_e8);
    let average = (u128::from(s.quote_volume_e8) * u128::from(SCALE) + volume / 2) / volume;
    u64::try_from(average).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;
    const E8: u64 = SCALE;

    fn trade(id: u64, price_e8: u64, qty_e8: u64, time_us: u64) -> TradePrint {
        TradePrint {
            id,
            price_e8,
            qty_e8,
            time_us,
            buyer_is_maker: false,
        }
    }

    fn render(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn percent(open_e8: u64, last_e8: u64) -> String {
        render(|o| push_percent_change(o, open_e8, last_e8))
    }

    /// A 10 s window of 1 s buckets with three hand-computed trades.
    fn sample() -> Rolling24h {
        let mut r = Rolling24h::new(10 * SEC, SEC, 100 * SEC, 9 * E8);
        r.record(&trade(7, 10 * E8, 2 * E8, 101 * SEC)); // quote 20
        r.record(&trade(8, 12 * E8, E8 / 2, 101 * SEC + 500_000)); // quote 6
        r.record(&trade(9, 11 * E8, 3 * E8, 104 * SEC)); // quote 33
        r
    }

    #[test]
    fn sums_a_known_trade_sequence() {
        let s = sample().stats(105 * SEC + 250_000);
        assert_eq!(
            s,
            TickerStats {
                open_e8: 10 * E8,
                high_e8: 12 * E8,
                low_e8: 10 * E8,
                last_e8: 11 * E8,
                last_qty_e8: 3 * E8,
                prev_close_e8: 9 * E8,
                volume_e8: 5 * E8 + E8 / 2,
                quote_volume_e8: 59 * E8,
                first_id: 7,
                last_id: 9,
                count: 3,
                // The window opens on the bucket boundary at or before now - 10 s.
                open_time_us: 95 * SEC,
                close_time_us: 105 * SEC + 250_000,
            }
        );
    }

    #[test]
    fn expires_buckets_that_leave_the_window() {
        let mut r = sample();
        // Window opens at 102 s: the two trades at 101 s have left; 9 at 104 s remains.
        let s = r.stats(112 * SEC);
        assert_eq!(
            (s.open_e8, s.high_e8, s.low_e8, s.last_e8),
            (11 * E8, 11 * E8, 11 * E8, 11 * E8)
        );
        assert_eq!((s.first_id, s.last_id, s.count), (9, 9, 1));
        assert_eq!((s.volume_e8, s.quote_volume_e8), (3 * E8, 33 * E8));
        assert_eq!(
            s.prev_close_e8,
            12 * E8,
            "x is the last price before the window"
        );

        // Everything gone: the last known price everywhere, no ids, no volume.
        let s = r.stats(200 * SEC);
        assert_eq!(
            s,
            TickerStats {
                open_e8: 11 * E8,
                high_e8: 11 * E8,
                low_e8: 11 * E8,
                last_e8: 11 * E8,
                last_qty_e8: 0,
                prev_close_e8: 11 * E8,
                volume_e8: 0,
                quote_volume_e8: 0,
                first_id: -1,
                last_id: -1,
                count: 0,
                open_time_us: 190 * SEC,
                close_time_us: 200 * SEC,
            }
        );
    }

    #[test]
    fn a_fresh_window_reports_the_reference_price() {
        let mut r = Rolling24h::new(10 * SEC, SEC, 0, 42 * E8);
        let s = r.stats(3 * SEC);
        assert_eq!(
            (s.open_e8, s.last_e8, s.prev_close_e8),
            (42 * E8, 42 * E8, 42 * E8)
        );
        assert_eq!(
            (s.first_id, s.last_id, s.count, s.open_time_us),
            (-1, -1, 0, 0)
        );
    }

    #[test]
    fn reused_slots_and_late_trades_only_move_the_previous_close() {
        // 2 s window of 1 s buckets: a ring of 3 slots.
        let mut r = Rolling24h::new(2 * SEC, SEC, 0, E8);
        r.record(&trade(1, 5 * E8, E8, SEC));
        r.record(&trade(2, 6 * E8, E8, 4 * SEC)); // reuses the slot of second 1
        r.record(&trade(3, 7 * E8, E8, 0)); // older than the ring: only a candidate for x
        let s = r.stats(4 * SEC);
        assert_eq!(
            (s.open_e8, s.last_e8, s.count, s.prev_close_e8),
            (6 * E8, 6 * E8, 1, 5 * E8)
        );
    }

    #[test]
    fn survives_degenerate_configuration_and_extremes() {
        let mut r = Rolling24h::new(0, 0, u64::MAX, 0);
        r.record(&trade(u64::MAX, u64::MAX, u64::MAX, u64::MAX));
        r.record(&trade(u64::MAX, u64::MAX, u64::MAX, u64::MAX));
        let s = r.stats(u64::MAX);
        assert_eq!(
            (s.volume_e8, s.quote_volume_e8, s.last_id),
            (u64::MAX, u64::MAX, i64::MAX)
        );
        let mut out = Vec::new();
        write_ticker(
            &mut out,
            "X",
            &s,
            (0, 0),
            (0, 0),
            u64::MAX,
            TimeUnit::Microsecond,
        );

        // A window far finer than the ring allows is coarsened, not allocated.
        let r = Rolling24h::new(u64::MAX, 1, 0, 0);
        assert!(r.buckets.len() as u64 <= MAX_BUCKETS);
    }

    /// A shorter window over the same ring sees only its own buckets, reports the close
    /// before it as the price of a quiet window, and changes nothing.
    #[test]
    fn shorter_windows_read_the_same_buckets() {
        let r = sample();
        let s = r.stats_within(105 * SEC, 2 * SEC);
        assert_eq!((s.first_id, s.last_id, s.count), (9, 9, 1));
        assert_eq!((s.open_time_us, s.prev_close_e8), (103 * SEC, 12 * E8));
        let quiet = r.stats_within(107 * SEC, 2 * SEC);
        assert_eq!(
            (quiet.count, quiet.last_e8, quiet.first_id),
            (0, 11 * E8, -1)
        );
        let mut whole = sample();
        assert_eq!(r.stats_within(105 * SEC, 10 * SEC), whole.stats(105 * SEC));
        let out = render(|o| {
            write_rolling_ticker(
                o,
                "1hTicker",
                "BNBBTC",
                &s,
                105 * SEC,
                TimeUnit::Millisecond,
            )
        });
        assert_eq!(
            out,
            concat!(
                r#"{"e":"1hTicker","E":105000,"s":"BNBBTC","p":"0.00000000","P":"0.000","#,
                r#""o":"11.00000000","h":"11.00000000","l":"11.00000000","c":"11.00000000","#,
                r#""w":"11.00000000","v":"3.00000000","q":"33.00000000","O":103000,"C":105000,"#,
                r#""F":9,"L":9,"n":1}"#
            )
        );
        let avg = render(|o| {
            write_avg_price(o, "BNBBTC", &s, 104 * SEC, 105 * SEC, TimeUnit::Millisecond)
        });
        assert_eq!(
            avg,
            r#"{"e":"avgPrice","E":105000,"s":"BNBBTC","i":"5m","w":"11.00000000","T":104000}"#
        );
    }

    #[test]
    fn percent_change_sign_and_rounding() {
        assert_eq!(percent(4 * E8, 5 * E8), "\"25.000\"");
        assert_eq!(percent(3 * E8, 4 * E8), "\"33.333\"");
        assert_eq!(percent(3 * E8, 2 * E8), "\"-33.333\"");
        assert_eq!(percent(3 * E8, 5 * E8), "\"66.667\"", "rounds to nearest");
        assert_eq!(percent(3 * E8, E8), "\"-66.667\"", "rounds away from zero");
        assert_eq!(
            percent(200_000, 200_001),
            "\"0.001\"",
            "exact half rounds up"
        );
        assert_eq!(percent(200_000, 199_999), "\"-0.001\"");
        assert_eq!(percent(300_000, 299_999), "\"0.000\"", "no negative zero");
        assert_eq!(percent(E8, E8), "\"0.000\"");
        assert_eq!(percent(0, E8), "\"0.000\"", "no base, no percentage");
        assert_eq!(percent(1, u64::MAX), "\"1844674407370955161400.000\"");
        assert_eq!(percent(E8, 0), "\"-100.000\"");
    }

    #[test]
    fn writes_the_ticker_payload() {
        let s = sample().stats(105 * SEC + 250_000);
        let ms = render(|o| {
            write_ticker(
                o,
                "BNBBTC",
                &s,
                (10 * E8, 4 * E8),
                (11 * E8, E8),
                105_250_123,
                TimeUnit::Millisecond,
            )
        });
        assert_eq!(
            ms,
            concat!(
                r#"{"e":"24hrTicker","E":105250,"s":"BNBBTC","p":"1.00000000","P":"10.000","#,
                r#""w":"10.72727273","x":"9.00000000","c":"11.00000000","Q":"3.00000000","#,
                r#""b":"10.00000000","B":"4.00000000","a":"11.00000000","A":"1.00000000","#,
                r#""o":"10.00000000","h":"12.00000000","l":"10.00000000","v":"5.50000000","#,
                r#""q":"59.00000000","O":95000,"C":105250,"F":7,"L":9,"n":3}"#
            )
        );
        let us = render(|o| {
            write_ticker(
                o,
                "BNBBTC",
                &s,
                (0, 0),
                (0, 0),
                105_250_123,
                TimeUnit::Microsecond,
            )
        });
        assert!(
            us.starts_with(r#"{"e":"24hrTicker","E":105250123,"s":"BNBBTC","#),
            "{us}"
        );
        assert!(
            us.ends_with(r#""O":95000000,"C":105250000,"F":7,"L":9,"n":3}"#),
            "{us}"
        );
    }

    #[test]
    fn writes_a_quiet_ticker_with_a_negative_change() {
        let s = TickerStats {
            open_e8: 2 * E8,
            high_e8: 2 * E8,
            low_e8: E8,
            last_e8: E8,
            last_qty_e8: 0,
            prev_close_e8: 2 * E8,
            volume_e8: 0,
            quote_volume_e8: 0,
            first_id: -1,
            last_id: -1,
            count: 0,
            open_time_us: 0,
            close_time_us: 86_400_000_000,
        };
        let out =
            render(|o| write_ticker(o, "ETHBTC", &s, (0, 0), (0, 0), 1, TimeUnit::Millisecond));
        assert_eq!(
            out,
            concat!(
                r#"{"e":"24hrTicker","E":0,"s":"ETHBTC","p":"-1.00000000","P":"-50.000","#,
                r#""w":"1.00000000","x":"2.00000000","c":"1.00000000","Q":"0.00000000","#,
                r#""b":"0.00000000","B":"0.00000000","a":"0.00000000","A":"0.00000000","#,
                r#""o":"2.00000000","h":"2.00000000","l":"1.00000000","v":"0.00000000","#,
                r#""q":"0.00000000","O":0,"C":86400000,"F":-1,"L":-1,"n":0}"#
            )
        );
    }

    #[test]
    fn writes_the_mini_ticker_payload() {
        let s = sample().stats(105 * SEC);
        let ms = render(|o| {
            write_mini_ticker(
                o,
                "BNBBTC",
                &s,
                1_672_515_782_136_789,
                TimeUnit::Millisecond,
            )
        });
        assert_eq!(
            ms,
            concat!(
                r#"{"e":"24hrMiniTicker","E":1672515782136,"s":"BNBBTC","c":"11.00000000","#,
                r#""o":"10.00000000","h":"12.00000000","l":"10.00000000","v":"5.50000000","#,
                r#""q":"59.00000000"}"#
            )
        );
        let us = render(|o| {
            write_mini_ticker(
                o,
                "BNBBTC",
                &s,
                1_672_515_782_136_789,
                TimeUnit::Microsecond,
            )
        });
        assert!(
            us.starts_with(r#"{"e":"24hrMiniTicker","E":1672515782136789,"#),
            "{us}"
        );
    }
}
