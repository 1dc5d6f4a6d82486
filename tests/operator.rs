//! The operator's HTTP endpoints on the WebSocket port: health, readiness and metrics.

mod support;

use serde_json::json;

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    support::http_get(addr, path).await
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = support::start().await;
    let addr = server.running.addr;
    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(get(addr, "/readyz").await, (200, "ready\n".into()));

    let (mut a, mut b) = server.connected_pair("alice", "bob").await;
    let m = a.dm("bob", "hi").await;
    let recall = json!({"type": "recall", "conversation": m["conversation"], "message": m["id"]});
    assert_eq!(b.err(recall.clone()).await, "not_sender");
    a.ok(recall).await;

    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "parley_connections_total",
        "parley_sessions 2",
        r#"parley_frames_in_total{type="send"} 1"#,
        r#"parley_frames_out_total{type="message"}"#,
        r#"parley_errors_total{code="not_sender"} 1"#,
        r#"parley_recalls_total{outcome="ok"} 1"#,
        r#"parley_recalls_total{outcome="not_sender"} 1"#,
        "parley_fanout_seconds_bucket",
        r#"parley_request_seconds_bucket{type="recall""#,
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
}
