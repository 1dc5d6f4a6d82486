//! Steps: one struct per kind, and the dispatch on the key that names the kind.
//!
//! A step has no tag field: its kind is whichever of [`KINDS`] it carries, next to that
//! kind's other keys. So [`Step`] reads the object, finds the one kind key, and hands the
//! object to that kind's struct, which refuses unknown keys (`deny_unknown_fields`). An
//! untagged enum would do the same search but answer any mistake with "data did not match
//! any variant of untagged enum"; this way a typo gets "expect step: unknown field
//! `tiemout`, expected one of `expect`, `frame`, `timeout`, `note`".

use super::values::{Count, Pattern, TokenKind, Wait};
use schemars::JsonSchema;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// One step of a scenario: an object with exactly one of the keys `connect`, `send`,
/// `expect`, `expect_none`, `expect_close`, `disconnect`, `wait` and `repeat`, which names
/// the kind of step and, except for `wait` and `repeat`, the actor taking it.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(untagged)]
pub enum Step {
    /// `{"connect": A}`.
    Connect(ConnectStep),
    /// `{"send": A, "frame": F}`, or `"raw"`/`"binary"` instead of `"frame"`.
    Send(SendStep),
    /// `{"expect": A, "frame": P}`.
    Expect(ExpectStep),
    /// `{"expect_none": A, "frame": P}`.
    ExpectNone(ExpectNoneStep),
    /// `{"expect_close": A, "code": C}`.
    ExpectClose(ExpectCloseStep),
    /// `{"disconnect": A}`.
    Disconnect(DisconnectStep),
    /// `{"wait": D}`.
    Wait(WaitStep),
    /// `{"repeat": N, "steps": [...]}`.
    Repeat(RepeatStep),
}

/// Opens a session for the actor with a valid token, waits for its first frame, which
/// must be `hello` for the actor's user, and consumes it. With a bad `token`, nothing is
/// awaited; later steps assert the error frame and the close.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("dependentSchemas" = {"hello": {"properties": {"token": {"const": "valid"}}}}))]
pub struct ConnectStep {
    /// The actor whose session opens.
    #[serde(rename = "connect")]
    pub actor: String,
    /// The token presented.
    #[serde(default)]
    pub token: TokenKind,
    /// A pattern the `hello` must match too (only with a valid token).
    pub hello: Option<Pattern>,
    /// Why the step is there, for readers; the runner ignores it.
    pub note: Option<String>,
}

/// Sends one frame: exactly one of `frame` (JSON, substituted), `raw` (a text frame sent
/// untouched, for malformed JSON) and `binary` (a binary frame of the string's bytes).
/// With `reply`, waits for the `ack` or `error` whose `id` equals the frame's `id`,
/// consumes it and matches it against the pattern; without, the answer stays unconsumed
/// for a later `expect`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend(
    "oneOf" = [{"required": ["frame"]}, {"required": ["raw"]}, {"required": ["binary"]}],
    "dependentRequired" = {"reply": ["frame"]}
))]
pub struct SendStep {
    /// The actor whose session sends.
    #[serde(rename = "send")]
    pub actor: String,
    /// A JSON frame, `${...}` substituted before it is sent.
    pub frame: Option<Value>,
    /// A text frame sent as is.
    pub raw: Option<String>,
    /// A binary frame holding these UTF-8 bytes.
    pub binary: Option<String>,
    /// A pattern the answer must match (needs a `frame` with a string `id`).
    pub reply: Option<Pattern>,
    /// Why the step is there, for readers; the runner ignores it.
    pub note: Option<String>,
}

/// Waits for the first frame the actor received and no step consumed yet that matches
/// `frame`, and consumes it.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectStep {
    /// The actor that receives the frame.
    #[serde(rename = "expect")]
    pub actor: String,
    /// The pattern the frame must match.
    #[serde(rename = "frame")]
    pub pattern: Pattern,
    /// How long the frame may take (default: the runner's patience).
    pub timeout: Option<Wait>,
    /// Why the step is there, for readers; the runner ignores it.
    pub note: Option<String>,
}

/// Keeps receiving for `ms`, then fails if any unconsumed frame matches `frame`.
/// Consumes nothing.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectNoneStep {
    /// The actor that must not receive the frame.
    #[serde(rename = "expect_none")]
    pub actor: String,
    /// The pattern no frame may match.
    #[serde(rename = "frame")]
    pub pattern: Pattern,
    /// How long to watch.
    #[serde(rename = "ms", default = "ExpectNoneStep::default_within")]
    pub within: Wait,
    /// Why the step is there, for readers; the runner ignores it.
    pub note: Option<String>,
}

impl ExpectNoneStep {
    fn default_within() -> Wait {
        Wait::Ms(300)
    }
}

/// Waits for the server to close the actor's session, and checks the close code and
/// reason.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectCloseStep {
    /// The actor whose session the server closes.
    #[serde(rename = "expect_close")]
    pub actor: String,
    /// The close code expected.
    pub code: Option<u16>,
    /// A pattern for the close reason (a string pattern).
    pub reason: Option<Pattern>,
    /// How long the close may take (default: the runner's patience).
    pub timeout: Option<Wait>,
    /// Why the step is there, for readers; the runner ignores it.
    pub note: Option<String>,
}

/// Closes the actor's session normally. A later `connect` of the actor opens a new
/// session.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DisconnectStep {
    /// The actor whose session closes.
    #[serde(rename = "disconnect")]
    pub actor: String,
    /// Why the step is there, for readers; the runner ignores it.
    pub note: Option<String>,
}

/// Sleeps.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitStep {
    /// How long.
    pub wait: Wait,
    /// Why the step is there, for readers; the runner ignores it.
    pub note: Option<String>,
}

/// Runs `steps` `repeat + plus` times, with `${i}` = 1, 2, ...
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepeatStep {
    /// How many times.
    #[serde(rename = "repeat")]
    pub count: Count,
    /// Added to the count.
    #[serde(default)]
    pub plus: i64,
    /// The steps of one iteration.
    pub steps: Vec<Step>,
    /// Why the step is there, for readers; the runner ignores it.
    pub note: Option<String>,
}

/// The keys that name a step's kind; a step has exactly one.
pub const KINDS: [&str; 8] = [
    "connect",
    "send",
    "expect",
    "expect_none",
    "expect_close",
    "disconnect",
    "wait",
    "repeat",
];

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Step, D::Error> {
        let value = Value::deserialize(d)?;
        let kind = kind_of(&value).map_err(D::Error::custom)?;
        let step = match kind {
            "connect" => kind_struct(value)
                .and_then(ConnectStep::checked)
                .map(Step::Connect),
            "send" => kind_struct(value)
                .and_then(SendStep::checked)
                .map(Step::Send),
            "expect" => kind_struct(value).map(Step::Expect),
            "expect_none" => kind_struct(value).map(Step::ExpectNone),
            "expect_close" => kind_struct(value).map(Step::ExpectClose),
            "disconnect" => kind_struct(value).map(Step::Disconnect),
            "wait" => kind_struct(value).map(Step::Wait),
            "repeat" => kind_struct(value).map(Step::Repeat),
            _ => unreachable!("kind_of returns one of KINDS"),
        };
        step.map_err(|e| D::Error::custom(format!("{kind} step{e}")))
    }
}

/// The one key of [`KINDS`] the step carries.
fn kind_of(value: &Value) -> Result<&'static str, String> {
    let obj = value.as_object().ok_or("a step is a JSON object")?;
    match KINDS
        .iter()
        .filter(|k| obj.contains_key(**k))
        .collect::<Vec<_>>()[..]
    {
        [kind] => Ok(kind),
        _ => Err(format!(
            "a step has exactly one of {}",
            KINDS.map(|k| format!("`{k}`")).join(", ")
        )),
    }
}

/// The step read as its kind's struct. The error starts with where in the step it is
/// (`, at token: ...`), or with `: ` when it is about the step as a whole.
fn kind_struct<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| match super::located(&e) {
        (at, message) if at.is_empty() => format!(": {message}"),
        (at, message) => format!(", at {at}: {message}"),
    })
}

impl ConnectStep {
    fn checked(self) -> Result<Self, String> {
        if self.hello.is_some() && self.token != TokenKind::Valid {
            return Err(": `hello` needs a valid token".into());
        }
        Ok(self)
    }
}

impl SendStep {
    fn checked(self) -> Result<Self, String> {
        let payloads = [
            self.frame.is_some(),
            self.raw.is_some(),
            self.binary.is_some(),
        ];
        if payloads.iter().filter(|p| **p).count() != 1 {
            return Err(
                ": exactly one of `frame` (JSON), `raw` (string), `binary` (string)".into(),
            );
        }
        let has_id = self
            .frame
            .as_ref()
            .is_some_and(|f| f.get("id").is_some_and(Value::is_string));
        if self.reply.is_some() && !has_id {
            return Err(": `reply` needs a `frame` with a string `id`".into());
        }
        Ok(self)
    }
}

impl Step {
    /// Short label for reports, like `expect bob`.
    pub fn label(&self) -> String {
        match self.actor() {
            Some(actor) => format!("{} {actor}", self.kind()),
            None => self.kind().to_owned(),
        }
    }

    /// The key that names the step's kind, like `expect_none`.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Connect(_) => "connect",
            Step::Send(_) => "send",
            Step::Expect(_) => "expect",
            Step::ExpectNone(_) => "expect_none",
            Step::ExpectClose(_) => "expect_close",
            Step::Disconnect(_) => "disconnect",
            Step::Wait(_) => "wait",
            Step::Repeat(_) => "repeat",
        }
    }

    /// The actor taking the step (`wait` and `repeat` have none).
    pub fn actor(&self) -> Option<&str> {
        match self {
            Step::Connect(ConnectStep { actor, .. })
            | Step::Send(SendStep { actor, .. })
            | Step::Expect(ExpectStep { actor, .. })
            | Step::ExpectNone(ExpectNoneStep { actor, .. })
            | Step::ExpectClose(ExpectCloseStep { actor, .. })
            | Step::Disconnect(DisconnectStep { actor, .. }) => Some(actor),
            Step::Wait(_) | Step::Repeat(_) => None,
        }
    }

    /// The steps inside this one (only `repeat` has any).
    pub fn children(&self) -> &[Step] {
        match self {
            Step::Repeat(repeat) => &repeat.steps,
            _ => &[],
        }
    }

    /// The step's patterns: `expect`, `expect_none`, `reply`, `hello` and a close `reason`.
    pub fn patterns(&self) -> Vec<&Value> {
        let pattern = match self {
            Step::Expect(ExpectStep { pattern, .. })
            | Step::ExpectNone(ExpectNoneStep { pattern, .. }) => Some(pattern),
            Step::Send(SendStep { reply, .. }) => reply.as_ref(),
            Step::Connect(ConnectStep { hello, .. }) => hello.as_ref(),
            Step::ExpectClose(ExpectCloseStep { reason, .. }) => reason.as_ref(),
            _ => None,
        };
        pattern.map(|p| &p.0).into_iter().collect()
    }
}
