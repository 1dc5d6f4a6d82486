//! The small WebSocket client of the set-up, for both servers: loopback addresses only,
//! dialling from spread source addresses, tokens, the greeting, and a request sent and
//! its answer awaited (frames are read through `parley_protocol::view`).

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use parley_protocol::view::FrameView;
use parley_protocol::{ErrorCode, Request};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
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

/// What a setup request got back.
pub struct Answer {
    /// Conversation id from the ack, if any.
    pub conversation: Option<String>,
}

/// Send a parley request and wait for its answer, skipping every other frame; a
/// `rate_limited` refusal (a server given by URL keeps its limits) is retried.
pub async fn request(ws: &mut Ws, request: &Request) -> anyhow::Result<Answer> {
    let id = request.id.as_str();
    let frame = serde_json::to_string(request)?;
    for attempt in 0..20u32 {
        ws.send(Message::text(frame.clone())).await?;
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
            loop {
                let Some(next) = ws.next().await else {
                    bail!("connection closed during setup");
                };
                let Message::Text(text) = next? else { continue };
                match FrameView::parse(&text)? {
                    FrameView::Ack { id: got, result } if got == id => {
                        return Ok(Ok(Answer {
                            conversation: result.conversation_id().map(str::to_owned),
                        }))
                    }
                    FrameView::Error {
                        id: Some(got),
                        code,
                    } if got == id => return Ok(Err(code.into_owned())),
                    _ => {}
                }
            }
        })
        .await
        .with_context(|| format!("no answer to setup request {id}"))??;
        match answer {
            Ok(a) => return Ok(a),
            Err(code) if code == ErrorCode::RateLimited.as_str() => {
                tokio::time::sleep(Duration::from_millis(200 * (attempt as u64 + 1))).await;
            }
            Err(code) => bail!("setup request {id} refused: {code}"),
        }
    }
    bail!("setup request {id} kept being rate limited")
}

/// Wait for the first frame of a session (`hello` from parley, `joined` from the baseline).
pub async fn greeting(ws: &mut Ws) -> anyhow::Result<()> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(_))) => return Ok(()),
            Some(Ok(Message::Close(c))) => bail!("closed before greeting: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("closed before greeting"),
        }
    }
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
