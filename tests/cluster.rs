//! Three parley nodes sharing PostgreSQL and a Redis broker, each a real child process
//! on its own loopback port: clients on different nodes chat, the read/recall race and the
//! recall limits hold across nodes, a killed node's clients resync elsewhere with nothing
//! lost, and the conformance suite passes against every node.

mod support;

use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;
use support::{services, Client};

const SECRET: &str = "cluster-secret";
/// The tests drive many requests and connections quickly from one address.
const UNLIMITED: [&str; 4] = [
    "--requests-per-second",
    "0",
    "--connections-per-ip-per-second",
    "0",
];

/// One parley process.
struct Node {
    child: support::Spawned,
    addr: String,
    _dir: tempfile::TempDir,
}

/// Nodes of one cluster: one fresh database, one broker channel.
struct Cluster {
    nodes: Vec<Node>,
    database: String,
}

impl Cluster {
    async fn start(n: usize, extra: &[&str]) -> Cluster {
        let channel = services::fresh_channel();
        Cluster::start_on(&vec![channel; n], extra).await
    }

    /// One node per broker channel given: nodes on different channels share the ledger
    /// but hear none of each other's bulletins.
    async fn start_on(channels: &[String], extra: &[&str]) -> Cluster {
        let database = services::fresh_database().await;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            database,
        };
        for channel in channels {
            cluster.add_node(channel, extra).await;
        }
        cluster
    }

    /// Start one more node on the cluster's database, listening on `channel`.
    async fn add_node(&mut self, channel: &str, extra: &[&str]) {
        let redis = services::services().redis_url.clone();
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--store",
            "postgres",
            "--database-url",
            &self.database,
            "--broker-url",
            &redis,
            "--broker-channel",
            channel,
        ];
        args.extend_from_slice(extra);
        let (child, addr) = support::spawn_binary(dir.path(), SECRET, &args).await;
        self.nodes.push(Node {
            child,
            addr,
            _dir: dir,
        });
    }

    /// Conversations node `node` holds in memory, once it shows `want` or the patience
    /// runs out: a node answers a request before it lets go of the conversation, so the
    /// gauge may lag the answer by a moment.
    async fn held(&self, node: usize, want: f64) -> f64 {
        let addr = self.nodes[node].addr.as_str();
        let deadline = tokio::time::Instant::now() + support::PATIENCE;
        loop {
            let held = support::metric(addr, "parley_conversations_held")
                .await
                .expect("the gauge is shown");
            if held == want || tokio::time::Instant::now() > deadline {
                return held;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn url(&self, node: usize, user: &str) -> String {
        let token = parley::auth::mint(SECRET.as_bytes(), user, false, Duration::from_secs(600));
        format!("ws://{}/ws?token={token}", self.nodes[node].addr)
    }

    async fn connect(&self, node: usize, user: &str) -> Client {
        let ws = tokio_tungstenite::connect_async(self.url(node, user))
            .await
            .expect("upgrade")
            .0;
        Client::open(ws).await
    }
}

/// Read frames until a `message` frame has arrived for every id in `until`; returns the
/// frames before and including them. Each conversation is delivered in one order on every
/// node, so whatever was decided before those messages has arrived by then.
async fn frames_until(c: &mut Client, until: &[&Value]) -> Vec<Value> {
    let mut missing: HashSet<String> = until.iter().map(|v| v.to_string()).collect();
    let mut got = c.settle().await;
    loop {
        for f in &got {
            if f["type"] == "message" {
                missing.remove(&f["message"]["id"].to_string());
            }
        }
        if missing.is_empty() {
            return got;
        }
        let f = tokio::time::timeout(Duration::from_secs(8), c.expect_where("message", |_| true))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} (session {}): still missing {missing:?}; got {got:?}",
                    c.user, c.hello["session"]
                )
            });
        got.extend(c.settle().await);
        got.push(f);
    }
}

fn about<'a>(frames: &'a [Value], id: &Value) -> Vec<&'a str> {
    let mut kinds: Vec<&str> = frames
        .iter()
        .filter(|f| ["recalled", "read", "recall_closed"].contains(&f["type"].as_str().unwrap()))
        .filter(|f| &f["message"] == id)
        .map(|f| f["type"].as_str().unwrap())
        .collect();
    kinds.sort();
    kinds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_different_nodes_chat() {
    let cluster = Cluster::start(3, &UNLIMITED).await;
    let mut alice = cluster.connect(0, "alice").await;
    let mut bob = cluster.connect(1, "bob").await;
    let mut carol = cluster.connect(2, "carol").await;
    let mut alice_phone = cluster.connect(2, "alice").await;

    // A connection request and its acceptance cross nodes.
    support::connect_users(&mut alice, &mut bob).await;
    support::connect_users(&mut alice, &mut carol).await;

    // A direct message from node 0 reaches node 1, and the sender's other device on node 2.
    let m = alice.dm("bob", "hello across nodes").await;
    assert_eq!(bob.expect("message").await["message"]["id"], m["id"]);
    assert_eq!(
        alice_phone.expect("message").await["message"]["id"],
        m["id"]
    );

    // A group spanning all three nodes.
    let group = alice.group(&["bob", "carol"]).await;
    for c in [&mut bob, &mut carol, &mut alice_phone] {
        c.expect_where("conversation", |f| f["conversation"]["id"] == group["id"])
            .await;
    }
    let g = carol.say(&group["id"], "carol here").await;
    for c in [&mut alice, &mut bob, &mut alice_phone] {
        assert_eq!(c.expect("message").await["message"]["id"], g["id"]);
    }

    // Typing changes nothing, yet reaches the other nodes.
    bob.ok(json!({"type": "typing", "conversation": group["id"]}))
        .await;
    assert_eq!(carol.expect("typing").await["user"], "bob");

    // A read receipt on node 1 reaches the sender on nodes 0 and 2.
    bob.mark_read(&m).await;
    for c in [&mut alice, &mut alice_phone] {
        let r = c.expect_where("read", |f| f["message"] == m["id"]).await;
        assert_eq!(r["user"], "bob");
    }

    // A recall from node 2 removes the message on node 1.
    let m2 = alice_phone.dm("bob", "take this back").await;
    bob.expect_where("message", |f| f["message"]["id"] == m2["id"])
        .await;
    alice_phone
        .ok(json!({"type": "recall", "conversation": m2["conversation"], "message": m2["id"]}))
        .await;
    let r = bob.expect("recalled").await;
    assert_eq!(r["message"], m2["id"]);
    let h = bob.history(&m2["conversation"]).await;
    let last = h["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["state"], "recalled");
    assert!(last.get("body").is_none_or(Value::is_null), "{last}");

    // A block on node 2 is in force on node 0 at once.
    carol.ok(json!({"type": "block", "user": "alice"})).await;
    let code = alice
        .err(json!({"type": "send", "to": "carol", "body": "still there?"}))
        .await;
    assert_eq!(code, "recipient_unavailable");

    // A sync on any node sees everything, wherever it was decided.
    let mut late = cluster.connect(1, "alice").await;
    let sync = late.sync().await;
    let inbox = sync["inbox"].as_array().unwrap();
    assert!(inbox.iter().any(|e| e["conversation"]["id"] == group["id"]));
    assert!(inbox
        .iter()
        .any(|e| e["conversation"]["id"] == m["conversation"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_opens_one_session_in_the_whole_cluster() {
    let cluster = Cluster::start(2, &UNLIMITED).await;
    let [one, two] = [0, 1].map(|n| cluster.nodes[n].addr.clone());
    // Issued by one node, opened on the other: the nodes share the signing key.
    let ticket = support::ticket_for(&one, SECRET, "ann").await;
    let mut ann = Client::open(support::open_with_ticket(&two, &ticket).await).await;
    assert_eq!(ann.hello["user"], "ann");
    // Presented again, to either node: used.
    for addr in [&one, &two] {
        let ws = support::open_with_ticket(addr, &ticket).await;
        let (frames, code, _) = support::refused(ws).await;
        assert_eq!(code, 1008, "{addr}: {frames:?}");
        assert_eq!(frames[0]["message"], "ticket already used", "{addr}");
    }
    let used = support::metric(&one, "parley_logins_refused_total{reason=\"ticket_used\"}").await;
    assert_eq!(used, Some(1.0));
    ann.ok(json!({"type": "lookup", "id": "l", "user": "ann"}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_finds_a_conversation_opened_on_a_node_it_has_not_heard_from() {
    // Node 1 listens on another broker channel, so nothing node 0 does reaches it but
    // through the ledger: a sync must still see everything committed before it.
    let channels = [services::fresh_channel(), services::fresh_channel()];
    let cluster = Cluster::start_on(&channels, &UNLIMITED).await;
    let mut alice = cluster.connect(0, "alice").await;
    let mut bob = cluster.connect(0, "bob").await;
    support::connect_users(&mut alice, &mut bob).await;
    let mut bob_elsewhere = cluster.connect(1, "bob").await;

    let m = alice.dm("bob", "first words").await;
    let sync = bob_elsewhere.sync().await;
    let entry = sync["inbox"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["conversation"]["id"] == m["conversation"])
        .unwrap_or_else(|| panic!("the new conversation is in the inbox: {sync}"))
        .clone();
    assert_eq!(entry["last_message"]["id"], m["id"], "{entry}");
}

/// One pair of users racing `rounds` times: the sender's sessions on nodes `a`, the
/// recipient's on nodes `b`.
async fn race_pair(cluster: &Cluster, n: usize, rounds: usize) -> (usize, usize) {
    let (a, b) = (format!("racer-a{n}"), format!("racer-b{n}"));
    let mut a1 = cluster.connect(0, &a).await;
    let mut b1 = cluster.connect(1, &b).await;
    support::connect_users(&mut a1, &mut b1).await;
    let mut a2 = cluster.connect(2, &a).await;
    let mut b2 = cluster.connect(2, &b).await;
    let (mut recalls, mut reads) = (0, 0);
    for round in 0..rounds {
        let m = a1.dm(&b, &format!("round {round}")).await;
        let (conv, id) = (m["conversation"].clone(), m["id"].clone());
        let recall = json!({"type": "recall", "conversation": conv, "message": id});
        let read = json!({"type": "read", "conversation": conv, "message": id});
        let (recall_answer, read_answer) = tokio::join!(a1.request(recall), b1.request(read));
        let recall_won = recall_answer["type"] == "ack";
        assert!(
            recall_won != (read_answer["type"] == "ack"),
            "exactly one must win: recall {recall_answer}, read {read_answer}"
        );
        // Markers from both sides: once a session has them, it has every frame about the
        // raced message, whichever node decided it.
        let from_a = a1.say(&conv, "marker a").await;
        let from_b = b1.say(&conv, "marker b").await;
        let seen = [
            frames_until(&mut a1, &[&from_b["id"]]).await,
            frames_until(&mut a2, &[&m["id"], &from_a["id"], &from_b["id"]]).await,
            frames_until(&mut b1, &[&m["id"], &from_a["id"]]).await,
            frames_until(&mut b2, &[&m["id"], &from_a["id"], &from_b["id"]]).await,
        ];
        if recall_won {
            recalls += 1;
            assert_eq!(read_answer["code"], "not_found");
            assert_eq!(about(&seen[0], &id), Vec::<&str>::new());
            for s in &seen[1..] {
                assert_eq!(about(s, &id), ["recalled"], "{s:?}");
            }
        } else {
            reads += 1;
            assert_eq!(recall_answer["code"], "already_read");
            assert_eq!(about(&seen[0], &id), ["read", "recall_closed"]);
            assert_eq!(about(&seen[1], &id), ["read", "recall_closed"]);
            assert_eq!(about(&seen[2], &id), Vec::<&str>::new());
            assert_eq!(about(&seen[3], &id), ["read"]);
        }
        // Every node's history agrees.
        for c in [&mut a2, &mut b2] {
            let h = c.ok(json!({"type": "history", "conversation": conv})).await;
            let raced = h["messages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["id"] == id)
                .unwrap()
                .clone();
            let want = if recall_won { "recalled" } else { "visible" };
            assert_eq!(raced["state"], want);
        }
    }
    (recalls, reads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_and_recall_race_across_nodes_has_one_winner_seen_everywhere() {
    const PAIRS: usize = 8;
    const ROUNDS: usize = 25;
    let cluster = Arc::new(
        Cluster::start(
            3,
            &[
                &UNLIMITED[..],
                &["--recall-per-conversation", "1000000"],
                &["--recall-throttle-window", "0s"],
            ]
            .concat(),
        )
        .await,
    );
    let tasks: Vec<_> = (0..PAIRS)
        .map(|n| {
            let cluster = cluster.clone();
            tokio::spawn(async move { race_pair(&cluster, n, ROUNDS).await })
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
        "{} races across nodes: recall won {recalls}, read won {reads}",
        PAIRS * ROUNDS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_allowance_and_throttle_count_every_node() {
    let cluster = Cluster::start(
        3,
        &[
            &UNLIMITED[..],
            &["--recall-throttle-messages", "3"],
            &["--recall-throttle-window", "10m"],
        ]
        .concat(),
    )
    .await;
    let mut a0 = cluster.connect(0, "ann").await;
    let mut a1 = cluster.connect(1, "ann").await;
    let mut b2 = cluster.connect(2, "ben").await;
    support::connect_users(&mut a0, &mut b2).await;

    // One recall per conversation per day, whichever node takes it.
    let first = a0.dm("ben", "one").await;
    let second = a1.dm("ben", "two").await;
    a0.ok(json!({"type": "recall", "conversation": first["conversation"], "message": first["id"]}))
        .await;
    let code = a1
        .err(json!({"type": "recall", "conversation": second["conversation"], "message": second["id"]}))
        .await;
    assert_eq!(code, "recall_limit_reached");

    // The anti-spam throttle counts sends made on every node: 2 here, 2 there.
    let mut c0 = cluster.connect(0, "cid").await;
    support::connect_users(&mut a0, &mut c0).await;
    a0.dm("cid", "three").await;
    a1.dm("cid", "four").await;
    let last = a1.dm("cid", "five").await;
    let code = a0
        .err(json!({"type": "recall", "conversation": last["conversation"], "message": last["id"]}))
        .await;
    assert_eq!(code, "recall_throttled");
}

/// A node started on a ledger with history reads no conversation at start: it delivers
/// the entries of a conversation it does not hold, reads one whole only when a request
/// needs it, and keeps pending exactly the notifications that were pending when each
/// message was committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_a_ledger_with_history_reads_a_conversation_only_when_asked() {
    let channel = services::fresh_channel();
    let mut cluster = Cluster::start_on(std::slice::from_ref(&channel), &UNLIMITED).await;
    let mut ann = cluster.connect(0, "ann").await;
    let mut ben = cluster.connect(0, "ben").await;
    support::connect_users(&mut ann, &mut ben).await;
    let mut early = Vec::new();
    for k in 0..30 {
        early.push(ann.dm("ben", &format!("early {k}")).await);
    }
    ben.mark_read(&early[9]).await;
    ben.close().await;
    let away = ann.dm("ben", "while you were away").await;
    let dm = away["conversation"].clone();

    cluster.add_node(&channel, &UNLIMITED).await;
    assert_eq!(
        cluster.held(1, 0.0).await,
        0.0,
        "a new node reads no conversation at start"
    );

    let mut ben = cluster.connect(1, "ben").await;
    let live = ann.dm("ben", "live").await;
    let got = ben.expect("message").await;
    assert_eq!(
        got["message"]["id"], live["id"],
        "delivered by the new node"
    );
    assert_eq!(
        cluster.held(1, 0.0).await,
        0.0,
        "delivered without reading it"
    );

    let bodies: Vec<String> = support::all_messages(&mut ben, &dm)
        .await
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect();
    let mut expected: Vec<String> = (0..30).map(|k| format!("early {k}")).collect();
    expected.extend(["while you were away".into(), "live".into()]);
    assert_eq!(bodies, expected, "read whole, in order");
    assert_eq!(cluster.held(1, 1.0).await, 1.0, "read once asked");

    let sync = ben.sync().await;
    assert_eq!(sync["inbox"][0]["unread"], 22, "read up to the tenth of 32");
    let pending: HashSet<&Value> = sync["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["message"])
        .collect();
    assert!(pending.contains(&away["id"]), "sent while ben was offline");
    assert!(
        early.iter().all(|m| !pending.contains(&m["id"])),
        "none of those ben saw live on node 0: {pending:?}"
    );

    // Decided on the new node, delivered by the old one.
    let reply = ben.say(&dm, "back").await;
    let got = ann.expect("message").await;
    assert_eq!(got["message"]["id"], reply["id"]);
    assert_eq!(got["message"]["seq"], live["seq"].as_u64().unwrap() + 1);

    // A node whose cache is too small for the conversation forgets it after each use and
    // reads it again, delivering every new entry once either way.
    let small: Vec<&str> = UNLIMITED
        .iter()
        .copied()
        .chain(["--cache-entries", "8"])
        .collect();
    cluster.add_node(&channel, &small).await;
    let mut ben = cluster.connect(2, "ben").await;
    for round in 0..3 {
        let count = support::all_messages(&mut ben, &dm).await.len();
        assert_eq!(count, 33 + round, "round {round}: all of it, read again");
        assert_eq!(cluster.held(2, 0.0).await, 0.0, "forgotten once used");
        let more = ann.say(&dm, &format!("more {round}")).await;
        let got = ben.expect("message").await;
        assert_eq!(got["message"]["id"], more["id"], "delivered once, in order");
    }
    let last = ben.say(&dm, "decided on a node that forgets").await;
    assert_eq!(last["seq"], reply["seq"].as_u64().unwrap() + 4);
    let got = ann.expect("message").await;
    assert_eq!(got["message"]["id"], last["id"]);
    ben.expect_none("message").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_clients_reconnect_elsewhere_and_lose_nothing() {
    const COUNT: usize = 400;
    // Paced, so the streams are still going when the node dies.
    const PACE: Option<Duration> = Some(Duration::from_millis(2));
    let mut cluster = Cluster::start(3, &UNLIMITED).await;
    // Sender "sam" streams from node 0 to "rae" on node 2; "tom" streams from node 2 to
    // "uma" on node 1. Node 2 dies mid-stream.
    let mut sam = cluster.connect(0, "sam").await;
    let mut rae = cluster.connect(2, "rae").await;
    support::connect_users(&mut sam, &mut rae).await;
    let mut tom = cluster.connect(2, "tom").await;
    let mut uma = cluster.connect(1, "uma").await;
    support::connect_users(&mut tom, &mut uma).await;
    drop((sam, tom));

    let sam_acked = Arc::new(AtomicUsize::new(0));
    let tom_acked = Arc::new(AtomicUsize::new(0));
    let sam_stream = tokio::spawn(support::stream_sends(
        cluster.url(0, "sam"),
        "sam",
        "rae",
        COUNT,
        PACE,
        sam_acked.clone(),
    ));
    let tom_stream = tokio::spawn(support::stream_sends(
        cluster.url(2, "tom"),
        "tom",
        "uma",
        COUNT,
        PACE,
        tom_acked.clone(),
    ));

    // rae reads live on node 2 until it dies.
    let mut seen_live: Vec<Value> = Vec::new();
    let mut position = 0u64;
    let mut conversation = Value::Null;
    while seen_live.len() < COUNT / 4 {
        let f = rae.expect("message").await;
        position = f["message"]["seq"].as_u64().unwrap();
        conversation = f["message"]["conversation"].clone();
        seen_live.push(f["message"]["id"].clone());
    }
    cluster.nodes[2].child.start_kill().unwrap();
    cluster.nodes[2].child.wait().await.unwrap();
    let tom_acks = tom_stream.await.unwrap();
    assert!(
        tom_acks.len() < COUNT,
        "tom's stream should have been cut by the kill"
    );
    let sam_acks = sam_stream.await.unwrap();
    assert_eq!(sam_acks.len(), COUNT, "node 0 kept serving sam");

    // rae reconnects to node 1 and syncs from the last position she saw.
    let mut rae = cluster.connect(1, "rae").await;
    let mut after = Vec::new();
    loop {
        let sync = rae
            .ok(json!({"type": "sync", "positions": {conversation.as_str().unwrap(): position}}))
            .await;
        let update = sync["updates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["conversation"]["id"] == conversation)
            .cloned();
        let Some(update) = update else { break };
        for f in update["frames"].as_array().unwrap() {
            if f["type"] == "message" {
                after.push(f["message"]["id"].clone());
            }
        }
        position = update["pos"].as_u64().unwrap();
        if update["more"] != true {
            break;
        }
    }
    let mut all = seen_live.clone();
    all.extend(after);
    let expected: Vec<Value> = (0..COUNT).map(|k| sam_acks[&k]["id"].clone()).collect();
    assert_eq!(all, expected, "every acknowledged message, once, in order");

    // tom reconnects to node 0 and retries everything; acknowledged sends are not
    // applied twice, and uma (on node 1) ends with each message exactly once, in order.
    let tom_retry = support::stream_sends(
        cluster.url(0, "tom"),
        "tom",
        "uma",
        COUNT,
        None,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    for (k, m) in &tom_acks {
        assert_eq!(
            tom_retry[k]["id"], m["id"],
            "a retried send keeps its first answer"
        );
    }
    let conv = tom_retry[&0]["conversation"].clone();
    let mut bodies = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let mut req = json!({"type": "history", "conversation": conv, "limit": 100});
        if let Some(b) = before {
            req["before"] = json!(b);
        }
        let h = uma.ok(req).await;
        let msgs = h["messages"].as_array().unwrap().clone();
        if msgs.is_empty() {
            break;
        }
        before = msgs.first().and_then(|m| m["seq"].as_u64());
        for m in msgs.iter().rev() {
            bodies.push(m["body"].as_str().unwrap().to_owned());
        }
    }
    bodies.reverse();
    let expected: Vec<String> = (0..COUNT).map(|k| format!("tom {k}")).collect();
    assert_eq!(bodies, expected);
    eprintln!(
        "kill mid-stream: tom had {} of {COUNT} acknowledged before the kill; rae saw {} live, the rest by sync",
        tom_acks.len(),
        seen_live.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_passes_against_each_node_and_across_them() {
    let cluster = Cluster::start(3, &parley_conformance::spawn::FAST_WINDOWS).await;
    let scenarios = parley_conformance::embedded().expect("scenarios parse");
    let options = parley_conformance::Options::default();
    let url = |i: usize| format!("ws://{}", cluster.nodes[i].addr);
    let mut targets: Vec<(String, parley_conformance::Target)> = (0..3)
        .map(|i| {
            let t = parley_conformance::Target::new(url(i), SECRET.as_bytes().to_vec());
            (format!("node {i}"), t)
        })
        .collect();
    let mut spread = parley_conformance::Target::new(url(0), SECRET.as_bytes().to_vec());
    spread.also = vec![url(1), url(2)];
    targets.push(("all three nodes in turn".into(), spread));
    for (name, target) in &targets {
        let report = parley_conformance::run_with(target, &scenarios, &options, |r| {
            if r.result.is_err() {
                eprintln!("{name}: {}", r.line());
            }
        })
        .await;
        eprintln!("conformance against {name}: {}", report.summary());
        assert_eq!(report.failed(), 0, "{name}: {}", report.summary());
    }
}

/// A ledger written before nodes read conversations on demand (the first schema only) is
/// upgraded by the first node to start: the conversation's members and the report filed
/// in a conversation are found without any replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_of_the_first_schema_is_upgraded_when_a_node_starts() {
    use parley::core::Change;
    use parley_protocol::{ConversationKind, ConversationView, ReportTarget, ReportView};
    let database = services::fresh_database().await;
    let (db, conn) = tokio_postgres::connect(&database, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    db.batch_execute(include_str!("../migrations/postgres/0001_init.sql"))
        .await
        .unwrap();
    let users = |names: &[&str]| -> Vec<Change> {
        let user = |u: &&str| Change::UserCreated {
            user: u.to_string(),
        };
        names.iter().map(user).collect()
    };
    let created = Change::ConversationCreated {
        conversation: ConversationView {
            id: "d-old".into(),
            kind: ConversationKind::Direct,
            participants: vec!["ann".into(), "ben".into()],
            title: None,
        },
        at: 1,
    };
    let reported = Change::Reported {
        report: ReportView {
            id: "r-old".into(),
            reporter: "ben".into(),
            target: ReportTarget::Message {
                conversation: "d-old".into(),
                message: "m-old".into(),
            },
            reason: "spam".into(),
            at: 2,
            snapshot: None,
        },
    };
    let rows: [(&str, i64, Vec<Change>); 3] = [
        ("directory", 1, users(&["ann", "ben", "root"])),
        ("d-old", 1, vec![created]),
        ("d-old", 2, vec![reported]),
    ];
    for (scope, seq, changes) in &rows {
        let text = serde_json::to_string(changes).unwrap();
        db.execute(
            "INSERT INTO entries (scope, seq, changes, emits) VALUES ($1, $2, $3, '[]')",
            &[scope, seq, &text],
        )
        .await
        .unwrap();
    }
    db.batch_execute("INSERT INTO scopes (id, seq) VALUES ('directory', 1), ('d-old', 2)")
        .await
        .unwrap();

    let mut cluster = Cluster {
        nodes: Vec::new(),
        database,
    };
    cluster
        .add_node(&services::fresh_channel(), &UNLIMITED)
        .await;
    let members = db
        .query(
            "SELECT user_id FROM members WHERE scope = 'd-old' ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let members: Vec<String> = members.iter().map(|r| r.get(0)).collect();
    assert_eq!(members, ["ann", "ben"], "backfilled from the creation");
    assert_eq!(cluster.held(0, 0.0).await, 0.0, "nothing replayed");

    let token = parley::auth::mint(SECRET.as_bytes(), "root", true, Duration::from_secs(600));
    let url = format!("ws://{}/ws?token={token}", cluster.nodes[0].addr);
    let ws = tokio_tungstenite::connect_async(url).await.unwrap().0;
    let mut root = Client::open(ws).await;
    let listed = root.ok(json!({"type": "list_reports"})).await;
    assert_eq!(listed["reports"][0]["id"], "r-old", "{listed}");
    let mut ben = cluster.connect(0, "ben").await;
    let history = ben.history(&json!("d-old")).await;
    assert_eq!(
        history["messages"],
        json!([]),
        "read from the ledger: {history}"
    );
    assert_eq!(cluster.held(0, 1.0).await, 1.0);
}

/// A node that cannot mark its start (a writer's transaction on the ledger stalled, holding
/// its lock) refuses to start after the lock timeout, saying why, instead of waiting for
/// ever or serving without knowing which entries it owes its sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_mark_its_start_refuses_to_start_saying_why() {
    let mut cluster = Cluster::start(1, &UNLIMITED).await;
    let first = cluster.nodes.remove(0);
    let (db, conn) = tokio_postgres::connect(&cluster.database, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    // What a writer in the middle of an append holds.
    db.batch_execute("BEGIN; LOCK TABLE entries IN ROW EXCLUSIVE MODE")
        .await
        .unwrap();
    let redis = services::services().redis_url.clone();
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["serve", "--listen", "127.0.0.1:0", "--secret", SECRET])
        .args(["--store", "postgres", "--database-url", &cluster.database])
        .args([
            "--broker-url",
            &redis,
            "--broker-channel",
            &services::fresh_channel(),
        ])
        .arg("--data")
        .arg(dir.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("the node gives up by itself")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a node started: {stdout}");
    assert!(!stdout.contains("listening on"), "{stdout}");
    assert!(stderr.contains("cannot mark the start"), "{stderr}");
    assert!(stderr.contains("lock timeout"), "{stderr}");
    assert!(started.elapsed() >= Duration::from_secs(9), "gave up early");
    // Once the lock is released a node starts and serves as usual.
    db.batch_execute("ROLLBACK").await.unwrap();
    drop(first);
    cluster
        .add_node(&services::fresh_channel(), &UNLIMITED)
        .await;
    let (status, _) = support::http_get(&cluster.nodes[0].addr, "/readyz").await;
    assert_eq!(status, 200);
}

/// `/readyz` of the node at `addr` until its status is `want` (or the patience runs out).
async fn readiness_until(addr: &str, want: u16) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    loop {
        let (status, body) = support::http_get(addr, "/readyz").await;
        if status == want || tokio::time::Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_database_makes_sends_fail_retryably_and_readiness_say_why() {
    use support::relay::Relay;
    let s = services::services();
    let database = services::fresh_database().await;
    let upstream: std::net::SocketAddr = format!("127.0.0.1:{}", s.postgres_port).parse().unwrap();
    let db_relay = Relay::to(upstream).await;
    let redis: std::net::SocketAddr = s.redis_url.trim_start_matches("redis://").parse().unwrap();
    let broker_relay = Relay::to(redis).await;
    let url = database.replace(
        &format!("127.0.0.1:{}", s.postgres_port),
        &db_relay.addr.to_string(),
    );
    let broker = format!("redis://{}", broker_relay.addr);
    let channel = services::fresh_channel();
    let mut args = vec!["--store", "postgres", "--database-url", &url];
    args.extend(["--broker-url", &broker, "--broker-channel", &channel]);
    args.extend(["--database-timeout", "1s", "--database-pool-wait", "1s"]);
    args.extend(UNLIMITED);
    let dir = tempfile::tempdir().unwrap();
    let (_child, addr) = support::spawn_binary(dir.path(), SECRET, &args).await;
    assert_eq!(support::http_get(&addr, "/readyz").await.0, 200);
    let mut alice = support::connect_at(&addr, SECRET, "alice").await;
    let mut bob = support::connect_at(&addr, SECRET, "bob").await;
    support::connect_users(&mut alice, &mut bob).await;
    let first = alice.dm("bob", "before the stall").await;

    // The database stops answering: the send gets the retryable code within the deadline
    // (with room for the claim's and the commit's), not after the stall ends.
    db_relay.pause(true);
    let send = json!({"type": "send", "id": "stalled-1", "conversation": first["conversation"], "body": "during the stall"});
    let asked = std::time::Instant::now();
    let answer = alice.request(send.clone()).await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "unavailable", "{answer}");
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "answered after {:?}",
        asked.elapsed()
    );
    let (status, body) = readiness_until(&addr, 503).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("database did not answer"), "{body}");
    // A ticket cannot be checked against the other nodes' redemptions: try again later.
    let ticket = support::ticket_for(&addr, SECRET, "carol").await;
    let (frames, code, _) = support::refused(support::open_with_ticket(&addr, &ticket).await).await;
    assert_eq!(code, 1013, "{frames:?}");
    assert_eq!(frames[0]["code"], "unavailable", "{frames:?}");
    let errors = support::metric(&addr, "parley_store_errors_total{kind=\"unavailable\"}").await;
    assert!(
        errors.unwrap_or(0.0) >= 1.0,
        "store errors counted: {errors:?}"
    );

    // Once it answers again the node is ready, and the retry is stored exactly once.
    db_relay.pause(false);
    let (status, body) = readiness_until(&addr, 200).await;
    assert_eq!(status, 200, "{body}");
    let ticket = support::ticket_for(&addr, SECRET, "carol").await;
    let carol = Client::open(support::open_with_ticket(&addr, &ticket).await).await;
    assert_eq!(carol.hello["user"], "carol");
    let retried = alice.request(send).await;
    assert_eq!(retried["type"], "ack", "{retried}");
    let bodies: Vec<Value> = support::all_messages(&mut bob, &first["conversation"])
        .await
        .into_iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(
        bodies,
        [json!("before the stall"), json!("during the stall")]
    );

    // A broker that stops answering turns readiness 503 too, saying so.
    broker_relay.pause(true);
    let (status, body) = readiness_until(&addr, 503).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("broker"), "{body}");
    broker_relay.pause(false);
    assert_eq!(readiness_until(&addr, 200).await.0, 200);
}

/// `parley serve` with `args` on a fresh data directory, expected to refuse to start:
/// its standard error.
async fn refused_start(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["serve", "--listen", "127.0.0.1:0", "--secret", SECRET])
        .args(args)
        .arg("--data")
        .arg(dir.path())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("the node gave up within 30 s")
        .unwrap();
    assert!(!out.status.success(), "started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_talk_tls_to_postgresql_and_redis_checking_their_certificates() {
    let s = services::services();
    let database = services::fresh_database().await;
    let ca = s.service_ca.display().to_string();
    let verified = format!("{database}?sslmode=verify-full&sslrootcert={ca}");
    let channel = services::fresh_channel();
    // Redis's TLS port speaks nothing else: a node that starts reached it over TLS.
    let tls_args = [
        "--store",
        "postgres",
        "--database-url",
        &verified,
        "--broker-url",
        &s.rediss_url,
        "--broker-ca",
        &ca,
        "--broker-channel",
        &channel,
    ];
    let mut args = tls_args.to_vec();
    args.extend(UNLIMITED);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (_one, one) = support::spawn_binary(dirs[0].path(), SECRET, &args).await;
    let (_two, two) = support::spawn_binary(dirs[1].path(), SECRET, &args).await;
    let mut alice = support::connect_at(&one, SECRET, "alice").await;
    let mut bob = support::connect_at(&two, SECRET, "bob").await;
    support::connect_users(&mut alice, &mut bob).await;
    let sent = alice.dm("bob", "over TLS").await;
    assert_eq!(bob.expect("message").await["message"]["id"], sent["id"]);

    // The database sees the nodes' connections encrypted.
    let admin = format!(
        "host=127.0.0.1 port={} user=parley dbname=postgres",
        s.postgres_port
    );
    let (db, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let name = database.rsplit('/').next().unwrap();
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE ssl), count(*) FROM pg_stat_ssl \
             JOIN pg_stat_activity USING (pid) WHERE datname = $1",
            &[&name],
        )
        .await
        .unwrap();
    let (encrypted, all): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        all > 0 && encrypted == all,
        "{encrypted} of {all} connections encrypted"
    );

    // A root that did not sign the servers' certificate: a node refuses to start, with
    // the database and with the broker.
    let other = dirs[0].path().join("other-ca.pem");
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(&other, made.cert.pem()).unwrap();
    let other = other.display().to_string();
    let wrong_root = format!("{database}?sslmode=verify-full&sslrootcert={other}");
    let mut wrong_database = tls_args.to_vec();
    wrong_database[3] = &wrong_root;
    let stderr = refused_start(&wrong_database).await;
    assert!(stderr.contains("certificate"), "{stderr}");
    let mut wrong_broker = tls_args.to_vec();
    wrong_broker[7] = &other;
    let stderr = refused_start(&wrong_broker).await;
    assert!(stderr.contains("broker"), "{stderr}");
    // A CA for a plain redis:// URL is refused rather than ignored.
    let mut plain = tls_args.to_vec();
    plain[5] = &s.redis_url;
    let stderr = refused_start(&plain).await;
    assert!(stderr.contains("rediss://"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_does_not_answer_makes_a_node_refuse_to_start_in_time() {
    use support::relay::Relay;
    let s = services::services();
    let database = services::fresh_database().await;
    let redis: std::net::SocketAddr = s.redis_url.trim_start_matches("redis://").parse().unwrap();
    let relay = Relay::to(redis).await;
    relay.pause(true);
    let broker = format!("redis://{}", relay.addr);
    let args = ["--store", "postgres", "--database-url", &database];
    let mut args = args.to_vec();
    args.extend(["--broker-url", &broker, "--broker-timeout", "2s"]);
    let asked = std::time::Instant::now();
    let stderr = refused_start(&args).await;
    assert!(stderr.contains("cannot reach the broker"), "{stderr}");
    assert!(stderr.contains("2s"), "says how long it waited: {stderr}");
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "gave up after {:?}",
        asked.elapsed()
    );
}
