//! The sans-I/O core: conversation state and messaging policy as plain types.
//!
//! Nothing here touches sockets, tasks, storage or clocks. A rule takes the current time
//! and an input and *decides* without mutating anything: it returns an [`Outcome`] — the
//! answer for the requester, the frames to emit and to whom, the changes to make durable
//! and the timer to arm. Only once those changes are committed does the hub *apply* them,
//! with each type's `apply`, the one mutation path for live requests, start-up and
//! cluster replicas alike. The hub around it owns locking, storage and delivery.

pub mod conversation;
pub mod directory;
pub mod ids;
pub mod opening;
pub mod pairs;
pub mod refusal;
pub mod reports;
pub mod request_memory;
pub mod send_log;

use parley_protocol::{AckResult, Limits, Millis, ServerFrame, UserId};

pub use conversation::Conversation;
pub use directory::{Directory, SettingsPatch};
pub use opening::Opening;
pub use refusal::Refusal;
pub use reports::Reports;
pub use send_log::SendLog;

/// Identifies one live session (one WebSocket) of a user.
pub type SessionId = u64;

/// Who is asking: the authenticated user and the session the request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The authenticated user.
    pub user: UserId,
    /// The session the request arrived on; it gets the answer instead of the echo.
    pub session: SessionId,
    /// Whether the token grants operator rights.
    pub admin: bool,
}

/// Everything a rule needs to know about the world besides the state it mutates.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// The server's clock now.
    pub now: Millis,
    /// Limits in force.
    pub limits: &'a Limits,
    /// Users, settings, connections and blocks.
    pub directory: &'a Directory,
}

/// Who had a live session when a change was applied: data the hub hands in, so a new
/// message's notification is kept pending, to be collected by `sync`, for everyone else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Online {
    /// Every user counts as connected (nothing is kept pending).
    Everyone,
    /// Nobody is connected (every notification is kept pending): after a restart.
    Nobody,
    /// Everyone but these users (listing the few offline ones costs nothing when all
    /// participants are connected, the common case under load).
    AllBut(Vec<UserId>),
}

impl Online {
    /// Whether `user` had a live session.
    pub fn contains(&self, user: &str) -> bool {
        match self {
            Online::Everyone => true,
            Online::Nobody => false,
            Online::AllBut(offline) => !offline.iter().any(|u| u == user),
        }
    }
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// One recipient of an emitted frame: all sessions of `user`, less `except`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    /// The user whose sessions receive the frame.
    pub user: UserId,
    /// A session that already has the answer (the requester's own).
    pub except: Option<SessionId>,
}

impl Target {
    /// Every session of `user`.
    pub fn all(user: &str) -> Self {
        Target {
            user: user.to_owned(),
            except: None,
        }
    }

    /// Every session of the actor's user but the one that asked.
    pub fn others_of(actor: &Actor) -> Self {
        Target {
            user: actor.user.clone(),
            except: Some(actor.session),
        }
    }
}

/// A frame to deliver to several recipients; it is serialised once.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Emit {
    /// Recipients, in delivery order.
    pub to: Vec<Target>,
    /// The frame.
    pub frame: ServerFrame,
}

/// A change to make durable before the requester is answered, and then applied to the
/// state in memory. Applying every change in commit order rebuilds the whole state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A user connected for the first time.
    UserCreated { user: UserId },
    /// A user's settings changed.
    Settings {
        user: UserId,
        settings: parley_protocol::Settings,
    },
    /// The relation between two users changed.
    Relation {
        from: UserId,
        to: UserId,
        state: parley_protocol::ConnectionState,
    },
    /// A block was set or lifted.
    Block {
        blocker: UserId,
        blocked: UserId,
        on: bool,
    },
    /// A conversation was created.
    ConversationCreated {
        conversation: parley_protocol::ConversationView,
        /// When (logs written before this field was added read as 0).
        #[serde(default)]
        at: Millis,
    },
    /// A message was stored.
    MessageStored {
        message: parley_protocol::MessageView,
        client_id: String,
        /// The participants with no live session anywhere when it was committed, whose
        /// notification of it is pending. Recorded by a cluster node, so every node that
        /// applies the entry, or reads it later, keeps the same ones pending; absent, the
        /// applier's own presence decides (and after a restart, everyone's is pending).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offline: Option<Vec<UserId>>,
    },
    /// A participant's read position moved.
    ReadUpTo {
        conversation: String,
        user: UserId,
        seq: u64,
    },
    /// A message was recalled; its content must be purged.
    Recalled {
        conversation: String,
        message: String,
        at: Millis,
    },
    /// An InMail was deleted for sender and primary recipient.
    InmailDeleted {
        conversation: String,
        message: String,
        purge: bool,
    },
    /// A participant deleted a message from their view.
    DeletedForMe {
        conversation: String,
        user: UserId,
        message: String,
    },
    /// A participant's mute or hide flags changed.
    MemberFlags {
        conversation: String,
        user: UserId,
        muted: bool,
        hidden: bool,
    },
    /// A report was filed.
    Reported { report: parley_protocol::ReportView },
}

impl Change {
    /// The conversation a change belongs to, if any.
    pub fn conversation(&self) -> Option<&str> {
        match self {
            Change::ConversationCreated { conversation, .. } => Some(&conversation.id),
            Change::MessageStored { message, .. } => Some(&message.conversation),
            Change::ReadUpTo { conversation, .. }
            | Change::Recalled { conversation, .. }
            | Change::InmailDeleted { conversation, .. }
            | Change::DeletedForMe { conversation, .. }
            | Change::MemberFlags { conversation, .. } => Some(conversation),
            _ => None,
        }
    }
}

/// A conversation's recall windows to watch: the earliest still open closes at `at`.
/// One per conversation, not per message, so the timers follow the conversations in
/// use, not the messages sent in the last window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecallTimer {
    /// Conversation.
    pub conversation: String,
    /// When its earliest open window closes.
    pub at: Millis,
}

/// The result of applying one request to the core.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The answer for the requesting session.
    pub ack: AckResult,
    /// Frames for other sessions, in order.
    pub emits: Vec<Emit>,
    /// What must be durable before the answer goes out.
    pub changes: Vec<Change>,
    /// A recall window to watch.
    pub timer: Option<RecallTimer>,
}

impl Outcome {
    /// A plain success with nothing else to do.
    pub fn ok() -> Self {
        Outcome::with_ack(AckResult::Ok {})
    }

    /// A success with the given answer.
    pub fn with_ack(ack: AckResult) -> Self {
        Outcome {
            ack,
            emits: Vec::new(),
            changes: Vec::new(),
            timer: None,
        }
    }

    /// Queue a frame for the given recipients (skipped when there are none).
    pub fn emit(&mut self, to: Vec<Target>, frame: ServerFrame) {
        if !to.is_empty() {
            self.emits.push(Emit { to, frame });
        }
    }
}

/// The moment a window of `len` ms opened at `start` closes, or `None` when the window is 0 (feature disabled).
pub fn deadline(start: Millis, len_ms: u64) -> Option<Millis> {
    (len_ms > 0).then(|| start.saturating_add(len_ms as i64))
}

#[cfg(test)]
mod rules_tests;

/// Whether a window of `len_ms` opened at `start` is still open at `now` (never, when 0).
pub fn window_open(start: Millis, len_ms: u64, now: Millis) -> bool {
    deadline(start, len_ms).is_some_and(|d| now < d)
}
