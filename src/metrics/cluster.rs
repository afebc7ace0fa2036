//! The cluster's counters: what an engine publishes to NATS and what a gateway consumes.

use metrics::{counter, describe_counter, describe_gauge, gauge, Counter, Gauge};

/// Typed handles for every cluster metric, registered (at zero) when created.
#[derive(Clone)]
pub struct ClusterMetrics {
    /// Records (steps and ticks) an engine had acknowledged by JetStream.
    pub records_published: Counter,
    /// Publishes retried after a failed or missing acknowledgement.
    pub publish_retries: Counter,
    /// State snapshots (one per symbol) an engine stored.
    pub snapshots_published: Counter,
    /// Records a gateway handed to its derivation stage.
    pub records_consumed: Counter,
    /// Records a gateway skipped because it had them already (after a consumer restart).
    pub records_duplicate: Counter,
    /// Gaps in update ids or tick numbers a gateway saw, each followed by a catch-up.
    pub gaps: Counter,
    /// Rebases on a snapshot when the missing records were gone from JetStream.
    pub rebases: Counter,
    /// Bridging diffs published by rebases (one per symbol).
    pub bridging_diffs: Counter,
    /// Consumers (re)created by a gateway: at start, after each gap and reconnect.
    pub consumers_created: Counter,
    /// Reconnections to NATS.
    pub nats_reconnects: Counter,
    /// Records in JetStream the gateway's consumer has not delivered yet.
    pub consumer_lag: Gauge,
    /// 1 while connected to NATS.
    pub nats_connected: Gauge,
    /// Symbols whose `resume=` history a gateway read back from the journal at start.
    pub history_backfills: Counter,
}

impl ClusterMetrics {
    pub fn new() -> Self {
        describe_counter!(
            "bookcast_cluster_records_published_total",
            "Engine records (steps and ticks) acknowledged by JetStream"
        );
        describe_counter!(
            "bookcast_cluster_publish_retries_total",
            "JetStream publishes retried after a failed or missing acknowledgement"
        );
        describe_counter!(
            "bookcast_cluster_snapshots_published_total",
            "Per-symbol state snapshots stored by the engine"
        );
        describe_counter!(
            "bookcast_cluster_records_consumed_total",
            "Engine records a gateway handed to its derivation stage"
        );
        describe_counter!(
            "bookcast_cluster_records_duplicate_total",
            "Engine records a gateway already had and skipped"
        );
        describe_counter!(
            "bookcast_cluster_gaps_total",
            "Gaps in update ids or ticks seen by a gateway, each followed by a catch-up"
        );
        describe_counter!(
            "bookcast_cluster_rebases_total",
            "Rebases on a snapshot because the missing records were gone from JetStream"
        );
        describe_counter!(
            "bookcast_cluster_bridging_diffs_total",
            "Bridging diffs published by rebases, one per symbol"
        );
        describe_counter!(
            "bookcast_cluster_consumers_created_total",
            "JetStream consumers created by a gateway (start, catch-ups, reconnects)"
        );
        describe_counter!(
            "bookcast_cluster_nats_reconnects_total",
            "Reconnections to NATS"
        );
        describe_counter!(
            "bookcast_cluster_history_backfills_total",
            "Symbols whose resume= history a gateway read back from the journal at start"
        );
        describe_gauge!(
            "bookcast_cluster_consumer_lag",
            "Records in JetStream the gateway's consumer has not delivered yet"
        );
        describe_gauge!(
            "bookcast_cluster_nats_connected",
            "1 while connected to NATS"
        );
        ClusterMetrics {
            records_published: counter!("bookcast_cluster_records_published_total"),
            publish_retries: counter!("bookcast_cluster_publish_retries_total"),
            snapshots_published: counter!("bookcast_cluster_snapshots_published_total"),
            records_consumed: counter!("bookcast_cluster_records_consumed_total"),
            records_duplicate: counter!("bookcast_cluster_records_duplicate_total"),
            gaps: counter!("bookcast_cluster_gaps_total"),
            rebases: counter!("bookcast_cluster_rebases_total"),
            bridging_diffs: counter!("bookcast_cluster_bridging_diffs_total"),
            consumers_created: counter!("bookcast_cluster_consumers_created_total"),
            nats_reconnects: counter!("bookcast_cluster_nats_reconnects_total"),
            consumer_lag: gauge!("bookcast_cluster_consumer_lag"),
            nats_connected: gauge!("bookcast_cluster_nats_connected"),
            history_backfills: counter!("bookcast_cluster_history_backfills_total"),
        }
    }
}

impl Default for ClusterMetrics {
    fn default() -> Self {
        Self::new()
    }
}
