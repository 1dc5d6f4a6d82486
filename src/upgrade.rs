//! The WebSocket opening handshake (RFC 6455 §4.2), answered here rather than by axum's
//! extractor so each connection keeps its socket to the end: closing well needs the raw
//! stream (the write side shut down, the peer's last bytes drained), which axum's
//! `WebSocket` does not hand out.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// An upgraded connection's WebSocket, over the raw stream.
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// A request that asked for a WebSocket and may be answered with one.
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request is not a WebSocket upgrade, answered with the status RFC 6455 asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAnUpgrade {
    /// Not `GET` over HTTP/1.1.
    #[error("a WebSocket upgrade is a GET over HTTP/1.1")]
    Method,
    /// `Connection: upgrade` and `Upgrade: websocket` are missing.
    #[error("this is a WebSocket endpoint: the request must ask to upgrade to websocket")]
    Headers,
    /// No `Sec-WebSocket-Key`.
    #[error("Sec-WebSocket-Key is missing")]
    Key,
    /// A version other than 13.
    #[error("only WebSocket version 13 is supported")]
    Version,
    /// The HTTP connection cannot be taken over.
    #[error("this connection cannot be upgraded")]
    NotUpgradable,
}

impl IntoResponse for NotAnUpgrade {
    fn into_response(self) -> Response {
        let status = match self {
            NotAnUpgrade::Method => StatusCode::METHOD_NOT_ALLOWED,
            // RFC 6455 §4.4: a version the server does not speak gets 426 and the one it does.
            NotAnUpgrade::Version => {
                let mut response = (StatusCode::UPGRADE_REQUIRED, self.to_string()).into_response();
                let version = HeaderValue::from_static("13");
                response
                    .headers_mut()
                    .insert(header::SEC_WEBSOCKET_VERSION, version);
                return response;
            }
            NotAnUpgrade::NotUpgradable => StatusCode::UPGRADE_REQUIRED,
            NotAnUpgrade::Headers | NotAnUpgrade::Key => StatusCode::BAD_REQUEST,
        };
        (status, self.to_string()).into_response()
    }
}

/// Whether the comma-separated header `name` lists `token`, in any case.
fn lists(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

impl Upgrade {
    /// The upgrade `request` asks for, or why it is not one.
    pub fn of<B>(request: &mut axum::http::Request<B>) -> Result<Upgrade, NotAnUpgrade> {
        if request.method() != Method::GET || request.version() != Version::HTTP_11 {
            return Err(NotAnUpgrade::Method);
        }
        let headers = request.headers();
        if !lists(headers, header::CONNECTION, "upgrade")
            || !lists(headers, header::UPGRADE, "websocket")
        {
            return Err(NotAnUpgrade::Headers);
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err(NotAnUpgrade::Version);
        }
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or(NotAnUpgrade::Key)?
            .clone();
        let on_upgrade = request
            .extensions_mut()
            .remove::<OnUpgrade>()
            .ok_or(NotAnUpgrade::NotUpgradable)?;
        Ok(Upgrade { key, on_upgrade })
    }

    /// Answer `101 Switching Protocols` and, once the connection is handed over, run
    /// `serve` on its WebSocket (in a task of its own).
    pub fn accept<F, Fut>(self, config: WebSocketConfig, serve: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let accept = derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let io = TokioIo::new(upgraded);
                    let socket =
                        WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                    serve(socket).await;
                }
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(Body::empty())
            .expect("a valid response")
    }
}
