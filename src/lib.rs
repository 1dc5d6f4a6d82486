//! parley: a real-time WebSocket messaging server.
//!
//! Layers, innermost first: [`core`] holds the rules as plain state and functions;
//! [`hub`] shares that state between connections, commits through a [`store::Store`] and
//! fans frames out; [`connection`] runs one socket; [`server`] routes, [`accept`] admits
//! each TCP connection (against the caps of [`admission`]) and [`upgrade`] hands it over.

// No function a reader must scroll through (the limit is in clippy.toml).
#![deny(clippy::too_many_lines)]

pub mod accept;
pub mod admission;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod core;
pub mod forwarded;
pub mod frame;
pub mod hangup;
pub mod heap;
pub mod hub;
pub mod logs;
pub mod metrics;
pub mod origin;
pub mod probe;
pub mod server;
pub mod store;
pub mod ticket;
pub mod tls;
pub mod upgrade;
pub mod web;
