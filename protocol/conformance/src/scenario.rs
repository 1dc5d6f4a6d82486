//! The scenario file format: parsing and validation.
//!
//! Steps are parsed by hand rather than with an untagged serde enum so that a typo in a
//! scenario gets an error naming the step and the key, not "data did not match any variant".

use crate::pattern::{references, validate_pattern};
use include_dir::{include_dir, Dir};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

static EMBEDDED: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/scenarios");

/// One scenario: named sessions ("actors") and the steps they take.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// File stem, like `07-direct-message-fanout`.
    pub name: String,
    /// What the scenario shows.
    pub description: String,
    /// Actor name to its user.
    pub actors: BTreeMap<String, ActorSpec>,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// An actor is one session of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorSpec {
    /// Scenario-local user name; several actors may share it (one user, several devices).
    pub user: String,
    /// Whether the actor's token carries `admin: true`.
    pub admin: bool,
}

/// Which token a `connect` step presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Signed with the server's secret, valid for an hour.
    Valid,
    /// No token at all.
    Missing,
    /// A valid token whose claims were altered after signing.
    Forged,
    /// Signed with the server's secret but already expired.
    Expired,
    /// Signed with a secret the server does not know.
    OtherSecret,
}

/// A duration: milliseconds, or a hello limit plus the runner's safety margin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// Exactly this many milliseconds.
    Ms(u64),
    /// The named limit (`recall_window` reads `recall_window_ms`) plus the margin.
    Limit(String),
}

/// What a `send` step writes to the socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A JSON frame, after substitution.
    Json(Value),
    /// A text frame sent as is (for malformed JSON).
    Raw(String),
    /// A binary frame holding these UTF-8 bytes.
    Binary(String),
}

/// One step of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Open the actor's session; with a valid token, its first frame must be `hello`.
    Connect {
        /// Actor.
        actor: String,
        /// Token presented.
        token: TokenKind,
        /// Optional pattern the `hello` must match.
        hello: Option<Value>,
    },
    /// Write a frame; with `reply`, wait for the `ack`/`error` carrying the frame's `id`.
    Send {
        /// Actor.
        actor: String,
        /// What to write.
        payload: Payload,
        /// Pattern the answer must match.
        reply: Option<Value>,
    },
    /// Wait for the first unconsumed frame matching a pattern, and consume it.
    Expect {
        /// Actor.
        actor: String,
        /// Pattern.
        pattern: Value,
        /// How long to wait (default: the runner's patience).
        timeout: Option<Wait>,
    },
    /// Wait, then check that no unconsumed frame matches a pattern.
    ExpectNone {
        /// Actor.
        actor: String,
        /// Pattern.
        pattern: Value,
        /// How long to watch.
        within: Wait,
    },
    /// Wait for the server to close the session.
    ExpectClose {
        /// Actor.
        actor: String,
        /// Expected close code.
        code: Option<u16>,
        /// Pattern for the close reason (a string pattern).
        reason: Option<Value>,
        /// How long to wait (default: the runner's patience).
        timeout: Option<Wait>,
    },
    /// Close the actor's session normally; a later `connect` opens a new one.
    Disconnect {
        /// Actor.
        actor: String,
    },
    /// Sleep.
    Wait(Wait),
    /// Run steps several times with `${i}` = 1, 2, ...
    Repeat {
        /// A count expression: a number, or a limit name with an optional `+k`/`-k`.
        count: String,
        /// Added to the count.
        plus: i64,
        /// Steps of one iteration.
        steps: Vec<Step>,
    },
}

impl Step {
    /// Short label for reports, like `expect bob`.
    pub fn label(&self) -> String {
        match self {
            Step::Connect { actor, .. } => format!("connect {actor}"),
            Step::Send { actor, .. } => format!("send {actor}"),
            Step::Expect { actor, .. } => format!("expect {actor}"),
            Step::ExpectNone { actor, .. } => format!("expect_none {actor}"),
            Step::ExpectClose { actor, .. } => format!("expect_close {actor}"),
            Step::Disconnect { actor } => format!("disconnect {actor}"),
            Step::Wait(_) => "wait".to_owned(),
            Step::Repeat { .. } => "repeat".to_owned(),
        }
    }

    /// The steps inside this one (only `repeat` has any).
    pub fn children(&self) -> &[Step] {
        match self {
            Step::Repeat { steps, .. } => steps,
            _ => &[],
        }
    }

    /// Patterns a frame is checked against: `expect`, `expect_none`, `reply` and `hello`.
    pub fn patterns(&self) -> Vec<&Value> {
        match self {
            Step::Expect { pattern, .. } | Step::ExpectNone { pattern, .. } => vec![pattern],
            Step::Send { reply: Some(p), .. } | Step::Connect { hello: Some(p), .. } => vec![p],
            _ => vec![],
        }
    }
}

/// Every scenario shipped with this crate, sorted by name.
pub fn embedded() -> Result<Vec<Scenario>, String> {
    let mut out = Vec::new();
    for file in EMBEDDED.files() {
        let path = file.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = file
            .contents_utf8()
            .ok_or_else(|| format!("{}: not UTF-8", path.display()))?;
        out.push(parse_named(path, text)?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Every `*.json` scenario in a directory, sorted by name.
pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        out.push(parse_named(&path, &text)?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn parse_named(path: &Path, text: &str) -> Result<Scenario, String> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    parse(stem, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parse one scenario; `stem` is its file name without `.json`, which `name` must equal.
pub fn parse(stem: &str, text: &str) -> Result<Scenario, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = value.as_object().ok_or("a scenario is a JSON object")?;
    allow_keys(obj, &["name", "description", "actors", "steps"], "scenario")?;
    let name = req_str(obj, "name", "scenario")?;
    if name != stem {
        return Err(format!("name {name:?} differs from the file name {stem:?}"));
    }
    let description = req_str(obj, "description", "scenario")?;
    let actors_obj = obj
        .get("actors")
        .and_then(Value::as_object)
        .ok_or("`actors` must be an object")?;
    let mut actors = BTreeMap::new();
    for (actor, spec) in actors_obj {
        let what = format!("actor {actor:?}");
        let spec = spec
            .as_object()
            .ok_or_else(|| format!("{what} must be an object"))?;
        allow_keys(spec, &["user", "admin"], &what)?;
        let user = req_str(spec, "user", &what)?;
        if !crate::pattern::is_identifier(&user) || !crate::pattern::is_identifier(actor) {
            return Err(format!("{what}: names are letters, digits and `_`"));
        }
        let admin = match spec.get("admin") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(format!("{what}: `admin` must be a boolean")),
        };
        actors.insert(actor.clone(), ActorSpec { user, admin });
    }
    let steps = parse_steps(obj.get("steps"), "steps")?;
    let scenario = Scenario {
        name,
        description,
        actors,
        steps,
    };
    validate(&scenario)?;
    Ok(scenario)
}

fn parse_steps(value: Option<&Value>, at: &str) -> Result<Vec<Step>, String> {
    let items = value
        .and_then(Value::as_array)
        .ok_or_else(|| format!("`{at}` must be an array of steps"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| parse_step(v).map_err(|e| format!("{at}[{i}]: {e}")))
        .collect()
}

const KINDS: [&str; 8] = [
    "connect",
    "send",
    "expect",
    "expect_none",
    "expect_close",
    "disconnect",
    "wait",
    "repeat",
];

fn parse_step(value: &Value) -> Result<Step, String> {
    let obj = value.as_object().ok_or("a step is a JSON object")?;
    let kinds: Vec<&str> = KINDS
        .iter()
        .copied()
        .filter(|k| obj.contains_key(*k))
        .collect();
    let [kind] = kinds[..] else {
        return Err(format!(
            "a step has exactly one of {}",
            KINDS.map(|k| format!("`{k}`")).join(", ")
        ));
    };
    let actor = || req_str(obj, kind, kind);
    let pattern = |key: &str| -> Result<Value, String> {
        let p = obj
            .get(key)
            .cloned()
            .ok_or_else(|| format!("{kind}: `{key}` is required"))?;
        validate_pattern(&p).map_err(|e| format!("{kind}: {e}"))?;
        Ok(p)
    };
    Ok(match kind {
        "connect" => {
            allow_keys(obj, &["connect", "token", "hello"], kind)?;
            let token =
                match obj.get("token").map(|t| t.as_str()) {
                    None | Some(Some("valid")) => TokenKind::Valid,
                    Some(Some("missing")) => TokenKind::Missing,
                    Some(Some("forged")) => TokenKind::Forged,
                    Some(Some("expired")) => TokenKind::Expired,
                    Some(Some("other_secret")) => TokenKind::OtherSecret,
                    _ => return Err(
                        "connect: `token` is one of valid, missing, forged, expired, other_secret"
                            .into(),
                    ),
                };
            let hello = obj
                .contains_key("hello")
                .then(|| pattern("hello"))
                .transpose()?;
            if hello.is_some() && token != TokenKind::Valid {
                return Err("connect: `hello` needs a valid token".into());
            }
            Step::Connect {
                actor: actor()?,
                token,
                hello,
            }
        }
        "send" => {
            allow_keys(obj, &["send", "frame", "raw", "binary", "reply"], kind)?;
            let payload =
                match (obj.get("frame"), obj.get("raw"), obj.get("binary")) {
                    (Some(f), None, None) => Payload::Json(f.clone()),
                    (None, Some(Value::String(r)), None) => Payload::Raw(r.clone()),
                    (None, None, Some(Value::String(b))) => Payload::Binary(b.clone()),
                    _ => return Err(
                        "send: exactly one of `frame` (JSON), `raw` (string), `binary` (string)"
                            .into(),
                    ),
                };
            let reply = obj
                .contains_key("reply")
                .then(|| pattern("reply"))
                .transpose()?;
            if reply.is_some() {
                let has_id = matches!(&payload, Payload::Json(f) if f.get("id").is_some_and(Value::is_string));
                if !has_id {
                    return Err("send: `reply` needs a `frame` with a string `id`".into());
                }
            }
            Step::Send {
                actor: actor()?,
                payload,
                reply,
            }
        }
        "expect" => {
            allow_keys(obj, &["expect", "frame", "timeout"], kind)?;
            Step::Expect {
                actor: actor()?,
                pattern: pattern("frame")?,
                timeout: obj.get("timeout").map(parse_wait).transpose()?,
            }
        }
        "expect_none" => {
            allow_keys(obj, &["expect_none", "frame", "ms"], kind)?;
            Step::ExpectNone {
                actor: actor()?,
                pattern: pattern("frame")?,
                within: obj
                    .get("ms")
                    .map(parse_wait)
                    .transpose()?
                    .unwrap_or(Wait::Ms(300)),
            }
        }
        "expect_close" => {
            allow_keys(obj, &["expect_close", "code", "reason", "timeout"], kind)?;
            let code = match obj.get("code") {
                None => None,
                Some(c) => Some(
                    c.as_u64()
                        .and_then(|c| u16::try_from(c).ok())
                        .ok_or("expect_close: `code` must be a close code")?,
                ),
            };
            let reason = obj
                .contains_key("reason")
                .then(|| pattern("reason"))
                .transpose()?;
            Step::ExpectClose {
                actor: actor()?,
                code,
                reason,
                timeout: obj.get("timeout").map(parse_wait).transpose()?,
            }
        }
        "disconnect" => {
            allow_keys(obj, &["disconnect"], kind)?;
            Step::Disconnect { actor: actor()? }
        }
        "wait" => {
            allow_keys(obj, &["wait"], kind)?;
            Step::Wait(parse_wait(&obj["wait"])?)
        }
        "repeat" => {
            allow_keys(obj, &["repeat", "plus", "steps"], kind)?;
            let count = match &obj["repeat"] {
                Value::String(s) => s.clone(),
                Value::Number(n) if n.is_u64() => n.to_string(),
                _ => return Err("repeat: a count or a limit name".into()),
            };
            let plus = match obj.get("plus") {
                None => 0,
                Some(p) => p.as_i64().ok_or("repeat: `plus` must be an integer")?,
            };
            Step::Repeat {
                count,
                plus,
                steps: parse_steps(obj.get("steps"), "repeat.steps")?,
            }
        }
        _ => unreachable!("kinds are listed above"),
    })
}

fn parse_wait(value: &Value) -> Result<Wait, String> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .map(Wait::Ms)
            .ok_or_else(|| "a duration is whole milliseconds".into()),
        Value::String(s) if crate::pattern::is_identifier(s) => Ok(Wait::Limit(s.clone())),
        _ => Err("a duration is milliseconds or a limit name like `recall_window`".into()),
    }
}

fn allow_keys(obj: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), String> {
    match obj
        .keys()
        .find(|k| !allowed.contains(&k.as_str()) && k.as_str() != "note")
    {
        Some(k) => Err(format!(
            "{what}: unknown key `{k}` (allowed: {}, note)",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

fn req_str(obj: &Map<String, Value>, key: &str, what: &str) -> Result<String, String> {
    obj.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("{what}: `{key}` must be a string"))
}

/// Whole-scenario checks: actors exist, `${user:...}` names a user, captures are made
/// before they are used.
fn validate(s: &Scenario) -> Result<(), String> {
    let users: BTreeSet<&str> = s.actors.values().map(|a| a.user.as_str()).collect();
    let mut captured = BTreeSet::new();
    check_steps(s, &s.steps, &users, &mut captured, false, "")
}

fn check_steps(
    s: &Scenario,
    steps: &[Step],
    users: &BTreeSet<&str>,
    captured: &mut BTreeSet<String>,
    in_repeat: bool,
    prefix: &str,
) -> Result<(), String> {
    for (n, step) in steps.iter().enumerate() {
        let at = format!("step {prefix}{}", n + 1);
        let actor = match step {
            Step::Connect { actor, .. }
            | Step::Send { actor, .. }
            | Step::Expect { actor, .. }
            | Step::ExpectNone { actor, .. }
            | Step::ExpectClose { actor, .. }
            | Step::Disconnect { actor } => Some(actor),
            _ => None,
        };
        if let Some(actor) = actor {
            if !s.actors.contains_key(actor) {
                return Err(format!("{at}: no actor {actor:?}"));
            }
        }
        let mut refs = Vec::new();
        if let Step::Send {
            payload: Payload::Json(frame),
            ..
        } = step
        {
            references(frame, &mut refs);
        }
        for p in step.patterns() {
            references(p, &mut refs);
        }
        for r in &refs {
            let known = match r.split_once(':') {
                Some(("user", u)) => users.contains(u),
                Some(("limit" | "text", _)) => true,
                Some(_) => false,
                None if r == "i" => in_repeat,
                None => captured.contains(r),
            };
            if !known {
                return Err(format!("{at} ({}): unknown `${{{r}}}`", step.label()));
            }
        }
        for p in step.patterns() {
            collect_captures(p, captured);
        }
        if let Step::Repeat { steps, .. } = step {
            check_steps(
                s,
                steps,
                users,
                captured,
                true,
                &format!("{prefix}{}.", n + 1),
            )?;
        }
    }
    Ok(())
}

fn collect_captures(pattern: &Value, out: &mut BTreeSet<String>) {
    match pattern {
        Value::String(s) => {
            if let Some(name) = s
                .strip_prefix("{{capture:")
                .and_then(|r| r.strip_suffix("}}"))
            {
                out.insert(name.to_owned());
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_captures(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_captures(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_protocol::ErrorCode;

    fn all_patterns<'a>(steps: &'a [Step], out: &mut Vec<&'a Value>) {
        for step in steps {
            out.extend(step.patterns());
            all_patterns(step.children(), out);
        }
    }

    fn codes_in(value: &Value, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(code)) = map.get("code") {
                    out.insert(code.clone());
                }
                map.values().for_each(|v| codes_in(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| codes_in(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_embedded_scenario_parses_and_there_are_enough() {
        let all = embedded().expect("every scenario parses");
        assert!(all.len() >= 40, "only {} scenarios", all.len());
        let files = EMBEDDED
            .files()
            .filter(|f| f.path().extension().is_some_and(|e| e == "json"))
            .count();
        assert_eq!(files, all.len());
        for s in &all {
            let (num, rest) = s.name.split_at(2.min(s.name.len()));
            assert!(
                num.chars().all(|c| c.is_ascii_digit()) && rest.starts_with('-'),
                "{} is not named NN-name",
                s.name
            );
            assert!(
                !s.description.trim().is_empty(),
                "{} has no description",
                s.name
            );
        }
    }

    #[test]
    fn every_error_code_is_expected_somewhere() {
        let all = embedded().unwrap();
        let mut codes = BTreeSet::new();
        for s in &all {
            let mut patterns = Vec::new();
            all_patterns(&s.steps, &mut patterns);
            patterns.into_iter().for_each(|p| codes_in(p, &mut codes));
        }
        // A storage failure cannot be provoked from outside a server; the server's own
        // fault tests cover `unavailable`.
        let missing: Vec<&str> = ErrorCode::ALL
            .iter()
            .filter(|c| **c != ErrorCode::Unavailable)
            .map(|c| c.as_str())
            .filter(|c| !codes.contains(*c))
            .collect();
        assert!(missing.is_empty(), "no scenario expects {missing:?}");
    }

    #[test]
    fn parse_reports_mistakes_precisely() {
        let ok = r#"{"name":"01-x","description":"d","actors":{"a":{"user":"alice"}},
            "steps":[{"connect":"a"},
                     {"send":"a","frame":{"id":"1","type":"lookup","user":"${user:alice}"},
                      "reply":{"type":"ack","result":{"user":"{{capture:u}}"}}},
                     {"repeat":"recall_throttle_messages","plus":1,
                      "steps":[{"send":"a","frame":{"id":"t${i}","type":"typing","conversation":"${u}"}}]},
                     {"expect_none":"a","frame":{"type":"typing"},"ms":"recall_window"},
                     {"expect_close":"a","code":1000,"note":"why"}]}"#;
        let s = parse("01-x", ok).unwrap();
        assert_eq!(s.steps.len(), 5);
        assert!(
            matches!(&s.steps[3], Step::ExpectNone { within: Wait::Limit(l), .. } if l == "recall_window")
        );

        let bad = |steps: &str| {
            let text = format!(
                r#"{{"name":"01-x","description":"d","actors":{{"a":{{"user":"alice"}}}},"steps":{steps}}}"#
            );
            parse("01-x", &text).unwrap_err()
        };
        assert!(bad(r#"[{"connect":"b"}]"#).contains("no actor"));
        assert!(bad(r#"[{"connect":"a","send":"a"}]"#).contains("exactly one"));
        assert!(bad(r#"[{"expect":"a","frame":{},"tiemout":1}]"#).contains("tiemout"));
        assert!(bad(r#"[{"expect":"a","frame":{"x":"{{nope}}"}}]"#).contains("unknown matcher"));
        assert!(bad(r#"[{"send":"a","frame":{"x":"${later}"}}]"#).contains("${later}"));
        assert!(bad(r#"[{"send":"a","frame":{"to":"${user:bob}"}}]"#).contains("user:bob"));
        assert!(bad(r#"[{"send":"a","frame":{"n":"${i}"}}]"#).contains("${i}"));
        assert!(bad(r#"[{"send":"a","raw":"x","reply":{}}]"#).contains("reply"));
        assert!(bad(r#"[{"connect":"a","token":"stolen"}]"#).contains("token"));
        assert!(parse("02-y", ok).unwrap_err().contains("file name"));
        assert!(parse("01-x", "{").unwrap_err().contains("invalid JSON"));
    }
}
