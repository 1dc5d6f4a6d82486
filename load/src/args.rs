//! The flags of a scenario run and what follows from them: the scenario, the server
//! under load, the group layout, and which flags do not fit together.

use anyhow::bail;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Parse a duration flag (`15s`, `500ms`, …).
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Groups of members sending to each other.
    Fanout,
    /// One-to-one conversations.
    Dm,
    /// Idle connections, held.
    Connect,
    /// Reads and recalls racing on the same messages.
    RecallRace,
}

/// Which server is under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// parley itself.
    Parley,
    /// The bare broadcast server.
    Baseline,
}

/// How a scenario is run.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Server to put under load.
    #[arg(long, value_enum, default_value = "parley")]
    pub target: Target,
    /// Store of the single parley the harness starts: `sqlite` (the default, as it is
    /// parley's: durable on disk, fsync on commit), or `memory`, only when asked.
    #[arg(long, value_enum)]
    pub store: Option<LocalStore>,
    /// WebSocket URL of a running server on loopback (`ws://127.0.0.1:PORT/ws` for
    /// parley, `ws://127.0.0.1:PORT` for the baseline); repeat it once per node of a parley
    /// cluster: sessions are dealt to the nodes in turn, so every group spans nodes.
    /// Without it the harness starts the server itself on a free port.
    #[arg(long)]
    pub url: Vec<String>,
    /// Process id of a server given by `--url` (repeat it for each), to read its CPU and
    /// memory.
    #[arg(long)]
    pub server_pid: Vec<u32>,
    /// Token secret of the parley given by `--url`.
    #[arg(long, env = "PARLEY_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Start N parley nodes on PostgreSQL and Redis (`--store postgres`) and deal the
    /// sessions to them in turn; 1 is one node on the same ledger and broker.
    #[arg(long)]
    pub nodes: Option<usize>,
    /// PostgreSQL for `--nodes` (`postgres://USER@127.0.0.1:PORT/DB`); without it the
    /// harness starts a throwaway one on a free loopback port.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Redis for `--nodes` (`redis://127.0.0.1:PORT`); without it the harness starts a
    /// throwaway one on a free loopback port.
    #[arg(long)]
    pub broker_url: Option<String>,
    /// Process id of PostgreSQL's postmaster, when the harness did not start it, to read
    /// what the ledger costs (it and its backends).
    #[arg(long)]
    pub postgres_pid: Option<u32>,
    /// Process id of Redis, when the harness did not start it, to read what the broker
    /// costs.
    #[arg(long)]
    pub redis_pid: Option<u32>,
    /// Connections (sessions) in all [default: fanout and dm 2000, connect 19000, recall-race 400].
    #[arg(long)]
    pub connections: Option<usize>,
    /// Groups (fanout) [default: connections / (members × sessions per user)].
    #[arg(long)]
    pub groups: Option<usize>,
    /// Users per group (fanout) [default: 10].
    #[arg(long)]
    pub members: Option<usize>,
    /// Live sessions per user (fanout, dm).
    #[arg(long, default_value_t = 1)]
    pub sessions_per_user: usize,
    /// Sends per second across all senders; 0: as fast as the server delivers, each
    /// sender keeping `--window` messages in flight.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Messages a sender may have in flight (sent but not yet delivered to every other
    /// session of its group) when `--rate` is 0.
    #[arg(long, default_value_t = 2)]
    pub window: u64,
    /// How long to send (or, for `connect`, to hold the connections).
    #[arg(long, value_parser = duration, default_value = "15s")]
    pub duration: Duration,
    /// Longest wait for the last deliveries after sending stops.
    #[arg(long, value_parser = duration, default_value = "10s")]
    pub drain: Duration,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 64)]
    pub body: usize,
    /// Loopback source addresses to spread client sockets over (127.0.0.2 upwards).
    #[arg(long, default_value_t = 8)]
    pub sources: usize,
    /// Connection handshakes in flight at once, per client process.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Keep notification frames on (members otherwise mute their group at setup, so each
    /// send costs one frame per recipient, as in the baseline).
    #[arg(long)]
    pub unmuted: bool,
    /// Client processes; 0: one, or as many as the open-file limit requires.
    #[arg(long, default_value_t = 0)]
    pub processes: usize,
    /// Most sessions one client process holds.
    #[arg(long, default_value_t = 15_000)]
    pub per_process: usize,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Draw throughput and latency percentiles over time into this SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// The store of a single parley started by the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LocalStore {
    /// Everything in memory.
    Memory,
    /// SQLite in a temporary data directory, parley's default.
    Sqlite,
}

/// Group layout of a run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Shape {
    /// Groups (pairs for dm and recall-race, single sessions for connect).
    pub groups: usize,
    /// Users per group.
    pub members: usize,
    /// Sessions per user.
    pub sessions_per_user: usize,
}

impl Shape {
    /// Sessions in all.
    pub fn connections(&self) -> usize {
        self.groups * self.members * self.sessions_per_user
    }
}

/// Work out the layout from the flags, each scenario with its defaults.
pub fn shape(scenario: Scenario, args: &RunArgs) -> anyhow::Result<Shape> {
    let spu = args.sessions_per_user.max(1);
    let c = args.connections;
    let shape = match scenario {
        Scenario::Fanout => {
            let members = match (args.members, c, args.groups) {
                (Some(m), _, _) => m,
                (None, Some(c), Some(g)) => c / (g * spu).max(1),
                _ => 10,
            };
            let groups = args
                .groups
                .unwrap_or_else(|| c.unwrap_or(2000) / (members * spu).max(1));
            Shape {
                groups,
                members,
                sessions_per_user: spu,
            }
        }
        Scenario::Dm => Shape {
            groups: c.unwrap_or(2000) / (2 * spu),
            members: 2,
            sessions_per_user: spu,
        },
        Scenario::RecallRace => Shape {
            groups: c.unwrap_or(400) / 4,
            members: 2,
            sessions_per_user: 2,
        },
        Scenario::Connect => Shape {
            groups: c.unwrap_or(19_000),
            members: 1,
            sessions_per_user: 1,
        },
    };
    if shape.groups == 0 || shape.members == 0 {
        bail!("no sessions to run: check --connections, --groups and --members");
    }
    if scenario == Scenario::Fanout && shape.members < 3 && shape.members * spu < 2 {
        bail!("a fan-out group needs at least two sessions");
    }
    if let Some(c) = c {
        if c != shape.connections() {
            bail!(
                "--connections {c} does not split into {} groups of {} members with {} sessions each",
                shape.groups,
                shape.members,
                spu
            );
        }
    }
    Ok(shape)
}

impl RunArgs {
    /// Refuse flags that do not fit together, before anything starts.
    pub fn check_servers(&self, target: Target) -> anyhow::Result<()> {
        if let Some(nodes) = self.nodes {
            if nodes == 0 {
                bail!("--nodes must be at least 1");
            }
            if target == Target::Baseline {
                bail!(
                    "the baseline is a single process with no ledger: --nodes is for --target parley"
                );
            }
            if !self.url.is_empty() {
                bail!("--nodes starts its own nodes: drop --url, or drop --nodes to load running ones");
            }
        } else if self.database_url.is_some() || self.broker_url.is_some() {
            bail!(
                "--database-url and --broker-url are for the nodes --nodes starts: add --nodes N"
            );
        }
        if self.store.is_some() && (self.nodes.is_some() || !self.url.is_empty()) {
            bail!("--store is for the single parley the harness starts: drop --nodes and --url");
        }
        if target == Target::Baseline && self.url.len() > 1 {
            bail!("the baseline's rooms do not span servers: give it one --url");
        }
        if self.server_pid.len() > self.url.len() {
            bail!("--server-pid names a server given by --url: one at most per --url");
        }
        for url in &self.url {
            crate::client::loopback_addr(url)?;
        }
        for url in self.database_url.iter().chain(&self.broker_url) {
            crate::client::loopback_service(url)?;
        }
        Ok(())
    }
}
