//! The one path every request takes: claim the scope, decide (a pure rule of the core),
//! commit the decision's changes, apply them to the state in memory, deliver the frames,
//! answer the requester, arm the recall timer, publish to the other nodes.
//!
//! Nothing is shown or acknowledged before it is committed: a failed commit changes
//! nothing and answers `unavailable`, so a retry with the same request id after recovery
//! is decided afresh and stored once. A decision on one conversation, on a store that
//! orders chained commits, is applied before its commit ends so the next one need not
//! wait for the disk ([`super::sequencer`]); a failed commit then throws that copy away.

use super::apply::Applying;
use super::cache::{Cached, Held};
use super::replica::Claimed;
use super::sessions::SessionHandle;
use super::{error_frame, Hub};
use crate::core::{Actor, Change, Conversation, Ctx, Directory, Emit, Online, Opening};
use crate::core::{Outcome, Refusal};
use crate::core::{RecallTimer, Target};
use crate::store::{Store, StoreError};
use parley_protocol::AckResult;
use parley_protocol::{ErrorCode, ServerFrame};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use tokio::sync::{Mutex as AsyncMutex, MutexGuard};

/// Directory decisions of this process, serialised per pair of users (or per user): two
/// that touch the same relation never decide on the same old state.
pub(super) struct Stripes([AsyncMutex<()>; 64]);

impl Default for Stripes {
    fn default() -> Self {
        Stripes(std::array::from_fn(|_| AsyncMutex::new(())))
    }
}

impl Stripes {
    /// Hold the stripe of the pair `a`, `b` (order does not matter).
    pub async fn lock(&self, a: &str, b: &str) -> MutexGuard<'_, ()> {
        let (first, second) = if a <= b { (a, b) } else { (b, a) };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (first, second).hash(&mut h);
        self.0[h.finish() as usize % self.0.len()].lock().await
    }
}

/// What a requester is told when storage fails: retryable, and stored once however often
/// retried (a commit the database did not answer in time may have landed).
const UNAVAILABLE: &str = "the server could not store this request. \
                           Retry later with the same id: it is stored once";

impl Hub {
    /// Answer `id` with `unavailable` after a storage failure.
    pub(super) fn refuse_unavailable(&self, session: &SessionHandle, id: String, e: &StoreError) {
        tracing::error!(error = %e, user = %session.user, request = %id, "storage failed; nothing changed");
        crate::metrics::error(ErrorCode::Unavailable.as_str());
        crate::metrics::store_error(e.code());
        self.health.observed(false);
        session.send(&error_frame(Some(id), ErrorCode::Unavailable, UNAVAILABLE));
    }

    /// Take a scope for a decision, or answer `unavailable` when the ledger cannot be
    /// reached.
    pub(super) async fn claim_or_refuse(
        &self,
        session: &SessionHandle,
        id: &str,
        scope: &str,
    ) -> Option<Claimed> {
        match self.claim(scope).await {
            Ok(c) => Some(c),
            Err(e) => {
                self.refuse_unavailable(session, id.to_owned(), &e);
                None
            }
        }
    }

    /// Hold conversation `conversation` for a decision under `claimed`, or give the claim
    /// back and answer `unavailable` when it cannot be read from the store.
    async fn hold_or_refuse(
        &self,
        session: &SessionHandle,
        id: &str,
        conversation: &str,
        claimed: Claimed,
    ) -> Option<(Held, Claimed)> {
        match self.hold(conversation).await {
            Ok(held) => Some((held, claimed)),
            Err(e) => {
                claimed.release().await;
                self.refuse_unavailable(session, id.to_owned(), &e);
                None
            }
        }
    }

    /// Commit, apply, deliver, answer, arm and publish a decision, in that order, with
    /// the decided conversation (when there is one) still locked in `slot`: that keeps
    /// every session's view of the conversation in one order.
    pub(super) async fn finish(
        &self,
        claimed: Claimed,
        slot: Option<&mut Cached>,
        session: &SessionHandle,
        id: String,
        decided: Result<Outcome, Refusal>,
    ) {
        let out = match decided {
            Ok(out) => out,
            Err(refusal) => {
                claimed.release().await;
                crate::metrics::error(refusal.code().as_str());
                tracing::debug!(user = %session.user, request = %id, %refusal, "refused");
                return session.send(&error_frame(Some(id), refusal.code(), refusal.to_string()));
            }
        };
        let Outcome {
            ack,
            emits,
            changes,
            timer,
        } = out;
        let mut changes = changes;
        if self.replica().is_some() {
            self.record_presence(slot.as_deref(), &mut changes);
        }
        let (changes, committed) = match self.commit(claimed, changes, &emits).await {
            Ok(c) => c,
            Err(e) => return self.refuse_unavailable(session, id, &e),
        };
        self.apply(slot, &changes, Applying::Live);
        self.deliver_committed(session, id, ack, &emits, timer);
        if let Some((scope, seq)) = committed {
            self.publish_entry(&scope, seq, changes, emits);
        }
    }

    /// Record in each message stored who of `slot`'s participants has no live session on
    /// any node (see [`Change::MessageStored`]): in a cluster, the conversation may be
    /// read on another node later, which must keep the same notifications pending.
    fn record_presence(&self, slot: Option<&Cached>, changes: &mut [Change]) {
        if !changes
            .iter()
            .any(|c| matches!(c, Change::MessageStored { .. }))
        {
            return;
        }
        let created = changes.iter().find_map(|c| match c {
            Change::ConversationCreated { conversation, .. } => {
                Some(conversation.participants.as_slice())
            }
            _ => None,
        });
        let held = slot.and_then(|s| s.conv.as_ref()).map(|c| c.participants());
        let Some(participants) = held.or(created) else {
            return;
        };
        let Online::AllBut(offline) = self.online_among(participants) else {
            return;
        };
        for change in changes {
            if let Change::MessageStored { offline: o, .. } = change {
                *o = Some(offline.clone());
            }
        }
    }

    /// What follows a commit: the frames, the answer, the recall timer.
    fn deliver_committed(
        &self,
        session: &SessionHandle,
        id: String,
        ack: AckResult,
        emits: &[Emit],
        timer: Option<RecallTimer>,
    ) {
        for emit in emits {
            self.sessions.deliver(emit);
        }
        session.send(&ServerFrame::Ack { id, result: ack });
        if let Some(timer) = timer {
            let _ = self.timers.send(timer);
        }
    }

    /// A decision that needs no claim and touches no conversation.
    pub(super) async fn finish_unscoped(
        &self,
        session: &SessionHandle,
        id: String,
        decided: Result<Outcome, Refusal>,
    ) {
        self.finish(Claimed::none(), None, session, id, decided)
            .await
    }

    /// Run a rule on one conversation the actor takes part in, under its lock; a rule that
    /// `decides` (may change something) first claims the conversation, which in a cluster
    /// locks it on every node.
    pub(super) async fn on_conversation(
        &self,
        session: &SessionHandle,
        actor: &Actor,
        id: String,
        conversation: &str,
        decides: bool,
        rule: impl Fn(&Conversation, &Ctx) -> Result<Outcome, Refusal>,
    ) {
        let claimed = if decides {
            let Some(c) = self.claim_or_refuse(session, &id, conversation).await else {
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
        let Some((held, claimed)) = self
            .hold_or_refuse(session, &id, conversation, claimed)
            .await
        else {
            return;
        };
        let decide = |cached: &Cached| match cached.conv.as_ref() {
            Some(conv) if conv.is_participant(&actor.user) => {
                let dir = self.directory.read();
                rule(conv, &self.ctx(&dir))
            }
            _ => Err(Refusal::NotFound("conversation")),
        };
        self.finish_held(claimed, conversation, held, session, id, decide)
            .await
    }

    /// Decide on a held conversation and finish the decision (see [`Hub::finish`]), or
    /// answer `unavailable` when more of it was needed and could not be read; the
    /// conversation is given back either way.
    async fn finish_held(
        &self,
        claimed: Claimed,
        conversation: &str,
        mut held: Held,
        session: &SessionHandle,
        id: String,
        decide: impl Fn(&Cached) -> Result<Outcome, Refusal>,
    ) {
        let decided = match self.decide_held(conversation, &mut held, decide).await {
            Ok(decided) => decided,
            Err(e) => {
                claimed.release().await;
                self.refuse_unavailable(session, id, &e);
                return self.release(conversation, held);
            }
        };
        let decided = match decided {
            Ok(out) => match self.chains(conversation, &out) {
                Some(store) => {
                    claimed.release().await;
                    return self
                        .finish_ahead(store, conversation, held, session, id, out)
                        .await;
                }
                None => Ok(out),
            },
            refused => refused,
        };
        // Decided on what is in memory, which may hold decisions still being written:
        // valid only once they all are.
        if let Err(e) = held.sequencer.settled().await {
            claimed.release().await;
            self.refuse_unavailable(session, id, &e);
            return self.release(conversation, held);
        }
        self.finish(claimed, Some(&mut held), session, id, decided)
            .await;
        self.release(conversation, held);
    }

    /// The store, when a decision may be applied ahead of its commit (see
    /// [`super::sequencer`]): a local store that orders chained commits and reads
    /// conversations back (so a failed one can be forgotten and read again), and
    /// changes of this conversation alone.
    fn chains(&self, conversation: &str, out: &Outcome) -> Option<&Arc<dyn Store>> {
        let super::Backend::Local(store) = &self.backend else {
            return None;
        };
        let ours = !out.changes.is_empty()
            && out
                .changes
                .iter()
                .all(|c| c.conversation() == Some(conversation));
        (ours && store.orders_chains() && store.on_demand().is_some()).then_some(store)
    }

    /// Apply a decision and queue its commit, give the conversation back so the next
    /// decision need not wait for the disk, then, once committed and every earlier
    /// decision has delivered, deliver, answer and arm. A failed commit breaks the
    /// conversation's chain: it is read back before the next decision (see
    /// [`Hub::hold`]) and this request is answered `unavailable`.
    async fn finish_ahead(
        &self,
        store: &Arc<dyn Store>,
        conversation: &str,
        mut held: Held,
        session: &SessionHandle,
        id: String,
        out: Outcome,
    ) {
        let Outcome {
            ack,
            emits,
            changes,
            timer,
        } = out;
        let ticket = held.sequencer.issue();
        self.apply(Some(&mut held), &changes, Applying::Live);
        let committed = store.commit_chained(changes, held.sequencer.chain());
        self.release(conversation, held);
        let committed = committed.await;
        ticket.turn().await;
        match committed {
            Err(e) => self.refuse_unavailable(session, id, &e),
            Ok(_) => {
                self.health.observed(true);
                self.deliver_committed(session, id, ack, &emits, timer)
            }
        }
        drop(ticket);
        // Only now is the conversation all stored, and so may be forgotten.
        self.make_room(conversation);
    }

    /// Decide on a held conversation; a decision that needs more of it than is held gets
    /// more read back (its recent part, then all of it) and is made again.
    async fn decide_held(
        &self,
        conversation: &str,
        held: &mut Held,
        decide: impl Fn(&Cached) -> Result<Outcome, Refusal>,
    ) -> Result<Result<Outcome, Refusal>, StoreError> {
        loop {
            let decided = decide(held);
            if !matches!(decided, Err(Refusal::NotHeld)) {
                return Ok(decided);
            }
            if self.read_further(conversation, held).await? {
                return Ok(decide(held));
            }
        }
    }

    /// Run `rule` on the conversation `opening` names, opening it when it does not exist
    /// yet (after `Opening::check`). A new conversation is committed, and announced ahead
    /// of the rule's own frames, only when the rule succeeds: a refused first request
    /// leaves nothing behind.
    pub(super) async fn on_opening(
        &self,
        session: &SessionHandle,
        actor: &Actor,
        id: String,
        opening: Opening,
        rule: impl Fn(&Conversation, &Ctx) -> Result<Outcome, Refusal>,
    ) {
        // Claimed before the checks: in a cluster, the claim brings in every connection
        // and block committed on any node.
        let Some(claimed) = self.claim_or_refuse(session, &id, &opening.id).await else {
            return;
        };
        let Some((held, claimed)) = self
            .hold_or_refuse(session, &id, &opening.id, claimed)
            .await
        else {
            return;
        };
        let decide = |cached: &Cached| {
            let dir = self.directory.read();
            let ctx = self.ctx(&dir);
            match cached.conv.as_ref() {
                // A retry finds its conversation and gets its original answer.
                Some(conv) if conv.is_participant(&actor.user) => rule(conv, &ctx),
                Some(_) => Err(Refusal::NotFound("conversation")),
                None => opening.check(&dir).and_then(|()| {
                    let fresh = opening.conversation(ctx.now);
                    rule(&fresh, &ctx).map(|out| announce(&fresh, actor, out))
                }),
            }
        };
        self.finish_held(claimed, &opening.id, held, session, id, decide)
            .await
    }

    /// Run a directory rule about the pair `a`, `b` (the same user twice for one user's
    /// own settings), serialised with every other decision about that pair.
    pub(super) async fn on_directory(
        &self,
        session: &SessionHandle,
        id: String,
        (a, b): (&str, &str),
        rule: impl FnOnce(&Directory) -> Result<Outcome, Refusal>,
    ) {
        let _pair = self.directory_locks.lock(a, b).await;
        let Some(claimed) = self
            .claim_or_refuse(session, &id, crate::cluster::DIRECTORY)
            .await
        else {
            return;
        };
        let decided = rule(&self.directory.read());
        self.finish(claimed, None, session, id, decided).await;
    }

    /// Make `changes` durable: in a cluster as the claimed scope's next entry (its number
    /// is returned with the scope), else in the local store. The changes come back to be
    /// applied; frames that change nothing still reach the other nodes' sessions.
    pub(super) async fn commit(
        &self,
        claimed: Claimed,
        changes: Vec<Change>,
        emits: &[Emit],
    ) -> Result<(Vec<Change>, Option<(String, u64)>), StoreError> {
        if changes.is_empty() && matches!(self.backend, super::Backend::Local(_)) {
            return Ok((changes, None));
        }
        let started = std::time::Instant::now();
        let committed = match &self.backend {
            super::Backend::Local(store) => store.commit(changes).await.map(|c| (c, None)),
            super::Backend::Node(_) => self.commit_to_ledger(claimed, changes, emits).await,
        };
        if committed.is_ok() {
            crate::metrics::store_commit(started.elapsed());
        }
        self.health.observed(committed.is_ok());
        committed
    }
}

/// A first decision on a new conversation: its creation first, then the rule's changes,
/// and its participants told about it ahead of the rule's frames (the actor's own
/// session learns it from the answer).
fn announce(fresh: &Conversation, actor: &Actor, out: Outcome) -> Outcome {
    let mut announced = Outcome::with_ack(out.ack);
    announced.changes.push(fresh.created());
    announced.changes.extend(out.changes);
    let to = fresh
        .participants()
        .iter()
        .map(|p| Target {
            user: p.clone(),
            except: (actor.user == *p).then_some(actor.session),
        })
        .collect();
    announced.emit(
        to,
        ServerFrame::Conversation {
            conversation: fresh.view(),
        },
    );
    announced.emits.extend(out.emits);
    announced.timer = out.timer;
    announced
}
