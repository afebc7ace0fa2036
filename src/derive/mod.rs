//! What is derived from the engine's steps: trade statistics (klines, rolling tickers) and
//! the rendering of every stream's payload.

pub mod payload;
pub mod stats;
