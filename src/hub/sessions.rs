//! Live sessions: who is connected where, and the bounded outbound queue of each.

use crate::core::{Emit, SessionId, Target};
use dashmap::DashMap;
use parking_lot::Mutex;
use parley_protocol::{ServerFrame, UserId};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Serialise a frame once; the bytes are shared by every recipient.
pub fn encode(frame: &ServerFrame) -> Utf8Bytes {
    Utf8Bytes::from(serde_json::to_string(frame).expect("frames always serialise"))
}

/// One live WebSocket of a user.
#[derive(Debug)]
pub struct SessionHandle {
    /// Session id.
    pub id: SessionId,
    /// The authenticated user.
    pub user: UserId,
    /// Operator rights.
    pub admin: bool,
    // A plain deque allocates nothing until a frame is queued, where a channel costs
    // ~1.5 KiB per session up front: that matters at tens of thousands of idle sessions.
    queue: Mutex<VecDeque<Utf8Bytes>>,
    queued: Notify,
    queued_bytes: AtomicUsize,
    max_queue_bytes: usize,
    // A flag and a `Notify` rather than a `CancellationToken`, which allocates a tree node
    // of its own per session.
    closing: AtomicBool,
    closed: Notify,
    close_reason: Mutex<Option<(u16, String)>>,
    /// Requests refused by the rate limit since the last one accepted.
    pub refused_in_row: std::sync::atomic::AtomicU32,
}

/// The receiving end a session's writer drains.
#[derive(Debug)]
pub struct Outbox {
    session: Arc<SessionHandle>,
    /// Frames taken from the queue in one swap, handed out one by one.
    taken: VecDeque<Utf8Bytes>,
}

/// Nothing is queued right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Empty;

impl Outbox {
    /// The next queued frame, waiting for one if need be; `None` once the session is
    /// closing (what is still queued can then be drained with [`Outbox::try_recv`]).
    pub async fn recv(&mut self) -> Option<Utf8Bytes> {
        loop {
            if self.session.closing.load(Ordering::Acquire) {
                return None;
            }
            if let Some(frame) = self.taken.pop_front() {
                return Some(frame);
            }
            // Registered before looking, so a push between the look and the wait still
            // wakes us.
            let queued = self.session.queued.notified();
            {
                let mut queue = self.session.queue.lock();
                if !queue.is_empty() {
                    std::mem::swap(&mut *queue, &mut self.taken);
                    continue;
                }
            }
            // About to sleep with nothing queued: give the drained deque's memory back,
            // since most sessions are idle most of the time. (Freed outside the queue's
            // lock, so pushers never wait on it.)
            self.taken = VecDeque::new();
            queued.await;
        }
    }

    /// The next queued frame, if there is one.
    pub fn try_recv(&mut self) -> Result<Utf8Bytes, Empty> {
        if self.taken.is_empty() {
            // Take the whole backlog under one lock; the emptied deque goes back so its
            // allocation is reused.
            std::mem::swap(&mut *self.session.queue.lock(), &mut self.taken);
        }
        self.taken.pop_front().ok_or(Empty)
    }
}

impl SessionHandle {
    /// A session and the queue its writer drains.
    pub fn new(
        id: SessionId,
        user: UserId,
        admin: bool,
        max_queue_bytes: usize,
    ) -> (Arc<Self>, Outbox) {
        let handle = SessionHandle {
            id,
            user,
            admin,
            queue: Mutex::new(VecDeque::new()),
            queued: Notify::new(),
            queued_bytes: AtomicUsize::new(0),
            max_queue_bytes,
            closing: AtomicBool::new(false),
            closed: Notify::new(),
            close_reason: Mutex::new(None),
            refused_in_row: std::sync::atomic::AtomicU32::new(0),
        };
        let handle = Arc::new(handle);
        let outbox = Outbox {
            session: handle.clone(),
            taken: VecDeque::new(),
        };
        (handle, outbox)
    }

    /// Queue bytes for this session; a session over its byte budget is closed instead of
    /// stalling anyone else.
    pub fn push(&self, bytes: &Utf8Bytes) {
        let len = bytes.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before + len > self.max_queue_bytes {
            crate::metrics::queue_overflow();
            self.close(parley_protocol::close::POLICY, "outbound queue overflow");
            return;
        }
        self.queue.lock().push_back(bytes.clone());
        self.queued.notify_one();
    }

    /// Serialise and queue a frame for this session alone.
    pub fn send(&self, frame: &ServerFrame) {
        self.push(&encode(frame));
    }

    /// The writer wrote `len` queued bytes to the socket.
    pub fn written(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
    }

    /// Ask the session to close with a code and reason (the first reason wins).
    pub fn close(&self, code: u16, reason: &str) {
        let mut slot = self.close_reason.lock();
        if slot.is_none() {
            *slot = Some((code, reason.to_owned()));
        }
        drop(slot);
        self.closing.store(true, Ordering::Release);
        self.closed.notify_waiters();
        // The writer may be waiting for frames rather than for the close.
        self.queued.notify_one();
    }

    /// Whether the session has been asked to close.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Resolves once the session has been asked to close.
    pub async fn closing(&self) {
        let mut closed = std::pin::pin!(self.closed.notified());
        // Registered before looking at the flag, so a close in between still wakes us.
        closed.as_mut().enable();
        if !self.closing.load(Ordering::Acquire) {
            closed.await;
        }
    }

    /// The close code and reason asked for, if any.
    pub fn close_reason(&self) -> Option<(u16, String)> {
        self.close_reason.lock().clone()
    }
}

/// user → live sessions.
#[derive(Debug, Default)]
pub struct Sessions {
    by_user: DashMap<UserId, Vec<Arc<SessionHandle>>>,
    live: AtomicUsize,
}

impl Sessions {
    /// Start delivering to a session, unless its user already holds `max` (0: no cap).
    pub fn register(&self, session: Arc<SessionHandle>, max: usize) -> bool {
        let mut sessions = self.by_user.entry(session.user.clone()).or_default();
        if max > 0 && sessions.len() >= max {
            return false;
        }
        sessions.push(session);
        let live = self.live.fetch_add(1, Ordering::Relaxed) + 1;
        crate::metrics::sessions_live(live);
        true
    }

    /// Sessions open across all users.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Stop delivering to a session.
    pub fn unregister(&self, session: &SessionHandle) {
        if let dashmap::Entry::Occupied(mut entry) = self.by_user.entry(session.user.clone()) {
            let before = entry.get().len();
            entry.get_mut().retain(|s| s.id != session.id);
            let gone = before - entry.get().len();
            let live = self.live.fetch_sub(gone, Ordering::Relaxed) - gone;
            crate::metrics::sessions_live(live);
            if entry.get().is_empty() {
                entry.remove();
            }
        }
    }

    /// Every user with a live session here.
    pub fn users(&self) -> Vec<UserId> {
        self.by_user.iter().map(|e| e.key().clone()).collect()
    }

    /// How many sessions `user` has open.
    pub fn count(&self, user: &str) -> usize {
        self.by_user.get(user).map_or(0, |s| s.len())
    }

    /// Deliver an emitted frame: serialised once, queued for every target session.
    pub fn deliver(&self, emit: &Emit) {
        let started = std::time::Instant::now();
        let bytes = encode(&emit.frame);
        let mut delivered = 0;
        for Target { user, except } in &emit.to {
            if let Some(sessions) = self.by_user.get(user) {
                for s in sessions.iter().filter(|s| Some(s.id) != *except) {
                    s.push(&bytes);
                    delivered += 1;
                }
            }
        }
        crate::metrics::frames_out(emit.frame.kind(), delivered);
        crate::metrics::fanout(started.elapsed().as_secs_f64());
    }

    /// Ask every session to close (shutdown).
    pub fn close_all(&self, code: u16, reason: &str) {
        for entry in self.by_user.iter() {
            for s in entry.value() {
                s.close(code, reason);
            }
        }
    }
}
