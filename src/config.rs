//! Runtime configuration: every limit SPEC.md names, with Binance's values as defaults.
//!
//! One struct serves the command line (clap, with `BOOKCAST_*` environment variables) and the
//! tests, which start servers with short intervals and small bounds through [`Config::default`]
//! and struct update syntax.

use crate::fanout::outbox::QueueBound;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 20s, 500ms, 24h)"))
}

/// bookcast: a Binance-compatible market-data server (WebSocket streams + REST snapshots)
/// that fans each update out, serialized once, to every subscriber.
#[derive(Parser, Clone, Debug)]
#[command(version, about, long_about = None)]
pub struct Config {
    /// Address to serve HTTP and WebSocket on.
    #[arg(long, env = "BOOKCAST_LISTEN", default_value = "127.0.0.1:9443")]
    pub listen: SocketAddr,

    /// Feed file (TOML) listing the symbols to simulate; the embedded feeds/default.toml if unset.
    #[arg(long, env = "BOOKCAST_FEED")]
    pub feed: Option<PathBuf>,

    /// PEM certificate chain: serve HTTPS and wss:// instead of plain HTTP and ws://.
    #[arg(long, env = "BOOKCAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "BOOKCAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Slow-consumer bound: bytes a connection may have queued before it is closed with 4008.
    #[arg(long, env = "BOOKCAST_QUEUE_BYTES", default_value_t = 256 * 1024)]
    pub queue_bytes: usize,

    /// Slow-consumer bound: frames a connection may have queued before it is closed with 4008.
    #[arg(long, env = "BOOKCAST_QUEUE_FRAMES", default_value_t = 4096)]
    pub queue_frames: usize,

    /// Kernel send buffer per connection in bytes (SO_SNDBUF); 0 keeps the kernel's autotuning.
    /// A small buffer makes slow consumers visible sooner, at some cost in burst throughput.
    #[arg(long, env = "BOOKCAST_SOCKET_SEND_BUFFER", default_value_t = 0)]
    pub socket_send_buffer: usize,

    /// Interval between server pings.
    #[arg(long, value_parser = duration, default_value = "20s")]
    pub ping_interval: Duration,

    /// A connection silent (no pong, no frame at all) for this long is terminated.
    #[arg(long, value_parser = duration, default_value = "60s")]
    pub pong_timeout: Duration,

    /// Connection lifetime; at the end the connection is closed with 4009.
    #[arg(long, value_parser = duration, default_value = "24h")]
    pub max_lifetime: Duration,

    /// Incoming messages (pings, pongs, JSON) per second per connection before closing with 4002.
    #[arg(long, default_value_t = 5)]
    pub max_messages_per_second: u32,

    /// Streams one connection may listen to.
    #[arg(long, default_value_t = 1024)]
    pub max_streams: usize,

    /// Open connections (HTTP and WebSocket) before new ones get 503.
    #[arg(long, env = "BOOKCAST_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,

    /// WebSocket connection attempts allowed per client IP address per window (0: no limit).
    /// Raise it for load tests that open thousands of connections from one address.
    #[arg(
        long,
        env = "BOOKCAST_MAX_CONNECTION_ATTEMPTS_PER_IP",
        default_value_t = 300
    )]
    pub max_connection_attempts_per_ip: u32,

    /// The window of --max-connection-attempts-per-ip.
    #[arg(long, value_parser = duration, default_value = "5m")]
    pub connection_attempt_window: Duration,

    /// Open WebSocket connections allowed per client IP address; more get HTTP 429 (0: no
    /// limit). Off by default so loopback load tests can open thousands from 127.0.0.x.
    #[arg(long, env = "BOOKCAST_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,

    /// Token file (one per line, `#` comments): WebSocket connections must then carry one as
    /// `?token=` or `Authorization: Bearer`, or are closed with 4001. REST stays public.
    #[arg(long, env = "BOOKCAST_AUTH_TOKENS")]
    pub auth_tokens: Option<PathBuf>,

    /// Comma-separated origins (`https://example.com,http://localhost:8080`) whose web pages
    /// may open WebSockets; an upgrade with any other `Origin` header gets HTTP 403. Requests
    /// without `Origin` (non-browser clients) pass. Empty: every origin.
    #[arg(long, env = "BOOKCAST_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = crate::front::admission::parse_origin)]
    pub allowed_origins: Vec<String>,

    /// Time a client has to send a complete HTTP request head, counted from its first byte; also
    /// how long a connection may stay idle before its first request or between keep-alive
    /// requests before it is closed without a response.
    #[arg(long, value_parser = duration, default_value = "10s")]
    pub handshake_timeout: Duration,

    /// Time a closing connection has to take its last frames and close frame.
    #[arg(long, value_parser = duration, default_value = "5s")]
    pub close_timeout: Duration,

    /// Time an evicted slow consumer has to read what was already in flight and its 4008 close
    /// frame; its queue is freed at eviction, this only keeps the socket.
    #[arg(long, value_parser = duration, default_value = "30s")]
    pub slow_close_timeout: Duration,

    /// Conformance testing only: serve `/echo`, a WebSocket route that echoes every text and
    /// binary message through the same session code (Autobahn|Testsuite's fuzzing client), with
    /// a 16 MiB message limit and no rate limit. Never enable in production.
    #[arg(long)]
    pub test_echo_route: bool,

    /// Benchmark baseline: serialize and frame every event once per subscriber instead of once.
    #[arg(long)]
    pub naive_fanout: bool,

    /// Write-path threads, each owning its connections (0: one per core).
    #[arg(long, env = "BOOKCAST_SHARDS", default_value_t = 0)]
    pub shards: usize,

    /// On SIGTERM/Ctrl-C, how long to wait for clients to be closed before exiting anyway.
    #[arg(long, value_parser = duration, default_value = "10s")]
    pub shutdown_timeout: Duration,

    /// Trades, and as many aggregate trades, kept per symbol for `/api/v3/trades` and
    /// `/api/v3/aggTrades` (Binance serves at most 1000 per request).
    #[arg(long, env = "BOOKCAST_TRADE_HISTORY", default_value_t = 1000)]
    pub trade_history: usize,

    /// Closed klines kept per symbol, interval and time zone (UTC, UTC+8) for `/api/v3/klines`;
    /// 500 is Binance's default `limit`. Other time zones regroup the kept 1m klines.
    #[arg(long, env = "BOOKCAST_KLINE_HISTORY", default_value_t = 500)]
    pub kline_history: usize,

    /// How often an SSE stream (`/sse`) gets a `: ping` comment, whatever else it is sent, so
    /// proxies keep it open (SPEC.md: 15 s).
    #[arg(long, value_parser = duration, default_value = "15s")]
    pub sse_keep_alive: Duration,

    /// How far back `resume=` reaches: each symbol's updates, trades and aggregates of this
    /// long are kept in memory (0: none; every resume then gets a snapshot or a `resumeGap`).
    #[arg(long, env = "BOOKCAST_HISTORY", value_parser = duration, default_value = "5m")]
    pub history: Duration,

    /// REST request weight one IP address may use per minute; past it, requests get 429 with
    /// -1003 and `Retry-After` (0: no limit).
    #[arg(long, env = "BOOKCAST_REST_WEIGHT_LIMIT", default_value_t = 6000)]
    pub rest_weight_limit: u32,

    /// Set by `bookcast engine`: serve only `/metrics` and `/api/v3/ping` (a cluster engine has
    /// no clients of its own).
    #[arg(skip)]
    pub engine_only: bool,
}

impl Config {
    /// Shards to start: `--shards`, or one per core.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    pub fn queue_bound(&self) -> QueueBound {
        QueueBound {
            max_bytes: self.queue_bytes,
            max_frames: self.queue_frames,
        }
    }
}

impl Default for Config {
    /// The defaults of the command line, ignoring the environment.
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 9443)),
            feed: None,
            tls_cert: None,
            tls_key: None,
            queue_bytes: 256 * 1024,
            queue_frames: 4096,
            socket_send_buffer: 0,
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(24 * 3600),
            max_messages_per_second: 5,
            max_streams: 1024,
            max_connections: 50_000,
            max_connection_attempts_per_ip: 300,
            connection_attempt_window: Duration::from_secs(300),
            max_connections_per_ip: 0,
            auth_tokens: None,
            allowed_origins: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            slow_close_timeout: Duration::from_secs(30),
            naive_fanout: false,
            shards: 0,
            test_echo_route: false,
            shutdown_timeout: Duration::from_secs(10),
            trade_history: 1000,
            kline_history: 500,
            history: Duration::from_secs(300),
            sse_keep_alive: Duration::from_secs(15),
            rest_weight_limit: 6000,
            engine_only: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_matches_the_command_line_defaults() {
        let parsed = Config::try_parse_from(["bookcast", "--listen", "127.0.0.1:9443"]).unwrap();
        let default = Config::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
    }

    #[test]
    fn allowed_origins_are_a_checked_list() {
        let parsed = Config::try_parse_from([
            "bookcast",
            "--allowed-origins",
            "https://Example.com/,http://localhost:8080",
        ])
        .unwrap();
        assert_eq!(
            parsed.allowed_origins,
            ["https://example.com", "http://localhost:8080"]
        );
        assert!(Config::try_parse_from(["bookcast", "--allowed-origins", "example.com"]).is_err());
    }
}
