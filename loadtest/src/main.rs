//! bookcast-load: thousands of WebSocket clients against a Binance-style server, with latency
//! percentiles, throughput, gap detection and slow-consumer outcomes you can trust; or, with
//! `--transport`, the same streams over SSE, long polling or short polling, measured alike.

mod book;
mod churn;
mod client;
mod follow;
mod html;
mod http;
mod poll;
mod processes;
mod report;
mod sse;
mod stats;
mod target;
mod transport;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use report::{Percentiles, RunFacts, Sample};
use stats::{histogram, Stats};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Load-test a Binance-style WebSocket fan-out server (bookcast or a peer) on this machine.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Server base URL (ws://host:port), or a comma-separated list of them (e.g. the gateways
    /// of a bookcast cluster): client i takes URL i % n, across --processes too, and the report
    /// adds a per-URL breakdown. The servers must list the same symbols. Only loopback unless
    /// --allow-remote; a URL may be listed twice to give it two shares.
    #[arg(long, default_value = "ws://127.0.0.1:9443")]
    url: String,
    /// Number of clients.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Streams per client: comma-separated names; `<sym>` takes the feed's symbols round-robin.
    /// The default is bookcast's real-time diff (every engine update); `<sym>@depth` is the
    /// 1000 ms diff, as on Binance.
    #[arg(long, default_value = "<sym>@depth@0ms")]
    streams: String,
    /// Symbols each `<sym>` pattern takes per client.
    #[arg(long, default_value_t = 1)]
    symbols_per_client: usize,
    /// Subscribe through /stream?streams= (combined payloads) instead of /ws/<s1>/<s2>.
    #[arg(long)]
    combined: bool,
    /// How long to receive once the ramp is done.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Connections opened per second (0: as fast as possible).
    #[arg(long, default_value_t = 2000)]
    ramp: u64,
    /// Slow clients: a share ("10%") or a count ("50"); they read at --slow-rate.
    #[arg(long, default_value = "0")]
    slow: String,
    /// Messages per second a slow client reads ("1/s", "5").
    #[arg(long, default_value = "1/s")]
    slow_rate: String,
    /// SO_RCVBUF for slow clients (0: kernel default); small values show backpressure sooner.
    #[arg(long, default_value_t = 0)]
    slow_recv_buffer: usize,
    /// Connections per loopback source address (127.0.0.1, .2, ...), so ports never run out
    /// and each address stays under the server's per-IP limits. Default: 100, a third of a
    /// default bookcast's 300 connection attempts per IP per 5 minutes, or as few as fit in
    /// the 250 addresses past 25,000 clients.
    #[arg(long)]
    per_source_address: Option<usize>,
    /// First loopback source address is 127.0.0.(1 + offset): give each of several load
    /// processes run side by side its own range (e.g. 0, 2, 4 for 19,000 clients each).
    #[arg(long, default_value_t = 0)]
    source_offset: u8,
    /// Extra time after --duration for closes to complete before the run is cut.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    grace: Duration,
    /// Write the full report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report page (charts included) here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Allow a target outside 127.0.0.0/8 and ::1.
    #[arg(long)]
    allow_remote: bool,
    /// Append timeUnit=MICROSECOND (latency needs µs event times).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    micros: bool,
    /// Load processes: past one process's open-file limit, N children of this program share
    /// the clients on separate loopback source addresses; their reports are merged.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=250))]
    processes: u16,
    /// Internal: run as a child of --processes (progress lines on stdout, raw histograms in
    /// --json, no report printed).
    #[arg(long, hide = true)]
    child: bool,
    /// Internal: a child's first client's id in the whole run, so its clients take the URLs
    /// round-robin as one process would (client i takes URL i % n).
    #[arg(long, hide = true, default_value_t = 0)]
    first_client: usize,
    /// Churning clients, besides --clients: each loops connect, subscribe to one
    /// `<sym>@depth@0ms` (in the URL, combined, or with SUBSCRIBE), take --churn-events diffs, leave the
    /// --churn-mix way, reconnect, until the run ends. Use `--clients 0` for churn alone.
    #[arg(long, default_value_t = 0)]
    churn: usize,
    /// Diffs a churning client receives (and gap-checks) before it leaves.
    #[arg(long, default_value_t = 3)]
    churn_events: usize,
    /// How churning clients leave, as weights: clean (close handshake), drop (FIN, no close
    /// frame), rst (reset), silent (stop reading and answering pings, held --churn-silent-hold).
    #[arg(long, default_value = "clean=4,drop=3,rst=3")]
    churn_mix: String,
    /// How long a silent churner holds its socket before checking that the server closed it:
    /// longer than the server's ping interval plus pong timeout (bookcast: 20 s + 60 s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "90s")]
    churn_silent_hold: Duration,
    /// Connects per second over all churners (0: as fast as they go).
    #[arg(long, default_value_t = 500)]
    churn_rate: u64,
    /// Bound on each phase of a churn cycle: connect and upgrade, the events, the close.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    churn_timeout: Duration,
    /// Loopback source addresses the churners rotate over (TIME_WAIT holds ports for 60 s).
    #[arg(long, default_value_t = 8)]
    churn_sources: usize,
    /// Connect with `snapshot=true` (bookcast's addition): keep a local book per diff stream
    /// from its in-band `depthSnapshot` and the diffs, count resyncs (a snapshot mid-stream),
    /// and at the end compare each book with `/api/v3/depth` at the same update id.
    #[arg(long, conflicts_with = "rest_book")]
    snapshot: bool,
    /// Keep local books the Binance way instead: buffer diffs, fetch `/api/v3/depth`, drop
    /// what it holds, bridge (`U <= lastUpdateId+1 <= u`); compared with REST at the end too.
    /// Each fetch weighs up to 250: raise the server's `--rest-weight-limit` for many clients.
    #[arg(long)]
    rest_book: bool,
    /// On reconnect, pass `resume=<stream>:<last id>` for every diff, trade and aggTrade
    /// stream, and check the catch-up: nothing missed, nothing twice.
    #[arg(long)]
    resume: bool,
    /// Each client drops its connection this often and reconnects, to the next `--url`.
    #[arg(long, value_parser = humantime::parse_duration)]
    reconnect_every: Option<Duration>,
    /// A connection the server closes (or that drops) is opened again until the run ends,
    /// retried every --reconnect-delay: a server or gateway restart becomes a reconnect storm.
    #[arg(long)]
    reconnect_on_close: bool,
    /// Pause before each reconnect attempt (after a drop, a close or a failed attempt); the
    /// updates made meanwhile are what a resume must catch up on.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "50ms")]
    reconnect_delay: Duration,
    /// How clients follow their streams: `ws`; `sse` (GET /sse, one text/event-stream
    /// response, reopened with Last-Event-ID if it ends); `longpoll` (GET /poll with the
    /// previous cursor, again as soon as answered); `poll[=INTERVAL]` (a short poll, wait=0,
    /// every INTERVAL, 3s by default: the seed's setup). The same latency (for polls: how stale
    /// each event was on arrival), gap and report machinery; the report adds requests and the
    /// bytes on the wire. Polls take only diff, trade and aggTrade streams.
    #[arg(long, default_value = "ws", value_parser = transport::Transport::parse)]
    transport: transport::Transport,
}

impl Args {
    /// Whether a mode that checks for lost data is on: then any missed update or trade and
    /// any book mismatch fails the run.
    fn verifies_delivery(&self) -> bool {
        self.snapshot || self.rest_book || self.resume
    }

    fn sync_modes(&self) -> bool {
        self.verifies_delivery() || self.reconnect_every.is_some() || self.reconnect_on_close
    }

    /// The plain-HTTP transports follow streams as a plain WebSocket client does: the modes
    /// built on WebSocket specifics (in-band snapshots, `resume=`, close codes, slow readers
    /// behind a small buffer, churned connections) are refused rather than ignored.
    fn check_transport(&self) -> Result<(), String> {
        if self.transport == transport::Transport::Ws {
            return Ok(());
        }
        let name = self.transport.name();
        let refused = [
            (
                self.sync_modes(),
                "--snapshot, --rest-book, --resume and --reconnect-*",
            ),
            (self.churn > 0, "--churn"),
            (self.slow != "0", "--slow"),
            (self.combined, "--combined"),
            (self.processes > 1, "--processes"),
        ];
        match refused.iter().find(|(on, _)| *on) {
            Some((_, what)) => Err(format!(
                "{what} work with --transport ws only (this run: --transport {name})"
            )),
            None => Ok(()),
        }
    }
}

fn parse_slow(text: &str, clients: usize) -> Result<usize, String> {
    let count = match text.strip_suffix('%') {
        Some(percent) => {
            let p: f64 = percent
                .parse()
                .map_err(|_| format!("--slow {text}: not a percentage"))?;
            ((clients as f64) * p / 100.0).round() as usize
        }
        None => text
            .parse()
            .map_err(|_| format!("--slow {text}: not a count or percentage"))?,
    };
    Ok(count.min(clients))
}

fn parse_rate(text: &str) -> Result<Duration, String> {
    let number = text.trim_end_matches("/s");
    let rate: f64 = number
        .parse()
        .map_err(|_| format!("--slow-rate {text}: expected e.g. 1/s"))?;
    if rate <= 0.0 {
        return Err("--slow-rate must be positive".into());
    }
    Ok(Duration::from_secs_f64(1.0 / rate))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => match runtime.block_on(run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bookcast-load: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("bookcast-load: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    args.check_transport()?;
    if args.processes > 1 {
        if args.churn > 0 {
            return Err("--churn runs in one process: leave out --processes".into());
        }
        if args.sync_modes() {
            return Err(
                "--snapshot, --rest-book, --resume and --reconnect-* run in one \
                        process: leave out --processes"
                    .into(),
            );
        }
        return processes::coordinate(&args).await;
    }
    let targets = target::parse_list(&args.url, args.allow_remote)?;
    let url_of = |id: usize| target::url_index(args.first_client + id, targets.len());
    // One fd per client plus a few: raise the soft limit to the hard one.
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    processes::check_clients_fit(
        (args.clients + args.churn) as u64,
        args.clients + args.churn,
        1,
        limit,
    )?;
    let churn_mix = churn::parse_mix(&args.churn_mix)?;
    let slow_clients = parse_slow(&args.slow, args.clients)?;
    let slow_every = parse_rate(&args.slow_rate)?;
    let symbols = target::common_symbols(&targets).await?;
    let per_address =
        target::per_source_address(args.per_source_address, args.clients, 1, args.source_offset);
    if let (false, Some(warning)) = (
        args.child,
        target::per_address_warning(&targets, per_address, args.clients),
    ) {
        eprintln!("bookcast-load: {warning}");
    }
    let sources = target::sources(&targets, args.clients, per_address, args.source_offset);
    let stats = Arc::new(Stats::new(args.clients, targets.len(), url_of));
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();

    let progress = if args.child {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    progress.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );

    let churn_stats = Arc::new(churn::ChurnStats::new());
    let mut churners = Vec::with_capacity(args.churn);
    if args.churn > 0 {
        let plan = Arc::new(churn::Plan {
            events: args.churn_events,
            mix: churn_mix,
            silent_hold: args.churn_silent_hold,
            timeout: args.churn_timeout,
            pace: (args.churn_rate > 0)
                .then(|| Duration::from_secs_f64(1.0 / args.churn_rate as f64)),
            ..churn::Plan::new(
                targets.clone(),
                symbols.clone(),
                target::sources(&targets, args.churn_sources, 1, args.source_offset),
            )
        });
        for id in 0..args.churn {
            churners.push(tokio::spawn(churn::run(
                id,
                plan.clone(),
                churn_stats.clone(),
                stop_rx.clone(),
            )));
        }
    }

    let mut tasks = Vec::with_capacity(args.clients);
    let ramp_interval = if args.ramp == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(1.0 / args.ramp as f64)
    };
    let sampler = tokio::spawn(sample(
        stats.clone(),
        started,
        progress.clone(),
        stop_rx.clone(),
        args.child,
    ));
    let connecting = Arc::new(client::Connecting {
        targets: Arc::new(targets.clone()),
        transport: args.transport,
        combined: args.combined,
        micros: args.micros,
        mode: follow::Mode {
            snapshot: args.snapshot,
            rest_book: args.rest_book,
            resume: args.resume,
        },
        reconnect_every: args.reconnect_every,
        reconnect_on_close: args.reconnect_on_close,
        reconnect_delay: args.reconnect_delay,
    });
    let sources = Arc::new(sources);
    for id in 0..args.clients {
        let slow = id >= args.clients - slow_clients;
        let plan = client::Plan {
            id,
            url_index: url_of(id),
            streams: target::streams_for(id, &args.streams, &symbols, args.symbols_per_client),
            connecting: connecting.clone(),
            sources: sources.clone(),
            slow_read_every: slow.then_some(slow_every),
            recv_buffer: if slow { args.slow_recv_buffer } else { 0 },
            started,
            drain: args
                .grace
                .saturating_sub(Duration::from_secs(1))
                .max(Duration::from_secs(1)),
        };
        tasks.push(tokio::spawn(client::run(
            plan,
            stats.clone(),
            stop_rx.clone(),
        )));
        if !ramp_interval.is_zero() {
            tokio::time::sleep_until((started + ramp_interval * (id as u32 + 1)).into()).await;
        }
    }
    let ramped = started.elapsed();
    let measure_from = Instant::now();
    let events_at_ramp = stats.totals().0;
    let requests_at_ramp = stats.transport.requests.load(Ordering::Relaxed);
    let url_events_at_ramp = stats.events_by_url();
    tokio::select! {
        _ = tokio::time::sleep(args.duration) => {}
        _ = interrupted() => eprintln!("bookcast-load: interrupted, stopping early"),
    }
    let measured = measure_from.elapsed();
    let events_in_window = stats.totals().0 - events_at_ramp;
    let requests_in_window = stats.transport.requests.load(Ordering::Relaxed) - requests_at_ramp;
    let url_events_in_window: Vec<u64> = stats
        .events_by_url()
        .iter()
        .zip(&url_events_at_ramp)
        .map(|(now, at_ramp)| now.saturating_sub(*at_ramp))
        .collect();
    // Read before the clients stop: a run shorter than the 1 s sampling tick may have no
    // timeline sample at all, and its peak must not read 0 (seen as a flaky test).
    let connected_at_end = stats.connected.load(Ordering::Relaxed);
    stats
        .stopped_at_us
        .store(client::now_us(), Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let churned = started.elapsed();
    let deadline = tokio::time::Instant::now() + args.grace;
    for task in churners.into_iter().chain(tasks) {
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            break;
        }
    }
    let timeline = sampler.await.unwrap_or_default();
    progress.finish_and_clear();
    let peak_connected = timeline
        .iter()
        .map(|s| s.connected)
        .max()
        .unwrap_or(0)
        .max(connected_at_end);
    let mut report = report::build(
        &stats,
        RunFacts {
            clients: args.clients,
            urls: targets.iter().map(|t| t.url.clone()).collect(),
            slow_clients,
            peak_connected,
            duration_s: measured.as_secs_f64(),
            timeline,
        },
    );
    if args.sync_modes() {
        report.sync = Some(report::SyncReport::of(&stats));
    }
    report.transport = Some(report::TransportReport::of(
        &stats,
        args.transport,
        requests_in_window,
        measured.as_secs_f64(),
    ));
    // Throughput over the measured window only (after the ramp).
    report.events_per_s = events_in_window as f64 / measured.as_secs_f64().max(1e-9);
    for (url, events) in report.per_url.iter_mut().zip(url_events_in_window) {
        url.events_per_s = events as f64 / measured.as_secs_f64().max(1e-9);
    }
    if args.churn > 0 {
        report.churn = Some(churn_stats.report(args.churn, churned));
    }
    if args.child {
        return processes::finish_child(args.json.as_deref(), report, &stats, ramped.as_secs_f64());
    }
    if args.clients > 0 {
        println!("ramp               {:.1} s", ramped.as_secs_f64());
        report::print(&report);
    }
    if let Some(churn) = &report.churn {
        churn::print(churn);
    }
    report::write_files(&report, args.html.as_deref(), args.json.as_deref())?;
    match (&report.sync, args.verifies_delivery()) {
        (Some(sync), true) => sync.verdict(),
        _ => Ok(()),
    }
}

/// Resolves on Ctrl-C or SIGTERM once the ramp is done: the run stops early and still reports
/// (a script that runs load beside other phases ends it when they are done).
async fn interrupted() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

/// Every second: a timeline sample and the progress line (for a child of --processes, a
/// machine-readable one on stdout). Ends when the run stops.
async fn sample(
    stats: Arc<Stats>,
    started: Instant,
    progress: ProgressBar,
    mut stop: watch::Receiver<bool>,
    child: bool,
) -> Vec<Sample> {
    let mut timeline = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last_events = 0u64;
    let mut last_at = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = client::stopped(&mut stop) => return timeline,
        }
        let now = Instant::now();
        let events = stats.totals().0;
        let rate = (events - last_events) as f64 / now.duration_since(last_at).as_secs_f64();
        last_events = events;
        last_at = now;
        let mut interval = histogram();
        stats.interval_latency.merge_into(&mut interval, true);
        let sample = Sample {
            t_s: started.elapsed().as_secs_f64(),
            connected: stats.connected.load(Ordering::Relaxed),
            events_per_s: rate,
            gaps: stats.gaps.load(Ordering::Relaxed),
            latency_us: Percentiles::of(&interval),
        };
        let closes: u64 = stats.closes.lock().values().sum();
        if child {
            processes::print_progress(&sample, closes);
        }
        progress.set_message(format!(
            "connected {} | {:.0} events/s | p99 {} µs | gaps {} | closes {}",
            sample.connected, sample.events_per_s, sample.latency_us.p99, sample.gaps, closes
        ));
        progress.tick();
        timeline.push(sample);
    }
}
