//! One run from start to report: start (or find) the server, split the sessions over
//! client processes, set up, start everyone together, show progress, merge the results
//! and judge them.

use crate::args::{self, LocalStore, RunArgs, Scenario, Shape, Target};
use crate::sampling::{cpu_between, load_cpu, nearest, MemoryMax, ProcSample, Usage};
use crate::servers::Servers;
use crate::shard::{self, ShardSpec};
use crate::stats::{self, Event, Percentiles, ShardResult};
use anyhow::{bail, Context};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

/// One second of a run, all client processes merged.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Seconds since the start (end of the interval).
    pub t: u64,
    /// Sends in the second.
    pub sent_per_s: u64,
    /// Deliveries in the second.
    pub delivered_per_s: u64,
    /// Latency percentiles of the second, in ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p99_9_ms: f64,
    /// Server CPU in the second, percent of one core.
    pub server_cpu_percent: f64,
    /// Server resident memory, bytes.
    pub server_rss: u64,
}

/// The server's resources over a run, summed over its nodes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerFigures {
    /// Process ids, one per node, when known.
    pub pids: Vec<u32>,
    /// Mean CPU while sending (or holding), percent of one core.
    pub cpu_percent: f64,
    /// RSS before any client connected.
    pub rss_idle: u64,
    /// RSS once every session was set up.
    pub rss_ready: u64,
    /// Largest RSS seen.
    pub rss_max: u64,
    /// (RSS once set up − RSS before) / sessions connected.
    pub rss_per_connection: f64,
    /// Server CPU time per delivered frame while sending, microseconds: unlike
    /// frames per second, this barely moves when other work shares the machine.
    pub cpu_us_per_delivery: f64,
    /// Server CPU time per send while sending, microseconds.
    pub cpu_us_per_send: f64,
}

/// What a cluster's PostgreSQL or Redis cost over a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceFigures {
    /// Process id (PostgreSQL: the postmaster, whose backends are counted with it).
    pub pid: u32,
    /// Mean CPU while sending, percent of one core.
    pub cpu_percent: f64,
    /// CPU time per send while sending, microseconds.
    pub cpu_us_per_send: f64,
    /// CPU time per delivered frame while sending, microseconds.
    pub cpu_us_per_delivery: f64,
    /// Largest memory seen, bytes (PostgreSQL: proportional set sizes summed).
    pub memory_max: u64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario.
    pub scenario: Scenario,
    /// Server kind.
    pub target: Target,
    /// Servers (parley nodes) the sessions were dealt to.
    pub nodes: usize,
    /// The store of the parley the harness started (`sqlite`, `memory`, or `postgres` for
    /// nodes); absent for the baseline and for servers given by `--url`.
    pub store: Option<&'static str>,
    /// Layout.
    pub shape: Shape,
    /// Sessions asked for.
    pub connections: usize,
    /// Sessions connected.
    pub connected: u64,
    /// Connection attempts that failed.
    pub connect_failed: u64,
    /// Client processes.
    pub processes: usize,
    /// Send rate asked for (0: closed loop).
    pub rate: f64,
    /// In-flight window per sender (closed loop).
    pub window: u64,
    /// Sending (or holding) time, seconds.
    pub duration_s: f64,
    /// Body bytes.
    pub body_bytes: usize,
    /// Members muted their conversation (no notification frames).
    pub muted: bool,
    /// Messages sent.
    pub sent: u64,
    /// Sends per second.
    pub sends_per_s: f64,
    /// Messages delivered in all.
    pub delivered: u64,
    /// Deliveries per second while sending.
    pub delivered_per_s: f64,
    /// Deliveries to a session on another node than the sender's: frames that crossed
    /// the broker.
    pub delivered_across_nodes: u64,
    /// Deliveries the sends called for.
    pub expected: u64,
    /// Sends acknowledged (parley).
    pub acked: u64,
    /// Other frames received.
    pub other_frames: u64,
    /// Send→delivery latency, ms.
    pub latency_ms: Percentiles,
    /// p99 send→delivery latency, ms.
    pub p99_ms: f64,
    /// Connect→greeting latency, ms.
    pub connect_ms: Percentiles,
    /// How late scheduled sends left the load generator (`--rate` runs): the part of the
    /// latency the generator itself added.
    pub send_lag_ms: Percentiles,
    /// Deliveries missing after the drain.
    pub lost: u64,
    /// Deliveries that arrived twice.
    pub duplicated: u64,
    /// Deliveries behind a later one of the same conversation.
    pub reordered: u64,
    /// Read/recall races with an outcome the SPEC forbids.
    pub inconsistent: u64,
    /// Races run, and their winners.
    pub races: BTreeMap<String, u64>,
    /// Errors by code.
    pub errors: BTreeMap<String, u64>,
    /// The server's resources.
    pub server: ServerFigures,
    /// The cluster's PostgreSQL (postmaster and backends), when known.
    pub postgres: Option<ServiceFigures>,
    /// The cluster's Redis, when known.
    pub redis: Option<ServiceFigures>,
    /// CPU of the client processes, percent of one core.
    pub load_cpu_percent: f64,
    /// Client CPU time per delivered frame, microseconds.
    pub load_cpu_us_per_delivery: f64,
    /// Per-second series.
    pub series: Vec<Point>,
    /// No loss, duplicate, reorder, inconsistency or failed client.
    pub passed: bool,
    /// Client processes that failed, and why.
    pub failures: Vec<String>,
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

enum Go {
    Local(oneshot::Sender<()>),
    Remote(tokio::process::ChildStdin),
}

/// A client process started for this run.
struct Worker {
    child: tokio::process::Child,
}

async fn start_worker(
    spec: &ShardSpec,
    events: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<(Worker, Go)> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start a client process")?;
    let mut stdin = child.stdin.take().context("worker stdin")?;
    let mut line = serde_json::to_string(spec)?;
    line.push('\n');
    stdin.write_all(line.as_bytes()).await?;
    stdin.flush().await?;
    let stdout = child.stdout.take().context("worker stdout")?;
    let shard = spec.shard;
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut finished = false;
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<Event>(&line) {
                Ok(event) => {
                    finished |= matches!(event, Event::Done { .. } | Event::Failed { .. });
                    let _ = events.send(event);
                }
                Err(e) => {
                    let error = format!("bad line from client process: {e}");
                    let _ = events.send(Event::Failed { shard, error });
                }
            }
        }
        if !finished {
            let error = "client process ended without a result".to_owned();
            let _ = events.send(Event::Failed { shard, error });
        }
    });
    Ok((Worker { child }, Go::Remote(stdin)))
}

/// Serve as a client process: read a spec from stdin, report events as JSON lines on
/// stdout, start sending at the `go` line.
pub async fn worker() -> anyhow::Result<()> {
    raise_file_limit();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let spec: ShardSpec = serde_json::from_str(&stdin.next_line().await?.context("no spec")?)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (go_tx, go_rx) = oneshot::channel();
    tokio::spawn(async move {
        if let Ok(Some(line)) = stdin.next_line().await {
            if line.trim() == "go" {
                let _ = go_tx.send(());
            }
        }
    });
    tokio::spawn(shard::run(spec, tx, go_rx));
    let mut out = tokio::io::stdout();
    while let Some(event) = rx.recv().await {
        let last = matches!(event, Event::Done { .. } | Event::Failed { .. });
        let mut line = serde_json::to_string(&event)?;
        line.push('\n');
        out.write_all(line.as_bytes()).await?;
        out.flush().await?;
        if last {
            break;
        }
    }
    Ok(())
}

/// Raise the open-file soft limit to the hard limit.
pub fn raise_file_limit() -> u64 {
    match rlimit::Resource::NOFILE.get() {
        Ok((soft, hard)) => {
            if soft < hard {
                let _ = rlimit::Resource::NOFILE.set(hard, hard);
            }
            hard
        }
        Err(_) => 1024,
    }
}

#[derive(Default)]
struct TickSum {
    shards: usize,
    sent: u64,
    delivered: u64,
    latency: Option<stats::Hist>,
}

/// Run `scenario` against `target` and report.
pub async fn run(scenario: Scenario, target: Target, args: &RunArgs) -> anyhow::Result<Report> {
    let file_limit = raise_file_limit();
    let shape = args::shape(scenario, args)?;
    let total = shape.connections();
    let per_group = shape.members * shape.sessions_per_user;
    // Room for the runtime's own descriptors.
    let per_process = args
        .per_process
        .min(file_limit.saturating_sub(500) as usize)
        .max(per_group);
    let processes = args
        .processes
        .max(total.div_ceil(per_process))
        .clamp(1, shape.groups);
    let servers = Servers::open(scenario, target, args).await?;
    let outcome = drive(scenario, target, args, shape, processes, &servers).await;
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

fn tag() -> String {
    format!("{:06x}", rand::random::<u32>() & 0xff_ffff)
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    scenario: Scenario,
    target: Target,
    args: &RunArgs,
    shape: Shape,
    processes: usize,
    servers: &Servers,
) -> anyhow::Result<Report> {
    let watched = &servers.watched;
    let progress = Progress {
        tty: std::io::stderr().is_terminal(),
    };
    let total = shape.connections();
    let senders = match scenario {
        Scenario::Fanout | Scenario::Dm => total,
        Scenario::RecallRace => shape.groups,
        Scenario::Connect => 1,
    };
    let rss_idle = watched.sample().servers.map_or(0, |s| s.rss);
    let tag = tag();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut gos = Vec::new();
    let mut workers = Vec::new();
    let per_shard = shape.groups.div_ceil(processes);
    let mut first_group = 0;
    for shard in 0..processes {
        let groups = per_shard.min(shape.groups - first_group);
        let spec = ShardSpec {
            shard,
            scenario,
            target,
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
        };
        first_group += groups;
        if processes == 1 {
            let (go_tx, go_rx) = oneshot::channel();
            tokio::spawn(shard::run(spec, tx.clone(), go_rx));
            gos.push(Go::Local(go_tx));
        } else {
            let (worker, go) = start_worker(&spec, tx.clone()).await?;
            workers.push(worker);
            gos.push(go);
        }
    }
    drop(tx);

    // Set-up: wait until every client process is connected and ready.
    let mut connected: HashMap<usize, u64> = HashMap::new();
    let mut ready = 0;
    let mut failures = Vec::new();
    let setup_started = Instant::now();
    let setup_deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while ready + failures.len() < processes {
        let event = tokio::time::timeout_at(setup_deadline, rx.recv())
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
            "{scenario:?} vs {target:?}: setting up, {now}/{total} sessions connected ({:.0}s)",
            setup_started.elapsed().as_secs_f64()
        ));
    }
    if !failures.is_empty() {
        progress.done();
        bail!("set-up failed: {}", failures.join("; "));
    }
    let ready_usage = watched.sample();
    let ready_sample = ready_usage.servers;
    let rss_ready = ready_sample.map_or(0, |s| s.rss);
    let connected_total: u64 = connected.values().sum();
    let load_pids: Vec<u32> = match workers.is_empty() {
        true => vec![std::process::id()],
        false => workers.iter().filter_map(|w| w.child.id()).collect(),
    };
    let load_before = load_cpu(&load_pids);

    // Go.
    for go in gos {
        match go {
            Go::Local(tx) => {
                let _ = tx.send(());
            }
            Go::Remote(mut stdin) => {
                stdin.write_all(b"go\n").await?;
                stdin.flush().await?;
            }
        }
    }
    let started = Instant::now();
    let mut samples_live: Vec<(f64, ProcSample)> =
        ready_sample.map(|s| (0.0, s)).into_iter().collect();
    let mut ticks: BTreeMap<u64, TickSum> = BTreeMap::new();
    let mut results: Vec<ShardResult> = Vec::new();
    let hard_stop = args.duration + args.drain + Duration::from_secs(120);
    let deadline = tokio::time::Instant::now() + hard_stop;
    let mut send_end: Option<(Usage, f64)> = None;
    let mut memory_max = MemoryMax::default();
    memory_max.add(&ready_usage);
    while results.len() + failures.len() < processes {
        let event = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(_) => {
                failures.push("the run did not finish in time".to_owned());
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
            } => {
                let sum = ticks.entry(index).or_default();
                sum.shards += 1;
                sum.sent += sent;
                sum.delivered += delivered;
                stats::add_buckets(sum.latency.get_or_insert_with(stats::hist), &latency);
                if sum.shards == processes {
                    let p = Percentiles::of(sum.latency.as_ref().expect("just set"));
                    let usage = watched.sample();
                    memory_max.add(&usage);
                    let server = usage.servers;
                    if let Some(s) = server {
                        samples_live.push((started.elapsed().as_secs_f64(), s));
                    }
                    let cpu = cpu_between(&samples_live, 1.5);
                    progress.show(&format!(
                        "{scenario:?} vs {target:?} t={:>3}s sent {:>7}/s delivered {:>8}/s p50 {:>6.2} ms p99 {:>7.2} ms server cpu {:>4.0}% rss {:>6.1} MiB",
                        index + 1,
                        sum.sent,
                        sum.delivered,
                        p.p50,
                        p.p99,
                        cpu,
                        server.map_or(0.0, |s| s.rss as f64 / 1048576.0),
                    ));
                }
                if send_end.is_none() && index + 1 >= args.duration.as_secs().max(1) {
                    send_end = Some((watched.sample(), load_cpu(&load_pids)));
                }
            }
            Event::Done { result, .. } => results.push(*result),
            Event::Failed { shard, error } => failures.push(format!("client {shard}: {error}")),
            _ => {}
        }
    }
    progress.done();
    let elapsed_at_end = started.elapsed().as_secs_f64();
    let (end_usage, load_cpu_end) =
        send_end.unwrap_or_else(|| (watched.sample(), load_cpu(&load_pids)));
    for mut w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w.child.wait()).await;
    }
    let samples = samples_live;

    // Merge.
    let window_s = args.duration.as_secs_f64();
    let measured_s = window_s.min(elapsed_at_end).max(0.001);
    let mut latency = stats::hist();
    let mut connect = stats::hist();
    let mut send_lag = stats::hist();
    let mut total_result = ShardResult::default();
    for r in &results {
        stats::add_buckets(&mut latency, &r.latency);
        stats::add_buckets(&mut connect, &r.connect_latency);
        stats::add_buckets(&mut send_lag, &r.send_lag);
        total_result.connected += r.connected;
        total_result.connect_failed += r.connect_failed;
        total_result.sent += r.sent;
        total_result.delivered += r.delivered;
        total_result.delivered_across_nodes += r.delivered_across_nodes;
        total_result.delivered_in_window += r.delivered_in_window;
        total_result.expected += r.expected;
        total_result.acked += r.acked;
        total_result.other_frames += r.other_frames;
        total_result.lost += r.lost;
        total_result.duplicated += r.duplicated;
        total_result.reordered += r.reordered;
        total_result.inconsistent += r.inconsistent;
        total_result.races += r.races;
        total_result.recall_won += r.recall_won;
        total_result.read_won += r.read_won;
        for (code, n) in &r.errors {
            *total_result.errors.entry(code.clone()).or_default() += n;
        }
    }
    let cpu_spent = |start: Option<ProcSample>, end: Option<ProcSample>| match (start, end) {
        (Some(a), Some(b)) => (b.cpu_s - a.cpu_s).max(0.0),
        _ => 0.0,
    };
    let server_cpu = cpu_spent(ready_sample, end_usage.servers);
    let connected = total_result.connected.max(connected_total);
    let rss_per_connection = if connected > 0 && rss_ready > rss_idle {
        (rss_ready - rss_idle) as f64 / connected as f64
    } else {
        0.0
    };
    let series = ticks
        .iter()
        .filter(|(_, t)| t.shards == processes)
        .map(|(&i, t)| {
            let p = t.latency.as_ref().map(Percentiles::of).unwrap_or_default();
            let at = (i + 1) as f64;
            let server = nearest(&samples, at);
            Point {
                t: i + 1,
                sent_per_s: t.sent,
                delivered_per_s: t.delivered,
                p50_ms: p.p50,
                p99_ms: p.p99,
                p99_9_ms: p.p99_9,
                server_cpu_percent: cpu_between(
                    &samples[..samples.partition_point(|(t, _)| *t <= at + 0.25)],
                    1.5,
                ),
                server_rss: server.map_or(0, |s| s.rss),
            }
        })
        .collect();
    let latency_ms = Percentiles::of(&latency);
    let per = |cpu_s: f64, n: u64| match n {
        0 => 0.0,
        n => cpu_s * 1e6 / n as f64,
    };
    let per_delivery = |cpu_s: f64| per(cpu_s, total_result.delivered_in_window);
    let per_send = |cpu_s: f64| per(cpu_s, total_result.sent);
    let service = |pid: Option<u32>, start: Option<ProcSample>, end: Option<ProcSample>, max| {
        let cpu = cpu_spent(start, end);
        pid.map(|pid| ServiceFigures {
            pid,
            cpu_percent: 100.0 * cpu / measured_s,
            cpu_us_per_send: per_send(cpu),
            cpu_us_per_delivery: per_delivery(cpu),
            memory_max: max,
        })
    };
    let mut races = BTreeMap::new();
    if scenario == Scenario::RecallRace {
        races.insert("races".to_owned(), total_result.races);
        races.insert("recall_won".to_owned(), total_result.recall_won);
        races.insert("read_won".to_owned(), total_result.read_won);
    }
    let passed = failures.is_empty()
        && total_result.lost == 0
        && total_result.duplicated == 0
        && total_result.reordered == 0
        && total_result.inconsistent == 0
        && (scenario != Scenario::Connect || total_result.connect_failed == 0);
    let store = match (target, args.url.is_empty(), args.nodes) {
        (Target::Parley, true, Some(_)) => Some("postgres"),
        (Target::Parley, true, None) => Some(match args.store.unwrap_or(LocalStore::Sqlite) {
            LocalStore::Sqlite => "sqlite",
            LocalStore::Memory => "memory",
        }),
        _ => None,
    };
    Ok(Report {
        scenario,
        target,
        nodes: servers.urls.len(),
        store,
        shape,
        connections: total,
        connected,
        connect_failed: total_result.connect_failed,
        processes,
        rate: args.rate,
        window: args.window,
        duration_s: window_s,
        body_bytes: args.body,
        muted: !args.unmuted && target == Target::Parley,
        sent: total_result.sent,
        sends_per_s: total_result.sent as f64 / measured_s,
        delivered: total_result.delivered,
        delivered_per_s: total_result.delivered_in_window as f64 / measured_s,
        delivered_across_nodes: total_result.delivered_across_nodes,
        expected: total_result.expected,
        acked: total_result.acked,
        other_frames: total_result.other_frames,
        p99_ms: latency_ms.p99,
        latency_ms,
        connect_ms: Percentiles::of(&connect),
        send_lag_ms: Percentiles::of(&send_lag),
        lost: total_result.lost,
        duplicated: total_result.duplicated,
        reordered: total_result.reordered,
        inconsistent: total_result.inconsistent,
        races,
        errors: total_result.errors,
        server: ServerFigures {
            pids: watched.servers.clone(),
            cpu_percent: 100.0 * server_cpu / measured_s,
            rss_idle,
            rss_ready,
            rss_max: memory_max.servers.max(rss_ready),
            rss_per_connection,
            cpu_us_per_delivery: per_delivery(server_cpu),
            cpu_us_per_send: per_send(server_cpu),
        },
        postgres: service(
            watched.postgres,
            ready_usage.postgres,
            end_usage.postgres,
            memory_max.postgres,
        ),
        redis: service(
            watched.redis,
            ready_usage.redis,
            end_usage.redis,
            memory_max.redis,
        ),
        load_cpu_percent: 100.0 * (load_cpu_end - load_before) / measured_s,
        load_cpu_us_per_delivery: per_delivery(load_cpu_end - load_before),
        series,
        passed,
        failures,
    })
}
