//! The engine's per-update work: one `MarketSim::step` and the `OrderBook::set` calls it is made of,
//! and the derivation stage's share of an update with nobody subscribed (`derive/on_step`; with
//! the `resume=` history recorded, `derive/on_step_history`).
//!
//! The engine thread steps every symbol, then publishes; anything spent here is latency added to
//! every stream and a ceiling on updates per second per core. The sim is warmed up 10k steps
//! first so the book has its steady-state shape (about `depth` levels a side, thick at the touch)
//! rather than the freshly seeded one. `set` is measured near the touch, where almost all of the
//! simulated order flow lands, as pairs that leave the book unchanged so every iteration sees the
//! same book.

use bookcast::derive::{Publisher, SymbolStreams};
use bookcast::market::book::{OrderBook, Side};
use bookcast::market::feed::Feed;
use bookcast::market::sim::{MarketSim, Step};
use bookcast::protocol::json::TimeUnit;
use bookcast::protocol::stream::Topic;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

const WARM_UP_STEPS: usize = 10_000;
/// 2026-01-01T00:00:00Z.
const NOW_US: u64 = 1_767_225_600_000_000;

/// A publisher with no subscribers: what the engine's hub is for an unwatched symbol.
struct Nobody;

impl Publisher for Nobody {
    fn wants(&self, _: &Topic) -> bool {
        false
    }

    fn publish(&mut self, _: Topic, _: &mut dyn FnMut(&mut Vec<u8>, TimeUnit)) {}
}

fn warm_sim() -> MarketSim {
    let feed = Feed::embedded_default();
    let mut sim = MarketSim::new(&feed.symbols[0]);
    let mut out = Step::default();
    for _ in 0..WARM_UP_STEPS {
        sim.step(&mut out);
    }
    sim
}

fn step(c: &mut Criterion) {
    let mut sim = warm_sim();
    let mut out = Step::default();
    c.bench_function("sim/step", |b| {
        b.iter(|| {
            sim.step(&mut out);
            black_box(&out);
        })
    });
}

/// One step handed to the derivation stage, nothing rendered: applying the step's levels to the
/// stage's own book, the diff windows (flushed every 10 steps, as a 100 Hz symbol's are every
/// 100 ms), trade statistics and the bookTicker check. The simulation's step is untimed.
fn derive(c: &mut Criterion) {
    let spec = Feed::embedded_default().symbols[0].clone();
    let mut sim = warm_sim();
    let (start_book, start_id) = (sim.book().clone(), sim.last_update_id());
    let start =
        || SymbolStreams::from_snapshot(0, spec.clone(), start_book.clone(), start_id, NOW_US);
    let steps: Vec<Step> = (0..100_000)
        .map(|_| {
            let mut out = Step::default();
            sim.step(&mut out);
            out
        })
        .collect();
    // Without and with the `resume=` history (`--history`): what recording it costs per update.
    for (name, history_us) in [
        ("derive/on_step", 0),
        ("derive/on_step_history", 300_000_000),
    ] {
        let start = || {
            let mut streams = start();
            streams.set_recent_span(history_us);
            streams
        };
        let mut streams = start();
        let mut next = 0;
        c.bench_function(name, |b| {
            b.iter(|| {
                if next == steps.len() {
                    // The recorded steps ran out: start over from the book they started from.
                    streams = start();
                    next = 0;
                }
                streams.on_step(&steps[next], NOW_US, &mut Nobody);
                next += 1;
                if next % 10 == 0 {
                    streams.every_100ms(NOW_US, &mut Nobody);
                }
            })
        });
        black_box(&streams);
    }
}

fn set(c: &mut Criterion) {
    let mut book: OrderBook = warm_sim().book().clone();
    let (best_bid, best_lots) = book.best_bid().expect("a warm book has bids");
    // A level a few ticks behind the touch: where most adds, cancels and modifies land.
    let (near, near_lots) = book
        .at_or_behind(Side::Bid, best_bid - 3)
        .expect("a warm book is deep");
    let mut group = c.benchmark_group("book/set");
    group.bench_function("update_near_touch", |b| {
        let mut flip = 0;
        b.iter(|| {
            flip ^= 1;
            book.set(Side::Bid, black_box(near), near_lots + flip);
        })
    });
    // Remove + insert as one iteration (two `set` calls): cancel and re-add of a level.
    group.bench_function("remove_insert_near_touch", |b| {
        b.iter(|| {
            book.set(Side::Bid, black_box(near), 0);
            book.set(Side::Bid, black_box(near), near_lots);
        })
    });
    // Same at the best bid, which also moves the cached best (an O(log n) look-up on remove).
    group.bench_function("remove_insert_best", |b| {
        b.iter(|| {
            book.set(Side::Bid, black_box(best_bid), 0);
            book.set(Side::Bid, black_box(best_bid), best_lots);
        })
    });
    group.finish();
    black_box(&book);
}

criterion_group!(benches, step, derive, set);
criterion_main!(benches);
