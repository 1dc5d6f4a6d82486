//! parley: a real-time WebSocket messaging server.
//!
//! Layers, innermost first: [`core`] holds the rules as plain state and functions;
//! [`hub`] shares that state between connections, commits through a [`store::Store`] and
//! fans frames out; [`connection`] runs one socket; [`server`] listens and [`upgrade`] hands it over.

pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod core;
pub mod frame;
pub mod heap;
pub mod hub;
pub mod metrics;
pub mod server;
pub mod store;
pub mod upgrade;
pub mod web;
