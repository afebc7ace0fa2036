//! Where market data comes from: the feed (what to simulate), the synthetic market, and its
//! L2 order book on integer ticks.

pub mod book;
pub mod feed;
pub mod sim;
