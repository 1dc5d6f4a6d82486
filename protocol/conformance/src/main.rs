//! `parley-conformance`: run the conformance suite against a server, or against a parley
//! server it starts itself.

use clap::Parser;
use parley_conformance::{from_dir, run, shipped, Target};
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser)]
#[command(
    name = "parley-conformance",
    version,
    about = "Run the parley protocol conformance suite"
)]
struct Args {
    /// Server to test, e.g. ws://127.0.0.1:8080 (its WebSocket path must be /ws).
    #[arg(long, required_unless_present = "spawn")]
    url: Option<String>,
    /// The secret the server signs tokens with.
    #[arg(long, env = "PARLEY_SECRET", required_unless_present = "spawn")]
    secret: Option<String>,
    /// Start a parley server on a free loopback port with the short limits the suite needs.
    #[arg(long, conflicts_with = "url")]
    spawn: bool,
    /// The parley binary to spawn (default: next to this program).
    #[arg(long, env = "PARLEY_BIN")]
    parley: Option<PathBuf>,
    /// Only scenarios whose file name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Read scenarios from this directory instead of the built-in ones.
    #[arg(long)]
    scenarios: Option<PathBuf>,
    /// Scenarios run at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

/// Flags that give the spawned server windows short enough to wait out.
const SHORT_LIMITS: [&str; 8] = [
    "--recall-window",
    "2s",
    "--inmail-delete-window",
    "3s",
    "--recall-throttle-messages",
    "5",
    "--recall-throttle-window",
    "3s",
];

struct Spawned {
    child: tokio::process::Child,
    _data: tempfile::TempDir,
}

async fn spawn(binary: Option<PathBuf>, secret: &str) -> anyhow::Result<(String, Spawned)> {
    let binary = match binary {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("parley"),
    };
    let data = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(&binary)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--secret",
            secret,
            "--data",
        ])
        .arg(data.path())
        .args(SHORT_LIMITS)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot start {}: {e} (build it with `cargo build`)",
                binary.display()
            )
        })?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let line = lines
        .next_line()
        .await?
        .ok_or_else(|| anyhow::anyhow!("the server exited before listening"))?;
    let addr = line
        .strip_prefix("listening on ")
        .ok_or_else(|| anyhow::anyhow!("unexpected first line from the server: {line}"))?;
    Ok((format!("ws://{addr}"), Spawned { child, _data: data }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut scenarios = match &args.scenarios {
        Some(dir) => from_dir(dir)?,
        None => shipped()?,
    };
    if let Some(f) = &args.filter {
        scenarios.retain(|(name, _)| name.contains(f.as_str()));
    }
    let mut spawned = None;
    let target = if args.spawn {
        let secret = hex::encode(rand::random::<[u8; 16]>());
        let (url, child) = spawn(args.parley.clone(), &secret).await?;
        spawned = Some(child);
        Target {
            url,
            secret: secret.into_bytes(),
        }
    } else {
        Target {
            url: args.url.clone().expect("required by clap"),
            secret: args.secret.clone().expect("required by clap").into_bytes(),
        }
    };
    let outcomes = run(&target, scenarios, args.concurrency).await;
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    for o in &outcomes {
        match &o.result {
            Ok(()) => println!("ok   {}", o.file),
            Err(e) => println!("FAIL {}: {e}", o.file),
        }
    }
    println!("{} passed, {failed} failed", outcomes.len() - failed);
    if let Some(mut s) = spawned {
        let _ = s.child.kill().await;
    }
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
