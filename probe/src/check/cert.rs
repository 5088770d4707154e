//! Certificate analysis: what a certificate is (thumbprints, names, validity, key, signature,
//! EKUs) and whether a chain leads to a trusted root.
//!
//! Trust is evaluated here, not by rustls' verifier, on purpose: a verifier rejects a chain for
//! a SHA-1 signature, a 1024-bit key or a client-only EKU and calls all of them "untrusted",
//! while an administrator needs to be told each defect by its own name. So the chain builder
//! below answers exactly one question: does the chain reach a root in the trust store, with
//! signatures that verify? Legacy algorithms (SHA-1, small RSA keys) are verified with ring's
//! legacy verifiers; MD5 and MD2 cannot be verified and are accepted structurally here, because
//! `signature_insecure` reports them.

use std::collections::HashMap;
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::x509::SubjectPublicKeyInfo;

use cemwatch_shared::CertificateInfo;

/// The longest chain the builder follows; a hostile server cannot make it loop or dig deeper.
pub const MAX_CHAIN_DEPTH: usize = 8;

/// Why a certificate could not be analysed.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The bytes are not a DER X.509 certificate.
    #[error("not a valid X.509 certificate: {0}")]
    Parse(String),
    /// A CA file could not be read.
    #[error("cannot read CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What went wrong, and what to do.
        reason: String,
    },
}

/// Parses DER into an X.509 certificate, refusing trailing garbage.
pub fn parse(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    cemwatch_transport::x509::parse(der).map_err(|e| CertError::Parse(e.0))
}

pub use cemwatch_transport::x509::{fingerprint_sha256, hex_upper, thumbprint_sha1};

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// Analyses a leaf certificate as of `now`.
pub fn analyze(der: &[u8], now: OffsetDateTime) -> Result<CertificateInfo, CertError> {
    let cert = parse(der)?;
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let days_left = (not_after - now.unix_timestamp()).div_euclid(86_400);

    let mut san_dns = Vec::new();
    let mut san_ip = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => san_dns.push(dns.to_string()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        san_ip.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }

    let (eku_present, eku) = match cert.extended_key_usage() {
        Ok(Some(ext)) => {
            let e = ext.value;
            let mut names = Vec::new();
            for (set, name) in [
                (e.server_auth, "serverAuth"),
                (e.client_auth, "clientAuth"),
                (e.code_signing, "codeSigning"),
                (e.email_protection, "emailProtection"),
                (e.time_stamping, "timeStamping"),
                (e.ocsp_signing, "OCSPSigning"),
                (e.any, "anyExtendedKeyUsage"),
            ] {
                if set {
                    names.push(name.to_string());
                }
            }
            names.extend(e.other.iter().map(|oid| oid.to_id_string()));
            (true, names)
        }
        // A malformed EKU extension is as good as none for IIS.
        _ => (false, Vec::new()),
    };

    let (key_algorithm, key_bits, key_curve) = describe_key(cert.public_key());
    let signature_oid = cert.signature_algorithm.algorithm.to_id_string();
    let (signature_algorithm, signature_hash) = describe_signature(&cert, &signature_oid);

    Ok(CertificateInfo {
        thumbprint_sha1: thumbprint_sha1(der),
        fingerprint_sha256: fingerprint_sha256(der),
        subject: display_name(&cert.subject().to_string()),
        issuer: display_name(&cert.issuer().to_string()),
        serial: hex_upper(cert.raw_serial()),
        san_dns,
        san_ip,
        not_before: rfc3339(not_before),
        not_before_unix: not_before,
        not_after: rfc3339(not_after),
        not_after_unix: not_after,
        days_left,
        key_algorithm,
        key_bits,
        key_curve,
        signature_algorithm,
        signature_hash,
        eku,
        eku_present,
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
    })
}

fn display_name(name: &str) -> String {
    if name.is_empty() {
        "(empty)".to_string()
    } else {
        name.to_string()
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

pub(crate) fn describe_key(spki: &SubjectPublicKeyInfo<'_>) -> (String, u32, Option<String>) {
    let oid = spki.algorithm.algorithm.to_id_string();
    let bits = spki
        .parsed()
        .map(|k| u32::try_from(k.key_size()).unwrap_or(0))
        .unwrap_or(0);
    match oid.as_str() {
        "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => ("RSA".into(), bits, None),
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|c| match c.to_id_string().as_str() {
                    "1.2.840.10045.3.1.7" => "P-256".to_string(),
                    "1.3.132.0.34" => "P-384".to_string(),
                    "1.3.132.0.35" => "P-521".to_string(),
                    other => other.to_string(),
                });
            let bits = match curve.as_deref() {
                Some("P-256") => 256,
                Some("P-384") => 384,
                Some("P-521") => 521,
                _ => bits,
            };
            ("EC".into(), bits, curve)
        }
        "1.3.101.112" => ("Ed25519".into(), 256, None),
        "1.3.101.113" => ("Ed448".into(), 456, None),
        "1.2.840.10040.4.1" => ("DSA".into(), bits, None),
        other => (other.to_string(), bits, None),
    }
}

fn describe_signature(cert: &X509Certificate<'_>, oid: &str) -> (String, String) {
    let (name, hash) = match oid {
        "1.2.840.113549.1.1.2" => ("md2WithRSAEncryption", "md2"),
        "1.2.840.113549.1.1.3" => ("md4WithRSAEncryption", "md4"),
        "1.2.840.113549.1.1.4" => ("md5WithRSAEncryption", "md5"),
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" => ("sha1WithRSAEncryption", "sha1"),
        "1.2.840.113549.1.1.14" => ("sha224WithRSAEncryption", "sha224"),
        "1.2.840.113549.1.1.11" => ("sha256WithRSAEncryption", "sha256"),
        "1.2.840.113549.1.1.12" => ("sha384WithRSAEncryption", "sha384"),
        "1.2.840.113549.1.1.13" => ("sha512WithRSAEncryption", "sha512"),
        "1.2.840.10045.4.1" => ("ecdsa-with-SHA1", "sha1"),
        "1.2.840.10045.4.3.2" => ("ecdsa-with-SHA256", "sha256"),
        "1.2.840.10045.4.3.3" => ("ecdsa-with-SHA384", "sha384"),
        "1.2.840.10045.4.3.4" => ("ecdsa-with-SHA512", "sha512"),
        "1.2.840.10040.4.3" => ("dsa-with-SHA1", "sha1"),
        "1.3.101.112" => ("Ed25519", "sha512"),
        "1.2.840.113549.1.1.10" => {
            let hash = pss_hash(cert).unwrap_or("sha1");
            return (format!("rsassaPss({hash})"), hash.to_string());
        }
        other => return (other.to_string(), "unknown".to_string()),
    };
    (name.to_string(), hash.to_string())
}

fn pss_hash(cert: &X509Certificate<'_>) -> Option<&'static str> {
    use x509_parser::signature_algorithm::SignatureAlgorithm;
    match SignatureAlgorithm::try_from(&cert.signature_algorithm).ok()? {
        SignatureAlgorithm::RSASSA_PSS(params) => {
            Some(match params.hash_algorithm_oid().to_id_string().as_str() {
                "2.16.840.1.101.3.4.2.1" => "sha256",
                "2.16.840.1.101.3.4.2.2" => "sha384",
                "2.16.840.1.101.3.4.2.3" => "sha512",
                _ => "sha1",
            })
        }
        _ => None,
    }
}

/// Whether a certificate name list covers `name` (DNS names with RFC 6125 left-most-label
/// wildcards, or IP addresses), case-insensitively and ignoring a trailing dot.
pub fn covers_name(info: &CertificateInfo, name: &str) -> bool {
    let wanted = name.trim_end_matches('.').to_ascii_lowercase();
    if let Ok(ip) = wanted.parse::<std::net::IpAddr>() {
        return info
            .san_ip
            .iter()
            .any(|s| s.parse::<std::net::IpAddr>().ok() == Some(ip));
    }
    info.san_dns.iter().any(|pattern| {
        let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
        if let Some(suffix) = pattern.strip_prefix("*.") {
            match wanted.split_once('.') {
                Some((label, rest)) => !label.is_empty() && rest == suffix,
                None => false,
            }
        } else {
            pattern == wanted
        }
    })
}

/// The outcome of one signature check on a chain link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Valid,
    Invalid,
    /// The algorithm cannot be verified (MD5, MD2): reported as `signature_insecure`.
    Unverifiable,
}

fn verify_link(child: &X509Certificate<'_>, signer: &SubjectPublicKeyInfo<'_>) -> Link {
    use ring::signature;
    let oid = child.signature_algorithm.algorithm.to_id_string();
    let legacy_rsa: Option<&'static dyn signature::VerificationAlgorithm> = match oid.as_str() {
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" => {
            Some(&signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY)
        }
        "1.2.840.113549.1.1.11" => Some(&signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY),
        "1.2.840.113549.1.1.12" => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
        "1.2.840.113549.1.1.13" => Some(&signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY),
        "1.2.840.113549.1.1.2" | "1.2.840.113549.1.1.3" | "1.2.840.113549.1.1.4" => {
            return Link::Unverifiable
        }
        _ => None,
    };
    let outcome = match legacy_rsa {
        Some(alg) => signature::UnparsedPublicKey::new(alg, &signer.subject_public_key.data)
            .verify(child.tbs_certificate.as_ref(), &child.signature_value.data)
            .is_ok(),
        None => match child.verify_signature(Some(signer)) {
            Ok(()) => true,
            Err(x509_parser::error::X509Error::SignatureUnsupportedAlgorithm) => {
                return Link::Unverifiable
            }
            Err(_) => false,
        },
    };
    if outcome {
        Link::Valid
    } else {
        Link::Invalid
    }
}

/// The trust anchors: the platform store (what the agents trust) plus CA files.
#[derive(Debug, Default, Clone)]
pub struct TrustStore {
    anchors: Vec<Vec<u8>>,
    by_subject: HashMap<Vec<u8>, Vec<usize>>,
    platform_count: usize,
    platform_errors: Vec<String>,
}

impl TrustStore {
    /// An empty store (nothing is trusted).
    pub fn empty() -> Self {
        Self::default()
    }

    /// The platform's trust store (Windows store, macOS keychain, or the system CA bundle on
    /// Linux, honouring `SSL_CERT_FILE` and `SSL_CERT_DIR`).
    pub fn platform() -> Self {
        let mut store = Self::default();
        let result = rustls_native_certs::load_native_certs();
        for cert in result.certs {
            store.add_der(cert.as_ref().to_vec());
        }
        store.platform_count = store.anchors.len();
        store.platform_errors = result.errors.iter().map(|e| e.to_string()).collect();
        store
    }

    /// Adds every certificate of a PEM file (or a single DER certificate).
    pub fn add_file(&mut self, path: &Path) -> Result<usize, CertError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| CertError::CaFile {
            path: shown.clone(),
            reason: format!("{e}; give the path of a PEM file holding the root CA certificate"),
        })?;
        let mut added = 0;
        if bytes.first() == Some(&0x30) && parse(&bytes).is_ok() {
            self.add_der(bytes);
            return Ok(1);
        }
        for item in CertificateDer::pem_slice_iter(&bytes) {
            let cert = item.map_err(|e| CertError::CaFile {
                path: shown.clone(),
                reason: format!("malformed PEM ({e})"),
            })?;
            parse(cert.as_ref()).map_err(|e| CertError::CaFile {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
            self.add_der(cert.as_ref().to_vec());
            added += 1;
        }
        if added == 0 {
            return Err(CertError::CaFile {
                path: shown,
                reason: "no certificate found: expected PEM blocks \"-----BEGIN CERTIFICATE-----\" or one DER certificate".into(),
            });
        }
        Ok(added)
    }

    /// Adds one DER certificate as a trust anchor (ignored when it does not parse).
    pub fn add_der(&mut self, der: Vec<u8>) {
        let subject = match parse(&der) {
            Ok(cert) => cert.subject().as_raw().to_vec(),
            Err(_) => return,
        };
        let index = self.anchors.len();
        self.anchors.push(der);
        self.by_subject.entry(subject).or_default().push(index);
    }

    /// Number of anchors.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Whether the store has no anchors.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// How many anchors came from the platform.
    pub fn platform_count(&self) -> usize {
        self.platform_count
    }

    /// Errors met while loading the platform store.
    pub fn platform_errors(&self) -> &[String] {
        &self.platform_errors
    }

    /// Evaluates whether `leaf` with the server's `intermediates` reaches a trusted root.
    pub fn evaluate(&self, leaf: &[u8], intermediates: &[Vec<u8>]) -> TrustOutcome {
        self.evaluate_from(leaf, intermediates, ChainSource::Server)
    }

    /// Evaluates whether `leaf` with `intermediates` reaches a trusted root; `source` says
    /// where the intermediates came from, so that the reason names the right culprit.
    pub fn evaluate_from(
        &self,
        leaf: &[u8],
        intermediates: &[Vec<u8>],
        source: ChainSource,
    ) -> TrustOutcome {
        let leaf = match parse(leaf) {
            Ok(c) => c,
            Err(e) => {
                return TrustOutcome::untrusted(format!("the leaf certificate is unreadable: {e}"))
            }
        };
        let parsed: Vec<X509Certificate<'_>> = intermediates
            .iter()
            .take(MAX_CHAIN_DEPTH)
            .filter_map(|der| parse(der).ok())
            .collect();
        let mut used = vec![false; parsed.len()];
        let mut current = &leaf;
        let mut current_der: &[u8] = leaf.as_ref();
        let mut bad_signature: Option<String> = None;
        for _ in 0..=MAX_CHAIN_DEPTH {
            // The certificate itself is an anchor (a pinned self-signed certificate, or a root
            // the server sent along).
            if self.anchors.iter().any(|a| a.as_slice() == current_der) {
                return TrustOutcome::trusted();
            }
            let issuer = current.issuer().as_raw();
            if let Some(indexes) = self.by_subject.get(issuer) {
                for &i in indexes {
                    let Ok(anchor) = parse(&self.anchors[i]) else {
                        continue;
                    };
                    match verify_link(current, anchor.public_key()) {
                        Link::Valid | Link::Unverifiable => return TrustOutcome::trusted(),
                        Link::Invalid => {
                            bad_signature = Some(format!(
                            "the signature on \"{}\" does not verify with the trusted root \"{}\"",
                            current.subject(),
                            anchor.subject()
                        ))
                        }
                    }
                }
            }
            let next = parsed.iter().enumerate().find(|(i, c)| {
                !used[*i]
                    && c.subject().as_raw() == issuer
                    && c.subject().as_raw() != current.subject().as_raw()
                    && verify_link(current, c.public_key()) != Link::Invalid
            });
            match next {
                Some((i, cert)) => {
                    used[i] = true;
                    current = cert;
                    current_der = cert.as_ref();
                }
                None => break,
            }
        }
        if let Some(reason) = bad_signature {
            return TrustOutcome::untrusted(reason);
        }
        let reason = if current.subject().as_raw() == current.issuer().as_raw() {
            format!(
                "the self-signed certificate \"{}\" is not in the trust store",
                current.subject()
            )
        } else {
            format!(
                "the issuer \"{}\" is not a trusted root and {}",
                current.issuer(),
                match source {
                    ChainSource::Server => "the server did not send it",
                    ChainSource::File => "the file does not hold it",
                }
            )
        };
        TrustOutcome::untrusted(reason)
    }
}

/// Where the certificates besides the leaf come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainSource {
    /// Sent by a server in the TLS handshake.
    Server,
    /// Read from a certificate file.
    File,
}

/// Whether a chain reaches a trusted root, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustOutcome {
    /// The chain reaches an anchor.
    pub trusted: bool,
    /// Why not.
    pub reason: Option<String>,
}

impl TrustOutcome {
    fn trusted() -> Self {
        Self {
            trusted: true,
            reason: None,
        }
    }
    fn untrusted(reason: String) -> Self {
        Self {
            trusted: false,
            reason: Some(reason),
        }
    }
}
