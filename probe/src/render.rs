//! The table a person reads: one line per stage, the certificate's facts, then the findings
//! with their remedy and the verdict.

use std::fmt::Write as _;

use cemwatch_shared::{CheckResult, DnsSource, Severity, TcpState};

struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn good(&self, t: &str) -> String {
        self.wrap("32", t)
    }
    fn warn(&self, t: &str) -> String {
        self.wrap("33", t)
    }
    fn bad(&self, t: &str) -> String {
        self.wrap("31", t)
    }
    fn dim(&self, t: &str) -> String {
        self.wrap("2", t)
    }
    fn bold(&self, t: &str) -> String {
        self.wrap("1", t)
    }
    fn severity(&self, s: Severity, text: &str) -> String {
        match s {
            Severity::Ok => self.good(text),
            Severity::Warn => self.warn(text),
            Severity::Fail => self.bad(text),
        }
    }
}

fn pad(text: &str, width: usize) -> String {
    format!("{text:<width$}")
}

/// Renders a check result as a table for people.
pub fn table(r: &CheckResult, color: bool) -> String {
    let p = Paint { on: color };
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

    // TCP
    if r.tcp.state != TcpState::NotAttempted {
        let s = r.tcp.state.as_str();
        let state = if r.tcp.state == TcpState::Open {
            p.good(&pad(s, 9))
        } else {
            p.bad(&pad(s, 9))
        };
        let mut detail = r.tcp.address.clone().unwrap_or_default();
        if let Some(e) = &r.tcp.error {
            let _ = write!(detail, " ({e})");
        }
        stage(&mut o, &p, "TCP", &state, &detail, r.tcp.duration_ms);
    }

    // TLS
    if let Some(tls) = &r.tls {
        if tls.completed {
            let trust = if tls.trusted {
                p.good("chain trusted")
            } else {
                p.bad("chain NOT trusted")
            };
            let detail = format!(
                "{} {}, {trust}",
                tls.version.as_deref().unwrap_or("?"),
                tls.cipher.as_deref().unwrap_or("?")
            );
            stage(
                &mut o,
                &p,
                "TLS",
                &p.good(&pad("ok", 9)),
                &detail,
                tls.duration_ms,
            );
        } else {
            let detail = tls.error.clone().unwrap_or_default();
            stage(
                &mut o,
                &p,
                "TLS",
                &p.bad(&pad("fail", 9)),
                &detail,
                tls.duration_ms,
            );
        }
    }

    // Certificate
    if let Some(c) = &r.certificate {
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
        field(&mut o, "issuer", &c.issuer);
        let sans: Vec<&str> = c
            .san_dns
            .iter()
            .chain(c.san_ip.iter())
            .map(String::as_str)
            .collect();
        field(
            &mut o,
            "SAN",
            &if sans.is_empty() {
                "(none)".to_string()
            } else {
                sans.join(", ")
            },
        );
        let left = if c.days_left < 0 {
            p.bad(&format!("expired {} days ago", -c.days_left))
        } else if c.days_left < i64::from(r.expectations.min_days_left) {
            p.warn(&format!("{} days left", c.days_left))
        } else {
            format!("{} days left", c.days_left)
        };
        field(
            &mut o,
            "valid",
            &format!("{} to {} ({left})", c.not_before, c.not_after),
        );
        let curve = c
            .key_curve
            .as_deref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default();
        field(
            &mut o,
            "key",
            &format!(
                "{} {} bits{curve}, signed {}",
                c.key_algorithm, c.key_bits, c.signature_algorithm
            ),
        );
        field(
            &mut o,
            "EKU",
            &if c.eku_present {
                c.eku.join(", ")
            } else {
                "(none)".to_string()
            },
        );
        field(
            &mut o,
            "thumbprint",
            &format!(
                "{} {}",
                p.bold(&c.thumbprint_sha1),
                p.dim("(SHA-1, as the CEM policy holds it)")
            ),
        );
        field(&mut o, "sha256", &c.fingerprint_sha256);
    }

    // Legacy ports
    for l in &r.legacy_ports {
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

    let _ = writeln!(o);
    if r.findings.is_empty() {
        let _ = writeln!(
            o,
            "{}",
            p.good("No findings: agents can reach and validate this gateway.")
        );
    } else {
        let _ = writeln!(o, "{}", p.bold("FINDINGS"));
        for f in &r.findings {
            let sev = p.severity(f.severity, &pad(&f.severity.as_str().to_uppercase(), 4));
            let _ = writeln!(o, "  {sev}  {}  {}", p.bold(f.code.as_str()), f.message);
            let _ = writeln!(o, "        {} {}", p.dim("remedy:"), f.remedy);
        }
    }
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

fn stage(o: &mut String, p: &Paint, name: &str, state: &str, detail: &str, ms: f64) {
    let _ = writeln!(
        o,
        "  {}  {state} {detail}  {}",
        p.bold(&pad(name, 6)),
        p.dim(&format!("{ms:.1} ms"))
    );
}
