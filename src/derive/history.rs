//! What `/api/v3/trades` and `/api/v3/aggTrades` serve: each symbol's newest trades and
//! aggregates, bounded (`--trade-history`), kept by the derivation stage as it publishes them so
//! REST answers hold exactly what the streams sent.

use crate::market::feed::SymbolSpec;
use crate::market::sim::Trade;
use crate::protocol::json::{push_e8_str, push_u64};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// One trade as `/api/v3/trades` renders it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeRecord {
    pub id: u64,
    pub price_e8: u64,
    pub qty_e8: u64,
    pub time_us: u64,
    pub buyer_is_maker: bool,
}

/// One aggregate as `/api/v3/aggTrades` renders it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggRecord {
    pub id: u64,
    pub price_e8: u64,
    pub qty_e8: u64,
    pub first_id: u64,
    pub last_id: u64,
    pub time_us: u64,
    pub buyer_is_maker: bool,
}

/// A step's fills grouped as `aggTrade` groups them: consecutive fills at one price by one
/// aggressor are one aggregate.
pub fn aggregates(trades: &[Trade]) -> impl Iterator<Item = &[Trade]> {
    trades.chunk_by(|a, b| a.price_tick == b.price_tick && a.buyer_is_maker == b.buyer_is_maker)
}

impl AggRecord {
    /// The aggregate of `group`, consecutive fills at one price by one aggressor, numbered `id`.
    pub fn from_group(spec: &SymbolSpec, id: u64, group: &[Trade], time_us: u64) -> Self {
        let first = &group[0];
        AggRecord {
            id,
            price_e8: super::payload::price(spec, first.price_tick),
            qty_e8: super::payload::qty(spec, group.iter().map(|t| t.qty_lots).sum()),
            first_id: first.id,
            last_id: group[group.len() - 1].id,
            time_us,
            buyer_is_maker: first.buyer_is_maker,
        }
    }
}

/// The newest trades and aggregates of one symbol, oldest first, at most `cap` of each.
#[derive(Default, Serialize, Deserialize)]
pub struct TradeHistory {
    trades: VecDeque<TradeRecord>,
    aggs: VecDeque<AggRecord>,
    cap: usize,
}

impl TradeHistory {
    /// Keeps at most `cap` of each from now on, dropping the oldest beyond it now.
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
        keep_newest(&mut self.trades, cap);
        keep_newest(&mut self.aggs, cap);
    }

    pub fn push_trade(&mut self, trade: TradeRecord) {
        push_bounded(&mut self.trades, trade, self.cap);
    }

    pub fn push_agg(&mut self, agg: AggRecord) {
        push_bounded(&mut self.aggs, agg, self.cap);
    }

    /// The newest `limit` trades, oldest first.
    pub fn recent_trades(&self, limit: usize) -> impl Iterator<Item = &TradeRecord> {
        self.trades
            .iter()
            .skip(self.trades.len().saturating_sub(limit))
    }

    /// Aggregates as Binance selects them: from id `from_id` on, or else within
    /// `[start_us, end_us]` from the oldest on, or else the newest; at most `limit`, oldest
    /// first.
    pub fn aggs(
        &self,
        from_id: Option<u64>,
        start_us: Option<u64>,
        end_us: Option<u64>,
        limit: usize,
    ) -> Vec<&AggRecord> {
        let in_time = |a: &&AggRecord| {
            start_us.is_none_or(|s| a.time_us >= s) && end_us.is_none_or(|e| a.time_us <= e)
        };
        match (from_id, start_us) {
            (Some(from), _) => self
                .aggs
                .iter()
                .filter(|a| a.id >= from)
                .filter(in_time)
                .take(limit)
                .collect(),
            (None, Some(_)) => self.aggs.iter().filter(in_time).take(limit).collect(),
            (None, None) => {
                let mut newest: Vec<&AggRecord> =
                    self.aggs.iter().rev().filter(in_time).take(limit).collect();
                newest.reverse();
                newest
            }
        }
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, cap: usize) {
    if cap == 0 {
        return;
    }
    if queue.len() >= cap {
        queue.pop_front();
    }
    queue.push_back(item);
}

fn keep_newest<T>(queue: &mut VecDeque<T>, len: usize) {
    let excess = queue.len().saturating_sub(len);
    queue.drain(..excess);
}

/// Appends one `/api/v3/trades` entry. `quoteQty` is price × qty truncated to 8 decimals.
pub fn write_trade(out: &mut Vec<u8>, t: &TradeRecord) {
    out.extend_from_slice(b"{\"id\":");
    push_u64(out, t.id);
    out.extend_from_slice(b",\"price\":");
    push_e8_str(out, t.price_e8);
    out.extend_from_slice(b",\"qty\":");
    push_e8_str(out, t.qty_e8);
    out.extend_from_slice(b",\"quoteQty\":");
    let quote = u128::from(t.price_e8) * u128::from(t.qty_e8) / 100_000_000;
    push_e8_str(out, u64::try_from(quote).unwrap_or(u64::MAX));
    out.extend_from_slice(b",\"time\":");
    push_u64(out, t.time_us / 1000);
    out.extend_from_slice(if t.buyer_is_maker {
        b",\"isBuyerMaker\":true,\"isBestMatch\":true}"
    } else {
        b",\"isBuyerMaker\":false,\"isBestMatch\":true}"
    });
}

/// Appends one `/api/v3/aggTrades` entry.
pub fn write_agg(out: &mut Vec<u8>, a: &AggRecord) {
    out.extend_from_slice(b"{\"a\":");
    push_u64(out, a.id);
    out.extend_from_slice(b",\"p\":");
    push_e8_str(out, a.price_e8);
    out.extend_from_slice(b",\"q\":");
    push_e8_str(out, a.qty_e8);
    out.extend_from_slice(b",\"f\":");
    push_u64(out, a.first_id);
    out.extend_from_slice(b",\"l\":");
    push_u64(out, a.last_id);
    out.extend_from_slice(b",\"T\":");
    push_u64(out, a.time_us / 1000);
    out.extend_from_slice(if a.buyer_is_maker {
        b",\"m\":true,\"M\":true}"
    } else {
        b",\"m\":false,\"M\":true}"
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg(id: u64, time_us: u64) -> AggRecord {
        AggRecord {
            id,
            price_e8: 100_000_000,
            qty_e8: 50_000_000,
            first_id: id * 2,
            last_id: id * 2 + 1,
            time_us,
            buyer_is_maker: id % 2 == 0,
        }
    }

    #[test]
    fn bounded_and_selected_like_binance() {
        let mut h = TradeHistory::default();
        h.set_cap(5);
        for id in 1..=8 {
            h.push_agg(agg(id, id * 1000));
        }
        let ids = |v: Vec<&AggRecord>| v.iter().map(|a| a.id).collect::<Vec<_>>();
        assert_eq!(ids(h.aggs(None, None, None, 10)), [4, 5, 6, 7, 8]);
        assert_eq!(ids(h.aggs(None, None, None, 2)), [7, 8]);
        assert_eq!(ids(h.aggs(Some(6), None, None, 10)), [6, 7, 8]);
        assert_eq!(ids(h.aggs(None, Some(5000), Some(6000), 10)), [5, 6]);
        assert_eq!(ids(h.aggs(None, Some(5000), None, 2)), [5, 6]);
        h.set_cap(2);
        assert_eq!(ids(h.aggs(None, None, None, 10)), [7, 8]);
        let mut out = Vec::new();
        write_agg(&mut out, &agg(7, 7_123_456));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":7,"p":"1.00000000","q":"0.50000000","f":14,"l":15,"T":7123,"m":false,"M":true}"#
        );
        let mut out = Vec::new();
        let t = TradeRecord {
            id: 9,
            price_e8: 300_000_001,
            qty_e8: 200_000_000,
            time_us: 1_500,
            buyer_is_maker: true,
        };
        write_trade(&mut out, &t);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"id":9,"price":"3.00000001","qty":"2.00000000","quoteQty":"6.00000002","time":1,"isBuyerMaker":true,"isBestMatch":true}"#
        );
    }
}
