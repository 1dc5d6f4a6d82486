//! SIGTERM: every session is closed with 1001 and the process exits 0, promptly.

mod support;

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn sigterm_closes_sessions_with_1001_and_exits_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--secret",
            "term-secret",
            "--data",
        ])
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines
        .next_line()
        .await
        .unwrap()
        .expect("the server prints its address");
    let addr = line
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_owned();

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
