//! The status pages: the fleet as server-rendered HTML on the coordinator's HTTP listener, for
//! the administrators who would otherwise need Grafana or the CLI.
//!
//! - `/`: per check, the diagnosis as a badge with its remedy, the verdict counts, the share of
//!   probes that see the policy's certificate, days left, the port-consistency line, the worst
//!   sites and a verdict timeline; then the agents' own CEM state and the last events.
//! - `/checks/NAME`: the same in full, with the site × verdict grid, the certificates with
//!   their observers and every probe's result (sorted and filtered by query parameters, so it
//!   works without JavaScript).
//! - `/probes`, `/probes/NAME`: each probe's state, last contact, labels, version, latest
//!   results with their findings, and its agent's CEM state.
//! - `/rounds/ID`: a round's progress; a round is started with a form that posts to the same
//!   `POST /api/v1/rounds` (shown only to users who may operate; others see the `cemwatch
//!   verify` command).
//!
//! The pages load nothing from elsewhere: one stylesheet and one small script, both served here
//! under `/assets/`, and a `Content-Security-Policy` of `default-src 'self'` that tells the
//! browser so. The script only refreshes the page in place; without it every page is complete.
//! Every value is escaped by the template engine, and text that probes send has its control
//! characters removed first ([`Text`]).

mod svg;
mod view;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use maud::{Markup, Render};
use serde::Deserialize;

use cemwatch_shared::{FindingCode, Severity};

use crate::http::handlers::{self, summary_off_runtime};
use crate::http::{Access, ApiError, ApiState, Role};
use crate::model::event::EventQuery;
use crate::model::round::RoundRequest;
use crate::store::{self, now_ms};

/// The policy every page is sent with: nothing but this origin, no framing, forms only here.
pub const CSP: &str =
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The stylesheet, served at `/assets/cemwatch.css`.
pub const CSS: &str = include_str!("cemwatch.css");
/// The refresh script, served at `/assets/cemwatch.js`.
pub const JS: &str = include_str!("cemwatch.js");

/// What the demo lets the page do: switch the gateway simulator's scenario live. Only
/// `cemwatch demo` provides one; a coordinator in production has none, and its pages show no
/// such control.
pub trait DemoControl: Send + Sync + std::fmt::Debug {
    /// Every scenario: its name (as `--scenario` spells it) and what it simulates.
    fn scenarios(&self) -> Vec<(String, String)>;
    /// The scenario now.
    fn current(&self) -> String;
    /// What a newcomer should know about the demo's data (where the agents' states come from).
    fn notes(&self) -> Vec<String>;
    /// Puts the simulator into `scenario`; the message says what was wrong.
    fn switch(&self, scenario: &str) -> Result<(), String>;
}

/// What the pages may get from the program that runs the coordinator.
#[derive(Debug, Default)]
pub struct PageExtras {
    /// The demo's scenario switch, when running `cemwatch demo`.
    pub demo: OnceLock<Arc<dyn DemoControl>>,
}

/// Text that came from outside (a probe, an agent's log, a request): made printable (control
/// characters dropped, a tab a space), then the template engine escapes it.
#[derive(Debug, Clone, Copy)]
pub struct Text<'a>(pub &'a str);

impl Render for Text<'_> {
    fn render_to(&self, buffer: &mut String) {
        // Allocates only for text that has control characters.
        cemwatch_shared::printable::printable(self.0)
            .as_ref()
            .render_to(buffer);
    }
}

/// A name made safe for an `id` attribute and a URL path segment: names follow the fleet's
/// name rule (letters, digits, `-`, `_`, `.`), anything else is replaced.
pub(crate) fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if cemwatch_shared::name::is_name_char(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// What one page needs besides its data: whether the user may operate, and the demo control.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub(crate) operate: bool,
    pub(crate) demo: Option<Arc<dyn DemoControl>>,
    pub(crate) now_ms: i64,
    pub(crate) api: String,
}

fn context(s: &ApiState, access: &Access, headers: &HeaderMap) -> Context {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or("127.0.0.1:9464");
    let scheme = if s.hub.config.borrow().http.tls.is_some() {
        "https"
    } else {
        "http"
    };
    Context {
        operate: access.allows(Role::Operate),
        demo: s.pages.demo.get().cloned(),
        now_ms: now_ms(),
        api: format!("{scheme}://{host}"),
    }
}

/// An HTML response with the page's headers.
pub(crate) fn html(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(h);
    response
}

fn secure(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// An [`ApiError`] as a page: the status, what was wrong, and a link back.
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let message = match &self.0 {
            ApiError::Store(e) => {
                tracing::error!(error = %e, "a page failed in the store");
                "internal error: the coordinator's log says more".to_string()
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "a page failed");
                "internal error: the coordinator's log says more".to_string()
            }
            other => other.to_string(),
        };
        let (back, back_label) = match &self.0 {
            ApiError::NotFound(m) if m.starts_with("no probe") => ("/probes", "all probes"),
            _ => ("/", "the fleet"),
        };
        let mut response = html(status, view::error(status, &message, back, back_label));
        if let ApiError::TooSoon { retry_after_s, .. } = &self.0 {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
        }
        response
    }
}

type PageResult = Result<Response, PageError>;

/// Events matching `q`, read on a blocking thread as `/api/v1/events` does.
async fn last_events(
    s: &Arc<ApiState>,
    q: EventQuery,
) -> Result<Vec<crate::model::event::Event>, ApiError> {
    let state = s.clone();
    handlers::off_runtime("the events query", move || {
        state.reader.with(|db| store::read::events(db, &q))
    })
    .await?
    .map_err(ApiError::Store)
}

/// Events of no particular check or probe, newest first.
fn newest(limit: u32) -> EventQuery {
    EventQuery {
        since_ms: None,
        until_ms: None,
        check: None,
        probe: None,
        before_id: None,
        limit: Some(limit),
    }
}

/// The events a check's timeline is rebuilt from (the last six hours, at most 1000).
async fn timeline_of(
    s: &Arc<ApiState>,
    check: &crate::model::summary::CheckSummary,
    now: i64,
) -> Result<svg::Timeline, ApiError> {
    let events = last_events(
        s,
        EventQuery {
            since_ms: Some(now - svg::MAX_WINDOW_MS),
            check: Some(check.check.clone()),
            ..newest(1000)
        },
    )
    .await?;
    let config = s.hub.config.borrow().clone();
    let fleet = s.hub.registry.fleet();
    let current: Vec<(String, Severity)> = fleet
        .observations(&check.check, now, config.server.stale_after)
        .into_iter()
        .map(|o| (o.probe.to_string(), o.latest.verdict))
        .collect();
    drop(fleet);
    let current: Vec<(&str, Severity)> = current.iter().map(|(p, v)| (p.as_str(), *v)).collect();
    Ok(svg::Timeline::build(&events, &current, now, 60))
}

/// `GET /`: the fleet.
pub(crate) async fn fleet(
    State(s): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
) -> PageResult {
    let cx = context(&s, &access, &headers);
    let fleet = summary_off_runtime(&s.hub).await?;
    let mut timelines = Vec::new();
    for c in &fleet.checks {
        timelines.push(timeline_of(&s, c, cx.now_ms).await?);
    }
    let events = last_events(&s, newest(10)).await?;
    Ok(html(
        StatusCode::OK,
        view::fleet(&cx, &fleet, &timelines, &events),
    ))
}

/// How `/checks/NAME` sorts and filters its probes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeFilter {
    /// `ok`, `warn` or `fail`.
    pub verdict: Option<String>,
    /// A finding code.
    pub code: Option<String>,
    /// A site.
    pub site: Option<String>,
    /// `probe` (default), `site`, `verdict`, `tcp_ms` or `tls_ms`.
    pub sort: Option<String>,
}

/// The sort orders of `/checks/NAME`.
pub const SORTS: [&str; 5] = ["probe", "site", "verdict", "tcp_ms", "tls_ms"];

/// A [`ProbeFilter`] checked: bad values are refused by name with the values allowed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub(crate) verdict: Option<Severity>,
    pub(crate) code: Option<FindingCode>,
    pub(crate) site: Option<String>,
    pub(crate) sort: &'static str,
}

impl ProbeFilter {
    fn parse(self) -> Result<Filter, ApiError> {
        let empty = |v: Option<String>| v.filter(|v| !v.is_empty());
        let verdict = match empty(self.verdict) {
            None => None,
            Some(v) => Some(
                [Severity::Ok, Severity::Warn, Severity::Fail]
                    .into_iter()
                    .find(|s| s.as_str() == v)
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "verdict: {v:?} is not a verdict; use ok, warn or fail"
                        ))
                    })?,
            ),
        };
        let code = match empty(self.code) {
            None => None,
            Some(c) => Some(FindingCode::from_name(&c).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "code: {c:?} is not a finding code (the README lists them)"
                ))
            })?),
        };
        let sort = match empty(self.sort) {
            None => "probe",
            Some(s) => SORTS.into_iter().find(|x| *x == s).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "sort: {s:?} is not a column; use one of {}",
                    SORTS.join(", ")
                ))
            })?,
        };
        Ok(Filter {
            verdict,
            code,
            site: empty(self.site),
            sort,
        })
    }
}

fn query<T: serde::de::DeserializeOwned + Default>(uri: &axum::http::Uri) -> Result<T, ApiError> {
    match uri.query() {
        None => Ok(T::default()),
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|e| ApiError::BadRequest(format!("the query string: {e}"))),
    }
}

/// `GET /checks/NAME`.
pub(crate) async fn check(
    State(s): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> PageResult {
    let cx = context(&s, &access, &headers);
    let filter = query::<ProbeFilter>(&uri)?.parse()?;
    let config = s.hub.config.borrow().clone();
    let Some(check) = config.checks.iter().find(|c| c.name == name) else {
        return Err(ApiError::NotFound(format!(
            "no check named {:?}; the configured checks are: {}",
            name,
            config
                .checks
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into());
    };
    let (summary, mut rows) = {
        let fleet = s.hub.registry.fleet();
        let summary = fleet.check_summary(&config, check, cx.now_ms);
        let rows: Vec<view::Row> = fleet
            .observations(&name, cx.now_ms, config.server.stale_after)
            .into_iter()
            .map(|o| view::Row {
                probe: o.probe.to_string(),
                site: o.site.to_string(),
                vantage: o.vantage.to_string(),
                latest: o.latest.clone(),
            })
            .collect();
        (summary, rows)
    };
    let total = rows.len();
    let mut vantages: BTreeMap<String, crate::model::summary::VerdictCounts> = BTreeMap::new();
    let mut seen_by: view::SeenBy = BTreeMap::new();
    for r in &rows {
        if let Some(t) = &r.latest.thumbprint {
            *seen_by
                .entry(t.clone())
                .or_default()
                .entry(r.site.clone())
                .or_insert(0) += 1;
        }
        let v = vantages.entry(r.vantage.clone()).or_default();
        match r.latest.verdict {
            Severity::Ok => v.ok += 1,
            Severity::Warn => v.warn += 1,
            Severity::Fail => v.fail += 1,
        }
    }
    rows.retain(|r| {
        filter.verdict.is_none_or(|v| r.latest.verdict == v)
            && filter.code.is_none_or(|c| r.latest.codes.contains(&c))
            && filter.site.as_ref().is_none_or(|site| &r.site == site)
    });
    match filter.sort {
        "site" => rows.sort_by(|a, b| (&a.site, &a.probe).cmp(&(&b.site, &b.probe))),
        "verdict" => rows.sort_by(|a, b| {
            (std::cmp::Reverse(a.latest.verdict), &a.probe)
                .cmp(&(std::cmp::Reverse(b.latest.verdict), &b.probe))
        }),
        "tcp_ms" => rows.sort_by(|a, b| b.latest.tcp_ms.total_cmp(&a.latest.tcp_ms)),
        "tls_ms" => rows.sort_by(|a, b| b.latest.tls_ms.total_cmp(&a.latest.tls_ms)),
        _ => rows.sort_by(|a, b| a.probe.cmp(&b.probe)),
    }
    let shown = rows.len();
    rows.truncate(ROWS_PER_PAGE);
    let timeline = timeline_of(&s, &summary, cx.now_ms).await?;
    Ok(html(
        StatusCode::OK,
        view::check(
            &cx,
            &summary,
            &timeline,
            &rows,
            (shown, total),
            (&vantages, &seen_by),
            &filter,
        ),
    ))
}

/// `GET /probes`.
pub(crate) async fn probes(
    State(s): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> PageResult {
    let cx = context(&s, &access, &headers);
    let q = query::<ProbePage>(&uri)?;
    let limit = match q.limit {
        None => PROBES_PER_PAGE,
        Some(n) => crate::model::page::limit(Some(n)).map_err(ApiError::BadRequest)?,
    };
    let stale_after = s.hub.config.borrow().server.stale_after;
    let fleet = s.hub.registry.fleet();
    let total = fleet.probes.values().filter(|v| !v.revoked).count();
    let (page, more) = crate::model::page::by_name(
        fleet.probes.iter().filter(|(_, v)| !v.revoked),
        q.after.as_deref(),
        limit,
    );
    let list: Vec<view::ProbeLine> = page
        .into_iter()
        .map(|(name, v)| view::ProbeLine {
            name: name.clone(),
            state: v.state(cx.now_ms, stale_after),
            view: v.clone(),
        })
        .collect();
    drop(fleet);
    let next = more
        .then(|| list.last())
        .flatten()
        .map(|last| format!("/probes?after={}&limit={limit}", slug(&last.name)));
    Ok(html(
        StatusCode::OK,
        view::probes(&cx, &list, total, next.as_deref()),
    ))
}

/// Probes a page of `/probes` lists unless asked otherwise.
pub const PROBES_PER_PAGE: usize = 500;

/// The rows of a check's page at most (the filters narrow them).
pub const ROWS_PER_PAGE: usize = 500;

/// Paging of `/probes`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbePage {
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /probes/NAME`.
pub(crate) async fn probe(
    State(s): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    let cx = context(&s, &access, &headers);
    let config = s.hub.config.borrow().clone();
    let (line, agent) = {
        let fleet = s.hub.registry.fleet();
        let Some(v) = fleet.probes.get(&name) else {
            return Err(ApiError::NotFound(format!("no probe named {name:?} in the fleet")).into());
        };
        let line = view::ProbeLine {
            name: name.clone(),
            state: v.state(cx.now_ms, config.server.stale_after),
            view: v.clone(),
        };
        let one: crate::model::probe::Probes = [(name.clone(), v.clone())].into_iter().collect();
        let agent = crate::analysis::agents::entries(&one, &config, cx.now_ms, None, None, 1)
            .0
            .into_iter()
            .next();
        (line, agent)
    };
    let events = last_events(
        &s,
        EventQuery {
            probe: Some(name.clone()),
            ..newest(10)
        },
    )
    .await?;
    Ok(html(
        StatusCode::OK,
        view::probe(&cx, &line, agent.as_ref(), &events),
    ))
}

/// `GET /rounds/ID`: a round's progress.
pub(crate) async fn round(
    State(s): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    let cx = context(&s, &access, &headers);
    let Ok(id) = id.parse::<u64>() else {
        return Err(ApiError::BadRequest(format!("{id:?} is not a round number")).into());
    };
    match s.hub.round(id) {
        Some(round) => Ok(html(
            StatusCode::OK,
            view::round(&cx, &crate::analysis::rounds::evaluate(&round)),
        )),
        None => Err(ApiError::NotFound(format!(
            "no round {id} (rounds are kept in memory; the last {}, see rounds.keep)",
            s.hub.config.borrow().rounds.keep
        ))
        .into()),
    }
}

/// Whether a request carries a form (the page's round button) rather than JSON.
pub(crate) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// A form must come from a page of this coordinator: a browser says where a form was posted
/// from (`Origin`, or `Sec-Fetch-Site`), so another site cannot make a visitor's browser start
/// rounds with the visitor's access (loopback may operate without credentials).
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if let Some(site) = site {
        return if site == "same-origin" || site == "none" {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "a form from another site ({site}) cannot start rounds: use this coordinator's own page"
            )))
        };
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (Some(origin), Some(host))
            if origin
                .split_once("://")
                .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host)) =>
        {
            Ok(())
        }
        _ => Err(ApiError::Forbidden(
            "a form must come from this coordinator's own page (its Origin header names another site, or none)".into(),
        )),
    }
}

/// The round form's fields (empty fields are absent).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoundForm {
    check: String,
    #[serde(default)]
    expect_thumbprint: String,
    #[serde(default)]
    expect_port: String,
}

impl RoundForm {
    fn request(self) -> Result<RoundRequest, ApiError> {
        let port = self.expect_port.trim();
        let expect_port = if port.is_empty() {
            None
        } else {
            Some(port.parse::<u16>().map_err(|_| {
                ApiError::BadRequest(format!("expect_port: {port:?} is not a port (1-65535)"))
            })?)
        };
        let thumbprint = self.expect_thumbprint.trim();
        Ok(RoundRequest {
            check: self.check,
            expect_thumbprint: (!thumbprint.is_empty()).then(|| thumbprint.to_string()),
            expect_port,
        })
    }
}

/// `POST /api/v1/rounds` from the page's form: the same round as the JSON request, then the
/// browser is sent to the round's page (303); errors are pages.
pub(crate) async fn start_round_form(s: Arc<ApiState>, req: Request) -> Response {
    let result = async {
        same_origin(req.headers())?;
        let body = axum::body::to_bytes(req.into_body(), crate::http::MAX_BODY)
            .await
            .map_err(|e| ApiError::BadRequest(format!("the form could not be read: {e}")))?;
        let form: RoundForm = serde_urlencoded::from_bytes(&body)
            .map_err(|e| ApiError::BadRequest(format!("the form: {e}")))?;
        handlers::begin_round(&s, &form.request()?)
    }
    .await;
    match result {
        Ok(round) => see_other(&format!("/rounds/{}", round.round)),
        Err(e) => PageError(e).into_response(),
    }
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    secure(response.headers_mut());
    response
}

/// The demo's scenario form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioForm {
    scenario: String,
}

/// `POST /demo/scenario` (demo only): puts the simulator into another scenario, then back to `/`.
pub(crate) async fn switch_scenario(State(s): State<Arc<ApiState>>, req: Request) -> Response {
    let result = async {
        let Some(demo) = s.pages.demo.get().cloned() else {
            return Err(ApiError::NotFound(
                "scenarios exist only in `cemwatch demo`".into(),
            ));
        };
        if !is_form(req.headers()) {
            return Err(ApiError::BadRequest(
                "send the scenario as a form (application/x-www-form-urlencoded)".into(),
            ));
        }
        same_origin(req.headers())?;
        let body = axum::body::to_bytes(req.into_body(), crate::http::MAX_BODY)
            .await
            .map_err(|e| ApiError::BadRequest(format!("the form could not be read: {e}")))?;
        let form: ScenarioForm = serde_urlencoded::from_bytes(&body)
            .map_err(|e| ApiError::BadRequest(format!("the form: {e}")))?;
        demo.switch(&form.scenario).map_err(ApiError::BadRequest)
    }
    .await;
    match result {
        Ok(()) => see_other("/"),
        Err(e) => PageError(e).into_response(),
    }
}

/// `GET /assets/cemwatch.css` and `/assets/cemwatch.js`.
pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "cemwatch.css" => (CSS, "text/css; charset=utf-8"),
        "cemwatch.js" => (JS, "text/javascript; charset=utf-8"),
        _ => {
            return PageError(ApiError::NotFound(format!("no asset named {file:?}")))
                .into_response()
        }
    };
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    secure(h);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    response
}

/// A refusal (401, 403) as a page, for a browser asking for a page: what it needs and how to
/// give it, and a way back; `headers` (the challenge) are kept.
pub(crate) fn refusal(status: StatusCode, message: &str, headers: &HeaderMap) -> Response {
    let mut response = html(
        status,
        view::error(
            status,
            &format!(
                "{message}. In a browser: give a user's name and password when asked; the coordinator's operator makes them with `cemwatch web hash-password`."
            ),
            "/",
            "the fleet",
        ),
    );
    if let Some(v) = headers.get(header::WWW_AUTHENTICATE) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, v.clone());
    }
    response
}

/// Any other path: the 404 page for a browser, JSON under `/api/`.
pub(crate) async fn not_found(uri: axum::http::Uri) -> Response {
    let path = uri.path();
    if path.starts_with("/api/") {
        return ApiError::NotFound(format!("no API route {path}")).into_response();
    }
    PageError(ApiError::NotFound(format!("there is no page at {path}"))).into_response()
}
