//! On the SQLite store a conversation's next request is decided while the commit of the
//! one before is still being written, so a burst shares one transaction. Through the
//! wire that must look exactly as if each waited: every session sees the conversation in
//! one order, nothing is shown before it is stored, and a commit that fails takes every
//! decision made on top of it down with it, answered `unavailable`, none of them visible,
//! each stored once when retried.

mod support;

use parley::store::{SqliteOptions, SqliteStore, Store};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use support::{Client, FailingStore, TestServer};

const USERS: [&str; 4] = ["ann", "ben", "cat", "dan"];
const ROUNDS: usize = 12;

fn sqlite(dir: &Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(dir, SqliteOptions::default()).unwrap())
}

/// Everyone in one group, created by the first user.
async fn group(server: &TestServer) -> (Vec<Client>, Value) {
    let mut clients = Vec::new();
    for user in USERS {
        clients.push(server.connect(user).await);
    }
    let (first, rest) = clients.split_first_mut().unwrap();
    for other in rest.iter_mut() {
        support::connect_users(first, other).await;
    }
    let conv = first.group(&USERS[1..]).await["id"].clone();
    for c in clients.iter_mut() {
        c.settle().await;
    }
    (clients, conv)
}

fn send(conv: &Value, user: &str, round: usize) -> Value {
    json!({"type": "send", "conversation": conv, "id": format!("{user}-{round}"),
           "body": format!("{user} {round}")})
}

/// Every user sends at once, round after round; some rounds' first commit fails.
/// Returns (body, seq) of the acknowledged sends and the refused frames by sender.
async fn rounds(
    store: &FailingStore,
    clients: &mut [Client],
    conv: &Value,
) -> (Vec<(String, u64)>, Vec<(usize, Value)>) {
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let failing = round % 4 == 2;
        if failing {
            // The first commit of the round fails once the other three were decided
            // on top of it and queued behind it.
            store.fail_next_followed_by(USERS.len() - 1);
        }
        let frames: Vec<Value> = USERS.iter().map(|u| send(conv, u, round)).collect();
        let answers = futures::future::join_all(
            clients
                .iter_mut()
                .zip(&frames)
                .map(|(c, f)| c.try_request(f.clone())),
        )
        .await;
        let before = refused.len();
        for (n, (frame, answer)) in frames.iter().zip(answers).enumerate() {
            let answer = answer.expect("the session stays open through a failed commit");
            match answer["type"].as_str() {
                Some("ack") => {
                    let m = &answer["result"]["message"];
                    acked.push((frame["body"].as_str().unwrap().to_owned(), seq(m)));
                }
                Some("error") => {
                    assert_eq!(answer["code"], "unavailable", "{answer}");
                    refused.push((n, frame.clone()));
                }
                _ => panic!("{frame} answered {answer}"),
            }
        }
        if failing {
            assert_eq!(
                refused.len() - before,
                USERS.len(),
                "round {round}: the sends decided on a failed one fail with it"
            );
        }
    }
    (acked, refused)
}

fn seq(message: &Value) -> u64 {
    message["seq"].as_u64().expect("a stored message has a seq")
}

/// The history as (body, seq), oldest first, checked to be in strictly rising order.
async fn stored(c: &mut Client, conv: &Value) -> Vec<(String, u64)> {
    let all = support::all_messages(c, conv).await;
    let seqs: Vec<u64> = all.iter().map(seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "history order: {seqs:?}"
    );
    all.iter()
        .map(|m| (m["body"].as_str().unwrap().to_owned(), seq(m)))
        .collect()
}

#[tokio::test]
async fn sends_decided_ahead_of_their_commits_keep_one_order_and_a_failed_commit_takes_its_followers_down(
) {
    let dir = tempfile::tempdir().unwrap();
    let store = FailingStore::new(sqlite(dir.path()));
    let server = support::start_over(store.clone(), |c| {
        c.limits.recall_throttle_messages = 1000;
    })
    .await;
    let (mut clients, conv) = group(&server).await;
    let (mut acked, refused) = rounds(&store, &mut clients, &conv).await;
    assert_eq!(
        store.refused(),
        ROUNDS / 4,
        "one failure injected a failing round"
    );
    assert!(
        !refused.is_empty(),
        "a failed commit is answered `unavailable`"
    );

    // Each session saw exactly the others' acknowledged messages, in one rising order.
    let shown_bodies: HashSet<&String> = acked.iter().map(|(b, _)| b).collect();
    for (n, c) in clients.iter_mut().enumerate() {
        let live = c.drain("message").await;
        let seqs: Vec<u64> = live.iter().map(|f| seq(&f["message"])).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{}: {seqs:?}",
            USERS[n]
        );
        for f in &live {
            let body = f["message"]["body"].as_str().unwrap().to_owned();
            assert!(
                shown_bodies.contains(&body),
                "{}: unstored {body} shown",
                USERS[n]
            );
        }
        let expected = acked
            .iter()
            .filter(|(b, _)| !b.starts_with(USERS[n]))
            .count();
        assert_eq!(
            live.len(),
            expected,
            "{}: every stored message, once",
            USERS[n]
        );
    }
    acked.sort_by_key(|(_, s)| *s);
    assert_eq!(
        stored(&mut clients[0], &conv).await,
        acked,
        "stored is acknowledged"
    );

    // Retried once storage works, each refused send is stored once; again, it is found.
    for (n, frame) in &refused {
        let first = clients[*n].ok(frame.clone()).await;
        let again = clients[*n].ok(frame.clone()).await;
        assert_eq!(first["message"]["id"], again["message"]["id"]);
        acked.push((
            frame["body"].as_str().unwrap().to_owned(),
            seq(&first["message"]),
        ));
    }
    acked.sort_by_key(|(_, s)| *s);
    assert_eq!(stored(&mut clients[0], &conv).await, acked);
    assert_eq!(acked.len(), USERS.len() * ROUNDS);

    drop(clients);
    server.running.stop().await;
    drop(store);
    let server = support::start_over(sqlite(dir.path()), |_| {}).await;
    let mut ann = server.connect("ann").await;
    assert_eq!(
        stored(&mut ann, &conv).await,
        acked,
        "all of it after a restart"
    );
}
