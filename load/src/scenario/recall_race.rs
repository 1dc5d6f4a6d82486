//! `recall-race`: pairs of users, two sessions each, racing a read against a recall of
//! the same message, round after round. Each round one side must win, as the SPEC says, and
//! every session must hear exactly the winner's frame: a recall that won reaches the three
//! other sessions as `recalled` and nobody gets a `read`; a read that won reaches the three
//! sessions other than the reader as `read` and nobody gets a `recalled`.

use crate::check::{Arrival, SessionCheck};
use crate::client::Ws;
use crate::setup::Opened;
use crate::spec::ShardSpec;
use crate::stamp;
use crate::stats::{bump, Shared};
use anyhow::Context;
use futures::stream::SplitSink;
use futures::{SinkExt, Stream, StreamExt};
use parley_protocol::view::{ChangeRef, FrameView, MessageRef};
use parley_protocol::{ErrorCode, Op, Request};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::{self, Message};

/// Sessions of a race pair: A1 sends and recalls, A2 watches; B1 reads, B2 watches.
const A1: usize = 0;
const B1: usize = 2;

/// Race every pair from `start` until `send_until`; the deliveries made meanwhile.
pub async fn play(
    opened: Vec<Opened>,
    spec: &Arc<ShardSpec>,
    shared: &Arc<Shared>,
    start: Instant,
    send_until: Instant,
) -> anyhow::Result<u64> {
    let mut tasks = tokio::task::JoinSet::new();
    for group in opened {
        let pair = Pair {
            shared: shared.clone(),
            spec: spec.clone(),
            key: group.key,
            nodes: group.nodes,
        };
        tasks.spawn(pair.run(group.sessions, start, send_until));
    }
    while let Some(done) = tasks.join_next().await {
        let check = done.context("race task")?;
        shared
            .duplicated
            .fetch_add(check.duplicated, Ordering::Relaxed);
        shared
            .inconsistent
            .fetch_add(check.reordered, Ordering::Relaxed);
    }
    Ok(shared.delivered.load(Ordering::Relaxed))
}

/// Who won one read/recall race.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Winner {
    Recall,
    Read,
}

/// The frames each of a pair's four sessions got about one raced message.
#[derive(Debug, Default)]
struct RaceSeen {
    message: [u8; 4],
    recalled: [u8; 4],
    read: [u8; 4],
}

/// What a pair keeps from round to round.
#[derive(Default)]
struct Record {
    /// Each session's order record.
    checks: [SessionCheck; 4],
    /// Raced messages not yet judged, and what each session got about them.
    open: HashMap<String, RaceSeen>,
    /// Raced messages judged, and who won.
    judged: HashMap<String, Winner>,
}

impl Record {
    /// What the sessions got about `mid` so far.
    fn seen(&mut self, mid: &str) -> &mut RaceSeen {
        if !self.open.contains_key(mid) {
            self.open.insert(mid.to_owned(), RaceSeen::default());
        }
        self.open.get_mut(mid).expect("just made")
    }

    /// The four sessions' duplicates and reorders together.
    fn merged(self) -> SessionCheck {
        let mut merged = SessionCheck::default();
        for c in self.checks {
            merged.duplicated += c.duplicated;
            merged.reordered += c.reordered;
        }
        merged
    }
}

/// One round: A1's send, then a recall and a read of it racing.
struct Round {
    n: u64,
    sent_id: String,
    recall_id: String,
    read_id: String,
    /// The message sent, once acknowledged.
    message: Option<String>,
    /// Whether the recall and the read succeeded, once each is answered.
    answers: (Option<bool>, Option<bool>),
    /// When both were answered.
    answered_at: Option<Instant>,
}

impl Round {
    fn new(n: u64) -> Self {
        Round {
            n,
            sent_id: format!("s{n}"),
            recall_id: format!("c{n}"),
            read_id: format!("d{n}"),
            message: None,
            answers: (None, None),
            answered_at: None,
        }
    }
}

/// The sending halves of a pair's four sessions.
type Sinks = Vec<SplitSink<Ws, Message>>;

/// A pair racing reads against recalls, round after round.
struct Pair {
    shared: Arc<Shared>,
    spec: Arc<ShardSpec>,
    key: String,
    /// The node of each of the four sessions.
    nodes: Vec<usize>,
}

impl Pair {
    /// Rounds until `send_until`; returns the order record of all four sessions merged.
    async fn run(self, sessions: Vec<Ws>, start: Instant, send_until: Instant) -> SessionCheck {
        let (mut sinks, streams): (Sinks, Vec<_>) =
            sessions.into_iter().map(StreamExt::split).unzip();
        let mut incoming = futures::stream::select_all(
            streams
                .into_iter()
                .enumerate()
                .map(|(i, s)| s.map(move |m| (i, m))),
        );
        let mut record = Record::default();
        let mut schedule = stamp::schedule(self.spec.rate_per_sender, start);
        let mut send = Request {
            id: String::new(),
            op: Op::Send {
                conversation: Some(self.key.clone()),
                to: None,
                body: String::new(),
                reply_to: None,
            },
        };
        let mut n = 0u64;
        while Instant::now() < send_until {
            if let Some(s) = &mut schedule {
                s.tick().await;
            }
            n += 1;
            let frame = self.send_frame(&mut send, n);
            if sinks[A1].send(Message::text(frame)).await.is_err() {
                self.shared.error("send_failed");
                break;
            }
            bump(&self.shared.sent);
            let mut round = Round::new(n);
            if !self
                .follow(&mut round, &mut record, &mut sinks, &mut incoming)
                .await
            {
                break;
            }
        }
        record.merged()
    }

    /// A1's send of round `n`, refilled in `send`.
    fn send_frame(&self, send: &mut Request, n: u64) -> String {
        use std::fmt::Write;
        let Op::Send { body, .. } = &mut send.op else {
            unreachable!("made as a send")
        };
        stamp::load_body(body, A1, n, stamp::now_us(), self.spec.body);
        send.id.clear();
        write!(send.id, "s{n}").expect("writing to a String");
        serde_json::to_string(send).expect("requests serialise")
    }

    /// Follow `round` until it is judged: false once the pair cannot go on (a session
    /// lost, a send failed, or nothing came for 10 s).
    async fn follow<S>(
        &self,
        round: &mut Round,
        record: &mut Record,
        sinks: &mut Sinks,
        incoming: &mut S,
    ) -> bool
    where
        S: Stream<Item = (usize, Result<Message, tungstenite::Error>)> + Unpin,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.settle(round, record) {
                return true;
            }
            let next = tokio::time::timeout_at(deadline.into(), incoming.next()).await;
            let Ok(Some((session, frame))) = next else {
                self.shared.error(if next.is_err() {
                    "race_timeout"
                } else {
                    "connection_lost"
                });
                return false;
            };
            let Ok(Message::Text(text)) = frame else {
                if frame.is_err() {
                    self.shared.error("connection_lost");
                    return false;
                }
                continue;
            };
            let Some(mid) = self.receive(session, &text, round, record) else {
                continue;
            };
            if self.race(round, mid, sinks).await.is_err() {
                self.shared.error("send_failed");
                return false;
            }
        }
    }

    /// Judge the round once both answers are in and every frame the winner calls for has
    /// arrived, or 2 s after the answers: true once judged.
    fn settle(&self, round: &mut Round, record: &mut Record) -> bool {
        let (Some(mid), (Some(recall), Some(read))) = (&round.message, round.answers) else {
            return false;
        };
        let seen = record.seen(mid);
        let winner = match (recall, read) {
            (true, false) => Some(Winner::Recall),
            (false, true) => Some(Winner::Read),
            _ => None,
        };
        let everyone =
            |frames: &[u8; 4], sessions: [usize; 3]| sessions.iter().all(|&s| frames[s] > 0);
        let complete = match winner {
            Some(Winner::Recall) => {
                everyone(&seen.recalled, [1, 2, 3]) && everyone(&seen.message, [1, 2, 3])
            }
            Some(Winner::Read) => {
                everyone(&seen.read, [0, 1, 3]) && everyone(&seen.message, [1, 2, 3])
            }
            None => true,
        };
        let settled =
            round.answered_at.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(2);
        if !(complete || settled) {
            return false;
        }
        self.judge(winner, seen);
        if let Some(w) = winner {
            record.judged.insert(mid.clone(), w);
        }
        record.open.remove(mid);
        true
    }

    /// One frame on `session`. When it acknowledges the round's send, the message id: the
    /// race is on.
    fn receive(
        &self,
        session: usize,
        text: &str,
        round: &mut Round,
        record: &mut Record,
    ) -> Option<String> {
        match FrameView::parse(text) {
            Ok(FrameView::Ack { id, result }) if session == A1 && id == round.sent_id => {
                let mid = result.message?.id.as_deref().unwrap_or_default().to_owned();
                bump(&self.shared.acked);
                self.shared.expected.fetch_add(3, Ordering::Relaxed);
                round.message = Some(mid.clone());
                return Some(mid);
            }
            Ok(FrameView::Ack { id, .. }) if session == A1 && id == round.recall_id => {
                round.answers.0 = Some(true);
            }
            Ok(FrameView::Ack { id, .. }) if session == B1 && id == round.read_id => {
                round.answers.1 = Some(true);
            }
            Ok(FrameView::Error { id: Some(id), code }) => self.refused(session, &id, &code, round),
            Ok(FrameView::Error { id: None, code }) => self.shared.error(&code),
            Ok(FrameView::Message(m)) => self.delivered(session, &m, record),
            Ok(FrameView::Read(change)) => {
                self.changed(session, &change, record, |seen| &mut seen.read);
            }
            Ok(FrameView::Recalled(change)) => {
                self.changed(session, &change, record, |seen| &mut seen.recalled);
            }
            Ok(_) => bump(&self.shared.other),
            Err(_) => self.shared.error("unparseable_frame"),
        }
        None
    }

    /// Send the recall (from A1) and the read (from B1) of `mid` at once, alternating
    /// which goes out first; the server sees them on two connections at once either way.
    async fn race(
        &self,
        round: &Round,
        mid: String,
        sinks: &mut Sinks,
    ) -> Result<(), tungstenite::Error> {
        let recall = Request {
            id: round.recall_id.clone(),
            op: Op::Recall {
                conversation: self.key.clone(),
                message: mid.clone(),
            },
        };
        let read = Request {
            id: round.read_id.clone(),
            op: Op::Read {
                conversation: self.key.clone(),
                message: mid,
            },
        };
        let recall = Message::text(serde_json::to_string(&recall).expect("requests serialise"));
        let read = Message::text(serde_json::to_string(&read).expect("requests serialise"));
        if round.n.is_multiple_of(2) {
            let a = sinks[A1].send(recall).await;
            a.and(sinks[B1].send(read).await)
        } else {
            let a = sinks[B1].send(read).await;
            a.and(sinks[A1].send(recall).await)
        }
    }

    /// A refusal: of the round's recall (it lost, or failed), of its read, or of
    /// something else.
    fn refused(&self, session: usize, id: &str, code: &str, round: &mut Round) {
        if session == A1 && id == round.recall_id {
            round.answers.0 = Some(false);
            if code != ErrorCode::AlreadyRead.as_str() {
                self.shared.error(&format!("recall_{code}"));
            }
        } else if session == B1 && id == round.read_id {
            round.answers.1 = Some(false);
            if code != ErrorCode::NotFound.as_str() {
                self.shared.error(&format!("read_{code}"));
            }
        } else {
            self.shared.error(code);
        }
    }

    /// A message delivered to `session`: checked, counted and timed.
    fn delivered(&self, session: usize, m: &MessageRef<'_>, record: &mut Record) {
        if let Some(id) = m.id.as_deref() {
            record.seen(id).message[session] += 1;
        }
        if record.checks[session].observe(&m.conversation, m.seq) != Arrival::Duplicate {
            bump(&self.shared.unique);
        }
        bump(&self.shared.delivered);
        if self.nodes.get(session) != self.nodes.get(A1) {
            bump(&self.shared.across);
        }
        if let Some((_, _, at)) = m.body.as_deref().and_then(stamp::parse_body) {
            self.shared.latency(stamp::now_us().saturating_sub(at));
        }
    }

    /// A `read` or `recalled` frame on `session`, counted where `frames` picks; one about a
    /// message whose race was already judged can only be wrong.
    fn changed(
        &self,
        session: usize,
        change: &ChangeRef<'_>,
        record: &mut Record,
        frames: fn(&mut RaceSeen) -> &mut [u8; 4],
    ) {
        record.checks[session].observe(&change.conversation, change.pos);
        if record.judged.contains_key(&*change.message) {
            bump(&self.shared.inconsistent);
        } else {
            frames(record.seen(&change.message))[session] += 1;
        }
    }

    /// Check one race against the SPEC: exactly one side won, and every session heard
    /// exactly the winner's frame (the acting session excepted).
    fn judge(&self, winner: Option<Winner>, seen: &RaceSeen) {
        let s = &self.shared;
        bump(&s.races);
        let (frames, silent, expect) = match winner {
            None => return bump(&s.inconsistent),
            Some(Winner::Recall) => {
                bump(&s.recall_won);
                (&seen.recalled, &seen.read, [false, true, true, true])
            }
            Some(Winner::Read) => {
                bump(&s.read_won);
                (&seen.read, &seen.recalled, [true, true, false, true])
            }
        };
        for session in 0..4 {
            match (expect[session], frames[session]) {
                (true, 0) => bump(&s.lost),
                (true, 1) | (false, 0) => {}
                (true, n) => {
                    s.duplicated.fetch_add(n as u64 - 1, Ordering::Relaxed);
                }
                (false, _) => bump(&s.inconsistent),
            }
            if silent[session] > 0 {
                bump(&s.inconsistent);
            }
            if session != A1 && seen.message[session] == 0 {
                bump(&s.lost);
            }
            if seen.message[session] > 1 {
                s.duplicated
                    .fetch_add(seen.message[session] as u64 - 1, Ordering::Relaxed);
            }
        }
    }
}
