//! `--churn N`: clients that connect, subscribe, take a few events and leave, over and over,
//! each time a different way. A steady population never exercises what a real feed's edge sees
//! all day: per-connection setup and teardown, hub attach and detach, peers that leave without a
//! goodbye, and the file descriptors and memory all of that must give back.
//!
//! Every cycle is bounded (`timeout` per phase), and every way of leaving is checked from the
//! client's side where it can be: a clean close must be echoed, a half-close (FIN, no close
//! frame) and a silent peer must end in the server closing the socket.

use crate::report::Percentiles;
use crate::stats::histogram;
use crate::target::Target;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// How a cycle leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Close frame, then wait for the server's echo.
    Clean,
    /// Half-close (FIN) without a close frame, then wait for the server to close its side.
    Drop,
    /// Reset: `SO_LINGER` 0, then close.
    Rst,
    /// Stop reading and answering pings, hold the socket for `silent_hold`, then check that the
    /// server's heartbeat closed it. The churner moves on meanwhile (see [`MAX_HELD`]), so
    /// silent peers pile up on the server as they would behind a dead network.
    Silent,
}

const ENDINGS: [(&str, Ending); 4] = [
    ("clean", Ending::Clean),
    ("drop", Ending::Drop),
    ("rst", Ending::Rst),
    ("silent", Ending::Silent),
];

impl Ending {
    fn index(self) -> usize {
        ENDINGS.iter().position(|(_, e)| *e == self).unwrap_or(0)
    }
}

/// Parses `clean=4,drop=3,rst=3,silent=1` (weights) into a rotation of endings.
pub fn parse_mix(text: &str) -> Result<Vec<Ending>, String> {
    let mut rotation = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| format!("--churn-mix {part}: expected name=weight"))?;
        let ending = ENDINGS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, e)| *e)
            .ok_or_else(|| format!("--churn-mix {name}: one of clean, drop, rst, silent"))?;
        let weight: usize = weight
            .parse()
            .map_err(|_| format!("--churn-mix {part}: weight is not a number"))?;
        if weight > 100 {
            return Err(format!("--churn-mix {part}: weights go up to 100"));
        }
        rotation.extend(std::iter::repeat_n(ending, weight));
    }
    if rotation.is_empty() {
        return Err("--churn-mix: no ending has a weight".into());
    }
    Ok(rotation)
}

/// Silent sockets one churner holds at most; past that it waits for its oldest. Without the
/// cap, a server that never ended silent peers would collect one per cycle until the run ends.
const MAX_HELD: usize = 64;

/// What every churner shares.
pub struct Plan {
    /// The `--url` entries: churner i cycles against URL i % n, as client i would.
    pub targets: Vec<Target>,
    pub symbols: Vec<String>,
    /// Loopback source addresses, rotated per cycle so TIME_WAIT never exhausts one's ports
    /// (used only towards IPv4 loopback targets: see `target::source_for`).
    pub sources: Vec<Option<IpAddr>>,
    /// Diff events to receive before leaving.
    pub events: usize,
    pub mix: Vec<Ending>,
    pub silent_hold: Duration,
    /// Bound on each phase of a cycle (connect and upgrade, events, the close).
    pub timeout: Duration,
    /// Interval between connects over all churners (None: as fast as they go).
    pub pace: Option<Duration>,
}

impl Plan {
    pub fn new(targets: Vec<Target>, symbols: Vec<String>, sources: Vec<Option<IpAddr>>) -> Self {
        Plan {
            targets,
            symbols,
            sources,
            events: 3,
            mix: vec![Ending::Clean],
            silent_hold: Duration::from_secs(90),
            timeout: Duration::from_secs(10),
            pace: None,
        }
    }
}

/// Counters shared by all churners.
pub struct ChurnStats {
    cycles: AtomicU64,
    connects: AtomicU64,
    events: AtomicU64,
    gaps: AtomicU64,
    endings: [AtomicU64; 4],
    errors: Mutex<BTreeMap<&'static str, u64>>,
    connect_ms: Mutex<Histogram<u64>>,
    next_connect: Mutex<Instant>,
}

impl ChurnStats {
    pub fn new() -> Self {
        ChurnStats {
            cycles: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            events: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            endings: Default::default(),
            errors: Mutex::new(BTreeMap::new()),
            connect_ms: Mutex::new(histogram()),
            next_connect: Mutex::new(Instant::now()),
        }
    }

    /// Records how a cycle ended.
    fn ended(&self, ending: Ending, result: Result<(), &'static str>) {
        match result {
            Ok(()) => {
                self.cycles.fetch_add(1, Ordering::Relaxed);
                self.endings[ending.index()].fetch_add(1, Ordering::Relaxed);
            }
            Err(kind) => *self.errors.lock().entry(kind).or_default() += 1,
        }
    }

    /// The instant this churner may connect: one slot per `pace` over all churners.
    fn slot(&self, pace: Duration) -> Instant {
        let mut next = self.next_connect.lock();
        let slot = (*next).max(Instant::now());
        *next = slot + pace;
        slot
    }

    pub fn report(&self, churners: usize, duration: Duration) -> ChurnReport {
        let seconds = duration.as_secs_f64().max(1e-9);
        let cycles = self.cycles.load(Ordering::Relaxed);
        let connects = self.connects.load(Ordering::Relaxed);
        ChurnReport {
            churners,
            duration_s: duration.as_secs_f64(),
            cycles,
            cycles_per_s: cycles as f64 / seconds,
            connects,
            connects_per_s: connects as f64 / seconds,
            events: self.events.load(Ordering::Relaxed),
            gaps: self.gaps.load(Ordering::Relaxed),
            endings: ENDINGS
                .iter()
                .map(|(name, e)| {
                    (
                        name.to_string(),
                        self.endings[e.index()].load(Ordering::Relaxed),
                    )
                })
                .collect(),
            errors: self
                .errors
                .lock()
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
            connect_ms: Percentiles::of(&self.connect_ms.lock()),
        }
    }
}

/// The `churn` section of the report.
#[derive(Serialize, Debug)]
pub struct ChurnReport {
    pub churners: usize,
    pub duration_s: f64,
    /// Cycles completed: connected, subscribed, got the events, left as planned (and, where
    /// checkable, saw the server close).
    pub cycles: u64,
    pub cycles_per_s: f64,
    /// Successful upgrades (a cycle that fails later still counts its connect).
    pub connects: u64,
    pub connects_per_s: f64,
    pub events: u64,
    /// Diffs whose `U` did not follow the previous `u` on the same connection.
    pub gaps: u64,
    /// Completed cycles by how they left.
    pub endings: BTreeMap<String, u64>,
    /// Failed cycles by what failed.
    pub errors: BTreeMap<String, u64>,
    pub connect_ms: Percentiles,
}

pub fn print(report: &ChurnReport) {
    println!(
        "churn              {} churners, {} cycles ({:.0}/s), {} connects ({:.0}/s) in {:.1} s",
        report.churners,
        report.cycles,
        report.cycles_per_s,
        report.connects,
        report.connects_per_s,
        report.duration_s
    );
    println!("churn endings      {:?}", report.endings);
    println!(
        "churn errors       {} {:?}",
        report.errors.values().sum::<u64>(),
        report.errors
    );
    println!(
        "churn events       {} ({} gaps), connect ms p50 {} p99 {} max {}",
        report.events,
        report.gaps,
        report.connect_ms.p50,
        report.connect_ms.p99,
        report.connect_ms.max
    );
}

/// How a cycle subscribes.
#[derive(Clone, Copy)]
enum Subscribe {
    /// `/ws/<s>@depth@0ms`
    RawUrl,
    /// `/stream?streams=<s>@depth@0ms`
    CombinedUrl,
    /// `/ws`, then SUBSCRIBE
    Message,
}

/// One churner: cycles until told to stop. A failed cycle is counted and followed by a short
/// pause, so a dead server is not hammered in a tight loop. Silent cycles end in a task of their
/// own (at most [`MAX_HELD`]), aborted when the churner returns.
pub async fn run(
    id: usize,
    plan: Arc<Plan>,
    stats: Arc<ChurnStats>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(target) = plan
        .targets
        .get(crate::target::url_index(id, plan.targets.len()))
    else {
        return;
    };
    let mut held = JoinSet::new();
    for cycle in 0usize.. {
        while let Some(done) = held.try_join_next() {
            stats.ended(Ending::Silent, done.unwrap_or(Err("silent_task")));
        }
        if held.len() >= MAX_HELD {
            tokio::select! {
                done = held.join_next() => if let Some(done) = done {
                    stats.ended(Ending::Silent, done.unwrap_or(Err("silent_task")));
                },
                _ = crate::client::stopped(&mut stop) => return,
            }
        }
        if *stop.borrow() {
            return;
        }
        let n = id.wrapping_mul(7919).wrapping_add(cycle);
        let ending = plan.mix[n % plan.mix.len()];
        let subscribe = [
            Subscribe::RawUrl,
            Subscribe::CombinedUrl,
            Subscribe::Message,
        ][(id + cycle) % 3];
        let symbol = &plan.symbols[n % plan.symbols.len()];
        let source = crate::target::source_for(target, &plan.sources, n);
        let outcome = async {
            if let Some(pace) = plan.pace {
                sleep_until(stats.slot(pace)).await;
            }
            one_cycle(&plan, target, &stats, ending, subscribe, symbol, source).await
        };
        let result = tokio::select! {
            result = outcome => result,
            _ = crate::client::stopped(&mut stop) => return,
        };
        match result {
            Ok(Some(ws)) => {
                let (hold, within) = (plan.silent_hold, plan.timeout);
                held.spawn(async move {
                    tokio::time::sleep(hold).await;
                    server_closes(ws, within, "silent_not_closed").await
                });
            }
            Ok(None) => stats.ended(ending, Ok(())),
            Err(kind) => {
                stats.ended(ending, Err(kind));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = crate::client::stopped(&mut stop) => return,
                }
            }
        }
    }
}

/// Only the fields the gap check needs.
#[derive(Deserialize)]
#[allow(non_snake_case)]
struct Diff<'a> {
    #[serde(borrow)]
    e: Option<&'a str>,
    U: Option<u64>,
    u: Option<u64>,
}

#[derive(Deserialize)]
struct Wrapped<'a> {
    #[serde(borrow)]
    data: Option<Diff<'a>>,
}

/// `(U, u)` of a diff event, raw or combined; None for anything else.
fn diff_ids(text: &str) -> Option<(u64, u64)> {
    let mut bytes = text.as_bytes().to_vec();
    let diff = if bytes.starts_with(b"{\"stream\"") {
        simd_json::serde::from_slice::<Wrapped>(&mut bytes)
            .ok()?
            .data?
    } else {
        simd_json::serde::from_slice::<Diff>(&mut bytes).ok()?
    };
    match (diff.e, diff.U, diff.u) {
        (Some("depthUpdate"), Some(first), Some(last)) => Some((first, last)),
        _ => None,
    }
}

/// One connection, up to its ending. A silent ending returns the socket, still open and no
/// longer read, for the caller to hold.
async fn one_cycle(
    plan: &Plan,
    target: &Target,
    stats: &ChurnStats,
    ending: Ending,
    subscribe: Subscribe,
    symbol: &str,
    source: Option<IpAddr>,
) -> Result<Option<WebSocketStream<TcpStream>>, &'static str> {
    let deadline = Instant::now() + plan.timeout;
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|_| "socket")?;
    if let Some(source) = source {
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|_| "bind")?;
    }
    if ending == Ending::Silent {
        // A small window, so the server's writes back up as a vanished peer's would.
        let _ = socket.set_recv_buffer_size(1024);
    }
    let started = Instant::now();
    let stream = timeout_at(deadline, socket.connect(target.addr))
        .await
        .map_err(|_| "connect_timeout")?
        .map_err(|_| "connect")?;
    let _ = stream.set_nodelay(true);
    // Real time: a cycle takes its few diffs in tens of milliseconds, not seconds.
    let name = format!("{symbol}@depth@0ms");
    let url = match subscribe {
        Subscribe::RawUrl => format!("{}/ws/{name}", target.base),
        Subscribe::CombinedUrl => format!("{}/stream?streams={name}", target.base),
        Subscribe::Message => format!("{}/ws", target.base),
    };
    let upgrade = tokio_tungstenite::client_async_with_config(
        url,
        stream,
        Some(crate::client::ws_config(false)),
    );
    let (mut ws, _) = timeout_at(deadline, upgrade)
        .await
        .map_err(|_| "upgrade_timeout")?
        .map_err(|e| match e {
            tungstenite::Error::Http(response) => match response.status().as_u16() {
                429 => "upgrade_429",
                503 => "upgrade_503",
                _ => "upgrade_status",
            },
            _ => "upgrade",
        })?;
    stats.connects.fetch_add(1, Ordering::Relaxed);
    stats
        .connect_ms
        .lock()
        .saturating_record(started.elapsed().as_millis().max(1) as u64);
    if let Subscribe::Message = subscribe {
        let request = format!(r#"{{"method":"SUBSCRIBE","params":["{name}"],"id":1}}"#);
        timeout_at(deadline, ws.send(Message::text(request)))
            .await
            .map_err(|_| "subscribe_timeout")?
            .map_err(|_| "subscribe")?;
    }

    let deadline = Instant::now() + plan.timeout;
    let mut last_u = None;
    let mut received = 0;
    while received < plan.events {
        let message = timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "events_timeout")?;
        match message {
            Some(Ok(Message::Text(text))) => {
                let Some((first, last)) = diff_ids(&text) else {
                    continue;
                };
                if last_u.is_some_and(|u: u64| first != u + 1) {
                    stats.gaps.fetch_add(1, Ordering::Relaxed);
                }
                last_u = Some(last);
                received += 1;
                stats.events.fetch_add(1, Ordering::Relaxed);
            }
            Some(Ok(Message::Close(_))) => return Err("closed_by_server"),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Err("dropped_by_server"),
        }
    }

    match ending {
        Ending::Clean => {
            let deadline = Instant::now() + plan.timeout;
            timeout_at(deadline, ws.close(None))
                .await
                .map_err(|_| "close_timeout")?
                .map_err(|_| "close")?;
            // Data already in flight comes first; the echo ends the stream.
            loop {
                match timeout_at(deadline, ws.next()).await {
                    Err(_) => return Err("close_not_echoed"),
                    Ok(Some(Ok(_))) => continue,
                    Ok(Some(Err(_)) | None) => return Ok(None),
                }
            }
        }
        Ending::Drop => {
            let tcp = ws.get_mut();
            timeout_at(Instant::now() + plan.timeout, tcp.shutdown())
                .await
                .map_err(|_| "drop_timeout")?
                .map_err(|_| "drop")?;
            server_closes(ws, plan.timeout, "drop_not_closed").await?;
            Ok(None)
        }
        Ending::Rst => {
            ws.get_ref().set_zero_linger().map_err(|_| "rst")?;
            drop(ws);
            Ok(None)
        }
        Ending::Silent => Ok(Some(ws)),
    }
}

/// Reads raw bytes until the server's FIN or reset: proof that it closed its side. Whatever was
/// in flight is discarded; the WebSocket layer is done with.
async fn server_closes(
    ws: WebSocketStream<TcpStream>,
    within: Duration,
    error: &'static str,
) -> Result<(), &'static str> {
    let mut tcp = ws.into_inner();
    let deadline = Instant::now() + within;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match timeout_at(deadline, tcp.read(&mut chunk)).await {
            Err(_) => return Err(error),
            Ok(Ok(0) | Err(_)) => return Ok(()),
            Ok(Ok(_)) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_weights_expand_to_a_rotation() {
        let rotation = parse_mix("clean=2, rst=1,silent=0").unwrap();
        assert_eq!(rotation, [Ending::Clean, Ending::Clean, Ending::Rst]);
        assert!(parse_mix("clean=0").is_err());
        assert!(parse_mix("fin=1").is_err());
        assert!(parse_mix("clean").is_err());
        assert!(parse_mix("clean=1000").is_err());
    }

    #[test]
    fn diff_ids_reads_raw_and_combined_diffs_only() {
        let raw = r#"{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":5,"u":7,"b":[],"a":[]}"#;
        assert_eq!(diff_ids(raw), Some((5, 7)));
        let combined = format!(r#"{{"stream":"btcusdt@depth@0ms","data":{raw}}}"#);
        assert_eq!(diff_ids(&combined), Some((5, 7)));
        assert_eq!(diff_ids(r#"{"result":null,"id":1}"#), None);
        assert_eq!(diff_ids("not json"), None);
    }
}
