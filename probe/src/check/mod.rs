//! The check engine: resolve → TCP connect → TLS handshake (chain captured, never aborted;
//! the agent's certificate presented when the gateway asks for one and the probe has it) →
//! a legacy ClientHello when no modern handshake could be agreed → certificate analysis →
//! triage, with legacy-port detection when the expected port fails. Every stage records its
//! timing and its raw facts in the [`CheckResult`].

pub mod aia;
pub mod cert;
pub mod dns;
pub mod fetch;
pub mod hello;
pub mod identity;
pub mod ocsp;
pub mod revocation;
pub mod tcp;
pub mod tls;
pub mod triage;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use cemwatch_shared::finding::verdict;
use cemwatch_shared::{
    CheckResult, Durations, Expectations, Finding, FindingCode, LegacyPortResult, Target,
    TcpResult, TcpState, Thumbprint, ThumbprintKind, TlsResult,
};

pub use cert::TrustStore;
pub use dns::ResolveOverride;
pub use identity::ClientIdentity;

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
    /// The agent certificate to present when a gateway asks for a client certificate.
    pub client_identity: Option<Arc<ClientIdentity>>,
    /// Whether to fetch and check the CRLs of the path (`--no-revocation` turns it off).
    pub revocation: bool,
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
            client_identity: None,
            revocation: true,
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
    // The agent's own certificate is judged before it is presented.
    let mut findings: Vec<Finding> = ctx
        .client_identity
        .as_ref()
        .map(|id| id.findings(now, spec.expectations.min_days_left))
        .unwrap_or_default();
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
    let mut tls_findings = Vec::new();
    let mut expected_port_works = false;
    match stream {
        // Accepted, then reset before `connect` returned: TCP works, TLS cannot start.
        None if tcp.state == TcpState::Open => {
            tls_findings.push(Finding::new(
                FindingCode::TlsHandshakeFailed,
                format!(
                    "{} {}",
                    spec.target.authority(),
                    tls::RESET_BEFORE_HANDSHAKE
                ),
            ));
            tls_result = Some(TlsResult {
                completed: false,
                version: None,
                cipher: None,
                trusted: false,
                trust_error: None,
                chain: Vec::new(),
                handshake_signature_valid: None,
                duration_ms: 0.0,
                error: Some(tls::RESET_BEFORE_HANDSHAKE.to_string()),
                client_certificate_requested: false,
                acceptable_client_cas: Vec::new(),
                client_certificate: None,
                legacy_hello: false,
                ocsp_stapled: None,
            });
        }
        None => findings.push(tcp_finding(&spec.target, &tcp, ctx.connect_timeout)),
        Some(stream) => {
            let tls_start = Instant::now();
            let peer = stream.peer_addr().ok();
            let hs = tls::handshake(
                stream,
                host,
                ctx.handshake_timeout,
                ctx.client_identity.as_deref(),
            )
            .await;
            let legacy = match (&hs.result, peer) {
                (Err(failure), Some(peer))
                    if hs.captured.chain.is_empty() && failure.may_be_legacy() =>
                {
                    let left = ctx.handshake_timeout.saturating_sub(tls_start.elapsed());
                    let sni = ServerName::try_from(host)
                        .ok()
                        .filter(|n| matches!(n, ServerName::DnsName(_)))
                        .map(|_| host);
                    Some(hello::probe(peer, sni, left).await)
                }
                _ => None,
            };
            durations.tls_ms = ms(tls_start.elapsed());
            let stage = judge_handshake(&hs, legacy.as_ref(), spec, ctx, now).await;
            let mut tls = stage.tls;
            tls.duration_ms = durations.tls_ms;
            expected_port_works = stage.reached;
            tls_result = Some(tls);
            certificate = stage.certificate;
            tls_findings = stage.findings;
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

    findings.extend(tls_findings);
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

/// The judged TLS stage.
struct TlsStage {
    tls: TlsResult,
    certificate: Option<cemwatch_shared::CertificateInfo>,
    /// The handshake's findings, then the certificate's.
    findings: Vec<Finding>,
    /// The port reached the gateway's TLS service (handshake completed, ended only for want
    /// of a client certificate, or a legacy ClientHello read its certificate).
    reached: bool,
}

/// Whether a handshake failure after a CertificateRequest is the server ending it over the
/// client certificate (an alert, a reset or a close), rather than something else going wrong.
fn ended_over_client_cert(failure: &tls::Failure) -> bool {
    matches!(
        failure.kind,
        tls::FailureKind::Alert(_) | tls::FailureKind::Reset | tls::FailureKind::Closed
    )
}

/// The distinguished name of a CertificateRequest entry, as text.
fn dn_text(der: &[u8]) -> String {
    use x509_parser::prelude::FromDer;
    match x509_parser::x509::X509Name::from_der(der) {
        Ok((_, name)) => name.to_string(),
        Err(_) => format!("(unreadable name: {} bytes)", der.len()),
    }
}

/// Builds the TLS stage result from the handshake (and the legacy ClientHello, when one was
/// sent), analyses the leaf and judges it.
async fn judge_handshake(
    hs: &tls::Handshake,
    legacy: Option<&Result<hello::ServerFlight, hello::HelloError>>,
    spec: &CheckSpec,
    ctx: &CheckContext,
    now: OffsetDateTime,
) -> TlsStage {
    let authority = spec.target.authority();
    let flight = legacy.and_then(|l| l.as_ref().ok());
    let captured = flight.map(|f| &f.captured).unwrap_or(&hs.captured);
    let chain = &captured.chain;
    let request = captured.client_cert_request.as_ref();
    let presented = request.is_some_and(|r| r.presented);
    let subjects = chain
        .iter()
        .map(|der| {
            cert::parse(der)
                .map(|c| c.subject().to_string())
                .unwrap_or_else(|e| format!("(unreadable: {e})"))
        })
        .collect();
    let (version, cipher) = match (&hs.result, flight) {
        (Ok(n), _) => (Some(n.version.clone()), Some(n.cipher.clone())),
        (Err(_), Some(f)) => (
            Some(hello::version_name(f.version)),
            Some(f.suite.name.to_string()),
        ),
        (Err(_), None) => (None, None),
    };
    let mut tls = TlsResult {
        completed: hs.result.is_ok(),
        version,
        cipher,
        trusted: false,
        trust_error: None,
        chain: subjects,
        handshake_signature_valid: captured.signature_valid,
        duration_ms: ms(hs.duration),
        error: None,
        client_certificate_requested: request.is_some(),
        acceptable_client_cas: request
            .map(|r| r.acceptable_cas.iter().map(|dn| dn_text(dn)).collect())
            .unwrap_or_default(),
        client_certificate: if presented {
            ctx.client_identity.as_ref().map(|id| id.describe())
        } else {
            None
        },
        legacy_hello: flight.is_some(),
        ocsp_stapled: None,
    };
    let agent_cert = || {
        ctx.client_identity
            .as_ref()
            .map(|id| id.describe())
            .unwrap_or_else(|| "the agent certificate".into())
    };
    let mut findings = Vec::new();
    let mut reached = hs.result.is_ok();
    match (&hs.result, legacy) {
        (Ok(negotiated), _) => {
            if let Some(refusal) = negotiated.refused_after.as_ref().filter(|_| presented) {
                let message = format!(
                    "{authority} completed the TLS 1.3 handshake, then refused the agent certificate {}: {}",
                    agent_cert(),
                    refusal.message
                );
                tls.error = Some(message.clone());
                findings.push(Finding::new(FindingCode::ClientCertRejected, message));
            }
        }
        (Err(failure), None)
            if request.is_some() && !chain.is_empty() && ended_over_client_cert(failure) =>
        {
            reached = true;
            if presented {
                let message = format!(
                    "{authority} asked for a client certificate and refused the agent certificate {}: {}",
                    agent_cert(),
                    failure.message
                );
                tls.error = Some(message.clone());
                findings.push(Finding::new(FindingCode::ClientCertRejected, message));
            } else {
                // Not a failure: the gateway authenticates agents by their certificates.
                tls.error = Some(format!(
                    "the gateway asks for a client certificate and ended the handshake when the probe presented none ({}); agents present theirs (give --client-cert to complete the handshake as an agent)",
                    failure.message
                ));
            }
        }
        (Err(failure), Some(Ok(flight))) => {
            reached = true;
            tls.error = Some(failure.message.clone());
            findings.push(Finding::new(
                FindingCode::TlsLegacy,
                format!(
                    "{authority} negotiates only {} with {} ({}), which modern TLS clients such as this probe's refuse: agents connect; modern clients and hardened agents will not",
                    hello::version_name(flight.version),
                    flight.suite.name,
                    hello::weaknesses(flight.version, flight.suite).join(", ")
                ),
            ));
        }
        (Err(failure), legacy) => {
            let mut message = failure.message.clone();
            if let Some(Err(e)) = legacy {
                message.push_str(&format!(
                    "; a ClientHello offering what Windows offers (TLS 1.0 to 1.2, CBC, static RSA and DHE suites) was refused too: {e}"
                ));
            }
            tls.error = Some(message.clone());
            let text = match failure.kind {
                tls::FailureKind::Reset | tls::FailureKind::Closed => {
                    format!("{authority} {message}")
                }
                _ => format!("{authority} accepted TCP but the TLS handshake failed: {message}"),
            };
            findings.push(Finding::new(FindingCode::TlsHandshakeFailed, text));
        }
    }
    let Some(leaf) = chain.first() else {
        return TlsStage {
            tls,
            certificate: None,
            findings,
            reached,
        };
    };
    let info = match cert::analyze(leaf, now) {
        Ok(info) => info,
        Err(e) => {
            tls.trust_error = Some(e.to_string());
            findings.push(Finding::new(
                FindingCode::CertUntrusted,
                format!("the served certificate cannot be read: {e}"),
            ));
            return TlsStage {
                tls,
                certificate: None,
                findings,
                reached,
            };
        }
    };
    if captured.signature_valid == Some(false) {
        findings.push(Finding::new(
            FindingCode::HandshakeKeyMismatch,
            format!(
                "the handshake signature from {authority} does not verify with the key of the certificate it serves ({}, thumbprint {}): whoever answered presents the gateway's certificate without its private key",
                info.subject, info.thumbprint_sha1
            ),
        ));
    }
    let mut outcome = ctx
        .trust
        .evaluate_from(leaf, &chain[1..], cert::ChainSource::Server, now);
    let overrides = ctx.overrides.clone();
    let resolve = move |host: &str, port: u16| dns::without_resolver(host, port, &overrides);
    let mut fetched = Vec::new();
    if outcome.failure == Some(cert::ChainFailure::Incomplete) {
        let completion = aia::complete(&ctx.trust, leaf, &chain[1..], outcome, now, &resolve).await;
        outcome = completion.outcome;
        fetched = completion.fetched;
    }
    tls.trusted = outcome.trusted;
    tls.trust_error = outcome.reason.clone();
    if outcome.trusted && !fetched.is_empty() {
        findings.push(triage::completed_from_aia(&outcome, &fetched));
    } else {
        let mut chain_findings = triage::chain_findings(&outcome, cert::ChainSource::Server);
        if fetched.is_empty() && outcome.failure == Some(cert::ChainFailure::Incomplete) {
            for f in chain_findings
                .iter_mut()
                .filter(|f| f.code == FindingCode::ChainIncomplete)
            {
                f.message.push_str(
                    "; the certificate names no AIA caIssuers URL, so no client can fetch the missing issuer",
                );
            }
        }
        if !fetched.is_empty() {
            for f in chain_findings
                .iter_mut()
                .filter(|f| f.code == FindingCode::ChainIncomplete)
            {
                f.message.push_str(&format!(
                    "; the probe followed the AIA caIssuers URL as Windows agents do, without completing the path: {}",
                    aia::describe(&fetched)
                ));
            }
        }
        findings.extend(chain_findings);
    }
    // An OCSP response stapled to the handshake: judged like a fetched one (its signature by
    // the leaf's issuer, the leaf's CertID); a good one spares fetching the leaf's own.
    let mut leaf_answered = false;
    if !captured.ocsp_staple.is_empty() {
        let judged = match (
            outcome.path_der.get(1).map(|d| cert::parse(d)),
            cert::parse(leaf),
        ) {
            (Some(Ok(issuer)), Ok(leaf_cert)) => {
                ocsp::judge(&captured.ocsp_staple, &leaf_cert, &issuer)
            }
            _ => Err("the leaf's issuer is not known, so it cannot be verified".into()),
        };
        tls.ocsp_stapled = Some(match &judged {
            Ok(ocsp::Answer::Good { .. }) => "good".into(),
            Ok(ocsp::Answer::Revoked { .. }) => "revoked".into(),
            Ok(ocsp::Answer::Unknown) => "unknown".into(),
            Err(e) => format!("invalid: {e}"),
        });
        if outcome.trusted && ctx.revocation {
            match judged {
                Ok(ocsp::Answer::Good { next_update })
                    if next_update.is_none_or(|n| n >= now.unix_timestamp()) =>
                {
                    leaf_answered = true;
                }
                Ok(ocsp::Answer::Revoked { since, reason }) => {
                    leaf_answered = true;
                    findings.extend(triage::revocation_findings(&[revocation::Checked {
                        subject: info.subject.clone(),
                        serial: info.serial.clone(),
                        status: revocation::Status::Revoked {
                            url: "the OCSP response the gateway staples to its handshake".into(),
                            since: revocation::rfc3339(since),
                            reason,
                        },
                    }]));
                }
                _ => {}
            }
        }
    }
    if outcome.trusted && ctx.revocation {
        let skip = usize::from(leaf_answered);
        let checked = revocation::check(&outcome.path_der[skip..], now, &resolve).await;
        findings.extend(triage::revocation_findings(&checked));
    }
    findings.extend(triage::certificate_findings(
        &info,
        Some(&spec.target.host),
        &spec.expectations,
        now.unix_timestamp(),
    ));
    TlsStage {
        tls,
        certificate: Some(info),
        findings,
        reached,
    }
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
    let hs = tls::handshake(
        stream,
        &spec.target.host,
        ctx.handshake_timeout,
        ctx.client_identity.as_deref(),
    )
    .await;
    // A gateway that ended the handshake for want of a client certificate served its own.
    result.tls_completed = hs.result.is_ok()
        || (hs.captured.client_cert_request.is_some() && !hs.captured.chain.is_empty());
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
