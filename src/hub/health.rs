//! What the hub knows of its storage's health, for operators and load balancers.
//!
//! `parley_store_reachable` follows the latest thing that touched the store: each commit
//! on every server, and on cluster nodes also each readiness check. A node's readiness asks
//! the database and the broker; its answer is shared by every probe within a second, so a
//! flood of `/readyz` (it is on the public port) spends one database connection a second,
//! not one per request.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Instant;

/// How long one readiness answer stands.
pub const READINESS_FRESH: Duration = Duration::from_secs(1);

/// Whether the store failed last time, and the latest readiness answer.
#[derive(Default)]
pub struct Health {
    /// Whether the latest commit failed (so the next success turns the gauge back).
    failing: AtomicBool,
    /// When the readiness was last asked, and why the server was not ready then.
    readiness: AsyncMutex<Option<(Instant, Option<String>)>>,
}

impl Health {
    /// A fresh record: the store counts as reachable until something says otherwise.
    pub fn new() -> Health {
        crate::metrics::store_reachable(true);
        Health::default()
    }

    /// The store took a commit or answered a check (`true`), or did not.
    pub fn observed(&self, reachable: bool) {
        // A load before the swap keeps the common case (reachable, and not failing) a read.
        if reachable && !self.failing.load(Ordering::Relaxed) {
            return;
        }
        if self.failing.swap(!reachable, Ordering::Relaxed) == reachable {
            crate::metrics::store_reachable(reachable);
        }
    }

    /// Why the server is not ready, as `check` says at most once per
    /// [`READINESS_FRESH`]: probes arriving while one is asked wait for its answer.
    pub async fn readiness<F>(&self, check: impl FnOnce() -> F) -> Option<String>
    where
        F: Future<Output = Option<String>>,
    {
        let mut last = self.readiness.lock().await;
        if let Some((at, why)) = last.as_ref() {
            if at.elapsed() < READINESS_FRESH {
                return why.clone();
            }
        }
        let why = check().await;
        *last = Some((Instant::now(), why.clone()));
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(start_paused = true)]
    async fn one_readiness_answer_serves_the_probes_of_a_second() {
        let health = Health::new();
        let asked = AtomicUsize::new(0);
        let check = || async {
            asked.fetch_add(1, Ordering::Relaxed);
            Some("database did not answer".to_owned())
        };
        for _ in 0..5 {
            let why = health.readiness(check).await;
            assert_eq!(why.as_deref(), Some("database did not answer"));
        }
        assert_eq!(asked.load(Ordering::Relaxed), 1);
        tokio::time::advance(READINESS_FRESH).await;
        health.readiness(check).await;
        assert_eq!(asked.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_failure_marks_the_store_failing_until_it_answers_again() {
        let health = Health::new();
        health.observed(true);
        assert!(!health.failing.load(Ordering::Relaxed));
        health.observed(false);
        health.observed(false);
        assert!(health.failing.load(Ordering::Relaxed));
        health.observed(true);
        assert!(!health.failing.load(Ordering::Relaxed));
    }
}
