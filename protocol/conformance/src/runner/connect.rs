//! `connect`: open a session, and check the `hello` it starts with.

use super::exec::{clip, Exec};
use super::ws_url;
use crate::pattern::matches;
use crate::scenario::{ConnectStep, TokenKind};
use crate::session::Conn;
use crate::token;
use serde_json::Value;
use tokio::time::Instant;

impl Exec<'_> {
    /// Open the actor's session; with a valid token, consume and check its `hello`.
    pub(super) async fn connect(&mut self, step: &ConnectStep) -> Result<(), String> {
        let actor = step.actor.as_str();
        if self.conns.get(actor).is_some_and(|c| c.closed.is_none()) {
            return Err(format!("{actor} is already connected"));
        }
        let spec = &self.scenario.actors[actor];
        let handle = self.vars.users[&spec.user].clone();
        let token = token::mint(&self.target.secret, &handle, spec.admin, step.token);
        let url = ws_url(self.target.nth(self.connects), token.as_deref());
        self.connects += 1;
        let mut conn = Conn::open(&url).await?;
        if step.token != TokenKind::Valid {
            self.conns.insert(actor.to_owned(), conn);
            return Ok(());
        }
        let hello = first_hello(&mut conn, Instant::now() + self.options.patience).await;
        self.conns.insert(actor.to_owned(), conn);
        let hello = hello?;
        if hello.get("user").and_then(Value::as_str) != Some(handle.as_str()) {
            return Err(format!("hello names another user than {handle:?}: {hello}"));
        }
        if self.vars.limits.is_none() {
            self.vars.limits = hello.get("limits").and_then(Value::as_object).cloned();
        }
        if let Some(pattern) = &step.hello {
            let pattern = self.vars.substitute(&pattern.0)?;
            matches(&pattern, &hello, &mut self.vars.captures)
                .map_err(|m| format!("hello does not match: {m}\n    hello: {hello}"))?;
        }
        Ok(())
    }
}

/// The session's first frame, which must be a `hello`, consumed.
async fn first_hello(conn: &mut Conn, deadline: Instant) -> Result<Value, String> {
    let first = conn.find(deadline, |_| true).await;
    let frame = match first {
        Some(0) => conn.frames[0].json.clone().expect("found frames are JSON"),
        _ => {
            let seen = conn
                .frames
                .first()
                .map_or("nothing".to_owned(), |f| clip(&f.text, 400));
            return Err(format!("the first frame must be hello; got {seen}"));
        }
    };
    if frame.get("type").and_then(Value::as_str) != Some("hello") {
        return Err(format!("the first frame must be hello; got {frame}"));
    }
    conn.frames[0].consumed = true;
    Ok(frame)
}
