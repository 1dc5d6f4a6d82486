//! Storage failures seen through the wire. A request whose commit fails is answered
//! `unavailable` and its session stays open; nothing of it is visible to anyone (no frame,
//! not in history, not in sync); a retry with the same id once storage works again is
//! stored exactly once. First with a store that fails on demand, then with the real binary
//! on a file system that is really full.

mod support;

use parley::store::MemoryStore;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use support::{Client, FailingStore, TestServer};

async fn start() -> (TestServer, Arc<FailingStore>) {
    let store = FailingStore::new(Arc::new(MemoryStore::default()));
    let server = support::start_over(store.clone(), |_| {}).await;
    (server, store)
}

/// Send `frame` (which names its `id`) while storage fails: it must be answered with an
/// `unavailable` error carrying that id, neither acknowledged nor answered by a close.
async fn unavailable(c: &mut Client, frame: Value) -> Value {
    let id = frame["id"].clone();
    assert!(id.is_string(), "give {frame} an id");
    let answer = c
        .try_request(frame.clone())
        .await
        .unwrap_or_else(|(code, reason)| {
            panic!(
                "{}: the session was closed with {code} {reason:?} instead of answering {frame} \
             with error `unavailable`",
                c.user
            )
        });
    assert_eq!(
        (&answer["type"], &answer["code"]),
        (&json!("error"), &json!("unavailable")),
        "{}: {frame} while storage fails must be refused `unavailable`, got {answer}",
        c.user
    );
    assert_eq!(answer["id"], id, "{answer}");
    assert!(answer["message"].is_string(), "{answer}");
    answer
}

/// Assert that none of the frames `c` has received mention `text`; the round trip of
/// [`Client::settle`] is itself a request answered on the same socket.
async fn sees_nothing_of(c: &mut Client, texts: &[&str]) {
    for frame in c.settle().await {
        let shown = frame.to_string();
        for text in texts {
            assert!(
                !shown.contains(text),
                "{}: got a frame about a request storage refused: {frame}",
                c.user
            );
        }
    }
}

/// The messages of `conversation`, as `c` sees them, whose body is `body`.
async fn with_body(c: &mut Client, conversation: &Value, body: &str) -> Vec<Value> {
    support::all_messages(c, conversation)
        .await
        .into_iter()
        .filter(|m| m["body"] == body)
        .collect()
}

/// Assert that `c`'s sync answer mentions none of `texts`, nor any conversation with
/// `absent_peer` when given.
async fn sync_shows_nothing_of(c: &mut Client, texts: &[&str], absent_peer: Option<&str>) {
    let sync = c.sync().await;
    let shown = sync.to_string();
    for text in texts {
        assert!(
            !shown.contains(text),
            "{}: sync shows {text}: {sync}",
            c.user
        );
    }
    if let Some(peer) = absent_peer {
        for entry in sync["inbox"].as_array().unwrap() {
            let participants = &entry["conversation"]["participants"];
            assert!(
                !participants.as_array().unwrap().contains(&json!(peer)),
                "{}: a conversation with {peer} exists though its first send was refused: {entry}",
                c.user
            );
        }
    }
}

#[tokio::test]
async fn a_failed_send_is_answered_unavailable_leaves_no_trace_and_is_stored_once_on_retry() {
    let (server, store) = start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let mut alice_tab = server.connect("alice").await;
    let mut carol = server.connect("carol").await;
    support::connect_users(&mut alice, &mut carol).await;
    // Carol goes offline: a notification for her would be kept for her next sync.
    carol.close().await;
    let first = alice.dm("bob", "before the outage").await;
    let conv = first["conversation"].clone();
    bob.expect("message").await;
    alice_tab.expect("message").await;
    bob.settle().await;
    alice_tab.settle().await;

    store.fail(true);
    let lost = "stored-only-if-storage-works-1";
    let to_carol = "stored-only-if-storage-works-2";
    let send = json!({"id": "outage-1", "type": "send", "conversation": conv, "body": lost});
    // To carol with `to`: it would create the alice-carol direct conversation.
    let first_to_carol = json!({"id": "outage-2", "type": "send", "to": "carol", "body": to_carol});
    unavailable(&mut alice, send.clone()).await;
    unavailable(&mut alice, first_to_carol.clone()).await;
    assert_eq!(
        store.refused(),
        2,
        "each refused send reached the store once"
    );

    // The session stays open and answers; nobody sees anything of either send.
    let refused = [lost, to_carol];
    for c in [&mut alice, &mut alice_tab, &mut bob] {
        sees_nothing_of(c, &refused).await;
        assert!(
            with_body(c, &conv, lost).await.is_empty(),
            "{}: history",
            c.user
        );
        sync_shows_nothing_of(c, &refused, None).await;
    }
    sync_shows_nothing_of(&mut alice, &refused, Some("carol")).await;
    let last = &bob.sync().await["inbox"][0]["last_message"];
    assert_eq!(
        last["id"], first["id"],
        "bob's inbox still ends at the first message"
    );

    store.fail(false);
    let mut carol = server.connect("carol").await;
    sync_shows_nothing_of(&mut carol, &refused, Some("alice")).await;

    // Retried with the same ids: stored once, shown once, answered alike the second time.
    let stored = alice.ok(send.clone()).await["message"].clone();
    assert_eq!(stored["body"], lost);
    let again = alice.ok(send).await;
    assert_eq!(
        again["message"]["id"], stored["id"],
        "a second retry is the same message"
    );
    // Bob, the recipient, gets one `message` and one `notification`; alice's other tab
    // one `message`; the second retry adds nothing.
    for (c, notifications) in [(&mut bob, 1), (&mut alice_tab, 0)] {
        let frames = c.settle().await;
        let count = |kind: &str, id: &Value| {
            frames
                .iter()
                .filter(|f| f["type"] == kind && f[kind].to_string().contains(id.as_str().unwrap()))
                .count()
        };
        let shown = (
            count("message", &stored["id"]),
            count("notification", &stored["id"]),
        );
        assert_eq!(shown, (1, notifications), "{}: {frames:?}", c.user);
    }
    for c in [&mut alice, &mut bob] {
        let found = with_body(c, &conv, lost).await;
        assert_eq!(
            support::ids(&found),
            vec![stored["id"].clone()],
            "{}: stored once",
            c.user
        );
    }

    let to_carol_stored = alice.ok(first_to_carol.clone()).await["message"].clone();
    let again = alice.ok(first_to_carol).await;
    assert_eq!(again["message"]["id"], to_carol_stored["id"]);
    carol
        .expect_where("message", |f| f["message"]["id"] == to_carol_stored["id"])
        .await;
    let carol_conv = to_carol_stored["conversation"].clone();
    let found = with_body(&mut carol, &carol_conv, to_carol).await;
    assert_eq!(support::ids(&found), vec![to_carol_stored["id"].clone()]);
    assert_eq!(store.refused(), 2);
    server.running.stop().await;
}

#[tokio::test]
async fn failed_recall_read_and_connect_change_nothing_and_work_once_storage_does() {
    let (server, store) = start().await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let mut carol = server.connect("carol").await;
    let m1 = alice.dm("bob", "recall me once storage works").await;
    let m2 = alice.dm("bob", "read me once storage works").await;
    let conv = m1["conversation"].clone();
    bob.expect_where("message", |f| f["message"]["id"] == m2["id"])
        .await;
    bob.settle().await;
    alice.settle().await;

    store.fail(true);
    let recall =
        json!({"id": "recall-1", "type": "recall", "conversation": conv, "message": m1["id"]});
    let connect = json!({"id": "connect-1", "type": "connect", "user": "carol"});
    unavailable(&mut alice, recall.clone()).await;
    unavailable(&mut alice, connect.clone()).await;
    assert_eq!(store.refused(), 2);
    // The recall did not happen: no `recalled` frame, m1 still visible with its text.
    for c in [&mut alice, &mut bob] {
        let got = c.settle().await;
        assert!(
            got.iter().all(|f| f["type"] != "recalled"),
            "{}: {got:?}",
            c.user
        );
        let messages = support::all_messages(c, &conv).await;
        let seen = messages.iter().find(|m| m["id"] == m1["id"]).unwrap();
        assert_eq!(seen["state"], "visible", "{}: {seen}", c.user);
        assert_eq!(seen["body"], m1["body"], "{}: {seen}", c.user);
    }
    // The connection request did not happen either.
    carol.expect_none("connection_request").await;
    assert_eq!(carol.sync().await["incoming_requests"], json!([]));
    assert_eq!(alice.sync().await["outgoing_requests"], json!([]));

    // Storage works again, but for exactly the next commit: bob's read.
    store.fail(false);
    store.fail_next(1);
    let read = json!({"id": "read-1", "type": "read", "conversation": conv, "message": m2["id"]});
    unavailable(&mut bob, read.clone()).await;
    assert_eq!(store.refused(), 3);
    let got = alice.settle().await;
    assert!(
        got.iter()
            .all(|f| f["type"] != "read" && f["type"] != "recall_closed"),
        "alice learns of a read that was not stored: {got:?}"
    );
    assert_eq!(
        bob.sync().await["inbox"][0]["unread"],
        2,
        "nothing was read"
    );

    // Retried, each takes effect once.
    alice.ok(recall).await;
    bob.expect_where("recalled", |f| f["message"] == m1["id"])
        .await;
    let state = alice.ok(connect).await;
    assert_eq!(state["state"], "requested", "{state}");
    carol.expect("connection_request").await;
    bob.ok(read).await;
    alice.expect("read").await;
    assert_eq!(bob.sync().await["inbox"][0]["unread"], 0);
    assert_eq!(carol.sync().await["incoming_requests"], json!(["alice"]));
    assert_eq!(store.refused(), 3);
    server.running.stop().await;
}

/// A tmpfs mounted over a temporary directory, unmounted when dropped (panics included).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut cmd = std::process::Command::new("umount");
            if lazy {
                // A server killed a moment ago may still hold its files open.
                cmd.arg("-l");
            }
            cmd.arg(self.dir.path())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !umount(false) && !umount(true) {
            eprintln!("cannot unmount the tmpfs at {}", self.dir.path().display());
        }
    }
}

/// Fill the file system holding `dir`: one file until the disk refuses, then small files
/// until even those are refused. Returns what was written, to delete it.
fn fill(dir: &Path) -> Vec<PathBuf> {
    use std::io::Write;
    let big = dir.join("filler");
    let mut file = std::fs::File::create(&big).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    while file.write_all(&[0x5a]).is_ok() {}
    let _ = file.sync_all();
    let mut written = vec![big];
    for i in 0..64 {
        let small = dir.join(format!("filler-{i}"));
        let ok = std::fs::write(&small, [0x5au8; 256]).is_ok();
        written.push(small);
        if !ok {
            break;
        }
    }
    written
}

const SECRET: &str = "full-disk-secret";

async fn spawn(data: &Path) -> (support::Spawned, String) {
    support::spawn_binary(data, SECRET, &support::SQLITE_UNLIMITED).await
}

#[tokio::test]
async fn on_a_full_disk_sends_are_refused_unavailable_and_retries_are_stored_once() {
    let disk = match Tmpfs::mount("16m") {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("SKIPPED: a full disk needs a tmpfs, and mounting one failed: {why}");
            return;
        }
    };
    let data = disk.path().join("data");
    let (mut server, addr) = spawn(&data).await;
    let mut alice = support::connect_at(&addr, SECRET, "alice").await;
    let mut bob = support::connect_at(&addr, SECRET, "bob").await;
    support::connect_users(&mut alice, &mut bob).await;
    let first = alice
        .ok(json!({"id": "warm-up", "type": "send", "to": "bob", "body": "before the disk fills"}))
        .await["message"]
        .clone();
    let conv = first["conversation"].clone();
    bob.expect("message").await;
    bob.settle().await;

    // Bodies of a few KiB, so that every commit must grow the write-ahead log.
    let max = alice.hello["limits"]["max_body_chars"].as_u64().unwrap() as usize;
    let size = max.min(6 * 1024);
    let body = |k: usize| {
        let head = format!("full-disk-{k} ");
        format!("{head}{}", "x".repeat(size - head.len()))
    };
    let frame = |k: usize| json!({"id": format!("full-disk-{k}"), "type": "send", "conversation": conv, "body": body(k)});
    let mut acked: Vec<(usize, Value)> = Vec::new();
    let mut refused: Vec<usize> = Vec::new();
    let filler = fill(disk.path());

    // SQLite may still fit a send or two in space it holds already; those are ordinary
    // acknowledged sends. Once one is refused, the disk is full for every later one.
    const PROBES: usize = 64;
    let mut k = 0;
    while refused.len() < 4 {
        assert!(
            k < PROBES,
            "{PROBES} sends on a full disk and fewer than 4 refused"
        );
        let answer = alice
            .try_request(frame(k))
            .await
            .unwrap_or_else(|(code, reason)| {
                panic!(
                    "send full-disk-{k} on a full disk: the session was closed with {code} \
                 {reason:?} instead of an `unavailable` error"
                )
            });
        match answer["type"].as_str() {
            Some("ack") if refused.is_empty() => {
                acked.push((k, answer["result"]["message"]["id"].clone()))
            }
            Some("error") => {
                assert_eq!(answer["code"], "unavailable", "full-disk-{k}: {answer}");
                assert_eq!(answer["id"], format!("full-disk-{k}"));
                refused.push(k);
            }
            _ => panic!("full-disk-{k}, after a refusal on the still full disk: {answer}"),
        }
        k += 1;
    }
    eprintln!(
        "full disk: {} sends acknowledged before the first refusal, {} refused",
        acked.len(),
        refused.len()
    );
    let refused_bodies: Vec<String> = refused.iter().map(|&k| body(k)).collect();
    let refused_texts: Vec<&str> = refused_bodies.iter().map(String::as_str).collect();
    sees_nothing_of(&mut bob, &refused_texts).await;
    sees_nothing_of(&mut alice, &refused_texts).await;
    // The only server stays ready (reads still work, and there is nowhere else to send
    // its clients); the gauge says its store refuses commits.
    assert_eq!(support::http_get(&addr, "/readyz").await.0, 200);
    let reachable = support::metric(&addr, "parley_store_reachable").await;
    assert_eq!(reachable, Some(0.0), "after a refused commit");

    // Space again: the first refused sends are retried with their ids; the last one never is.
    for path in filler {
        let _ = std::fs::remove_file(path);
    }
    let (retried, never) = refused.split_at(refused.len() - 1);
    for &k in retried {
        let stored = alice.ok(frame(k)).await["message"].clone();
        assert_eq!(stored["body"], body(k));
        let again = alice.ok(frame(k)).await;
        assert_eq!(
            again["message"]["id"], stored["id"],
            "full-disk-{k}: retried twice, stored once"
        );
        acked.push((k, stored["id"].clone()));
    }
    let reachable = support::metric(&addr, "parley_store_reachable").await;
    assert_eq!(reachable, Some(1.0), "after a stored commit");
    let shown: Vec<Value> = bob
        .settle()
        .await
        .into_iter()
        .filter(|f| f["type"] == "message")
        .map(|f| f["message"]["id"].clone())
        .collect();
    let acked_late: Vec<Value> = acked
        .iter()
        .filter(|(k, _)| retried.contains(k))
        .map(|(_, id)| id.clone())
        .collect();
    for id in &acked_late {
        assert_eq!(
            shown.iter().filter(|s| *s == id).count(),
            1,
            "bob gets each retried send once: {shown:?}"
        );
    }

    // Killed and restarted on the same directory: every acknowledged send exactly once,
    // the refused send that was never retried nowhere.
    drop((alice, bob));
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    let (_server, addr) = spawn(&data).await;
    let mut alice = support::connect_at(&addr, SECRET, "alice").await;
    let messages = support::all_messages(&mut alice, &conv).await;
    for (k, id) in &acked {
        let found: Vec<&Value> = messages.iter().filter(|m| &m["id"] == id).collect();
        assert_eq!(
            found.len(),
            1,
            "full-disk-{k} ({id}) after the restart: {found:?}"
        );
        assert_eq!(found[0]["body"], body(*k));
        let same_body = messages.iter().filter(|m| m["body"] == body(*k)).count();
        assert_eq!(same_body, 1, "full-disk-{k} stored once");
    }
    for &k in never {
        assert!(
            messages.iter().all(|m| m["body"] != body(k)),
            "full-disk-{k} was refused and never retried, yet is stored"
        );
    }
    assert_eq!(
        messages.len(),
        1 + acked.len(),
        "the warm-up and the acknowledged sends"
    );
}
