//! A TCP relay a test can stall: every byte between a client and its upstream passes
//! through it, and while it is paused none does, though every connection stays open. That
//! is what a paused or partitioned database or broker looks like from the client's side,
//! without stopping the server other tests of the binary share.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A relay on a loopback port to one upstream address; stops with the test's runtime.
pub struct Relay {
    /// Where clients connect instead of the upstream.
    pub addr: SocketAddr,
    paused: watch::Sender<bool>,
}

impl Relay {
    /// Relay from a fresh loopback port to `upstream`.
    pub async fn to(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (paused, watching) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pass(cr, sw, watching.clone()));
                tokio::spawn(pass(sr, cw, watching.clone()));
            }
        });
        Relay { addr, paused }
    }

    /// Stop (`true`) or resume (`false`) passing bytes; what arrives meanwhile is held.
    pub fn pause(&self, on: bool) {
        self.paused.send_replace(on);
    }
}

/// Copy `from` to `to`, holding each chunk while the relay is paused.
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else {
            return;
        };
        if n == 0 || paused.wait_for(|p| !p).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
