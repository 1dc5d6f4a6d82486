//! Who gets a connection at TCP accept, before a byte of HTTP is read.
//!
//! A connection that sends half a request head and stops costs the server a file
//! descriptor for as long as it is let be; enough of them lock every client out. So the
//! connections still sending their head a second after they opened are capped per address
//! and overall, and when the overall cap is full the one that has waited longest makes
//! room: a real client finishes its head in milliseconds and is never the oldest for long,
//! a staller always is. All open
//! connections are capped below the file limit, and a few slots past that cap are kept
//! back to answer `/healthz` and `/readyz`, so an orchestrator never mistakes a full server
//! for a dead one.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Connections answered at capacity at once (health probes); past them a connection is
/// closed unanswered.
pub const AT_CAPACITY_RESERVE: usize = 16;

/// File descriptors kept for everything that is not a client connection: the store's
/// files, database and broker connections, logs.
pub const FILES_FOR_THE_SERVER: u64 = 256;

/// The caps, from the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeLimits {
    /// Time a connection has to send a complete request head (and an idle keep-alive
    /// connection to start its next one).
    pub header_timeout: Duration,
    /// Connections still sending their request head, overall.
    pub max_handshakes: usize,
    /// Connections still sending their request head, from one address.
    pub max_handshakes_per_ip: usize,
    /// Open connections (sessions included); 0 sizes it from the open-file limit.
    pub max_connections: usize,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        EdgeLimits {
            header_timeout: Duration::from_secs(10),
            max_handshakes: 1024,
            max_handshakes_per_ip: 64,
            max_connections: 0,
        }
    }
}

impl EdgeLimits {
    /// `max_connections`, or the open-file limit less what the server needs for itself.
    pub fn connection_cap(&self) -> usize {
        if self.max_connections > 0 {
            return self.max_connections;
        }
        let files = rlimit::Resource::NOFILE
            .get()
            .map(|(soft, _)| soft)
            .unwrap_or(1024);
        let spare = files.saturating_sub(FILES_FOR_THE_SERVER + AT_CAPACITY_RESERVE as u64);
        usize::try_from(spare).unwrap_or(usize::MAX).max(1)
    }
}

/// What a new connection gets.
pub enum Admitted {
    /// Served in full.
    Serve(Handshake),
    /// The server is at its connection cap: only the health routes are answered.
    AtCapacity(Reserved),
    /// Closed at once, with a canned answer.
    Refused(Refused),
}

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its address already has `max_handshakes_per_ip` unfinished request heads.
    AddressBusy,
    /// At the connection cap, and the health reserve is in use too.
    Full,
}

impl Refused {
    /// The whole HTTP answer, written before the connection is closed.
    pub fn response(self) -> String {
        let (status, body) = match self {
            Refused::AddressBusy => (
                "429 Too Many Requests",
                "too many unfinished requests from your address\n",
            ),
            Refused::Full => ("503 Service Unavailable", "at capacity\n"),
        };
        format!(
            "HTTP/1.1 {status}\r\nconnection: close\r\nretry-after: 1\r\n\
             content-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

/// How long a connection may take over its request head before it counts against the
/// caps. A burst of real clients (a reconnect storm, a NAT, a load test) has many heads in
/// flight for a few milliseconds each; a staller's head is still unfinished a second later.
pub const STALE_AFTER: Duration = Duration::from_secs(1);

struct Pending {
    addr: IpAddr,
    opened: Instant,
    evicted: CancellationToken,
}

#[derive(Default)]
struct Unfinished {
    /// By age: the first is the one that has waited longest.
    by_age: BTreeMap<u64, Pending>,
    /// Per address, its unfinished connections by age: (id, when opened).
    by_address: HashMap<IpAddr, VecDeque<(u64, Instant)>>,
    next: u64,
}

impl Unfinished {
    fn forget(&mut self, id: u64) -> Option<Pending> {
        let pending = self.by_age.remove(&id)?;
        if let Some(mine) = self.by_address.get_mut(&pending.addr) {
            // Heads mostly finish in the order they started: the id is near the front.
            if let Some(at) = mine.iter().position(|(other, _)| *other == id) {
                mine.remove(at);
            }
            if mine.is_empty() {
                self.by_address.remove(&pending.addr);
            }
        }
        Some(pending)
    }

    /// Whether `addr` already has `cap` unfinished connections older than the grace.
    fn address_full(&self, addr: IpAddr, cap: usize, stale: Instant) -> bool {
        let Some(mine) = self.by_address.get(&addr) else {
            return false;
        };
        cap == 0
            || mine
                .get(cap - 1)
                .is_some_and(|(_, opened)| *opened <= stale)
    }

    /// Close stale connections, oldest first, until fewer than `cap` are unfinished.
    fn make_room(&mut self, cap: usize, stale: Instant) {
        while self.by_age.len() >= cap {
            let Some((&oldest, pending)) = self.by_age.first_key_value() else {
                return;
            };
            if pending.opened > stale {
                return;
            }
            if let Some(pending) = self.forget(oldest) {
                pending.evicted.cancel();
            }
        }
    }
}

/// The counters every accepted connection is admitted against.
pub struct Admission {
    limits: EdgeLimits,
    cap: usize,
    open: AtomicUsize,
    reserved: AtomicUsize,
    unfinished: Mutex<Unfinished>,
}

impl Admission {
    /// Counters for `limits`, the connection cap fixed now.
    pub fn new(limits: EdgeLimits) -> Arc<Admission> {
        Arc::new(Admission {
            cap: limits.connection_cap(),
            limits,
            open: AtomicUsize::new(0),
            reserved: AtomicUsize::new(0),
            unfinished: Mutex::default(),
        })
    }

    /// The caps in force.
    pub fn limits(&self) -> EdgeLimits {
        self.limits
    }

    /// The open-connection cap in force.
    pub fn connection_cap(&self) -> usize {
        self.cap
    }

    /// Connections open now, sessions included.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections still sending their request head now.
    pub fn unfinished(&self) -> usize {
        self.unfinished.lock().by_age.len()
    }

    /// Admit a connection from `addr`, against its address's own cap if `per_address`.
    pub fn admit(self: &Arc<Self>, addr: IpAddr, per_address: bool) -> Admitted {
        self.admit_at(addr, per_address, Instant::now())
    }

    fn admit_at(self: &Arc<Self>, addr: IpAddr, per_address: bool, now: Instant) -> Admitted {
        if self.open.load(Ordering::Relaxed) >= self.cap {
            return match self.reserve() {
                Some(reserved) => Admitted::AtCapacity(reserved),
                None => Admitted::Refused(Refused::Full),
            };
        }
        let stale = now.checked_sub(STALE_AFTER).unwrap_or(now);
        let mut unfinished = self.unfinished.lock();
        if per_address && unfinished.address_full(addr, self.limits.max_handshakes_per_ip, stale) {
            return Admitted::Refused(Refused::AddressBusy);
        }
        unfinished.make_room(self.limits.max_handshakes, stale);
        let id = unfinished.next;
        unfinished.next += 1;
        let evicted = CancellationToken::new();
        let pending = Pending {
            addr,
            opened: now,
            evicted: evicted.clone(),
        };
        unfinished.by_age.insert(id, pending);
        unfinished
            .by_address
            .entry(addr)
            .or_default()
            .push_back((id, now));
        drop(unfinished);
        Admitted::Serve(Handshake {
            id,
            evicted,
            head_read: AtomicBool::new(false),
            open: self.hold(),
        })
    }

    /// Count one more open connection for as long as the guard lives.
    pub fn hold(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::Relaxed);
        Open(self.clone())
    }

    fn reserve(self: &Arc<Self>) -> Option<Reserved> {
        let taken = self.reserved.fetch_add(1, Ordering::Relaxed);
        let reserved = Reserved(self.clone());
        (taken < AT_CAPACITY_RESERVE).then_some(reserved)
    }
}

/// One open connection counted against the cap, until dropped.
pub struct Open(Arc<Admission>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One health-reserve slot, until dropped.
pub struct Reserved(Arc<Admission>);

impl Drop for Reserved {
    fn drop(&mut self) {
        self.0.reserved.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection admitted while it sends its request head.
pub struct Handshake {
    id: u64,
    evicted: CancellationToken,
    head_read: AtomicBool,
    open: Open,
}

impl Handshake {
    /// Its request head is in: it no longer counts as unfinished, and is never evicted.
    pub fn head_read(&self) {
        if !self.head_read.swap(true, Ordering::Relaxed) {
            self.open.0.unfinished.lock().forget(self.id);
        }
    }

    /// Resolves if it is evicted to make room for a newer connection.
    pub async fn evicted(&self) {
        self.evicted.cancelled().await
    }

    /// The admission it counts against, for a session to hold its own slot.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.open.0
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.head_read();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_handshakes: usize, per_ip: usize, max_connections: usize) -> EdgeLimits {
        EdgeLimits {
            header_timeout: Duration::from_secs(1),
            max_handshakes,
            max_handshakes_per_ip: per_ip,
            max_connections,
        }
    }

    /// Moments each far enough after the last that every connection before is stale.
    struct Later(std::cell::Cell<Instant>);

    impl Later {
        fn new() -> Later {
            Later(std::cell::Cell::new(Instant::now()))
        }

        fn next(&self) -> Instant {
            self.0.set(self.0.get() + 2 * STALE_AFTER);
            self.0.get()
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn served(admitted: Admitted) -> Handshake {
        match admitted {
            Admitted::Serve(h) => h,
            _ => panic!("expected to be served"),
        }
    }

    #[test]
    fn an_address_over_its_unfinished_cap_is_refused_until_one_finishes() {
        let at = Later::new();
        let admission = Admission::new(limits(100, 2, 100));
        let first = served(admission.admit_at(ip(1), true, at.next()));
        let _second = served(admission.admit_at(ip(1), true, at.next()));
        assert!(matches!(
            admission.admit_at(ip(1), true, at.next()),
            Admitted::Refused(Refused::AddressBusy)
        ));
        let _other = served(admission.admit_at(ip(2), true, at.next()));
        first.head_read();
        let _third = served(admission.admit_at(ip(1), true, at.next()));
        assert_eq!(admission.unfinished(), 3);
        assert_eq!(admission.open(), 4);
    }

    #[test]
    fn a_full_handshake_cap_evicts_the_oldest_unfinished_connection() {
        let at = Later::new();
        let admission = Admission::new(limits(2, 10, 100));
        let oldest = served(admission.admit_at(ip(1), true, at.next()));
        let finished = served(admission.admit_at(ip(2), true, at.next()));
        finished.head_read();
        let middle = served(admission.admit_at(ip(3), true, at.next()));
        assert!(!oldest.evicted.is_cancelled());
        let _newest = served(admission.admit_at(ip(4), true, at.next()));
        assert!(oldest.evicted.is_cancelled(), "the oldest makes room");
        assert!(!middle.evicted.is_cancelled());
        assert!(
            !finished.evicted.is_cancelled(),
            "a finished head is never evicted"
        );
        assert_eq!(admission.unfinished(), 2);
    }

    #[test]
    fn at_the_connection_cap_only_the_reserve_is_answered_and_slots_come_back() {
        let at = Later::new();
        let admission = Admission::new(limits(100, 100, 2));
        let a = served(admission.admit_at(ip(1), true, at.next()));
        let _b = served(admission.admit_at(ip(2), true, at.next()));
        let reserved: Vec<_> = (0..AT_CAPACITY_RESERVE)
            .map(|_| match admission.admit_at(ip(3), true, at.next()) {
                Admitted::AtCapacity(r) => r,
                _ => panic!("expected the reserve"),
            })
            .collect();
        assert!(matches!(
            admission.admit_at(ip(3), true, at.next()),
            Admitted::Refused(Refused::Full)
        ));
        drop(reserved);
        assert!(matches!(
            admission.admit_at(ip(3), true, at.next()),
            Admitted::AtCapacity(_)
        ));
        let session = a.admission().hold();
        drop(a);
        assert_eq!(admission.open(), 2, "the session keeps the slot");
        drop(session);
        served(admission.admit_at(ip(4), true, at.next()));
    }

    #[test]
    fn a_burst_of_fresh_heads_is_never_refused_or_evicted() {
        let at = Later::new();
        let admission = Admission::new(limits(4, 2, 100));
        let now = at.next();
        let burst: Vec<_> = (0..20)
            .map(|_| served(admission.admit_at(ip(1), true, now)))
            .collect();
        assert!(burst.iter().all(|h| !h.evicted.is_cancelled()));
        let later = now + 2 * STALE_AFTER;
        assert!(
            matches!(
                admission.admit_at(ip(1), true, later),
                Admitted::Refused(Refused::AddressBusy)
            ),
            "a second on, they count"
        );
        served(admission.admit_at(ip(2), true, later));
        assert_eq!(
            burst.iter().filter(|h| h.evicted.is_cancelled()).count(),
            17
        );
    }

    #[test]
    fn nothing_is_kept_for_an_address_once_its_connections_are_gone() {
        let at = Later::new();
        let admission = Admission::new(limits(10, 10, 10));
        let all: Vec<_> = (1..=5)
            .map(|i| served(admission.admit_at(ip(i), true, at.next())))
            .collect();
        drop(all);
        let unfinished = admission.unfinished.lock();
        assert!(unfinished.by_age.is_empty() && unfinished.by_address.is_empty());
        drop(unfinished);
        assert_eq!(admission.open(), 0);
    }
}
