//! Walking a scenario's steps: the state of one run, `repeat`, the steps without a file of
//! their own (`disconnect`, `wait`), and what a failure report shows.

use super::{Options, Target};
use crate::pattern::Vars;
use crate::scenario::{Count, RepeatStep, Scenario, Step, Wait};
use crate::session::Conn;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// One scenario being run.
pub(super) struct Exec<'a> {
    pub(super) target: &'a Target,
    pub(super) options: &'a Options,
    pub(super) scenario: &'a Scenario,
    pub(super) vars: Vars,
    pub(super) conns: BTreeMap<String, Conn>,
    /// Connections made so far (picks the node of the next one).
    pub(super) connects: usize,
}

/// Most frames shown when a step fails.
const SHOWN: usize = 12;

/// `text`, cut to `max` characters.
pub(super) fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}...")
    }
}

impl<'a> Exec<'a> {
    /// Run `steps` in order, numbering them after `prefix` in reports.
    pub(super) fn steps<'s>(
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
                if let Step::Repeat(repeat) = step {
                    self.repeat(repeat, &at).await?;
                } else if let Err(why) = self.step(step).await {
                    let mut text = format!("step {at} ({}): {why}", step.label());
                    if let Some(actor) = step.actor() {
                        text.push_str(&self.frames_seen(actor));
                    }
                    return Err(text);
                }
            }
            Ok(())
        }
        .boxed()
    }

    /// Run a `repeat` step numbered `at`, with `${i}` = 1, 2, ...
    async fn repeat(&mut self, repeat: &RepeatStep, at: &str) -> Result<(), String> {
        let count = match &repeat.count {
            Count::Times(n) => i64::try_from(*n).map_err(|_| format!("{n} is too many")),
            Count::Limit(expr) => self.vars.count(expr),
        };
        let times = count.map_err(|e| format!("step {at} (repeat): {e}"))? + repeat.plus;
        let outer = self.vars.index;
        for i in 1..=times.max(0) as u64 {
            self.vars.index = Some(i);
            self.steps(&repeat.steps, format!("{at}[i={i}].")).await?;
        }
        self.vars.index = outer;
        Ok(())
    }

    /// Run one step other than `repeat`.
    async fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Connect(connect) => self.connect(connect).await,
            Step::Send(send) => self.send(send).await,
            Step::Expect(expect) => self.expect(expect).await,
            Step::ExpectNone(expect) => self.expect_none(expect).await,
            Step::ExpectClose(expect) => self.expect_close(expect).await,
            Step::Disconnect(disconnect) => {
                let actor = &disconnect.actor;
                let conn = self
                    .conns
                    .remove(actor)
                    .ok_or_else(|| format!("{actor} has no session"))?;
                conn.close().await;
                Ok(())
            }
            Step::Wait(wait) => {
                tokio::time::sleep(self.duration(&wait.wait)?).await;
                Ok(())
            }
            Step::Repeat(_) => unreachable!("repeats are run by `steps`"),
        }
    }

    /// For a failure report: the frames `actor` received that no step consumed.
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

    /// How long a [`Wait`] is in this run: a limit's plus the margin.
    pub(super) fn duration(&self, wait: &Wait) -> Result<Duration, String> {
        match wait {
            Wait::Ms(ms) => Ok(Duration::from_millis(*ms)),
            Wait::Limit(name) => {
                Ok(Duration::from_millis(self.vars.limit(name)?) + self.options.margin)
            }
        }
    }

    /// When a step with this timeout gives up, and how long that is from now.
    pub(super) fn deadline(&self, timeout: &Option<Wait>) -> Result<(Instant, Duration), String> {
        let d = match timeout {
            Some(w) => self.duration(w)?,
            None => self.options.patience,
        };
        Ok((Instant::now() + d, d))
    }

    /// The actor's open session.
    pub(super) fn conn(&mut self, actor: &str) -> Result<&mut Conn, String> {
        self.conns
            .get_mut(actor)
            .ok_or_else(|| format!("{actor} has no session (connect it first)"))
    }
}
