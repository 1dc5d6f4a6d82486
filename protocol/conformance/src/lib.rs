//! Language-neutral conformance suite for the parley protocol.
//!
//! The scenarios are JSON files in `scenarios/` (format in this crate's README); this
//! library parses them, runs them against a server over real WebSockets and reports one
//! outcome per scenario. The `parley-conformance` binary wraps it.

// Functions stay short enough to read without scrolling (80 lines: clippy.toml).
#![deny(clippy::too_many_lines)]

pub mod pattern;
pub mod runner;
pub mod scenario;
pub mod session;
pub mod spawn;
pub mod token;

pub use runner::{run, run_with, Options, Report, ScenarioReport, Target};
pub use scenario::{embedded, load_dir, Scenario};

/// The scenarios shipped with this crate (the same as [`embedded`]).
pub fn shipped() -> Result<Vec<Scenario>, String> {
    embedded()
}

/// Keep the scenarios whose name contains any of `filters` (all of them when it is empty).
pub fn select(scenarios: Vec<Scenario>, filters: &[String]) -> Vec<Scenario> {
    if filters.is_empty() {
        return scenarios;
    }
    scenarios
        .into_iter()
        .filter(|s| filters.iter().any(|f| s.name.contains(f.as_str())))
        .collect()
}
