//! One WebSocket session: a reader task records every frame and the close; the scenario
//! consumes recorded frames by pattern.

use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A frame the session received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The text as sent (binary frames are described, not decoded).
    pub text: String,
    /// The text parsed as JSON, when it is.
    pub json: Option<Value>,
    /// Whether a step has consumed it.
    pub consumed: bool,
}

enum Event {
    Frame(String, bool),
    Closed(u16, String),
}

/// An open (or closed by the server) session.
pub struct Conn {
    sink: SplitSink<Ws, Message>,
    events: mpsc::UnboundedReceiver<Event>,
    /// Every frame received, in order.
    pub frames: Vec<Received>,
    /// The close code and reason, once the session ended (1006 when without a close frame).
    pub closed: Option<(u16, String)>,
    ended: bool,
}

impl Conn {
    /// Open a session at `url` (the token is already in it, if any).
    pub async fn open(url: &str) -> Result<Conn, String> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| format!("WebSocket upgrade failed: {e}"))?;
        let (sink, mut stream) = ws.split();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut close = None;
            while let Some(next) = stream.next().await {
                match next {
                    Ok(Message::Text(t)) => {
                        let _ = tx.send(Event::Frame(t.to_string(), false));
                    }
                    Ok(Message::Binary(b)) => {
                        let _ = tx.send(Event::Frame(format!("<binary, {} bytes>", b.len()), true));
                    }
                    Ok(Message::Close(frame)) => {
                        close = Some(match frame {
                            Some(f) => (u16::from(f.code), f.reason.to_string()),
                            None => (1005, String::new()),
                        });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        close.get_or_insert((1006, e.to_string()));
                        break;
                    }
                }
            }
            let (code, reason) = close.unwrap_or((1006, "connection dropped".into()));
            let _ = tx.send(Event::Closed(code, reason));
        });
        Ok(Conn {
            sink,
            events,
            frames: Vec::new(),
            closed: None,
            ended: false,
        })
    }

    /// Write a text frame.
    pub async fn send_text(&mut self, text: String) -> Result<(), String> {
        self.sink
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| format!("cannot send: {e}"))
    }

    /// Write a binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        self.sink
            .send(Message::Binary(bytes.into()))
            .await
            .map_err(|e| format!("cannot send: {e}"))
    }

    /// Close normally and stop reading.
    pub async fn close(mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        let _ = self.sink.send(Message::Close(Some(frame))).await;
        let _ = self.sink.close().await;
    }

    /// Take one event, waiting until `deadline`; false when none came (timeout or end).
    async fn pump(&mut self, deadline: Instant) -> bool {
        if self.ended {
            return false;
        }
        match tokio::time::timeout_at(deadline, self.events.recv()).await {
            Ok(event) => self.record(event),
            Err(_) => false,
        }
    }

    fn record(&mut self, event: Option<Event>) -> bool {
        match event {
            Some(Event::Frame(text, binary)) => {
                let json = if binary {
                    None
                } else {
                    serde_json::from_str(&text).ok()
                };
                self.frames.push(Received {
                    text,
                    json,
                    consumed: false,
                });
                true
            }
            Some(Event::Closed(code, reason)) => {
                self.closed = Some((code, reason));
                self.ended = true;
                true
            }
            None => {
                self.ended = true;
                false
            }
        }
    }

    /// Take every event already queued, without waiting.
    pub fn drain(&mut self) {
        while !self.ended {
            match self.events.try_recv() {
                Ok(event) => {
                    self.record(Some(event));
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.record(None);
                }
            }
        }
    }

    /// The index of the first unconsumed JSON frame that `accept` takes, waiting for new
    /// frames until `deadline`.
    pub async fn find(
        &mut self,
        deadline: Instant,
        mut accept: impl FnMut(&Value) -> bool,
    ) -> Option<usize> {
        let mut scanned = 0;
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
}
