//! The handlers of the HTTP surface, each a function of the shared state; errors are
//! [`ApiError`]s, which say what was wrong in JSON with the right status.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use cemwatch_shared::{AgentCondition, Thumbprint};

use crate::analysis::rounds::evaluate;
use crate::http::{ApiError, ApiState};
use crate::model::event::EventQuery;
use crate::model::latest::Latest;
use crate::model::page;
use crate::model::round::{RoundRequest, RoundStatus};
use crate::model::summary::FleetSummary;
use crate::quic::Hub;
use crate::quic::RoundRefused;
use crate::store::{self, now_ms};

pub(crate) async fn ready(State(s): State<Arc<ApiState>>) -> Response {
    if s.readiness.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting or draining\n",
        )
            .into_response()
    }
}

/// The fleet summary for the configured checks.
pub fn summary(hub: &Hub) -> FleetSummary {
    let config = hub.config.borrow().clone();
    hub.registry.fleet().summary(&config, now_ms())
}

/// Runs `f`, blocking work (a walk of the whole fleet view, a store query), on tokio's blocking
/// pool instead of the runtime's workers; `what` names it in the log if it panics. Why: the
/// workers also read the QUIC sockets, and a coordinator given one core has one worker. A
/// summary of 100,000 probes takes 150-255 ms (the benchmark's scrape midway); done on the
/// worker, no datagram was read meanwhile, and the probes' datagrams could overrun the
/// socket's buffer (on the benchmark machine 8 MiB, some 3,600 datagrams of 2,304 bytes of
/// kernel buffer each), each report dropped waiting out its sender's probe timeout. On its own
/// thread the kernel shares the core between it and the worker, which keeps reading. Also
/// while `f` waits for the fleet's lock (the store's writer holds it to record a commit
/// group), the worker does not.
pub(crate) async fn off_runtime<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("{what} stopped: {e}")))
}

/// [`summary`], off the runtime's workers ([`off_runtime`]).
pub(crate) async fn summary_off_runtime(hub: &Arc<Hub>) -> Result<FleetSummary, ApiError> {
    let hub = hub.clone();
    off_runtime("the fleet summary", move || summary(&hub)).await
}

pub(crate) async fn metrics(State(s): State<Arc<ApiState>>) -> Response {
    // The fleet lock is held for the summary alone (one pass); the gauges are set and the text
    // encoded after it is released, so a scrape holds committed reports back only that long.
    let text = off_runtime("the metrics' fleet summary", move || {
        let config = s.hub.config.borrow().clone();
        let summary = s.hub.registry.fleet().summary(&config, now_ms());
        s.hub.metrics.render_fleet(&summary, &config)
    })
    .await;
    let text = match text {
        Ok(text) => text,
        Err(e) => return e.into_response(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub(crate) async fn fleet(State(s): State<Arc<ApiState>>) -> Result<Json<FleetSummary>, ApiError> {
    Ok(Json(summary_off_runtime(&s.hub).await?))
}

pub(crate) async fn checks(
    State(s): State<Arc<ApiState>>,
) -> Result<Json<Vec<crate::model::summary::CheckSummary>>, ApiError> {
    Ok(Json(summary_off_runtime(&s.hub).await?.checks))
}

/// A probe's latest result for one check.
#[derive(Debug, Serialize)]
pub struct ProbeResult {
    /// Probe name.
    pub probe: String,
    /// Site label.
    pub site: String,
    /// Vantage label.
    pub vantage: String,
    /// Its result.
    #[serde(flatten)]
    pub latest: Latest,
}

/// One check in detail.
#[derive(Debug, Serialize)]
pub struct CheckDetail {
    /// The summary.
    #[serde(flatten)]
    pub summary: crate::model::summary::CheckSummary,
    /// The fresh results, by probe name: a page of them (`?after=&limit=`, a `Link` header
    /// to the next; the summary always covers every probe).
    pub probes: Vec<ProbeResult>,
}

pub(crate) async fn check(
    State(s): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Query(q): Query<ProbeQuery>,
) -> Result<Response, ApiError> {
    let limit = page::limit(q.limit).map_err(ApiError::BadRequest)?;
    let config = s.hub.config.borrow().clone();
    let Some(check) = config.checks.iter().find(|c| c.name == name) else {
        return Err(ApiError::NotFound(format!(
            "no check named {name:?} in the configuration"
        )));
    };
    let check = check.clone();
    let now = now_ms();
    let (hub, after, of) = (s.hub.clone(), q.after.clone(), name.clone());
    let (summary, probes, more) = off_runtime("the check's results", move || {
        let fleet = hub.registry.fleet();
        let summary = fleet.check_summary(&config, &check, now);
        let (observations, more) = page::by_name(
            fleet
                .observations(&of, now, config.server.stale_after)
                .into_iter()
                .map(|o| (o.probe, o)),
            after.as_deref(),
            limit,
        );
        let probes: Vec<ProbeResult> = observations
            .into_iter()
            .map(|(_, o)| ProbeResult {
                probe: o.probe.to_string(),
                site: o.site.to_string(),
                vantage: o.vantage.to_string(),
                latest: o.latest.clone(),
            })
            .collect();
        (summary, probes, more)
    })
    .await?;
    let next = more
        .then(|| {
            probes.last().map(|p| {
                format!(
                    "/api/v1/checks/{}?after={}&limit={limit}",
                    urlencode(&name),
                    urlencode(&p.probe)
                )
            })
        })
        .flatten();
    Ok(paged(CheckDetail { summary, probes }, next))
}

/// A probe in the API.
#[derive(Debug, Serialize)]
pub struct ProbeEntry {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: cemwatch_shared::wire::Labels,
    /// `connected`, `disconnected` or `stale`.
    pub state: &'static str,
    /// Last contact, Unix ms.
    pub last_seen_ms: i64,
    /// Agent version.
    pub agent_version: Option<String>,
    /// Latest result per check.
    pub latest: BTreeMap<String, Latest>,
}

/// A page of `/api/v1/probes`.
#[derive(Debug, Deserialize)]
pub struct ProbeQuery {
    /// Only probes whose name comes after this one (the last name of the previous page).
    pub after: Option<String>,
    /// At most this many (default 1,000, at most 10,000).
    pub limit: Option<usize>,
}

/// `items` as JSON, with a `Link: <…>; rel="next"` header when more follow (`next` is the
/// query of the next page).
fn paged<T: Serialize>(items: T, next: Option<String>) -> Response {
    let mut response = Json(items).into_response();
    if let Some(next) = next {
        if let Ok(v) = header::HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
            response.headers_mut().insert(header::LINK, v);
        }
    }
    response
}

pub(crate) async fn probes(
    State(s): State<Arc<ApiState>>,
    Query(q): Query<ProbeQuery>,
) -> Result<Response, ApiError> {
    let limit = page::limit(q.limit).map_err(ApiError::BadRequest)?;
    let stale_after = s.hub.config.borrow().server.stale_after;
    let now = now_ms();
    let (hub, after) = (s.hub.clone(), q.after.clone());
    let (out, more) = off_runtime("the probe list", move || {
        let fleet = hub.registry.fleet();
        let (page, more) = page::by_name(
            fleet.probes.iter().filter(|(_, v)| !v.revoked),
            after.as_deref(),
            limit,
        );
        let out: Vec<ProbeEntry> = page
            .into_iter()
            .map(|(name, v)| ProbeEntry {
                name: name.clone(),
                labels: (*v.labels).clone(),
                state: v.state(now, stale_after).as_str(),
                last_seen_ms: v.last_seen_ms,
                agent_version: v.agent_version.clone(),
                latest: v.latest.clone(),
            })
            .collect();
        (out, more)
    })
    .await?;
    let next = more
        .then(|| {
            out.last()
                .map(|p| format!("/api/v1/probes?after={}&limit={limit}", urlencode(&p.name)))
        })
        .flatten();
    Ok(paged(out, next))
}

/// Filters of `/api/v1/agents`.
#[derive(Debug, Deserialize)]
pub struct AgentQuery {
    /// Only agents in this condition (`cem_connected`, `handshake_error`, `connect_timeout`,
    /// `no_cem_activity`).
    pub condition: Option<String>,
    /// Only probes whose name comes after this one (the last of the previous page).
    pub after: Option<String>,
    /// At most this many (default 1,000, at most 10,000).
    pub limit: Option<usize>,
}

pub(crate) async fn agents(
    State(s): State<Arc<ApiState>>,
    Query(q): Query<AgentQuery>,
) -> Result<Response, ApiError> {
    if let Some(c) = q.condition.as_deref() {
        if !AgentCondition::NAMES.contains(&c) {
            return Err(ApiError::BadRequest(format!(
                "condition: {c:?} is not a condition; use one of {}",
                AgentCondition::NAMES.join(", ")
            )));
        }
    }
    let limit = page::limit(q.limit).map_err(ApiError::BadRequest)?;
    let config = s.hub.config.borrow().clone();
    let now = now_ms();
    let (hub, condition, after) = (s.hub.clone(), q.condition.clone(), q.after.clone());
    let (entries, more) = off_runtime("the agent list", move || {
        crate::analysis::agents::entries(
            &hub.registry.fleet().probes,
            &config,
            now,
            condition.as_deref(),
            after.as_deref(),
            limit,
        )
    })
    .await?;
    let next = more
        .then(|| {
            entries.last().map(|e| {
                format!(
                    "/api/v1/agents?after={}&limit={limit}{}",
                    urlencode(&e.probe),
                    q.condition
                        .as_deref()
                        .map(|c| format!("&condition={c}"))
                        .unwrap_or_default()
                )
            })
        })
        .flatten();
    Ok(paged(entries, next))
}

/// `text` for a query string (probe names are letters, digits, `-`, `_` and `.`; anything
/// else is escaped anyway).
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Verdict transitions. The query runs on a blocking thread (never on the async workers that
/// also drive QUIC ingest), through an index for each filter; a full page links to the next
/// (`before_id`).
pub(crate) async fn events(
    State(s): State<Arc<ApiState>>,
    Query(q): Query<EventQuery>,
) -> Result<Response, ApiError> {
    if let Some(l) = q.limit {
        if !(1..=1000).contains(&l) {
            return Err(ApiError::BadRequest(format!(
                "limit: {l} is out of range; ask for 1 to 1000 events a page (default 100) and follow the Link header (before_id) for older ones"
            )));
        }
    }
    let limit = q.limit.unwrap_or(100) as usize;
    let state = s.clone();
    let (q, events) = off_runtime("the events query", move || {
        let events = state.reader.with(|db| store::read::events(db, &q));
        (q, events)
    })
    .await?;
    let events = events.map_err(ApiError::Store)?;
    let next = (events.len() == limit)
        .then(|| events.last())
        .flatten()
        .map(|last| {
            let mut next = format!("/api/v1/events?before_id={}&limit={limit}", last.id);
            for (key, value) in [("check", &q.check), ("probe", &q.probe)] {
                if let Some(v) = value {
                    next.push_str(&format!("&{key}={}", urlencode(v)));
                }
            }
            for (key, value) in [("since_ms", q.since_ms), ("until_ms", q.until_ms)] {
                if let Some(v) = value {
                    next.push_str(&format!("&{key}={v}"));
                }
            }
            next
        });
    Ok(paged(events, next))
}

pub(crate) async fn start_round(
    State(s): State<Arc<ApiState>>,
    Json(req): Json<RoundRequest>,
) -> Result<Response, ApiError> {
    let round = begin_round(&s, &req)?;
    Ok((StatusCode::CREATED, Json(round)).into_response())
}

/// Starts a round of `req.check`: the one path of `POST /api/v1/rounds`, as JSON or as the
/// page's form.
pub fn begin_round(s: &ApiState, req: &RoundRequest) -> Result<RoundStatus, ApiError> {
    let thumbprint = match req
        .expect_thumbprint
        .as_deref()
        .map(Thumbprint::parse)
        .transpose()
    {
        Ok(t) => t,
        Err(e) => return Err(ApiError::BadRequest(format!("expect_thumbprint: {e}"))),
    };
    if req.expect_port == Some(0) {
        return Err(ApiError::BadRequest("expect_port: 0 is not a port".into()));
    }
    match s
        .hub
        .start_check_round(&req.check, thumbprint, req.expect_port)
    {
        Ok(round) => Ok(evaluate(&round)),
        Err(RoundRefused::UnknownCheck(e)) => Err(ApiError::NotFound(e)),
        Err(RoundRefused::TooSoon {
            retry_after,
            previous,
            in_flight,
        }) => Err(ApiError::TooSoon {
            message: if in_flight {
                format!(
                    "round {previous} of {:?} is still waiting for answers: follow it at /api/v1/rounds/{previous}, or ask again in {} s",
                    req.check,
                    retry_after.as_secs()
                )
            } else {
                format!(
                    "round {previous} of {:?} started less than rounds.min_interval ago: ask again in {} s",
                    req.check,
                    retry_after.as_secs()
                )
            },
            retry_after_s: retry_after.as_secs().max(1),
        }),
    }
}

pub(crate) async fn round(
    State(s): State<Arc<ApiState>>,
    Path(id): Path<u64>,
) -> Result<Response, ApiError> {
    match s.hub.round(id) {
        Some(round) => Ok(Json(evaluate(&round)).into_response()),
        None => Err(ApiError::NotFound(format!(
            "no round {id} (rounds are kept in memory; the last {}, see rounds.keep)",
            s.hub.config.borrow().rounds.keep
        ))),
    }
}
