//! `scenario.schema.json` is generated from the scenario types; this test fails when it
//! drifts. Regenerate with
//! `PARLEY_UPDATE_SCHEMA=1 cargo test -p parley-conformance --test schema`.

use std::path::PathBuf;

const REGENERATE: &str = "PARLEY_UPDATE_SCHEMA=1 cargo test -p parley-conformance --test schema";

fn schema_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenario.schema.json")
}

#[test]
fn schema_matches_the_types() {
    let text = serde_json::to_string_pretty(&parley_conformance::scenario::schema())
        .expect("a schema serialises")
        + "\n";
    let path = schema_path();
    if std::env::var("PARLEY_UPDATE_SCHEMA").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &text).expect("write scenario.schema.json");
    }
    assert!(
        std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()),
        "protocol/conformance/scenario.schema.json no longer matches the scenario types; \
         regenerate with `{REGENERATE}` and review the diff"
    );
}
