//! Whole-scenario checks that no one step can make: names are identifiers, every actor a
//! step names exists, `${user:...}` names a user, and captures are made before they are
//! used.

use super::{Scenario, Step};
use crate::pattern::{is_identifier, references};
use serde_json::Value;
use std::collections::BTreeSet;

/// Check a scenario read from its file.
pub(super) fn validate(s: &Scenario) -> Result<(), String> {
    for (actor, spec) in &s.actors {
        if !is_identifier(actor) || !is_identifier(&spec.user) {
            return Err(format!(
                "actor {actor:?}: names are letters, digits and `_`"
            ));
        }
    }
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
        if let Some(actor) = step.actor() {
            if !s.actors.contains_key(actor) {
                return Err(format!("{at}: no actor {actor:?}"));
            }
        }
        let mut refs = Vec::new();
        if let Step::Send(send) = step {
            send.frame.iter().for_each(|f| references(f, &mut refs));
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
        let inner = format!("{prefix}{}.", n + 1);
        check_steps(s, step.children(), users, captured, true, &inner)?;
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
