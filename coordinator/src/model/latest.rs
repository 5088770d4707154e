//! The latest result of one probe for one check, as the fleet view keeps it: the facts the
//! diagnosis and the metrics need, not the whole report.

use serde::Serialize;

use cemwatch_shared::view::{AddressView, CheckResultView, TlsView};
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
    /// What the probe saw at each address of the gateway name (one, for a name with one
    /// address, or a result from before probes checked every address).
    pub nodes: Vec<NodeObservation>,
}

impl Latest {
    /// Moves this out, leaving its scalar facts (sequence, round, times, verdict, port, TCP and
    /// TLS outcome) and empty lists and thumbprint: the fleet view takes a committed result
    /// this way instead of copying its lists and strings.
    pub fn take(&mut self) -> Latest {
        let rest = Latest {
            codes: Vec::new(),
            thumbprint: None,
            legacy: Vec::new(),
            nodes: Vec::new(),
            ..*self
        };
        std::mem::replace(self, rest)
    }
}

/// What a probe saw at one address of the gateway name: a gateway node or a load balancer
/// member.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeObservation {
    /// The IP address.
    pub address: String,
    /// The verdict there.
    pub verdict: Severity,
    /// Finding codes there.
    pub codes: Vec<FindingCode>,
    /// The certificate served there.
    pub thumbprint: Option<String>,
    /// Its not-after, Unix seconds.
    pub not_after: Option<i64>,
    /// Its issuer.
    pub issuer: Option<String>,
    /// TCP outcome there.
    pub tcp_state: TcpState,
    /// Whether TLS completed there (or the listener answered up to its certificate request).
    pub tls_completed: bool,
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

/// Whether TLS reached the listener: completed, or ended by a gateway that asked for an agent
/// certificate after serving its own (a TLS 1.2 gateway ending the handshake without one still
/// answered as a CEM listener).
fn reached(tls: Option<&TlsView<'_>>, certificate: bool) -> bool {
    tls.is_some_and(|t| t.completed || (t.client_certificate_requested && certificate))
}

impl NodeObservation {
    fn of(a: &AddressView<'_>) -> Self {
        Self {
            address: a.address.to_string(),
            verdict: a.verdict,
            codes: a.findings.iter().map(|f| f.code).collect(),
            thumbprint: a
                .certificate
                .as_ref()
                .map(|c| c.thumbprint_sha1.to_string()),
            not_after: a.certificate.as_ref().map(|c| c.not_after_unix),
            issuer: a.certificate.as_ref().map(|c| c.issuer.to_string()),
            tcp_state: a.tcp.state,
            tls_completed: reached(a.tls.as_ref(), a.certificate.is_some()),
        }
    }

    /// The one node of a result that names no addresses (from a probe before protocol 5, as
    /// the store keeps them): its first address, with the check's verdict and codes.
    fn of_single(r: &CheckResultView<'_>) -> Option<Self> {
        let address = r.tcp.address?;
        let ip = address
            .parse::<std::net::SocketAddr>()
            .map(|s| s.ip().to_string())
            .unwrap_or_else(|_| address.to_string());
        Some(Self {
            address: ip,
            verdict: r.verdict,
            codes: r.findings.iter().map(|f| f.code).collect(),
            thumbprint: r
                .certificate
                .as_ref()
                .map(|c| c.thumbprint_sha1.to_string()),
            not_after: r.certificate.as_ref().map(|c| c.not_after_unix),
            issuer: r.certificate.as_ref().map(|c| c.issuer.to_string()),
            tcp_state: r.tcp.state,
            tls_completed: reached(r.tls.as_ref(), r.certificate.is_some()),
        })
    }
}

/// The most nodes of one result the fleet view keeps: a probe checks at most 64 addresses
/// (`--max-addresses`), 8 by default; a report naming more (a hostile probe) keeps the first.
pub const MAX_NODES_KEPT: usize = 64;

impl Latest {
    /// Summarises a result.
    pub fn from_result(seq: u64, round: Option<u64>, produced_at_ms: i64, r: &CheckResult) -> Self {
        Self::from_view(seq, round, produced_at_ms, &CheckResultView::from(r))
    }

    /// Summarises a result as read from a report's frame (or viewed from an owned one).
    pub fn from_view(
        seq: u64,
        round: Option<u64>,
        produced_at_ms: i64,
        r: &CheckResultView<'_>,
    ) -> Self {
        let nodes = if r.addresses.is_empty() {
            NodeObservation::of_single(r).into_iter().collect()
        } else {
            r.addresses
                .iter()
                .take(MAX_NODES_KEPT)
                .map(NodeObservation::of)
                .collect()
        };
        Self {
            seq,
            round,
            produced_at_ms,
            verdict: r.verdict,
            codes: r.findings.iter().map(|f| f.code).collect(),
            thumbprint: r
                .certificate
                .as_ref()
                .map(|c| c.thumbprint_sha1.to_string()),
            not_after: r.certificate.as_ref().map(|c| c.not_after_unix),
            tcp_ms: r.tcp.duration_ms,
            tls_ms: r.tls.as_ref().map(|t| t.duration_ms).unwrap_or(0.0),
            port: r.target.port,
            tcp_state: r.tcp.state,
            tls_completed: reached(r.tls.as_ref(), r.certificate.is_some()),
            legacy: r
                .legacy_ports
                .iter()
                .map(|l| LegacyObservation {
                    port: l.port,
                    tcp: l.tcp,
                    gateway_listener: l.gateway_listener,
                })
                .collect(),
            nodes,
        }
    }

    /// Whether the probe reached the listener at any address.
    pub fn reached_any(&self) -> bool {
        self.tls_completed || self.nodes.iter().any(|n| n.tls_completed)
    }
}

/// Results with nodes, for the tests of the rules that read them (nodes, diagnosis, rounds).
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// What a probe saw at `address`: `thumbprint` and `issuer` empty for no certificate (then
    /// TLS did not complete there; TCP refused when `codes` say so).
    pub(crate) fn node(
        address: &str,
        thumbprint: &str,
        issuer: &str,
        codes: &[FindingCode],
    ) -> NodeObservation {
        NodeObservation {
            address: address.into(),
            verdict: codes
                .iter()
                .map(|c| c.severity())
                .max()
                .unwrap_or(Severity::Ok),
            codes: codes.to_vec(),
            thumbprint: (!thumbprint.is_empty()).then(|| thumbprint.into()),
            not_after: Some(2_000_000_000),
            issuer: (!issuer.is_empty()).then(|| issuer.into()),
            tcp_state: if codes.contains(&FindingCode::TcpRefused) {
                TcpState::Refused
            } else {
                TcpState::Open
            },
            tls_completed: !thumbprint.is_empty(),
        }
    }

    /// A result made of `nodes`: the worst verdict, every code, the first node's certificate.
    pub(crate) fn of_nodes(nodes: Vec<NodeObservation>) -> Latest {
        Latest {
            seq: 1,
            round: None,
            produced_at_ms: 0,
            verdict: nodes
                .iter()
                .map(|n| n.verdict)
                .max()
                .unwrap_or(Severity::Ok),
            codes: nodes.iter().flat_map(|n| n.codes.clone()).collect(),
            thumbprint: nodes.first().and_then(|n| n.thumbprint.clone()),
            not_after: nodes.first().and_then(|n| n.not_after),
            tcp_ms: 1.0,
            tls_ms: 1.0,
            port: 8443,
            tcp_state: nodes.first().map(|n| n.tcp_state).unwrap_or(TcpState::Open),
            tls_completed: nodes.first().is_some_and(|n| n.tls_completed),
            legacy: vec![],
            nodes,
        }
    }
}
