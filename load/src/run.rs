//! One run from start to report: start (or find) the server, split the sessions over
//! client processes, set up, start everyone together, show progress, and hand what was
//! measured to the report.

use crate::args::{self, RunArgs, Scenario, Shape, Target};
use crate::report::{Measured, Report, Setting};
use crate::sampling::{cpu_between, load_cpu, MemoryMax, ProcSample, Usage};
use crate::servers::Servers;
use crate::spec::ShardSpec;
use crate::stats::{Event, Percentiles, ShardResult, TickSum};
use crate::worker::{raise_file_limit, Clients};
use anyhow::{bail, Context};
use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Events from the client processes.
type Events = mpsc::UnboundedReceiver<Event>;

/// Run `scenario` against `target` and report.
pub async fn run(scenario: Scenario, target: Target, args: &RunArgs) -> anyhow::Result<Report> {
    let shape = args::shape(scenario, args)?;
    let processes = processes(&shape, args);
    let servers = Servers::open(scenario, target, args).await?;
    let setting = Setting {
        scenario,
        target,
        args,
        shape,
        processes,
        nodes: servers.urls.len(),
        watched: &servers.watched,
    };
    let outcome = drive(&setting, &servers).await;
    let died = match servers.started {
        Some(cluster) => cluster.stop().await,
        None => Vec::new(),
    };
    let mut report = outcome?;
    for log in died {
        report.passed = false;
        report.failures.push(format!(
            "a server died during the run; its log ends:\n{log}"
        ));
    }
    Ok(report)
}

/// Client processes for `shape`: as many as the open-file limit requires, at least the
/// asked number, at most one per group.
fn processes(shape: &Shape, args: &RunArgs) -> usize {
    let file_limit = raise_file_limit();
    let per_group = shape.members * shape.sessions_per_user;
    // Room for the runtime's own descriptors.
    let per_process = args
        .per_process
        .min(file_limit.saturating_sub(500) as usize)
        .max(per_group);
    args.processes
        .max(shape.connections().div_ceil(per_process))
        .clamp(1, shape.groups)
}

/// A run tag, so user names never collide with an earlier run on the same server.
fn tag() -> String {
    format!("{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// Deal the groups to the client processes, whole groups each.
fn specs(s: &Setting<'_>, servers: &Servers) -> Vec<ShardSpec> {
    let (args, shape) = (s.args, s.shape);
    let senders = match s.scenario {
        Scenario::Fanout | Scenario::Dm => shape.connections(),
        Scenario::RecallRace => shape.groups,
        Scenario::Connect => 1,
    };
    let tag = tag();
    let per_shard = shape.groups.div_ceil(s.processes);
    let mut first_group = 0;
    let mut specs = Vec::with_capacity(s.processes);
    for shard in 0..s.processes {
        let groups = per_shard.min(shape.groups - first_group);
        specs.push(ShardSpec {
            shard,
            scenario: s.scenario,
            target: s.target,
            urls: servers.urls.clone(),
            secret: servers.secret.clone(),
            tag: tag.clone(),
            first_group,
            groups,
            members: shape.members,
            sessions_per_user: shape.sessions_per_user,
            rate_per_sender: args.rate / senders as f64,
            window: args.window.max(1),
            duration_ms: args.duration.as_millis() as u64,
            drain_ms: args.drain.as_millis() as u64,
            body: args.body,
            sources: args.sources.max(1),
            connect_concurrency: args.connect_concurrency,
            unmuted: args.unmuted,
        });
        first_group += groups;
    }
    specs
}

async fn drive(s: &Setting<'_>, servers: &Servers) -> anyhow::Result<Report> {
    let watched = &servers.watched;
    let progress = Progress {
        tty: std::io::stderr().is_terminal(),
    };
    let rss_idle = watched.sample().servers.map_or(0, |s| s.rss);
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut clients = Clients::start(specs(s, servers), tx).await?;
    let connected = set_up(s, &mut events, &progress).await?;
    let ready = watched.sample();
    let load_pids = clients.pids();
    let load_before = load_cpu(&load_pids);
    clients.go().await?;
    let live = Live::new(s, &progress, &load_pids, ready);
    let live = live.follow(&mut events).await;
    let (end, load_end) = live
        .send_end
        .unwrap_or_else(|| (watched.sample(), load_cpu(&load_pids)));
    clients.wait().await;
    let measured = Measured {
        connected,
        rss_idle,
        ready,
        end,
        memory_max: live.memory_max,
        load_cpu_s: load_end - load_before,
        elapsed_s: live.elapsed_s,
        results: live.results,
        failures: live.failures,
        ticks: live.ticks,
        samples: live.samples,
    };
    Ok(Report::new(s, measured))
}

/// Wait until every client process is connected and ready; the sessions connected.
async fn set_up(s: &Setting<'_>, events: &mut Events, progress: &Progress) -> anyhow::Result<u64> {
    let total = s.shape.connections();
    let mut connected: HashMap<usize, u64> = HashMap::new();
    let mut ready = 0;
    let mut failures = Vec::new();
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while ready + failures.len() < s.processes {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("set-up took longer than 5 minutes")?
            .context("client processes vanished")?;
        match event {
            Event::Setup {
                shard,
                connected: c,
            } => {
                connected.insert(shard, c);
            }
            Event::Ready {
                shard,
                connected: c,
                ..
            } => {
                connected.insert(shard, c);
                ready += 1;
            }
            Event::Failed { shard, error } => failures.push(format!("client {shard}: {error}")),
            _ => {}
        }
        let now: u64 = connected.values().sum();
        progress.show(&format!(
            "{:?} vs {:?}: setting up, {now}/{total} sessions connected ({:.0}s)",
            s.scenario,
            s.target,
            started.elapsed().as_secs_f64()
        ));
    }
    if !failures.is_empty() {
        progress.done();
        bail!("set-up failed: {}", failures.join("; "));
    }
    Ok(connected.values().sum())
}

/// The run while it goes: each second as the client processes report it, then their
/// results.
struct Live<'a> {
    setting: &'a Setting<'a>,
    progress: &'a Progress,
    load_pids: &'a [u32],
    started: Instant,
    ticks: BTreeMap<u64, TickSum>,
    samples: Vec<(f64, ProcSample)>,
    memory_max: MemoryMax,
    /// The watched processes and the client processes' CPU when sending stopped.
    send_end: Option<(Usage, f64)>,
    results: Vec<ShardResult>,
    failures: Vec<String>,
    elapsed_s: f64,
}

impl<'a> Live<'a> {
    fn new(s: &'a Setting<'a>, progress: &'a Progress, load_pids: &'a [u32], ready: Usage) -> Self {
        let mut memory_max = MemoryMax::default();
        memory_max.add(&ready);
        Live {
            setting: s,
            progress,
            load_pids,
            started: Instant::now(),
            ticks: BTreeMap::new(),
            samples: ready.servers.map(|s| (0.0, s)).into_iter().collect(),
            memory_max,
            send_end: None,
            results: Vec::new(),
            failures: Vec::new(),
            elapsed_s: 0.0,
        }
    }

    /// Follow the events until every client process has finished, or the time is up.
    async fn follow(mut self, events: &mut Events) -> Self {
        let args = self.setting.args;
        let hard_stop = args.duration + args.drain + Duration::from_secs(120);
        let deadline = tokio::time::Instant::now() + hard_stop;
        while self.results.len() + self.failures.len() < self.setting.processes {
            let event = match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(_) => {
                    self.failures
                        .push("the run did not finish in time".to_owned());
                    break;
                }
            };
            match event {
                Event::Tick {
                    index,
                    sent,
                    delivered,
                    latency,
                    ..
                } => self.tick(index, sent, delivered, &latency),
                Event::Done { result, .. } => self.results.push(*result),
                Event::Failed { shard, error } => {
                    self.failures.push(format!("client {shard}: {error}"));
                }
                _ => {}
            }
        }
        self.progress.done();
        self.elapsed_s = self.started.elapsed().as_secs_f64();
        self
    }

    /// One client process's second `index`; once all have reported it, sample the
    /// servers and show it.
    fn tick(&mut self, index: u64, sent: u64, delivered: u64, latency: &[(u64, u64)]) {
        let s = self.setting;
        let sum = self.ticks.entry(index).or_default();
        sum.add(sent, delivered, latency);
        if sum.shards == s.processes {
            let p = Percentiles::of(sum.latency.as_ref().expect("just added"));
            let (sent, delivered) = (sum.sent, sum.delivered);
            let usage = s.watched.sample();
            self.memory_max.add(&usage);
            let server = usage.servers;
            if let Some(sample) = server {
                self.samples
                    .push((self.started.elapsed().as_secs_f64(), sample));
            }
            let cpu = cpu_between(&self.samples, 1.5);
            self.progress.show(&format!(
                "{:?} vs {:?} t={:>3}s sent {:>7}/s delivered {:>8}/s p50 {:>6.2} ms p99 {:>7.2} ms server cpu {:>4.0}% rss {:>6.1} MiB",
                s.scenario,
                s.target,
                index + 1,
                sent,
                delivered,
                p.p50,
                p.p99,
                cpu,
                server.map_or(0.0, |s| s.rss as f64 / 1048576.0),
            ));
        }
        if self.send_end.is_none() && index + 1 >= s.args.duration.as_secs().max(1) {
            self.send_end = Some((s.watched.sample(), load_cpu(self.load_pids)));
        }
    }
}

/// Progress on stderr: one rewritten line on a terminal, a line per update otherwise.
struct Progress {
    tty: bool,
}

impl Progress {
    fn show(&self, line: &str) {
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r{line}\x1b[K");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn done(&self) {
        if self.tty {
            eprintln!();
        }
    }
}
