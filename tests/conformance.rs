//! The language-neutral conformance suite, run against a real server on a loopback port
//! with the short windows the suite waits out.

mod support;

use parley::config::default_limits;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parley_passes_the_conformance_suite() {
    let server = support::start_with(|c| {
        c.limits = default_limits();
        c.limits.recall_window_ms = 2_000;
        c.limits.inmail_delete_window_ms = 3_000;
        c.limits.recall_throttle_messages = 5;
        c.limits.recall_throttle_window_ms = 3_000;
        c.connections_per_ip_per_second = 50;
    })
    .await;
    let target = parley_conformance::Target::new(
        format!("ws://{}", server.running.addr),
        server.secret.clone(),
    );
    let scenarios = parley_conformance::shipped().expect("scenarios parse");
    let count = scenarios.len();
    let outcomes = parley_conformance::run(&target, scenarios, 8).await;
    let failures: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err().map(|e| format!("{}: {e}", o.file)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {count} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(count >= 40);
}
