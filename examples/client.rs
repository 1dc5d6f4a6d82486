//! A minimal interactive parley client: each line on stdin is sent as a text frame,
//! each frame received is printed on stdout.
//!
//! ```text
//! cargo run --example client -- ws://127.0.0.1:8080/ws?token=$(parley token alice)
//! ```

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: client ws://HOST:PORT/ws?token=TOKEN"))?;
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let (mut tx, mut rx) = ws.split();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) if !line.trim().is_empty() => tx.send(Message::Text(line.into())).await?,
                Some(_) => {}
                None => break,
            },
            frame = rx.next() => match frame {
                Some(Ok(Message::Text(text))) => println!("{text}"),
                Some(Ok(Message::Close(frame))) => {
                    println!("closed: {frame:?}");
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => break,
            },
        }
    }
    Ok(())
}
