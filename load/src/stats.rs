//! Counting: latency histograms, the live counters of one client process, the events a
//! client process reports to the run that started it, and their sums over processes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Latencies in microseconds.
pub type Hist = hdrhistogram::Histogram<u64>;

/// An empty histogram from 1 µs to 10 minutes at three significant figures.
pub fn hist() -> Hist {
    Hist::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// A histogram as (value, count) pairs, to cross a process boundary.
pub fn buckets(h: &Hist) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Add (value, count) pairs into a histogram.
pub fn add_buckets(h: &mut Hist, pairs: &[(u64, u64)]) {
    for &(value, count) in pairs {
        h.saturating_record_n(value, count);
    }
}

/// A histogram's percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// Read from a histogram of microseconds.
    pub fn of(h: &Hist) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// The live counters of one client process, shared by all its connection tasks.
pub struct Shared {
    /// Messages sent.
    pub sent: AtomicU64,
    /// Load messages received (duplicates included).
    pub delivered: AtomicU64,
    /// Load messages received for the first time.
    pub unique: AtomicU64,
    /// Load messages received on another node than their sender's.
    pub across: AtomicU64,
    /// Deliveries the sends so far call for.
    pub expected: AtomicU64,
    /// Sends the server acknowledged.
    pub acked: AtomicU64,
    /// Other frames (hello, notifications, receipts, …).
    pub other: AtomicU64,
    /// Sessions connected.
    pub connected: AtomicU64,
    /// Connection attempts that failed.
    pub connect_failed: AtomicU64,
    /// Read/recall races run, and who won them.
    pub races: AtomicU64,
    /// Races the recall won.
    pub recall_won: AtomicU64,
    /// Races the read won.
    pub read_won: AtomicU64,
    /// Race outcomes that break the SPEC (both or neither won, a frame that contradicts
    /// the winner).
    pub inconsistent: AtomicU64,
    /// Frames lost, counted as they are found (races); fan-out losses are counted at the end.
    pub lost: AtomicU64,
    /// Frames duplicated outside the per-stream checks (races).
    pub duplicated: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<(Hist, Hist)>,
    connect: Mutex<Hist>,
    send_lag: Mutex<Hist>,
}

impl Default for Shared {
    fn default() -> Self {
        let z = || AtomicU64::new(0);
        Shared {
            sent: z(),
            delivered: z(),
            unique: z(),
            across: z(),
            expected: z(),
            acked: z(),
            other: z(),
            connected: z(),
            connect_failed: z(),
            races: z(),
            recall_won: z(),
            read_won: z(),
            inconsistent: z(),
            lost: z(),
            duplicated: z(),
            errors: Mutex::new(BTreeMap::new()),
            latency: Mutex::new((hist(), hist())),
            connect: Mutex::new(hist()),
            send_lag: Mutex::new(hist()),
        }
    }
}

/// Add one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Shared {
    /// Count an error by its code.
    pub fn error(&self, code: &str) {
        *self
            .errors
            .lock()
            .expect("unpoisoned")
            .entry(code.to_owned())
            .or_default() += 1;
    }

    /// Errors so far by code.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().expect("unpoisoned").clone()
    }

    /// Record a send→delivery latency.
    pub fn latency(&self, us: u64) {
        let mut h = self.latency.lock().expect("unpoisoned");
        h.0.saturating_record(us.max(1));
        h.1.saturating_record(us.max(1));
    }

    /// Record how long a connection took to open and be greeted.
    pub fn connect_latency(&self, us: u64) {
        self.connect
            .lock()
            .expect("unpoisoned")
            .saturating_record(us.max(1));
    }

    /// Record how late a scheduled send left the load generator: time the generator
    /// itself, rather than the server, added to the send's latency.
    pub fn send_lag(&self, us: u64) {
        self.send_lag
            .lock()
            .expect("unpoisoned")
            .saturating_record(us.max(1));
    }

    /// Send lags so far, as buckets.
    pub fn send_lags(&self) -> Vec<(u64, u64)> {
        buckets(&self.send_lag.lock().expect("unpoisoned"))
    }

    /// Latencies since the last call, as buckets.
    pub fn take_interval(&self) -> Vec<(u64, u64)> {
        let mut h = self.latency.lock().expect("unpoisoned");
        let out = buckets(&h.1);
        h.1.reset();
        out
    }

    /// Every latency so far, as buckets.
    pub fn all_latencies(&self) -> Vec<(u64, u64)> {
        buckets(&self.latency.lock().expect("unpoisoned").0)
    }

    /// Connection latencies so far, as buckets.
    pub fn connect_latencies(&self) -> Vec<(u64, u64)> {
        buckets(&self.connect.lock().expect("unpoisoned"))
    }

    /// The totals so far, `delivered_in_window` of them while sending for `window_ms`.
    pub fn result(&self, window_ms: u64, delivered_in_window: u64) -> ShardResult {
        let n = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ShardResult {
            connected: n(&self.connected),
            connect_failed: n(&self.connect_failed),
            sent: n(&self.sent),
            window_ms,
            delivered_in_window,
            delivered: n(&self.delivered),
            delivered_across_nodes: n(&self.across),
            expected: n(&self.expected),
            acked: n(&self.acked),
            other_frames: n(&self.other),
            lost: n(&self.lost),
            duplicated: n(&self.duplicated),
            reordered: 0,
            inconsistent: n(&self.inconsistent),
            races: n(&self.races),
            recall_won: n(&self.recall_won),
            read_won: n(&self.read_won),
            errors: self.errors(),
            latency: self.all_latencies(),
            connect_latency: self.connect_latencies(),
            send_lag: self.send_lags(),
        }
    }
}

/// A note on stderr that does not disturb the event stream on stdout.
pub fn note(text: &str) {
    eprintln!("\nparley-load: {text}");
}

/// What one client process reports, one JSON line each when it is a separate process.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Connecting and setting up.
    Setup {
        /// Which client process.
        shard: usize,
        /// Sessions connected so far.
        connected: u64,
    },
    /// Set up; waiting for the start.
    Ready {
        /// Which client process.
        shard: usize,
        /// Sessions connected.
        connected: u64,
        /// Connection attempts that failed.
        failed: u64,
    },
    /// One second of the run.
    Tick {
        /// Which client process.
        shard: usize,
        /// Seconds since the start.
        index: u64,
        /// Messages sent in this second.
        sent: u64,
        /// Messages delivered in this second.
        delivered: u64,
        /// Latencies in this second.
        latency: Vec<(u64, u64)>,
    },
    /// Finished.
    Done {
        /// Which client process.
        shard: usize,
        /// Its totals.
        result: Box<ShardResult>,
    },
    /// Gave up.
    Failed {
        /// Which client process.
        shard: usize,
        /// Why.
        error: String,
    },
}

/// The totals of one client process.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ShardResult {
    /// Sessions connected.
    pub connected: u64,
    /// Connection attempts that failed.
    pub connect_failed: u64,
    /// Messages sent.
    pub sent: u64,
    /// Messages sent before the send window closed and delivered within it, per second
    /// of the window: the window's length in milliseconds.
    pub window_ms: u64,
    /// Messages delivered while sending (the figure throughput is computed from).
    pub delivered_in_window: u64,
    /// Messages delivered in all, drain included.
    pub delivered: u64,
    /// Of those, delivered on another node than their sender's.
    pub delivered_across_nodes: u64,
    /// Deliveries expected.
    pub expected: u64,
    /// Sends acknowledged.
    pub acked: u64,
    /// Other frames received.
    pub other_frames: u64,
    /// Deliveries missing after the drain.
    pub lost: u64,
    /// Deliveries that arrived twice.
    pub duplicated: u64,
    /// Deliveries behind a later one of the same stream.
    pub reordered: u64,
    /// Races with an outcome the SPEC forbids.
    pub inconsistent: u64,
    /// Races run.
    pub races: u64,
    /// Races the recall won.
    pub recall_won: u64,
    /// Races the read won.
    pub read_won: u64,
    /// Errors by code.
    pub errors: BTreeMap<String, u64>,
    /// Send→delivery latencies.
    pub latency: Vec<(u64, u64)>,
    /// Connect→greeting latencies.
    pub connect_latency: Vec<(u64, u64)>,
    /// How late scheduled sends left (`--rate` runs).
    #[serde(default)]
    pub send_lag: Vec<(u64, u64)>,
}

impl ShardResult {
    /// Add another process's counters (not its histograms) to these.
    fn add(&mut self, r: &ShardResult) {
        self.connected += r.connected;
        self.connect_failed += r.connect_failed;
        self.sent += r.sent;
        self.delivered += r.delivered;
        self.delivered_across_nodes += r.delivered_across_nodes;
        self.delivered_in_window += r.delivered_in_window;
        self.expected += r.expected;
        self.acked += r.acked;
        self.other_frames += r.other_frames;
        self.lost += r.lost;
        self.duplicated += r.duplicated;
        self.reordered += r.reordered;
        self.inconsistent += r.inconsistent;
        self.races += r.races;
        self.recall_won += r.recall_won;
        self.read_won += r.read_won;
        for (code, n) in &r.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
    }
}

/// The results of every client process, added up.
pub struct Merged {
    /// Every counter, summed.
    pub total: ShardResult,
    /// Send→delivery latencies.
    pub latency: Hist,
    /// Connect→greeting latencies.
    pub connect: Hist,
    /// How late scheduled sends left.
    pub send_lag: Hist,
}

impl Merged {
    /// Add up `results`.
    pub fn of(results: &[ShardResult]) -> Merged {
        let mut m = Merged {
            total: ShardResult::default(),
            latency: hist(),
            connect: hist(),
            send_lag: hist(),
        };
        for r in results {
            m.total.add(r);
            add_buckets(&mut m.latency, &r.latency);
            add_buckets(&mut m.connect, &r.connect_latency);
            add_buckets(&mut m.send_lag, &r.send_lag);
        }
        m
    }
}

/// One second of a run, summed over the client processes that have reported it.
#[derive(Default)]
pub struct TickSum {
    /// Client processes that reported this second.
    pub shards: usize,
    /// Sends.
    pub sent: u64,
    /// Deliveries.
    pub delivered: u64,
    /// Latencies.
    pub latency: Option<Hist>,
}

impl TickSum {
    /// Add one process's second.
    pub fn add(&mut self, sent: u64, delivered: u64, latency: &[(u64, u64)]) {
        self.shards += 1;
        self.sent += sent;
        self.delivered += delivered;
        add_buckets(self.latency.get_or_insert_with(hist), latency);
    }
}
