//! One WebSocket connection: authenticate, then a reader that feeds the hub and a writer
//! that drains the session's bounded queue, several frames per socket write, and at the end
//! a closing handshake that lets the Close frame reach the peer (see [`finish`]).

use crate::auth::{self, AuthError, Claims};
use crate::hub::sessions::SessionHandle;
use crate::hub::{encode, Hub, Outbox};
use crate::upgrade::Socket;
use futures::stream::{SplitSink, SplitStream};
use futures::{FutureExt, SinkExt, StreamExt};
use parley_protocol::{close, ErrorCode, ServerFrame};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, protocol::CloseFrame, Message, Utf8Bytes};

/// The writing half of a connection's socket.
type Sink = SplitSink<Socket, Message>;
/// The reading half of a connection's socket.
type Stream = SplitStream<Socket>;

/// Frames written per flush when a backlog has built up.
const MAX_BATCH: usize = 64;
/// How long a close handshake may take before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a closed connection keeps reading what the peer still sends, waiting for it
/// to close its side, before it is dropped anyway.
const LINGER: Duration = Duration::from_secs(2);

/// Serve one upgraded socket until it closes.
///
/// The returned future lives as long as the connection, so it is kept small: the socket
/// is split before it starts, admission (opening the session, or turning the connection
/// away) is a boxed step whose state is freed once it is done, and what stays is [`Live`]
/// and its loops, which borrow its fields instead of holding copies.
pub fn serve(
    socket: Socket,
    hub: Arc<Hub>,
    admission: Result<Claims, Refusal>,
    peer: Peer,
) -> impl std::future::Future<Output = ()> + Send {
    let (sink, stream) = socket.split();
    crate::metrics::connection_opened();
    Box::pin(admit(sink, stream, hub, admission, peer))
        .then(|live| futures::future::OptionFuture::from(live.map(Live::run)))
        .map(drop)
}

/// Open a session for an admitted connection, or say why not and close.
async fn admit(
    mut sink: Sink,
    stream: Stream,
    hub: Arc<Hub>,
    admission: Result<Claims, Refusal>,
    peer: Peer,
) -> Option<Live> {
    let claims = match admission {
        Ok(claims) => claims,
        Err(refusal) => {
            refuse(&mut sink, refusal, &peer).await;
            finish(sink, stream, Ended::Closing).await;
            return None;
        }
    };
    let Some((session, outbox)) = hub.open_session(&claims.sub, claims.admin).await else {
        let max = hub.limits().max_sessions_per_user;
        let reason = format!("too many sessions (at most {max})");
        tracing::info!(user = %claims.sub, peer = %peer.addr, %reason, "connection refused");
        say_goodbye(&mut sink, None, close::POLICY, reason).await;
        finish(sink, stream, Ended::Closing).await;
        return None;
    };
    tracing::info!(
        user = %claims.sub,
        session = session.id,
        peer = %peer.addr,
        user_agent = peer.user_agent.as_deref().unwrap_or("-"),
        origin = peer.origin.as_deref().unwrap_or("-"),
        via = %peer.via.map_or_else(|| "-".to_owned(), |v| v.to_string()),
        "session opened"
    );
    if hub.shutting_down() {
        // Upgraded just as shutdown began, after every open session was told to close.
        session.close(close::GOING_AWAY, "server shutting down");
    }
    let limits = hub.limits();
    let liveness = Liveness::new(
        Duration::from_millis(limits.ping_interval_ms),
        Duration::from_millis(limits.idle_timeout_ms),
    );
    let liveness = Arc::new(liveness);
    // The writer is a task of its own: in the same task as the reader, every frame
    // written would cost the reader's side too (measured: ~1.4x server CPU per delivered
    // frame under fan-out load), which outweighs the task's few hundred bytes.
    let writer = tokio::spawn(write_loop(sink, outbox, session.clone(), liveness.clone()));
    Some(Live {
        stream,
        session,
        hub,
        liveness,
        writer,
        peer: peer.addr,
    })
}

/// Who is at the other end of a connection, as its upgrade request said, for the log.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: std::net::SocketAddr,
    /// Its `User-Agent` header.
    pub user_agent: Option<String>,
    /// Its `Origin` header (browsers send one).
    pub origin: Option<String>,
    /// The trusted proxy it came through, whose forwarding header named `addr` (whose
    /// port is then 0: proxies do not forward it).
    pub via: Option<std::net::SocketAddr>,
}

/// A connection with an open session: what its reading side keeps for as long as it lives.
struct Live {
    stream: Stream,
    session: Arc<SessionHandle>,
    hub: Arc<Hub>,
    liveness: Arc<Liveness>,
    /// The writer hands the sink back when it is done, for the closing handshake.
    writer: tokio::task::JoinHandle<Sink>,
    /// The client's address, for the close line.
    peer: std::net::SocketAddr,
}

impl Live {
    // A plain `fn` returning a block: an `async fn` would keep its `self` argument twice,
    // once as the argument and once as the binding, for the connection's whole life.
    #[allow(clippy::manual_async_fn)]
    fn run(mut self) -> impl std::future::Future<Output = ()> + Send {
        async move {
            let ended = self.serve().await;
            let Live {
                stream,
                session,
                writer,
                liveness,
                peer,
                ..
            } = self;
            if let Ok(sink) = writer.await {
                // Boxed: its buffer and timers are needed only while the connection closes.
                Box::pin(finish(sink, stream, ended)).await;
            }
            let reason = session
                .close_reason()
                .map(|(c, r)| format!("{c} {r}"))
                .unwrap_or_default();
            let duration = format!("{:.3}s", liveness.started.elapsed().as_secs_f64());
            tracing::info!(
                user = %session.user,
                session = session.id,
                %peer,
                %duration,
                %reason,
                "session closed"
            );
        }
    }

    async fn serve(&mut self) -> Ended {
        let Live {
            stream,
            session,
            hub,
            liveness,
            ..
        } = self;
        let ended = read_loop(stream, hub, session, liveness).await;
        hub.close_session(session);
        // The writer flushes what is queued (answers to the last requests) and says goodbye.
        session.close(close::NORMAL, "bye");
        ended
    }
}

/// How the reading side of a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The server closes the session (or refused it): its Close frame goes out, and the
    /// peer's answer is waited for.
    Closing,
    /// The peer sent its Close frame: the reply tungstenite queued goes out.
    PeerClosed,
    /// The peer's stream ended or broke: there is no one left to tell.
    PeerGone,
}

/// End a connection whose Close frame (or reply to the peer's) has been written: shut down
/// the write side, so the peer sees the end right after the Close, and read and discard
/// whatever it still sends until it closes its side, or [`LINGER`] passes.
///
/// Dropping a socket with unread bytes in its receive buffer makes the kernel reset the
/// connection, and a reset discards the Close frame still on its way to a peer that was
/// sending: without this a client that is mid-write when the server closes it (a flood, an
/// overflow, an oversized frame) would see 1006 instead of the code it was given. The bytes
/// are drained raw, not parsed: after an oversized frame they are not frames any more.
async fn finish(sink: Sink, stream: Stream, ended: Ended) {
    if ended == Ended::PeerGone {
        return;
    }
    let Ok(mut socket) = stream.reunite(sink) else {
        return;
    };
    let raw = socket.get_mut();
    let drain = async {
        raw.shutdown().await?;
        let mut discard = vec![0u8; 4096];
        while raw.read(&mut discard).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// When a session is pinged, and when a silent peer counts as gone. One timer, the
/// writer's, serves both: the reader only notes when it last heard from the peer, which
/// costs a store instead of re-arming a timer for every frame received.
#[derive(Debug)]
struct Liveness {
    started: Instant,
    ping_every: Duration,
    idle: Duration,
    /// Milliseconds after `started` the peer last sent anything.
    heard_ms: AtomicU64,
    /// Milliseconds after `started` the next ping is due ([`u64::MAX`]: never). Kept here
    /// rather than in the writer's future, every byte of which each connection pays.
    next_ping_ms: AtomicU64,
}

/// What the writer's timer asks for when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// Nothing yet (the peer spoke since the timer was set).
    Nothing,
    /// Send a ping.
    Ping,
    /// The peer has been silent for the idle timeout.
    Idle,
}

impl Liveness {
    fn new(ping_every: Duration, idle: Duration) -> Liveness {
        let first_ping_ms = if ping_every.is_zero() {
            u64::MAX
        } else {
            ping_every.as_millis() as u64
        };
        Liveness {
            started: Instant::now(),
            ping_every,
            idle,
            heard_ms: AtomicU64::new(0),
            next_ping_ms: AtomicU64::new(first_ping_ms),
        }
    }

    /// When the next ping is due, if pings are on.
    fn next_ping(&self) -> Option<Instant> {
        match self.next_ping_ms.load(Ordering::Relaxed) {
            u64::MAX => None,
            ms => Some(self.started + Duration::from_millis(ms)),
        }
    }

    /// A ping was just sent: the next is due one interval from `now`.
    fn pinged(&self, now: Instant) {
        let next = now.saturating_duration_since(self.started) + self.ping_every;
        self.next_ping_ms
            .store(next.as_millis() as u64, Ordering::Relaxed);
    }

    /// The peer just sent a frame.
    fn heard(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.started).as_millis() as u64;
        self.heard_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_at(&self) -> Option<Instant> {
        let heard = self.started + Duration::from_millis(self.heard_ms.load(Ordering::Relaxed));
        (!self.idle.is_zero()).then(|| heard + self.idle)
    }

    /// The next moment the writer must look, given when the next ping is due.
    fn next_wake(&self, next_ping: Option<Instant>) -> Option<Instant> {
        match (next_ping, self.idle_at()) {
            (Some(p), Some(i)) => Some(p.min(i)),
            (p, i) => p.or(i),
        }
    }

    /// What is due at `now`, the idle timeout first.
    fn due(&self, now: Instant, next_ping: Option<Instant>) -> Due {
        if self.idle_at().is_some_and(|at| now >= at) {
            Due::Idle
        } else if next_ping.is_some_and(|at| now >= at) {
            Due::Ping
        } else {
            Due::Nothing
        }
    }
}

/// Why a connection is turned away before it gets a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No valid token.
    Unauthorized(AuthError),
    /// Its address opened connections too fast.
    TooFast,
    /// What the credential needs checked against (a cluster's record of redeemed
    /// tickets) did not answer: the client may try again.
    Unavailable(crate::store::StoreError),
}

async fn refuse(sink: &mut Sink, refusal: Refusal, peer: &Peer) {
    let (code, close_code, message) = match &refusal {
        Refusal::Unauthorized(e) => (ErrorCode::Unauthorized, close::POLICY, e.to_string()),
        Refusal::TooFast => (
            ErrorCode::RateLimited,
            close::TRY_AGAIN_LATER,
            "too many new connections from your address; try again later".to_owned(),
        ),
        Refusal::Unavailable(e) => {
            tracing::warn!(error = %e, "cannot redeem a ticket");
            (
                ErrorCode::Unavailable,
                close::TRY_AGAIN_LATER,
                "cannot check the ticket now; try again".to_owned(),
            )
        }
    };
    crate::metrics::login_refused(match &refusal {
        Refusal::Unauthorized(e) => e.reason(),
        Refusal::TooFast => "too_fast",
        Refusal::Unavailable(_) => "unavailable",
    });
    tracing::info!(peer = %peer.addr, reason = %message, "connection refused");
    let reason = format!("{code}: {message}");
    let frame = ServerFrame::Error {
        id: None,
        code,
        message,
    };
    say_goodbye(sink, Some(frame), close_code, reason).await;
}

/// Send an optional last frame and a close frame, within a bounded time.
async fn say_goodbye(sink: &mut Sink, last: Option<ServerFrame>, code: u16, reason: String) {
    let goodbye = async {
        if let Some(frame) = last {
            sink.send(Message::Text(encode(&frame))).await?;
        }
        sink.send(close_frame(code, reason)).await
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, goodbye).await;
}

/// A Close frame with `code` and `reason`.
fn close_frame(code: u16, reason: String) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.into(),
        reason: reason.into(),
    }))
}

/// The close code for a read error the peer caused, if it deserves one.
fn close_for(error: &tungstenite::Error) -> Option<(u16, &'static str)> {
    match error {
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

// The loops are plain `fn`s returning blocks: an `async fn` keeps each argument twice
// in its future, once as the argument and once as the binding, and these futures live as
// long as their connection.
#[allow(clippy::manual_async_fn)]
fn read_loop<'a>(
    stream: &'a mut Stream,
    hub: &'a Hub,
    session: &'a SessionHandle,
    liveness: &'a Liveness,
) -> impl std::future::Future<Output = Ended> + Send + 'a {
    async move {
        loop {
            let next = tokio::select! {
                biased;
                _ = session.closing() => return Ended::Closing,
                next = stream.next() => next,
            };
            // Any frame, a pong included, proves the peer alive; a half-open connection sends none.
            liveness.heard(Instant::now());
            match next {
                // Boxed: the request's future is large and lives only while it runs, so an
                // idle connection's task stays small.
                Some(Ok(Message::Text(text))) => {
                    Box::pin(hub.dispatch(session, text.as_str())).await
                }
                Some(Ok(Message::Binary(_))) => {
                    session.close(close::UNSUPPORTED, "binary frames are not supported");
                    return Ended::Closing;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) => return Ended::PeerClosed,
                None => return Ended::PeerGone,
                Some(Err(e)) => {
                    tracing::debug!(user = %session.user, error = %e, "read error");
                    let Some((code, reason)) = close_for(&e) else {
                        return Ended::PeerGone;
                    };
                    session.close(code, reason);
                    return Ended::Closing;
                }
            }
        }
    }
}

#[allow(clippy::manual_async_fn)]
fn write_loop(
    mut sink: Sink,
    mut outbox: Outbox,
    session: Arc<SessionHandle>,
    liveness: Arc<Liveness>,
) -> impl std::future::Future<Output = Sink> + Send {
    async move {
        write_until_closed(&mut sink, &mut outbox, &session, &liveness).await;
        sink
    }
}

/// Write the session's frames and pings until it closes, then its goodbye.
#[allow(clippy::manual_async_fn)]
fn write_until_closed<'a>(
    sink: &'a mut Sink,
    outbox: &'a mut Outbox,
    session: &'a SessionHandle,
    liveness: &'a Liveness,
) -> impl std::future::Future<Output = ()> + Send + 'a {
    async move {
        // With neither pings nor an idle timeout the timer is set this far ahead, which
        // spares the future a flag saying whether it is armed.
        const NEVER: Duration = Duration::from_secs(365 * 86_400);
        let wake = |l: &Liveness| {
            l.next_wake(l.next_ping())
                .unwrap_or_else(|| Instant::now() + NEVER)
        };
        let timer = tokio::time::sleep_until(wake(liveness));
        tokio::pin!(timer);
        loop {
            // The select only says what woke the writer; the ping is sent after it, so the
            // select's state is not kept alive across that write.
            let first = tokio::select! {
                biased;
                // `None` once the session is closing.
                first = outbox.recv() => first,
                _ = &mut timer => None,
            };
            let first = match first {
                Some(frame) => frame,
                None if session.is_closing() => break,
                None => {
                    let now = Instant::now();
                    match liveness.due(now, liveness.next_ping()) {
                        Due::Idle => {
                            session.close(close::GOING_AWAY, "idle timeout");
                            break;
                        }
                        Due::Ping => {
                            liveness.pinged(now);
                            if sink.send(Message::Ping(Default::default())).await.is_err() {
                                return;
                            }
                        }
                        Due::Nothing => {}
                    }
                    timer.as_mut().reset(wake(liveness));
                    continue;
                }
            };
            // Boxed, with the watch for a close that cuts a stuck write short: that state
            // is only needed while a batch is written.
            let batch = Box::pin(async {
                tokio::select! {
                    biased;
                    _ = session.closing() => None,
                    written = write_batch(sink, outbox, first) => Some(written),
                }
            });
            match batch.await {
                None => break,
                Some(Ok(len)) => session.written(len),
                Some(Err(_)) => return,
            }
        }
        // A normal goodbye drains what is queued first; an overflow or error does not wait.
        if let Some((code, reason)) = session.close_reason() {
            Box::pin(drain_and_close(sink, outbox, code, reason)).await;
        }
    }
}

/// Write `first` and whatever else is queued, up to a batch, in one flush: the bytes written.
async fn write_batch(
    sink: &mut Sink,
    outbox: &mut Outbox,
    first: Utf8Bytes,
) -> Result<usize, tungstenite::Error> {
    let mut written = first.len();
    sink.feed(Message::Text(first)).await?;
    for _ in 1..MAX_BATCH {
        let Ok(next) = outbox.try_recv() else { break };
        written += next.len();
        sink.feed(Message::Text(next)).await?;
    }
    sink.flush().await?;
    Ok(written)
}

/// Write what a closing session still has queued (for a normal or going-away close),
/// then the close frame, within a bounded time.
///
/// When the peer closed first, tungstenite has queued its reply, the Close echoing the
/// peer's code, and refuses anything more: the first write fails and the flush after it
/// sends the reply (RFC 6455 §5.5.1: a Close is answered with a Close).
async fn drain_and_close(sink: &mut Sink, outbox: &mut Outbox, code: u16, reason: String) {
    let drain = async {
        if code == close::NORMAL || code == close::GOING_AWAY {
            while let Ok(next) = outbox.try_recv() {
                sink.feed(Message::Text(next)).await?;
            }
        }
        sink.send(close_frame(code, reason)).await
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.flush()).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn liveness(ping_ms: u64, idle_ms: u64) -> Liveness {
        Liveness::new(
            Duration::from_millis(ping_ms),
            Duration::from_millis(idle_ms),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn pings_fall_due_and_a_silent_peer_goes_idle() {
        let l = liveness(30_000, 90_000);
        let t0 = l.started;
        let ping = l.next_ping();
        assert_eq!(ping, Some(t0 + Duration::from_secs(30)));
        assert_eq!(l.next_wake(ping), ping);
        assert_eq!(l.due(t0 + Duration::from_secs(29), ping), Due::Nothing);
        assert_eq!(l.due(t0 + Duration::from_secs(30), ping), Due::Ping);
        // Silence for the whole idle timeout outranks a ping due at the same time.
        let late = Some(t0 + Duration::from_secs(90));
        assert_eq!(l.due(t0 + Duration::from_secs(90), late), Due::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn hearing_from_the_peer_moves_the_idle_deadline() {
        let l = liveness(0, 1_000);
        let t0 = l.started;
        assert_eq!(l.next_ping(), None);
        assert_eq!(l.next_wake(None), Some(t0 + Duration::from_secs(1)));
        l.heard(t0 + Duration::from_millis(700));
        // The timer set for t0 + 1 s fires and finds nothing due; the next wake is later.
        assert_eq!(l.due(t0 + Duration::from_secs(1), None), Due::Nothing);
        assert_eq!(l.next_wake(None), Some(t0 + Duration::from_millis(1_700)));
        assert_eq!(l.due(t0 + Duration::from_millis(1_700), None), Due::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ping_sets_the_next_one_an_interval_later() {
        let l = liveness(30_000, 0);
        let t0 = l.started;
        l.pinged(t0 + Duration::from_secs(31));
        assert_eq!(l.next_ping(), Some(t0 + Duration::from_secs(61)));
        assert_eq!(
            l.due(t0 + Duration::from_secs(60), l.next_ping()),
            Due::Nothing
        );
        assert_eq!(
            l.due(t0 + Duration::from_secs(61), l.next_ping()),
            Due::Ping
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_both_off_the_timer_never_wakes() {
        let l = liveness(0, 0);
        assert_eq!(l.next_wake(l.next_ping()), None);
        let far = l.started + Duration::from_secs(86_400);
        assert_eq!(l.due(far, None), Due::Nothing);
    }
}
