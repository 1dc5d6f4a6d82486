//! SIGTERM: every session is closed with 1001 and the process exits 0, promptly.

mod support;

use std::time::Duration;
use tokio::process::Command;

#[tokio::test]
async fn sigterm_closes_sessions_with_1001_and_exits_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let (mut child, addr) = support::spawn_binary(data.path(), "term-secret", &[]).await;

    let token = parley::auth::mint(b"term-secret", "alice", false, Duration::from_secs(60));
    let ws = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}"))
        .await
        .unwrap()
        .0;
    let mut alice = support::Client::open(ws).await;

    let status = Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let (code, reason) = alice.expect_close().await;
    assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits promptly")
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

/// Signal `sig` to the child.
async fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().unwrap().to_string();
    let status = Command::new("kill")
        .args([sig, &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn after_sigterm_no_new_session_is_accepted_even_while_sessions_drain() {
    let data = tempfile::tempdir().unwrap();
    let (mut child, addr) = support::spawn_binary(data.path(), "term-secret", &[]).await;
    let mut alice = support::connect_at(&addr, "term-secret", "alice").await;
    signal(&child, "-TERM").await;
    let (code, _) = alice.expect_close().await;
    assert_eq!(code, 1001);
    // A client reconnecting at once (the bundled one does, after a few ms) must not get a
    // session on the dying server: the listener is closed, or the upgrade refused.
    let token = parley::auth::mint(b"term-secret", "alice", false, Duration::from_secs(60));
    for _ in 0..20 {
        let url = format!("ws://{addr}/ws?token={token}");
        if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await {
            use futures::StreamExt;
            let first = tokio::time::timeout(support::PATIENCE, ws.next())
                .await
                .unwrap();
            let said_hello =
                matches!(&first, Some(Ok(m)) if m.to_text().is_ok_and(|t| t.contains("hello")));
            assert!(!said_hello, "a session opened after SIGTERM");
        }
    }
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits promptly")
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test]
async fn sighup_is_logged_and_the_server_keeps_serving() {
    let data = tempfile::tempdir().unwrap();
    let (child, addr) = support::spawn_binary(data.path(), "hup-secret", &[]).await;
    let mut alice = support::connect_at(&addr, "hup-secret", "alice").await;
    signal(&child, "-HUP").await;
    // The session lives on and the server answers requests and probes.
    alice.ok(serde_json::json!({"type": "sync"})).await;
    assert_eq!(support::http_get(&addr, "/readyz").await.0, 200);
}
