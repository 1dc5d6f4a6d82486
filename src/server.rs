//! The listener: HTTP routes on one port, WebSocket upgrades handed to connection tasks,
//! and graceful shutdown.

use crate::config::Config;
use crate::connection;
use crate::hub::Hub;
use crate::store::{MemoryStore, Store};
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Read buffer per connection: small, since most frames are small and there may be many.
const READ_BUFFER: usize = 8 * 1024;

#[derive(Clone)]
struct App {
    hub: Arc<Hub>,
    secret: Arc<[u8]>,
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
}

async fn upgrade(
    State(app): State<App>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let token = connection::presented_token(q.token, &headers);
    let auth = connection::authenticate(&app.secret, token.as_deref());
    let max = app.hub.limits().max_frame_bytes as usize;
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| connection::serve(socket, app.hub, auth))
}

/// A server bound to its address and ready to run.
pub struct Server {
    listener: TcpListener,
    hub: Arc<Hub>,
    secret: Arc<[u8]>,
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
        let listener = TcpListener::bind(config.listen).await?;
        let hub = Hub::start(config.limits, store, config.max_queue_bytes)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Server {
            listener,
            hub,
            secret: config.secret.clone().into(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The hub, for tests that look inside.
    pub fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }

    /// Serve until `shutdown` resolves, then close every session with 1001.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = App {
            hub: self.hub.clone(),
            secret: self.secret,
        };
        let router = Router::new()
            .route("/ws", get(upgrade))
            .route("/healthz", get(|| async { "ok\n" }))
            .with_state(app);
        let hub = self.hub.clone();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            hub.sessions()
                .close_all(parley_protocol::close::GOING_AWAY, "server shutting down");
            stop.cancel();
        });
        axum::serve(self.listener, router)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await
    }
}

/// A server running in the background, for tests and embedding.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its hub.
    pub hub: Arc<Hub>,
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

/// Start a server in the background on the current runtime, over an in-memory store.
pub async fn spawn(config: &Config) -> std::io::Result<Running> {
    spawn_with_store(config, Arc::new(MemoryStore::default())).await
}

/// Start a server in the background over `store`, its state rebuilt from it.
pub async fn spawn_with_store(config: &Config, store: Arc<dyn Store>) -> std::io::Result<Running> {
    let server = Server::bind_with_store(config, store).await?;
    let addr = server.local_addr();
    let hub = server.hub();
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let task = tokio::spawn(server.run(async move { signal.cancelled().await }));
    Ok(Running {
        addr,
        hub,
        stop,
        task,
    })
}
