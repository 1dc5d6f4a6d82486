//! `connect`: every session connected and greeted, then held idle (answering pings) for
//! the run's length, so the server's memory per connection can be read.

use crate::client::Ws;
use crate::setup::Opened;
use crate::stats::{bump, Shared};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Hold every session until `until`.
pub async fn play(opened: Vec<Opened>, shared: &Arc<Shared>, until: Instant) {
    let stop = CancellationToken::new();
    let mut holders = tokio::task::JoinSet::new();
    for group in opened {
        for ws in group.sessions {
            holders.spawn(hold(ws, shared.clone(), stop.clone()));
        }
    }
    tokio::time::sleep_until(until.into()).await;
    stop.cancel();
    while holders.join_next().await.is_some() {}
}

/// Keep an idle session open, answering pings, until the hold ends.
async fn hold(mut ws: Ws, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            next = ws.next() => match next {
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    return shared.error(&format!("closed_{code}"));
                }
                Some(Ok(_)) => bump(&shared.other),
                Some(Err(_)) | None => return shared.error("connection_lost"),
            }
        }
    }
}
