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
///
/// The returned future lives as long as the connection, so it is kept small: the socket
/// is split before it starts (an argument of an `async fn` stays in its future for good),
/// and the steps that run once (opening the session, turning a connection away) are
/// boxed, their state taking memory only while they run.
pub fn serve(
    socket: WebSocket,
    hub: Arc<Hub>,
    admission: Result<Claims, Refusal>,
) -> impl std::future::Future<Output = ()> + Send {
    let (sink, stream) = socket.split();
    run(sink, stream, hub, admission)
}

async fn run(
    sink: SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
    hub: Arc<Hub>,
    admission: Result<Claims, Refusal>,
) {
    crate::metrics::connection_opened();
    let claims = match admission {
        Ok(claims) => claims,
        Err(refusal) => return Box::pin(refuse(sink, refusal)).await,
    };
    let opened = Box::pin(hub.open_session(&claims.sub, claims.admin)).await;
    let Some((session, outbox)) = opened else {
        let max = hub.limits().max_sessions_per_user;
        let reason = format!("too many sessions (at most {max})");
        tracing::info!(user = %claims.sub, %reason, "connection refused");
        return Box::pin(say_goodbye(sink, None, close::POLICY, reason)).await;
    };
    tracing::info!(user = %claims.sub, session = session.id, "session opened");
    let limits = *hub.limits();
    let ping_every = Duration::from_millis(limits.ping_interval_ms);
    let writer = tokio::spawn(write_loop(sink, outbox, session.clone(), ping_every));
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    read_loop(stream, &hub, &session, idle).await;
    hub.close_session(&session);
    // Let the writer flush what is queued (answers to the last requests) and say goodbye.
    session.close(close::NORMAL, "bye");
    let _ = writer.await;
    let reason = session
        .close_reason()
        .map(|(c, r)| format!("{c} {r}"))
        .unwrap_or_default();
    tracing::info!(user = %claims.sub, session = session.id, %reason, "session closed");
}

/// Why a connection is turned away before it gets a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No valid token.
    Unauthorized(AuthError),
    /// Its address opened connections too fast.
    TooFast,
}

async fn refuse(sink: SplitSink<WebSocket, Message>, refusal: Refusal) {
    let (code, close_code, message) = match &refusal {
        Refusal::Unauthorized(e) => (ErrorCode::Unauthorized, close::POLICY, e.to_string()),
        Refusal::TooFast => (
            ErrorCode::RateLimited,
            close::TRY_AGAIN_LATER,
            "too many new connections from your address; try again later".to_owned(),
        ),
    };
    tracing::info!(reason = %message, "connection refused");
    let reason = format!("{code}: {message}");
    let frame = ServerFrame::Error {
        id: None,
        code,
        message,
    };
    say_goodbye(sink, Some(frame), close_code, reason).await;
}

/// Send an optional last frame and a close frame, within a bounded time.
async fn say_goodbye(
    mut sink: SplitSink<WebSocket, Message>,
    last: Option<ServerFrame>,
    code: u16,
    reason: String,
) {
    let goodbye = async {
        if let Some(frame) = last {
            sink.send(Message::Text(encode(&frame))).await?;
        }
        let close = CloseFrame {
            code,
            reason: reason.into(),
        };
        sink.send(Message::Close(Some(close))).await
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, goodbye).await;
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

async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    hub: &Hub,
    session: &SessionHandle,
    idle: Duration,
) {
    loop {
        // Any frame, a pong included, proves the peer alive; a half-open connection sends none.
        let deadline = tokio::time::sleep(idle);
        let next = tokio::select! {
            biased;
            _ = session.closing().cancelled() => return,
            next = stream.next() => next,
            _ = deadline, if !idle.is_zero() => {
                return session.close(close::GOING_AWAY, "idle timeout");
            }
        };
        match next {
            // Boxed: the request's future is large and lives only while it runs, so an
            // idle connection's task stays small.
            Some(Ok(Message::Text(text))) => Box::pin(hub.dispatch(session, text.as_str())).await,
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
    ping_every: Duration,
) {
    let mut ping = tokio::time::interval(ping_every.max(Duration::from_millis(1)));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    loop {
        let first = tokio::select! {
            biased;
            _ = session.closing().cancelled() => break,
            first = outbox.recv() => match first { Some(f) => f, None => break },
            _ = ping.tick(), if !ping_every.is_zero() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
                continue;
            }
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
        Box::pin(drain_and_close(&mut sink, &mut outbox, code, reason)).await;
    }
}

/// Write what a closing session still has queued (for a normal or going-away close),
/// then the close frame, within a bounded time.
async fn drain_and_close(
    sink: &mut SplitSink<WebSocket, Message>,
    outbox: &mut Outbox,
    code: u16,
    reason: String,
) {
    let drain = async {
        if code == close::NORMAL || code == close::GOING_AWAY {
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
pub fn authenticate(secret: &[u8], token: Option<&str>) -> Result<Claims, Refusal> {
    auth::verify(secret, token).map_err(Refusal::Unauthorized)
}
