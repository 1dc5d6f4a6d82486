//! Test support: a real parley server on a loopback port and real WebSocket clients.
#![allow(dead_code)]

use futures::{SinkExt, StreamExt};
use parley::config::Config;
use parley::server::{self, Running};
use parley_protocol::Limits;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a frame that must come.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A server on 127.0.0.1:0 with its secret.
pub struct TestServer {
    pub running: Running,
    pub secret: Vec<u8>,
}

/// Start a server with default limits adjusted by `tune`.
pub async fn start_with(tune: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = Config::with_secret(b"test-secret".to_vec());
    // Tests drive many requests from one user quickly; the rate-limit tests turn these back on.
    config.limits.requests_per_second = 0;
    config.connections_per_ip_per_second = 0;
    tune(&mut config);
    let running = server::spawn(&config).await.expect("server starts");
    TestServer {
        running,
        secret: config.secret,
    }
}

/// Start a server with the default limits.
pub async fn start() -> TestServer {
    start_with(|_| {}).await
}

/// Adjust only the limits.
pub async fn start_limits(tune: impl FnOnce(&mut Limits)) -> TestServer {
    start_with(|c| tune(&mut c.limits)).await
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

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

/// A WebSocket client that keeps unclaimed frames for later expectations.
pub struct Client {
    ws: Ws,
    pub user: String,
    pub hello: Value,
    inbox: VecDeque<Value>,
    next_id: u64,
}

impl Client {
    pub async fn open(ws: Ws) -> Client {
        let mut c = Client {
            ws,
            user: String::new(),
            hello: Value::Null,
            inbox: VecDeque::new(),
            next_id: 0,
        };
        let hello = c.expect("hello").await;
        c.user = hello["user"]
            .as_str()
            .expect("hello names the user")
            .to_owned();
        c.hello = hello;
        c
    }

    /// Next frame off the socket, or None when it closed.
    async fn read(&mut self) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{}: no frame within {PATIENCE:?}", self.user))?;
            match msg {
                Ok(Message::Text(t)) => {
                    return Some(serde_json::from_str(t.as_str()).expect("server sends JSON"))
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Send a raw text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// Send a request (an `id` is added when absent) and return its answer.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        if frame.get("id").is_none() {
            self.next_id += 1;
            frame["id"] = json!(format!("{}-{}", self.user, self.next_id));
        }
        let id = frame["id"].clone();
        self.send_text(&frame.to_string()).await;
        loop {
            let f = self
                .read()
                .await
                .expect("connection open while awaiting answer");
            if (f["type"] == "ack" || f["type"] == "error") && f["id"] == id {
                return f;
            }
            self.inbox.push_back(f);
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
        if let Some(pos) = self.inbox.iter().position(|f| f["type"] == kind) {
            return self.inbox.remove(pos).unwrap();
        }
        loop {
            let f = self
                .read()
                .await
                .unwrap_or_else(|| panic!("{}: closed while expecting {kind}", self.user));
            if f["type"] == kind {
                return f;
            }
            self.inbox.push_back(f);
        }
    }

    /// Round-trip a request so every frame queued before it has arrived, then return the
    /// unclaimed frames of `kind`. The server queues a session's frames in order, so this
    /// needs no sleeping.
    pub async fn drain(&mut self, kind: &str) -> Vec<Value> {
        self.ok(json!({"type": "lookup", "user": self.user.clone()}))
            .await;
        let (hit, rest): (Vec<Value>, Vec<Value>) =
            self.inbox.drain(..).partition(|f| f["type"] == kind);
        self.inbox = rest.into();
        hit
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
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("close in time");
            match msg {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (frame.code.into(), frame.reason.to_string())
                }
                Some(Ok(Message::Close(None))) | None => return (1005, String::new()),
                Some(Ok(Message::Text(t))) => self
                    .inbox
                    .push_back(serde_json::from_str(t.as_str()).unwrap()),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("socket error before close: {e}"),
            }
        }
    }

    /// Frames received but not claimed yet.
    pub fn pending(&self) -> &VecDeque<Value> {
        &self.inbox
    }

    /// Send a direct message and return the stored message.
    pub async fn dm(&mut self, to: &str, body: &str) -> Value {
        self.ok(json!({"type": "send", "to": to, "body": body}))
            .await["message"]
            .clone()
    }
}
