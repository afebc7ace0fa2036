//! Fan-out: the engine's [`hub`] renders each event once into a finished WebSocket frame and
//! sends it to every [`shard`] with a subscriber for it; each shard queues the shared bytes on
//! its subscribers' bounded [`outbox`]es and writes them straight to their sockets.

pub mod hub;
pub mod outbox;
pub mod shard;
