//! Bad input and abuse: every case gets a clear error or a clean close code, and the
//! server keeps serving everyone else.

mod support;

use futures::{SinkExt, StreamExt};
use serde_json::json;
use support::PATIENCE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// Read until the server closes; returns the close code.
async fn close_code(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> u16 {
    loop {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
            Some(Ok(Message::Close(None))) | None => return 1005,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("no close frame: {e}"),
        }
    }
}

#[tokio::test]
async fn oversize_frame_closes_with_1009_and_others_keep_working() {
    let server = support::start_limits(|l| l.max_frame_bytes = 1024).await;
    let (mut a, mut b) = server.connected_pair("alice", "bob").await;
    let mut ws = server.raw(Some(&server.token("mallory"))).await;
    let big = format!(
        r#"{{"id":"x","type":"lookup","user":"{}"}}"#,
        "x".repeat(2000)
    );
    ws.send(Message::Text(big.into())).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1009);
    a.dm("bob", "still here").await;
    assert_eq!(b.expect("message").await["message"]["body"], "still here");
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let server = support::start().await;
    let mut ws = server.raw(Some(&server.token("mallory"))).await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1007);
}

#[tokio::test]
async fn binary_frames_close_with_1003() {
    let server = support::start().await;
    let mut ws = server.raw(Some(&server.token("mallory"))).await;
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 1003);
}

#[tokio::test]
async fn request_flood_is_refused_then_cut_off() {
    let server = support::start_limits(|l| {
        l.requests_per_second = 5;
        l.request_burst = 5;
    })
    .await;
    let mut c = server.connect("flooder").await;
    let mut codes = Vec::new();
    for i in 0..8 {
        let answer = c
            .request(json!({"id": format!("q{i}"), "type": "lookup", "user": "flooder"}))
            .await;
        assert_eq!(
            answer["id"],
            format!("q{i}"),
            "refusals still name the request"
        );
        codes.push(answer["code"].as_str().unwrap_or("ok").to_owned());
    }
    assert_eq!(codes[..5], ["ok"; 5], "the burst is allowed");
    assert!(codes[5..].iter().all(|c| c == "rate_limited"), "{codes:?}");
    // Keep going past a whole burst of refusals: the session is closed with 1008.
    for i in 0..10 {
        c.send_text(
            &json!({"id": format!("f{i}"), "type": "lookup", "user": "flooder"}).to_string(),
        )
        .await;
    }
    let (code, reason) = c.expect_close().await;
    assert_eq!((code, reason.as_str()), (1008, "request flood"));
    // The server still serves others.
    let mut other = server.connect("bystander").await;
    other.ok(json!({"type": "sync"})).await;
}

#[tokio::test]
async fn too_many_sessions_are_refused_with_1008() {
    let server = support::start_limits(|l| l.max_sessions_per_user = 2).await;
    let _one = server.connect("alice").await;
    let _two = server.connect("alice").await;
    let mut three = server.raw(Some(&server.token("alice"))).await;
    assert_eq!(close_code(&mut three).await, 1008);
    drop(_one);
    // A freed slot can be used again (the server notices the close first).
    let mut retry = None;
    for _ in 0..50 {
        let mut ws = server.raw(Some(&server.token("alice"))).await;
        match tokio::time::timeout(PATIENCE, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) if t.as_str().contains("hello") => {
                retry = Some(ws);
                break;
            }
            _ => tokio::task::yield_now().await,
        }
    }
    assert!(retry.is_some(), "a slot frees up once a session closes");
}

#[tokio::test]
async fn connection_rate_per_address_closes_with_1013() {
    let server = support::start_with(|c| c.connections_per_ip_per_second = 1).await;
    // One per second with a burst of ten: the eleventh in a row is turned away.
    for _ in 0..10 {
        server.connect("alice").await;
    }
    let mut ws = server.raw(Some(&server.token("alice"))).await;
    let first = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let frame: serde_json::Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(frame["code"], "rate_limited");
    assert_eq!(close_code(&mut ws).await, 1013);
}

#[tokio::test]
async fn silent_half_open_connection_is_reaped() {
    let server = support::start_limits(|l| {
        l.ping_interval_ms = 50;
        l.idle_timeout_ms = 200;
    })
    .await;
    // A raw socket that completes the upgrade and then never answers anything, pings included.
    let mut tcp = tokio::net::TcpStream::connect(server.running.addr)
        .await
        .unwrap();
    let request = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.token("ghost")
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // Read (without ever answering) until the server hangs up.
    loop {
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
            .await
            .expect("reaped in time")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(
        text.contains("idle timeout"),
        "closed with a reason: {text:?}"
    );
    assert_eq!(server.running.hub.sessions().count("ghost"), 0);
}

#[tokio::test]
async fn slow_consumer_is_cut_off_without_stalling_the_others() {
    let server = support::start_with(|c| c.max_queue_bytes = 64 * 1024).await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    support::connect_users(&mut alice, &mut bob).await;
    support::connect_users(&mut alice, &mut carol).await;
    let group = alice
        .ok(json!({"type": "create_group", "members": ["bob", "carol"]}))
        .await;
    let conv = group["conversation"]["id"].clone();
    // Carol's second device stops reading entirely.
    let stuck = server.raw(Some(&server.token("carol"))).await;
    let body = "x".repeat(7900);
    // Kernel socket buffers absorb a few megabytes first; keep sending until the server's
    // byte budget for the stuck session runs out (bounded).
    let mut sent = 0;
    while server.running.hub.sessions().count("carol") == 2 {
        assert!(sent < 3000, "the stuck session was never cut off");
        alice
            .ok(json!({"type": "send", "conversation": conv, "body": format!("{sent} {body}")}))
            .await;
        let got = bob.expect("message").await;
        assert!(got["message"]["body"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{sent} ")));
        carol.expect("message").await;
        sent += 1;
    }
    // The healthy sessions are unaffected and keep receiving.
    alice
        .ok(json!({"type": "send", "conversation": conv, "body": "after"}))
        .await;
    assert_eq!(bob.expect("message").await["message"]["body"], "after");
    assert_eq!(carol.expect("message").await["message"]["body"], "after");
    assert_eq!(
        server.running.hub.sessions().count("carol"),
        1,
        "only the stuck session was cut off"
    );
    drop(stuck);
}
