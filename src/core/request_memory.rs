//! The client request ids a conversation's messages were sent with, remembered apart
//! from the messages themselves: a retried `send` must find the message its first
//! attempt stored for a day (see `protocol/`), but holding a day of messages to answer
//! it would make a busy conversation's memory follow its traffic. An id costs a few
//! bytes here instead of a whole message.

use parley_protocol::Millis;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

/// A request id the store read back with the message it stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    /// Who sent it.
    pub sender: String,
    /// The client's request id.
    pub request: String,
    /// The message it stored.
    pub seq: u64,
    /// When.
    pub at: Millis,
}

/// (sender, request id) → the message it stored and when. A pair is kept as a 64-bit
/// hash with keys of this process's own choosing: no client can aim for another's id,
/// and two pairs meeting by chance (odds of one in 2^64 a lookup) at worst send a
/// retry to the store (see [`crate::core::Refusal::NotHeld`]) or answer it with the
/// other message.
#[derive(Debug, Clone, Default)]
pub struct RequestMemory {
    keys: RandomState,
    sent: HashMap<u64, (u64, Millis)>,
}

impl RequestMemory {
    fn key(&self, sender: &str, request: &str) -> u64 {
        self.keys.hash_one((sender, request))
    }

    /// Remember that `sender`'s request `request` stored message `seq` at `at`. An empty
    /// id is not remembered: a later request with an empty id is a new one.
    pub fn remember(&mut self, sender: &str, request: &str, seq: u64, at: Millis) {
        if request.is_empty() {
            return;
        }
        let key = self.key(sender, request);
        self.sent.insert(key, (seq, at));
    }

    /// The message `sender`'s request `request` stored, if remembered.
    pub fn find(&self, sender: &str, request: &str) -> Option<u64> {
        if request.is_empty() {
            return None;
        }
        self.sent
            .get(&self.key(sender, request))
            .map(|&(seq, _)| seq)
    }

    /// Forget the ids of messages stored before `at`.
    pub fn forget_before(&mut self, at: Millis) {
        self.sent.retain(|_, &mut (_, sent)| sent >= at);
    }

    /// Hand back the room of forgotten ids once it is most of what is allocated.
    pub fn give_back_room(&mut self) {
        if self.sent.capacity() > 4 * self.sent.len().max(16) {
            self.sent.shrink_to(self.sent.len() * 5 / 4);
        }
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::RequestMemory;

    #[test]
    fn an_id_is_found_for_its_sender_only_until_forgotten() {
        let mut memory = RequestMemory::default();
        memory.remember("ann", "r1", 7, 1_000);
        memory.remember("ben", "r2", 8, 2_000);
        memory.remember("ann", "", 9, 2_000);
        assert_eq!(memory.find("ann", "r1"), Some(7));
        assert_eq!(memory.find("ben", "r1"), None, "another sender's id");
        assert_eq!(memory.find("ann", ""), None, "an empty id is never a retry");
        memory.forget_before(1_500);
        assert_eq!(memory.find("ann", "r1"), None);
        assert_eq!(memory.find("ben", "r2"), Some(8));
        assert_eq!(memory.len(), 1);
    }
}
