//! Letting go of a held conversation's older part. A conversation in use is never
//! forgotten, so without this a busy one would hold every message sent since it was read
//! back. Trimmed, it holds what it would hold read back now: its newest messages and
//! those whose recall or InMail delete may still be asked for, every state change after
//! the first of them, and each participant's state just before it (see [`Suffix`]). A
//! rule that needs what was let go answers [`super::Refusal::NotHeld`], as it does on a
//! conversation read back in part.

use super::{view_state, Conversation, Event, MessageState, UNREAD_CAP};
use parley_protocol::Millis;

/// What a trim keeps.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    /// Every message sent at this time or later.
    pub sent_since: Millis,
    /// At least this many of the newest messages.
    pub newest: usize,
    /// Request ids of messages sent at this time or later.
    pub requests_since: Millis,
}

impl Conversation {
    /// Let go of what [`Keep`] does not keep, once that is at least `Keep::newest`
    /// messages (so a busy conversation is trimmed every so often, not on every send).
    /// Returns how many messages were let go.
    pub fn trim(&mut self, keep: Keep) -> usize {
        let cut = self.trim_point(keep);
        if cut == 0 {
            return 0;
        }
        let floor = self.messages[cut].seq;
        self.unheld_until = self.messages[cut - 1].sent_at;
        self.settle_members(cut, floor);
        for m in self.messages.drain(..cut) {
            self.by_id.remove(&m.id);
        }
        for idx in self.by_id.values_mut() {
            *idx -= cut;
        }
        let first_event = self.events.partition_point(|(pos, _)| *pos < floor);
        self.events.drain(..first_event);
        for (_, event) in &mut self.events {
            *event.message_mut() -= cut;
        }
        self.requests.forget_before(keep.requests_since);
        self.floor = floor;
        self.give_back_room();
        cut
    }

    /// Hand back the room of what was let go once it is most of what is allocated: a
    /// conversation read back with a long window and then trimmed to a short tail would
    /// otherwise keep the window's room for as long as it is held.
    fn give_back_room(&mut self) {
        if self.messages.capacity() > 2 * self.messages.len() {
            self.messages.shrink_to(self.messages.len() * 5 / 4);
            self.events.shrink_to(self.events.len() * 5 / 4);
            self.by_id.shrink_to(self.by_id.len() * 5 / 4);
        }
        self.requests.give_back_room();
    }

    /// How many of the oldest messages to let go: those sent before `keep.sent_since`,
    /// but none that a state change still held refers to (as when reading back a
    /// suffix), and only when that is at least `keep.newest` and leaves as many.
    fn trim_point(&self, keep: Keep) -> usize {
        let newest = keep.newest.max(1);
        let most = self.messages.len().saturating_sub(newest);
        let mut cut = self
            .messages
            .partition_point(|m| m.sent_at < keep.sent_since)
            .min(most);
        if cut < newest {
            return 0;
        }
        // Newest first: each change referring further back lowers the cut, and with it
        // the position from which changes are kept.
        for (pos, event) in self.events.iter().rev() {
            if cut == 0 || *pos < self.messages[cut].seq {
                break;
            }
            cut = cut.min(event.message());
        }
        if cut < newest {
            return 0;
        }
        cut
    }

    /// Give each participant the state it has just before message `floor` (the first of
    /// index `cut`), as a suffix read back from there would: the message it read when
    /// that is let go, what it may see of what is let go added to its unread count, and
    /// no tombstone or notification for a message no longer held.
    fn settle_members(&mut self, cut: usize, floor: u64) {
        let gone = &self.messages[..cut];
        for (user, member) in self.members.iter_mut() {
            let read = member.read_seq;
            if read > 0 && read < floor {
                if let Ok(i) = gone.binary_search_by_key(&read, |m| m.seq) {
                    member.read_message = Some(gone[i].id.clone());
                }
            }
            let unseen = gone
                .iter()
                .filter(|m| m.seq > read && m.sender != *user)
                .filter(|m| view_state(m, member, user) == Some(MessageState::Visible))
                .count() as u32;
            member.unread_before = (member.unread_before + unseen).min(UNREAD_CAP);
            member.deleted.retain(|&seq| seq >= floor);
            member.notified.retain(|&seq| seq >= floor);
            member.pending.retain(|&seq| seq >= floor);
        }
    }
}

impl Event {
    /// The index of the message this change is about.
    fn message(&self) -> usize {
        match self {
            Event::Message(idx)
            | Event::Read { idx, .. }
            | Event::Recalled(idx)
            | Event::InmailDeleted(idx)
            | Event::DeletedForMe { idx, .. } => *idx,
        }
    }

    fn message_mut(&mut self) -> &mut usize {
        match self {
            Event::Message(idx)
            | Event::Read { idx, .. }
            | Event::Recalled(idx)
            | Event::InmailDeleted(idx)
            | Event::DeletedForMe { idx, .. } => idx,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Change, Online};
    use parley_protocol::{ConversationKind, MessageKind, MessageView};

    fn stored(seq: u64) -> Change {
        Change::MessageStored {
            message: MessageView {
                id: format!("m{seq}"),
                conversation: "c".into(),
                seq,
                sender: "ann".into(),
                sent_at: seq as Millis,
                kind: MessageKind::Message,
                state: MessageState::Visible,
                body: Some("hi".into()),
                reply_to: None,
                to: None,
                cc: vec![],
                recall_until: None,
                delete_until: None,
            },
            client_id: format!("r{seq}"),
            offline: None,
        }
    }

    #[test]
    fn a_trim_hands_back_the_room_of_what_it_let_go() {
        let limits = crate::config::default_limits();
        let people = vec!["ann".to_owned(), "ben".to_owned()];
        let mut c = Conversation::new("c".into(), ConversationKind::Direct, people, None, 0);
        for seq in 1..=2_000 {
            c.apply(&stored(seq), &limits, &Online::Everyone);
        }
        let keep = Keep {
            sent_since: Millis::MAX,
            newest: 64,
            requests_since: 1_990,
        };
        assert_eq!(c.trim(keep), 2_000 - 64);
        assert!(c.messages.capacity() <= 2 * 64, "{}", c.messages.capacity());
        assert!(c.events.capacity() <= 2 * 64);
        assert!(c.requests.len() <= 11, "ids of the last ten ms only");
        assert_eq!(c.by_id.len(), 64);
        assert!(!c.holds_sent_since(2_000 - 64));
        assert!(c.holds_sent_since(2_000 - 63));
    }
}
