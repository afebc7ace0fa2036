//! The protocol's vocabulary, shared by the engine and the network front: stream names and
//! topics, control messages, JSON and decimal writing, and WebSocket frames.

pub mod control;
pub mod decimal;
pub mod frame;
pub mod json;
pub mod stream;
