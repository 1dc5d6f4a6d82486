//! Servers under load: starting parley (alone or as cluster nodes) or the baseline on a
//! free loopback port, stopping them, and reading CPU time and memory from `/proc`.

use crate::run::LocalStore;
use crate::shard::{Scenario, Target};
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
            let secret = crate::wire::random_secret();
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
    let secret = crate::wire::random_secret();
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

/// CPU time and resident memory of a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// User plus system CPU time, in seconds.
    pub cpu_s: f64,
    /// Resident set size, in bytes.
    pub rss: u64,
}

/// The fields of `/proc/PID/stat` after the command name (which may itself hold spaces
/// and parentheses): state, ppid, …; utime is at 11.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split(' ').map(str::to_owned).collect())
}

fn ticks_to_s(fields: &[String], at: &[usize]) -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut sum = 0u64;
    for &i in at {
        sum += fields.get(i)?.parse::<u64>().ok()?;
    }
    Some(sum as f64 / ticks)
}

/// A `kB` figure of `/proc/PID/FILE`, in bytes.
/// A `kB` field of `/proc/PID/FILE`, in bytes.
pub(crate) fn kb_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Read a process's CPU time and RSS; `None` once it is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let fields = stat_fields(pid)?;
    Some(ProcSample {
        cpu_s: ticks_to_s(&fields, &[11, 12])?,
        rss: kb_field(pid, "status", "VmRSS:")?,
    })
}

/// A server made of a parent and its children (PostgreSQL's postmaster and backends): CPU
/// of all of them, those already reaped included, and their proportional set sizes
/// summed (RSS would count the shared buffers once per backend).
pub fn sample_tree(pid: u32) -> Option<ProcSample> {
    let fields = stat_fields(pid)?;
    // utime, stime, and the children's it has reaped: cutime, cstime.
    let mut cpu_s = ticks_to_s(&fields, &[11, 12, 13, 14])?;
    let memory =
        |p: u32| kb_field(p, "smaps_rollup", "Pss:").or_else(|| kb_field(p, "status", "VmRSS:"));
    let mut rss = memory(pid).unwrap_or(0);
    let parent = pid.to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(f) = stat_fields(child) else {
            continue;
        };
        if f.get(1) == Some(&parent) {
            cpu_s += ticks_to_s(&f, &[11, 12]).unwrap_or(0.0);
            rss += memory(child).unwrap_or(0);
        }
    }
    Some(ProcSample { cpu_s, rss })
}

/// The processes a run reads: the servers under load (the parley nodes, or the
/// baseline), and the cluster's PostgreSQL and Redis when known.
#[derive(Debug, Clone, Default)]
pub struct Watched {
    /// Servers under load; their figures are summed.
    pub servers: Vec<u32>,
    /// PostgreSQL's postmaster.
    pub postgres: Option<u32>,
    /// Redis.
    pub redis: Option<u32>,
}

/// One reading of every watched process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// The servers under load, summed (`None` when none could be read).
    pub servers: Option<ProcSample>,
    /// PostgreSQL, postmaster and backends.
    pub postgres: Option<ProcSample>,
    /// Redis.
    pub redis: Option<ProcSample>,
}

impl Watched {
    /// Read them all now.
    pub fn sample(&self) -> Usage {
        let servers = self
            .servers
            .iter()
            .filter_map(|&p| sample(p))
            .reduce(|a, b| ProcSample {
                cpu_s: a.cpu_s + b.cpu_s,
                rss: a.rss + b.rss,
            });
        Usage {
            servers,
            postgres: self.postgres.and_then(sample_tree),
            redis: self.redis.and_then(sample),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_its_own_process() {
        let s = super::sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss > 0);
        assert!(s.cpu_s >= 0.0);
    }

    #[test]
    fn a_tree_counts_its_children() {
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 2000000 ]; do i=$((i+1)); done; sleep 30",
            ])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let busy = loop {
            let busy = super::sample(child.id()).unwrap().cpu_s;
            if busy >= 0.1 || std::time::Instant::now() > deadline {
                break busy;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let alone = super::sample(std::process::id()).unwrap();
        let tree = super::sample_tree(std::process::id()).expect("own /proc entry");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(busy >= 0.1, "the child never got busy");
        assert!(
            tree.cpu_s >= alone.cpu_s + busy,
            "{tree:?} {alone:?} {busy}"
        );
        assert!(tree.rss > 0);
    }
}
