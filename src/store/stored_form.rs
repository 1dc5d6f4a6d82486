//! The stored form: how each committed change lands in parley's own tables (see
//! `migrations/0002_tables.sql`). The tables hold state, not the wire's JSON, so a change
//! of the protocol is not a change of storage.
//!
//! Every statement mirrors what [`crate::core`] does when it applies the same change, so
//! the tables and the state in memory never disagree: a read that does not move a read
//! position takes no position here either.

use crate::core::Change;
use parley_protocol::{
    ConnectionState, ConversationKind, ConversationView, MessageKind, MessageView,
    NotificationPreview, ReadReceipts, ReportTarget, ReportView, Settings, WhoCanMessage,
};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{params, OptionalExtension, Transaction};
use std::collections::HashMap;

/// How long a client request id is remembered, so a retried send finds its message.
pub const REQUEST_MEMORY_MS: i64 = 24 * 60 * 60 * 1000;

/// Relation states in `relations.state`.
pub const REQUESTED: i64 = 1;
pub const CONNECTED: i64 = 2;

/// Event kinds in `events.kind`.
pub const READ: i64 = 1;
pub const RECALL: i64 = 2;
pub const INMAIL_DELETE: i64 = 3;
pub const DELETE_FOR_ME: i64 = 4;
pub const FLAGS: i64 = 5;

/// Message states in `messages.state`.
pub const RECALLED: i64 = 1;
pub const INMAIL_DELETED: i64 = 2;

/// A message id as stored: the 16 bytes of the server's own `m-<32 hex digits>` form, or
/// the text itself for any other id.
pub fn id_to_sql(id: &str) -> ToSqlOutput<'_> {
    match id
        .strip_prefix("m-")
        .and_then(|hex| uuid::Uuid::try_parse(hex).ok())
    {
        Some(uuid) if id.len() == 34 => ToSqlOutput::Owned(Value::Blob(uuid.as_bytes().to_vec())),
        _ => ToSqlOutput::Borrowed(ValueRef::Text(id.as_bytes())),
    }
}

/// A stored message id back in its wire form.
pub fn id_from_sql(value: ValueRef<'_>) -> rusqlite::types::FromSqlResult<String> {
    match value {
        ValueRef::Blob(bytes) => uuid::Uuid::from_slice(bytes)
            .map(|u| format!("m-{}", u.simple()))
            .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e))),
        other => other.as_str().map(str::to_owned),
    }
}

pub fn conversation_kind(kind: ConversationKind) -> i64 {
    match kind {
        ConversationKind::Direct => 0,
        ConversationKind::Group => 1,
        ConversationKind::Inmail => 2,
    }
}

pub fn conversation_kind_from(code: i64) -> ConversationKind {
    match code {
        1 => ConversationKind::Group,
        2 => ConversationKind::Inmail,
        _ => ConversationKind::Direct,
    }
}

pub fn message_kind(kind: MessageKind) -> i64 {
    match kind {
        MessageKind::Message => 0,
        MessageKind::Inmail => 1,
    }
}

pub fn message_kind_from(code: i64) -> MessageKind {
    match code {
        1 => MessageKind::Inmail,
        _ => MessageKind::Message,
    }
}

/// Settings as their three codes.
pub fn settings_codes(s: &Settings) -> [i64; 3] {
    [
        (s.who_can_message == WhoCanMessage::Connections) as i64,
        (s.read_receipts == ReadReceipts::Off) as i64,
        match s.notification_preview {
            NotificationPreview::Full => 0,
            NotificationPreview::SenderOnly => 1,
            NotificationPreview::Off => 2,
        },
    ]
}

pub fn settings_from(codes: [i64; 3]) -> Settings {
    Settings {
        who_can_message: if codes[0] == 1 {
            WhoCanMessage::Connections
        } else {
            WhoCanMessage::Everyone
        },
        read_receipts: if codes[1] == 1 {
            ReadReceipts::Off
        } else {
            ReadReceipts::On
        },
        notification_preview: match codes[2] {
            1 => NotificationPreview::SenderOnly,
            2 => NotificationPreview::Off,
            _ => NotificationPreview::Full,
        },
    }
}

/// InMail copies as stored: one handle per line (handles hold no line breaks).
pub fn join_lines(users: &[String]) -> Option<String> {
    (!users.is_empty()).then(|| users.join("\n"))
}

pub fn split_lines(text: Option<String>) -> Vec<String> {
    text.map(|t| t.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// What writing one change did that the writer must follow up.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    /// A message body left its row: the write-ahead log may still hold it.
    pub purged: bool,
}

/// What one transaction leaves to its end: the stored number of each conversation it
/// named, and each conversation's last position and activity after its new messages,
/// written once per conversation however many messages a burst brought it. Anything
/// else about a conversation writes what is deferred for it first, so every statement
/// still sees the state the changes before it left.
#[derive(Debug, Default)]
pub struct Deferred {
    ids: HashMap<String, i64>,
    touched: HashMap<i64, (i64, i64)>,
}

impl Deferred {
    /// Note a new message at `seq`, sent at `at`, in conversation `c`.
    fn touch(&mut self, c: i64, seq: i64, at: i64) {
        let last = self.touched.entry(c).or_insert((seq, at));
        *last = (last.0.max(seq), last.1.max(at));
    }

    /// Write what is deferred for conversation `c`.
    fn settle(&mut self, tx: &Transaction, c: i64) -> rusqlite::Result<()> {
        let Some((pos, at)) = self.touched.remove(&c) else {
            return Ok(());
        };
        tx.prepare_cached(
            "UPDATE conversations SET pos = max(pos, ?2), last_activity = max(last_activity, ?3) \
             WHERE id = ?1",
        )?
        .execute(params![c, pos, at])?;
        // A new message unhides the conversation for everyone, as applying it does.
        tx.prepare_cached("UPDATE members SET hidden = 0 WHERE conversation = ?1 AND hidden = 1")?
            .execute([c])?;
        Ok(())
    }

    /// Write everything deferred: call before the transaction commits.
    pub fn finish(mut self, tx: &Transaction) -> rusqlite::Result<()> {
        let touched: Vec<i64> = self.touched.keys().copied().collect();
        for c in touched {
            self.settle(tx, c)?;
        }
        Ok(())
    }
}

/// Write one committed change. `purge_after` is set when recalled and deleted bodies are
/// kept for moderation until then, instead of purged at once.
pub fn write(
    tx: &Transaction,
    change: &Change,
    purge_after: Option<i64>,
    now: i64,
    deferred: &mut Deferred,
) -> rusqlite::Result<Written> {
    if let Some(name) = change.conversation() {
        if !matches!(
            change,
            Change::ConversationCreated { .. } | Change::MessageStored { .. }
        ) {
            if let Some(c) = conversation_id(tx, name, deferred)? {
                deferred.settle(tx, c)?;
            }
        }
    }
    match change {
        Change::UserCreated { .. }
        | Change::Settings { .. }
        | Change::Relation { .. }
        | Change::Block { .. } => write_directory(tx, change)?,
        Change::ConversationCreated { conversation, at } => {
            write_conversation(tx, conversation, *at)?;
        }
        Change::MessageStored {
            message, client_id, ..
        } => {
            write_message(tx, message, client_id, now, deferred)?;
        }
        Change::ReadUpTo {
            conversation,
            user,
            seq,
        } => {
            if let Some(c) = conversation_id(tx, conversation, deferred)? {
                write_read(tx, c, user, *seq)?;
            }
        }
        Change::Recalled {
            conversation,
            message,
            at,
        } => {
            let removal = Removal::recall(*at);
            if let Some(c) = conversation_id(tx, conversation, deferred)? {
                return remove(tx, c, message, removal, purge_after);
            }
        }
        Change::InmailDeleted {
            conversation,
            message,
            purge,
        } => {
            let removal = Removal::inmail_delete(*purge, now);
            if let Some(c) = conversation_id(tx, conversation, deferred)? {
                return remove(tx, c, message, removal, purge_after);
            }
        }
        Change::DeletedForMe {
            conversation,
            user,
            message,
        } => {
            if let Some(c) = conversation_id(tx, conversation, deferred)? {
                write_tombstone(tx, c, user, message)?;
            }
        }
        Change::MemberFlags {
            conversation,
            user,
            muted,
            hidden,
        } => {
            if let Some(c) = conversation_id(tx, conversation, deferred)? {
                write_flags(tx, c, user, *muted, *hidden)?;
            }
        }
        Change::Reported { report } => write_report(tx, report)?,
    }
    Ok(Written::default())
}

/// How a message leaves everyone's view: a recall or an InMail delete.
struct Removal {
    /// The message's state afterwards.
    state: i64,
    /// The event that tells the conversation's members.
    event: i64,
    /// Whether its body goes (an InMail a CC still holds keeps it).
    purge: bool,
    /// When it happened.
    at: i64,
}

impl Removal {
    fn recall(at: i64) -> Removal {
        Removal {
            state: RECALLED,
            event: RECALL,
            purge: true,
            at,
        }
    }

    fn inmail_delete(purge: bool, at: i64) -> Removal {
        Removal {
            state: INMAIL_DELETED,
            event: INMAIL_DELETE,
            purge,
            at,
        }
    }
}

/// Remove a message for everyone, with its event; whether its body is gone from disk now.
fn remove(
    tx: &Transaction,
    c: i64,
    message: &str,
    removal: Removal,
    purge_after: Option<i64>,
) -> rusqlite::Result<Written> {
    let Some(seq) = remove_message(tx, message, removal.state, removal.purge, purge_after)? else {
        return Ok(Written::default());
    };
    event(
        tx,
        c,
        removal.event,
        None,
        Some(seq),
        Some(removal.at),
        None,
        true,
    )?;
    Ok(Written {
        purged: removal.purge && purge_after.is_none(),
    })
}

/// A change to users, their settings, relations or blocks.
fn write_directory(tx: &Transaction, change: &Change) -> rusqlite::Result<()> {
    match change {
        Change::UserCreated { user } => {
            tx.prepare_cached("INSERT OR IGNORE INTO users (handle) VALUES (?1)")?
                .execute([user])?;
        }
        Change::Settings { user, settings } => {
            let [w, r, n] = settings_codes(settings);
            tx.prepare_cached(
                "INSERT INTO users (handle, who_can_message, read_receipts, notification_preview) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (handle) DO UPDATE SET \
                 who_can_message = ?2, read_receipts = ?3, notification_preview = ?4",
            )?
            .execute(params![user, w, r, n])?;
        }
        Change::Relation { from, to, state } => write_relation(tx, from, to, *state)?,
        Change::Block {
            blocker,
            blocked,
            on: true,
        } => {
            write_relation(tx, blocker, blocked, ConnectionState::None)?;
            tx.prepare_cached("INSERT OR IGNORE INTO blocks (blocker, blocked) VALUES (?1, ?2)")?
                .execute([blocker, blocked])?;
        }
        Change::Block {
            blocker,
            blocked,
            on: false,
        } => {
            tx.prepare_cached("DELETE FROM blocks WHERE blocker = ?1 AND blocked = ?2")?
                .execute([blocker, blocked])?;
        }
        _ => unreachable!("not a directory change: {change:?}"),
    }
    Ok(())
}

/// A new conversation and its members, once (a retried commit inserts nothing).
fn write_conversation(
    tx: &Transaction,
    conversation: &ConversationView,
    at: i64,
) -> rusqlite::Result<()> {
    let inserted = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO conversations (name, kind, title, created_at, last_activity) \
             VALUES (?1, ?2, ?3, ?4, ?4)",
        )?
        .execute(params![
            conversation.id,
            conversation_kind(conversation.kind),
            conversation.title,
            at
        ])?;
    if inserted == 1 {
        let id = tx.last_insert_rowid();
        let mut member = tx.prepare_cached(
            "INSERT OR IGNORE INTO members (conversation, user, ord) VALUES (?1, ?2, ?3)",
        )?;
        for (ord, user) in conversation.participants.iter().enumerate() {
            member.execute(params![id, user, ord as i64])?;
        }
    }
    Ok(())
}

/// A read position moved forward (never back), with its event.
fn write_read(tx: &Transaction, c: i64, user: &str, seq: u64) -> rusqlite::Result<()> {
    let moved = tx
        .prepare_cached(
            "UPDATE members SET read_seq = ?3 \
             WHERE conversation = ?1 AND user = ?2 AND read_seq < ?3",
        )?
        .execute(params![c, user, seq as i64])?;
    if moved == 1 {
        event(tx, c, READ, Some(user), Some(seq as i64), None, None, true)?;
    }
    Ok(())
}

/// A message deleted for one user, with its event (a second delete adds nothing).
fn write_tombstone(tx: &Transaction, c: i64, user: &str, message: &str) -> rusqlite::Result<()> {
    let seq: Option<i64> = tx
        .prepare_cached("SELECT seq FROM messages WHERE id = ?1")?
        .query_row([id_to_sql(message)], |r| r.get(0))
        .optional()?;
    let Some(seq) = seq else {
        return Ok(());
    };
    let added = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO tombstones (conversation, user, seq) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![c, user, seq])?;
    if added == 1 {
        event(
            tx,
            c,
            DELETE_FOR_ME,
            Some(user),
            Some(seq),
            None,
            None,
            true,
        )?;
    }
    Ok(())
}

/// A member's mute and hide flags, with their event.
fn write_flags(
    tx: &Transaction,
    c: i64,
    user: &str,
    muted: bool,
    hidden: bool,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE members SET muted = ?3, hidden = ?4 WHERE conversation = ?1 AND user = ?2",
    )?
    .execute(params![c, user, muted, hidden])?;
    let flags = (muted as i64) | ((hidden as i64) << 1);
    event(tx, c, FLAGS, Some(user), None, None, Some(flags), false)
}

/// The stored number of the conversation named `name` on the wire.
fn conversation_id(
    tx: &Transaction,
    name: &str,
    deferred: &mut Deferred,
) -> rusqlite::Result<Option<i64>> {
    if let Some(&c) = deferred.ids.get(name) {
        return Ok(Some(c));
    }
    let c: Option<i64> = tx
        .prepare_cached("SELECT id FROM conversations WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    if let Some(c) = c {
        deferred.ids.insert(name.to_owned(), c);
    }
    Ok(c)
}

/// Set the relation between `from` and `to`, replacing whatever was between them.
fn write_relation(
    tx: &Transaction,
    from: &str,
    to: &str,
    state: ConnectionState,
) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM relations WHERE (a = ?1 AND b = ?2) OR (a = ?2 AND b = ?1)")?
        .execute([from, to])?;
    let mut insert =
        tx.prepare_cached("INSERT INTO relations (a, b, state) VALUES (?1, ?2, ?3)")?;
    match state {
        ConnectionState::Connected => {
            insert.execute(params![from, to, CONNECTED])?;
            insert.execute(params![to, from, CONNECTED])?;
        }
        ConnectionState::Requested => {
            insert.execute(params![from, to, REQUESTED])?;
        }
        ConnectionState::Incoming => {
            insert.execute(params![to, from, REQUESTED])?;
        }
        ConnectionState::None => {}
    }
    Ok(())
}

fn write_message(
    tx: &Transaction,
    m: &MessageView,
    client_id: &str,
    now: i64,
    deferred: &mut Deferred,
) -> rusqlite::Result<()> {
    // Never dropped quietly: a message is committed only after its conversation, so an
    // unknown one is a bug to report, not a row to skip.
    let Some(c) = conversation_id(tx, &m.conversation, deferred)? else {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "message {} for unknown conversation {}",
            m.id, m.conversation
        )));
    };
    let seq = m.seq as i64;
    // Only a request id still to be remembered is kept (a seeded history has none).
    let request =
        (!client_id.is_empty() && m.sent_at > now - REQUEST_MEMORY_MS).then_some(client_id);
    tx.prepare_cached(
        "INSERT INTO messages (conversation, seq, id, sender, sent_at, kind, body, reply_to, cc, request) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        c,
        seq,
        id_to_sql(&m.id),
        m.sender,
        m.sent_at,
        message_kind(m.kind),
        m.body,
        m.reply_to.as_deref().map(id_to_sql),
        join_lines(&m.cc),
        request
    ])?;
    deferred.touch(c, seq, m.sent_at);
    Ok(())
}

/// Mark a message removed (`state`), its body purged when `purge` — or, with a retention
/// period, moved to `retained` until `purge_after`. Returns its seq, `None` when unknown.
fn remove_message(
    tx: &Transaction,
    message: &str,
    state: i64,
    purge: bool,
    purge_after: Option<i64>,
) -> rusqlite::Result<Option<i64>> {
    let seq: Option<i64> = tx
        .prepare_cached("SELECT seq FROM messages WHERE id = ?1")?
        .query_row([id_to_sql(message)], |r| r.get(0))
        .optional()?;
    if seq.is_none() {
        return Ok(None);
    }
    if let (true, Some(deadline)) = (purge, purge_after) {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO retained (message, body, purge_after) \
             SELECT ?1, body, ?3 FROM messages WHERE id = ?2 AND body IS NOT NULL",
        )?
        .execute(params![message, id_to_sql(message), deadline])?;
    }
    tx.prepare_cached(
        "UPDATE messages SET state = ?2, body = CASE WHEN ?3 THEN NULL ELSE body END WHERE id = ?1",
    )?
    .execute(params![id_to_sql(message), state, purge])?;
    Ok(seq)
}

/// Record a state change; `positioned` ones take the conversation's next position, flag
/// changes sit at the current one.
#[allow(clippy::too_many_arguments)]
fn event(
    tx: &Transaction,
    conversation: i64,
    kind: i64,
    user: Option<&str>,
    seq: Option<i64>,
    at: Option<i64>,
    flags: Option<i64>,
    positioned: bool,
) -> rusqlite::Result<()> {
    let pos: i64 = tx
        .prepare_cached("UPDATE conversations SET pos = pos + ?2 WHERE id = ?1 RETURNING pos")?
        .query_row(params![conversation, positioned as i64], |r| r.get(0))?;
    tx.prepare_cached(
        "INSERT INTO events (conversation, pos, kind, user, seq, at, flags) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![conversation, pos, kind, user, seq, at, flags])?;
    Ok(())
}

fn write_report(tx: &Transaction, r: &ReportView) -> rusqlite::Result<()> {
    let (target_kind, target, target_message) = match &r.target {
        ReportTarget::Message {
            conversation,
            message,
        } => (0, conversation.as_str(), Some(message.as_str())),
        ReportTarget::User { user } => (1, user.as_str(), None),
    };
    let s = r.snapshot.as_ref();
    tx.prepare_cached(
        "INSERT OR IGNORE INTO reports (id, reporter, target_kind, target, target_message, \
         reason, at, snap_id, snap_seq, snap_sender, snap_sent_at, snap_kind, snap_body, \
         snap_reply_to, snap_to, snap_cc) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(params![
        r.id,
        r.reporter,
        target_kind,
        target,
        target_message,
        r.reason,
        r.at,
        s.map(|s| &s.id),
        s.map(|s| s.seq as i64),
        s.map(|s| &s.sender),
        s.map(|s| s.sent_at),
        s.map(|s| message_kind(s.kind)),
        s.and_then(|s| s.body.as_ref()),
        s.and_then(|s| s.reply_to.as_ref()),
        s.and_then(|s| s.to.as_ref()),
        s.and_then(|s| join_lines(&s.cc)),
    ])?;
    Ok(())
}
