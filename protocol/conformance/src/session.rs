//! One WebSocket session of a scenario's actor: `parley-testkit`'s client, which keeps
//! every frame received so that a scenario consumes them by pattern and a failure lists
//! what arrived, with the runner's errors as text.

use parley_testkit::Session;
use std::ops::{Deref, DerefMut};
use std::time::Duration;
use tokio::time::Instant;

/// How long a closing session waits for the server to answer its close.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

/// An open (or closed by the server) session.
pub struct Conn(Session);

impl Conn {
    /// Open a session at `url` (the token is already in it, if any).
    pub async fn open(url: &str) -> Result<Conn, String> {
        Session::open(url)
            .await
            .map(Conn)
            .map_err(|e| e.to_string())
    }

    /// Write a text frame.
    pub async fn send_text(&mut self, text: String) -> Result<(), String> {
        self.0.send_text(text).await.map_err(|e| e.to_string())
    }

    /// Write a binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        self.0.send_binary(bytes).await.map_err(|e| e.to_string())
    }

    /// Close normally, giving the server a moment to answer.
    pub async fn close(self) {
        self.0.close(Instant::now() + CLOSE_WITHIN).await;
    }
}

impl Deref for Conn {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.0
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Session {
        &mut self.0
    }
}
