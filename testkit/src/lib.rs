//! What the tests, the load harness and the conformance runner share to drive parley
//! from outside, defined once: finding the `parley` binary, starting a server process
//! whose address is read from its `listening on ADDR` line, throwaway PostgreSQL and
//! Redis services, and a WebSocket client that awaits answers and frames with deadlines.

pub mod binary;
pub mod bound;
pub mod client;
pub mod launch;
pub mod services;

pub use binary::find_parley;
pub use bound::bound;
pub use client::{ClientError, Received, Session};
pub use launch::{launch, launch_watched, LaunchError, Launched, LogLines};
