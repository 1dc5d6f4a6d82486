//! Recall-window timers: one task and one delay queue for every open window, on tokio
//! time so paused-clock tests can step through them.

use super::Hub;
use crate::clock::Clock;
use crate::core::RecallTimer;
use futures::StreamExt;
use std::sync::Weak;
use tokio::sync::mpsc;
use tokio_util::time::DelayQueue;

/// Wait for each window to close and let the hub tell the sender; ends with the hub.
pub(super) async fn run(
    hub: Weak<Hub>,
    clock: Clock,
    mut arm: mpsc::UnboundedReceiver<RecallTimer>,
) {
    let mut queue: DelayQueue<RecallTimer> = DelayQueue::new();
    loop {
        tokio::select! {
            timer = arm.recv() => match timer {
                Some(timer) => {
                    let at = clock.instant_at(timer.at);
                    queue.insert_at(timer, at);
                }
                None => break,
            },
            Some(expired) = queue.next() => {
                let Some(hub) = hub.upgrade() else { break };
                hub.recall_window_closed(expired.get_ref()).await;
            }
        }
    }
}
