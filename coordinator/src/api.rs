//! The HTTP surface: `/live`, `/ready`, `/metrics` (Prometheus text) and the JSON API under
//! `/api/v1/`. Reads only: everything that changes the fleet goes through the store (CLI) or
//! POST endpoints.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::fleet::{Fleet, FleetSummary, Latest};
use crate::ingest::Hub;
use crate::store::now_ms;

/// State of the HTTP handlers.
#[derive(Debug)]
pub struct ApiState {
    /// The hub.
    pub hub: Arc<Hub>,
    /// Whether the coordinator is ready (QUIC bound, store open).
    pub ready: AtomicBool,
}

/// The router.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/live", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/fleet", get(fleet))
        .route("/api/v1/probes", get(probes))
        .route("/api/v1/checks/{name}", get(check))
        .with_state(state)
}

async fn ready(State(s): State<Arc<ApiState>>) -> Response {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

/// The fleet summary for the configured checks.
pub fn summary(hub: &Hub) -> FleetSummary {
    let config = hub.config.borrow().clone();
    let names: Vec<String> = config.checks.iter().map(|c| c.name.clone()).collect();
    hub.fleet
        .read()
        .map(|f| f.summary(&names, now_ms(), config.server.stale_after))
        .unwrap_or_default()
}

async fn metrics(State(s): State<Arc<ApiState>>) -> Response {
    let summary = summary(&s.hub);
    let m = &s.hub.metrics;
    m.probes.reset();
    m.probes
        .with_label_values(&["connected"])
        .set(summary.probes.connected as i64);
    m.probes
        .with_label_values(&["disconnected"])
        .set(summary.probes.disconnected as i64);
    m.probes
        .with_label_values(&["stale"])
        .set(summary.probes.stale as i64);
    m.check_probes.reset();
    m.check_findings.reset();
    for c in &summary.checks {
        m.check_probes
            .with_label_values(&[c.check.as_str(), "ok"])
            .set(c.verdicts.ok as i64);
        m.check_probes
            .with_label_values(&[c.check.as_str(), "warn"])
            .set(c.verdicts.warn as i64);
        m.check_probes
            .with_label_values(&[c.check.as_str(), "fail"])
            .set(c.verdicts.fail as i64);
        for (code, n) in &c.codes {
            m.check_findings
                .with_label_values(&[c.check.as_str(), code.as_str()])
                .set(*n as i64);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}

async fn fleet(State(s): State<Arc<ApiState>>) -> Json<FleetSummary> {
    Json(summary(&s.hub))
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
    pub latest: std::collections::BTreeMap<String, Latest>,
}

async fn probes(State(s): State<Arc<ApiState>>) -> Json<Vec<ProbeEntry>> {
    let stale_after = s.hub.config.borrow().server.stale_after;
    let now = now_ms();
    let mut out: Vec<ProbeEntry> = s
        .hub
        .fleet
        .read()
        .map(|f| {
            f.probes
                .iter()
                .filter(|(_, v)| !v.revoked)
                .map(|(name, v)| ProbeEntry {
                    name: name.clone(),
                    labels: v.labels.clone(),
                    state: if v.connected {
                        "connected"
                    } else if Fleet::is_fresh(v, now, stale_after) {
                        "disconnected"
                    } else {
                        "stale"
                    },
                    last_seen_ms: v.last_seen_ms,
                    agent_version: v.agent_version.clone(),
                    latest: v.latest.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Json(out)
}

async fn check(State(s): State<Arc<ApiState>>, Path(name): Path<String>) -> Response {
    let summary = summary(&s.hub);
    match summary.checks.into_iter().find(|c| c.check == name) {
        Some(c) => Json(c).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": format!("no check named {name:?} in the configuration")})),
        )
            .into_response(),
    }
}
