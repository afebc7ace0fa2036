//! The engine's per-update work: one `MarketSim::step` and the `OrderBook::set` calls it is made of.
//!
//! The engine thread steps every symbol, then publishes; anything spent here is latency added to
//! every stream and a ceiling on updates per second per core. The sim is warmed up 10k steps
//! first so the book has its steady-state shape (about `depth` levels a side, thick at the touch)
//! rather than the freshly seeded one. `set` is measured near the touch, where almost all of the
//! simulated order flow lands, as pairs that leave the book unchanged so every iteration sees the
//! same book.

use bookcast::market::book::{OrderBook, Side};
use bookcast::market::feed::Feed;
use bookcast::market::sim::{MarketSim, Step};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

const WARM_UP_STEPS: usize = 10_000;

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

criterion_group!(benches, step, set);
criterion_main!(benches);
