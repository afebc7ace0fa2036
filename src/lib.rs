//! bookcast: a Binance-compatible market-data server built around serialize-once fan-out.
//!
//! Data path: the [`engine`] thread steps one L2 [`book`] per symbol ([`sim`]) and derives
//! every stream's events; the [`hub`] (owned by the engine thread) serializes each event once
//! per distinct payload into a finished WebSocket [`frame`] and hands the shared bytes to every
//! subscriber's bounded [`outbox`]; each connection's [`session`] drains its outbox with
//! vectored writes, and a connection whose outbox overflows is closed with 4008.
//!
//! Around it: [`http`] (one port for REST and upgrades), [`rest`], [`control`] (SUBSCRIBE and
//! friends), [`stream`] (stream names), [`stats`] (klines, rolling tickers), [`feed`] (what to
//! simulate), [`config`], [`metrics`], [`live_stats`] and [`dashboard`] (the live page), and [`server::run`], which ties them together.

pub mod admission;
pub mod auth;
pub mod book;
pub mod clock;
pub mod config;
pub mod control;
pub mod dashboard;
pub mod decimal;
pub mod engine;
pub mod feed;
pub mod frame;
pub mod http;
pub mod hub;
pub mod json;
pub mod live_stats;
pub mod metrics;
pub mod outbox;
pub mod payload;
pub mod refuse;
pub mod rest;
pub mod server;
pub mod session;
pub mod sim;
pub mod stats;
pub mod stream;
pub mod transport;
