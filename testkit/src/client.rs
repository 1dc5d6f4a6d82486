//! A WebSocket client for driving a server from outside: a request is answered by its
//! `id`, a frame is awaited by what it holds, and every wait is bounded by a deadline.
//!
//! Frames are read only while the caller waits for something, never in the background:
//! a test that stops reading a session is a slow consumer to the server, as a real client
//! would be. Every frame received is kept, claimed or not, so a failure can show what did
//! arrive.

use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The socket of a session opened by URL.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a client call did not get what it waited for.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket upgrade failed.
    #[error("WebSocket upgrade failed: {0}")]
    Open(tungstenite::Error),
    /// A frame could not be written.
    #[error("cannot send: {0}")]
    Send(tungstenite::Error),
    /// The server ended the session first (1005: no close frame, 1006: no close at all).
    #[error("the session closed ({code} {reason:?}) while waiting for {waiting_for}")]
    Closed {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
        /// What the caller was waiting for.
        waiting_for: String,
    },
    /// Nothing that fits came in time.
    #[error("no {waiting_for} within {waited:?}")]
    Timeout {
        /// What the caller was waiting for.
        waiting_for: String,
        /// How long it waited.
        waited: Duration,
    },
}

/// A frame the session received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The text as sent (binary frames are described, not decoded).
    pub text: String,
    /// The text parsed as JSON, when it is.
    pub json: Option<Value>,
    /// Whether a caller has claimed it.
    pub consumed: bool,
}

/// One open session (or one the server has closed).
pub struct Session<S = MaybeTlsStream<TcpStream>> {
    ws: WebSocketStream<S>,
    /// Every frame received, in order.
    pub frames: Vec<Received>,
    /// The close code and reason once the session ended (1006 when it ended without one).
    pub closed: Option<(u16, String)>,
    /// Every frame before this one is claimed: where a search starts.
    first_unclaimed: usize,
    ended: bool,
}

impl Session {
    /// Open a session at `url` (a token, if any, already in it).
    pub async fn open(url: &str) -> Result<Session, ClientError> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(ClientError::Open)?;
        Ok(Session::new(ws))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// A session over a socket the caller opened (with its own headers or source address).
    pub fn new(ws: WebSocketStream<S>) -> Session<S> {
        Session {
            ws,
            frames: Vec::new(),
            closed: None,
            first_unclaimed: 0,
            ended: false,
        }
    }

    /// The socket back, for a caller that reads it itself from here on; unclaimed frames go.
    pub fn into_socket(self) -> WebSocketStream<S> {
        self.ws
    }

    /// Write a text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<(), ClientError> {
        let text: String = text.into();
        self.ws
            .send(Message::Text(text.into()))
            .await
            .map_err(ClientError::Send)
    }

    /// Write a binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .map_err(ClientError::Send)
    }

    /// Send `request` (which carries an `id`) and wait until `deadline` for the `ack` or
    /// `error` with that id; other frames are kept unclaimed.
    pub async fn request(
        &mut self,
        request: &Value,
        deadline: Instant,
    ) -> Result<Value, ClientError> {
        let id = request["id"].clone();
        self.send_text(request.to_string()).await?;
        let answers = |f: &Value| (f["type"] == "ack" || f["type"] == "error") && f["id"] == id;
        self.claim(deadline, &format!("answer to {request}"), answers)
            .await
    }

    /// The first unclaimed JSON frame `accept` takes, waiting for it until `deadline`,
    /// and claimed so that no later wait sees it again.
    pub async fn claim(
        &mut self,
        deadline: Instant,
        waiting_for: &str,
        accept: impl FnMut(&Value) -> bool,
    ) -> Result<Value, ClientError> {
        let started = Instant::now();
        match self.find(deadline, accept).await {
            Some(at) => Ok(self.claim_at(at)),
            None => Err(match &self.closed {
                Some((code, reason)) => ClientError::Closed {
                    code: *code,
                    reason: reason.clone(),
                    waiting_for: waiting_for.to_owned(),
                },
                None => ClientError::Timeout {
                    waiting_for: waiting_for.to_owned(),
                    waited: deadline.saturating_duration_since(started),
                },
            }),
        }
    }

    /// Mark frame `at` claimed and return its JSON.
    pub fn claim_at(&mut self, at: usize) -> Value {
        self.frames[at].consumed = true;
        while self
            .frames
            .get(self.first_unclaimed)
            .is_some_and(|f| f.consumed)
        {
            self.first_unclaimed += 1;
        }
        self.frames[at].json.clone().unwrap_or_default()
    }

    /// The index of the first unclaimed JSON frame that `accept` takes, waiting for new
    /// frames until `deadline`; None when the time ran out or the session ended first.
    pub async fn find(
        &mut self,
        deadline: Instant,
        mut accept: impl FnMut(&Value) -> bool,
    ) -> Option<usize> {
        let mut scanned = self.first_unclaimed;
        loop {
            while scanned < self.frames.len() {
                let f = &self.frames[scanned];
                if !f.consumed && f.json.as_ref().is_some_and(&mut accept) {
                    return Some(scanned);
                }
                scanned += 1;
            }
            if !self.pump(deadline).await {
                return None;
            }
        }
    }

    /// Claim every unclaimed JSON frame `accept` takes, without waiting.
    pub fn take(&mut self, mut accept: impl FnMut(&Value) -> bool) -> Vec<Value> {
        self.drain();
        let hits: Vec<usize> = (self.first_unclaimed..self.frames.len())
            .filter(|&at| {
                let f = &self.frames[at];
                !f.consumed && f.json.as_ref().is_some_and(&mut accept)
            })
            .collect();
        hits.into_iter().map(|at| self.claim_at(at)).collect()
    }

    /// The JSON frames nobody has claimed yet, in order.
    pub fn unclaimed(&self) -> impl Iterator<Item = &Value> {
        self.frames
            .iter()
            .filter(|f| !f.consumed)
            .filter_map(|f| f.json.as_ref())
    }

    /// Wait until the server closes the session or `deadline` passes.
    pub async fn wait_closed(&mut self, deadline: Instant) -> Option<(u16, String)> {
        while self.closed.is_none() {
            if !self.pump(deadline).await {
                break;
            }
        }
        self.closed.clone()
    }

    /// Keep receiving until `deadline`, recording everything.
    pub async fn collect_until(&mut self, deadline: Instant) {
        while !self.ended && Instant::now() < deadline {
            self.pump(deadline).await;
        }
        tokio::time::sleep_until(deadline).await;
        self.drain();
    }

    /// Record every frame that has already arrived, without waiting.
    pub fn drain(&mut self) {
        while !self.ended {
            match self.ws.next().now_or_never() {
                Some(next) => self.record(next),
                None => break,
            }
        }
    }

    /// Close normally (1000) and wait until `deadline` for the server to answer and end
    /// the connection; the server's close code and reason, if it answered.
    pub async fn close(mut self, deadline: Instant) -> Option<(u16, String)> {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
        while !self.ended && self.pump(deadline).await {}
        self.closed
    }

    /// Take one event off the socket, waiting until `deadline`; false when none came
    /// (the time ran out or the session had ended).
    async fn pump(&mut self, deadline: Instant) -> bool {
        if self.ended {
            return false;
        }
        match tokio::time::timeout_at(deadline, self.ws.next()).await {
            Ok(next) => {
                self.record(next);
                true
            }
            Err(_) => false,
        }
    }

    fn record(&mut self, next: Option<Result<Message, tungstenite::Error>>) {
        let (text, binary) = match next {
            Some(Ok(Message::Text(t))) => (t.to_string(), false),
            Some(Ok(Message::Binary(b))) => (format!("<binary, {} bytes>", b.len()), true),
            Some(Ok(Message::Close(frame))) => {
                self.closed = Some(match frame {
                    Some(f) => (u16::from(f.code), f.reason.to_string()),
                    None => (1005, String::new()),
                });
                return;
            }
            Some(Ok(_)) => return,
            Some(Err(e)) => return self.end(e.to_string()),
            None => return self.end("connection dropped".into()),
        };
        let json = (!binary)
            .then(|| serde_json::from_str(&text).ok())
            .flatten();
        self.frames.push(Received {
            text,
            json,
            consumed: false,
        });
    }

    /// The socket is done: no more frames will come.
    fn end(&mut self, why: String) {
        self.ended = true;
        self.closed.get_or_insert((1006, why));
    }
}
