//! Test support: a real parley server on a loopback port and real WebSocket clients.
#![allow(dead_code)]

pub mod relay;
pub mod services;
pub mod tls;

use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use parley::config::Config;
use parley::server::{self, Running};
use parley::store::{Chain, OnDemand, Reach, Readback, Store, StoreError};
use parley_protocol::Limits;
use parley_testkit::{ClientError, Session};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Request ids are unique across every client of a test binary: the server deduplicates
/// sends by (user, conversation, request id), so two sessions of one user must never
/// reuse each other's ids by accident.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// How long a test waits for a frame that must come.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A server on 127.0.0.1:0 with its secret.
pub struct TestServer {
    pub running: Running,
    pub secret: Vec<u8>,
}

/// Start a server with default limits adjusted by `tune`.
pub async fn start_with(tune: impl FnOnce(&mut Config)) -> TestServer {
    start_over(Arc::new(parley::store::MemoryStore::default()), tune).await
}

/// Start a server over `store` (its state rebuilt from it), with the default limits
/// adjusted by `tune`.
pub async fn start_over(store: Arc<dyn Store>, tune: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = Config::with_secret(b"test-secret".to_vec());
    // Tests drive many requests from one user quickly; the rate-limit tests turn these back on.
    config.limits.requests_per_second = 0;
    config.connections_per_ip_per_second = 0;
    tune(&mut config);
    let running = server::spawn_with_store(&config, store)
        .await
        .expect("server starts");
    TestServer {
        running,
        secret: config.secret,
    }
}

/// A store that fails on demand: while failing, `commit` answers
/// [`StoreError::Unavailable`] without touching the inner store; `load` always passes
/// through. Commits of no changes pass through too (the real stores write nothing for
/// them, so no outage can fail them).
pub struct FailingStore {
    inner: Arc<dyn Store>,
    failing: AtomicBool,
    fail_next: AtomicUsize,
    refused: AtomicUsize,
    links: Arc<Links>,
}

/// Chained commits in call order, as a real store writes them: each link waits for the
/// one called before it, and a failing link can be made to wait for followers first.
#[derive(Default)]
struct Links {
    called: AtomicUsize,
    moved: tokio::sync::Notify,
    /// Links the next failing one waits to see called after it before it fails.
    followers: AtomicUsize,
    tail: parking_lot::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl Links {
    async fn called_at_least(&self, n: usize) {
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if self.called.load(Ordering::SeqCst) >= n {
                return;
            }
            moved.await;
        }
    }
}

impl FailingStore {
    /// Wrap `inner`; it works until told to fail.
    pub fn new(inner: Arc<dyn Store>) -> Arc<FailingStore> {
        Arc::new(FailingStore {
            inner,
            failing: AtomicBool::new(false),
            fail_next: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            links: Arc::default(),
        })
    }

    /// Fail every commit from now on (`true`) or none any more (`false`, which also
    /// cancels a pending [`FailingStore::fail_next`]).
    pub fn fail(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
        if !on {
            self.fail_next.store(0, Ordering::SeqCst);
        }
    }

    /// Fail the next `n` commits, then work again.
    pub fn fail_next(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Fail the next chained commit only once `followers` more links were called after
    /// it (decided on the state it assumed): a failure in the middle of a burst.
    pub fn fail_next_followed_by(&self, followers: usize) {
        self.links.followers.store(followers, Ordering::SeqCst);
        self.fail_next(1);
    }

    /// Commits refused so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    fn commit_refused(
        &self,
    ) -> futures::future::BoxFuture<'static, Result<Vec<parley::core::Change>, StoreError>> {
        self.refused.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            Err(StoreError::Unavailable {
                context: "commit".into(),
                detail: "failure injected by the test".into(),
            })
        })
    }

    fn should_fail(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
            || self
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }
}

impl Store for FailingStore {
    fn commit(
        &self,
        changes: Vec<parley::core::Change>,
    ) -> futures::future::BoxFuture<'static, Result<Vec<parley::core::Change>, StoreError>> {
        if changes.is_empty() || !self.should_fail() {
            return self.inner.commit(changes);
        }
        self.commit_refused()
    }

    fn orders_chains(&self) -> bool {
        self.inner.orders_chains()
    }

    /// Failing a link breaks its chain at once, so the links after it fail unwritten, as
    /// a real store's failed transaction does.
    fn commit_chained(
        &self,
        changes: Vec<parley::core::Change>,
        chain: &Arc<Chain>,
    ) -> futures::future::BoxFuture<'static, Result<Vec<parley::core::Change>, StoreError>> {
        if changes.is_empty() {
            return self.inner.commit_chained(changes, chain);
        }
        let links = self.links.clone();
        let called = links.called.fetch_add(1, Ordering::SeqCst) + 1;
        links.moved.notify_waiters();
        let (done, next) = tokio::sync::oneshot::channel();
        let before = links.tail.lock().replace(next);
        let chain = chain.clone();
        if self.should_fail() {
            let refused = self.commit_refused();
            let wait_for = called + links.followers.swap(0, Ordering::SeqCst);
            return Box::pin(async move {
                links.called_at_least(wait_for).await;
                if let Some(before) = before {
                    let _ = before.await;
                }
                chain.break_off();
                let _ = done.send(());
                refused.await
            });
        }
        let inner = self.inner.clone();
        Box::pin(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            let result = if chain.broken() {
                Err(Chain::broken_error())
            } else {
                inner.commit_chained(changes, &chain).await
            };
            let _ = done.send(());
            result
        })
    }

    fn load_each(&self, each: &mut dyn FnMut(parley::core::Change)) -> Result<(), StoreError> {
        self.inner.load_each(each)
    }

    fn on_demand(&self) -> Option<&dyn OnDemand> {
        self.inner.on_demand().map(|_| self as &dyn OnDemand)
    }
}

/// Reads fail while commits do (an outage takes both); start-up reads always pass.
impl OnDemand for FailingStore {
    fn start_up(&self, each: &mut dyn FnMut(parley::core::Change)) -> Result<(), StoreError> {
        self.reads().start_up(each)
    }

    fn conversation(
        &self,
        id: &str,
        reach: Option<Reach>,
    ) -> BoxFuture<'static, Result<Option<Readback>, StoreError>> {
        if self.failing.load(Ordering::SeqCst) {
            return injected("read a conversation");
        }
        self.reads().conversation(id, reach)
    }

    fn conversations_of(&self, user: &str) -> BoxFuture<'static, Result<Vec<String>, StoreError>> {
        if self.failing.load(Ordering::SeqCst) {
            return injected("read conversations");
        }
        self.reads().conversations_of(user)
    }

    fn closing(
        &self,
        id: &str,
        sent_from: i64,
        sent_until: i64,
    ) -> BoxFuture<'static, Result<parley::store::Closing, StoreError>> {
        if self.failing.load(Ordering::SeqCst) {
            return injected("read recall windows");
        }
        self.reads().closing(id, sent_from, sent_until)
    }

    fn lately(
        &self,
        asked: parley::store::LatelyAsked,
    ) -> Result<parley::store::Lately, StoreError> {
        self.reads().lately(asked)
    }
}

impl FailingStore {
    fn reads(&self) -> &dyn OnDemand {
        self.inner
            .on_demand()
            .expect("only offered when the inner store has it")
    }
}

fn injected<T: Send + 'static>(context: &str) -> BoxFuture<'static, Result<T, StoreError>> {
    let e = StoreError::unavailable(context, "failure injected by the test");
    Box::pin(async move { Err(e) })
}

/// Start a server with the default limits.
pub async fn start() -> TestServer {
    start_with(|_| {}).await
}

/// Adjust only the limits.
pub async fn start_limits(tune: impl FnOnce(&mut Limits)) -> TestServer {
    start_with(|c| tune(&mut c.limits)).await
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl TestServer {
    pub fn token(&self, user: &str) -> String {
        parley::auth::mint(&self.secret, user, false, Duration::from_secs(3600))
    }

    pub fn admin_token(&self, user: &str) -> String {
        parley::auth::mint(&self.secret, user, true, Duration::from_secs(3600))
    }

    /// Open a raw socket with any token text (or none).
    pub async fn raw(&self, token: Option<&str>) -> Ws {
        let url = match token {
            Some(t) => self.running.url(t),
            None => format!("ws://{}/ws", self.running.addr),
        };
        tokio_tungstenite::connect_async(url)
            .await
            .expect("upgrade")
            .0
    }

    /// Connect a session for `user` and read its `hello`.
    pub async fn connect(&self, user: &str) -> Client {
        Client::open(self.raw(Some(&self.token(user))).await).await
    }

    /// Connect a session with an admin token.
    pub async fn connect_admin(&self, user: &str) -> Client {
        Client::open(self.raw(Some(&self.admin_token(user))).await).await
    }

    /// Step the server clock forward (timers due by then fire at once).
    pub fn advance(&self, by: Duration) {
        self.running.hub.clock().advance(by);
    }

    /// Connect two users and make them connections.
    pub async fn connected_pair(&self, a: &str, b: &str) -> (Client, Client) {
        let mut ca = self.connect(a).await;
        let mut cb = self.connect(b).await;
        connect_users(&mut ca, &mut cb).await;
        (ca, cb)
    }
}

/// Make the users behind two sessions connections.
pub async fn connect_users(a: &mut Client, b: &mut Client) {
    let b_user = b.user.clone();
    let a_user = a.user.clone();
    a.ok(json!({"type": "connect", "user": b_user})).await;
    b.ok(json!({"type": "accept", "user": a_user})).await;
    a.expect("connected").await;
}

/// A WebSocket client for one user's session: [`parley_testkit::Session`] with the
/// test's patience on every wait, panicking with the user's name when a wait fails.
pub struct Client {
    session: Session,
    pub user: String,
    pub hello: Value,
}

/// The deadline of a wait that starts now.
fn patience() -> tokio::time::Instant {
    tokio::time::Instant::now() + PATIENCE
}

impl Client {
    pub async fn open(ws: Ws) -> Client {
        let mut c = Client {
            session: Session::new(ws),
            user: String::new(),
            hello: Value::Null,
        };
        let hello = c.expect("hello").await;
        c.user = hello["user"]
            .as_str()
            .expect("hello names the user")
            .to_owned();
        c.hello = hello;
        c
    }

    /// Send a raw text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.session.send_text(text).await.expect("send");
    }

    /// Send a request (an `id` is added when absent) and return its answer.
    pub async fn request(&mut self, frame: Value) -> Value {
        let user = self.user.clone();
        self.try_request(frame)
            .await
            .unwrap_or_else(|(code, reason)| {
                panic!(
                    "{user}: connection open while awaiting answer, but closed {code} {reason:?}"
                )
            })
    }

    /// Send a request (an `id` is added when absent) and return its answer, or the close
    /// code and reason if the server closes the session before answering.
    pub async fn try_request(&mut self, mut frame: Value) -> Result<Value, (u16, String)> {
        if frame.get("id").is_none() {
            let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            frame["id"] = json!(format!("{}-{n}", self.user));
        }
        match self.session.request(&frame, patience()).await {
            Ok(answer) => Ok(answer),
            Err(ClientError::Closed { code, reason, .. }) => Err((code, reason)),
            Err(e) => panic!("{}: {e}", self.user),
        }
    }

    /// Send a request that must succeed; returns its `result`.
    pub async fn ok(&mut self, frame: Value) -> Value {
        let answer = self.request(frame.clone()).await;
        assert_eq!(
            answer["type"], "ack",
            "{} expected ack for {frame}, got {answer}",
            self.user
        );
        answer["result"].clone()
    }

    /// Send a request that must fail; returns its error code.
    pub async fn err(&mut self, frame: Value) -> String {
        let answer = self.request(frame.clone()).await;
        assert_eq!(
            answer["type"], "error",
            "{} expected error for {frame}, got {answer}",
            self.user
        );
        answer["code"].as_str().unwrap().to_owned()
    }

    /// The next frame of `kind` (earlier unclaimed frames of other kinds stay buffered).
    pub async fn expect(&mut self, kind: &str) -> Value {
        self.expect_where(kind, |_| true).await
    }

    /// Round-trip a request so every frame queued before it has arrived, then return the
    /// unclaimed frames of `kind`. The server queues a session's frames in order, so this
    /// needs no sleeping.
    pub async fn drain(&mut self, kind: &str) -> Vec<Value> {
        self.ok(json!({"type": "lookup", "user": self.user.clone()}))
            .await;
        self.session.take(|f| f["type"] == kind)
    }

    /// Round-trip a request, then take every unclaimed frame, whatever its kind.
    pub async fn settle(&mut self) -> Vec<Value> {
        self.ok(json!({"type": "lookup", "user": self.user.clone()}))
            .await;
        self.session.take(|_| true)
    }

    /// Assert that no frame of `kind` is pending.
    pub async fn expect_none(&mut self, kind: &str) {
        let got = self.drain(kind).await;
        assert!(
            got.is_empty(),
            "{}: unexpected {kind} frames: {got:?}",
            self.user
        );
    }

    /// Wait for the server to close the socket; returns the close code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        let user = &self.user;
        self.session
            .wait_closed(patience())
            .await
            .unwrap_or_else(|| panic!("{user}: the server did not close within {PATIENCE:?}"))
    }

    /// Close the socket cleanly and wait until the server has answered and closed its end.
    pub async fn close(self) {
        let answered = self.session.close(patience()).await;
        assert!(
            answered.is_some(),
            "{}: the server answers the close in time",
            self.user
        );
    }

    /// Frames received but not claimed yet.
    pub fn pending(&self) -> Vec<&Value> {
        self.session.unclaimed().collect()
    }

    /// Send a direct message and return the stored message.
    pub async fn dm(&mut self, to: &str, body: &str) -> Value {
        self.ok(json!({"type": "send", "to": to, "body": body}))
            .await["message"]
            .clone()
    }

    /// Send into an existing conversation and return the stored message.
    pub async fn say(&mut self, conversation: &Value, body: &str) -> Value {
        self.ok(json!({"type": "send", "conversation": conversation, "body": body}))
            .await["message"]
            .clone()
    }

    /// Send an InMail and return the stored message.
    pub async fn inmail(&mut self, to: &str, cc: &[&str], body: &str) -> Value {
        self.ok(json!({"type": "inmail", "to": to, "cc": cc, "body": body}))
            .await["message"]
            .clone()
    }

    /// Create a group with `members` (besides this user) and return the conversation.
    pub async fn group(&mut self, members: &[&str]) -> Value {
        self.ok(json!({"type": "create_group", "members": members}))
            .await["conversation"]
            .clone()
    }

    /// Mark `message`'s conversation read up to it.
    pub async fn mark_read(&mut self, message: &Value) {
        self.ok(on_message("read", message)).await;
    }

    /// The `history` answer for a conversation.
    pub async fn history(&mut self, conversation: &Value) -> Value {
        self.ok(json!({"type": "history", "conversation": conversation}))
            .await
    }

    /// The messages of a conversation as this user sees them, oldest first.
    pub async fn messages(&mut self, conversation: &Value) -> Vec<Value> {
        self.history(conversation).await["messages"]
            .as_array()
            .expect("history lists messages")
            .clone()
    }

    /// The `sync` answer.
    pub async fn sync(&mut self) -> Value {
        self.ok(json!({"type": "sync"})).await
    }

    /// The next frame of `kind` for which `pred` holds (others stay buffered).
    pub async fn expect_where(&mut self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let hit = |f: &Value| f["type"] == kind && pred(f);
        match self.session.claim(patience(), kind, hit).await {
            Ok(frame) => frame,
            Err(e) => panic!("{}: {e}", self.user),
        }
    }
}

/// A request that names a stored message: `{"type": kind, "conversation": .., "message": ..}`.
pub fn on_message(kind: &str, message: &Value) -> Value {
    json!({"type": kind, "conversation": message["conversation"], "message": message["id"]})
}

/// The ids of a list of messages, in order.
pub fn ids(messages: &[Value]) -> Vec<Value> {
    messages.iter().map(|m| m["id"].clone()).collect()
}

/// Read a socket the server refuses to the end: every text frame it sent, then the close
/// code and reason.
pub async fn refused(mut ws: Ws) -> (Vec<Value>, u16, String) {
    let mut frames = Vec::new();
    loop {
        let msg = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("server closes in time");
        match msg {
            Some(Ok(Message::Text(t))) => {
                frames.push(serde_json::from_str(t.as_str()).expect("server sends JSON"))
            }
            Some(Ok(Message::Close(Some(frame)))) => {
                return (frames, frame.code.into(), frame.reason.to_string())
            }
            Some(Ok(Message::Close(None))) | None => return (frames, 1005, String::new()),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("socket error before close: {e}"),
        }
    }
}

/// Open the SQLite store of `dir` once no earlier store holds it: a stopped test server lets
/// go of its store only when its last session and timer task have ended, as a restarted
/// process would wait for the old one to exit.
pub async fn open_sqlite(dir: &std::path::Path) -> Arc<parley::store::SqliteStore> {
    use parley::store::{SqliteOptions, SqliteStore};
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match SqliteStore::open(dir, SqliteOptions::default()) {
            Ok(store) => return Arc::new(store),
            Err(e @ StoreError::Refused { .. }) if e.to_string().contains("is in use") => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the earlier store never let go: {e}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("cannot open the store: {e}"),
        }
    }
}

/// Start the `parley` binary as a child process on a free loopback port with `data` as its
/// data directory; returns the child and the address it printed.
pub async fn spawn_binary(
    data: &std::path::Path,
    secret: &str,
    extra: &[&str],
) -> (Spawned, String) {
    let mut args = vec!["--secret", secret];
    args.extend_from_slice(extra);
    spawn_serving(data, &args).await
}

/// A `parley serve` child process, killed when dropped, with its log kept (in a
/// directory of its own, not in its data directory) for the message of a test that fails.
pub struct Spawned {
    server: parley_testkit::Launched,
    _log: Option<tempfile::TempDir>,
}

impl std::ops::Deref for Spawned {
    type Target = tokio::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.server.child
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.server.child
    }
}

impl Spawned {
    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.server.log_tail(lines)
    }
}

/// Start `parley serve` with `args` on a free loopback port with `data` as its data
/// directory (and, without `--secret`, the secret it keeps there); returns the child and
/// the address it printed. A server that does not start fails the test with its log.
pub async fn spawn_serving(data: &std::path::Path, args: &[&str]) -> (Spawned, String) {
    let log = tempfile::tempdir().unwrap();
    let cmd = serve_command(data, args);
    let server = parley_testkit::launch(cmd, &log.path().join("server.log"), PATIENCE * 3)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = server.addr.to_string();
    let spawned = Spawned {
        server,
        _log: Some(log),
    };
    (spawned, addr)
}

/// Like [`spawn_serving`], for a test that reads what the server logs: its standard error
/// line by line, filtered only as `args` say (not by the test's own `RUST_LOG`).
pub async fn spawn_watched(
    data: &std::path::Path,
    args: &[&str],
) -> (Spawned, String, parley_testkit::LogLines) {
    let mut cmd = serve_command(data, args);
    cmd.env_remove("RUST_LOG").env_remove("PARLEY_LOG");
    let (server, logs) = parley_testkit::launch_watched(cmd, PATIENCE * 3)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = server.addr.to_string();
    (Spawned { server, _log: None }, addr, logs)
}

/// `parley serve` on a free loopback port with `args`, its data in `data`.
fn serve_command(data: &std::path::Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_parley"));
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--data")
        .arg(data);
    cmd
}

/// Flags of a spawned server on SQLite with the per-user and per-address limits off, for
/// tests that drive many requests from one address.
pub const SQLITE_UNLIMITED: [&str; 6] = [
    "--store",
    "sqlite",
    "--requests-per-second",
    "0",
    "--connections-per-ip-per-second",
    "0",
];

/// Connect a session for `user` to a server at `addr` (a spawned binary, say) that signs
/// tokens with `secret`, and read its `hello`.
pub async fn connect_at(addr: &str, secret: &str, user: &str) -> Client {
    let token = parley::auth::mint(secret.as_bytes(), user, false, Duration::from_secs(600));
    let ws = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}"))
        .await
        .expect("upgrade")
        .0;
    Client::open(ws).await
}

/// A plain HTTP/1.1 GET of `path` from the server at `addr`: its status and body.
pub async fn http_get(addr: impl tokio::net::ToSocketAddrs, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: parley\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The next text frame of a session, as JSON.
pub async fn next_json<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a frame in time");
        if let Some(Ok(Message::Text(text))) = msg {
            return serde_json::from_str(text.as_str()).unwrap();
        }
        assert!(matches!(msg, Some(Ok(_))), "session ended: {msg:?}");
    }
}

/// `POST /ws-ticket` to the server at `addr` with `authorization` (if any): status and
/// JSON body. Every answer must say `Cache-Control: no-store`.
pub async fn ask_ticket(
    addr: impl tokio::net::ToSocketAddrs,
    authorization: Option<&str>,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let request = format!(
        "POST /ws-ticket HTTP/1.1\r\nHost: parley\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    assert!(
        response
            .to_ascii_lowercase()
            .contains("cache-control: no-store"),
        "{response}"
    );
    let body = response.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap())
}

/// A fresh ticket for `user` from the server at `addr` (which signs with `secret`).
pub async fn ticket_for(addr: &str, secret: &str, user: &str) -> String {
    let token = parley::auth::mint(secret.as_bytes(), user, false, Duration::from_secs(600));
    let (status, answer) = ask_ticket(addr, Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, 200, "{answer}");
    answer["ticket"].as_str().unwrap().to_owned()
}

/// The upgrade to `/ws?ticket=` at `addr` (the session opened, or the refusal to read).
pub async fn open_with_ticket(addr: impl std::fmt::Display, ticket: &str) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws?ticket={ticket}"))
        .await
        .expect("upgrade")
        .0
}

/// The value of metric `name` (without labels) in the server's `/metrics`.
pub async fn metric(addr: impl tokio::net::ToSocketAddrs, name: &str) -> Option<f64> {
    let (_, text) = http_get(addr, "/metrics").await;
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

/// Every message of a conversation as `c` sees it, oldest first, paging back through
/// `history`.
pub async fn all_messages(c: &mut Client, conversation: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let mut req = json!({"type": "history", "conversation": conversation, "limit": 100});
        if let Some(b) = before {
            req["before"] = json!(b);
        }
        let page = c.ok(req).await;
        let msgs = page["messages"].as_array().unwrap().clone();
        before = msgs.first().and_then(|m| m["seq"].as_u64());
        out.splice(0..0, msgs);
        if page["more"] != true {
            return out;
        }
    }
}

/// A `send` frame whose request id and body both carry the request number `k`.
pub fn numbered_send(user: &str, to: &str, k: usize) -> Value {
    json!({"id": format!("{user}-{k}"), "type": "send", "to": to, "body": format!("{user} {k}")})
}

/// Pipeline `count` numbered sends from `user` to `to` over the WebSocket at `url`
/// without waiting for answers, `pace` apart (none: as fast as the socket takes them).
/// Returns the acknowledged messages by request number, as far as they arrived before
/// the connection ended or every send was acknowledged; `acked` counts them as they come.
pub async fn stream_sends(
    url: String,
    user: &'static str,
    to: &'static str,
    count: usize,
    pace: Option<Duration>,
    acked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> std::collections::HashMap<usize, Value> {
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    let writer = tokio::spawn(async move {
        for k in 0..count {
            let frame = numbered_send(user, to, k).to_string();
            if tx.send(Message::Text(frame.into())).await.is_err() {
                return;
            }
            match pace {
                Some(gap) => tokio::time::sleep(gap).await,
                // Let the reading side take acks now and then.
                None if k % 20 == 0 => tokio::task::yield_now().await,
                None => {}
            }
        }
    });
    let mut got = std::collections::HashMap::new();
    while let Some(Ok(msg)) = rx.next().await {
        let Message::Text(t) = msg else { continue };
        let f: Value = serde_json::from_str(t.as_str()).unwrap();
        if f["type"] != "ack" {
            continue;
        }
        let id = f["id"].as_str().unwrap();
        let k: usize = id.rsplit('-').next().unwrap().parse().unwrap();
        got.insert(k, f["result"]["message"].clone());
        acked.fetch_add(1, Ordering::Relaxed);
        if got.len() == count {
            break;
        }
    }
    writer.abort();
    got
}
