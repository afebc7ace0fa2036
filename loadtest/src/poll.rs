//! `--transport longpoll` and `--transport poll[=INTERVAL]`: each client asks
//! `GET /poll?streams=..&cursor=..` over one keep-alive connection, passing the cursor of the
//! previous answer (the first request has none and learns where "now" is). A long poll asks
//! again as soon as it is answered (the server holds each request until there is something
//! new); a short poll adds `wait=0` and asks every INTERVAL, so each event waits on the server
//! until the next request: receive time minus the event's `E` is how stale it was.

use crate::client::{now_us, Plan};
use crate::follow::Session;
use crate::http::{self, Conn, HttpError};
use crate::stats::Stats;
use crate::target;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// `{"cursor":"<ids>","events":[{"stream":..,"data":{..}},..]}`; each event's `data` is kept
/// as the raw payload and checked as a WebSocket client checks a raw frame.
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    cursor: &'a str,
    #[serde(borrow)]
    events: Vec<PollEvent<'a>>,
}

#[derive(Deserialize)]
struct PollEvent<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Where a short poller asks first within its interval: spread by the golden ratio over the
/// client ids, so 1,000 clients started within half a second do not ask in one burst every
/// interval (browsers polling every 3 s are not in step either).
fn phase(id: usize, every: Duration) -> Duration {
    let fraction = (id as f64 * 0.618_033_988_75).fract();
    every.mul_f64(fraction)
}

/// One polling client until the run stops. `every`: Some(interval) for short polls.
pub async fn run(
    plan: &Plan,
    session: &mut Session,
    stats: &Arc<Stats>,
    stop: &mut watch::Receiver<bool>,
    started_us: u64,
    every: Option<Duration>,
) {
    let connecting = &plan.connecting;
    let targets = &connecting.targets;
    let streams = plan.streams.join("/");
    let mut cursor: Option<String> = None;
    let mut conn: Option<Conn> = None;
    let mut connections = 0usize;
    let mut answered = false;
    let mut scratch = Vec::with_capacity(4096);
    // A short poller's first request, then one every interval on a fixed schedule (a late
    // answer does not shift the next request, as a browser's setInterval does not).
    let mut next_at =
        tokio::time::Instant::now() + every.map_or(Duration::ZERO, |e| phase(plan.id, e));
    // After a lost connection the request is made again at once, not at the next interval.
    let mut retry = false;
    loop {
        if let (Some(every), false) = (every, std::mem::take(&mut retry)) {
            tokio::select! {
                _ = tokio::time::sleep_until(next_at) => {}
                _ = crate::client::stopped(stop) => break,
            }
            next_at += every;
        }
        if *stop.borrow() {
            break;
        }
        let target = &targets[(plan.url_index + connections) % targets.len().max(1)];
        if conn.is_none() {
            let source = target::source_for(target, &plan.sources, plan.id);
            let connect_start = Instant::now();
            let opened = tokio::select! {
                opened = http::open(target.addr, source, stats, plan.id) => opened,
                _ = crate::client::stopped(stop) => break,
            };
            match opened {
                Ok(c) => {
                    if connections == 0 {
                        stats
                            .connect_ms
                            .lock()
                            .saturating_record(connect_start.elapsed().as_millis().max(1) as u64);
                    } else {
                        stats.transport.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    stats.connected.fetch_add(1, Ordering::Relaxed);
                    conn = Some(c);
                }
                Err(reason) if connections == 0 => {
                    return stats.connect_failed(plan.url_index, reason);
                }
                Err(_) => {
                    stats
                        .transport
                        .reconnect_failures
                        .fetch_add(1, Ordering::Relaxed);
                    connections += 1;
                    retry = true;
                    tokio::select! {
                        _ = tokio::time::sleep(connecting.reconnect_delay) => continue,
                        _ = crate::client::stopped(stop) => break,
                    }
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let mut query = vec![format!("streams={streams}")];
        if let Some(cursor) = &cursor {
            query.push(format!("cursor={cursor}"));
        }
        if every.is_some() {
            query.push("wait=0".into());
        }
        if connecting.micros {
            query.push("timeUnit=MICROSECOND".into());
        }
        let path = format!("/poll?{}", query.join("&"));
        stats.transport.requests.fetch_add(1, Ordering::Relaxed);
        let answer = tokio::select! {
            answer = request(c, &path, stats) => answer,
            _ = crate::client::stopped(stop) => break,
        };
        let received_us = now_us();
        let (head, body) = match answer {
            Ok(answer) => answer,
            Err(_) => {
                // The keep-alive ended (the server's idle timeout between short polls longer
                // than its limit, a restart): open another and ask again.
                conn = None;
                stats.connected.fetch_sub(1, Ordering::Relaxed);
                connections += 1;
                retry = true;
                tokio::select! {
                    _ = tokio::time::sleep(connecting.reconnect_delay) => continue,
                    _ = crate::client::stopped(stop) => break,
                }
            }
        };
        if head.close {
            conn = None;
            stats.connected.fetch_sub(1, Ordering::Relaxed);
            connections += 1;
        }
        if head.status != 200 {
            stats.transport.http_error(head.status);
            if !answered {
                // The first request refused (a stream that cannot be polled, a per-IP limit):
                // it will not work later either. Counted as the WebSocket client counts a
                // refused upgrade.
                if conn.take().is_some() {
                    stats.connected.fetch_sub(1, Ordering::Relaxed);
                }
                return stats
                    .connect_failed(plan.url_index, crate::client::refusal(head.status, &body));
            }
            if head.status == 410 {
                // The cursor fell out of the server's history: start again from now. What
                // was lost is not counted as a gap (the server said so); the 410 is counted.
                cursor = None;
                session.begin(false, now_us());
            } else if every.is_none() {
                // A long poller must not spin on a refusal (503 busy, 429).
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = crate::client::stopped(stop) => break,
                }
            }
            continue;
        }
        if !answered {
            answered = true;
            stats
                .url(plan.url_index)
                .connected
                .fetch_add(1, Ordering::Relaxed);
        }
        let Ok(parsed) = serde_json::from_slice::<Answer>(&body) else {
            stats.transport.http_error(0);
            continue;
        };
        for event in &parsed.events {
            scratch.clear();
            scratch.extend_from_slice(event.data.get().as_bytes());
            crate::client::deliver(
                plan.id,
                session,
                &mut scratch,
                stats,
                received_us,
                started_us,
            );
        }
        cursor = Some(parsed.cursor.to_string());
    }
    if conn.is_some() {
        stats.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One request and its whole response on `conn`.
async fn request(
    conn: &mut Conn,
    path: &str,
    stats: &Stats,
) -> Result<(http::Head, Vec<u8>), HttpError> {
    conn.send(path, "application/json", "").await?;
    let head = conn.head().await?;
    stats
        .transport
        .response_head_bytes
        .fetch_add(head.len as u64, Ordering::Relaxed);
    let body = conn.body(&head).await?;
    Ok((head, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_keep_each_payload_raw() {
        let body = br#"{"cursor":"12.7","events":[{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":11,"u":12,"b":[],"a":[]}},{"stream":"btcusdt@trade","data":{"e":"trade","t":7}}]}"#;
        let answer: Answer = serde_json::from_slice(body).unwrap();
        assert_eq!(answer.cursor, "12.7");
        assert_eq!(answer.events.len(), 2);
        assert_eq!(answer.events[1].data.get(), r#"{"e":"trade","t":7}"#);
        assert!(serde_json::from_slice::<Answer>(b"{\"code\":-1000}").is_err());
    }

    #[test]
    fn short_pollers_spread_over_the_interval() {
        let every = Duration::from_secs(3);
        let mut phases: Vec<Duration> = (0..1000).map(|id| phase(id, every)).collect();
        assert!(phases.iter().all(|p| *p < every));
        phases.sort();
        let widest = phases.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(widest < Duration::from_millis(30), "{widest:?}");
    }
}
