//! `recall`, and the recall window's close: the sender is told when recall is gone.

use super::Asked;
use crate::core::conversation::recall_expired;
use crate::core::{deadline, Conversation, Outcome};
use crate::hub::cache::Held;
use crate::hub::Hub;
use crate::store::{Closing, StoreError};
use parley_protocol::Millis;

pub(super) async fn run(a: Asked<'_>, conversation: String, message: String) {
    // Counted before the lock: a send racing this recall may or may not count, either
    // order is a valid serialisation.
    let me = &a.actor.user;
    let sent = match a.hub.sent_recently_everywhere(me).await {
        Some(n) => n,
        None => a.hub.sent_recently(me),
    };
    let actor = a.actor;
    a.on_conversation(&conversation, true, |c, ctx| {
        let result = c.recall(ctx, actor, &message, sent);
        crate::metrics::recall(result.as_ref().map_or_else(|r| r.code().as_str(), |_| "ok"));
        result
    })
    .await
}

impl Hub {
    /// Recall windows of `conversation` closed from `from` until now: tell each sender
    /// whose recall was still on offer that it is gone. Gives when the next window closes,
    /// or the store's error when it could not be read (the caller tries again later).
    pub(in crate::hub) async fn recall_windows_closed(
        &self,
        conversation: &str,
        from: Millis,
    ) -> Result<Option<Millis>, StoreError> {
        // Every node runs this timer and tells only its own sessions; catching up first
        // means a read or recall committed on another node before the deadline counts.
        if let Err(e) = self.catch_up(conversation, None).await {
            tracing::warn!(error = %e, "cannot catch up before a recall window closes");
        }
        // A conversation not held is asked of the store, not read back: the windows of a
        // busy conversation close every moment, and telling them should not fill the cache.
        let mut held = self.lock_as_is(conversation).await;
        if !held.in_memory() && self.replica().is_some() {
            // A node has no store to ask: it reads the conversation from the ledger.
            drop(held);
            held = self.hold(conversation).await?;
        }
        // Held in part, the windows closing may be of messages no longer held.
        let sent_from = from.saturating_sub(self.limits.recall_window_ms as i64);
        let holds = |c: &Conversation| c.holds_sent_since(sent_from);
        let told = if held.in_memory() && held.conv.as_ref().is_none_or(holds) {
            self.windows_held(conversation, from, held).await
        } else {
            self.windows_stored(conversation, from, held).await
        };
        let (out, next) = told?;
        for emit in &out.emits {
            self.sessions.deliver(emit);
        }
        Ok(next)
    }

    /// [`Hub::recall_windows_closed`] on the conversation in memory.
    async fn windows_held(
        &self,
        conversation: &str,
        from: Millis,
        held: Held,
    ) -> Result<(Outcome, Option<Millis>), StoreError> {
        // A read or recall still being written counts once it is stored.
        if let Err(e) = held.sequencer.settled().await {
            self.release(conversation, held);
            return Err(e);
        }
        let told = {
            let dir = self.directory.read();
            let ctx = self.ctx(&dir);
            held.conv.as_ref().map_or_else(
                || (Outcome::ok(), None),
                |c| {
                    (
                        c.recall_windows_closed(&ctx, from),
                        c.next_recall_window(&ctx),
                    )
                },
            )
        };
        self.release(conversation, held);
        Ok(told)
    }

    /// [`Hub::recall_windows_closed`] on a conversation not held, from the store, inside
    /// its lock so a racing read or recall is either stored before or decided after.
    async fn windows_stored(
        &self,
        conversation: &str,
        from: Millis,
        held: Held,
    ) -> Result<(Outcome, Option<Millis>), StoreError> {
        // A broken chain's decisions fail unwritten: what the store has is then the truth.
        let _ = held.sequencer.settled().await;
        let window = self.limits.recall_window_ms;
        let closing = match self.on_demand() {
            Some(reads) => {
                let sent = |deadline: Millis| deadline.saturating_sub(window as i64);
                let (from, until) = (sent(from), sent(self.clock.now()));
                reads.closing(conversation, from, until).await
            }
            None => Ok(Closing::default()),
        };
        self.release(conversation, held);
        let closing = closing?;
        let closed = closing.on_offer.iter();
        let out = recall_expired(conversation, closed.map(|(m, s)| (m.as_str(), s.as_str())));
        Ok((out, closing.next_sent.and_then(|t| deadline(t, window))))
    }
}
