//! The check engine: resolve → TCP connect → TLS handshake (chain captured, never aborted) →
//! certificate analysis → triage, with legacy-port detection when the expected port fails.
//! Every stage records its timing and its raw facts in the [`CheckResult`].

pub mod cert;
pub mod dns;
pub mod tcp;
pub mod tls;
pub mod triage;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use cemwatch_shared::finding::verdict;
use cemwatch_shared::{
    CheckResult, Durations, Expectations, Finding, FindingCode, LegacyPortResult, Target,
    TcpResult, TcpState, Thumbprint, ThumbprintKind, TlsResult,
};

pub use cert::TrustStore;
pub use dns::ResolveOverride;

/// What to check: the target and what the CEM policy and requirements say it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    /// Gateway host and policy port.
    pub target: Target,
    /// Policy thumbprint, required names, thresholds, legacy ports.
    pub expectations: Expectations,
}

/// How to check: the probe's own environment.
#[derive(Debug, Clone)]
pub struct CheckContext {
    /// Trust anchors: the platform store plus configured CA files.
    pub trust: Arc<TrustStore>,
    /// `--resolve` overrides.
    pub overrides: Vec<ResolveOverride>,
    /// How long to wait for a TCP answer before calling the port filtered.
    pub connect_timeout: Duration,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How long the resolver may take.
    pub dns_timeout: Duration,
}

impl CheckContext {
    /// A context with the given trust store and default timeouts (5 s connect, 10 s TLS,
    /// 5 s DNS).
    pub fn new(trust: Arc<TrustStore>) -> Self {
        Self {
            trust,
            overrides: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            dns_timeout: Duration::from_secs(5),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs one check.
pub async fn run_check(spec: &CheckSpec, ctx: &CheckContext) -> CheckResult {
    let started = Instant::now();
    let now = OffsetDateTime::now_utc();
    let started_at = now.format(&Rfc3339).unwrap_or_default();
    let host = spec.target.host.as_str();
    let port = spec.target.port;
    let mut findings: Vec<Finding> = Vec::new();
    let mut durations = Durations::default();

    let (dns, addrs) = dns::resolve(host, port, &ctx.overrides, ctx.dns_timeout).await;
    durations.dns_ms = dns.duration_ms;
    if addrs.is_empty() {
        findings.push(Finding::new(
            FindingCode::DnsUnresolved,
            format!(
                "{host} does not resolve: {}",
                dns.error.as_deref().unwrap_or("no address")
            ),
        ));
        durations.total_ms = ms(started.elapsed());
        return CheckResult {
            target: spec.target.clone(),
            expectations: spec.expectations.clone(),
            started_at,
            verdict: verdict(&findings),
            findings,
            dns,
            tcp: TcpResult {
                state: TcpState::NotAttempted,
                address: None,
                duration_ms: 0.0,
                error: None,
            },
            tls: None,
            certificate: None,
            legacy_ports: Vec::new(),
            durations,
        };
    }

    let (tcp, stream) = tcp::connect(&addrs, ctx.connect_timeout).await;
    durations.tcp_ms = tcp.duration_ms;
    let mut tls_result = None;
    let mut certificate = None;
    let mut cert_findings = Vec::new();
    let mut expected_port_works = false;
    match stream {
        None => findings.push(tcp_finding(&spec.target, &tcp, ctx.connect_timeout)),
        Some(stream) => {
            let hs = tls::handshake(stream, host, ctx.handshake_timeout).await;
            durations.tls_ms = ms(hs.duration);
            let (tls, cert, f) = judge_handshake(&hs, spec, ctx, now);
            expected_port_works = tls.completed;
            if !tls.completed {
                findings.push(Finding::new(
                    FindingCode::TlsHandshakeFailed,
                    format!(
                        "{} accepted TCP but the TLS handshake failed: {}",
                        spec.target.authority(),
                        tls.error.as_deref().unwrap_or("unknown error")
                    ),
                ));
            }
            tls_result = Some(tls);
            certificate = cert;
            cert_findings = f;
        }
    }

    let mut legacy_ports = Vec::new();
    if !expected_port_works {
        let legacy_start = Instant::now();
        for &legacy in spec
            .expectations
            .legacy_ports
            .iter()
            .filter(|&&p| p != port)
        {
            let result = probe_legacy_port(spec, ctx, &addrs, legacy).await;
            if result.gateway_listener {
                findings.insert(
                    0,
                    Finding::with_remedy(
                        FindingCode::ListenerOnLegacyPort,
                        format!(
                            "the gateway answers on port {legacy} with its certificate{}, not on {port}, the port in the CEM policy",
                            result
                                .thumbprint_sha1
                                .as_deref()
                                .map(|t| format!(" ({t})"))
                                .unwrap_or_default()
                        ),
                        format!(
                            "Set the agent listener port in Gateway Manager (General tab) to {port}, then restart the Internet Gateway service: it still listens on {legacy}. If {legacy} is the intended port, set the CEM Settings policy port to {legacy} instead."
                        ),
                    ),
                );
            }
            legacy_ports.push(result);
        }
        durations.legacy_ms = ms(legacy_start.elapsed());
    }

    findings.extend(cert_findings);
    durations.total_ms = ms(started.elapsed());
    CheckResult {
        target: spec.target.clone(),
        expectations: spec.expectations.clone(),
        started_at,
        verdict: verdict(&findings),
        findings,
        dns,
        tcp,
        tls: tls_result,
        certificate,
        legacy_ports,
        durations,
    }
}

fn tcp_finding(target: &Target, tcp: &TcpResult, timeout: Duration) -> Finding {
    let at = tcp.address.clone().unwrap_or_else(|| target.authority());
    let port = target.port;
    let host = &target.host;
    match tcp.state {
        TcpState::Refused => Finding::new(
            FindingCode::TcpRefused,
            format!("connection to {at} refused: the host answered but nothing listens on {port}"),
        ),
        TcpState::Filtered => Finding::with_remedy(
            FindingCode::TcpFiltered,
            format!(
                "no answer from {at} within {} ms: a firewall drops TCP {port}",
                timeout.as_millis()
            ),
            format!(
                "Open TCP {port} inbound (internet to DMZ) on the perimeter firewall to {host}; if the firewall does NAT, the translated port must be the port the gateway listens on."
            ),
        ),
        _ => Finding::new(
            FindingCode::TcpUnreachable,
            format!(
                "{at} is unreachable: {}",
                tcp.error.as_deref().unwrap_or("no route")
            ),
        ),
    }
}

/// Builds the TLS stage result, analyses the leaf and judges it.
fn judge_handshake(
    hs: &tls::Handshake,
    spec: &CheckSpec,
    ctx: &CheckContext,
    now: OffsetDateTime,
) -> (
    TlsResult,
    Option<cemwatch_shared::CertificateInfo>,
    Vec<Finding>,
) {
    let chain = &hs.captured.chain;
    let subjects = chain
        .iter()
        .map(|der| {
            cert::parse(der)
                .map(|c| c.subject().to_string())
                .unwrap_or_else(|e| format!("(unreadable: {e})"))
        })
        .collect();
    let mut tls = TlsResult {
        completed: hs.result.is_ok(),
        version: hs.result.as_ref().ok().map(|n| n.version.clone()),
        cipher: hs.result.as_ref().ok().map(|n| n.cipher.clone()),
        trusted: false,
        trust_error: None,
        chain: subjects,
        handshake_signature_valid: hs.captured.signature_valid,
        duration_ms: ms(hs.duration),
        error: hs.result.as_ref().err().cloned(),
    };
    let mut findings = Vec::new();
    let Some(leaf) = chain.first() else {
        return (tls, None, findings);
    };
    let info = match cert::analyze(leaf, now) {
        Ok(info) => info,
        Err(e) => {
            tls.trust_error = Some(e.to_string());
            findings.push(Finding::new(
                FindingCode::CertUntrusted,
                format!("the served certificate cannot be read: {e}"),
            ));
            return (tls, None, findings);
        }
    };
    let outcome = ctx.trust.evaluate(leaf, &chain[1..]);
    tls.trusted = outcome.trusted;
    tls.trust_error = outcome.reason.clone();
    if !outcome.trusted {
        findings.push(Finding::new(
            FindingCode::CertUntrusted,
            format!(
                "the certificate chain does not reach a trusted root: {}",
                outcome.reason.as_deref().unwrap_or("no path")
            ),
        ));
    }
    findings.extend(triage::certificate_findings(
        &info,
        Some(&spec.target.host),
        &spec.expectations,
        now.unix_timestamp(),
    ));
    (tls, Some(info), findings)
}

async fn probe_legacy_port(
    spec: &CheckSpec,
    ctx: &CheckContext,
    addrs: &[SocketAddr],
    port: u16,
) -> LegacyPortResult {
    let addrs: Vec<SocketAddr> = addrs
        .iter()
        .map(|a| SocketAddr::new(a.ip(), port))
        .collect();
    let (tcp, stream) = tcp::connect(&addrs, ctx.connect_timeout).await;
    let mut result = LegacyPortResult {
        port,
        tcp: tcp.state,
        tls_completed: false,
        thumbprint_sha1: None,
        covers_gateway_name: false,
        matches_expected_thumbprint: None,
        gateway_listener: false,
    };
    let Some(stream) = stream else {
        return result;
    };
    let hs = tls::handshake(stream, &spec.target.host, ctx.handshake_timeout).await;
    result.tls_completed = hs.result.is_ok();
    let Some(leaf) = hs.captured.chain.first() else {
        return result;
    };
    let Ok(info) = cert::analyze(leaf, OffsetDateTime::now_utc()) else {
        return result;
    };
    result.covers_gateway_name = cert::covers_name(&info, &spec.target.host);
    result.matches_expected_thumbprint = spec.expectations.thumbprint.as_ref().map(|expected| {
        let served = match expected.kind() {
            ThumbprintKind::Sha1 => &info.thumbprint_sha1,
            ThumbprintKind::Sha256 => &info.fingerprint_sha256,
        };
        Thumbprint::parse(served).is_ok_and(|t| &t == expected)
    });
    result.gateway_listener = result.tls_completed
        && (result.covers_gateway_name || result.matches_expected_thumbprint == Some(true));
    result.thumbprint_sha1 = Some(info.thumbprint_sha1);
    result
}
