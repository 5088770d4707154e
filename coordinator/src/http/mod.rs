//! The HTTP surface: `/live`, `/ready`, `/metrics` (Prometheus text) and the JSON API under
//! `/api/v1/` (see `coordinator/openapi.yaml`), the management agents' CEM state included
//! (`/api/v1/fleet` aggregates it, `/api/v1/agents` lists it per probe). Reads are GET; the one action, starting a
//! `ProbeNow` round, is a POST.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use cemwatch_shared::{AgentCondition, FindingCode, Severity, Thumbprint};

use crate::model::summary::FleetSummary;

use crate::model::event::EventQuery;
use crate::model::latest::Latest;
use crate::quic::{Hub, Round};
use crate::store;
use crate::store::{now_ms, Reader};

/// State of the HTTP handlers.
#[derive(Debug)]
pub struct ApiState {
    /// The hub.
    pub hub: Arc<Hub>,
    /// A read connection to the store (events).
    pub reader: Reader,
    /// Whether the coordinator is ready.
    pub readiness: Arc<Readiness>,
}

/// The router.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/live", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/fleet", get(fleet))
        .route("/api/v1/checks", get(checks))
        .route("/api/v1/checks/{name}", get(check))
        .route("/api/v1/probes", get(probes))
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/events", get(events))
        .route("/api/v1/rounds", post(start_round))
        .route("/api/v1/rounds/{id}", get(round))
        .with_state(state)
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
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

async fn ready(State(s): State<Arc<ApiState>>) -> Response {
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

async fn metrics(State(s): State<Arc<ApiState>>) -> Response {
    let config = s.hub.config.borrow().clone();
    let now = now_ms();
    // The fleet lock is held for the summary alone (one pass); the gauges are set and the text
    // encoded after it is released, so a scrape holds committed reports back only that long.
    let summary = s.hub.registry.fleet().summary(&config, now);
    let text = s.hub.metrics.render_fleet(&summary, &config);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn fleet(State(s): State<Arc<ApiState>>) -> Json<FleetSummary> {
    Json(summary(&s.hub))
}

async fn checks(State(s): State<Arc<ApiState>>) -> Json<Vec<crate::model::summary::CheckSummary>> {
    Json(summary(&s.hub).checks)
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
    /// Every fresh result.
    pub probes: Vec<ProbeResult>,
}

async fn check(State(s): State<Arc<ApiState>>, Path(name): Path<String>) -> Response {
    let config = s.hub.config.borrow().clone();
    let Some(check) = config.checks.iter().find(|c| c.name == name) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no check named {name:?} in the configuration"),
        );
    };
    let now = now_ms();
    let fleet = s.hub.registry.fleet();
    let summary = fleet.check_summary(&config, check, now);
    let probes = fleet
        .observations(&name, now, config.server.stale_after)
        .into_iter()
        .map(|o| ProbeResult {
            probe: o.probe.to_string(),
            site: o.site.to_string(),
            vantage: o.vantage.to_string(),
            latest: o.latest.clone(),
        })
        .collect();
    Json(CheckDetail { summary, probes }).into_response()
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

async fn probes(State(s): State<Arc<ApiState>>) -> Json<Vec<ProbeEntry>> {
    let stale_after = s.hub.config.borrow().server.stale_after;
    let now = now_ms();
    let mut out: Vec<ProbeEntry> = s
        .hub
        .registry
        .fleet()
        .probes
        .iter()
        .filter(|(_, v)| !v.revoked)
        .map(|(name, v)| ProbeEntry {
            name: name.clone(),
            labels: v.labels.clone(),
            state: v.state(now, stale_after).as_str(),
            last_seen_ms: v.last_seen_ms,
            agent_version: v.agent_version.clone(),
            latest: v.latest.clone(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Json(out)
}

/// Filters of `/api/v1/agents`.
#[derive(Debug, Deserialize)]
pub struct AgentQuery {
    /// Only agents in this condition (`cem_connected`, `handshake_error`, `connect_timeout`,
    /// `no_cem_activity`).
    pub condition: Option<String>,
}

async fn agents(State(s): State<Arc<ApiState>>, Query(q): Query<AgentQuery>) -> Response {
    if let Some(c) = q.condition.as_deref() {
        if !AgentCondition::NAMES.contains(&c) {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "condition: {c:?} is not a condition; use one of {}",
                    AgentCondition::NAMES.join(", ")
                ),
            );
        }
    }
    let config = s.hub.config.borrow().clone();
    let now = now_ms();
    let entries = crate::analysis::agents::entries(
        &s.hub.registry.fleet().probes,
        &config,
        now,
        q.condition.as_deref(),
    );
    Json(entries).into_response()
}

async fn events(State(s): State<Arc<ApiState>>, Query(q): Query<EventQuery>) -> Response {
    match s.reader.with(|db| store::read::events(db, &q)) {
        Ok(events) => Json(events).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

/// Body of `POST /api/v1/rounds`.
#[derive(Debug, Deserialize, Serialize)]
pub struct RoundRequest {
    /// The check to run.
    pub check: String,
    /// The thumbprint the probes must see (as pasted; SHA-1 or SHA-256).
    pub expect_thumbprint: Option<String>,
    /// The port where the gateway must answer.
    pub expect_port: Option<u16>,
}

async fn start_round(State(s): State<Arc<ApiState>>, Json(req): Json<RoundRequest>) -> Response {
    let thumbprint = match req
        .expect_thumbprint
        .as_deref()
        .map(Thumbprint::parse)
        .transpose()
    {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("expect_thumbprint: {e}")),
    };
    if req.expect_port == Some(0) {
        return error(
            StatusCode::BAD_REQUEST,
            "expect_port: 0 is not a port".into(),
        );
    }
    match s
        .hub
        .start_check_round(&req.check, thumbprint, req.expect_port)
    {
        Ok(round) => (StatusCode::CREATED, Json(evaluate(&round))).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}

async fn round(State(s): State<Arc<ApiState>>, Path(id): Path<u64>) -> Response {
    match s.hub.round(id) {
        Some(round) => Json(evaluate(&round)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no round {id} (rounds are kept in memory; the last 100)"),
        ),
    }
}

/// A probe that answered the round without confirming the expectation.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct Dissenter {
    /// Probe.
    pub probe: String,
    /// Site.
    pub site: String,
    /// Why, as finding codes (`thumbprint_mismatch`, `wrong_port`, `tcp_filtered`, ...).
    pub codes: Vec<String>,
    /// The certificate it saw.
    pub thumbprint: Option<String>,
    /// The port it checked and what TCP did there.
    pub port: u16,
    /// TCP outcome.
    pub tcp_state: String,
}

/// Dissenters of one site with one code, and what to do.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct DissentGroup {
    /// Site.
    pub site: String,
    /// Code.
    pub code: String,
    /// Probes.
    pub probes: Vec<String>,
    /// Remedy.
    pub remedy: String,
}

/// A round as the API reports it.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct RoundStatus {
    /// Round id.
    pub round: u64,
    /// Check.
    pub check: String,
    /// Start, Unix ms.
    pub started_at_ms: i64,
    /// Expected thumbprint.
    pub expect_thumbprint: Option<String>,
    /// Expected port.
    pub expect_port: Option<u16>,
    /// Connected probes that run the check, all asked.
    pub eligible: u64,
    /// Probes that answered.
    pub reported: u64,
    /// Probes that confirmed the expectation.
    pub confirmed: u64,
    /// Probes that answered without confirming it.
    pub dissenting: u64,
    /// Probes not answered yet.
    pub pending: Vec<String>,
    /// The dissenters.
    pub dissenters: Vec<Dissenter>,
    /// Dissenters by site and code, with the remedy.
    pub groups: Vec<DissentGroup>,
}

/// Judges each answer of a round against its expectation.
pub fn evaluate(round: &Round) -> RoundStatus {
    let mut confirmed = 0;
    let mut dissenters = Vec::new();
    for (probe, latest) in &round.results {
        let mut why: Vec<String> = Vec::new();
        if let Some(expected) = &round.expect_thumbprint {
            let seen = latest
                .thumbprint
                .as_deref()
                .and_then(|t| Thumbprint::parse(t).ok());
            let matches = match expected.kind() {
                cemwatch_shared::ThumbprintKind::Sha1 => seen.as_ref() == Some(expected),
                // The fleet view keeps SHA-1 thumbprints; a SHA-256 expectation is judged by the
                // probe's own thumbprint_mismatch finding against the policy instead.
                cemwatch_shared::ThumbprintKind::Sha256 => {
                    !latest.codes.contains(&FindingCode::ThumbprintMismatch)
                }
            };
            if !matches {
                why.push(FindingCode::ThumbprintMismatch.as_str().to_string());
            }
        }
        if let Some(port) = round.expect_port {
            if latest.port != port {
                why.push("wrong_port".to_string());
            }
        }
        let ignore_policy_thumbprint = round.expect_thumbprint.is_some();
        for code in &latest.codes {
            if code.severity() != Severity::Fail {
                continue;
            }
            if ignore_policy_thumbprint && *code == FindingCode::ThumbprintMismatch {
                continue; // judged against the expectation above
            }
            if !why.contains(&code.as_str().to_string()) {
                why.push(code.as_str().to_string());
            }
        }
        if why.is_empty() {
            confirmed += 1;
        } else {
            dissenters.push(Dissenter {
                probe: probe.clone(),
                site: round
                    .asked
                    .get(probe)
                    .and_then(|l| l.get("site").cloned())
                    .unwrap_or_default(),
                codes: why,
                thumbprint: latest.thumbprint.clone(),
                port: latest.port,
                tcp_state: latest.tcp_state.as_str().to_string(),
            });
        }
    }
    let mut groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for d in &dissenters {
        for code in &d.codes {
            groups
                .entry((d.site.clone(), code.clone()))
                .or_default()
                .push(d.probe.clone());
        }
    }
    let remedy_for = |code: &str| {
        match FindingCode::from_name(code) {
        Some(FindingCode::ThumbprintMismatch) => {
            "These probes see another certificate: a gateway node or load-balancer backend still serves the old one; import the new certificate there (Gateway Manager) and restart the service.".to_string()
        }
        Some(c) => c.remedy().to_string(),
        None if code == "wrong_port" => {
            "The CEM policy port (this check's port) is not the expected port: update the check and the CEM Settings policy together.".to_string()
        }
        None => String::new(),
    }
    };
    RoundStatus {
        round: round.id,
        check: round.check.clone(),
        started_at_ms: round.started_ms,
        expect_thumbprint: round.expect_thumbprint.as_ref().map(|t| t.to_string()),
        expect_port: round.expect_port,
        eligible: round.asked.len() as u64,
        reported: round.results.len() as u64,
        confirmed,
        dissenting: dissenters.len() as u64,
        pending: round
            .asked
            .keys()
            .filter(|p| !round.results.contains_key(*p))
            .cloned()
            .collect(),
        groups: groups
            .into_iter()
            .map(|((site, code), probes)| DissentGroup {
                remedy: remedy_for(&code),
                site,
                code,
                probes,
            })
            .collect(),
        dissenters,
    }
}
