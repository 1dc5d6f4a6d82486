//! The parley conformance suite: scenarios in a language-neutral JSON format and a runner
//! that plays them against any server over real WebSockets.
//!
//! The format is documented in `protocol/conformance/README.md`.

use futures::{SinkExt, StreamExt};
use include_dir::{include_dir, Dir};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The scenarios shipped with the suite.
pub static SCENARIOS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/scenarios");

/// How long an `expect` waits for its frame.
const PATIENCE: Duration = Duration::from_secs(5);
/// Added to every limit-named wait, to absorb scheduling and clock granularity.
const WAIT_MARGIN: Duration = Duration::from_millis(400);

/// One scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// What it proves.
    #[serde(default)]
    pub description: String,
    /// Sessions by name.
    pub actors: BTreeMap<String, ActorSpec>,
    /// What happens, in order.
    pub steps: Vec<Step>,
}

/// A session: which user it is and how it authenticates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorSpec {
    /// The user's handle (made unique per run by the runner).
    pub user: String,
    /// Whether the token grants operator rights.
    #[serde(default)]
    pub admin: bool,
}

/// One step of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Step {
    /// Open the actor's session; with `token`, present a bad token instead.
    Connect {
        /// Actor.
        connect: String,
        /// `missing`, `forged`, `expired` or `other_secret`.
        #[serde(default)]
        token: Option<String>,
    },
    /// Send a frame (variables substituted).
    Send {
        /// Actor.
        send: String,
        /// The frame.
        frame: Value,
    },
    /// Wait for a frame matching the pattern.
    Expect {
        /// Actor.
        expect: String,
        /// Pattern.
        frame: Value,
    },
    /// Assert that no frame matching the pattern has arrived (after a round trip).
    ExpectNone {
        /// Actor.
        expect_none: String,
        /// Pattern.
        frame: Value,
    },
    /// Wait for the server to close the session with this code.
    ExpectClose {
        /// Actor.
        expect_close: String,
        /// Close code.
        code: u16,
    },
    /// Close the actor's session.
    Disconnect {
        /// Actor.
        disconnect: String,
    },
    /// Wait out a limit announced in `hello`, e.g. `recall_window`.
    Wait {
        /// Limit name (without `_ms`).
        wait: String,
    },
    /// Run steps several times with `$i` set to 0, 1, ….
    Repeat {
        /// A count, or a limit name from `hello`.
        repeat: Value,
        /// Added to the count.
        #[serde(default)]
        plus: i64,
        /// The steps.
        steps: Vec<Step>,
    },
}

/// Where and how to run.
#[derive(Debug, Clone)]
pub struct Target {
    /// Base WebSocket URL, e.g. `ws://127.0.0.1:8080` (the runner appends `/ws?token=`).
    pub url: String,
    /// The secret the server signs tokens with.
    pub secret: Vec<u8>,
}

/// A scenario's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// File name.
    pub file: String,
    /// `Ok` or why it failed.
    pub result: Result<(), String>,
}

/// Every shipped scenario, by file name, in name order.
pub fn shipped() -> anyhow::Result<Vec<(String, Scenario)>> {
    let mut out = Vec::new();
    for file in SCENARIOS.files() {
        let name = file.path().display().to_string();
        let text = file
            .contents_utf8()
            .ok_or_else(|| anyhow::anyhow!("{name}: not UTF-8"))?;
        let scenario = serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        out.push((name, scenario));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Scenarios from `*.json` files in a directory.
pub fn from_dir(dir: &std::path::Path) -> anyhow::Result<Vec<(String, Scenario)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path)?;
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let scenario =
                serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            out.push((name, scenario));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Every error `code` the steps expect to receive, in order.
pub fn expected_codes(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .flat_map(|step| match step {
            Step::Expect { frame, .. } => frame
                .get("code")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .into_iter()
                .collect(),
            Step::Repeat { steps, .. } => expected_codes(steps),
            _ => Vec::new(),
        })
        .collect()
}

/// Run scenarios, `concurrency` at a time; outcomes come back in input order.
pub async fn run(
    target: &Target,
    scenarios: Vec<(String, Scenario)>,
    concurrency: usize,
) -> Vec<Outcome> {
    let run_id = hex::encode(rand::random::<[u8; 3]>());
    let jobs = scenarios
        .into_iter()
        .enumerate()
        .map(|(n, (file, scenario))| {
            let target = target.clone();
            let prefix = format!("{run_id}{n}");
            async move {
                let result = Player::new(&target, &scenario, &prefix)
                    .play(&scenario.steps)
                    .await;
                Outcome { file, result }
            }
        });
    futures::stream::iter(jobs)
        .buffered(concurrency.max(1))
        .collect()
        .await
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Session {
    ws: Ws,
    inbox: VecDeque<Value>,
    closed: Option<u16>,
}

struct Player<'a> {
    target: &'a Target,
    actors: &'a BTreeMap<String, ActorSpec>,
    handles: HashMap<String, String>,
    vars: HashMap<String, Value>,
    sessions: HashMap<String, Session>,
    limits: Option<Value>,
    barrier: u64,
}

fn token(secret: &[u8], user: &str, admin: bool, exp_offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({"sub": user, "iat": now, "exp": now + exp_offset, "admin": admin});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("HS256 encoding")
}

/// Match `actual` against `pattern`, recording `{{capture:x}}` values into `caps`.
pub fn matches(pattern: &Value, actual: &Value, caps: &mut HashMap<String, Value>) -> bool {
    match pattern {
        Value::String(p) if p.starts_with("{{") && p.ends_with("}}") => {
            let inner = &p[2..p.len() - 2];
            match inner {
                "any" => true,
                "string" => actual.is_string(),
                "number" => actual.is_number(),
                _ => match inner.strip_prefix("capture:") {
                    Some(name) => {
                        caps.insert(name.to_owned(), actual.clone());
                        true
                    }
                    None => pattern == actual,
                },
            }
        }
        Value::Object(p) => {
            let Some(a) = actual.as_object() else {
                return false;
            };
            p.iter().all(|(k, v)| match (v.as_str(), a.get(k)) {
                (Some("{{absent}}"), got) => got.is_none(),
                (_, Some(got)) => matches(v, got, caps),
                (_, None) => false,
            })
        }
        Value::Array(p) => {
            let Some(a) = actual.as_array() else {
                return false;
            };
            // `["{{contains}}", x, y]`: x and y each match some element, in any order.
            if p.first().and_then(Value::as_str) == Some("{{contains}}") {
                return p[1..].iter().all(|p| a.iter().any(|a| matches(p, a, caps)));
            }
            p.len() == a.len() && p.iter().zip(a).all(|(p, a)| matches(p, a, caps))
        }
        _ => pattern == actual,
    }
}

impl<'a> Player<'a> {
    fn new(target: &'a Target, scenario: &'a Scenario, prefix: &str) -> Self {
        let handles = scenario
            .actors
            .iter()
            .map(|(name, spec)| (name.clone(), format!("{}-{prefix}", spec.user)))
            .collect();
        Player {
            target,
            actors: &scenario.actors,
            handles,
            vars: HashMap::new(),
            sessions: HashMap::new(),
            limits: None,
            barrier: 0,
        }
    }

    /// Replace `$name` (an actor's handle or a captured value) in every string.
    fn substitute(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => {
                // `{{text:LIMIT+K}}`: a body K characters longer than a limit from hello.
                if let Some(spec) = s.strip_prefix("{{text:").and_then(|r| r.strip_suffix("}}")) {
                    let (name, extra) = spec.split_once('+').unwrap_or((spec, "0"));
                    let len = self.limit(name).unwrap_or(0) + extra.parse::<i64>().unwrap_or(0);
                    return Value::String("x".repeat(len.max(0) as usize));
                }
                if let Some(v) = s.strip_prefix('$').and_then(|name| self.lookup(name)) {
                    return v;
                }
                Value::String(self.interpolate(s))
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| self.substitute(v)).collect()),
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    let key = match k.strip_prefix('$').and_then(|n| self.vars.get(n).or(None)) {
                        Some(Value::String(s)) => s.clone(),
                        _ => k
                            .strip_prefix('$')
                            .and_then(|n| self.handles.get(n))
                            .cloned()
                            .unwrap_or_else(|| k.clone()),
                    };
                    out.insert(key, self.substitute(v));
                }
                Value::Object(out)
            }
            other => other.clone(),
        }
    }

    /// A captured variable, or an actor's user handle.
    fn lookup(&self, name: &str) -> Option<Value> {
        self.vars
            .get(name)
            .cloned()
            .or_else(|| self.handles.get(name).map(|h| Value::String(h.clone())))
    }

    /// Replace `$name` inside a longer string, e.g. `"burst-$i"`.
    fn interpolate(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let tail = &rest[at + 1..];
            let len = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            match self.lookup(&tail[..len]) {
                Some(Value::String(v)) => out.push_str(&v),
                Some(v) if len > 0 => out.push_str(&v.to_string()),
                _ => out.push_str(&rest[at..at + 1 + len]),
            }
            rest = &tail[len..];
        }
        out.push_str(rest);
        out
    }

    fn session(&mut self, actor: &str) -> Result<&mut Session, String> {
        self.sessions
            .get_mut(actor)
            .ok_or_else(|| format!("actor `{actor}` is not connected"))
    }

    fn limit(&self, name: &str) -> Result<i64, String> {
        let limits = self
            .limits
            .as_ref()
            .ok_or("no session has received hello yet")?;
        limits
            .get(name)
            .or_else(|| limits.get(format!("{name}_ms")))
            .and_then(Value::as_i64)
            .ok_or_else(|| format!("hello has no limit `{name}`"))
    }

    async fn play(&mut self, steps: &[Step]) -> Result<(), String> {
        for (n, step) in steps.iter().enumerate() {
            Box::pin(self.step(step))
                .await
                .map_err(|e| format!("step {}: {e}", n + 1))?;
        }
        for (_, mut s) in self.sessions.drain() {
            let _ = s.ws.close(None).await;
        }
        Ok(())
    }

    async fn connect(&mut self, actor: &str, bad: Option<&str>) -> Result<(), String> {
        let spec = self
            .actors
            .get(actor)
            .ok_or_else(|| format!("unknown actor `{actor}`"))?;
        let handle = &self.handles[actor];
        let secret = &self.target.secret;
        let token = match bad {
            None => Some(token(secret, handle, spec.admin, 3600)),
            Some("missing") => None,
            Some("expired") => Some(token(secret, handle, spec.admin, -3600)),
            Some("other_secret") => Some(token(b"not-the-server-secret", handle, spec.admin, 3600)),
            Some("forged") => {
                let good = token(secret, handle, true, 3600);
                let (head, _) = good.rsplit_once('.').unwrap();
                Some(format!("{head}.{}", "A".repeat(43)))
            }
            Some(other) => return Err(format!("unknown token kind `{other}`")),
        };
        let base = self.target.url.trim_end_matches('/');
        let url = match token {
            Some(t) => format!("{base}/ws?token={t}"),
            None => format!("{base}/ws"),
        };
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        self.sessions.insert(
            actor.to_owned(),
            Session {
                ws,
                inbox: VecDeque::new(),
                closed: None,
            },
        );
        if bad.is_none() {
            // Peek at `hello` for the limits and leave it for the scenario to expect.
            let hello = self.wait_for(actor, &json!({"type": "hello"})).await?;
            self.limits.get_or_insert(hello["limits"].clone());
            self.session(actor)?.inbox.push_front(hello);
        }
        Ok(())
    }

    /// Read one frame into the inbox; `false` once the socket is closed or after `patience`.
    async fn pull(&mut self, actor: &str, patience: Duration) -> Result<bool, String> {
        let s = self.session(actor)?;
        if s.closed.is_some() {
            return Ok(false);
        }
        match tokio::time::timeout(patience, s.ws.next()).await {
            Err(_) => Ok(false),
            Ok(Some(Ok(Message::Text(t)))) => {
                let v = serde_json::from_str(t.as_str())
                    .map_err(|e| format!("server sent invalid JSON: {e}"))?;
                s.inbox.push_back(v);
                Ok(true)
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                s.closed = Some(frame.map_or(1005, |f| f.code.into()));
                Ok(false)
            }
            Ok(Some(Ok(_))) => Ok(true),
            Ok(Some(Err(_)) | None) => {
                s.closed = Some(1006);
                Ok(false)
            }
        }
    }

    /// Take the first unclaimed frame matching `pattern`, reading more as needed.
    async fn wait_for(&mut self, actor: &str, pattern: &Value) -> Result<Value, String> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let s = self.session(actor)?;
            let mut caps = HashMap::new();
            if let Some(pos) = s.inbox.iter().position(|f| {
                caps.clear();
                matches(pattern, f, &mut caps)
            }) {
                let frame = s.inbox.remove(pos).unwrap();
                self.vars.extend(caps);
                return Ok(frame);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || !self.pull(actor, left).await? {
                let s = self.session(actor)?;
                let seen: Vec<String> = s.inbox.iter().map(Value::to_string).collect();
                return Err(format!(
                    "{actor} never got {pattern}; unclaimed frames: [{}]",
                    seen.join(", ")
                ));
            }
        }
    }

    async fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Connect { connect, token } => self.connect(connect, token.as_deref()).await,
            Step::Send { send, frame } => {
                let text = self.substitute(frame).to_string();
                let s = self.session(send)?;
                s.ws.send(Message::Text(text.into()))
                    .await
                    .map_err(|e| format!("send: {e}"))
            }
            Step::Expect { expect, frame } => {
                let pattern = self.substitute(frame);
                self.wait_for(expect, &pattern).await.map(drop)
            }
            Step::ExpectNone { expect_none, frame } => {
                // Frames are queued per session in order: once the answer to this round trip
                // arrives, anything the earlier steps caused has arrived too.
                self.barrier += 1;
                let id = format!("barrier-{}", self.barrier);
                let me = self.handles[expect_none].clone();
                let ping = json!({"id": id, "type": "lookup", "user": me}).to_string();
                self.session(expect_none)?
                    .ws
                    .send(Message::Text(ping.into()))
                    .await
                    .map_err(|e| e.to_string())?;
                self.wait_for(expect_none, &json!({"id": id})).await?;
                let pattern = self.substitute(frame);
                let s = self.session(expect_none)?;
                match s
                    .inbox
                    .iter()
                    .find(|f| matches(&pattern, f, &mut HashMap::new()))
                {
                    Some(f) => Err(format!("{expect_none} got {f}, which must not happen")),
                    None => Ok(()),
                }
            }
            Step::ExpectClose { expect_close, code } => {
                let deadline = tokio::time::Instant::now() + PATIENCE;
                while self.session(expect_close)?.closed.is_none() {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        return Err(format!("{expect_close} was not closed"));
                    }
                    self.pull(expect_close, left).await?;
                }
                let got = self.session(expect_close)?.closed.unwrap();
                (got == *code)
                    .then_some(())
                    .ok_or_else(|| format!("{expect_close} closed with {got}, expected {code}"))
            }
            Step::Disconnect { disconnect } => {
                if let Some(mut s) = self.sessions.remove(disconnect) {
                    let _ = s.ws.close(None).await;
                }
                Ok(())
            }
            Step::Wait { wait } => {
                let ms = self.limit(wait)?;
                tokio::time::sleep(Duration::from_millis(ms as u64) + WAIT_MARGIN).await;
                Ok(())
            }
            Step::Repeat {
                repeat,
                plus,
                steps,
            } => {
                let count = match repeat {
                    Value::Number(n) => n.as_i64().unwrap_or(0),
                    Value::String(name) => self.limit(name)?,
                    other => {
                        return Err(format!(
                            "repeat must be a number or a limit name, not {other}"
                        ))
                    }
                } + plus;
                for i in 0..count.max(0) {
                    self.vars.insert("i".into(), json!(i));
                    for step in steps {
                        Box::pin(self.step(step)).await?;
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_subsets_and_capture() {
        let mut caps = HashMap::new();
        let actual = json!({"type": "ack", "id": "1", "result": {"kind": "sent", "message": {"id": "m-1", "seq": 3}}});
        let pattern = json!({"type": "ack", "result": {"message": {"id": "{{capture:m}}", "seq": "{{number}}", "body": "{{absent}}"}}});
        assert!(matches(&pattern, &actual, &mut caps));
        assert_eq!(caps["m"], "m-1");
        assert!(!matches(&json!({"type": "error"}), &actual, &mut caps));
        assert!(!matches(
            &json!({"result": {"kind": "{{number}}"}}),
            &actual,
            &mut caps
        ));
        assert!(!matches(&json!({"id": "{{absent}}"}), &actual, &mut caps));
        assert!(matches(
            &json!([1, "{{any}}"]),
            &json!([1, {"x": 2}]),
            &mut caps
        ));
        assert!(!matches(&json!([1]), &json!([1, 2]), &mut caps));
        assert!(matches(
            &json!(["{{contains}}", 2]),
            &json!([1, 2, 3]),
            &mut caps
        ));
        assert!(!matches(
            &json!(["{{contains}}", 4]),
            &json!([1, 2, 3]),
            &mut caps
        ));
    }

    #[test]
    fn the_shipped_suite_is_complete() {
        let scenarios = shipped().expect("every scenario parses");
        assert!(scenarios.len() >= 40, "only {} scenarios", scenarios.len());
        let produced: Vec<String> = scenarios
            .iter()
            .flat_map(|(_, s)| expected_codes(&s.steps))
            .collect();
        for code in parley_protocol::ErrorCode::ALL {
            assert!(
                produced.iter().any(|c| c == code.as_str()),
                "no scenario expects the error code {code}"
            );
        }
    }
}
