//! Reading the tables back as the changes that made them, in an order that applies to
//! the same state: the directory first, then each conversation with its messages and
//! state changes in position order.

use super::sqlite::now_ms;
use super::stored_form::{
    conversation_kind_from, id_from_sql, message_kind_from, settings_from, split_lines, CONNECTED,
    DELETE_FOR_ME, FLAGS, INMAIL_DELETE, READ, RECALL, REQUESTED, REQUEST_MEMORY_MS,
};
use super::{Closing, Lately, LatelyAsked, Reach, Readback};
use crate::core::conversation::{read_by_another, recall_on_offer};
use crate::core::conversation::{MemberBase, Suffix, HELD_TAIL, UNREAD_CAP};
use crate::core::request_memory::Remembered;
use crate::core::Change;
use parley_protocol::{
    ConnectionState, ConversationView, MessageKind, MessageState, MessageView, Millis,
    ReportTarget, ReportView, Settings,
};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::HashMap;

/// Every change needed to rebuild the state the tables hold, handed to `out` one by one
/// as it is read, so they are never all in memory at once.
pub fn load(conn: &Connection, out: &mut dyn FnMut(Change)) -> rusqlite::Result<()> {
    start_up(conn, out)?;
    let mut conversations = conn.prepare(&format!("{HEADER} ORDER BY id"))?;
    let rows = conversations.query_map([], header)?;
    for row in rows {
        conversation(conn, row?, 0, out)?;
    }
    Ok(())
}

/// What a server holding only its working set reads at start: the directory (users,
/// settings, relations, blocks) and the reports; no conversation.
pub fn start_up(conn: &Connection, out: &mut dyn FnMut(Change)) -> rusqlite::Result<()> {
    directory(conn, out)?;
    reports(conn, out)
}

/// The changes that rebuild conversation `name`, or `None` when there is none: all of
/// them when `reach` is `None`, else only a suffix (see [`floor`]) with how its
/// participants stood just before it.
pub fn one(
    conn: &Connection,
    name: &str,
    reach: Option<Reach>,
) -> rusqlite::Result<Option<Readback>> {
    let mut stmt = conn.prepare_cached(&format!("{HEADER} WHERE name = ?1"))?;
    let Some(row) = stmt.query_map([name], header)?.next().transpose()? else {
        return Ok(None);
    };
    let suffix = match reach {
        Some(reach) => match floor(
            conn,
            row.id,
            reach.since_for(conversation_kind_from(row.kind)),
        )? {
            Some(floor) => Some(suffix(conn, row.id, floor, reach.remembered_since)?),
            None => None,
        },
        None => None,
    };
    let mut changes = Vec::new();
    let from = suffix.as_ref().map_or(0, |s| s.floor as i64);
    conversation(conn, row, from, &mut |c| changes.push(c))?;
    Ok(Some(Readback { changes, suffix }))
}

/// Where a suffix of conversation `id` may begin: at most [`HELD_TAIL`] messages back unless
/// messages sent at `since` or later go further, and early enough that every state
/// change after it refers to a message in it. `None` when that is the whole conversation.
fn floor(conn: &Connection, id: i64, since: i64) -> rusqlite::Result<Option<i64>> {
    let mut newest = conn.prepare_cached(
        "SELECT seq, sent_at FROM messages WHERE conversation = ?1 ORDER BY seq DESC",
    )?;
    let mut rows = newest.query([id])?;
    let (mut floor, mut held) = (None, 0usize);
    loop {
        let Some(r) = rows.next()? else {
            return Ok(None);
        };
        let (seq, sent_at): (i64, i64) = (r.get(0)?, r.get(1)?);
        if held >= HELD_TAIL && sent_at < since {
            break;
        }
        floor = Some(seq);
        held += 1;
    }
    let Some(mut floor) = floor else {
        return Ok(None);
    };
    let mut oldest_referred = conn.prepare_cached(
        "SELECT min(seq) FROM events WHERE conversation = ?1 AND pos >= ?2 AND seq IS NOT NULL",
    )?;
    while let Some(seq) = oldest_referred.query_row([id, floor], |r| r.get::<_, Option<i64>>(0))? {
        if seq >= floor {
            break;
        }
        floor = seq;
    }
    let first: Option<i64> = conn
        .prepare_cached("SELECT min(seq) FROM messages WHERE conversation = ?1")?
        .query_row([id], |r| r.get(0))?;
    Ok(first.is_some_and(|first| floor > first).then_some(floor))
}

/// Each participant of conversation `id` as it stood just before message `floor`, and
/// what is remembered of the messages before it sent at `remembered_since` or later.
fn suffix(
    conn: &Connection,
    id: i64,
    floor: i64,
    remembered_since: Millis,
) -> rusqlite::Result<Suffix> {
    let mut members = conn.prepare_cached(
        "SELECT user, read_seq, ord, muted, hidden FROM members WHERE conversation = ?1",
    )?;
    let mut message_at =
        conn.prepare_cached("SELECT id FROM messages WHERE conversation = ?1 AND seq = ?2")?;
    let mut unread = conn.prepare_cached(
        "SELECT count(*) FROM (SELECT 1 FROM messages m WHERE m.conversation = ?1 \
           AND m.seq > ?2 AND m.seq < ?3 AND m.sender <> ?4 \
           AND (m.state = 0 OR (m.state = 2 AND ?5 <> 1)) \
           AND NOT EXISTS (SELECT 1 FROM tombstones t \
                           WHERE t.conversation = ?1 AND t.user = ?4 AND t.seq = m.seq) \
           LIMIT ?6)",
    )?;
    let rows = members.query_map([id], |r| {
        let flags = (r.get::<_, bool>(3)?, r.get::<_, bool>(4)?);
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            flags,
        ))
    })?;
    let mut bases = Vec::new();
    for row in rows {
        let (user, read, ord, (muted, hidden)) = row?;
        let read_message = match read > 0 && read < floor {
            true => {
                Some(message_at.query_row(params![id, read], |r| Ok(id_from_sql(r.get_ref(0)?)?))?)
            }
            false => None,
        };
        let unread_before = match read < floor - 1 {
            true => unread.query_row(params![id, read, floor, user, ord, UNREAD_CAP], |r| {
                r.get(0)
            })?,
            false => 0,
        };
        bases.push(MemberBase {
            user,
            read_seq: read.min(floor - 1) as u64,
            read_message,
            unread_before,
            muted,
            hidden,
        });
    }
    let first = first_sent_since(conn, id, floor - 1, remembered_since)?;
    let first = first.map_or(floor, |(seq, _)| seq);
    let unheld_until = conn
        .prepare_cached(
            "SELECT sent_at FROM messages WHERE conversation = ?1 AND seq < ?2 \
             ORDER BY seq DESC LIMIT 1",
        )?
        .query_row([id, floor], |r| r.get(0))
        .optional()?
        .unwrap_or(Millis::MIN);
    Ok(Suffix {
        floor: floor as u64,
        members: bases,
        unheld_until,
        requests: remembered_requests(conn, id, first, floor)?,
        recalls: recalls_before(conn, id, first, floor)?,
    })
}

/// The request ids still remembered of conversation `id`'s messages from `first` until
/// `floor`: a retry of any of them finds its message though it is not held.
fn remembered_requests(
    conn: &Connection,
    id: i64,
    first: i64,
    floor: i64,
) -> rusqlite::Result<Vec<Remembered>> {
    let mut rows = conn.prepare_cached(
        "SELECT sender, request, seq, sent_at FROM messages WHERE conversation = ?1 \
         AND seq >= ?2 AND seq < ?3 AND request IS NOT NULL AND sent_at > ?4",
    )?;
    let remembered_since = now_ms() - REQUEST_MEMORY_MS;
    let found = rows.query_map(params![id, first, floor, remembered_since], |r| {
        Ok(Remembered {
            sender: r.get(0)?,
            request: r.get(1)?,
            seq: r.get::<_, i64>(2)? as u64,
            at: r.get(3)?,
        })
    })?;
    found.collect()
}

/// Recalls in conversation `id` at positions from `first` until `floor`: (sender, when).
fn recalls_before(
    conn: &Connection,
    id: i64,
    first: i64,
    floor: i64,
) -> rusqlite::Result<Vec<(String, Millis)>> {
    let mut rows = conn.prepare_cached(
        "SELECT m.sender, e.at FROM events e JOIN messages m \
           ON m.conversation = e.conversation AND m.seq = e.seq \
         WHERE e.conversation = ?1 AND e.pos >= ?2 AND e.pos < ?3 AND e.kind = ?4",
    )?;
    let found = rows.query_map(params![id, first, floor, RECALL], |r| {
        Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0)))
    })?;
    found.collect()
}

/// The ids of the conversations `user` takes part in.
pub fn conversations_of(conn: &Connection, user: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.name FROM members m JOIN conversations c ON c.id = m.conversation \
         WHERE m.user = ?1",
    )?;
    let names = stmt.query_map([user], |r| r.get(0))?.collect();
    names
}

/// What start-up needs of the messages sent lately. Only the conversations active since
/// the windows began are visited (an index on activity), and in each only a handful of
/// messages: a binary search for the first one inside the recall window, and the latest
/// sends back to the throttle window's start, stopping once every participant has as
/// many as the throttle can count. So the cost follows the conversations in use, not
/// the messages they hold.
pub fn lately(conn: &Connection, asked: LatelyAsked) -> rusqlite::Result<Lately> {
    let since = asked.recall_since.min(asked.throttle_since);
    let mut active = conn.prepare_cached(
        "SELECT c.id, c.name, c.pos, (SELECT count(*) FROM members m WHERE m.conversation = c.id) \
         FROM conversations c WHERE c.last_activity >= ?1",
    )?;
    let active: Vec<(i64, String, i64, usize)> = active
        .query_map([since], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut lately = Lately::default();
    let mut sends: HashMap<String, Vec<Millis>> = HashMap::new();
    for (id, name, pos, members) in active {
        if let Some((_, at)) = first_sent_since(conn, id, pos, asked.recall_since)? {
            lately.first_sent.push((name, at));
        }
        latest_sends(conn, id, members, asked, &mut sends)?;
    }
    lately.sends = sends
        .into_iter()
        .map(|(user, mut times)| {
            times.sort_unstable_by(|a, b| b.cmp(a));
            times.truncate(asked.sends_per_user);
            times.reverse();
            (user, times)
        })
        .collect();
    Ok(lately)
}

/// The position and send time of the first message of conversation `id` (positions up
/// to `pos`) sent at `since` or later. Send times rise with positions, so a binary search
/// over positions finds it in a few lookups however long the conversation is.
fn first_sent_since(
    conn: &Connection,
    id: i64,
    pos: i64,
    since: Millis,
) -> rusqlite::Result<Option<(i64, Millis)>> {
    let mut probe = conn.prepare_cached(
        "SELECT seq, sent_at FROM messages WHERE conversation = ?1 AND seq >= ?2 \
         ORDER BY seq LIMIT 1",
    )?;
    let mut at_or_after = |seq: i64| -> rusqlite::Result<Option<(i64, Millis)>> {
        probe
            .query_row((id, seq), |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
    };
    // Every message before `lo` was sent before `since`; the first message from `hi` on,
    // if any, was sent at `since` or later.
    let (mut lo, mut hi) = (0, pos.saturating_add(1));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match at_or_after(mid)? {
            Some((seq, at)) if at < since => lo = seq + 1,
            _ => hi = mid,
        }
    }
    Ok(at_or_after(lo)?.filter(|&(_, at)| at >= since))
}

/// Conversation `name`'s messages sent from `sent_from` to `sent_until` whose recall is
/// on offer, and when the next such message was sent: the rows from the first sent in
/// the span on, until that next one.
pub fn closing(
    conn: &Connection,
    name: &str,
    sent_from: Millis,
    sent_until: Millis,
) -> rusqlite::Result<Closing> {
    let mut closing = Closing::default();
    let mut conv = conn.prepare_cached("SELECT id, pos FROM conversations WHERE name = ?1")?;
    let Some((id, pos)) = conv
        .query_row([name], |r| Ok((r.get::<_, i64>(0)?, r.get(1)?)))
        .optional()?
    else {
        return Ok(closing);
    };
    let Some((start, _)) = first_sent_since(conn, id, pos, sent_from)? else {
        return Ok(closing);
    };
    let mut members =
        conn.prepare_cached("SELECT user, read_seq FROM members WHERE conversation = ?1")?;
    let reads: Vec<(String, u64)> = members
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut rows = conn.prepare_cached(
        "SELECT seq, id, sender, sent_at, kind, state FROM messages \
         WHERE conversation = ?1 AND seq >= ?2 ORDER BY seq",
    )?;
    let mut rows = rows.query((id, start))?;
    while let Some(row) = rows.next()? {
        let (seq, sender, sent_at): (u64, String, Millis) = (row.get(0)?, row.get(2)?, row.get(3)?);
        let positions = reads.iter().map(|(u, r)| (u.as_str(), *r));
        let read = read_by_another(&sender, seq, positions);
        let kept = row.get::<_, i64>(5)? == 0;
        if !recall_on_offer(message_kind_from(row.get(4)?), kept, read) {
            continue;
        }
        if sent_at > sent_until {
            closing.next_sent = Some(sent_at);
            break;
        }
        closing
            .on_offer
            .push((id_from_sql(row.get_ref(1)?)?, sender));
    }
    Ok(closing)
}

/// Add the latest send times of conversation `id` since the throttle window's start to
/// `sends`, at most `asked.sends_per_user` per sender, newest first.
fn latest_sends(
    conn: &Connection,
    id: i64,
    members: usize,
    asked: LatelyAsked,
    sends: &mut HashMap<String, Vec<Millis>>,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "SELECT sender, sent_at FROM messages WHERE conversation = ?1 ORDER BY seq DESC",
    )?;
    let mut rows = stmt.query([id])?;
    let mut here: HashMap<String, usize> = HashMap::new();
    let mut full = 0;
    while full < members {
        let Some(row) = rows.next()? else { break };
        let at: Millis = row.get(1)?;
        if at < asked.throttle_since {
            break;
        }
        let sender: String = row.get(0)?;
        let counted = here.entry(sender.clone()).or_default();
        if *counted == asked.sends_per_user {
            continue;
        }
        *counted += 1;
        full += usize::from(*counted == asked.sends_per_user);
        sends.entry(sender).or_default().push(at);
    }
    Ok(())
}

/// The columns [`header`] reads.
const HEADER: &str = "SELECT id, name, kind, title, created_at FROM conversations";

/// A conversation's own row.
struct Header {
    id: i64,
    name: String,
    kind: i64,
    title: Option<String>,
    at: i64,
}

fn header(r: &Row) -> rusqlite::Result<Header> {
    Ok(Header {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: r.get(2)?,
        title: r.get(3)?,
        at: r.get(4)?,
    })
}

fn directory(conn: &Connection, out: &mut dyn FnMut(Change)) -> rusqlite::Result<()> {
    let mut users = conn.prepare(
        "SELECT handle, who_can_message, read_receipts, notification_preview FROM users",
    )?;
    for row in users.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, [r.get(1)?, r.get(2)?, r.get(3)?]))
    })? {
        let (user, codes) = row?;
        let settings = settings_from(codes);
        out(Change::UserCreated { user: user.clone() });
        if settings != Settings::default() {
            out(Change::Settings { user, settings });
        }
    }
    let mut relations = conn.prepare("SELECT a, b, state FROM relations")?;
    for row in relations.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })? {
        let (from, to, state) = row?;
        let state = match state {
            CONNECTED if from < to => ConnectionState::Connected,
            REQUESTED => ConnectionState::Requested,
            _ => continue,
        };
        out(Change::Relation { from, to, state });
    }
    let mut blocks = conn.prepare("SELECT blocker, blocked FROM blocks")?;
    for row in blocks.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
        let (blocker, blocked) = row?;
        out(Change::Block {
            blocker,
            blocked,
            on: true,
        });
    }
    Ok(())
}

fn reports(conn: &Connection, out: &mut dyn FnMut(Change)) -> rusqlite::Result<()> {
    let mut reports = conn.prepare(
        "SELECT id, reporter, target_kind, target, target_message, reason, at, snap_id, \
         snap_seq, snap_sender, snap_sent_at, snap_kind, snap_body, snap_reply_to, snap_to, \
         snap_cc FROM reports ORDER BY at, id",
    )?;
    for report in reports.query_map([], report)? {
        out(Change::Reported { report: report? });
    }
    Ok(())
}

fn report(r: &Row) -> rusqlite::Result<ReportView> {
    let target = match r.get::<_, i64>(2)? {
        0 => ReportTarget::Message {
            conversation: r.get(3)?,
            message: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
        },
        _ => ReportTarget::User { user: r.get(3)? },
    };
    let snapshot = match r.get::<_, Option<String>>(7)? {
        None => None,
        Some(id) => Some(MessageView {
            id,
            conversation: r.get(3)?,
            seq: r.get::<_, i64>(8)? as u64,
            sender: r.get(9)?,
            sent_at: r.get(10)?,
            kind: message_kind_from(r.get(11)?),
            state: MessageState::Visible,
            body: r.get(12)?,
            reply_to: r.get(13)?,
            to: r.get(14)?,
            cc: split_lines(r.get(15)?),
            recall_until: None,
            delete_until: None,
        }),
    };
    Ok(ReportView {
        id: r.get(0)?,
        reporter: r.get(1)?,
        target,
        reason: r.get(5)?,
        at: r.get(6)?,
        snapshot,
    })
}

/// One stored message, as read back.
struct Stored {
    seq: i64,
    view: MessageView,
    /// The client request id, while it is still remembered.
    request: Option<String>,
}

/// One state change, as read back.
struct Event {
    pos: i64,
    kind: i64,
    user: Option<String>,
    seq: Option<i64>,
    at: Option<i64>,
    flags: Option<i64>,
}

/// Conversation `row`'s creation, then its messages from seq `from` on and the state
/// changes after them, in position order.
fn conversation(
    conn: &Connection,
    row: Header,
    from: i64,
    out: &mut dyn FnMut(Change),
) -> rusqlite::Result<()> {
    let Header {
        id,
        name,
        kind,
        title,
        at,
    } = row;
    let mut members =
        conn.prepare_cached("SELECT user FROM members WHERE conversation = ?1 ORDER BY ord")?;
    let participants: Vec<String> = members
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let primary = participants.get(1).cloned();
    out(Change::ConversationCreated {
        conversation: ConversationView {
            id: name.clone(),
            kind: conversation_kind_from(kind),
            participants,
            title,
        },
        at,
    });
    let messages = messages(conn, id, from, &name, primary)?;
    let events = events(conn, id, from)?;
    // seq → (message id, whether it copies anyone): what the state changes refer to.
    let mut ids: HashMap<i64, (String, bool)> = HashMap::new();
    let mut events = events.into_iter().peekable();
    for m in messages {
        while let Some(e) = events.next_if(|e| e.pos < m.seq) {
            if let Some(change) = event_change(&name, e, &ids) {
                out(change);
            }
        }
        ids.insert(m.seq, (m.view.id.clone(), !m.view.cc.is_empty()));
        let client_id = m.request.unwrap_or_default();
        out(Change::MessageStored {
            message: m.view,
            client_id,
            offline: None,
        });
    }
    for e in events {
        if let Some(change) = event_change(&name, e, &ids) {
            out(change);
        }
    }
    Ok(())
}

fn messages(
    conn: &Connection,
    id: i64,
    from: i64,
    name: &str,
    primary: Option<String>,
) -> rusqlite::Result<Vec<Stored>> {
    let mut rows = conn.prepare_cached(
        "SELECT seq, id, sender, sent_at, kind, body, reply_to, cc, request FROM messages \
         WHERE conversation = ?1 AND seq >= ?2 ORDER BY seq",
    )?;
    let remembered_since = now_ms() - REQUEST_MEMORY_MS;
    let out = rows
        .query_map([id, from], |r| {
            let sent_at: i64 = r.get(3)?;
            let seq: i64 = r.get(0)?;
            let kind = message_kind_from(r.get(4)?);
            let reply_to = match r.get_ref(6)? {
                rusqlite::types::ValueRef::Null => None,
                v => Some(id_from_sql(v)?),
            };
            Ok(Stored {
                seq,
                request: r
                    .get::<_, Option<String>>(8)?
                    .filter(|_| sent_at > remembered_since),
                view: MessageView {
                    id: id_from_sql(r.get_ref(1)?)?,
                    conversation: name.to_owned(),
                    seq: seq as u64,
                    sender: r.get(2)?,
                    sent_at,
                    kind,
                    state: MessageState::Visible,
                    body: r.get(5)?,
                    reply_to,
                    to: (kind == MessageKind::Inmail)
                        .then(|| primary.clone())
                        .flatten(),
                    cc: split_lines(r.get(7)?),
                    recall_until: None,
                    delete_until: None,
                },
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(out)
}

fn events(conn: &Connection, id: i64, from: i64) -> rusqlite::Result<Vec<Event>> {
    let mut rows = conn.prepare_cached(
        "SELECT pos, kind, user, seq, at, flags FROM events WHERE conversation = ?1 \
         AND pos >= ?2 ORDER BY pos, rowid",
    )?;
    let out = rows
        .query_map([id, from], |r| {
            Ok(Event {
                pos: r.get(0)?,
                kind: r.get(1)?,
                user: r.get(2)?,
                seq: r.get(3)?,
                at: r.get(4)?,
                flags: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(out)
}

fn event_change(
    conversation: &str,
    e: Event,
    ids: &HashMap<i64, (String, bool)>,
) -> Option<Change> {
    let conversation = conversation.to_owned();
    let found = e.seq.and_then(|s| ids.get(&s));
    let message = || found.map(|(id, _)| id.clone());
    Some(match e.kind {
        READ => Change::ReadUpTo {
            conversation,
            user: e.user?,
            seq: e.seq? as u64,
        },
        RECALL => Change::Recalled {
            conversation,
            message: message()?,
            at: e.at.unwrap_or_default(),
        },
        INMAIL_DELETE => Change::InmailDeleted {
            conversation,
            message: message()?,
            // An InMail that copies someone keeps its body for them.
            purge: !found?.1,
        },
        DELETE_FOR_ME => Change::DeletedForMe {
            conversation,
            message: message()?,
            user: e.user?,
        },
        FLAGS => {
            let flags = e.flags.unwrap_or_default();
            Change::MemberFlags {
                conversation,
                user: e.user?,
                muted: flags & 1 == 1,
                hidden: flags & 2 == 2,
            }
        }
        _ => return None,
    })
}
