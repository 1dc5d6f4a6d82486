//! Memory holds the working set, not the history: on the SQLite store a server starts
//! without reading any conversation, reads one back when a request needs it, and forgets
//! the least recently used beyond its cache limit, with every rule and answer the same as
//! if everything were held.

mod support;

use parley::store::Store;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::{Client, FailingStore, TestServer};

/// The store of `dir`, once a server stopped before has let go of it.
async fn sqlite(dir: &Path) -> Arc<dyn Store> {
    support::open_sqlite(dir).await
}

async fn serve(store: Arc<dyn Store>, cache_entries: usize) -> TestServer {
    support::start_over(store, |c| c.cache_entries = cache_entries).await
}

/// Bodies and states of a conversation's whole history, oldest first.
async fn seen(c: &mut Client, conversation: &Value) -> Vec<(String, String)> {
    support::all_messages(c, conversation)
        .await
        .iter()
        .map(|m| {
            let body = m["body"].as_str().unwrap_or("-").to_owned();
            (body, m["state"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn conversations_beyond_the_cache_are_forgotten_and_read_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let server = support::start_over(sqlite(dir.path()).await, |c| {
        c.cache_entries = 30;
        // Alice sends sixty messages here; the throttle has a test of its own below.
        c.limits.recall_throttle_messages = 1000;
    })
    .await;
    let hub = server.running.hub.clone();
    let mut alice = server.connect("alice").await;
    let mut peers = Vec::new();
    for n in 0..12 {
        let peer = format!("peer{n}");
        let mut c = server.connect(&peer).await;
        support::connect_users(&mut alice, &mut c).await;
        let first = alice.dm(&peer, &format!("{peer} 0")).await;
        let conv = first["conversation"].clone();
        for k in 1..5 {
            alice.say(&conv, &format!("{peer} {k}")).await;
        }
        c.mark_read(&first).await;
        peers.push((c, conv));
    }
    let held = hub.working_set();
    assert!(held.cached <= 30, "cache within its limit: {held:?}");
    assert!(held.conversations < 12, "some were forgotten: {held:?}");

    // The first conversation is long forgotten: its rules still see all of it.
    let (peer0, conv0) = &mut peers[0];
    let history = support::all_messages(&mut alice, conv0).await;
    let last = history.last().unwrap().clone();
    alice
        .ok(json!({"type": "recall", "conversation": conv0, "message": last["id"]}))
        .await;
    peer0.expect("recalled").await;
    let second = history[1].clone();
    peer0
        .ok(json!({"type": "delete_for_me", "conversation": conv0, "message": second["id"]}))
        .await;
    let recalled_again = alice
        .err(json!({"type": "recall", "conversation": conv0, "message": history[3]["id"]}))
        .await;
    assert_eq!(
        recalled_again, "recall_limit_reached",
        "the allowance survives forgetting"
    );

    // Fill the cache with the others, then look again from both sides.
    for (c, conv) in peers.iter_mut().skip(1) {
        assert_eq!(seen(c, conv).await.len(), 5);
    }
    let want: Vec<(String, String)> = (0..5)
        .map(|k| match k {
            4 => ("-".to_owned(), "recalled".to_owned()),
            k => (format!("peer0 {k}"), "visible".to_owned()),
        })
        .collect();
    assert_eq!(seen(&mut alice, &peers[0].1).await, want);
    let (peer0, conv0) = &mut peers[0];
    let theirs = seen(peer0, conv0).await;
    assert_eq!(theirs[1], ("-".to_owned(), "deleted".to_owned()));
    assert_eq!(theirs[4], want[4]);
    let page = peer0
        .ok(json!({"type": "history", "conversation": conv0}))
        .await;
    assert_eq!(
        page["receipts"].as_array().unwrap().len(),
        0,
        "alice read nothing"
    );
    let mine = alice
        .ok(json!({"type": "history", "conversation": conv0}))
        .await;
    assert_eq!(mine["receipts"][0]["seq"], 1, "peer0's read position kept");
    assert!(hub.working_set().cached <= 30);
}

#[tokio::test]
async fn a_retried_send_finds_its_message_after_the_conversation_was_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(sqlite(dir.path()).await, 5).await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let send = json!({"type": "send", "to": "bob", "body": "once", "id": "retry-me"});
    let first = alice.ok(send.clone()).await;
    bob.expect("message").await;
    for n in 0..4 {
        let mut other = server.connect(&format!("other{n}")).await;
        support::connect_users(&mut alice, &mut other).await;
        let filler = alice.dm(&format!("other{n}"), "filler").await;
        alice.say(&filler["conversation"], "more filler").await;
    }
    let again = alice.ok(send).await;
    assert_eq!(again["message"]["id"], first["message"]["id"]);
    assert_eq!(again["message"]["seq"], first["message"]["seq"]);
    let bodies = seen(&mut bob, &first["message"]["conversation"]).await;
    assert_eq!(bodies, [("once".to_owned(), "visible".to_owned())]);
    bob.expect_none("message").await;
}

#[tokio::test]
async fn start_up_reads_no_conversation_yet_rearms_open_recall_windows_and_throttles() {
    let dir = tempfile::tempdir().unwrap();
    let (open, busy) = {
        let server = serve(sqlite(dir.path()).await, 1000).await;
        let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
        let (mut carol, _dave) = server.connected_pair("carol", "dave").await;
        let first = alice.dm("bob", "read at once: recall closes then").await;
        let mut open = vec![];
        for body in ["recall me until the window closes", "and me too"] {
            open.push(alice.say(&first["conversation"], body).await["id"].clone());
        }
        let read =
            json!({"type": "read", "conversation": first["conversation"], "message": first["id"]});
        bob.ok(read).await;
        assert_eq!(alice.expect("recall_closed").await["reason"], "read");
        // Carol sends more than the throttle allows inside its window.
        let first = carol.dm("dave", "0").await;
        for k in 1..=30 {
            carol.say(&first["conversation"], &k.to_string()).await;
        }
        let busy = carol.say(&first["conversation"], "31").await;
        drop((alice, bob, carol));
        server.running.stop().await;
        (open, busy)
    };

    let server = serve(sqlite(dir.path()).await, 1000).await;
    let held = server.running.hub.working_set();
    assert_eq!(
        held.conversations, 0,
        "start-up read no conversation: {held:?}"
    );
    assert_eq!(
        held.send_logs, 2,
        "alice's and carol's sends count: {held:?}"
    );
    let mut carol = server.connect("carol").await;
    let throttled = carol
        .err(json!({"type": "recall", "conversation": busy["conversation"], "message": busy["id"]}))
        .await;
    assert_eq!(throttled, "recall_throttled");

    let mut alice = server.connect("alice").await;
    server.advance(Duration::from_secs(121));
    // One timer for the conversation, not held, tells each window still open, once, from
    // what the store has: the message bob read is not told again.
    for id in &open {
        let closed = alice.expect("recall_closed").await;
        assert_eq!(&closed["message"], id);
        assert_eq!(closed["reason"], "expired");
    }
    alice.expect_none("recall_closed").await;
    let held = server.running.hub.working_set();
    assert_eq!(
        held.conversations, 1,
        "only carol's, where she asked to recall, was read back: {held:?}"
    );
}

#[tokio::test]
async fn a_recall_window_the_store_cannot_tell_is_told_once_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let open = {
        let server = serve(sqlite(dir.path()).await, 1000).await;
        let (mut alice, _bob) = server.connected_pair("alice", "bob").await;
        let open = alice.dm("bob", "recall me").await;
        drop(alice);
        server.running.stop().await;
        open
    };
    let store = FailingStore::new(sqlite(dir.path()).await);
    let server = serve(store.clone(), 1000).await;
    let mut alice = server.connect("alice").await;
    store.fail(true);
    server.advance(Duration::from_secs(121));
    alice.expect_none("recall_closed").await;
    store.fail(false);
    server.advance(Duration::from_secs(2));
    let closed = alice.expect("recall_closed").await;
    assert_eq!(closed["message"], open["id"]);
    alice.expect_none("recall_closed").await;
}

#[tokio::test]
async fn a_conversation_that_cannot_be_read_back_is_answered_unavailable_and_read_later() {
    let dir = tempfile::tempdir().unwrap();
    let store = FailingStore::new(sqlite(dir.path()).await);
    let server = serve(store.clone(), 1).await;
    let (mut alice, _bob) = server.connected_pair("alice", "bob").await;
    let mut carol = server.connect("carol").await;
    support::connect_users(&mut alice, &mut carol).await;
    let first = alice.dm("bob", "kept").await;
    alice.dm("carol", "pushes the first out").await;
    store.fail(true);
    let history = json!({"type": "history", "conversation": first["conversation"]});
    let refused = alice.err(history.clone()).await;
    assert_eq!(refused, "unavailable");
    let refused = alice.err(json!({"type": "sync"})).await;
    assert_eq!(
        refused, "unavailable",
        "sync cannot answer without the store"
    );
    store.fail(false);
    let page = alice.ok(history).await;
    assert_eq!(page["messages"][0]["body"], "kept");
    let sync = alice.ok(json!({"type": "sync"})).await;
    assert_eq!(sync["inbox"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_long_quiet_conversation_is_read_back_in_part_and_whole_when_a_request_goes_further() {
    let dir = tempfile::tempdir().unwrap();
    // Smaller than the conversation: it is forgotten after every request and read back.
    let server = support::start_over(sqlite(dir.path()).await, |c| {
        c.cache_entries = 100;
        // No recall timers: nothing but the requests below reads the conversation.
        c.limits.recall_window_ms = 0;
    })
    .await;
    let hub = server.running.hub.clone();
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let first = alice.dm("bob", "old 0").await;
    let conv = first["conversation"].clone();
    let mut sent = vec![first];
    for k in 1..300 {
        sent.push(alice.say(&conv, &format!("old {k}")).await);
        if k == 9 {
            // Early on: what is read back later starts after these.
            bob.mark_read(&sent[9]).await;
            bob.ok(
                json!({"type": "delete_for_me", "conversation": conv, "message": sent[4]["id"]}),
            )
            .await;
        }
    }
    // A day and more later, a few more.
    server.advance(Duration::from_secs(25 * 3600));
    for k in 0..10 {
        sent.push(alice.say(&conv, &format!("new {k}")).await);
    }
    let _ = bob.drain("message").await;
    assert!(
        hub.working_set().conversations == 0,
        "forgotten after each request"
    );

    let start = hub.working_set().read_back;
    let reads = || {
        let (part, whole) = hub.working_set().read_back;
        (part - start.0, whole - start.1)
    };
    let sync = bob.ok(json!({"type": "sync"})).await;
    let row = &sync["inbox"][0];
    assert_eq!(
        row["unread"], 300,
        "unread counts what is not held too: {row}"
    );
    assert_eq!(row["last_message"]["body"], "new 9");
    let page = bob
        .ok(json!({"type": "history", "conversation": conv, "limit": 50}))
        .await;
    let bodies: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies.len(), 50);
    assert_eq!(bodies[49], "new 9");
    assert_eq!(bodies[0], "old 260");
    let mine = alice
        .ok(json!({"type": "history", "conversation": conv, "limit": 5}))
        .await;
    assert_eq!(
        mine["receipts"][0]["message"], sent[9]["id"],
        "bob's old read position"
    );
    assert_eq!(reads(), (3, 0), "three requests, three partial reads");

    // Past what is held: the whole conversation, with every rule as before.
    bob.ok(json!({"type": "delete_for_me", "conversation": conv, "message": sent[20]["id"]}))
        .await;
    assert_eq!(
        reads(),
        (4, 1),
        "an old message needs the whole conversation"
    );
    let all = support::all_messages(&mut bob, &conv).await;
    assert_eq!(all.len(), 310);
    assert_eq!(all[4]["state"], "deleted");
    assert_eq!(all[20]["state"], "deleted");
    assert_eq!(all[5]["body"], "old 5");
    let since_start = bob
        .ok(json!({"type": "sync", "positions": {conv.as_str().unwrap(): 0}}))
        .await;
    let frames = since_start["updates"][0]["frames"].as_array().unwrap();
    assert_eq!(frames[0]["message"]["body"], "old 0");
    let near_end = sent[305]["seq"].as_u64().unwrap();
    let recent = bob
        .ok(json!({"type": "sync", "positions": {conv.as_str().unwrap(): near_end}}))
        .await;
    let frames = recent["updates"][0]["frames"].as_array().unwrap();
    assert_eq!(
        frames.len(),
        5,
        "four messages and the delete above: {frames:?}"
    );
    bob.mark_read(&sent[309]).await;
    let sync = bob.ok(json!({"type": "sync"})).await;
    assert_eq!(sync["inbox"][0]["unread"], 0);
}

#[tokio::test]
async fn read_back_a_conversation_keeps_the_latest_fifty_notifications_per_participant() {
    let dir = tempfile::tempdir().unwrap();
    let conv = {
        let server = serve(sqlite(dir.path()).await, 1000).await;
        let (mut alice, bob) = server.connected_pair("alice", "bob").await;
        drop(bob);
        let first = alice.dm("bob", "0").await;
        for k in 1..60 {
            alice.say(&first["conversation"], &k.to_string()).await;
        }
        server.running.stop().await;
        first["conversation"].clone()
    };
    let server = serve(sqlite(dir.path()).await, 1000).await;
    let mut bob = server.connect("bob").await;
    let sync = bob.ok(json!({"type": "sync"})).await;
    assert_eq!(sync["inbox"][0]["conversation"]["id"], conv);
    assert_eq!(
        sync["inbox"][0]["unread"], 60,
        "every unread message still counts"
    );
    let previews: Vec<&str> = sync["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["preview"].as_str().unwrap())
        .collect();
    let latest: Vec<String> = (10..60).map(|k| k.to_string()).collect();
    assert_eq!(previews, latest);
}

#[tokio::test]
async fn a_busy_conversation_holds_only_its_recent_part_and_still_answers_for_all_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let tune = |c: &mut parley::config::Config| {
        // Alice sends a thousand messages here; the throttle has a test of its own above.
        c.limits.recall_throttle_messages = 10_000;
    };
    // The default cache holds this conversation many times over: it is never forgotten.
    let server = support::start_over(sqlite(dir.path()).await, tune).await;
    let hub = server.running.hub.clone();
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let send = json!({"type": "send", "to": "bob", "body": "first", "id": "first-request"});
    let first = alice.ok(send.clone()).await["message"].clone();
    let conv = first["conversation"].clone();
    let recall = |m: &Value| json!({"type": "recall", "conversation": conv, "message": m["id"]});
    alice.ok(recall(&first)).await;
    // Opening the conversation looked for it in the store once.
    let opened = hub.working_set().read_back;
    let step = Duration::from_secs(2);
    for k in 0..1000 {
        server.advance(step);
        alice.say(&conv, &format!("busy {k}")).await;
    }
    let held = hub.working_set();
    // Untrimmed it would be a thousand messages, their state changes and bob's
    // notifications (over 3,000); the recent part is never more than twice the tail.
    assert!(held.cached < 3 * 512 + 100, "{held:?}");
    assert_eq!(held.read_back, opened, "nothing was read back");

    let page = bob
        .ok(json!({"type": "history", "conversation": conv, "limit": 50}))
        .await;
    assert_eq!(page["messages"][49]["body"], "busy 999");
    let row = &bob.sync().await["inbox"][0];
    assert_eq!(row["unread"], 1000, "unread counts what was let go: {row}");
    assert_eq!(hub.working_set().read_back, opened, "all of it held");

    let again = alice.ok(send.clone()).await["message"].clone();
    assert_eq!((&again["id"], &again["seq"]), (&first["id"], &first["seq"]));
    assert_eq!(again["state"], "recalled");
    let latest = alice.say(&conv, "latest").await;
    assert_eq!(
        alice.err(recall(&latest)).await,
        "recall_limit_reached",
        "the recall before the trim still counts"
    );
    // The old hub (and with it its store's writer) must be gone before the restart.
    drop((alice, bob, hub));
    server.running.stop().await;

    // Read back after a restart: what was let go is remembered the same way.
    let server = support::start_over(sqlite(dir.path()).await, tune).await;
    server.advance(step * 1001);
    let mut alice = server.connect("alice").await;
    let latest = alice.say(&conv, "after the restart").await;
    assert_eq!(
        alice.err(recall(&latest)).await,
        "recall_limit_reached",
        "the allowance survives reading back in part"
    );
    let (part, whole) = server.running.hub.working_set().read_back;
    assert_eq!((part, whole), (1, 0));
    let again = alice.ok(send).await["message"].clone();
    assert_eq!((&again["id"], &again["seq"]), (&first["id"], &first["seq"]));
    let bodies = seen(&mut alice, &conv).await;
    assert_eq!(bodies.len(), 1003, "the retry stored nothing");
}

#[tokio::test]
async fn over_its_limit_the_cache_shrinks_a_conversation_in_use_and_its_windows_still_hold() {
    let dir = tempfile::tempdir().unwrap();
    let server = support::start_over(sqlite(dir.path()).await, |c| {
        // Three hundred messages with their state are over the limit; their newest
        // few are not.
        c.cache_entries = 500;
        c.limits.recall_throttle_messages = 10_000;
    })
    .await;
    let hub = server.running.hub.clone();
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let first = alice.dm("bob", "old").await;
    let conv = first["conversation"].clone();
    for _ in 0..100 {
        alice.say(&conv, "old").await;
    }
    server.advance(Duration::from_secs(200));
    let _ = alice.drain("recall_closed").await;
    let mut sent = vec![];
    for k in 0..300 {
        sent.push(alice.say(&conv, &k.to_string()).await);
    }
    let held = hub.working_set();
    assert_eq!(held.conversations, 1, "kept, not forgotten: {held:?}");
    assert!(held.cached <= 500, "{held:?}");
    let before = held.read_back;

    // A message inside its recall window but no longer held is read back with the rest
    // of the window, not the whole conversation.
    let recall = json!({"type": "recall", "conversation": conv, "message": sent[100]["id"]});
    alice.ok(recall).await;
    let (part, whole) = hub.working_set().read_back;
    assert_eq!((part - before.0, whole - before.1), (1, 0));
    assert_eq!(bob.expect("recalled").await["message"], sent[100]["id"]);

    // Every window closes once, told from the store for the messages not held.
    let _ = alice.drain("recall_closed").await;
    server.advance(Duration::from_secs(121));
    let mut told = std::collections::BTreeSet::new();
    for _ in 0..299 {
        let closed = alice.expect("recall_closed").await;
        assert_eq!(closed["reason"], "expired");
        assert!(told.insert(closed["message"].as_str().unwrap().to_owned()));
    }
    alice.expect_none("recall_closed").await;
    assert!(!told.contains(sent[100]["id"].as_str().unwrap()));
    let all = support::all_messages(&mut bob, &conv).await;
    assert_eq!(all.len(), 401);
    assert_eq!(all[201]["state"], "recalled");
    assert!(hub.working_set().cached <= 500);
}
