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
