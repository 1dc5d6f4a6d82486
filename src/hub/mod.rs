//! The hub: shared state around the sans-I/O core. It keeps the registries, serialises
//! each conversation behind its own lock, commits changes, fans frames out and arms the
//! recall timers.

mod replica;
pub mod sessions;
mod timers;

use crate::clock::Clock;
use crate::cluster::DIRECTORY;
use crate::core::{
    Actor, Change, Conversation, Ctx, Directory, Outcome, RecallTimer, Refusal, SendLog,
};
use crate::store::{Store, StoreError};
use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use parley_protocol::{
    AckResult, ConversationKind, ErrorCode, Limits, MessageKind, Op, ReportTarget, ReportView,
    Request, ServerFrame, UserId, PROTOCOL_VERSION,
};
use replica::{Claimed, Replica};
use sessions::{SessionHandle, Sessions};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Mutex as AsyncMutex, OwnedMutexGuard};

pub use sessions::{encode, Outbox};

/// Changes per conversation in one sync answer; the client syncs again when `more` is set.
const SYNC_PAGE: usize = 200;

type SharedConversation = Arc<AsyncMutex<Conversation>>;

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
    conversations: DashMap<String, SharedConversation>,
    by_user: DashMap<UserId, Vec<String>>,
    send_logs: DashMap<UserId, SendLog>,
    reports: Mutex<Vec<ReportView>>,
    sessions: Sessions,
    timers: mpsc::UnboundedSender<RecallTimer>,
    next_session: AtomicU64,
    requests: Option<governor::DefaultKeyedRateLimiter<UserId>>,
    stopping: std::sync::atomic::AtomicBool,
}

/// Stable namespace for ids derived from client request ids.
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x7061_726c_6579_0000_8000_0000_0000_0001);

fn derived_id(prefix: &str, parts: &[&str]) -> String {
    let name = parts.join("\u{0}");
    format!(
        "{prefix}-{}",
        uuid::Uuid::new_v5(&ID_NAMESPACE, name.as_bytes()).simple()
    )
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
    /// A hub over `store`, its state rebuilt from every committed change, with its
    /// recall-timer task running on the current runtime.
    pub fn start(
        limits: Limits,
        store: Arc<dyn Store>,
        max_queue_bytes: usize,
    ) -> Result<Arc<Hub>, StoreError> {
        let changes = store.load()?;
        let hub = Hub::build(limits, Backend::Local(store), max_queue_bytes, 0);
        hub.restore(changes);
        Ok(hub)
    }

    fn build(limits: Limits, backend: Backend, max_queue_bytes: usize, node: u32) -> Arc<Hub> {
        let (tx, rx) = mpsc::unbounded_channel();
        let clock = Clock::start();
        let hub = Arc::new(Hub {
            limits,
            clock: clock.clone(),
            backend,
            max_queue_bytes,
            directory: RwLock::new(Directory::default()),
            conversations: DashMap::new(),
            by_user: DashMap::new(),
            send_logs: DashMap::new(),
            reports: Mutex::new(Vec::new()),
            sessions: Sessions::default(),
            timers: tx,
            next_session: AtomicU64::new(Hub::first_session_id(node)),
            requests: rate_limiter(limits.requests_per_second, limits.request_burst),
            stopping: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(timers::run(Arc::downgrade(&hub), clock, rx));
        hub
    }

    /// Rebuild the state from committed changes, re-arm open recall windows and refill
    /// the throttle's send logs.
    fn restore(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let count = changes.len();
        let mut dir = self.directory.write();
        for change in changes {
            match (&change, change.conversation()) {
                (Change::ConversationCreated { conversation: v }, _) => {
                    let conv = Conversation::new(
                        v.id.clone(),
                        v.kind,
                        v.participants.clone(),
                        v.title.clone(),
                        0,
                    );
                    for p in &v.participants {
                        self.by_user
                            .entry(p.clone())
                            .or_default()
                            .push(v.id.clone());
                    }
                    self.conversations
                        .insert(v.id.clone(), Arc::new(AsyncMutex::new(conv)));
                }
                (Change::Reported { report }, _) => self.reports.lock().push(report.clone()),
                (_, Some(id)) => {
                    if let Some(shared) = self.conversation(id) {
                        shared
                            .try_lock()
                            .expect("nothing else runs during restore")
                            .replay(&change);
                    }
                }
                (_, None) => dir.replay(&change),
            }
        }
        let ctx = self.ctx(&dir);
        let since = ctx.now - self.limits.recall_throttle_window_ms as i64;
        let mut sends = Vec::new();
        for entry in self.conversations.iter() {
            let conv = entry
                .value()
                .try_lock()
                .expect("nothing else runs during restore");
            for timer in conv.open_recall_windows(&ctx) {
                let _ = self.timers.send(timer);
            }
            sends.extend(conv.sent_since(since).map(|(u, at)| (u.to_owned(), at)));
        }
        sends.sort_by_key(|(_, at)| *at);
        for (user, at) in sends {
            self.send_logs
                .entry(user)
                .or_default()
                .record(at, self.limits.recall_throttle_window_ms);
        }
        tracing::info!(
            changes = count,
            conversations = self.conversations.len(),
            "state restored"
        );
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
                tracing::error!(error = %e, "cannot record new user");
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
    /// so two nodes meeting a new user at once record it once).
    async fn record_user(&self, user: &str) -> Result<(), StoreError> {
        let claimed = self.claim(DIRECTORY).await?;
        let created = self.directory.write().ensure_user(user);
        let mut changes: Vec<Change> = created.into_iter().collect();
        if let Some((scope, seq)) = self.commit_claimed(claimed, &mut changes, &[]).await? {
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
            online: self,
        }
    }

    /// Commit, fan out, answer and arm the timer — in that order, so nothing is
    /// acknowledged or shown before it is durable.
    async fn finish(&self, session: &SessionHandle, id: String, result: Result<Outcome, Refusal>) {
        self.finish_claimed(Claimed::none(), session, id, result)
            .await
    }

    /// [`Hub::finish`] for a decision taken on a claimed scope; called with the
    /// conversation locked (when there is one), which keeps every session's view of it in
    /// one order.
    async fn finish_claimed(
        &self,
        claimed: Claimed,
        session: &SessionHandle,
        id: String,
        result: Result<Outcome, Refusal>,
    ) {
        let mut out = match result {
            Ok(out) => out,
            Err(refusal) => {
                claimed.release().await;
                crate::metrics::error(refusal.code().as_str());
                tracing::debug!(user = %session.user, request = %id, %refusal, "refused");
                return session.send(&error_frame(Some(id), refusal.code(), refusal.to_string()));
            }
        };
        let committed = match self
            .commit_claimed(claimed, &mut out.changes, &out.emits)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, user = %session.user, "commit failed; closing session");
                return session.close(1011, "storage unavailable");
            }
        };
        for emit in &out.emits {
            self.sessions.deliver(emit);
        }
        session.send(&ServerFrame::Ack {
            id,
            result: out.ack,
        });
        if let Some(timer) = out.timer {
            let _ = self.timers.send(timer);
        }
        if let Some((scope, seq)) = committed {
            self.publish_entry(&scope, seq, out.changes, out.emits);
        }
    }

    /// Take a scope, or close the session when the ledger cannot be reached.
    async fn claim_or_close(&self, session: &SessionHandle, scope: &str) -> Option<Claimed> {
        match self.claim(scope).await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, user = %session.user, "cannot claim; closing session");
                session.close(1011, "storage unavailable");
                None
            }
        }
    }

    fn conversation(&self, id: &str) -> Option<SharedConversation> {
        self.conversations.get(id).map(|c| c.clone())
    }

    /// Run a rule on one conversation under its lock; a rule that `decides` (may change
    /// something) first claims the conversation, which in a cluster locks it on every node.
    async fn on_conversation(
        &self,
        session: &SessionHandle,
        actor: &Actor,
        id: String,
        conversation: &str,
        decides: bool,
        rule: impl FnOnce(&mut Conversation, &Ctx) -> Result<Outcome, Refusal>,
    ) {
        let claimed = if decides {
            let Some(c) = self.claim_or_close(session, conversation).await else {
                return;
            };
            c
        } else {
            // A read-only answer still reflects everything committed on any node.
            if let Err(e) = self.catch_up(conversation, None).await {
                tracing::warn!(error = %e, "cannot catch up; answering from this node's copy");
            }
            Claimed::none()
        };
        let Some(shared) = self.conversation(conversation) else {
            let refused = Err(Refusal::NotFound("conversation"));
            return self.finish_claimed(claimed, session, id, refused).await;
        };
        let mut conv = shared.lock().await;
        let result = if conv.is_participant(&actor.user) {
            let dir = self.directory.read();
            rule(&mut conv, &self.ctx(&dir))
        } else {
            Err(Refusal::NotFound("conversation"))
        };
        self.finish_claimed(claimed, session, id, result).await;
    }

    /// Run `rule` on conversation `id` under its lock, making the conversation with `make`
    /// when it does not exist yet. A new conversation is published, and announced ahead of
    /// the rule's own frames, only when the rule succeeds: a refused first request leaves
    /// nothing behind. The guard keeps the conversation locked until the outcome is committed.
    async fn on_new_or_existing(
        &self,
        id: String,
        make: impl FnOnce() -> Conversation,
        except: Option<&Actor>,
        rule: impl FnOnce(&mut Conversation) -> Result<Outcome, Refusal>,
    ) -> (OwnedMutexGuard<Conversation>, Result<Outcome, Refusal>) {
        let existing = match self.conversations.entry(id) {
            dashmap::Entry::Occupied(e) => e.get().clone(),
            dashmap::Entry::Vacant(v) => {
                let shared = Arc::new(AsyncMutex::new(make()));
                let mut guard = shared.clone().try_lock_owned().expect("fresh lock is free");
                let out = match rule(&mut guard) {
                    Ok(out) => out,
                    Err(refusal) => return (guard, Err(refusal)),
                };
                v.insert(shared);
                for p in guard.participants() {
                    self.by_user
                        .entry(p.clone())
                        .or_default()
                        .push(guard.id().to_owned());
                }
                let mut announce = Outcome::with_ack(out.ack);
                announce.changes.push(guard.created());
                announce.changes.extend(out.changes);
                let to = guard
                    .participants()
                    .iter()
                    .map(|p| crate::core::Target {
                        user: p.clone(),
                        except: except.filter(|a| &a.user == p).map(|a| a.session),
                    })
                    .collect();
                announce.emit(
                    to,
                    ServerFrame::Conversation {
                        conversation: guard.view(),
                    },
                );
                announce.emits.extend(out.emits);
                announce.timer = out.timer;
                return (guard, Ok(announce));
            }
        };
        let mut guard = existing.lock_owned().await;
        let result = rule(&mut guard);
        (guard, result)
    }

    fn record_send(&self, user: &str, out: &Outcome) {
        if out
            .changes
            .iter()
            .any(|c| matches!(c, Change::MessageStored { .. }))
        {
            self.send_logs
                .entry(user.to_owned())
                .or_default()
                .record(self.clock.now(), self.limits.recall_throttle_window_ms);
        }
    }

    fn sent_recently(&self, user: &str) -> u32 {
        let window = self.limits.recall_throttle_window_ms;
        self.send_logs
            .get(user)
            .map_or(0, |log| log.count(self.clock.now(), window))
    }

    /// The send rule on a locked conversation; a stored message counts for the throttle.
    #[allow(clippy::too_many_arguments)]
    fn send_rule(
        &self,
        actor: &Actor,
        conv: &mut Conversation,
        client_id: &str,
        body: String,
        reply_to: Option<String>,
        kind: MessageKind,
        cc: Vec<UserId>,
    ) -> Result<Outcome, Refusal> {
        let result = {
            let dir = self.directory.read();
            let ctx = self.ctx(&dir);
            conv.send(&ctx, actor, client_id, body, reply_to, kind, cc, || {
                format!("m-{}", uuid::Uuid::now_v7().simple())
            })
        };
        if let Ok(out) = &result {
            self.record_send(&actor.user, out);
        }
        result
    }

    /// Apply one parsed request.
    pub async fn handle(&self, session: &SessionHandle, actor: &Actor, request: Request) {
        let Request { id, op } = request;
        let me = actor.user.clone();
        match op {
            Op::Send {
                conversation,
                to,
                body,
                reply_to,
            } => match (conversation, to) {
                (Some(c), None) => {
                    let Some(claimed) = self.claim_or_close(session, &c).await else {
                        return;
                    };
                    let Some(shared) = self.conversation(&c) else {
                        let refused = Err(Refusal::NotFound("conversation"));
                        return self.finish_claimed(claimed, session, id, refused).await;
                    };
                    let mut conv = shared.lock_owned().await;
                    let result = if conv.is_participant(&me) {
                        let kind = MessageKind::Message;
                        self.send_rule(actor, &mut conv, &id, body, reply_to, kind, vec![])
                    } else {
                        Err(Refusal::NotFound("conversation"))
                    };
                    self.finish_claimed(claimed, session, id, result).await;
                }
                (None, Some(to)) => {
                    // Connection and block checks are the send rule's, after the request-id
                    // lookup, so a retried send gets its original answer.
                    if to == me {
                        let r = Err(Refusal::RecipientUnavailable);
                        return self.finish(session, id, r).await;
                    }
                    let mut pair = [me.clone(), to.clone()];
                    pair.sort();
                    let cid = derived_id("d", &[&pair[0], &pair[1]]);
                    let now = self.clock.now();
                    let make = || {
                        let participants = vec![me.clone(), to.clone()];
                        Conversation::new(
                            cid.clone(),
                            ConversationKind::Direct,
                            participants,
                            None,
                            now,
                        )
                    };
                    let Some(claimed) = self.claim_or_close(session, &cid).await else {
                        return;
                    };
                    let (_conv, result) = self
                        .on_new_or_existing(cid.clone(), make, Some(actor), |c| {
                            let kind = MessageKind::Message;
                            self.send_rule(actor, c, &id, body, reply_to, kind, vec![])
                        })
                        .await;
                    self.finish_claimed(claimed, session, id, result).await;
                }
                _ => {
                    let r =
                        Refusal::BadRequest("give exactly one of `conversation` and `to`".into());
                    self.finish(session, id, Err(r)).await
                }
            },
            Op::Inmail { to, cc, body } => {
                let mut participants = vec![me.clone(), to.clone()];
                for c in cc {
                    if !participants.contains(&c) {
                        participants.push(c);
                    }
                }
                let cid = derived_id("i", &[&me, &id]);
                let Some(claimed) = self.claim_or_close(session, &cid).await else {
                    return;
                };
                // A retry finds its conversation and gets its original answer.
                let retry = self.conversations.contains_key(&cid);
                let checked = if retry {
                    Ok(())
                } else {
                    let dir = self.directory.read();
                    participants[1..]
                        .iter()
                        .try_for_each(|p| dir.check_inmail(&me, p))
                };
                if let Err(r) = checked {
                    return self.finish_claimed(claimed, session, id, Err(r)).await;
                }
                let cc = participants[2..].to_vec();
                let now = self.clock.now();
                let make = || {
                    Conversation::new(
                        cid.clone(),
                        ConversationKind::Inmail,
                        participants,
                        None,
                        now,
                    )
                };
                let (_conv, result) = self
                    .on_new_or_existing(cid.clone(), make, Some(actor), |c| {
                        self.send_rule(actor, c, &id, body, None, MessageKind::Inmail, cc)
                    })
                    .await;
                self.finish_claimed(claimed, session, id, result).await;
            }
            Op::CreateGroup { members, title } => {
                let mut participants = vec![me.clone()];
                for m in members {
                    if !participants.contains(&m) {
                        participants.push(m);
                    }
                }
                // Claimed before the checks: in a cluster, the claim brings in every
                // connection and block committed on any node.
                let cid = derived_id("g", &[&me, &id]);
                let Some(claimed) = self.claim_or_close(session, &cid).await else {
                    return;
                };
                let checked = if participants.len() < 3 {
                    Err(Refusal::BadRequest(
                        "a group needs at least two other members".into(),
                    ))
                } else {
                    let dir = self.directory.read();
                    participants[1..]
                        .iter()
                        .try_for_each(|p| dir.check_direct(&me, p))
                        .and_then(|()| {
                            let blocked = participants[1..].iter().enumerate().any(|(i, a)| {
                                participants[i + 2..]
                                    .iter()
                                    .any(|b| dir.blocked_either(a, b))
                            });
                            if blocked {
                                Err(Refusal::RecipientUnavailable)
                            } else {
                                Ok(())
                            }
                        })
                };
                if let Err(r) = checked {
                    return self.finish_claimed(claimed, session, id, Err(r)).await;
                }
                let now = self.clock.now();
                let make = || {
                    Conversation::new(
                        cid.clone(),
                        ConversationKind::Group,
                        participants,
                        title,
                        now,
                    )
                };
                let (_conv, result) = self
                    .on_new_or_existing(cid.clone(), make, Some(actor), |c| {
                        Ok(Outcome::with_ack(AckResult::Conversation {
                            conversation: c.view(),
                        }))
                    })
                    .await;
                self.finish_claimed(claimed, session, id, result).await;
            }
            Op::Read {
                conversation,
                message,
            } => {
                self.on_conversation(session, actor, id, &conversation, true, |c, ctx| {
                    c.read(ctx, actor, &message)
                })
                .await
            }
            Op::Recall {
                conversation,
                message,
            } => {
                // Counted before the lock: a send racing this recall may or may not count,
                // either order is a valid serialisation.
                let sent = match self.sent_recently_everywhere(&me).await {
                    Some(n) => n,
                    None => self.sent_recently(&me),
                };
                self.on_conversation(session, actor, id, &conversation, true, |c, ctx| {
                    let result = c.recall(ctx, actor, &message, sent);
                    crate::metrics::recall(
                        result.as_ref().map_or_else(|r| r.code().as_str(), |_| "ok"),
                    );
                    result
                })
                .await
            }
            Op::DeleteInmail {
                conversation,
                message,
            } => {
                self.on_conversation(session, actor, id, &conversation, true, |c, ctx| {
                    c.delete_inmail(ctx, actor, &message)
                })
                .await
            }
            Op::DeleteForMe {
                conversation,
                message,
            } => {
                self.on_conversation(session, actor, id, &conversation, true, |c, _| {
                    c.delete_for_me(actor, &message)
                })
                .await
            }
            Op::Mute {
                conversation,
                muted,
            } => {
                self.on_conversation(session, actor, id, &conversation, true, |c, _| {
                    c.set_flags(actor, Some(muted), None)
                })
                .await
            }
            Op::Hide {
                conversation,
                hidden,
            } => {
                self.on_conversation(session, actor, id, &conversation, true, |c, _| {
                    c.set_flags(actor, None, Some(hidden))
                })
                .await
            }
            Op::Typing { conversation } => {
                self.on_conversation(session, actor, id, &conversation, false, |c, ctx| {
                    c.typing(ctx, actor)
                })
                .await
            }
            Op::History {
                conversation,
                before,
                limit,
            } => {
                self.on_conversation(session, actor, id, &conversation, false, |c, ctx| {
                    c.history(ctx, &me, before, limit).map(Outcome::with_ack)
                })
                .await
            }
            Op::Report { target, reason } => self.report(session, actor, id, target, reason).await,
            Op::ListReports {} => {
                let result = if actor.admin {
                    Ok(Outcome::with_ack(AckResult::Reports {
                        reports: self.reports.lock().clone(),
                    }))
                } else {
                    Err(Refusal::Forbidden)
                };
                self.finish(session, id, result).await
            }
            Op::Connect { user } => {
                self.on_directory(session, id, |d| d.connect(actor, &user))
                    .await
            }
            Op::Accept { user } => {
                self.on_directory(session, id, |d| d.accept(actor, &user))
                    .await
            }
            Op::Decline { user } => {
                self.on_directory(session, id, |d| d.decline(actor, &user))
                    .await
            }
            Op::Disconnect { user } => {
                self.on_directory(session, id, |d| d.disconnect(actor, &user))
                    .await
            }
            Op::Block { user } => {
                self.on_directory(session, id, |d| d.block(actor, &user))
                    .await
            }
            Op::Unblock { user } => {
                self.on_directory(session, id, |d| d.unblock(actor, &user))
                    .await
            }
            Op::Settings {
                who_can_message,
                read_receipts,
                notification_preview,
            } => {
                self.on_directory(session, id, |d| {
                    Ok(d.update_settings(actor, |s| {
                        s.who_can_message = who_can_message.unwrap_or(s.who_can_message);
                        s.read_receipts = read_receipts.unwrap_or(s.read_receipts);
                        s.notification_preview =
                            notification_preview.unwrap_or(s.notification_preview);
                    }))
                })
                .await
            }
            Op::Lookup { user } => {
                if let Err(e) = self.catch_up(DIRECTORY, None).await {
                    tracing::warn!(error = %e, "cannot catch up; answering from this node's copy");
                }
                let result = self
                    .directory
                    .read()
                    .lookup(&me, &user)
                    .map(Outcome::with_ack);
                self.finish(session, id, result).await
            }
            Op::Sync { positions } => {
                let ack = self.sync(&me, positions).await;
                self.finish(session, id, Ok(Outcome::with_ack(ack))).await
            }
        }
    }

    /// Run a directory rule under the directory's write lock (released before committing).
    async fn on_directory(
        &self,
        session: &SessionHandle,
        id: String,
        rule: impl FnOnce(&mut Directory) -> Result<Outcome, Refusal>,
    ) {
        let Some(claimed) = self.claim_or_close(session, DIRECTORY).await else {
            return;
        };
        let result = rule(&mut self.directory.write());
        self.finish_claimed(claimed, session, id, result).await;
    }

    async fn report(
        &self,
        session: &SessionHandle,
        actor: &Actor,
        id: String,
        target: ReportTarget,
        reason: String,
    ) {
        // Keyed by reporter and request id: a retried report files nothing new.
        let report_id = derived_id("r", &[&actor.user, &id]);
        if self.reports.lock().iter().any(|r| r.id == report_id) {
            let ack = AckResult::Reported { report: report_id };
            return self.finish(session, id, Ok(Outcome::with_ack(ack))).await;
        }
        let file = |snapshot, now| {
            let report = ReportView {
                id: report_id.clone(),
                reporter: actor.user.clone(),
                target: target.clone(),
                reason: reason.clone(),
                at: now,
                snapshot,
            };
            self.reports.lock().push(report.clone());
            let mut out = Outcome::with_ack(AckResult::Reported {
                report: report_id.clone(),
            });
            out.changes.push(Change::Reported { report });
            out
        };
        match &target {
            ReportTarget::Message {
                conversation,
                message,
            } => {
                self.on_conversation(session, actor, id, conversation, true, |c, ctx| {
                    let snapshot = c.snapshot(ctx, &actor.user, message)?;
                    Ok(file(Some(snapshot), ctx.now))
                })
                .await
            }
            ReportTarget::User { user } => {
                let Some(claimed) = self.claim_or_close(session, DIRECTORY).await else {
                    return;
                };
                let exists = self.directory.read().exists(user) && *user != actor.user;
                let result = if exists {
                    Ok(file(None, self.clock.now()))
                } else {
                    Err(Refusal::NotFound("user"))
                };
                self.finish_claimed(claimed, session, id, result).await
            }
        }
    }

    /// Everything `user` should see on (re)connecting.
    async fn sync(&self, user: &str, positions: Option<BTreeMap<String, u64>>) -> AckResult {
        let ids = self
            .by_user
            .get(user)
            .map(|v| v.clone())
            .unwrap_or_default();
        // Everything committed anywhere before this request is answered.
        self.catch_up_all(ids.clone()).await;
        let ids = self
            .by_user
            .get(user)
            .map(|v| v.clone())
            .unwrap_or_default();
        let mut rows = Vec::new();
        let mut notifications = Vec::new();
        let mut updates = Vec::new();
        for cid in ids {
            let Some(shared) = self.conversation(&cid) else {
                continue;
            };
            let mut conv = shared.lock().await;
            let dir = self.directory.read();
            let ctx = self.ctx(&dir);
            if let Some(entry) = conv.inbox_entry(&ctx, user) {
                rows.push((conv.last_activity(), entry));
            }
            notifications.extend(conv.take_pending(&ctx, user));
            if let Some(positions) = &positions {
                let since = positions.get(&cid).copied().unwrap_or(0);
                updates.extend(conv.updates_since(&ctx, user, since, SYNC_PAGE));
            }
        }
        rows.sort_by_key(|row| std::cmp::Reverse(row.0));
        notifications.sort_by_key(|n| n.sent_at);
        let dir = self.directory.read();
        let [connections, incoming_requests, outgoing_requests, blocked] = dir.relations(user);
        AckResult::Sync {
            inbox: rows.into_iter().map(|(_, e)| e).collect(),
            notifications,
            connections,
            incoming_requests,
            outgoing_requests,
            blocked,
            settings: dir.settings(user),
            updates,
        }
    }

    /// A recall window closed: if recall was still on offer, tell the sender it is gone.
    async fn recall_window_closed(&self, timer: &RecallTimer) {
        // Every node runs this timer and tells only its own sessions; catching up first
        // means a read or recall committed on another node before the deadline counts.
        if let Err(e) = self.catch_up(&timer.conversation, None).await {
            tracing::warn!(error = %e, "cannot catch up before a recall window closes");
        }
        let Some(shared) = self.conversation(&timer.conversation) else {
            return;
        };
        let mut conv = shared.lock().await;
        let out = {
            let dir = self.directory.read();
            conv.recall_expired(&self.ctx(&dir), &timer.message)
        };
        for emit in out.iter().flat_map(|o| &o.emits) {
            self.sessions.deliver(emit);
        }
    }

    /// Stop being ready: the server is going away.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::Relaxed);
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
