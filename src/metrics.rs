//! Operational metrics in Prometheus text format: connections, sessions, frames in and
//! out by type, request and fan-out latency, queue overflows, errors by code, recalls.

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::RwLock;
use std::sync::OnceLock;

/// Latency buckets in seconds: fan-out is sub-millisecond when healthy.
const BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];

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

/// A recall ended with `outcome` (`ok` or an error code).
pub fn recall(outcome: &'static str) {
    metrics::counter!("parley_recalls_total", "outcome" => outcome).increment(1);
}

/// Something happened between cluster nodes: `event` is e.g. `entry_applied`,
/// `gap_filled`, `bulletin_dropped`, `publish_failed`.
pub fn cluster(event: &'static str) {
    metrics::counter!("parley_cluster_events_total", "event" => event).increment(1);
}
