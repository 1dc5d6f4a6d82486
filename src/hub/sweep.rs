//! Forgetting what no decision needs any more, so memory follows live work: send times
//! older than the throttle window and rate-limit buckets that have refilled.

use super::Hub;
use std::sync::Weak;
use std::time::Duration;

/// How often the hub forgets.
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// What the hub holds in memory now, for tests and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkingSet {
    /// Conversations held (each with its lock).
    pub conversations: usize,
    /// Entries (messages, state changes, notifications) held across those conversations,
    /// which the cache's limit counts.
    pub cached: usize,
    /// Conversations read back from the store so far: only their recent part, and whole.
    pub read_back: (u64, u64),
    /// Users with a send inside the recall throttle's window.
    pub send_logs: usize,
    /// Users with a request-rate bucket not yet refilled.
    pub rate_buckets: usize,
}

impl Hub {
    /// Drop send logs with nothing inside the throttle window and refilled rate buckets,
    /// and forget conversations beyond the cache's limit (sends grow what is held).
    pub fn sweep(&self) {
        self.forget_idle();
        let (now, window) = (self.clock.now(), self.limits.recall_throttle_window_ms);
        self.send_logs.retain(|_, log| log.count(now, window) > 0);
        self.send_logs.shrink_to_fit();
        if let Some(limiter) = &self.requests {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.gauge_working_set();
    }

    /// Set the working-set gauges of `/metrics` to what is held now.
    pub fn gauge_working_set(&self) {
        let held = self.working_set();
        crate::metrics::working_set(
            held.conversations,
            held.cached,
            held.send_logs,
            held.rate_buckets,
        );
    }

    /// What the hub holds in memory now.
    pub fn working_set(&self) -> WorkingSet {
        WorkingSet {
            conversations: self.conversations.len(),
            cached: self.cache.weight(),
            read_back: self.cache.reads(),
            send_logs: self.send_logs.len(),
            rate_buckets: self.requests.as_ref().map_or(0, |l| l.len()),
        }
    }
}

/// Sweep now and then; ends with the hub.
pub(super) async fn run(hub: Weak<Hub>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        hub.sweep();
    }
}
