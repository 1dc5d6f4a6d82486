//! The order a conversation's decisions reach sessions in while their commits are still
//! being written.
//!
//! On a store that [orders chains](crate::store::Store::orders_chains), a decision is
//! applied to the conversation in memory as soon as it is made and its commit is queued;
//! the conversation's lock is given back at once, so the next request decides on that
//! state and its commit rides the same transaction instead of waiting for a disk flush
//! behind the first. What stays after the commit — frames, the answer, the recall timer —
//! waits for a [`Ticket`]'s turn, so every session still sees the conversation in
//! decision order, and nothing is shown before it is stored.
//!
//! A failed commit breaks the conversation's [`Chain`]: every decision queued after it
//! fails unwritten (it was decided on a state that never came to be), and the state in
//! memory, which already holds the failed change, is read back from the store before the
//! next decision (see [`super::Hub::hold`]).

use crate::store::{Chain, StoreError};
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::Notify;

/// A conversation's decisions in flight, in order.
#[derive(Debug, Default)]
pub(super) struct Sequencer {
    turns: Mutex<Turns>,
    moved: Notify,
    chain: Arc<Chain>,
}

#[derive(Debug, Default)]
struct Turns {
    /// Tickets issued: the next one gets this number.
    issued: u64,
    /// Tickets done: the one whose turn it is has this number.
    done: u64,
    /// Tickets dropped before their turn (a task that panicked), skipped when reached.
    abandoned: BTreeSet<u64>,
}

impl Sequencer {
    /// The next place in line; call under the conversation's lock, in decision order.
    pub fn issue(self: &Arc<Self>) -> Ticket {
        let mut turns = self.turns.lock();
        let number = turns.issued;
        turns.issued += 1;
        Ticket {
            sequencer: self.clone(),
            number,
        }
    }

    /// The chain this conversation's commits are links of.
    pub fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    /// Whether every ticket issued is done.
    pub fn idle(&self) -> bool {
        let turns = self.turns.lock();
        turns.issued == turns.done
    }

    /// Wait until every ticket issued so far is done, then say whether the state they
    /// decided on was all stored (`Err` when a commit failed on the way).
    pub async fn settled(&self) -> Result<(), StoreError> {
        let until = self.turns.lock().issued;
        self.wait_until(|turns| turns.done >= until).await;
        if self.chain.broken() {
            return Err(Chain::broken_error());
        }
        Ok(())
    }

    async fn wait_until(&self, ready: impl Fn(&Turns) -> bool) {
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            // Registered before the check, so a ticket done in between still wakes us.
            moved.as_mut().enable();
            if ready(&self.turns.lock()) {
                return;
            }
            moved.await;
        }
    }
}

/// One decision's place in its conversation's line: what it delivers waits for
/// [`Ticket::turn`], and dropping the ticket lets the next one go.
#[derive(Debug)]
pub(super) struct Ticket {
    sequencer: Arc<Sequencer>,
    number: u64,
}

impl Ticket {
    /// Wait until every decision made before this one has delivered.
    pub async fn turn(&self) {
        let number = self.number;
        self.sequencer.wait_until(|t| t.done == number).await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut turns = self.sequencer.turns.lock();
        if turns.done != self.number {
            turns.abandoned.insert(self.number);
            return;
        }
        turns.done += 1;
        loop {
            let next = turns.done;
            if !turns.abandoned.remove(&next) {
                break;
            }
            turns.done += 1;
        }
        drop(turns);
        self.sequencer.moved.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tickets_take_their_turns_in_issue_order() {
        let seq = Arc::new(Sequencer::default());
        let (first, second) = (seq.issue(), seq.issue());
        let order = Arc::new(Mutex::new(Vec::new()));
        let late = {
            let order = order.clone();
            tokio::spawn(async move {
                second.turn().await;
                order.lock().push(2);
            })
        };
        tokio::task::yield_now().await;
        assert!(order.lock().is_empty(), "the second went before the first");
        first.turn().await;
        order.lock().push(1);
        drop(first);
        late.await.unwrap();
        assert_eq!(*order.lock(), vec![1, 2]);
        assert!(seq.idle());
    }

    #[tokio::test]
    async fn a_ticket_dropped_early_is_skipped() {
        let seq = Arc::new(Sequencer::default());
        let (first, second, third) = (seq.issue(), seq.issue(), seq.issue());
        drop(second);
        assert!(!seq.idle());
        drop(first);
        third.turn().await;
        drop(third);
        assert!(seq.idle());
    }

    #[tokio::test]
    async fn settled_reports_a_broken_chain() {
        let seq = Arc::new(Sequencer::default());
        let ticket = seq.issue();
        seq.chain().break_off();
        drop(ticket);
        assert!(seq.settled().await.is_err());
        let fresh = Sequencer::default();
        assert!(fresh.settled().await.is_ok());
    }
}
