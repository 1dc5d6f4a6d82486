//! One WebSocket connection: authenticate, then a reader that feeds the hub and a writer
//! that drains the session's bounded queue, several frames per socket write.

use crate::auth::{self, AuthError, Claims};
use crate::hub::sessions::SessionHandle;
use crate::hub::{encode, Hub, Outbox};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use parley_protocol::{close, ErrorCode, ServerFrame};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite;

/// Frames written per flush when a backlog has built up.
const MAX_BATCH: usize = 64;
/// How long a close handshake may take before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serve one upgraded socket until it closes.
pub async fn serve(socket: WebSocket, hub: Arc<Hub>, auth: Result<Claims, AuthError>) {
    let claims = match auth {
        Ok(claims) => claims,
        Err(e) => return refuse(socket, e).await,
    };
    let (session, outbox) = hub.open_session(&claims.sub, claims.admin).await;
    tracing::info!(user = %claims.sub, session = session.id, "session opened");
    let (sink, stream) = socket.split();
    let writer = tokio::spawn(write_loop(sink, outbox, session.clone()));
    read_loop(stream, &hub, &session).await;
    hub.close_session(&session);
    // Let the writer flush what is queued (answers to the last requests) and say goodbye.
    session.close(1000, "bye");
    let _ = writer.await;
    let reason = session
        .close_reason()
        .map(|(c, r)| format!("{c} {r}"))
        .unwrap_or_default();
    tracing::info!(user = %claims.sub, session = session.id, %reason, "session closed");
}

async fn refuse(mut socket: WebSocket, e: AuthError) {
    tracing::info!(reason = %e, "connection refused");
    let frame = ServerFrame::Error {
        id: None,
        code: ErrorCode::Unauthorized,
        message: e.to_string(),
    };
    let _ = socket.send(Message::Text(encode(&frame))).await;
    let close = CloseFrame {
        code: close::POLICY,
        reason: format!("unauthorized: {e}").into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(Message::Close(Some(close)))).await;
}

/// The close code for a read error the peer caused, if it deserves one.
fn close_for(error: &axum::Error) -> Option<(u16, &'static str)> {
    let inner = error.source_ref()?;
    match inner.downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Capacity(_) => Some((close::TOO_BIG, "frame too large")),
        tungstenite::Error::Utf8(_) => Some((close::INVALID_UTF8, "invalid UTF-8")),
        // A peer that vanished without a closing handshake cannot be told anything.
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => None,
        tungstenite::Error::Protocol(_) => Some((close::PROTOCOL, "protocol error")),
        _ => None,
    }
}

trait SourceRef {
    fn source_ref(&self) -> Option<&(dyn std::error::Error + 'static)>;
}

impl SourceRef for axum::Error {
    fn source_ref(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(self)
    }
}

async fn read_loop(mut stream: SplitStream<WebSocket>, hub: &Hub, session: &SessionHandle) {
    loop {
        let next = tokio::select! {
            biased;
            _ = session.closing().cancelled() => return,
            next = stream.next() => next,
        };
        match next {
            Some(Ok(Message::Text(text))) => hub.dispatch(session, text.as_str()).await,
            Some(Ok(Message::Binary(_))) => {
                return session.close(close::UNSUPPORTED, "binary frames are not supported");
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None => return,
            Some(Err(e)) => {
                if let Some((code, reason)) = close_for(&e) {
                    session.close(code, reason);
                }
                tracing::debug!(user = %session.user, error = %e, "read error");
                return;
            }
        }
    }
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut outbox: Outbox,
    session: Arc<SessionHandle>,
) {
    loop {
        let first = tokio::select! {
            biased;
            _ = session.closing().cancelled() => break,
            first = outbox.recv() => match first { Some(f) => f, None => break },
        };
        let mut written = first.len();
        let batch = async {
            sink.feed(Message::Text(first)).await?;
            for _ in 1..MAX_BATCH {
                let Ok(next) = outbox.try_recv() else { break };
                written += next.len();
                sink.feed(Message::Text(next)).await?;
            }
            sink.flush().await
        };
        let result = tokio::select! {
            biased;
            _ = session.closing().cancelled() => break,
            result = batch => result,
        };
        if result.is_err() {
            return;
        }
        session.written(written);
    }
    // A normal goodbye drains what is queued first; an overflow or error does not wait.
    if let Some((code, reason)) = session.close_reason() {
        let drain = async {
            if code == 1000 || code == close::GOING_AWAY {
                while let Ok(next) = outbox.try_recv() {
                    sink.feed(Message::Text(next)).await?;
                }
            }
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            sink.send(Message::Close(Some(frame))).await
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
    }
}

/// The token a client presented: `?token=` for browsers, else `Authorization: Bearer`.
pub fn presented_token(query: Option<String>, headers: &axum::http::HeaderMap) -> Option<String> {
    query.or_else(|| {
        headers
            .get(axum::http::header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
            .map(str::to_owned)
    })
}

/// Verify a presented token against the server secret.
pub fn authenticate(secret: &[u8], token: Option<&str>) -> Result<Claims, AuthError> {
    auth::verify(secret, token)
}
