//! Recall over the wire: success and what everyone sees, each refusal with its own code,
//! the `recall_closed` push and the retraction of notifications. Time is stepped on the
//! server's clock, never slept.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::{on_message, Client};

const WINDOW: Duration = Duration::from_secs(120);

async fn recall(c: &mut Client, m: &Value) -> Value {
    c.request(on_message("recall", m)).await
}

async fn recall_err(c: &mut Client, m: &Value) -> String {
    c.err(on_message("recall", m)).await
}

#[tokio::test]
async fn a_recall_leaves_a_marker_for_everyone() {
    let server = support::start().await;
    let (mut a1, mut b1) = server.connected_pair("alice", "bob").await;
    let mut a2 = server.connect("alice").await;
    let mut b2 = server.connect("bob").await;
    let kept = a1.dm("bob", "keep this").await;
    let m = a1.dm("bob", "oops, wrong chat").await;
    let conv = m["conversation"].clone();
    for b in [&mut b1, &mut b2] {
        b.expect_where("notification", |f| f["notification"]["message"] == m["id"])
            .await;
    }

    assert_eq!(a1.ok(on_message("recall", &m)).await, json!({"kind": "ok"}));
    let mut positions = Vec::new();
    for c in [&mut a2, &mut b1, &mut b2] {
        let r = c.expect("recalled").await;
        assert_eq!(r["conversation"], conv);
        assert_eq!(r["message"], m["id"]);
        assert_eq!(r["mode"], "marker");
        positions.push(r["pos"].clone());
    }
    assert!(
        positions.iter().all(|p| *p == positions[0]),
        "one position for all"
    );
    a1.expect_none("recalled").await;
    for b in [&mut b1, &mut b2] {
        let retracted = b.expect("notification_retracted").await;
        assert_eq!(retracted["reason"], "recalled");
        assert_eq!(retracted["messages"], json!([m["id"]]));
    }
    a2.expect_none("notification_retracted").await;

    for c in [&mut a1, &mut b1] {
        let history = c.messages(&conv).await;
        assert_eq!(history.len(), 2);
        assert_eq!(history[0]["body"], "keep this");
        let marker = &history[1];
        assert_eq!(marker["id"], m["id"]);
        assert_eq!(marker["state"], "recalled");
        assert_eq!(marker["sender"], "alice");
        assert_eq!(marker["sent_at"], m["sent_at"]);
        assert!(marker.get("body").is_none(), "{}: {marker}", c.user);
    }
    // No notification for the recalled message is left to collect.
    let pending = b1.sync().await["notifications"].clone();
    assert!(
        !pending.to_string().contains(m["id"].as_str().unwrap()),
        "{pending}"
    );

    // A device that was away learns of the recall from history and from sync.
    let mut b3 = server.connect("bob").await;
    let history = b3.messages(&conv).await;
    assert_eq!(history[1]["state"], "recalled");
    assert!(!history[1].to_string().contains("wrong chat"));
    let synced = b3
        .ok(json!({"type": "sync", "positions": {conv.as_str().unwrap(): 0}}))
        .await;
    let frames = synced["updates"][0]["frames"].as_array().unwrap().clone();
    let summary: Vec<String> = frames
        .iter()
        .map(|f| {
            let kind = f["type"].as_str().unwrap();
            match kind {
                "message" => format!("message {}", f["message"]["state"].as_str().unwrap()),
                _ => kind.to_owned(),
            }
        })
        .collect();
    assert_eq!(summary, ["message visible", "message recalled", "recalled"]);
    assert!(!synced.to_string().contains("wrong chat"));
    assert_eq!(
        synced["updates"][0]["frames"][0]["message"]["id"],
        kept["id"]
    );

    // A read aimed at the recalled message lost the race with the recall.
    assert_eq!(b1.err(on_message("read", &m)).await, "not_found");
}

#[tokio::test]
async fn a_group_recall_reaches_every_participant() {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let mut carol = server.connect("carol").await;
    support::connect_users(&mut alice, &mut carol).await;
    let conv = alice.group(&["bob", "carol"]).await["id"].clone();
    let m = alice.say(&conv, "to the group").await;
    alice.ok(on_message("recall", &m)).await;
    for c in [&mut bob, &mut carol] {
        let r = c.expect("recalled").await;
        assert_eq!((&r["message"], &r["mode"]), (&m["id"], &json!("marker")));
        assert_eq!(c.messages(&conv).await[0]["state"], "recalled");
    }
}

#[tokio::test]
async fn only_the_sender_may_recall() {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let m = alice.dm("bob", "mine").await;
    assert_eq!(recall_err(&mut bob, &m).await, "not_sender");
    assert_eq!(bob.messages(&m["conversation"]).await[0]["body"], "mine");
    alice.expect_none("recalled").await;
}

#[tokio::test]
async fn the_recall_window_closes_after_120_seconds() {
    let server = support::start().await;
    let (mut alice, _bob) = server.connected_pair("alice", "bob").await;
    let m = alice.dm("bob", "slow").await;
    server.advance(Duration::from_secs(119));
    let late = alice.dm("bob", "late").await;
    server.advance(Duration::from_secs(2));
    assert_eq!(recall_err(&mut alice, &m).await, "recall_window_closed");
    // The later message is still inside its own window.
    alice.ok(on_message("recall", &late)).await;
}

#[tokio::test]
async fn a_zero_window_disables_recall() {
    let server = support::start_limits(|l| l.recall_window_ms = 0).await;
    let (mut alice, _bob) = server.connected_pair("alice", "bob").await;
    assert_eq!(alice.hello["limits"]["recall_window_ms"], 0);
    let m = alice.dm("bob", "forever").await;
    assert!(m.get("recall_until").is_none(), "no recall offered: {m}");
    assert_eq!(recall_err(&mut alice, &m).await, "recall_window_closed");
}

#[tokio::test]
async fn a_message_read_by_a_recipient_cannot_be_recalled() {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let mut carol = server.connect("carol").await;
    support::connect_users(&mut alice, &mut carol).await;
    let m = alice.dm("bob", "seen").await;
    bob.mark_read(&m).await;
    assert_eq!(recall_err(&mut alice, &m).await, "already_read");
    assert_eq!(bob.messages(&m["conversation"]).await[0]["body"], "seen");

    // In a group one reader is enough.
    let conv = alice.group(&["bob", "carol"]).await["id"].clone();
    let g = alice.say(&conv, "group news").await;
    carol.mark_read(&g).await;
    assert_eq!(recall_err(&mut alice, &g).await, "already_read");
    // Reading a later message covers the earlier ones too.
    let g2 = alice.say(&conv, "more").await;
    let g3 = alice.say(&conv, "and more").await;
    bob.mark_read(&g3).await;
    assert_eq!(recall_err(&mut alice, &g2).await, "already_read");
}

#[tokio::test]
async fn one_recall_per_conversation_per_day() {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let mut carol = server.connect("carol").await;
    support::connect_users(&mut alice, &mut carol).await;
    let m1 = alice.dm("bob", "first").await;
    let m2 = alice.dm("bob", "second").await;
    alice.ok(on_message("recall", &m1)).await;
    assert_eq!(recall_err(&mut alice, &m2).await, "recall_limit_reached");
    assert_eq!(bob.messages(&m2["conversation"]).await[1]["body"], "second");

    // The allowance is per conversation.
    let other = alice.dm("carol", "elsewhere").await;
    alice.ok(on_message("recall", &other)).await;
    // And per sender: bob still has his.
    let from_bob = bob.dm("alice", "bob's").await;
    bob.ok(on_message("recall", &from_bob)).await;

    server.advance(Duration::from_secs(23 * 3600));
    let m3 = alice.dm("bob", "third").await;
    assert_eq!(recall_err(&mut alice, &m3).await, "recall_limit_reached");
    server.advance(Duration::from_secs(3600));
    let m4 = alice.dm("bob", "fourth").await;
    alice.ok(on_message("recall", &m4)).await;
}

#[tokio::test]
async fn a_sender_who_sent_too_much_cannot_recall_until_the_rate_falls() {
    let server = support::start().await;
    let (mut alice, _bob) = server.connected_pair("alice", "bob").await;
    let mut carol = server.connect("carol").await;
    support::connect_users(&mut alice, &mut carol).await;
    let before = alice.dm("carol", "earlier, elsewhere").await;
    let limit = alice.hello["limits"]["recall_throttle_messages"]
        .as_u64()
        .unwrap();
    assert_eq!(limit, 30);
    let mut last = Value::Null;
    // `before` is one send; `limit` more makes limit + 1 in the window.
    for i in 0..limit {
        last = alice.dm("bob", &format!("spam {i}")).await;
    }
    assert_eq!(recall_err(&mut alice, &last).await, "recall_throttled");
    assert_eq!(
        recall_err(&mut alice, &before).await,
        "recall_throttled",
        "the throttle counts every conversation"
    );

    // Past the throttle window (60 s) but inside the recall window (120 s).
    server.advance(Duration::from_secs(61));
    alice.ok(on_message("recall", &last)).await;
}

#[tokio::test]
async fn exactly_the_throttle_limit_still_allows_recall() {
    let server = support::start().await;
    let (mut alice, _bob) = server.connected_pair("alice", "bob").await;
    let mut last = Value::Null;
    for i in 0..30 {
        last = alice.dm("bob", &format!("busy {i}")).await;
    }
    alice.ok(on_message("recall", &last)).await;
}

#[tokio::test]
async fn an_inmail_is_not_recalled() {
    let server = support::start().await;
    let mut alice = server.connect("alice").await;
    let _bob = server.connect("bob").await;
    let m = alice.inmail("bob", &[], "hello stranger").await;
    assert_eq!(m["kind"], "inmail");
    assert_eq!(recall_err(&mut alice, &m).await, "wrong_message_kind");
}

#[tokio::test]
async fn unknown_already_recalled_and_foreign_messages_are_not_found() {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let mut carol = server.connect("carol").await;
    let m = alice.dm("bob", "x").await;
    let conv = m["conversation"].clone();
    assert_eq!(
        alice
            .err(json!({"type": "recall", "conversation": conv, "message": "m-nope"}))
            .await,
        "not_found"
    );
    assert_eq!(
        alice
            .err(json!({"type": "recall", "conversation": "d-nope", "message": m["id"]}))
            .await,
        "not_found"
    );
    assert_eq!(recall_err(&mut carol, &m).await, "not_found");
    alice.ok(on_message("recall", &m)).await;
    let second = recall(&mut alice, &m).await;
    assert_eq!(second["code"], "not_found", "{second}");
    assert_eq!(
        bob.drain("recalled").await.len(),
        1,
        "one recall, one frame"
    );
}

#[tokio::test]
async fn the_sender_is_told_when_recall_expires() {
    let server = support::start().await;
    let (mut a1, mut bob) = server.connected_pair("alice", "bob").await;
    let mut a2 = server.connect("alice").await;
    let recalled = a1.dm("bob", "gone soon").await;
    let read = a1.dm("bob", "read soon").await;
    let m = a1.dm("bob", "left alone").await;
    a1.ok(on_message("recall", &recalled)).await;
    bob.mark_read(&read).await;
    for a in [&mut a1, &mut a2] {
        let closed = a.expect("recall_closed").await;
        assert_eq!(
            (&closed["message"], &closed["reason"]),
            (&read["id"], &json!("read"))
        );
    }

    server.advance(WINDOW);
    for a in [&mut a1, &mut a2] {
        let closed = a.expect("recall_closed").await;
        assert_eq!(closed["message"], m["id"]);
        assert_eq!(closed["reason"], "expired");
        assert_eq!(closed["conversation"], m["conversation"]);
        // The windows of the recalled and the read message closed earlier: nothing more.
        a.expect_none("recall_closed").await;
    }
    bob.expect_none("recall_closed").await;
    assert_eq!(recall_err(&mut a1, &m).await, "recall_window_closed");
}

#[tokio::test]
async fn the_sender_is_told_when_a_recipient_reads() {
    let server = support::start().await;
    let (mut a1, mut bob) = server.connected_pair("alice", "bob").await;
    let mut a2 = server.connect("alice").await;
    let m = a1.dm("bob", "read me").await;
    bob.mark_read(&m).await;
    for a in [&mut a1, &mut a2] {
        let closed = a.expect("recall_closed").await;
        assert_eq!(closed["message"], m["id"]);
        assert_eq!(closed["reason"], "read");
    }
    bob.expect_none("recall_closed").await;
    // Told once: when the window later closes there is nothing more to say. A fresh
    // message's expiry is the marker that the timers have run.
    let later = a1.dm("bob", "later").await;
    server.advance(WINDOW);
    let closed = a1.expect("recall_closed").await;
    assert_eq!(
        (&closed["message"], &closed["reason"]),
        (&later["id"], &json!("expired"))
    );
    a1.expect_none("recall_closed").await;
}

#[tokio::test]
async fn a_recall_retracts_the_notification_kept_for_an_offline_user() {
    let server = support::start().await;
    let (mut alice, bob) = server.connected_pair("alice", "bob").await;
    bob.close().await;
    let stays = alice.dm("bob", "while you were out").await;
    let gone = alice.dm("bob", "never mind").await;
    alice.ok(on_message("recall", &gone)).await;

    let mut bob = server.connect("bob").await;
    let pending = bob.sync().await["notifications"].clone();
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    assert_eq!(pending[0]["message"], stays["id"]);
    assert_eq!(pending[0]["preview"], "while you were out");
}
