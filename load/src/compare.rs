//! `compare`: a scenario against the baseline, then against parley, as many times as
//! asked, and parley's delivered frames per second as a ratio of the baseline's.

use crate::args::{RunArgs, Scenario, Target};
use crate::plot;
use crate::report::{summarise, Report};
use crate::run;
use serde::Serialize;

/// A `compare` report: parley's figures on top, both runs in full below.
#[derive(Serialize)]
struct Comparison<'a> {
    scenario: Scenario,
    delivered_per_s: f64,
    p99_ms: f64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    ratio_to_baseline: f64,
    passed: bool,
    /// Every (baseline, parley) pair when repeated, in the order run.
    pairs: Vec<Pair>,
    baseline: &'a Report,
    parley: &'a Report,
}

/// One baseline run and the parley run after it.
#[derive(Serialize)]
struct Pair {
    baseline_delivered_per_s: f64,
    parley_delivered_per_s: f64,
    ratio: f64,
    baseline_server_cpu_us_per_delivery: f64,
    parley_server_cpu_us_per_delivery: f64,
}

/// Run `scenario` against the baseline and parley, `repeat` pairs; the exit code.
pub async fn compare(scenario: Scenario, repeat: usize, args: RunArgs) -> anyhow::Result<i32> {
    if !args.url.is_empty() {
        anyhow::bail!("compare starts both servers itself; drop --url");
    }
    if args.nodes.is_some() {
        anyhow::bail!(
            "compare measures one parley against the one-process baseline; run a scenario \
             with --nodes on its own to load a cluster"
        );
    }
    let mut runs = Vec::new();
    for _ in 0..repeat.max(1) {
        runs.push(pair(scenario, &args).await?);
    }
    let passed = runs.iter().all(|(_, b, p)| b.passed && p.passed);
    let lost = runs.iter().map(|(_, b, p)| b.lost + p.lost).sum();
    let duplicated = runs
        .iter()
        .map(|(_, b, p)| b.duplicated + p.duplicated)
        .sum();
    let reordered = runs.iter().map(|(_, b, p)| b.reordered + p.reordered).sum();
    let pairs = runs
        .iter()
        .map(|(ratio, b, p)| Pair {
            baseline_delivered_per_s: b.delivered_per_s,
            parley_delivered_per_s: p.delivered_per_s,
            ratio: *ratio,
            baseline_server_cpu_us_per_delivery: b.server.cpu_us_per_delivery,
            parley_server_cpu_us_per_delivery: p.server.cpu_us_per_delivery,
        })
        .collect();
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| runs[a].0.total_cmp(&runs[b].0));
    let (ratio, baseline, parley) = &runs[order[order.len() / 2]];
    if runs.len() > 1 {
        let all: Vec<String> = runs.iter().map(|(r, _, _)| format!("{r:.2}")).collect();
        eprintln!("ratios {}; median {ratio:.2}", all.join(", "));
    }
    let comparison = Comparison {
        scenario,
        delivered_per_s: parley.delivered_per_s,
        p99_ms: parley.p99_ms,
        lost,
        duplicated,
        reordered,
        ratio_to_baseline: *ratio,
        passed,
        pairs,
        baseline,
        parley,
    };
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&comparison)? + "\n")?;
    }
    if let Some(path) = &args.plot {
        let title = format!("{scenario:?}: parley vs baseline (ratio {ratio:.2})");
        let runs = [
            ("baseline".to_owned(), baseline),
            ("parley".to_owned(), parley),
        ];
        plot::draw(path, &title, &runs)?;
    }
    Ok(if passed { 0 } else { 1 })
}

/// One baseline run and the parley run after it: (parley's ratio, baseline, parley).
async fn pair(scenario: Scenario, args: &RunArgs) -> anyhow::Result<(f64, Report, Report)> {
    let baseline = run::run(scenario, Target::Baseline, args).await?;
    summarise(&baseline);
    let parley = run::run(scenario, Target::Parley, args).await?;
    summarise(&parley);
    let ratio = if baseline.delivered_per_s > 0.0 {
        parley.delivered_per_s / baseline.delivered_per_s
    } else {
        0.0
    };
    eprintln!(
        "parley delivered {:.0}/s, baseline {:.0}/s: ratio {ratio:.2}",
        parley.delivered_per_s, baseline.delivered_per_s
    );
    Ok((ratio, baseline, parley))
}
