//! `parley-conformance`: run the conformance scenarios against a parley server.

// Functions stay short enough to read without scrolling (80 lines: clippy.toml).
#![deny(clippy::too_many_lines)]

use clap::Parser;
use parley_conformance::{embedded, load_dir, run_with, select, spawn, Options, Target};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "parley-conformance",
    version,
    about = "Run the parley protocol conformance scenarios against a server"
)]
struct Cli {
    /// Server to test, like ws://127.0.0.1:8080 (the path defaults to /ws). Give it
    /// several times for the nodes of one cluster: connections go to each in turn.
    #[arg(long, conflicts_with = "spawn", requires = "secret")]
    url: Vec<String>,
    /// Secret the server signs tokens with (needed with --url).
    #[arg(long, env = "PARLEY_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Start a parley server (from $PARLEY_BIN or next to this program) with short windows.
    #[arg(long)]
    spawn: bool,
    /// Run only scenarios whose name contains this text (repeatable: any of them).
    #[arg(long)]
    filter: Vec<String>,
    /// Read scenarios from this directory instead of the built-in ones.
    #[arg(long)]
    scenarios: Option<PathBuf>,
    /// Scenarios run at once.
    #[arg(long, default_value_t = 8)]
    jobs: usize,
    /// How long an expected frame may take, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    patience_ms: u64,
    /// Added to every window a scenario waits out, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    margin_ms: u64,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match main_with(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("parley-conformance: {e}");
            ExitCode::from(2)
        }
    }
}

async fn main_with(cli: Cli) -> Result<bool, String> {
    let scenarios = match &cli.scenarios {
        Some(dir) => load_dir(dir)?,
        None => embedded()?,
    };
    let scenarios = select(scenarios, &cli.filter);
    if cli.list {
        for s in &scenarios {
            println!("{}  {}", s.name, s.description);
        }
        return Ok(true);
    }
    if scenarios.is_empty() {
        return Err("no scenario matches the filter".into());
    }
    let options = Options {
        jobs: cli.jobs,
        patience: Duration::from_millis(cli.patience_ms),
        margin: Duration::from_millis(cli.margin_ms),
    };
    let mut urls = cli.url.into_iter();
    let (target, server) = match (cli.spawn, urls.next()) {
        (true, _) => {
            let bin = spawn::find_parley().map_err(|e| e.to_string())?;
            let server = spawn::spawn(&bin).await.map_err(|e| e.to_string())?;
            let target = Target::new(server.url.clone(), server.secret.clone());
            (target, Some(server))
        }
        (false, Some(url)) => {
            let secret = cli.secret.ok_or("--url needs --secret")?;
            let mut target = Target::new(url, secret.into_bytes());
            target.also = urls.collect();
            (target, None)
        }
        (false, None) => return Err("give --url URL --secret S, or --spawn".into()),
    };
    let report = run_with(&target, &scenarios, &options, |r| println!("{}", r.line())).await;
    if let Some(server) = server {
        server.stop().await;
    }
    println!("{}", report.summary());
    Ok(report.failed() == 0)
}
