//! InMail over the wire: delivery to the primary and copied recipients, the
//! `who_can_message` setting, and delete-for-everyone within its 10-minute window.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::{on_message, Client};

/// The kinds of the frames a session holds, in arrival order.
fn kinds(frames: &[Value]) -> Vec<&str> {
    frames.iter().map(|f| f["type"].as_str().unwrap()).collect()
}

struct World {
    server: support::TestServer,
    alice: Client,
    alice2: Client,
    bob: Client,
    bob2: Client,
    carol: Client,
}

/// Alice, bob and carol know nobody; alice and bob have two sessions each.
async fn world() -> World {
    let server = support::start().await;
    let alice = server.connect("alice").await;
    let alice2 = server.connect("alice").await;
    let bob = server.connect("bob").await;
    let bob2 = server.connect("bob").await;
    let carol = server.connect("carol").await;
    World {
        server,
        alice,
        alice2,
        bob,
        bob2,
        carol,
    }
}

#[tokio::test]
async fn an_inmail_reaches_the_primary_and_copied_recipients() {
    let mut w = world().await;
    let m = w.alice.inmail("bob", &["carol"], "an opportunity").await;
    assert_eq!(m["kind"], "inmail");
    assert_eq!(m["to"], "bob");
    assert_eq!(m["cc"], json!(["carol"]));
    assert_eq!(m["body"], "an opportunity");
    assert!(m.get("recall_until").is_none());
    assert_eq!(
        m["delete_until"].as_i64().unwrap() - m["sent_at"].as_i64().unwrap(),
        600_000
    );

    for c in [&mut w.alice2, &mut w.bob, &mut w.bob2, &mut w.carol] {
        let frames = c.settle().await;
        let k = kinds(&frames);
        let conv_at = k.iter().position(|k| *k == "conversation");
        let msg_at = k.iter().position(|k| *k == "message");
        assert!(
            matches!((conv_at, msg_at), (Some(a), Some(b)) if a < b),
            "{}: conversation then message, got {k:?}",
            c.user
        );
        let conv = &frames[conv_at.unwrap()]["conversation"];
        assert_eq!(conv["id"], m["conversation"]);
        assert_eq!(conv["kind"], "inmail");
        assert_eq!(conv["participants"], json!(["alice", "bob", "carol"]));
        assert_eq!(frames[msg_at.unwrap()]["message"], m);
    }
    let own = w.alice.settle().await;
    assert!(
        !kinds(&own).contains(&"message") && !kinds(&own).contains(&"conversation"),
        "the sending session has the ack only: {own:?}"
    );
    // Bob is not connected with alice, yet may answer inside the InMail conversation.
    let answer = w.bob.say(&m["conversation"], "tell me more").await;
    assert_eq!(answer["kind"], "message");
    assert_eq!(
        w.alice.expect("message").await["message"]["id"],
        answer["id"]
    );
    assert_eq!(
        w.carol.expect("message").await["message"]["id"],
        answer["id"]
    );
}

#[tokio::test]
async fn each_inmail_opens_its_own_conversation_and_a_retry_opens_none() {
    let mut w = world().await;
    let first = w
        .alice
        .ok(json!({"id": "im-1", "type": "inmail", "to": "bob", "body": "one"}))
        .await;
    let retry = w
        .alice
        .ok(json!({"id": "im-1", "type": "inmail", "to": "bob", "body": "one"}))
        .await;
    assert_eq!(first, retry);
    let second = w.alice.inmail("bob", &[], "two").await;
    assert_ne!(second["conversation"], first["message"]["conversation"]);
    assert_eq!(w.bob.drain("conversation").await.len(), 2);
    assert_eq!(w.bob.drain("message").await.len(), 2);
    assert_eq!(w.bob.sync().await["inbox"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn inmail_is_refused_to_users_who_take_messages_from_connections_only() {
    let mut w = world().await;
    w.bob
        .ok(json!({"type": "settings", "who_can_message": "connections"}))
        .await;
    assert_eq!(
        w.alice
            .err(json!({"type": "inmail", "to": "bob", "body": "hi"}))
            .await,
        "inmail_not_allowed"
    );
    assert_eq!(
        w.alice
            .err(json!({"type": "inmail", "to": "carol", "cc": ["bob"], "body": "hi"}))
            .await,
        "inmail_not_allowed",
        "a copied recipient's setting counts too"
    );
    assert_eq!(
        w.alice
            .err(json!({"type": "inmail", "to": "ghost", "body": "hi"}))
            .await,
        "recipient_unavailable"
    );
    for c in [&mut w.bob, &mut w.carol] {
        c.expect_none("message").await;
        assert_eq!(c.sync().await["inbox"], json!([]), "{}", c.user);
    }
    // A connection may still write to bob by InMail.
    let mut dave = w.server.connect("dave").await;
    support::connect_users(&mut dave, &mut w.bob).await;
    let m = dave.inmail("bob", &[], "hello friend").await;
    assert_eq!(w.bob.expect("message").await["message"]["id"], m["id"]);
}

#[tokio::test]
async fn the_sender_deletes_an_unread_inmail_silently_and_copies_stay() {
    let mut w = world().await;
    let m = w.alice.inmail("bob", &["carol"], "sent by mistake").await;
    let keep = w.alice.inmail("bob", &[], "this one stays").await;
    let conv = m["conversation"].clone();
    for c in [&mut w.bob, &mut w.bob2, &mut w.carol] {
        c.expect_where("notification", |f| f["notification"]["message"] == m["id"])
            .await;
    }

    w.alice.ok(on_message("delete_inmail", &m)).await;
    for c in [&mut w.alice2, &mut w.bob, &mut w.bob2] {
        let r = c.expect("recalled").await;
        assert_eq!(r["conversation"], conv);
        assert_eq!(r["message"], m["id"]);
        assert_eq!(r["mode"], "silent");
    }
    w.alice.expect_none("recalled").await;
    for b in [&mut w.bob, &mut w.bob2] {
        let retracted = b.expect("notification_retracted").await;
        assert_eq!(retracted["messages"], json!([m["id"]]));
        assert_eq!(retracted["reason"], "deleted");
    }
    w.carol.expect_none("recalled").await;
    w.carol.expect_none("notification_retracted").await;

    // Sender and primary recipient: gone without a marker. The copy: untouched.
    for c in [&mut w.alice, &mut w.bob] {
        assert_eq!(c.messages(&conv).await, Vec::<Value>::new(), "{}", c.user);
        let synced = c
            .ok(json!({"type": "sync", "positions": {conv.as_str().unwrap(): 0}}))
            .await;
        assert!(
            !synced.to_string().contains("sent by mistake"),
            "{}: {synced}",
            c.user
        );
    }
    // Nothing else is in that InMail conversation, so it leaves their inboxes too.
    for c in [&mut w.alice, &mut w.bob] {
        let inbox = c.sync().await["inbox"].clone();
        assert!(
            !inbox.to_string().contains(conv.as_str().unwrap()),
            "{}: {inbox}",
            c.user
        );
        assert!(inbox
            .to_string()
            .contains(keep["conversation"].as_str().unwrap()));
    }
    let carol_inbox = w.carol.sync().await["inbox"].clone();
    assert_eq!(carol_inbox[0]["conversation"]["id"], conv);
    assert_eq!(carol_inbox[0]["last_message"]["id"], m["id"]);
    let copy = w.carol.messages(&conv).await;
    assert_eq!(copy.len(), 1);
    assert_eq!(copy[0]["id"], m["id"]);
    assert_eq!(copy[0]["state"], "visible");
    assert_eq!(copy[0]["body"], "sent by mistake");
    // The copied recipient's notification is not retracted either.
    w.carol.expect_none("notification_retracted").await;

    // The other InMail is untouched, and a deleted one cannot be deleted again.
    assert_eq!(
        w.bob.messages(&keep["conversation"]).await[0]["body"],
        "this one stays"
    );
    assert_eq!(
        w.alice.err(on_message("delete_inmail", &m)).await,
        "not_found"
    );
}

#[tokio::test]
async fn a_read_inmail_can_still_be_deleted() {
    let mut w = world().await;
    let m = w.alice.inmail("bob", &[], "read it already").await;
    w.bob.mark_read(&m).await;
    w.alice.expect("read").await;
    w.alice.ok(on_message("delete_inmail", &m)).await;
    assert_eq!(w.bob.expect("recalled").await["mode"], "silent");
    assert!(w.bob.messages(&m["conversation"]).await.is_empty());
    assert!(w.alice.messages(&m["conversation"]).await.is_empty());
}

#[tokio::test]
async fn the_delete_window_closes_after_ten_minutes() {
    let mut w = world().await;
    let old = w.alice.inmail("bob", &[], "old").await;
    w.server.advance(Duration::from_secs(599));
    let newer = w.alice.inmail("bob", &[], "newer").await;
    w.alice.ok(on_message("delete_inmail", &old)).await;
    w.alice.ok(on_message("delete_inmail", &newer)).await;

    let m = w.alice.inmail("bob", &[], "too late").await;
    w.server.advance(Duration::from_secs(10 * 60 + 1));
    assert_eq!(
        w.alice.err(on_message("delete_inmail", &m)).await,
        "inmail_delete_window_closed"
    );
    assert_eq!(
        w.bob.messages(&m["conversation"]).await[0]["body"],
        "too late"
    );
}

#[tokio::test]
async fn a_zero_window_disables_inmail_delete() {
    let server = support::start_limits(|l| l.inmail_delete_window_ms = 0).await;
    let mut alice = server.connect("alice").await;
    let _bob = server.connect("bob").await;
    let m = alice.inmail("bob", &[], "permanent").await;
    assert!(m.get("delete_until").is_none(), "{m}");
    assert_eq!(
        alice.err(on_message("delete_inmail", &m)).await,
        "inmail_delete_window_closed"
    );
}

#[tokio::test]
async fn only_the_sender_deletes_an_inmail_and_only_an_inmail() {
    let mut w = world().await;
    let m = w.alice.inmail("bob", &["carol"], "mine").await;
    assert_eq!(
        w.bob.err(on_message("delete_inmail", &m)).await,
        "not_sender"
    );
    assert_eq!(
        w.carol.err(on_message("delete_inmail", &m)).await,
        "not_sender"
    );
    let mut dave = w.server.connect("dave").await;
    assert_eq!(dave.err(on_message("delete_inmail", &m)).await, "not_found");

    // A reply inside the InMail conversation is a plain message.
    let reply = w.bob.say(&m["conversation"], "a reply").await;
    assert_eq!(
        w.bob.err(on_message("delete_inmail", &reply)).await,
        "wrong_message_kind"
    );
    // And so is a direct message.
    support::connect_users(&mut w.alice, &mut w.bob).await;
    let direct = w.alice.dm("bob", "direct").await;
    assert_eq!(
        w.alice.err(on_message("delete_inmail", &direct)).await,
        "wrong_message_kind"
    );
    assert_eq!(w.bob.messages(&m["conversation"]).await[0]["body"], "mine");
}
