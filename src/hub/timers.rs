//! Recall-window timers: one task and one min-heap of deadlines, on tokio time so
//! paused-time tests step through them, and woken early when the clock is stepped.
//!
//! A conversation has at most one deadline armed, its earliest open window: when it
//! fires, every window closed since is told at once and the next one is armed. So the
//! heap holds one entry per conversation with a window open, not one per message sent in
//! the last window (a busy server sends hundreds of thousands in two minutes).

use super::Hub;
use crate::clock::Clock;
use crate::core::RecallTimer;
use parley_protocol::Millis;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Weak;
use tokio::sync::mpsc;

/// How long a conversation whose windows could not be told (its store failed) waits
/// before it is tried again.
const RETRY_MS: Millis = 1_000;

/// A deadline in the heap: at `at`, tell the windows of `conversation` that closed from
/// `from` on (`from` stays put when a failed attempt is retried later).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: Millis,
    conversation: String,
    from: Millis,
}

/// What the timer task holds: the heap, and the deadline armed per conversation, which
/// tells a live entry from one a nearer deadline superseded.
#[derive(Default)]
struct Armed {
    heap: BinaryHeap<Reverse<Due>>,
    earliest: HashMap<String, Millis>,
}

impl Armed {
    /// Arm `conversation` at `at` unless a deadline no later is armed already (it tells
    /// this window too, and arms what is left).
    fn arm(&mut self, conversation: String, at: Millis, from: Millis) {
        if self.earliest.get(&conversation).is_some_and(|&e| e <= at) {
            return;
        }
        self.earliest.insert(conversation.clone(), at);
        self.heap.push(Reverse(Due {
            at,
            conversation,
            from,
        }));
    }

    /// The next live deadline due at `now`, disarmed.
    fn pop_due(&mut self, now: Millis) -> Option<Due> {
        while self.heap.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Reverse(due) = self.heap.pop().expect("peeked");
            if self.earliest.get(&due.conversation) == Some(&due.at) {
                self.earliest.remove(&due.conversation);
                return Some(due);
            }
        }
        if self.earliest.is_empty() {
            // Only superseded entries are left: hand their memory back.
            self.heap.clear();
            self.heap.shrink_to_fit();
            self.earliest.shrink_to_fit();
        }
        None
    }
}

/// Wait for each window to close and let the hub tell the sender; ends with the hub.
pub(super) async fn run(
    hub: Weak<Hub>,
    clock: Clock,
    mut arm: mpsc::UnboundedReceiver<RecallTimer>,
) {
    let mut armed = Armed::default();
    loop {
        // Every window armed so far is known before any fires: an arm seen only after
        // its conversation's timer fired would tell its window a second time.
        while let Ok(t) = arm.try_recv() {
            armed.arm(t.conversation, t.at, t.at);
        }
        while let Some(due) = armed.pop_due(clock.now()) {
            let Some(hub) = hub.upgrade() else { return };
            let fire = hub.recall_windows_closed(&due.conversation, due.from);
            let (told, later) =
                fire_taking_arms(fire, &due.conversation, &mut armed, &mut arm).await;
            match told {
                Ok(Some(next)) => armed.arm(due.conversation.clone(), next, next),
                Ok(None) => {}
                Err(e) => {
                    let conversation = &due.conversation;
                    tracing::warn!(error = %e, conversation, "cannot tell a sender recall is gone");
                    armed.arm(due.conversation.clone(), clock.now() + RETRY_MS, due.from);
                }
            }
            if let Some(at) = later {
                armed.arm(due.conversation, at, at);
            }
        }
        let next = armed.heap.peek().map(|Reverse(d)| clock.instant_at(d.at));
        tokio::select! {
            timer = arm.recv() => match timer {
                Some(t) => armed.arm(t.conversation, t.at, t.at),
                None => return,
            },
            _ = async { tokio::time::sleep_until(next.expect("guarded")).await }, if next.is_some() => {}
            _ = clock.jumped() => {}
        }
    }
}

/// Await `fire` (telling `firing`'s closed windows) while taking in the arms sent
/// meanwhile: a busy server arms a window with every send, and a fire that waits on the
/// store must not leave them piling up in the channel. Other conversations' arms are
/// armed at once (each fires later, so it still knows them first); `firing`'s own are
/// kept, the earliest only, for after the fire, as if they had waited in the channel.
async fn fire_taking_arms<T>(
    fire: impl std::future::Future<Output = T>,
    firing: &str,
    armed: &mut Armed,
    arm: &mut mpsc::UnboundedReceiver<RecallTimer>,
) -> (T, Option<Millis>) {
    tokio::pin!(fire);
    let mut later: Option<Millis> = None;
    loop {
        tokio::select! {
            told = &mut fire => return (told, later),
            timer = arm.recv() => match timer {
                Some(t) if t.conversation == firing => {
                    later = Some(later.map_or(t.at, |l| l.min(t.at)));
                }
                Some(t) => armed.arm(t.conversation, t.at, t.at),
                // The hub is gone: finish this fire, nothing more comes.
                None => return (fire.await, later),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_deadline_per_conversation_the_earliest() {
        let mut armed = Armed::default();
        armed.arm("c".into(), 200, 200);
        armed.arm("c".into(), 300, 300);
        armed.arm("d".into(), 250, 250);
        armed.arm("c".into(), 100, 100);
        assert_eq!(armed.heap.len(), 3, "300 was never armed: 200 tells it");
        let due = armed.pop_due(1_000).expect("c at 100");
        assert_eq!((due.conversation.as_str(), due.at), ("c", 100));
        let due = armed
            .pop_due(1_000)
            .expect("d at 250; c at 200 was superseded");
        assert_eq!((due.conversation.as_str(), due.at), ("d", 250));
        assert!(armed.pop_due(1_000).is_none());
        assert!(armed.heap.is_empty() && armed.earliest.is_empty());
    }

    #[tokio::test]
    async fn arms_sent_during_a_fire_are_taken_in_not_left_in_the_channel() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut armed = Armed::default();
        let (done, fired) = tokio::sync::oneshot::channel::<()>();
        let timer = |c: &str, at| RecallTimer {
            conversation: c.into(),
            at,
        };
        for (c, at) in [("d", 500), ("c", 400), ("d", 300), ("c", 350), ("e", 600)] {
            tx.send(timer(c, at)).unwrap();
        }
        let fire = async {
            // The store answers only once every arm above was taken in.
            tokio::task::yield_now().await;
            fired.await.unwrap();
            "told"
        };
        let waiting = async {
            tokio::task::yield_now().await;
            done.send(()).unwrap();
        };
        let ((told, later), ()) =
            tokio::join!(fire_taking_arms(fire, "c", &mut armed, &mut rx), waiting);
        assert_eq!(told, "told");
        assert_eq!(later, Some(350), "c's earliest, kept for after its fire");
        assert_eq!(armed.earliest.get("d"), Some(&300));
        assert_eq!(armed.earliest.get("e"), Some(&600));
        assert!(!armed.earliest.contains_key("c"));
        assert!(rx.try_recv().is_err(), "nothing left waiting");
    }

    #[test]
    fn nothing_is_due_before_its_time() {
        let mut armed = Armed::default();
        armed.arm("c".into(), 200, 150);
        assert!(armed.pop_due(199).is_none());
        let due = armed.pop_due(200).expect("due at 200");
        assert_eq!(due.from, 150, "a retry keeps where its windows began");
    }
}
