//! The HTTP roles attacked in-process: every route from an anonymous remote client, from
//! loopback with and without `loopback_role`, with each role's credentials, with wrong ones;
//! rounds too soon; bodies too large.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use base64::Engine as _;
use tower::ServiceExt;

use super::tests::{fixture_with, Fixture};
use super::*;

const REMOTE: ([u8; 4], u16) = ([203, 0, 113, 7], 51000);
const LOOPBACK: ([u8; 4], u16) = ([127, 0, 0, 1], 51000);
const TOKEN_METRICS: &str = "metrics-token-0123456789";
const TOKEN_OPERATE: &str = "operate-token-0123456789";

/// Users of every role: `scraper` (token), `reader` (password `reader-pass`), `ops` (token).
fn users() -> String {
    // Cost 4, the least bcrypt allows: the test is about the decision, not the cost.
    let hash = bcrypt::hash("reader-pass", 4).expect("hash");
    format!(
        "[http]\n\n[[http.user]]\nname = \"scraper\"\nrole = \"metrics\"\ntoken_sha256 = \"{}\"\n\n[[http.user]]\nname = \"reader\"\nrole = \"read\"\npassword_bcrypt = \"{hash}\"\n\n[[http.user]]\nname = \"ops\"\nrole = \"operate\"\ntoken_sha256 = \"{}\"\n",
        hex::encode(auth::token_digest(TOKEN_METRICS)),
        hex::encode(auth::token_digest(TOKEN_OPERATE)),
    )
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

async fn send(
    fx: &Fixture,
    from: ([u8; 4], u16),
    method: &str,
    uri: &str,
    authorization: Option<&str>,
    body: String,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = authorization {
        headers.push(("authorization", a));
    }
    crate::http::tests::exchange(fx, SocketAddr::from(from), method, uri, &headers, &body).await
}

async fn status_of(
    fx: &Fixture,
    from: ([u8; 4], u16),
    method: &str,
    uri: &str,
    authorization: Option<&str>,
) -> StatusCode {
    let body = if method == "POST" {
        r#"{"check":"gateway"}"#.to_string()
    } else {
        String::new()
    };
    send(fx, from, method, uri, authorization, body).await.0
}

const READS: [&str; 13] = [
    "/",
    "/checks/gateway",
    "/probes",
    "/probes/p1",
    "/rounds/1",
    "/assets/cemwatch.css",
    "/api/v1/fleet",
    "/api/v1/checks",
    "/api/v1/checks/gateway",
    "/api/v1/probes",
    "/api/v1/agents",
    "/api/v1/events",
    "/api/v1/rounds/1",
];

#[tokio::test]
async fn an_anonymous_remote_client_reaches_live_and_ready_only() {
    let fx = fixture_with("");
    fx.state.readiness.ready();
    assert_eq!(
        status_of(&fx, REMOTE, "GET", "/live", None).await,
        StatusCode::OK
    );
    assert_eq!(
        status_of(&fx, REMOTE, "GET", "/ready", None).await,
        StatusCode::OK
    );
    for uri in READS.iter().chain(&["/metrics"]) {
        let (status, headers, body) = send(&fx, REMOTE, "GET", uri, None, String::new()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}: {body}");
        assert!(
            headers
                .get(header::WWW_AUTHENTICATE)
                .is_some_and(|v| v.to_str().unwrap_or("").starts_with("Basic")),
            "{uri}: a 401 says how to authenticate"
        );
        assert!(
            !body.contains("lyon"),
            "{uri}: nothing of the fleet leaks: {body}"
        );
    }
    // 200 POSTs in a row: every one refused, and no round started.
    for _ in 0..200 {
        assert_eq!(
            status_of(&fx, REMOTE, "POST", "/api/v1/rounds", None).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(fx.state.hub.metrics.rounds.get(), 0, "no round was started");
    assert_eq!(
        fx.state
            .hub
            .metrics
            .http_refused
            .with_label_values(&["unauthenticated"])
            .get(),
        READS.len() as u64 + 1 + 200,
        "each refusal counted"
    );
}

#[tokio::test]
async fn loopback_may_operate_without_configuration_and_nothing_with_loopback_role_none() {
    let fx = fixture_with("");
    for uri in READS.iter().chain(&["/metrics"]) {
        let status = status_of(&fx, LOOPBACK, "GET", uri, None).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::NOT_FOUND,
            "{uri}: {status}"
        );
    }
    assert_eq!(
        status_of(&fx, LOOPBACK, "POST", "/api/v1/rounds", None).await,
        StatusCode::CREATED
    );
    // Behind a reverse proxy on the same host, every request comes from loopback.
    let fx = fixture_with("[http]\nloopback_role = \"none\"\n");
    assert_eq!(
        status_of(&fx, LOOPBACK, "GET", "/api/v1/fleet", None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_of(&fx, LOOPBACK, "POST", "/api/v1/rounds", None).await,
        StatusCode::UNAUTHORIZED
    );
    // An IPv4-mapped IPv6 loopback address is loopback too.
    let fx = fixture_with("[http]\nloopback_role = \"metrics\"\n");
    let mapped: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().expect("addr");
    let mut request = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .expect("request");
    request.extensions_mut().insert(ConnectInfo(mapped));
    let response = router(fx.state.clone()).oneshot(request).await.expect("ok");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn each_role_gets_what_it_includes_and_no_more() {
    let fx = fixture_with(&users());
    let scraper = format!("Bearer {TOKEN_METRICS}");
    let reader = basic("reader", "reader-pass");
    let ops = format!("Bearer {TOKEN_OPERATE}");
    // metrics: scrape only.
    assert_eq!(
        status_of(&fx, REMOTE, "GET", "/metrics", Some(&scraper)).await,
        StatusCode::OK
    );
    let (status, _, body) = send(
        &fx,
        REMOTE,
        "GET",
        "/api/v1/fleet",
        Some(&scraper),
        String::new(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("needs the read role") && body.contains("grant metrics"),
        "{body}"
    );
    // read: scrape and read, not operate.
    assert_eq!(
        status_of(&fx, REMOTE, "GET", "/metrics", Some(&reader)).await,
        StatusCode::OK
    );
    for uri in READS {
        let status = status_of(&fx, REMOTE, "GET", uri, Some(&reader)).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::NOT_FOUND,
            "{uri}: {status}"
        );
    }
    assert_eq!(
        status_of(&fx, REMOTE, "POST", "/api/v1/rounds", Some(&reader)).await,
        StatusCode::FORBIDDEN
    );
    // operate: everything.
    assert_eq!(
        status_of(&fx, REMOTE, "POST", "/api/v1/rounds", Some(&ops)).await,
        StatusCode::CREATED
    );
    assert_eq!(
        status_of(&fx, REMOTE, "GET", "/api/v1/fleet", Some(&ops)).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn wrong_credentials_are_refused_everywhere_never_downgraded() {
    let fx = fixture_with(&users());
    for authorization in [
        basic("reader", "wrong-pass"),
        basic("nobody", "reader-pass"),
        basic("scraper", "anything"), // a token user has no password
        "Bearer not-a-token".to_string(),
        "Digest username=\"reader\"".to_string(),
        "Basic !!!not-base64".to_string(),
    ] {
        // Even on a route loopback could use without credentials.
        for from in [REMOTE, LOOPBACK] {
            let (status, _, body) = send(
                &fx,
                from,
                "GET",
                "/metrics",
                Some(&authorization),
                String::new(),
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization}: {body}");
            assert!(body.contains("credentials refused"), "{body}");
        }
    }
    assert_eq!(
        status_of(&fx, REMOTE, "GET", "/live", Some("Bearer not-a-token")).await,
        StatusCode::UNAUTHORIZED,
        "wrong credentials are refused on open routes too"
    );
}

#[tokio::test]
async fn a_round_too_soon_gets_429_with_retry_after() {
    let fx = fixture_with("[rounds]\nmin_interval = \"1h\"\n");
    assert_eq!(
        status_of(&fx, LOOPBACK, "POST", "/api/v1/rounds", None).await,
        StatusCode::CREATED
    );
    let (status, headers, body) = send(
        &fx,
        LOOPBACK,
        "POST",
        "/api/v1/rounds",
        None,
        r#"{"check":"gateway"}"#.into(),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let retry: u64 = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("Retry-After");
    assert!((3500..=3600).contains(&retry), "{retry}");
    assert!(body.contains("rounds.min_interval"), "{body}");
    assert_eq!(fx.state.hub.metrics.rounds.get(), 1, "one round started");
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused() {
    let fx = fixture_with("");
    let big = format!(
        "{{\"check\":\"gateway\",\"pad\":\"{}\"}}",
        "x".repeat(MAX_BODY)
    );
    let (status, _, _) = send(&fx, LOOPBACK, "POST", "/api/v1/rounds", None, big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn users_are_validated_with_the_line_and_what_to_do() {
    let dir = tempfile::tempdir().expect("dir");
    let bad = "[http]\nloopback_role = \"admin\"\ntls_cert = \"a.crt\"\n\n[[http.user]]\nname = \"a b\"\nrole = \"read\"\npassword_bcrypt = \"plain\"\n\n[[http.user]]\nname = \"c\"\nrole = \"read\"\ntoken_sha256 = \"xyz\"\n\n[[http.user]]\nname = \"d\"\nrole = \"read\"\n\n[[check]]\nname = \"gateway\"\nhost = \"gw.example.com\"\n";
    let err = crate::config::Config::from_toml(bad, "c.toml", dir.path())
        .expect_err("invalid")
        .to_string();
    for expected in [
        "c.toml:2: http.loopback_role: \"admin\" is not a role",
        "http.tls_cert and http.tls_key go together",
        "http.user[0].name: \"a b\"",
        "http.user[0].password_bcrypt: not a bcrypt hash",
        "cemwatch web hash-password",
        "http.user[1].token_sha256: 64 hexadecimal digits",
        "http.user[2]: give password_bcrypt, token_sha256 or token_file",
    ] {
        assert!(err.contains(expected), "{expected:?} missing from:\n{err}");
    }
}

#[tokio::test]
async fn a_token_file_is_hashed_at_load_and_bad_files_are_named() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("prom.token"), format!("{TOKEN_METRICS}\n")).expect("write");
    let text = "[http]\nloopback_role = \"none\"\n\n[[http.user]]\nname = \"prometheus\"\nrole = \"metrics\"\ntoken_file = \"prom.token\"\n\n[[check]]\nname = \"gateway\"\nhost = \"gw.example.com\"\n";
    let config = crate::config::Config::from_toml(text, "c.toml", dir.path()).expect("valid");
    assert_eq!(
        config.http.users[0].token_sha256,
        Some(auth::token_digest(TOKEN_METRICS)),
        "the file's token, trailing newline ignored"
    );
    let fx = fixture_with(
        &text
            .replace(
                "[[check]]\nname = \"gateway\"\nhost = \"gw.example.com\"\n",
                "",
            )
            .replace(
                "prom.token",
                &dir.path().join("prom.token").display().to_string(),
            ),
    );
    let bearer = format!("Bearer {TOKEN_METRICS}");
    let (status, _, _) = send(&fx, REMOTE, "GET", "/metrics", Some(&bearer), String::new()).await;
    assert_eq!(status, StatusCode::OK, "the token in the file scrapes");
    let (status, _, _) = send(
        &fx,
        REMOTE,
        "GET",
        "/api/v1/fleet",
        Some(&bearer),
        String::new(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "and is a metrics token only");

    std::fs::write(dir.path().join("short.token"), "abc").expect("write");
    for (file, expected) in [
        ("missing.token", "cannot read"),
        ("short.token", "16 to 4096 visible ASCII characters"),
    ] {
        let err = crate::config::Config::from_toml(
            &text.replace("prom.token", file),
            "c.toml",
            dir.path(),
        )
        .expect_err("invalid")
        .to_string();
        assert!(
            err.contains("http.user[0].token_file") && err.contains(expected),
            "{expected:?} missing from:\n{err}"
        );
    }
    let both = text.replace("token_file", "token_sha256 = \"00\"\ntoken_file");
    let err = crate::config::Config::from_toml(&both, "c.toml", dir.path())
        .expect_err("invalid")
        .to_string();
    assert!(
        err.contains("token_sha256 or token_file, not both"),
        "{err}"
    );
}

#[tokio::test]
async fn a_browser_refused_a_page_gets_a_page_and_the_api_stays_json() {
    let fx = fixture_with(&users());
    let get = |uri: &'static str, accept: &'static str, auth: Option<String>| {
        let fx = &fx;
        async move {
            let auth = auth.unwrap_or_default();
            let mut headers = vec![("accept", accept)];
            if !auth.is_empty() {
                headers.push(("authorization", auth.as_str()));
            }
            crate::http::tests::exchange(fx, SocketAddr::from(REMOTE), "GET", uri, &headers, "")
                .await
        }
    };
    let html = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8";
    let (status, headers, body) = get("/", html, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .starts_with("text/html"));
    assert!(
        headers.contains_key(header::WWW_AUTHENTICATE),
        "the browser asks for a login"
    );
    assert!(
        body.contains("needs the read role") && body.contains("<html"),
        "{body}"
    );
    let (status, _, body) = get("/", html, Some(format!("Bearer {TOKEN_METRICS}"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body.contains("<html") && body.contains("grant metrics"),
        "{body}"
    );
    // The API answers JSON whatever the client accepts; so does a page asked for without HTML.
    let (status, headers, body) = get("/api/v1/fleet", html, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("application/json"),
        "{body}"
    );
    let (_, headers, _) = get("/", "application/json", None).await;
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .starts_with("application/json"));
}
