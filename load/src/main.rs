//! `parley-load`: the fan-out stress harness for parley, and the bare broadcast baseline it
//! is measured against. Every run is bounded in count and time and targets loopback only.

#![deny(clippy::too_many_lines)]

mod args;
mod baseline;
mod browse;
mod check;
mod client;
mod compare;
mod hiccup;
mod plot;
mod report;
mod run;
mod sampling;
mod scenario;
mod seed;
mod servers;
mod setup;
mod shard;
mod spec;
mod stamp;
mod stats;
mod worker;

use args::{RunArgs, Scenario};
use clap::{Parser, Subcommand};
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

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::BaselineServer { listen } => runtime(baseline::serve(listen)).map(|()| 0),
        Command::Worker => runtime(worker::worker()).map(|()| 0),
        Command::Hiccups { duration } => {
            let h = hiccup::measure(duration);
            hiccup::show(&h);
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
        } => runtime(interruptible(compare::compare(scenario, repeat, run))),
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
    report::summarise(&report);
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
