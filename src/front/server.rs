//! The server: `run(listener, config, feed, shutdown)` is what the binary and every test drive
//! (mini-redis' shape). It owns the accept loop, the connection cap, and graceful shutdown.
//!
//! Every [shard](crate::fanout::shard) runs an accept loop on its own copy of the listening
//! socket, registered with its own reactor, so a connection is accepted by the thread it lives
//! on for the rest of its life (REST, upgrade, session and every write): no hand-off between
//! threads, one registration. The kernel wakes every shard waiting on the socket; whichever
//! runs first takes the connection, so a busy shard leaves new connections to an idle one.
//!
//! Shutdown: the `shutdown` future resolving flips a watch channel. Each shard then queues
//! `serverShutdown` and a 1001 close behind the data of every WebSocket connection it holds;
//! HTTP connections, SSE streams and polls watch it themselves. Every connection task holds a
//! clone of a drop-guard sender, so when the receiver sees all of them gone, every client has
//! been closed; the wait is bounded by `shutdown_timeout`.

use crate::config::Config;
use crate::engine;
use crate::fanout::shard::{Placement, ResyncLink, Shards};
use crate::front::admission::{AttemptLimiter, IpConnections};
use crate::front::auth::TokenSet;
use crate::front::context::Context;
use crate::front::transport;
use crate::front::weight::WeightLimiter;
use crate::front::{http, router};
use crate::market::feed::Feed;
use crate::metrics::live_stats::LiveStats;
use crate::metrics::{self, SessionMetrics, ShardMetrics};

use std::future::Future;
use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

/// Serves `listener` until `shutdown` resolves, then closes every client and returns: the
/// all-in-one server, simulating `feed` itself.
pub async fn run(
    listener: TcpListener,
    config: Config,
    feed: Feed,
    shutdown: impl Future,
) -> io::Result<()> {
    let start = engine::Start::simulate(&feed);
    run_with(listener, config, feed, start, shutdown).await
}

/// [`run`] with the engine thread started from `start`: a cluster gateway follows steps from
/// NATS, a cluster engine journals its simulation to NATS.
pub async fn run_with(
    listener: TcpListener,
    config: Config,
    feed: Feed,
    mut start: engine::Start,
    shutdown: impl Future,
) -> io::Result<()> {
    start
        .streams
        .set_history(config.trade_history, config.kline_history);
    // A cluster engine has no clients to resume; its gateways keep the history.
    if !config.engine_only {
        start.streams.set_recent_span(config.history);
    }
    // First, so a bad token file fails startup before anything is spawned.
    let tokens = match &config.auth_tokens {
        Some(path) => {
            Some(TokenSet::load(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?)
        }
        None => None,
    };
    let prometheus = metrics::install();
    metrics::register_feed(&feed);
    let upkeep = {
        let handle = prometheus.clone();
        tokio::spawn(async move {
            // Histogram samples wait in per-handle buckets until upkeep (or a scrape) folds them
            // in: at 100k frames/s, two samples each, a second of them is 1.6 MB. Folding is
            // proportional to the samples, so doing it often costs nothing more.
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        })
    };
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(transport::acceptor(cert, key)?),
        (None, None) => None,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--tls-cert and --tls-key go together",
            ));
        }
    };
    let feed = Arc::new(feed);
    let live = Arc::new(LiveStats::default());
    let session_metrics = SessionMetrics::new(live.clone());
    let shard_metrics = ShardMetrics::new(session_metrics.clone());
    let (resync, resyncs) = ResyncLink::channel(start.waker.clone());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (shards, links) = Shards::start(
        config.shard_count(),
        &shard_metrics,
        resync,
        shutdown_rx.clone(),
    )?;
    let (engine, engine_thread) = engine::spawn(
        feed.clone(),
        start,
        config.naive_fanout,
        live,
        links,
        shard_metrics,
        resyncs,
    )?;
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let shutdown_timeout = config.shutdown_timeout;
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let ctx = Arc::new(Context {
        feed,
        engine,
        metrics: session_metrics,
        prometheus,
        attempts: AttemptLimiter::new(
            config.max_connection_attempts_per_ip,
            config.connection_attempt_window,
        ),
        ip_connections: IpConnections::new(config.max_connections_per_ip),
        weights: WeightLimiter::new(match config.rest_weight_limit {
            0 => u32::MAX,
            limit => limit,
        }),
        tokens,
        config,
        shutdown: shutdown_rx,
        next_conn: AtomicU64::new(1),
        _done: done_tx,
    });

    // Every shard accepts on its own copy of the listening socket, registered with its own
    // reactor: a connection is accepted on the thread it will live on, so nothing about it
    // crosses threads, and the socket is registered once.
    let listener = listener.into_std()?;
    for shard in shards.iter() {
        let listener = listener.try_clone()?;
        let accept = Acceptor {
            placement: shard.place(),
            ctx: ctx.clone(),
            limit: limit.clone(),
            tls: tls.clone(),
        };
        shard.spawn_task(async move {
            match TcpListener::from_std(listener) {
                Ok(listener) => accept.run(listener).await,
                Err(e) => tracing::error!("shard {} cannot accept: {e}", accept.placement.shard),
            }
        });
    }
    shutdown.await;
    // The shards' accept loops see this, stop, and close their copies of the listener.
    drop(listener);
    let _ = shutdown_tx.send(true);
    drop(ctx);
    // Resolves once every connection task (each holding a Context clone) has ended.
    let _ = tokio::time::timeout(shutdown_timeout, done_rx.recv()).await;
    upkeep.abort();
    // The engine thread ends when the last EngineHandle (inside the Contexts) is gone; after a
    // timed-out wait some may still be alive, so do not block on it.
    if engine_thread.is_finished() {
        let _ = engine_thread.join();
    }
    Ok(())
}

/// One shard's accept loop and what it needs to admit a connection.
struct Acceptor {
    /// Where the connections it accepts live.
    placement: Placement,
    ctx: Arc<Context>,
    limit: Arc<Semaphore>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Acceptor {
    /// Accepts until shutdown: each connection under the connection cap becomes a task on this
    /// shard; one over it gets a 503.
    async fn run(self, listener: TcpListener) {
        let mut shutdown = self.ctx.shutdown.clone();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let accepted = tokio::select! {
                _ = shutdown.changed() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let ctx = self.ctx.clone();
            let Ok(permit) = self.limit.clone().try_acquire_owned() else {
                metrics::rejected(metrics::Rejection::ConnectionCap);
                tokio::spawn(async move {
                    let mut stream = stream;
                    let busy =
                        http::Response::error(503, -1003, "Too many connections; try again later.");
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        http::write_response(&mut stream, &busy, true),
                    )
                    .await;
                    drop(ctx);
                });
                continue;
            };
            tune(&stream, &ctx.config);
            let placement = self.placement;
            match self.tls.clone() {
                None => tokio::spawn(router::serve(stream, peer.ip(), ctx, permit, placement)),
                // Its own task, so plain connections never carry the TLS path's much larger
                // future (about 11 KB against 1.7 KB).
                Some(acceptor) => tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(ctx.config.handshake_timeout, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            router::serve(stream, peer.ip(), ctx, permit, placement).await
                        }
                        _ => metrics::rejected(metrics::Rejection::TlsHandshake),
                    }
                }),
            };
        }
    }
}

/// Socket options for every accepted connection: no Nagle delay (writers batch themselves), and
/// the configured send buffer.
fn tune(stream: &TcpStream, config: &Config) {
    let _ = stream.set_nodelay(true);
    if config.socket_send_buffer > 0 {
        let _ = socket2::SockRef::from(stream).set_send_buffer_size(config.socket_send_buffer);
    }
}
