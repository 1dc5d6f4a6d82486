//! The values steps are made of: durations, counts, tokens and patterns.
//!
//! Each reads a plain JSON value and refuses what the README does not allow with a
//! sentence saying what was expected, not serde's "did not match any variant".

use crate::pattern::{is_identifier, validate_pattern};
use schemars::JsonSchema;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A duration: whole milliseconds, or the name of a `hello.limits` entry
/// (`recall_window` reads `recall_window_ms`), which waits that limit plus the runner's
/// margin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Wait {
    /// Exactly this many milliseconds.
    Ms(u64),
    /// The named limit plus the margin.
    Limit(#[schemars(regex(pattern = r"^[A-Za-z0-9_]+$"))] String),
}

impl<'de> Deserialize<'de> for Wait {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Wait, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_u64()
                .map(Wait::Ms)
                .ok_or_else(|| D::Error::custom("a duration is whole milliseconds")),
            Value::String(s) if is_identifier(&s) => Ok(Wait::Limit(s)),
            other => Err(D::Error::custom(format!(
                "a duration is milliseconds or a limit name like `recall_window`, not {other}"
            ))),
        }
    }
}

/// How many times a `repeat` runs its steps: a number, or the name of a `hello.limits`
/// entry with an optional `+k` or `-k` (`recall_throttle_messages`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Count {
    /// This many times.
    Times(u64),
    /// The named limit, plus or minus a constant.
    Limit(#[schemars(regex(pattern = r"^\s*[A-Za-z0-9_]+\s*([+-]\s*[0-9]+\s*)?$"))] String),
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Count, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) if n.is_u64() => Ok(Count::Times(n.as_u64().unwrap_or_default())),
            Value::String(s) if is_count_expr(&s) => Ok(Count::Limit(s)),
            other => Err(D::Error::custom(format!(
                "a count is a number or a limit name with an optional `+k` or `-k`, not {other}"
            ))),
        }
    }
}

/// `name`, `name+k` or `name-k`, spaces allowed around the parts.
fn is_count_expr(expr: &str) -> bool {
    let (name, delta) = match expr.split_once(['+', '-']) {
        Some((name, delta)) => (name, Some(delta.trim())),
        None => (expr, None),
    };
    is_identifier(name.trim())
        && delta.is_none_or(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
}

/// Which token a `connect` step presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Signed with the server's secret, valid for an hour.
    #[default]
    Valid,
    /// No token at all.
    Missing,
    /// A real token whose payload was replaced by an admin one, signature kept.
    Forged,
    /// Signed with the server's secret, expired an hour ago.
    Expired,
    /// Signed with a secret the server does not know.
    OtherSecret,
}

/// A pattern: JSON compared with a received frame. An object matches an object that has
/// every key of the pattern with a matching value (other keys are ignored); an array
/// matches an array of the same length, element by element; numbers compare by value,
/// other scalars exactly. The strings `{{any}}`, `{{absent}}`, `{{string}}`, `{{number}}`,
/// `{{bool}}` and `{{capture:NAME}}` are matchers, and `{"{{contains}}": [p1, p2]}`
/// matches an array with an element matching each pattern, in any order. Every string,
/// keys included, has its `${...}` expressions substituted first.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Pattern(pub Value);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Pattern, D::Error> {
        let value = Value::deserialize(d)?;
        validate_pattern(&value).map_err(D::Error::custom)?;
        Ok(Pattern(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_and_counts_say_what_they_expect() {
        let wait = |v: Value| serde_json::from_value::<Wait>(v).map_err(|e| e.to_string());
        assert_eq!(wait(json!(300)), Ok(Wait::Ms(300)));
        assert_eq!(
            wait(json!("recall_window")),
            Ok(Wait::Limit("recall_window".into()))
        );
        assert!(wait(json!(1.5)).unwrap_err().contains("whole milliseconds"));
        assert!(wait(json!("two seconds"))
            .unwrap_err()
            .contains("limit name"));

        let count = |v: Value| serde_json::from_value::<Count>(v).map_err(|e| e.to_string());
        assert_eq!(count(json!(3)), Ok(Count::Times(3)));
        for ok in ["recall_throttle_messages", "max_body_chars+1", " n - 2 "] {
            assert_eq!(count(json!(ok)), Ok(Count::Limit(ok.into())), "{ok}");
        }
        for bad in [
            json!(-1),
            json!("a+"),
            json!("a+b"),
            json!("two words"),
            json!(true),
        ] {
            assert!(
                count(bad.clone()).unwrap_err().contains("a count is"),
                "{bad}"
            );
        }
    }
}
