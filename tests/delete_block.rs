//! Delete-for-me and block over the wire: who is told, what each side sees afterwards, and
//! what unblocking restores.

mod support;

use serde_json::{json, Value};
use support::{on_message, Client};

#[tokio::test]
async fn delete_for_me_tells_only_the_deleters_other_sessions() {
    let server = support::start().await;
    let (mut a1, mut b1) = server.connected_pair("alice", "bob").await;
    let mut a2 = server.connect("alice").await;
    let mut b2 = server.connect("bob").await;
    let m = a1.dm("bob", "awkward").await;
    let reply = b1
        .ok(json!({"type": "send", "conversation": m["conversation"], "body": "indeed", "reply_to": m["id"]}))
        .await["message"]
        .clone();
    let conv = m["conversation"].clone();

    assert_eq!(
        b1.ok(on_message("delete_for_me", &m)).await,
        json!({"kind": "ok"})
    );
    let dv = b2.expect("deleted-view").await;
    assert_eq!(dv["conversation"], conv);
    assert_eq!(dv["message"], m["id"]);
    assert!(dv["pos"].as_u64().unwrap() > reply["seq"].as_u64().unwrap());
    for c in [&mut b1, &mut a1, &mut a2] {
        c.expect_none("deleted-view").await;
    }
    for a in [&mut a1, &mut a2] {
        let told = a.settle().await;
        assert!(
            told.iter()
                .all(|f| ["message", "notification", "conversation"]
                    .contains(&f["type"].as_str().unwrap())),
            "alice learns nothing of the delete: {told:?}"
        );
    }

    // Bob sees a tombstone in the message's place; alice still sees the message.
    let bobs = b1.messages(&conv).await;
    assert_eq!(bobs.len(), 2);
    let tomb = &bobs[0];
    assert_eq!(tomb["id"], m["id"]);
    assert_eq!(tomb["state"], "deleted");
    assert!(tomb.get("body").is_none(), "{tomb}");
    assert_eq!(tomb["sender"], "alice");
    assert_eq!(tomb["sent_at"], m["sent_at"]);
    assert_eq!(tomb["seq"], m["seq"]);
    assert_eq!(bobs[1]["reply_to"], m["id"], "the thread keeps its shape");
    let alices = a1.messages(&conv).await;
    assert_eq!(alices[0]["state"], "visible");
    assert_eq!(alices[0]["body"], "awkward");

    // Nobody else is affected: bob did not read it, so alice may still recall it.
    a1.ok(on_message("recall", &m)).await;
    // Deleting twice is harmless and silent.
    b1.ok(on_message("delete_for_me", &reply)).await;
    b2.expect("deleted-view").await;
    b1.ok(on_message("delete_for_me", &reply)).await;
    b2.expect_none("deleted-view").await;
}

#[tokio::test]
async fn anyone_may_delete_any_message_for_themselves_but_only_in_their_conversations() {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let mut carol = server.connect("carol").await;
    let mine = alice.dm("bob", "my own words").await;
    alice.ok(on_message("delete_for_me", &mine)).await;
    assert_eq!(
        alice.messages(&mine["conversation"]).await[0]["state"],
        "deleted"
    );
    assert_eq!(
        bob.messages(&mine["conversation"]).await[0]["body"],
        "my own words"
    );
    bob.expect_none("deleted-view").await;
    assert_eq!(
        carol.err(on_message("delete_for_me", &mine)).await,
        "not_found"
    );
    assert_eq!(
        bob.err(json!({"type": "delete_for_me", "conversation": mine["conversation"], "message": "m-nope"}))
            .await,
        "not_found"
    );
    // Much later, it still works: delete-for-me has no window.
    let old = bob.dm("alice", "from long ago").await;
    server.advance(std::time::Duration::from_secs(30 * 24 * 3600));
    bob.ok(on_message("delete_for_me", &old)).await;
}

/// Alice and bob connected with a conversation, carol connected to both; alice blocks bob.
struct Blocked {
    _server: support::TestServer,
    alice: Client,
    alice2: Client,
    bob: Client,
    carol: Client,
    first: Value,
}

async fn blocked() -> Blocked {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let mut carol = server.connect("carol").await;
    support::connect_users(&mut alice, &mut carol).await;
    support::connect_users(&mut bob, &mut carol).await;
    let first = alice.dm("bob", "before the block").await;
    bob.expect("message").await;
    let alice2 = server.connect("alice").await;
    bob.settle().await;
    alice.ok(json!({"type": "block", "user": "bob"})).await;
    Blocked {
        _server: server,
        alice,
        alice2,
        bob,
        carol,
        first,
    }
}

#[tokio::test]
async fn the_blocker_is_told_and_the_blocked_user_is_not() {
    let mut w = blocked().await;
    assert_eq!(w.alice2.expect("blocked").await["user"], "bob");
    w.alice.expect_none("blocked").await;
    let told = w.bob.settle().await;
    assert!(told.is_empty(), "bob was told: {told:?}");

    // The connection is gone for both.
    let profile = w.alice.ok(json!({"type": "lookup", "user": "bob"})).await;
    assert_eq!(profile["connection"], "none");
    assert_eq!(profile["inmail_allowed"], false);
    let synced = w.alice.sync().await;
    assert_eq!(synced["connections"], json!(["carol"]));
    assert_eq!(synced["blocked"], json!(["bob"]));
    let synced = w.bob.sync().await;
    assert_eq!(synced["connections"], json!(["carol"]));
    assert_eq!(synced["blocked"], json!([]));

    // The blocker is hidden from the blocked user's look-ups, exactly like a stranger.
    let hidden = w
        .bob
        .request(json!({"type": "lookup", "user": "alice"}))
        .await;
    let unknown = w
        .bob
        .request(json!({"type": "lookup", "user": "ghost"}))
        .await;
    assert_eq!(hidden["code"], "not_found");
    assert_eq!(hidden["message"], unknown["message"]);
    assert_eq!(
        w.bob.err(json!({"type": "connect", "user": "alice"})).await,
        "recipient_unavailable"
    );
    assert_eq!(
        w.alice.err(json!({"type": "block", "user": "ghost"})).await,
        "not_found"
    );
}

#[tokio::test]
async fn nothing_new_passes_between_them_either_way() {
    let mut w = blocked().await;
    let conv = w.first["conversation"].clone();
    // Bob's refusals look exactly like writing to someone who does not exist.
    let to_alice = w
        .bob
        .request(json!({"type": "send", "to": "alice", "body": "hey?"}))
        .await;
    let to_ghost = w
        .bob
        .request(json!({"type": "send", "to": "ghost", "body": "hey?"}))
        .await;
    assert_eq!(to_alice["code"], "recipient_unavailable");
    assert_eq!(to_alice["message"], to_ghost["message"]);

    for (c, other) in [(&mut w.alice, "bob"), (&mut w.bob, "alice")] {
        let refusals = [
            json!({"type": "send", "to": other, "body": "x"}),
            json!({"type": "send", "conversation": conv, "body": "x"}),
            json!({"type": "inmail", "to": other, "body": "x"}),
            json!({"type": "inmail", "to": "carol", "cc": [other], "body": "x"}),
            json!({"type": "create_group", "members": [other, "carol"]}),
        ];
        for r in refusals {
            assert_eq!(
                c.err(r.clone()).await,
                "recipient_unavailable",
                "{}: {r}",
                c.user
            );
        }
    }
    assert_eq!(
        w.carol
            .err(json!({"type": "create_group", "members": ["alice", "bob"]}))
            .await,
        "recipient_unavailable",
        "no new group may hold both"
    );
    for c in [&mut w.alice, &mut w.bob, &mut w.carol] {
        c.expect_none("message").await;
        c.expect_none("conversation").await;
    }
    // Carol can still write to each of them.
    for other in ["alice", "bob"] {
        w.carol.dm(other, "still here").await;
    }
    assert_eq!(
        w.alice.expect("message").await["message"]["sender"],
        "carol"
    );
    assert_eq!(w.bob.expect("message").await["message"]["sender"], "carol");
}

#[tokio::test]
async fn history_stays_visible_in_both_inboxes() {
    let mut w = blocked().await;
    let conv = w.first["conversation"].clone();
    for c in [&mut w.alice, &mut w.bob] {
        let history = c.messages(&conv).await;
        assert_eq!(history.len(), 1);
        assert_eq!(history[0]["body"], "before the block", "{}", c.user);
        let inbox = c.sync().await["inbox"].clone();
        assert_eq!(inbox[0]["conversation"]["id"], conv, "{}", c.user);
    }
}

#[tokio::test]
async fn the_blocked_user_gets_no_receipts_or_typing_from_the_blocker() {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let mut carol = server.connect("carol").await;
    support::connect_users(&mut alice, &mut carol).await;
    let conv = alice.group(&["bob", "carol"]).await["id"].clone();
    alice.ok(json!({"type": "block", "user": "bob"})).await;

    // The existing group still carries messages.
    let m = carol.say(&conv, "morning").await;
    bob.expect("message").await;
    alice.mark_read(&m).await;
    let r = carol.expect("read").await;
    assert_eq!((&r["user"], &r["message"]), (&json!("alice"), &m["id"]));
    alice
        .ok(json!({"type": "typing", "conversation": conv}))
        .await;
    assert_eq!(carol.expect("typing").await["user"], "alice");
    bob.expect_none("read").await;
    bob.expect_none("typing").await;
    let receipts = bob.history(&conv).await["receipts"].clone();
    assert!(
        !receipts.to_string().contains("alice"),
        "bob sees no receipt of alice: {receipts}"
    );
    // Carol's receipts still reach bob.
    carol.mark_read(&m).await;
    assert_eq!(bob.expect("read").await["user"], "carol");
}

#[tokio::test]
async fn unblock_restores_messaging_but_not_the_connection() {
    let mut w = blocked().await;
    w.alice2.expect("blocked").await;
    w.alice.ok(json!({"type": "unblock", "user": "bob"})).await;
    assert_eq!(w.alice2.expect("unblocked").await["user"], "bob");
    w.alice.expect_none("unblocked").await;
    assert!(w.bob.settle().await.is_empty(), "bob is told nothing");
    assert_eq!(
        w.alice.err(json!({"type": "unblock", "user": "bob"})).await,
        "not_found",
        "nothing left to lift"
    );

    // Not connected: direct messages are refused as for any non-connection.
    for (c, other) in [(&mut w.alice, "bob"), (&mut w.bob, "alice")] {
        assert_eq!(
            c.err(json!({"type": "send", "to": other, "body": "x"}))
                .await,
            "not_connected"
        );
    }
    assert_eq!(
        w.bob.ok(json!({"type": "lookup", "user": "alice"})).await["connection"],
        "none"
    );
    // But InMail works again, both ways.
    let im = w.bob.inmail("alice", &[], "sorry about that").await;
    assert_eq!(w.alice.expect("message").await["message"]["id"], im["id"]);
    w.alice.inmail("bob", &[], "apology accepted").await;

    // Reconnecting restores direct messages in the old conversation.
    support::connect_users(&mut w.bob, &mut w.alice).await;
    let m = w.bob.dm("alice", "friends again").await;
    assert_eq!(m["conversation"], w.first["conversation"]);
    assert_eq!(
        w.alice
            .expect_where("message", |f| f["message"]["id"] == m["id"])
            .await["message"]["body"],
        "friends again"
    );
}
