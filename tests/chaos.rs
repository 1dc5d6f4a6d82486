//! Chaos: a few hundred clients connect, send garbage, drop mid-frame and reconnect while
//! a well-behaved pair keeps chatting. The pair loses nothing and the server stays healthy.

mod support;

use futures::SinkExt;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

const CHAOS_CLIENTS: usize = 200;
const ROUNDS: usize = 5;
const PAIR_MESSAGES: usize = 200;

async fn misbehave(server: Arc<support::TestServer>, n: usize) {
    for round in 0..ROUNDS {
        let user = format!("chaos-{n}");
        match (n + round) % 5 {
            0 => {
                let mut ws = server.raw(Some(&server.token(&user))).await;
                let _ = ws.send(Message::Text("{{{{ not json".into())).await;
                let _ = ws
                    .send(Message::Text(r#"{"id":1,"type":["x"]}"#.into()))
                    .await;
            }
            1 => {
                let mut ws = server.raw(Some(&server.token(&user))).await;
                let _ = ws.send(Message::Binary(vec![0u8; 64].into())).await;
            }
            2 => {
                let mut ws = server.raw(Some(&server.token(&user))).await;
                let _ = ws.send(Message::Text("x".repeat(100_000).into())).await;
            }
            3 => {
                // Upgrade by hand, then vanish in the middle of a frame header.
                let Ok(mut tcp) = tokio::net::TcpStream::connect(server.running.addr).await else {
                    continue;
                };
                let request = format!(
                    "GET /ws?token={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                    server.token(&user)
                );
                let _ = tcp.write_all(request.as_bytes()).await;
                let _ = tcp.write_all(&[0x81, 0xFE, 0x01]).await;
            }
            _ => {
                let mut ws = server.raw(Some("forged.token.value")).await;
                let _ = ws
                    .send(Message::Text(r#"{"id":"a","type":"sync"}"#.into()))
                    .await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_drops_never_hurt_a_chatting_pair() {
    let server = Arc::new(support::start().await);
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let chaos: Vec<_> = (0..CHAOS_CLIENTS)
        .map(|n| tokio::spawn(misbehave(server.clone(), n)))
        .collect();

    let mut conversation = None;
    for i in 0..PAIR_MESSAGES {
        let (from, to) = if i % 2 == 0 {
            (&mut alice, &mut bob)
        } else {
            (&mut bob, &mut alice)
        };
        let target = to.user.clone();
        let sent = from.dm(&target, &format!("message {i}")).await;
        let got = to.expect("message").await;
        assert_eq!(
            got["message"]["body"],
            format!("message {i}"),
            "in order, nothing lost"
        );
        assert_eq!(got["message"]["id"], sent["id"]);
        conversation.get_or_insert(sent["conversation"].clone());
    }
    for task in chaos {
        task.await.expect("chaos client");
    }

    // Both sides have every message exactly once, in order.
    let conv = conversation.unwrap();
    for c in [&mut alice, &mut bob] {
        let h = c
            .ok(json!({"type": "history", "conversation": conv, "limit": 100}))
            .await;
        let bodies: Vec<_> = h["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"].clone())
            .collect();
        let expected: Vec<_> = (PAIR_MESSAGES - 100..PAIR_MESSAGES)
            .map(|i| json!(format!("message {i}")))
            .collect();
        assert_eq!(bodies, expected);
        assert_eq!(c.drain("message").await.len(), 0, "no duplicates");
    }

    // The server is healthy: the chaos sessions are all gone and a newcomer gets served.
    let hub = server.running.hub.clone();
    let mut waited = 0;
    while hub.sessions().live() > 2 {
        assert!(
            waited < 500,
            "{} sessions still open",
            hub.sessions().live()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    let mut newcomer = server.connect("newcomer").await;
    newcomer.ok(json!({"type": "sync"})).await;
}
