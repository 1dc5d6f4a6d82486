//! Applying committed changes to the state in memory: the one mutation path of the hub,
//! taken alike by live requests, start-up and cluster replicas.

use super::{Hub, Slot};
use crate::core::{Change, Conversation, Directory, Online};
use std::sync::Arc;
use tokio::sync::Mutex as AsyncMutex;

impl Hub {
    /// Apply committed `changes` of one scope. `slot` is the conversation the scope names,
    /// locked by the caller; `live` says whether presence counts (at start-up nobody is
    /// online, so every outstanding notification is pending).
    pub(super) fn apply(
        &self,
        mut slot: Option<&mut Option<Conversation>>,
        changes: &[Change],
        live: bool,
    ) {
        for change in changes {
            match change.conversation() {
                Some(_) => self.apply_to_conversation(slot.as_deref_mut(), change, live),
                None => self.apply_to_directory(&mut self.directory.write(), change),
            }
        }
    }

    /// Apply a directory-scope change (users, relations, blocks, reports) to `dir`, the
    /// directory's write guard, which the caller may hold for longer.
    pub(super) fn apply_to_directory(&self, dir: &mut Directory, change: &Change) {
        match change {
            Change::Reported { .. } => self.reports.lock().apply(change),
            _ => dir.apply(change),
        }
    }

    fn apply_to_conversation(
        &self,
        slot: Option<&mut Option<Conversation>>,
        change: &Change,
        live: bool,
    ) {
        let Some(slot) = slot else {
            return tracing::error!(?change, "a conversation change outside its conversation");
        };
        if let Change::ConversationCreated { conversation, at } = change {
            if slot.is_none() {
                *slot = Some(Conversation::from_view(conversation, *at));
                for p in &conversation.participants {
                    let mut ids = self.by_user.entry(p.clone()).or_default();
                    ids.push(conversation.id.clone());
                }
            }
            return;
        }
        let Some(conv) = slot.as_mut() else { return };
        let online = match change {
            Change::MessageStored { message, .. } => {
                self.count_send(&message.sender, message.sent_at);
                if live {
                    self.online_among(conv.participants())
                } else {
                    Online::Nobody
                }
            }
            _ => Online::Nobody,
        };
        conv.apply(change, &self.limits, &online);
    }

    /// A stored message counts towards its sender's recall throttle while it is inside
    /// the throttle window (older ones, met at start-up, never matter).
    fn count_send(&self, sender: &str, at: parley_protocol::Millis) {
        let window = self.limits.recall_throttle_window_ms;
        if at > self.clock.now().saturating_sub(window as i64) {
            self.send_logs
                .entry(sender.to_owned())
                .or_default()
                .record(at, window);
        }
    }

    /// How many messages `user` stored in the throttle window, on this node.
    pub(super) fn sent_recently(&self, user: &str) -> u32 {
        let window = self.limits.recall_throttle_window_ms;
        self.send_logs
            .get(user)
            .map_or(0, |log| log.count(self.clock.now(), window))
    }

    /// The slot of a conversation this node holds.
    pub(super) fn slot(&self, id: &str) -> Option<Slot> {
        self.conversations.get(id).map(|c| c.clone())
    }

    /// The slot of conversation `id`, an empty one when none is held yet.
    pub(super) fn slot_or_insert(&self, id: &str) -> Slot {
        if let Some(slot) = self.slot(id) {
            return slot;
        }
        self.conversations
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(AsyncMutex::new(None)))
            .clone()
    }

    /// Forget an empty slot (a first request that was refused or not stored) unless
    /// someone else is waiting on it.
    pub(super) fn drop_empty_slot(&self, id: &str) {
        self.conversations.remove_if(id, |_, slot| {
            Arc::strong_count(slot) == 1 && slot.try_lock().is_ok_and(|s| s.is_none())
        });
    }

    /// Rebuild the state from committed changes, through [`Hub::apply`], and re-arm the
    /// recall windows still open.
    pub(super) fn restore(&self, changes: Vec<Change>) {
        let count = changes.len();
        for change in &changes {
            self.restore_one(change);
        }
        self.restored(count);
    }

    /// Apply one change read back at start (nothing else runs yet).
    pub(super) fn restore_one(&self, change: &Change) {
        match change.conversation() {
            Some(id) => {
                let slot = self.slot_or_insert(id);
                let mut guard = slot.try_lock().expect("nothing else runs during restore");
                self.apply(Some(&mut guard), std::slice::from_ref(change), false);
            }
            None => self.apply(None, std::slice::from_ref(change), false),
        }
    }

    /// After the last change read back: re-arm the open recall windows and hand the
    /// memory the reading used back to the system.
    pub(super) fn restored(&self, count: usize) {
        if count == 0 {
            return;
        }
        self.rearm_open_windows();
        crate::heap::give_back();
        tracing::info!(
            changes = count,
            conversations = self.conversations.len(),
            "state restored"
        );
    }

    /// Re-arm the timers of recall windows still open (start-up).
    pub(super) fn rearm_open_windows(&self) {
        let dir = self.directory.read();
        let ctx = self.ctx(&dir);
        for entry in self.conversations.iter() {
            let guard = entry
                .value()
                .try_lock()
                .expect("nothing else runs at start");
            for timer in guard.iter().flat_map(|c| c.open_recall_windows(&ctx)) {
                let _ = self.timers.send(timer);
            }
        }
    }
}
