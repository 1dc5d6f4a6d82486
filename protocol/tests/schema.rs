//! The JSON Schemas in `protocol/schema/` are generated from the wire types; this test
//! fails when they drift. Regenerate with `PARLEY_UPDATE_SCHEMA=1 cargo test -p parley-protocol`.

use parley_protocol::{ErrorCode, Request, ServerFrame};
use std::path::PathBuf;

fn schemas() -> Vec<(&'static str, schemars::Schema)> {
    vec![
        ("request.json", schemars::schema_for!(Request)),
        ("server-frame.json", schemars::schema_for!(ServerFrame)),
        ("error-code.json", schemars::schema_for!(ErrorCode)),
    ]
}

#[test]
fn schemas_match_the_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema");
    let update = std::env::var("PARLEY_UPDATE_SCHEMA").is_ok_and(|v| v == "1");
    let mut drifted = Vec::new();
    for (file, schema) in schemas() {
        let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        let path = dir.join(file);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            drifted.push(file);
        }
    }
    assert!(
        drifted.is_empty(),
        "protocol/schema/{drifted:?} no longer match the wire types; regenerate with \
         `PARLEY_UPDATE_SCHEMA=1 cargo test -p parley-protocol --test schema` and review the diff"
    );
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
