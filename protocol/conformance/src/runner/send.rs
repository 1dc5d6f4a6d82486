//! `send`: write a frame, and with `reply` match the answer carrying its `id`.

use super::exec::{clip, Exec};
use crate::pattern::matches;
use crate::scenario::{Pattern, SendStep};
use serde_json::Value;
use tokio::time::Instant;

impl Exec<'_> {
    /// Write the step's frame; with `reply`, wait for and match the answer.
    pub(super) async fn send(&mut self, step: &SendStep) -> Result<(), String> {
        let actor = step.actor.as_str();
        if let Some(frame) = &step.frame {
            let frame = self.vars.substitute(frame)?;
            self.conn(actor)?.send_text(frame.to_string()).await?;
            if let (Some(pattern), Some(id)) = (&step.reply, frame.get("id")) {
                return self.reply(actor, id, pattern).await;
            }
        } else if let Some(raw) = &step.raw {
            self.conn(actor)?.send_text(raw.clone()).await?;
        } else if let Some(binary) = &step.binary {
            let bytes = binary.as_bytes().to_vec();
            self.conn(actor)?.send_binary(bytes).await?;
        }
        Ok(())
    }

    /// Wait for the `ack` or `error` with this `id`, consume it and match it.
    async fn reply(&mut self, actor: &str, id: &Value, pattern: &Pattern) -> Result<(), String> {
        let pattern = self.vars.substitute(&pattern.0)?;
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
}
