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

/// `promtool check metrics` on `text`: its complaints, or `None` when promtool is not
/// installed (the test command installs it; a bare `cargo test` may not have it).
fn promtool_complaints(text: &str) -> Option<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(if out.status.success() {
        said
    } else {
        format!("failed: {said}")
    })
}

#[tokio::test]
async fn every_family_is_there_with_help_from_the_start_and_promtool_finds_nothing() {
    let server = support::start().await;
    let addr = server.running.addr;
    let (_, fresh) = get(addr, "/metrics").await;
    for family in [
        "parley_connections_total",
        "parley_sessions",
        "parley_conversations_held",
        "parley_cache_entries_held",
        "parley_cache_reads_total",
        "parley_frames_in_total",
        "parley_frames_out_total",
        "parley_fanout_seconds",
        "parley_request_seconds",
        "parley_queue_overflows_total",
        "parley_errors_total",
        "parley_recalls_total",
        "parley_cluster_events_total",
        "parley_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            fresh.contains(&format!("# HELP {family} ")),
            "no help for {family}:\n{fresh}"
        );
    }
    assert!(fresh.contains(r#"le="10""#), "latency buckets reach 10 s");
    let version = env!("CARGO_PKG_VERSION");
    assert!(fresh.contains(&format!("parley_build_info{{version=\"{version}\"}} 1")));

    // Traffic the other test of this binary does not count (the recorder is the process's).
    let (mut a, _b) = server.connected_pair("carol", "dave").await;
    a.ok(json!({"type": "lookup", "user": "dave"})).await;
    let (_, loaded) = get(addr, "/metrics").await;
    for (when, text) in [("fresh", &fresh), ("after traffic", &loaded)] {
        match promtool_complaints(text) {
            Some(said) => assert!(said.trim().is_empty(), "promtool, {when}: {said}"),
            None => eprintln!("skipped promtool check ({when}): promtool is not installed"),
        }
    }
}

#[tokio::test]
async fn metrics_can_move_off_the_public_port() {
    let server =
        support::start_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let public = server.running.addr;
    let private = server.running.metrics_addr.expect("a metrics listener");
    assert_ne!(public, private);
    assert_eq!(get(public, "/metrics").await.0, 404);
    let (status, text) = get(private, "/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("# HELP parley_sessions "), "{text}");
    // The public port still serves everything else.
    assert_eq!(get(public, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(get(public, "/readyz").await, (200, "ready\n".into()));
}

#[tokio::test]
async fn refused_logins_count_by_reason_and_commits_are_timed() {
    let server = support::start().await;
    let addr = server.running.addr;
    let before = |text: &str, name: &str| {
        text.lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .find_map(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (_, start) = get(addr, "/metrics").await;
    let invalid = r#"parley_logins_refused_total{reason="invalid"}"#;
    let missing = r#"parley_logins_refused_total{reason="missing"}"#;
    let commits = "parley_store_commit_seconds_count";
    let (invalid0, missing0, commits0) = (
        before(&start, invalid),
        before(&start, missing),
        before(&start, commits),
    );
    let (frames, code, _) = support::refused(server.raw(Some("not-a-token")).await).await;
    assert_eq!(code, 1008, "{frames:?}");
    let (_, code, _) = support::refused(server.raw(None).await).await;
    assert_eq!(code, 1008);
    let (mut a, _b) = server.connected_pair("frank", "grace").await;
    a.dm("grace", "timed").await;
    let (_, after) = get(addr, "/metrics").await;
    // Other tests of this binary share the recorder: at least ours, perhaps more.
    assert!(before(&after, invalid) >= invalid0 + 1.0, "{after}");
    assert!(before(&after, missing) >= missing0 + 1.0, "{after}");
    assert!(
        before(&after, commits) >= commits0 + 3.0,
        "connect, accept and send: {after}"
    );
}

/// The metric names an expression mentions (`parley_…`, `process_…`), a histogram's
/// `_bucket`, `_count` and `_sum` series named by their family.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (at, _) in expr.match_indices(['p']) {
        let rest = &expr[at..];
        if !(rest.starts_with("parley_") || rest.starts_with("process_")) {
            continue;
        }
        if at > 0 && expr.as_bytes()[at - 1].is_ascii_alphanumeric() {
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..end];
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.push(family.to_owned());
    }
    names
}

#[tokio::test]
async fn the_grafana_dashboard_queries_only_families_parley_exports() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid JSON");
    let server = support::start().await;
    let (_, fresh) = get(server.running.addr, "/metrics").await;
    let exported: Vec<&str> = fresh
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP ")?.split_whitespace().next())
        .collect();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("an expression");
            for name in metric_names(expr) {
                // Families set only on a cluster node with a broker are described, not shown.
                if name == "parley_broker_reachable" {
                    continue;
                }
                assert!(
                    exported.contains(&name.as_str()),
                    "{:?} queries {name}, not exported",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 20, "the dashboard queries {queried} series");
}
