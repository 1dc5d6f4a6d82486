//! The bare baseline: a room-broadcast server with nothing else. A client joins the room
//! named in its URL path (`/room/NAME`), gets `{"type":"joined"}`, and every text frame it
//! sends goes, unchanged, to every other member of that room. No auth, no storage, no
//! ordering beyond what one sender's socket gives, one socket write per frame.

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

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
    let _ = tx.send(Message::text(r#"{"type":"joined"}"#));
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
