//! The numbers behind the `!stats@1s` stream, which the `/dashboard` page draws.
//!
//! Prometheus histograms live inside the exporter and can only be read back by rendering the
//! whole exposition, so the live stream keeps its own few numbers: atomics that connection
//! writers add to with relaxed `fetch_add`s (no locks, no allocation), and a log-linear latency
//! histogram of publish-to-socket times. Once a second the engine thread, the only reader,
//! diffs them against the previous second in a [`StatsWindow`] and publishes the result.

use crate::protocol::json::{push_time, push_u64, TimeUnit};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Exact buckets below this many microseconds; above, 8 buckets per power of two.
const LINEAR: u64 = 16;
const SUB_BUCKETS: u64 = 8;
/// Covers up to 2^32 µs (over an hour); anything longer lands in the last bucket.
const BUCKETS: usize = (LINEAR + (32 - 4) * SUB_BUCKETS) as usize;

/// Counters shared by every connection of one server.
pub struct LiveStats {
    connections: AtomicI64,
    frames: AtomicU64,
    bytes: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Default for LiveStats {
    fn default() -> Self {
        LiveStats {
            connections: AtomicI64::new(0),
            frames: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl LiveStats {
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Relaxed);
    }

    /// One socket write of `frames` frames and `bytes` bytes.
    pub fn delivered(&self, frames: u64, bytes: u64) {
        self.frames.fetch_add(frames, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }

    /// One frame's publish-to-socket time.
    pub fn latency_us(&self, micros: u64) {
        self.latency[bucket_of(micros)].fetch_add(1, Relaxed);
    }
}

/// The bucket holding `micros`: exact below 16 µs, then within 12.5% of the value.
fn bucket_of(micros: u64) -> usize {
    if micros < LINEAR {
        return micros as usize;
    }
    let log2 = u64::from(63 - micros.leading_zeros());
    let sub = (micros >> (log2 - 3)) & (SUB_BUCKETS - 1);
    let index = LINEAR + (log2 - 4) * SUB_BUCKETS + sub;
    (index as usize).min(BUCKETS - 1)
}

/// The largest value a bucket holds, which is what percentiles report (never understating).
fn bucket_max(index: usize) -> u64 {
    let index = index as u64;
    if index < LINEAR {
        return index;
    }
    let log2 = (index - LINEAR) / SUB_BUCKETS + 4;
    let sub = (index - LINEAR) % SUB_BUCKETS;
    ((SUB_BUCKETS + sub + 1) << (log2 - 3)) - 1
}

/// Publish-to-socket percentiles over one window, in microseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

fn percentiles(counts: &[u64; BUCKETS]) -> Percentiles {
    let count: u64 = counts.iter().sum();
    if count == 0 {
        return Percentiles::default();
    }
    // The smallest bucket whose cumulative count reaches `q` of the total (rounded up, so
    // p99.9 of 10 samples is the largest, not the ninth).
    let at = |q_per_mille: u64| {
        let rank = (count * q_per_mille).div_ceil(1000).max(1);
        let mut seen = 0;
        for (index, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_max(index);
            }
        }
        bucket_max(BUCKETS - 1)
    };
    Percentiles {
        count,
        p50: at(500),
        p99: at(990),
        p999: at(999),
        max: at(1000),
    }
}

/// One second of the server, as `!stats@1s` reports it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsSample {
    pub connections: i64,
    pub engine_updates_per_s: u64,
    pub frames_per_s: u64,
    pub bytes_per_s: u64,
    pub slow_consumer_disconnects: u64,
    pub slow_consumer_disconnects_per_s: u64,
    pub latency_us: Percentiles,
}

/// The engine's view of [`LiveStats`]: the previous second's totals, to turn totals into rates.
pub struct StatsWindow {
    at: Instant,
    frames: u64,
    bytes: u64,
    engine_updates: u64,
    slow_consumers: u64,
    latency: [u64; BUCKETS],
}

impl StatsWindow {
    pub fn new(now: Instant) -> Self {
        StatsWindow {
            at: now,
            frames: 0,
            bytes: 0,
            engine_updates: 0,
            slow_consumers: 0,
            latency: [0; BUCKETS],
        }
    }

    /// Reads the counters and returns what happened since the last call. `engine_updates` and
    /// `slow_consumers` are running totals kept by the engine thread itself.
    pub fn sample(
        &mut self,
        live: &LiveStats,
        engine_updates: u64,
        slow_consumers: u64,
        now: Instant,
    ) -> StatsSample {
        let elapsed_us = now.duration_since(self.at).as_micros().max(1) as u64;
        let per_s = |delta: u64| (u128::from(delta) * 1_000_000 / u128::from(elapsed_us)) as u64;
        let frames = live.frames.load(Relaxed);
        let bytes = live.bytes.load(Relaxed);
        let mut window = [0u64; BUCKETS];
        for (index, bucket) in live.latency.iter().enumerate() {
            let total = bucket.load(Relaxed);
            window[index] = total.wrapping_sub(self.latency[index]);
            self.latency[index] = total;
        }
        let sample = StatsSample {
            connections: live.connections.load(Relaxed),
            engine_updates_per_s: per_s(engine_updates.wrapping_sub(self.engine_updates)),
            frames_per_s: per_s(frames.wrapping_sub(self.frames)),
            bytes_per_s: per_s(bytes.wrapping_sub(self.bytes)),
            slow_consumer_disconnects: slow_consumers,
            slow_consumer_disconnects_per_s: per_s(
                slow_consumers.wrapping_sub(self.slow_consumers),
            ),
            latency_us: percentiles(&window),
        };
        self.at = now;
        self.frames = frames;
        self.bytes = bytes;
        self.engine_updates = engine_updates;
        self.slow_consumers = slow_consumers;
        sample
    }
}

/// `{"e":"serverStats","E":..,"connections":..,...,"latencyUs":{"p50":..,...}}`.
pub fn write_stats(out: &mut Vec<u8>, sample: &StatsSample, now_us: u64, unit: TimeUnit) {
    // Server-wide, so no `"s"` symbol field.
    out.extend_from_slice(b"{\"e\":\"serverStats\",\"E\":");
    push_time(out, now_us, unit);
    let fields: [(&str, u64); 6] = [
        ("connections", sample.connections.max(0) as u64),
        ("engineUpdatesPerSec", sample.engine_updates_per_s),
        ("framesPerSec", sample.frames_per_s),
        ("bytesPerSec", sample.bytes_per_s),
        ("slowConsumerDisconnects", sample.slow_consumer_disconnects),
        (
            "slowConsumerDisconnectsPerSec",
            sample.slow_consumer_disconnects_per_s,
        ),
    ];
    for (name, value) in fields {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        push_u64(out, value);
    }
    let latency = &sample.latency_us;
    out.extend_from_slice(b",\"latencyUs\":{\"count\":");
    push_u64(out, latency.count);
    for (name, value) in [
        ("p50", latency.p50),
        ("p99", latency.p99),
        ("p999", latency.p999),
        ("max", latency.max),
    ] {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        push_u64(out, value);
    }
    out.extend_from_slice(b"}}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        for micros in 0..1_000_000u64 {
            let index = bucket_of(micros);
            assert!(micros <= bucket_max(index), "{micros} above its bucket");
            if index > 0 {
                assert!(
                    micros > bucket_max(index - 1),
                    "{micros} fits the bucket before"
                );
            }
            assert!(
                bucket_max(index) - micros <= micros / 8,
                "{micros}: bucket too wide"
            );
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn a_window_reports_only_its_own_second() {
        let live = LiveStats::default();
        let start = Instant::now();
        let mut window = StatsWindow::new(start);
        for micros in 1..=1000 {
            live.latency_us(micros);
        }
        live.delivered(1000, 50_000);
        live.connection_opened();
        let first = window.sample(&live, 500, 0, start + std::time::Duration::from_secs(1));
        assert_eq!(first.frames_per_s, 1000);
        assert_eq!(first.bytes_per_s, 50_000);
        assert_eq!(first.engine_updates_per_s, 500);
        assert_eq!(first.connections, 1);
        assert_eq!(first.latency_us.count, 1000);
        assert!((500..=563).contains(&first.latency_us.p50), "{first:?}");
        assert!((990..=1023).contains(&first.latency_us.p99), "{first:?}");
        assert!(first.latency_us.max >= 1000);

        live.latency_us(7);
        live.delivered(2, 100);
        let second = window.sample(&live, 900, 3, start + std::time::Duration::from_secs(3));
        assert_eq!(second.frames_per_s, 1);
        assert_eq!(second.engine_updates_per_s, 200);
        assert_eq!(second.slow_consumer_disconnects, 3);
        assert_eq!(
            second.latency_us,
            Percentiles {
                count: 1,
                p50: 7,
                p99: 7,
                p999: 7,
                max: 7
            }
        );
    }

    #[test]
    fn the_payload_is_json_without_a_symbol() {
        let sample = StatsSample {
            connections: 3,
            latency_us: Percentiles {
                count: 2,
                p50: 10,
                p99: 20,
                p999: 20,
                max: 20,
            },
            ..StatsSample::default()
        };
        let mut out = Vec::new();
        write_stats(
            &mut out,
            &sample,
            1_700_000_000_123_456,
            TimeUnit::Millisecond,
        );
        let value: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(value["e"], "serverStats");
        assert_eq!(value["E"], 1_700_000_000_123u64);
        assert!(value.get("s").is_none());
        assert_eq!(value["connections"], 3);
        assert_eq!(value["latencyUs"]["p99"], 20);
    }
}
