//! Wrapping a payload into a finished WebSocket text frame with `frame::text`.
//!
//! The hub frames each rendering once and shares the bytes with every subscriber, so this is a
//! per-event cost, not a per-subscriber one. Sizes cover the three RFC 6455 length forms: a
//! small event (100 B, 7-bit length), a typical snapshot (1 KiB, 16-bit length) and a large one
//! (70 KiB, 64-bit length, e.g. a deep REST-sized book); the cost is one allocation plus a copy.

use bookcast::protocol::frame;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

fn text(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame/text");
    for (label, size) in [("100B", 100), ("1KiB", 1024), ("70KiB", 70 * 1024)] {
        let payload = vec![b'x'; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(label),
            &payload,
            |b, payload| b.iter(|| frame::text(black_box(payload))),
        );
    }
    group.finish();
}

criterion_group!(benches, text);
criterion_main!(benches);
