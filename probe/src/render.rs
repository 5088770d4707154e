//! The tables a person reads. `check`: one line per stage, the certificate's facts, then the
//! findings with their remedy and the verdict. `inspect`: the thumbprint first, then the file,
//! key, certificate and chain, the findings and the verdict. Both share the colours, the
//! certificate block and the findings block.

use std::fmt::Write as _;

use cemwatch_shared::{
    AddressResult, CertificateInfo, CheckResult, DnsSource, Finding, FindingCode, LegacyPortResult,
    TcpResult, TcpState, TlsResult,
};

use cemwatch_transport::host::Paint;

use crate::inspect::{FileFormat, InspectResult};

fn pad(text: &str, width: usize) -> String {
    format!("{text:<width$}")
}

/// Renders a check result as a table for people.
pub(crate) fn table(r: &CheckResult, color: bool) -> String {
    let p = Paint::new(color);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}",
        p.bold(&format!("cemwatch check {}", r.target.authority()))
    );

    // DNS
    let dns_state = if r.dns.addresses.is_empty() {
        p.bad(&pad("fail", 9))
    } else {
        p.good(&pad("ok", 9))
    };
    let source = match r.dns.source {
        DnsSource::System => "",
        DnsSource::Override => " (--resolve)",
        DnsSource::Literal => " (address)",
    };
    let dns_detail = if r.dns.addresses.is_empty() {
        format!(
            "{}: {}",
            r.dns.host,
            r.dns.error.as_deref().unwrap_or("no address")
        )
    } else {
        format!("{} -> {}{source}", r.dns.host, r.dns.addresses.join(", "))
    };
    stage(
        &mut o,
        &p,
        "DNS",
        &dns_state,
        &dns_detail,
        r.dns.duration_ms,
    );

    if r.addresses.len() > 1 && !r.addresses_agree() {
        for a in &r.addresses {
            let _ = writeln!(
                o,
                "  {}  {} {}",
                p.bold(&pad("NODE", 6)),
                p.severity(a.verdict, &pad(a.verdict.as_str(), 9)),
                p.bold(&a.address)
            );
            node(
                &mut o,
                &p,
                &Node::of_address(a),
                r.expectations.min_days_left,
            );
        }
    } else {
        node(&mut o, &p, &Node::of_check(r), r.expectations.min_days_left);
    }
    for s in &r.skipped_addresses {
        let _ = writeln!(
            o,
            "  {}  {} {} ({})",
            p.bold(&pad("NODE", 6)),
            p.dim(&pad("skipped", 9)),
            s.address,
            s.reason
        );
    }

    findings(
        &mut o,
        &p,
        &r.findings,
        "No findings: agents can reach and validate this gateway.",
    );
    let _ = writeln!(o);
    let verdict = r.verdict.as_str().to_uppercase();
    let _ = writeln!(
        o,
        "VERDICT  {}  {}",
        p.severity(r.verdict, &p.bold(&verdict)),
        p.dim(&format!(
            "({:.1} ms, exit {})",
            r.durations.total_ms,
            r.verdict.exit_code()
        ))
    );
    o
}

/// What one block of the table describes: the check's first address when every address
/// answered alike, or one address of several that did not.
struct Node<'a> {
    tcp: &'a TcpResult,
    tls: Option<&'a TlsResult>,
    certificate: Option<&'a CertificateInfo>,
    legacy_ports: &'a [LegacyPortResult],
    findings: &'a [Finding],
}

impl<'a> Node<'a> {
    fn of_check(r: &'a CheckResult) -> Self {
        Self {
            tcp: &r.tcp,
            tls: r.tls.as_ref(),
            certificate: r.certificate.as_ref(),
            legacy_ports: &r.legacy_ports,
            findings: &r.findings,
        }
    }

    fn of_address(a: &'a AddressResult) -> Self {
        Self {
            tcp: &a.tcp,
            tls: a.tls.as_ref(),
            certificate: a.certificate.as_ref(),
            legacy_ports: &a.legacy_ports,
            findings: &a.findings,
        }
    }

    fn has(&self, code: FindingCode) -> bool {
        self.findings.iter().any(|f| f.code == code)
    }
}

/// The TCP, TLS, certificate and legacy-port lines of one block.
fn node(o: &mut String, p: &Paint, n: &Node<'_>, min_days_left: u32) {
    // TCP
    if n.tcp.state != TcpState::NotAttempted {
        let s = n.tcp.state.as_str();
        let state = if n.tcp.state == TcpState::Open {
            p.good(&pad(s, 9))
        } else {
            p.bad(&pad(s, 9))
        };
        let mut detail = n.tcp.address.clone().unwrap_or_default();
        if let Some(e) = &n.tcp.error {
            let _ = write!(detail, " ({e})");
        }
        stage(o, p, "TCP", &state, &detail, n.tcp.duration_ms);
    }

    // TLS
    if let Some(tls) = n.tls {
        let refused =
            n.has(FindingCode::TlsHandshakeFailed) || n.has(FindingCode::ClientCertRejected);
        let state = if refused {
            p.bad(&pad("fail", 9))
        } else if tls.legacy_hello {
            p.warn(&pad("legacy", 9))
        } else if tls.completed || !tls.chain.is_empty() {
            p.good(&pad("ok", 9))
        } else {
            p.bad(&pad("fail", 9))
        };
        let mut parts = Vec::new();
        if let (Some(version), Some(cipher)) = (&tls.version, &tls.cipher) {
            parts.push(format!("{version} {cipher}"));
        }
        if !tls.chain.is_empty() {
            parts.push(if tls.trusted {
                p.good("chain trusted")
            } else {
                p.bad("chain NOT trusted")
            });
        }
        if tls.handshake_signature_valid == Some(false) {
            parts.push(p.bad("signature NOT made with the certificate's key"));
        }
        if tls.legacy_hello {
            parts.push("read with a legacy ClientHello (modern TLS refused)".into());
        } else if tls.client_certificate_requested
            && !tls.completed
            && !refused
            && tls.client_certificate.is_none()
        {
            parts.push("ended by the gateway when no client certificate came, as for anything but an agent".into());
        } else if let Some(e) = &tls.error {
            parts.push(e.clone());
        }
        stage(o, p, "TLS", &state, &parts.join(", "), tls.duration_ms);
        if tls.client_certificate_requested {
            let cas = if tls.acceptable_client_cas.is_empty() {
                "any CA".to_string()
            } else {
                tls.acceptable_client_cas.join("; ")
            };
            let presented = match &tls.client_certificate {
                Some(c) if n.has(FindingCode::ClientCertRejected) => {
                    format!("presented {}: {}", c, p.bad("refused"))
                }
                Some(c) => format!("presented {c}"),
                None => "none presented (agents present theirs; --client-cert)".to_string(),
            };
            let _ = writeln!(
                o,
                "  {}  {} agent certificates from {cas}; {presented}",
                p.bold(&pad("CLIENT", 6)),
                pad("asked", 9)
            );
        }
    }

    // Certificate
    if let Some(c) = n.certificate {
        certificate(o, p, c, min_days_left, true);
        // The issuer chain as served: what one person at one site compares with what the
        // gateway serves (a TLS-inspecting proxy shows its own CA here).
        if let Some(tls) = n.tls.filter(|t| t.chain.len() > 1) {
            let _ = writeln!(
                o,
                "  {}  {} {}",
                pad("", 6),
                p.dim(&pad("chain", 11)),
                tls.chain.join(" < ")
            );
        }
    }

    // Legacy ports
    for l in n.legacy_ports {
        let what = if l.gateway_listener {
            p.bad(&format!(
                "the gateway listens here (TLS, certificate {})",
                l.thumbprint_sha1.as_deref().unwrap_or("?")
            ))
        } else if l.tls_completed {
            format!(
                "TLS with another certificate ({})",
                l.thumbprint_sha1.as_deref().unwrap_or("?")
            )
        } else {
            l.tcp.as_str().to_string()
        };
        let _ = writeln!(
            o,
            "  {}  {} {what}",
            p.bold(&pad("LEGACY", 6)),
            pad(&l.port.to_string(), 9)
        );
    }
}

fn stage(o: &mut String, p: &Paint, name: &str, state: &str, detail: &str, ms: f64) {
    let _ = writeln!(
        o,
        "  {}  {state} {detail}  {}",
        p.bold(&pad(name, 6)),
        p.dim(&format!("{ms:.1} ms"))
    );
}

/// The facts of a certificate, one per line, as `check` and `inspect` show them.
fn certificate(
    o: &mut String,
    p: &Paint,
    c: &CertificateInfo,
    min_days_left: u32,
    with_thumbprint: bool,
) {
    let field = |o: &mut String, name: &str, value: &str| {
        let _ = writeln!(o, "  {}  {} {value}", pad("", 6), p.dim(&pad(name, 11)));
    };
    let _ = writeln!(
        o,
        "  {}  {} {}",
        p.bold(&pad("CERT", 6)),
        p.dim(&pad("subject", 11)),
        c.subject
    );
    field(o, "issuer", &c.issuer);
    let sans: Vec<&str> = c
        .san_dns
        .iter()
        .chain(c.san_ip.iter())
        .map(String::as_str)
        .collect();
    field(
        o,
        "SAN",
        &if sans.is_empty() {
            "(none)".to_string()
        } else {
            sans.join(", ")
        },
    );
    let left = if c.days_left < 0 {
        p.bad(&format!("expired {} days ago", -c.days_left))
    } else if c.days_left < i64::from(min_days_left) {
        p.warn(&format!("{} days left", c.days_left))
    } else {
        format!("{} days left", c.days_left)
    };
    field(
        o,
        "valid",
        &format!("{} to {} ({left})", c.not_before, c.not_after),
    );
    let curve = c
        .key_curve
        .as_deref()
        .map(|v| format!(" {v}"))
        .unwrap_or_default();
    field(
        o,
        "key",
        &format!(
            "{} {} bits{curve}, signed {}",
            c.key_algorithm, c.key_bits, c.signature_algorithm
        ),
    );
    field(
        o,
        "EKU",
        &if c.eku_present {
            c.eku.join(", ")
        } else {
            "(none)".to_string()
        },
    );
    if with_thumbprint {
        field(
            o,
            "thumbprint",
            &format!(
                "{} {}",
                p.bold(&c.thumbprint_sha1),
                p.dim("(SHA-1, as the CEM policy holds it)")
            ),
        );
    }
    field(o, "sha256", &c.fingerprint_sha256);
}

/// The findings with their remedy, or `none` when there are none.
fn findings(o: &mut String, p: &Paint, findings: &[Finding], none: &str) {
    let _ = writeln!(o);
    if findings.is_empty() {
        let _ = writeln!(o, "{}", p.good(none));
    } else {
        let _ = writeln!(o, "{}", p.bold("FINDINGS"));
        for f in findings {
            let sev = p.severity(f.severity, &pad(&f.severity.as_str().to_uppercase(), 4));
            let _ = writeln!(o, "  {sev}  {}  {}", p.bold(f.code.as_str()), f.message);
            let _ = writeln!(o, "        {} {}", p.dim("remedy:"), f.remedy);
        }
    }
}

/// Renders an inspected certificate file as a table for people: the thumbprint first, as the
/// CEM policy wants it, then the file, key, certificate and chain, the findings and the verdict.
pub(crate) fn inspect_table(r: &InspectResult, color: bool) -> String {
    let p = Paint::new(color);
    let mut o = String::new();
    let c = &r.certificate;
    let _ = writeln!(o, "{}", p.bold(&format!("cemwatch inspect {}", r.file)));
    let _ = writeln!(
        o,
        "  {}  {}  {}",
        p.bold("THUMBPRINT"),
        p.bold(&c.thumbprint_sha1),
        p.dim("(SHA-1, no spaces: as the CEM Settings policy wants it)")
    );
    let line = |o: &mut String, name: &str, state: &str, detail: &str| {
        let _ = writeln!(o, "  {}  {state} {detail}", p.bold(&pad(name, 6)));
    };
    let format_state = if r.format == FileFormat::Pkcs12 {
        p.good(&pad(r.format.as_str(), 9))
    } else {
        p.warn(&pad(r.format.as_str(), 9))
    };
    let count = r.chain.len();
    line(
        &mut o,
        "FILE",
        &format_state,
        &format!(
            "{}, {count} certificate{}",
            r.format.describe(),
            if count == 1 { "" } else { "s" }
        ),
    );
    let algorithm = r
        .private_key
        .algorithm
        .as_deref()
        .unwrap_or("unknown algorithm");
    let (key_state, key_detail) = match (r.private_key.present, r.private_key.matches) {
        (true, Some(true)) => (
            p.good(&pad("matches", 9)),
            format!("{algorithm}, belongs to the certificate"),
        ),
        (true, Some(false)) => (
            p.bad(&pad("mismatch", 9)),
            format!("{algorithm}, does NOT belong to the certificate"),
        ),
        (true, None) => (
            pad("present", 9),
            format!("{algorithm}, cannot be compared with the certificate"),
        ),
        (false, _) if r.format == FileFormat::Pkcs12 => (
            p.bad(&pad("missing", 9)),
            "the .pfx holds no private key".to_string(),
        ),
        (false, _) => (
            p.warn(&pad("none", 9)),
            "the file holds no private key".to_string(),
        ),
    };
    line(&mut o, "KEY", &key_state, &key_detail);
    certificate(&mut o, &p, c, r.min_days_left, false);
    let chain_state = if r.chain_trusted {
        p.good(&pad("trusted", 9))
    } else {
        p.bad(&pad("untrusted", 9))
    };
    for (i, subject) in r.chain.iter().enumerate() {
        let subject = if i == 0 {
            format!("{subject} {}", p.dim("(leaf)"))
        } else {
            format!("{} {subject}", p.dim("<-"))
        };
        if i == 0 {
            line(&mut o, "CHAIN", &chain_state, &subject);
        } else {
            line(&mut o, "", &pad("", 9), &subject);
        }
    }
    findings(
        &mut o,
        &p,
        &r.findings,
        "No findings: the certificate meets the CEM requirements. Import it, then put the thumbprint above in the CEM Settings policy.",
    );
    let _ = writeln!(o);
    let verdict = r.verdict.as_str().to_uppercase();
    let _ = writeln!(
        o,
        "VERDICT  {}  {}",
        p.severity(r.verdict, &p.bold(&verdict)),
        p.dim(&format!("(exit {})", r.verdict.exit_code()))
    );
    o
}
