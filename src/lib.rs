//! bookcast: a Binance-compatible market-data server built around serialize-once fan-out.
//!
//! The modules follow the data, and imports point one way along it:
//!
//! - [`market`]: where market data comes from: the feed file, the synthetic market and its L2
//!   book on integer ticks.
//! - [`mod@derive`]: the derivation stage. Every stream's events are derived here from the
//!   engine's steps alone: a book per symbol, the diff windows, klines, rolling tickers, and the
//!   rendering of every payload. Events leave through the [`derive::Publisher`] seam.
//! - [`engine`]: the engine thread. Its [`engine::Market`] hands steps and ticks to the
//!   derivation stage (the local simulation, or a cluster gateway's follower), and it sequences
//!   connection commands between steps.
//! - [`cluster`]: one engine, many gateways over NATS JetStream: the engine journals every step
//!   and tick with periodic state snapshots; a gateway follows them with no gap.
//! - [`fanout`]: handing each event, serialized once into a finished WebSocket frame, to every
//!   subscriber's bounded outbox; slow consumers are evicted with 4008.
//! - [`front`]: the network: accept, HTTP and REST, WebSocket sessions, admission, auth and the
//!   dashboard. It reaches the engine only through [`engine::EngineHandle`].
//! - [`protocol`]: the vocabulary both sides use: stream names, control messages, JSON,
//!   decimals and frames.
//!
//! Around them: [`config`], [`metrics`] (typed metric handles and the `!stats@1s` numbers),
//! and [`clock`].

pub mod clock;
pub mod cluster;
pub mod config;
pub mod derive;
pub mod engine;
pub mod fanout;
pub mod front;
pub mod market;
pub mod metrics;
pub mod protocol;
