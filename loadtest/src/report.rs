//! The run's report: what `--json` writes and what is printed at the end.

use crate::stats::{histogram, ShardedHistogram, SlowClose, Stats};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;

#[derive(Serialize, Deserialize, Clone, Copy, Default, Debug)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }

    fn merged(sharded: &ShardedHistogram) -> (Self, Histogram<u64>) {
        let mut h = histogram();
        sharded.merge_into(&mut h, false);
        (Percentiles::of(&h), h)
    }
}

/// One second of the run, for charts.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Sample {
    pub t_s: f64,
    pub connected: u64,
    pub events_per_s: f64,
    pub gaps: u64,
    pub latency_us: Percentiles,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct MinMedianMax {
    pub min: u64,
    pub median: u64,
    pub max: u64,
}

impl MinMedianMax {
    /// Of values sorted in ascending order (all zero when there are none).
    pub fn of_sorted(sorted: &[u64]) -> Self {
        MinMedianMax {
            min: sorted.first().copied().unwrap_or(0),
            median: sorted.get(sorted.len() / 2).copied().unwrap_or(0),
            max: sorted.last().copied().unwrap_or(0),
        }
    }
}

/// The clients of one `--url` entry, so a run over several gateways shows whether one of them
/// lags, drops or refuses while the totals look fine.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct UrlReport {
    /// The URL as given to `--url`.
    pub url: String,
    /// Clients assigned to it (client i takes URL i % n).
    pub clients: usize,
    /// Of those, how many got their WebSocket (not a peak: each client connects once).
    pub connected: u64,
    pub connect_failures: u64,
    pub events: u64,
    /// Over the measured window, as the run's `events_per_s`.
    pub events_per_s: f64,
    pub latency_us: Percentiles,
    pub gaps: u64,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Report {
    pub clients: usize,
    pub connected: u64,
    pub connect_failures: u64,
    /// `connect_failures` by why: the server's HTTP answer to the upgrade (status, Binance
    /// code and message) or the step and error kind (`connect: connection refused`).
    #[serde(default)]
    pub connect_failure_reasons: BTreeMap<String, u64>,
    pub duration_s: f64,
    pub events: u64,
    pub events_per_s: f64,
    pub bytes: u64,
    pub bytes_per_s: f64,
    pub gaps: u64,
    pub latency_us: Percentiles,
    pub fast_latency_us: Percentiles,
    pub connect_ms: Percentiles,
    pub per_client_events: MinMedianMax,
    pub closes: BTreeMap<String, u64>,
    pub slow_clients: usize,
    pub slow_closed: usize,
    pub slow_closes: Vec<SlowClose>,
    pub timeline: Vec<Sample>,
    /// The latency distribution as (percentile, µs) points, for a percentile plot.
    pub latency_distribution: Vec<(f64, u64)>,
    /// The same run by `--url` entry, in their order (one entry for a single URL).
    #[serde(default)]
    pub per_url: Vec<UrlReport>,
    /// `--churn`: connect/leave cycles (one process only: not read back by --processes).
    #[serde(skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub churn: Option<crate::churn::ChurnReport>,
    /// The book, resume and reconnect modes (one process only, like `churn`).
    #[serde(skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub sync: Option<SyncReport>,
    /// `--transport` and what it cost on the wire (added up over `--processes` children).
    #[serde(default)]
    pub transport: Option<TransportReport>,
}

/// What a transport cost: requests, and bytes on the wire against the payloads they carried.
/// `wire_bytes_received - bytes` (the report's payload bytes) is the framing: HTTP response
/// heads, poll envelopes and stream wrappers, SSE field names, WebSocket frame headers and
/// handshake.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct TransportReport {
    /// `ws`, `sse`, `longpoll` or `poll`.
    pub name: String,
    /// A short poll's interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_interval_ms: Option<u64>,
    /// HTTP requests sent: WebSocket upgrades, SSE streams opened, polls.
    pub requests: u64,
    /// Over the measured window (after the ramp), as `events_per_s`.
    pub requests_per_s: f64,
    /// Every byte the clients' sockets read and wrote (see `transport::Counted`).
    pub wire_bytes_received: u64,
    pub wire_bytes_sent: u64,
    /// Of `wire_bytes_received`, the HTTP response heads (status line and headers) the HTTP
    /// transports read; 0 for WebSocket (its one 101 is in the framing).
    pub response_head_bytes: u64,
    /// Non-200 answers by status (`malformed` for a 200 whose body did not parse).
    pub http_errors: BTreeMap<String, u64>,
    /// Connections opened again after one ended, and failed attempts (SSE, polls).
    pub reconnects: u64,
    pub reconnect_failures: u64,
}

impl TransportReport {
    pub fn of(
        stats: &Stats,
        transport: crate::transport::Transport,
        requests_in_window: u64,
        duration_s: f64,
    ) -> Self {
        let t = &stats.transport;
        let (wire_in, wire_out) = stats.wire_totals();
        TransportReport {
            name: transport.name().to_string(),
            poll_interval_ms: match transport {
                crate::transport::Transport::Poll(every) => Some(every.as_millis() as u64),
                _ => None,
            },
            requests: t.requests.load(Ordering::Relaxed),
            requests_per_s: requests_in_window as f64 / duration_s.max(1e-9),
            wire_bytes_received: wire_in,
            wire_bytes_sent: wire_out,
            response_head_bytes: t.response_head_bytes.load(Ordering::Relaxed),
            http_errors: t
                .http_errors
                .lock()
                .iter()
                .map(|(status, n)| {
                    let label = if *status == 0 {
                        "malformed".to_string()
                    } else {
                        status.to_string()
                    };
                    (label, *n)
                })
                .collect(),
            reconnects: t.reconnects.load(Ordering::Relaxed),
            reconnect_failures: t.reconnect_failures.load(Ordering::Relaxed),
        }
    }

    /// Adds another process's counts (the rates add up too: the children ran side by side).
    pub fn add(&mut self, other: &TransportReport) {
        if self.name.is_empty() {
            self.name = other.name.clone();
            self.poll_interval_ms = other.poll_interval_ms;
        }
        self.requests += other.requests;
        self.requests_per_s += other.requests_per_s;
        self.wire_bytes_received += other.wire_bytes_received;
        self.wire_bytes_sent += other.wire_bytes_sent;
        self.response_head_bytes += other.response_head_bytes;
        for (status, n) in &other.http_errors {
            *self.http_errors.entry(status.clone()).or_default() += n;
        }
        self.reconnects += other.reconnects;
        self.reconnect_failures += other.reconnect_failures;
    }
}

/// The transport's lines of the printout: requests, wire bytes and framing per event.
pub fn print_transport(t: &TransportReport, events: u64, payload_bytes: u64) {
    let per_event = |bytes: u64| {
        if events == 0 {
            "-".to_string()
        } else {
            format!("{:.1}", bytes as f64 / events as f64)
        }
    };
    let interval = t
        .poll_interval_ms
        .map(|ms| format!(" every {ms} ms"))
        .unwrap_or_default();
    println!(
        "transport          {}{interval}: {} requests ({:.1}/s), {} reconnects ({} failed)",
        t.name, t.requests, t.requests_per_s, t.reconnects, t.reconnect_failures
    );
    println!(
        "wire bytes         {} received ({} per event: {} payload + {} framing, {} of it response heads), {} sent ({} per event)",
        t.wire_bytes_received,
        per_event(t.wire_bytes_received),
        per_event(payload_bytes),
        per_event(t.wire_bytes_received.saturating_sub(payload_bytes)),
        per_event(t.response_head_bytes),
        t.wire_bytes_sent,
        per_event(t.wire_bytes_sent),
    );
    if !t.http_errors.is_empty() {
        println!("http errors        {:?}", t.http_errors);
    }
}

/// What `--snapshot`, `--rest-book`, `--resume`, `--reconnect-every` and
/// `--reconnect-on-close` counted (see `stats::SyncStats` for each field's meaning).
#[derive(Serialize, Debug, Default)]
pub struct SyncReport {
    pub snapshots: u64,
    pub resyncs: u64,
    pub slow_resynced: u64,
    pub catchup_diffs: u64,
    pub catchup_trades: u64,
    pub resume_snapshots: u64,
    pub resume_gaps: u64,
    pub resume_gap_trades: u64,
    pub missed_updates: u64,
    pub missed_trades: u64,
    pub rest_snapshots: u64,
    pub rest_refetches: u64,
    pub recovery_rest_bytes: u64,
    pub book_checks: u64,
    pub book_mismatches: u64,
    pub book_checks_inconclusive: u64,
    pub book_checks_limited: u64,
    pub mismatch_examples: Vec<String>,
    pub reconnects: u64,
    pub reconnect_failures: u64,
    /// Connections lost and recovered (every diff stream's book live again).
    pub recoveries: u64,
    /// From a lost connection to its client's books being live again, in µs.
    pub recovery_us: Percentiles,
    /// Seconds after the run started: the first connection lost and the last recovery, so
    /// a storm's "every client live again" is `last_live_s - first_lost_s`.
    pub first_lost_s: f64,
    pub last_live_s: f64,
}

impl SyncReport {
    pub fn of(stats: &Stats) -> Self {
        let s = &stats.sync;
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let recovery = s.recovery_us.lock();
        let first_lost = n(&s.first_lost_us);
        SyncReport {
            snapshots: n(&s.snapshots),
            resyncs: n(&s.resyncs),
            slow_resynced: n(&s.slow_resynced),
            catchup_diffs: n(&s.catchup_diffs),
            catchup_trades: n(&s.catchup_trades),
            resume_snapshots: n(&s.resume_snapshots),
            resume_gaps: n(&s.resume_gaps),
            resume_gap_trades: n(&s.resume_gap_trades),
            missed_updates: n(&s.missed_updates),
            missed_trades: n(&s.missed_trades),
            rest_snapshots: n(&s.rest_snapshots),
            rest_refetches: n(&s.rest_refetches),
            recovery_rest_bytes: n(&s.recovery_rest_bytes),
            book_checks: n(&s.book_checks),
            book_mismatches: n(&s.book_mismatches),
            book_checks_inconclusive: n(&s.book_checks_inconclusive),
            book_checks_limited: n(&s.book_checks_limited),
            mismatch_examples: s.mismatch_examples.lock().clone(),
            reconnects: n(&s.reconnects),
            reconnect_failures: n(&s.reconnect_failures),
            recoveries: recovery.len(),
            recovery_us: Percentiles::of(&recovery),
            first_lost_s: if first_lost == u64::MAX {
                0.0
            } else {
                first_lost as f64 / 1e6
            },
            last_live_s: n(&s.last_live_us) as f64 / 1e6,
        }
    }

    /// The run fails on anything lost without notice and any book that differs from REST.
    pub fn verdict(&self) -> Result<(), String> {
        if self.missed_updates + self.missed_trades + self.book_mismatches == 0 {
            return Ok(());
        }
        Err(format!(
            "{} missed updates, {} missed trades, {} book mismatches",
            self.missed_updates, self.missed_trades, self.book_mismatches
        ))
    }
}

pub fn print_sync(s: &SyncReport) {
    println!("snapshots          {} ({} resyncs)", s.snapshots, s.resyncs);
    if s.rest_snapshots > 0 {
        println!(
            "rest snapshots     {} ({} refetched: older than the first buffered diff; {:.1} MB to recover after reconnects)",
            s.rest_snapshots, s.rest_refetches, s.recovery_rest_bytes as f64 / 1e6
        );
    }
    println!(
        "reconnects         {} ({} failed attempts)",
        s.reconnects, s.reconnect_failures
    );
    println!(
        "catch-up           {} diffs, {} trades; {} snapshots instead (history too old), {} resume gaps ({} trades)",
        s.catchup_diffs, s.catchup_trades, s.resume_snapshots, s.resume_gaps, s.resume_gap_trades
    );
    println!(
        "missed             {} updates, {} trades",
        s.missed_updates, s.missed_trades
    );
    println!(
        "book checks        {} equal to REST, {} mismatches, {} inconclusive, {} refused (REST weight limit)",
        s.book_checks, s.book_mismatches, s.book_checks_inconclusive, s.book_checks_limited
    );
    for example in &s.mismatch_examples {
        println!("{:<18} {example}", "");
    }
    if s.recoveries > 0 {
        let r = &s.recovery_us;
        println!(
            "recovery ms        {} recoveries: p50 {:.1} p99 {:.1} max {:.1}; all live {:.3} s after the first loss",
            s.recoveries,
            r.p50 as f64 / 1e3,
            r.p99 as f64 / 1e3,
            r.max as f64 / 1e3,
            (s.last_live_s - s.first_lost_s).max(0.0)
        );
    }
}

pub struct RunFacts {
    pub clients: usize,
    /// The `--url` entries, in order.
    pub urls: Vec<String>,
    pub slow_clients: usize,
    pub peak_connected: u64,
    pub duration_s: f64,
    pub timeline: Vec<Sample>,
}

pub fn build(stats: &Stats, facts: RunFacts) -> Report {
    let (latency, all) = Percentiles::merged(&stats.latency);
    let (fast, _) = Percentiles::merged(&stats.fast_latency);
    let connect = Percentiles::of(&stats.connect_ms.lock());
    let mut per_client: Vec<u64> = stats
        .per_client
        .iter()
        .map(|c| c.events.load(Ordering::Relaxed))
        .collect();
    per_client.sort_unstable();
    let (events, bytes) = stats.totals();
    let slow_closes = stats.slow_closed.lock().clone();
    let duration = facts.duration_s.max(1e-9);
    let url_events = stats.events_by_url();
    let url_clients = stats.clients_by_url();
    let per_url = facts
        .urls
        .iter()
        .zip(&stats.per_url)
        .enumerate()
        .map(|(i, (url, u))| {
            let events = url_events.get(i).copied().unwrap_or(0);
            UrlReport {
                url: url.clone(),
                clients: url_clients.get(i).copied().unwrap_or(0),
                connected: u.connected.load(Ordering::Relaxed),
                connect_failures: u.connect_failures.load(Ordering::Relaxed),
                events,
                events_per_s: events as f64 / duration,
                latency_us: Percentiles::merged(&u.latency).0,
                gaps: u.gaps.load(Ordering::Relaxed),
            }
        })
        .collect();
    Report {
        clients: facts.clients,
        connected: facts.peak_connected,
        connect_failures: stats.connect_failures.load(Ordering::Relaxed),
        connect_failure_reasons: stats.connect_failure_reasons.lock().clone(),
        duration_s: facts.duration_s,
        events,
        events_per_s: events as f64 / duration,
        bytes,
        bytes_per_s: bytes as f64 / duration,
        gaps: stats.gaps.load(Ordering::Relaxed),
        latency_us: latency,
        fast_latency_us: fast,
        connect_ms: connect,
        per_client_events: MinMedianMax::of_sorted(&per_client),
        closes: stats
            .closes
            .lock()
            .iter()
            .map(|(code, n)| (code.to_string(), *n))
            .collect(),
        slow_clients: facts.slow_clients,
        slow_closed: slow_closes.iter().filter(|c| c.code == 4008).count(),
        slow_closes,
        timeline: facts.timeline,
        latency_distribution: distribution(&all),
        per_url,
        churn: None,
        sync: None,
        transport: None,
    }
}

/// The latency distribution as (percentile, µs) points, for a percentile plot.
pub fn distribution(all: &Histogram<u64>) -> Vec<(f64, u64)> {
    [
        0.0, 10.0, 25.0, 50.0, 75.0, 80.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 99.95,
        99.975, 99.99, 99.995, 99.999, 99.9995, 100.0,
    ]
    .iter()
    .filter(|_| !all.is_empty())
    .map(|&p| (p, all.value_at_percentile(p)))
    .collect()
}

/// Writes the `--html` page and the `--json` report, each if asked for.
pub fn write_files(
    report: &Report,
    html: Option<&Path>,
    json: Option<&Path>,
) -> Result<(), String> {
    if let Some(path) = html {
        let page = crate::html::render(report)?;
        std::fs::write(path, page).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = json {
        let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// One line per reason, most frequent first, and what to do about a per-IP refusal.
fn print_connect_failures(report: &Report) {
    let mut reasons: Vec<(&String, &u64)> = report.connect_failure_reasons.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (n, (reason, count)) in reasons.iter().enumerate() {
        let label = if n == 0 { "connect failures" } else { "" };
        println!("{label:<18} {count} {reason}");
    }
    if reasons
        .iter()
        .any(|(reason, _)| reason.starts_with("HTTP 429"))
    {
        for line in [
            "429: a per-IP limit of the server (its message names which). A default bookcast",
            "admits 300 connection attempts per IP per 5 minutes: lower --per-source-address,",
            "use another --source-offset, or start it with --max-connection-attempts-per-ip 0",
        ] {
            println!("{:<18} {line}", "");
        }
    }
}

pub fn print(report: &Report) {
    let l = &report.latency_us;
    let f = &report.fast_latency_us;
    println!(
        "clients            {} ({} connected at peak, {} failed to connect)",
        report.clients, report.connected, report.connect_failures
    );
    print_connect_failures(report);
    println!("duration           {:.1} s", report.duration_s);
    println!(
        "events             {} ({:.0}/s), {} bytes ({:.2} MB/s)",
        report.events,
        report.events_per_s,
        report.bytes,
        report.bytes_per_s / 1e6
    );
    println!(
        "per client events  min {} / median {} / max {}",
        report.per_client_events.min, report.per_client_events.median, report.per_client_events.max
    );
    println!("gaps               {}", report.gaps);
    println!(
        "latency µs         p50 {} p90 {} p99 {} p99.9 {} max {}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    println!(
        "fast latency µs    p50 {} p90 {} p99 {} p99.9 {} max {}",
        f.p50, f.p90, f.p99, f.p999, f.max
    );
    let c = &report.connect_ms;
    println!(
        "connect ms         p50 {} p99 {} max {}",
        c.p50, c.p99, c.max
    );
    println!("closes             {:?}", report.closes);
    if report.slow_clients > 0 {
        let resynced = report
            .sync
            .as_ref()
            .map(|s| format!(", {} resynced", s.slow_resynced))
            .unwrap_or_default();
        println!(
            "slow clients       {} ({} closed with 4008{resynced})",
            report.slow_clients, report.slow_closed
        );
    }
    if let Some(sync) = &report.sync {
        print_sync(sync);
    }
    if let Some(transport) = &report.transport {
        print_transport(transport, report.events, report.bytes);
    }
    if report.per_url.len() > 1 {
        print!("{}", per_url_table(&report.per_url));
    }
}

/// The per-URL breakdown as a table, one row per `--url` entry. Printed only for more than
/// one URL: with one, every row would repeat the totals.
pub fn per_url_table(per_url: &[UrlReport]) -> String {
    let width = per_url
        .iter()
        .map(|u| u.url.chars().count())
        .max()
        .unwrap_or(0)
        .max("per url".len());
    let mut out = format!(
        "{:<width$}  {:>8} {:>9} {:>7} {:>10} {:>9} {:>8} {:>8} {:>6}\n",
        "per url",
        "clients",
        "connected",
        "failed",
        "events",
        "events/s",
        "p50 µs",
        "p99 µs",
        "gaps"
    );
    for u in per_url {
        out.push_str(&format!(
            "{:<width$}  {:>8} {:>9} {:>7} {:>10} {:>9.0} {:>8} {:>8} {:>6}\n",
            u.url,
            u.clients,
            u.connected,
            u.connect_failures,
            u.events,
            u.events_per_s,
            u.latency_us.p50,
            u.latency_us.p99,
            u.gaps
        ));
    }
    out
}
