//! The scenario file format: reading and validation.
//!
//! A scenario file is read with serde into [`Scenario`], whose types are the format: they
//! refuse unknown keys, and `schemars` derives `scenario.schema.json` from them (the
//! `schema` test keeps the checked-in file in step). Errors say where the mistake is, as
//! a path into the file (`steps[3].token`, found with `serde_path_to_error`, plus the line
//! and column outside the steps), and what is wrong; `step.rs` tells how a step, which has
//! no tag, finds its kind. Checks that span steps (actors that exist, captures made before
//! they are used) run after reading, in `validate.rs`.

mod step;
mod validate;
mod values;

pub use step::{
    ConnectStep, DisconnectStep, ExpectCloseStep, ExpectNoneStep, ExpectStep, RepeatStep, SendStep,
    Step, WaitStep, KINDS,
};
pub use values::{Count, Pattern, TokenKind, Wait};

use include_dir::{include_dir, Dir};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_path_to_error::Segment;
use std::collections::BTreeMap;
use std::path::Path;

static EMBEDDED: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/scenarios");

/// A parley conformance scenario: named sessions ("actors") and the steps they take. One
/// scenario per file, `scenarios/NN-name.json`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Where editors find this schema (`../scenario.schema.json`); the runner ignores it.
    #[serde(rename = "$schema")]
    pub schema: Option<String>,
    /// The file name without `.json`, like `07-direct-message-fanout`.
    pub name: String,
    /// What the scenario shows, in one or two sentences.
    pub description: String,
    /// The sessions, by actor name (letters, digits and `_`).
    #[schemars(extend("propertyNames" = {"pattern": "^[A-Za-z0-9_]+$"}))]
    pub actors: BTreeMap<String, ActorSpec>,
    /// The steps, in order; the scenario stops at the first that fails.
    pub steps: Vec<Step>,
}

/// An actor is one session of one user. Several actors may share a user (one person,
/// several devices).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActorSpec {
    /// The scenario's name for the user (letters, digits and `_`); the runner turns it
    /// into a handle unique to the run and the scenario.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_]+$"))]
    pub user: String,
    /// Whether the actor's token carries the `admin` claim.
    #[serde(default)]
    pub admin: bool,
}

/// The JSON Schema of a scenario file, as checked in at `scenario.schema.json`.
pub fn schema() -> schemars::Schema {
    schemars::schema_for!(Scenario)
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
    let scenario = read(text)?;
    if scenario.name != stem {
        return Err(format!(
            "name {:?} differs from the file name {stem:?}",
            scenario.name
        ));
    }
    validate::validate(&scenario)?;
    Ok(scenario)
}

/// The file read into a [`Scenario`]; a mistake is reported with its path in the file.
fn read(text: &str) -> Result<Scenario, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let scenario = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            return format!("invalid JSON: {inner}");
        }
        let (at, mut message) = located(&e);
        if at.starts_with("steps[") {
            // A step is read whole before its kind's struct sees it, so serde_json places
            // a mistake inside one past the step's end, often on the next step's line;
            // the path says which step it is.
            let position = format!(" at line {} column {}", inner.line(), inner.column());
            message.truncate(message.strip_suffix(&position).unwrap_or(&message).len());
        }
        match at.as_str() {
            "" => message,
            _ => format!("{at}: {message}"),
        }
    })?;
    de.end().map_err(|e| format!("invalid JSON: {e}"))?;
    Ok(scenario)
}

/// Where a mistake is, as a path like `steps[3].frame` (empty at the top), and what it is.
/// An unknown key is placed at the object holding it: the message names the key.
fn located<E: std::fmt::Display>(e: &serde_path_to_error::Error<E>) -> (String, String) {
    let message = e.inner().to_string();
    let mut segments: Vec<_> = e.path().iter().collect();
    if let Some(Segment::Map { key }) = segments.last() {
        if message.starts_with(&format!("unknown field `{key}`")) {
            segments.pop();
        }
    }
    let mut at = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => at.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !at.is_empty() {
                    at.push('.');
                }
                at.push_str(key);
            }
            Segment::Unknown => at.push_str(".?"),
        }
    }
    (at, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_protocol::ErrorCode;
    use serde_json::Value;
    use std::collections::BTreeSet;

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
            assert_eq!(
                s.schema.as_deref(),
                Some("../scenario.schema.json"),
                "{} does not start with \"$schema\": \"../scenario.schema.json\" (editors \
                 check the file with it)",
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
            matches!(&s.steps[3], Step::ExpectNone(ExpectNoneStep { within: Wait::Limit(l), .. }) if l == "recall_window")
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

        // The step by its path in the file, its kind, and the key at fault.
        let starts = |got: String, want: &str| assert!(got.starts_with(want), "{got}");
        let is = |got: String, want: &str| assert_eq!(got, want);
        starts(
            bad(r#"[{"connect":"a"},{"expect":"a","frame":{},"tiemout":1}]"#),
            "steps[1]: expect step: unknown field `tiemout`, expected one of `expect`, \
             `frame`, `timeout`, `note`",
        );
        starts(
            bad(r#"[{"repeat":2,"steps":[{"wait":1},{"connect":"a","token":"stolen"}]}]"#),
            "steps[0]: repeat step, at steps[1]: connect step, at token: unknown variant \
             `stolen`, expected one of `valid`,",
        );
        starts(
            bad(r#"[{"expect_none":"a","frame":{},"ms":"2 s"}]"#),
            "steps[0]: expect_none step, at ms: a duration is milliseconds or a limit name",
        );
        is(
            bad(r#"[{"wait":1,"frame":{}}]"#),
            "steps[0]: wait step: unknown field `frame`, expected `wait` or `note`",
        );
        // Outside the steps serde_json's line and column are exact, and kept.
        is(
            bad(r#"{"connect":"a"}"#),
            "steps: invalid type: map, expected a sequence at line 1 column 73",
        );
        let actor = r#"{"name":"01-x","description":"d","actors":{"a":{"user":"alice","admn":true}},"steps":[]}"#;
        is(
            parse("01-x", actor).unwrap_err(),
            "actors.a: unknown field `admn`, expected `user` or `admin` at line 1 column 69",
        );

        // Editors find the schema through `$schema`, which the runner ignores.
        let with_schema = ok.replacen('{', r#"{"$schema":"../scenario.schema.json","#, 1);
        assert_eq!(parse("01-x", &with_schema).unwrap().steps, s.steps);
    }
}
