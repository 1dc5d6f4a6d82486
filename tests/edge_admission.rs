//! The caps at TCP accept, through the real binary: connections that send half a request
//! head and stop are closed within the header timeout and never lock a real client out; one
//! address cannot hold more than its share of unfinished heads; at the connection cap the
//! health route still answers.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const SECRET: &str = "edge-admission-secret";

/// A TCP connection to `addr` from the loopback address `from`.
async fn connect_from(from: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

/// A connection that sends half an upgrade request and then nothing.
async fn stall(from: IpAddr, addr: SocketAddr) -> TcpStream {
    let mut tcp = connect_from(from, addr).await;
    tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: parley\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    tcp
}

/// Read until the server closes; what it sent, or `None` if it is still open at `deadline`.
async fn closed_by(mut tcp: TcpStream, deadline: Instant) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout_at(deadline.into(), tcp.read_to_end(&mut got)).await;
    match read {
        Ok(_) => Some(String::from_utf8_lossy(&got).into_owned()),
        Err(_) => None,
    }
}

/// A real WebSocket client from `from`: the time from TCP connect to its `hello`.
async fn session_from(from: IpAddr, addr: SocketAddr, user: &str) -> Duration {
    let started = Instant::now();
    let token = parley::auth::mint(SECRET.as_bytes(), user, false, Duration::from_secs(60));
    let tcp = connect_from(from, addr).await;
    let url = format!("ws://{addr}/ws?token={token}");
    let tcp = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
    let (ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("the upgrade is answered");
    let client = support::Client::open(ws).await;
    let took = started.elapsed();
    client.close().await;
    took
}

fn loopback(b: u8, c: u8) -> IpAddr {
    IpAddr::from([127, 0, b, c])
}

async fn serve(extra: &[&str]) -> (support::Spawned, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--store", "memory", "--secret", SECRET];
    args.extend_from_slice(&["--connections-per-ip-per-second", "0"]);
    args.extend_from_slice(extra);
    let (child, addr) = support::spawn_serving(dir.path(), &args).await;
    (child, addr.parse().unwrap(), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_stalled_handshakes_are_dropped_in_time_and_never_lock_a_client_out() {
    let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
    if hard < 4_000 {
        eprintln!("skipped: this process may open only {hard} files, the test needs 4,000");
        return;
    }
    rlimit::Resource::NOFILE.set(hard, hard).unwrap();
    let header_timeout = Duration::from_secs(2);
    let (_server, addr, _dir) = serve(&["--header-timeout", "2s"]).await;

    // A real client connects every 20 ms from before the first staller until the last is gone.
    let done = tokio_util::sync::CancellationToken::new();
    let prober = tokio::spawn({
        let done = done.clone();
        async move {
            let mut times = Vec::new();
            while !done.is_cancelled() {
                times.push(session_from(loopback(0, 2), addr, &format!("u{}", times.len())).await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            times
        }
    });
    let mut opened = Vec::new();
    for i in 0..3_000u32 {
        let from = loopback(1 + (i % 100) as u8, 1 + (i / 100) as u8);
        opened.push((Instant::now(), stall(from, addr).await));
    }
    let slack = Duration::from_secs(1);
    let waits = opened
        .into_iter()
        .map(|(at, tcp)| async move { closed_by(tcp, at + header_timeout + slack).await });
    let closed = futures::future::join_all(waits).await;
    done.cancel();
    let times = prober.await.unwrap();
    let open = closed.iter().filter(|answer| answer.is_none()).count();
    assert_eq!(
        open, 0,
        "stalled connections still open past the header timeout"
    );
    let slowest = times.iter().max().copied().unwrap_or_default();
    eprintln!(
        "{} sessions opened while 3,000 stalled, the slowest in {slowest:?}",
        times.len()
    );
    assert!(times.len() >= 20, "only {} sessions tried", times.len());
    assert!(
        slowest < Duration::from_millis(100),
        "a real client took {slowest:?} to get its hello among the stalled connections"
    );
    let (status, body) = support::http_get(addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    rlimit::Resource::NOFILE.set(soft, hard).unwrap();
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_unfinished_heads() {
    let (_server, addr, _dir) = serve(&["--max-handshakes-per-ip", "8"]).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(stall(loopback(0, 3), addr).await);
    }
    // A burst is not a staller: the ninth is refused once the eight have waited past
    // the grace (a second), so try until it is, dropping each try that is let in.
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let over = stall(loopback(0, 3), addr).await;
            let soon = Instant::now() + Duration::from_millis(200);
            if let Some(answer) = closed_by(over, soon).await {
                return answer;
            }
        }
    })
    .await
    .expect("the ninth is refused once the eight are stale");
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer:?}");
    assert!(
        answer.contains("too many unfinished requests"),
        "{answer:?}"
    );
    // Another address is unaffected, and so is this one once a head completes.
    session_from(loopback(0, 4), addr, "other").await;
    held.pop().unwrap().write_all(b"\r\n").await.unwrap();
    let third = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut tcp = stall(loopback(0, 3), addr).await;
            tcp.write_all(b"\r\n").await.unwrap();
            let mut first = [0u8; 12];
            if tcp.read_exact(&mut first).await.is_ok() && !first.starts_with(b"HTTP/1.1 429") {
                return first;
            }
        }
    })
    .await
    .expect("a slot comes back once a head is read");
    assert!(third.starts_with(b"HTTP/1.1 "), "{third:?}");
}

#[tokio::test]
async fn at_the_connection_cap_health_is_answered_and_new_sessions_get_503() {
    let (_server, addr, _dir) = serve(&["--max-connections", "6"]).await;
    let mut sessions = Vec::new();
    for i in 0..6 {
        sessions.push(support::connect_at(&addr.to_string(), SECRET, &format!("c{i}")).await);
    }
    let (status, body) = support::http_get(addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok (at capacity)\n"));
    let (status, body) = support::http_get(addr, "/readyz").await;
    assert_eq!((status, body.as_str()), (503, "at capacity\n"));
    let token = parley::auth::mint(SECRET.as_bytes(), "late", false, Duration::from_secs(60));
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected 503 at capacity, got {other:?}"),
    }
    sessions.pop().unwrap().close().await;
    let back = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if support::http_get(addr, "/healthz").await.1 == "ok\n" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(back.is_ok(), "a closed session gives its slot back");
    support::connect_at(&addr.to_string(), SECRET, "in-again").await;
}
