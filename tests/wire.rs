//! The wire itself: `hello`, answers to malformed or unknown frames, token checks with
//! their single error frame and close code, binary frames, and isolation of a bad client.

mod support;

use futures::SinkExt;
use jsonwebtoken::{encode, EncodingKey, Header};
use parley::auth::Claims;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};
use support::Client;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token_with(secret: &[u8], claims: &Claims) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[tokio::test]
async fn hello_carries_the_protocol_version_every_limit_and_the_settings() {
    let server = support::start().await;
    let before = unix_now() as i64 * 1000;
    let a1 = server.connect("alice").await;
    let a2 = server.connect("alice").await;
    let after = unix_now() as i64 * 1000 + 1000;
    let h = &a1.hello;
    assert_eq!(h["type"], "hello");
    assert_eq!(h["protocol"], 1);
    assert_eq!(h["user"], "alice");
    assert!(h["session"].as_str().is_some_and(|s| !s.is_empty()));
    assert_ne!(
        h["session"], a2.hello["session"],
        "each session has its own id"
    );
    let t = h["server_time"].as_i64().unwrap();
    assert!((before..=after).contains(&t), "server_time {t} is now");
    assert_eq!(
        h["limits"],
        json!({
            "recall_window_ms": 120000,
            "inmail_delete_window_ms": 600000,
            "recall_per_conversation": 1,
            "recall_period_ms": 86400000,
            "recall_throttle_messages": 30,
            "recall_throttle_window_ms": 60000,
            "max_body_chars": 8000,
            "max_frame_bytes": 65536,
            "max_sessions_per_user": 16,
            // The test server turns the request rate limit off.
            "requests_per_second": 0,
            "request_burst": 60,
            "ping_interval_ms": 30000,
            "idle_timeout_ms": 90000,
        })
    );
    assert_eq!(
        h["settings"],
        json!({"who_can_message": "everyone", "read_receipts": "on", "notification_preview": "full"})
    );
}

#[tokio::test]
async fn hello_announces_the_limits_in_force() {
    let server = support::start_limits(|l| {
        l.recall_window_ms = 30_000;
        l.inmail_delete_window_ms = 0;
        l.recall_throttle_messages = 5;
    })
    .await;
    let c = server.connect("alice").await;
    assert_eq!(c.hello["limits"]["recall_window_ms"], 30000);
    assert_eq!(c.hello["limits"]["inmail_delete_window_ms"], 0);
    assert_eq!(c.hello["limits"]["recall_throttle_messages"], 5);
}

#[tokio::test]
async fn malformed_json_is_a_bad_request_without_an_id() {
    let server = support::start().await;
    let mut c = server.connect("alice").await;
    for garbage in [
        r#"{"id": "x", "type": "sync""#,
        "not json at all",
        "",
        "[1, 2]",
        "42",
    ] {
        c.send_text(garbage).await;
        let e = c.expect("error").await;
        assert_eq!(e["code"], "bad_request", "{garbage:?}");
        assert!(e.get("id").is_none(), "{garbage:?}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // The session carries on.
    c.ok(json!({"type": "sync"})).await;
}

#[tokio::test]
async fn an_unknown_type_is_answered_with_its_id() {
    let server = support::start().await;
    let mut c = server.connect("alice").await;
    let e = c
        .request(json!({"id": "u-1", "type": "teleport", "to": "mars"}))
        .await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["code"], "unknown_type");
    assert_eq!(e["id"], "u-1");
    assert!(e["message"].as_str().unwrap().contains("teleport"));
}

#[tokio::test]
async fn a_missing_or_mistyped_field_is_a_bad_request_with_its_id() {
    let server = support::start().await;
    let mut c = server.connect("alice").await;
    let cases = [
        json!({"id": "f-1", "type": "send", "to": "bob"}),
        json!({"id": "f-2", "type": "read", "conversation": 5, "message": "m"}),
        json!({"id": "f-3", "type": "mute", "conversation": "c"}),
        json!({"id": "f-4", "type": "settings", "who_can_message": "nobody"}),
        json!({"id": "f-5", "body": "no type"}),
    ];
    for case in cases {
        let e = c.request(case.clone()).await;
        assert_eq!(e["type"], "error", "{case}");
        assert_eq!(e["code"], "bad_request", "{case}");
        assert_eq!(e["id"], case["id"]);
    }
    // Without an id the request cannot be answered by id, but it is still answered.
    c.send_text(r#"{"type": "sync"}"#).await;
    let e = c.expect("error").await;
    assert_eq!(e["code"], "bad_request");
    assert!(e.get("id").is_none(), "{e}");
}

#[tokio::test]
async fn every_request_gets_exactly_one_answer() {
    let server = support::start().await;
    let (mut alice, _bob) = server.connected_pair("alice", "bob").await;
    let frames = [
        json!({"id": "p-1", "type": "sync"}),
        json!({"id": "p-2", "type": "send", "to": "bob", "body": "one"}),
        json!({"id": "p-3", "type": "lookup", "user": "ghost"}),
        json!({"id": "p-4", "type": "nope"}),
        json!({"id": "p-5", "type": "send", "to": "bob"}),
        json!({"id": "p-6", "type": "send", "to": "bob", "body": "two"}),
    ];
    // Pipelined without waiting.
    for f in &frames {
        alice.send_text(&f.to_string()).await;
    }
    let last = alice.request(json!({"id": "p-7", "type": "sync"})).await;
    assert_eq!(last["type"], "ack");
    let mut answers: HashMap<String, Vec<Value>> = HashMap::new();
    for f in alice.settle().await {
        if f["type"] == "ack" || f["type"] == "error" {
            answers
                .entry(f["id"].as_str().unwrap().to_owned())
                .or_default()
                .push(f);
        }
    }
    let expect = [
        ("p-1", "ack"),
        ("p-2", "ack"),
        ("p-3", "error"),
        ("p-4", "error"),
        ("p-5", "error"),
        ("p-6", "ack"),
    ];
    for (id, kind) in expect {
        let got = answers.remove(id).unwrap_or_default();
        assert_eq!(got.len(), 1, "{id}: {got:?}");
        assert_eq!(got[0]["type"], kind, "{id}");
    }
    assert!(answers.is_empty(), "answers to nothing asked: {answers:?}");
}

/// Open a socket with `token` and check the server refuses it: one `error` frame with
/// code `unauthorized` and `message`, then close 1008.
async fn assert_refused(server: &support::TestServer, token: Option<&str>, message: &str) {
    let ws = server.raw(token).await;
    let (frames, code, reason) = support::refused(ws).await;
    assert_eq!(
        frames,
        vec![json!({"type": "error", "code": "unauthorized", "message": message})],
        "token {token:?}"
    );
    assert_eq!(code, 1008, "token {token:?}");
    assert!(reason.contains(message), "reason {reason:?}");
}

#[tokio::test]
async fn bad_tokens_get_one_unauthorized_error_then_close_1008() {
    let server = support::start().await;
    let now = unix_now();
    let claims = |iat: u64, exp: u64, admin: bool| Claims {
        sub: "mallory".into(),
        iat,
        exp,
        admin,
    };
    assert_refused(&server, None, "missing token").await;
    assert_refused(&server, Some(""), "missing token").await;
    assert_refused(&server, Some("not.a.token"), "invalid token").await;
    let other = token_with(b"another secret", &claims(now, now + 3600, true));
    assert_refused(&server, Some(&other), "invalid token").await;
    let expired = token_with(&server.secret, &claims(now - 7200, now - 3600, false));
    assert_refused(&server, Some(&expired), "token expired").await;

    // A genuine token whose claims were edited no longer matches its signature.
    let genuine = server.token("mallory");
    assert_eq!(
        base64url(br#"{"a":1}"#),
        "eyJhIjoxfQ",
        "the encoder is sound"
    );
    let mut parts: Vec<String> = genuine.split('.').map(str::to_owned).collect();
    let forged_claims = json!({"sub": "alice", "iat": now, "exp": now + 3600, "admin": true});
    parts[1] = base64url(forged_claims.to_string().as_bytes());
    assert_refused(&server, Some(&parts.join(".")), "invalid token").await;

    // The server is still serving good tokens.
    let c = server.connect("mallory").await;
    assert_eq!(c.hello["user"], "mallory");
}

#[tokio::test]
async fn a_bearer_header_is_accepted_too() {
    let server = support::start().await;
    let url = format!("ws://{}/ws", server.running.addr);
    let mut request = url.as_str().into_client_request().unwrap();
    let bearer = format!("Bearer {}", server.token("alice"));
    request
        .headers_mut()
        .insert("authorization", bearer.parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let c = Client::open(ws).await;
    assert_eq!(c.hello["user"], "alice");

    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer forged".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let (frames, code, _) = support::refused(ws).await;
    assert_eq!(frames[0]["code"], "unauthorized");
    assert_eq!(frames.len(), 1);
    assert_eq!(code, 1008);
}

/// Unpadded base64url, as JWT segments use.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn a_binary_frame_closes_with_1003_and_the_user_reconnects() {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let mut ws = server.raw(Some(&server.token("bob"))).await;
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    let (frames, code, _) = support::refused(ws).await;
    assert_eq!(frames[0]["type"], "hello", "the session had opened");
    assert_eq!(code, 1003);
    // Bob's other session and everyone else carry on.
    let m = alice.dm("bob", "still there?").await;
    assert_eq!(bob.expect("message").await["message"]["id"], m["id"]);
    let mut again = server.connect("bob").await;
    assert_eq!(again.messages(&m["conversation"]).await[0]["id"], m["id"]);
}

#[tokio::test]
async fn garbage_from_one_client_disturbs_nobody() {
    let server = support::start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let mut mallory = server.connect("mallory").await;
    let mut mallory2 = server.connect("mallory").await;
    let garbage = [
        "}{".to_owned(),
        r#"{"type": 7}"#.to_owned(),
        r#"{"id": "g", "type": "recall"}"#.to_owned(),
        r#"{"id": "g", "type": "send", "conversation": null, "to": null, "body": "x"}"#.to_owned(),
        format!(r#"{{"id": "{}", "type": "sync"}}"#, "i".repeat(10_000)),
        "\u{0}\u{1}".to_owned(),
    ];
    for g in &garbage {
        mallory.send_text(g).await;
    }
    let m = alice.dm("bob", "business as usual").await;
    assert_eq!(
        bob.expect("message").await["message"]["body"],
        "business as usual"
    );
    let back = bob.dm("alice", "indeed").await;
    assert_eq!(alice.expect("message").await["message"]["id"], back["id"]);
    // Every garbage frame got its error; the one valid request (a sync with a long id)
    // got its ack.
    assert_eq!(mallory.drain("error").await.len(), garbage.len() - 1);
    let acks = mallory.drain("ack").await;
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!(acks[0]["id"].as_str().unwrap().len(), 10_000);
    // Mallory's own sessions still work, and stored data is intact.
    mallory.ok(json!({"type": "sync"})).await;
    mallory2.expect_none("error").await;
    assert_eq!(alice.messages(&m["conversation"]).await.len(), 2);
}
