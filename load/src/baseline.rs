//! The bare baseline: a room-broadcast server with nothing else. A client joins the room
//! named in its URL path (`/room/NAME`), gets `{"type":"joined"}`, and every text frame it
//! sends goes, unchanged, to every other member of that room. No auth, no storage, no
//! ordering beyond what one sender's socket gives, one socket write per frame.
//!
//! The frames the harness sends through it, and so receives from it, keep the shape of
//! parley's: [`Forwarded`] is parley's `message` frame cut down to the fields the harness
//! reads (a room in place of the conversation, no id, times or kind), and `joined` is one
//! more `type`. One reading, `parley_protocol::view::FrameView`, serves both servers.

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// What a harness session sends into its room: the shape of parley's `message` frame
/// (`{"type":"message","message":{…}}`), with the fields the harness reads back.
#[derive(Debug, Serialize)]
pub struct Forwarded<'a> {
    /// Always `message`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The message.
    pub message: RoomMessage<'a>,
}

/// The message of a [`Forwarded`] frame: the fields of parley's `MessageView` the harness
/// reads, plus the sender.
#[derive(Debug, Serialize)]
pub struct RoomMessage<'a> {
    /// The room, where parley has the conversation.
    pub conversation: &'a str,
    /// Always 0: the baseline numbers nothing (the harness orders by the body's counter).
    pub seq: u64,
    /// The sending session's slot in its group.
    pub sender: &'a str,
    /// A load body.
    pub body: &'a str,
}

impl<'a> Forwarded<'a> {
    /// A frame for `room` from `sender`.
    pub fn new(room: &'a str, sender: &'a str, body: &'a str) -> Self {
        Forwarded {
            kind: "message",
            message: RoomMessage {
                conversation: room,
                seq: 0,
                sender,
                body,
            },
        }
    }
}

/// The frame a member gets once it is in its room.
const JOINED: &str = r#"{"type":"joined"}"#;

type Rooms = Arc<Mutex<HashMap<String, Vec<(u64, mpsc::UnboundedSender<Message>)>>>>;

/// Serve on `listen` (loopback only) until the process is stopped.
pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(
        listen.ip().is_loopback(),
        "the baseline listens on loopback only"
    );
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    // Tools that start the baseline on port 0 read this line to find it.
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let rooms = Rooms::default();
    let ids = AtomicU64::new(0);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors or similar: keep serving those already connected.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = ids.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(member(stream, rooms.clone(), id));
    }
}

// The handshake callback's error type is tungstenite's, large by its design.
#[allow(clippy::result_large_err)]
async fn member(stream: TcpStream, rooms: Rooms, id: u64) {
    let mut path = String::new();
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_owned();
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let room = path.strip_prefix("/room/").unwrap_or("lobby").to_owned();
    let (tx, mut rx) = mpsc::unbounded_channel();
    rooms
        .lock()
        .expect("unpoisoned")
        .entry(room.clone())
        .or_default()
        .push((id, tx.clone()));
    let _ = tx.send(Message::text(JOINED));
    let (mut sink, mut stream) = ws.split();
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if sink.send(frame).await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(frame)) = stream.next().await {
        match frame {
            Message::Text(_) => {
                let rooms = rooms.lock().expect("unpoisoned");
                for (peer, tx) in rooms.get(&room).into_iter().flatten() {
                    if *peer != id {
                        let _ = tx.send(frame.clone());
                    }
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    let mut rooms = rooms.lock().expect("unpoisoned");
    if let Some(members) = rooms.get_mut(&room) {
        members.retain(|(peer, _)| *peer != id);
        if members.is_empty() {
            rooms.remove(&room);
        }
    }
    writer.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_protocol::view::FrameView;

    #[test]
    fn its_frames_read_as_parleys() {
        let text = serde_json::to_string(&Forwarded::new("abc-g1", "3", "L 3 1 2 x")).unwrap();
        assert_eq!(
            text,
            r#"{"type":"message","message":{"conversation":"abc-g1","seq":0,"sender":"3","body":"L 3 1 2 x"}}"#
        );
        let FrameView::Message(m) = FrameView::parse(&text).unwrap() else {
            panic!("not a message: {text}");
        };
        assert_eq!(
            (&*m.conversation, m.seq, m.body.as_deref()),
            ("abc-g1", 0, Some("L 3 1 2 x"))
        );
        assert_eq!(
            FrameView::parse(JOINED).unwrap(),
            FrameView::Other("joined".into())
        );
    }
}
