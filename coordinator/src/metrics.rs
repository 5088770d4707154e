//! Prometheus metrics. Names are `pub const`s so tests import them rather than retype them.
//! Ingest counters are counters; fleet gauges are recomputed from the fleet view at each
//! scrape, so series of probes and checks that went away disappear.

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// Probes known to this coordinator, by `state` (`connected`, `disconnected`, `stale`).
pub const PROBES: &str = "cemwatch_probes";
/// Fresh results per `check` and `verdict`.
pub const CHECK_PROBES: &str = "cemwatch_check_probes";
/// Probes currently reporting each finding `code`, per `check`.
pub const CHECK_FINDINGS: &str = "cemwatch_check_findings";
/// Reports committed.
pub const REPORTS_RECEIVED: &str = "cemwatch_reports_received_total";
/// Reports dropped because `(probe, seq)` was already committed.
pub const REPORTS_DUPLICATE: &str = "cemwatch_reports_duplicate_total";
/// Frames turned away, by `reason`.
pub const FRAMES_REJECTED: &str = "cemwatch_frames_rejected_total";
/// Connections turned away, by `reason`.
pub const CONNECTIONS_REFUSED: &str = "cemwatch_connections_refused_total";
/// Enrolments, by `outcome`.
pub const ENROLMENTS: &str = "cemwatch_enrolments_total";
/// Connection attempts answered with a QUIC Retry (address validation).
pub const QUIC_RETRIES: &str = "cemwatch_quic_retries_total";
/// QUIC handshakes that failed (refused certificates, peers that gave up or refused us).
pub const HANDSHAKES_FAILED: &str = "cemwatch_quic_handshakes_failed_total";
/// Reports delayed by the per-probe report rate limit.
pub const REPORTS_THROTTLED: &str = "cemwatch_reports_throttled_total";

/// The coordinator's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reports committed.
    pub reports_received: IntCounter,
    /// Duplicate reports dropped.
    pub reports_duplicate: IntCounter,
    /// Frames rejected by reason.
    pub frames_rejected: IntCounterVec,
    /// Connections refused by reason.
    pub connections_refused: IntCounterVec,
    /// Enrolments by outcome.
    pub enrolments: IntCounterVec,
    /// Connection attempts answered with a QUIC Retry.
    pub quic_retries: IntCounter,
    /// Failed QUIC handshakes.
    pub handshakes_failed: IntCounter,
    /// Reports delayed by the report rate limit.
    pub reports_throttled: IntCounter,
    /// Probes by state.
    pub probes: IntGaugeVec,
    /// Fresh results by check and verdict.
    pub check_probes: IntGaugeVec,
    /// Findings by check and code.
    pub check_findings: IntGaugeVec,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let m = Self {
            reports_received: counter(
                &registry,
                REPORTS_RECEIVED,
                "Reports committed to the store.",
            ),
            reports_duplicate: counter(
                &registry,
                REPORTS_DUPLICATE,
                "Reports dropped because (probe, seq) was already committed.",
            ),
            frames_rejected: counter_vec(
                &registry,
                FRAMES_REJECTED,
                "Frames turned away, by reason.",
                &["reason"],
            ),
            connections_refused: counter_vec(
                &registry,
                CONNECTIONS_REFUSED,
                "Connections turned away, by reason.",
                &["reason"],
            ),
            enrolments: counter_vec(
                &registry,
                ENROLMENTS,
                "Enrolment attempts, by outcome.",
                &["outcome"],
            ),
            quic_retries: counter(
                &registry,
                QUIC_RETRIES,
                "Connection attempts answered with a QUIC Retry (address validation).",
            ),
            handshakes_failed: counter(
                &registry,
                HANDSHAKES_FAILED,
                "QUIC handshakes that failed (refused certificates, peers that gave up).",
            ),
            reports_throttled: counter(
                &registry,
                REPORTS_THROTTLED,
                "Reports delayed by the per-probe report rate limit.",
            ),
            probes: gauge_vec(
                &registry,
                PROBES,
                "Probes known to this coordinator, by state.",
                &["state"],
            ),
            check_probes: gauge_vec(
                &registry,
                CHECK_PROBES,
                "Probes whose fresh result has this verdict, per check.",
                &["check", "verdict"],
            ),
            check_findings: gauge_vec(
                &registry,
                CHECK_FINDINGS,
                "Probes currently reporting this finding code, per check.",
                &["check", "code"],
            ),
            registry: registry.clone(),
        };
        for reason in [
            "no_certificate",
            "enrolment_refused",
            "expired",
            "unknown_ca",
            "revoked",
            "unknown_probe",
            "identity_mismatch",
            "bad_certificate",
            "limit",
        ] {
            m.connections_refused.with_label_values(&[reason]);
        }
        for reason in ["too_large", "empty", "version", "malformed", "unexpected"] {
            m.frames_rejected.with_label_values(&[reason]);
        }
        m
    }

    /// Renders the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
