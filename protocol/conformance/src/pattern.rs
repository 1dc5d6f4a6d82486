//! Frame patterns (`{{...}}` matchers) and `${...}` substitution.
//!
//! Substitution runs first, on frames to send and on patterns alike; matching then compares
//! a substituted pattern with a received frame.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// Matchers a pattern string may be; anything else between `{{` and `}}` is refused.
const MATCHERS: [&str; 5] = [
    "{{any}}",
    "{{absent}}",
    "{{string}}",
    "{{number}}",
    "{{bool}}",
];
/// Prefix of the capturing matcher.
const CAPTURE: &str = "{{capture:";
/// Key of the array matcher `{"{{contains}}": [patterns]}`.
const CONTAINS: &str = "{{contains}}";

/// Everything a scenario can refer to with `${...}`.
#[derive(Debug, Default, Clone)]
pub struct Vars {
    /// Scenario user name (as written in `actors`) to the handle used on the wire this run.
    pub users: BTreeMap<String, String>,
    /// Values captured by `{{capture:NAME}}`.
    pub captures: BTreeMap<String, Value>,
    /// `limits` of the first `hello` seen in the scenario.
    pub limits: Option<Map<String, Value>>,
    /// Index of the innermost `repeat` iteration, from 1.
    pub index: Option<u64>,
}

/// Why a pattern did not match, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// JSON path of the first difference, like `.result.message.state`.
    pub path: String,
    /// What differed.
    pub reason: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "."
        } else {
            &self.path
        };
        write!(f, "at {path}: {}", self.reason)
    }
}

impl Vars {
    /// The value of one `${...}` expression.
    pub fn lookup(&self, expr: &str) -> Result<Value, String> {
        if let Some(user) = expr.strip_prefix("user:") {
            return self
                .users
                .get(user)
                .map(|h| Value::String(h.clone()))
                .ok_or_else(|| format!("`${{{expr}}}`: no actor has user `{user}`"));
        }
        if let Some(count) = expr.strip_prefix("limit:") {
            return self.count(count).map(Value::from);
        }
        if let Some(count) = expr.strip_prefix("text:") {
            let n = self.count(count)?;
            let n = usize::try_from(n).map_err(|_| format!("`${{{expr}}}` is negative"))?;
            return Ok(Value::String("x".repeat(n)));
        }
        if expr == "i" {
            return self
                .index
                .map(Value::from)
                .ok_or_else(|| "`${i}` outside a repeat".to_owned());
        }
        self.captures
            .get(expr)
            .cloned()
            .ok_or_else(|| format!("`${{{expr}}}` was never captured"))
    }

    /// A hello limit by name: `recall_window` finds `recall_window_ms` too.
    pub fn limit(&self, name: &str) -> Result<u64, String> {
        let limits = self
            .limits
            .as_ref()
            .ok_or_else(|| format!("limit `{name}` needed before any session said hello"))?;
        limits
            .get(name)
            .or_else(|| limits.get(&format!("{name}_ms")))
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("hello.limits has no number `{name}` (nor `{name}_ms`)"))
    }

    /// A count expression: a number, or a limit name with an optional `+k` or `-k`.
    pub fn count(&self, expr: &str) -> Result<i64, String> {
        let expr = expr.trim();
        if let Ok(n) = expr.parse::<i64>() {
            return Ok(n);
        }
        let (name, delta) = match expr.find(['+', '-']) {
            Some(at) => {
                let delta: i64 = expr[at + 1..]
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad count expression `{expr}`"))?;
                let sign = if expr.as_bytes()[at] == b'-' { -1 } else { 1 };
                (expr[..at].trim(), sign * delta)
            }
            None => (expr, 0),
        };
        let base = i64::try_from(self.limit(name)?).map_err(|_| format!("`{name}` too large"))?;
        Ok(base + delta)
    }

    /// Replace every `${...}` in `value`, keys included. A string that is exactly one
    /// `${...}` takes the referenced value with its JSON type (a captured number stays one).
    pub fn substitute(&self, value: &Value) -> Result<Value, String> {
        Ok(match value {
            Value::String(s) => self.substitute_str(s)?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.substitute(v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    let key = match self.substitute_str(k)? {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    out.insert(key, self.substitute(v)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    fn substitute_str(&self, s: &str) -> Result<Value, String> {
        if let Some(inner) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            if !inner.contains(['{', '}']) {
                return self.lookup(inner);
            }
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in {s:?}"))?;
            match self.lookup(&after[..end])? {
                Value::String(v) => out.push_str(&v),
                other => out.push_str(&other.to_string()),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(Value::String(out))
    }
}

/// Match `actual` against an already substituted `pattern`; on success the captures are
/// added to `captures`, on failure nothing is.
pub fn matches(
    pattern: &Value,
    actual: &Value,
    captures: &mut BTreeMap<String, Value>,
) -> Result<(), Mismatch> {
    let mut found = BTreeMap::new();
    match_at(pattern, Some(actual), "", &mut found)?;
    captures.extend(found);
    Ok(())
}

fn mismatch(path: &str, reason: impl Into<String>) -> Mismatch {
    Mismatch {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 120 {
        let cut: String = text.chars().take(117).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// `actual` is `None` for an absent key.
fn match_at(
    pattern: &Value,
    actual: Option<&Value>,
    path: &str,
    found: &mut BTreeMap<String, Value>,
) -> Result<(), Mismatch> {
    if pattern.as_str() == Some("{{absent}}") {
        return match actual {
            None | Some(Value::Null) => Ok(()),
            Some(v) => Err(mismatch(path, format!("expected absent, got {}", short(v)))),
        };
    }
    let Some(actual) = actual else {
        return Err(mismatch(
            path,
            format!("missing, expected {}", short(pattern)),
        ));
    };
    match pattern {
        Value::String(p) => match_string(p, actual, path, found),
        Value::Object(p) => {
            if let Some(wanted) = contains_matcher(p) {
                return match_contains(wanted, actual, path, found);
            }
            let Value::Object(a) = actual else {
                return Err(mismatch(
                    path,
                    format!("expected an object, got {}", short(actual)),
                ));
            };
            for (key, sub) in p {
                match_at(sub, a.get(key), &format!("{path}.{key}"), found)?;
            }
            Ok(())
        }
        Value::Array(p) => {
            let Value::Array(a) = actual else {
                return Err(mismatch(
                    path,
                    format!("expected an array, got {}", short(actual)),
                ));
            };
            if p.len() != a.len() {
                return Err(mismatch(
                    path,
                    format!(
                        "expected {} elements, got {}: {}",
                        p.len(),
                        a.len(),
                        short(actual)
                    ),
                ));
            }
            for (i, (sub, item)) in p.iter().zip(a).enumerate() {
                match_at(sub, Some(item), &format!("{path}[{i}]"), found)?;
            }
            Ok(())
        }
        Value::Number(n) => match actual.as_f64() {
            Some(a) if n.as_f64() == Some(a) => Ok(()),
            _ => Err(mismatch(
                path,
                format!("expected {n}, got {}", short(actual)),
            )),
        },
        _ if pattern == actual => Ok(()),
        _ => Err(mismatch(
            path,
            format!("expected {}, got {}", short(pattern), short(actual)),
        )),
    }
}

fn contains_matcher(p: &Map<String, Value>) -> Option<&Vec<Value>> {
    match (p.len(), p.get(CONTAINS)) {
        (1, Some(Value::Array(wanted))) => Some(wanted),
        _ => None,
    }
}

fn match_contains(
    wanted: &[Value],
    actual: &Value,
    path: &str,
    found: &mut BTreeMap<String, Value>,
) -> Result<(), Mismatch> {
    let Value::Array(items) = actual else {
        return Err(mismatch(
            path,
            format!("expected an array, got {}", short(actual)),
        ));
    };
    for (w, sub) in wanted.iter().enumerate() {
        let hit = items.iter().find_map(|item| {
            let mut local = found.clone();
            match_at(sub, Some(item), path, &mut local)
                .ok()
                .map(|()| local)
        });
        match hit {
            Some(local) => *found = local,
            None => {
                return Err(mismatch(
                    path,
                    format!(
                        "no element matches {CONTAINS}[{w}] {} among {}",
                        short(sub),
                        short(actual)
                    ),
                ))
            }
        }
    }
    Ok(())
}

fn match_string(
    p: &str,
    actual: &Value,
    path: &str,
    found: &mut BTreeMap<String, Value>,
) -> Result<(), Mismatch> {
    let ok = match p {
        "{{any}}" => true,
        "{{string}}" => actual.is_string(),
        "{{number}}" => actual.is_number(),
        "{{bool}}" => actual.is_boolean(),
        _ => {
            if let Some(name) = p.strip_prefix(CAPTURE).and_then(|r| r.strip_suffix("}}")) {
                found.insert(name.to_owned(), actual.clone());
                return Ok(());
            }
            actual.as_str() == Some(p)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(mismatch(
            path,
            format!("expected {}, got {}", short(&Value::from(p)), short(actual)),
        ))
    }
}

/// Check that every `{{...}}` in a pattern is a known matcher and every capture name is
/// a plain identifier.
pub fn validate_pattern(pattern: &Value) -> Result<(), String> {
    match pattern {
        Value::String(s) if s.starts_with("{{") && s.ends_with("}}") => {
            if MATCHERS.contains(&s.as_str()) {
                return Ok(());
            }
            match s.strip_prefix(CAPTURE).and_then(|r| r.strip_suffix("}}")) {
                Some(name) if is_identifier(name) => Ok(()),
                Some(name) => Err(format!("capture name `{name}` is not an identifier")),
                None => Err(format!("unknown matcher {s:?}")),
            }
        }
        Value::Array(items) => items.iter().try_for_each(validate_pattern),
        Value::Object(map) => {
            if map.contains_key(CONTAINS) && contains_matcher(map).is_none() {
                return Err(format!(
                    "`{CONTAINS}` must be the only key and hold an array"
                ));
            }
            map.values().try_for_each(validate_pattern)
        }
        _ => Ok(()),
    }
}

/// Every `${...}` expression in a value, keys included.
pub fn references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => scan_references(s, out),
        Value::Array(items) => items.iter().for_each(|v| references(v, out)),
        Value::Object(map) => {
            for (k, v) in map {
                scan_references(k, out);
                references(v, out);
            }
        }
        _ => {}
    }
}

fn scan_references(s: &str, out: &mut Vec<String>) {
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                out.push(after[..end].to_owned());
                rest = &after[end + 1..];
            }
            None => {
                out.push(after.to_owned());
                break;
            }
        }
    }
}

/// Capture names and variables are letters, digits and underscores.
pub fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> Vars {
        let mut v = Vars::default();
        v.users.insert("alice".into(), "alice-r1-01".into());
        v.captures.insert("m".into(), json!("m-123"));
        v.captures.insert("seq".into(), json!(7));
        v.limits = json!({"recall_window_ms": 2000, "max_body_chars": 5, "request_burst": 3})
            .as_object()
            .cloned();
        v.index = Some(4);
        v
    }

    fn check(pattern: Value, actual: Value) -> Result<BTreeMap<String, Value>, Mismatch> {
        let mut caps = BTreeMap::new();
        matches(&pattern, &actual, &mut caps).map(|()| caps)
    }

    #[test]
    fn substitutes_users_captures_limits_and_index() {
        let v = vars();
        let frame = json!({
            "id": "r${i}",
            "to": "${user:alice}",
            "message": "${m}",
            "seq": "${seq}",
            "note": "seq=${seq} of ${user:alice}",
            "limit": "${limit:max_body_chars+1}",
            "body": "${text:max_body_chars-2}",
            "positions": {"${m}": 0}
        });
        assert_eq!(
            v.substitute(&frame).unwrap(),
            json!({
                "id": "r4",
                "to": "alice-r1-01",
                "message": "m-123",
                "seq": 7,
                "note": "seq=7 of alice-r1-01",
                "limit": 6,
                "body": "xxx",
                "positions": {"m-123": 0}
            })
        );
    }

    #[test]
    fn substitution_errors_name_the_problem() {
        let v = vars();
        assert!(v
            .substitute(&json!("${nope}"))
            .unwrap_err()
            .contains("never captured"));
        assert!(v
            .substitute(&json!("${user:carol}"))
            .unwrap_err()
            .contains("carol"));
        assert!(v
            .substitute(&json!("a ${m"))
            .unwrap_err()
            .contains("unclosed"));
        assert!(v
            .substitute(&json!("${limit:bogus}"))
            .unwrap_err()
            .contains("bogus"));
        let fresh = Vars::default();
        assert!(fresh.substitute(&json!("${i}")).is_err());
        assert!(fresh.limit("recall_window").is_err());
    }

    #[test]
    fn limits_resolve_with_or_without_ms_suffix() {
        let v = vars();
        assert_eq!(v.limit("recall_window").unwrap(), 2000);
        assert_eq!(v.limit("recall_window_ms").unwrap(), 2000);
        assert_eq!(v.count("request_burst + 2").unwrap(), 5);
        assert_eq!(v.count("12").unwrap(), 12);
    }

    #[test]
    fn objects_match_as_subsets_and_arrays_exactly() {
        let actual = json!({"type": "ack", "id": "a", "result": {"kind": "ok", "extra": 1}});
        assert!(check(
            json!({"type": "ack", "result": {"kind": "ok"}}),
            actual.clone()
        )
        .is_ok());
        let err = check(json!({"result": {"kind": "sent"}}), actual.clone()).unwrap_err();
        assert_eq!(err.path, ".result.kind");
        let err = check(json!({"missing": 1}), actual).unwrap_err();
        assert!(err.reason.starts_with("missing"));
        assert!(check(json!([1, 2]), json!([1, 2])).is_ok());
        assert!(check(json!([1]), json!([1, 2])).is_err());
        assert_eq!(
            check(json!([{"a": 1}, {"a": 2}]), json!([{"a": 1}, {"a": 3}]))
                .unwrap_err()
                .path,
            "[1].a"
        );
        assert!(check(json!(1), json!(1.0)).is_ok());
        assert!(check(json!(null), json!(null)).is_ok());
        assert!(check(json!(true), json!(false)).is_err());
    }

    #[test]
    fn type_matchers() {
        assert!(check(json!({"a": "{{any}}"}), json!({"a": null})).is_ok());
        assert!(check(json!({"a": "{{any}}"}), json!({})).is_err());
        assert!(check(json!({"a": "{{string}}"}), json!({"a": "x"})).is_ok());
        assert!(check(json!({"a": "{{string}}"}), json!({"a": 1})).is_err());
        assert!(check(json!({"a": "{{number}}"}), json!({"a": 1.5})).is_ok());
        assert!(check(json!({"a": "{{number}}"}), json!({"a": "1"})).is_err());
        assert!(check(json!({"a": "{{bool}}"}), json!({"a": false})).is_ok());
        assert!(check(json!({"a": "{{absent}}"}), json!({})).is_ok());
        assert!(check(json!({"a": "{{absent}}"}), json!({"a": null})).is_ok());
        let err = check(json!({"a": "{{absent}}"}), json!({"a": "body"})).unwrap_err();
        assert_eq!(err.path, ".a");
    }

    #[test]
    fn captures_are_kept_only_when_the_whole_pattern_matches() {
        let caps = check(
            json!({"result": {"message": {"id": "{{capture:m}}", "seq": "{{capture:s}}"}}}),
            json!({"result": {"message": {"id": "m-9", "seq": 3}}}),
        )
        .unwrap();
        assert_eq!(caps["m"], json!("m-9"));
        assert_eq!(caps["s"], json!(3));

        let mut caps = BTreeMap::new();
        let failed = matches(
            &json!({"id": "{{capture:m}}", "kind": "x"}),
            &json!({"id": "m-1", "kind": "y"}),
            &mut caps,
        );
        assert!(failed.is_err());
        assert!(caps.is_empty());
    }

    #[test]
    fn contains_finds_elements_in_any_order() {
        let actual =
            json!({"reports": [{"id": "r1", "reason": "spam"}, {"id": "r2", "reason": "abuse"}]});
        assert!(check(
            json!({"reports": {"{{contains}}": [{"id": "r2"}, {"reason": "spam"}]}}),
            actual.clone()
        )
        .is_ok());
        assert!(check(
            json!({"reports": {"{{contains}}": [{"id": "r3"}]}}),
            actual.clone()
        )
        .is_err());
        let caps = check(
            json!({"reports": {"{{contains}}": [{"reason": "abuse", "id": "{{capture:r}}"}]}}),
            actual,
        )
        .unwrap();
        assert_eq!(caps["r"], json!("r2"));
        assert!(check(json!({"{{contains}}": []}), json!({})).is_err());
    }

    #[test]
    fn validation_refuses_unknown_matchers() {
        assert!(validate_pattern(&json!({"a": ["{{any}}", "{{capture:x_1}}"]})).is_ok());
        assert!(validate_pattern(&json!({"a": "{{anything}}"})).is_err());
        assert!(validate_pattern(&json!({"a": "{{capture:bad name}}"})).is_err());
        assert!(validate_pattern(&json!({"{{contains}}": [1], "b": 2})).is_err());
        assert!(validate_pattern(&json!({"{{contains}}": 1})).is_err());
    }

    #[test]
    fn references_lists_every_expression() {
        let mut out = Vec::new();
        references(&json!({"${k}": ["a ${user:bob} ${i}", "${x"]}), &mut out);
        assert_eq!(out, ["k", "user:bob", "i", "x"]);
    }
}
