//! Why the core refused a request: one variant per SPEC refusal, each with a stable wire code.

use parley_protocol::ErrorCode;

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request is malformed or inconsistent.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Nothing the requester may see exists under that name.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The action needs operator rights.
    #[error("this action needs an admin token")]
    Forbidden,
    /// Only the sender may do this.
    #[error("only the sender may do this")]
    NotSender,
    /// Recall of an InMail or InMail delete of a plain message.
    #[error("{0}")]
    WrongMessageKind(&'static str),
    /// Recall window closed or recall disabled.
    #[error("the recall window has closed")]
    RecallWindowClosed,
    /// A recipient read the message.
    #[error("a recipient has already read this message")]
    AlreadyRead,
    /// The per-conversation recall allowance is used up.
    #[error("recall limit for this conversation reached; try again later")]
    RecallLimitReached,
    /// The sender sent too much recently.
    #[error("you sent too many messages recently to recall")]
    RecallThrottled,
    /// InMail delete window closed or feature disabled.
    #[error("the InMail delete window has closed")]
    InmailDeleteWindowClosed,
    /// The recipient accepts InMail from connections only.
    #[error("{0} accepts messages from connections only")]
    InmailNotAllowed(String),
    /// Unknown user, or a block either way; deliberately neutral.
    #[error("recipient unavailable")]
    RecipientUnavailable,
    /// Direct messages and groups need connections.
    #[error("you are not connected with {0}")]
    NotConnected(String),
    /// Body too long.
    #[error("message body must be 1 to {0} characters")]
    BodyTooLong(u32),
    /// Body empty or only white space: nothing a recipient could read. It shares the
    /// empty body's code, which the protocol has always given it.
    #[error("message body is empty or only white space")]
    BlankBody,
    /// The rule needs part of the conversation that is not in memory: the hub reads the
    /// whole conversation back and asks again, so this never reaches a client.
    #[error("this needs more of the conversation than is held")]
    NotHeld,
}

impl Refusal {
    /// The stable code sent on the wire.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::BadRequest(_) => ErrorCode::BadRequest,
            Refusal::NotFound(_) => ErrorCode::NotFound,
            Refusal::Forbidden => ErrorCode::Forbidden,
            Refusal::NotSender => ErrorCode::NotSender,
            Refusal::WrongMessageKind(_) => ErrorCode::WrongMessageKind,
            Refusal::RecallWindowClosed => ErrorCode::RecallWindowClosed,
            Refusal::AlreadyRead => ErrorCode::AlreadyRead,
            Refusal::RecallLimitReached => ErrorCode::RecallLimitReached,
            Refusal::RecallThrottled => ErrorCode::RecallThrottled,
            Refusal::InmailDeleteWindowClosed => ErrorCode::InmailDeleteWindowClosed,
            Refusal::InmailNotAllowed(_) => ErrorCode::InmailNotAllowed,
            Refusal::RecipientUnavailable => ErrorCode::RecipientUnavailable,
            Refusal::NotConnected(_) => ErrorCode::NotConnected,
            Refusal::BodyTooLong(_) | Refusal::BlankBody => ErrorCode::BodyTooLong,
            Refusal::NotHeld => ErrorCode::Unavailable,
        }
    }
}
