//! `parley-load`: the fan-out stress harness for parley, and the bare broadcast baseline it
//! is measured against. Every run is bounded in count and time and targets loopback only.

mod args;
mod baseline;
mod browse;
mod check;
mod hiccup;
mod plot;
mod run;
mod sampling;
mod seed;
mod servers;
mod services;
mod shard;
mod stats;
mod wire;

use args::{RunArgs, Scenario, Target};
use clap::{Parser, Subcommand};
use run::Report;
use serde::Serialize;
use std::net::SocketAddr;

#[derive(Parser)]
#[command(
    name = "parley-load",
    version,
    about = "Load parley (or a bare broadcast baseline) and check that nothing is lost"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// C connections in G groups of M members, every member sending to its group.
    Fanout(RunArgs),
    /// Many one-to-one conversations.
    Dm(RunArgs),
    /// Ramp to C authenticated connections, hold them idle, measure the server's memory.
    Connect(RunArgs),
    /// Reads and recalls racing on the same messages under load; checks the SPEC outcome
    /// on every session.
    RecallRace(RunArgs),
    /// Run a scenario against the baseline, then against parley, and report parley's ratio.
    Compare {
        /// Scenario to compare.
        #[arg(value_enum)]
        scenario: Scenario,
        /// Alternate baseline and parley runs this many times each; the report's figures
        /// come from the pair with the median ratio, every pair is listed.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Write a realistic history straight into a data directory (no server running), so
    /// large-history figures take minutes.
    Seed(seed::SeedArgs),
    /// Users coming back to a long history: inbox, a page of history and a sync of missed
    /// changes each, timed, with the server's memory before and after (JSON on stdout).
    Browse(browse::BrowseArgs),
    /// The bare room-broadcast server (protocol in load/README.md).
    BaselineServer {
        /// Loopback address to listen on.
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: SocketAddr,
    },
    /// Check the machine before a latency benchmark: keep every CPU busy with the same
    /// piece of work and report how evenly the platform delivered it (JSON on stdout).
    Hiccups {
        /// How long to measure.
        #[arg(long, default_value = "10s", value_parser = args::duration)]
        duration: std::time::Duration,
    },
    /// A client process of a larger run (started by the harness itself).
    #[command(hide = true)]
    Worker,
}

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

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::BaselineServer { listen } => runtime(baseline::serve(listen)).map(|()| 0),
        Command::Worker => runtime(run::worker()).map(|()| 0),
        Command::Hiccups { duration } => {
            let h = hiccup::measure(duration);
            show_hiccups(&h);
            println!("{}", serde_json::to_string_pretty(&h).expect("serialises"));
            Ok(0)
        }
        Command::Seed(args) => seed::run(args).map(|()| 0),
        Command::Browse(args) => runtime(browse::run(args)).map(|()| 0),
        Command::Fanout(args) => runtime(interruptible(single(Scenario::Fanout, args))),
        Command::Dm(args) => runtime(interruptible(single(Scenario::Dm, args))),
        Command::Connect(args) => runtime(interruptible(single(Scenario::Connect, args))),
        Command::RecallRace(args) => runtime(interruptible(single(Scenario::RecallRace, args))),
        Command::Compare {
            scenario,
            repeat,
            run,
        } => runtime(interruptible(compare(scenario, repeat, run))),
    };
    match code {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("parley-load: {e:#}");
            std::process::exit(2);
        }
    }
}

fn runtime<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Run `f` until Ctrl-C or SIGTERM, then drop it: the servers and client processes it
/// started are killed and their temporary directories removed, which the default action
/// of those signals would leave behind.
async fn interruptible<T>(
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        done = f => done,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        _ = term.recv() => anyhow::bail!("terminated"),
    }
}

async fn single(scenario: Scenario, args: RunArgs) -> anyhow::Result<i32> {
    let report = run::run(scenario, args.target, &args).await?;
    summarise(&report);
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    if let Some(path) = &args.plot {
        let mut title = format!("{scenario:?} against {:?}", args.target);
        if args.nodes.is_some() || report.nodes > 1 {
            title.push_str(&format!(" on {} node(s)", report.nodes));
        }
        plot::draw(path, &title, &[(format!("{:?}", args.target), &report)])?;
    }
    Ok(if report.passed { 0 } else { 1 })
}

async fn compare(scenario: Scenario, repeat: usize, args: RunArgs) -> anyhow::Result<i32> {
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
        let baseline = run::run(scenario, Target::Baseline, &args).await?;
        summarise(&baseline);
        let parley = run::run(scenario, Target::Parley, &args).await?;
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
        runs.push((ratio, baseline, parley));
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

fn summarise(r: &Report) {
    let mb = |b: u64| b as f64 / 1048576.0;
    eprintln!(
        "{:?} vs {:?} on {} node(s): {} sessions ({} failed) in {} process(es); sent {} ({:.0}/s), delivered {} ({:.0}/s, {} across nodes)",
        r.scenario, r.target, r.nodes, r.connected, r.connect_failed, r.processes, r.sent,
        r.sends_per_s, r.delivered, r.delivered_per_s, r.delivered_across_nodes
    );
    let l = &r.latency_ms;
    eprintln!(
        "  latency ms: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}; connect ms: p50 {:.1} p99 {:.1}",
        l.p50, l.p90, l.p99, l.p99_9, l.max, r.connect_ms.p50, r.connect_ms.p99
    );
    if r.rate > 0.0 {
        let g = &r.send_lag_ms;
        eprintln!(
            "  of which the load generator's own send lag, ms: p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
            g.p50, g.p99, g.p99_9, g.max
        );
    }
    let s = &r.server;
    eprintln!(
        "  server: cpu {:.0}% ({:.2} µs/delivery), rss idle {:.1} MiB, ready {:.1} MiB, max {:.1} MiB, {:.0} B per connection; load cpu {:.0}%",
        s.cpu_percent,
        s.cpu_us_per_delivery,
        mb(s.rss_idle),
        mb(s.rss_ready),
        mb(s.rss_max),
        s.rss_per_connection,
        r.load_cpu_percent
    );
    for (name, service) in [("postgres", &r.postgres), ("redis", &r.redis)] {
        if let Some(f) = service {
            eprintln!(
                "  {name}: cpu {:.0}% ({:.2} µs/send, {:.2} µs/delivery), memory max {:.1} MiB",
                f.cpu_percent,
                f.cpu_us_per_send,
                f.cpu_us_per_delivery,
                mb(f.memory_max)
            );
        }
    }
    eprintln!(
        "  lost {} duplicated {} reordered {} inconsistent {}{}{}",
        r.lost,
        r.duplicated,
        r.reordered,
        r.inconsistent,
        if r.races.is_empty() {
            String::new()
        } else {
            format!(" races {:?}", r.races)
        },
        if r.errors.is_empty() {
            String::new()
        } else {
            format!(" errors {:?}", r.errors)
        },
    );
    for f in &r.failures {
        eprintln!("  failure: {f}");
    }
    eprintln!("  {}", if r.passed { "PASSED" } else { "FAILED" });
}

fn show_hiccups(h: &hiccup::Hiccups) {
    eprintln!(
        "machine: {} CPUs delivered {:.0}% of their best pace; {:.1}% of {} pieces of work took at least twice the best {:.2} ms (median {:.2}x, worst {:.1} ms)",
        h.cpus, 100.0 * h.capacity, 100.0 * h.slow_share, h.pieces, h.best_piece_ms, h.median_slowdown, h.worst_piece_ms
    );
}
