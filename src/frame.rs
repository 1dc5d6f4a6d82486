//! Decoding client frames: a text frame becomes a [`Request`], or an error that still
//! names the request's `id` whenever one can be read.

use parley_protocol::{ErrorCode, Request};
use serde::Deserialize;

/// The two fields needed to answer even a request that fails to parse; read leniently,
/// since a mistyped field must not hide the id.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default, rename = "type")]
    kind: Option<serde_json::Value>,
}

impl Envelope {
    fn id(&self) -> Option<String> {
        self.id.as_ref()?.as_str().map(str::to_owned)
    }

    fn kind(&self) -> Option<&str> {
        self.kind.as_ref()?.as_str()
    }
}

/// A frame that is not a valid request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The request's id, when it could be read.
    pub id: Option<String>,
    /// `bad_request` or `unknown_type`.
    pub code: ErrorCode,
    /// What is wrong, for the client.
    pub message: String,
}

/// The request id of a frame, if it has a readable one (for answering refusals).
pub fn request_id(text: &str) -> Option<String> {
    serde_json::from_str::<Envelope>(text).ok()?.id()
}

/// Decode one client text frame.
pub fn decode(text: &str) -> Result<Request, DecodeError> {
    // Valid frames, nearly all of them, are parsed once; only a frame that fails is read
    // a second time, leniently, to say why and under which id.
    serde_json::from_str(text).map_err(|e| explain(text, &e))
}

/// Why a frame is not a valid request, and its id when one can be read.
fn explain(text: &str, error: &serde_json::Error) -> DecodeError {
    let envelope: Envelope = match serde_json::from_str(text) {
        Ok(envelope) => envelope,
        Err(e) => {
            return DecodeError {
                id: None,
                code: ErrorCode::BadRequest,
                message: format!("frame is not a JSON object: {e}"),
            }
        }
    };
    let id = envelope.id();
    let detail = error.to_string();
    let (code, message) = match envelope.kind() {
        None => (ErrorCode::BadRequest, "missing field `type`".to_owned()),
        Some(t) if detail.starts_with(&format!("unknown variant `{t}`")) => {
            (ErrorCode::UnknownType, format!("unknown frame type `{t}`"))
        }
        Some(_) if id.is_none() => (ErrorCode::BadRequest, "missing field `id`".to_owned()),
        Some(_) => (ErrorCode::BadRequest, detail),
    };
    DecodeError { id, code, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> (Option<String>, ErrorCode) {
        let e = decode(text).unwrap_err();
        (e.id, e.code)
    }

    #[test]
    fn every_kind_of_bad_frame_has_its_code() {
        assert_eq!(code("{nope"), (None, ErrorCode::BadRequest));
        assert_eq!(code("[1,2]"), (None, ErrorCode::BadRequest));
        assert_eq!(
            code(r#"{"id":"a"}"#),
            (Some("a".into()), ErrorCode::BadRequest)
        );
        assert_eq!(
            code(r#"{"id":"a","type":"fly"}"#),
            (Some("a".into()), ErrorCode::UnknownType)
        );
        assert_eq!(code(r#"{"type":"sync"}"#), (None, ErrorCode::BadRequest));
        assert_eq!(
            code(r#"{"id":"a","type":"send","to":"b"}"#),
            (Some("a".into()), ErrorCode::BadRequest)
        );
        let bad_enum = r#"{"id":"a","type":"settings","read_receipts":"fly"}"#;
        assert_eq!(code(bad_enum), (Some("a".into()), ErrorCode::BadRequest));
        assert!(decode(r#"{"id":"a","type":"sync"}"#).is_ok());
        assert_eq!(request_id(r#"{"id":"q","type":1}"#).as_deref(), Some("q"));
    }
}
