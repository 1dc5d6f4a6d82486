//! `sync`: everything a (re)connecting user should see — inbox, pending notifications,
//! relations, settings and, given positions, what changed since.

use super::Asked;
use crate::core::Outcome;
use crate::core::Refusal;
use crate::hub::cache::Cached;
use crate::hub::Hub;
use crate::store::StoreError;
use parley_protocol::{AckResult, ConversationUpdate, InboxEntry, Millis, NotificationView};
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
        // In a cluster the catch-up may bring in conversations this node had not heard
        // of, so the list is read again below; alone, the store's list is read once.
        if self.replica().is_some() {
            self.catch_up_all(self.conversations_of(user).await?).await;
        }
        let mut rows = Vec::new();
        let mut notifications = Vec::new();
        let mut updates = Vec::new();
        for cid in self.conversations_of(user).await? {
            let since = positions
                .as_ref()
                .map(|p| p.get(&cid).copied().unwrap_or(0));
            let (row, taken, update) = self.sync_one(&cid, user, since).await?;
            rows.extend(row);
            notifications.extend(taken);
            updates.extend(update);
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

    /// One conversation's part of a sync: its inbox row, the pending notifications it
    /// hands over, and its changes since `since` (when positions were given).
    async fn sync_one(
        &self,
        cid: &str,
        user: &str,
        since: Option<u64>,
    ) -> Result<Synced, StoreError> {
        let mut held = self.hold(cid).await?;
        // Shown only once stored: wait for the decisions still being written.
        if let Err(e) = held.sequencer.settled().await {
            self.release(cid, held);
            return Err(e);
        }
        let mut viewed = self.view_for_sync(&held, user, since);
        while viewed == Err(Refusal::NotHeld) {
            let whole = match self.read_further(cid, &mut held).await {
                Ok(whole) => whole,
                Err(e) => {
                    self.release(cid, held);
                    return Err(e);
                }
            };
            viewed = self.view_for_sync(&held, user, since);
            if whole {
                break;
            }
        }
        // Collected notifications are not kept: after a restart, or once the conversation
        // was forgotten and read back, every outstanding one is pending again, so none is
        // lost.
        let taken = match held.conv.as_mut() {
            Some(conv) => conv.take_pending(&self.ctx(&self.directory.read()), user),
            None => Vec::new(),
        };
        self.release(cid, held);
        let (row, update) = viewed.unwrap_or_default();
        Ok((row, taken, update))
    }

    /// What a sync shows of a held conversation.
    fn view_for_sync(
        &self,
        held: &Cached,
        user: &str,
        since: Option<u64>,
    ) -> Result<Viewed, Refusal> {
        let Some(conv) = held.conv.as_ref() else {
            return Ok((None, None));
        };
        let dir = self.directory.read();
        let ctx = self.ctx(&dir);
        let row = conv
            .inbox_entry(&ctx, user)?
            .map(|e| (conv.last_activity(), e));
        let update = match since {
            Some(since) => conv.updates_since(&ctx, user, since, SYNC_PAGE)?,
            None => None,
        };
        Ok((row, update))
    }
}

/// An inbox row (with the conversation's last activity, to sort by) and an update.
type Viewed = (Option<(Millis, InboxEntry)>, Option<ConversationUpdate>);

/// A conversation's part of a sync: row, notifications handed over, update.
type Synced = (
    Option<(Millis, InboxEntry)>,
    Vec<NotificationView>,
    Option<ConversationUpdate>,
);
