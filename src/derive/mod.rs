//! The derivation stage: every stream's events, derived from the engine's steps alone.
//!
//! # The seam
//!
//! **Where a step enters.** [`Streams::on_step`] (one symbol's [`SymbolStreams::on_step`]).
//! Each symbol's state starts at [`SymbolStreams::from_snapshot`], from a book and its update id.
//! From then on, the stage reads nothing but steps and timer ticks. It does not know where they
//! come from.
//!
//! **What a step carries.** A [`Step`](crate::market::sim::Step) is one numbered update of one
//! symbol:
//! - `update_id`: the previous update id + 1 (steps must arrive in order, with no gap);
//! - `bids`/`asks`: every level the update changed, best first, with its final lots
//!   (`0` = the level is gone), in integer ticks and lots;
//! - `trades`: the fills it made, in trade-id order.
//!
//! **What the stage derives.** Each symbol keeps its own L2 [`OrderBook`](crate::market::book::OrderBook),
//! kept current by applying each step's levels. It never reads a simulation's book. Per step, it
//! publishes `<symbol>@depth@0ms`, `@trade`, `@aggTrade` (aggregate ids counted here) and
//! `@bookTicker` (only when the touch changed). It also feeds the 100 ms and 1000 ms diff windows
//! ([`window::DiffWindow`]), the klines and the rolling 24h ticker ([`stats`]). At each 100 ms tick
//! ([`Streams::every_100ms`]), it publishes `@depth@100ms` and `@depth<N>@100ms`. At each 1000 ms tick
//! ([`Streams::every_1000ms`]), it publishes `@depth` and `@depth<N>` (their `@1000ms` spellings
//! share these events: events leave under fan-out keys, see
//! [`Topic::fanout_key`](crate::protocol::stream::Topic::fanout_key)), the klines (UTC and `@+08:00`), `@avgPrice`, `@ticker`, `@miniTicker`, `!miniTicker@arr`
//! and the rolling-window `@ticker_<w>` and `!ticker_<w>@arr`. On request it renders the
//! `/api/v3/depth` body at the last applied update id ([`Streams::snapshot`]) and the REST
//! history and tickers (the bounded trade history is [`history`]). All payloads are
//! rendered by [`payload`] and [`stats`].
//!
//! **Where events leave.** Through a [`Publisher`]. The engine's is its fan-out hub.
//!
//! **Who feeds it.** Today the engine thread does it: per symbol it calls `MarketSim::step`, then hands the
//! step here, and it drives the two timers. A NATS gateway will feed the steps it receives from
//! the engine process instead, with no simulation of its own. It builds each symbol with
//! `from_snapshot` from the engine's book snapshot, then hands over every later step and tick in
//! the engine's order. For the gateway's payloads to be byte-identical to the all-in-one server's,
//! it also needs:
//! - the same event times (`now_us`) as the engine, so steps and ticks must carry them;
//! - the ticks at the same places between steps, because they decide what each window holds;
//! - to start with the engine, or to be given the state a snapshot does not carry (aggTrade ids,
//!   kline and ticker statistics, the tick count).

pub mod history;
pub mod payload;
pub mod recent;
pub mod stats;
pub mod streams;
pub mod symbol;
pub mod window;

pub use streams::Streams;
pub use symbol::SymbolStreams;

use crate::protocol::json::TimeUnit;
use crate::protocol::stream::Topic;

/// Where derived events go: the seam between deriving an event and delivering it.
///
/// The engine implements it for its fan-out hub. A gateway implements it for whatever delivers
/// its events.
pub trait Publisher {
    /// Whether anyone listens to `topic`. The stage asks only to skip work whose result nobody
    /// would see: rendering trades, and computing ticker statistics. It keeps deriving its state
    /// (books, windows, statistics, aggTrade ids) whatever the answer is. Answering `true` when
    /// nobody listens is therefore always correct, only slower.
    fn wants(&self, topic: &Topic) -> bool;

    /// Publishes one event of `topic`. `render(buf, unit)` appends the event's payload to `buf`,
    /// with time fields in `unit`. It may be called any number of times, including none (nobody
    /// listens), and renders the same event every time.
    fn publish(&mut self, topic: Topic, render: &mut dyn FnMut(&mut Vec<u8>, TimeUnit));
}

/// A [`Publisher`] nobody listens to: a stage kept current only for its state (a cluster
/// engine's, for snapshots; a restarted engine replaying steps).
pub struct Discard;

impl Publisher for Discard {
    fn wants(&self, _: &Topic) -> bool {
        false
    }

    fn publish(&mut self, _: Topic, _: &mut dyn FnMut(&mut Vec<u8>, TimeUnit)) {}
}
