//! Operational metrics in Prometheus text format: connections, sessions, frames in and
//! out by type, request and fan-out latency, queue overflows, errors by code, recalls.

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::RwLock;
use std::sync::OnceLock;

/// Latency buckets in seconds: fan-out is sub-millisecond when healthy, and a request that
/// waits on a stalled store takes seconds, which the top buckets still tell apart.
const BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Every family parley exports, with its type and help text.
const FAMILIES: [(Kind, &str, &str); 22] = [
    (Kind::Counter, "parley_connections_total", "WebSocket connections accepted, before authentication"),
    (Kind::Gauge, "parley_sessions", "Live sessions on this server"),
    (Kind::Gauge, "parley_conversations_held", "Conversations held in memory"),
    (Kind::Gauge, "parley_cache_entries_held", "Messages, state changes and notifications of the conversations held (what --cache-entries bounds)"),
    (Kind::Gauge, "parley_send_logs_held", "Users with a send inside the recall throttle window"),
    (Kind::Gauge, "parley_rate_buckets_held", "Users whose request rate bucket has not refilled"),
    (Kind::Counter, "parley_cache_reads_total", "Conversations read back from the store, by part read (recent or whole)"),
    (Kind::Counter, "parley_cache_evictions_total", "Passes that forgot conversations to stay within --cache-entries"),
    (Kind::Counter, "parley_frames_in_total", "Client requests received, by type"),
    (Kind::Counter, "parley_frames_out_total", "Server frames queued to sessions, by type (one per recipient session)"),
    (Kind::Histogram, "parley_fanout_seconds", "Time to serialise one frame once and queue it to every recipient session"),
    (Kind::Histogram, "parley_request_seconds", "Time from a request's parse to its answer queued, by type"),
    (Kind::Counter, "parley_queue_overflows_total", "Sessions closed because their outbound queue overflowed (slow consumers)"),
    (Kind::Counter, "parley_errors_total", "Requests refused, by error code"),
    (Kind::Counter, "parley_recalls_total", "Recall requests, by outcome (ok or the error code)"),
    (Kind::Counter, "parley_cluster_events_total", "Events between cluster nodes, by event"),
    (Kind::Gauge, "parley_build_info", "Always 1; the version of this parley is its label"),
    (Kind::Counter, "parley_logins_refused_total", "Connections refused before a session, by reason (missing, expired, invalid, ticket_used, too_fast, origin, unavailable)"),
    (Kind::Histogram, "parley_store_commit_seconds", "Time to make one decision durable (the local store's commit, or a cluster node's ledger commit)"),
    (Kind::Counter, "parley_store_errors_total", "Requests whose storage work (a claim, a read, a commit) failed, by kind (full, unavailable, corrupt, refused)"),
    (Kind::Gauge, "parley_store_reachable", "1 while the store took the latest commit (on a cluster node: and answered the latest readiness check), else 0"),
    (Kind::Gauge, "parley_broker_reachable", "On a cluster node with a broker: 1 while the broker is subscribed and answers, else 0"),
];

/// A metric family's type.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Describe every family and register it with zero (labelled ones under a label value
/// every server sees), so a scrape of a fresh server lists every family with its help text
/// rather than nothing until traffic comes.
fn register_families() {
    for (kind, name, help) in FAMILIES {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
    for name in FAMILIES
        .iter()
        .filter(|f| matches!(f.0, Kind::Counter))
        .map(|f| f.1)
    {
        let label = match name {
            "parley_cache_reads_total" => Some(("part", "recent")),
            "parley_frames_in_total" => Some(("type", "send")),
            "parley_frames_out_total" => Some(("type", "message")),
            "parley_errors_total" => Some(("code", "unavailable")),
            "parley_recalls_total" => Some(("outcome", "ok")),
            "parley_cluster_events_total" => Some(("event", "entry_applied")),
            "parley_logins_refused_total" => Some(("reason", "invalid")),
            "parley_store_errors_total" => Some(("kind", "unavailable")),
            _ => None,
        };
        match label {
            Some((key, value)) => metrics::counter!(name, key => value).absolute(0),
            None => metrics::counter!(name).absolute(0),
        }
    }
    sessions_live(0);
    working_set(0, 0, 0, 0);
    let _ = metrics::histogram!("parley_fanout_seconds");
    let _ = metrics::histogram!("parley_request_seconds", "type" => "send");
    let _ = metrics::histogram!("parley_store_commit_seconds");
    metrics::gauge!("parley_store_reachable").set(1.0);
    metrics::gauge!("parley_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    process().describe();
}

/// The collector of the process's own figures (CPU, resident memory, open files, start
/// time), in the names Prometheus' client libraries use.
fn process() -> &'static metrics_process::Collector {
    static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();
    PROCESS.get_or_init(metrics_process::Collector::default)
}

/// Read the process's figures now, for a scrape.
pub fn refresh_process() {
    process().collect();
}

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The process-wide recorder's handle, installed on first use (several servers in one
/// test process share it).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed by an embedding program; then ours
        // simply renders nothing.
        let _ = metrics::set_global_recorder(recorder);
        register_families();
        // Histogram samples pile up until they are folded into their buckets, which only
        // a scrape or an upkeep does: without this, a server nobody scrapes keeps every
        // latency it ever recorded.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            })
            .expect("a thread for metrics upkeep");
        handle
    })
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The handles of one metric, by label value. The `metrics` macros build a key (a label
/// list on the heap) and look it up in the registry on every call, which on the per-send
/// and per-delivery paths cost several allocations a message; a handle is looked up once
/// per label value instead.
struct ByLabel<T> {
    handles: RwLock<Vec<(&'static str, T)>>,
}

impl<T> ByLabel<T> {
    const fn new() -> Self {
        ByLabel {
            handles: RwLock::new(Vec::new()),
        }
    }

    /// Use the handle for `value`, registered by `make` the first time.
    fn with(&self, value: &'static str, make: impl FnOnce() -> T, record: impl FnOnce(&T)) {
        if let Some((_, h)) = self.handles.read().iter().find(|(v, _)| *v == value) {
            return record(h);
        }
        let h = make();
        record(&h);
        // Before the recorder is installed `make` gives a handle that records nowhere;
        // keeping it would lose every later event.
        if HANDLE.get().is_some() {
            let mut handles = self.handles.write();
            if !handles.iter().any(|(v, _)| *v == value) {
                handles.push((value, h));
            }
        }
    }
}

static FRAMES_IN: ByLabel<Counter> = ByLabel::new();
static FRAMES_OUT: ByLabel<Counter> = ByLabel::new();
static FANOUT: ByLabel<Histogram> = ByLabel::new();
static REQUEST: ByLabel<Histogram> = ByLabel::new();
static COMMIT: ByLabel<Histogram> = ByLabel::new();

/// A new WebSocket connection was accepted (before authentication).
pub fn connection_opened() {
    metrics::counter!("parley_connections_total").increment(1);
}

/// The number of live sessions changed.
pub fn sessions_live(n: usize) {
    metrics::gauge!("parley_sessions").set(n as f64);
}

/// What the hub holds in memory (see `Hub::working_set`).
pub fn working_set(
    conversations: usize,
    cached_weight: usize,
    send_logs: usize,
    rate_buckets: usize,
) {
    metrics::gauge!("parley_conversations_held").set(conversations as f64);
    metrics::gauge!("parley_cache_entries_held").set(cached_weight as f64);
    metrics::gauge!("parley_send_logs_held").set(send_logs as f64);
    metrics::gauge!("parley_rate_buckets_held").set(rate_buckets as f64);
}

/// One conversation was read back from the store into the cache, all of it or its
/// recent part.
pub fn cache_read(whole: bool) {
    let part = if whole { "whole" } else { "recent" };
    metrics::counter!("parley_cache_reads_total", "part" => part).increment(1);
}

/// One pass forgot conversations to keep the cache within its limit.
pub fn cache_evicted() {
    metrics::counter!("parley_cache_evictions_total").increment(1);
}

/// A client frame arrived.
pub fn frame_in(kind: &'static str) {
    let make = || metrics::counter!("parley_frames_in_total", "type" => kind);
    FRAMES_IN.with(kind, make, |c| c.increment(1));
}

/// A server frame was queued for `sessions` sessions.
pub fn frames_out(kind: &'static str, sessions: u64) {
    let make = || metrics::counter!("parley_frames_out_total", "type" => kind);
    FRAMES_OUT.with(kind, make, |c| c.increment(sessions));
}

/// One frame's fan-out (serialise once, queue everywhere) took `seconds`.
pub fn fanout(seconds: f64) {
    let make = || metrics::histogram!("parley_fanout_seconds");
    FANOUT.with("", make, |h| h.record(seconds));
}

/// One request took `seconds` from parse to answer queued.
pub fn request(kind: &'static str, seconds: f64) {
    let make = || metrics::histogram!("parley_request_seconds", "type" => kind);
    REQUEST.with(kind, make, |h| h.record(seconds));
}

/// A slow consumer's queue overflowed.
pub fn queue_overflow() {
    metrics::counter!("parley_queue_overflows_total").increment(1);
}

/// A request was refused with `code`.
pub fn error(code: &'static str) {
    metrics::counter!("parley_errors_total", "code" => code).increment(1);
}

/// A connection was refused before its session began, for `reason`.
pub fn login_refused(reason: &'static str) {
    metrics::counter!("parley_logins_refused_total", "reason" => reason).increment(1);
}

/// A decision was made durable in `took`.
pub fn store_commit(took: std::time::Duration) {
    // On every send: the handle, not the macro's key lookup (see [`ByLabel`]).
    COMMIT.with(
        "",
        || metrics::histogram!("parley_store_commit_seconds"),
        |h| h.record(took.as_secs_f64()),
    );
}

/// A request's storage work failed with a store error of `kind` (see `StoreError::code`).
pub fn store_error(kind: &'static str) {
    metrics::counter!("parley_store_errors_total", "kind" => kind).increment(1);
}

/// Whether the store took the latest commit (and, on a cluster node, answered the latest
/// readiness check).
pub fn store_reachable(yes: bool) {
    metrics::gauge!("parley_store_reachable").set(if yes { 1.0 } else { 0.0 });
}

/// Whether the cluster's broker is subscribed and answers (set only on nodes with one).
pub fn broker_connected(yes: bool) {
    metrics::gauge!("parley_broker_reachable").set(if yes { 1.0 } else { 0.0 });
}

/// A recall ended with `outcome` (`ok` or an error code).
pub fn recall(outcome: &'static str) {
    metrics::counter!("parley_recalls_total", "outcome" => outcome).increment(1);
}

/// Something happened between cluster nodes: `event` is e.g. `entry_applied`,
/// `gap_filled`, `bulletin_dropped`, `publish_failed`.
pub fn cluster(event: &'static str) {
    metrics::counter!("parley_cluster_events_total", "event" => event).increment(1);
}
