//! The web chat page: static files compiled into the binary and served at `/` and
//! `/static/…`, and in demo mode a token for any handle at `/demo/token`.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// How long a demo token stays valid.
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Longest handle the demo sign-in accepts.
const MAX_HANDLE_CHARS: usize = 32;

/// Every served file: name under `/static/`, content type, bytes.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../web/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/app.js"),
    ),
    (
        "parley-client.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/parley-client.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../web/style.css"),
    ),
];

/// Scripts and styles come only from this origin, and the socket goes back to it.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// Refuse demo mode anywhere but a loopback address: it hands any user's token to whoever asks.
pub fn check_demo_address(addr: std::net::SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "--demo gives anyone a token for any user, so it is allowed only on a loopback \
             address (127.0.0.1 or [::1]), not on {addr}"
        ))
    }
}

/// Routes for the page; with `demo_secret`, also the demo sign-in. `/demo/mode` answers
/// `on` or `off` either way, so the page learns which sign-in to offer without a failing
/// request (which a browser reports as an error in its console).
pub fn router(demo_secret: Option<Arc<[u8]>>) -> Router {
    let mode = if demo_secret.is_some() {
        "on\n"
    } else {
        "off\n"
    };
    let router =
        Router::new()
            .route("/", get(|| async { file("index.html") }))
            .route(
                "/demo/mode",
                get(move || async move {
                    ([(header::CACHE_CONTROL, "no-store")], mode).into_response()
                }),
            )
            .route(
                "/static/{name}",
                get(|Path(name): Path<String>| async move { file(&name) }),
            );
    match demo_secret {
        Some(secret) => router.merge(
            Router::new()
                .route("/demo/token", get(demo_token))
                .with_state(secret),
        ),
        None => router,
    }
}

fn file(name: &str) -> Response {
    let Some((_, kind, body)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    // The files change only with the binary; revalidating is cheap and avoids a stale page.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Tokens may sit in the page's query string; never leak them to other sites.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    response
}

#[derive(Deserialize)]
struct DemoQuery {
    user: Option<String>,
}

/// Whether a handle is one the demo hands out a token for.
pub fn valid_handle(handle: &str) -> bool {
    !handle.is_empty()
        && handle.chars().count() <= MAX_HANDLE_CHARS
        && handle
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

async fn demo_token(State(secret): State<Arc<[u8]>>, Query(q): Query<DemoQuery>) -> Response {
    let user = q.user.unwrap_or_default();
    if !valid_handle(&user) {
        let msg =
            format!("pick a handle of 1 to {MAX_HANDLE_CHARS} letters, digits, `_`, `-` or `.`\n");
        return (StatusCode::BAD_REQUEST, msg).into_response();
    }
    let token = crate::auth::mint(&secret, &user, false, DEMO_TOKEN_TTL);
    tracing::info!(%user, "demo token issued");
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        token,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_only_on_loopback() {
        for ok in ["127.0.0.1:8080", "127.8.9.1:1", "[::1]:0"] {
            assert!(check_demo_address(ok.parse().unwrap()).is_ok(), "{ok}");
        }
        for refused in ["0.0.0.0:8080", "[::]:8080", "192.168.1.4:80", "10.0.0.1:1"] {
            let err = check_demo_address(refused.parse().unwrap()).unwrap_err();
            assert!(err.contains("loopback"), "{refused}: {err}");
        }
    }

    #[test]
    fn handles() {
        assert!(valid_handle("alice"));
        assert!(valid_handle("a.b-c_9"));
        assert!(!valid_handle(""));
        assert!(!valid_handle("a b"));
        assert!(!valid_handle("ünï"));
        assert!(!valid_handle(&"x".repeat(MAX_HANDLE_CHARS + 1)));
    }

    #[test]
    fn every_file_is_served_and_nothing_else() {
        for (name, _, _) in FILES {
            assert_eq!(file(name).status(), StatusCode::OK, "{name}");
        }
        assert_eq!(file("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        assert_eq!(file("nope.js").status(), StatusCode::NOT_FOUND);
    }

    /// The page's sign-in probe: always a 200, saying whether demo sign-in exists.
    #[tokio::test]
    async fn demo_mode_answers_in_both_modes() {
        use tower::ServiceExt;
        for (secret, want) in [(Some(Arc::from(&b"secret"[..])), "on\n"), (None, "off\n")] {
            let request = axum::http::Request::get("/demo/mode")
                .body(axum::body::Body::empty())
                .unwrap();
            let response = router(secret).oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body = axum::body::to_bytes(response.into_body(), 64)
                .await
                .unwrap();
            assert_eq!(&body[..], want.as_bytes());
        }
    }
}
