//! Wire types of the parley protocol: every frame a client sends and every frame the
//! server pushes, as JSON text frames tagged by `type`.
//!
//! The normative description lives in `protocol/README.md`; the JSON Schemas in
//! `protocol/schema/` are generated from these types. [`view`] reads server frames
//! without copying, for clients that need only a few of their fields.

#[cfg(feature = "token")]
pub mod token;
pub mod view;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Version announced in `hello`; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// A user's stable handle.
pub type UserId = String;
/// A conversation's server-made id.
pub type ConversationId = String;
/// A message's server-made id.
pub type MessageId = String;
/// Milliseconds since the Unix epoch on the server's clock.
pub type Millis = i64;

/// A `history` page size. Zero or a negative number is refused with a message that says
/// what a page may hold, not a parser's remark about unsigned integers.
fn page_limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::de::Error;
    const RANGE: &str = "`limit` must be a whole number of at least 1 (a page holds at most 100)";
    match Option::<i64>::deserialize(d).map_err(|_| D::Error::custom(RANGE))? {
        None => Ok(None),
        Some(n) if n < 1 => Err(D::Error::custom(RANGE)),
        Some(n) => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
    }
}

/// A client request: a client-chosen `id` plus one operation tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Request {
    /// Client-chosen request id, echoed in the one `ack` or `error` that answers it.
    pub id: String,
    /// The operation.
    #[serde(flatten)]
    pub op: Op,
}

/// Every operation a client may request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// Send a message into a conversation, or a direct message to a connected user.
    Send {
        /// Existing conversation to send into.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conversation: Option<ConversationId>,
        /// Connected user to send a direct message to (opens the direct conversation).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<UserId>,
        /// Message text.
        body: String,
        /// Parent message this one replies to (same conversation).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<MessageId>,
    },
    /// Send an InMail to someone you need not be connected to; opens a new InMail conversation.
    Inmail {
        /// Primary recipient.
        to: UserId,
        /// Copied recipients.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        cc: Vec<UserId>,
        /// Message text.
        body: String,
    },
    /// Create a group conversation of three or more participants (creator included).
    CreateGroup {
        /// The other members.
        members: Vec<UserId>,
        /// Optional title.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
    },
    /// Mark a conversation read up to (and including) a message.
    Read {
        /// Conversation.
        conversation: ConversationId,
        /// Last message read.
        message: MessageId,
    },
    /// Recall (unsend for everyone) a direct or group message.
    Recall {
        /// Conversation.
        conversation: ConversationId,
        /// Message to recall.
        message: MessageId,
    },
    /// Delete an InMail for everyone (sender and primary recipient) within its window.
    DeleteInmail {
        /// Conversation.
        conversation: ConversationId,
        /// The InMail message.
        message: MessageId,
    },
    /// Delete a message from your own view only.
    DeleteForMe {
        /// Conversation.
        conversation: ConversationId,
        /// Message to hide behind a tombstone.
        message: MessageId,
    },
    /// Send a connection request.
    Connect {
        /// User to connect to.
        user: UserId,
    },
    /// Accept a pending connection request.
    Accept {
        /// User whose request is accepted.
        user: UserId,
    },
    /// Decline a pending connection request (the requester is not told).
    Decline {
        /// User whose request is declined.
        user: UserId,
    },
    /// Remove an existing connection (or withdraw your pending request).
    Disconnect {
        /// User to disconnect from.
        user: UserId,
    },
    /// Block a user.
    Block {
        /// User to block.
        user: UserId,
    },
    /// Unblock a user (restores messaging, not the connection).
    Unblock {
        /// User to unblock.
        user: UserId,
    },
    /// Report a message or a user.
    Report {
        /// What is reported.
        target: ReportTarget,
        /// Free-text reason.
        reason: String,
    },
    /// List every report (admins only).
    ListReports {},
    /// Mute or unmute a conversation (no notifications while muted).
    Mute {
        /// Conversation.
        conversation: ConversationId,
        /// New state.
        muted: bool,
    },
    /// Hide or unhide a conversation from your inbox (a new message unhides it).
    Hide {
        /// Conversation.
        conversation: ConversationId,
        /// New state.
        hidden: bool,
    },
    /// Change some of your settings; absent fields keep their value.
    Settings {
        /// Who may send you InMail.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        who_can_message: Option<WhoCanMessage>,
        /// Whether others get your read receipts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        read_receipts: Option<ReadReceipts>,
        /// What your notifications show.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notification_preview: Option<NotificationPreview>,
    },
    /// Tell the other participants you are typing.
    Typing {
        /// Conversation.
        conversation: ConversationId,
    },
    /// Look a user up.
    Lookup {
        /// User to look up.
        user: UserId,
    },
    /// Get your inbox, relationships, settings and pending notifications; with `positions`,
    /// also every change since those positions, as you should see it now.
    Sync {
        /// Last position seen per conversation (from `seq`/`pos` of live frames or a previous sync).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        positions: Option<std::collections::BTreeMap<ConversationId, u64>>,
    },
    /// Page backwards through a conversation's history as you should see it.
    History {
        /// Conversation.
        conversation: ConversationId,
        /// Only messages with a `seq` below this one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        /// Page size, from 1 (default and maximum 100; more reads as 100).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "page_limit"
        )]
        #[schemars(range(min = 1))]
        limit: Option<u32>,
    },
}

/// The subject of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ReportTarget {
    /// A message in a conversation you take part in.
    Message {
        /// Conversation.
        conversation: ConversationId,
        /// Message.
        message: MessageId,
    },
    /// A user.
    User {
        /// User.
        user: UserId,
    },
}

/// Every frame the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame of every session: who you are and every limit in force.
    Hello {
        /// Protocol version.
        protocol: u32,
        /// The authenticated user.
        user: UserId,
        /// This session's id.
        session: String,
        /// The server's clock when the session opened.
        server_time: Millis,
        /// Every limit in force.
        limits: Limits,
        /// Your settings.
        settings: Settings,
    },
    /// Success answer to the request with this `id`.
    Ack {
        /// The request's id.
        id: String,
        /// What the request produced.
        result: AckResult,
    },
    /// Failure answer to the request with this `id` (absent when no id could be read).
    Error {
        /// The request's id, when it could be read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Stable machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
    /// A new message in one of your conversations.
    Message {
        /// The message.
        message: MessageView,
    },
    /// A participant read the conversation up to a message.
    Read {
        /// Conversation.
        conversation: ConversationId,
        /// Reader.
        user: UserId,
        /// Last message read.
        message: MessageId,
        /// That message's seq.
        seq: u64,
        /// The conversation's position after this change.
        pos: u64,
    },
    /// A message was removed for everyone (recall) or silently (InMail delete).
    Recalled {
        /// Conversation.
        conversation: ConversationId,
        /// Removed message.
        message: MessageId,
        /// `marker`: a recall, a marker stays in history; `silent`: an InMail delete, nothing stays.
        mode: RemovalMode,
        /// The conversation's position after this change.
        pos: u64,
    },
    /// You deleted a message from your own view; show its tombstone.
    #[serde(rename = "deleted-view")]
    DeletedView {
        /// Conversation.
        conversation: ConversationId,
        /// Message now shown as a tombstone.
        message: MessageId,
        /// The conversation's position after this change.
        pos: u64,
    },
    /// Recall is no longer offered for one of your messages.
    RecallClosed {
        /// Conversation.
        conversation: ConversationId,
        /// Message.
        message: MessageId,
        /// Why.
        reason: RecallClosedReason,
    },
    /// You blocked a user.
    Blocked {
        /// The blocked user.
        user: UserId,
    },
    /// You unblocked a user.
    Unblocked {
        /// The unblocked user.
        user: UserId,
    },
    /// Someone asked to connect with you.
    ConnectionRequest {
        /// Requester.
        from: UserId,
    },
    /// You are now connected with a user.
    Connected {
        /// The other user.
        user: UserId,
    },
    /// You are no longer connected with a user (or a pending request was withdrawn).
    Disconnected {
        /// The other user.
        user: UserId,
    },
    /// A conversation you take part in was created.
    Conversation {
        /// The conversation.
        conversation: ConversationView,
    },
    /// Your mute or hide state of a conversation changed (from another of your sessions).
    ConversationState {
        /// Conversation.
        conversation: ConversationId,
        /// Muted.
        muted: bool,
        /// Hidden.
        hidden: bool,
    },
    /// Your settings changed (from another of your sessions).
    Settings {
        /// New settings.
        settings: Settings,
    },
    /// A notification for a new message.
    Notification {
        /// The notification.
        notification: NotificationView,
    },
    /// Notifications to drop: their messages were recalled, deleted or read.
    NotificationRetracted {
        /// Conversation.
        conversation: ConversationId,
        /// Messages whose notifications are withdrawn.
        messages: Vec<MessageId>,
        /// Why.
        reason: RetractReason,
    },
    /// A participant is typing.
    Typing {
        /// Conversation.
        conversation: ConversationId,
        /// Who is typing.
        user: UserId,
    },
}

impl Op {
    /// The operation's `type` as on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Send { .. } => "send",
            Op::Inmail { .. } => "inmail",
            Op::CreateGroup { .. } => "create_group",
            Op::Read { .. } => "read",
            Op::Recall { .. } => "recall",
            Op::DeleteInmail { .. } => "delete_inmail",
            Op::DeleteForMe { .. } => "delete_for_me",
            Op::Connect { .. } => "connect",
            Op::Accept { .. } => "accept",
            Op::Decline { .. } => "decline",
            Op::Disconnect { .. } => "disconnect",
            Op::Block { .. } => "block",
            Op::Unblock { .. } => "unblock",
            Op::Report { .. } => "report",
            Op::ListReports {} => "list_reports",
            Op::Mute { .. } => "mute",
            Op::Hide { .. } => "hide",
            Op::Settings { .. } => "settings",
            Op::Typing { .. } => "typing",
            Op::Lookup { .. } => "lookup",
            Op::Sync { .. } => "sync",
            Op::History { .. } => "history",
        }
    }
}

impl ServerFrame {
    /// The frame's `type` as on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerFrame::Hello { .. } => "hello",
            ServerFrame::Ack { .. } => "ack",
            ServerFrame::Error { .. } => "error",
            ServerFrame::Message { .. } => "message",
            ServerFrame::Read { .. } => "read",
            ServerFrame::Recalled { .. } => "recalled",
            ServerFrame::DeletedView { .. } => "deleted-view",
            ServerFrame::RecallClosed { .. } => "recall_closed",
            ServerFrame::Blocked { .. } => "blocked",
            ServerFrame::Unblocked { .. } => "unblocked",
            ServerFrame::ConnectionRequest { .. } => "connection_request",
            ServerFrame::Connected { .. } => "connected",
            ServerFrame::Disconnected { .. } => "disconnected",
            ServerFrame::Conversation { .. } => "conversation",
            ServerFrame::ConversationState { .. } => "conversation_state",
            ServerFrame::Settings { .. } => "settings",
            ServerFrame::Notification { .. } => "notification",
            ServerFrame::NotificationRetracted { .. } => "notification_retracted",
            ServerFrame::Typing { .. } => "typing",
        }
    }
}

/// What a successful request produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AckResult {
    /// The request took effect; nothing more to say.
    Ok {},
    /// A message was stored (or had already been stored under this request id).
    Sent {
        /// The stored message, with its server id, seq and deadlines.
        message: MessageView,
    },
    /// A conversation was created or found.
    Conversation {
        /// The conversation.
        conversation: ConversationView,
    },
    /// State of your connection with a user.
    Connection {
        /// The other user.
        user: UserId,
        /// The state now.
        state: ConnectionState,
    },
    /// Your settings now.
    Settings {
        /// Settings.
        settings: Settings,
    },
    /// A report was filed.
    Reported {
        /// Report id.
        report: String,
    },
    /// Every report (admins only).
    Reports {
        /// Reports, oldest first.
        reports: Vec<ReportView>,
    },
    /// A user's public profile as you may see it.
    Profile {
        /// The user.
        user: UserId,
        /// Your connection state with the user.
        connection: ConnectionState,
        /// Whether you may send this user an InMail.
        inmail_allowed: bool,
    },
    /// Your inbox and relationships.
    Sync {
        /// Conversations not hidden, newest activity first.
        inbox: Vec<InboxEntry>,
        /// Notifications produced while you had no live session, still valid.
        notifications: Vec<NotificationView>,
        /// Users you are connected with.
        connections: Vec<UserId>,
        /// Users asking to connect with you.
        incoming_requests: Vec<UserId>,
        /// Users you asked to connect with.
        outgoing_requests: Vec<UserId>,
        /// Users you blocked.
        blocked: Vec<UserId>,
        /// Your settings.
        settings: Settings,
        /// With `positions`: what changed in each conversation since, oldest first.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        updates: Vec<ConversationUpdate>,
    },
    /// A page of history.
    History {
        /// Conversation.
        conversation: ConversationView,
        /// Messages in seq order (oldest first).
        messages: Vec<MessageView>,
        /// Where each other participant has read to (only those who share receipts with you).
        receipts: Vec<Receipt>,
        /// Whether older messages exist.
        more: bool,
    },
}

/// A message as one user sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MessageView {
    /// Server-made id.
    pub id: MessageId,
    /// Conversation.
    pub conversation: ConversationId,
    /// The message's position in its conversation (messages and state changes share one counter).
    pub seq: u64,
    /// Sender.
    pub sender: UserId,
    /// Server send time.
    pub sent_at: Millis,
    /// `message` or `inmail`.
    pub kind: MessageKind,
    /// `visible`, `recalled` (marker, no content) or `deleted` (your tombstone, no content).
    pub state: MessageState,
    /// Text; absent for markers and tombstones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Parent message id for replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
    /// InMail primary recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<UserId>,
    /// InMail copied recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<UserId>,
    /// When the recall window closes (messages only; absent when recall is disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall_until: Option<Millis>,
    /// When the InMail delete window closes (InMail only; absent when disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_until: Option<Millis>,
}

/// Kind of message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// A direct or group message (recallable).
    Message,
    /// An InMail (deletable for everyone within its window).
    Inmail,
}

/// How a message appears to the viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    /// Normal, with content.
    Visible,
    /// Recalled by its sender: a marker with id, sender and time, no content.
    Recalled,
    /// Deleted by you from your view: a tombstone with id, sender and time, no content.
    Deleted,
}

/// How a `recalled` frame removes a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RemovalMode {
    /// A recall: replace the message by a marker.
    Marker,
    /// An InMail delete: remove it with no trace.
    Silent,
}

/// Why recall is no longer offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecallClosedReason {
    /// The recall window ran out.
    Expired,
    /// A recipient read the message.
    Read,
}

/// Why notifications are withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetractReason {
    /// The sender recalled the message.
    Recalled,
    /// The sender deleted the InMail.
    Deleted,
    /// You read the conversation.
    Read,
}

/// A conversation's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConversationView {
    /// Server-made id.
    pub id: ConversationId,
    /// `direct`, `group` or `inmail`.
    pub kind: ConversationKind,
    /// Every participant, creator first.
    pub participants: Vec<UserId>,
    /// Group title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// Kind of conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    /// Two connected users.
    Direct,
    /// Three or more participants.
    Group,
    /// Started by an InMail.
    Inmail,
}

/// One row of the inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InboxEntry {
    /// The conversation.
    pub conversation: ConversationView,
    /// The last message you can see (markers and tombstones included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<MessageView>,
    /// Messages from others after your read position that you can still see, at most
    /// 1,000 (1,000 means 1,000 or more).
    pub unread: u32,
    /// Muted by you.
    pub muted: bool,
    /// Hidden by you (always false in the inbox, which leaves hidden conversations out).
    pub hidden: bool,
}

/// What changed in one conversation since a position, rendered as the live frames you
/// would have received, with content as it stands now (recalled messages as markers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConversationUpdate {
    /// The conversation.
    pub conversation: ConversationView,
    /// `message`, `read`, `recalled` and `deleted-view` frames, in conversation order.
    pub frames: Vec<ServerFrame>,
    /// The position these frames bring you to; send it back in the next sync.
    pub pos: u64,
    /// Whether more changes follow: sync again from `pos`.
    pub more: bool,
}

/// A participant's read position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Receipt {
    /// Reader.
    pub user: UserId,
    /// Last message read.
    pub message: MessageId,
    /// Its seq.
    pub seq: u64,
}

/// A notification for a new message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NotificationView {
    /// Conversation.
    pub conversation: ConversationId,
    /// Message.
    pub message: MessageId,
    /// Sender (absent when your preview setting is `off`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<UserId>,
    /// Message text (present only when your preview setting is `full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
    /// Server send time.
    pub sent_at: Millis,
}

/// A filed report, with the content as it was when reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReportView {
    /// Report id.
    pub id: String,
    /// Who reported.
    pub reporter: UserId,
    /// What was reported.
    pub target: ReportTarget,
    /// Reason given.
    pub reason: String,
    /// When.
    pub at: Millis,
    /// Snapshot of the reported message, taken when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<MessageView>,
}

/// A connection's state seen from one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Not connected, nothing pending.
    None,
    /// You asked; waiting for the other side.
    Requested,
    /// They asked; waiting for you.
    Incoming,
    /// Connected.
    Connected,
}

/// A user's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Settings {
    /// Who may send you InMail.
    pub who_can_message: WhoCanMessage,
    /// Whether others get your read receipts.
    pub read_receipts: ReadReceipts,
    /// What your notifications show.
    pub notification_preview: NotificationPreview,
}

/// Who may send a user InMail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhoCanMessage {
    /// Anyone.
    #[default]
    Everyone,
    /// Only connections (InMail refused).
    Connections,
}

/// Read-receipt sharing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadReceipts {
    /// Others get `read` frames from you.
    #[default]
    On,
    /// Others get none (your reads still end their recall chance).
    Off,
}

/// What a notification shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationPreview {
    /// Sender and text.
    #[default]
    Full,
    /// Sender only.
    SenderOnly,
    /// Neither.
    Off,
}

/// Every limit in force, announced in `hello`. A window of 0 disables its feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Limits {
    /// How long after sending a message may be recalled (0: recall disabled).
    pub recall_window_ms: u64,
    /// How long after sending an InMail may be deleted for everyone (0: disabled).
    pub inmail_delete_window_ms: u64,
    /// Recalls allowed per sender per conversation per recall period (0: recall disabled).
    pub recall_per_conversation: u32,
    /// The period the recall count covers (24 h by default).
    pub recall_period_ms: u64,
    /// A sender who sent more than this many messages in the throttle window cannot recall.
    pub recall_throttle_messages: u32,
    /// The throttle window (0: throttle disabled).
    pub recall_throttle_window_ms: u64,
    /// Longest message body, in characters.
    pub max_body_chars: u32,
    /// Largest frame the server accepts, in bytes.
    pub max_frame_bytes: u32,
    /// Live sessions one user may hold at once.
    pub max_sessions_per_user: u32,
    /// Sustained requests per second per user (token bucket refill rate).
    pub requests_per_second: u32,
    /// Requests a user may send in a burst above the sustained rate.
    pub request_burst: u32,
    /// How often the server pings an idle connection.
    pub ping_interval_ms: u64,
    /// A connection silent this long (not even a pong) is closed.
    pub idle_timeout_ms: u64,
}

/// Stable error codes. Each SPEC refusal has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON or misses or mistypes a field.
    BadRequest,
    /// The frame's `type` is not one the server knows.
    UnknownType,
    /// The token is missing, forged, signed with another secret or expired.
    Unauthorized,
    /// The action needs a role you lack (listing reports needs an admin token).
    Forbidden,
    /// No such conversation, message or user, or none you may see.
    NotFound,
    /// Only the sender may do this.
    NotSender,
    /// The operation does not apply to this kind of message (recall of an InMail, InMail delete of a message).
    WrongMessageKind,
    /// The recall window has closed (or recall is disabled).
    RecallWindowClosed,
    /// A recipient has read the message, so it can no longer be recalled.
    AlreadyRead,
    /// You already used your recalls in this conversation for the current period.
    RecallLimitReached,
    /// You sent too many messages recently to recall (anti-spam).
    RecallThrottled,
    /// The InMail delete window has closed (or InMail delete is disabled).
    InmailDeleteWindowClosed,
    /// The recipient accepts InMail from connections only.
    InmailNotAllowed,
    /// The recipient cannot receive this from you (includes blocks, either way, and unknown users).
    RecipientUnavailable,
    /// Direct messages and groups need a connection with each member.
    NotConnected,
    /// The message body is empty or longer than `max_body_chars`.
    BodyTooLong,
    /// You sent requests faster than `requests_per_second` allows; retry later.
    RateLimited,
    /// The server could not store the request (its storage failed or is full); nothing
    /// changed and nobody was told. Retry later with the same `id`.
    Unavailable,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::BadRequest,
        ErrorCode::UnknownType,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::NotSender,
        ErrorCode::WrongMessageKind,
        ErrorCode::RecallWindowClosed,
        ErrorCode::AlreadyRead,
        ErrorCode::RecallLimitReached,
        ErrorCode::RecallThrottled,
        ErrorCode::InmailDeleteWindowClosed,
        ErrorCode::InmailNotAllowed,
        ErrorCode::RecipientUnavailable,
        ErrorCode::NotConnected,
        ErrorCode::BodyTooLong,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NotSender => "not_sender",
            ErrorCode::WrongMessageKind => "wrong_message_kind",
            ErrorCode::RecallWindowClosed => "recall_window_closed",
            ErrorCode::AlreadyRead => "already_read",
            ErrorCode::RecallLimitReached => "recall_limit_reached",
            ErrorCode::RecallThrottled => "recall_throttled",
            ErrorCode::InmailDeleteWindowClosed => "inmail_delete_window_closed",
            ErrorCode::InmailNotAllowed => "inmail_not_allowed",
            ErrorCode::RecipientUnavailable => "recipient_unavailable",
            ErrorCode::NotConnected => "not_connected",
            ErrorCode::BodyTooLong => "body_too_long",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Close codes the server uses, with their meaning in parley.
pub mod close {
    /// Server shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Authentication failed, or a policy was broken (a slow consumer's queue overflowed,
    /// too many sessions, a request flood).
    pub const POLICY: u16 = 1008;
    /// The server failed (storage unavailable); reconnect and resync.
    pub const INTERNAL: u16 = 1011;
    /// Too many connections from one address; try again later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// A frame was larger than `max_frame_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// A text frame was not valid UTF-8.
    pub const INVALID_UTF8: u16 = 1007;
    /// A binary frame or another protocol violation.
    pub const PROTOCOL: u16 = 1002;
    /// Unsupported data (binary frames).
    pub const UNSUPPORTED: u16 = 1003;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_limit_below_one_is_refused_saying_what_a_page_holds() {
        let history = |limit: &str| {
            let text =
                format!(r#"{{"id":"h","type":"history","conversation":"c","limit":{limit}}}"#);
            serde_json::from_str::<Request>(&text)
        };
        for bad in ["0", "-5", "1.5", "\"ten\""] {
            let e = history(bad).unwrap_err().to_string();
            assert!(
                e.contains("`limit` must be a whole number of at least 1"),
                "{bad}: {e}"
            );
        }
        let limit = |r: Request| match r.op {
            Op::History { limit, .. } => limit,
            other => panic!("{other:?}"),
        };
        assert_eq!(limit(history("1000").unwrap()), Some(1000));
        assert_eq!(limit(history("null").unwrap()), None);
    }

    #[test]
    fn request_round_trips_with_flattened_op() {
        let text = r#"{"id":"r1","type":"send","to":"bob","body":"hi"}"#;
        let req: Request = serde_json::from_str(text).unwrap();
        assert_eq!(req.id, "r1");
        assert!(matches!(req.op, Op::Send { ref to, .. } if to.as_deref() == Some("bob")));
        let back = serde_json::to_value(&req).unwrap();
        assert_eq!(back["type"], "send");
    }

    #[test]
    fn deleted_view_keeps_its_hyphen() {
        let f = ServerFrame::DeletedView {
            conversation: "c".into(),
            message: "m".into(),
            pos: 3,
        };
        assert_eq!(serde_json::to_value(&f).unwrap()["type"], "deleted-view");
    }

    #[test]
    fn kinds_match_the_serde_tags() {
        let frame = ServerFrame::DeletedView {
            conversation: "c".into(),
            message: "m".into(),
            pos: 1,
        };
        assert_eq!(serde_json::to_value(&frame).unwrap()["type"], frame.kind());
        let op = Op::ListReports {};
        let req = Request { id: "r".into(), op };
        assert_eq!(serde_json::to_value(&req).unwrap()["type"], req.op.kind());
    }

    #[test]
    fn error_code_strings_match_serde() {
        for code in ErrorCode::ALL {
            let v = serde_json::to_value(code).unwrap();
            assert_eq!(v, code.as_str());
        }
    }
}
