//! One conversation's state and every rule that acts on it: send, read, recall, InMail
//! delete, delete-for-me, mute, hide, typing, history and inbox views.

use super::request_memory::{Remembered, RequestMemory};
use super::{
    deadline, window_open, Actor, Change, Ctx, Online, Outcome, RecallTimer, Refusal, Target,
};
use parley_protocol::{
    AckResult, ConversationKind, ConversationUpdate, ConversationView, InboxEntry, Limits,
    MessageId, MessageKind, MessageState, MessageView, Millis, NotificationPreview,
    NotificationView, ReadReceipts, RecallClosedReason, Receipt, RemovalMode, RetractReason,
    ServerFrame, UserId,
};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

mod trim;

pub use trim::Keep;

/// Largest history page.
pub const MAX_PAGE: u32 = 100;

/// Messages a conversation held in part holds at least, counted from the newest: enough
/// for the inbox, a first history page and a short catch-up without reading more.
pub const HELD_TAIL: usize = 256;

/// Where a stored message stands for everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// Not removed.
    None,
    /// Recalled: a marker for everyone.
    Recalled,
    /// InMail deleted: gone for sender and primary recipient, kept by copied recipients.
    InmailDeleted,
}

#[derive(Debug, Clone)]
struct Message {
    id: MessageId,
    seq: u64,
    sender: UserId,
    sent_at: Millis,
    kind: MessageKind,
    body: Option<String>,
    reply_to: Option<MessageId>,
    to: Option<UserId>,
    cc: Vec<UserId>,
    removal: Removal,
}

/// One entry of the conversation's change history, replayed to a syncing client.
#[derive(Debug, Clone)]
enum Event {
    Message(usize),
    Read { user: UserId, idx: usize },
    Recalled(usize),
    InmailDeleted(usize),
    DeletedForMe { user: UserId, idx: usize },
}

#[derive(Debug, Clone, Default)]
struct Member {
    read_seq: u64,
    muted: bool,
    hidden: bool,
    deleted: HashSet<u64>,
    /// Seqs of messages with a notification not yet cleared, retracted or read.
    notified: BTreeSet<u64>,
    /// The subset produced while the member had no live session, awaiting `sync`.
    pending: BTreeSet<u64>,
    /// In a conversation held in part: the message at `read_seq` when it is older than
    /// what is held (for receipts), and how many messages the member may see between it
    /// and what is held (for the unread count, at most [`UNREAD_CAP`]).
    read_message: Option<MessageId>,
    unread_before: u32,
}

/// The largest unread count reported: a count this large means "this many or more".
pub const UNREAD_CAP: u32 = 1000;

/// How a conversation read back only in part begins: its first message held, and each
/// participant's state as of just before it. Every change from `floor` on is read back
/// with it, so whatever a rule needs from that part is exact; a rule that needs an older
/// message answers [`Refusal::NotHeld`] and the whole conversation is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Suffix {
    /// The first message held.
    pub floor: u64,
    /// Each participant's starting state.
    pub members: Vec<MemberBase>,
    /// When the message just before the floor was sent.
    pub unheld_until: Millis,
    /// The request ids still remembered of messages before the floor.
    pub requests: Vec<Remembered>,
    /// Recalls of messages before the floor that may count towards the allowance:
    /// (sender, when).
    pub recalls: Vec<(UserId, Millis)>,
}

/// One participant's state just before a [`Suffix`] begins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberBase {
    /// The participant.
    pub user: UserId,
    /// Read position then.
    pub read_seq: u64,
    /// The message at `read_seq` when it lies before the floor.
    pub read_message: Option<MessageId>,
    /// Messages the participant may see after `read_seq` and before the floor, from
    /// others, at most [`UNREAD_CAP`].
    pub unread_before: u32,
    /// Its flags as they stand now: a flag set before the floor has no change after it,
    /// and one set after it is read back with the suffix.
    pub muted: bool,
    /// See `muted`.
    pub hidden: bool,
}

/// A conversation: its participants, messages and each participant's view of them.
#[derive(Debug, Clone)]
pub struct Conversation {
    id: String,
    kind: ConversationKind,
    participants: Vec<UserId>,
    title: Option<String>,
    messages: Vec<Message>,
    by_id: HashMap<MessageId, usize>,
    /// Position of the last change; messages and state changes share it.
    pos: u64,
    /// Every change with its position, oldest first.
    events: Vec<(u64, Event)>,
    members: HashMap<UserId, Member>,
    /// Successful recall times per sender, for the per-period allowance.
    recalls: HashMap<UserId, VecDeque<Millis>>,
    /// Which message each remembered client request id stored: a re-sent request finds
    /// its message, held or not.
    requests: RequestMemory,
    last_activity: Millis,
    /// The first message held when only a suffix is (0: all of it).
    floor: u64,
    /// When the newest message not held was sent (at the latest; `Millis::MIN` when all
    /// are held). Messages are sent in position order by a clock that never goes back.
    unheld_until: Millis,
}

/// Whether a message's sender may still recall it, its window aside: a message (an
/// InMail has no recall), neither recalled nor deleted (`kept`), read by nobody else.
pub fn recall_on_offer(kind: MessageKind, kept: bool, read_by_another: bool) -> bool {
    kind == MessageKind::Message && kept && !read_by_another
}

/// Whether anyone but `sender` has read up to position `seq`, given each participant's
/// read position.
pub fn read_by_another<'a>(
    sender: &str,
    seq: u64,
    mut read_positions: impl Iterator<Item = (&'a str, u64)>,
) -> bool {
    read_positions.any(|(user, read)| user != sender && read >= seq)
}

/// Tell each sender of `closed` (message id, sender) in `conversation` that its recall
/// window closed while recall was on offer.
pub fn recall_expired<'a>(
    conversation: &str,
    closed: impl Iterator<Item = (&'a str, &'a str)>,
) -> Outcome {
    let mut out = Outcome::ok();
    for (message, sender) in closed {
        out.emit(
            vec![Target::all(sender)],
            ServerFrame::RecallClosed {
                conversation: conversation.to_owned(),
                message: message.to_owned(),
                reason: RecallClosedReason::Expired,
            },
        );
    }
    out
}

/// How a message looks to one viewer, or `None` when it is gone for them.
fn view_state(m: &Message, member: &Member, viewer: &str) -> Option<MessageState> {
    match m.removal {
        Removal::Recalled => Some(MessageState::Recalled),
        Removal::InmailDeleted if m.sender == viewer || m.to.as_deref() == Some(viewer) => None,
        _ if member.deleted.contains(&m.seq) => Some(MessageState::Deleted),
        _ => Some(MessageState::Visible),
    }
}

impl Conversation {
    /// A new, empty conversation.
    pub fn new(
        id: String,
        kind: ConversationKind,
        participants: Vec<UserId>,
        title: Option<String>,
        now: Millis,
    ) -> Self {
        let members = participants
            .iter()
            .map(|p| (p.clone(), Member::default()))
            .collect();
        Conversation {
            id,
            kind,
            participants,
            title,
            messages: Vec::new(),
            by_id: HashMap::new(),
            pos: 0,
            events: Vec::new(),
            members,
            recalls: HashMap::new(),
            requests: RequestMemory::default(),
            last_activity: now,
            floor: 0,
            unheld_until: Millis::MIN,
        }
    }

    /// Begin a conversation read back in part: what follows is every change from
    /// `suffix.floor` on.
    pub fn resume(&mut self, suffix: &Suffix) {
        self.floor = suffix.floor;
        self.unheld_until = suffix.unheld_until;
        self.pos = suffix.floor.saturating_sub(1);
        for base in &suffix.members {
            if let Some(m) = self.members.get_mut(&base.user) {
                m.read_seq = base.read_seq;
                m.read_message = base.read_message.clone();
                m.unread_before = base.unread_before;
                m.muted = base.muted;
                m.hidden = base.hidden;
            }
        }
        for r in &suffix.requests {
            self.requests.remember(&r.sender, &r.request, r.seq, r.at);
        }
        for (sender, at) in &suffix.recalls {
            self.recalls
                .entry(sender.clone())
                .or_default()
                .push_back(*at);
        }
    }

    /// Whether only a suffix is held.
    pub fn partial(&self) -> bool {
        self.floor > 1
    }

    /// Whether every message sent at `at` or later is held.
    pub fn holds_sent_since(&self, at: Millis) -> bool {
        self.unheld_until < at
    }

    /// A message that is not held does not exist, unless only a suffix is held.
    fn missing(&self, what: &'static str) -> Refusal {
        if self.partial() {
            Refusal::NotHeld
        } else {
            Refusal::NotFound(what)
        }
    }

    /// How much it holds: its messages and state changes, and each participant's
    /// outstanding notifications and tombstones (what a cache of conversations counts
    /// against its limit).
    pub fn weight(&self) -> usize {
        let members: usize = self
            .members
            .values()
            .map(|m| m.deleted.len() + m.notified.len() + m.pending.len())
            .sum();
        // A remembered request id is a few bytes against a message's few hundred.
        self.messages.len() + self.events.len() + members + self.requests.len() / 16
    }

    /// The conversation's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Direct, group or InMail.
    pub fn kind(&self) -> ConversationKind {
        self.kind
    }

    /// Every participant, creator first.
    pub fn participants(&self) -> &[UserId] {
        &self.participants
    }

    /// Whether `user` takes part.
    pub fn is_participant(&self, user: &str) -> bool {
        self.members.contains_key(user)
    }

    /// The time of the last message (or of creation).
    pub fn last_activity(&self) -> Millis {
        self.last_activity
    }

    /// The public shape of the conversation.
    pub fn view(&self) -> ConversationView {
        ConversationView {
            id: self.id.clone(),
            kind: self.kind,
            participants: self.participants.clone(),
            title: self.title.clone(),
        }
    }

    /// The change that records this conversation's creation.
    pub fn created(&self) -> Change {
        Change::ConversationCreated {
            conversation: self.view(),
            at: self.last_activity,
        }
    }

    /// The conversation a committed [`Change::ConversationCreated`] describes.
    pub fn from_view(view: &ConversationView, at: Millis) -> Self {
        Conversation::new(
            view.id.clone(),
            view.kind,
            view.participants.clone(),
            view.title.clone(),
            at,
        )
    }

    fn member(&self, user: &str) -> Result<&Member, Refusal> {
        self.members
            .get(user)
            .ok_or(Refusal::NotFound("conversation"))
    }

    fn everyone(&self, except: Option<&Actor>) -> Vec<Target> {
        self.participants
            .iter()
            .map(|p| Target {
                user: p.clone(),
                except: except.filter(|a| &a.user == p).map(|a| a.session),
            })
            .collect()
    }

    /// Index of a message `viewer` can currently see (markers and tombstones included).
    fn find_for(&self, viewer: &str, id: &str) -> Result<usize, Refusal> {
        let member = self.member(viewer)?;
        let idx = *self.by_id.get(id).ok_or_else(|| self.missing("message"))?;
        view_state(&self.messages[idx], member, viewer)
            .map(|_| idx)
            .ok_or(Refusal::NotFound("message"))
    }

    fn render(
        &self,
        m: &Message,
        state: MessageState,
        limits: &parley_protocol::Limits,
    ) -> MessageView {
        let (recall_until, delete_until) = deadlines(m.kind, m.sent_at, limits);
        MessageView {
            id: m.id.clone(),
            conversation: self.id.clone(),
            seq: m.seq,
            sender: m.sender.clone(),
            sent_at: m.sent_at,
            kind: m.kind,
            state,
            body: (state == MessageState::Visible)
                .then(|| m.body.clone())
                .flatten(),
            reply_to: m.reply_to.clone(),
            to: m.to.clone(),
            cc: m.cc.clone(),
            recall_until,
            delete_until,
        }
    }

    /// Whether someone other than the sender has read up to this message.
    fn read_by_recipient(&self, m: &Message) -> bool {
        let positions = self
            .members
            .iter()
            .map(|(u, mem)| (u.as_str(), mem.read_seq));
        read_by_another(&m.sender, m.seq, positions)
    }

    /// Check the sender may post here at all (blocks and connections per conversation kind).
    fn check_may_post(&self, ctx: &Ctx, sender: &str) -> Result<(), Refusal> {
        self.member(sender)?;
        let others = self.participants.iter().filter(|p| *p != sender);
        match self.kind {
            ConversationKind::Direct => {
                for other in others {
                    ctx.directory.check_direct(sender, other)?;
                }
            }
            ConversationKind::Inmail => {
                for other in others {
                    if ctx.directory.blocked_either(sender, other) {
                        return Err(Refusal::RecipientUnavailable);
                    }
                }
            }
            // Blocks stop new groups with both users; an existing group keeps working,
            // minus receipts and typing from the blocker.
            ConversationKind::Group => {}
        }
        Ok(())
    }

    /// Decide a new message (or find the one this request id already stored).
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &self,
        ctx: &Ctx,
        actor: &Actor,
        client_id: &str,
        body: String,
        reply_to: Option<MessageId>,
        kind: MessageKind,
        cc: Vec<UserId>,
        new_id: impl FnOnce() -> MessageId,
    ) -> Result<Outcome, Refusal> {
        let sender = actor.user.as_str();
        self.member(sender)?;
        if let Some(seq) = self.requests.find(sender, client_id) {
            let m = self.at(seq).ok_or_else(|| self.missing("message"))?;
            let state = view_state(m, &self.members[sender], sender);
            let state = state.unwrap_or(MessageState::Recalled);
            return Ok(Outcome::with_ack(AckResult::Sent {
                message: self.render(m, state, ctx.limits),
            }));
        }
        self.check_may_post(ctx, sender)?;
        if body.chars().count() > ctx.limits.max_body_chars as usize {
            return Err(Refusal::BodyTooLong(ctx.limits.max_body_chars));
        }
        if body.trim().is_empty() {
            return Err(Refusal::BlankBody);
        }
        if let Some(parent) = &reply_to {
            self.find_for(sender, parent)?;
        }
        let (recall_until, delete_until) = deadlines(kind, ctx.now, ctx.limits);
        let view = MessageView {
            id: new_id(),
            conversation: self.id.clone(),
            seq: self.pos + 1,
            sender: sender.to_owned(),
            sent_at: ctx.now,
            kind,
            state: MessageState::Visible,
            body: Some(body),
            reply_to,
            to: (kind == MessageKind::Inmail)
                .then(|| self.participants.get(1).cloned())
                .flatten(),
            cc,
            recall_until,
            delete_until,
        };

        // Everything that reads the view is taken first, so the view itself can move
        // into its last frame: each copy costs an allocation per string in it.
        let timer = match (kind, view.recall_until) {
            (MessageKind::Message, Some(at)) => Some(RecallTimer {
                conversation: self.id.clone(),
                at,
            }),
            _ => None,
        };
        let notifications: Vec<(Vec<Target>, ServerFrame)> = self
            .notified_by(sender)
            .map(|user| {
                let preview = ctx.directory.settings(user).notification_preview;
                let frame = ServerFrame::Notification {
                    notification: notification(&view, preview),
                };
                (vec![Target::all(user)], frame)
            })
            .collect();
        let mut out = Outcome::with_ack(AckResult::Sent {
            message: view.clone(),
        });
        out.changes.push(Change::MessageStored {
            message: view.clone(),
            client_id: client_id.to_owned(),
            offline: None,
        });
        out.emit(
            self.everyone(Some(actor)),
            ServerFrame::Message { message: view },
        );
        for (to, frame) in notifications {
            out.emit(to, frame);
        }
        out.timer = timer;
        Ok(out)
    }

    /// Participants a new message from `sender` notifies: every unmuted recipient.
    fn notified_by<'a>(&'a self, sender: &'a str) -> impl Iterator<Item = &'a UserId> + 'a {
        self.participants
            .iter()
            .filter(move |u| *u != sender && self.members.get(*u).is_some_and(|m| !m.muted))
    }

    /// Mark read up to a message. Receipts only move forward; a private read still ends recall.
    pub fn read(&self, ctx: &Ctx, actor: &Actor, message: &str) -> Result<Outcome, Refusal> {
        let reader = actor.user.as_str();
        let idx = self.find_for(reader, message)?;
        // A read aimed at a recalled message lost the race with the recall: exactly one
        // of the two succeeds.
        if self.messages[idx].removal == Removal::Recalled {
            return Err(Refusal::NotFound("message"));
        }
        let seq = self.messages[idx].seq;
        let member = self.member(reader)?;
        if seq <= member.read_seq {
            return Ok(Outcome::ok());
        }
        let from = member.read_seq;
        let pos = self.pos + 1;
        let cleared: Vec<u64> = member.notified.range(..=seq).copied().collect();

        let mut out = Outcome::ok();
        out.changes.push(Change::ReadUpTo {
            conversation: self.id.clone(),
            user: reader.to_owned(),
            seq,
        });
        let shares = ctx.directory.settings(reader).read_receipts == ReadReceipts::On;
        let to = self
            .participants
            .iter()
            .filter_map(|p| {
                if p == reader {
                    Some(Target::others_of(actor))
                } else if shares && !ctx.directory.blocked_either(reader, p) {
                    Some(Target::all(p))
                } else {
                    None
                }
            })
            .collect();
        out.emit(
            to,
            ServerFrame::Read {
                conversation: self.id.clone(),
                user: reader.to_owned(),
                message: message.to_owned(),
                seq,
                pos,
            },
        );
        // Recall was still on offer for these until this read: their senders learn it
        // is gone. One read by any recipient ends it, so only the first read tells.
        for m in self.messages_between(from, seq) {
            if m.sender != reader
                && m.kind == MessageKind::Message
                && m.removal == Removal::None
                && window_open(m.sent_at, ctx.limits.recall_window_ms, ctx.now)
                && !self.read_by_recipient(m)
            {
                out.emit(
                    vec![Target::all(&m.sender)],
                    ServerFrame::RecallClosed {
                        conversation: self.id.clone(),
                        message: m.id.clone(),
                        reason: RecallClosedReason::Read,
                    },
                );
            }
        }
        let ids = self.ids_of(&cleared);
        if !ids.is_empty() {
            out.emit(
                vec![Target::all(reader)],
                ServerFrame::NotificationRetracted {
                    conversation: self.id.clone(),
                    messages: ids,
                    reason: RetractReason::Read,
                },
            );
        }
        Ok(out)
    }

    /// Messages with `from < seq <= to`, in order (messages are stored in seq order).
    fn messages_between(&self, from: u64, to: u64) -> &[Message] {
        let start = self.messages.partition_point(|m| m.seq <= from);
        let end = self.messages.partition_point(|m| m.seq <= to);
        &self.messages[start..end]
    }

    /// The index of the message at `seq`, found by halving (messages are in seq order).
    fn index_of(&self, seq: u64) -> Option<usize> {
        self.messages.binary_search_by_key(&seq, |m| m.seq).ok()
    }

    /// The message at `seq`, when held.
    fn at(&self, seq: u64) -> Option<&Message> {
        self.index_of(seq).map(|i| &self.messages[i])
    }

    fn ids_of(&self, seqs: &[u64]) -> Vec<MessageId> {
        seqs.iter()
            .filter_map(|s| self.at(*s))
            .map(|m| m.id.clone())
            .collect()
    }

    /// A message `me` sent, not removed, of `kind`: the common ground of recall and InMail
    /// delete, checked in the SPEC's order (exists, right kind, requester is the sender).
    fn own_live_message(
        &self,
        me: &str,
        message: &str,
        kind: MessageKind,
        wrong_kind: &'static str,
    ) -> Result<usize, Refusal> {
        let idx = self.find_for(me, message)?;
        let m = &self.messages[idx];
        if m.removal != Removal::None {
            return Err(Refusal::NotFound("message"));
        }
        if m.kind != kind {
            return Err(Refusal::WrongMessageKind(wrong_kind));
        }
        if m.sender != me {
            return Err(Refusal::NotSender);
        }
        Ok(idx)
    }

    /// Recalls by `sender` here within the recall period before `now`.
    fn recent_recalls(&self, sender: &str, now: Millis, period_ms: u64) -> usize {
        let since = now.saturating_sub(period_ms as i64);
        self.recalls
            .get(sender)
            .map_or(0, |t| t.iter().filter(|&&at| at > since).count())
    }

    /// Recall a message for everyone. `sent_recently` is how many messages the sender sent
    /// in the throttle window; the unread check and the removal are decided together, under
    /// the conversation's serialisation, so a racing read and recall have one winner.
    pub fn recall(
        &self,
        ctx: &Ctx,
        actor: &Actor,
        message: &str,
        sent_recently: u32,
    ) -> Result<Outcome, Refusal> {
        let me = actor.user.as_str();
        let wrong = "an InMail is deleted with delete_inmail, not recalled";
        let idx = self.own_live_message(me, message, MessageKind::Message, wrong)?;
        let m = &self.messages[idx];
        let l = ctx.limits;
        if !window_open(m.sent_at, l.recall_window_ms, ctx.now) {
            return Err(Refusal::RecallWindowClosed);
        }
        if self.read_by_recipient(m) {
            return Err(Refusal::AlreadyRead);
        }
        if self.recent_recalls(me, ctx.now, l.recall_period_ms)
            >= l.recall_per_conversation as usize
        {
            return Err(Refusal::RecallLimitReached);
        }
        if l.recall_throttle_window_ms > 0 && sent_recently > l.recall_throttle_messages {
            return Err(Refusal::RecallThrottled);
        }

        let mut out = Outcome::ok();
        out.changes.push(Change::Recalled {
            conversation: self.id.clone(),
            message: m.id.clone(),
            at: ctx.now,
        });
        out.emit(
            self.everyone(Some(actor)),
            ServerFrame::Recalled {
                conversation: self.id.clone(),
                message: m.id.clone(),
                mode: RemovalMode::Marker,
                pos: self.pos + 1,
            },
        );
        self.retract(&mut out, m, RetractReason::Recalled, |_| true);
        Ok(out)
    }

    /// Participants `applies` selects who hold a notification of message `seq`.
    fn notified_of<'a>(
        &'a self,
        seq: u64,
        applies: impl Fn(&str) -> bool + 'a,
    ) -> impl Iterator<Item = &'a UserId> + 'a {
        self.participants.iter().filter(move |u| {
            applies(u)
                && self
                    .members
                    .get(*u)
                    .is_some_and(|m| m.notified.contains(&seq))
        })
    }

    /// Drop the notifications of message `seq` for users `applies` selects.
    fn clear_notifications(&mut self, seq: u64, applies: impl Fn(&str) -> bool) {
        for (user, member) in self.members.iter_mut() {
            if applies(user) && member.notified.remove(&seq) {
                member.pending.remove(&seq);
            }
        }
    }

    /// Retract the notifications of `m` from those `applies` selects.
    fn retract(
        &self,
        out: &mut Outcome,
        m: &Message,
        reason: RetractReason,
        applies: impl Fn(&str) -> bool,
    ) {
        let to = self
            .notified_of(m.seq, applies)
            .map(|u| Target::all(u))
            .collect();
        out.emit(
            to,
            ServerFrame::NotificationRetracted {
                conversation: self.id.clone(),
                messages: vec![m.id.clone()],
                reason,
            },
        );
    }

    /// Delete an InMail for its sender and primary recipient, read or not; copies stay.
    pub fn delete_inmail(
        &self,
        ctx: &Ctx,
        actor: &Actor,
        message: &str,
    ) -> Result<Outcome, Refusal> {
        let me = actor.user.as_str();
        let wrong = "only an InMail can be deleted for everyone; recall a message instead";
        let idx = self.own_live_message(me, message, MessageKind::Inmail, wrong)?;
        let m = &self.messages[idx];
        if !window_open(m.sent_at, ctx.limits.inmail_delete_window_ms, ctx.now) {
            return Err(Refusal::InmailDeleteWindowClosed);
        }
        let mut out = Outcome::ok();
        out.changes.push(Change::InmailDeleted {
            conversation: self.id.clone(),
            message: m.id.clone(),
            purge: m.cc.is_empty(),
        });
        let mut to = vec![Target::others_of(actor)];
        to.extend(m.to.as_deref().map(Target::all));
        out.emit(
            to,
            ServerFrame::Recalled {
                conversation: self.id.clone(),
                message: m.id.clone(),
                mode: RemovalMode::Silent,
                pos: self.pos + 1,
            },
        );
        let primary = m.to.as_deref().unwrap_or_default();
        self.retract(&mut out, m, RetractReason::Deleted, |u| u == primary);
        Ok(out)
    }

    /// Delete a message from the requester's own view; nobody else is told.
    pub fn delete_for_me(&self, actor: &Actor, message: &str) -> Result<Outcome, Refusal> {
        let me = actor.user.as_str();
        let idx = self.find_for(me, message)?;
        let mut out = Outcome::ok();
        if !self.members[me].deleted.contains(&self.messages[idx].seq) {
            out.changes.push(Change::DeletedForMe {
                conversation: self.id.clone(),
                user: me.to_owned(),
                message: message.to_owned(),
            });
            out.emit(
                vec![Target::others_of(actor)],
                ServerFrame::DeletedView {
                    conversation: self.id.clone(),
                    message: message.to_owned(),
                    pos: self.pos + 1,
                },
            );
        }
        Ok(out)
    }

    /// Set the requester's mute and/or hide flags.
    pub fn set_flags(
        &self,
        actor: &Actor,
        muted: Option<bool>,
        hidden: Option<bool>,
    ) -> Result<Outcome, Refusal> {
        let member = self.member(&actor.user)?;
        let muted = muted.unwrap_or(member.muted);
        let hidden = hidden.unwrap_or(member.hidden);
        let mut out = Outcome::ok();
        out.changes.push(Change::MemberFlags {
            conversation: self.id.clone(),
            user: actor.user.clone(),
            muted,
            hidden,
        });
        out.emit(
            vec![Target::others_of(actor)],
            ServerFrame::ConversationState {
                conversation: self.id.clone(),
                muted,
                hidden,
            },
        );
        Ok(out)
    }

    /// Tell the others the requester is typing (not across a block, either way: nobody
    /// wants to watch a user they blocked typing).
    pub fn typing(&self, ctx: &Ctx, actor: &Actor) -> Result<Outcome, Refusal> {
        self.member(&actor.user)?;
        let mut out = Outcome::ok();
        let to = self
            .participants
            .iter()
            .filter(|p| **p != actor.user && !ctx.directory.blocked_either(&actor.user, p))
            .map(|p| Target::all(p))
            .collect();
        out.emit(
            to,
            ServerFrame::Typing {
                conversation: self.id.clone(),
                user: actor.user.clone(),
            },
        );
        Ok(out)
    }

    /// The message as the requester sees it now, with content, for a report's evidence.
    pub fn snapshot(&self, ctx: &Ctx, viewer: &str, message: &str) -> Result<MessageView, Refusal> {
        let idx = self.find_for(viewer, message)?;
        let m = &self.messages[idx];
        Ok(self.render(m, MessageState::Visible, ctx.limits))
    }

    /// The recall windows that closed from `from` until now: tell each sender whose recall
    /// was still on offer that it is gone. Nothing is stored: whether recall is on offer
    /// follows from the window, the read positions and the removal, so a restart cannot
    /// get it wrong.
    pub fn recall_windows_closed(&self, ctx: &Ctx, from: Millis) -> Outcome {
        let window = ctx.limits.recall_window_ms;
        let first = self.first_closing_at_or_after(from, window);
        let closed = self.messages[first..]
            .iter()
            .take_while(|m| deadline(m.sent_at, window).is_some_and(|d| d <= ctx.now))
            .filter(|m| self.recall_on_offer(m))
            .map(|m| (m.id.as_str(), m.sender.as_str()));
        recall_expired(&self.id, closed)
    }

    /// When the next recall window still on offer closes, after now.
    pub fn next_recall_window(&self, ctx: &Ctx) -> Option<Millis> {
        let window = ctx.limits.recall_window_ms;
        let first = self.first_closing_at_or_after(ctx.now.saturating_add(1), window);
        self.messages[first..]
            .iter()
            .find(|m| self.recall_on_offer(m))
            .and_then(|m| deadline(m.sent_at, window))
    }

    /// The first message whose recall window closes at `at` or later. Messages are held
    /// in the order they were sent, so send times rise and a binary search finds it.
    fn first_closing_at_or_after(&self, at: Millis, window: u64) -> usize {
        self.messages
            .partition_point(|m| deadline(m.sent_at, window).is_none_or(|d| d < at))
    }

    /// Whether the sender of `m` may still recall it, its window aside: a message (an
    /// InMail has no recall), neither recalled nor deleted, read by nobody else.
    fn recall_on_offer(&self, m: &Message) -> bool {
        recall_on_offer(
            m.kind,
            m.removal == Removal::None,
            self.read_by_recipient(m),
        )
    }

    /// A page of history as `viewer` should see it, oldest first.
    pub fn history(
        &self,
        ctx: &Ctx,
        viewer: &str,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> Result<AckResult, Refusal> {
        let member = self.member(viewer)?;
        let limit = limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE) as usize;
        let mut page: Vec<MessageView> = self
            .messages
            .iter()
            .rev()
            .filter(|m| before.is_none_or(|b| m.seq < b))
            .filter_map(|m| view_state(m, member, viewer).map(|s| self.render(m, s, ctx.limits)))
            .take(limit + 1)
            .collect();
        // Held in part, a short page may go on before the floor.
        if page.len() <= limit && self.partial() {
            return Err(Refusal::NotHeld);
        }
        let more = page.len() > limit;
        page.truncate(limit);
        page.reverse();
        Ok(AckResult::History {
            conversation: self.view(),
            messages: page,
            receipts: self.receipts(ctx, viewer),
            more,
        })
    }

    /// Other participants' read positions that `viewer` may see.
    fn receipts(&self, ctx: &Ctx, viewer: &str) -> Vec<Receipt> {
        let mut out: Vec<Receipt> = self
            .members
            .iter()
            .filter(|(u, m)| {
                *u != viewer
                    && m.read_seq > 0
                    && ctx.directory.settings(u).read_receipts == ReadReceipts::On
                    && !ctx.directory.blocked_either(u, viewer)
            })
            .filter_map(|(u, m)| {
                let upto = self.messages.partition_point(|x| x.seq <= m.read_seq);
                let held = upto.checked_sub(1).map(|i| &self.messages[i]);
                let message = held.map(|x| &x.id).or(m.read_message.as_ref())?;
                Some(Receipt {
                    user: u.clone(),
                    message: message.clone(),
                    seq: m.read_seq,
                })
            })
            .collect();
        out.sort_by(|a, b| a.user.cmp(&b.user));
        out
    }

    /// The inbox row for `viewer`, or `None` when hidden or when an InMail delete left
    /// nothing in it for `viewer`.
    pub fn inbox_entry(&self, ctx: &Ctx, viewer: &str) -> Result<Option<InboxEntry>, Refusal> {
        let Some(member) = self.members.get(viewer) else {
            return Ok(None);
        };
        if member.hidden {
            return Ok(None);
        }
        let last_message = self
            .messages
            .iter()
            .rev()
            .find_map(|m| view_state(m, member, viewer).map(|s| self.render(m, s, ctx.limits)));
        if last_message.is_none() && self.partial() {
            return Err(Refusal::NotHeld);
        }
        // An InMail deleted by its sender leaves no trace for sender and primary recipient:
        // when nothing else was said in its conversation, the conversation goes too.
        if self.kind == ConversationKind::Inmail && last_message.is_none() {
            return Ok(None);
        }
        let held = self
            .messages
            .iter()
            .filter(|m| m.seq > member.read_seq && m.sender != viewer)
            .filter(|m| view_state(m, member, viewer) == Some(MessageState::Visible))
            .count() as u32;
        Ok(Some(InboxEntry {
            conversation: self.view(),
            last_message,
            unread: (held + member.unread_before).min(UNREAD_CAP),
            muted: member.muted,
            hidden: false,
        }))
    }

    /// Keep only each participant's `n` latest outstanding notifications: what a
    /// conversation read back (at start, or on demand) keeps of those it cannot tell were
    /// seen, so a long unread history does not become thousands of them.
    pub fn keep_latest_notifications(&mut self, n: usize) {
        for member in self.members.values_mut() {
            for set in [&mut member.notified, &mut member.pending] {
                while set.len() > n {
                    set.pop_first();
                }
            }
        }
    }

    /// Collect `viewer`'s pending notifications here: those produced while it had no live
    /// session and still valid (not read, recalled or deleted). Collected ones are gone.
    pub fn take_pending(&mut self, ctx: &Ctx, viewer: &str) -> Vec<NotificationView> {
        let Some(member) = self.members.get_mut(viewer) else {
            return Vec::new();
        };
        let pending = std::mem::take(&mut member.pending);
        let member = &self.members[viewer];
        let preview = ctx.directory.settings(viewer).notification_preview;
        pending
            .iter()
            .filter_map(|seq| self.at(*seq))
            .filter(|m| view_state(m, member, viewer) == Some(MessageState::Visible))
            .map(|m| notification(&self.render(m, MessageState::Visible, ctx.limits), preview))
            .collect()
    }
}

/// Applying committed changes: the only code that mutates a conversation, used alike by
/// live requests, start-up and cluster replicas, so they cannot drift apart.
impl Conversation {
    /// Apply one committed change. `online` says who has a live session (anyone else gets
    /// a new message's notification kept pending); `limits` bound what is remembered for
    /// the recall allowance.
    pub fn apply(&mut self, change: &Change, limits: &Limits, online: &Online) {
        let find = |id: &str| self.by_id.get(id).copied();
        match change {
            Change::MessageStored {
                message: v,
                client_id,
                ..
            } => {
                let message = Message {
                    id: v.id.clone(),
                    seq: v.seq,
                    sender: v.sender.clone(),
                    sent_at: v.sent_at,
                    kind: v.kind,
                    body: v.body.clone(),
                    reply_to: v.reply_to.clone(),
                    to: v.to.clone(),
                    cc: v.cc.clone(),
                    removal: Removal::None,
                };
                self.insert_message(message, client_id, online);
            }
            Change::ReadUpTo { user, seq, .. } => {
                if let Some(idx) = self.index_of(*seq) {
                    self.apply_read(user, idx);
                }
            }
            Change::Recalled { message, at, .. } => {
                if let Some(idx) = find(message) {
                    self.apply_recall(idx, *at, limits.recall_period_ms);
                }
            }
            Change::InmailDeleted { message, purge, .. } => {
                if let Some(idx) = find(message) {
                    self.apply_inmail_delete(idx, *purge);
                }
            }
            Change::DeletedForMe { user, message, .. } => {
                if let Some(idx) = find(message) {
                    self.apply_delete_for_me(user, idx);
                }
            }
            Change::MemberFlags {
                user,
                muted,
                hidden,
                ..
            } => {
                if let Some(member) = self.members.get_mut(user) {
                    member.muted = *muted;
                    member.hidden = *hidden;
                }
            }
            _ => {}
        }
    }

    fn record(&mut self, event: Event) -> u64 {
        self.pos += 1;
        self.events.push((self.pos, event));
        self.pos
    }

    /// Store a message: it unhides the conversation for everyone and notifies every
    /// unmuted recipient (pending for those with no live session).
    fn insert_message(&mut self, message: Message, client_id: &str, online: &Online) {
        let idx = self.messages.len();
        let (seq, at) = (message.seq, message.sent_at);
        self.by_id.insert(message.id.clone(), idx);
        // A message read back after its request id was forgotten (a day on) has none: it
        // must not answer a later request whose id happens to be empty.
        self.requests.remember(&message.sender, client_id, seq, at);
        for (user, member) in self.members.iter_mut() {
            member.hidden = false;
            if *user != message.sender && !member.muted {
                member.notified.insert(seq);
                if !online.contains(user) {
                    member.pending.insert(seq);
                }
            }
        }
        self.messages.push(message);
        self.last_activity = self.last_activity.max(at);
        self.pos = seq - 1;
        self.record(Event::Message(idx));
        // Only an explicit `read` moves a read position: sending (a reply, say) does not
        // count as reading, so it cannot take a recall away from anyone.
    }

    /// Move `reader`'s read position to message `idx` (never backwards), clearing the
    /// notifications it covers.
    fn apply_read(&mut self, reader: &str, idx: usize) {
        let seq = self.messages[idx].seq;
        let Some(member) = self.members.get_mut(reader) else {
            return;
        };
        if seq <= member.read_seq {
            return;
        }
        member.read_seq = seq;
        member.read_message = None;
        member.unread_before = 0;
        let cleared: Vec<u64> = member.notified.range(..=seq).copied().collect();
        for s in &cleared {
            member.notified.remove(s);
            member.pending.remove(s);
        }
        self.record(Event::Read {
            user: reader.to_owned(),
            idx,
        });
    }

    fn apply_recall(&mut self, idx: usize, at: Millis, period_ms: u64) {
        let m = &mut self.messages[idx];
        m.removal = Removal::Recalled;
        m.body = None;
        let (seq, sender) = (m.seq, m.sender.clone());
        // Only recalls inside the period count towards the allowance.
        let since = at.saturating_sub(period_ms as i64);
        let times = self.recalls.entry(sender).or_default();
        times.retain(|&t| t > since);
        times.push_back(at);
        self.clear_notifications(seq, |_| true);
        self.record(Event::Recalled(idx));
    }

    fn apply_inmail_delete(&mut self, idx: usize, purge: bool) {
        let m = &mut self.messages[idx];
        m.removal = Removal::InmailDeleted;
        if purge {
            m.body = None;
        }
        let (seq, primary) = (m.seq, m.to.clone());
        self.clear_notifications(seq, |u| Some(u) == primary.as_deref());
        self.record(Event::InmailDeleted(idx));
    }

    fn apply_delete_for_me(&mut self, user: &str, idx: usize) {
        let seq = self.messages[idx].seq;
        let Some(member) = self.members.get_mut(user) else {
            return;
        };
        if !member.deleted.insert(seq) {
            return;
        }
        member.notified.remove(&seq);
        member.pending.remove(&seq);
        self.record(Event::DeletedForMe {
            user: user.to_owned(),
            idx,
        });
    }

    /// Every change after position `since` as `viewer` should see it now, at most `limit`
    /// of them; `None` when nothing changed or the conversation is hidden from `viewer`.
    pub fn updates_since(
        &self,
        ctx: &Ctx,
        viewer: &str,
        since: u64,
        limit: usize,
    ) -> Result<Option<ConversationUpdate>, Refusal> {
        let Some(member) = self.members.get(viewer) else {
            return Ok(None);
        };
        if member.hidden || since >= self.pos {
            return Ok(None);
        }
        // Held in part, the changes between `since` and the floor are not at hand.
        if self.partial() && since + 1 < self.floor {
            return Err(Refusal::NotHeld);
        }
        let start = self.events.partition_point(|(pos, _)| *pos <= since);
        let page = &self.events[start..];
        let more = page.len() > limit;
        let page = &page[..page.len().min(limit)];
        let conversation = self.id.clone();
        let frames = page
            .iter()
            .filter_map(|(pos, event)| {
                let pos = *pos;
                match event {
                    Event::Message(idx) => {
                        let m = &self.messages[*idx];
                        let state = view_state(m, member, viewer)?;
                        Some(ServerFrame::Message {
                            message: self.render(m, state, ctx.limits),
                        })
                    }
                    Event::Read { user, idx } => {
                        let shares = ctx.directory.settings(user).read_receipts == ReadReceipts::On
                            && !ctx.directory.blocked_either(user, viewer);
                        let m = &self.messages[*idx];
                        (user == viewer || shares).then(|| ServerFrame::Read {
                            conversation: conversation.clone(),
                            user: user.clone(),
                            message: m.id.clone(),
                            seq: m.seq,
                            pos,
                        })
                    }
                    Event::Recalled(idx) => Some(ServerFrame::Recalled {
                        conversation: conversation.clone(),
                        message: self.messages[*idx].id.clone(),
                        mode: RemovalMode::Marker,
                        pos,
                    }),
                    Event::InmailDeleted(idx) => {
                        let m = &self.messages[*idx];
                        (m.sender == viewer || m.to.as_deref() == Some(viewer)).then(|| {
                            ServerFrame::Recalled {
                                conversation: conversation.clone(),
                                message: m.id.clone(),
                                mode: RemovalMode::Silent,
                                pos,
                            }
                        })
                    }
                    Event::DeletedForMe { user, idx } => {
                        (user == viewer).then(|| ServerFrame::DeletedView {
                            conversation: conversation.clone(),
                            message: self.messages[*idx].id.clone(),
                            pos,
                        })
                    }
                }
            })
            .collect();
        Ok(Some(ConversationUpdate {
            conversation: self.view(),
            frames,
            pos: page.last().map_or(since, |(pos, _)| *pos),
            more,
        }))
    }
}

/// A notification for `message` shaped by the recipient's preview setting.
fn notification(message: &MessageView, preview: NotificationPreview) -> NotificationView {
    NotificationView {
        conversation: message.conversation.clone(),
        message: message.id.clone(),
        sender: (preview != NotificationPreview::Off).then(|| message.sender.clone()),
        preview: (preview == NotificationPreview::Full)
            .then(|| message.body.clone())
            .flatten(),
        sent_at: message.sent_at,
    }
}

/// When recall (a message) or InMail delete (an InMail) stops being on offer.
fn deadlines(
    kind: MessageKind,
    sent_at: Millis,
    limits: &Limits,
) -> (Option<Millis>, Option<Millis>) {
    match kind {
        MessageKind::Message => (deadline(sent_at, limits.recall_window_ms), None),
        _ => (None, deadline(sent_at, limits.inmail_delete_window_ms)),
    }
}
