//! The hub: shared state around the sans-I/O core. It keeps the registries, serialises
//! each conversation behind its own lock and runs every request through one pipeline
//! (claim, decide, commit, apply, deliver, ack, arm, publish: see [`pipeline`]); each
//! request family's handler lives in its own file under `cmd/`.

mod apply;
mod cache;
mod cmd;
mod health;
mod pipeline;
mod replica;
mod sequencer;
pub mod sessions;
mod sweep;
mod timers;

use crate::clock::Clock;
use crate::cluster::DIRECTORY;
use crate::core::{Actor, Ctx, Directory, Online, RecallTimer, Reports, SendLog};
use crate::store::{LatelyAsked, Store, StoreError};
use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use parley_protocol::{ErrorCode, Limits, ServerFrame, UserId, PROTOCOL_VERSION};
use pipeline::Stripes;
use replica::Replica;
use sessions::{SessionHandle, Sessions};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

use apply::Applying;
use cache::{Cache, Slot};

pub use sessions::{encode, Outbox};
pub use sweep::WorkingSet;

/// Where decisions become durable.
enum Backend {
    /// This process alone: a local store.
    Local(Arc<dyn Store>),
    /// One node of several sharing a ledger.
    Node(Replica),
}

/// The shared state of one server.
pub struct Hub {
    limits: Limits,
    clock: Clock,
    backend: Backend,
    max_queue_bytes: usize,
    directory: RwLock<Directory>,
    /// Serialises this process's directory decisions per pair of users.
    directory_locks: Stripes,
    conversations: DashMap<String, Slot>,
    cache: Cache,
    by_user: DashMap<UserId, Vec<String>>,
    send_logs: DashMap<UserId, SendLog>,
    reports: Mutex<Reports>,
    sessions: Sessions,
    timers: mpsc::UnboundedSender<RecallTimer>,
    next_session: AtomicU64,
    requests: Option<governor::DefaultKeyedRateLimiter<UserId>>,
    stopping: AtomicBool,
    health: health::Health,
}

fn error_frame(id: Option<String>, code: ErrorCode, message: impl Into<String>) -> ServerFrame {
    ServerFrame::Error {
        id,
        code,
        message: message.into(),
    }
}

/// A keyed token bucket refilling `per_second` with bursts of `burst`; `None` when 0.
pub fn rate_limiter<K: std::hash::Hash + Eq + Clone>(
    per_second: u32,
    burst: u32,
) -> Option<governor::DefaultKeyedRateLimiter<K>> {
    let rate = std::num::NonZeroU32::new(per_second)?;
    let burst = std::num::NonZeroU32::new(burst.max(1)).expect("at least one");
    Some(governor::RateLimiter::keyed(
        governor::Quota::per_second(rate).allow_burst(burst),
    ))
}

impl Hub {
    /// A hub over `store`, with its recall-timer task running on the current runtime.
    /// A store that reads conversations on demand gives only the directory, the reports
    /// and the messages of the last minutes at start, and the hub holds at most
    /// `cache_limit` messages and state changes of the conversations used lately; any
    /// other store is read whole and held.
    pub fn start(
        limits: Limits,
        store: Arc<dyn Store>,
        max_queue_bytes: usize,
        cache_limit: usize,
    ) -> Result<Arc<Hub>, StoreError> {
        let backend = Backend::Local(store.clone());
        let hub = Hub::build(limits, backend, max_queue_bytes, 0, cache_limit);
        let mut count = 0usize;
        let mut each = |change| {
            count += 1;
            hub.restore_one(&change);
        };
        let Some(reads) = store.on_demand() else {
            store.load_each(&mut each)?;
            hub.restored(count);
            return Ok(hub);
        };
        reads.start_up(&mut each)?;
        let now = hub.clock.now();
        let lately = reads.lately(LatelyAsked {
            recall_since: now.saturating_sub(limits.recall_window_ms as i64),
            throttle_since: now.saturating_sub(limits.recall_throttle_window_ms as i64),
            sends_per_user: hub.sends_kept(),
        })?;
        hub.restore_lately(&lately);
        tracing::info!(
            changes = count,
            windows_open = lately.first_sent.len(),
            senders = lately.sends.len(),
            "directory read"
        );
        Ok(hub)
    }

    fn build(
        limits: Limits,
        backend: Backend,
        max_queue_bytes: usize,
        node: u32,
        cache_limit: usize,
    ) -> Arc<Hub> {
        let (tx, rx) = mpsc::unbounded_channel();
        let clock = Clock::start();
        let hub = Arc::new(Hub {
            limits,
            clock: clock.clone(),
            backend,
            max_queue_bytes,
            directory: RwLock::new(Directory::default()),
            directory_locks: Stripes::default(),
            conversations: DashMap::new(),
            cache: Cache::new(cache_limit),
            by_user: DashMap::new(),
            send_logs: DashMap::new(),
            reports: Mutex::new(Reports::default()),
            sessions: Sessions::default(),
            timers: tx,
            next_session: AtomicU64::new(Hub::first_session_id(node)),
            requests: rate_limiter(limits.requests_per_second, limits.request_burst),
            stopping: AtomicBool::new(false),
            health: health::Health::new(),
        });
        tokio::spawn(timers::run(Arc::downgrade(&hub), clock, rx));
        tokio::spawn(sweep::run(Arc::downgrade(&hub)));
        hub
    }

    /// Limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Live sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Open a session for an authenticated user: `hello` is queued first, then the session
    /// joins the fan-out; `None` when the user already holds `max_sessions_per_user`.
    pub async fn open_session(
        &self,
        user: &str,
        admin: bool,
    ) -> Option<(Arc<SessionHandle>, Outbox)> {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (session, outbox) =
            SessionHandle::new(id, user.to_owned(), admin, self.max_queue_bytes);
        if !self.directory.read().exists(user) {
            if let Err(e) = self.record_user(user).await {
                tracing::error!(error = %e, %user, "cannot record new user");
            }
        }
        let settings = self.directory.read().settings(user);
        session.send(&ServerFrame::Hello {
            protocol: PROTOCOL_VERSION,
            user: user.to_owned(),
            session: id.to_string(),
            server_time: self.clock.now(),
            limits: self.limits,
            settings,
        });
        let cap = self.limits.max_sessions_per_user as usize;
        if !self.sessions.register(session.clone(), cap) {
            return None;
        }
        if self.sessions.count(user) == 1 {
            self.presence_changed(user, true);
        }
        Some((session, outbox))
    }

    /// Record a user seen for the first time (in a cluster, under the directory's claim,
    /// so two nodes meeting a new user at once record it once). Recording it twice at
    /// once on one node is harmless: applying it is idempotent.
    async fn record_user(&self, user: &str) -> Result<(), StoreError> {
        let claimed = self.claim(DIRECTORY).await?;
        let created = self.directory.read().ensure_user(user);
        let changes: Vec<_> = created.into_iter().collect();
        let (changes, committed) = self.commit(claimed, changes, &[]).await?;
        self.apply(None, &changes, Applying::Live);
        if let Some((scope, seq)) = committed {
            self.publish_entry(&scope, seq, changes, Vec::new());
        }
        Ok(())
    }

    /// Stop delivering to a session.
    pub fn close_session(&self, session: &SessionHandle) {
        self.sessions.unregister(session);
        if self.sessions.count(&session.user) == 0 {
            self.presence_changed(&session.user, false);
        }
    }

    /// Parse one text frame from a session and answer it with exactly one `ack` or `error`.
    pub async fn dispatch(&self, session: &SessionHandle, text: &str) {
        if let Some(limiter) = &self.requests {
            if limiter.check_key(&session.user).is_err() {
                return self.refuse_flood(session, text);
            }
            session.refused_in_row.store(0, Ordering::Relaxed);
        }
        let request = match crate::frame::decode(text) {
            Ok(r) => r,
            Err(e) => {
                crate::metrics::error(e.code.as_str());
                return session.send(&error_frame(e.id, e.code, e.message));
            }
        };
        let actor = Actor {
            user: session.user.clone(),
            session: session.id,
            admin: session.admin,
        };
        let kind = request.op.kind();
        crate::metrics::frame_in(kind);
        let started = std::time::Instant::now();
        self.handle(session, &actor, request).await;
        crate::metrics::request(kind, started.elapsed().as_secs_f64());
    }

    /// Answer a request over the rate with `rate_limited`; a client that keeps going past a
    /// whole burst of refusals is cut off.
    fn refuse_flood(&self, session: &SessionHandle, text: &str) {
        let refused = session.refused_in_row.fetch_add(1, Ordering::Relaxed) + 1;
        if refused > self.limits.request_burst {
            tracing::info!(user = %session.user, "closing a session that keeps flooding");
            return session.close(parley_protocol::close::POLICY, "request flood");
        }
        let id = crate::frame::request_id(text);
        let msg = format!(
            "more than {} requests per second; slow down",
            self.limits.requests_per_second
        );
        session.send(&error_frame(id, ErrorCode::RateLimited, msg));
    }

    fn ctx<'a>(&'a self, directory: &'a Directory) -> Ctx<'a> {
        Ctx {
            now: self.clock.now(),
            limits: &self.limits,
            directory,
        }
    }

    /// Which of `users` have a live session, on this node or another: the presence a
    /// new message's notifications are decided with.
    fn online_among(&self, users: &[UserId]) -> Online {
        Online::AllBut(
            users
                .iter()
                .filter(|u| !self.is_online(u))
                .cloned()
                .collect(),
        )
    }

    fn is_online(&self, user: &str) -> bool {
        self.sessions.count(user) > 0 || self.replica().is_some_and(|r| r.online_elsewhere(user))
    }

    /// Stop being ready: the server is going away.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Why this server should not be sent new clients now, if it should not: shutting
    /// down, or (a cluster node) its database or broker not answering. A node asks them
    /// (each within the database's request deadline) at most once a second. A single
    /// server stays ready while its store fails: reads and live sessions still work there,
    /// and no other server could take its clients; `parley_store_reachable` says it.
    pub async fn unready(&self) -> Option<String> {
        if self.shutting_down() {
            return Some("shutting down".to_owned());
        }
        let r = self.replica()?;
        let check = || async {
            let (store, why) = r.unready().await;
            self.health.observed(store);
            why
        };
        self.health.readiness(check).await
    }

    /// Whether shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// The clock the hub runs on.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }
}
