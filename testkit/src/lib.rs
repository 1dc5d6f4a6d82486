//! What the tests, the load harness and the conformance runner share to drive parley
//! from outside, defined once: finding the `parley` binary and starting a server process
//! whose address is read from its `listening on ADDR` line.

pub mod binary;
pub mod launch;

pub use binary::find_parley;
pub use launch::{launch, launch_watched, LaunchError, Launched, LogLines};
