//! The JSON Schemas in `protocol/schema/` are generated from the wire types; this test
//! fails when they drift. Regenerate with `PARLEY_UPDATE_SCHEMA=1 cargo test -p parley-protocol --test schema`.
//!
//! It also checks that every JSON example in `protocol/README.md` is an exact wire frame
//! (it parses as a `Request` or a `ServerFrame` and serialises back to the same JSON), and
//! that the README shows every request, every server frame, every ack kind and every error
//! code. Validating the examples against the schemas themselves would need a JSON Schema
//! validator crate; the round trip through the very types the schemas come from checks the
//! same shapes without one.

use parley_protocol::{ErrorCode, Request, ServerFrame};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

const REGENERATE: &str = "PARLEY_UPDATE_SCHEMA=1 cargo test -p parley-protocol --test schema";

fn protocol_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn schemas() -> Vec<(&'static str, schemars::Schema)> {
    vec![
        ("request.json", schemars::schema_for!(Request)),
        ("server-frame.json", schemars::schema_for!(ServerFrame)),
        ("error-code.json", schemars::schema_for!(ErrorCode)),
    ]
}

fn pretty(schema: &schemars::Schema) -> String {
    serde_json::to_string_pretty(schema).expect("a schema serialises") + "\n"
}

#[test]
fn schemas_match_the_types() {
    let dir = protocol_dir().join("schema");
    let update = std::env::var("PARLEY_UPDATE_SCHEMA").is_ok_and(|v| v == "1");
    let mut drifted = Vec::new();
    for (file, schema) in schemas() {
        let text = pretty(&schema);
        let path = dir.join(file);
        if update {
            std::fs::create_dir_all(&dir).expect("create protocol/schema");
            std::fs::write(&path, &text).expect("write schema");
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            drifted.push(file);
        }
    }
    assert!(
        drifted.is_empty(),
        "protocol/schema/{drifted:?} no longer match the wire types; regenerate with \
         `{REGENERATE}` and review the diff"
    );
}

#[test]
fn no_stale_schema_files() {
    let made: BTreeSet<&str> = schemas().iter().map(|(f, _)| *f).collect();
    let dir = protocol_dir().join("schema");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return; // not generated yet: schemas_match_the_types reports it
    };
    for entry in entries {
        let name = entry.expect("list protocol/schema").file_name();
        let name = name.to_string_lossy();
        assert!(
            made.contains(name.as_ref()),
            "protocol/schema/{name} is not generated from any wire type; remove it or add it \
             to this test's schemas()"
        );
    }
}

#[test]
fn every_error_code_is_in_the_schema() {
    let schema = serde_json::to_value(schemars::schema_for!(ErrorCode)).unwrap();
    let text = schema.to_string();
    for code in ErrorCode::ALL {
        assert!(
            text.contains(&format!("\"{}\"", code.as_str())),
            "{code} missing"
        );
    }
}

/// The `const` values of `tag` in every branch of a schema's `oneOf`.
fn tags(schema: &Value, tag: &str) -> BTreeSet<String> {
    schema["oneOf"]
        .as_array()
        .expect("a tagged enum's schema has oneOf")
        .iter()
        .map(|branch| {
            branch["properties"][tag]["const"]
                .as_str()
                .expect("every branch names its tag")
                .to_owned()
        })
        .collect()
}

/// Every JSON value inside the README's ```json blocks, with the line its block starts on.
fn readme_examples() -> Vec<(usize, Value)> {
    let path = protocol_dir().join("README.md");
    let text = std::fs::read_to_string(&path).expect("protocol/README.md exists");
    let mut examples = Vec::new();
    let mut block: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match block.as_mut() {
            None if line.trim_end() == "```json" => block = Some((n + 2, String::new())),
            None => {}
            Some(_) if line.trim_end() == "```" => {
                let (start, body) = block.take().expect("inside a block");
                for value in serde_json::Deserializer::from_str(&body).into_iter::<Value>() {
                    let value = value.unwrap_or_else(|e| {
                        panic!("README.md, block at line {start}: not JSON: {e}")
                    });
                    examples.push((start, value));
                }
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    assert!(block.is_none(), "README.md ends inside a ```json block");
    examples
}

/// A request carries an `id`; of the server's frames only `ack` and `error` do, and no
/// request is called either.
fn is_request(value: &Value) -> bool {
    value.get("id").is_some() && !matches!(value["type"].as_str(), Some("ack" | "error"))
}

#[test]
fn readme_examples_are_exact_wire_frames() {
    let examples = readme_examples();
    assert!(examples.len() >= 40, "only {} examples", examples.len());
    for (line, value) in &examples {
        let back = if is_request(value) {
            serde_json::from_value::<Request>(value.clone())
                .map(|r| serde_json::to_value(r).unwrap())
        } else {
            serde_json::from_value::<ServerFrame>(value.clone())
                .map(|f| serde_json::to_value(f).unwrap())
        };
        let kind = if is_request(value) {
            "request"
        } else {
            "server frame"
        };
        match back {
            Ok(back) => assert_eq!(
                &back, value,
                "README.md, block at line {line}: this {kind} does not survive a round trip \
                 through the wire types (a field is unknown, misnamed or null)"
            ),
            Err(e) => panic!("README.md, block at line {line}: not a valid {kind}: {e}\n{value}"),
        }
    }
}

#[test]
fn readme_shows_every_request_frame_ack_and_error_code() {
    let examples = readme_examples();
    let mut requests = BTreeSet::new();
    let mut frames = BTreeSet::new();
    let mut acks = BTreeSet::new();
    let mut nested = Vec::new();
    for (_, value) in &examples {
        let kind = value["type"].as_str().unwrap_or_default().to_owned();
        if is_request(value) {
            requests.insert(kind);
            continue;
        }
        if let Some(k) = value["result"]["kind"].as_str() {
            acks.insert(k.to_owned());
        }
        for update in value["result"]["updates"].as_array().into_iter().flatten() {
            nested.extend(update["frames"].as_array().into_iter().flatten().cloned());
        }
        frames.insert(kind);
    }
    for frame in nested {
        frames.insert(frame["type"].as_str().unwrap_or_default().to_owned());
    }

    let request_schema = serde_json::to_value(schemars::schema_for!(Request)).unwrap();
    let frame_schema = serde_json::to_value(schemars::schema_for!(ServerFrame)).unwrap();
    let missing_requests: Vec<_> = tags(&request_schema, "type")
        .difference(&requests)
        .cloned()
        .collect();
    let missing_frames: Vec<_> = tags(&frame_schema, "type")
        .difference(&frames)
        .cloned()
        .collect();
    let missing_acks: Vec<_> = tags(&frame_schema["$defs"]["AckResult"], "kind")
        .difference(&acks)
        .cloned()
        .collect();
    assert!(
        missing_requests.is_empty(),
        "README.md has no example of requests {missing_requests:?}"
    );
    assert!(
        missing_frames.is_empty(),
        "README.md has no example of frames {missing_frames:?}"
    );
    assert!(
        missing_acks.is_empty(),
        "README.md has no example of acks {missing_acks:?}"
    );

    let text = std::fs::read_to_string(protocol_dir().join("README.md")).unwrap();
    let missing_codes: Vec<_> = ErrorCode::ALL
        .iter()
        .filter(|code| !text.contains(&format!("| `{}` |", code.as_str())))
        .collect();
    assert!(
        missing_codes.is_empty(),
        "README.md's error table lacks {missing_codes:?}"
    );
}
