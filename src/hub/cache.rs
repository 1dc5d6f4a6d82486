//! The conversations held in memory: a cache over the store. A conversation is read back
//! when a request first needs it, inside its own lock, so a racing read and recall still
//! meet one state and have exactly one winner; the least recently used are forgotten
//! whenever the cache holds more than its limit. A cluster node reads a conversation
//! from the ledger, all its entries (see `replica.rs`); a store that cannot read
//! conversations back one at a time (the memory store) is held whole instead.

use super::sequencer::Sequencer;
use super::Hub;
use crate::core::conversation::{Keep, HELD_TAIL};
use crate::core::{Change, Conversation};
use crate::store::{OnDemand, Reach, Readback, StoreError, REQUEST_MEMORY_MS};
use parley_protocol::Millis;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// A conversation's place in memory: its lock serialises every decision on it. It holds
/// nothing until the conversation's creation is committed (or when a first request was
/// refused), so nothing uncommitted is ever found in it.
pub(super) type Slot = Arc<AsyncMutex<Cached>>;

/// Outstanding notifications a conversation read back keeps per participant (the
/// latest): read back, nobody can tell which were already seen.
pub(super) const KEPT_NOTIFICATIONS: usize = 50;

/// Messages a conversation in use keeps while the cache is over its limit: enough for
/// its inbox row and a first history page, for most.
const PRESSED_TAIL: usize = 64;

/// How long after a scan that left the cache over its limit the next may start, in ms.
const RESCAN_MS: i64 = 100;

/// A slot, locked by the holder.
pub(super) type Held = OwnedMutexGuard<Cached>;

/// What a slot holds.
#[derive(Debug)]
pub(super) struct Cached {
    /// The conversation, `None` when it does not exist (yet).
    pub conv: Option<Conversation>,
    /// Whether `conv` says what the store holds: false until it was read back.
    loaded: bool,
    /// Whether a rule needed it whole: then it is not trimmed (see [`Hub::trim`]), so a
    /// reader paging back through it does not read it whole again for every page.
    whole_wanted: bool,
    /// When it was last held, in [`Cache::tick`]s: the least recent go first.
    used: u64,
    /// Its share of [`Cache::weight`].
    weight: usize,
    /// Its decisions whose commits are in flight (see [`super::sequencer`]).
    pub sequencer: Arc<Sequencer>,
}

impl Cached {
    /// Whether what is held is the conversation as stored, so a rule may read it here.
    pub fn in_memory(&self) -> bool {
        self.loaded && !self.sequencer.chain().broken()
    }

    /// What is held now says what the store (a cluster's ledger) holds.
    pub fn mark_read_back(&mut self) {
        self.loaded = true;
    }
}

/// The cache's own bookkeeping.
pub(super) struct Cache {
    /// Entries held (see [`Conversation::weight`]), all conversations together.
    weight: AtomicUsize,
    /// How much weight the cache may hold before it forgets; `usize::MAX` holds all.
    limit: usize,
    ticks: AtomicU64,
    /// Server time before which no scan for idle conversations starts again: one that
    /// found too few to forget is not worth repeating on every release.
    next_scan: AtomicI64,
    /// Conversations read back so far, in part and whole.
    reads: [AtomicU64; 2],
}

impl Cache {
    /// A cache that forgets beyond `limit` messages and state changes held.
    pub fn new(limit: usize) -> Cache {
        Cache {
            weight: AtomicUsize::new(0),
            limit,
            ticks: AtomicU64::new(0),
            next_scan: AtomicI64::new(0),
            reads: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    fn tick(&self) -> u64 {
        self.ticks.fetch_add(1, Ordering::Relaxed)
    }

    /// Entries held now.
    pub fn weight(&self) -> usize {
        self.weight.load(Ordering::Relaxed)
    }

    /// Conversations read back so far: (in part, whole).
    pub fn reads(&self) -> (u64, u64) {
        let [part, whole] = &self.reads;
        (part.load(Ordering::Relaxed), whole.load(Ordering::Relaxed))
    }
}

impl Hub {
    /// The store's reads by key, when conversations are read back on demand.
    pub(super) fn on_demand(&self) -> Option<&dyn OnDemand> {
        match &self.backend {
            super::Backend::Local(store) => store.on_demand(),
            super::Backend::Node(_) => None,
        }
    }

    /// Whether conversations are read back when needed, so the cache may forget them:
    /// from a store that reads on demand, or from a cluster's ledger.
    fn reads_back(&self) -> bool {
        self.on_demand().is_some() || self.replica().is_some()
    }

    /// The slot of a conversation this node holds.
    pub(super) fn slot(&self, id: &str) -> Option<Slot> {
        self.conversations.get(id).map(|c| c.clone())
    }

    /// The slot of conversation `id`, an empty one when none is held yet.
    pub(super) fn slot_or_insert(&self, id: &str) -> Slot {
        if let Some(slot) = self.slot(id) {
            return slot;
        }
        let loaded = !self.reads_back();
        self.conversations
            .entry(id.to_owned())
            .or_insert_with(|| {
                Arc::new(AsyncMutex::new(Cached {
                    conv: None,
                    loaded,
                    whole_wanted: false,
                    used: 0,
                    weight: 0,
                    sequencer: Arc::default(),
                }))
            })
            .clone()
    }

    /// Lock conversation `id` as it is, reading nothing: what is not held stays so (see
    /// [`Cached::in_memory`]). Give it back with [`Hub::release`].
    pub(super) async fn lock_as_is(&self, id: &str) -> Held {
        self.slot_or_insert(id).lock_owned().await
    }

    /// Lock conversation `id`, reading it back from the store first when it is not held.
    /// Give it back with [`Hub::release`].
    pub(super) async fn hold(&self, id: &str) -> Result<Held, StoreError> {
        let mut held = self.slot_or_insert(id).lock_owned().await;
        if !held.loaded && self.replica().is_some() {
            // A node reads a conversation under its position's lock, taken before the slot's.
            drop(held);
            held = self.hold_from_ledger(id).await?;
        }
        held.used = self.cache.tick();
        if held.sequencer.chain().broken() {
            // What is held includes a change that was never stored: read the conversation
            // back once the decisions in flight on it have all failed.
            let broken = std::mem::take(&mut held.sequencer);
            let _ = broken.settled().await;
            held.loaded = false;
        }
        if held.loaded {
            return Ok(held);
        }
        if let Err(e) = self.read_into(id, &mut held, Some(self.held_reach())).await {
            self.release(id, held);
            return Err(e);
        }
        Ok(held)
    }

    /// How far back a conversation read in part reaches: every message whose recall or
    /// (in an InMail conversation) InMail delete is still on offer, and of those before,
    /// every request id still remembered and every recall that counts towards the
    /// allowance. A trim (see [`Conversation::trim`]) keeps the same.
    fn reach(&self) -> Reach {
        let l = &self.limits;
        let now = self.clock.now();
        let recall = l.recall_window_ms as i64;
        let inmail = recall.max(l.inmail_delete_window_ms as i64);
        let recalls = l.recall_period_ms.saturating_add(l.recall_window_ms) as i64;
        Reach {
            since: now.saturating_sub(recall),
            inmail_since: now.saturating_sub(inmail),
            remembered_since: now.saturating_sub(recalls.max(REQUEST_MEMORY_MS)),
        }
    }

    /// Let go of the older part of a busy conversation, as if it were read back now (see
    /// [`Hub::reach`]); while the cache is over its limit, of all but its
    /// [`PRESSED_TAIL`] newest messages, windows or not: the conversations in use then
    /// shrink instead of being forgotten and read back on their next request. Not of
    /// one a rule needed whole, which stays whole until forgotten, nor when nothing
    /// could read the rest back.
    fn trim(&self, held: &mut Held) {
        if held.whole_wanted || self.on_demand().is_none() {
            return;
        }
        let Some(conv) = held.conv.as_mut() else {
            return;
        };
        let keep = Keep {
            sent_since: self.held_reach().since_for(conv.kind()),
            newest: if self.pressed() {
                PRESSED_TAIL
            } else {
                HELD_TAIL
            },
            requests_since: self.clock.now().saturating_sub(REQUEST_MEMORY_MS),
        };
        if conv.trim(keep) > 0 {
            self.reweigh(held);
        }
    }

    /// How far back a conversation is held now: [`Hub::reach`], or only its newest
    /// messages while the cache is over its limit (a read back then brings no more than
    /// a trim would keep).
    fn held_reach(&self) -> Reach {
        let reach = self.reach();
        match self.pressed() {
            true => Reach {
                since: Millis::MAX,
                inmail_since: Millis::MAX,
                ..reach
            },
            false => reach,
        }
    }

    /// Whether the cache holds more than its limit.
    fn pressed(&self) -> bool {
        self.cache.weight() > self.cache.limit
    }

    /// A rule needs more of conversation `id` than `held` holds: read back its recent
    /// part (see [`Hub::reach`]) when not all of that is held, else all of it. Returns
    /// whether all of it is held now.
    pub(super) async fn read_further(&self, id: &str, held: &mut Held) -> Result<bool, StoreError> {
        // What the store has must include the decisions still being written on it.
        held.sequencer.settled().await?;
        let reach = self.reach();
        let recent = |c: &Conversation| c.holds_sent_since(reach.since_for(c.kind()));
        let reach = held
            .conv
            .as_ref()
            .is_some_and(|c| !recent(c))
            .then_some(reach);
        self.read_into(id, held, reach).await?;
        Ok(held.conv.as_ref().is_none_or(|c| !c.partial()))
    }

    /// Replace what `held` holds with conversation `id` as the store has it (its recent
    /// part as far as `reach`, or all).
    async fn read_into(
        &self,
        id: &str,
        held: &mut Held,
        reach: Option<Reach>,
    ) -> Result<(), StoreError> {
        let Some(reads) = self.on_demand() else {
            held.loaded = true;
            return Ok(());
        };
        let read = reads.conversation(id, reach).await;
        let read = read.map_err(|e| e.within(format!("cannot read conversation {id}")))?;
        held.conv = None;
        if let Some(Readback { changes, suffix }) = read {
            let (created, rest) = changes.split_first().ok_or_else(|| {
                StoreError::corrupt(
                    format!("conversation {id} read back without its creation"),
                    "",
                )
            })?;
            self.apply(
                Some(held),
                std::slice::from_ref(created),
                super::Applying::Reload,
            );
            if let (Some(conv), Some(suffix)) = (held.conv.as_mut(), &suffix) {
                conv.resume(suffix);
            }
            self.apply(Some(held), rest, super::Applying::Reload);
            if let Some(conv) = held.conv.as_mut() {
                conv.keep_latest_notifications(KEPT_NOTIFICATIONS);
            }
            self.reweigh(held);
        }
        held.loaded = true;
        held.whole_wanted = reach.is_none();
        let whole = held.conv.as_ref().is_none_or(|c| !c.partial());
        self.cache.reads[usize::from(whole)].fetch_add(1, Ordering::Relaxed);
        crate::metrics::cache_read(whole);
        Ok(())
    }

    /// Unlock a held conversation, trimmed if it grew long; an empty slot is forgotten
    /// unless someone waits on it.
    pub(super) fn release(&self, id: &str, mut held: Held) {
        self.trim(&mut held);
        let empty = held.conv.is_none();
        drop(held);
        if empty {
            self.drop_empty_slot(id);
        }
        self.make_room(id);
    }

    /// Forget an empty slot (a first request that was refused or not stored) unless
    /// someone else is waiting on it.
    pub(super) fn drop_empty_slot(&self, id: &str) {
        self.conversations.remove_if(id, |_, slot| {
            Arc::strong_count(slot) == 1 && slot.try_lock().is_ok_and(|s| s.conv.is_none())
        });
    }

    /// Account for what `cached` holds now (after a change was applied to it).
    pub(super) fn reweigh(&self, cached: &mut Cached) {
        if !self.reads_back() {
            // Everything is held anyway: nothing to count against.
            return;
        }
        let weight = cached.conv.as_ref().map_or(0, Conversation::weight);
        let cache = &self.cache.weight;
        if weight >= cached.weight {
            cache.fetch_add(weight - cached.weight, Ordering::Relaxed);
        } else {
            cache.fetch_sub(cached.weight - weight, Ordering::Relaxed);
        }
        cached.weight = weight;
    }

    /// Above the limit, forget the least recently held conversations nobody holds or
    /// waits on, down to nine tenths of the limit (so the scan is not repeated at once).
    /// Whatever is forgotten is committed: it is read back when next needed. When the
    /// conversations in use hold more than the limit themselves, a scan finds nothing
    /// to forget; for [`RESCAN_MS`] after one did, only `released` (the conversation
    /// just let go, the one that can have become idle since) is forgotten, instead of
    /// scanning every conversation on every release.
    pub(super) fn make_room(&self, released: &str) {
        if self.cache.weight() <= self.cache.limit || !self.reads_back() {
            return;
        }
        let now = self.clock.now();
        if self.cache.next_scan.load(Ordering::Relaxed) > now {
            self.forget(released);
        } else if !self.forget_idle() {
            self.cache
                .next_scan
                .store(now + RESCAN_MS, Ordering::Relaxed);
        }
    }

    /// Forget conversation `id` if nobody holds or waits on it and all it holds is stored.
    fn forget(&self, id: &str) {
        self.conversations.remove_if(id, |_, slot| {
            Arc::strong_count(slot) == 1
                && slot.try_lock().is_ok_and(|cached| {
                    if !cached.loaded || !cached.sequencer.idle() {
                        return false;
                    }
                    self.cache
                        .weight
                        .fetch_sub(cached.weight, Ordering::Relaxed);
                    true
                })
        });
    }

    /// [`Hub::make_room`] without waiting: false when over the limit and nothing could be
    /// forgotten.
    pub(super) fn forget_idle(&self) -> bool {
        let limit = self.cache.limit;
        if self.cache.weight() <= limit || !self.reads_back() {
            return true;
        }
        let mut idle: Vec<(u64, String)> = self
            .conversations
            .iter()
            .filter(|e| Arc::strong_count(e.value()) == 1)
            .filter_map(|e| {
                let cached = e.value().try_lock().ok()?;
                // What is in flight is not in the store yet: forgetting it would lose it.
                let settled = cached.loaded && cached.sequencer.idle();
                settled.then(|| (cached.used, e.key().clone()))
            })
            .collect();
        idle.sort_unstable();
        let target = limit - limit / 10;
        let before = self.cache.weight();
        for (_, id) in idle {
            if self.cache.weight() <= target {
                break;
            }
            self.forget(&id);
        }
        crate::metrics::cache_evicted();
        self.cache.weight() < before
    }

    /// The conversations `user` takes part in: from the store when it reads on demand or
    /// from a cluster's ledger, else from the index kept beside the conversations held.
    pub(super) async fn conversations_of(&self, user: &str) -> Result<Vec<String>, StoreError> {
        if let Some(r) = self.replica() {
            return r.ledger.conversations_of(user).await;
        }
        match self.on_demand() {
            Some(reads) => reads.conversations_of(user).await,
            None => Ok(self
                .by_user
                .get(user)
                .map(|v| v.clone())
                .unwrap_or_default()),
        }
    }

    /// Index a conversation's participants (only when everything is held: a store that
    /// reads on demand answers this itself).
    pub(super) fn index_participants(&self, change: &Change) {
        let Change::ConversationCreated { conversation, .. } = change else {
            return;
        };
        if self.reads_back() {
            return;
        }
        for p in &conversation.participants {
            self.by_user
                .entry(p.clone())
                .or_default()
                .push(conversation.id.clone());
        }
    }
}
