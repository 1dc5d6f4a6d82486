//! `parley probe`: ask a running server whether it is ready, for health checks in images
//! that carry no shell, curl or wget (the release image holds only the `parley` binary).
//! A server on TLS is asked over TLS, trusting only the certificate in its own file.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a probe failed: the exit status and the line it prints say which.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Nothing answered (refused, unreachable, or no answer within the timeout).
    #[error("no answer from {addr}: {why}")]
    NoAnswer { addr: SocketAddr, why: String },
    /// The server answered, but not `200`.
    #[error("{path} answered {status}: {body}")]
    NotReady {
        path: String,
        status: u16,
        body: String,
    },
}

/// The address a server listening on `listen` is reached at from its own host: a
/// wildcard address (`0.0.0.0`, `::`) is not one to connect to.
pub fn local_target(listen: SocketAddr) -> SocketAddr {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// `GET path` from the server at `addr` within `timeout` (over TLS with `tls`, which
/// accepts only the server's own certificate); the body when it answers 200.
pub async fn probe(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Result<String, ProbeError> {
    let no_answer = |why: String| ProbeError::NoAnswer { addr, why };
    let asked = tokio::time::timeout(timeout, ask(addr, path, tls)).await;
    let answer = match asked {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Err(no_answer(e.to_string())),
        Err(_) => return Err(no_answer(format!("nothing within {timeout:?}"))),
    };
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| no_answer(format!("not an HTTP answer: {head:?}")))?;
    let body = body.trim().to_owned();
    if status == 200 {
        Ok(body)
    } else {
        Err(ProbeError::NotReady {
            path: path.to_owned(),
            status,
            body,
        })
    }
}

/// One HTTP/1.1 request with `Connection: close`, read to the end.
async fn ask(
    addr: SocketAddr,
    path: &str,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> std::io::Result<String> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    match tls {
        None => exchange(tcp, addr, path).await,
        Some(connector) => {
            // The name is not checked (the certificate is pinned), only sent.
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            exchange(connector.connect(name, tcp).await?, addr, path).await
        }
    }
}

async fn exchange(
    mut io: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    addr: SocketAddr,
    path: &str,
) -> std::io::Result<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    io.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    // A TLS peer may close without close_notify once it has answered: what arrived counts.
    match io.take(64 * 1024).read_to_end(&mut answer).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}
