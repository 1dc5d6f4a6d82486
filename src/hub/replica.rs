//! The hub as one node of a cluster: claims scopes in the ledger before deciding, applies
//! other nodes' entries in order, fills gaps from the ledger, and shares presence.

use super::cache::Held;
use super::Hub;
use crate::cluster::broker::Incoming;
use crate::cluster::{Broker, Bulletin, Claim, Entry, Ledger, DIRECTORY};
use crate::core::{Change, Emit, RecallTimer, SessionId};
use crate::store::StoreError;
use dashmap::DashMap;
use parley_protocol::{MessageKind, UserId};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, Mutex as AsyncMutex, OwnedMutexGuard};
use tokio::time::Instant;

/// Tasks applying bulletins; a scope always goes to the same one, so its entries are
/// applied in arrival order without one busy scope holding up the others.
const APPLIERS: usize = 8;
/// How often recently written scopes are compared with what this node applied.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How far back that comparison looks (the ledger refreshes a scope's `touched` at most
/// once a second, so a write shows in the window for at least four seconds).
const POLL_WINDOW_SECS: f64 = 5.0;
/// How often a node sends its roster of connected users.
const ROSTER_EVERY: Duration = Duration::from_secs(2);
/// A node not heard from for this long counts as gone: its users are offline.
const NODE_SILENT: Duration = Duration::from_secs(7);

/// The cluster side of a hub.
pub(super) struct Replica {
    /// This node's id, also the high bits of its session ids.
    pub node: u32,
    pub ledger: Ledger,
    pub broker: Option<Broker>,
    /// Position delivered per conversation (`None` until first asked of the ledger, see
    /// [`Hub::delivered`]); its lock is the node-local half of a claim. (The directory's
    /// lock only serialises this node's directory decisions.)
    positions: DashMap<String, Arc<AsyncMutex<Option<u64>>>>,
    /// This node's start in the ledger (see [`Ledger::mark`]).
    mark: i64,
    /// Position applied of the directory, changed only under the directory's write lock,
    /// so directory entries are applied without waiting on any decision.
    directory: AtomicU64,
    /// Users with sessions on other nodes, per node, with when the node was last heard.
    remote: DashMap<u32, (Instant, HashSet<UserId>)>,
}

impl Replica {
    /// Whether the database answers now, and why this node is not ready (its database or
    /// its broker does not answer).
    pub async fn unready(&self) -> (bool, Option<String>) {
        let deadline = self.ledger.deadline();
        let broker = async {
            match &self.broker {
                Some(b) => b.ping(deadline).await,
                None => Ok(()),
            }
        };
        let (store, broker) = futures::join!(self.ledger.ping(), broker);
        let reachable = store.is_ok();
        let why: Vec<String> = [store, broker]
            .into_iter()
            .filter_map(|answer| answer.err().map(|e| e.to_string()))
            .collect();
        (reachable, (!why.is_empty()).then(|| why.join("; ")))
    }

    pub fn new(node: u32, ledger: Ledger, broker: Option<Broker>, mark: i64) -> Replica {
        Replica {
            node,
            ledger,
            broker,
            positions: DashMap::new(),
            mark,
            directory: AtomicU64::new(0),
            remote: DashMap::new(),
        }
    }

    fn position(&self, scope: &str) -> Arc<AsyncMutex<Option<u64>>> {
        if let Some(p) = self.positions.get(scope) {
            return p.clone();
        }
        self.positions.entry(scope.to_owned()).or_default().clone()
    }

    /// Whether `user` has a session on a node that is still alive.
    pub fn online_elsewhere(&self, user: &str) -> bool {
        self.remote
            .iter()
            .any(|n| n.value().0.elapsed() < NODE_SILENT && n.value().1.contains(user))
    }

    fn publish(&self, bulletin: &Bulletin) {
        if let Some(broker) = &self.broker {
            broker.publish(bulletin);
        }
    }
}

/// A conversation's position on this node, locked: the last of its entries whose frames
/// this node delivered. While the conversation is held, its state is at that entry too.
pub(super) struct Delivered {
    scope: String,
    at: OwnedMutexGuard<Option<u64>>,
}

impl Delivered {
    fn seq(&self) -> u64 {
        self.at.unwrap_or(0)
    }

    fn set(&mut self, seq: u64) {
        *self.at = Some(seq);
    }
}

/// A scope held for one decision: the node-local lock and, in a cluster, the ledger's.
#[derive(Default)]
pub(super) struct Claimed {
    scope: String,
    local: Option<Delivered>,
    claim: Option<Claim>,
    /// The claimed conversation's slot, kept so the cache cannot forget it between the
    /// claim reading it in and the decision.
    _pin: Option<super::cache::Slot>,
}

impl Claimed {
    /// Nothing held: a single node decides under its own locks.
    pub fn none() -> Claimed {
        Claimed::default()
    }

    /// Give the scope back without writing anything.
    pub async fn release(self) {
        if let Some(claim) = self.claim {
            claim.release().await;
        }
    }
}

impl Hub {
    /// Start a node of a cluster: mark the start in the ledger, read the directory and
    /// the reports, then apply bulletins and poll for what they missed. No conversation
    /// is read until a request or the timer needs it; the cache holds at most
    /// `cache_limit` entries of those read, as on a single server.
    pub async fn start_node(
        limits: parley_protocol::Limits,
        ledger: Ledger,
        broker: Option<(Broker, mpsc::Receiver<Incoming>)>,
        max_queue_bytes: usize,
        cache_limit: usize,
    ) -> Result<Arc<Hub>, StoreError> {
        let node = rand::random::<u32>() >> 1;
        let (broker, incoming) = match broker {
            Some((b, rx)) => (Some(b), Some(rx)),
            None => (None, None),
        };
        // Subscribed first (the broker is), marked next: an entry after the mark comes as
        // a bulletin or is found by the poll.
        let mark = ledger.mark().await?;
        let entries = ledger.start_up().await?;
        let replica = Replica::new(node, ledger, broker, mark);
        let mut changes = Vec::new();
        for entry in entries {
            if entry.scope == DIRECTORY {
                replica.directory.store(entry.seq, Ordering::Relaxed);
                changes.extend(entry.changes);
            } else {
                let reports = entry.changes.into_iter();
                changes.extend(reports.filter(|c| matches!(c, Change::Reported { .. })));
            }
        }
        let backend = super::Backend::Node(replica);
        let hub = Hub::build(limits, backend, max_queue_bytes, node, cache_limit);
        for change in &changes {
            hub.restore_one(change);
        }
        let weak = Arc::downgrade(&hub);
        if let Some(rx) = incoming {
            tokio::spawn(receive(weak.clone(), rx));
            tokio::spawn(roster(weak.clone()));
        }
        tokio::spawn(poll(weak));
        tracing::info!(node, mark, changes = changes.len(), "cluster node started");
        Ok(hub)
    }

    pub(super) fn replica(&self) -> Option<&Replica> {
        match &self.backend {
            super::Backend::Node(r) => Some(r),
            super::Backend::Local(_) => None,
        }
    }

    /// The cluster's ledger, when this hub is a node: what every node shares besides
    /// the entries (one-time tickets redeemed anywhere).
    pub fn ledger(&self) -> Option<Ledger> {
        self.replica().map(|r| r.ledger.clone())
    }

    /// Take `scope` for a decision; in a cluster, lock it in the ledger and catch this
    /// node up first, so the rule sees every entry any node committed before. A
    /// conversation this node does not hold is read whole by the same claim.
    pub(super) async fn claim(&self, scope: &str) -> Result<Claimed, StoreError> {
        let Some(r) = self.replica() else {
            return Ok(Claimed::none());
        };
        let mut local = self.delivered(scope).await?;
        let directory = r.directory.load(Ordering::Acquire);
        let pin = (scope != DIRECTORY).then(|| self.slot_or_insert(scope));
        let held = match &pin {
            Some(slot) => slot.lock().await.in_memory(),
            None => true,
        };
        let after = match (scope == DIRECTORY, held) {
            (true, _) => directory,
            (false, true) => local.seq(),
            (false, false) => 0,
        };
        let mut claim = r.ledger.claim(scope, after, directory).await?;
        for entry in std::mem::take(&mut claim.directory_missed) {
            self.apply_directory_entry(entry);
        }
        let missed = std::mem::take(&mut claim.missed);
        if scope == DIRECTORY {
            missed
                .into_iter()
                .for_each(|e| self.apply_directory_entry(e));
        } else if held {
            for entry in missed {
                self.apply_entry(&mut local, entry).await;
            }
        } else {
            let held = self.lock_as_is(scope).await;
            let held = self.fill(&mut local, held, missed);
            self.release(scope, held);
        }
        Ok(Claimed {
            scope: scope.to_owned(),
            local: Some(local),
            claim: Some(claim),
            _pin: pin,
        })
    }

    /// Lock the position of conversation `scope` on this node, asking the ledger for it
    /// the first time (see [`Ledger::mark`]). The directory's is only a lock.
    async fn delivered(&self, scope: &str) -> Result<Delivered, StoreError> {
        let r = self.replica().expect("a node");
        let mut pos = r.position(scope).lock_owned().await;
        if pos.is_none() && scope != DIRECTORY {
            *pos = Some(r.ledger.position_at(scope, r.mark).await?);
        }
        Ok(Delivered {
            scope: scope.to_owned(),
            at: pos,
        })
    }

    /// Hold conversation `scope`, reading it from the ledger (its every entry) unless it
    /// is held already. A caller that has its position locked uses [`Hub::fill`].
    pub(super) async fn hold_from_ledger(&self, scope: &str) -> Result<Held, StoreError> {
        let r = self.replica().expect("a node");
        let mut pos = self.delivered(scope).await?;
        let held = self.lock_as_is(scope).await;
        if held.in_memory() {
            return Ok(held);
        }
        let entries = match r.ledger.entries(scope, 0).await {
            Ok(entries) => entries,
            Err(e) => {
                self.release(scope, held);
                return Err(e);
            }
        };
        Ok(self.fill(&mut pos, held, entries))
    }

    /// Take in the whole of conversation `scope` (`entries`, in order) as held: those
    /// this node delivered already are applied as read back, the rest as they come (see
    /// [`Hub::apply_entry`]). The next recall window is armed from now on: one that
    /// closed while the conversation was not held here is not told by this node.
    fn fill(&self, pos: &mut Delivered, mut held: Held, entries: Vec<Entry>) -> Held {
        let scope = pos.scope.clone();
        let (old, new): (Vec<Entry>, Vec<Entry>) =
            entries.into_iter().partition(|e| e.seq <= pos.seq());
        for entry in old {
            let ours = entry
                .changes
                .iter()
                .filter(|c| c.conversation() == Some(&*scope));
            let ours: Vec<Change> = ours.cloned().collect();
            self.apply(Some(&mut held), &ours, super::Applying::Reload);
        }
        let next = held.conv.as_mut().and_then(|conv| {
            conv.keep_latest_notifications(super::cache::KEPT_NOTIFICATIONS);
            conv.next_recall_window(&self.ctx(&self.directory.read()))
        });
        if let Some(at) = next {
            let conversation = scope.to_owned();
            let _ = self.timers.send(RecallTimer { conversation, at });
        }
        held.mark_read_back();
        for entry in new {
            self.apply_entry_to(pos, &mut held, entry);
        }
        held
    }

    /// Commit `changes` as the claimed scope's next entry in the ledger; its number comes
    /// back with the scope and the changes. Frames that change nothing (typing) are only
    /// published, for the other nodes' sessions.
    pub(super) async fn commit_to_ledger(
        &self,
        claimed: Claimed,
        changes: Vec<Change>,
        emits: &[Emit],
    ) -> Result<(Vec<Change>, Option<(String, u64)>), StoreError> {
        let Claimed {
            scope,
            local,
            claim,
            ..
        } = claimed;
        let Some(r) = self.replica() else {
            return Ok((changes, None));
        };
        let (Some(claim), Some(mut local), false) = (claim, local, changes.is_empty()) else {
            if !emits.is_empty() {
                r.publish_frames(emits);
            }
            return Ok((changes, None));
        };
        let next = claim.seq + 1;
        if scope == DIRECTORY {
            // Marked applied before the commit: a conversation claim that reads this
            // entry from the ledger must not apply it a second time (this node applies it
            // itself once committed). Unmarked should the commit fail.
            let _dir = self.directory.write();
            r.directory.store(next, Ordering::Release);
        }
        let seq = match claim.commit(&changes, emits).await {
            Ok(seq) => seq,
            Err(e) => {
                if scope == DIRECTORY {
                    let _dir = self.directory.write();
                    r.directory.store(next - 1, Ordering::Release);
                }
                return Err(e);
            }
        };
        debug_assert_eq!(seq, next);
        if scope != DIRECTORY {
            local.set(seq);
        }
        Ok((changes, Some((scope, seq))))
    }

    /// Tell the other nodes about an entry this node committed.
    pub(super) fn publish_entry(
        &self,
        scope: &str,
        seq: u64,
        changes: Vec<Change>,
        emits: Vec<Emit>,
    ) {
        if let Some(r) = self.replica() {
            r.publish(&Bulletin::Entry {
                node: r.node,
                entry: Entry {
                    scope: scope.to_owned(),
                    seq,
                    changes,
                    emits,
                },
            });
        }
    }

    /// Apply the directory's next entry (older ones are skipped), its frames included,
    /// under the directory's write lock.
    fn apply_directory_entry(&self, entry: Entry) {
        let Some(r) = self.replica() else { return };
        let mut dir = self.directory.write();
        if entry.seq != r.directory.load(Ordering::Acquire) + 1 {
            return;
        }
        for change in &entry.changes {
            self.apply_to_directory(&mut dir, change);
        }
        for emit in &entry.emits {
            self.sessions.deliver(emit);
        }
        r.directory.store(entry.seq, Ordering::Release);
        crate::metrics::cluster("entry_applied");
    }

    /// Take in the next entry of a conversation whose position is locked: its changes,
    /// through the same [`Hub::apply`] as live requests, when the conversation is held
    /// here (else only its reports: the rest is read with the conversation); then its
    /// frames for this node's sessions, and the recall timers of the messages it stored
    /// (of a conversation not held, only for a sender with a session here).
    async fn apply_entry(&self, pos: &mut Delivered, entry: Entry) {
        if entry.seq <= pos.seq() {
            return;
        }
        let mut held = self.lock_as_is(&entry.scope).await;
        let scope = entry.scope.clone();
        self.apply_entry_to(pos, &mut held, entry);
        self.release(&scope, held);
    }

    /// [`Hub::apply_entry`] with the conversation's slot locked by the caller.
    fn apply_entry_to(&self, pos: &mut Delivered, held: &mut Held, entry: Entry) {
        if entry.seq <= pos.seq() {
            return;
        }
        let in_memory = held.in_memory();
        if in_memory {
            self.apply(Some(held), &entry.changes, super::Applying::Live);
        } else {
            let reports = entry
                .changes
                .iter()
                .filter(|c| matches!(c, Change::Reported { .. }));
            let reports: Vec<Change> = reports.cloned().collect();
            self.apply(None, &reports, super::Applying::Live);
        }
        for change in &entry.changes {
            let Change::MessageStored { message, .. } = change else {
                continue;
            };
            let told_here = in_memory || self.sessions.count(&message.sender) > 0;
            if let (MessageKind::Message, Some(at), true) =
                (message.kind, message.recall_until, told_here)
            {
                let conversation = message.conversation.clone();
                let _ = self.timers.send(RecallTimer { conversation, at });
            }
        }
        for emit in &entry.emits {
            self.sessions.deliver(emit);
        }
        pos.set(entry.seq);
        crate::metrics::cluster("entry_applied");
    }

    /// Bring `scope` up to the ledger's position `upto` (or everything, when `None`),
    /// applying every missing entry in order.
    pub(super) async fn catch_up(&self, scope: &str, upto: Option<u64>) -> Result<(), StoreError> {
        let Some(r) = self.replica() else {
            return Ok(());
        };
        if scope == DIRECTORY {
            let applied = r.directory.load(Ordering::Acquire);
            if upto.is_some_and(|u| u <= applied) {
                return Ok(());
            }
            let entries = r.ledger.entries(scope, applied).await?;
            if !entries.is_empty() {
                crate::metrics::cluster("gap_filled");
            }
            for entry in entries {
                self.apply_directory_entry(entry);
            }
            return Ok(());
        }
        let mut pos = self.delivered(scope).await?;
        if upto.is_some_and(|u| u <= pos.seq()) {
            return Ok(());
        }
        let entries = r.ledger.entries(scope, pos.seq()).await?;
        if !entries.is_empty() {
            crate::metrics::cluster("gap_filled");
        }
        for entry in entries {
            self.apply_entry(&mut pos, entry).await;
        }
        Ok(())
    }

    /// Apply a bulletin's entry: at once when it is the next one, after filling the gap
    /// from the ledger when entries are missing before it, not at all when already seen.
    async fn absorb(&self, entry: Entry) {
        let Some(r) = self.replica() else { return };
        if entry.scope == DIRECTORY {
            let applied = r.directory.load(Ordering::Acquire);
            if entry.seq == applied + 1 {
                return self.apply_directory_entry(entry);
            }
            if entry.seq > applied + 1 {
                if let Err(e) = self.catch_up(DIRECTORY, Some(entry.seq)).await {
                    tracing::warn!(error = %e, "cannot fill a directory gap; will retry");
                }
            }
            return;
        }
        let mut pos = match self.delivered(&entry.scope).await {
            Ok(pos) => pos,
            // The poll finds it again.
            Err(e) => return tracing::warn!(error = %e, "cannot read a position; will retry"),
        };
        if entry.seq <= pos.seq() {
            return;
        }
        if entry.seq == pos.seq() + 1 {
            return self.apply_entry(&mut pos, entry).await;
        }
        drop(pos);
        if let Err(e) = self.catch_up(&entry.scope, Some(entry.seq)).await {
            tracing::warn!(error = %e, scope = %entry.scope, "cannot fill a gap; will retry");
        }
    }

    /// Before answering a sync, make sure this node has every entry of these scopes, and
    /// of the scopes written lately that it has not heard of: a conversation another node
    /// has just opened with this user is otherwise known here only once its bulletin
    /// arrives, and a sync right after the other user's send would leave it out.
    pub(super) async fn catch_up_all(&self, scopes: Vec<String>) {
        let Some(r) = self.replica() else { return };
        self.poll_once(POLL_WINDOW_SECS).await;
        let scopes: Vec<String> = scopes.into_iter().chain([DIRECTORY.to_owned()]).collect();
        match r.ledger.positions(&scopes).await {
            Ok(positions) => {
                for (scope, seq) in positions {
                    if let Err(e) = self.catch_up(&scope, Some(seq)).await {
                        tracing::warn!(error = %e, %scope, "cannot catch up");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read positions"),
        }
    }

    /// Messages `user` sent in the throttle window, counted across every node.
    pub(super) async fn sent_recently_everywhere(&self, user: &str) -> Option<u32> {
        let r = self.replica()?;
        let since = self.clock.now() - self.limits.recall_throttle_window_ms as i64;
        match r.ledger.sent_since(user, since).await {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "cannot count sends; using this node's count");
                None
            }
        }
    }

    /// A user's first session opened here, or the last one closed.
    pub(super) fn presence_changed(&self, user: &str, online: bool) {
        if let Some(r) = self.replica() {
            r.publish(&Bulletin::Presence {
                node: r.node,
                user: user.to_owned(),
                online,
            });
        }
    }

    /// The first session id this node hands out: the node id in the high bits keeps
    /// session ids unique across the cluster.
    pub(super) fn first_session_id(node: u32) -> SessionId {
        ((node as u64) << 32) | 1
    }

    fn take_bulletin(&self, bulletin: Bulletin) -> Option<Entry> {
        let r = self.replica()?;
        if bulletin.node() == r.node {
            return None;
        }
        match bulletin {
            Bulletin::Entry { entry, .. } => return Some(entry),
            Bulletin::Frames { emits, .. } => {
                for emit in &emits {
                    self.sessions.deliver(emit);
                }
            }
            Bulletin::Presence { node, user, online } => {
                let mut n = r
                    .remote
                    .entry(node)
                    .or_insert_with(|| (Instant::now(), HashSet::new()));
                n.0 = Instant::now();
                if online {
                    n.1.insert(user);
                } else {
                    n.1.remove(&user);
                }
            }
            Bulletin::Roster { node, users } => {
                r.remote
                    .insert(node, (Instant::now(), users.into_iter().collect()));
            }
        }
        None
    }
}

impl Replica {
    fn publish_frames(&self, emits: &[Emit]) {
        self.publish(&Bulletin::Frames {
            node: self.node,
            emits: emits.to_vec(),
        });
    }
}

/// Route bulletins to the appliers, one scope always to the same one.
async fn receive(hub: Weak<Hub>, mut incoming: mpsc::Receiver<Incoming>) {
    let mut appliers = Vec::with_capacity(APPLIERS);
    for _ in 0..APPLIERS {
        let (tx, mut rx) = mpsc::unbounded_channel::<Entry>();
        let hub = hub.clone();
        tokio::spawn(async move {
            while let Some(entry) = rx.recv().await {
                let Some(hub) = hub.upgrade() else { return };
                hub.absorb(entry).await;
            }
        });
        appliers.push(tx);
    }
    while let Some(item) = incoming.recv().await {
        let Some(hub) = hub.upgrade() else { return };
        match item {
            Incoming::Bulletin(b) => {
                if let Some(entry) = hub.take_bulletin(b) {
                    let shard = fxhash(&entry.scope) % APPLIERS;
                    let _ = appliers[shard].send(entry);
                }
            }
            Incoming::Subscribed => {
                // Whatever was published while unsubscribed is in the ledger.
                tokio::spawn(async move { hub.poll_once(3600.0).await });
            }
        }
    }
}

fn fxhash(s: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish() as usize
}

impl Hub {
    /// Compare the positions of recently written scopes with this node's and fill gaps.
    async fn poll_once(&self, window_secs: f64) {
        let Some(r) = self.replica() else { return };
        let touched = match r.ledger.recently_touched(window_secs).await {
            Ok(t) => t,
            Err(e) => return tracing::warn!(error = %e, "cannot poll the ledger"),
        };
        for (scope, seq) in touched {
            let behind = if scope == DIRECTORY {
                r.directory.load(Ordering::Acquire) < seq
            } else {
                match r.positions.get(&scope) {
                    Some(p) => p.try_lock().is_ok_and(|at| at.is_none_or(|at| at < seq)),
                    None => true,
                }
            };
            if behind {
                if let Err(e) = self.catch_up(&scope, Some(seq)).await {
                    tracing::warn!(error = %e, %scope, "cannot catch up");
                }
            }
        }
    }
}

async fn poll(hub: Weak<Hub>) {
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        hub.poll_once(POLL_WINDOW_SECS).await;
    }
}

async fn roster(hub: Weak<Hub>) {
    let mut tick = tokio::time::interval(ROSTER_EVERY);
    loop {
        tick.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        if let Some(r) = hub.replica() {
            r.publish(&Bulletin::Roster {
                node: r.node,
                users: hub.sessions.users(),
            });
        }
    }
}
