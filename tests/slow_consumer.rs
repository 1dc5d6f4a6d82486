//! One client that never reads while 500 others exchange messages: the others' delivery
//! latency stays bounded, the stuck client is cut off, and nothing waits for it.

mod support;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const GROUPS: usize = 50;
const MEMBERS: usize = 10;
const SENDS: usize = 6;
/// Each member sends one message per PACE: about 330 sends/s and 3,000 deliveries/s in
/// all, well within what even a busy 2-core machine serves, so the figure shows the stuck
/// client's effect rather than a saturated test.
const PACE: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_client_is_cut_off_and_the_others_stay_fast() {
    // A small queue budget (a setting) so the stuck client overflows quickly.
    let server = Arc::new(support::start_with(|c| c.max_queue_bytes = 256 * 1024).await);
    let started = Instant::now();
    // The stuck user is copied on every group, so it is sent far more than its queue holds.
    let stuck = server.raw(Some(&server.token("stuck"))).await;

    let mut clients = Vec::new();
    for g in 0..GROUPS {
        for m in 0..MEMBERS {
            let user = format!("g{g}m{m}");
            let mut ws = server.raw(Some(&server.token(&user))).await;
            ws.next().await.expect("hello").expect("hello");
            clients.push((user, ws));
        }
    }
    let mut conversations = Vec::new();
    for g in 0..GROUPS {
        let cc: Vec<String> = (2..MEMBERS)
            .map(|m| format!("g{g}m{m}"))
            .chain(["stuck".into()])
            .collect();
        let request = json!({"id": "open", "type": "inmail", "to": format!("g{g}m1"), "cc": cc, "body": "welcome"});
        let ws = &mut clients[g * MEMBERS].1;
        ws.send(Message::Text(request.to_string().into()))
            .await
            .unwrap();
        let conv = loop {
            let Some(Ok(Message::Text(t))) = ws.next().await else {
                panic!("closed")
            };
            let f: Value = serde_json::from_str(t.as_str()).unwrap();
            if f["id"] == "open" {
                break f["result"]["message"]["conversation"].clone();
            }
        };
        conversations.push(conv);
    }

    // Every member sends SENDS messages into its group and reads everything the others send.
    let body = "x".repeat(1000);
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(n, client)| {
            let conv = conversations[n / MEMBERS].clone();
            let body = body.clone();
            tokio::spawn(async move { member(client, conv, body, started).await })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("member task"));
    }
    latencies.sort_unstable();
    let expected = GROUPS * MEMBERS * (MEMBERS - 1) * SENDS;
    assert_eq!(
        latencies.len(),
        expected,
        "every healthy session got every message"
    );
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let (p50, p99, max) = (pct(0.50), pct(0.99), *latencies.last().unwrap());
    eprintln!(
        "slow consumer: {expected} deliveries to 500 healthy sessions; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0,
        max as f64 / 1000.0
    );
    assert!(
        p99 < 5_000_000,
        "p99 {p99} µs: the stuck client must not stall the others"
    );
    assert_eq!(
        server.running.hub.sessions().count("stuck"),
        0,
        "the stuck client was cut off"
    );
    drop(stuck);
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn member(client: (String, Ws), conv: Value, body: String, started: Instant) -> Vec<u64> {
    let (mut latencies, mut sent, mut acked) = (Vec::new(), 0, 0);
    let want = (MEMBERS - 1) * SENDS;
    let (me, ws) = client;
    let (mut tx, mut rx) = ws.split();
    // Senders are paced, so the latency measured is the server's, not a saturated client's.
    let mut pace = tokio::time::interval(PACE);
    while latencies.len() < want || acked < SENDS {
        let msg = tokio::select! {
            _ = pace.tick(), if sent < SENDS => {
                let stamp = started.elapsed().as_micros();
                let frame = json!({"id": format!("{me}-{sent}"), "type": "send", "conversation": conv, "body": format!("{stamp} {body}")});
                tx.send(Message::Text(frame.to_string().into())).await.unwrap();
                sent += 1;
                continue;
            }
            msg = tokio::time::timeout(Duration::from_secs(30), rx.next()) => msg.expect("traffic keeps flowing"),
        };
        let Some(Ok(Message::Text(text))) = msg else {
            continue;
        };
        let frame: Value = serde_json::from_str(text.as_str()).unwrap();
        match frame["type"].as_str() {
            Some("message")
                if frame["message"]["sender"] != me.as_str()
                    && frame["message"]["body"] != "welcome" =>
            {
                let stamp: u128 = frame["message"]["body"]
                    .as_str()
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                latencies.push((started.elapsed().as_micros() - stamp) as u64);
            }
            Some("ack") => acked += 1,
            Some("error") => panic!("{me}: {frame}"),
            _ => {}
        }
    }
    latencies
}
