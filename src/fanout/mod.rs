//! Fan-out: each event, rendered once into a finished WebSocket frame, handed as shared bytes
//! to every subscriber's bounded outbox.

pub mod hub;
pub mod outbox;
