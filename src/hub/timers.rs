//! Recall-window timers: one task and one min-heap of deadlines, on tokio time so
//! paused-time tests step through them, and woken early when the clock is stepped.

use super::Hub;
use crate::clock::Clock;
use crate::core::RecallTimer;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Weak;
use tokio::sync::mpsc;

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Due(parley_protocol::Millis, String, String);

/// Wait for each window to close and let the hub tell the sender; ends with the hub.
pub(super) async fn run(
    hub: Weak<Hub>,
    clock: Clock,
    mut arm: mpsc::UnboundedReceiver<RecallTimer>,
) {
    let mut heap: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
    loop {
        let now = clock.now();
        while heap.peek().is_some_and(|Reverse(d)| d.0 <= now) {
            let Reverse(Due(at, conversation, message)) = heap.pop().expect("peeked");
            let Some(hub) = hub.upgrade() else { return };
            let timer = RecallTimer {
                conversation,
                message,
                at,
            };
            hub.recall_window_closed(&timer).await;
        }
        let next = heap.peek().map(|Reverse(d)| clock.instant_at(d.0));
        tokio::select! {
            timer = arm.recv() => match timer {
                Some(t) => heap.push(Reverse(Due(t.at, t.conversation, t.message))),
                None => return,
            },
            _ = async { tokio::time::sleep_until(next.expect("guarded")).await }, if next.is_some() => {}
            _ = clock.jumped() => {}
        }
    }
}
