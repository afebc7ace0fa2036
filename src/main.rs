//! The `bookcast` binary: parse the command line, load the feed, serve until Ctrl-C or SIGTERM.
//!
//! With no subcommand it is the all-in-one server; `engine` and `gateway` are the two roles of a
//! cluster over NATS (see `bookcast::cluster`).

use bookcast::cluster::ClusterArgs;
use bookcast::config::Config;
use bookcast::market::feed::Feed;
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use tokio::net::TcpListener;

/// Resolves on Ctrl-C or SIGTERM, whichever comes first.
async fn shutdown_signal() {
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
    tracing::info!("shutting down: closing clients with 1001");
}

/// Descriptors the process needs besides its connections: listener, epoll, the runtime's
/// eventfds, a feed or token file being read.
const RESERVED_FDS: u64 = 64;

/// One descriptor per connection: raise the soft open-file limit to the hard one, and if even
/// that cannot hold `--max-connections`, lower the cap to fit. Connections past it then get a
/// clean 503 instead of failed accepts that leave clients hanging in the listen backlog.
fn fit_connections_to_fd_limit(config: &mut Config) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let room = usize::try_from(limit.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
            if room < config.max_connections {
                tracing::warn!(
                    "the open-file limit ({limit}) holds {room} connections: --max-connections lowered from {} (raise the hard limit to serve more)",
                    config.max_connections
                );
                config.max_connections = room.max(1);
            }
        }
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
}

#[derive(Parser)]
#[command(version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Subcommand)]
enum Role {
    /// Cluster engine: simulate the feed and publish every step to NATS JetStream; serves only
    /// /metrics and /api/v3/ping.
    Engine {
        #[command(flatten)]
        config: Config,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Cluster gateway: serve clients everything the all-in-one server does, derived from the
    /// engine's steps in NATS (the feed comes from the engine too).
    Gateway {
        #[command(flatten)]
        config: Config,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let (mut config, role) = match cli.role {
        None => (cli.config, None),
        Some(Role::Engine { config, cluster }) => (config, Some((true, cluster))),
        Some(Role::Gateway { config, cluster }) => (config, Some((false, cluster))),
    };
    fit_connections_to_fd_limit(&mut config);
    if let Some((_, cluster)) = &role {
        if let Err(e) = cluster.validate() {
            eprintln!("bookcast: {e}");
            return ExitCode::from(2);
        }
    }
    let feed = match &config.feed {
        Some(path) => match Feed::load(path) {
            Ok(feed) => feed,
            Err(e) => {
                eprintln!("bookcast: {e}");
                return ExitCode::from(2);
            }
        },
        None => Feed::embedded_default(),
    };
    // Checked before listening, so a bad token file fails like a bad feed, before the banner
    // (server::run loads it again for whoever embeds it).
    if let Some(path) = &config.auth_tokens {
        if let Err(e) = bookcast::front::auth::TokenSet::load(path) {
            eprintln!("bookcast: {e}");
            return ExitCode::from(2);
        }
    }
    // The accept loop, signals and metrics upkeep: one thread is plenty, since every
    // connection lives on a shard of its own (see bookcast::fanout::shard).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bookcast: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(config.listen).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("bookcast: cannot listen on {}: {e}", config.listen);
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        if let Some((is_engine, cluster)) = role {
            let nats = cluster.nats.clone();
            let result = if is_engine {
                println!("bookcast engine of cluster '{}' on {nats}: {} symbols; http://{addr}/metrics", cluster.cluster, feed.symbols.len());
                bookcast::cluster::roles::engine(listener, config, feed, cluster, shutdown_signal()).await
            } else {
                if config.feed.is_some() {
                    tracing::warn!("--feed is ignored by a gateway: the feed comes from the engine");
                }
                println!("bookcast gateway of cluster '{}' on {nats}, listening on {addr}", cluster.cluster);
                bookcast::cluster::roles::gateway(listener, config, cluster, shutdown_signal()).await
            };
            return match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bookcast: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        let symbols = feed.symbols.len();
        let (ws, http) = if config.tls_cert.is_some() { ("wss", "https") } else { ("ws", "http") };
        println!(
            "bookcast listening on {addr} ({symbols} symbols): {ws}://{addr}/ws, {ws}://{addr}/stream?streams=..., {http}://{addr}/sse?streams=..., {http}://{addr}/poll?streams=..., {http}://{addr}/api/v3/..., {http}://{addr}/metrics"
        );
        match bookcast::front::server::run(listener, config, feed, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bookcast: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
