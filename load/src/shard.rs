//! One client process's share of a run: it connects its groups' sessions, sets them up,
//! waits for the start, drives the scenario for the run's length, drains, checks every
//! session's record and reports.

use crate::args::{Scenario, Target};
use crate::baseline::Forwarded;
use crate::check::{Arrival, SessionCheck};
use crate::stats::{bump, note, Event, Shared};
use crate::wire::{self, Ws};
use anyhow::Context;
use futures::{SinkExt, StreamExt};
use parley_protocol::view::{ChangeRef, FrameView};
use parley_protocol::{ErrorCode, Op, Request};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Everything a client process needs to play its part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardSpec {
    /// Which client process this is.
    pub shard: usize,
    /// Scenario.
    pub scenario: Scenario,
    /// Server kind.
    pub target: Target,
    /// WebSocket URL of each server (`ws://127.0.0.1:PORT/ws` for parley,
    /// `ws://127.0.0.1:PORT` for the baseline); sessions are dealt to them in turn.
    pub urls: Vec<String>,
    /// Token secret (parley).
    pub secret: String,
    /// Run tag, so user names never collide with an earlier run on the same server.
    pub tag: String,
    /// First group this process owns.
    pub first_group: usize,
    /// Groups this process owns.
    pub groups: usize,
    /// Users per group.
    pub members: usize,
    /// Sessions per user.
    pub sessions_per_user: usize,
    /// Sends per second per sender; 0: each sender keeps `window` messages in flight.
    pub rate_per_sender: f64,
    /// Messages a sender may have in flight (not yet delivered to every other session).
    pub window: u64,
    /// How long to send (or hold, for `connect`).
    pub duration_ms: u64,
    /// How long to wait for the last deliveries.
    pub drain_ms: u64,
    /// Body size in bytes.
    pub body: usize,
    /// Source addresses to spread sockets over.
    pub sources: usize,
    /// Handshakes in flight at once.
    pub connect_concurrency: usize,
    /// Leave notifications on (members otherwise mute their conversation at setup).
    pub unmuted: bool,
}

impl ShardSpec {
    fn sessions_per_group(&self) -> usize {
        self.members * self.sessions_per_user
    }

    fn user(&self, group: usize, member: usize) -> String {
        format!("{}-g{group}-u{member}", self.tag)
    }

    /// The server of a group's session: consecutive sessions of the run go to consecutive
    /// servers, so a group of two or more sessions spans as many nodes as it can.
    fn node(&self, group: usize, slot: usize) -> usize {
        (group * self.sessions_per_group() + slot) % self.urls.len().max(1)
    }

    fn session_url(&self, group: usize, slot: usize) -> String {
        let url = &self.urls[self.node(group, slot)];
        let member = slot / self.sessions_per_user.max(1);
        match self.target {
            Target::Parley => format!(
                "{url}?token={}",
                wire::token(&self.secret, &self.user(group, member))
            ),
            Target::Baseline => format!("{url}/room/{}-g{group}", self.tag),
        }
    }
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

/// A group's open sessions, in slot order.
struct Opened {
    key: String,
    sessions: Vec<Ws>,
    /// The node of each session.
    nodes: Vec<usize>,
}

/// Run this process's share; every event goes to `events`; sending starts when `go` fires.
pub async fn run(spec: ShardSpec, events: mpsc::UnboundedSender<Event>, go: oneshot::Receiver<()>) {
    let shard = spec.shard;
    if let Err(e) = drive(spec, &events, go).await {
        let _ = events.send(Event::Failed {
            shard,
            error: format!("{e:#}"),
        });
    }
}

async fn drive(
    spec: ShardSpec,
    events: &mpsc::UnboundedSender<Event>,
    go: oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let spec = Arc::new(spec);
    let shared = Arc::new(Shared::default());
    let _ = wire::now_us();

    let progress = {
        let (shared, events, shard) = (shared.clone(), events.clone(), spec.shard);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let connected = shared.connected.load(Ordering::Relaxed);
                if events.send(Event::Setup { shard, connected }).is_err() {
                    return;
                }
            }
        })
    };
    let gate = Arc::new(Semaphore::new(spec.connect_concurrency.max(1)));
    let mut setups = tokio::task::JoinSet::new();
    for g in spec.first_group..spec.first_group + spec.groups {
        let (spec, shared, gate) = (spec.clone(), shared.clone(), gate.clone());
        setups.spawn(async move { (g, open_group(&spec, &shared, &gate, g).await) });
    }
    let mut opened = Vec::new();
    while let Some(done) = setups.join_next().await {
        let (g, result) = done.context("setup task")?;
        match result {
            Ok(group) => opened.push((g, group)),
            Err(e) if spec.scenario == Scenario::Connect => {
                note(&format!("group {g}: {e:#}"));
            }
            Err(e) => {
                progress.abort();
                return Err(e.context(format!("setting up group {g}")));
            }
        }
    }
    progress.abort();
    opened.sort_by_key(|(g, _)| *g);
    let _ = events.send(Event::Ready {
        shard: spec.shard,
        connected: shared.connected.load(Ordering::Relaxed),
        failed: shared.connect_failed.load(Ordering::Relaxed),
    });
    go.await.context("the run was called off")?;

    let start = Instant::now();
    let send_until = start + Duration::from_millis(spec.duration_ms);
    let stop = CancellationToken::new();
    let ticker = tokio::spawn(ticks(spec.shard, shared.clone(), events.clone(), start));

    let mut window_delivered = 0;
    let mut checks_by_group = Vec::new();
    match spec.scenario {
        Scenario::Connect => {
            let mut holders = tokio::task::JoinSet::new();
            for (_, group) in opened {
                for ws in group.sessions {
                    holders.spawn(hold(ws, shared.clone(), stop.clone()));
                }
            }
            tokio::time::sleep_until(send_until.into()).await;
            stop.cancel();
            while holders.join_next().await.is_some() {}
        }
        Scenario::Fanout | Scenario::Dm => {
            let mut tasks = tokio::task::JoinSet::new();
            let mut groups = Vec::new();
            for (gi, (_, group)) in opened.into_iter().enumerate() {
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
            tokio::time::sleep_until(send_until.into()).await;
            window_delivered = shared.delivered.load(Ordering::Relaxed);
            drain(&spec, &shared).await;
            stop.cancel();
            let mut checks: Vec<Vec<Option<SessionCheck>>> = groups
                .iter()
                .map(|g| (0..g.n).map(|_| None).collect())
                .collect();
            while let Some(done) = tasks.join_next().await {
                let (gi, slot, check) = done.context("session task")?;
                checks[gi][slot] = Some(check);
            }
            for (group, checks) in groups.into_iter().zip(checks) {
                let checks: Vec<SessionCheck> = checks.into_iter().flatten().collect();
                checks_by_group.push((group, checks));
            }
        }
        Scenario::RecallRace => {
            let mut tasks = tokio::task::JoinSet::new();
            for (_, group) in opened {
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
            window_delivered = shared.delivered.load(Ordering::Relaxed);
        }
    }
    ticker.abort();

    let mut result = shared.result(spec.duration_ms, window_delivered);
    for (group, checks) in &checks_by_group {
        let (lost, duplicated, reordered) = tally(spec.target, group, checks);
        result.lost += lost;
        result.duplicated += duplicated;
        result.reordered += reordered;
    }
    let _ = events.send(Event::Done {
        shard: spec.shard,
        result: Box::new(result),
    });
    Ok(())
}

/// Report one second at a time.
async fn ticks(
    shard: usize,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Event>,
    start: Instant,
) {
    let (mut sent, mut delivered) = (0, 0);
    for index in 0.. {
        tokio::time::sleep_until((start + Duration::from_secs(index + 1)).into()).await;
        let now_sent = shared.sent.load(Ordering::Relaxed);
        let now_delivered = shared.delivered.load(Ordering::Relaxed);
        let tick = Event::Tick {
            shard,
            index,
            sent: now_sent - sent,
            delivered: now_delivered - delivered,
            latency: shared.take_interval(),
        };
        (sent, delivered) = (now_sent, now_delivered);
        if events.send(tick).is_err() {
            return;
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

/// (lost, duplicated, reordered) over one group's sessions.
fn tally(target: Target, group: &Group, checks: &[SessionCheck]) -> (u64, u64, u64) {
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
    (lost, duplicated, reordered)
}

/// Open one session and wait for its greeting.
async fn open_session(
    spec: &ShardSpec,
    shared: &Shared,
    gate: &Semaphore,
    group: usize,
    slot: usize,
) -> anyhow::Result<Ws> {
    let _permit = gate.acquire().await?;
    let url = spec.session_url(group, slot);
    let index = group * spec.sessions_per_group() + slot;
    let source = wire::source_addr(index + spec.shard, spec.sources);
    let started = Instant::now();
    let opened = tokio::time::timeout(Duration::from_secs(60), async {
        let mut ws = wire::dial(&url, source).await?;
        wire::greeting(&mut ws).await?;
        anyhow::Ok(ws)
    })
    .await
    .context("connect timed out")
    .and_then(|r| r);
    match opened {
        Ok(ws) => {
            shared.connect_latency(started.elapsed().as_micros() as u64);
            bump(&shared.connected);
            Ok(ws)
        }
        Err(e) => {
            bump(&shared.connect_failed);
            shared.error("connect_failed");
            Err(e)
        }
    }
}

/// Connect a group's sessions and, for parley, make its members a conversation.
async fn open_group(
    spec: &ShardSpec,
    shared: &Shared,
    gate: &Semaphore,
    g: usize,
) -> anyhow::Result<Opened> {
    let per_group = spec.sessions_per_group();
    let mut sessions = Vec::with_capacity(per_group);
    for slot in 0..per_group {
        sessions.push(open_session(spec, shared, gate, g, slot).await?);
    }
    let key = match spec.target {
        Target::Baseline => format!("{}-g{g}", spec.tag),
        Target::Parley if spec.scenario == Scenario::Connect => String::new(),
        Target::Parley => converse(spec, g, &mut sessions).await?,
    };
    let nodes = (0..per_group).map(|slot| spec.node(g, slot)).collect();
    Ok(Opened {
        key,
        sessions,
        nodes,
    })
}

/// Connect the group's users to its first and open their conversation: a group for
/// `fanout`, a direct conversation for pairs. Returns the conversation id.
async fn converse(spec: &ShardSpec, g: usize, sessions: &mut [Ws]) -> anyhow::Result<String> {
    let spu = spec.sessions_per_user;
    let first = spec.user(g, 0);
    let others: Vec<String> = (1..spec.members).map(|m| spec.user(g, m)).collect();
    for (i, other) in others.iter().enumerate() {
        let connect = Op::Connect {
            user: other.clone(),
        };
        wire::request(&mut sessions[0], &request(format!("c{i}"), connect)).await?;
        let accept = Op::Accept {
            user: first.clone(),
        };
        wire::request(&mut sessions[(i + 1) * spu], &request("a0", accept)).await?;
    }
    let opening = if spec.members == 2 {
        let send = Op::Send {
            conversation: None,
            to: Some(others[0].clone()),
            body: "opening".to_owned(),
            reply_to: None,
        };
        request("open", send)
    } else {
        let group = Op::CreateGroup {
            members: others,
            title: None,
        };
        request("group", group)
    };
    let conversation = wire::request(&mut sessions[0], &opening)
        .await?
        .conversation
        .context("the server named no conversation")?;
    if !spec.unmuted && spec.scenario != Scenario::RecallRace {
        let mute = request(
            "mute",
            Op::Mute {
                conversation: conversation.clone(),
                muted: true,
            },
        );
        for m in 0..spec.members {
            wire::request(&mut sessions[m * spu], &mute).await?;
        }
    }
    Ok(conversation)
}

/// A parley request.
fn request(id: impl Into<String>, op: Op) -> Request {
    Request { id: id.into(), op }
}

/// Keep an idle session open, answering pings, until the hold ends.
async fn hold(mut ws: Ws, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            next = ws.next() => match next {
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    return shared.error(&format!("closed_{code}"));
                }
                Some(Ok(_)) => bump(&shared.other),
                Some(Err(_)) | None => return shared.error("connection_lost"),
            }
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
    fn new(target: Target, slot: usize, key: &str) -> Self {
        match target {
            Target::Parley => Outgoing::Parley {
                slot,
                request: request(
                    String::new(),
                    Op::Send {
                        conversation: Some(key.to_owned()),
                        to: None,
                        body: String::new(),
                        reply_to: None,
                    },
                ),
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
                wire::load_body(body, *slot, counter, at_us, size);
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
                wire::load_body(body, *slot, counter, at_us, size);
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
    async fn run(self, mut ws: Ws, start: Instant, stop: CancellationToken) -> SessionCheck {
        let mut check = SessionCheck::default();
        let send_until = start + Duration::from_millis(self.spec.duration_ms);
        let rate = self.spec.rate_per_sender;
        let mut schedule = (rate > 0.0).then(|| {
            let period = Duration::from_secs_f64(1.0 / rate);
            let phase = period.mul_f64(rand::random::<f64>());
            let mut i = tokio::time::interval_at((start + phase).into(), period);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            i
        });
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
                    Some(s) => wire::us_at(s.tick().await.into_std()),
                    None => {
                        let window = self.spec.window;
                        self.group.room(self.slot, counter, window).await;
                        wire::now_us()
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
                        self.shared.send_lag(wire::now_us().saturating_sub(at));
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

    fn receive(&self, text: &str, check: &mut SessionCheck) {
        let shared = &self.shared;
        match FrameView::parse(text) {
            Ok(FrameView::Message(m)) => {
                let Some((sender, counter, at)) = m.body.as_deref().and_then(wire::parse_body)
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
                shared.latency(wire::now_us().saturating_sub(at));
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

/// Sessions of a race pair: A1 sends and recalls, A2 watches; B1 reads, B2 watches.
const A1: usize = 0;
const B1: usize = 2;

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
        let mut sinks = Vec::new();
        let mut streams = Vec::new();
        for ws in sessions {
            let (sink, stream) = ws.split();
            sinks.push(sink);
            streams.push(stream);
        }
        let mut incoming = futures::stream::select_all(
            streams
                .into_iter()
                .enumerate()
                .map(|(i, s)| s.map(move |m| (i, m))),
        );
        let mut checks: Vec<SessionCheck> = (0..4).map(|_| SessionCheck::default()).collect();
        let mut past: HashMap<String, Winner> = HashMap::new();
        let mut rounds: HashMap<String, RaceSeen> = HashMap::new();
        let rate = self.spec.rate_per_sender;
        let mut schedule = (rate > 0.0).then(|| {
            let period = Duration::from_secs_f64(1.0 / rate);
            let phase = period.mul_f64(rand::random::<f64>());
            tokio::time::interval_at((start + phase).into(), period)
        });
        let mut body = String::new();
        let mut round = 0u64;
        'rounds: while Instant::now() < send_until {
            if let Some(s) = &mut schedule {
                s.tick().await;
            }
            round += 1;
            wire::load_body(&mut body, A1, round, wire::now_us(), self.spec.body);
            let send = Op::Send {
                conversation: Some(self.key.clone()),
                to: None,
                body: std::mem::take(&mut body),
                reply_to: None,
            };
            let send = request(format!("s{round}"), send);
            let frame = serde_json::to_string(&send).expect("requests serialise");
            if let Op::Send { body: used, .. } = send.op {
                body = used;
            }
            if sinks[A1].send(Message::text(frame)).await.is_err() {
                self.shared.error("send_failed");
                break;
            }
            bump(&self.shared.sent);
            let (sent_id, recall_id, read_id) = (
                format!("s{round}"),
                format!("c{round}"),
                format!("d{round}"),
            );
            let mut message: Option<String> = None;
            let mut answers: (Option<bool>, Option<bool>) = (None, None);
            let mut answered_at: Option<Instant> = None;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let (Some(mid), (Some(recall), Some(read))) = (&message, answers) {
                    let seen = rounds.entry(mid.clone()).or_default();
                    let winner = match (recall, read) {
                        (true, false) => Some(Winner::Recall),
                        (false, true) => Some(Winner::Read),
                        _ => None,
                    };
                    let complete = match winner {
                        Some(Winner::Recall) => {
                            [1, 2, 3].iter().all(|&s| seen.recalled[s] > 0)
                                && [1, 2, 3].iter().all(|&s| seen.message[s] > 0)
                        }
                        Some(Winner::Read) => {
                            [0, 1, 3].iter().all(|&s| seen.read[s] > 0)
                                && [1, 2, 3].iter().all(|&s| seen.message[s] > 0)
                        }
                        None => true,
                    };
                    let settled = answered_at.get_or_insert_with(Instant::now).elapsed()
                        > Duration::from_secs(2);
                    if complete || settled {
                        self.judge(winner, seen);
                        if let Some(w) = winner {
                            past.insert(mid.clone(), w);
                        }
                        rounds.remove(mid);
                        continue 'rounds;
                    }
                }
                let next = tokio::time::timeout_at(deadline.into(), incoming.next()).await;
                let Ok(Some((session, frame))) = next else {
                    self.shared.error(if next.is_err() {
                        "race_timeout"
                    } else {
                        "connection_lost"
                    });
                    break 'rounds;
                };
                let Ok(Message::Text(text)) = frame else {
                    if frame.is_err() {
                        self.shared.error("connection_lost");
                        break 'rounds;
                    }
                    continue;
                };
                match FrameView::parse(&text) {
                    Ok(FrameView::Ack { id, result }) if session == A1 && id == sent_id => {
                        let Some(m) = result.message else { continue };
                        let mid = m.id.as_deref().unwrap_or_default().to_owned();
                        bump(&self.shared.acked);
                        self.shared.expected.fetch_add(3, Ordering::Relaxed);
                        message = Some(mid.clone());
                        let recall = request(
                            recall_id.as_str(),
                            Op::Recall {
                                conversation: self.key.clone(),
                                message: mid.clone(),
                            },
                        );
                        let read = request(
                            read_id.as_str(),
                            Op::Read {
                                conversation: self.key.clone(),
                                message: mid,
                            },
                        );
                        let recall = serde_json::to_string(&recall).expect("requests serialise");
                        let read = serde_json::to_string(&read).expect("requests serialise");
                        // Alternate which goes out first; the server sees them on two
                        // connections at once either way.
                        let sent = if round.is_multiple_of(2) {
                            let a = sinks[A1].send(Message::text(recall)).await;
                            a.and(sinks[B1].send(Message::text(read)).await)
                        } else {
                            let a = sinks[B1].send(Message::text(read)).await;
                            a.and(sinks[A1].send(Message::text(recall)).await)
                        };
                        if sent.is_err() {
                            self.shared.error("send_failed");
                            break 'rounds;
                        }
                    }
                    Ok(FrameView::Ack { id, .. }) if session == A1 && id == recall_id => {
                        answers.0 = Some(true)
                    }
                    Ok(FrameView::Ack { id, .. }) if session == B1 && id == read_id => {
                        answers.1 = Some(true)
                    }
                    Ok(FrameView::Error { id: Some(id), code }) => {
                        if session == A1 && id == recall_id {
                            answers.0 = Some(false);
                            if code != ErrorCode::AlreadyRead.as_str() {
                                self.shared.error(&format!("recall_{code}"));
                            }
                        } else if session == B1 && id == read_id {
                            answers.1 = Some(false);
                            if code != ErrorCode::NotFound.as_str() {
                                self.shared.error(&format!("read_{code}"));
                            }
                        } else {
                            self.shared.error(&code);
                        }
                    }
                    Ok(FrameView::Error { id: None, code }) => self.shared.error(&code),
                    Ok(FrameView::Message(m)) => {
                        if let Some(id) = m.id.as_deref() {
                            rounds.entry(id.to_owned()).or_default().message[session] += 1;
                        }
                        if checks[session].observe(&m.conversation, m.seq) != Arrival::Duplicate {
                            bump(&self.shared.unique);
                        }
                        bump(&self.shared.delivered);
                        if self.nodes.get(session) != self.nodes.get(A1) {
                            bump(&self.shared.across);
                        }
                        if let Some((_, _, at)) = m.body.as_deref().and_then(wire::parse_body) {
                            self.shared.latency(wire::now_us().saturating_sub(at));
                        }
                    }
                    Ok(FrameView::Read(ChangeRef {
                        conversation: c,
                        message: mid,
                        pos,
                    })) => {
                        checks[session].observe(&c, pos);
                        self.late_or(&past, &mid, || {
                            rounds.entry(mid.to_string()).or_default().read[session] += 1
                        });
                    }
                    Ok(FrameView::Recalled(ChangeRef {
                        conversation: c,
                        message: mid,
                        pos,
                    })) => {
                        checks[session].observe(&c, pos);
                        self.late_or(&past, &mid, || {
                            rounds.entry(mid.to_string()).or_default().recalled[session] += 1
                        });
                    }
                    Ok(_) => bump(&self.shared.other),
                    Err(_) => self.shared.error("unparseable_frame"),
                }
            }
        }
        let mut merged = SessionCheck::default();
        for c in checks {
            merged.duplicated += c.duplicated;
            merged.reordered += c.reordered;
        }
        merged
    }

    /// A frame about a message whose race was already judged can only be wrong.
    fn late_or(&self, past: &HashMap<String, Winner>, mid: &str, now: impl FnOnce()) {
        if past.contains_key(mid) {
            bump(&self.shared.inconsistent);
        } else {
            now();
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
