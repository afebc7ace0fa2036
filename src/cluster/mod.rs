//! Scale-out: one engine and many gateways over NATS JetStream.
//!
//! - `bookcast engine --nats URL` runs the simulation ([`crate::engine::simulate`]) with a
//!   [`journal::NatsJournal`]: every step and every 100 ms tick becomes one record in the
//!   steps stream, in the engine's order. Every `--snapshot-every`, right after a 1000 ms tick,
//!   it stores every symbol's whole state (derivation stage and simulation) in the snapshots
//!   stream, then a [`record::Manifest`] naming that set and the tick's place in the steps.
//! - `bookcast gateway --nats URL` starts from the newest manifest's snapshots and follows the
//!   steps after it ([`follow`]), through the same derivation stage and fan-out as the
//!   all-in-one server, so for the same records it publishes the same bytes.
//!
//! Guarantees, and what each rests on:
//! - **Same ids and payloads everywhere**: gateways apply the same records in the stream's
//!   order from the same snapshots; the stage is deterministic given steps, ticks and their
//!   times, which the records carry.
//! - **No gap**: a follower checks that each symbol's update ids and the tick numbers go up by
//!   one (an ordered consumer can skip what retention deleted, silently). On a gap it reads
//!   again from the last record it applied; if those records are gone, it rebases on the
//!   newest snapshot with one bridging diff per symbol ([`crate::derive::SymbolStreams::rebase`]).
//! - **Nothing lost on the engine side**: publishes carry a message id (`<SYMBOL>:<update id>`,
//!   `tick:<n>`) so retries are de-duplicated, and the engine pauses while JetStream does not
//!   acknowledge rather than dropping a step.
//! - **Ids never go back**: a restarted engine rebuilds every simulation from the newest
//!   snapshot and regenerates the steps after it (the simulation is deterministic), checking
//!   each against the stored one, then continues.

pub mod backfill;
pub mod follow;
pub mod journal;
pub mod record;
pub mod restore;
pub mod roles;

use crate::metrics::cluster::ClusterMetrics;
use async_nats::jetstream::{self, stream};
use std::time::Duration;

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 5m, 30s, 1h)"))
}

fn cluster_name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 32
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(text.to_owned())
    } else {
        Err("a cluster name is 1-32 of a-z, 0-9 and _".into())
    }
}

/// Options both cluster roles take.
#[derive(clap::Args, Clone, Debug)]
pub struct ClusterArgs {
    /// NATS server URL(s), comma-separated (nats://host:port).
    #[arg(long, env = "BOOKCAST_NATS", default_value = "nats://127.0.0.1:4222")]
    pub nats: String,

    /// Cluster name: prefixes its subjects (`<name>.steps.<SYMBOL>`) and names its streams
    /// (`<NAME>_STEPS`, `<NAME>_SNAPSHOTS`), so clusters can share one NATS server.
    #[arg(long, env = "BOOKCAST_CLUSTER", default_value = "bookcast", value_parser = cluster_name)]
    pub cluster: String,

    /// Steps kept in JetStream at least this long (a gateway can catch up over this window
    /// without a rebase). Used by the engine, which creates the streams.
    #[arg(long, env = "BOOKCAST_RETENTION", value_parser = duration, default_value = "10m")]
    pub retention: Duration,

    /// Bytes the steps stream may hold at most; the oldest steps go first.
    #[arg(long, env = "BOOKCAST_RETENTION_BYTES", default_value_t = 1 << 30)]
    pub retention_bytes: i64,

    /// Interval between state snapshots (rounded to whole seconds). Must be well under
    /// --retention: a rebase needs the steps after the newest snapshot.
    #[arg(long, env = "BOOKCAST_SNAPSHOT_EVERY", value_parser = duration, default_value = "10s")]
    pub snapshot_every: Duration,
}

impl ClusterArgs {
    pub fn names(&self) -> Names {
        Names::new(&self.cluster)
    }

    /// Checked before anything connects: retention must outlive several snapshot intervals.
    pub fn validate(&self) -> Result<(), String> {
        if self.snapshot_every < Duration::from_secs(1) {
            return Err("--snapshot-every must be at least 1s".into());
        }
        if self.retention < self.snapshot_every * 3 {
            return Err(format!(
                "--retention ({}) must be at least 3 x --snapshot-every ({}): a gateway that rebases needs the steps after the newest snapshot",
                humantime::format_duration(self.retention),
                humantime::format_duration(self.snapshot_every)
            ));
        }
        Ok(())
    }
}

/// Stream and subject names of one cluster.
#[derive(Clone, Debug)]
pub struct Names {
    pub steps_stream: String,
    pub snapshots_stream: String,
    prefix: String,
}

impl Names {
    pub fn new(cluster: &str) -> Self {
        let upper = cluster.to_ascii_uppercase();
        Names {
            steps_stream: format!("{upper}_STEPS"),
            snapshots_stream: format!("{upper}_SNAPSHOTS"),
            prefix: cluster.to_owned(),
        }
    }

    /// One subject per symbol: `<cluster>.steps.<SYMBOL>`.
    pub fn step_subject(&self, symbol: &str) -> String {
        format!("{}.steps.{symbol}", self.prefix)
    }

    /// Ticks have their own subject in the same stream, so the stream orders them among steps.
    pub fn tick_subject(&self) -> String {
        format!("{}.steps._tick", self.prefix)
    }

    pub fn steps_filter(&self) -> String {
        format!("{}.steps.>", self.prefix)
    }

    /// Chunk `chunk` of a symbol's state: `<cluster>.snap.<SYMBOL>.<chunk>`, each subject
    /// keeping the last two sets.
    pub fn snapshot_subject(&self, symbol: &str, chunk: usize) -> String {
        format!("{}.snap.{symbol}.{chunk}", self.prefix)
    }

    pub fn manifest_subject(&self) -> String {
        format!("{}.snap._manifest", self.prefix)
    }
}

/// Connects to NATS, reconnecting forever, counting reconnects in `metrics` and telling
/// `reconnected` about each (a follower recreates its consumer: NATS.md).
pub async fn connect(
    url: &str,
    name: &str,
    metrics: ClusterMetrics,
    reconnected: Option<tokio::sync::watch::Sender<u64>>,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .event_callback(move |event| {
            let metrics = metrics.clone();
            let reconnected = reconnected.clone();
            let connections = connections.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        metrics.nats_connected.set(1.0);
                        let n = connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if n > 0 {
                            metrics.nats_reconnects.increment(1);
                            tracing::info!("reconnected to NATS");
                            if let Some(tx) = &reconnected {
                                tx.send_modify(|count| *count += 1);
                            }
                        }
                    }
                    async_nats::Event::Disconnected => {
                        metrics.nats_connected.set(0.0);
                        tracing::warn!("disconnected from NATS");
                    }
                    other => tracing::debug!("NATS: {other}"),
                }
            }
        })
        .connect(url)
        .await
}

/// Creates (or updates) the cluster's two streams: the steps, bounded by age and bytes, file
/// storage so they survive a NATS restart; the snapshots, two per subject (the set being
/// written never replaces the one the newest manifest names).
pub async fn ensure_streams(
    js: &jetstream::Context,
    names: &Names,
    args: &ClusterArgs,
) -> Result<(), async_nats::Error> {
    let steps = stream::Config {
        name: names.steps_stream.clone(),
        subjects: vec![names.steps_filter()],
        max_age: args.retention,
        max_bytes: args.retention_bytes,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120).min(args.retention),
        allow_direct: true,
        ..Default::default()
    };
    let snapshots = stream::Config {
        name: names.snapshots_stream.clone(),
        subjects: vec![format!("{}.snap.>", names.prefix)],
        max_messages_per_subject: 2,
        storage: stream::StorageType::File,
        allow_direct: true,
        ..Default::default()
    };
    for config in [steps, snapshots] {
        js.create_or_update_stream(config).await?;
    }
    Ok(())
}
