//! The client against a scripted WebSocket server on a loopback port: answers found by
//! id past other frames, unclaimed frames kept, and a wait that fails says why.

use futures::{SinkExt, StreamExt};
use parley_testkit::{ClientError, Session};
use serde_json::json;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// A server that greets, answers the first request after an unrelated frame, then closes
/// with 1008 once it reads anything more.
async fn scripted() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let text = |v: serde_json::Value| Message::Text(v.to_string().into());
        ws.send(text(json!({"type": "hello"}))).await.unwrap();
        let Some(Ok(Message::Text(request))) = ws.next().await else {
            return;
        };
        let id = serde_json::from_str::<serde_json::Value>(&request).unwrap()["id"].clone();
        ws.send(text(json!({"type": "typing"}))).await.unwrap();
        ws.send(text(json!({"type": "ack", "id": "someone-else"})))
            .await
            .unwrap();
        ws.send(text(json!({"type": "ack", "id": id, "result": {}})))
            .await
            .unwrap();
        let _ = ws.next().await;
        let close = CloseFrame {
            code: CloseCode::Policy,
            reason: "enough".into(),
        };
        let _ = ws.send(Message::Close(Some(close))).await;
        while ws.next().await.is_some() {}
    });
    url
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

#[tokio::test]
async fn an_answer_is_found_by_its_id_and_other_frames_stay_unclaimed() {
    let mut s = Session::open(&scripted().await).await.unwrap();
    let hello = s.claim(soon(), "hello", |f| f["type"] == "hello").await;
    assert_eq!(hello.unwrap()["type"], "hello");
    let answer = s
        .request(&json!({"type": "lookup", "id": "r1"}), soon())
        .await
        .unwrap();
    assert_eq!(answer["id"], "r1");
    let left: Vec<_> = s.unclaimed().cloned().collect();
    assert_eq!(
        left,
        vec![
            json!({"type": "typing"}),
            json!({"type": "ack", "id": "someone-else"})
        ]
    );
    assert_eq!(s.take(|f| f["type"] == "typing").len(), 1);
    assert_eq!(s.unclaimed().count(), 1, "take claims what it returns");
}

#[tokio::test]
async fn a_wait_that_times_out_or_outlives_the_session_says_which() {
    let mut s = Session::open(&scripted().await).await.unwrap();
    let short = Instant::now() + Duration::from_millis(200);
    match s.claim(short, "a receipt", |f| f["type"] == "read").await {
        Err(ClientError::Timeout { waiting_for, .. }) => assert_eq!(waiting_for, "a receipt"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    s.request(&json!({"id": "r1"}), soon()).await.unwrap();
    s.send_text("anything").await.unwrap();
    match s.claim(soon(), "a receipt", |f| f["type"] == "read").await {
        Err(ClientError::Closed { code, reason, .. }) => {
            assert_eq!((code, reason.as_str()), (1008, "enough"))
        }
        other => panic!("expected the close, got {other:?}"),
    }
    assert_eq!(s.closed, Some((1008, "enough".to_owned())));
    assert_eq!(
        s.frames.len(),
        4,
        "every frame received is kept: {:?}",
        s.frames
    );
}
