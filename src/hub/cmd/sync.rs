//! `sync`: everything a (re)connecting user should see — inbox, pending notifications,
//! relations, settings and, given positions, what changed since.

use super::Asked;
use crate::core::Outcome;
use crate::hub::Hub;
use crate::store::StoreError;
use parley_protocol::AckResult;
use std::collections::BTreeMap;

/// Changes per conversation in one sync answer; the client syncs again when `more` is set.
const SYNC_PAGE: usize = 200;

pub(super) async fn run(a: Asked<'_>, positions: Option<BTreeMap<String, u64>>) {
    match a.hub.sync(&a.actor.user, positions).await {
        Ok(ack) => {
            a.hub
                .finish_unscoped(a.session, a.id, Ok(Outcome::with_ack(ack)))
                .await
        }
        Err(e) => a.hub.refuse_unavailable(a.session, a.id, &e),
    }
}

impl Hub {
    async fn sync(
        &self,
        user: &str,
        positions: Option<BTreeMap<String, u64>>,
    ) -> Result<AckResult, StoreError> {
        // Everything committed anywhere before this request is answered.
        self.catch_up_all(self.conversations_of(user).await?).await;
        let mut rows = Vec::new();
        let mut notifications = Vec::new();
        let mut updates = Vec::new();
        for cid in self.conversations_of(user).await? {
            let mut held = self.hold(&cid).await?;
            let Some(conv) = held.conv.as_mut() else {
                self.release(&cid, held);
                continue;
            };
            {
                let dir = self.directory.read();
                let ctx = self.ctx(&dir);
                if let Some(entry) = conv.inbox_entry(&ctx, user) {
                    rows.push((conv.last_activity(), entry));
                }
                // Collected notifications are not kept: after a restart, or once the
                // conversation was forgotten and read back, every outstanding one is
                // pending again, so none is lost.
                notifications.extend(conv.take_pending(&ctx, user));
                if let Some(positions) = &positions {
                    let since = positions.get(&cid).copied().unwrap_or(0);
                    updates.extend(conv.updates_since(&ctx, user, since, SYNC_PAGE));
                }
            }
            self.release(&cid, held);
        }
        rows.sort_by_key(|row| std::cmp::Reverse(row.0));
        notifications.sort_by_key(|n| n.sent_at);
        let dir = self.directory.read();
        let [connections, incoming_requests, outgoing_requests, blocked] = dir.relations(user);
        Ok(AckResult::Sync {
            inbox: rows.into_iter().map(|(_, e)| e).collect(),
            notifications,
            connections,
            incoming_requests,
            outgoing_requests,
            blocked,
            settings: dir.settings(user),
            updates,
        })
    }
}
