//! The server clock: wall time anchored once and advanced by tokio's clock, so paused-time
//! tests drive every time rule; it can also be stepped forward by hand, which lets
//! wire-level tests cross a recall window without sleeping.

use parley_protocol::Millis;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Maps tokio instants to server milliseconds and back.
#[derive(Debug, Clone)]
pub struct Clock {
    base: Instant,
    base_millis: Millis,
    stepped: Arc<AtomicI64>,
    jumped: Arc<Notify>,
}

impl Clock {
    /// A clock reading the system time now.
    pub fn start() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as Millis;
        Clock {
            base: Instant::now(),
            base_millis: wall,
            stepped: Arc::new(AtomicI64::new(0)),
            jumped: Arc::new(Notify::new()),
        }
    }

    /// The server time now.
    pub fn now(&self) -> Millis {
        self.base_millis
            + self.stepped.load(Ordering::Acquire)
            + self.base.elapsed().as_millis() as Millis
    }

    /// The tokio instant at which the server time reaches `at` (now, if it has passed).
    pub fn instant_at(&self, at: Millis) -> Instant {
        let ahead = at.saturating_sub(self.now()).max(0) as u64;
        Instant::now() + Duration::from_millis(ahead)
    }

    /// Step the server time forward; timers due by then fire at once.
    pub fn advance(&self, by: Duration) {
        self.stepped
            .fetch_add(by.as_millis() as i64, Ordering::AcqRel);
        // One waiter (the timer task); a stored permit means a step is never missed.
        self.jumped.notify_one();
    }

    /// Resolves at the next [`Clock::advance`].
    pub async fn jumped(&self) {
        self.jumped.notified().await
    }
}
