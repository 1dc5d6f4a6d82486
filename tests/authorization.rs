//! The authorisation matrix: every request type tried as the sender, a participant, a
//! non-participant, a blocked user, and without a valid token, each answer checked.

mod support;

use futures::future::join_all;
use serde_json::{json, Value};
use std::time::Duration;
use support::{Client, TestServer};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    Sender,
    Participant,
    NonParticipant,
    Blocked,
    Unauthenticated,
    Expired,
    Forged,
    OtherSecret,
}

const ROLES: [Role; 8] = [
    Role::Sender,
    Role::Participant,
    Role::NonParticipant,
    Role::Blocked,
    Role::Unauthenticated,
    Role::Expired,
    Role::Forged,
    Role::OtherSecret,
];

/// The world every cell starts from: alice and bob connected, a direct conversation with
/// alice's message in it; carol knows nobody. In the blocked world alice has blocked bob.
struct World {
    server: TestServer,
    actor: Client,
    conv: Value,
    message: Value,
}

async fn world(role: Role) -> World {
    let server = support::start().await;
    let (mut alice, bob) = server.connected_pair("alice", "bob").await;
    let carol = server.connect("carol").await;
    let m = alice.dm("bob", "hello").await;
    if role == Role::Blocked {
        alice.ok(json!({"type": "block", "user": "bob"})).await;
    }
    let actor = match role {
        Role::Sender => alice,
        Role::Participant | Role::Blocked => bob,
        _ => carol,
    };
    World {
        server,
        actor,
        conv: m["conversation"].clone(),
        message: m["id"].clone(),
    }
}

/// The request for one operation, and the answer each authenticated role must get
/// (`ok`, or an error code) as [sender, participant, non-participant, blocked].
fn cases(w: &World) -> Vec<(&'static str, Value, [&'static str; 4])> {
    let (c, m) = (&w.conv, &w.message);
    // The "other" user is alice for bob and carol, bob for alice.
    let other = if w.actor.user == "alice" {
        "bob"
    } else {
        "alice"
    };
    vec![
        (
            "send",
            json!({"type": "send", "conversation": c, "body": "x"}),
            ["ok", "ok", "not_found", "recipient_unavailable"],
        ),
        (
            "send_to",
            json!({"type": "send", "to": other, "body": "x"}),
            ["ok", "ok", "not_connected", "recipient_unavailable"],
        ),
        (
            "inmail",
            json!({"type": "inmail", "to": other, "body": "x"}),
            ["ok", "ok", "ok", "recipient_unavailable"],
        ),
        (
            "create_group",
            json!({"type": "create_group", "members": [other, "nobody"]}),
            [
                "recipient_unavailable",
                "recipient_unavailable",
                "not_connected",
                "recipient_unavailable",
            ],
        ),
        (
            "read",
            json!({"type": "read", "conversation": c, "message": m}),
            ["ok", "ok", "not_found", "ok"],
        ),
        (
            "recall",
            json!({"type": "recall", "conversation": c, "message": m}),
            ["ok", "not_sender", "not_found", "not_sender"],
        ),
        (
            "delete_inmail",
            json!({"type": "delete_inmail", "conversation": c, "message": m}),
            [
                "wrong_message_kind",
                "wrong_message_kind",
                "not_found",
                "wrong_message_kind",
            ],
        ),
        (
            "delete_for_me",
            json!({"type": "delete_for_me", "conversation": c, "message": m}),
            ["ok", "ok", "not_found", "ok"],
        ),
        (
            "connect",
            json!({"type": "connect", "user": other}),
            ["ok", "ok", "ok", "recipient_unavailable"],
        ),
        (
            "accept",
            json!({"type": "accept", "user": other}),
            ["not_found"; 4],
        ),
        (
            "decline",
            json!({"type": "decline", "user": other}),
            ["not_found"; 4],
        ),
        (
            "disconnect",
            json!({"type": "disconnect", "user": other}),
            ["ok", "ok", "not_found", "not_found"],
        ),
        ("block", json!({"type": "block", "user": other}), ["ok"; 4]),
        (
            "unblock",
            json!({"type": "unblock", "user": other}),
            ["not_found"; 4],
        ),
        (
            "report_message",
            json!({"type": "report", "target": {"kind": "message", "conversation": c, "message": m}, "reason": "r"}),
            ["ok", "ok", "not_found", "ok"],
        ),
        (
            "report_user",
            json!({"type": "report", "target": {"kind": "user", "user": other}, "reason": "r"}),
            ["ok"; 4],
        ),
        (
            "list_reports",
            json!({"type": "list_reports"}),
            ["forbidden"; 4],
        ),
        (
            "mute",
            json!({"type": "mute", "conversation": c, "muted": true}),
            ["ok", "ok", "not_found", "ok"],
        ),
        (
            "hide",
            json!({"type": "hide", "conversation": c, "hidden": true}),
            ["ok", "ok", "not_found", "ok"],
        ),
        (
            "settings",
            json!({"type": "settings", "read_receipts": "off"}),
            ["ok"; 4],
        ),
        (
            "typing",
            json!({"type": "typing", "conversation": c}),
            ["ok", "ok", "not_found", "ok"],
        ),
        (
            "lookup",
            json!({"type": "lookup", "user": other}),
            ["ok", "ok", "ok", "not_found"],
        ),
        ("sync", json!({"type": "sync"}), ["ok"; 4]),
        (
            "history",
            json!({"type": "history", "conversation": c}),
            ["ok", "ok", "not_found", "ok"],
        ),
    ]
}

fn bad_token(server: &TestServer, role: Role) -> Option<String> {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let claims = |exp: u64| parley::auth::Claims {
        sub: "alice".into(),
        iat: 1,
        exp,
        admin: false,
    };
    match role {
        Role::Unauthenticated => None,
        Role::Expired => Some(
            encode(
                &Header::default(),
                &claims(2),
                &EncodingKey::from_secret(&server.secret),
            )
            .unwrap(),
        ),
        Role::Forged => {
            let good = server.token("alice");
            let (head, _sig) = good.rsplit_once('.').unwrap();
            Some(format!(
                "{head}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            ))
        }
        Role::OtherSecret => Some(parley::auth::mint(
            b"another-secret",
            "alice",
            true,
            Duration::from_secs(60),
        )),
        _ => unreachable!(),
    }
}

/// One cell of the matrix: returns a description of any mismatch.
async fn cell(role: Role, op: usize) -> Option<String> {
    let index = ROLES.iter().position(|r| *r == role).unwrap();
    if index >= 4 {
        let server = support::start().await;
        let mut ws = server.raw(bad_token(&server, role).as_deref()).await;
        let frame = json!({"id": "x", "type": "sync"}).to_string();
        use futures::{SinkExt, StreamExt};
        let _ = ws
            .send(tokio_tungstenite::tungstenite::Message::Text(frame.into()))
            .await;
        let mut got = Vec::new();
        while let Ok(Some(Ok(msg))) = tokio::time::timeout(support::PATIENCE, ws.next()).await {
            got.push(msg.to_string());
            if msg.is_close() {
                break;
            }
        }
        let refused = got
            .first()
            .is_some_and(|f| f.contains(r#""code":"unauthorized""#))
            && got.len() == 2;
        return (!refused)
            .then(|| format!("{role:?} op {op}: expected unauthorized then close, got {got:?}"));
    }
    let mut w = world(role).await;
    let (name, request, expected) = cases(&w).swap_remove(op);
    let answer = w.actor.request(request).await;
    let got = if answer["type"] == "ack" {
        "ok"
    } else {
        answer["code"].as_str().unwrap_or("?")
    };
    let mut problem = (got != expected[index]).then(|| {
        format!(
            "{role:?} {name}: expected {}, got {answer}",
            expected[index]
        )
    });
    if role == Role::NonParticipant && got == "not_found" {
        // A non-participant learns nothing: the same answer as for a conversation that does not exist.
        let mut ghost = cases(&w).swap_remove(op).1;
        if ghost.get("conversation").is_some() {
            ghost["conversation"] = json!("d-does-not-exist");
        }
        if let Some(target) = ghost.get_mut("target") {
            target["conversation"] = json!("d-does-not-exist");
        }
        let ghost_answer = w.actor.request(ghost).await;
        if ghost_answer["message"] != answer["message"] || ghost_answer["code"] != answer["code"] {
            problem = Some(format!(
                "{name}: non-participant told {answer}, stranger told {ghost_answer}"
            ));
        }
    }
    w.server.running.stop().await;
    problem
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_type_for_every_role() {
    let ops = {
        let w = world(Role::Sender).await;
        cases(&w).len()
    };
    let cells: Vec<_> = ROLES
        .iter()
        .flat_map(|&r| (0..ops).map(move |op| (r, op)))
        .collect();
    let total = cells.len();
    let problems: Vec<String> = join_all(cells.into_iter().map(|(r, op)| cell(r, op)))
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(
        problems.is_empty(),
        "{} of {total} cells wrong:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(total, 24 * 8);
    eprintln!("authorisation matrix: {total} cells, all as expected");
}
