//! The two cluster roles as the binary runs them: `bookcast engine` and `bookcast gateway`.

use super::follow::{Follow, Follower, Position};
use super::journal::{self, NatsJournal};
use super::{restore, ClusterArgs};
use crate::config::Config;
use crate::engine::simulate::Simulation;
use crate::engine::{EngineWaker, Start, Tick};
use crate::market::feed::Feed;
use crate::market::sim::MarketSim;
use crate::metrics::cluster::ClusterMetrics;
use std::future::Future;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// `bookcast engine`: simulates `feed` and journals it to NATS; serves only `/metrics` and
/// `/api/v3/ping` on `listener`. If the cluster already has state (a restart), it continues
/// every symbol from it instead, and refuses a feed other than the one it was started with.
pub async fn engine(
    listener: TcpListener,
    mut config: Config,
    feed: Feed,
    args: ClusterArgs,
    shutdown: impl Future,
) -> Result<(), Error> {
    args.validate()?;
    crate::metrics::install();
    let metrics = ClusterMetrics::new();
    let names = args.names();
    let client = super::connect(&args.nats, "bookcast-engine", metrics.clone(), None).await?;
    let js = async_nats::jetstream::new(client);
    super::ensure_streams(&js, &names, &args).await?;

    let (tx, rx) = mpsc::channel(journal::CHANNEL_CAPACITY);
    let journal = NatsJournal::new(
        tx.clone(),
        names.clone(),
        feed.symbols.clone(),
        args.snapshot_every,
    );
    let (simulation, streams) = match restore::manifest(&js, &names).await? {
        None => {
            // A new cluster: the first snapshot set goes out before any step, so gateways
            // always have a state to start from.
            let sims: Vec<MarketSim> = feed.symbols.iter().map(MarketSim::new).collect();
            let streams = Simulation::initial_stage(&feed, &sims);
            let tick = Tick {
                number: 0,
                now_us: crate::clock::wall_us(),
            };
            let refs: Vec<&MarketSim> = sims.iter().collect();
            tx.send(journal.snapshot(tick, &refs, &streams)).await?;
            (
                Simulation::resume(&feed, sims, 0, Some(Box::new(journal))),
                streams,
            )
        }
        Some(manifest) => {
            if manifest.symbols != feed.symbols {
                return Err(format!(
                    "cluster '{}' was started with another feed: start this engine with the same --feed, or use a new --cluster",
                    args.cluster
                )
                .into());
            }
            let mut state = restore::load(&js, &names, manifest).await?;
            let tick = restore::replay(&js, &names, &mut state).await?;
            tracing::info!(
                "continuing cluster '{}' after tick {tick} (update ids continue from the stored steps)",
                args.cluster
            );
            let simulation = Simulation::resume(&feed, state.sims, tick, Some(Box::new(journal)));
            (simulation, state.streams)
        }
    };
    drop(tx);
    let steps_seq = js
        .get_stream(&names.steps_stream)
        .await?
        .info()
        .await?
        .state
        .last_sequence;
    tokio::spawn(journal::publish(js, names, rx, steps_seq, metrics));
    config.engine_only = true;
    config.shards = 1;
    let start = Start {
        streams,
        market: Box::new(simulation),
        waker: EngineWaker::default(),
    };
    crate::front::server::run_with(listener, config, feed, start, shutdown).await?;
    Ok(())
}

/// `bookcast gateway`: starts from the cluster's newest snapshot set (waiting for the engine's
/// first one if there is none yet) and serves everything the all-in-one server serves, derived
/// from the engine's records.
pub async fn gateway(
    listener: TcpListener,
    config: Config,
    args: ClusterArgs,
    shutdown: impl Future,
) -> Result<(), Error> {
    crate::metrics::install();
    let metrics = ClusterMetrics::new();
    let names = args.names();
    let (reconnected_tx, reconnected) = watch::channel(0);
    let client = super::connect(
        &args.nats,
        "bookcast-gateway",
        metrics.clone(),
        Some(reconnected_tx),
    )
    .await?;
    let js = async_nats::jetstream::new(client);
    let manifest = restore::wait_for_manifest(&js, &names).await?;
    let (steps_seq, tick) = (manifest.steps_seq, manifest.tick.number);
    let restored = restore::load(&js, &names, manifest).await?;
    tracing::info!(
        "gateway of cluster '{}': {} symbols, starting after record {steps_seq}",
        args.cluster,
        restored.feed.symbols.len()
    );
    let position = Position::at(&restored.streams, steps_seq, tick);
    let (tx, rx) = mpsc::channel(super::follow::CHANNEL_CAPACITY);
    let waker = EngineWaker::default();
    if !config.history.is_zero() {
        tokio::spawn(super::backfill::run(
            js.clone(),
            names.clone(),
            steps_seq,
            super::backfill::points(&restored.streams),
            config.history,
            tx.clone(),
            waker.clone(),
        ));
    }
    let follow_metrics = metrics.clone();
    let follower = Follower {
        js,
        names,
        position,
        tx,
        waker: waker.clone(),
        metrics,
        reconnected,
    };
    tokio::spawn(follower.run());
    let start = Start {
        streams: restored.streams,
        market: Box::new(Follow::new(rx, follow_metrics)),
        waker,
    };
    crate::front::server::run_with(listener, config, restored.feed, start, shutdown).await?;
    Ok(())
}
