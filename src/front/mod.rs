//! The network front: accepting connections, HTTP and REST on the one port, WebSocket
//! sessions, admission control, token auth and the live dashboard. It talks to the engine only
//! through [`crate::engine::EngineHandle`].

pub mod admission;
pub mod auth;
pub mod context;
pub mod dashboard;
pub mod http;
pub mod poll;
pub mod refuse;
pub mod rest;
pub mod router;
pub mod server;
pub mod session;
pub mod sse;
pub mod transport;
pub mod upgrade;
pub mod weight;
pub mod ws_api;
pub mod ws_read;
