//! `fanout` and `dm`: groups of members sending to each other, a `dm` group being a pair
//! (the same play, only the set-up differs: a direct conversation instead of a group).
//! Each member sends at its pace, or keeps a window of messages in flight; every delivery
//! is checked for order and duplicates as it arrives, and once the run has drained every
//! acknowledged send (every send, for the baseline) must have reached every other member.

use crate::args::Target;
use crate::baseline::Forwarded;
use crate::check::{Arrival, SessionCheck, Tally};
use crate::client::Ws;
use crate::setup::Opened;
use crate::spec::ShardSpec;
use crate::stamp;
use crate::stats::{bump, note, Shared};
use anyhow::Context;
use futures::{SinkExt, StreamExt};
use parley_protocol::view::FrameView;
use parley_protocol::{Op, Request};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Play every group from `start` until the window closes, drain, and check: the
/// deliveries within the window, and what the checks found.
pub async fn play(
    opened: Vec<Opened>,
    spec: &Arc<ShardSpec>,
    shared: &Arc<Shared>,
    start: Instant,
) -> anyhow::Result<(u64, Tally)> {
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut groups = Vec::new();
    for (gi, group) in opened.into_iter().enumerate() {
        let state = Arc::new(Group::new(group.key, group.nodes));
        for (slot, ws) in group.sessions.into_iter().enumerate() {
            let member = Member {
                slot,
                group: state.clone(),
                shared: shared.clone(),
                spec: spec.clone(),
            };
            let stop = stop.clone();
            tasks.spawn(async move { (gi, slot, member.run(ws, start, stop).await) });
        }
        groups.push(state);
    }
    let send_until = start + Duration::from_millis(spec.duration_ms);
    tokio::time::sleep_until(send_until.into()).await;
    let window_delivered = shared.delivered.load(Ordering::Relaxed);
    drain(spec, shared).await;
    stop.cancel();
    let mut checks: Vec<Vec<Option<SessionCheck>>> = groups
        .iter()
        .map(|g| (0..g.n).map(|_| None).collect())
        .collect();
    while let Some(done) = tasks.join_next().await {
        let (gi, slot, check) = done.context("session task")?;
        checks[gi][slot] = Some(check);
    }
    let mut found = Tally::default();
    for (group, checks) in groups.iter().zip(checks) {
        let checks: Vec<SessionCheck> = checks.into_iter().flatten().collect();
        found += tally(spec.target, group, &checks);
    }
    Ok((window_delivered, found))
}

/// One group while the run goes on: what its senders may send and what was acknowledged.
struct Group {
    /// Conversation (parley) or room (baseline).
    key: String,
    /// Sessions in the group.
    n: usize,
    /// Stream names of the baseline's senders.
    names: Vec<String>,
    /// `[sender * n + receiver]`: the last counter of `sender` that `receiver` got.
    seen: Vec<AtomicU64>,
    /// Wakes a sender waiting for room in its window.
    wake: Vec<Notify>,
    /// Messages each session sent.
    sent: Vec<AtomicU64>,
    /// Acknowledged sends: (seq, sending session).
    acked: Mutex<Vec<(u64, usize)>>,
    /// The node each session is on.
    nodes: Vec<usize>,
}

impl Group {
    fn new(key: String, nodes: Vec<usize>) -> Self {
        let n = nodes.len();
        Group {
            key,
            n,
            nodes,
            names: (0..n).map(|s| format!("s{s}")).collect(),
            seen: (0..n * n).map(|_| AtomicU64::new(0)).collect(),
            wake: (0..n).map(|_| Notify::new()).collect(),
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            acked: Mutex::new(Vec::new()),
        }
    }

    fn across(&self, sender: usize, receiver: usize) -> bool {
        self.nodes.get(sender) != self.nodes.get(receiver)
    }

    fn in_flight(&self, sender: usize, sent: u64) -> u64 {
        let delivered = (0..self.n)
            .filter(|&r| r != sender)
            .map(|r| self.seen[sender * self.n + r].load(Ordering::Acquire))
            .min()
            .unwrap_or(sent);
        sent.saturating_sub(delivered)
    }

    /// Resolve once `sender` has fewer than `window` messages in flight.
    async fn room(&self, sender: usize, sent: u64, window: u64) {
        loop {
            let woken = self.wake[sender].notified();
            if self.in_flight(sender, sent) < window {
                return;
            }
            woken.await;
        }
    }

    fn delivered(&self, sender: usize, receiver: usize, counter: u64) {
        if sender < self.n {
            self.seen[sender * self.n + receiver].fetch_max(counter, Ordering::Release);
            self.wake[sender].notify_one();
        }
    }
}

/// The frame a member sends, made once and refilled for each send: only the request id
/// (parley) and the body change, so nothing else is copied per send.
enum Outgoing {
    /// A parley `send` into the group's conversation.
    Parley { slot: usize, request: Request },
    /// A baseline frame for the group's room.
    Baseline {
        slot: usize,
        room: String,
        sender: String,
        body: String,
    },
}

impl Outgoing {
    /// What session `slot` of a group sends into `key`.
    fn new(target: Target, slot: usize, key: &str) -> Self {
        match target {
            Target::Parley => Outgoing::Parley {
                slot,
                request: Request {
                    id: String::new(),
                    op: Op::Send {
                        conversation: Some(key.to_owned()),
                        to: None,
                        body: String::new(),
                        reply_to: None,
                    },
                },
            },
            Target::Baseline => Outgoing::Baseline {
                slot,
                room: key.to_owned(),
                sender: slot.to_string(),
                body: String::new(),
            },
        }
    }

    /// The frame of send number `counter`, due at `at_us`, with a body of `size` bytes.
    fn frame(&mut self, counter: u64, at_us: u64, size: usize) -> String {
        match self {
            Outgoing::Parley { slot, request } => {
                use std::fmt::Write;
                let Op::Send { body, .. } = &mut request.op else {
                    unreachable!("made as a send")
                };
                stamp::load_body(body, *slot, counter, at_us, size);
                // Request ids are per user on the server (a repeated id is a retry of the
                // same send), and a user's sessions all send: the slot keeps them apart.
                request.id.clear();
                write!(request.id, "s{slot}.{counter}").expect("writing to a String");
                serde_json::to_string(request).expect("requests serialise")
            }
            Outgoing::Baseline {
                slot,
                room,
                sender,
                body,
            } => {
                stamp::load_body(body, *slot, counter, at_us, size);
                serde_json::to_string(&Forwarded::new(room, sender, body))
                    .expect("frames serialise")
            }
        }
    }
}

/// One session of a fan-out or DM group: sends its share and checks what arrives.
struct Member {
    slot: usize,
    group: Arc<Group>,
    shared: Arc<Shared>,
    spec: Arc<ShardSpec>,
}

impl Member {
    /// Send until the window closes, and read until `stop`; the session's record.
    async fn run(self, mut ws: Ws, start: Instant, stop: CancellationToken) -> SessionCheck {
        let mut check = SessionCheck::default();
        let send_until = start + Duration::from_millis(self.spec.duration_ms);
        let mut schedule = stamp::schedule(self.spec.rate_per_sender, start);
        let mut counter = 0u64;
        let mut outgoing = Outgoing::new(self.spec.target, self.slot, &self.group.key);
        let mut sending = true;
        // Made once, not per frame received: each would otherwise register and drop a
        // timer entry and a cancellation waiter for every delivery.
        let stopped = stop.cancelled();
        let window_over = tokio::time::sleep_until(send_until.into());
        tokio::pin!(stopped, window_over);
        loop {
            let turn = async {
                match &mut schedule {
                    // Stamped with the time it was due, so a sender falling behind shows
                    // up as latency instead of vanishing from it.
                    Some(s) => stamp::us_at(s.tick().await.into_std()),
                    None => {
                        let window = self.spec.window;
                        self.group.room(self.slot, counter, window).await;
                        stamp::now_us()
                    }
                }
            };
            tokio::select! {
                biased;
                _ = &mut stopped => break,
                next = ws.next() => match next {
                    Some(Ok(Message::Text(text))) => self.receive(&text, &mut check),
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.map_or(1005, |f| u16::from(f.code));
                        self.shared.error(&format!("closed_{code}"));
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        self.shared.error("connection_lost");
                        break;
                    }
                },
                _ = &mut window_over, if sending => sending = false,
                at = turn, if sending => {
                    if Instant::now() >= send_until {
                        sending = false;
                        continue;
                    }
                    counter += 1;
                    let frame = outgoing.frame(counter, at, self.spec.body);
                    if let Err(e) = ws.send(Message::text(frame)).await {
                        self.shared.error("send_failed");
                        note(&format!("send failed: {e}"));
                        break;
                    }
                    if schedule.is_some() {
                        self.shared.send_lag(stamp::now_us().saturating_sub(at));
                    }
                    self.group.sent[self.slot].store(counter, Ordering::Relaxed);
                    bump(&self.shared.sent);
                    if self.spec.target == Target::Baseline {
                        let others = self.group.n as u64 - 1;
                        self.shared.expected.fetch_add(others, Ordering::Relaxed);
                    }
                }
            }
        }
        check
    }

    /// One frame received: a delivery is checked and timed, an ack of a send counted.
    fn receive(&self, text: &str, check: &mut SessionCheck) {
        let shared = &self.shared;
        match FrameView::parse(text) {
            Ok(FrameView::Message(m)) => {
                let Some((sender, counter, at)) = m.body.as_deref().and_then(stamp::parse_body)
                else {
                    return bump(&shared.other);
                };
                let arrival = match self.spec.target {
                    Target::Parley => check.observe(&m.conversation, m.seq),
                    Target::Baseline => match self.group.names.get(sender) {
                        Some(name) => check.observe(name, counter),
                        None => return shared.error("unknown_sender"),
                    },
                };
                bump(&shared.delivered);
                if arrival != Arrival::Duplicate {
                    bump(&shared.unique);
                }
                if self.group.across(sender, self.slot) {
                    bump(&shared.across);
                }
                shared.latency(stamp::now_us().saturating_sub(at));
                self.group.delivered(sender, self.slot, counter);
            }
            Ok(FrameView::Ack { id, result }) => {
                if let (true, Some(m)) = (id.starts_with('s'), result.message) {
                    let mut acked = self.group.acked.lock().expect("unpoisoned");
                    acked.push((m.seq, self.slot));
                    bump(&shared.acked);
                    let others = self.group.n as u64 - 1;
                    shared.expected.fetch_add(others, Ordering::Relaxed);
                }
            }
            Ok(FrameView::Error { code, .. }) => shared.error(&code),
            Ok(_) => bump(&shared.other),
            Err(_) => shared.error("unparseable_frame"),
        }
    }
}

/// Wait until every expected delivery has arrived (and, for parley, every send is
/// acknowledged), or the drain time is up.
async fn drain(spec: &ShardSpec, shared: &Shared) {
    let deadline = Instant::now() + Duration::from_millis(spec.drain_ms);
    while Instant::now() < deadline {
        let acked = spec.target == Target::Baseline
            || shared.acked.load(Ordering::Relaxed) >= shared.sent.load(Ordering::Relaxed);
        if acked && shared.unique.load(Ordering::Relaxed) >= shared.expected.load(Ordering::Relaxed)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Losses, duplicates and reorders over one group's sessions.
fn tally(target: Target, group: &Group, checks: &[SessionCheck]) -> Tally {
    let duplicated = checks.iter().map(|c| c.duplicated).sum();
    let reordered = checks.iter().map(|c| c.reordered).sum();
    // A session whose task ended early still owes its deliveries: count them lost.
    let missing_sessions = group.n - checks.len();
    let mut lost = 0;
    match target {
        Target::Parley => {
            let acked = group.acked.lock().expect("unpoisoned");
            for &(seq, sender) in acked.iter() {
                lost += checks
                    .iter()
                    .enumerate()
                    .filter(|&(r, c)| r != sender && !c.saw(&group.key, seq))
                    .count() as u64;
                lost += missing_sessions as u64;
            }
        }
        Target::Baseline => {
            for sender in 0..group.n {
                let sent = group.sent[sender].load(Ordering::Relaxed);
                for counter in 1..=sent {
                    lost += checks
                        .iter()
                        .enumerate()
                        .filter(|&(r, c)| r != sender && !c.saw(&group.names[sender], counter))
                        .count() as u64;
                    lost += missing_sessions as u64;
                }
            }
        }
    }
    Tally {
        lost,
        duplicated,
        reordered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_are_the_frames_the_servers_expect() {
        let mut parley = Outgoing::new(Target::Parley, 3, "c\"1");
        let frame = parley.frame(7, 123, 16);
        assert_eq!(
            frame,
            r#"{"id":"s3.7","type":"send","conversation":"c\"1","body":"L 3 7 123 xxxxxx"}"#
        );
        let back: Request = serde_json::from_str(&frame).unwrap();
        assert_eq!(back.id, "s3.7");
        assert_eq!(
            parley.frame(8, 124, 0),
            frame
                .replace("7 123 xxxxxx", "8 124 ")
                .replace("s3.7", "s3.8")
        );
        let mut baseline = Outgoing::new(Target::Baseline, 3, "t-g1");
        assert_eq!(
            baseline.frame(7, 123, 0),
            r#"{"type":"message","message":{"conversation":"t-g1","seq":0,"sender":"3","body":"L 3 7 123 "}}"#
        );
    }
}
