//! The accept loop: every TCP connection is admitted (see `admission`) before HTTP is
//! spoken on it, then served by hyper with a deadline for its request head.
//!
//! axum's own `serve` has no header timeout and no cap on connections, so a client that
//! sends half a request and stops holds its file descriptor for ever; this loop is the
//! same hyper connection with those bounds added.

use crate::admission::{Admission, Admitted, Handshake, Refused, Reserved};
use crate::forwarded::TrustedProxies;
use crate::tls::Tls;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Time an at-capacity connection has to ask for its health route.
const AT_CAPACITY_HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after an accept error (out of file descriptors, say) before accepting again, so
/// the loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Accept and serve connections (over TLS when `tls` is given) until `stop`; then finish
/// the plain HTTP requests in flight (upgraded sessions are the hub's to close) and return.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    admission: Arc<Admission>,
    proxies: Arc<TrustedProxies>,
    tls: Option<Tls>,
    stop: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let refusals = Throttled::default();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    refusals.log(|suppressed| tracing::warn!(error = %e, suppressed, "accept failed"));
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        // Frames are small and already batched by the writer: Nagle would only hold a
        // lone frame back until the peer's delayed ACK, tens of milliseconds.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        // A trusted proxy carries many clients' heads: it is not one address to cap.
        match admission.admit(peer.ip(), !proxies.trusts(peer.ip())) {
            Admitted::Serve(handshake) => {
                let router = router.clone();
                let stop = stop.clone();
                let tls = tls.clone();
                tracker.spawn(serve_admitted(tcp, peer, router, handshake, tls, stop));
            }
            Admitted::AtCapacity(reserved) => match tls.clone() {
                None => drop(tracker.spawn(answer_at_capacity(tcp, reserved))),
                Some(tls) => drop(tracker.spawn(async move {
                    let secured = tls.acceptor().accept(tcp);
                    if let Ok(Ok(io)) =
                        tokio::time::timeout(AT_CAPACITY_HEADER_TIMEOUT, secured).await
                    {
                        answer_at_capacity(io, reserved).await;
                    }
                })),
            },
            Admitted::Refused(why) => {
                refusals.log(|suppressed| {
                    tracing::info!(peer = %peer, reason = ?why, suppressed, "connection refused at accept")
                });
                refuse(tcp, why);
            }
        }
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// Serve one admitted connection, after its TLS handshake when there is TLS. The TLS
/// handshake is part of the request head: bounded by the same deadline, and evicted
/// like an unfinished head.
async fn serve_admitted(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    handshake: Handshake,
    tls: Option<Tls>,
    stop: CancellationToken,
) {
    let Some(tls) = tls else {
        return serve_connection(tcp, peer, router, handshake, stop).await;
    };
    let deadline = handshake.admission().limits().header_timeout;
    let secured = tokio::select! {
        secured = tokio::time::timeout(deadline, tls.acceptor().accept(tcp)) => secured,
        _ = handshake.evicted() => return,
        _ = stop.cancelled() => return,
    };
    match secured {
        Ok(Ok(io)) => serve_connection(io, peer, router, handshake, stop).await,
        Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
        Err(_) => {
            tracing::debug!(peer = %peer, "TLS handshake not finished within the header timeout")
        }
    }
}

/// Serve one admitted connection: its requests, and its upgrade to a session.
async fn serve_connection(
    io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    peer: SocketAddr,
    router: Router,
    handshake: Handshake,
    stop: CancellationToken,
) {
    let handshake = Arc::new(handshake);
    let on_request = handshake.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        on_request.head_read();
        request.extensions_mut().insert(ConnectInfo(peer));
        request
            .extensions_mut()
            .insert(SessionSlot(on_request.admission().clone()));
        router.clone().oneshot(request)
    });
    let header_timeout = handshake.admission().limits().header_timeout;
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(peer = %peer, error = %e, "HTTP connection ended");
            }
        }
        _ = handshake.evicted() => {
            tracing::debug!(peer = %peer, "unfinished request head evicted for a newer connection");
        }
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// The admission a session counts against, handed to the upgrade handler so the session
/// holds its connection slot for its whole life.
#[derive(Clone)]
pub struct SessionSlot(pub Arc<Admission>);

/// Answer one request at capacity: `/healthz` is alive, everything else is refused.
async fn answer_at_capacity(io: impl AsyncRead + AsyncWrite + Unpin, reserved: Reserved) {
    let service = hyper::service::service_fn(|request: hyper::Request<Incoming>| async move {
        let (status, body) = match request.uri().path() {
            "/healthz" => (hyper::StatusCode::OK, "ok (at capacity)\n"),
            _ => (hyper::StatusCode::SERVICE_UNAVAILABLE, "at capacity\n"),
        };
        hyper::Response::builder()
            .status(status)
            .header(hyper::header::RETRY_AFTER, "1")
            .body(axum::body::Body::from(body))
    });
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(AT_CAPACITY_HEADER_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), service)
        .await;
    drop(reserved);
}

/// Write the canned refusal if the socket takes it now, and close.
fn refuse(tcp: TcpStream, why: Refused) {
    let _ = tcp.try_write(why.response().as_bytes());
}

/// A log line at most once a second, saying how many were left out in between.
#[derive(Default)]
struct Throttled {
    last_second: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttled {
    fn log(&self, line: impl FnOnce(u64)) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.last_second.swap(now, Ordering::Relaxed) == now {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        line(self.suppressed.swap(0, Ordering::Relaxed));
    }
}
