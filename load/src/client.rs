//! The small WebSocket client of the set-up, for both servers: loopback addresses only,
//! dialling from spread source addresses, tokens, the greeting, and a request sent and
//! its answer awaited (through `parley-testkit`'s session, read as `parley-protocol`'s
//! owned frames: set-up is not the hot path).

use anyhow::{bail, Context};
use parley_protocol::{AckResult, ErrorCode, Request, ServerFrame};
use parley_testkit::Session;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

/// One client WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// The loopback address and port a `ws://` URL names; anything off loopback is refused.
pub fn loopback_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("ws://")
        .with_context(|| format!("{url}: only ws:// URLs are supported"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.replace("localhost", "127.0.0.1");
    let addr: SocketAddr = authority
        .parse()
        .with_context(|| format!("{url}: the host must be a loopback IP literal"))?;
    if !addr.ip().is_loopback() {
        bail!("{url}: load is only ever sent to loopback addresses (127.0.0.0/8, ::1)");
    }
    Ok(addr)
}

/// Check that a `postgres://` or `redis://` URL names a loopback host: the nodes the
/// harness starts talk only to servers on this machine.
pub fn loopback_service(url: &str) -> anyhow::Result<()> {
    let (_, rest) = url
        .split_once("://")
        .with_context(|| format!("{url}: expected SCHEME://HOST:PORT/…"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("{url}: the nodes are only ever pointed at loopback addresses (127.0.0.0/8, ::1)");
    }
    Ok(())
}

/// The `i`th of `count` loopback source addresses, 127.0.0.2 upwards: each gives another
/// ~28,000 ephemeral ports.
pub fn source_addr(i: usize, count: usize) -> Ipv4Addr {
    let n = (i % count.max(1)) as u32 + 2;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + n)
}

/// Small buffers: a load process holds thousands of these.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
}

/// Open a WebSocket to `url` from `source`, binding before connecting.
pub async fn dial(url: &str, source: Ipv4Addr) -> anyhow::Result<Ws> {
    let addr = loopback_addr(url)?;
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if addr.is_ipv4() {
        socket
            .bind(SocketAddr::new(source.into(), 0))
            .with_context(|| format!("bind {source}"))?;
    }
    let stream = socket.connect(addr).await.context("connect")?;
    stream.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(client_config()))
        .await
        .context("handshake")?;
    Ok(ws)
}

/// A parley token for `user`, valid for a day.
pub fn token(secret: &str, user: &str) -> String {
    parley_protocol::token::mint(
        secret.as_bytes(),
        user,
        false,
        std::time::Duration::from_secs(86_400),
    )
}

/// How long a setup request may take before the run gives up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A session while it is being set up: `parley-testkit`'s client, whose socket is handed
/// to a scenario once the set-up is done ([`Session::into_socket`]).
pub type SetupSession = Session<TcpStream>;

/// What a setup request got back.
pub struct Answer {
    /// Conversation id from the ack, if any.
    pub conversation: Option<String>,
}

/// Send a parley request and wait for its answer, other frames left unclaimed; a
/// `rate_limited` refusal (a server given by URL keeps its limits) is retried.
pub async fn request(session: &mut SetupSession, request: &Request) -> anyhow::Result<Answer> {
    let id = request.id.as_str();
    let frame = serde_json::to_value(request)?;
    for attempt in 0..20u32 {
        let answer = session
            .request(&frame, Instant::now() + REQUEST_TIMEOUT)
            .await
            .with_context(|| format!("setup request {id}"))?;
        match serde_json::from_value::<ServerFrame>(answer)? {
            ServerFrame::Ack { result, .. } => {
                return Ok(Answer {
                    conversation: conversation_of(result),
                })
            }
            ServerFrame::Error {
                code: ErrorCode::RateLimited,
                ..
            } => {
                tokio::time::sleep(Duration::from_millis(200 * (attempt as u64 + 1))).await;
            }
            ServerFrame::Error { code, message, .. } => {
                bail!("setup request {id} refused: {}: {message}", code.as_str())
            }
            other => bail!("setup request {id} answered by a {} frame", other.kind()),
        }
    }
    bail!("setup request {id} kept being rate limited")
}

/// The conversation an ack names: one created or found, or the one a message went into.
fn conversation_of(result: AckResult) -> Option<String> {
    match result {
        AckResult::Conversation { conversation } => Some(conversation.id),
        AckResult::Sent { message } => Some(message.conversation),
        _ => None,
    }
}

/// Wait for the first frame of a session (`hello` from parley, `joined` from the baseline).
pub async fn greeting(session: &mut SetupSession) -> anyhow::Result<()> {
    session
        .claim(Instant::now() + REQUEST_TIMEOUT, "the greeting", |_| true)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::loopback_service;

    #[test]
    fn services_must_be_on_loopback() {
        for ok in [
            "postgres://parley@127.0.0.1:5432/parley",
            "postgres://u:p@localhost/db",
            "redis://127.0.0.1:6379",
            "redis://[::1]:6379",
        ] {
            assert!(loopback_service(ok).is_ok(), "{ok}");
        }
        for bad in [
            "postgres://parley@10.0.0.5:5432/parley",
            "redis://db.example:6379",
            "redis://127.0.0.1.example:6379",
            "127.0.0.1:6379",
        ] {
            assert!(loopback_service(bad).is_err(), "{bad}");
        }
    }
}
