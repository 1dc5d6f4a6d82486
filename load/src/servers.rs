//! Servers under load: starting parley (alone or as cluster nodes) or the baseline on a
//! free loopback port, or taking those given by `--url`, and stopping them.

use crate::args::{LocalStore, RunArgs, Scenario, Target};
use crate::sampling::Watched;
use anyhow::Context;
use parley_testkit::bound;
use parley_testkit::services::{Postgres, Redis, Service};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::process::Command;

/// A server this harness started.
pub struct Launched {
    server: parley_testkit::Launched,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id.
    pub pid: u32,
    /// Token secret (parley).
    pub secret: String,
    /// Its data and log, removed once it is stopped.
    _dir: tempfile::TempDir,
}

/// Where a parley node started by the harness keeps its state.
pub enum Backing<'a> {
    /// Memory (`--store memory`, where the binary has it): the single-node figures.
    Memory,
    /// SQLite in the node's temporary data directory (parley's default store).
    Sqlite,
    /// A cluster node on a shared PostgreSQL ledger and Redis broker channel.
    Cluster {
        /// `postgres://…` of the ledger.
        database_url: &'a str,
        /// `redis://…` of the broker.
        broker_url: &'a str,
        /// Broker channel, one per run so runs sharing a Redis never mix.
        channel: &'a str,
    },
}

/// Start the server `target` for `scenario` on 127.0.0.1, port 0.
pub async fn start(
    target: Target,
    scenario: Scenario,
    store: LocalStore,
) -> anyhow::Result<Launched> {
    match target {
        Target::Parley => {
            let secret = random_secret();
            let backing = match store {
                LocalStore::Memory => Backing::Memory,
                LocalStore::Sqlite => Backing::Sqlite,
            };
            start_parley(scenario, &secret, backing).await
        }
        Target::Baseline => {
            let mut cmd = bound(std::env::current_exe()?);
            cmd.args(["baseline-server", "--listen", "127.0.0.1:0"]);
            launch(cmd, tempdir()?, String::new()).await
        }
    }
}

/// A fresh random secret for a server the harness starts.
pub fn random_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn tempdir() -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("parley-load-").tempdir()
}

/// Start one parley on 127.0.0.1, port 0, signing tokens with `secret`.
pub async fn start_parley(
    scenario: Scenario,
    secret: &str,
    backing: Backing<'_>,
) -> anyhow::Result<Launched> {
    let dir = tempdir()?;
    let bin = parley_testkit::find_parley()?;
    let mut cmd = bound(&bin);
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(["--secret", secret])
        // The harness is one client address hammering the server: take the
        // per-user and per-address abuse limits out of the measurement.
        .args(["--requests-per-second", "0"])
        .args(["--connections-per-ip-per-second", "0"]);
    match backing {
        Backing::Memory => {
            let help = Command::new(&bin)
                .args(["serve", "--help"])
                .output()
                .await?;
            // Older builds have no --store and keep everything in memory anyway.
            if String::from_utf8_lossy(&help.stdout).contains("--store") {
                cmd.args(["--store", "memory"]);
            }
        }
        Backing::Sqlite => {
            cmd.args(["--store", "sqlite"]);
        }
        Backing::Cluster {
            database_url,
            broker_url,
            channel,
        } => {
            cmd.args(["--store", "postgres", "--database-url", database_url])
                .args(["--broker-url", broker_url, "--broker-channel", channel]);
        }
    }
    if scenario == Scenario::RecallRace {
        // Every round recalls in the same conversation: lift the daily allowance
        // and the anti-spam throttle so every race is a real one.
        cmd.args(["--recall-per-conversation", "1000000"])
            .args(["--recall-throttle-window", "0s"]);
    }
    cmd.env("RUST_LOG", "warn");
    launch(cmd, dir, secret.to_owned()).await
}

/// Spawn `cmd`, its log in `dir`, and read where it listens.
async fn launch(cmd: Command, dir: tempfile::TempDir, secret: String) -> anyhow::Result<Launched> {
    let log = dir.path().join("server.log");
    let server = parley_testkit::launch(cmd, &log, Duration::from_secs(30)).await?;
    Ok(Launched {
        addr: server.addr,
        pid: server.pid,
        server,
        secret,
        _dir: dir,
    })
}

/// Parley nodes sharing one ledger and broker, with the PostgreSQL and Redis this harness
/// started for them (none when their URLs were given).
pub struct Cluster {
    /// The nodes, in the order sessions are dealt to them.
    pub nodes: Vec<Launched>,
    /// PostgreSQL, when started here.
    pub postgres: Option<Service>,
    /// Redis, when started here.
    pub redis: Option<Service>,
}

/// Start `n` parley nodes for `scenario` on the given PostgreSQL and Redis, or on
/// throwaway ones started first.
pub async fn start_cluster(
    n: usize,
    scenario: Scenario,
    database_url: Option<&str>,
    broker_url: Option<&str>,
) -> anyhow::Result<Cluster> {
    let mut cluster = Cluster {
        nodes: Vec::new(),
        postgres: None,
        redis: None,
    };
    // On an error the services started so far are killed as `cluster` drops.
    let database_url = match database_url {
        Some(url) => url.to_owned(),
        None => cluster
            .postgres
            .insert(tokio::task::spawn_blocking(|| Postgres::default().start()).await??)
            .url
            .clone(),
    };
    let broker_url = match broker_url {
        Some(url) => url.to_owned(),
        None => {
            let redis = tokio::task::spawn_blocking(|| Redis::default().start()).await??;
            cluster.redis.insert(redis).url.clone()
        }
    };
    let secret = random_secret();
    let channel = format!("parley-load-{}", &secret[..12]);
    for _ in 0..n {
        let backing = Backing::Cluster {
            database_url: &database_url,
            broker_url: &broker_url,
            channel: &channel,
        };
        cluster
            .nodes
            .push(start_parley(scenario, &secret, backing).await?);
    }
    Ok(cluster)
}

impl Cluster {
    /// A lone server, with nothing shared.
    pub fn alone(server: Launched) -> Cluster {
        Cluster {
            nodes: vec![server],
            postgres: None,
            redis: None,
        }
    }

    /// Stop the nodes, then PostgreSQL and Redis; the end of the log of each node that
    /// had died before.
    pub async fn stop(self) -> Vec<String> {
        let several = self.nodes.len() > 1;
        let mut died = Vec::new();
        for (i, node) in self.nodes.into_iter().enumerate() {
            if let Some(log) = node.stop().await {
                died.push(if several {
                    format!("node {i}: {log}")
                } else {
                    log
                });
            }
        }
        for service in [self.postgres, self.redis].into_iter().flatten() {
            // Stopping waits for the server to exit: not on a runtime thread.
            let _ = tokio::task::spawn_blocking(move || service.stop()).await;
        }
        died
    }
}

impl Launched {
    /// Stop with SIGTERM, then SIGKILL if it lingers; returns the end of its log when it
    /// had died before.
    pub async fn stop(mut self) -> Option<String> {
        let died = self.server.child.try_wait().ok().flatten().is_some();
        if !died {
            // SAFETY: kill(2) on a child we started and have not reaped.
            unsafe {
                libc::kill(self.pid as i32, libc::SIGTERM);
            }
            if tokio::time::timeout(Duration::from_secs(10), self.server.child.wait())
                .await
                .is_err()
            {
                let _ = self.server.child.kill().await;
            }
        }
        died.then(|| self.server.log_tail(20))
    }
}

/// The servers of one run: given by `--url`, or started here.
pub struct Servers {
    /// One WebSocket URL per server; sessions are dealt to them in turn.
    pub urls: Vec<String>,
    /// Token secret (parley).
    pub secret: String,
    /// Processes whose CPU and memory the report reads.
    pub watched: Watched,
    /// What the harness started, to stop when the run ends.
    pub started: Option<Cluster>,
}

impl Servers {
    /// Start the run's servers, or take those given by `--url`.
    pub async fn open(
        scenario: Scenario,
        target: Target,
        args: &RunArgs,
    ) -> anyhow::Result<Servers> {
        args.check_servers(target)?;
        let ws_url = |addr| match target {
            Target::Parley => format!("ws://{addr}/ws"),
            Target::Baseline => format!("ws://{addr}"),
        };
        if let Some(n) = args.nodes {
            let cluster = start_cluster(
                n,
                scenario,
                args.database_url.as_deref(),
                args.broker_url.as_deref(),
            )
            .await?;
            let watched = Watched {
                servers: cluster.nodes.iter().map(|l| l.pid).collect(),
                postgres: cluster
                    .postgres
                    .as_ref()
                    .map(|s| s.pid)
                    .or(args.postgres_pid),
                redis: cluster.redis.as_ref().map(|s| s.pid).or(args.redis_pid),
            };
            return Ok(Servers {
                urls: cluster.nodes.iter().map(|l| ws_url(l.addr)).collect(),
                secret: cluster.nodes[0].secret.clone(),
                watched,
                started: Some(cluster),
            });
        }
        if args.url.is_empty() {
            let store = args.store.unwrap_or(LocalStore::Sqlite);
            let l = start(target, scenario, store).await?;
            return Ok(Servers {
                urls: vec![ws_url(l.addr)],
                secret: l.secret.clone(),
                watched: Watched {
                    servers: vec![l.pid],
                    ..Watched::default()
                },
                started: Some(Cluster::alone(l)),
            });
        }
        let secret = match target {
            Target::Parley => args
                .secret
                .clone()
                .context("--secret (or PARLEY_SECRET) is needed to mint tokens for --url")?,
            Target::Baseline => String::new(),
        };
        Ok(Servers {
            urls: args
                .url
                .iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .collect(),
            secret,
            watched: Watched {
                servers: args.server_pid.clone(),
                postgres: args.postgres_pid,
                redis: args.redis_pid,
            },
            started: None,
        })
    }
}
