//! Browser-facing safety at the handshake, through a real server: pages from a foreign
//! origin are refused before the upgrade, and one-time tickets keep tokens out of URLs.

mod support;

use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

/// Open `/ws?token=` with `origin` (if any) as a browser would send it.
async fn upgrade_with_origin(
    server: &support::TestServer,
    origin: Option<&str>,
) -> Result<support::Ws, WsError> {
    let mut request = server
        .running
        .url(&server.token("ann"))
        .into_client_request()
        .unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

fn status_and_body(refused: Result<support::Ws, WsError>) -> (u16, String) {
    match refused {
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            (
                response.status().as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
            )
        }
        Ok(_) => panic!("the upgrade went ahead"),
        Err(other) => panic!("unexpected failure {other:?}"),
    }
}

#[tokio::test]
async fn a_page_from_another_origin_is_refused_before_the_upgrade() {
    let server = support::start().await;
    let own = format!("http://{}", server.running.addr);
    let (status, body) =
        status_and_body(upgrade_with_origin(&server, Some("https://evil.example")).await);
    assert_eq!(status, 403);
    assert!(
        body.contains("origin https://evil.example may not connect"),
        "{body}"
    );
    let ws = upgrade_with_origin(&server, Some(&own))
        .await
        .expect("own origin");
    support::Client::open(ws).await.close().await;
    let ws = upgrade_with_origin(&server, None)
        .await
        .expect("no Origin: not a browser");
    support::Client::open(ws).await.close().await;
}

#[tokio::test]
async fn allowed_origins_are_exactly_those_listed() {
    let server = support::start_with(|c| {
        c.allowed_origins =
            parley::origin::AllowedOrigins::parse("https://chat.example.com").unwrap()
    })
    .await;
    let ws = upgrade_with_origin(&server, Some("https://chat.example.com")).await;
    support::Client::open(ws.expect("a listed origin"))
        .await
        .close()
        .await;
    let own = format!("http://{}", server.running.addr);
    let (status, _) = status_and_body(upgrade_with_origin(&server, Some(&own)).await);
    assert_eq!(
        status, 403,
        "with a list, the server's own host is not implied"
    );
}

async fn ask_ticket(server: &support::TestServer, authorization: Option<&str>) -> (u16, Value) {
    support::ask_ticket(server.running.addr, authorization).await
}

async fn open_with_ticket(server: &support::TestServer, ticket: &str) -> support::Ws {
    support::open_with_ticket(server.running.addr, ticket).await
}

#[tokio::test]
async fn a_ticket_opens_one_session_for_its_user_and_is_refused_the_second_time() {
    let server = support::start().await;
    let bearer = format!("Bearer {}", server.token("ann"));
    let (status, answer) = ask_ticket(&server, Some(&bearer)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["expires_in_s"], 30);
    let ticket = answer["ticket"].as_str().unwrap().to_owned();

    let mut ann = support::Client::open(open_with_ticket(&server, &ticket).await).await;
    assert_eq!(ann.hello["user"], "ann");
    let (frames, code, _) = support::refused(open_with_ticket(&server, &ticket).await).await;
    assert_eq!(code, 1008);
    assert_eq!(frames[0]["code"], "unauthorized");
    assert_eq!(frames[0]["message"], "ticket already used");
    // The first session is unaffected by the refused replay.
    ann.ok(serde_json::json!({"type": "lookup", "id": "l", "user": "ann"}))
        .await;
    ann.close().await;
}

#[tokio::test]
async fn a_ticket_needs_a_valid_token_and_never_passes_for_one() {
    let server = support::start().await;
    let (status, answer) = ask_ticket(&server, None).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, answer) = ask_ticket(&server, Some("Bearer not-a-token")).await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (401, Some("invalid token"))
    );

    let bearer = format!("Bearer {}", server.token("ann"));
    let ticket = ask_ticket(&server, Some(&bearer)).await.1["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let (frames, code, _) = support::refused(server.raw(Some(&ticket)).await).await;
    assert_eq!(
        (frames[0]["message"].as_str(), code),
        (Some("invalid token"), 1008)
    );
    let token = server.token("ann");
    let (frames, _, _) = support::refused(open_with_ticket(&server, &token).await).await;
    assert_eq!(frames[0]["message"], "invalid token");
}
