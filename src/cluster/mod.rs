//! Several parley nodes as one server: PostgreSQL decides and orders, a broker carries
//! the frames between nodes.
//!
//! Every decision belongs to a *scope*: a conversation, or the directory of users. A node
//! decides under the scope's row lock in PostgreSQL, after catching its in-memory copy up
//! with every entry other nodes committed to that scope; the database numbers each entry
//! (`seq`, per scope) as it commits. The entry — changes and the frames they emitted — is
//! then published on the broker. Other nodes apply an entry only in `seq` order: one that
//! arrives ahead of a missing one makes the node read the gap from the database first, and
//! a periodic look at recently touched scopes finds entries whose broker message was lost.

pub mod broker;
pub mod database_tls;
pub mod postgres;

use crate::core::{Change, Emit};
use parley_protocol::UserId;
use serde::{Deserialize, Serialize};

pub use broker::Broker;
pub use postgres::{Claim, Ledger, LedgerOptions};

/// The scope of directory decisions: users, settings, connections, blocks, user reports.
pub const DIRECTORY: &str = "directory";

/// One committed decision of a scope, in the order the database gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The conversation id, or [`DIRECTORY`].
    pub scope: String,
    /// Position in the scope, assigned by the database: 1, 2, 3, …
    pub seq: u64,
    /// What changed.
    pub changes: Vec<Change>,
    /// The frames the decision emitted (absent once purged).
    pub emits: Vec<Emit>,
}

/// A message between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Bulletin {
    /// A committed entry.
    Entry {
        /// The node that committed it.
        node: u32,
        /// The entry.
        entry: Entry,
    },
    /// Frames that change nothing (typing), for the sessions on other nodes.
    Frames {
        /// The node that emitted them.
        node: u32,
        /// The frames.
        emits: Vec<Emit>,
    },
    /// A user's first session opened on, or last session closed from, a node.
    Presence {
        /// The node.
        node: u32,
        /// The user.
        user: UserId,
        /// Whether the user now has a session on that node.
        online: bool,
    },
    /// Every user with a session on a node, sent now and then: a node that missed a
    /// presence bulletin, or a node that died, is corrected by it.
    Roster {
        /// The node.
        node: u32,
        /// Users with at least one session there.
        users: Vec<UserId>,
    },
}

impl Bulletin {
    /// The node that sent it.
    pub fn node(&self) -> u32 {
        match self {
            Bulletin::Entry { node, .. }
            | Bulletin::Frames { node, .. }
            | Bulletin::Presence { node, .. }
            | Bulletin::Roster { node, .. } => *node,
        }
    }
}

/// The id of a message a change stores, and the sender and time, for the purge and the
/// throttle's count.
pub(crate) fn stored_message(changes: &[Change]) -> Option<(&str, &str, i64)> {
    changes.iter().find_map(|c| match c {
        Change::MessageStored { message, .. } => Some((
            message.id.as_str(),
            message.sender.as_str(),
            message.sent_at,
        )),
        _ => None,
    })
}

/// Messages whose content a change removes for good, and whether by a recall (the
/// message stays as a marker) rather than an InMail delete (it is gone for its viewers).
pub(crate) fn purged_messages(changes: &[Change]) -> impl Iterator<Item = (&str, bool)> {
    changes.iter().filter_map(|c| match c {
        Change::Recalled { message, .. } => Some((message.as_str(), true)),
        Change::InmailDeleted {
            message,
            purge: true,
            ..
        } => Some((message.as_str(), false)),
        _ => None,
    })
}

/// The frames a stored entry keeps once `message` is purged: a node that catches up only
/// after the purge shows a recalled message as a marker (as `sync` would), and neither the
/// text nor a notification of it.
pub(crate) fn purge_frames(emits: &mut Vec<Emit>, message: &str, recalled: bool) {
    use parley_protocol::{MessageState, ServerFrame};
    emits.retain_mut(|e| match &mut e.frame {
        ServerFrame::Message { message: m } if m.id == message => {
            m.body = None;
            m.state = MessageState::Recalled;
            recalled
        }
        ServerFrame::Notification { notification } => notification.message != message,
        _ => true,
    });
}
