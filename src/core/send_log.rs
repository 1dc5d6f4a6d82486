//! A sender's recent send times, for the recall throttle (anti-spam).

use parley_protocol::Millis;
use std::collections::VecDeque;

/// Send times of one user within the throttle window, oldest first.
#[derive(Debug, Clone, Default)]
pub struct SendLog {
    times: VecDeque<Millis>,
}

impl SendLog {
    /// Record a send at `now`, forgetting sends older than `window_ms` and all but the
    /// latest `keep`: the throttle asks only whether more than its limit were sent, so
    /// its limit and one more answer that, and a user sending fast holds no more.
    pub fn record(&mut self, now: Millis, window_ms: u64, keep: usize) {
        self.times.push_back(now);
        self.prune(now, window_ms);
        while self.times.len() > keep {
            self.times.pop_front();
        }
    }

    /// How many sends happened in the `window_ms` before `now`.
    pub fn count(&self, now: Millis, window_ms: u64) -> u32 {
        let since = now.saturating_sub(window_ms as i64);
        self.times.iter().rev().take_while(|&&t| t > since).count() as u32
    }

    fn prune(&mut self, now: Millis, window_ms: u64) {
        let since = now.saturating_sub(window_ms as i64);
        while self.times.front().is_some_and(|&t| t <= since) {
            self.times.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_the_window() {
        let mut log = SendLog::default();
        for t in [0, 10, 20, 59_999, 60_000] {
            log.record(t, 60_000, 10);
        }
        assert_eq!(
            log.count(60_000, 60_000),
            4,
            "the send at 0 is exactly a window old"
        );
        assert_eq!(log.count(120_000, 60_000), 0);
        assert_eq!(log.count(60_010, 60_000), 3);
    }

    #[test]
    fn keeps_only_enough_to_tell_over_the_limit() {
        let mut log = SendLog::default();
        for t in 0..100 {
            log.record(t, 60_000, 31);
        }
        assert_eq!(log.times.len(), 31);
        assert_eq!(log.count(100, 60_000), 31, "more than 30: still throttled");
        assert_eq!(log.times.front(), Some(&69), "the latest are kept");
    }
}
