//! One real depthUpdate published to 1..10,000 subscribers, serialize-once vs naive, and the
//! cost of recording one metric.
//!
//! This is the server's central claim: with serialize-once, a publish renders and frames the
//! event once, sends it once to the shard, and then costs only one enqueue (outbox mutex +
//! refcount bump) per subscriber, so time per publish grows with subscribers only by that
//! enqueue; naive mode (`Hub::new(_, true, ..)`) renders and frames per subscriber. Criterion's
//! elements/s throughput is subscribers served per second, i.e. the inverse of the
//! per-subscriber cost at that size.
//!
//! Timed: `Hub::publish` (engine thread) plus the shard's side, `ShardTable::apply` and
//! `ShardTable::flush`, on this one thread. The outboxes have no socket, so the flush only
//! clears each outbox's pass mark (in the server it writes to the socket: that syscall is the
//! kernel's, measured by `benches/fanout.sh`). After every publish each outbox is drained
//! outside the timed part, so queues never grow and frames are dropped untimed.
//!
//! `metrics/*`: a counter increment and a histogram record on handles from the Prometheus
//! recorder (`bookcast::metrics::install()`, called before any hub exists, as the server does)
//! against no-op handles, i.e. what instrumenting the hot path costs per event;
//! `metrics/session/per_frame` is the whole per-delivered-frame recording (Prometheus histogram
//! plus the `!stats@1s` bucket).

use bookcast::derive::payload::write_diff;
use bookcast::fanout::hub::Hub;
use bookcast::fanout::outbox::{Outbox, QueueBound};
use bookcast::fanout::shard::{ConnId, Shape, ShardLink, ShardMsg, ShardTable};
use bookcast::market::feed::Feed;
use bookcast::market::sim::{MarketSim, Step};
use bookcast::metrics::live_stats::LiveStats;
use bookcast::metrics::{SessionMetrics, ShardMetrics};
use bookcast::protocol::json::TimeUnit;
use bookcast::protocol::stream::{Speed, StreamKind, Topic};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

const NOW_US: u64 = 1_767_225_600_000_000;
const SUBSCRIBERS: [usize; 4] = [1, 100, 1_000, 10_000];
/// Far above one frame per drain, so no outbox is ever evicted.
const BOUND: QueueBound = QueueBound {
    max_bytes: 1 << 20,
    max_frames: 1 << 10,
};
const TOPIC: Topic = Topic::Symbol {
    symbol: 0,
    kind: StreamKind::Diff(Speed::Ms0),
};

/// The engine's hub and one shard's table, driven by hand on this thread.
struct Rig {
    hub: Hub,
    table: ShardTable,
    rx: crossbeam_channel::Receiver<ShardMsg>,
}

impl Rig {
    /// Delivers what the hub sent, as the shard's drain task does in one pass.
    fn pump(&mut self) {
        while let Ok(message) = self.rx.try_recv() {
            self.table.apply(message);
        }
        self.table.flush();
    }
}

/// A hub with `n` raw-ms subscribers to the diff topic of symbol 0, on one shard.
fn hub_with(feed: &Arc<Feed>, naive: bool, n: usize) -> (Rig, Vec<Arc<Outbox>>) {
    let metrics = ShardMetrics::new(SessionMetrics::new(Arc::new(LiveStats::default())));
    let (link, rx) = ShardLink::detached();
    let mut rig = Rig {
        hub: Hub::new(feed.clone(), naive, vec![link], metrics.clone()),
        table: ShardTable::new(metrics),
        rx,
    };
    let outboxes: Vec<Arc<Outbox>> = (0..n).map(|_| Arc::new(Outbox::new(BOUND))).collect();
    for (conn, outbox) in outboxes.iter().enumerate() {
        let (ready, _) = tokio::sync::oneshot::channel();
        rig.hub.attach(
            conn as ConnId,
            0,
            outbox.clone(),
            Shape::Raw,
            TimeUnit::Millisecond,
            false,
            &[TOPIC],
            ready,
        );
        rig.pump();
    }
    (rig, outboxes)
}

/// Takes every queued frame out of every outbox and drops it; returns how many there were.
fn drain(
    outboxes: &[Arc<Outbox>],
    batch: &mut VecDeque<bookcast::fanout::outbox::Queued>,
) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    let mut frames = 0;
    let mut offset = 0;
    for outbox in outboxes {
        let _ = outbox.poll_next(&mut cx, batch, &mut offset, true);
        frames += batch.len();
        batch.clear();
    }
    frames
}

fn publish(c: &mut Criterion) {
    let feed = Arc::new(Feed::embedded_default());
    let spec = &feed.symbols[0];
    let mut sim = MarketSim::new(spec);
    let mut step = Step::default();
    for _ in 0..10_000 {
        sim.step(&mut step);
    }
    // A typical single-step delta, as the `<symbol>@depth@0ms` stream carries it.
    while step.bids.len() + step.asks.len() < 2 {
        sim.step(&mut step);
    }
    let mut sample = Vec::new();
    write_diff(
        &mut sample,
        spec,
        &step,
        step.update_id,
        NOW_US,
        TimeUnit::Millisecond,
    );
    println!("depthUpdate payload: {} bytes", sample.len());

    for (naive, mode) in [(false, "serialize_once"), (true, "naive")] {
        let mut group = c.benchmark_group(format!("publish/{mode}"));
        for n in SUBSCRIBERS {
            let (mut rig, outboxes) = hub_with(&feed, naive, n);
            let mut batch = VecDeque::new();
            let render = |out: &mut Vec<u8>, unit| {
                write_diff(out, spec, &step, step.update_id, NOW_US, unit)
            };
            rig.hub.publish(TOPIC, render);
            rig.pump();
            assert_eq!(drain(&outboxes, &mut batch), n, "one frame per subscriber");
            group.throughput(Throughput::Elements(n as u64));
            group.sample_size(if n >= 1_000 { 20 } else { 100 });
            group.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        rig.hub.publish(TOPIC, render);
                        rig.pump();
                        timed += start.elapsed();
                        drain(&outboxes, &mut batch);
                    }
                    timed
                })
            });
        }
        group.finish();
    }
}

/// Timing an empty body the way `publish` is timed: the floor included in every publish figure.
fn timer_floor(c: &mut Criterion) {
    c.bench_function("publish/timer_floor", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                timed += start.elapsed();
            }
            timed
        })
    });
}

/// Time of `iters` calls of `record`. The recorder buffers histogram samples until upkeep (every
/// few seconds in the server), so upkeep runs untimed every 4096 samples to keep the buffer at
/// its steady-state size.
fn timed_with_upkeep(iters: u64, handle: &PrometheusHandle, mut record: impl FnMut()) -> Duration {
    let mut timed = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let chunk = left.min(4096);
        let start = Instant::now();
        for _ in 0..chunk {
            record();
        }
        timed += start.elapsed();
        handle.run_upkeep();
        left -= chunk;
    }
    timed
}

fn metrics_cost(c: &mut Criterion) {
    let handle = bookcast::metrics::install();
    let counter = metrics::counter!("bookcast_frames_enqueued_total");
    let histogram = metrics::histogram!("bookcast_publish_to_socket_seconds");
    let mut group = c.benchmark_group("metrics");
    group.bench_function("counter/prometheus", |b| {
        b.iter(|| counter.increment(black_box(1)))
    });
    let noop = metrics::Counter::noop();
    group.bench_function("counter/noop", |b| b.iter(|| noop.increment(black_box(1))));
    group.bench_function("histogram/prometheus", |b| {
        b.iter_custom(|iters| {
            timed_with_upkeep(iters, &handle, || histogram.record(black_box(0.000_25)))
        })
    });
    let noop = metrics::Histogram::noop();
    group.bench_function("histogram/noop", |b| {
        b.iter(|| noop.record(black_box(0.000_25)))
    });
    // What a delivered frame really costs: the publish-to-socket sample into the Prometheus
    // histogram plus `!stats@1s`'s atomic bucket, through the session's own call.
    let live = std::sync::Arc::new(bookcast::metrics::live_stats::LiveStats::default());
    group.bench_function("live_stats/latency", |b| {
        b.iter(|| live.latency_us(black_box(250)))
    });
    let session = bookcast::metrics::SessionMetrics::new(live.clone());
    group.bench_function("session/per_frame", |b| {
        b.iter_custom(|iters| {
            timed_with_upkeep(iters, &handle, || {
                session.publish_to_socket_us(black_box(250))
            })
        })
    });
    group.finish();
}

criterion_group!(benches, timer_floor, publish, metrics_cost);

fn main() {
    // Before any handle exists (each Hub makes its own): a handle made earlier is a no-op forever.
    bookcast::metrics::install();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
