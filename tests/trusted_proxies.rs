//! Behind a reverse proxy, through a real server: the per-address connection limit counts
//! the clients a trusted proxy names, and the same headers from anyone else change nothing.

mod support;

use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Open a session for `user` whose handshake says it was forwarded for `client`.
async fn forwarded(
    server: &support::TestServer,
    user: &str,
    header: &str,
    client: &str,
) -> support::Ws {
    let mut request = server
        .running
        .url(&server.token(user))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        axum::http::HeaderName::from_bytes(header.as_bytes()).unwrap(),
        client.parse().unwrap(),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade")
        .0
}

/// `None` if the socket opened a session, else the error code and close code it got.
async fn refusal(mut ws: support::Ws) -> Option<(String, u16)> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let msg = tokio::time::timeout(support::PATIENCE, ws.next())
            .await
            .expect("a frame");
        match msg {
            Some(Ok(Message::Text(text))) => {
                let frame: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                if frame["type"] == "hello" {
                    return None;
                }
                let code = frame["code"].as_str().unwrap_or_default().to_owned();
                let (_, close, _) = support::refused(ws).await;
                return Some((code, close));
            }
            Some(Ok(_)) => continue,
            other => panic!("closed before any frame: {other:?}"),
        }
    }
}

/// Limits of one new connection a second, bursts of ten, per address.
fn one_per_second(c: &mut parley::config::Config) {
    c.connections_per_ip_per_second = 1;
}

#[tokio::test]
async fn clients_named_by_a_trusted_proxy_are_limited_each_on_its_own() {
    let server = support::start_with(|c| {
        one_per_second(c);
        c.trusted_proxies = parley::forwarded::TrustedProxies::parse("127.0.0.0/8").unwrap();
    })
    .await;
    // Forty clients through one proxy address: four times the burst, none refused.
    for i in 0..40 {
        let client = format!("198.51.100.{i}, 127.0.0.1");
        let ws = forwarded(&server, &format!("u{i}"), "x-forwarded-for", &client).await;
        assert_eq!(refusal(ws).await, None, "client {i} of the proxy");
    }
    // One client through it still gets only its own burst.
    let mut codes = Vec::new();
    for i in 0..12 {
        let ws = forwarded(&server, &format!("same{i}"), "forwarded", "for=203.0.113.5").await;
        codes.push(refusal(ws).await);
    }
    let refused: Vec<_> = codes.iter().flatten().collect();
    assert_eq!(codes.iter().take(10).flatten().count(), 0, "{codes:?}");
    assert!(
        !refused.is_empty(),
        "the eleventh and twelfth from one client are refused"
    );
    assert!(refused
        .iter()
        .all(|(code, close)| code == "rate_limited" && *close == 1013));
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_change_nothing() {
    let server = support::start_with(one_per_second).await;
    let mut refused = 0;
    for i in 0..12 {
        let client = format!("198.51.100.{i}");
        let ws = forwarded(&server, &format!("s{i}"), "x-forwarded-for", &client).await;
        refused += usize::from(refusal(ws).await.is_some());
    }
    assert!(
        refused >= 2,
        "spoofed addresses share the real one's burst of ten: {refused} refused"
    );
}
