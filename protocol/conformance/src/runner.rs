//! Running scenarios against a server: the targets, options and reports, and the run.
//!
//! `runner/exec.rs` walks a scenario's steps; a step's execution lives with its kind, in
//! `connect.rs`, `send.rs` and `expect.rs` (the three `expect` kinds) beside it.

mod connect;
mod exec;
mod expect;
mod send;

use crate::pattern::Vars;
use crate::scenario::Scenario;
use exec::Exec;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// The server under test.
#[derive(Debug, Clone)]
pub struct Target {
    /// Base URL like `ws://127.0.0.1:8080`; `/ws` is added when it has no path.
    pub url: String,
    /// Secret the server verifies tokens with.
    pub secret: Vec<u8>,
    /// Other nodes of the same cluster: connections go to `url` and these in turn, so
    /// the actors of one scenario, and the sessions of one actor, meet on different nodes.
    pub also: Vec<String>,
}

impl Target {
    /// One server at `url`.
    pub fn new(url: impl Into<String>, secret: impl Into<Vec<u8>>) -> Target {
        Target {
            url: url.into(),
            secret: secret.into(),
            also: Vec::new(),
        }
    }

    /// The URL of the `n`th connection of a scenario.
    fn nth(&self, n: usize) -> &str {
        match n % (1 + self.also.len()) {
            0 => &self.url,
            i => &self.also[i - 1],
        }
    }
}

/// How scenarios are run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Scenarios run at once.
    pub jobs: usize,
    /// How long an `expect` waits by default.
    pub patience: Duration,
    /// Added to every duration taken from a hello limit, so windows have surely closed.
    pub margin: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            jobs: 8,
            patience: Duration::from_secs(5),
            margin: Duration::from_secs(1),
        }
    }
}

/// Jobs alone, with the default patience and margin.
impl From<usize> for Options {
    fn from(jobs: usize) -> Self {
        Options {
            jobs,
            ..Options::default()
        }
    }
}

/// One scenario's result.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    /// The scenario's name, which is its file name without `.json`.
    pub file: String,
    /// `Ok`, or the first failing step, why, and the frames its actor had seen.
    pub result: Result<(), String>,
    /// Wall time it took.
    pub elapsed: Duration,
}

impl ScenarioReport {
    /// Whether every step held.
    pub fn passed(&self) -> bool {
        self.result.is_ok()
    }

    /// The line printed for it: `ok   NN-name` or `FAIL NN-name: reason`.
    pub fn line(&self) -> String {
        match &self.result {
            Ok(()) => format!("ok   {}", self.file),
            Err(why) => format!("FAIL {}: {why}", self.file),
        }
    }
}

/// The results of a run, in scenario order; it derefs to the per-scenario reports.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One entry per scenario run.
    pub scenarios: Vec<ScenarioReport>,
}

impl std::ops::Deref for Report {
    type Target = [ScenarioReport];
    fn deref(&self) -> &[ScenarioReport] {
        &self.scenarios
    }
}

impl Report {
    /// Scenarios that passed.
    pub fn passed(&self) -> usize {
        self.scenarios.iter().filter(|s| s.passed()).count()
    }

    /// Scenarios that failed.
    pub fn failed(&self) -> usize {
        self.scenarios.len() - self.passed()
    }

    /// The closing line: `N passed, M failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }
}

/// Run `scenarios` against `target`; `options` may be a plain job count.
pub async fn run(
    target: &Target,
    scenarios: impl AsRef<[Scenario]>,
    options: impl Into<Options>,
) -> Report {
    run_with(target, scenarios.as_ref(), &options.into(), |_| {}).await
}

/// Run `scenarios` against `target`, `options.jobs` at a time; `on_done` sees each result
/// as soon as it and every scenario before it have finished.
pub async fn run_with(
    target: &Target,
    scenarios: &[Scenario],
    options: &Options,
    mut on_done: impl FnMut(&ScenarioReport),
) -> Report {
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut results = futures::stream::iter(scenarios.iter().enumerate())
        .map(|(n, s)| run_scenario(target, s, options, format!("{run}-{:02}", n + 1)))
        .buffered(options.jobs.max(1));
    let mut report = Report::default();
    while let Some(r) = results.next().await {
        on_done(&r);
        report.scenarios.push(r);
    }
    report
}

/// Run one scenario; user handles become `<user>-<tag>` so runs and scenarios never share users.
pub async fn run_scenario(
    target: &Target,
    scenario: &Scenario,
    options: &Options,
    tag: String,
) -> ScenarioReport {
    let started = Instant::now();
    let mut vars = Vars::default();
    for spec in scenario.actors.values() {
        vars.users
            .insert(spec.user.clone(), format!("{}-{tag}", spec.user));
    }
    let mut exec = Exec {
        target,
        options,
        scenario,
        vars,
        conns: BTreeMap::new(),
        connects: 0,
    };
    let result = exec.steps(&scenario.steps, String::new()).await;
    for (_, conn) in std::mem::take(&mut exec.conns) {
        conn.close().await;
    }
    ScenarioReport {
        file: scenario.name.clone(),
        result,
        elapsed: started.elapsed(),
    }
}

/// The URL of the WebSocket endpoint, with the token as a query parameter.
pub fn ws_url(base: &str, token: Option<&str>) -> String {
    let base = base.trim_end_matches('/');
    let rest = base.split_once("://").map_or(base, |(_, r)| r);
    let mut url = if rest.contains('/') {
        base.to_owned()
    } else {
        format!("{base}/ws")
    };
    if let Some(t) = token {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("token=");
        url.push_str(t);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_url_adds_the_path_and_token() {
        assert_eq!(
            ws_url("ws://127.0.0.1:9/", Some("t.k.n")),
            "ws://127.0.0.1:9/ws?token=t.k.n"
        );
        assert_eq!(ws_url("ws://h:1/custom", None), "ws://h:1/custom");
        assert_eq!(
            ws_url("ws://h:1/ws?x=1", Some("t")),
            "ws://h:1/ws?x=1&token=t"
        );
    }

    #[tokio::test]
    async fn run_takes_a_plain_job_count() {
        let target = Target::new("ws://127.0.0.1:9", b"s".to_vec());
        let report = run(&target, Vec::<Scenario>::new(), 8).await;
        assert!(report.iter().all(|r| r.result.is_ok()));
        assert_eq!(report.summary(), "0 passed, 0 failed");
    }

    #[test]
    fn summary_counts() {
        let r = |result| ScenarioReport {
            file: "01-a".into(),
            result,
            elapsed: Duration::ZERO,
        };
        let report = Report {
            scenarios: vec![r(Ok(())), r(Err("x".into()))],
        };
        assert_eq!(report.len(), 2);
        assert_eq!(Options::from(3).jobs, 3);
        assert_eq!(report.summary(), "1 passed, 1 failed");
        assert_eq!(report.scenarios[0].line(), "ok   01-a");
        assert_eq!(report.scenarios[1].line(), "FAIL 01-a: x");
    }
}
