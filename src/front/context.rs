//! What every connection task shares: configuration, the engine's handle, metrics, admission
//! state, and the shutdown signal.

use super::admission::{AttemptLimiter, IpConnections, IpSlot};
use super::auth::TokenSet;
use super::http::Response;
use super::weight::WeightLimiter;
use crate::config::Config;
use crate::engine::EngineHandle;
use crate::market::feed::Feed;
use crate::metrics::Rejection;
use crate::metrics::SessionMetrics;
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// What every connection task shares.
pub struct Context {
    pub config: Config,
    pub feed: Arc<Feed>,
    pub engine: EngineHandle,
    pub metrics: SessionMetrics,
    pub prometheus: PrometheusHandle,
    /// Per-IP connection-attempt limiter (SPEC.md: 300 per 5 minutes).
    pub attempts: AttemptLimiter,
    /// Open WebSocket connections per IP (`--max-connections-per-ip`).
    pub ip_connections: Arc<IpConnections>,
    /// Request weight per IP per minute (`--rest-weight-limit`), spent by REST and WebSocket
    /// API requests alike: Binance counts both against one budget.
    pub weights: WeightLimiter,
    /// The accepted tokens when `--auth-tokens` is set.
    pub tokens: Option<TokenSet>,
    /// Flips to true once, when shutdown begins.
    pub shutdown: watch::Receiver<bool>,
    pub(crate) next_conn: AtomicU64,
    /// Held by every connection task; see the module docs.
    pub(crate) _done: mpsc::Sender<()>,
}

impl Context {
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a connection attempt from `peer` (a WebSocket upgrade or an SSE stream) under the
    /// per-IP attempt limit; past it, the `429` to answer with, counted.
    pub fn admit_attempt(&self, peer: IpAddr) -> Result<(), Response> {
        if self.attempts.admit(peer) {
            return Ok(());
        }
        crate::metrics::rejected(Rejection::IpAttemptLimit);
        let msg = format!(
            "Too many connection attempts from this address: at most {} per {}.",
            self.config.max_connection_attempts_per_ip,
            humantime::format_duration(self.config.connection_attempt_window)
        );
        Err(Response::error(429, -1003, &msg))
    }

    /// A place for one more open connection from `peer` under `--max-connections-per-ip`;
    /// past the cap, the `429` to answer with, counted.
    pub fn acquire_ip_slot(&self, peer: IpAddr) -> Result<Option<IpSlot>, Response> {
        self.ip_connections.acquire(peer).map_err(|_| {
            crate::metrics::rejected(Rejection::IpConnectionCap);
            let msg = format!(
                "Too many open connections from this address: at most {}.",
                self.config.max_connections_per_ip
            );
            Response::error(429, -1003, &msg)
        })
    }
}
