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
    AddressFamily, AddressResult, CheckResult, Durations, Expectations, Finding, FindingCode,
    LegacyPortResult, SkippedAddress, Target, TcpResult, TcpState, Thumbprint, ThumbprintKind,
    TlsResult,
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
    /// Which addresses of the name to check (`--address-family`).
    pub address_family: AddressFamily,
    /// The most addresses of the name checked (`--max-addresses`); the rest are named as
    /// skipped.
    pub max_addresses: usize,
}

impl CheckContext {
    /// A context with the given trust store and default timeouts (5 s connect, 10 s TLS,
    /// 5 s DNS), every address family, at most 8 addresses.
    pub fn new(trust: Arc<TrustStore>) -> Self {
        Self {
            trust,
            overrides: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            dns_timeout: Duration::from_secs(5),
            client_identity: None,
            revocation: true,
            address_family: AddressFamily::Any,
            max_addresses: cemwatch_shared::model::DEFAULT_MAX_ADDRESSES,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs one check: resolves the name, checks every address it gives (up to
/// [`CheckContext::max_addresses`] of [`CheckContext::address_family`], concurrently), and
/// merges what they answered: findings every address shows once, the others naming their
/// address. The verdict is the worst.
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
    let (checked, skipped_addresses) =
        select_addresses(&addrs, ctx.address_family, ctx.max_addresses);
    let addresses = if checked.is_empty() {
        let message = if addrs.is_empty() {
            format!(
                "{host} does not resolve: {}",
                dns.error.as_deref().unwrap_or("no address")
            )
        } else {
            format!(
                "{host} resolves to {} but to no {} address (--address-family {})",
                dns.addresses.join(", "),
                match ctx.address_family {
                    AddressFamily::Ipv6 => "IPv6",
                    _ => "IPv4",
                },
                ctx.address_family.as_str()
            )
        };
        findings.push(Finding::new(FindingCode::DnsUnresolved, message));
        Vec::new()
    } else {
        check_addresses(spec, ctx, &checked, now).await
    };
    findings.extend(merge_findings(&addresses));
    // The top-level stages are the first address's, as for a name with one.
    let first = addresses.first();
    if let Some(first) = first {
        durations.tcp_ms = first.durations.tcp_ms;
        durations.tls_ms = first.durations.tls_ms;
        durations.legacy_ms = first.durations.legacy_ms;
    }
    durations.total_ms = ms(started.elapsed());
    CheckResult {
        target: spec.target.clone(),
        expectations: spec.expectations.clone(),
        started_at,
        verdict: verdict(&findings),
        findings,
        dns,
        tcp: first.map(|a| a.tcp.clone()).unwrap_or(TcpResult {
            state: TcpState::NotAttempted,
            address: None,
            duration_ms: 0.0,
            error: None,
        }),
        tls: first.and_then(|a| a.tls.clone()),
        certificate: first.and_then(|a| a.certificate.clone()),
        legacy_ports: first.map(|a| a.legacy_ports.clone()).unwrap_or_default(),
        durations,
        addresses,
        skipped_addresses,
    }
}

/// The addresses to check: those of `family`, the first `max` of them; the others with the
/// reason they are skipped.
pub fn select_addresses(
    addrs: &[SocketAddr],
    family: AddressFamily,
    max: usize,
) -> (Vec<SocketAddr>, Vec<SkippedAddress>) {
    let mut checked = Vec::new();
    let mut skipped = Vec::new();
    for addr in addrs {
        let ip = addr.ip();
        if !family.admits(&ip) {
            skipped.push(SkippedAddress {
                address: ip.to_string(),
                reason: format!("not of --address-family {}", family.as_str()),
            });
        } else if checked.len() >= max.max(1) {
            skipped.push(SkippedAddress {
                address: ip.to_string(),
                reason: format!(
                    "only the first {} addresses are checked (--max-addresses)",
                    max.max(1)
                ),
            });
        } else {
            checked.push(*addr);
        }
    }
    (checked, skipped)
}

/// Checks each address, concurrently when there are several; results in the order given.
async fn check_addresses(
    spec: &CheckSpec,
    ctx: &CheckContext,
    addrs: &[SocketAddr],
    now: OffsetDateTime,
) -> Vec<AddressResult> {
    if let [only] = addrs {
        return vec![check_address(spec, ctx, *only, now).await];
    }
    let mut set = tokio::task::JoinSet::new();
    for (i, addr) in addrs.iter().copied().enumerate() {
        let (spec, ctx) = (spec.clone(), ctx.clone());
        set.spawn(async move { (i, check_address(&spec, &ctx, addr, now).await) });
    }
    let mut done: Vec<Option<AddressResult>> = vec![None; addrs.len()];
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, result)) => done[i] = Some(result),
            // A panic in one address's check: reported as that address's failure below.
            Err(e) => tracing::error!(error = %e, "an address check ended abnormally"),
        }
    }
    done.into_iter()
        .zip(addrs)
        .map(|(r, addr)| r.unwrap_or_else(|| aborted(spec, *addr)))
        .collect()
}

/// The result of an address whose check did not complete (a bug: its task panicked).
fn aborted(spec: &CheckSpec, addr: SocketAddr) -> AddressResult {
    let findings = vec![Finding::new(
        FindingCode::TlsHandshakeFailed,
        format!(
            "the probe's check of {} at {} ended abnormally (see the probe's log)",
            spec.target.authority(),
            addr.ip()
        ),
    )];
    AddressResult {
        address: addr.ip().to_string(),
        verdict: verdict(&findings),
        findings,
        tcp: TcpResult {
            state: TcpState::NotAttempted,
            address: Some(addr.to_string()),
            duration_ms: 0.0,
            error: None,
        },
        tls: None,
        certificate: None,
        legacy_ports: Vec::new(),
        durations: Durations::default(),
    }
}

/// The check's findings from its addresses': a finding every address shows (the same code,
/// severity and message but for the address) once, naming all addresses where its message
/// names one; the others once per address that shows them, with their address.
pub fn merge_findings(addresses: &[AddressResult]) -> Vec<Finding> {
    let Some((first, rest)) = addresses.split_first() else {
        return Vec::new();
    };
    if rest.is_empty() {
        return first.findings.clone();
    }
    let key = |a: &AddressResult, f: &Finding| (f.code, f.severity, a.without_address(&f.message));
    let everywhere = |a: &AddressResult, f: &Finding| {
        let k = key(a, f);
        addresses
            .iter()
            .all(|b| b.findings.iter().any(|g| key(b, g) == k))
    };
    let all = addresses
        .iter()
        .map(|a| a.address.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut merged: Vec<Finding> = first
        .findings
        .iter()
        .filter(|f| everywhere(first, f))
        .map(|f| {
            let mut f = f.clone();
            if f.message.contains(&first.address) {
                f.message = first.without_address(&f.message).replace("ADDRESS", &all);
                f.remedy = first.without_address(&f.remedy).replace("ADDRESS", &all);
            }
            f
        })
        .collect();
    for a in addresses {
        for f in a.findings.iter().filter(|f| !everywhere(a, f)) {
            let mut f = f.clone();
            if !f.message.contains(&a.address) {
                f.message = format!("at {}: {}", a.address, f.message);
            }
            f.remedy = node_remedy(&f, a, addresses);
            f.address = Some(a.address.clone());
            merged.push(f);
        }
    }
    // Most explanatory first, as within one address: failures before warnings.
    merged.sort_by_key(|f| std::cmp::Reverse(f.severity));
    merged
}

/// The remedy of a finding seen at some addresses only: the fix belongs on that node. A node
/// serving another certificate than the policy's while other nodes serve the policy's one was
/// forgotten in a renewal.
fn node_remedy(f: &Finding, at: &AddressResult, addresses: &[AddressResult]) -> String {
    let expected = addresses.iter().find_map(|b| {
        b.certificate
            .as_ref()
            .filter(|_| !b.has(FindingCode::ThumbprintMismatch))
    });
    match (f.code, expected) {
        (FindingCode::ThumbprintMismatch, Some(good)) => format!(
            "The other nodes of this name serve the certificate in the CEM policy ({}): import it on the gateway node at {} (Gateway Manager and the IIS binding of the Internet Gateway), then restart its Internet Gateway service.",
            good.thumbprint_sha1, at.address
        ),
        _ => format!(
            "Only the gateway node (or load balancer member) at {} shows this; the name's other addresses do not: fix it there. {}",
            at.address, f.remedy
        ),
    }
}

/// Checks one address of the name: TCP, TLS, certificate, and the legacy ports when the
/// expected port does not reach the gateway there.
async fn check_address(
    spec: &CheckSpec,
    ctx: &CheckContext,
    addr: SocketAddr,
    now: OffsetDateTime,
) -> AddressResult {
    let started = Instant::now();
    let host = spec.target.host.as_str();
    let port = spec.target.port;
    let mut findings = Vec::new();
    let mut durations = Durations::default();
    let (tcp, stream) = tcp::connect(addr, ctx.connect_timeout).await;
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
            let result = probe_legacy_port(spec, ctx, addr, legacy).await;
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
    AddressResult {
        address: addr.ip().to_string(),
        verdict: verdict(&findings),
        findings,
        tcp,
        tls: tls_result,
        certificate,
        legacy_ports,
        durations,
    }
}

fn tcp_finding(target: &Target, tcp: &TcpResult, timeout: Duration) -> Finding {
    // The name and port agents use, with the address when the name is not one.
    let at = match tcp.address.as_deref() {
        Some(a) if !a.contains(target.host.trim_start_matches('[').trim_end_matches(']')) => {
            let ip = a
                .parse::<SocketAddr>()
                .map(|s| s.ip().to_string())
                .unwrap_or_else(|_| a.to_string());
            format!("{} ({ip})", target.authority())
        }
        _ => target.authority(),
    };
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
    // Parsed once, for the subjects, the analysis, the trust and the staple.
    let parsed: Vec<_> = chain.iter().map(|der| cert::parse(der)).collect();
    let subjects = parsed
        .iter()
        .map(|c| match c {
            Ok(c) => c.subject().to_string(),
            Err(e) => format!("(unreadable: {e})"),
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
    let (Some(leaf), Some(leaf_parsed)) = (chain.first(), parsed.first()) else {
        return TlsStage {
            tls,
            certificate: None,
            findings,
            reached,
        };
    };
    let leaf_cert = match leaf_parsed {
        Ok(c) => c,
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
    let info = cert::analyze_parsed(leaf_cert, now);
    if captured.signature_valid == Some(false) {
        findings.push(Finding::new(
            FindingCode::HandshakeKeyMismatch,
            format!(
                "the handshake signature from {authority} does not verify with the key of the certificate it serves ({}, thumbprint {}): whoever answered presents the gateway's certificate without its private key",
                info.subject, info.thumbprint_sha1
            ),
        ));
    }
    let served: Vec<_> = parsed[1..].iter().filter_map(|c| c.as_ref().ok()).collect();
    let mut outcome = ctx
        .trust
        .evaluate_parsed(leaf_cert, &served, cert::ChainSource::Server, now);
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
        let judged = match outcome.path_der.get(1).map(|d| cert::parse(d)) {
            Some(Ok(issuer)) => ocsp::judge(&captured.ocsp_staple, leaf_cert, &issuer),
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
    addr: SocketAddr,
    port: u16,
) -> LegacyPortResult {
    let (tcp, stream) = tcp::connect(SocketAddr::new(addr.ip(), port), ctx.connect_timeout).await;
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

#[cfg(test)]
mod address_tests {
    use super::*;

    fn at(address: &str, findings: Vec<Finding>) -> AddressResult {
        AddressResult {
            address: address.into(),
            verdict: verdict(&findings),
            findings,
            tcp: TcpResult {
                state: TcpState::Open,
                address: Some(format!("{address}:8443")),
                duration_ms: 1.0,
                error: None,
            },
            tls: None,
            certificate: None,
            legacy_ports: Vec::new(),
            durations: Durations::default(),
        }
    }

    #[test]
    fn addresses_are_chosen_by_family_and_cap_and_the_rest_named() {
        let addrs: Vec<SocketAddr> = ["192.0.2.1:8443", "[2001:db8::1]:8443", "192.0.2.2:8443"]
            .iter()
            .map(|a| a.parse().expect("addr"))
            .collect();
        let (checked, skipped) = select_addresses(&addrs, AddressFamily::Ipv4, 8);
        assert_eq!(checked, vec![addrs[0], addrs[2]]);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].address, "2001:db8::1");
        let (checked, skipped) = select_addresses(&addrs, AddressFamily::Any, 1);
        assert_eq!(checked, vec![addrs[0]]);
        assert!(skipped[1].reason.contains("--max-addresses"), "{skipped:?}");
    }

    #[test]
    fn findings_every_address_shows_appear_once_the_others_name_their_address() {
        let expiring = || Finding::new(FindingCode::CertExpiring, "expires in 10 days");
        let refused = |a: &str| {
            Finding::new(
                FindingCode::TcpRefused,
                format!("connection to gw:8443 ({a}) refused"),
            )
        };
        let merged = merge_findings(&[
            at("192.0.2.1", vec![expiring()]),
            at("192.0.2.2", vec![expiring(), refused("192.0.2.2")]),
        ]);
        assert_eq!(merged.len(), 2, "{merged:?}");
        assert_eq!(merged[0].code, FindingCode::TcpRefused);
        assert_eq!(merged[0].address.as_deref(), Some("192.0.2.2"));
        assert!(merged[0]
            .remedy
            .starts_with("Only the gateway node (or load balancer member) at 192.0.2.2"));
        assert_eq!(merged[1].code, FindingCode::CertExpiring);
        assert_eq!(merged[1].address, None);
        // The same refusal at both: once, naming both addresses.
        let merged = merge_findings(&[
            at("192.0.2.1", vec![refused("192.0.2.1")]),
            at("192.0.2.2", vec![refused("192.0.2.2")]),
        ]);
        assert_eq!(merged.len(), 1, "{merged:?}");
        assert_eq!(merged[0].address, None);
        assert!(
            merged[0].message.contains("(192.0.2.1, 192.0.2.2)"),
            "{}",
            merged[0].message
        );
        // One address: its findings as they are.
        let one = merge_findings(&[at("192.0.2.1", vec![refused("192.0.2.1")])]);
        assert_eq!(one[0].message, "connection to gw:8443 (192.0.2.1) refused");
    }
}
