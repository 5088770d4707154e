//! The latest result of one probe for one check, as the fleet view keeps it: the facts the
//! diagnosis and the metrics need, not the whole report.

use serde::Serialize;

use cemwatch_shared::{CheckResult, FindingCode, Severity, TcpState};

/// The latest result of one probe for one check, summarised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latest {
    /// Report sequence number.
    pub seq: u64,
    /// Round, when it answered a `ProbeNow`.
    pub round: Option<u64>,
    /// When the probe produced it, Unix ms.
    pub produced_at_ms: i64,
    /// Verdict.
    pub verdict: Severity,
    /// Finding codes.
    pub codes: Vec<FindingCode>,
    /// Served certificate thumbprint.
    pub thumbprint: Option<String>,
    /// Served certificate not-after, Unix seconds.
    pub not_after: Option<i64>,
    /// TCP connect time, ms.
    pub tcp_ms: f64,
    /// TLS handshake time, ms.
    pub tls_ms: f64,
    /// The port checked (the policy port at the time).
    pub port: u16,
    /// TCP outcome on that port.
    pub tcp_state: TcpState,
    /// Whether TLS completed there (or the listener answered up to its certificate request).
    pub tls_completed: bool,
    /// Legacy ports tried.
    pub legacy: Vec<LegacyObservation>,
}

/// What a probe saw on a legacy port.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LegacyObservation {
    /// The port.
    pub port: u16,
    /// TCP outcome.
    pub tcp: TcpState,
    /// The gateway's certificate answered there.
    pub gateway_listener: bool,
}

impl Latest {
    /// Summarises a result.
    pub fn from_result(seq: u64, round: Option<u64>, produced_at_ms: i64, r: &CheckResult) -> Self {
        Self {
            seq,
            round,
            produced_at_ms,
            verdict: r.verdict,
            codes: r.findings.iter().map(|f| f.code).collect(),
            thumbprint: r.certificate.as_ref().map(|c| c.thumbprint_sha1.clone()),
            not_after: r.certificate.as_ref().map(|c| c.not_after_unix),
            tcp_ms: r.tcp.duration_ms,
            tls_ms: r.tls.as_ref().map(|t| t.duration_ms).unwrap_or(0.0),
            port: r.target.port,
            tcp_state: r.tcp.state,
            // A gateway that asked for an agent certificate and ended a TLS 1.2 handshake without
            // one still answered as a CEM listener: its certificate was captured.
            tls_completed: r.tls.as_ref().is_some_and(|t| {
                t.completed || (t.client_certificate_requested && r.certificate.is_some())
            }),
            legacy: r
                .legacy_ports
                .iter()
                .map(|l| LegacyObservation {
                    port: l.port,
                    tcp: l.tcp,
                    gateway_listener: l.gateway_listener,
                })
                .collect(),
        }
    }
}
