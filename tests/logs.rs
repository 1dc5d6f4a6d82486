//! What the server's log says about a session, through the real binary: who connected from
//! where with what, for how long, and no terminal colour codes when the log is a file.

mod support;

use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn a_session_is_logged_with_its_address_agent_origin_and_duration_without_colour() {
    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["serve", "--listen", "127.0.0.1:0", "--secret", "log-secret"])
        .arg("--data")
        .arg(data.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = {
        use tokio::io::AsyncBufReadExt;
        let stdout = child.stdout.take().unwrap();
        let line = tokio::io::BufReader::new(stdout).lines().next_line().await;
        let line = line.unwrap().expect("the listening line");
        line.strip_prefix("listening on ").unwrap().to_owned()
    };

    let token = parley::auth::mint(b"log-secret", "alice", false, Duration::from_secs(60));
    let mut request = format!("ws://{addr}/ws?token={token}")
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("user-agent", "log-test-client/1.0".parse().unwrap());
    headers.insert("origin", format!("http://{addr}").parse().unwrap());
    let ws = tokio_tungstenite::connect_async(request).await.unwrap().0;
    let alice = support::Client::open(ws).await;
    alice.close().await;

    // The close line is written once the session has ended; wait for it.
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    let text = loop {
        let text = std::fs::read_to_string(&log_path).unwrap();
        if text.contains("session closed") || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file:\n{text}"
    );
    let opened = text
        .lines()
        .find(|l| l.contains("session opened"))
        .unwrap_or_else(|| panic!("no session opened line:\n{text}"));
    assert!(opened.contains("peer=127.0.0.1:"), "{opened}");
    assert!(opened.contains("log-test-client/1.0"), "{opened}");
    assert!(opened.contains(&format!("http://{addr}")), "{opened}");
    let closed = text
        .lines()
        .find(|l| l.contains("session closed"))
        .unwrap_or_else(|| panic!("no session closed line:\n{text}"));
    assert!(closed.contains("duration="), "{closed}");
    assert!(closed.contains("peer=127.0.0.1:"), "{closed}");
}
