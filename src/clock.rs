//! The server clock: wall time anchored once, advanced by tokio's clock so paused-time
//! tests drive every time rule deterministically.

use parley_protocol::Millis;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Maps tokio instants to server milliseconds and back.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    base_millis: Millis,
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
        }
    }

    /// The server time now.
    pub fn now(&self) -> Millis {
        self.base_millis + self.base.elapsed().as_millis() as Millis
    }

    /// The tokio instant at which the server time reaches `at`.
    pub fn instant_at(&self, at: Millis) -> Instant {
        let offset = at.saturating_sub(self.base_millis).max(0) as u64;
        self.base + Duration::from_millis(offset)
    }
}
