//! A borrowed, zero-copy reading of server frames, for clients that must follow many
//! frames cheaply (a load generator, say) and need only a few of their fields.
//!
//! [`FrameView::parse`] reads a frame in one pass over its text: strings are borrowed from
//! it (`Cow::Borrowed`; only a string holding JSON escapes is copied), every field the view
//! does not read is skipped, and keys may come in any order (`type` need not be first).
//! The shapes are those of the owned types in this crate ([`ServerFrame`](crate::ServerFrame)
//! and what it holds); the tests below serialise owned frames and check the view reads the
//! same values.
//!
//! The view checks no more than it reads: a field the owned type requires but the view
//! does not need (a message's `sent_at`, say) may be absent, and so may a message's `id`.
//! A frame whose `type` the view does not read comes back as [`FrameView::Other`].
//!
//! Serde's internally tagged enums (the owned types' `#[serde(tag = "type")]`) buffer a
//! frame before they know its variant, and lose the borrowing on the way. The view instead
//! reads a flat envelope, every field any of its frames carries optional beside the `type`
//! string, and sorts it out by the `type` once the whole frame is read. Two of those
//! fields change shape with the frame (`message` is an object in a `message` frame, a
//! message id in `read` and `recalled` and a text in `error`; `conversation` is an object
//! in a `conversation` frame, an id elsewhere): they read as either, see [`StrOr`].

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// A server frame, read by its `type`, borrowing from the text it was read from.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameView<'a> {
    /// `message`: a new message in one of your conversations.
    Message(MessageRef<'a>),
    /// `ack`: the request with this `id` succeeded.
    Ack {
        /// The request's id.
        id: Cow<'a, str>,
        /// What it produced.
        result: AckRef<'a>,
    },
    /// `error`: a request failed.
    Error {
        /// The request's id, when the server could read it.
        id: Option<Cow<'a, str>>,
        /// The error code (see [`ErrorCode::as_str`](crate::ErrorCode::as_str)), kept as
        /// text so that a code this crate does not know still reads.
        code: Cow<'a, str>,
    },
    /// `read`: a participant read a conversation up to a message.
    Read(ChangeRef<'a>),
    /// `recalled`: a message was removed for everyone.
    Recalled(ChangeRef<'a>),
    /// Any other frame, by its `type` (`hello`, `notification`, `conversation`, …).
    Other(Cow<'a, str>),
}

/// The fields of a [`MessageView`](crate::MessageView) the view reads.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct MessageRef<'a> {
    /// Server-made id.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub id: Option<Cow<'a, str>>,
    /// Conversation.
    #[serde(borrow)]
    pub conversation: Cow<'a, str>,
    /// Position in the conversation.
    pub seq: u64,
    /// Text; absent for markers and tombstones.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub body: Option<Cow<'a, str>>,
}

/// The fields of a [`ConversationView`](crate::ConversationView) the view reads.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct ConversationRef<'a> {
    /// Server-made id.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
}

/// The fields of an [`AckResult`](crate::AckResult) the view reads.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct AckRef<'a> {
    /// The stored message (`sent`).
    #[serde(default, borrow)]
    pub message: Option<MessageRef<'a>>,
    /// The conversation (`conversation`, `history`).
    #[serde(default, borrow)]
    pub conversation: Option<ConversationRef<'a>>,
}

impl AckRef<'_> {
    /// The conversation the request made, found or sent into.
    pub fn conversation_id(&self) -> Option<&str> {
        match (&self.conversation, &self.message) {
            (Some(c), _) => Some(&c.id),
            (None, Some(m)) => Some(&m.conversation),
            (None, None) => None,
        }
    }
}

/// The fields of a `read` or `recalled` frame the view reads.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRef<'a> {
    /// Conversation.
    pub conversation: Cow<'a, str>,
    /// The message read up to, or removed.
    pub message: Cow<'a, str>,
    /// The conversation's position after this change.
    pub pos: u64,
}

/// A field that is a string in some frames and an object in others.
#[derive(Debug, Clone, PartialEq)]
pub enum StrOr<'a, T> {
    /// A string (an id, or a text).
    Str(Cow<'a, str>),
    /// An object.
    Object(T),
}

impl<'a> FrameView<'a> {
    /// Read one server frame from its JSON text.
    pub fn parse(text: &'a str) -> serde_json::Result<FrameView<'a>> {
        let mut de = serde_json::Deserializer::from_str(text);
        let view = de::Deserializer::deserialize_map(&mut de, FrameVisitor)?;
        de.end()?;
        Ok(view)
    }
}

/// The keys of the envelope; every other key is skipped.
enum Key {
    Type,
    Id,
    Code,
    Message,
    Conversation,
    Pos,
    Result,
    Other,
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(match v {
            "type" => Key::Type,
            "id" => Key::Id,
            "code" => Key::Code,
            "message" => Key::Message,
            "conversation" => Key::Conversation,
            "pos" => Key::Pos,
            "result" => Key::Result,
            _ => Key::Other,
        })
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_identifier(KeyVisitor)
    }
}

/// The envelope: every field any frame the view reads carries, each optional, and the
/// `type`. A hand-written visitor fills it in place: a derived `Deserialize` returns the
/// whole struct through serde's layers, copied at each, which made reading a frame a
/// quarter slower.
#[derive(Default)]
struct Envelope<'a> {
    kind: Option<Cow<'a, str>>,
    id: Option<Cow<'a, str>>,
    code: Option<Cow<'a, str>>,
    message: Option<StrOr<'a, MessageRef<'a>>>,
    conversation: Option<StrOr<'a, ConversationRef<'a>>>,
    pos: Option<u64>,
    result: Option<AckRef<'a>>,
}

struct FrameVisitor;

impl<'de> Visitor<'de> for FrameVisitor {
    type Value = FrameView<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a server frame")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FrameView<'de>, A::Error> {
        let mut e = Envelope::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Type => e.kind = Some(map.next_value::<Text<'de>>()?.0),
                Key::Id => e.id = Some(map.next_value::<Text<'de>>()?.0),
                Key::Code => e.code = Some(map.next_value::<Text<'de>>()?.0),
                Key::Message => e.message = Some(map.next_value()?),
                Key::Conversation => e.conversation = Some(map.next_value()?),
                Key::Pos => e.pos = Some(map.next_value()?),
                Key::Result => e.result = Some(map.next_value()?),
                Key::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        e.into_view()
    }
}

impl<'a> Envelope<'a> {
    /// Sort the envelope out by its `type`.
    #[inline(always)]
    fn into_view<E: de::Error>(self) -> Result<FrameView<'a>, E> {
        let kind = self.kind.ok_or_else(|| E::missing_field("type"))?;
        let missing = |what: &str| E::custom(format_args!("a `{kind}` frame without {what}"));
        let view = match &*kind {
            "message" => match self.message {
                Some(StrOr::Object(m)) => FrameView::Message(m),
                _ => return Err(missing("a message object")),
            },
            "ack" => FrameView::Ack {
                id: self.id.ok_or_else(|| missing("an id"))?,
                result: self.result.ok_or_else(|| missing("a result"))?,
            },
            "error" => FrameView::Error {
                id: self.id,
                code: self.code.ok_or_else(|| missing("a code"))?,
            },
            "read" | "recalled" => {
                let (Some(StrOr::Str(conversation)), Some(StrOr::Str(message)), Some(pos)) =
                    (self.conversation, self.message, self.pos)
                else {
                    return Err(missing("a conversation id, a message id and a position"));
                };
                let change = ChangeRef {
                    conversation,
                    message,
                    pos,
                };
                match &*kind {
                    "read" => FrameView::Read(change),
                    _ => FrameView::Recalled(change),
                }
            }
            _ => FrameView::Other(kind),
        };
        Ok(view)
    }
}

/// A string, borrowed from the input when it holds no escapes.
struct Text<'a>(Cow<'a, str>);

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(v)))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor)
    }
}

/// An optional string that borrows: serde's own `Option<Cow<str>>` always copies.
fn opt_str<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    Ok(Option::<Text<'a>>::deserialize(d)?.map(|t| t.0))
}

struct StrOrVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for StrOrVisitor<T> {
    type Value = StrOr<'de, T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an object")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(StrOr::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(StrOr::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(StrOr::Str(Cow::Owned(v)))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(StrOr::Object)
    }
}

impl<'de: 'a, 'a, T: Deserialize<'de>> Deserialize<'de> for StrOr<'a, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrOrVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    fn message(id: &str, conversation: &str, seq: u64, body: Option<&str>) -> MessageView {
        MessageView {
            id: id.into(),
            conversation: conversation.into(),
            seq,
            sender: "alice".into(),
            sent_at: 1_700_000_000_000,
            kind: MessageKind::Message,
            state: MessageState::Visible,
            body: body.map(Into::into),
            reply_to: Some("m0".into()),
            to: None,
            cc: vec![],
            recall_until: Some(1_700_000_120_000),
            delete_until: None,
        }
    }

    fn conversation(id: &str) -> ConversationView {
        ConversationView {
            id: id.into(),
            kind: ConversationKind::Group,
            participants: vec!["alice".into(), "bob".into(), "carol".into()],
            title: Some("the \"group\"".into()),
        }
    }

    /// The JSON of an owned frame, as the server writes it.
    fn wire(frame: &ServerFrame) -> String {
        serde_json::to_string(frame).unwrap()
    }

    /// The same frame with `type` moved to the end.
    fn type_last(text: &str) -> String {
        let mut map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).unwrap();
        let kind = map.remove("type").unwrap();
        let rest = serde_json::to_string(&map).unwrap();
        let moved = format!("{},\"type\":{kind}}}", &rest[..rest.len() - 1]);
        assert!(!moved.starts_with(r#"{"type""#), "{moved}");
        moved
    }

    /// Read `frame` as the server writes it and with `type` last; both must agree.
    fn check(frame: &ServerFrame, expect: impl Fn(&FrameView<'_>)) {
        let text = wire(frame);
        let view = FrameView::parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        expect(&view);
        let moved = type_last(&text);
        assert_eq!(FrameView::parse(&moved).unwrap(), view, "{moved}");
    }

    fn same_message(view: &MessageRef<'_>, owned: &MessageView) {
        assert_eq!(view.id.as_deref(), Some(owned.id.as_str()));
        assert_eq!(view.conversation, owned.conversation);
        assert_eq!(view.seq, owned.seq);
        assert_eq!(view.body.as_deref(), owned.body.as_deref());
    }

    #[test]
    fn a_message_frame_reads_its_message() {
        let owned = message("m7", "c1", 42, Some("hello"));
        let frame = ServerFrame::Message {
            message: owned.clone(),
        };
        check(&frame, |view| match view {
            FrameView::Message(m) => same_message(m, &owned),
            other => panic!("{other:?}"),
        });
    }

    #[test]
    fn strings_are_borrowed_unless_escaped() {
        let plain = wire(&ServerFrame::Message {
            message: message("m7", "c1", 1, Some("plain text")),
        });
        let FrameView::Message(m) = FrameView::parse(&plain).unwrap() else {
            panic!("not a message")
        };
        assert!(matches!(m.conversation, Cow::Borrowed(_)));
        assert!(matches!(m.id, Some(Cow::Borrowed(_))));
        assert!(matches!(m.body, Some(Cow::Borrowed(_))));

        let body = "a \"quoted\" line\nand é, \u{1F600}";
        let escaped = wire(&ServerFrame::Message {
            message: message("m8", "c1", 2, Some(body)),
        });
        let FrameView::Message(m) = FrameView::parse(&escaped).unwrap() else {
            panic!("not a message")
        };
        assert_eq!(m.body.as_deref(), Some(body));
    }

    #[test]
    fn a_marker_has_no_body() {
        let mut owned = message("m7", "c1", 42, None);
        owned.state = MessageState::Recalled;
        let frame = ServerFrame::Message {
            message: owned.clone(),
        };
        check(&frame, |view| match view {
            FrameView::Message(m) => same_message(m, &owned),
            other => panic!("{other:?}"),
        });
    }

    #[test]
    fn an_ack_of_a_send_reads_the_stored_message() {
        let owned = message("m9", "c2", 5, Some("hi"));
        let frame = ServerFrame::Ack {
            id: "s0.1".into(),
            result: AckResult::Sent {
                message: owned.clone(),
            },
        };
        check(&frame, |view| match view {
            FrameView::Ack { id, result } => {
                assert_eq!(id, "s0.1");
                same_message(result.message.as_ref().unwrap(), &owned);
                assert!(result.conversation.is_none());
                assert_eq!(result.conversation_id(), Some("c2"));
            }
            other => panic!("{other:?}"),
        });
    }

    #[test]
    fn an_ack_of_a_conversation_reads_its_id() {
        let frame = ServerFrame::Ack {
            id: "group".into(),
            result: AckResult::Conversation {
                conversation: conversation("c3"),
            },
        };
        check(&frame, |view| match view {
            FrameView::Ack { id, result } => {
                assert_eq!(id, "group");
                assert!(result.message.is_none());
                assert_eq!(result.conversation_id(), Some("c3"));
            }
            other => panic!("{other:?}"),
        });
    }

    #[test]
    fn an_ack_with_nothing_to_say_reads_neither() {
        let frame = ServerFrame::Ack {
            id: "mute".into(),
            result: AckResult::Ok {},
        };
        check(&frame, |view| match view {
            FrameView::Ack { id, result } => {
                assert_eq!(id, "mute");
                assert_eq!(result.conversation_id(), None);
            }
            other => panic!("{other:?}"),
        });
    }

    #[test]
    fn an_error_reads_its_id_and_code() {
        for id in [Some("c4".to_owned()), None] {
            let frame = ServerFrame::Error {
                id: id.clone(),
                code: ErrorCode::AlreadyRead,
                message: "a recipient has read the message".into(),
            };
            check(&frame, |view| match view {
                FrameView::Error { id: got, code } => {
                    assert_eq!(got.as_deref(), id.as_deref());
                    assert_eq!(code, ErrorCode::AlreadyRead.as_str());
                }
                other => panic!("{other:?}"),
            });
        }
    }

    #[test]
    fn read_and_recalled_read_the_change() {
        let read = ServerFrame::Read {
            conversation: "c5".into(),
            user: "bob".into(),
            message: "m1".into(),
            seq: 3,
            pos: 4,
        };
        check(&read, |view| match view {
            FrameView::Read(c) => {
                assert_eq!((&*c.conversation, &*c.message, c.pos), ("c5", "m1", 4));
            }
            other => panic!("{other:?}"),
        });
        let recalled = ServerFrame::Recalled {
            conversation: "c5".into(),
            message: "m1".into(),
            mode: RemovalMode::Marker,
            pos: 9,
        };
        check(&recalled, |view| match view {
            FrameView::Recalled(c) => {
                assert_eq!((&*c.conversation, &*c.message, c.pos), ("c5", "m1", 9));
            }
            other => panic!("{other:?}"),
        });
    }

    #[test]
    fn every_other_frame_reads_as_its_type() {
        let settings = Settings::default();
        let limits = Limits {
            recall_window_ms: 1,
            inmail_delete_window_ms: 2,
            recall_per_conversation: 3,
            recall_period_ms: 4,
            recall_throttle_messages: 5,
            recall_throttle_window_ms: 6,
            max_body_chars: 7,
            max_frame_bytes: 8,
            max_sessions_per_user: 9,
            requests_per_second: 10,
            request_burst: 11,
            ping_interval_ms: 12,
            idle_timeout_ms: 13,
        };
        let frames = [
            ServerFrame::Hello {
                protocol: PROTOCOL_VERSION,
                user: "alice".into(),
                session: "s1".into(),
                server_time: 1,
                limits,
                settings,
            },
            ServerFrame::DeletedView {
                conversation: "c".into(),
                message: "m".into(),
                pos: 1,
            },
            ServerFrame::RecallClosed {
                conversation: "c".into(),
                message: "m".into(),
                reason: RecallClosedReason::Read,
            },
            ServerFrame::Blocked { user: "bob".into() },
            ServerFrame::ConnectionRequest { from: "bob".into() },
            ServerFrame::Conversation {
                conversation: conversation("c6"),
            },
            ServerFrame::ConversationState {
                conversation: "c".into(),
                muted: true,
                hidden: false,
            },
            ServerFrame::Settings { settings },
            ServerFrame::Notification {
                notification: NotificationView {
                    conversation: "c".into(),
                    message: "m".into(),
                    sender: Some("bob".into()),
                    preview: Some("hi".into()),
                    sent_at: 1,
                },
            },
            ServerFrame::NotificationRetracted {
                conversation: "c".into(),
                messages: vec!["m1".into(), "m2".into()],
                reason: RetractReason::Recalled,
            },
            ServerFrame::Typing {
                conversation: "c".into(),
                user: "bob".into(),
            },
        ];
        for frame in frames {
            check(&frame, |view| {
                assert_eq!(view, &FrameView::Other(frame.kind().into()));
            });
        }
    }

    #[test]
    fn frames_without_what_their_type_needs_are_refused() {
        for text in [
            r#"{"id":"x"}"#,
            r#"{"type":"message","message":"m1"}"#,
            r#"{"type":"ack","result":{"kind":"ok"}}"#,
            r#"{"type":"error","id":"x"}"#,
            r#"{"type":"read","conversation":"c","message":"m"}"#,
            r#"{"type":"recalled","conversation":{"id":"c"},"message":"m","pos":1}"#,
        ] {
            assert!(FrameView::parse(text).is_err(), "{text}");
        }
    }
}
