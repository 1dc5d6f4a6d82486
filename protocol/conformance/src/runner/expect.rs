//! `expect`, `expect_none` and `expect_close`: what a session must, and must not, receive.

use super::exec::{clip, Exec};
use crate::pattern::matches;
use crate::scenario::{ExpectCloseStep, ExpectNoneStep, ExpectStep};
use serde_json::Value;
use std::collections::BTreeMap;
use tokio::time::Instant;

impl Exec<'_> {
    /// Wait for the first unconsumed frame matching the pattern, consume it and capture.
    pub(super) async fn expect(&mut self, step: &ExpectStep) -> Result<(), String> {
        let actor = step.actor.as_str();
        let pattern = self.vars.substitute(&step.pattern.0)?;
        let (deadline, waited) = self.deadline(&step.timeout)?;
        let conn = self.conn(actor)?;
        let found = conn
            .find(deadline, |v| {
                matches(&pattern, v, &mut BTreeMap::new()).is_ok()
            })
            .await;
        let Some(i) = found else {
            return Err(format!(
                "no frame matched within {} ms\n    pattern: {}{}",
                waited.as_millis(),
                pattern,
                self.nearest(actor, &pattern)
            ));
        };
        conn.frames[i].consumed = true;
        let frame = conn.frames[i]
            .json
            .clone()
            .expect("matched frames are JSON");
        matches(&pattern, &frame, &mut self.vars.captures).map_err(|m| m.to_string())
    }

    /// Keep receiving for the step's time, then fail if an unconsumed frame matches.
    pub(super) async fn expect_none(&mut self, step: &ExpectNoneStep) -> Result<(), String> {
        let pattern = self.vars.substitute(&step.pattern.0)?;
        let until = Instant::now() + self.duration(&step.within)?;
        let conn = self.conn(&step.actor)?;
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

    /// Wait for the server to close the session, then check the code and reason.
    pub(super) async fn expect_close(&mut self, step: &ExpectCloseStep) -> Result<(), String> {
        let reason = step
            .reason
            .as_ref()
            .map(|r| self.vars.substitute(&r.0))
            .transpose()?;
        let (deadline, waited) = self.deadline(&step.timeout)?;
        let conn = self.conn(&step.actor)?;
        let Some((got, why)) = conn.wait_closed(deadline).await else {
            return Err(format!(
                "session still open after {} ms",
                waited.as_millis()
            ));
        };
        if let Some(code) = step.code {
            if code != got {
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
