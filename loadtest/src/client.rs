//! One load client: connect, receive until told to stop, check every event on the way
//! ([`crate::follow`]); in the reconnect modes, connect again (to the next `--url`, resuming
//! when asked), and in the book modes compare the book with REST at the end.

use crate::follow::{Mode, Session};
use crate::stats::{SlowClose, Stats};
use crate::target::{self, RestError, Target};
use crate::transport::{Counted, Transport};
use futures_util::StreamExt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// A client's WebSocket, over a socket that counts its bytes.
type Ws = WebSocketStream<Counted<TcpStream>>;

/// How every client of the run connects and reconnects.
#[derive(Clone, Debug)]
pub struct Connecting {
    /// The `--url` targets; connection k of client i goes to target (i + k) % n.
    pub targets: Arc<Vec<Target>>,
    /// `--transport`: WebSocket, or one of the plain-HTTP transports for the same streams.
    pub transport: Transport,
    pub combined: bool,
    pub micros: bool,
    pub mode: Mode,
    /// `--reconnect-every`: drop the connection and reconnect this often.
    pub reconnect_every: Option<Duration>,
    /// `--reconnect-on-close`: a connection the server closes (or that drops) is opened
    /// again, until the run ends.
    pub reconnect_on_close: bool,
    /// Pause before each reconnect attempt (after a drop, a close or a failed attempt).
    pub reconnect_delay: Duration,
}

impl Connecting {
    /// The URL of a connection to `target` for `streams`, resuming `resume` when not empty.
    pub fn url(&self, target: &Target, streams: &[String], resume: &str) -> String {
        let mut query = Vec::new();
        let path = if self.combined {
            query.push(format!("streams={}", streams.join("/")));
            "/stream".to_string()
        } else {
            format!("/ws/{}", streams.join("/"))
        };
        if self.micros {
            query.push("timeUnit=MICROSECOND".into());
        }
        if self.mode.snapshot {
            query.push("snapshot=true".into());
        }
        if !resume.is_empty() {
            query.push(format!("resume={resume}"));
        }
        if query.is_empty() {
            format!("{}{path}", target.base)
        } else {
            format!("{}{path}?{}", target.base, query.join("&"))
        }
    }
}

/// What a client is told to do.
pub struct Plan {
    pub id: usize,
    /// Index of its first target in `--url`, for the per-URL breakdown.
    pub url_index: usize,
    pub streams: Vec<String>,
    pub connecting: Arc<Connecting>,
    /// Source addresses to spread over (see `target::sources`); the client takes its own.
    pub sources: Arc<Vec<Option<IpAddr>>>,
    /// Some(delay between reads) for a slow client.
    pub slow_read_every: Option<Duration>,
    pub recv_buffer: usize,
    pub started: Instant,
    /// At the end, how long a slow client may read at full speed to find a close the server
    /// sent behind its backlog, and a book client may read to compare its book with REST.
    pub drain: Duration,
}

/// Resolves once the run is told to stop (the guard `wait_for` returns is not held).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Slow clients read through a small buffer, so their backlog stays in the kernel where the
/// server's backpressure sees it, not in a 128 KiB userspace buffer that hides it for minutes.
///
/// Fast clients use 8 KiB, not tungstenite's default 128 KiB: it zero-fills its read chunk
/// before every read, and at 128 KiB that memset was 30% of the load generator's CPU (perf,
/// 3,000 clients), stolen from the server it measures. Events are under 2 KiB; a read that
/// fills 8 KiB simply reads again.
pub fn ws_config(slow: bool) -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(if slow { 4096 } else { 8192 })
}

/// Longest server message quoted in a connect-failure reason.
const MAX_QUOTED: usize = 120;

/// Why a client never got its WebSocket, as the report counts it: the step that failed and
/// the error's kind, or the server's HTTP answer to the upgrade with the Binance error code
/// and message from its body (`HTTP 429 -1003 Too many connection attempts ...`), so a refusal
/// names the limit that was hit.
fn connect_error(step: &str, error: &std::io::Error) -> String {
    format!("{step}: {}", error.kind())
}

fn upgrade_error(error: &tungstenite::Error) -> String {
    match error {
        tungstenite::Error::Http(response) => refusal(
            response.status().as_u16(),
            response.body().as_deref().unwrap_or_default(),
        ),
        tungstenite::Error::Io(e) => connect_error("upgrade", e),
        other => format!("upgrade: {}", quote(&other.to_string())),
    }
}

/// A refusal as the report counts it: `HTTP <status>` and the Binance code and message from
/// the body, or the status's canonical reason.
pub(crate) fn refusal(status: u16, body: &[u8]) -> String {
    let mut reason = format!("HTTP {status}");
    let body = serde_json::from_slice::<serde_json::Value>(body).ok();
    let code = body.as_ref().and_then(|b| b["code"].as_i64());
    let msg = body.as_ref().and_then(|b| b["msg"].as_str().map(quote));
    match (code, msg) {
        (Some(code), Some(msg)) => reason.push_str(&format!(" {code} {msg}")),
        (None, Some(msg)) => reason.push_str(&format!(" {msg}")),
        _ => {
            if let Some(text) = tungstenite::http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
            {
                reason.push_str(&format!(" {text}"));
            }
        }
    }
    reason
}

/// Server-supplied text made safe to print and count: printable ASCII, at most [`MAX_QUOTED`]
/// characters.
fn quote(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
        .take(MAX_QUOTED)
        .collect();
    if text.chars().count() > MAX_QUOTED {
        out.push_str("...");
    }
    out
}

/// Opens a TCP connection from `source` and upgrades it.
async fn connect(
    plan: &Plan,
    stats: &Arc<Stats>,
    target: &Target,
    source: Option<IpAddr>,
    url: &str,
) -> Result<Ws, String> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| connect_error("socket", &e))?;
    if let Some(source) = source {
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| connect_error("bind", &e))?;
    }
    if plan.recv_buffer > 0 {
        let _ = socket.set_recv_buffer_size(plan.recv_buffer as u32);
    }
    let stream = socket
        .connect(target.addr)
        .await
        .map_err(|e| connect_error("connect", &e))?;
    let _ = stream.set_nodelay(true);
    stats.transport.requests.fetch_add(1, Ordering::Relaxed);
    tokio_tungstenite::client_async_with_config(
        url,
        Counted::new(stream, stats.clone(), plan.id),
        Some(ws_config(plan.slow_read_every.is_some())),
    )
    .await
    .map(|(ws, _)| ws)
    .map_err(|e| upgrade_error(&e))
}

/// Why a connection ended.
enum End {
    /// The run is over; the close code as the report counts it.
    Stopped(u16),
    /// `--reconnect-every` came due; the client closed.
    Reconnect,
    /// The server closed it, or it dropped.
    Closed(u16),
}

/// A REST depth fetch in flight for one diff stream (`--rest-book`).
type Fetch = Pin<Box<dyn Future<Output = (usize, Result<Rest, RestError>)> + Send>>;

/// A REST depth snapshot and the size of the response that carried it.
type Rest = (crate::book::RestSnapshot, usize);

/// Awaits `fetch` if there is one, else never resolves (a disabled `select!` branch).
async fn fetched(fetch: &mut Option<Fetch>) -> (usize, Result<Rest, RestError>) {
    match fetch {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

pub async fn run(plan: Plan, stats: Arc<Stats>, mut stop: watch::Receiver<bool>) {
    let slow = plan.slow_read_every.is_some();
    let connecting = plan.connecting.clone();
    let targets = &connecting.targets;
    let mut session = Session::new(
        plan.id,
        plan.url_index,
        slow,
        connecting.mode,
        &plan.streams,
    );
    session.micros = connecting.micros;
    let started_us = now_us().saturating_sub(plan.started.elapsed().as_micros() as u64);
    if connecting.transport != Transport::Ws {
        session.begin(false, now_us());
        match connecting.transport {
            Transport::Sse => {
                crate::sse::run(&plan, &mut session, &stats, &mut stop, started_us).await
            }
            Transport::LongPoll => {
                crate::poll::run(&plan, &mut session, &stats, &mut stop, started_us, None).await
            }
            Transport::Poll(every) => {
                crate::poll::run(
                    &plan,
                    &mut session,
                    &stats,
                    &mut stop,
                    started_us,
                    Some(every),
                )
                .await
            }
            Transport::Ws => {}
        }
        session.flush(&stats);
        return;
    }
    let mut connections = 0usize;
    let mut final_code = 1000;
    loop {
        let target = &targets[(plan.url_index + connections) % targets.len().max(1)];
        let source = target::source_for(target, &plan.sources, plan.id);
        let resume = session.resume_param();
        let url = connecting.url(target, &plan.streams, &resume);
        let connect_start = Instant::now();
        let connected_at_us = now_us();
        let ws = tokio::select! {
            ws = connect(&plan, &stats, target, source, &url) => ws,
            _ = stopped(&mut stop) => break,
        };
        let mut ws = match ws {
            Ok(ws) => ws,
            Err(reason) if connections == 0 => {
                return stats.connect_failed(plan.url_index, reason);
            }
            Err(_) => {
                // A reconnect that failed (the server restarting): the next URL, after a pause.
                stats
                    .sync
                    .reconnect_failures
                    .fetch_add(1, Ordering::Relaxed);
                connections += 1;
                tokio::select! {
                    _ = tokio::time::sleep(connecting.reconnect_delay) => continue,
                    _ = stopped(&mut stop) => break,
                }
            }
        };
        stats
            .connect_ms
            .lock()
            .saturating_record(connect_start.elapsed().as_millis().max(1) as u64);
        if connections == 0 {
            stats
                .url(plan.url_index)
                .connected
                .fetch_add(1, Ordering::Relaxed);
        } else {
            stats.sync.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        stats.connected.fetch_add(1, Ordering::Relaxed);
        session.begin(!resume.is_empty(), connected_at_us);
        let end = read(
            &plan,
            &mut ws,
            &mut session,
            target,
            source,
            &stats,
            &mut stop,
            started_us,
        )
        .await;
        stats.connected.fetch_sub(1, Ordering::Relaxed);
        connections += 1;
        let lost_us = now_us().saturating_sub(started_us);
        match end {
            End::Stopped(code) => {
                stats.closed(code);
                final_code = code;
                break;
            }
            End::Reconnect => {
                stats.closed(1000);
                session.lost(lost_us);
            }
            End::Closed(code) => {
                stats.closed(code);
                final_code = code;
                if !connecting.reconnect_on_close || *stop.borrow() {
                    break;
                }
                session.lost(lost_us);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(connecting.reconnect_delay) => {}
            _ = stopped(&mut stop) => break,
        }
    }
    session.flush(&stats);
    if slow && session.resynced {
        stats.sync.slow_resynced.fetch_add(1, Ordering::Relaxed);
    }
    if slow {
        let at_s = plan.started.elapsed().as_secs_f64();
        stats.slow_closed.lock().push(SlowClose {
            client: plan.id,
            at_s,
            code: final_code,
        });
    }
}

/// Receives on one connection until the run stops, a reconnect is due or the server closes.
#[allow(clippy::too_many_arguments)]
async fn read(
    plan: &Plan,
    ws: &mut Ws,
    session: &mut Session,
    target: &Target,
    source: Option<IpAddr>,
    stats: &Stats,
    stop: &mut watch::Receiver<bool>,
    started_us: u64,
) -> End {
    let reconnect_at = plan
        .connecting
        .reconnect_every
        .map(|every| tokio::time::Instant::now() + every);
    let mut scratch: Vec<u8> = Vec::with_capacity(4096);
    let mut fetch: Option<Fetch> = None;
    loop {
        if fetch.is_none() {
            if let Some(i) = session.next_fetch() {
                let symbol = session.streams[i].symbol.clone();
                let addr = target.addr;
                fetch = Some(Box::pin(async move {
                    let result = target::depth(addr, source, &symbol, 5000).await;
                    if matches!(result, Err(RestError::Limited)) {
                        // The server's weight limit: wait before asking again, as a Binance
                        // client must (reading on meanwhile).
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    (i, result)
                }));
            }
        }
        let message = tokio::select! {
            message = ws.next() => message,
            (i, result) = fetched(&mut fetch) => {
                fetch = None;
                session.on_rest(i, result.ok(), stats, started_us);
                continue;
            }
            _ = sleep_until_opt(reconnect_at) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                return End::Reconnect;
            }
            _ = stopped(stop) => return End::Stopped(stop_connection(plan, ws, session, target, source, stats, started_us).await),
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                receive(
                    plan,
                    session,
                    &mut scratch,
                    text.as_bytes(),
                    stats,
                    started_us,
                );
                if let Some(every) = plan.slow_read_every {
                    // The stop must not wait out a slow client's pause.
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stopped(stop) => return End::Stopped(stop_connection(plan, ws, session, target, source, stats, started_us).await),
                    }
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return End::Closed(frame.map_or(1005, |f| u16::from(f.code)))
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return End::Closed(1006),
        }
    }
}

/// Counts and checks one event's payload (from an SSE `data:` line or a poll answer),
/// received at `received_us`; `data` is parsed in place.
pub(crate) fn deliver(
    client: usize,
    session: &mut Session,
    data: &mut [u8],
    stats: &Stats,
    received_us: u64,
    started_us: u64,
) {
    if let Some(counters) = stats.per_client.get(client) {
        counters
            .bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        counters.events.fetch_add(1, Ordering::Relaxed);
    }
    session.check(data, received_us, started_us, stats);
}

/// Counts and checks one text message.
fn receive(
    plan: &Plan,
    session: &mut Session,
    scratch: &mut Vec<u8>,
    text: &[u8],
    stats: &Stats,
    started_us: u64,
) {
    let received_us = now_us();
    let counters = &stats.per_client[plan.id];
    counters
        .bytes
        .fetch_add(text.len() as u64, Ordering::Relaxed);
    counters.events.fetch_add(1, Ordering::Relaxed);
    scratch.clear();
    scratch.extend_from_slice(text);
    session.check(scratch, received_us, started_us, stats);
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The run is over: in the book modes, compare each live book with REST first; then close.
async fn stop_connection(
    plan: &Plan,
    ws: &mut Ws,
    session: &mut Session,
    target: &Target,
    source: Option<IpAddr>,
    stats: &Stats,
    started_us: u64,
) -> u16 {
    let deadline = tokio::time::Instant::now() + plan.drain;
    if session.mode.books() {
        if let Some(code) = check_books(
            plan, ws, session, target, source, stats, started_us, deadline,
        )
        .await
        {
            return code;
        }
    }
    finish(ws, plan.slow_read_every.is_some(), deadline).await
}

/// REST fetches per book before its comparison is given up as inconclusive.
const CHECK_ATTEMPTS: usize = 10;

/// Compares every live book with a REST snapshot at the same update id: fetch REST, read
/// diffs until the book reaches its `lastUpdateId`, compare; when the book passed it (a
/// windowed stream jumped over it) or REST is older than the book, fetch again. Returns the
/// close code if the connection ended meanwhile.
#[allow(clippy::too_many_arguments)]
async fn check_books(
    plan: &Plan,
    ws: &mut Ws,
    session: &mut Session,
    target: &Target,
    source: Option<IpAddr>,
    stats: &Stats,
    started_us: u64,
    deadline: tokio::time::Instant,
) -> Option<u16> {
    let mut scratch = Vec::with_capacity(4096);
    for i in 0..session.streams.len() {
        if !session.streams[i].book_live() {
            continue;
        }
        let mut concluded = false;
        for _ in 0..CHECK_ATTEMPTS {
            let Some(book) = session.streams[i].book.as_ref() else {
                break;
            };
            let limit = crate::book::rest_limit(book);
            let symbol = session.streams[i].symbol.clone();
            let rest = match tokio::time::timeout_at(
                deadline,
                target::depth(target.addr, source, &symbol, limit),
            )
            .await
            {
                Err(_) => break,
                Ok(Err(RestError::Limited)) => {
                    stats
                        .sync
                        .book_checks_limited
                        .fetch_add(1, Ordering::Relaxed);
                    concluded = true;
                    break;
                }
                Ok(Err(RestError::Other)) => continue,
                Ok(Ok((rest, _))) => rest,
            };
            // Read on until the book reaches REST's id (or passes it, or breaks).
            loop {
                let f = &session.streams[i];
                match &f.book {
                    Some(book) if f.book_live() && book.u < rest.last_update_id => {}
                    _ => break,
                }
                match tokio::time::timeout_at(deadline, ws.next()).await {
                    Err(_) => break,
                    Ok(Some(Ok(Message::Text(text)))) => receive(
                        plan,
                        session,
                        &mut scratch,
                        text.as_bytes(),
                        stats,
                        started_us,
                    ),
                    Ok(Some(Ok(Message::Close(frame)))) => {
                        stats
                            .sync
                            .book_checks_inconclusive
                            .fetch_add(1, Ordering::Relaxed);
                        return Some(frame.map_or(1005, |f| u16::from(f.code)));
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(_)) | None) => {
                        stats
                            .sync
                            .book_checks_inconclusive
                            .fetch_add(1, Ordering::Relaxed);
                        return Some(1006);
                    }
                }
            }
            let f = &session.streams[i];
            match &f.book {
                Some(book) if f.book_live() && book.u == rest.last_update_id => {
                    match book.compare(&rest, limit) {
                        Ok(()) => {
                            stats.sync.book_checks.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(why) => stats.sync.mismatch(format!(
                            "client {} {} at {}: {why}",
                            plan.id, f.name, book.u
                        )),
                    }
                    concluded = true;
                    break;
                }
                Some(_) if f.book_live() => {}
                // A gap broke the book: already counted as missed.
                _ => {
                    concluded = true;
                    break;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        if !concluded {
            stats
                .sync
                .book_checks_inconclusive
                .fetch_add(1, Ordering::Relaxed);
        }
    }
    None
}

/// Ends a client at the end of the run. A fast client closes normally. A slow one first reads
/// whatever is still in flight at full speed (until `deadline`): a server that evicted it put
/// its close frame behind that backlog, and the report must show the code the server sent,
/// not ours.
async fn finish<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    slow: bool,
    deadline: tokio::time::Instant,
) -> u16
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if slow {
        loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return frame.map_or(1005, |f| u16::from(f.code))
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_)) | None) => return 1006,
                Err(_) => break,
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_failures_name_the_refusal() {
        let refusal = |status: u16, body: &[u8]| {
            let response = tungstenite::http::Response::builder()
                .status(status)
                .body(Some(body.to_vec()))
                .unwrap();
            upgrade_error(&tungstenite::Error::Http(Box::new(response)))
        };
        assert_eq!(
            refusal(
                429,
                br#"{"code":-1003,"msg":"Too many connection attempts from this address: at most 300 per 5m."}"#
            ),
            "HTTP 429 -1003 Too many connection attempts from this address: at most 300 per 5m."
        );
        assert_eq!(
            refusal(503, b"<html>busy</html>"),
            "HTTP 503 Service Unavailable"
        );
        let long = format!(r#"{{"msg":"\u0007{}"}}"#, "x".repeat(500));
        let quoted = refusal(403, long.as_bytes());
        assert!(
            quoted.starts_with("HTTP 403  xxx") && quoted.ends_with("x..."),
            "{quoted}"
        );
        assert!(quoted.len() < 140);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            connect_error("connect", &refused),
            "connect: connection refused"
        );
    }
}
