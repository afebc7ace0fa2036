//! Binance payloads, rendered straight into a byte buffer.
//!
//! One function per stream payload; the hub calls each once per distinct payload (time unit),
//! never per subscriber. Books and trades are in integer ticks and lots; prices and quantities
//! are converted to 8-decimal strings here, so one price is always the same string.

use super::history::AggRecord;
use crate::market::book::{OrderBook, Side};
use crate::market::feed::SymbolSpec;
use crate::market::sim::{Step, Trade};
use crate::protocol::json::{
    self, push_e8_str, push_event_head, push_maker_tail, push_time, push_u64, TimeUnit,
};

/// A price in ticks as e8 units.
#[inline]
pub fn price(spec: &SymbolSpec, tick: u64) -> u64 {
    tick * spec.tick_e8
}

/// A quantity in lots as e8 units.
#[inline]
pub fn qty(spec: &SymbolSpec, lots: u64) -> u64 {
    lots * spec.lot_e8
}

/// `depthUpdate` covering updates `first..=step.update_id`.
pub fn write_diff(
    out: &mut Vec<u8>,
    spec: &SymbolSpec,
    step: &Step,
    first: u64,
    now_us: u64,
    unit: TimeUnit,
) {
    push_event_head(out, "depthUpdate", now_us, unit, &spec.symbol);
    out.extend_from_slice(b",\"U\":");
    push_u64(out, first);
    out.extend_from_slice(b",\"u\":");
    push_u64(out, step.update_id);
    out.extend_from_slice(b",\"b\":");
    json::push_levels(
        out,
        step.bids
            .iter()
            .map(|&(t, l)| (price(spec, t), qty(spec, l))),
    );
    out.extend_from_slice(b",\"a\":");
    json::push_levels(
        out,
        step.asks
            .iter()
            .map(|&(t, l)| (price(spec, t), qty(spec, l))),
    );
    out.push(b'}');
}

/// Levels of a side an in-band `depthSnapshot` carries at most (as `/api/v3/depth`'s limit).
pub const SNAPSHOT_LEVELS: usize = 5000;

/// `{"e":"depthSnapshot","E":..,"s":..,"lastUpdateId":..,"bids":[..],"asks":[..]}`: the first
/// event of a diff stream on a connection with `snapshot=true` (bookcast's addition, SPEC.md).
pub fn write_depth_snapshot(
    out: &mut Vec<u8>,
    spec: &SymbolSpec,
    book: &OrderBook,
    last_update_id: u64,
    now_us: u64,
    unit: TimeUnit,
) {
    push_event_head(out, "depthSnapshot", now_us, unit, &spec.symbol);
    out.push(b',');
    // The partial-depth body without its opening brace continues the object.
    let body_at = out.len();
    write_partial(out, spec, book, last_update_id, SNAPSHOT_LEVELS);
    out.remove(body_at);
}

/// `{"lastUpdateId":..,"bids":[..],"asks":[..]}`: partial depth streams and REST snapshots.
pub fn write_partial(
    out: &mut Vec<u8>,
    spec: &SymbolSpec,
    book: &OrderBook,
    last_update_id: u64,
    limit: usize,
) {
    out.extend_from_slice(b"{\"lastUpdateId\":");
    push_u64(out, last_update_id);
    out.extend_from_slice(b",\"bids\":");
    json::push_levels(
        out,
        book.top(Side::Bid)
            .take(limit)
            .map(|(t, l)| (price(spec, t), qty(spec, l))),
    );
    out.extend_from_slice(b",\"asks\":");
    json::push_levels(
        out,
        book.top(Side::Ask)
            .take(limit)
            .map(|(t, l)| (price(spec, t), qty(spec, l))),
    );
    out.push(b'}');
}

pub fn write_trade(
    out: &mut Vec<u8>,
    spec: &SymbolSpec,
    trade: &Trade,
    now_us: u64,
    unit: TimeUnit,
) {
    push_event_head(out, "trade", now_us, unit, &spec.symbol);
    out.extend_from_slice(b",\"t\":");
    push_u64(out, trade.id);
    out.extend_from_slice(b",\"p\":");
    push_e8_str(out, price(spec, trade.price_tick));
    out.extend_from_slice(b",\"q\":");
    push_e8_str(out, qty(spec, trade.qty_lots));
    out.extend_from_slice(b",\"T\":");
    push_time(out, now_us, unit);
    push_maker_tail(out, trade.buyer_is_maker);
}

/// `aggTrade` from its record: the live stream and a `resume=` catch-up render the same bytes.
pub fn write_agg_trade(out: &mut Vec<u8>, symbol: &str, agg: &AggRecord, unit: TimeUnit) {
    push_event_head(out, "aggTrade", agg.time_us, unit, symbol);
    out.extend_from_slice(b",\"a\":");
    push_u64(out, agg.id);
    out.extend_from_slice(b",\"p\":");
    push_e8_str(out, agg.price_e8);
    out.extend_from_slice(b",\"q\":");
    push_e8_str(out, agg.qty_e8);
    out.extend_from_slice(b",\"f\":");
    push_u64(out, agg.first_id);
    out.extend_from_slice(b",\"l\":");
    push_u64(out, agg.last_id);
    out.extend_from_slice(b",\"T\":");
    push_time(out, agg.time_us, unit);
    push_maker_tail(out, agg.buyer_is_maker);
}

/// `{"e":"resumeGap",..}` (bookcast's addition, SPEC.md): trade ids `from..=to` of `stream` that
/// a `resume=` can no longer send, ahead of the trades it still has.
pub fn write_resume_gap(
    out: &mut Vec<u8>,
    symbol: &str,
    stream: &str,
    from: u64,
    to: u64,
    now_us: u64,
    unit: TimeUnit,
) {
    push_event_head(out, "resumeGap", now_us, unit, symbol);
    out.extend_from_slice(b",\"stream\":\"");
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(b"\",\"from\":");
    push_u64(out, from);
    out.extend_from_slice(b",\"to\":");
    push_u64(out, to);
    out.push(b'}');
}

pub fn write_book_ticker(
    out: &mut Vec<u8>,
    symbol: &str,
    update_id: u64,
    best: ((u64, u64), (u64, u64)),
) {
    let ((bid, bid_qty), (ask, ask_qty)) = best;
    out.extend_from_slice(b"{\"u\":");
    push_u64(out, update_id);
    out.extend_from_slice(b",\"s\":\"");
    out.extend_from_slice(symbol.as_bytes());
    out.extend_from_slice(b"\",\"b\":");
    push_e8_str(out, bid);
    out.extend_from_slice(b",\"B\":");
    push_e8_str(out, bid_qty);
    out.extend_from_slice(b",\"a\":");
    push_e8_str(out, ask);
    out.extend_from_slice(b",\"A\":");
    push_e8_str(out, ask_qty);
    out.push(b'}');
}
