//! A restart rebuilds everything from the store, and a device that was away syncs exactly
//! what its user should see since its last position.

use parley::config::Config;
use parley::server;
use parley::store::MemoryStore;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

mod support;
use support::Client;

async fn open(running: &server::Running, secret: &[u8], user: &str, admin: bool) -> Client {
    let token = parley::auth::mint(secret, user, admin, Duration::from_secs(600));
    let ws = tokio_tungstenite::connect_async(running.url(&token))
        .await
        .unwrap()
        .0;
    Client::open(ws).await
}

fn frames_summary(update: &Value) -> Vec<String> {
    update["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| match f["type"].as_str().unwrap() {
            "message" => format!(
                "message {} {}",
                f["message"]["body"].as_str().unwrap_or("-"),
                f["message"]["state"].as_str().unwrap()
            ),
            "read" => format!(
                "read {}",
                f["user"].as_str().unwrap().split('-').next().unwrap()
            ),
            other => other.to_owned(),
        })
        .collect()
}

#[tokio::test]
async fn state_survives_a_restart_and_sync_replays_what_was_missed() {
    let store = Arc::new(MemoryStore::default());
    let mut config = Config::with_secret(b"restart-secret".to_vec());
    config.limits.requests_per_second = 0;
    let secret = config.secret.clone();

    let first = server::spawn_with_store(&config, store.clone())
        .await
        .unwrap();
    let mut alice = open(&first, &secret, "alice", false).await;
    let mut bob = open(&first, &secret, "bob", false).await;
    support::connect_users(&mut alice, &mut bob).await;
    let m1 = alice.dm("bob", "one").await;
    let m2 = alice.dm("bob", "two").await;
    let m3 = alice.dm("bob", "three").await;
    let conv = m1["conversation"].clone();
    bob.ok(json!({"type": "read", "conversation": conv, "message": m1["id"]}))
        .await;
    alice
        .ok(json!({"type": "recall", "conversation": conv, "message": m3["id"]}))
        .await;
    bob.ok(json!({"type": "delete_for_me", "conversation": conv, "message": m2["id"]}))
        .await;
    bob.ok(json!({"type": "report", "target": {"kind": "message", "conversation": conv, "message": m1["id"]}, "reason": "spam"}))
        .await;
    alice
        .ok(json!({"type": "settings", "read_receipts": "off"}))
        .await;
    drop((alice, bob));
    first.stop().await;

    let second = server::spawn_with_store(&config, store.clone())
        .await
        .unwrap();
    let mut alice = open(&second, &secret, "alice", false).await;
    let mut bob = open(&second, &secret, "bob", false).await;
    assert_eq!(
        alice.hello["settings"]["read_receipts"], "off",
        "settings came back"
    );

    let history = bob
        .ok(json!({"type": "history", "conversation": conv}))
        .await;
    let states: Vec<_> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].clone())
        .collect();
    assert_eq!(
        states,
        [json!("visible"), json!("deleted"), json!("recalled")]
    );
    assert!(
        history["messages"][2].get("body").is_none(),
        "recalled content stays gone"
    );

    let sync = bob.ok(json!({"type": "sync"})).await;
    assert_eq!(
        sync["connections"],
        json!(["alice"]),
        "the connection came back"
    );
    let m4 = alice.dm("bob", "four").await;
    let recall = json!({"type": "recall", "conversation": conv, "message": m4["id"]});
    assert_eq!(
        alice.err(recall).await,
        "recall_limit_reached",
        "the daily recall count came back"
    );

    let mut admin = open(&second, &secret, "operator", true).await;
    let reports = admin.ok(json!({"type": "list_reports"})).await;
    assert_eq!(reports["reports"][0]["snapshot"]["body"], "one");

    // Bob's other device last saw position 1 (the first message).
    let mut positions = serde_json::Map::new();
    positions.insert(conv.as_str().unwrap().to_owned(), json!(m1["seq"]));
    let sync = bob
        .ok(json!({"type": "sync", "positions": positions}))
        .await;
    let update = &sync["updates"][0];
    assert_eq!(
        frames_summary(update),
        [
            "message - deleted",
            "message - recalled",
            "read bob",
            "recalled",
            "deleted-view",
            "message four visible"
        ]
    );
    assert_eq!(update["more"], false);
    let pos = update["pos"].clone();
    positions.insert(conv.as_str().unwrap().to_owned(), pos);
    let again = bob
        .ok(json!({"type": "sync", "positions": positions}))
        .await;
    assert!(
        again.get("updates").is_none(),
        "nothing new since the last position: {again}"
    );

    // Alice sees Bob's read (his receipts are on) but never his delete-for-me.
    let sync = alice.ok(json!({"type": "sync", "positions": {}})).await;
    assert_eq!(
        frames_summary(&sync["updates"][0]),
        [
            "message one visible",
            "message two visible",
            "message - recalled",
            "read bob",
            "recalled",
            "message four visible"
        ]
    );
    second.stop().await;
}
