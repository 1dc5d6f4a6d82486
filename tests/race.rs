//! The read-vs-recall race: run many times concurrently over real sockets, exactly one
//! of the two requests wins and every session sees that same outcome.

mod support;

use serde_json::{json, Value};
use support::Client;

const PAIRS: usize = 20;
const ROUNDS: usize = 50;

fn kinds(frames: &[Value]) -> Vec<&str> {
    frames.iter().map(|f| f["type"].as_str().unwrap()).collect()
}

/// Frames a session got about message `id` since the last check.
async fn about(c: &mut Client, id: &Value) -> Vec<Value> {
    let mut got = Vec::new();
    for kind in ["recalled", "read", "recall_closed"] {
        got.extend(
            c.drain(kind)
                .await
                .into_iter()
                .filter(|f| &f["message"] == id),
        );
    }
    c.drain("notification_retracted").await;
    c.drain("notification").await;
    got
}

async fn pair(server: &support::TestServer, n: usize) -> (usize, usize) {
    let (a, b) = (format!("racer-a{n}"), format!("racer-b{n}"));
    let (mut a1, mut b1) = server.connected_pair(&a, &b).await;
    let mut a2 = server.connect(&a).await;
    let mut b2 = server.connect(&b).await;
    let (mut recalls, mut reads) = (0, 0);
    for round in 0..ROUNDS {
        let m = a1.dm(&b, &format!("round {round}")).await;
        for c in [&mut a2, &mut b1, &mut b2] {
            assert_eq!(c.expect("message").await["message"]["id"], m["id"]);
        }
        let (conv, id) = (m["conversation"].clone(), m["id"].clone());
        let recall = json!({"type": "recall", "conversation": conv, "message": id});
        let read = json!({"type": "read", "conversation": conv, "message": id});
        let (recall_answer, read_answer) = tokio::join!(a1.request(recall), b1.request(read));
        let recall_won = recall_answer["type"] == "ack";
        let read_won = read_answer["type"] == "ack";
        assert!(
            recall_won != read_won,
            "exactly one must win: recall {recall_answer}, read {read_answer}"
        );
        let seen = [
            about(&mut a1, &id).await,
            about(&mut a2, &id).await,
            about(&mut b1, &id).await,
            about(&mut b2, &id).await,
        ];
        if recall_won {
            recalls += 1;
            assert_eq!(read_answer["code"], "not_found");
            // The recaller's own session has its ack; every other session sees the recall.
            assert_eq!(kinds(&seen[0]), Vec::<&str>::new());
            for s in &seen[1..] {
                assert_eq!(kinds(s), ["recalled"], "{s:?}");
                assert_eq!(s[0]["mode"], "marker");
            }
        } else {
            reads += 1;
            assert_eq!(recall_answer["code"], "already_read");
            for s in &seen[..2] {
                let mut k = kinds(s);
                k.sort();
                assert_eq!(k, ["read", "recall_closed"], "{s:?}");
            }
            assert_eq!(
                kinds(&seen[2]),
                Vec::<&str>::new(),
                "the reader's own session has its ack"
            );
            assert_eq!(kinds(&seen[3]), ["read"]);
        }
        // Both sides agree on the history too.
        for c in [&mut a1, &mut b2] {
            let h = c
                .ok(json!({"type": "history", "conversation": conv, "limit": 1}))
                .await;
            let state = &h["messages"][0]["state"];
            assert_eq!(state, if recall_won { "recalled" } else { "visible" });
        }
    }
    (recalls, reads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_and_recall_race_has_one_winner_seen_everywhere() {
    let server = support::start_limits(|l| {
        l.recall_per_conversation = u32::MAX;
        l.recall_throttle_window_ms = 0;
    })
    .await;
    let server = std::sync::Arc::new(server);
    let tasks: Vec<_> = (0..PAIRS)
        .map(|n| {
            let server = server.clone();
            tokio::spawn(async move { pair(&server, n).await })
        })
        .collect();
    let (mut recalls, mut reads) = (0, 0);
    for t in tasks {
        let (r, d) = t.await.expect("pair task");
        recalls += r;
        reads += d;
    }
    assert_eq!(recalls + reads, PAIRS * ROUNDS);
    eprintln!(
        "{} races: recall won {recalls}, read won {reads}",
        PAIRS * ROUNDS
    );
}
