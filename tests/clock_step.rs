mod support;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn recall_window_closes_when_the_clock_is_stepped() {
    let server = support::start().await;
    let (mut a, mut b) = server.connected_pair("alice", "bob").await;
    let m = a.dm("bob", "hi").await;
    b.expect("message").await;
    server.running.hub.clock().advance(Duration::from_secs(121));
    let closed = a.expect("recall_closed").await;
    assert_eq!(closed["reason"], "expired");
    let code = a
        .err(json!({"type":"recall","conversation": m["conversation"], "message": m["id"]}))
        .await;
    assert_eq!(code, "recall_window_closed");
}
