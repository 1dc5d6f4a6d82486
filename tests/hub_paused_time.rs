//! Time rules on paused tokio time, driving the hub directly (no sockets): the recall
//! window's timer, the 24-hour recall allowance and the throttle window.

use parley::config::{default_limits, DEFAULT_CACHE_ENTRIES};
use parley::hub::{Hub, Outbox};
use parley::store::MemoryStore;
use parley_protocol::Limits;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

struct Session {
    handle: Arc<parley::hub::sessions::SessionHandle>,
    outbox: Outbox,
    kept: Vec<Value>,
}

async fn open(hub: &Hub, user: &str) -> Session {
    let (handle, outbox) = hub
        .open_session(user, false)
        .await
        .expect("under the session cap");
    let mut s = Session {
        handle,
        outbox,
        kept: Vec::new(),
    };
    assert_eq!(s.frames()[0]["type"], "hello");
    s
}

impl Session {
    /// Everything queued for this session so far.
    fn frames(&mut self) -> Vec<Value> {
        let mut out = std::mem::take(&mut self.kept);
        while let Ok(bytes) = self.outbox.try_recv() {
            self.handle.written(bytes.len());
            out.push(serde_json::from_str(bytes.as_str()).unwrap());
        }
        out
    }

    fn of_type(&mut self, kind: &str) -> Vec<Value> {
        self.frames()
            .into_iter()
            .filter(|f| f["type"] == kind)
            .collect()
    }

    /// Send a request and return its answer.
    async fn call(&mut self, hub: &Hub, id: &str, mut frame: Value) -> Value {
        frame["id"] = json!(id);
        hub.dispatch(&self.handle, &frame.to_string()).await;
        let (answer, rest): (Vec<Value>, Vec<Value>) =
            self.frames().into_iter().partition(|f| f["id"] == id);
        self.kept = rest;
        assert_eq!(answer.len(), 1, "exactly one answer per request");
        answer.into_iter().next().unwrap()
    }
}

/// Let the timer task run after the clock moved.
async fn settle() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

async fn pair(limits: Limits) -> (Arc<Hub>, Session, Session, Session) {
    pair_on(limits, Arc::new(MemoryStore::default())).await
}

/// alice (two sessions) and bob, connected, on a hub over `store`.
async fn pair_on(limits: Limits, store: Arc<MemoryStore>) -> (Arc<Hub>, Session, Session, Session) {
    let hub = Hub::start(limits, store, 1 << 20, DEFAULT_CACHE_ENTRIES).unwrap();
    let mut alice = open(&hub, "alice").await;
    let alice2 = open(&hub, "alice").await;
    let mut bob = open(&hub, "bob").await;
    alice
        .call(&hub, "c", json!({"type": "connect", "user": "bob"}))
        .await;
    bob.call(&hub, "a", json!({"type": "accept", "user": "alice"}))
        .await;
    (hub, alice, alice2, bob)
}

async fn dm(hub: &Hub, s: &mut Session, id: &str) -> Value {
    let ack = s
        .call(hub, id, json!({"type": "send", "to": "bob", "body": id}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    ack["result"]["message"].clone()
}

fn recall(m: &Value) -> Value {
    json!({"type": "recall", "conversation": m["conversation"], "message": m["id"]})
}

#[tokio::test(start_paused = true)]
async fn recall_closed_is_pushed_to_every_sender_session_when_the_window_closes() {
    let (hub, mut alice, mut alice2, _bob) = pair(default_limits()).await;
    let m = dm(&hub, &mut alice, "m1").await;
    alice2.frames();

    tokio::time::advance(Duration::from_millis(119_999)).await;
    settle().await;
    assert!(
        alice.of_type("recall_closed").is_empty(),
        "window still open"
    );

    tokio::time::advance(Duration::from_millis(1)).await;
    settle().await;
    for s in [&mut alice, &mut alice2] {
        let closed = s.of_type("recall_closed");
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0]["message"], m["id"]);
        assert_eq!(closed[0]["reason"], "expired");
    }
    let answer = alice.call(&hub, "r", recall(&m)).await;
    assert_eq!(answer["code"], "recall_window_closed");
}

#[tokio::test(start_paused = true)]
async fn no_expiry_push_for_a_message_already_read_or_recalled() {
    let (hub, mut alice, _alice2, mut bob) = pair(default_limits()).await;
    let read = dm(&hub, &mut alice, "m1").await;
    let recalled = dm(&hub, &mut alice, "m2").await;
    let kept = dm(&hub, &mut alice, "m3").await;
    let ack = bob
        .call(
            &hub,
            "rd",
            json!({"type": "read", "conversation": read["conversation"], "message": read["id"]}),
        )
        .await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(
        alice.call(&hub, "rc", recall(&recalled)).await["type"],
        "ack"
    );
    let early = alice.of_type("recall_closed");
    assert_eq!(
        early.len(),
        1,
        "the read closed recall of m1 at once: {early:?}"
    );
    assert_eq!(
        (&early[0]["message"], &early[0]["reason"]),
        (&read["id"], &json!("read"))
    );

    tokio::time::advance(Duration::from_secs(121)).await;
    settle().await;
    let late = alice.of_type("recall_closed");
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0]["message"], kept["id"]);
}

#[tokio::test(start_paused = true)]
async fn one_recall_per_conversation_per_day() {
    let (hub, mut alice, _alice2, _bob) = pair(default_limits()).await;
    let m1 = dm(&hub, &mut alice, "m1").await;
    let m2 = dm(&hub, &mut alice, "m2").await;
    assert_eq!(alice.call(&hub, "r1", recall(&m1)).await["type"], "ack");
    assert_eq!(
        alice.call(&hub, "r2", recall(&m2)).await["code"],
        "recall_limit_reached"
    );

    // A day later the allowance is back, for a message still inside its window.
    tokio::time::advance(Duration::from_secs(24 * 3600)).await;
    let m3 = dm(&hub, &mut alice, "m3").await;
    assert_eq!(alice.call(&hub, "r3", recall(&m3)).await["type"], "ack");
}

#[tokio::test(start_paused = true)]
async fn throttled_sender_recalls_again_once_the_rate_falls() {
    let (hub, mut alice, _alice2, _bob) = pair(default_limits()).await;
    let first = dm(&hub, &mut alice, "m0").await;
    for i in 1..=30 {
        dm(&hub, &mut alice, &format!("m{i}")).await;
    }
    // 31 sends in the last minute: more than 30.
    assert_eq!(
        alice.call(&hub, "r1", recall(&first)).await["code"],
        "recall_throttled"
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(alice.call(&hub, "r2", recall(&first)).await["type"], "ack");
}

#[tokio::test(start_paused = true)]
async fn zero_window_disables_recall() {
    let mut limits = default_limits();
    limits.recall_window_ms = 0;
    let (hub, mut alice, _alice2, _bob) = pair(limits).await;
    let m = dm(&hub, &mut alice, "m1").await;
    assert!(
        m.get("recall_until").is_none(),
        "no deadline is announced: {m}"
    );
    assert_eq!(
        alice.call(&hub, "r", recall(&m)).await["code"],
        "recall_window_closed"
    );
}

#[tokio::test(start_paused = true)]
async fn recall_windows_are_rearmed_after_a_restart() {
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::default());
    let (hub, mut alice, _alice2, bob) = pair_on(default_limits(), store.clone()).await;
    let m1 = dm(&hub, &mut alice, "m1").await;
    let m2 = dm(&hub, &mut alice, "m2").await;
    drop((alice, bob));
    drop(hub);

    // The server comes back 60 s later: both windows are still open for 60 s more.
    let hub = Hub::start(default_limits(), store, 1 << 20, DEFAULT_CACHE_ENTRIES).unwrap();
    hub.clock().advance(Duration::from_secs(60));
    let mut alice = open(&hub, "alice").await;
    assert_eq!(
        alice.call(&hub, "r1", recall(&m1)).await["type"],
        "ack",
        "still open"
    );
    hub.clock().advance(Duration::from_secs(61));
    settle().await;
    let closed = alice.of_type("recall_closed");
    assert_eq!(
        closed.len(),
        1,
        "the re-armed timer fired for the other: {closed:?}"
    );
    assert_eq!(closed[0]["message"], m2["id"]);
}

#[tokio::test(start_paused = true)]
async fn send_times_are_forgotten_once_outside_the_throttle_window() {
    let (hub, mut alice, _alice2, _bob) = pair(default_limits()).await;
    for n in 0..3 {
        dm(&hub, &mut alice, &format!("s{n}")).await;
    }
    hub.sweep();
    assert_eq!(
        hub.working_set().send_logs,
        1,
        "the sender's recent sends count"
    );
    hub.clock().advance(Duration::from_secs(61));
    hub.sweep();
    assert_eq!(
        hub.working_set().send_logs,
        0,
        "nothing left inside the window"
    );
}
