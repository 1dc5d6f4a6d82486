//! The harness end to end, small and short: each run starts its server, checks every
//! delivery and writes a report with the agreed keys.

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
