//! Applying committed changes to the state in memory: the one mutation path of the hub,
//! taken alike by live requests, start-up and cluster replicas.

use super::cache::Cached;
use super::Hub;
use crate::core::deadline;
use crate::core::{Change, Conversation, Directory, Online, RecallTimer};
use crate::store::Lately;

/// Why changes are applied, which decides what else they count towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Applying {
    /// Just committed: presence decides which notifications are kept pending, and sends
    /// count towards the throttle.
    Live,
    /// Read back at start when everything is held: nobody is online yet, so every
    /// outstanding notification is pending; sends still inside the throttle window count.
    Restore,
    /// A conversation read back on demand: its sends were counted when committed or at
    /// start, and outstanding notifications are pending, as after a restart.
    Reload,
}

impl Hub {
    /// Apply committed `changes` of one scope. `slot` is the conversation the scope names,
    /// locked by the caller.
    pub(super) fn apply(&self, mut slot: Option<&mut Cached>, changes: &[Change], why: Applying) {
        for change in changes {
            match change.conversation() {
                Some(_) => self.apply_to_conversation(slot.as_deref_mut(), change, why),
                None => self.apply_to_directory(&mut self.directory.write(), change),
            }
        }
        if let Some(slot) = slot {
            self.reweigh(slot);
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

    fn apply_to_conversation(&self, slot: Option<&mut Cached>, change: &Change, why: Applying) {
        let Some(slot) = slot else {
            return tracing::error!(?change, "a conversation change outside its conversation");
        };
        if let Change::ConversationCreated { conversation, at } = change {
            if slot.conv.is_none() {
                slot.conv = Some(Conversation::from_view(conversation, *at));
                self.index_participants(change);
            }
            return;
        }
        let Some(conv) = slot.conv.as_mut() else {
            return;
        };
        let online = match change {
            Change::MessageStored {
                message, offline, ..
            } => {
                if matches!(why, Applying::Live | Applying::Restore) {
                    self.count_send(&message.sender, message.sent_at);
                }
                match (offline, why) {
                    // Recorded at commit: the same on every node, and when read later.
                    (Some(offline), _) => Online::AllBut(offline.clone()),
                    (None, Applying::Live) => self.online_among(conv.participants()),
                    (None, _) => Online::Nobody,
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
            self.send_logs.entry(sender.to_owned()).or_default().record(
                at,
                window,
                self.sends_kept(),
            );
        }
    }

    /// How many messages `user` stored in the throttle window, on this node.
    pub(super) fn sent_recently(&self, user: &str) -> u32 {
        let window = self.limits.recall_throttle_window_ms;
        self.send_logs
            .get(user)
            .map_or(0, |log| log.count(self.clock.now(), window))
    }

    /// Send times a user's throttle log keeps: enough to tell more than the limit.
    pub(super) fn sends_kept(&self) -> usize {
        (self.limits.recall_throttle_messages as usize).saturating_add(1)
    }

    /// Start-up when conversations are read on demand: the conversations with a message
    /// inside the recall window arm their earliest window (the timer tells every window
    /// from there), and the sends of the throttle window count towards their senders.
    pub(super) fn restore_lately(&self, lately: &Lately) {
        let window = self.limits.recall_throttle_window_ms;
        for (user, times) in &lately.sends {
            let mut log = self.send_logs.entry(user.clone()).or_default();
            for &at in times {
                log.record(at, window, self.sends_kept());
            }
        }
        for (conversation, sent_at) in &lately.first_sent {
            if let Some(at) = deadline(*sent_at, self.limits.recall_window_ms) {
                let conversation = conversation.clone();
                let _ = self.timers.send(RecallTimer { conversation, at });
            }
        }
    }

    /// Apply one change read back at start (nothing else runs yet).
    pub(super) fn restore_one(&self, change: &Change) {
        match change.conversation() {
            Some(id) => {
                let slot = self.slot_or_insert(id);
                let mut guard = slot.try_lock().expect("nothing else runs during restore");
                self.apply(
                    Some(&mut guard),
                    std::slice::from_ref(change),
                    Applying::Restore,
                );
            }
            None => self.apply(None, std::slice::from_ref(change), Applying::Restore),
        }
    }

    /// After the last change read back: re-arm the open recall windows and hand the
    /// memory the reading used back to the system.
    pub(super) fn restored(&self, count: usize) {
        if count == 0 {
            return;
        }
        for entry in self.conversations.iter() {
            let mut cached = entry
                .value()
                .try_lock()
                .expect("nothing else runs at start");
            if let Some(conv) = cached.conv.as_mut() {
                conv.keep_latest_notifications(super::cache::KEPT_NOTIFICATIONS);
            }
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
            if let Some(at) = guard.conv.as_ref().and_then(|c| c.next_recall_window(&ctx)) {
                let conversation = entry.key().clone();
                let _ = self.timers.send(RecallTimer { conversation, at });
            }
        }
    }
}
