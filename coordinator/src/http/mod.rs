//! The HTTP surface: `/live`, `/ready`, `/metrics` (Prometheus text) and the JSON API under
//! `/api/v1/` (see `coordinator/openapi.yaml`), the management agents' CEM state included
//! (`/api/v1/fleet` aggregates it, `/api/v1/agents` lists it per probe). Reads are GET; the one action, starting a
//! `ProbeNow` round, is a POST.

pub mod auth;
mod error;
pub mod handlers;
pub mod pages;
pub mod serve;

#[cfg(test)]
mod auth_tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use tokio::sync::Semaphore;

pub use auth::{Access, Role};
pub use error::ApiError;

use crate::quic::Hub;
use crate::store::Reader;

/// State of the HTTP handlers.
#[derive(Debug)]
pub struct ApiState {
    /// The hub.
    pub hub: Arc<Hub>,
    /// A read connection to the store (events).
    pub reader: Reader,
    /// Whether the coordinator is ready.
    pub readiness: Arc<Readiness>,
    /// Who may do what.
    pub auth: auth::Authenticator,
    /// Requests being answered (`http.max_concurrent_requests` permits).
    pub requests: Semaphore,
    /// What the pages get from the program running the coordinator (the demo's controls).
    pub pages: Arc<pages::PageExtras>,
}

impl ApiState {
    /// The state, sized from the configuration the hub holds now.
    pub fn new(hub: Arc<Hub>, reader: Reader, readiness: Arc<Readiness>) -> Self {
        let permits = hub.config.borrow().http.max_concurrent_requests;
        Self {
            hub,
            reader,
            readiness,
            auth: auth::Authenticator::default(),
            requests: Semaphore::new(permits),
            pages: Arc::default(),
        }
    }
}

/// The largest request body taken (a round request is under 200 bytes).
pub const MAX_BODY: usize = 16 * 1024;

/// The router. Every route but `/live` and `/ready` names the role it needs; [`auth::authenticate`]
/// runs first on every request and decides what the client may do.
pub fn router(state: Arc<ApiState>) -> Router {
    let open = Router::new()
        .route("/live", get(|| async { "ok\n" }))
        .route("/ready", get(handlers::ready));
    let metrics = Router::new().route("/metrics", get(handlers::metrics));
    let read = Router::new()
        .route("/api/v1/fleet", get(handlers::fleet))
        .route("/api/v1/checks", get(handlers::checks))
        .route("/api/v1/checks/{name}", get(handlers::check))
        .route("/api/v1/probes", get(handlers::probes))
        .route("/api/v1/agents", get(handlers::agents))
        .route("/api/v1/events", get(handlers::events))
        .route("/api/v1/rounds/{id}", get(handlers::round))
        .route("/", get(pages::fleet))
        .route("/checks/{name}", get(pages::check))
        .route("/probes", get(pages::probes))
        .route("/probes/{name}", get(pages::probe))
        .route("/rounds/{id}", get(pages::round))
        .route("/assets/{file}", get(pages::asset));
    let operate = Router::new()
        .route("/api/v1/rounds", post(start_round))
        .route("/demo/scenario", post(pages::switch_scenario));
    open.merge(needs(&state, Role::Metrics, metrics))
        .merge(needs(&state, Role::Read, read))
        .merge(needs(&state, Role::Operate, operate))
        .fallback(pages::not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn(html_refusals))
        .layer(middleware::from_fn_with_state(state.clone(), bounded))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// `POST /api/v1/rounds`: JSON from the API's clients, or the status page's form (answered
/// with a redirect to the round's page).
async fn start_round(State(s): State<Arc<ApiState>>, req: Request) -> Response {
    if pages::is_form(req.headers()) {
        return pages::start_round_form(s, req).await;
    }
    match <Json<crate::model::round::RoundRequest> as axum::extract::FromRequest<_>>::from_request(
        req, &s,
    )
    .await
    {
        Ok(body) => handlers::start_round(State(s), body).await.into_response(),
        Err(rejection) => rejection.into_response(),
    }
}

/// `routes`, each answered only for requests whose [`Access`] allows `role`.
/// A browser asking for a page (not the API, not `/metrics`) that is refused gets the refusal
/// as a page with the same status and challenge, not JSON.
async fn html_refusals(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let wants_html = !path.starts_with("/api/")
        && path != "/metrics"
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
    let response = next.run(req).await;
    match response.extensions().get::<auth::Refused>() {
        Some(auth::Refused(message)) if wants_html => {
            pages::refusal(response.status(), message, response.headers())
        }
        _ => response,
    }
}

fn needs(
    state: &Arc<ApiState>,
    role: Role,
    routes: Router<Arc<ApiState>>,
) -> Router<Arc<ApiState>> {
    routes.route_layer(middleware::from_fn_with_state(
        state.clone(),
        move |State(s): State<Arc<ApiState>>, req: Request, next: Next| {
            auth::require(s, role, req, next)
        },
    ))
}

/// At most `http.max_concurrent_requests` requests at once (one more gets 503 at once, with
/// `Retry-After`), each answered within `http.request_timeout` (or 503).
async fn bounded(State(s): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let Ok(_permit) = s.requests.try_acquire() else {
        s.hub.metrics.http_refused("busy");
        return unavailable("too many requests at once (http.max_concurrent_requests)");
    };
    let timeout = s.hub.config.borrow().http.request_timeout;
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            s.hub.metrics.http_refused("timeout");
            unavailable("the request took longer than http.request_timeout")
        }
    }
}

fn unavailable(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

/// What `/ready` says: no until the store is open, the fleet loaded and both listeners bound,
/// yes while serving, no again from the start of a drain (so a load balancer or Kubernetes
/// stops sending before connections close).
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    /// Everything is up.
    pub fn ready(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// The coordinator is stopping.
    pub fn draining(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// Whether it serves.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The router driven in-process (`oneshot`), over a real store in a temporary directory:
    //! every route, its errors, and readiness.

    use std::sync::atomic::AtomicU64;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::analysis::fleet::Fleet;
    use crate::config::Config;
    use crate::quic::ca::CoordinatorCa;
    use crate::registry::{AuthState, Registry};
    use crate::store::Writer;
    use crate::telemetry::Metrics;

    const CONFIG: &str = "[[check]]\nname = \"gateway\"\nhost = \"gw.example.com\"\nport = 8443\n";

    pub(crate) struct Fixture {
        pub(crate) dir: tempfile::TempDir,
        pub(crate) state: Arc<ApiState>,
    }

    fn fixture() -> Fixture {
        fixture_with("")
    }

    /// The fixture with `extra` TOML (tables such as `[http]`) before the check.
    pub(crate) fn fixture_with(extra: &str) -> Fixture {
        fixture_of(extra, &["p1"])
    }

    /// A fixture whose fleet holds the connected probes `names` (site lyon).
    pub(crate) fn fixture_of(extra: &str, names: &[&str]) -> Fixture {
        fixture_fleet(extra, names, |_| {})
    }

    /// The fixture with `extra` TOML and the probes `names`, its fleet changed by `edit` before
    /// the router sees it.
    pub(crate) fn fixture_fleet(
        extra: &str,
        names: &[&str],
        edit: impl FnOnce(&mut Fleet),
    ) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!("{extra}\n{CONFIG}");
        let config = Config::from_toml(&text, "test.toml", dir.path()).expect("config");
        let writer = Writer::start(dir.path()).expect("writer");
        let mut fleet = Fleet::default();
        for name in names {
            let view = fleet.probes.entry((*name).into()).or_default();
            std::sync::Arc::make_mut(&mut view.labels).insert("site".into(), "lyon".into());
            view.connected = true;
            view.last_seen_ms = crate::store::now_ms();
        }
        edit(&mut fleet);
        let registry = Arc::new(Registry::new(fleet, AuthState::default(), writer));
        let ca = Arc::new(CoordinatorCa::load_or_create(dir.path(), &[]).expect("ca"));
        let (_tx, rx) = tokio::sync::watch::channel(Arc::new(config));
        let hub = Arc::new(Hub::new(
            rx,
            Arc::new(AtomicU64::new(1)),
            registry,
            ca,
            Metrics::new(),
        ));
        let state = Arc::new(ApiState::new(
            hub,
            Reader::open(dir.path()).expect("reader"),
            Arc::new(Readiness::default()),
        ));
        Fixture { dir, state }
    }

    /// One request through the router from `from`, with `headers`: status, headers, body.
    pub(crate) async fn exchange(
        fx: &Fixture,
        from: std::net::SocketAddr,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let mut builder = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let mut request = builder.body(Body::from(body.to_string())).expect("request");
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(from));
        let response = router(fx.state.clone())
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 4 << 20)
            .await
            .expect("body");
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    /// A JSON request as if from loopback, which may do everything when no users are
    /// configured.
    pub(super) async fn call(
        fx: &Fixture,
        method: &str,
        uri: &str,
        body: &str,
    ) -> (StatusCode, String) {
        let from = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
        let headers = [("content-type", "application/json")];
        let (status, _, body) = exchange(fx, from, method, uri, &headers, body).await;
        (status, body)
    }

    async fn get(fx: &Fixture, uri: &str) -> (StatusCode, String) {
        call(fx, "GET", uri, "").await
    }

    fn json(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// A request that walks the fleet view waits for its lock (held here from another thread,
    /// as the store's writer holds it to record a commit group) off the runtime: the runtime's
    /// one thread (a coordinator given one core has one worker, which also reads the QUIC
    /// sockets) keeps running other tasks meanwhile. Done on the worker, the request blocked
    /// it until the lock was released, and the holder's 5 s ran out.
    #[tokio::test]
    async fn a_request_waiting_for_the_fleet_leaves_the_runtime_running() {
        let fx = Arc::new(fixture());
        for uri in [
            "/metrics",
            "/api/v1/fleet",
            "/api/v1/checks",
            "/api/v1/checks/gateway",
            "/api/v1/probes",
            "/api/v1/agents",
            "/",
        ] {
            let (locked_tx, locked_rx) = std::sync::mpsc::channel();
            let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
            let state = fx.state.clone();
            let holder = std::thread::spawn(move || {
                let _held = state.hub.registry.fleet_mut();
                locked_tx.send(()).expect("locked");
                // Released when told, or after 5 s: the test's verdict.
                release_rx
                    .recv_timeout(std::time::Duration::from_secs(5))
                    .is_ok()
            });
            locked_rx.recv().expect("the holder took the lock");
            let f = fx.clone();
            let request = tokio::spawn(async move { get(&f, uri).await });
            // The request runs as soon as this task sleeps, and waits for the lock.
            for _ in 0..50 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            let _ = release_tx.send(());
            let told = holder.join().expect("holder");
            assert!(
                told,
                "{uri}: the runtime's thread was blocked while the request waited for the fleet's lock"
            );
            let (status, body) = request.await.expect("request");
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        }
    }

    #[tokio::test]
    async fn live_always_and_ready_only_between_start_and_drain() {
        let fx = fixture();
        assert_eq!(get(&fx, "/live").await.0, StatusCode::OK);
        assert_eq!(
            get(&fx, "/ready").await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "not started"
        );
        fx.state.readiness.ready();
        assert_eq!(get(&fx, "/ready").await, (StatusCode::OK, "ready\n".into()));
        fx.state.readiness.draining();
        let (status, body) = get(&fx, "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("draining"), "{body}");
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text_with_the_fleet_gauges() {
        let fx = fixture();
        let (status, body) = get(&fx, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("cemwatch_probes{state=\"connected\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("cemwatch_fleet_diagnosis{check=\"gateway\",diagnosis=\"no_data\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("cemwatch_connections_refused_total{reason=\"busy\"} 0"),
            "pre-registered"
        );
    }

    #[tokio::test]
    async fn fleet_checks_and_probes_are_json() {
        let fx = fixture();
        let (status, body) = get(&fx, "/api/v1/fleet").await;
        assert_eq!(status, StatusCode::OK);
        let fleet = json(&body);
        assert_eq!(fleet["probes"]["connected"], 1);
        assert_eq!(fleet["checks"][0]["check"], "gateway");
        assert_eq!(fleet["checks"][0]["diagnosis"], "no_data");
        let (status, body) = get(&fx, "/api/v1/checks").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body).as_array().map(Vec::len), Some(1));
        let (status, body) = get(&fx, "/api/v1/checks/gateway").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            json(&body)["probes"],
            serde_json::json!([]),
            "no fresh result yet"
        );
        let (status, body) = get(&fx, "/api/v1/probes").await;
        assert_eq!(status, StatusCode::OK);
        let probes = json(&body);
        assert_eq!(probes[0]["name"], "p1");
        assert_eq!(probes[0]["state"], "connected");
        assert_eq!(probes[0]["labels"]["site"], "lyon");
    }

    #[tokio::test]
    async fn an_unknown_check_round_or_route_is_404_with_a_message() {
        let fx = fixture();
        let (status, body) = get(&fx, "/api/v1/checks/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            json(&body)["error"]
                .as_str()
                .unwrap_or("")
                .contains("no check named \"nope\""),
            "{body}"
        );
        let (status, body) = get(&fx, "/api/v1/rounds/99").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            json(&body)["error"]
                .as_str()
                .unwrap_or("")
                .contains("no round 99"),
            "{body}"
        );
        assert_eq!(get(&fx, "/api/v1/nothing").await.0, StatusCode::NOT_FOUND);
        assert_eq!(
            get(&fx, "/api/v1/rounds/not-a-number").await.0,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn agents_refuse_an_unknown_condition() {
        let fx = fixture();
        assert_eq!(
            get(&fx, "/api/v1/agents").await,
            (StatusCode::OK, "[]".into())
        );
        assert_eq!(
            get(&fx, "/api/v1/agents?condition=cem_connected").await.0,
            StatusCode::OK
        );
        let (status, body) = get(&fx, "/api/v1/agents?condition=sleeping").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("use one of cem_connected"), "{body}");
    }

    #[tokio::test]
    async fn events_are_listed_and_bad_filters_refused() {
        let fx = fixture();
        assert_eq!(
            get(&fx, "/api/v1/events?check=gateway&limit=5").await,
            (StatusCode::OK, "[]".into())
        );
        assert_eq!(
            get(&fx, "/api/v1/events?limit=lots").await.0,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn lists_come_in_bounded_pages_linked_to_the_next() {
        let names: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let fx = fixture_of("", &refs);
        let mut seen = Vec::new();
        let mut uri = "/api/v1/probes?limit=10".to_string();
        loop {
            let from = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
            let (status, headers, body) = exchange(&fx, from, "GET", &uri, &[], "").await;
            assert_eq!(status, StatusCode::OK);
            let link = headers
                .get(header::LINK)
                .map(|v| v.to_str().expect("ascii").to_string());
            let page: Vec<serde_json::Value> = serde_json::from_str(&body).expect("json");
            assert!(page.len() <= 10);
            seen.extend(
                page.iter()
                    .map(|p| p["name"].as_str().expect("name").to_string()),
            );
            match link {
                Some(l) => {
                    uri = l
                        .strip_prefix('<')
                        .and_then(|l| l.split_once(">; rel=\"next\""))
                        .map(|(u, _)| u.to_string())
                        .expect("a next link");
                }
                None => break,
            }
        }
        assert_eq!(seen, names, "every probe once, in order, over three pages");
        for bad in [
            "/api/v1/probes?limit=0",
            "/api/v1/probes?limit=10001",
            "/api/v1/agents?limit=0",
            "/api/v1/events?limit=1001",
        ] {
            let (status, body) = get(&fx, bad).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(body.contains("limit:"), "{bad}: {body}");
        }
    }

    #[tokio::test]
    async fn rounds_are_started_read_back_and_bad_requests_refused() {
        let fx = fixture();
        let post = |body: &'static str| call(&fx, "POST", "/api/v1/rounds", body);
        let (status, body) = post(r#"{"check":"gateway","expect_thumbprint":"not hex"}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("expect_thumbprint"), "{body}");
        let (status, body) = post(r#"{"check":"gateway","expect_port":0}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("0 is not a port"), "{body}");
        let (status, body) = post(r#"{"check":"other"}"#).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            body.contains("the configured checks are: gateway"),
            "{body}"
        );
        assert!(post("{not json").await.0.is_client_error());
        assert!(
            post(r#"{"expect_port":8443}"#).await.0.is_client_error(),
            "no check"
        );
        let (status, body) = post(r#"{"check":"gateway","expect_port":8443}"#).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let round = json(&body);
        assert_eq!(round["eligible"], 0, "no live connection in this fixture");
        let id = round["round"].as_u64().expect("id");
        let (status, body) = get(&fx, &format!("/api/v1/rounds/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body)["expect_port"], 8443);
        assert_eq!(
            get(&fx, "/api/v1/rounds").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
