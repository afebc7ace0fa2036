//! `--processes N`: past one process's open-file limit (20,000 here, so about 19,000 clients),
//! the process becomes a coordinator. It runs N children of its own executable, each on its own
//! loopback source addresses with its share of the clients, shows one merged progress line from
//! the lines they print, and merges their reports into one: sums, exact percentiles from their
//! raw histograms, exact per-client throughput from their per-client counts.
//!
//! The children's output is treated as untrusted input: every malformed or inconsistent piece
//! is a clear error naming the child, never a panic.

use crate::report::{self, MinMedianMax, Percentiles, Report, Sample, UrlReport};
use crate::stats::{histogram, Stats};
use crate::{target, Args};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

/// File descriptors a load process needs beyond one per client (runtime, stdio, the HTTP fetch
/// of the symbols); the same margin `run` checks against.
pub const FD_MARGIN: u64 = 64;
use crate::target::SOURCE_ADDRESSES;
/// What starts a child's progress line on its stdout; the rest of the line is JSON.
const PROGRESS: &str = "bookcast-load-progress ";
/// Lines of a child's stderr kept to explain a failure.
const TAIL_LINES: usize = 20;
/// Longest line read from a child; the rest of a longer line is read as another line.
const MAX_LINE: u64 = 4096;
/// Largest child report read (about 100 bytes per client, plus the histograms' buckets).
const MAX_CHILD_JSON: u64 = 256 << 20;
/// Beyond ramp + duration + grace: starting, fetching the symbols (a 10 s timeout), writing
/// the report.
const WAIT_MARGIN: Duration = Duration::from_secs(30);

/// What one child runs: its share of the clients and where its source addresses start.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    /// Global id of its first client (its client ids are relative to it).
    pub first_client: usize,
    pub clients: usize,
    /// `--slow` for it: its share of a count, or the percentage as given.
    pub slow: String,
    /// `--ramp` for it: the rate in proportion to its clients (at least 1/s unless 0), so all
    /// children ramp for the same time and measure over the same window, and `--ramp` keeps
    /// meaning the whole run's rate.
    pub ramp: u64,
    pub source_offset: u8,
    /// `--per-source-address` for it: the coordinator's, resolved once, so every child
    /// spreads its clients as the plan counted.
    pub per_source_address: usize,
}

/// `total` split in `parts` as evenly as possible; the first ones get the remainder.
pub fn split_even(total: usize, parts: usize) -> Vec<usize> {
    let parts = parts.max(1);
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
}

/// The children's shares. Each child's source addresses start right after the previous
/// child's last one (it takes `ceil(clients / per_source_address)`), from `source_offset` on,
/// so no two children ever bind the same address's port range.
pub fn plan(
    clients: usize,
    processes: usize,
    slow: &str,
    ramp: u64,
    per_source_address: usize,
    source_offset: u8,
) -> Result<Vec<Share>, String> {
    if processes > clients {
        return Err(format!(
            "--processes {processes} is more than --clients {clients}"
        ));
    }
    let counts = split_even(clients, processes);
    let slow_counts = match slow.trim().strip_suffix('%') {
        Some(_) => None,
        None => {
            let count: usize = slow
                .trim()
                .parse()
                .map_err(|_| format!("--slow {slow}: not a count or percentage"))?;
            Some(split_even(count.min(clients), processes))
        }
    };
    let mut shares = Vec::with_capacity(processes);
    let mut first_client = 0;
    let mut offset = usize::from(source_offset);
    for (i, &n) in counts.iter().enumerate() {
        let addresses = n.div_ceil(per_source_address.max(1)).max(1);
        if offset + addresses > SOURCE_ADDRESSES {
            return Err(format!(
                "{clients} clients at {per_source_address} per source address from offset \
                 {source_offset} need more than the {SOURCE_ADDRESSES} loopback source addresses \
                 127.0.0.1-250; raise --per-source-address"
            ));
        }
        shares.push(Share {
            first_client,
            clients: n,
            slow: match &slow_counts {
                Some(counts) => counts[i].to_string(),
                None => slow.to_string(),
            },
            ramp: if ramp == 0 {
                0
            } else {
                ((ramp as f64 * n as f64 / clients as f64).round() as u64).max(1)
            },
            // Fits: offset + addresses <= 250 was checked above.
            source_offset: offset as u8,
            per_source_address,
        });
        first_client += n;
        offset += addresses;
    }
    Ok(shares)
}

/// Options the coordinator sets per child; any other option passes through as given (so
/// `--allow-remote` reaches the children only when it was given, and options added later need
/// no change here). All of them take a value.
const PER_CHILD: [&str; 9] = [
    "--processes",
    "--clients",
    "--first-client",
    "--slow",
    "--ramp",
    "--source-offset",
    "--per-source-address",
    "--json",
    "--html",
];

/// A child's command line: the coordinator's own (without the program name), less the
/// options in [`PER_CHILD`] in either `--name value` or `--name=value` form, plus its share.
/// clap never takes a token starting with `--` as a value, so dropping the token after a bare
/// `--name` is safe on a command line that parsed.
pub fn child_args(raw: &[OsString], share: &Share, json: &Path) -> Vec<OsString> {
    let mut out = Vec::with_capacity(raw.len() + 14);
    let mut skip_value = false;
    for arg in raw {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let text = arg.to_string_lossy();
        let name = text.split('=').next().unwrap_or_default();
        if text == "--child" {
            continue;
        }
        if PER_CHILD.contains(&name) {
            skip_value = !text.contains('=');
            continue;
        }
        out.push(arg.clone());
    }
    for (name, value) in [
        ("--processes", "1".to_string()),
        ("--clients", share.clients.to_string()),
        ("--first-client", share.first_client.to_string()),
        ("--slow", share.slow.clone()),
        ("--ramp", share.ramp.to_string()),
        ("--source-offset", share.source_offset.to_string()),
        ("--per-source-address", share.per_source_address.to_string()),
    ] {
        out.push(name.into());
        out.push(value.into());
    }
    out.push("--json".into());
    out.push(json.as_os_str().to_owned());
    out.push("--child".into());
    out
}

/// A histogram as its non-empty buckets, `[value, count]` with the bucket's highest value.
/// Recording that value again lands in the same bucket of a histogram with the same bounds,
/// so percentiles of the decoded histogram are exactly those of the original. (hdrhistogram's
/// V2 serializer needs its `serialization` feature, which pulls in flate2, nom and base64;
/// this needs nothing, and serde_json reads it.)
pub type Buckets = Vec<(u64, u64)>;

pub fn encode(h: &Histogram<u64>) -> Buckets {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

fn decode(buckets: &[(u64, u64)]) -> Result<Histogram<u64>, String> {
    let mut h = histogram();
    for &(value, count) in buckets {
        h.record_n(value, count)
            .map_err(|_| format!("bucket value {value} is out of range"))?;
    }
    Ok(h)
}

/// What only a child writes: the raw histograms and per-client counts the merge needs. They
/// live in the children's temporary files, never in the coordinator's report.
#[derive(Serialize, Deserialize, Debug)]
pub struct RawHistograms {
    pub latency_us: Buckets,
    pub fast_latency_us: Buckets,
    pub connect_ms: Buckets,
    /// Latency by `--url` entry, in their order, for exact per-URL percentiles.
    #[serde(default)]
    pub per_url_latency_us: Vec<Buckets>,
}

/// A child's `--json`: its ordinary report plus what the merge needs.
#[derive(Serialize, Deserialize, Debug)]
pub struct ChildReport {
    pub report: Report,
    pub ramp_s: f64,
    pub raw_histograms: RawHistograms,
    /// Events each client received, by client id (for the exact median over all clients).
    pub per_client_event_counts: Vec<u64>,
}

/// A child's end: writes its report with the raw histograms to `--json` and prints nothing.
pub fn finish_child(
    json: Option<&Path>,
    report: Report,
    stats: &Stats,
    ramp_s: f64,
) -> Result<(), String> {
    let path = json.ok_or("--child needs --json")?;
    let sharded = |s: &crate::stats::ShardedHistogram| {
        let mut h = histogram();
        s.merge_into(&mut h, false);
        encode(&h)
    };
    let child = ChildReport {
        report,
        ramp_s,
        raw_histograms: RawHistograms {
            latency_us: sharded(&stats.latency),
            fast_latency_us: sharded(&stats.fast_latency),
            connect_ms: encode(&stats.connect_ms.lock()),
            per_url_latency_us: stats.per_url.iter().map(|u| sharded(&u.latency)).collect(),
        },
        per_client_event_counts: stats
            .per_client
            .iter()
            .map(|c| c.events.load(std::sync::atomic::Ordering::Relaxed))
            .collect(),
    };
    let json = serde_json::to_string(&child).map_err(|e| e.to_string())?;
    std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))
}

/// One second of a child, as it prints it for the coordinator's merged progress line.
#[derive(Serialize, Deserialize, Default, Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    pub connected: u64,
    pub events_per_s: f64,
    pub p99_us: u64,
    pub gaps: u64,
    pub closes: u64,
}

/// Prints a child's progress line. Errors are ignored: a coordinator that went away must not
/// stop the run (it ends by itself).
pub fn print_progress(sample: &Sample, closes: u64) {
    let progress = Progress {
        connected: sample.connected,
        events_per_s: sample.events_per_s,
        p99_us: sample.latency_us.p99,
        gaps: sample.gaps,
        closes,
    };
    if let Ok(json) = serde_json::to_string(&progress) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{PROGRESS}{json}");
        let _ = out.flush();
    }
}

fn parse_progress(line: &str) -> Option<Progress> {
    serde_json::from_str(line.strip_prefix(PROGRESS)?).ok()
}

/// The merged progress line: sums, and the highest child's p99 (a conservative bound).
fn progress_message(children: &[Progress]) -> String {
    let total = |field: fn(&Progress) -> u64| {
        children
            .iter()
            .fold(0u64, |sum, p| sum.saturating_add(field(p)))
    };
    let (connected, gaps, closes) = (
        total(|p| p.connected),
        total(|p| p.gaps),
        total(|p| p.closes),
    );
    let rate: f64 = children.iter().map(|p| p.events_per_s).sum();
    let p99 = children.iter().map(|p| p.p99_us).max().unwrap_or(0);
    format!(
        "{} processes | connected {connected} | {rate:.0} events/s | p99 {p99} µs | gaps {gaps} | closes {closes}",
        children.len()
    )
}

fn percentile_max(a: Percentiles, b: Percentiles) -> Percentiles {
    Percentiles {
        p50: a.p50.max(b.p50),
        p90: a.p90.max(b.p90),
        p99: a.p99.max(b.p99),
        p999: a.p999.max(b.p999),
        max: a.max.max(b.max),
    }
}

/// The children's timelines merged by second index (the children start together and sample
/// once a second). Connected clients and events/s are summed over the children with a sample
/// at that second; gaps are cumulative, so a child that has stopped sampling counts its last
/// value. A second's latency percentiles are the highest child's: the percentile of a mix of
/// distributions never exceeds the highest of theirs, so this is a conservative upper bound
/// (the max is exact). The whole run's percentiles are exact.
pub fn merge_timelines(timelines: &[Vec<Sample>]) -> Vec<Sample> {
    let seconds = timelines.iter().map(Vec::len).max().unwrap_or(0);
    (0..seconds)
        .map(|i| {
            let mut merged = Sample {
                t_s: 0.0,
                connected: 0,
                events_per_s: 0.0,
                gaps: 0,
                latency_us: Percentiles::default(),
            };
            for timeline in timelines {
                if let Some(s) = timeline.get(i) {
                    merged.t_s = merged.t_s.max(s.t_s);
                    merged.connected = merged.connected.saturating_add(s.connected);
                    merged.events_per_s += s.events_per_s;
                    merged.latency_us = percentile_max(merged.latency_us, s.latency_us);
                }
                let gaps = timeline.get(i).or(timeline.last()).map_or(0, |s| s.gaps);
                merged.gaps = merged.gaps.saturating_add(gaps);
            }
            merged
        })
        .collect()
}

/// One report from the children's, in the order of `shares`. Counts add up; the whole-run
/// latency, fast-latency and connect-time percentiles come from the merged raw histograms and
/// are exact; per-client events min/median/max are exact over all clients; events/s and
/// bytes/s add up (the children measure over the same window); the duration is the longest.
/// `connected` is the peak of the merged timeline, as a single process takes the peak of its
/// own (the sum of the children's peaks when no second was sampled). The per-URL breakdown
/// (every child covers every one of `urls`) adds up the same way, with exact percentiles from
/// the children's per-URL histograms.
pub fn merge(
    shares: &[Share],
    urls: &[String],
    children: Vec<ChildReport>,
) -> Result<(Report, f64), String> {
    let mut url_latency: Vec<Histogram<u64>> = urls.iter().map(|_| histogram()).collect();
    let mut per_url: Vec<UrlReport> = urls
        .iter()
        .map(|url| UrlReport {
            url: url.clone(),
            clients: 0,
            connected: 0,
            connect_failures: 0,
            events: 0,
            events_per_s: 0.0,
            latency_us: Percentiles::default(),
            gaps: 0,
        })
        .collect();
    let mut latency = histogram();
    let mut fast = histogram();
    let mut connect = histogram();
    let mut per_client = Vec::new();
    let mut closes: BTreeMap<String, u64> = BTreeMap::new();
    let mut connect_failure_reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut slow_closes = Vec::new();
    let mut timelines = Vec::new();
    let mut sum = Report {
        clients: 0,
        connected: 0,
        connect_failures: 0,
        connect_failure_reasons: BTreeMap::new(),
        duration_s: 0.0,
        events: 0,
        events_per_s: 0.0,
        bytes: 0,
        bytes_per_s: 0.0,
        gaps: 0,
        latency_us: Percentiles::default(),
        fast_latency_us: Percentiles::default(),
        connect_ms: Percentiles::default(),
        per_client_events: MinMedianMax::of_sorted(&[]),
        closes: BTreeMap::new(),
        slow_clients: 0,
        slow_closed: 0,
        slow_closes: Vec::new(),
        timeline: Vec::new(),
        latency_distribution: Vec::new(),
        per_url: Vec::new(),
        churn: None,
        sync: None,
        transport: None,
    };
    let mut ramp_s: f64 = 0.0;
    if children.len() != shares.len() {
        return Err(format!(
            "{} child reports for {} children",
            children.len(),
            shares.len()
        ));
    }
    for (i, (share, child)) in shares.iter().zip(children).enumerate() {
        let name = format!("child {} of {}", i + 1, shares.len());
        let r = child.report;
        if r.clients != share.clients || child.per_client_event_counts.len() != share.clients {
            return Err(format!(
                "{name}: its report covers {} clients ({} counts), it ran {}",
                r.clients,
                child.per_client_event_counts.len(),
                share.clients
            ));
        }
        let add = |into: &mut Histogram<u64>, buckets: &[(u64, u64)], what: &str| {
            decode(buckets)
                .and_then(|h| into.add(&h).map_err(|e| format!("{e:?}")))
                .map_err(|e| format!("{name}: {what} histogram: {e}"))
        };
        add(&mut latency, &child.raw_histograms.latency_us, "latency")?;
        add(
            &mut fast,
            &child.raw_histograms.fast_latency_us,
            "fast latency",
        )?;
        add(
            &mut connect,
            &child.raw_histograms.connect_ms,
            "connect time",
        )?;
        let raw_per_url = &child.raw_histograms.per_url_latency_us;
        if r.per_url.len() != urls.len() || raw_per_url.len() != urls.len() {
            return Err(format!(
                "{name}: its report covers {} URLs ({} histograms), the run has {}",
                r.per_url.len(),
                raw_per_url.len(),
                urls.len()
            ));
        }
        let url_clients: usize = r.per_url.iter().map(|u| u.clients).sum();
        if url_clients != share.clients {
            return Err(format!(
                "{name}: its URLs have {url_clients} clients, it ran {}",
                share.clients
            ));
        }
        for ((into, theirs), (h, buckets)) in per_url
            .iter_mut()
            .zip(&r.per_url)
            .zip(url_latency.iter_mut().zip(raw_per_url))
        {
            if theirs.url != into.url {
                return Err(format!(
                    "{name}: its report has URL {} where the run has {}",
                    theirs.url, into.url
                ));
            }
            add(h, buckets, &format!("{} latency", into.url))?;
            into.clients += theirs.clients;
            into.connected = into.connected.saturating_add(theirs.connected);
            into.connect_failures = into
                .connect_failures
                .saturating_add(theirs.connect_failures);
            into.events = into.events.saturating_add(theirs.events);
            into.events_per_s += theirs.events_per_s;
            into.gaps = into.gaps.saturating_add(theirs.gaps);
        }
        per_client.extend(child.per_client_event_counts);
        for (code, n) in r.closes {
            let entry = closes.entry(code).or_default();
            *entry = entry.saturating_add(n);
        }
        for (reason, n) in r.connect_failure_reasons {
            let entry = connect_failure_reasons.entry(reason).or_default();
            *entry = entry.saturating_add(n);
        }
        for mut close in r.slow_closes {
            if close.client >= share.clients {
                return Err(format!(
                    "{name}: slow close of client {} of {}",
                    close.client, share.clients
                ));
            }
            close.client += share.first_client;
            slow_closes.push(close);
        }
        sum.clients += r.clients;
        sum.connected = sum.connected.saturating_add(r.connected);
        sum.connect_failures = sum.connect_failures.saturating_add(r.connect_failures);
        sum.duration_s = sum.duration_s.max(r.duration_s);
        sum.events = sum.events.saturating_add(r.events);
        sum.events_per_s += r.events_per_s;
        sum.bytes = sum.bytes.saturating_add(r.bytes);
        sum.bytes_per_s += r.bytes_per_s;
        sum.gaps = sum.gaps.saturating_add(r.gaps);
        sum.slow_clients = sum.slow_clients.saturating_add(r.slow_clients);
        sum.slow_closed = sum.slow_closed.saturating_add(r.slow_closed);
        if let Some(transport) = &r.transport {
            sum.transport
                .get_or_insert_with(Default::default)
                .add(transport);
        }
        ramp_s = ramp_s.max(child.ramp_s);
        timelines.push(r.timeline);
    }
    per_client.sort_unstable();
    slow_closes.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let timeline = merge_timelines(&timelines);
    if let Some(peak) = timeline.iter().map(|s| s.connected).max() {
        sum.connected = peak;
    }
    for (url, h) in per_url.iter_mut().zip(&url_latency) {
        url.latency_us = Percentiles::of(h);
    }
    Ok((
        Report {
            latency_us: Percentiles::of(&latency),
            fast_latency_us: Percentiles::of(&fast),
            connect_ms: Percentiles::of(&connect),
            per_client_events: MinMedianMax::of_sorted(&per_client),
            closes,
            connect_failure_reasons,
            slow_closes,
            timeline,
            latency_distribution: report::distribution(&latency),
            per_url,
            ..sum
        },
        ramp_s,
    ))
}

/// A directory for the children's reports, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("bookcast-load-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The last lines a child wrote to stderr (and any stdout line that is not progress).
type Tail = Arc<Mutex<VecDeque<String>>>;

fn push_tail(tail: &Tail, line: String) {
    let mut tail = tail.lock();
    if tail.len() == TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line);
}

/// Reads `pipe` line by line (each at most MAX_LINE bytes) until it closes.
async fn read_lines(pipe: impl AsyncRead + Unpin, mut line: impl FnMut(String)) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => line(String::from_utf8_lossy(&buf).trim_end().to_string()),
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => format!("ended with {status}"),
    }
}

/// Runs the load as `args.processes` children and reports the merged result.
pub async fn coordinate(args: &Args) -> Result<(), String> {
    if args.child {
        return Err("--child is for the children of --processes; it takes --processes 1".into());
    }
    let processes = usize::from(args.processes);
    // The children parse --url again (it passes through); parsed here too, so a bad list fails
    // before any child starts, and for the URLs the merge checks their reports against.
    let targets = target::parse_list(&args.url, args.allow_remote)?;
    let urls: Vec<String> = targets.iter().map(|t| t.url.clone()).collect();
    let loopback_v4 = targets.iter().any(target::Target::binds_loopback_source);
    let per_address = target::per_source_address(
        args.per_source_address,
        args.clients,
        processes,
        args.source_offset,
    );
    if let Some(warning) = target::per_address_warning(&targets, per_address, args.clients) {
        eprintln!("bookcast-load: {warning}");
    }
    let shares = plan(
        args.clients,
        processes,
        &args.slow,
        args.ramp,
        if loopback_v4 {
            per_address
        } else {
            // Sources are not bound off 127.0.0.0/8; any offsets will do.
            usize::MAX
        },
        args.source_offset,
    )?;
    check_fd_limit(&shares, processes)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    let raw: Vec<OsString> = std::env::args_os().skip(1).collect();
    let dir = TempDir::new()?;

    let mut set = JoinSet::new();
    let progress = Arc::new(Mutex::new(vec![Progress::default(); processes]));
    let mut tails = Vec::with_capacity(processes);
    let mut readers = JoinSet::new();
    for (i, share) in shares.iter().enumerate() {
        let json = dir.0.join(format!("child-{i}.json"));
        let mut child: Child = Command::new(&exe)
            .args(child_args(&raw, share, &json))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start child {}: {e}", i + 1))?;
        let tail: Tail = Arc::default();
        if let Some(stdout) = child.stdout.take() {
            let (tail, progress) = (tail.clone(), progress.clone());
            readers.spawn(read_lines(stdout, move |line| {
                match parse_progress(&line) {
                    Some(p) => progress.lock()[i] = p,
                    None => push_tail(&tail, line),
                }
            }));
        }
        if let Some(stderr) = child.stderr.take() {
            let tail = tail.clone();
            readers.spawn(read_lines(stderr, move |line| push_tail(&tail, line)));
        }
        tails.push(tail);
        set.spawn(async move { (i, child.wait().await) });
    }

    let ramp_s = shares
        .iter()
        .map(|s| match s.ramp {
            0 => 0.0,
            rate => s.clients as f64 / rate as f64,
        })
        .fold(0.0, f64::max);
    let bound = Duration::from_secs_f64(ramp_s) + args.duration + args.grace + WAIT_MARGIN;
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let deadline = tokio::time::sleep(bound);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(deadline, interrupted);
    let failure = loop {
        tokio::select! {
            biased;
            _ = &mut interrupted => break Some("interrupted: stopped all children".to_string()),
            _ = &mut deadline => break Some(format!(
                "the children did not finish within {:.0} s (ramp + duration + grace + {} s); \
                 stopped them",
                bound.as_secs_f64(),
                WAIT_MARGIN.as_secs()
            )),
            _ = tick.tick() => {
                bar.set_message(progress_message(&progress.lock()));
                bar.tick();
            }
            done = set.join_next() => match done {
                None => break None,
                Some(Ok((_, Ok(status)))) if status.success() => {}
                Some(Ok((i, result))) => {
                    let what = match result {
                        Ok(status) => describe(status),
                        Err(e) => format!("could not be waited for: {e}"),
                    };
                    // Its pipes close as it exits; give the readers a moment to see the end.
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while readers.join_next().await.is_some() {}
                    })
                    .await;
                    let tail: Vec<String> = tails[i].lock().iter().cloned().collect();
                    break Some(format!(
                        "child {} of {processes} ({} clients, --source-offset {}) {what}; its \
                         last output:\n{}",
                        i + 1,
                        shares[i].clients,
                        shares[i].source_offset,
                        if tail.is_empty() { "(none)".to_string() } else { tail.join("\n") }
                    ));
                }
                Some(Err(e)) => break Some(format!("waiting for a child failed: {e}")),
            },
        }
    };
    bar.finish_and_clear();
    if let Some(failure) = failure {
        // Kills the children still running: the set owns them, and dropping a `Child` made
        // with `kill_on_drop` kills it.
        set.shutdown().await;
        readers.abort_all();
        return Err(failure);
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while readers.join_next().await.is_some() {}
    })
    .await;
    readers.abort_all();
    // What the children wrote to stderr although they succeeded (warnings) is not hidden.
    for (i, tail) in tails.iter().enumerate() {
        for line in tail.lock().iter() {
            eprintln!("bookcast-load: child {}: {line}", i + 1);
        }
    }

    let mut children = Vec::with_capacity(processes);
    for i in 0..processes {
        children.push(read_child(
            &dir.0.join(format!("child-{i}.json")),
            i,
            processes,
        )?);
    }
    let (report, ramp) = merge(&shares, &urls, children)?;
    println!("ramp               {ramp:.1} s");
    println!("processes          {processes}");
    report::print(&report);
    report::write_files(&report, args.html.as_deref(), args.json.as_deref())
}

/// Refuses shares that cannot fit under the per-process open-file limit the children inherit
/// (each raises its soft limit to the hard one), naming the number of processes that would.
fn check_fd_limit(shares: &[Share], processes: usize) -> Result<(), String> {
    let Ok((_, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return Ok(());
    };
    let largest = shares.iter().map(|s| s.clients).max().unwrap_or(0) as u64;
    check_clients_fit(
        largest,
        shares.iter().map(|s| s.clients).sum(),
        processes,
        hard,
    )
}

/// Whether `largest` clients fit in one process under `limit` open files; if not, an error
/// suggesting enough processes for `total`.
pub fn check_clients_fit(
    largest: u64,
    total: usize,
    processes: usize,
    limit: u64,
) -> Result<(), String> {
    if largest.saturating_add(FD_MARGIN) <= limit {
        return Ok(());
    }
    let per_process = limit.saturating_sub(FD_MARGIN).max(1);
    let needed = (total as u64).div_ceil(per_process);
    Err(format!(
        "{largest} clients in one process need more file descriptors than the per-process \
         limit of {limit} allows (about {per_process} clients each); use --processes {needed} \
         or more (now {processes})"
    ))
}

fn read_child(path: &Path, i: usize, processes: usize) -> Result<ChildReport, String> {
    let name = format!("child {} of {processes}", i + 1);
    let size = std::fs::metadata(path)
        .map_err(|e| format!("{name} wrote no report ({}): {e}", path.display()))?
        .len();
    if size > MAX_CHILD_JSON {
        return Err(format!(
            "{name}: its report is {size} bytes, more than expected"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: its report: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{name}: its report is malformed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::SlowClose;

    fn share_ranges(shares: &[Share], per_address: usize) -> Vec<std::ops::Range<usize>> {
        shares
            .iter()
            .map(|s| {
                let start = usize::from(s.source_offset);
                start..start + s.clients.div_ceil(per_address).max(1)
            })
            .collect()
    }

    #[test]
    fn clients_and_slow_counts_split_evenly_with_the_remainder_first() {
        assert_eq!(split_even(10, 3), [4, 3, 3]);
        assert_eq!(split_even(38_000, 2), [19_000, 19_000]);
        let shares = plan(1001, 2, "11", 2000, 10_000, 0).unwrap();
        assert_eq!(
            shares.iter().map(|s| s.clients).collect::<Vec<_>>(),
            [501, 500]
        );
        assert_eq!(shares[1].first_client, 501);
        assert_eq!(
            shares.iter().map(|s| s.slow.as_str()).collect::<Vec<_>>(),
            ["6", "5"]
        );
        // A percentage goes to each child as it is.
        let shares = plan(1000, 4, "10%", 2000, 10_000, 0).unwrap();
        assert!(shares.iter().all(|s| s.slow == "10%"));
        // The ramp rate splits like the clients, so all ramp for the same time.
        assert!(shares.iter().all(|s| s.ramp == 500));
        assert!(plan(1, 2, "0", 2000, 10_000, 0).is_err());
        assert!(plan(10, 2, "many", 2000, 10_000, 0).is_err());
    }

    #[test]
    fn source_address_ranges_never_overlap() {
        let shares = plan(38_000, 2, "0", 2000, 10_000, 0).unwrap();
        assert_eq!(
            shares.iter().map(|s| s.source_offset).collect::<Vec<_>>(),
            [0, 2]
        );
        let shares = plan(50_001, 3, "0", 2000, 7_000, 5).unwrap();
        let ranges = share_ranges(&shares, 7_000);
        assert_eq!(ranges[0].start, 5);
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "{ranges:?}");
        }
        // Small shares still take one address each.
        let shares = plan(3, 3, "0", 2000, 10_000, 7).unwrap();
        assert_eq!(
            shares.iter().map(|s| s.source_offset).collect::<Vec<_>>(),
            [7, 8, 9]
        );
        // Past 127.0.0.250 the ranges would wrap onto each other: refused.
        assert!(plan(10_000, 2, "0", 2000, 100, 200).is_err());
        assert!(plan(10_000, 2, "0", 2000, 100, 150).is_ok());
    }

    #[test]
    fn child_command_lines_replace_the_per_child_options_only() {
        let raw: Vec<OsString> = [
            "--url",
            "ws://127.0.0.1:1",
            "--processes",
            "2",
            "--clients=300",
            "--slow",
            "10",
            "--allow-remote",
            "--html",
            "r.html",
            "--json=r.json",
            "--streams",
            "<sym>@trade",
            "--per-source-address=40",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let share = Share {
            first_client: 150,
            clients: 150,
            slow: "5".into(),
            ramp: 1000,
            source_offset: 3,
            per_source_address: 40,
        };
        let args = child_args(&raw, &share, Path::new("/tmp/c.json"));
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "--url",
                "ws://127.0.0.1:1",
                "--allow-remote",
                "--streams",
                "<sym>@trade",
                "--processes",
                "1",
                "--clients",
                "150",
                "--first-client",
                "150",
                "--slow",
                "5",
                "--ramp",
                "1000",
                "--source-offset",
                "3",
                "--per-source-address",
                "40",
                "--json",
                "/tmp/c.json",
                "--child"
            ]
        );
    }

    #[test]
    fn too_many_clients_per_process_suggest_more_processes() {
        assert!(check_clients_fit(19_000, 38_000, 2, 20_000).is_ok());
        let error = check_clients_fit(25_000, 50_000, 2, 20_000).unwrap_err();
        assert!(error.contains("--processes 3"), "{error}");
    }

    #[test]
    fn histogram_buckets_round_trip_exactly() {
        let mut h = histogram();
        for v in [1, 7, 999, 2049, 123_457, 59_999_999] {
            h.record_n(v, v % 13 + 1).unwrap();
        }
        let back = decode(&encode(&h)).unwrap();
        assert_eq!(back.len(), h.len());
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(back.value_at_quantile(q), h.value_at_quantile(q));
        }
        assert_eq!(back.max(), h.max());
        assert!(decode(&[(u64::MAX, 1)]).is_err());
    }

    /// The two URLs of the merge tests.
    fn urls() -> Vec<String> {
        vec!["ws://127.0.0.1:1".into(), "ws://127.0.0.1:2".into()]
    }

    /// A child's report of `clients` clients from global id `first_client` on, over
    /// [`urls`]: the first URL's clients see `latencies`, the second's 5 µs each.
    fn child(
        first_client: usize,
        clients: usize,
        latencies: std::ops::RangeInclusive<u64>,
        closes: &[(&str, u64)],
        timeline: Vec<Sample>,
    ) -> ChildReport {
        let mut h = histogram();
        for v in latencies {
            h.record(v).unwrap();
        }
        let mut connect = histogram();
        connect.record(clients as u64).unwrap();
        let counts: Vec<u64> = (0..clients as u64).map(|c| c * 10).collect();
        let mut url_latency = vec![h.clone(), histogram()];
        let mut per_url: Vec<UrlReport> = urls()
            .into_iter()
            .map(|url| UrlReport {
                url,
                clients: 0,
                connected: 0,
                connect_failures: 0,
                events: 0,
                events_per_s: 50.0,
                latency_us: Percentiles::default(),
                gaps: 1,
            })
            .collect();
        for (id, events) in counts.iter().enumerate() {
            let u = target::url_index(first_client + id, 2);
            per_url[u].clients += 1;
            per_url[u].connected += 1;
            per_url[u].events += events;
            if u == 1 {
                url_latency[1].record(5).unwrap();
            }
        }
        for (u, h) in per_url.iter_mut().zip(&url_latency) {
            u.latency_us = Percentiles::of(h);
        }
        ChildReport {
            report: Report {
                clients,
                connected: clients as u64,
                connect_failures: 1,
                connect_failure_reasons: [("HTTP 429 -1003 Too many".to_string(), 1)].into(),
                duration_s: 3.0 + clients as f64 / 100.0,
                events: counts.iter().sum(),
                events_per_s: 100.0,
                bytes: 1000,
                bytes_per_s: 10.0,
                gaps: 2,
                latency_us: Percentiles::of(&h),
                fast_latency_us: Percentiles::of(&h),
                connect_ms: Percentiles::of(&connect),
                per_client_events: MinMedianMax::of_sorted(&counts),
                closes: closes.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
                slow_clients: 1,
                slow_closed: 1,
                slow_closes: vec![SlowClose {
                    client: clients - 1,
                    at_s: clients as f64,
                    code: 4008,
                }],
                timeline,
                latency_distribution: Vec::new(),
                per_url,
                churn: None,
                sync: None,
                transport: None,
            },
            ramp_s: clients as f64 / 1000.0,
            raw_histograms: RawHistograms {
                latency_us: encode(&h),
                fast_latency_us: encode(&h),
                connect_ms: encode(&connect),
                per_url_latency_us: url_latency.iter().map(encode).collect(),
            },
            per_client_event_counts: counts,
        }
    }

    fn second(t_s: f64, connected: u64, gaps: u64, p99: u64) -> Sample {
        Sample {
            t_s,
            connected,
            events_per_s: 10.0,
            gaps,
            latency_us: Percentiles {
                p99,
                max: p99 * 2,
                ..Percentiles::default()
            },
        }
    }

    #[test]
    fn merged_reports_have_exact_percentiles_and_summed_counts() {
        let shares = plan(7, 2, "2", 0, 10_000, 0).unwrap();
        let a = child(
            0,
            4,
            1..=1000,
            &[("1000", 3), ("4008", 1)],
            vec![second(1.0, 4, 0, 50), second(2.0, 4, 1, 70)],
        );
        let b = child(
            4,
            3,
            1001..=2000,
            &[("1000", 2)],
            vec![second(1.1, 3, 1, 90)],
        );
        let (r, ramp) = merge(&shares, &urls(), vec![a, b]).unwrap();
        // Values below 2048 are exact at 3 significant digits: these are 1..=2000's own.
        let p = r.latency_us;
        assert_eq!(
            (p.p50, p.p90, p.p99, p.p999, p.max),
            (1000, 1800, 1980, 1998, 2000)
        );
        assert_eq!(r.fast_latency_us.p50, 1000);
        assert_eq!((r.connect_ms.p50, r.connect_ms.max), (3, 4));
        assert_eq!(r.clients, 7);
        assert_eq!(r.connect_failures, 2);
        assert_eq!(
            r.connect_failure_reasons,
            [("HTTP 429 -1003 Too many".to_string(), 2)].into()
        );
        assert_eq!(r.gaps, 4);
        assert_eq!(r.events, 60 + 30);
        assert_eq!(r.events_per_s, 200.0);
        assert_eq!(r.duration_s, 3.0 + 4.0 / 100.0);
        assert_eq!(ramp, 0.004);
        let closes: Vec<(&str, u64)> = r.closes.iter().map(|(c, n)| (c.as_str(), *n)).collect();
        assert_eq!(closes, [("1000", 5), ("4008", 1)]);
        // Per-client events over all 7 clients: 0, 0, 10, 10, 20, 20, 30.
        assert_eq!(
            (
                r.per_client_events.min,
                r.per_client_events.median,
                r.per_client_events.max
            ),
            (0, 10, 30)
        );
        assert_eq!((r.slow_clients, r.slow_closed), (2, 2));
        // Client ids become global: child b's client 2 is client 6.
        let ids: Vec<usize> = r.slow_closes.iter().map(|c| c.client).collect();
        assert_eq!(ids, [6, 3]);
        // Timeline: summed by second, gaps carried forward, latency the highest child's.
        assert_eq!(r.timeline.len(), 2);
        assert_eq!(r.timeline[0].connected, 7);
        assert_eq!(r.timeline[0].t_s, 1.1);
        assert_eq!(r.timeline[0].latency_us.p99, 90);
        assert_eq!(r.timeline[1].connected, 4);
        assert_eq!(r.timeline[1].gaps, 2);
        assert_eq!(r.timeline[1].latency_us.p99, 70);
        assert_eq!(r.connected, 7);
        assert!(!r.latency_distribution.is_empty());
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("raw_histograms") && !json.contains("per_client_event_counts"));
        // Per URL: clients 0, 2, 4, 6 on the first (child a's 0 and 2, b's 4 and 6), 1, 3, 5 on
        // the second; counts summed, percentiles exact over both children.
        let [first, second] = &r.per_url[..] else {
            panic!("two URLs: {:?}", r.per_url)
        };
        assert_eq!(
            (first.url.as_str(), second.url.as_str()),
            ("ws://127.0.0.1:1", "ws://127.0.0.1:2")
        );
        assert_eq!((first.clients, second.clients), (4, 3));
        assert_eq!((first.connected, second.connected), (4, 3));
        // a: 0 + 20; b (its own ids 0, 2): 0 + 20. a: 10 + 30; b: 10.
        assert_eq!((first.events, second.events), (40, 50));
        assert_eq!(first.events + second.events, r.events);
        assert_eq!((first.events_per_s, first.gaps), (100.0, 2));
        assert_eq!((first.latency_us.p50, first.latency_us.max), (1000, 2000));
        assert_eq!((second.latency_us.p50, second.latency_us.p99), (5, 5));
    }

    #[test]
    fn inconsistent_child_reports_are_errors_naming_the_child() {
        let shares = plan(7, 2, "0", 0, 10_000, 0).unwrap();
        let a = child(0, 4, 1..=10, &[], Vec::new());
        let b = child(4, 4, 1..=10, &[], Vec::new());
        let error = merge(&shares, &urls(), vec![a, b]).unwrap_err();
        assert!(error.starts_with("child 2 of 2"), "{error}");
        let a = child(0, 4, 1..=10, &[], Vec::new());
        let mut b = child(4, 3, 1..=10, &[], Vec::new());
        b.raw_histograms.latency_us.push((u64::MAX, 1));
        let error = merge(&shares, &urls(), vec![a, b]).unwrap_err();
        assert!(error.contains("child 2 of 2: latency histogram"), "{error}");
        // The per-URL breakdown must match the run's URLs, and the child's clients.
        let a = child(0, 4, 1..=10, &[], Vec::new());
        let mut b = child(4, 3, 1..=10, &[], Vec::new());
        b.report.per_url[1].url = "ws://127.0.0.1:3".into();
        let error = merge(&shares, &urls(), vec![a, b]).unwrap_err();
        assert!(
            error.contains("child 2 of 2: its report has URL ws://127.0.0.1:3"),
            "{error}"
        );
        let a = child(0, 4, 1..=10, &[], Vec::new());
        let mut b = child(4, 3, 1..=10, &[], Vec::new());
        b.raw_histograms.per_url_latency_us.pop();
        let error = merge(&shares, &urls(), vec![a, b]).unwrap_err();
        assert!(
            error.contains("child 2 of 2: its report covers 2 URLs (1 histograms)"),
            "{error}"
        );
        let a = child(0, 4, 1..=10, &[], Vec::new());
        let mut b = child(4, 3, 1..=10, &[], Vec::new());
        b.report.per_url[0].clients += 1;
        let error = merge(&shares, &urls(), vec![a, b]).unwrap_err();
        assert!(
            error.contains("its URLs have 4 clients, it ran 3"),
            "{error}"
        );
        assert!(parse_progress("bookcast-load-progress {\"connected\":").is_none());
    }
}
