//! The listener: HTTP routes on one port, WebSocket upgrades handed to connection tasks,
//! and graceful shutdown.

use crate::accept::SessionSlot;
use crate::admission::{Admission, EdgeLimits};
use crate::config::Config;
use crate::connection;
use crate::forwarded::TrustedProxies;
use crate::hub::Hub;
use crate::origin::AllowedOrigins;
use crate::store::{MemoryStore, Store};
use crate::ticket::{TicketError, Tickets};
use crate::upgrade::Upgrade;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

/// Read buffer per connection: small, since most frames are small and there may be many.
const READ_BUFFER: usize = 4 * 1024;
/// Frames the writer feeds are gathered up to this size and leave in one socket write at
/// its flush; with 0 every frame would be a write of its own.
const WRITE_BUFFER: usize = 16 * 1024;
/// A socket that stops draining holds at most this much in tungstenite's buffer.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

#[derive(Clone)]
struct App {
    hub: Arc<Hub>,
    secret: Arc<[u8]>,
    per_address: Option<Arc<governor::DefaultKeyedRateLimiter<IpAddr>>>,
    origins: Arc<AllowedOrigins>,
    tickets: Arc<Tickets>,
    proxies: Arc<TrustedProxies>,
}

impl App {
    /// The client behind a connection from `peer`, and the trusted proxy it came through.
    fn client_of(
        &self,
        peer: SocketAddr,
        headers: &axum::http::HeaderMap,
    ) -> (SocketAddr, Option<SocketAddr>) {
        let client = self.proxies.client(peer.ip(), headers);
        if client == peer.ip() {
            (peer, None)
        } else {
            (SocketAddr::new(client, 0), Some(peer))
        }
    }

    /// Whether the client at `client` opens connections faster than its address may.
    fn too_fast(&self, client: SocketAddr) -> bool {
        self.per_address
            .as_ref()
            .is_some_and(|limiter| limiter.check_key(&client.ip()).is_err())
    }
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
    ticket: Option<String>,
}

async fn upgrade(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<WsQuery>,
    mut request: Request,
) -> Response {
    let upgrade = match Upgrade::of(&mut request) {
        Ok(upgrade) => upgrade,
        Err(not) => return not.into_response(),
    };
    if let Some(refused) = foreign_origin(&app.origins, &request, peer) {
        return refused;
    }
    if app.hub.shutting_down() {
        let status = axum::http::StatusCode::SERVICE_UNAVAILABLE;
        return (status, "shutting down; connect to another server\n").into_response();
    }
    let (client, via) = app.client_of(peer, request.headers());
    let too_fast = app.too_fast(client);
    let auth = if too_fast {
        Err(connection::Refusal::TooFast)
    } else if let Some(ticket) = q.ticket {
        app.tickets.redeem(&ticket).await.map_err(|e| match e {
            TicketError::Refused(why) => connection::Refusal::Unauthorized(why),
            TicketError::Unavailable(why) => connection::Refusal::Unavailable(why),
        })
    } else {
        let token = connection::presented_token(q.token, request.headers());
        connection::authenticate(&app.secret, token.as_deref())
    };
    let max = app.hub.limits().max_frame_bytes as usize;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let header = |name| {
        let value = request.headers().get(name)?;
        Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
    };
    let from = connection::Peer {
        addr: client,
        user_agent: header(axum::http::header::USER_AGENT),
        origin: header(axum::http::header::ORIGIN),
        via,
    };
    // The session keeps its connection counted against the cap once the HTTP side ends.
    let slot = request
        .extensions()
        .get::<SessionSlot>()
        .map(|SessionSlot(admission)| admission.hold());
    upgrade.accept(config, move |socket| async move {
        let _slot = slot;
        connection::serve(socket, app.hub, auth, from).await
    })
}

/// Trade the bearer token in `Authorization` for a one-time ticket for `/ws?ticket=`, so a
/// page need not put its token in a URL.
async fn ws_ticket(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Response {
    use axum::http::{header, StatusCode};
    let too_fast = app.too_fast(app.client_of(peer, &headers).0);
    let token = connection::presented_token(None, &headers);
    let (status, body) = match crate::auth::verify(&app.secret, token.as_deref()) {
        _ if too_fast => (
            StatusCode::TOO_MANY_REQUESTS,
            serde_json::json!({"code": "rate_limited", "message": "too many new connections from your address; try again later"}),
        ),
        Ok(claims) => {
            let (ticket, expires_in_s) = app.tickets.issue(&claims);
            let body = serde_json::json!({"ticket": ticket, "expires_in_s": expires_in_s});
            (StatusCode::OK, body)
        }
        Err(e) => {
            crate::metrics::login_refused(e.reason());
            let body = serde_json::json!({"code": "unauthorized", "message": e.to_string()});
            (StatusCode::UNAUTHORIZED, body)
        }
    };
    let headers = [
        (header::CACHE_CONTROL, "no-store"),
        (header::WWW_AUTHENTICATE, "Bearer"),
    ];
    (status, headers, axum::Json(body)).into_response()
}

/// A 403 for a browser page from an origin not allowed to connect.
fn foreign_origin(
    origins: &AllowedOrigins,
    request: &Request,
    peer: SocketAddr,
) -> Option<Response> {
    let text = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
    let origin = text(axum::http::header::ORIGIN);
    if origins.allows(origin, text(axum::http::header::HOST)) {
        return None;
    }
    let origin = origin.unwrap_or_default();
    crate::metrics::login_refused("origin");
    tracing::info!(peer = %peer, origin, "connection refused: origin not allowed");
    let body = format!("origin {origin} may not connect here (see --allowed-origins)\n");
    Some((axum::http::StatusCode::FORBIDDEN, body).into_response())
}

/// Ready once the state is loaded from storage (which `bind` does), while the storage a
/// cluster node shares answers, and until shutdown; the body says why when not.
async fn ready(State(app): State<App>) -> (axum::http::StatusCode, String) {
    match app.hub.unready().await {
        None => (axum::http::StatusCode::OK, "ready\n".to_owned()),
        Some(why) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// The metrics in Prometheus' text format, the working set's gauges as of now.
async fn metrics(State(app): State<App>) -> String {
    app.hub.gauge_working_set();
    crate::metrics::refresh_process();
    crate::metrics::handle().render()
}

/// A server bound to its address and ready to run.
pub struct Server {
    listener: TcpListener,
    hub: Arc<Hub>,
    secret: Arc<[u8]>,
    per_address: u32,
    grace: std::time::Duration,
    edge: EdgeLimits,
    origins: Arc<AllowedOrigins>,
    proxies: Arc<TrustedProxies>,
    demo: bool,
    /// A separate listener for `/metrics`, off the public port.
    metrics: Option<TcpListener>,
    tls: Option<crate::tls::Tls>,
}

impl Server {
    /// Bind the listener and build the hub over an in-memory store.
    pub async fn bind(config: &Config) -> std::io::Result<Server> {
        Self::bind_with_store(config, Arc::new(MemoryStore::default())).await
    }

    /// Bind the listener and build the hub over `store`.
    pub async fn bind_with_store(
        config: &Config,
        store: Arc<dyn Store>,
    ) -> std::io::Result<Server> {
        let hub = Hub::start(
            config.limits,
            store,
            config.max_queue_bytes,
            config.cache_entries,
        )
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        Self::bind_with_hub(config, hub).await
    }

    /// Bind the listener in front of a hub already built (a cluster node, say).
    pub async fn bind_with_hub(config: &Config, hub: Arc<Hub>) -> std::io::Result<Server> {
        crate::metrics::handle();
        let listener = listen(config.listen)?;
        let metrics = match config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Ok(Server {
            listener,
            hub,
            secret: config.secret.clone().into(),
            per_address: config.connections_per_ip_per_second,
            grace: config.shutdown_grace,
            edge: config.edge,
            origins: Arc::new(config.allowed_origins.clone()),
            proxies: Arc::new(config.trusted_proxies.clone()),
            demo: false,
            metrics,
            tls: config.tls.clone(),
        })
    }

    /// Serve `/demo/token`, which hands a token for any handle to anyone who asks; refused
    /// unless the server listens on a loopback address, where only this machine can ask.
    pub fn enable_demo(&mut self) -> Result<(), String> {
        crate::web::check_demo_address(self.local_addr())?;
        self.demo = true;
        Ok(())
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Where `/metrics` is served when not on the main port.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The hub, for tests that look inside.
    pub fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }

    /// Serve until `shutdown` resolves, then close every session with 1001 and wait (at
    /// most the shutdown grace) for them to finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let burst = self.per_address.saturating_mul(10);
        let web = crate::web::router(self.demo.then(|| self.secret.clone()));
        let per_address = crate::hub::rate_limiter(self.per_address, burst).map(Arc::new);
        if let Some(limiter) = &per_address {
            tokio::spawn(forget_refilled_addresses(Arc::downgrade(limiter)));
        }
        let tickets = Arc::new(Tickets::new(&self.secret, self.hub.ledger()));
        let app = App {
            hub: self.hub.clone(),
            secret: self.secret,
            per_address,
            origins: self.origins,
            tickets,
            proxies: self.proxies.clone(),
        };
        let mut router = Router::new()
            .route("/ws", get(upgrade))
            .route("/ws-ticket", post(ws_ticket))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(ready));
        // Scraped where the operator says: on its own listener it is not on the public port.
        let metrics_server = match self.metrics {
            Some(listener) => {
                let scrape = Router::new()
                    .route("/metrics", get(metrics))
                    .with_state(app.clone());
                Some(tokio::spawn(
                    async move { axum::serve(listener, scrape).await },
                ))
            }
            None => {
                router = router.route("/metrics", get(metrics));
                None
            }
        };
        let router = router.with_state(app).merge(web);
        let admission = Admission::new(self.edge);
        tracing::debug!(cap = admission.connection_cap(), "open connections capped");
        let accepting = CancellationToken::new();
        // Upgraded connections are not the accept loop's to wait for: once the listener is
        // closed this ends as soon as the plain HTTP requests in flight are answered.
        let serving = tokio::spawn(crate::accept::serve(
            self.listener,
            router,
            admission,
            self.proxies,
            self.tls,
            accepting.clone(),
        ));
        shutdown.await;
        // Refused from here on: new connections (the listener is closed at once, so a client
        // reconnects to another server, not this one) and upgrades already in flight.
        self.hub.begin_shutdown();
        accepting.cancel();
        tracing::info!("shutting down: no new connections; closing sessions");
        close_sessions(&self.hub, self.grace).await;
        if let Some(scrape) = metrics_server {
            scrape.abort();
        }
        match tokio::time::timeout(self.grace, serving).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(std::io::Error::other(e)),
            Err(_) => {
                tracing::warn!("HTTP requests still in flight after the shutdown grace");
                Ok(())
            }
        }
    }
}

/// Close every session with 1001 and wait, at most `grace`, for them to finish.
async fn close_sessions(hub: &Hub, grace: std::time::Duration) {
    hub.sessions()
        .close_all(parley_protocol::close::GOING_AWAY, "server shutting down");
    let drained = async {
        while hub.sessions().live() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        let left = hub.sessions().live();
        tracing::warn!(left, "sessions still open after the shutdown grace");
    }
}

/// Drop the buckets of addresses that have refilled, now and then, so the limiter holds
/// the addresses connecting lately, not every address ever seen. Ends with the server.
async fn forget_refilled_addresses(
    limiter: std::sync::Weak<governor::DefaultKeyedRateLimiter<IpAddr>>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        tick.tick().await;
        let Some(limiter) = limiter.upgrade() else {
            return;
        };
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

/// A server running in the background, for tests and embedding.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its hub.
    pub hub: Arc<Hub>,
    /// Where `/metrics` is served when `Config::metrics_listen` moved it off `addr`.
    pub metrics_addr: Option<SocketAddr>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// The WebSocket URL for a token.
    pub fn url(&self, token: &str) -> String {
        format!("ws://{}/ws?token={token}", self.addr)
    }

    /// Shut down and wait for the listener to stop.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Pending connections the kernel may hold before the server accepts them (Linux caps it
/// at `net.core.somaxconn`). tokio's default of 1,024 overflows when a few thousand clients
/// reconnect at once, say after a restart; each dropped handshake then waits a whole
/// second for the client's SYN to be retransmitted.
const LISTEN_BACKLOG: u32 = 4096;

/// Bind the listening socket, with the address reusable as soon as an old server is gone.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Start a server in the background on the current runtime, over an in-memory store.
pub async fn spawn(config: &Config) -> std::io::Result<Running> {
    spawn_with_store(config, Arc::new(MemoryStore::default())).await
}

/// Start a server in the background over `store`, its state rebuilt from it.
pub async fn spawn_with_store(config: &Config, store: Arc<dyn Store>) -> std::io::Result<Running> {
    let server = Server::bind_with_store(config, store).await?;
    let addr = server.local_addr();
    let metrics_addr = server.metrics_addr();
    let hub = server.hub();
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let task = tokio::spawn(server.run(async move { signal.cancelled().await }));
    Ok(Running {
        addr,
        hub,
        metrics_addr,
        stop,
        task,
    })
}
