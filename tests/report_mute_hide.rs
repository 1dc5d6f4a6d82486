//! Reports, muting, hiding, notifications and settings over the wire.

mod support;

use serde_json::{json, Value};
use support::on_message;

fn report_message(m: &Value, reason: &str) -> Value {
    json!({
        "type": "report",
        "target": {"kind": "message", "conversation": m["conversation"], "message": m["id"]},
        "reason": reason,
    })
}

#[tokio::test]
async fn a_reported_message_keeps_its_snapshot_after_a_recall() {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let mut carol = server.connect("carol").await;
    let m = alice.dm("bob", "something abusive").await;

    let ack = bob.ok(report_message(&m, "harassment")).await;
    assert_eq!(ack["kind"], "reported");
    let report_id = ack["report"].clone();
    assert!(report_id.as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(
        carol.err(report_message(&m, "nosy")).await,
        "not_found",
        "only a participant can report a message"
    );
    let unknown = json!({"id": "m-nope", "conversation": m["conversation"]});
    assert_eq!(bob.err(report_message(&unknown, "x")).await, "not_found");

    alice.ok(on_message("recall", &m)).await;
    assert_eq!(
        bob.messages(&m["conversation"]).await[0]["state"],
        "recalled"
    );

    let mut admin = server.connect_admin("moderator").await;
    let reports = admin.ok(json!({"type": "list_reports"})).await;
    assert_eq!(reports["kind"], "reports");
    let list = reports["reports"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{reports}");
    let r = &list[0];
    assert_eq!(r["id"], report_id);
    assert_eq!(r["reporter"], "bob");
    assert_eq!(r["reason"], "harassment");
    assert_eq!(
        r["target"],
        json!({"kind": "message", "conversation": m["conversation"], "message": m["id"]})
    );
    assert_eq!(r["snapshot"]["id"], m["id"]);
    assert_eq!(r["snapshot"]["sender"], "alice");
    assert_eq!(
        r["snapshot"]["body"], "something abusive",
        "the evidence survives the recall"
    );
}

#[tokio::test]
async fn only_admins_list_reports() {
    let server = support::start().await;
    let (mut alice, _bob) = server.connected_pair("alice", "bob").await;
    alice
        .ok(json!({"type": "report", "target": {"kind": "user", "user": "bob"}, "reason": "spam"}))
        .await;
    assert_eq!(
        alice.err(json!({"type": "list_reports"})).await,
        "forbidden"
    );
    let mut admin = server.connect_admin("moderator").await;
    let list = admin.ok(json!({"type": "list_reports"})).await["reports"].clone();
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_user_can_be_reported() {
    let server = support::start().await;
    let mut alice = server.connect("alice").await;
    let _mallory = server.connect("mallory").await;
    let ack = alice
        .ok(json!({"type": "report", "target": {"kind": "user", "user": "mallory"}, "reason": "fake profile"}))
        .await;
    assert_eq!(ack["kind"], "reported");
    for user in ["ghost", "alice"] {
        assert_eq!(
            alice
                .err(json!({"type": "report", "target": {"kind": "user", "user": user}, "reason": "x"}))
                .await,
            "not_found",
            "{user}"
        );
    }
    let mut admin = server.connect_admin("moderator").await;
    let list = admin.ok(json!({"type": "list_reports"})).await["reports"].clone();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let r = &list[0];
    assert_eq!(r["id"], ack["report"]);
    assert_eq!(r["reporter"], "alice");
    assert_eq!(r["target"], json!({"kind": "user", "user": "mallory"}));
    assert_eq!(r["reason"], "fake profile");
    assert!(r.get("snapshot").is_none());
}

#[tokio::test]
async fn a_muted_conversation_delivers_messages_without_notifications() {
    let server = support::start().await;
    let (mut alice, mut b1) = server.connected_pair("alice", "bob").await;
    let mut b2 = server.connect("bob").await;
    let first = alice.dm("bob", "loud").await;
    for b in [&mut b1, &mut b2] {
        assert_eq!(b.expect("message").await["message"]["id"], first["id"]);
        assert_eq!(
            b.expect("notification").await["notification"]["message"],
            first["id"]
        );
    }
    let conv = first["conversation"].clone();

    b1.ok(json!({"type": "mute", "conversation": conv, "muted": true}))
        .await;
    assert_eq!(
        b2.expect("conversation_state").await,
        json!({"type": "conversation_state", "conversation": conv, "muted": true, "hidden": false})
    );
    b1.expect_none("conversation_state").await;

    let quiet = alice.dm("bob", "quiet").await;
    for b in [&mut b1, &mut b2] {
        assert_eq!(b.expect("message").await["message"]["id"], quiet["id"]);
        b.expect_none("notification").await;
    }
    let synced = b1.sync().await;
    assert_eq!(synced["inbox"][0]["muted"], true);
    assert!(!synced["notifications"]
        .to_string()
        .contains(quiet["id"].as_str().unwrap()));

    b2.ok(json!({"type": "mute", "conversation": conv, "muted": false}))
        .await;
    assert_eq!(b1.expect("conversation_state").await["muted"], false);
    let loud = alice.dm("bob", "loud again").await;
    for b in [&mut b1, &mut b2] {
        assert_eq!(
            b.expect("notification").await["notification"]["message"],
            loud["id"]
        );
    }
    // Muting is per user: alice's own notifications are unaffected.
    b1.dm("alice", "hi").await;
    alice.expect("notification").await;
    // Only a participant can mute.
    let mut carol = server.connect("carol").await;
    assert_eq!(
        carol
            .err(json!({"type": "mute", "conversation": conv, "muted": true}))
            .await,
        "not_found"
    );
}

#[tokio::test]
async fn a_muted_user_with_no_session_gets_no_pending_notification() {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let first = alice.dm("bob", "first").await;
    bob.ok(json!({"type": "mute", "conversation": first["conversation"], "muted": true}))
        .await;
    bob.mark_read(&first).await;
    bob.close().await;
    alice.dm("bob", "while muted").await;
    let mut bob = server.connect("bob").await;
    assert_eq!(bob.sync().await["notifications"], json!([]));
}

#[tokio::test]
async fn notification_previews_follow_each_recipients_setting() {
    let server = support::start().await;
    let mut alice = server.connect("alice").await;
    let mut members = Vec::new();
    for (user, preview) in [("bob", "full"), ("carol", "sender_only"), ("dave", "off")] {
        let mut c = server.connect(user).await;
        let settings = c
            .ok(json!({"type": "settings", "notification_preview": preview}))
            .await;
        assert_eq!(settings["settings"]["notification_preview"], preview);
        support::connect_users(&mut alice, &mut c).await;
        members.push(c);
    }
    let conv = alice.group(&["bob", "carol", "dave"]).await["id"].clone();
    let m = alice.say(&conv, "quarterly numbers").await;
    let base = json!({"conversation": conv, "message": m["id"], "sent_at": m["sent_at"]});
    let mut full = base.clone();
    full["sender"] = json!("alice");
    full["preview"] = json!("quarterly numbers");
    let mut sender_only = base.clone();
    sender_only["sender"] = json!("alice");
    let expected = [full, sender_only, base];
    for (c, shape) in members.iter_mut().zip(expected) {
        let n = c.expect("notification").await;
        assert_eq!(n["notification"], shape, "{}", c.user);
    }
    alice.expect_none("notification").await;
}

#[tokio::test]
async fn a_user_away_collects_notifications_on_sync_and_a_read_clears_them() {
    let server = support::start().await;
    let (mut alice, bob) = server.connected_pair("alice", "bob").await;
    bob.close().await;
    let m1 = alice.dm("bob", "are you there?").await;
    let m2 = alice.dm("bob", "call me").await;

    let mut b1 = server.connect("bob").await;
    let mut b2 = server.connect("bob").await;
    let pending = b1.sync().await["notifications"].clone();
    let listed: Vec<Value> = pending
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["message"].clone())
        .collect();
    assert_eq!(listed, vec![m1["id"].clone(), m2["id"].clone()]);
    assert_eq!(pending[0]["preview"], "are you there?");
    assert_eq!(pending[0]["sender"], "alice");

    b1.mark_read(&m2).await;
    for b in [&mut b1, &mut b2] {
        let r = b.expect("notification_retracted").await;
        assert_eq!(r["reason"], "read");
        assert_eq!(r["messages"], json!([m1["id"], m2["id"]]));
    }
    assert_eq!(b2.sync().await["notifications"], json!([]));
}

#[tokio::test]
async fn a_hidden_conversation_comes_back_with_a_new_message() {
    let server = support::start().await;
    let (mut alice, mut b1) = server.connected_pair("alice", "bob").await;
    let mut b2 = server.connect("bob").await;
    let mut carol_side = server.connect("carol").await;
    support::connect_users(&mut b1, &mut carol_side).await;
    let m = alice.dm("bob", "old thread").await;
    let other = carol_side.dm("bob", "other thread").await;
    let conv = m["conversation"].clone();

    b1.ok(json!({"type": "hide", "conversation": conv, "hidden": true}))
        .await;
    assert_eq!(
        b2.expect("conversation_state").await,
        json!({"type": "conversation_state", "conversation": conv, "muted": false, "hidden": true})
    );
    let inbox_ids = |sync: &Value| -> Vec<Value> {
        sync["inbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["conversation"]["id"].clone())
            .collect()
    };
    assert_eq!(
        inbox_ids(&b1.sync().await),
        vec![other["conversation"].clone()]
    );
    assert!(
        inbox_ids(&alice.sync().await).contains(&conv),
        "hiding is per user"
    );
    // History is still there when asked for.
    assert_eq!(b2.messages(&conv).await[0]["body"], "old thread");

    let fresh = alice.dm("bob", "bump").await;
    let synced = b2.sync().await;
    assert_eq!(
        inbox_ids(&synced),
        vec![conv.clone(), other["conversation"].clone()],
        "back, and newest first"
    );
    assert_eq!(synced["inbox"][0]["hidden"], false);
    assert_eq!(synced["inbox"][0]["last_message"]["id"], fresh["id"]);

    // Unhiding by hand works too.
    b1.ok(json!({"type": "hide", "conversation": conv, "hidden": true}))
        .await;
    b1.ok(json!({"type": "hide", "conversation": conv, "hidden": false}))
        .await;
    assert!(inbox_ids(&b1.sync().await).contains(&conv));
}

#[tokio::test]
async fn settings_are_acknowledged_shared_with_other_sessions_and_announced_in_hello() {
    let server = support::start().await;
    let mut a1 = server.connect("alice").await;
    let mut a2 = server.connect("alice").await;
    assert_eq!(
        a1.hello["settings"],
        json!({"who_can_message": "everyone", "read_receipts": "on", "notification_preview": "full"})
    );

    let ack = a1
        .ok(json!({"type": "settings", "who_can_message": "connections", "read_receipts": "off"}))
        .await;
    let expected = json!({"who_can_message": "connections", "read_receipts": "off", "notification_preview": "full"});
    assert_eq!(ack, json!({"kind": "settings", "settings": expected}));
    assert_eq!(
        a2.expect("settings").await,
        json!({"type": "settings", "settings": expected})
    );
    a1.expect_none("settings").await;

    // A partial change keeps the rest.
    let ack = a2
        .ok(json!({"type": "settings", "notification_preview": "off"}))
        .await;
    let expected = json!({"who_can_message": "connections", "read_receipts": "off", "notification_preview": "off"});
    assert_eq!(ack["settings"], expected);
    assert_eq!(a1.expect("settings").await["settings"], expected);

    let a3 = server.connect("alice").await;
    assert_eq!(a3.hello["settings"], expected);
    assert_eq!(a1.sync().await["settings"], expected);
    assert_eq!(
        a1.err(json!({"type": "settings", "read_receipts": "sometimes"}))
            .await,
        "bad_request"
    );
}

#[tokio::test]
async fn a_retried_report_files_one_report() {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let m = alice.dm("bob", "spam").await;
    let report = serde_json::json!({"id": "same-report", "type": "report", "reason": "spam",
        "target": {"kind": "message", "conversation": m["conversation"], "message": m["id"]}});
    let first = bob.ok(report.clone()).await;
    let again = bob.ok(report).await;
    assert_eq!(first, again, "the retry gets the original answer");
    let mut admin = server.connect_admin("operator").await;
    let reports = admin.ok(serde_json::json!({"type": "list_reports"})).await;
    assert_eq!(reports["reports"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_retried_send_after_a_block_gets_its_original_answer() {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let send = serde_json::json!({"id": "s1", "type": "send", "to": "bob", "body": "hi"});
    let first = alice.ok(send.clone()).await;
    bob.ok(serde_json::json!({"type": "block", "user": "alice"}))
        .await;
    assert_eq!(
        alice.ok(send).await,
        first,
        "idempotent even though a new send would be refused"
    );
    let fresh = serde_json::json!({"id": "s2", "type": "send", "to": "bob", "body": "hi"});
    assert_eq!(alice.err(fresh).await, "recipient_unavailable");
}
