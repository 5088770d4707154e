//! Triage: turns the facts a check gathered into findings, each with the guide's remedy made
//! concrete (ports, names, thumbprints). Pure functions over the model, shared by `check` and
//! `inspect`.

use cemwatch_shared::{
    CertificateInfo, Expectations, Finding, FindingCode, Thumbprint, ThumbprintKind,
};

use super::aia::{describe, Fetched};
use super::cert::{covers_name, ChainFailure, ChainSource, Defect, TrustOutcome};
use super::revocation::{Checked, Status};

/// The gateway serves an incomplete chain that the probe completed from the AIA caIssuers
/// URL, as Windows agents do: a warning (`chain_incomplete` at warn), since other clients, and
/// agents that cannot reach the URL, fail.
pub fn completed_from_aia(outcome: &TrustOutcome, fetched: &[Fetched]) -> Finding {
    let missing: Vec<&str> = fetched
        .iter()
        .filter_map(|f| f.outcome.as_ref().ok().map(String::as_str))
        .collect();
    Finding::with_remedy(
        FindingCode::ChainIncomplete,
        format!(
            "the gateway does not send the intermediate CA certificate {}; the probe fetched it from the certificate's AIA caIssuers URL, as Windows agents do, and the path is then trusted ({}): agents that cannot reach that URL, and other clients, fail",
            missing
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(" and "),
            describe(fetched)
        ),
        format!(
            "Serve the intermediate CA certificates with the gateway certificate (export the .pfx with \"Include all certificates in the certification path if possible\" and import it into Gateway Manager and IIS), so that no agent depends on fetching them; the path found: {}.",
            outcome.path.join(" <- ")
        ),
    )
    .at(cemwatch_shared::Severity::Warn)
}

/// Findings of the revocation stage: `cert_revoked` per revoked certificate, one
/// `revocation_stale` per certificate whose only CRL is out of date, one
/// `revocation_unreachable` per certificate whose CRLs could not be had from here.
pub fn revocation_findings(checked: &[Checked]) -> Vec<Finding> {
    let mut out = Vec::new();
    for c in checked {
        let subject = &c.subject;
        match &c.status {
            Status::Good { .. } => {}
            Status::Revoked { url, since, reason } => out.push(Finding::new(
                FindingCode::CertRevoked,
                format!(
                    "\"{subject}\" (serial {}) is revoked since {since}{} according to {url}",
                    c.serial,
                    reason
                        .as_deref()
                        .map(|r| format!(" (reason: {r})"))
                        .unwrap_or_default()
                ),
            )),
            Status::Stale { url, next_update } => out.push(Finding::new(
                FindingCode::RevocationStale,
                format!(
                    "the revocation answer for \"{subject}\" from {url} is past its next update ({next_update}): agents that check revocation treat it as unavailable"
                ),
            )),
            Status::Unreachable { tried } => out.push(Finding::new(
                FindingCode::RevocationUnreachable,
                format!(
                    "no revocation answer for \"{subject}\" (OCSP or CRL) could be had from here, so agents that check revocation cannot connect from the internet: {}",
                    tried
                        .iter()
                        .map(|(url, why)| format!("{url}: {why}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            )),
        }
    }
    out
}

/// Findings about the certificate path: how it fails (`cert_untrusted`, `chain_incomplete`,
/// one `chain_invalid` per defect, each naming the certificate), then the CEM algorithm rules
/// applied to every certificate above the leaf (SHA-1 and MD5 signatures of intermediates,
/// RSA keys under 2048 bits), each naming the certificate.
pub fn chain_findings(outcome: &TrustOutcome, source: ChainSource) -> Vec<Finding> {
    let mut findings = Vec::new();
    let reason = outcome.reason.as_deref().unwrap_or("no path");
    let what = match source {
        ChainSource::Server => "the certificate chain the gateway serves",
        ChainSource::File => "the certificate chain in the file",
    };
    match outcome.failure {
        None => {}
        Some(ChainFailure::Untrusted) => findings.push(Finding::new(
            FindingCode::CertUntrusted,
            format!("{what} does not reach a trusted root: {reason}"),
        )),
        Some(ChainFailure::Incomplete) => findings.push(Finding::new(
            FindingCode::ChainIncomplete,
            format!("{what} is incomplete: {reason}"),
        )),
        Some(ChainFailure::Invalid) => {
            for defect in &outcome.defects {
                match defect {
                    // `signature_insecure` reports MD5 and MD2, on the leaf and above it.
                    Defect::Unverifiable { insecure: true, .. } => {}
                    Defect::LeafIsCa { subject } => findings.push(Finding::with_remedy(
                        FindingCode::ChainInvalid,
                        format!("{what} is invalid: {}", defect.describe()),
                        format!(
                            "The gateway is bound to its issuer's certificate (\"{subject}\"), or the chain is out of order: bind the gateway's own SAN certificate in Gateway Manager and IIS (the certificate issued for the gateway FQDN, with its private key), served first and followed by its intermediates."
                        ),
                    )),
                    _ => findings.push(Finding::new(
                        FindingCode::ChainInvalid,
                        format!("{what} is invalid: {}", defect.describe()),
                    )),
                }
            }
            if outcome.defects.is_empty() {
                findings.push(Finding::new(
                    FindingCode::ChainInvalid,
                    format!("{what} is invalid: {reason}"),
                ));
            }
        }
    }
    for issuer in &outcome.issuers {
        let role = if issuer.anchor {
            "the root CA"
        } else {
            "the intermediate CA"
        };
        let subject = &issuer.subject;
        if !issuer.anchor {
            let reissue = format!(
                "Have the issuing CA re-issue the intermediate CA certificate \"{subject}\" with SHA-256 or stronger, and serve the new one with the gateway certificate"
            );
            match issuer.signature_hash.as_str() {
                "sha1" => findings.push(Finding::with_remedy(
                    FindingCode::SignatureSha1,
                    format!(
                        "{role} \"{subject}\" is signed with {}",
                        issuer.signature_algorithm
                    ),
                    format!("{reissue}: SHA-1 is not recommended."),
                )),
                "md5" | "md2" | "md4" => findings.push(Finding::with_remedy(
                    FindingCode::SignatureInsecure,
                    format!(
                        "{role} \"{subject}\" is signed with {}",
                        issuer.signature_algorithm
                    ),
                    format!("{reissue}: MD5 is not accepted."),
                )),
                _ => {}
            }
        }
        if issuer.key_algorithm == "RSA" && issuer.key_bits < 2048 {
            findings.push(Finding::with_remedy(
                FindingCode::KeyTooSmall,
                format!("{role} \"{subject}\" has a {}-bit RSA key", issuer.key_bits),
                format!(
                    "Replace {role} certificate \"{subject}\" with one whose RSA key has at least 2048 bits, and re-issue the certificates below it."
                ),
            ));
        }
    }
    findings
}

/// Findings about a certificate itself: names, policy thumbprint, validity, EKU, signature
/// and key. `gateway` is the name agents connect to (always required), when known.
pub fn certificate_findings(
    info: &CertificateInfo,
    gateway: Option<&str>,
    expectations: &Expectations,
    now_unix: i64,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let names = if info.san_dns.is_empty() && info.san_ip.is_empty() {
        "the certificate has no Subject Alternative Name (agents ignore the subject CN)".to_string()
    } else {
        format!(
            "the SAN lists {}",
            info.san_dns
                .iter()
                .chain(info.san_ip.iter())
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if let Some(gateway) = gateway {
        if !covers_name(info, gateway) {
            findings.push(Finding::new(
                FindingCode::CertNameMismatch,
                format!("the certificate does not cover the gateway name {gateway}: {names}"),
            ));
        }
    }
    for required in &expectations.required_sans {
        let is_gateway =
            gateway.is_some_and(|g| g.eq_ignore_ascii_case(required.trim_end_matches('.')));
        if !is_gateway && !covers_name(info, required) {
            findings.push(Finding::new(
                FindingCode::CertSanMissing,
                format!("the certificate does not cover the required name {required}: {names}"),
            ));
        }
    }
    if let Some(expected) = &expectations.thumbprint {
        let (served, label) = match expected.kind() {
            ThumbprintKind::Sha1 => (&info.thumbprint_sha1, "thumbprint"),
            ThumbprintKind::Sha256 => (&info.fingerprint_sha256, "SHA-256 fingerprint"),
        };
        let matches = Thumbprint::parse(served).is_ok_and(|t| &t == expected);
        if !matches {
            findings.push(Finding::with_remedy(
                FindingCode::ThumbprintMismatch,
                format!("the served certificate's {label} is {served}, the CEM policy has {expected}"),
                format!(
                    "Agents reject the gateway. If the served certificate is the new one, set the CEM Settings policy thumbprint to {} (no spaces) and push the configuration update; otherwise import the certificate with thumbprint {expected} into Gateway Manager.",
                    info.thumbprint_sha1
                ),
            ));
        }
    }
    if now_unix > info.not_after_unix {
        findings.push(Finding::new(
            FindingCode::CertExpired,
            format!(
                "the certificate expired on {} ({} days ago)",
                info.not_after, -info.days_left
            ),
        ));
    } else if now_unix < info.not_before_unix {
        findings.push(Finding::new(
            FindingCode::CertNotYetValid,
            format!("the certificate is valid only from {}", info.not_before),
        ));
    } else if info.days_left < i64::from(expectations.min_days_left) {
        findings.push(Finding::new(
            FindingCode::CertExpiring,
            format!(
                "the certificate expires on {}: {} days left, fewer than {}",
                info.not_after, info.days_left, expectations.min_days_left
            ),
        ));
    }
    if !info.eku.iter().any(|e| e == "serverAuth") {
        let seen = if info.eku_present {
            format!("its Extended Key Usage is {}", info.eku.join(", "))
        } else {
            "it has no Extended Key Usage extension".to_string()
        };
        findings.push(Finding::new(
            FindingCode::EkuMissingServerAuth,
            format!("the certificate lacks Server Authentication (1.3.6.1.5.5.7.3.1): {seen}"),
        ));
    }
    match info.signature_hash.as_str() {
        "sha1" => findings.push(Finding::new(
            FindingCode::SignatureSha1,
            format!(
                "the certificate is signed with {}",
                info.signature_algorithm
            ),
        )),
        "md5" | "md2" | "md4" => findings.push(Finding::new(
            FindingCode::SignatureInsecure,
            format!(
                "the certificate is signed with {}",
                info.signature_algorithm
            ),
        )),
        _ => {}
    }
    if info.key_algorithm == "RSA" {
        if info.key_bits < 2048 {
            findings.push(Finding::new(
                FindingCode::KeyTooSmall,
                format!("the certificate has a {}-bit RSA key", info.key_bits),
            ));
        }
    } else {
        let curve = info
            .key_curve
            .as_deref()
            .map(|c| format!(" {c}"))
            .unwrap_or_default();
        findings.push(Finding::new(
            FindingCode::KeyNotRsa,
            format!(
                "the certificate has a {}{curve} key, not RSA",
                info.key_algorithm
            ),
        ));
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> CertificateInfo {
        CertificateInfo {
            thumbprint_sha1: "A".repeat(40),
            fingerprint_sha256: "B".repeat(64),
            subject: "CN=gateway.example.com".into(),
            issuer: "CN=Example CA".into(),
            serial: "01".into(),
            san_dns: vec!["smp.example.net".into(), "gateway.example.com".into()],
            san_ip: vec![],
            not_before: "2026-01-01T00:00:00Z".into(),
            not_before_unix: 1_767_225_600,
            not_after: "2027-01-01T00:00:00Z".into(),
            not_after_unix: 1_798_761_600,
            days_left: 200,
            key_algorithm: "RSA".into(),
            key_bits: 2048,
            key_curve: None,
            signature_algorithm: "sha256WithRSAEncryption".into(),
            signature_hash: "sha256".into(),
            eku: vec!["serverAuth".into()],
            eku_present: true,
            self_signed: false,
        }
    }

    const NOW: i64 = 1_780_000_000;

    fn expectations() -> Expectations {
        Expectations {
            thumbprint: Some(Thumbprint::parse(&"a".repeat(40)).expect("valid")),
            required_sans: vec!["smp.example.net".into()],
            ..Expectations::default()
        }
    }

    fn codes(info: &CertificateInfo, e: &Expectations, now: i64) -> Vec<FindingCode> {
        certificate_findings(info, Some("gateway.example.com"), e, now)
            .into_iter()
            .map(|f| f.code)
            .collect()
    }

    #[test]
    fn a_healthy_certificate_has_no_findings() {
        assert!(codes(&healthy(), &expectations(), NOW).is_empty());
    }

    #[test]
    fn each_defect_has_its_own_code() {
        use FindingCode::*;
        let e = expectations();
        let mut c = healthy();
        c.san_dns = vec!["smp.example.net".into()];
        assert_eq!(codes(&c, &e, NOW), vec![CertNameMismatch]);
        let mut c = healthy();
        c.san_dns = vec!["gateway.example.com".into()];
        assert_eq!(codes(&c, &e, NOW), vec![CertSanMissing]);
        let mut c = healthy();
        c.thumbprint_sha1 = "C".repeat(40);
        assert_eq!(codes(&c, &e, NOW), vec![ThumbprintMismatch]);
        assert_eq!(
            codes(&healthy(), &e, c.not_after_unix + 1),
            vec![CertExpired]
        );
        assert_eq!(
            codes(&healthy(), &e, c.not_before_unix - 1),
            vec![CertNotYetValid]
        );
        let mut c = healthy();
        c.days_left = 29;
        assert_eq!(codes(&c, &e, NOW), vec![CertExpiring]);
        let mut c = healthy();
        c.eku = vec!["clientAuth".into()];
        assert_eq!(codes(&c, &e, NOW), vec![EkuMissingServerAuth]);
        let mut c = healthy();
        c.eku = vec![];
        c.eku_present = false;
        assert_eq!(codes(&c, &e, NOW), vec![EkuMissingServerAuth]);
        let mut c = healthy();
        c.signature_hash = "sha1".into();
        assert_eq!(codes(&c, &e, NOW), vec![SignatureSha1]);
        let mut c = healthy();
        c.signature_hash = "md5".into();
        assert_eq!(codes(&c, &e, NOW), vec![SignatureInsecure]);
        let mut c = healthy();
        c.key_bits = 1024;
        assert_eq!(codes(&c, &e, NOW), vec![KeyTooSmall]);
        let mut c = healthy();
        c.key_algorithm = "EC".into();
        c.key_bits = 256;
        assert_eq!(codes(&c, &e, NOW), vec![KeyNotRsa]);
    }

    #[test]
    fn wildcards_cover_one_label_only() {
        let mut c = healthy();
        c.san_dns = vec!["*.example.com".into(), "smp.example.net".into()];
        assert!(codes(&c, &expectations(), NOW)
            .iter()
            .all(|code| *code == FindingCode::ThumbprintMismatch
                || *code != FindingCode::CertNameMismatch));
        assert!(covers_name(&c, "GATEWAY.example.com."));
        assert!(!covers_name(&c, "a.gateway.example.com"));
        assert!(!covers_name(&c, "example.com"));
    }

    #[test]
    fn sha256_policy_fingerprints_are_compared_as_sha256() {
        let e = Expectations {
            thumbprint: Some(Thumbprint::parse(&"b".repeat(64)).expect("valid")),
            ..Expectations::default()
        };
        assert!(codes(&healthy(), &e, NOW).is_empty());
    }
}
