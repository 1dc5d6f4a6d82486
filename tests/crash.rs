//! Crash safety: the server is SIGKILLed in the middle of a stream of sends and restarted
//! on the same data directory. Every acknowledged message is there exactly once and in
//! order, and requests retried with the same id are not applied twice.

mod support;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const SECRET: &str = "crash-secret";
const PER_CLIENT: usize = 600;
/// Kill once this many sends are acknowledged in all.
const KILL_AFTER: usize = 1_200;
const PAIRS: [(&str, &str); 2] = [("ann", "ben"), ("cat", "dan")];

async fn start(data: &std::path::Path) -> (support::Spawned, String) {
    support::spawn_binary(data, SECRET, &support::SQLITE_UNLIMITED).await
}

fn url(addr: &str, user: &str) -> String {
    let token = parley::auth::mint(SECRET.as_bytes(), user, false, Duration::from_secs(600));
    format!("ws://{addr}/ws?token={token}")
}

async fn client(addr: &str, user: &str) -> support::Client {
    support::connect_at(addr, SECRET, user).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_send_survives_sigkill_exactly_once() {
    let data = tempfile::tempdir().unwrap();
    let (mut server, addr) = start(data.path()).await;
    let mut conversations = Vec::new();
    for (a, b) in PAIRS {
        let (mut ca, mut cb) = (client(&addr, a).await, client(&addr, b).await);
        support::connect_users(&mut ca, &mut cb).await;
        let first = ca
            .ok(json!({"id": "hello", "type": "send", "to": b, "body": "hello"}))
            .await;
        conversations.push(first["message"]["conversation"].clone());
    }

    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let streams: Vec<_> = PAIRS
        .iter()
        .flat_map(|&(a, b)| [(a, b), (b, a)])
        .map(|(from, to)| {
            (
                from,
                tokio::spawn(support::stream_sends(
                    url(&addr, from),
                    from,
                    to,
                    PER_CLIENT,
                    None,
                    acked.clone(),
                )),
            )
        })
        .collect();
    for _ in 0..10_000 {
        if acked.load(std::sync::atomic::Ordering::Relaxed) >= KILL_AFTER {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.start_kill().unwrap(); // SIGKILL, mid-stream
    server.wait().await.unwrap();
    let mut acks = HashMap::new();
    for (user, task) in streams {
        // By request number, the id of the message each acknowledged send made.
        let ids: HashMap<usize, Value> = task
            .await
            .unwrap()
            .into_iter()
            .map(|(k, message)| (k, message["id"].clone()))
            .collect();
        acks.insert(user, ids);
    }
    let total: usize = acks.values().map(HashMap::len).sum();
    assert!(
        (KILL_AFTER..4 * PER_CLIENT).contains(&total),
        "killed mid-stream ({total} acks)"
    );

    let (_server, addr) = start(data.path()).await;
    for (pair, conv) in PAIRS.iter().zip(&conversations) {
        for (user, to) in [(pair.0, pair.1), (pair.1, pair.0)] {
            let mut c = client(&addr, user).await;
            let mine = &acks[user];
            // Retry the last acknowledged request and the first unacknowledged one.
            let last = *mine.keys().max().unwrap();
            let again = c.ok(support::numbered_send(user, to, last)).await;
            assert_eq!(
                again["message"]["id"], mine[&last],
                "a retry is not applied twice"
            );
            let unacked = (0..PER_CLIENT).find(|k| !mine.contains_key(k)).unwrap();
            c.ok(support::numbered_send(user, to, unacked)).await;
            c.ok(support::numbered_send(user, to, unacked)).await;

            let messages = support::all_messages(&mut c, conv).await;
            let sent: Vec<usize> = messages
                .iter()
                .filter(|m| m["sender"] == user && m["body"] != "hello")
                .map(|m| {
                    m["body"]
                        .as_str()
                        .unwrap()
                        .rsplit(' ')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap()
                })
                .collect();
            let mut seen = std::collections::HashSet::new();
            assert!(
                sent.iter().all(|k| seen.insert(*k)),
                "{user}: no message twice"
            );
            for (k, id) in mine {
                let found: Vec<_> = messages.iter().filter(|m| &m["id"] == id).collect();
                assert_eq!(
                    found.len(),
                    1,
                    "{user}: acknowledged send {k} present exactly once"
                );
            }
            // Sends on one connection are applied in order, so what survived is a prefix and
            // the retried first unacknowledged send lands right after it.
            assert!(
                sent.windows(2).all(|w| w[0] < w[1]),
                "{user}: in send order: {sent:?}"
            );
        }
    }
    eprintln!("crash test: {total} acknowledged sends before SIGKILL, all present exactly once after restart");
}
