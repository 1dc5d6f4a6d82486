//! `recall`, and the recall window's close: the sender is told when recall is gone.

use super::Asked;
use crate::hub::Hub;
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
    /// or `Err` when the conversation could not be read (the caller tries again later).
    pub(in crate::hub) async fn recall_windows_closed(
        &self,
        conversation: &str,
        from: Millis,
    ) -> Result<Option<Millis>, ()> {
        // Every node runs this timer and tells only its own sessions; catching up first
        // means a read or recall committed on another node before the deadline counts.
        if let Err(e) = self.catch_up(conversation, None).await {
            tracing::warn!(error = %e, "cannot catch up before a recall window closes");
        }
        let held = self.hold(conversation).await.map_err(|e| {
            tracing::warn!(error = %e, conversation, "cannot tell a sender recall is gone");
        })?;
        // A read or recall still being written counts once it is stored.
        if let Err(e) = held.sequencer.settled().await {
            self.release(conversation, held);
            tracing::warn!(error = %e, conversation, "cannot tell a sender recall is gone");
            return Err(());
        }
        let (out, next) = {
            let dir = self.directory.read();
            let ctx = self.ctx(&dir);
            match held.conv.as_ref() {
                Some(c) => (
                    Some(c.recall_windows_closed(&ctx, from)),
                    c.next_recall_window(&ctx),
                ),
                None => (None, None),
            }
        };
        self.release(conversation, held);
        for emit in out.iter().flat_map(|o| &o.emits) {
            self.sessions.deliver(emit);
        }
        Ok(next)
    }
}
