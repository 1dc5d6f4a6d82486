//! `recall`, and the recall window's close: the sender is told when recall is gone.

use super::Asked;
use crate::core::RecallTimer;
use crate::hub::Hub;

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
    /// A recall window closed: if recall was still on offer, tell the sender it is gone.
    pub(in crate::hub) async fn recall_window_closed(&self, timer: &RecallTimer) {
        // Every node runs this timer and tells only its own sessions; catching up first
        // means a read or recall committed on another node before the deadline counts.
        if let Err(e) = self.catch_up(&timer.conversation, None).await {
            tracing::warn!(error = %e, "cannot catch up before a recall window closes");
        }
        let held = match self.hold(&timer.conversation).await {
            Ok(held) => held,
            Err(e) => return tracing::warn!(error = %e, "cannot tell a sender recall is gone"),
        };
        // A read or recall still being written counts once it is stored.
        if let Err(e) = held.sequencer.settled().await {
            self.release(&timer.conversation, held);
            return tracing::warn!(error = %e, "cannot tell a sender recall is gone");
        }
        let out = {
            let dir = self.directory.read();
            let ctx = self.ctx(&dir);
            held.conv
                .as_ref()
                .and_then(|c| c.recall_expired(&ctx, &timer.message))
        };
        self.release(&timer.conversation, held);
        for emit in out.iter().flat_map(|o| &o.emits) {
            self.sessions.deliver(emit);
        }
    }
}
