//! The harness end to end, small and short: each run starts its servers (a cluster's
//! PostgreSQL and Redis included), checks every delivery and writes a report with the
//! agreed keys.

#![deny(clippy::too_many_lines)]

use std::path::PathBuf;
use std::process::Command;

fn harness() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_parley-load"))
}

/// Run `parley-load` with `args` plus a report file; returns the exit success and report.
fn run(args: &[&str]) -> (bool, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let plot = dir.path().join("plot.svg");
    let mut cmd = Command::new(harness());
    cmd.args(args)
        .arg("--report")
        .arg(&report)
        .arg("--plot")
        .arg(&plot);
    if std::env::var_os("PARLEY_BIN").is_none() {
        let parley = harness().with_file_name("parley");
        assert!(
            parley.exists(),
            "build the parley binary first (scripts/test.sh does): {}",
            parley.display()
        );
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no report ({e}); stderr:\n{stderr}"));
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg"), "not an SVG");
    (out.status.success(), serde_json::from_str(&text).unwrap())
}

/// Run `parley-load` with `args`, expecting it to refuse them before starting anything:
/// what it said.
fn refused(args: &[&str]) -> String {
    let out = Command::new(harness()).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

fn assert_clean(report: &serde_json::Value) {
    for key in ["lost", "duplicated", "reordered"] {
        assert_eq!(report[key], 0, "{key} in {report:#}");
    }
    assert!(report["delivered_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["p99_ms"].as_f64().is_some());
}

#[test]
fn compare_fanout_reports_a_ratio() {
    let (ok, report) = run(&[
        "compare",
        "fanout",
        "--connections",
        "40",
        "--groups",
        "4",
        "--members",
        "10",
        "--duration",
        "1s",
    ]);
    assert!(ok, "{report:#}");
    assert_clean(&report);
    assert!(report["ratio_to_baseline"].as_f64().unwrap() > 0.0);
    assert_eq!(report["baseline"]["target"], "baseline");
    assert_eq!(report["parley"]["target"], "parley");
    assert_eq!(report["parley"]["connected"], 40);
}

#[test]
fn recall_races_have_one_winner_everywhere() {
    let (ok, report) = run(&["recall-race", "--connections", "16", "--duration", "1s"]);
    assert!(ok, "{report:#}");
    assert_clean(&report);
    assert_eq!(report["inconsistent"], 0);
    let races = &report["races"];
    assert!(races["races"].as_u64().unwrap() > 0);
    assert_eq!(
        races["races"].as_u64().unwrap(),
        races["recall_won"].as_u64().unwrap() + races["read_won"].as_u64().unwrap()
    );
}

#[test]
fn connections_are_held_across_client_processes() {
    let (ok, report) = run(&[
        "connect",
        "--connections",
        "60",
        "--processes",
        "2",
        "--duration",
        "1s",
    ]);
    assert!(ok, "{report:#}");
    assert_eq!(report["connected"], 60);
    assert_eq!(report["processes"], 2);
    assert!(report["server"]["rss_per_connection"].as_f64().unwrap() > 0.0);
}

#[test]
fn every_session_of_a_user_gets_every_message() {
    let (ok, report) = run(&[
        "fanout",
        "--sessions-per-user",
        "2",
        "--connections",
        "40",
        "--groups",
        "4",
        "--members",
        "5",
        "--duration",
        "1s",
    ]);
    assert!(ok, "{report:#}");
    assert_clean(&report);
    assert_eq!(report["acked"], report["sent"]);
}

#[test]
fn fanout_across_two_nodes_loses_nothing() {
    // PostgreSQL and Redis are started by the harness itself; a long drain (it ends as soon
    // as everything has arrived) keeps a slow, shared machine from turning into losses.
    let (ok, report) = run(&[
        "fanout",
        "--nodes",
        "2",
        "--connections",
        "40",
        "--groups",
        "4",
        "--members",
        "10",
        "--duration",
        "3s",
        "--drain",
        "60s",
    ]);
    assert!(ok, "{report:#}");
    assert_clean(&report);
    assert_eq!(report["nodes"], 2);
    assert_eq!(report["connected"], 40);
    assert_eq!(report["acked"], report["sent"]);
    assert_eq!(report["server"]["pids"].as_array().unwrap().len(), 2);
    // Sessions alternate between the nodes: five of a sender's nine fellow members are on
    // the other node, so over half of all deliveries crossed the broker.
    let delivered = report["delivered"].as_u64().unwrap();
    let across = report["delivered_across_nodes"].as_u64().unwrap();
    assert!(across * 2 > delivered, "{across} of {delivered} crossed");
    assert!(report["postgres"]["cpu_us_per_send"].as_f64().unwrap() > 0.0);
    assert!(report["redis"]["memory_max"].as_u64().unwrap() > 0);
    // The run's PostgreSQL and Redis are gone with it.
    for service in ["postgres", "redis"] {
        let pid = report[service]["pid"].as_u64().unwrap();
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{service} ({pid}) outlived the run"
        );
    }
}

#[test]
fn cluster_flags_that_do_not_fit_are_refused() {
    let said = refused(&["fanout", "--nodes", "2", "--target", "baseline"]);
    assert!(said.contains("--nodes is for --target parley"), "{said}");
    let said = refused(&["fanout", "--nodes", "0"]);
    assert!(said.contains("at least 1"), "{said}");
    let said = refused(&["fanout", "--broker-url", "redis://127.0.0.1:6379"]);
    assert!(said.contains("add --nodes"), "{said}");
    let said = refused(&[
        "fanout",
        "--nodes",
        "1",
        "--database-url",
        "postgres://parley@192.0.2.1:5432/parley",
    ]);
    assert!(said.contains("loopback"), "{said}");
    let said = refused(&["compare", "fanout", "--nodes", "2"]);
    assert!(said.contains("--nodes on its own"), "{said}");
}
