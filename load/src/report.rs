//! What one run measured, in full: the JSON report, how it is worked out from what the
//! client processes and the samples of the servers recorded, and its summary on stderr.

use crate::args::{LocalStore, RunArgs, Scenario, Shape, Target};
use crate::sampling::{cpu_between, nearest, MemoryMax, ProcSample, Usage, Watched};
use crate::stats::{Merged, Percentiles, ShardResult, TickSum};
use serde::Serialize;
use std::collections::BTreeMap;

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

/// What a run was asked to do, and where.
pub struct Setting<'a> {
    /// Scenario.
    pub scenario: Scenario,
    /// Server kind.
    pub target: Target,
    /// The flags.
    pub args: &'a RunArgs,
    /// Layout.
    pub shape: Shape,
    /// Client processes.
    pub processes: usize,
    /// Servers the sessions were dealt to.
    pub nodes: usize,
    /// The processes whose CPU and memory are read.
    pub watched: &'a Watched,
}

/// What a run recorded, to be worked out into a [`Report`].
pub struct Measured {
    /// Sessions connected once set up.
    pub connected: u64,
    /// Server RSS before any client connected.
    pub rss_idle: u64,
    /// The watched processes once every session was set up.
    pub ready: Usage,
    /// The watched processes when sending stopped.
    pub end: Usage,
    /// The largest memory seen of each.
    pub memory_max: MemoryMax,
    /// CPU time the client processes spent while sending, seconds.
    pub load_cpu_s: f64,
    /// Seconds from the start to the last result.
    pub elapsed_s: f64,
    /// Each client process's totals.
    pub results: Vec<ShardResult>,
    /// Client processes that failed, and why.
    pub failures: Vec<String>,
    /// Every second, summed over the client processes.
    pub ticks: BTreeMap<u64, TickSum>,
    /// Server samples while sending: (seconds since the start, sample).
    pub samples: Vec<(f64, ProcSample)>,
}

impl Report {
    /// Work out and judge what `setting`'s run measured.
    pub fn new(setting: &Setting<'_>, m: Measured) -> Report {
        let (scenario, target, args) = (setting.scenario, setting.target, setting.args);
        let window_s = args.duration.as_secs_f64();
        let merged = Merged::of(&m.results);
        let t = &merged.total;
        let window = Window {
            seconds: window_s.min(m.elapsed_s).max(0.001),
            sent: t.sent,
            delivered: t.delivered_in_window,
        };
        let latency_ms = Percentiles::of(&merged.latency);
        Report {
            scenario,
            target,
            nodes: setting.nodes,
            store: store(setting),
            shape: setting.shape,
            connections: setting.shape.connections(),
            connected: t.connected.max(m.connected),
            connect_failed: t.connect_failed,
            processes: setting.processes,
            rate: args.rate,
            window: args.window,
            duration_s: window_s,
            body_bytes: args.body,
            muted: !args.unmuted && target == Target::Parley,
            sent: t.sent,
            sends_per_s: t.sent as f64 / window.seconds,
            delivered: t.delivered,
            delivered_per_s: t.delivered_in_window as f64 / window.seconds,
            delivered_across_nodes: t.delivered_across_nodes,
            expected: t.expected,
            acked: t.acked,
            other_frames: t.other_frames,
            p99_ms: latency_ms.p99,
            latency_ms,
            connect_ms: Percentiles::of(&merged.connect),
            send_lag_ms: Percentiles::of(&merged.send_lag),
            lost: t.lost,
            duplicated: t.duplicated,
            reordered: t.reordered,
            inconsistent: t.inconsistent,
            races: races(scenario, t),
            errors: t.errors.clone(),
            server: server_figures(setting, &m, &window, t.connected.max(m.connected)),
            postgres: window.service(
                setting.watched.postgres,
                m.ready.postgres,
                m.end.postgres,
                m.memory_max.postgres,
            ),
            redis: window.service(
                setting.watched.redis,
                m.ready.redis,
                m.end.redis,
                m.memory_max.redis,
            ),
            load_cpu_percent: window.percent(m.load_cpu_s),
            load_cpu_us_per_delivery: window.per_delivery(m.load_cpu_s),
            series: series(&m.ticks, &m.samples, setting.processes),
            passed: passed(scenario, &m.failures, t),
            failures: m.failures,
        }
    }
}

/// The sending window, to state CPU time per second, per send and per delivery.
struct Window {
    /// Its length, seconds.
    seconds: f64,
    /// Sends.
    sent: u64,
    /// Deliveries within it.
    delivered: u64,
}

impl Window {
    fn percent(&self, cpu_s: f64) -> f64 {
        100.0 * cpu_s / self.seconds
    }

    fn per(cpu_s: f64, n: u64) -> f64 {
        match n {
            0 => 0.0,
            n => cpu_s * 1e6 / n as f64,
        }
    }

    fn per_send(&self, cpu_s: f64) -> f64 {
        Window::per(cpu_s, self.sent)
    }

    fn per_delivery(&self, cpu_s: f64) -> f64 {
        Window::per(cpu_s, self.delivered)
    }

    /// The figures of a PostgreSQL or Redis, when its process is known: read at `start`
    /// and `end` of the window, `memory_max` at most.
    fn service(
        &self,
        pid: Option<u32>,
        start: Option<ProcSample>,
        end: Option<ProcSample>,
        memory_max: u64,
    ) -> Option<ServiceFigures> {
        let cpu = cpu_spent(start, end);
        pid.map(|pid| ServiceFigures {
            pid,
            cpu_percent: self.percent(cpu),
            cpu_us_per_send: self.per_send(cpu),
            cpu_us_per_delivery: self.per_delivery(cpu),
            memory_max,
        })
    }
}

/// CPU seconds between two readings of a process.
fn cpu_spent(start: Option<ProcSample>, end: Option<ProcSample>) -> f64 {
    match (start, end) {
        (Some(a), Some(b)) => (b.cpu_s - a.cpu_s).max(0.0),
        _ => 0.0,
    }
}

/// What the servers under load cost, `connected` sessions once set up.
fn server_figures(
    setting: &Setting<'_>,
    m: &Measured,
    window: &Window,
    connected: u64,
) -> ServerFigures {
    let cpu = cpu_spent(m.ready.servers, m.end.servers);
    let rss_ready = m.ready.servers.map_or(0, |s| s.rss);
    let rss_per_connection = if connected > 0 && rss_ready > m.rss_idle {
        (rss_ready - m.rss_idle) as f64 / connected as f64
    } else {
        0.0
    };
    ServerFigures {
        pids: setting.watched.servers.clone(),
        cpu_percent: window.percent(cpu),
        rss_idle: m.rss_idle,
        rss_ready,
        rss_max: m.memory_max.servers.max(rss_ready),
        rss_per_connection,
        cpu_us_per_delivery: window.per_delivery(cpu),
        cpu_us_per_send: window.per_send(cpu),
    }
}

/// The per-second series: every second all `processes` reported, with the server's CPU
/// and memory sampled nearest to it.
fn series(
    ticks: &BTreeMap<u64, TickSum>,
    samples: &[(f64, ProcSample)],
    processes: usize,
) -> Vec<Point> {
    ticks
        .iter()
        .filter(|(_, t)| t.shards == processes)
        .map(|(&i, t)| {
            let p = t.latency.as_ref().map(Percentiles::of).unwrap_or_default();
            let at = (i + 1) as f64;
            let server = nearest(samples, at);
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
        .collect()
}

/// Races run and their winners (`recall-race` only).
fn races(scenario: Scenario, t: &ShardResult) -> BTreeMap<String, u64> {
    let mut races = BTreeMap::new();
    if scenario == Scenario::RecallRace {
        races.insert("races".to_owned(), t.races);
        races.insert("recall_won".to_owned(), t.recall_won);
        races.insert("read_won".to_owned(), t.read_won);
    }
    races
}

/// No loss, duplicate, reorder, inconsistency or failed client (nor, for `connect`, a
/// session that did not connect).
fn passed(scenario: Scenario, failures: &[String], t: &ShardResult) -> bool {
    failures.is_empty()
        && t.lost == 0
        && t.duplicated == 0
        && t.reordered == 0
        && t.inconsistent == 0
        && (scenario != Scenario::Connect || t.connect_failed == 0)
}

/// The store of the parley the harness started.
fn store(setting: &Setting<'_>) -> Option<&'static str> {
    let args = setting.args;
    match (setting.target, args.url.is_empty(), args.nodes) {
        (Target::Parley, true, Some(_)) => Some("postgres"),
        (Target::Parley, true, None) => Some(match args.store.unwrap_or(LocalStore::Sqlite) {
            LocalStore::Sqlite => "sqlite",
            LocalStore::Memory => "memory",
        }),
        _ => None,
    }
}

/// The report's summary on stderr.
pub fn summarise(r: &Report) {
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
