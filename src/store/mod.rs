//! The storage seam: every change the core decides is committed here before its
//! requester is answered. The in-memory store keeps the log for tests and for running
//! without a disk; durable stores implement the same trait.

pub mod backup;
pub mod data_dir;
mod database_mark;
mod sqlite;
mod stored_changes;
mod stored_form;

pub use sqlite::{database_path, Durability, SqliteOptions, SqliteStore};
pub use stored_form::REQUEST_MEMORY_MS;

use crate::core::conversation::Suffix;
use crate::core::Change;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use parley_protocol::{MessageId, Millis, UserId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Why storage failed. Each variant carries what the store was doing (`context`) and the
/// underlying error's text (`detail`, empty when there is none); both are plain text so the
/// error is [`Clone`]: the SQLite writer answers every request of a batch with one result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The disk or the database is full (SQLite `SQLITE_FULL`, `ENOSPC`, PostgreSQL
    /// SQLSTATE 53100). Retrying once space is freed succeeds.
    #[error("storage full: {}", joined(.context, .detail))]
    Full { context: String, detail: String },
    /// The storage could not be used right now: an I/O error, a database or broker that
    /// cannot be reached or is stalled, a writer that has stopped. Retrying may succeed.
    #[error("storage unavailable: {}", joined(.context, .detail))]
    Unavailable { context: String, detail: String },
    /// Stored data cannot be read back, or the file is not a parley database.
    #[error("storage corrupt: {}", joined(.context, .detail))]
    Corrupt { context: String, detail: String },
    /// The storage refuses by configuration: a schema from a newer parley, a read-only or
    /// missing data directory, a bad URL. Retrying changes nothing until an operator acts.
    #[error("storage refused: {}", joined(.context, .detail))]
    Refused { context: String, detail: String },
}

fn joined(context: &str, detail: &str) -> String {
    match (context.is_empty(), detail.is_empty()) {
        (_, true) => context.to_owned(),
        (true, false) => detail.to_owned(),
        (false, false) => format!("{context}: {detail}"),
    }
}

impl StoreError {
    /// [`StoreError::Full`] with `context` and the underlying error `detail`.
    pub fn full(context: impl std::fmt::Display, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Full {
            context: context.to_string(),
            detail: detail.to_string(),
        }
    }

    /// [`StoreError::Unavailable`] with `context` and the underlying error `detail`.
    pub fn unavailable(
        context: impl std::fmt::Display,
        detail: impl std::fmt::Display,
    ) -> StoreError {
        StoreError::Unavailable {
            context: context.to_string(),
            detail: detail.to_string(),
        }
    }

    /// [`StoreError::Corrupt`] with `context` and the underlying error `detail`.
    pub fn corrupt(context: impl std::fmt::Display, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            context: context.to_string(),
            detail: detail.to_string(),
        }
    }

    /// [`StoreError::Refused`] with `context` and the underlying error `detail`.
    pub fn refused(context: impl std::fmt::Display, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Refused {
            context: context.to_string(),
            detail: detail.to_string(),
        }
    }

    /// An I/O error while `context`: a full disk is [`StoreError::Full`];
    /// permissions, a read-only file system or a path through a regular file are
    /// [`StoreError::Refused`]; anything else is [`StoreError::Unavailable`].
    pub fn io(context: impl std::fmt::Display, e: &std::io::Error) -> StoreError {
        use std::io::ErrorKind;
        match e.kind() {
            ErrorKind::StorageFull => StoreError::full(context, e),
            ErrorKind::PermissionDenied
            | ErrorKind::ReadOnlyFilesystem
            | ErrorKind::NotADirectory
            | ErrorKind::IsADirectory => StoreError::refused(context, e),
            _ => StoreError::unavailable(context, e),
        }
    }

    /// Whether the same request may succeed later without anyone changing the setup:
    /// true for [`StoreError::Full`] and [`StoreError::Unavailable`].
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Full { .. } | StoreError::Unavailable { .. }
        )
    }

    /// A stable short name of the variant, for logs and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Full { .. } => "full",
            StoreError::Unavailable { .. } => "unavailable",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Refused { .. } => "refused",
        }
    }

    /// What the store was doing.
    pub fn context(&self) -> &str {
        match self {
            StoreError::Full { context, .. }
            | StoreError::Unavailable { context, .. }
            | StoreError::Corrupt { context, .. }
            | StoreError::Refused { context, .. } => context,
        }
    }

    /// The underlying error's text (empty when there is none).
    pub fn detail(&self) -> &str {
        match self {
            StoreError::Full { detail, .. }
            | StoreError::Unavailable { detail, .. }
            | StoreError::Corrupt { detail, .. }
            | StoreError::Refused { detail, .. } => detail,
        }
    }

    /// The same error, its context prefixed with `outer` (what the caller was doing).
    pub fn within(mut self, outer: impl std::fmt::Display) -> StoreError {
        let (StoreError::Full { context, .. }
        | StoreError::Unavailable { context, .. }
        | StoreError::Corrupt { context, .. }
        | StoreError::Refused { context, .. }) = &mut self;
        *context = if context.is_empty() {
            outer.to_string()
        } else {
            format!("{outer}: {context}")
        };
        self
    }
}

/// Durable home of every change.
pub trait Store: Send + Sync + 'static {
    /// Make `changes` durable, in order; resolves once they are committed, handing the
    /// changes back (to be applied) without copying them. A failed commit stores none of
    /// them.
    fn commit(&self, changes: Vec<Change>) -> BoxFuture<'static, Result<Vec<Change>, StoreError>>;

    /// Every committed change needed to rebuild the state at start, in an order that
    /// applies to it, handed to `each` as it is read.
    fn load_each(&self, each: &mut dyn FnMut(Change)) -> Result<(), StoreError>;

    /// The store's reads by key, when it has them; a store without them is loaded whole
    /// at start and held in memory.
    fn on_demand(&self) -> Option<&dyn OnDemand> {
        None
    }

    /// Whether [`Store::commit_chained`] writes every commit in call order and fails the
    /// links after a broken one unwritten, so that a caller may decide again before
    /// the commit it decided on has finished.
    fn orders_chains(&self) -> bool {
        false
    }

    /// [`Store::commit`] as the next link of `chain`: written after every commit called
    /// before it and failed unwritten (retryably) when an earlier link of `chain` failed;
    /// a failure breaks `chain`. Stores that do not [order chains](Store::orders_chains)
    /// check `chain` only when called.
    fn commit_chained(
        &self,
        changes: Vec<Change>,
        chain: &Arc<Chain>,
    ) -> BoxFuture<'static, Result<Vec<Change>, StoreError>> {
        if chain.broken() {
            return Box::pin(async { Err(Chain::broken_error()) });
        }
        let chain = chain.clone();
        let commit = self.commit(changes);
        Box::pin(async move {
            let result = commit.await;
            if result.is_err() {
                chain.break_off();
            }
            result
        })
    }

    /// [`Store::load_each`] collected (tests, small stores).
    fn load(&self) -> Result<Vec<Change>, StoreError> {
        let mut all = Vec::new();
        self.load_each(&mut |c| all.push(c))?;
        Ok(all)
    }
}

/// A run of commits that build on each other (one conversation's, decided one after the
/// other before the first was written): once a link fails, the links after it were
/// decided on a state that never came to be, so none of them may be written.
#[derive(Debug, Default)]
pub struct Chain(AtomicBool);

impl Chain {
    /// Whether a link has failed.
    pub fn broken(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Mark a link failed: every later link fails unwritten.
    pub fn break_off(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// What a link after a failed one is answered.
    pub fn broken_error() -> StoreError {
        StoreError::unavailable(
            "commit",
            "an earlier commit in the same conversation failed, so this one was not written",
        )
    }
}

/// What start-up needs of the messages sent lately, read without holding them: where
/// recall windows may still be open, and the sends the recall throttle counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lately {
    /// Per conversation with a message sent since the recall window's start: when the
    /// first of them was sent (its window is the earliest that may still be open).
    pub first_sent: Vec<(String, Millis)>,
    /// Per user who sent since the throttle window's start: the latest send times, at
    /// most as many as asked for, oldest first.
    pub sends: Vec<(UserId, Vec<Millis>)>,
}

/// What [`OnDemand::lately`] is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatelyAsked {
    /// The recall window's start: now less its length.
    pub recall_since: Millis,
    /// The throttle window's start.
    pub throttle_since: Millis,
    /// How many send times per user are enough (the throttle's limit and one more).
    pub sends_per_user: usize,
}

/// A conversation's recall windows as its timer needs them when the conversation is not
/// held: read from the store instead of reading the conversation back into the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closing {
    /// Messages sent in the span asked whose recall was still on offer: id and sender.
    pub on_offer: Vec<(MessageId, UserId)>,
    /// When the first message sent after the span with recall on offer was sent.
    pub next_sent: Option<Millis>,
}

/// A conversation as read back: the changes that rebuild it and, when only its recent
/// part was read, where that part begins.
#[derive(Debug, Clone, PartialEq)]
pub struct Readback {
    /// Its creation first, then every change from the suffix's floor (or all) in order.
    pub changes: Vec<Change>,
    /// Where the part read begins; `None` when it is all of it.
    pub suffix: Option<Suffix>,
}

/// How far back a conversation read in part reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// Its messages from the one sent at this time on (and at least its
    /// [`crate::core::conversation::HELD_TAIL`] newest), with every state change after
    /// the first of them.
    pub since: Millis,
    /// The same for an InMail conversation (whose delete window may be longer).
    pub inmail_since: Millis,
    /// Of the messages before those, sent at this time or later: the request ids still
    /// remembered, and the recalls (for the allowance).
    pub remembered_since: Millis,
}

impl Reach {
    /// Where the messages held of a conversation of `kind` begin.
    pub fn since_for(&self, kind: parley_protocol::ConversationKind) -> Millis {
        match kind {
            parley_protocol::ConversationKind::Inmail => self.inmail_since,
            _ => self.since,
        }
    }
}

/// Reads by key that a durable store answers, so the hub need hold only its working set:
/// conversations are read when first needed, and start-up reads no history.
pub trait OnDemand: Send + Sync {
    /// What start-up needs besides [`OnDemand::lately`]: the directory and the reports.
    fn start_up(&self, each: &mut dyn FnMut(Change)) -> Result<(), StoreError>;

    /// Conversation `id` read back, `None` when it does not exist: only its recent part
    /// (see [`Reach`]) when that is given, else the whole of it.
    fn conversation(
        &self,
        id: &str,
        reach: Option<Reach>,
    ) -> BoxFuture<'static, Result<Option<Readback>, StoreError>>;

    /// The ids of the conversations `user` takes part in.
    fn conversations_of(&self, user: &str) -> BoxFuture<'static, Result<Vec<String>, StoreError>>;

    /// Where recall windows may still be open and what the throttle counts, without
    /// reading the messages themselves.
    fn lately(&self, asked: LatelyAsked) -> Result<Lately, StoreError>;

    /// Conversation `id`'s messages sent from `sent_from` to `sent_until` whose recall is
    /// still on offer, and the next one after; nothing when it does not exist.
    fn closing(
        &self,
        id: &str,
        sent_from: Millis,
        sent_until: Millis,
    ) -> BoxFuture<'static, Result<Closing, StoreError>>;
}

/// Keeps the change log in memory; recalled and deleted content is purged from it at once.
#[derive(Debug, Default)]
pub struct MemoryStore {
    log: Mutex<Vec<Change>>,
}

impl MemoryStore {
    /// A copy of the log so far.
    pub fn changes(&self) -> Vec<Change> {
        self.log.lock().clone()
    }
}

impl Store for MemoryStore {
    fn commit(&self, changes: Vec<Change>) -> BoxFuture<'static, Result<Vec<Change>, StoreError>> {
        if !changes.is_empty() {
            let mut log = self.log.lock();
            for change in changes.iter().cloned() {
                let purge = match &change {
                    Change::Recalled { message, .. } => Some(message.clone()),
                    Change::InmailDeleted {
                        message,
                        purge: true,
                        ..
                    } => Some(message.clone()),
                    _ => None,
                };
                if let Some(id) = purge {
                    for old in log.iter_mut() {
                        if let Change::MessageStored { message, .. } = old {
                            if message.id == id {
                                message.body = None;
                            }
                        }
                    }
                }
                log.push(change);
            }
        }
        Box::pin(async { Ok(changes) })
    }

    fn load_each(&self, each: &mut dyn FnMut(Change)) -> Result<(), StoreError> {
        self.changes().into_iter().for_each(each);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_name_themselves_and_say_whether_to_retry() {
        let cases = [
            (
                StoreError::full("insert", "database or disk is full"),
                "full",
                true,
            ),
            (
                StoreError::unavailable("cannot reach the database", "refused"),
                "unavailable",
                true,
            ),
            (
                StoreError::corrupt("change 3 is unreadable", "EOF"),
                "corrupt",
                false,
            ),
            (
                StoreError::refused("broker URL", "bad scheme"),
                "refused",
                false,
            ),
        ];
        for (e, code, retryable) in cases {
            assert_eq!(e.code(), code);
            assert_eq!(e.retryable(), retryable, "{e}");
            assert_eq!(e.clone(), e);
        }
    }

    #[test]
    fn display_keeps_context_and_detail() {
        let e = StoreError::full("insert", "database or disk is full");
        assert_eq!(
            e.to_string(),
            "storage full: insert: database or disk is full"
        );
        let e = StoreError::unavailable("the database writer has stopped", "");
        assert_eq!(
            e.to_string(),
            "storage unavailable: the database writer has stopped"
        );
        let e =
            StoreError::corrupt("file is not a database", "").within("cannot open database at x");
        assert_eq!(
            e.to_string(),
            "storage corrupt: cannot open database at x: file is not a database"
        );
        assert_eq!(
            e.context(),
            "cannot open database at x: file is not a database"
        );
        assert!(matches!(e, StoreError::Corrupt { .. }));
    }

    #[test]
    fn io_errors_map_by_kind() {
        use std::io::{Error, ErrorKind};
        let full = Error::from(ErrorKind::StorageFull);
        assert_eq!(StoreError::io("write", &full).code(), "full");
        let enospc = Error::from_raw_os_error(28);
        assert_eq!(StoreError::io("write", &enospc).code(), "full");
        let denied = Error::from(ErrorKind::PermissionDenied);
        assert_eq!(StoreError::io("create", &denied).code(), "refused");
        let read_only = Error::from(ErrorKind::ReadOnlyFilesystem);
        assert_eq!(StoreError::io("create", &read_only).code(), "refused");
        let broken = Error::other("device gone");
        let e = StoreError::io("write", &broken);
        assert_eq!(e.code(), "unavailable");
        assert_eq!(e.to_string(), "storage unavailable: write: device gone");
    }
}
