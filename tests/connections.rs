//! Connections over the wire: request, accept, decline, disconnect, crossing requests,
//! unknown users and look-ups.

mod support;

use serde_json::{json, Value};

async fn lookup(c: &mut support::Client, user: &str) -> Value {
    c.ok(json!({"type": "lookup", "user": user})).await
}

#[tokio::test]
async fn request_then_accept_connects_and_both_sides_are_told() {
    let server = support::start().await;
    let mut alice = server.connect("alice").await;
    let mut alice2 = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut bob2 = server.connect("bob").await;

    let ack = alice.ok(json!({"type": "connect", "user": "bob"})).await;
    assert_eq!(
        ack,
        json!({"kind": "connection", "user": "bob", "state": "requested"})
    );
    for b in [&mut bob, &mut bob2] {
        assert_eq!(b.expect("connection_request").await["from"], "alice");
    }
    assert_eq!(lookup(&mut bob, "alice").await["connection"], "incoming");
    let pending = bob.sync().await;
    assert_eq!(pending["incoming_requests"], json!(["alice"]));
    assert_eq!(alice.sync().await["outgoing_requests"], json!(["bob"]));

    let ack = bob.ok(json!({"type": "accept", "user": "alice"})).await;
    assert_eq!(
        ack,
        json!({"kind": "connection", "user": "alice", "state": "connected"})
    );
    for a in [&mut alice, &mut alice2] {
        assert_eq!(a.expect("connected").await["user"], "bob");
    }
    assert_eq!(bob2.expect("connected").await["user"], "alice");
    bob.expect_none("connected").await;

    assert_eq!(lookup(&mut alice, "bob").await["connection"], "connected");
    assert_eq!(lookup(&mut bob, "alice").await["connection"], "connected");
    let synced = alice.sync().await;
    assert_eq!(synced["connections"], json!(["bob"]));
    assert_eq!(synced["outgoing_requests"], json!([]));
    assert_eq!(bob.sync().await["connections"], json!(["alice"]));

    // The connection is what direct messages need.
    let m = alice.dm("bob", "hi").await;
    assert_eq!(bob.expect("message").await["message"]["id"], m["id"]);
}

#[tokio::test]
async fn a_repeated_request_is_not_pushed_twice() {
    let server = support::start().await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    alice.ok(json!({"type": "connect", "user": "bob"})).await;
    let again = alice.ok(json!({"type": "connect", "user": "bob"})).await;
    assert_eq!(again["state"], "requested");
    assert_eq!(bob.drain("connection_request").await.len(), 1);
}

#[tokio::test]
async fn decline_leaves_nothing_and_the_requester_is_not_told() {
    let server = support::start().await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    alice.ok(json!({"type": "connect", "user": "bob"})).await;
    bob.expect("connection_request").await;

    let ack = bob.ok(json!({"type": "decline", "user": "alice"})).await;
    assert_eq!(
        ack,
        json!({"kind": "connection", "user": "alice", "state": "none"})
    );
    // Alice hears nothing at all about it.
    let told = alice.settle().await;
    assert!(told.is_empty(), "requester was told: {told:?}");

    assert_eq!(bob.sync().await["incoming_requests"], json!([]));
    assert_eq!(alice.sync().await["outgoing_requests"], json!([]));
    assert_eq!(lookup(&mut alice, "bob").await["connection"], "none");
    assert_eq!(
        bob.err(json!({"type": "accept", "user": "alice"})).await,
        "not_found",
        "nothing left to accept"
    );
    assert_eq!(
        bob.err(json!({"type": "decline", "user": "alice"})).await,
        "not_found"
    );
    assert_eq!(
        alice
            .err(json!({"type": "send", "to": "bob", "body": "x"}))
            .await,
        "not_connected"
    );
}

#[tokio::test]
async fn disconnect_tells_both_sides_and_ends_direct_messaging() {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let mut alice2 = server.connect("alice").await;
    let mut bob2 = server.connect("bob").await;

    let ack = alice.ok(json!({"type": "disconnect", "user": "bob"})).await;
    assert_eq!(
        ack,
        json!({"kind": "connection", "user": "bob", "state": "none"})
    );
    assert_eq!(alice2.expect("disconnected").await["user"], "bob");
    for b in [&mut bob, &mut bob2] {
        assert_eq!(b.expect("disconnected").await["user"], "alice");
    }
    alice.expect_none("disconnected").await;

    assert_eq!(lookup(&mut bob, "alice").await["connection"], "none");
    assert_eq!(alice.sync().await["connections"], json!([]));
    assert_eq!(bob.sync().await["connections"], json!([]));
    assert_eq!(
        bob.err(json!({"type": "send", "to": "alice", "body": "x"}))
            .await,
        "not_connected"
    );
    assert_eq!(
        alice
            .err(json!({"type": "disconnect", "user": "bob"}))
            .await,
        "not_found",
        "nothing left to remove"
    );
}

#[tokio::test]
async fn withdrawing_a_request_with_disconnect() {
    let server = support::start().await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    alice.ok(json!({"type": "connect", "user": "bob"})).await;
    bob.expect("connection_request").await;
    let ack = alice.ok(json!({"type": "disconnect", "user": "bob"})).await;
    assert_eq!(ack["state"], "none");
    assert_eq!(bob.expect("disconnected").await["user"], "alice");
    assert_eq!(
        bob.err(json!({"type": "accept", "user": "alice"})).await,
        "not_found"
    );
    assert_eq!(bob.sync().await["incoming_requests"], json!([]));
}

#[tokio::test]
async fn crossing_requests_connect() {
    let server = support::start().await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut bob2 = server.connect("bob").await;
    alice.ok(json!({"type": "connect", "user": "bob"})).await;
    let ack = bob.ok(json!({"type": "connect", "user": "alice"})).await;
    assert_eq!(
        ack,
        json!({"kind": "connection", "user": "alice", "state": "connected"})
    );
    assert_eq!(alice.expect("connected").await["user"], "bob");
    assert_eq!(bob2.expect("connected").await["user"], "alice");
    bob.expect_none("connected").await;
    alice.expect_none("connection_request").await;
    assert_eq!(alice.sync().await["connections"], json!(["bob"]));
    assert_eq!(bob.sync().await["outgoing_requests"], json!([]));
}

#[tokio::test]
async fn connecting_to_an_unknown_user_or_yourself_is_unavailable() {
    let server = support::start().await;
    let mut alice = server.connect("alice").await;
    assert_eq!(
        alice
            .err(json!({"type": "connect", "user": "nobody"}))
            .await,
        "recipient_unavailable"
    );
    assert_eq!(
        alice.err(json!({"type": "connect", "user": "alice"})).await,
        "recipient_unavailable"
    );
    assert_eq!(alice.sync().await["outgoing_requests"], json!([]));
    // A user exists once they have connected, and from then on can be asked.
    let mut nobody = server.connect("nobody").await;
    alice.ok(json!({"type": "connect", "user": "nobody"})).await;
    assert_eq!(nobody.expect("connection_request").await["from"], "alice");
}

#[tokio::test]
async fn lookup_reports_connection_state_and_inmail_permission() {
    let server = support::start().await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    assert_eq!(
        alice.err(json!({"type": "lookup", "user": "ghost"})).await,
        "not_found"
    );
    assert_eq!(
        lookup(&mut alice, "bob").await,
        json!({"kind": "profile", "user": "bob", "connection": "none", "inmail_allowed": true})
    );
    bob.ok(json!({"type": "settings", "who_can_message": "connections"}))
        .await;
    assert_eq!(
        lookup(&mut alice, "bob").await["inmail_allowed"],
        false,
        "bob takes InMail from connections only"
    );
    alice.ok(json!({"type": "connect", "user": "bob"})).await;
    assert_eq!(lookup(&mut alice, "bob").await["connection"], "requested");
    assert_eq!(lookup(&mut bob, "alice").await["connection"], "incoming");
    bob.ok(json!({"type": "accept", "user": "alice"})).await;
    assert_eq!(
        lookup(&mut alice, "bob").await,
        json!({"kind": "profile", "user": "bob", "connection": "connected", "inmail_allowed": true})
    );
}
