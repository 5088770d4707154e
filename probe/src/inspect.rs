//! `inspect`: checks a certificate file against the CEM requirements before it is imported.
//!
//! The guide's phase 2 asks the administrator to verify the SAN certificate before importing
//! it (both FQDNs in the SAN, SHA-256 or better, RSA of at least 2048 bits, 30 days of
//! validity, Server Authentication, a .pfx with its private key) and to record its thumbprint
//! for the CEM Settings policy. This module reads the file — PKCS#12 (modern AES and legacy
//! 3DES/RC2 encryption), PEM (certificates and an optional key) or DER — with the format
//! detected from the content, never from the extension; picks the leaf; and judges it with the
//! check engine's own certificate triage ([`triage::certificate_findings`]), plus what only a
//! file shows: a missing or foreign private key, an incomplete chain, a format that is not
//! .pfx.
//!
//! Passwords never appear in errors, results or `Debug` output.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use cemwatch_shared::finding::verdict;
use cemwatch_shared::{CertificateInfo, Expectations, Finding, FindingCode, Severity};

use crate::certfile::{is_ca, is_self_signed, public_of_cert, public_of_key, PublicKey};
pub use crate::certfile::{
    load, load_pem_keys, read_file, Contents, FileFormat, InspectError, KeyEncoding, Password,
    PrivateKeyMaterial, MAX_FILE_SIZE,
};
use crate::check::cert::{self, ChainSource, TrustStore};
use crate::check::triage;

/// The private key as the file holds it and whether it belongs to the certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateKeyStatus {
    /// The file holds a private key.
    pub present: bool,
    /// The key belongs to the certificate (`null` without a key, or when it cannot be told).
    pub matches: Option<bool>,
    /// The key, such as `RSA 2048 bits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
}

/// What `inspect` found in a certificate file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InspectResult {
    /// The file, as given.
    pub file: String,
    /// The detected format.
    pub format: FileFormat,
    /// The private key.
    pub private_key: PrivateKeyStatus,
    /// Subjects of the certificates in the file: the leaf, then its issuers in order, then any
    /// certificate that is not part of the leaf's chain.
    pub chain: Vec<String>,
    /// The leaf with the file's other certificates reaches a root in the trust store (the
    /// platform store plus `--ca-file`).
    pub chain_trusted: bool,
    /// Why it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_error: Option<String>,
    /// The leaf certificate.
    pub certificate: CertificateInfo,
    /// The gateway name that must be covered, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Other names that must be covered.
    #[serde(default)]
    pub required_sans: Vec<String>,
    /// The thumbprint expected by the CEM Settings policy, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_thumbprint: Option<String>,
    /// Fewer days left than this is a warning.
    pub min_days_left: u32,
    /// What is wrong, most explanatory first.
    pub findings: Vec<Finding>,
    /// The worst severity among the findings.
    pub verdict: Severity,
    /// The trusted path, leaf first, as DER (for the revocation stage; not shown).
    #[serde(skip)]
    pub path_der: Vec<Vec<u8>>,
}

impl InspectResult {
    /// Adds findings (of a later stage) and takes the verdict again.
    pub fn add_findings(&mut self, more: Vec<Finding>) {
        self.findings.extend(more);
        self.verdict = verdict(&self.findings);
    }

    /// Whether a finding with this code is present.
    pub fn has(&self, code: FindingCode) -> bool {
        self.findings.iter().any(|f| f.code == code)
    }
}

/// Judges the contents of a file: picks the leaf (the certificate of the private key, else the
/// first certificate that is not a CA and issued no other certificate of the file, else the
/// first), checks the key, the chain and the format, and runs the check engine's certificate
/// triage on the leaf.
pub fn inspect(
    file: &str,
    contents: &Contents,
    trust: &TrustStore,
    gateway: Option<&str>,
    expectations: &Expectations,
    now: OffsetDateTime,
) -> Result<InspectResult, InspectError> {
    let corrupt = |reason: String| InspectError::Corrupt {
        path: file.to_string(),
        format: contents.format,
        reason,
    };
    let parsed = contents
        .certificates
        .iter()
        .map(|der| cert::parse(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| corrupt(e.to_string()))?;
    if parsed.is_empty() {
        return Err(InspectError::NoCertificate {
            path: file.to_string(),
            found: "no certificate".into(),
        });
    }
    let key_publics = contents
        .keys
        .iter()
        .map(public_of_key)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| corrupt(format!("the private key is unreadable: {e}")))?;
    let cert_publics: Vec<Option<PublicKey>> = parsed.iter().map(public_of_cert).collect();

    // The leaf: the certificate of a private key in the file ...
    let mut paired: Option<(usize, usize)> = None;
    'certs: for (ci, cp) in cert_publics.iter().enumerate() {
        for (ki, kp) in key_publics.iter().enumerate() {
            if cp.is_some() && cp == kp {
                paired = Some((ci, ki));
                break 'certs;
            }
        }
    }
    let leaf = paired
        .map(|(ci, _)| ci)
        // ... or the certificate the PKCS#12 file pairs with a key by localKeyId ...
        .or_else(|| {
            contents.cert_key_ids.iter().position(|id| {
                id.as_ref().is_some_and(|id| {
                    contents
                        .keys
                        .iter()
                        .any(|k| k.local_key_id.as_ref() == Some(id))
                })
            })
        })
        // ... or the first end-entity certificate that issued no other certificate here ...
        .or_else(|| {
            parsed.iter().enumerate().position(|(i, c)| {
                !is_ca(c)
                    && !parsed
                        .iter()
                        .enumerate()
                        .any(|(j, other)| j != i && other.issuer().as_raw() == c.subject().as_raw())
            })
        })
        // ... or the first.
        .unwrap_or(0);

    let key_status = PrivateKeyStatus {
        present: !contents.keys.is_empty(),
        matches: match paired {
            Some((ci, _)) if ci == leaf => Some(true),
            _ if contents.keys.is_empty() => None,
            _ if cert_publics[leaf].is_none() => None,
            _ if key_publics.iter().any(Option::is_some) => Some(false),
            _ => None,
        },
        algorithm: match paired {
            Some((_, ki)) => key_publics[ki].as_ref().map(PublicKey::describe),
            None => key_publics.iter().flatten().next().map(PublicKey::describe),
        },
    };

    // The chain: the leaf, its issuers as the file holds them, then everything else.
    let mut order = vec![leaf];
    let mut used = vec![false; parsed.len()];
    used[leaf] = true;
    let mut current = leaf;
    while !is_self_signed(&parsed[current]) {
        let issuer = parsed[current].issuer().as_raw();
        match (0..parsed.len()).find(|&j| !used[j] && parsed[j].subject().as_raw() == issuer) {
            Some(j) => {
                used[j] = true;
                order.push(j);
                current = j;
            }
            None => break,
        }
    }
    order.extend((0..parsed.len()).filter(|&j| !used[j]));
    let chain: Vec<String> = order
        .iter()
        .map(|&i| parsed[i].subject().to_string())
        .collect();
    let others: Vec<Vec<u8>> = order[1..]
        .iter()
        .map(|&i| contents.certificates[i].clone())
        .collect();
    let leaf_der = &contents.certificates[leaf];
    let outcome = trust.evaluate_from(leaf_der, &others, ChainSource::File, now);

    let info = cert::analyze(leaf_der, now).map_err(|e| corrupt(e.to_string()))?;

    let mut findings = Vec::new();
    if contents.format == FileFormat::Pkcs12 && contents.keys.is_empty() {
        findings.push(Finding::new(
            FindingCode::PfxNoPrivateKey,
            format!(
                "the .pfx holds {} without a private key: it cannot be bound in IIS nor imported into Gateway Manager",
                plural(contents.certificates.len(), "certificate")
            ),
        ));
    }
    if key_status.matches == Some(false) {
        findings.push(Finding::new(
            FindingCode::KeyMismatch,
            format!(
                "the private key in the file ({}) does not belong to the certificate {} (thumbprint {}): their public keys differ",
                key_status.algorithm.as_deref().unwrap_or("unknown algorithm"),
                info.subject,
                info.thumbprint_sha1
            ),
        ));
    }
    // The same path checks as `check`: untrusted root, missing intermediate, invalid
    // certificate on the path, and the algorithm rules on the issuers.
    let extra = trust.len().saturating_sub(trust.platform_count());
    for mut finding in triage::chain_findings(&outcome, ChainSource::File) {
        if matches!(
            finding.code,
            FindingCode::CertUntrusted | FindingCode::ChainIncomplete
        ) {
            finding.message.push_str(&format!(
                " ({} in the file; trust store: {} platform roots, {} from --ca-file)",
                plural(contents.certificates.len(), "certificate"),
                trust.platform_count(),
                extra
            ));
        }
        findings.push(finding);
    }
    if contents.format != FileFormat::Pkcs12 {
        let key = if contents.keys.is_empty() {
            "no private key"
        } else {
            "a private key"
        };
        findings.push(Finding::new(
            FindingCode::NotPfx,
            format!(
                "the file is {} holding {} and {key}, not a .pfx: ITMS imports certificates only as PKCS #12 with the private key",
                contents.format.describe(),
                plural(contents.certificates.len(), "certificate")
            ),
        ));
    }
    findings.extend(triage::certificate_findings(
        &info,
        gateway,
        expectations,
        now.unix_timestamp(),
    ));

    Ok(InspectResult {
        file: file.to_string(),
        format: contents.format,
        private_key: key_status,
        chain,
        chain_trusted: outcome.trusted,
        chain_error: outcome.reason,
        certificate: info,
        gateway: gateway.map(str::to_string),
        required_sans: expectations.required_sans.clone(),
        expected_thumbprint: expectations.thumbprint.as_ref().map(|t| t.to_string()),
        min_days_left: expectations.min_days_left,
        verdict: verdict(&findings),
        findings,
        path_der: if outcome.trusted {
            outcome.path_der
        } else {
            Vec::new()
        },
    })
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show_in_debug_output() {
        let p = Password::new("s3cret-Pa55".into());
        assert!(!format!("{p:?}").contains("s3cret"));
        let from_file = Password::from_file_content("s3cret-Pa55\r\n");
        assert_eq!(from_file, p);
        assert_eq!(Password::from_file_content("a b\n\n").as_str(), "a b\n");
    }

    #[test]
    fn the_format_comes_from_the_content() {
        let err = |bytes: &[u8]| load("f", bytes, None).expect_err("not a certificate");
        assert!(matches!(err(b""), InspectError::Empty { .. }));
        assert!(matches!(err(b" \n"), InspectError::Empty { .. }));
        assert!(matches!(
            err(b"hello, world"),
            InspectError::Unrecognized { .. }
        ));
        // A SEQUENCE announcing 0x0123 bytes of PKCS#12 (INTEGER version first), cut short.
        assert!(matches!(
            err(&[0x30, 0x82, 0x01, 0x23, 0x02, 0x01, 0x03]),
            InspectError::Truncated {
                format: FileFormat::Pkcs12,
                declared: 0x0127,
                actual: 7,
                ..
            }
        ));
        assert!(matches!(
            err(&[0x30, 0x05, 0x30, 0x03, 0x02, 0x01]),
            InspectError::Truncated {
                format: FileFormat::Der,
                ..
            }
        ));
        assert!(matches!(
            err(b"-----BEGIN CERTIFICATE-----\nMIIB\n"),
            InspectError::Corrupt {
                format: FileFormat::Pem,
                ..
            }
        ));
        assert!(matches!(
            err(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n"),
            InspectError::EncryptedPemKey { .. }
        ));
    }

    #[test]
    fn rsa_bits_are_counted_from_the_modulus() {
        let key = PublicKey::Rsa {
            modulus: [&[0x80u8][..], &[0u8; 255][..]].concat(),
            exponent: vec![1, 0, 1],
        };
        assert_eq!(key.describe(), "RSA 2048 bits");
        assert_eq!(PublicKey::Ec(vec![4; 65]).describe(), "EC P-256");
    }
}
