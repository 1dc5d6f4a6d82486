//! Running scenarios against a server.

use crate::pattern::{matches, Vars};
use crate::scenario::{Payload, Scenario, Step, TokenKind, Wait};
use crate::session::Conn;
use crate::token;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde_json::Value;
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

struct Exec<'a> {
    target: &'a Target,
    options: &'a Options,
    scenario: &'a Scenario,
    vars: Vars,
    conns: BTreeMap<String, Conn>,
    /// Connections made so far (picks the node of the next one).
    connects: usize,
}

/// Most frames shown when a step fails.
const SHOWN: usize = 12;

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}...")
    }
}

impl<'a> Exec<'a> {
    fn steps<'s>(
        &'s mut self,
        steps: &'s [Step],
        prefix: String,
    ) -> BoxFuture<'s, Result<(), String>>
    where
        'a: 's,
    {
        async move {
            for (n, step) in steps.iter().enumerate() {
                let at = format!("{prefix}{}", n + 1);
                if let Step::Repeat { count, plus, steps } = step {
                    let times = self
                        .vars
                        .count(count)
                        .map_err(|e| format!("step {at} (repeat): {e}"))?
                        + plus;
                    let outer = self.vars.index;
                    for i in 1..=times.max(0) as u64 {
                        self.vars.index = Some(i);
                        self.steps(steps, format!("{at}[i={i}].")).await?;
                    }
                    self.vars.index = outer;
                    continue;
                }
                if let Err(why) = self.step(step).await {
                    let mut text = format!("step {at} ({}): {why}", step.label());
                    if let Some(actor) = actor_of(step) {
                        text.push_str(&self.frames_seen(actor));
                    }
                    return Err(text);
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn frames_seen(&mut self, actor: &str) -> String {
        let Some(conn) = self.conns.get_mut(actor) else {
            return format!("\n    {actor} has no session");
        };
        conn.drain();
        let total = conn.frames.len();
        let unconsumed: Vec<_> = conn.frames.iter().filter(|f| !f.consumed).collect();
        let mut out = format!(
            "\n    frames seen by {actor}: {total} ({} consumed by earlier steps)",
            total - unconsumed.len()
        );
        let skip = unconsumed.len().saturating_sub(SHOWN);
        if skip > 0 {
            out.push_str(&format!("\n      ... {skip} earlier unconsumed frames"));
        }
        for f in unconsumed.iter().skip(skip) {
            out.push_str(&format!("\n      {}", clip(&f.text, 400)));
        }
        if let Some((code, reason)) = &conn.closed {
            out.push_str(&format!("\n      <closed {code} {reason:?}>"));
        }
        out
    }

    fn duration(&self, wait: &Wait) -> Result<Duration, String> {
        match wait {
            Wait::Ms(ms) => Ok(Duration::from_millis(*ms)),
            Wait::Limit(name) => {
                Ok(Duration::from_millis(self.vars.limit(name)?) + self.options.margin)
            }
        }
    }

    fn deadline(&self, timeout: &Option<Wait>) -> Result<(Instant, Duration), String> {
        let d = match timeout {
            Some(w) => self.duration(w)?,
            None => self.options.patience,
        };
        Ok((Instant::now() + d, d))
    }

    fn conn(&mut self, actor: &str) -> Result<&mut Conn, String> {
        self.conns
            .get_mut(actor)
            .ok_or_else(|| format!("{actor} has no session (connect it first)"))
    }

    async fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Connect {
                actor,
                token,
                hello,
            } => self.connect(actor, *token, hello.as_ref()).await,
            Step::Send {
                actor,
                payload,
                reply,
            } => {
                let reply_to = match payload {
                    Payload::Json(frame) => {
                        let frame = self.vars.substitute(frame)?;
                        let id = frame.get("id").cloned();
                        self.conn(actor)?.send_text(frame.to_string()).await?;
                        id
                    }
                    Payload::Raw(text) => {
                        self.conn(actor)?.send_text(text.clone()).await?;
                        None
                    }
                    Payload::Binary(text) => {
                        self.conn(actor)?
                            .send_binary(text.as_bytes().to_vec())
                            .await?;
                        None
                    }
                };
                match (reply, reply_to) {
                    (Some(pattern), Some(id)) => self.reply(actor, &id, pattern).await,
                    _ => Ok(()),
                }
            }
            Step::Expect {
                actor,
                pattern,
                timeout,
            } => {
                let pattern = self.vars.substitute(pattern)?;
                let (deadline, waited) = self.deadline(timeout)?;
                let conn = self.conn(actor)?;
                let found = conn
                    .find(deadline, |v| {
                        matches(&pattern, v, &mut BTreeMap::new()).is_ok()
                    })
                    .await;
                match found {
                    Some(i) => {
                        conn.frames[i].consumed = true;
                        let frame = conn.frames[i]
                            .json
                            .clone()
                            .expect("matched frames are JSON");
                        matches(&pattern, &frame, &mut self.vars.captures)
                            .map_err(|m| m.to_string())
                    }
                    None => Err(format!(
                        "no frame matched within {} ms\n    pattern: {}{}",
                        waited.as_millis(),
                        pattern,
                        self.nearest(actor, &pattern)
                    )),
                }
            }
            Step::ExpectNone {
                actor,
                pattern,
                within,
            } => {
                let pattern = self.vars.substitute(pattern)?;
                let until = Instant::now() + self.duration(within)?;
                let conn = self.conn(actor)?;
                conn.collect_until(until).await;
                let hit = conn.frames.iter().find(|f| {
                    !f.consumed
                        && f.json
                            .as_ref()
                            .is_some_and(|v| matches(&pattern, v, &mut BTreeMap::new()).is_ok())
                });
                match hit {
                    Some(f) => Err(format!(
                        "a frame it must not get arrived: {}\n    pattern: {pattern}",
                        clip(&f.text, 400)
                    )),
                    None => Ok(()),
                }
            }
            Step::ExpectClose {
                actor,
                code,
                reason,
                timeout,
            } => {
                let reason = reason
                    .as_ref()
                    .map(|r| self.vars.substitute(r))
                    .transpose()?;
                let (deadline, waited) = self.deadline(timeout)?;
                let conn = self.conn(actor)?;
                let Some((got, why)) = conn.wait_closed(deadline).await else {
                    return Err(format!(
                        "session still open after {} ms",
                        waited.as_millis()
                    ));
                };
                if let Some(code) = code {
                    if *code != got {
                        return Err(format!(
                            "closed with {got} {why:?}, expected close code {code}"
                        ));
                    }
                }
                if let Some(pattern) = reason {
                    matches(
                        &pattern,
                        &Value::String(why.clone()),
                        &mut self.vars.captures,
                    )
                    .map_err(|m| format!("close reason {why:?}: {m}"))?;
                }
                Ok(())
            }
            Step::Disconnect { actor } => {
                let conn = self
                    .conns
                    .remove(actor)
                    .ok_or_else(|| format!("{actor} has no session"))?;
                conn.close().await;
                Ok(())
            }
            Step::Wait(w) => {
                tokio::time::sleep(self.duration(w)?).await;
                Ok(())
            }
            Step::Repeat { .. } => unreachable!("repeats are expanded by `steps`"),
        }
    }

    async fn connect(
        &mut self,
        actor: &str,
        kind: TokenKind,
        hello: Option<&Value>,
    ) -> Result<(), String> {
        if self.conns.get(actor).is_some_and(|c| c.closed.is_none()) {
            return Err(format!("{actor} is already connected"));
        }
        let spec = &self.scenario.actors[actor];
        let handle = self.vars.users[&spec.user].clone();
        let token = token::mint(&self.target.secret, &handle, spec.admin, kind);
        let url = ws_url(self.target.nth(self.connects), token.as_deref());
        self.connects += 1;
        let mut conn = Conn::open(&url).await?;
        if kind != TokenKind::Valid {
            self.conns.insert(actor.to_owned(), conn);
            return Ok(());
        }
        let deadline = Instant::now() + self.options.patience;
        let first = conn.find(deadline, |_| true).await;
        let hello_frame = match first {
            Some(0) => conn.frames[0].json.clone().expect("found frames are JSON"),
            _ => {
                let seen = conn
                    .frames
                    .first()
                    .map_or("nothing".to_owned(), |f| clip(&f.text, 400));
                self.conns.insert(actor.to_owned(), conn);
                return Err(format!("the first frame must be hello; got {seen}"));
            }
        };
        let is_hello = hello_frame.get("type").and_then(Value::as_str) == Some("hello");
        conn.frames[0].consumed = is_hello;
        self.conns.insert(actor.to_owned(), conn);
        if !is_hello {
            return Err(format!("the first frame must be hello; got {hello_frame}"));
        }
        if hello_frame.get("user").and_then(Value::as_str) != Some(handle.as_str()) {
            return Err(format!(
                "hello names another user than {handle:?}: {hello_frame}"
            ));
        }
        if self.vars.limits.is_none() {
            self.vars.limits = hello_frame
                .get("limits")
                .and_then(Value::as_object)
                .cloned();
        }
        if let Some(pattern) = hello {
            let pattern = self.vars.substitute(pattern)?;
            matches(&pattern, &hello_frame, &mut self.vars.captures)
                .map_err(|m| format!("hello does not match: {m}\n    hello: {hello_frame}"))?;
        }
        Ok(())
    }

    async fn reply(&mut self, actor: &str, id: &Value, pattern: &Value) -> Result<(), String> {
        let pattern = self.vars.substitute(pattern)?;
        let deadline = Instant::now() + self.options.patience;
        let conn = self.conn(actor)?;
        let found = conn
            .find(deadline, |v| {
                matches!(v.get("type").and_then(Value::as_str), Some("ack" | "error"))
                    && v.get("id") == Some(id)
            })
            .await;
        let Some(i) = found else {
            return Err(format!(
                "no ack or error with id {id} within {} ms",
                self.options.patience.as_millis()
            ));
        };
        conn.frames[i].consumed = true;
        let answer = conn.frames[i].json.clone().expect("found frames are JSON");
        matches(&pattern, &answer, &mut self.vars.captures).map_err(|m| {
            format!(
                "the answer does not match: {m}\n    answer:  {}\n    pattern: {pattern}",
                clip(&answer.to_string(), 600)
            )
        })
    }

    /// For a failed `expect`: why each unconsumed frame of the same `type` did not match.
    fn nearest(&mut self, actor: &str, pattern: &Value) -> String {
        let Some(conn) = self.conns.get_mut(actor) else {
            return String::new();
        };
        let kind = pattern.get("type");
        let mut out = String::new();
        for f in conn.frames.iter().filter(|f| !f.consumed) {
            let Some(v) = &f.json else { continue };
            if kind.is_some() && v.get("type") != kind {
                continue;
            }
            if let Err(m) = matches(pattern, v, &mut BTreeMap::new()) {
                out.push_str(&format!("\n    near miss {m}"));
            }
        }
        out
    }
}

fn actor_of(step: &Step) -> Option<&str> {
    match step {
        Step::Connect { actor, .. }
        | Step::Send { actor, .. }
        | Step::Expect { actor, .. }
        | Step::ExpectNone { actor, .. }
        | Step::ExpectClose { actor, .. }
        | Step::Disconnect { actor } => Some(actor),
        Step::Wait(_) | Step::Repeat { .. } => None,
    }
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
