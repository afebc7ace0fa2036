//! Interval klines (`<symbol>@kline_<interval>`).
//!
//! A [`KlineBuilder`] holds the open kline of one symbol and interval. Klines are aligned on the
//! wall clock (a 1m kline opens on a minute boundary) and never span more than their interval:
//! time passing without trades closes the open kline and opens empty ones, priced at the previous
//! close, exactly as Binance does. Closed klines wait in a small bounded queue so each final
//! `"x":true` payload is handed out exactly once, even when several intervals close between two
//! pushes (an engine stall, or a burst of trades crossing boundaries before the next tick).

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

use super::{signed_id, Notional, TradePrint};
use crate::protocol::json::{
    push_e8_str, push_event_head, push_i64, push_time, push_u64, TimeUnit,
};
pub use crate::protocol::stream::KlineInterval;

/// Closed klines kept for the caller; past this the oldest are dropped (and counted) so a caller
/// that stops draining cannot grow memory.
const MAX_CLOSED: usize = 16;

/// One kline, open or closed.
///
/// Quote volumes are kept exact and exposed truncated to 8 decimals through methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kline {
    pub interval: KlineInterval,
    /// Interval start, aligned to the interval on the wall clock.
    pub open_time_us: u64,
    /// The next interval's start: kept rather than computed, because a month's length varies.
    pub end_us: u64,
    /// First trade id, -1 when the kline has no trades.
    pub first_id: i64,
    /// Last trade id, -1 when the kline has no trades.
    pub last_id: i64,
    pub open_e8: u64,
    pub high_e8: u64,
    pub low_e8: u64,
    pub close_e8: u64,
    pub volume_e8: u64,
    /// Base volume of trades whose taker bought.
    pub taker_buy_volume_e8: u64,
    pub count: u64,
    /// Whether the interval is over (`"x":true`).
    pub closed: bool,
    quote: Notional,
    taker_buy_quote: Notional,
}

impl Kline {
    /// A kline with no trades, every price at `price_e8` (the previous close).
    fn empty(interval: KlineInterval, open_time_us: u64, end_us: u64, price_e8: u64) -> Kline {
        Kline {
            interval,
            open_time_us,
            end_us,
            first_id: -1,
            last_id: -1,
            open_e8: price_e8,
            high_e8: price_e8,
            low_e8: price_e8,
            close_e8: price_e8,
            volume_e8: 0,
            taker_buy_volume_e8: 0,
            count: 0,
            closed: false,
            quote: Notional::default(),
            taker_buy_quote: Notional::default(),
        }
    }

    fn add(&mut self, trade: &TradePrint) {
        let price = trade.price_e8;
        if self.count == 0 {
            // The previous-close placeholder prices give way to the first real trade.
            self.open_e8 = price;
            self.high_e8 = price;
            self.low_e8 = price;
            self.first_id = signed_id(trade.id);
        } else {
            self.high_e8 = self.high_e8.max(price);
            self.low_e8 = self.low_e8.min(price);
        }
        self.close_e8 = price;
        self.last_id = signed_id(trade.id);
        self.count = self.count.saturating_add(1);
        self.volume_e8 = self.volume_e8.saturating_add(trade.qty_e8);
        self.quote.add(price, trade.qty_e8);
        if !trade.buyer_is_maker {
            self.taker_buy_volume_e8 = self.taker_buy_volume_e8.saturating_add(trade.qty_e8);
            self.taker_buy_quote.add(price, trade.qty_e8);
        }
    }

    /// Quote asset volume, truncated to 8 decimals.
    pub fn quote_volume_e8(&self) -> u64 {
        self.quote.e8()
    }

    /// Quote asset volume of trades whose taker bought, truncated to 8 decimals.
    pub fn taker_buy_quote_volume_e8(&self) -> u64 {
        self.taker_buy_quote.e8()
    }

    /// This kline's minutes regrouped into the kline of `interval` opening at `open_us` and
    /// ending at `end_us` (another time zone's): its data, under the new interval and times.
    pub fn regrouped(&self, interval: KlineInterval, open_us: u64, end_us: u64) -> Kline {
        Kline {
            interval,
            open_time_us: open_us,
            end_us,
            ..*self
        }
    }

    /// Folds `later`, the next kline of a finer interval inside this one, into this one.
    pub fn merge(&mut self, later: &Kline) {
        if later.count > 0 {
            if self.count == 0 {
                self.open_e8 = later.open_e8;
                self.high_e8 = later.high_e8;
                self.low_e8 = later.low_e8;
                self.first_id = later.first_id;
            } else {
                self.high_e8 = self.high_e8.max(later.high_e8);
                self.low_e8 = self.low_e8.min(later.low_e8);
            }
            self.last_id = later.last_id;
        }
        self.close_e8 = later.close_e8;
        self.count = self.count.saturating_add(later.count);
        self.volume_e8 = self.volume_e8.saturating_add(later.volume_e8);
        self.taker_buy_volume_e8 = self
            .taker_buy_volume_e8
            .saturating_add(later.taker_buy_volume_e8);
        self.quote.merge(later.quote);
        self.taker_buy_quote.merge(later.taker_buy_quote);
        self.closed = later.closed && later.end_us == self.end_us;
    }

    /// Appends the `/api/v3/klines` row: `[t,"o","h","l","c","v",T,"q",n,"V","Q","0"]`, times
    /// in milliseconds.
    pub fn write_row(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        push_u64(out, self.open_time_us / 1000);
        for price in [
            self.open_e8,
            self.high_e8,
            self.low_e8,
            self.close_e8,
            self.volume_e8,
        ] {
            out.push(b',');
            push_e8_str(out, price);
        }
        out.push(b',');
        push_u64(out, (self.end_us / 1000).saturating_sub(1));
        out.push(b',');
        push_e8_str(out, self.quote_volume_e8());
        out.push(b',');
        push_u64(out, self.count);
        out.push(b',');
        push_e8_str(out, self.taker_buy_volume_e8);
        out.push(b',');
        push_e8_str(out, self.taker_buy_quote_volume_e8());
        out.extend_from_slice(b",\"0\"]");
    }

    /// Last microsecond of the interval.
    pub fn close_time_us(&self) -> u64 {
        self.end_us.saturating_sub(1)
    }

    /// Appends the `kline` event for this kline.
    pub fn write(&self, out: &mut Vec<u8>, symbol: &str, event_us: u64, unit: TimeUnit) {
        push_event_head(out, "kline", event_us, unit, symbol);
        out.extend_from_slice(b",\"k\":{\"t\":");
        push_time(out, self.open_time_us, unit);
        out.extend_from_slice(b",\"T\":");
        // The last instant of the interval in `unit`, not the last microsecond truncated: in
        // milliseconds a 1m kline ends at t + 59999.
        let close = unit.from_micros(self.end_us).saturating_sub(1);
        push_u64(out, close);
        out.extend_from_slice(b",\"s\":\"");
        out.extend_from_slice(symbol.as_bytes());
        out.extend_from_slice(b"\",\"i\":\"");
        out.extend_from_slice(self.interval.as_str().as_bytes());
        out.extend_from_slice(b"\",\"f\":");
        push_i64(out, self.first_id);
        out.extend_from_slice(b",\"L\":");
        push_i64(out, self.last_id);
        out.extend_from_slice(b",\"o\":");
        push_e8_str(out, self.open_e8);
        out.extend_from_slice(b",\"c\":");
        push_e8_str(out, self.close_e8);
        out.extend_from_slice(b",\"h\":");
        push_e8_str(out, self.high_e8);
        out.extend_from_slice(b",\"l\":");
        push_e8_str(out, self.low_e8);
        out.extend_from_slice(b",\"v\":");
        push_e8_str(out, self.volume_e8);
        out.extend_from_slice(b",\"n\":");
        push_u64(out, self.count);
        out.extend_from_slice(if self.closed {
            b",\"x\":true,\"q\":"
        } else {
            b",\"x\":false,\"q\":"
        });
        push_e8_str(out, self.quote_volume_e8());
        out.extend_from_slice(b",\"V\":");
        push_e8_str(out, self.taker_buy_volume_e8);
        out.extend_from_slice(b",\"Q\":");
        push_e8_str(out, self.taker_buy_quote_volume_e8());
        out.extend_from_slice(b",\"B\":\"0\"}}");
    }
}

/// The kline currently open for one symbol and interval, plus the closed ones not yet handed out.
///
/// Per push tick the caller does:
/// ```text
/// builder.roll(now);
/// while let Some(closed) = builder.pop_closed() { closed.write(..) }   // "x":true, once each
/// builder.write(..)                                                    // the open kline
/// ```
///
/// It also keeps the last [`history`](Self::history) closed klines for `/api/v3/klines`.
#[derive(Serialize, Deserialize)]
pub struct KlineBuilder {
    current: Kline,
    closed: VecDeque<Kline>,
    dropped: u64,
    /// The time zone intervals open and close in, in µs east of UTC (0, or UTC+8 for the
    /// `@+08:00` streams).
    offset_us: i64,
    /// The newest closed klines, oldest first, at most `history_cap` of them.
    history: VecDeque<Kline>,
    history_cap: usize,
}

impl KlineBuilder {
    /// Opens the kline containing `start_us`, priced at `reference_price_e8` until a trade.
    pub fn new(interval: KlineInterval, start_us: u64, reference_price_e8: u64) -> Self {
        Self::in_zone(interval, 0, start_us, reference_price_e8)
    }

    /// Like [`new`](Self::new), with intervals opening in the zone `offset_us` east of UTC.
    pub fn in_zone(
        interval: KlineInterval,
        offset_us: i64,
        start_us: u64,
        reference_price_e8: u64,
    ) -> Self {
        let open = interval.align(start_us, offset_us);
        KlineBuilder {
            current: Kline::empty(
                interval,
                open,
                interval.next_open(open, offset_us),
                reference_price_e8,
            ),
            closed: VecDeque::with_capacity(MAX_CLOSED),
            dropped: 0,
            offset_us,
            history: VecDeque::new(),
            history_cap: 0,
        }
    }

    /// Keeps at most `cap` closed klines for [`history`](Self::history), dropping the oldest
    /// beyond it now and from then on.
    pub fn set_history_cap(&mut self, cap: usize) {
        self.history_cap = cap;
        while self.history.len() > cap {
            self.history.pop_front();
        }
    }

    /// The kept closed klines, oldest first, then the open one: what `/api/v3/klines` serves.
    pub fn history(&self) -> impl DoubleEndedIterator<Item = &Kline> + '_ {
        self.history.iter().chain(std::iter::once(&self.current))
    }

    pub fn offset_us(&self) -> i64 {
        self.offset_us
    }

    /// Counts one trade, first closing the open kline if the trade is past its end.
    ///
    /// A trade stamped before the open kline (a clock stepping back) counts toward the open kline
    /// rather than reopening one already published as closed.
    pub fn record(&mut self, trade: &TradePrint) {
        self.roll(trade.time_us);
        self.current.add(trade);
    }

    /// Closes the open kline if `now_us` is past its end, queueing it and any empty klines for
    /// the intervals skipped since, then opens the kline containing `now_us`.
    ///
    /// Returns true when closed klines are waiting for [`pop_closed`](Self::pop_closed). Work is
    /// bounded: after a gap of more than a queue's worth of intervals the oldest empty klines
    /// are skipped rather than generated (counted in [`dropped_closed`](Self::dropped_closed)).
    pub fn roll(&mut self, now_us: u64) -> bool {
        let interval = self.current.interval;
        let offset = self.offset_us;
        let target = interval.align(now_us, offset);
        if target > self.current.open_time_us {
            let mut done = self.current;
            done.closed = true;
            self.queue_closed(done);

            let price = done.close_e8;
            let mut open = done.end_us;
            if let Some(step) = interval.fixed_micros() {
                // Both ends are aligned, so the gap is a whole number of intervals.
                let gap = (target - done.open_time_us) / step - 1;
                let room = (MAX_CLOSED - self.closed.len()) as u64;
                let skipped = gap.saturating_sub(room);
                self.dropped = self.dropped.saturating_add(skipped);
                open = target - (gap - skipped) * step;
            }
            // Months are few: a long gap of them is walked, and the queue drops the oldest.
            while open < target {
                let end = interval.next_open(open, offset);
                let mut empty = Kline::empty(interval, open, end, price);
                empty.closed = true;
                self.queue_closed(empty);
                open = end;
            }
            self.current =
                Kline::empty(interval, target, interval.next_open(target, offset), price);
        }
        !self.closed.is_empty()
    }

    /// The oldest closed kline not yet handed out; each is returned exactly once.
    pub fn pop_closed(&mut self) -> Option<Kline> {
        self.closed.pop_front()
    }

    /// The open kline.
    pub fn current(&self) -> &Kline {
        &self.current
    }

    /// Appends the `kline` event for the open kline (`"x":false`). Call [`roll`](Self::roll)
    /// first so it is the kline containing `event_us`.
    pub fn write(&self, out: &mut Vec<u8>, symbol: &str, event_us: u64, unit: TimeUnit) {
        self.current.write(out, symbol, event_us, unit);
    }

    /// Closed klines lost because the caller did not drain them in time, or empty klines skipped
    /// across a long gap.
    pub fn dropped_closed(&self) -> u64 {
        self.dropped
    }

    fn queue_closed(&mut self, kline: Kline) {
        if self.history_cap > 0 {
            if self.history.len() >= self.history_cap {
                self.history.pop_front();
            }
            self.history.push_back(kline);
        }
        if self.closed.len() >= MAX_CLOSED {
            self.closed.pop_front();
            self.dropped = self.dropped.saturating_add(1);
        }
        self.closed.push_back(kline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decimal::SCALE as E8;

    const SEC: u64 = 1_000_000;
    const MIN: u64 = 60 * SEC;
    /// 2023-01-01T00:00:00Z, a round minute and hour.
    const T0: u64 = 1_672_531_200 * SEC;

    fn trade(
        id: u64,
        price_e8: u64,
        qty_e8: u64,
        time_us: u64,
        buyer_is_maker: bool,
    ) -> TradePrint {
        TradePrint {
            id,
            price_e8,
            qty_e8,
            time_us,
            buyer_is_maker,
        }
    }

    fn render(kline: &Kline, event_us: u64, unit: TimeUnit) -> String {
        let mut out = Vec::new();
        kline.write(&mut out, "BNBBTC", event_us, unit);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn intervals_round_trip() {
        for interval in KlineInterval::ALL {
            assert_eq!(KlineInterval::parse(interval.as_str()), Some(interval));
        }
        assert_eq!(KlineInterval::parse("1M"), Some(KlineInterval::Mo1));
        assert_eq!(KlineInterval::parse("1mo"), None);
        assert_eq!(KlineInterval::parse(""), None);
        assert_eq!(KlineInterval::M15.fixed_micros(), Some(900 * SEC));
        assert_eq!(KlineInterval::H1.fixed_micros(), Some(3600 * SEC));
        assert_eq!(KlineInterval::Mo1.fixed_micros(), None);
        assert_eq!(KlineInterval::S1.push_period_us(), SEC);
        assert_eq!(KlineInterval::M5.push_period_us(), 2 * SEC);
    }

    /// Weeks open on Monday, months on the 1st, and `@+08:00` moves only the intervals an
    /// 8-hour shift does not divide; times stay UTC.
    #[test]
    fn calendar_alignment_in_utc_and_utc8() {
        const DAY: u64 = 86_400 * SEC;
        const H8: i64 = crate::protocol::stream::UTC8_OFFSET_US;
        // T0 is Sunday 2023-01-01 00:00 UTC; + 10 days + 5 h is Wednesday the 11th, 05:00.
        let t = T0 + 10 * DAY + 5 * 3600 * SEC;
        assert_eq!(KlineInterval::D1.align(t, 0), T0 + 10 * DAY);
        assert_eq!(
            KlineInterval::W1.align(t, 0),
            T0 + 8 * DAY,
            "Monday the 9th"
        );
        assert_eq!(KlineInterval::Mo1.align(t, 0), T0);
        assert_eq!(KlineInterval::Mo1.next_open(T0, 0), T0 + 31 * DAY);
        // February 2024 has 29 days.
        let feb_2024 = 1_706_745_600 * SEC;
        assert_eq!(
            KlineInterval::Mo1.next_open(feb_2024, 0),
            feb_2024 + 29 * DAY
        );
        // In UTC+8 the day opens at 16:00 UTC the day before.
        assert_eq!(
            KlineInterval::D1.align(t, H8),
            T0 + 9 * DAY + 16 * 3600 * SEC
        );
        assert_eq!(
            KlineInterval::Mo1.align(T0 + 20 * 3600 * SEC, H8),
            T0 - 8 * 3600 * SEC,
            "January 1st 00:00 UTC+8 is December 31st 16:00 UTC"
        );
        for interval in KlineInterval::ALL {
            let neutral = interval.offset_neutral(H8);
            let moved = interval.align(t, H8) != interval.align(t, 0);
            assert!(!(neutral && moved), "{interval:?}");
        }
        let moved: Vec<_> = KlineInterval::ALL
            .into_iter()
            .filter(|i| !i.offset_neutral(H8))
            .map(KlineInterval::as_str)
            .collect();
        assert_eq!(moved, ["6h", "12h", "1d", "3d", "1w", "1M"]);
    }

    #[test]
    fn history_keeps_the_newest_closed_klines_then_the_open_one() {
        let mut b = KlineBuilder::new(KlineInterval::S1, T0, E8);
        b.set_history_cap(3);
        for second in 0..10 {
            b.record(&trade(second, E8, E8, T0 + second * SEC, false));
        }
        let opens: Vec<u64> = b.history().map(|k| (k.open_time_us - T0) / SEC).collect();
        assert_eq!(opens, [6, 7, 8, 9]);
        assert!(b.history().take(3).all(|k| k.closed));
        b.set_history_cap(1);
        assert_eq!(b.history().count(), 2);
    }

    #[test]
    fn sums_a_known_trade_sequence() {
        let mut b = KlineBuilder::new(KlineInterval::M1, T0 + 5 * SEC, 9 * E8);
        b.record(&trade(100, 2 * E8, 3 * E8, T0 + 10 * SEC, false)); // taker buy, quote 6
        b.record(&trade(101, 5 * E8 / 2, E8, T0 + 20 * SEC, true)); // taker sell, quote 2.5
        b.record(&trade(102, 3 * E8 / 2, 2 * E8, T0 + 30 * SEC, false)); // taker buy, quote 3
        assert!(!b.roll(T0 + 59 * SEC + 999_999));
        let k = b.current();
        assert_eq!(
            (k.open_e8, k.high_e8, k.low_e8, k.close_e8),
            (2 * E8, 5 * E8 / 2, 3 * E8 / 2, 3 * E8 / 2)
        );
        assert_eq!((k.first_id, k.last_id, k.count), (100, 102, 3));
        assert_eq!((k.volume_e8, k.quote_volume_e8()), (6 * E8, 23 * E8 / 2));
        assert_eq!(
            (k.taker_buy_volume_e8, k.taker_buy_quote_volume_e8()),
            (5 * E8, 9 * E8)
        );

        let mut out = Vec::new();
        b.write(
            &mut out,
            "BNBBTC",
            T0 + 31 * SEC + 123,
            TimeUnit::Millisecond,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"{"e":"kline","E":1672531231000,"s":"BNBBTC","k":{"t":1672531200000,"#,
                r#""T":1672531259999,"s":"BNBBTC","i":"1m","f":100,"L":102,"o":"2.00000000","#,
                r#""c":"1.50000000","h":"2.50000000","l":"1.50000000","v":"6.00000000","n":3,"#,
                r#""x":false,"q":"11.50000000","V":"5.00000000","Q":"9.00000000","B":"0"}}"#
            )
        );
    }

    #[test]
    fn time_fields_follow_the_unit() {
        let mut b = KlineBuilder::new(KlineInterval::S1, T0 + 1_234_567, E8);
        b.record(&trade(1, E8, E8, T0 + 1_500_000, false));
        let k = b.current();
        assert_eq!(
            (k.open_time_us, k.close_time_us()),
            (T0 + SEC, T0 + 2 * SEC - 1)
        );
        let ms = render(k, T0 + 1_600_789, TimeUnit::Millisecond);
        assert!(
            ms.starts_with(r#"{"e":"kline","E":1672531201600,"s":"BNBBTC","k":{"t":1672531201000,"T":1672531201999,"#),
            "{ms}"
        );
        let us = render(k, T0 + 1_600_789, TimeUnit::Microsecond);
        assert!(
            us.starts_with(concat!(
                r#"{"e":"kline","E":1672531201600789,"s":"BNBBTC","k":{"t":1672531201000000,"#,
                r#""T":1672531201999999,"s":"BNBBTC","i":"1s","#
            )),
            "{us}"
        );
    }

    #[test]
    fn rolls_over_gaps_into_aligned_empty_klines() {
        let mut b = KlineBuilder::new(KlineInterval::M1, T0, 9 * E8);
        b.record(&trade(1, 10 * E8, E8, T0 + 5 * SEC, false));
        b.record(&trade(2, 11 * E8, E8, T0 + 50 * SEC, true));
        // Next trade three minutes later: minute 0 closes, minutes 1 and 2 close empty.
        b.record(&trade(3, 12 * E8, 2 * E8, T0 + 3 * MIN + 10 * SEC, false));
        assert!(b.roll(T0 + 3 * MIN + 11 * SEC));

        let first = b.pop_closed().unwrap();
        assert!(first.closed);
        assert_eq!(
            (first.open_time_us, first.count, first.close_e8),
            (T0, 2, 11 * E8)
        );
        for minute in 1..3 {
            let empty = b.pop_closed().unwrap();
            assert_eq!(empty, {
                let mut k = Kline::empty(
                    KlineInterval::M1,
                    T0 + minute * MIN,
                    T0 + (minute + 1) * MIN,
                    11 * E8,
                );
                k.closed = true;
                k
            });
        }
        assert_eq!(b.pop_closed(), None, "each closed kline is handed out once");
        assert!(!b.roll(T0 + 3 * MIN + 12 * SEC));

        let empty = {
            let mut k = Kline::empty(KlineInterval::M1, T0 + MIN, T0 + 2 * MIN, 11 * E8);
            k.closed = true;
            k
        };
        assert_eq!(
            render(&empty, T0 + 3 * MIN, TimeUnit::Millisecond),
            concat!(
                r#"{"e":"kline","E":1672531380000,"s":"BNBBTC","k":{"t":1672531260000,"#,
                r#""T":1672531319999,"s":"BNBBTC","i":"1m","f":-1,"L":-1,"o":"11.00000000","#,
                r#""c":"11.00000000","h":"11.00000000","l":"11.00000000","v":"0.00000000","n":0,"#,
                r#""x":true,"q":"0.00000000","V":"0.00000000","Q":"0.00000000","B":"0"}}"#
            )
        );

        let k = b.current();
        assert_eq!(
            (k.open_time_us, k.first_id, k.open_e8, k.close_e8),
            (T0 + 3 * MIN, 3, 12 * E8, 12 * E8)
        );
        assert_eq!(
            (k.volume_e8, k.taker_buy_volume_e8, k.closed),
            (2 * E8, 2 * E8, false)
        );
    }

    #[test]
    fn quiet_time_closes_empty_klines_at_the_previous_close() {
        let mut b = KlineBuilder::new(KlineInterval::S1, T0 + 300_000, 7 * E8);
        assert!(!b.roll(T0 + 999_999));
        assert!(b.roll(T0 + SEC));
        let closed = b.pop_closed().unwrap();
        assert_eq!(
            (
                closed.open_time_us,
                closed.open_e8,
                closed.first_id,
                closed.closed
            ),
            (T0, 7 * E8, -1, true)
        );
        assert_eq!(b.current().open_time_us, T0 + SEC);
        assert_eq!(b.dropped_closed(), 0);
    }

    #[test]
    fn long_gaps_are_bounded_and_keep_real_klines() {
        let mut b = KlineBuilder::new(KlineInterval::S1, T0, E8);
        b.record(&trade(1, 2 * E8, E8, T0, false));
        assert!(b.roll(T0 + 1_000_000 * SEC));
        let real = b.pop_closed().unwrap();
        assert_eq!((real.open_time_us, real.count), (T0, 1));
        let mut expected_open = T0 + (1_000_000 - (MAX_CLOSED as u64 - 1)) * SEC;
        while let Some(empty) = b.pop_closed() {
            assert_eq!(
                (empty.open_time_us, empty.count, empty.close_e8),
                (expected_open, 0, 2 * E8)
            );
            expected_open += SEC;
        }
        assert_eq!(
            expected_open,
            T0 + 1_000_000 * SEC,
            "the empties run up to the open kline"
        );
        assert_eq!(b.current().open_time_us, T0 + 1_000_000 * SEC);
        assert_eq!(b.dropped_closed(), 1_000_000 - MAX_CLOSED as u64);
    }

    #[test]
    fn an_undrained_queue_stays_bounded() {
        let mut b = KlineBuilder::new(KlineInterval::S1, 0, E8);
        for second in 1..=100 {
            b.record(&trade(second, E8, E8, second * SEC, false));
        }
        assert_eq!(b.closed.len(), MAX_CLOSED);
        assert_eq!(b.dropped_closed(), 100 - MAX_CLOSED as u64);
        assert_eq!(
            b.pop_closed().unwrap().open_time_us,
            (100 - MAX_CLOSED as u64) * SEC
        );
    }

    #[test]
    fn late_trades_join_the_open_kline() {
        let mut b = KlineBuilder::new(KlineInterval::M1, T0 + MIN, E8);
        b.record(&trade(5, 3 * E8, E8, T0 + 30 * SEC, true));
        assert!(!b.roll(T0 + MIN));
        let k = b.current();
        assert_eq!(
            (k.open_time_us, k.count, k.close_e8, k.taker_buy_volume_e8),
            (T0 + MIN, 1, 3 * E8, 0)
        );
    }

    #[test]
    fn survives_extreme_times() {
        let mut b = KlineBuilder::new(KlineInterval::H1, u64::MAX, 0);
        b.record(&trade(u64::MAX, u64::MAX, u64::MAX, u64::MAX, false));
        b.record(&trade(0, 0, u64::MAX, 0, false));
        assert!(!b.roll(u64::MAX));
        let k = *b.current();
        assert_eq!(k.close_time_us(), u64::MAX - 1);
        let out = render(&k, u64::MAX, TimeUnit::Microsecond);
        assert!(out.contains(r#""v":"184467440737.09551615""#), "{out}");
    }
}
