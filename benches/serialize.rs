//! Rendering one payload of every stream kind, in ms and in µs, into a reused buffer.
//!
//! With serialize-once fan-out this is the per-event cost the hub pays once per time unit (not
//! per subscriber), so it bounds how many events per second one engine thread can publish. The
//! inputs come from a warmed-up simulation of the default feed's first symbol, so level counts,
//! prices and sizes are the ones the server really renders. Throughput is reported in payload
//! bytes.

use bookcast::derive::history::AggRecord;
use bookcast::derive::payload::{
    self, write_agg_trade, write_book_ticker, write_diff, write_partial,
};
use bookcast::derive::stats::kline::{KlineBuilder, KlineInterval};
use bookcast::derive::stats::rolling::{self, Rolling24h, TickerStats};
use bookcast::derive::stats::TradePrint;
use bookcast::market::book::Side;
use bookcast::market::feed::{Feed, SymbolSpec};
use bookcast::market::sim::{MarketSim, Step};
use bookcast::protocol::json::TimeUnit;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use std::hint::black_box;

/// 2026-01-01T00:00:00Z: a realistic 16-digit µs / 13-digit ms timestamp.
const NOW_US: u64 = 1_767_225_600_000_000;
const MINUTE_US: u64 = 60_000_000;
const DAY_US: u64 = 24 * 60 * MINUTE_US;
/// The deepest partial-depth stream (`depth20`).
const PARTIAL_LEVELS: usize = 20;

/// Benches `render` as `name/ms` and `name/us` (just `name/any` for payloads without time
/// fields, which the hub renders once for both units), with the rendered size as throughput.
fn bench_units(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    time_fields: bool,
    mut render: impl FnMut(&mut Vec<u8>, TimeUnit),
) {
    let mut out = Vec::with_capacity(4096);
    let units: &[(TimeUnit, &str)] = if time_fields {
        &[(TimeUnit::Millisecond, "ms"), (TimeUnit::Microsecond, "us")]
    } else {
        &[(TimeUnit::Millisecond, "any")]
    };
    for &(unit, label) in units {
        out.clear();
        render(&mut out, unit);
        group.throughput(Throughput::Bytes(out.len() as u64));
        group.bench_function(format!("{name}/{label}"), |b| {
            b.iter(|| {
                out.clear();
                render(&mut out, black_box(unit));
                black_box(&out);
            })
        });
    }
}

fn prints<'a>(
    spec: &'a SymbolSpec,
    step: &'a Step,
    time_us: u64,
) -> impl Iterator<Item = TradePrint> + 'a {
    step.trades.iter().map(move |t| TradePrint {
        id: t.id,
        price_e8: payload::price(spec, t.price_tick),
        qty_e8: payload::qty(spec, t.qty_lots),
        time_us,
        buyer_is_maker: t.buyer_is_maker,
    })
}

fn serialize(c: &mut Criterion) {
    let feed = Feed::embedded_default();
    let spec = &feed.symbols[0];
    let reference_e8 = payload::price(spec, spec.start_price_ticks);
    let mut rolling = Rolling24h::new(DAY_US, MINUTE_US, NOW_US - DAY_US, reference_e8);
    let mut kline = KlineBuilder::new(KlineInterval::M1, NOW_US - 30_000_000, reference_e8);
    let mut sim = MarketSim::new(spec);
    let mut step = Step::default();
    // Warm up, spreading the trades over the last day so the ticker has a full window; the
    // last 100 steps also feed the open 1m kline.
    const WARM_UP: u64 = 10_000;
    for n in 0..WARM_UP {
        sim.step(&mut step);
        let time_us = NOW_US - DAY_US + (n + 1) * (DAY_US / WARM_UP);
        for print in prints(spec, &step, time_us) {
            rolling.record(&print);
            if n >= WARM_UP - 100 {
                kline.record(&print);
            }
        }
    }
    // A depth diff as it comes (one engine step), and a multi-level aggressive trade.
    let diff = step.clone();
    while step.trades.len() < 2 {
        sim.step(&mut step);
    }
    let trades = step.trades.clone();
    let book = sim.book();
    let stats: TickerStats = rolling.stats(NOW_US);
    kline.roll(NOW_US);
    let best = |side| {
        let (tick, lots) = book.best(side).expect("a warm book has both sides");
        (payload::price(spec, tick), payload::qty(spec, lots))
    };
    let (bid, ask) = (best(Side::Bid), best(Side::Ask));
    let symbol = spec.symbol.as_str();

    let agg = AggRecord::from_group(spec, 42, &trades, NOW_US);
    let mut group = c.benchmark_group("serialize");
    bench_units(&mut group, "diff", true, |out, unit| {
        write_diff(out, spec, &diff, diff.update_id, NOW_US, unit)
    });
    bench_units(&mut group, "partial20", false, |out, _| {
        write_partial(out, spec, book, sim.last_update_id(), PARTIAL_LEVELS)
    });
    bench_units(&mut group, "trade", true, |out, unit| {
        payload::write_trade(out, spec, &trades[0], NOW_US, unit)
    });
    bench_units(&mut group, "agg_trade", true, |out, unit| {
        write_agg_trade(out, symbol, &agg, unit)
    });
    bench_units(&mut group, "book_ticker", false, |out, _| {
        write_book_ticker(out, symbol, sim.last_update_id(), (bid, ask))
    });
    bench_units(&mut group, "ticker", true, |out, unit| {
        rolling::write_ticker(out, symbol, &stats, bid, ask, NOW_US, unit)
    });
    bench_units(&mut group, "mini_ticker", true, |out, unit| {
        rolling::write_mini_ticker(out, symbol, &stats, NOW_US, unit)
    });
    bench_units(&mut group, "kline", true, |out, unit| {
        kline.write(out, symbol, NOW_US, unit)
    });
    group.finish();
}

criterion_group!(benches, serialize);
criterion_main!(benches);
