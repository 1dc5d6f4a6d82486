//! The storage seam: every change the core decides is committed here before its
//! requester is answered. The in-memory store keeps the log for tests and for running
//! without a disk; durable stores implement the same trait.

mod sqlite;
mod stored_changes;
mod stored_form;

pub use sqlite::{database_path, Durability, SqliteOptions, SqliteStore};

use crate::core::Change;
use futures::future::BoxFuture;
use parking_lot::Mutex;

/// A failed commit; the requester's session is closed rather than answered falsely.
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage: {0}")]
pub struct StoreError(pub String);

/// Durable home of every change.
pub trait Store: Send + Sync + 'static {
    /// Make `changes` durable, in order; resolves once they are committed, handing the
    /// changes back (to be applied) without copying them. A failed commit stores none of
    /// them.
    fn commit(&self, changes: Vec<Change>) -> BoxFuture<'static, Result<Vec<Change>, StoreError>>;

    /// Every committed change, in commit order, to rebuild the state at start.
    fn load(&self) -> Result<Vec<Change>, StoreError>;
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

    fn load(&self) -> Result<Vec<Change>, StoreError> {
        Ok(self.changes())
    }
}
