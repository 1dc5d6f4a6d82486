//! The WebSocket closing handshake (RFC 6455 §5.5.1, §7): a client's Close is answered with
//! a Close, and when the server closes a session the code reaches a client that is still
//! sending, in tungstenite and in a second client library (Node's WebSocket, undici).

mod support;

use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use support::{TestServer, PATIENCE};
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
use tokio_tungstenite::tungstenite::Message;

/// Trials per case; the issue asks that at least 95 of 100 see the code.
const TRIALS: usize = 100;
/// Trials that run at once.
const AT_ONCE: usize = 10;

/// What a client saw at the end: the close code, or 1006 when the connection ended without
/// a Close frame (a reset, or the stream cut short). The client is one task that sends in
/// bursts and reads between them, as a busy client does: while it writes, the server's Close
/// waits in its receive buffer, where a reset would discard it.
async fn close_code_while_sending(server: &TestServer, user: &str, first: Message) -> u16 {
    use futures::FutureExt;
    let mut ws = server.raw(Some(&server.token(user))).await;
    let mut sending = ws.send(first).await.is_ok();
    // Bounded: the server cuts the session off long before.
    for burst in 0..400 {
        for i in 0..50 {
            let id = format!("s{burst}-{i}");
            let request = json!({"id": id, "type": "lookup", "user": "x"});
            sending = sending && ws.send(Message::text(request.to_string())).await.is_ok();
        }
        while let Some(next) = ws.next().now_or_never() {
            match next {
                Some(Ok(Message::Close(frame))) => return frame.map_or(1005, |f| f.code.into()),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return 1006,
            }
        }
        if !sending {
            // The socket refuses writes: what is left to read is the end.
            let end = tokio::time::timeout(PATIENCE, ws.next()).await;
            return match end.expect("the end within patience") {
                Some(Ok(Message::Close(frame))) => frame.map_or(1005, |f| f.code.into()),
                _ => 1006,
            };
        }
        tokio::task::yield_now().await;
    }
    panic!("{user} was never closed")
}

/// Run [`TRIALS`] of `trial`, [`AT_ONCE`] at a time: how many saw `want`, and what the others saw.
async fn trials<F, Fut>(want: u16, trial: F) -> (usize, Vec<u16>)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let mut codes = Vec::new();
    for batch in (0..TRIALS).collect::<Vec<_>>().chunks(AT_ONCE) {
        let round = batch.iter().map(|&i| trial(i));
        codes.extend(futures::future::join_all(round).await);
    }
    let seen = codes.iter().filter(|&&c| c == want).count();
    eprintln!("{seen} of {TRIALS} trials saw {want}");
    (seen, codes.into_iter().filter(|&c| c != want).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_is_answered_with_a_close_echoing_its_code() {
    let server = support::start().await;
    for i in 0..20 {
        let mut ws = server.raw(Some(&server.token(&format!("leaver{i}")))).await;
        let hello = ws.next().await.unwrap().unwrap();
        assert!(hello.to_text().unwrap().contains("hello"));
        let bye = CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        };
        ws.send(Message::Close(Some(bye))).await.unwrap();
        let answer = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap();
        match answer {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
            other => panic!("a Close answered with {other:?}"),
        }
        // And then the connection ends cleanly, with no reset.
        let end = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap();
        assert!(end.is_none(), "after the handshake: {end:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_that_keeps_sending_still_gets_1008() {
    let server = support::start_limits(|l| {
        l.requests_per_second = 5;
        l.request_burst = 5;
    })
    .await;
    let server = &server;
    let (seen, others) = trials(1008, |i| async move {
        let first = Message::text(json!({"type": "sync"}).to_string());
        close_code_while_sending(server, &format!("flooder{i}"), first).await
    })
    .await;
    assert!(
        seen >= 95,
        "{seen} of {TRIALS} saw 1008; the others saw {others:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_an_oversized_frame_and_keeps_sending_still_gets_1009() {
    let server = support::start_limits(|l| {
        l.max_frame_bytes = 4096;
        l.requests_per_second = 0;
    })
    .await;
    let server = &server;
    let (seen, others) = trials(1009, |i| async move {
        let huge = Message::text("x".repeat(64 * 1024));
        close_code_while_sending(server, &format!("big{i}"), huge).await
    })
    .await;
    assert!(
        seen >= 95,
        "{seen} of {TRIALS} saw 1009; the others saw {others:?}"
    );
}

/// A script for Node's built-in WebSocket (undici, not tungstenite): close at once, or flood
/// until closed; prints the close event's code and whether it was clean.
const NODE_CLIENT: &str = r#"
const [url, mode] = process.argv.slice(1);
const ws = new WebSocket(url);
let n = 0;
ws.onmessage = () => {
  if (mode === "close") { ws.close(1000, "done"); return; }
  const flood = () => {
    if (ws.readyState !== WebSocket.OPEN || n > 20000) return;
    for (let i = 0; i < 50; i++) ws.send(JSON.stringify({ id: `n${n++}`, type: "lookup", user: "x" }));
    setImmediate(flood);
  };
  flood();
};
ws.onclose = (e) => { console.log(JSON.stringify({ code: e.code, clean: e.wasClean })); process.exit(0); };
setTimeout(() => { console.log("timeout"); process.exit(1); }, 10000);
"#;

/// Run [`NODE_CLIENT`] against `url` in `mode`: the close event it saw, or `None` when this
/// machine has no Node with a WebSocket client.
async fn node_client(url: &str, mode: &str) -> Option<serde_json::Value> {
    let probe = tokio::process::Command::new("node")
        .args([
            "--experimental-websocket",
            "-e",
            "typeof WebSocket === 'function' || process.exit(3)",
        ])
        .output()
        .await
        .ok()?;
    if !probe.status.success() {
        return None;
    }
    let out = tokio::process::Command::new("node")
        .args(["--experimental-websocket", "-e", NODE_CLIENT, url, mode])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("the node client ends by itself")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    Some(serde_json::from_str(text.trim()).unwrap_or_else(|_| panic!("node printed {text:?}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_is_not_tungstenite_closes_cleanly_and_hears_the_flood_code() {
    let server = support::start_limits(|l| {
        l.requests_per_second = 5;
        l.request_burst = 5;
    })
    .await;
    let url = |user: &str| {
        format!(
            "ws://{}/ws?token={}",
            server.running.addr,
            server.token(user)
        )
    };
    let Some(closed) = node_client(&url("noder"), "close").await else {
        eprintln!("skipped: no `node` with a WebSocket client on this machine");
        return;
    };
    assert_eq!(closed, json!({"code": 1000, "clean": true}));
    for i in 0..10 {
        let flooded = node_client(&url(&format!("nodeflood{i}")), "flood")
            .await
            .unwrap();
        assert_eq!(flooded, json!({"code": 1008, "clean": true}));
    }
}

/// Send `request` raw to the server: the status line and headers of its answer.
async fn raw_answer(server: &TestServer, request: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.running.addr)
        .await
        .unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, tcp.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[tokio::test]
async fn a_request_that_is_not_an_upgrade_is_told_what_is_wrong() {
    let server = support::start().await;
    let (status, body) = support::http_get(server.running.addr, "/ws").await;
    assert_eq!(status, 400);
    assert!(body.contains("upgrade to websocket"), "{body}");

    let ask = |version: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: parley\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n\r\n"
        )
    };
    // RFC 6455 §4.4: an unknown version gets 426 and the version the server speaks.
    let answer = raw_answer(&server, ask("8")).await.to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 426"), "{answer}");
    assert!(answer.contains("sec-websocket-version: 13"), "{answer}");
    // The sample handshake of RFC 6455 §1.3 gets its accept key.
    let answer = raw_answer(&server, ask("13")).await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(answer.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{answer}");
}
