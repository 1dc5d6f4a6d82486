mod support;
use serde_json::json;

#[tokio::test]
async fn hello_then_direct_message() {
    let server = support::start().await;
    let (mut a, mut b) = server.connected_pair("alice", "bob").await;
    assert_eq!(a.hello["limits"]["recall_window_ms"], 120000);
    let m = a.dm("bob", "hi").await;
    let got = b.expect("message").await;
    assert_eq!(got["message"]["id"], m["id"]);
    assert_eq!(got["message"]["body"], "hi");
    let code = b
        .err(json!({"type":"recall","conversation": m["conversation"], "message": m["id"]}))
        .await;
    assert_eq!(code, "not_sender");
}
