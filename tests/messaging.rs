//! Messaging over the wire: fan-out to every session, connections, idempotent sends,
//! groups, read receipts (on and off), replies, body limits and per-conversation order.

mod support;

use serde_json::{json, Value};
use support::{ids, on_message, Client};

#[tokio::test]
async fn a_direct_message_reaches_every_session_and_the_sender_gets_the_ack() {
    let server = support::start().await;
    let (mut a1, mut b1) = server.connected_pair("alice", "bob").await;
    let mut a2 = server.connect("alice").await;
    let mut b2 = server.connect("bob").await;

    let sent = a1.dm("bob", "hello bob").await;
    assert_eq!(sent["sender"], "alice");
    assert_eq!(sent["body"], "hello bob");
    assert_eq!(sent["kind"], "message");
    assert_eq!(sent["state"], "visible");
    assert!(sent["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(
        sent["recall_until"].as_i64().unwrap() - sent["sent_at"].as_i64().unwrap(),
        120_000,
        "the ack says when the recall window closes"
    );

    for c in [&mut a2, &mut b1, &mut b2] {
        let conv = c.expect("conversation").await;
        assert_eq!(conv["conversation"]["id"], sent["conversation"]);
        assert_eq!(conv["conversation"]["kind"], "direct");
        let got = c.expect("message").await;
        assert_eq!(got["message"], sent, "{} sees the stored message", c.user);
    }
    // The sending session has the ack and nothing else for its own message.
    a1.expect_none("message").await;
    a1.expect_none("conversation").await;

    // The answer flows back the same way, to alice's two sessions and bob's other one.
    let reply = b2.say(&sent["conversation"], "hello alice").await;
    for c in [&mut a1, &mut a2, &mut b1] {
        assert_eq!(c.expect("message").await["message"]["id"], reply["id"]);
    }
    b2.expect_none("message").await;
    // The conversation already existed: no second announcement.
    for c in [&mut a1, &mut a2, &mut b1, &mut b2] {
        c.expect_none("conversation").await;
    }
}

#[tokio::test]
async fn sends_outside_a_connection_are_refused() {
    let server = support::start().await;
    let mut alice = server.connect("alice").await;
    let mut carol = server.connect("carol").await;
    assert_eq!(
        alice
            .err(json!({"type": "send", "to": "carol", "body": "hi"}))
            .await,
        "not_connected"
    );
    assert_eq!(
        alice
            .err(json!({"type": "send", "to": "ghost", "body": "hi"}))
            .await,
        "recipient_unavailable"
    );
    assert_eq!(
        alice
            .err(json!({"type": "send", "conversation": "d-nope", "body": "hi"}))
            .await,
        "not_found"
    );
    assert_eq!(
        alice.err(json!({"type": "send", "body": "hi"})).await,
        "bad_request",
        "neither conversation nor to"
    );
    carol.expect_none("message").await;
    carol.expect_none("conversation").await;
    assert_eq!(carol.sync().await["inbox"], json!([]));

    // A stranger cannot post into someone else's conversation either.
    let (mut a, _b) = server.connected_pair("dave", "erin").await;
    let m = a.dm("erin", "private").await;
    assert_eq!(
        carol
            .err(json!({"type": "send", "conversation": m["conversation"], "body": "hi"}))
            .await,
        "not_found"
    );
    assert_eq!(
        a.err(
            json!({"type": "send", "conversation": m["conversation"], "to": "erin", "body": "x"})
        )
        .await,
        "bad_request",
        "both conversation and to"
    );
}

#[tokio::test]
async fn a_resent_request_id_stores_one_message() {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let first = alice
        .ok(json!({"id": "retry-1", "type": "send", "to": "bob", "body": "once"}))
        .await;
    let again = alice
        .ok(json!({"id": "retry-1", "type": "send", "to": "bob", "body": "once"}))
        .await;
    assert_eq!(first, again, "the retry is answered with the same message");
    let conv = first["message"]["conversation"].clone();

    // The same holds for sends into a named conversation.
    let second = alice
        .ok(json!({"id": "retry-2", "type": "send", "conversation": conv, "body": "twice"}))
        .await;
    let second_again = alice
        .ok(json!({"id": "retry-2", "type": "send", "conversation": conv, "body": "twice"}))
        .await;
    assert_eq!(second, second_again);
    assert_ne!(second["message"]["id"], first["message"]["id"]);

    let frames = bob.drain("message").await;
    let got: Vec<Value> = frames.iter().map(|f| f["message"]["id"].clone()).collect();
    assert_eq!(
        got,
        vec![
            first["message"]["id"].clone(),
            second["message"]["id"].clone()
        ]
    );
    assert_eq!(bob.drain("notification").await.len(), 2);
    let history = bob.messages(&conv).await;
    assert_eq!(
        ids(&history),
        vec![
            first["message"]["id"].clone(),
            second["message"]["id"].clone()
        ]
    );
}

#[tokio::test]
async fn a_group_reaches_every_session_of_every_member() {
    let server = support::start().await;
    let mut alice = server.connect("alice").await;
    let mut alice2 = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut bob2 = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    support::connect_users(&mut alice, &mut bob).await;
    support::connect_users(&mut alice, &mut carol).await;

    let conv = alice
        .ok(json!({"type": "create_group", "members": ["bob", "carol"], "title": "team"}))
        .await["conversation"]
        .clone();
    assert_eq!(conv["kind"], "group");
    assert_eq!(conv["participants"], json!(["alice", "bob", "carol"]));
    assert_eq!(conv["title"], "team");
    for c in [&mut alice2, &mut bob, &mut bob2, &mut carol] {
        assert_eq!(c.expect("conversation").await["conversation"], conv);
    }
    alice.expect_none("conversation").await;

    // Bob and carol are not connected with each other; the group still joins them.
    let m = bob2.say(&conv["id"], "hi all").await;
    for c in [&mut alice, &mut alice2, &mut bob, &mut carol] {
        assert_eq!(c.expect("message").await["message"], m);
    }
    bob2.expect_none("message").await;
    let m2 = carol.say(&conv["id"], "hello").await;
    for c in [&mut alice, &mut alice2, &mut bob, &mut bob2] {
        assert_eq!(c.expect("message").await["message"]["id"], m2["id"]);
    }
    assert_eq!(
        ids(&alice.messages(&conv["id"]).await),
        vec![m["id"].clone(), m2["id"].clone()]
    );
}

#[tokio::test]
async fn a_group_needs_three_participants_all_connected_to_the_creator() {
    let server = support::start().await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    let _dave = server.connect("dave").await;
    support::connect_users(&mut alice, &mut bob).await;
    support::connect_users(&mut alice, &mut carol).await;

    for members in [
        json!([]),
        json!(["bob"]),
        json!(["bob", "bob"]),
        json!(["bob", "alice"]),
    ] {
        assert_eq!(
            alice
                .err(json!({"type": "create_group", "members": members}))
                .await,
            "bad_request",
            "members {members}"
        );
    }
    assert_eq!(
        alice
            .err(json!({"type": "create_group", "members": ["bob", "dave"]}))
            .await,
        "not_connected",
        "dave is no connection of alice"
    );
    assert_eq!(
        bob.err(json!({"type": "create_group", "members": ["alice", "carol"]}))
            .await,
        "not_connected",
        "carol is no connection of bob"
    );
    for c in [&mut bob, &mut carol] {
        c.expect_none("conversation").await;
    }
    assert_eq!(alice.sync().await["inbox"], json!([]));
}

#[tokio::test]
async fn read_receipts_go_to_the_sender_and_the_readers_other_sessions_and_only_forward() {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let mut bob2 = server.connect("bob").await;
    let m1 = alice.dm("bob", "one").await;
    let m2 = alice.dm("bob", "two").await;

    bob.mark_read(&m2).await;
    for c in [&mut alice, &mut bob2] {
        let r = c.expect("read").await;
        assert_eq!(r["conversation"], m2["conversation"]);
        assert_eq!(r["user"], "bob");
        assert_eq!(r["message"], m2["id"]);
        assert_eq!(r["seq"], m2["seq"]);
        assert!(r["pos"].as_u64().unwrap() > m2["seq"].as_u64().unwrap());
    }
    bob.expect_none("read").await;
    // Both messages are read by it: alice's recall offers for both end.
    let mut closed = vec![
        alice.expect("recall_closed").await,
        alice.expect("recall_closed").await,
    ];
    closed.sort_by_key(|f| f["message"].as_str().unwrap().to_owned());
    let mut expected = vec![m1["id"].clone(), m2["id"].clone()];
    expected.sort_by_key(|v| v.as_str().unwrap().to_owned());
    assert_eq!(ids_of(&closed, "message"), expected);
    assert!(closed.iter().all(|f| f["reason"] == "read"));

    // Reading an older message is acknowledged and changes nothing.
    bob.mark_read(&m1).await;
    alice.expect_none("read").await;
    bob2.expect_none("read").await;
    let receipts = alice.history(&m1["conversation"]).await["receipts"].clone();
    assert_eq!(
        receipts,
        json!([{"user": "bob", "message": m2["id"], "seq": m2["seq"]}])
    );
    // Nobody else may read here.
    let mut carol = server.connect("carol").await;
    assert_eq!(carol.err(on_message("read", &m1)).await, "not_found");
}

fn ids_of(frames: &[Value], field: &str) -> Vec<Value> {
    frames.iter().map(|f| f[field].clone()).collect()
}

#[tokio::test]
async fn with_receipts_off_others_get_no_read_but_recall_still_ends() {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let mut bob2 = server.connect("bob").await;
    bob.ok(json!({"type": "settings", "read_receipts": "off"}))
        .await;
    let m = alice.dm("bob", "did you see this?").await;
    bob.mark_read(&m).await;

    let own = bob2.expect("read").await;
    assert_eq!(
        own["message"], m["id"],
        "the reader's other session still syncs"
    );
    alice.expect_none("read").await;
    assert_eq!(
        alice.history(&m["conversation"]).await["receipts"],
        json!([]),
        "history shows no receipt from bob either"
    );
    assert_eq!(
        alice.err(on_message("recall", &m)).await,
        "already_read",
        "a private read still ends recall"
    );
    assert_eq!(
        bob.messages(&m["conversation"]).await[0]["body"],
        "did you see this?"
    );
}

#[tokio::test]
async fn a_reply_points_at_its_parent_and_copies_nothing() {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let parent = alice.dm("bob", "the secret plan").await;
    let conv = parent["conversation"].clone();
    let reply = bob
        .ok(json!({"type": "send", "conversation": conv, "body": "sounds good", "reply_to": parent["id"]}))
        .await["message"]
        .clone();
    assert_eq!(reply["reply_to"], parent["id"]);
    let pushed = alice.expect("message").await;
    assert_eq!(pushed["message"]["reply_to"], parent["id"]);
    assert_eq!(pushed["message"]["body"], "sounds good");
    assert!(!pushed.to_string().contains("secret plan"));

    // A reply must point at a message of the same conversation.
    let (mut c1, _c2) = server.connected_pair("carol", "dave").await;
    let elsewhere = c1.dm("dave", "other place").await;
    assert_eq!(
        bob.err(
            json!({"type": "send", "conversation": conv, "body": "x", "reply_to": elsewhere["id"]})
        )
        .await,
        "not_found"
    );
    assert_eq!(
        bob.err(json!({"type": "send", "conversation": conv, "body": "x", "reply_to": "m-nope"}))
            .await,
        "not_found"
    );

    alice.ok(on_message("recall", &parent)).await;
    for c in [&mut alice, &mut bob] {
        let history = c.history(&conv).await;
        let messages = history["messages"].as_array().unwrap();
        assert_eq!(
            ids(messages),
            vec![parent["id"].clone(), reply["id"].clone()]
        );
        assert_eq!(messages[0]["state"], "recalled");
        assert!(messages[0].get("body").is_none());
        assert_eq!(messages[1]["reply_to"], parent["id"]);
        assert_eq!(messages[1]["body"], "sounds good");
        assert!(
            !history.to_string().contains("secret plan"),
            "{}: the parent's text survives somewhere: {history}",
            c.user
        );
    }
}

#[tokio::test]
async fn bodies_must_be_one_to_max_body_chars_characters() {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let max = alice.hello["limits"]["max_body_chars"].as_u64().unwrap() as usize;
    assert_eq!(max, 8000);
    for body in [String::new(), "a".repeat(max + 1)] {
        assert_eq!(
            alice
                .err(json!({"type": "send", "to": "bob", "body": body}))
                .await,
            "body_too_long"
        );
    }
    // The limit counts characters, not bytes.
    let m = alice.dm("bob", &"é".repeat(max)).await;
    assert_eq!(m["body"].as_str().unwrap().chars().count(), max);
    assert_eq!(
        bob.drain("message").await.len(),
        1,
        "only the valid send arrived"
    );
    assert_eq!(
        alice
            .err(json!({"type": "inmail", "to": "bob", "body": ""}))
            .await,
        "body_too_long"
    );
}

#[tokio::test]
async fn a_small_body_limit_is_enforced_too() {
    let server = support::start_limits(|l| l.max_body_chars = 5).await;
    let (mut alice, _bob) = server.connected_pair("alice", "bob").await;
    assert_eq!(alice.hello["limits"]["max_body_chars"], 5);
    alice.dm("bob", "12345").await;
    assert_eq!(
        alice
            .err(json!({"type": "send", "to": "bob", "body": "123456"}))
            .await,
        "body_too_long"
    );
}

/// Positions of the ordered frames (`message` and `read`) a session received, with their
/// author, in arrival order.
fn ordered(frames: &[Value]) -> Vec<(u64, String, String)> {
    frames
        .iter()
        .filter_map(|f| match f["type"].as_str()? {
            "message" => Some((
                f["message"]["seq"].as_u64()?,
                f["message"]["sender"].as_str()?.to_owned(),
                "message".to_owned(),
            )),
            "read" => Some((
                f["pos"].as_u64()?,
                f["user"].as_str()?.to_owned(),
                "read".to_owned(),
            )),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_sees_one_order_per_conversation() {
    const EACH: usize = 15;
    let server = support::start().await;
    let users = ["alice", "bob", "carol"];
    let mut senders = Vec::new();
    let mut observers = Vec::new();
    for u in users {
        senders.push(server.connect(u).await);
        observers.push(server.connect(u).await);
    }
    {
        let (a, rest) = senders.split_at_mut(1);
        let (b, c) = rest.split_at_mut(1);
        support::connect_users(&mut a[0], &mut b[0]).await;
        support::connect_users(&mut a[0], &mut c[0]).await;
    }
    let conv = senders[0].group(&["bob", "carol"]).await["id"].clone();
    for c in senders.iter_mut().chain(observers.iter_mut()) {
        c.settle().await;
    }

    // Three senders interleave messages and reads of what they have seen so far.
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut c| {
            let conv = conv.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    c.say(&conv, &format!("{} {i}", c.user)).await;
                    let latest = c
                        .pending()
                        .iter()
                        .rev()
                        .find(|f| f["type"] == "message")
                        .map(|f| f["message"].clone());
                    if let Some(m) = latest {
                        c.mark_read(&m).await;
                    }
                }
                c
            })
        })
        .collect();
    let mut senders: Vec<Client> = Vec::new();
    for t in tasks {
        senders.push(t.await.expect("sender task"));
    }

    let mut seen = Vec::new();
    for o in observers.iter_mut() {
        seen.push(ordered(&o.settle().await));
    }
    let messages = seen[0].iter().filter(|e| e.2 == "message").count();
    assert_eq!(messages, EACH * users.len());
    let total = seen[0].len() as u64;
    let positions: Vec<u64> = seen[0].iter().map(|e| e.0).collect();
    assert_eq!(
        positions,
        (1..=total).collect::<Vec<_>>(),
        "every change of the conversation arrives once, in position order"
    );
    for (o, s) in observers.iter().zip(&seen) {
        assert_eq!(s, &seen[0], "{} saw another order", o.user);
    }
    // A sending session sees the same order, less its own sends and reads (acked instead).
    for c in senders.iter_mut() {
        let got = ordered(&c.settle().await);
        let expected: Vec<_> = seen[0].iter().filter(|e| e.1 != c.user).cloned().collect();
        assert_eq!(got, expected, "{}", c.user);
    }
    // History agrees with the live order.
    let history = observers[0].messages(&conv).await;
    let seqs: Vec<u64> = history.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    let live: Vec<u64> = seen[0]
        .iter()
        .filter(|e| e.2 == "message")
        .map(|e| e.0)
        .collect();
    assert_eq!(seqs, live);
}

#[tokio::test]
async fn a_refused_first_send_leaves_no_conversation_behind() {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    assert_eq!(
        alice
            .err(json!({"type": "send", "to": "bob", "body": ""}))
            .await,
        "body_too_long"
    );
    assert_eq!(
        alice
            .err(json!({"type": "send", "to": "bob", "body": "x", "reply_to": "m-nope"}))
            .await,
        "not_found"
    );
    assert_eq!(alice.sync().await["inbox"], json!([]));
    assert_eq!(bob.sync().await["inbox"], json!([]));
    bob.expect_none("conversation").await;

    // The first send that succeeds opens the conversation and announces it.
    let m = alice.dm("bob", "hi").await;
    let announced = bob.expect("conversation").await;
    assert_eq!(announced["conversation"]["id"], m["conversation"]);
    assert_eq!(bob.expect("message").await["message"]["id"], m["id"]);
}

#[tokio::test]
async fn a_refused_first_send_does_not_cost_the_conversation_its_durability() {
    use parley::store::MemoryStore;
    use std::sync::Arc;
    let store = Arc::new(MemoryStore::default());
    let mut config = parley::config::Config::with_secret(b"durable".to_vec());
    config.limits.requests_per_second = 0;
    config.connections_per_ip_per_second = 0;
    let secret = config.secret.clone();
    let open = |running: &parley::server::Running, user: &str| {
        let token = parley::auth::mint(&secret, user, false, std::time::Duration::from_secs(600));
        let url = running.url(&token);
        async move { Client::open(tokio_tungstenite::connect_async(url).await.unwrap().0).await }
    };

    let first = parley::server::spawn_with_store(&config, store.clone())
        .await
        .unwrap();
    let mut alice = open(&first, "alice").await;
    let mut bob = open(&first, "bob").await;
    support::connect_users(&mut alice, &mut bob).await;
    assert_eq!(
        alice
            .err(json!({"type": "send", "to": "bob", "body": ""}))
            .await,
        "body_too_long"
    );
    let m = alice.dm("bob", "acknowledged, so durable").await;
    first.stop().await;

    let second = parley::server::spawn_with_store(&config, store)
        .await
        .unwrap();
    let mut bob = open(&second, "bob").await;
    let history = bob.messages(&m["conversation"]).await;
    assert_eq!(ids(&history), vec![m["id"].clone()]);
    assert_eq!(history[0]["body"], "acknowledged, so durable");
}

#[tokio::test]
async fn a_request_resent_from_a_new_session_after_a_drop_stores_nothing_new() {
    let server = support::start().await;
    let (alice, mut bob) = server.connected_pair("alice", "bob").await;
    let mut a2 = server.connect("alice").await;
    let first = a2
        .ok(json!({"id": "lost-ack", "type": "send", "to": "bob", "body": "did it go?"}))
        .await;
    // The first device vanished; its replacement resends the same request.
    alice.close().await;
    let mut a3 = server.connect("alice").await;
    let again = a3
        .ok(json!({"id": "lost-ack", "type": "send", "to": "bob", "body": "did it go?"}))
        .await;
    assert_eq!(first, again);
    assert_eq!(bob.drain("message").await.len(), 1);
    assert_eq!(a2.drain("message").await.len(), 0, "nothing new to show");
    assert_eq!(
        bob.messages(&first["message"]["conversation"]).await.len(),
        1
    );
}
