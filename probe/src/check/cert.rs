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
    Ok(analyze_parsed(&parse(der)?, now))
}

/// Analyses a parsed leaf certificate as of `now` (a check parses the chain once).
pub fn analyze_parsed(cert: &X509Certificate<'_>, now: OffsetDateTime) -> CertificateInfo {
    let der = cert.as_ref();
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
    let (signature_algorithm, signature_hash) = describe_signature(cert, &signature_oid);

    CertificateInfo {
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
    }
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
#[derive(Debug, Clone, PartialEq, Eq)]
enum Link {
    Valid,
    Invalid,
    /// The algorithm cannot be verified (MD5, MD2, or one ring and x509-parser do not
    /// support): never trusted. Carries the algorithm's name.
    Unverifiable(String),
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
            return Link::Unverifiable(describe_signature(child, &oid).0)
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
                return Link::Unverifiable(describe_signature(child, &oid).0)
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

/// How many link verdicts [`LinkCache`] keeps.
///
/// A check evaluates at most [`MAX_CANDIDATES_TRIED`] = 64 links, and a probe watches a few
/// gateways whose chains have two or three links each, so 256 entries hold every link of the
/// fleet's chains with room for a hostile server's 64 at once; an entry is a 32-byte digest
/// and a verdict, about 8 KiB in all with the map's overhead.
pub const LINK_CACHE_ENTRIES: usize = 256;

/// The verdicts of the signature checks already made on chain links, so that a gateway's
/// unchanged chain costs no public-key operation after its first check.
///
/// A link's verdict is a pure function of the child certificate's bytes (what is signed, the
/// algorithm and the signature) and the signer's public key: it does not depend on the time
/// (validity is judged on every path, separately) nor on anything the server can vary without
/// changing those bytes. The key is SHA-256 over both, length-prefixed, which is the hash
/// X.509 signatures themselves rest on; a certificate that differs in one byte (a forged
/// signature, another serial) is another key and is verified. Entries are evicted oldest
/// first, so a hostile server that sends new chains can only make the probe verify, as it
/// did before the cache.
#[derive(Debug, Default)]
pub struct LinkCache {
    inner: std::sync::Mutex<LinkCacheInner>,
}

#[derive(Debug, Default)]
struct LinkCacheInner {
    verdicts: HashMap<[u8; 32], bool>,
    order: std::collections::VecDeque<[u8; 32]>,
    verified: u64,
}

impl Clone for LinkCache {
    /// A clone starts empty: verdicts are cheap to recompute and not worth sharing.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl LinkCache {
    fn key(child: &X509Certificate<'_>, signer: &SubjectPublicKeyInfo<'_>) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [child.as_ref(), signer.raw] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        key
    }

    /// The verdict on `child` signed by `signer`, verified only when not already known.
    fn verify(&self, child: &X509Certificate<'_>, signer: &SubjectPublicKeyInfo<'_>) -> Link {
        let key = Self::key(child, signer);
        if let Some(&valid) = self.lock().verdicts.get(&key) {
            return if valid { Link::Valid } else { Link::Invalid };
        }
        // Verified outside the lock: concurrent checks do not wait for each other's RSA.
        let link = verify_link(child, signer);
        let valid = match link {
            Link::Valid => true,
            Link::Invalid => false,
            // Nothing was computed: nothing to keep.
            Link::Unverifiable(_) => return link,
        };
        let mut inner = self.lock();
        inner.verified += 1;
        if inner.verdicts.insert(key, valid).is_none() {
            inner.order.push_back(key);
            while inner.order.len() > LINK_CACHE_ENTRIES {
                if let Some(old) = inner.order.pop_front() {
                    inner.verdicts.remove(&old);
                }
            }
        }
        link
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LinkCacheInner> {
        // A panic elsewhere cannot leave a wrong verdict behind (an entry is inserted whole).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Signatures verified so far (each verdict not found in the cache).
    pub fn verified(&self) -> u64 {
        self.lock().verified
    }

    /// Verdicts held.
    pub fn len(&self) -> usize {
        self.lock().verdicts.len()
    }

    /// Whether no verdict is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The most certificates the builder considers besides the leaf: what a server sends beyond
/// this is ignored (a real chain has two or three).
pub const MAX_SERVED_CERTIFICATES: usize = 16;

/// The most candidate issuers the path search tries in one evaluation, all paths together.
///
/// Each try is one signature verification (the only costly step), so this bounds the work a
/// hostile server can cause. Without it, a server that sends [`MAX_SERVED_CERTIFICATES`] = 16
/// certificates with the same subject, each cross-signing the others, offers 16 candidates at
/// every level, and a search to [`MAX_CHAIN_DEPTH`] = 8 certificates (7 links) would explore up
/// to 16^7 ≈ 2.7 × 10^8 paths. With the bound: at most 64 signature verifications (RSA-8192
/// verifies in under a millisecond, RSA-2048 in about 50 µs), at most 65 nodes visited (each
/// descent follows one verified signature), each scanning at most 16 served certificates plus
/// the anchors with the wanted subject, and at most 64 complete paths checked (8 certificates
/// each, no cryptography): a few milliseconds in the worst case, whatever the server sends.
pub const MAX_CANDIDATES_TRIED: usize = 64;

/// A certificate on a path: one the server (or the file) holds, or a trust anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Served(usize),
    Anchor(usize),
}

/// What is wrong with one certificate of a path that reaches a trust anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Defect {
    /// The served (leaf) certificate is itself a CA: the gateway is bound to its issuer's
    /// certificate, or the chain is out of order.
    LeafIsCa {
        /// The certificate.
        subject: String,
    },
    /// An issuing certificate has expired.
    Expired {
        /// The certificate.
        subject: String,
        /// Its notAfter, RFC 3339.
        not_after: String,
    },
    /// An issuing certificate is not valid yet.
    NotYetValid {
        /// The certificate.
        subject: String,
        /// Its notBefore, RFC 3339.
        not_before: String,
    },
    /// An intermediate lacks basicConstraints CA:TRUE.
    NotCa {
        /// The certificate.
        subject: String,
    },
    /// An intermediate has a keyUsage without keyCertSign.
    NoKeyCertSign {
        /// The certificate.
        subject: String,
    },
    /// More CA certificates below a CA than its pathLenConstraint allows.
    PathLenExceeded {
        /// The certificate.
        subject: String,
        /// Its pathLenConstraint.
        limit: u32,
        /// Intermediates below it on the path.
        below: usize,
    },
    /// An intermediate's Extended Key Usage excludes Server Authentication.
    EkuExcludesServerAuth {
        /// The certificate.
        subject: String,
        /// The EKUs it lists.
        eku: Vec<String>,
    },
    /// A signature on the path cannot be verified (its algorithm is unsupported or unknown).
    Unverifiable {
        /// The certificate whose signature cannot be verified.
        subject: String,
        /// Who signed it.
        issuer: String,
        /// The signature algorithm.
        algorithm: String,
        /// MD5, MD4 or MD2: `signature_insecure` reports it.
        insecure: bool,
    },
}

impl Defect {
    /// The certificate at fault.
    pub fn subject(&self) -> &str {
        match self {
            Defect::LeafIsCa { subject }
            | Defect::Expired { subject, .. }
            | Defect::NotYetValid { subject, .. }
            | Defect::NotCa { subject }
            | Defect::NoKeyCertSign { subject }
            | Defect::PathLenExceeded { subject, .. }
            | Defect::EkuExcludesServerAuth { subject, .. }
            | Defect::Unverifiable { subject, .. } => subject,
        }
    }

    /// One sentence naming the certificate and what is wrong with it.
    pub fn describe(&self) -> String {
        match self {
            Defect::LeafIsCa { subject } => format!(
                "the served certificate \"{subject}\" is a CA certificate (basicConstraints CA:TRUE), not a server certificate"
            ),
            Defect::Expired { subject, not_after } => {
                format!("the CA certificate \"{subject}\" on the path expired on {not_after}")
            }
            Defect::NotYetValid { subject, not_before } => format!(
                "the CA certificate \"{subject}\" on the path is valid only from {not_before}"
            ),
            Defect::NotCa { subject } => format!(
                "the intermediate \"{subject}\" is not a CA (no basicConstraints CA:TRUE) and cannot issue certificates"
            ),
            Defect::NoKeyCertSign { subject } => format!(
                "the intermediate \"{subject}\" has a keyUsage without keyCertSign and cannot issue certificates"
            ),
            Defect::PathLenExceeded {
                subject,
                limit,
                below,
            } => format!(
                "the CA certificate \"{subject}\" allows {limit} intermediate CA(s) below it (pathLenConstraint), the path has {below}"
            ),
            Defect::EkuExcludesServerAuth { subject, eku } => format!(
                "the intermediate \"{subject}\" is restricted to {} (Extended Key Usage), which excludes Server Authentication",
                eku.join(", ")
            ),
            Defect::Unverifiable {
                subject,
                issuer,
                algorithm,
                ..
            } => format!(
                "the signature of \"{issuer}\" on \"{subject}\" uses {algorithm}, which cannot be verified"
            ),
        }
    }
}

/// How a chain fails, when it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainFailure {
    /// The path ends at a root nobody trusts (`cert_untrusted`).
    Untrusted,
    /// An issuer the path needs is neither sent nor in the trust store (`chain_incomplete`).
    Incomplete,
    /// The path reaches a trust anchor, but a certificate on it is invalid, or no path could
    /// be built within the bounds (`chain_invalid`).
    Invalid,
}

/// A certificate above the leaf on the chosen path, as the algorithm rules judge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerCert {
    /// Subject.
    pub subject: String,
    /// A trust anchor (its own signature is not judged).
    pub anchor: bool,
    /// Signature algorithm name (`sha1WithRSAEncryption`).
    pub signature_algorithm: String,
    /// Signature hash (`sha1`, `md5`, `sha256`).
    pub signature_hash: String,
    /// Key algorithm (`RSA`, `EC`).
    pub key_algorithm: String,
    /// Key size in bits.
    pub key_bits: u32,
}

/// Whether a chain reaches a trusted root, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustOutcome {
    /// A path reaches an anchor and every certificate on it is valid.
    pub trusted: bool,
    /// Why not.
    pub reason: Option<String>,
    /// How it fails (`None` when trusted).
    pub failure: Option<ChainFailure>,
    /// What is wrong with the certificates of the chosen path (when it reaches an anchor).
    pub defects: Vec<Defect>,
    /// The certificates above the leaf on the chosen path (or on the longest partial path),
    /// nearest first.
    pub issuers: Vec<IssuerCert>,
    /// Subjects of the chosen path, leaf first.
    pub path: Vec<String>,
    /// Candidate issuers tried (signature verifications), at most [`MAX_CANDIDATES_TRIED`].
    pub candidates_tried: usize,
    /// The certificates of the chosen path (or of the longest partial path), leaf first, as
    /// DER: what the AIA and revocation stages look into.
    pub path_der: Vec<Vec<u8>>,
}

impl TrustOutcome {
    fn failed(failure: ChainFailure, reason: String) -> Self {
        Self {
            trusted: false,
            reason: Some(reason),
            failure: Some(failure),
            defects: Vec::new(),
            issuers: Vec::new(),
            path: Vec::new(),
            candidates_tried: 0,
            path_der: Vec::new(),
        }
    }
}

/// The trust anchors: the platform store (what the agents trust) plus CA files.
#[derive(Debug, Default, Clone)]
pub struct TrustStore {
    anchors: Vec<Vec<u8>>,
    by_subject: HashMap<Vec<u8>, Vec<usize>>,
    platform_count: usize,
    platform_errors: Vec<String>,
    links: LinkCache,
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

    /// The link verdicts this store's evaluations keep.
    pub fn link_cache(&self) -> &LinkCache {
        &self.links
    }

    /// Evaluates, as of now, whether `leaf` with the server's `intermediates` reaches a
    /// trusted root over a valid path.
    pub fn evaluate(&self, leaf: &[u8], intermediates: &[Vec<u8>]) -> TrustOutcome {
        self.evaluate_from(
            leaf,
            intermediates,
            ChainSource::Server,
            OffsetDateTime::now_utc(),
        )
    }

    /// Evaluates whether `leaf` with `intermediates` (in any order, with extra certificates)
    /// reaches a trusted root over a path whose every certificate is valid at `now`; `source`
    /// says where the intermediates came from, so that the reason names the right culprit.
    ///
    /// The search is depth-first with backtracking over every candidate issuer (a served
    /// certificate or an anchor whose subject is the current certificate's issuer, anchors
    /// first), bounded by [`MAX_CHAIN_DEPTH`] certificates per path and
    /// [`MAX_CANDIDATES_TRIED`] signature verifications in all. The first path whose
    /// certificates are all valid wins. Otherwise the outcome reports, in this order of
    /// preference: the path to an anchor with the fewest defects (`chain_invalid`), a path
    /// ending at a self-signed root that is not trusted or at a root whose signature does not
    /// verify (`cert_untrusted`), or the longest partial path, whose top issuer is missing
    /// (`chain_incomplete`).
    pub fn evaluate_from(
        &self,
        leaf: &[u8],
        intermediates: &[Vec<u8>],
        source: ChainSource,
        now: OffsetDateTime,
    ) -> TrustOutcome {
        let leaf_cert = match parse(leaf) {
            Ok(c) => c,
            Err(e) => {
                return TrustOutcome::failed(
                    ChainFailure::Invalid,
                    format!("the leaf certificate is unreadable: {e}"),
                )
            }
        };
        let served: Vec<X509Certificate<'_>> = intermediates
            .iter()
            .take(MAX_SERVED_CERTIFICATES)
            .filter_map(|der| parse(der).ok())
            .collect();
        let served: Vec<&X509Certificate<'_>> = served.iter().collect();
        self.evaluate_parsed(&leaf_cert, &served, source, now)
    }

    /// [`TrustStore::evaluate_from`] with certificates already parsed (a check parses the
    /// served chain once for its analysis and its trust); the first
    /// [`MAX_SERVED_CERTIFICATES`] intermediates are considered.
    pub fn evaluate_parsed(
        &self,
        leaf: &X509Certificate<'_>,
        intermediates: &[&X509Certificate<'_>],
        source: ChainSource,
        now: OffsetDateTime,
    ) -> TrustOutcome {
        let leaf_der = leaf.as_ref();
        // A pinned certificate (a self-signed gateway certificate in the store) is trusted by
        // fiat.
        if self.anchors.iter().any(|a| a.as_slice() == leaf_der) {
            return TrustOutcome {
                trusted: true,
                reason: None,
                failure: None,
                defects: Vec::new(),
                issuers: Vec::new(),
                path: vec![leaf.subject().to_string()],
                candidates_tried: 0,
                path_der: vec![leaf_der.to_vec()],
            };
        }
        let mut served: Vec<&X509Certificate<'_>> = vec![leaf];
        served.extend(
            intermediates
                .iter()
                .take(MAX_SERVED_CERTIFICATES)
                .copied()
                .filter(|c| c.as_ref() != leaf_der),
        );
        let mut search = Search {
            store: self,
            served,
            anchors: HashMap::new(),
            now: now.unix_timestamp(),
            tried: 0,
            exhausted: false,
            too_deep: false,
            best_anchored: None,
            untrusted_root: None,
            longest: vec![Node::Served(0)],
            pending: Vec::new(),
        };
        let mut path = vec![Node::Served(0)];
        let found = search.descend(&mut path);
        search.outcome(found, source)
    }
}

/// One path search: the certificates, the anchors parsed so far, the budget and what the
/// failed branches left behind.
struct Search<'s, 'a> {
    store: &'s TrustStore,
    /// The leaf (index 0), then what the server sent.
    served: Vec<&'a X509Certificate<'a>>,
    anchors: HashMap<usize, X509Certificate<'s>>,
    now: i64,
    tried: usize,
    exhausted: bool,
    too_deep: bool,
    /// The path to an anchor with the fewest defects so far.
    best_anchored: Option<(Vec<Node>, Vec<Defect>)>,
    /// A path ending at a self-signed certificate that is not an anchor, or at an anchor's
    /// name whose signature does not verify, with the reason.
    untrusted_root: Option<(Vec<Node>, String)>,
    /// The longest partial path.
    longest: Vec<Node>,
    /// Defects of the unverifiable links on the current path.
    pending: Vec<Defect>,
}

impl<'s, 'a> Search<'s, 'a> {
    fn cert(&self, node: Node) -> &X509Certificate<'_> {
        match node {
            Node::Served(i) => self.served[i],
            Node::Anchor(i) => &self.anchors[&i],
        }
    }

    fn is_anchor_der(&self, der: &[u8]) -> bool {
        self.store.anchors.iter().any(|a| a.as_slice() == der)
    }

    /// Extends `path` (ending at a served certificate) towards an anchor; returns the first
    /// path whose certificates are all valid.
    fn descend(&mut self, path: &mut Vec<Node>) -> Option<Vec<Node>> {
        let &top = path.last()?;
        if path.len() > self.longest.len() {
            self.longest = path.clone();
        }
        let issuer = self.cert(top).issuer().as_raw().to_vec();
        let top_subject = self.cert(top).subject().as_raw().to_vec();
        // Anchors first: a path that ends sooner is preferred.
        let mut candidates: Vec<Node> = Vec::new();
        let store = self.store;
        if let Some(indexes) = store.by_subject.get(&issuer) {
            for &i in indexes {
                if let std::collections::hash_map::Entry::Vacant(slot) = self.anchors.entry(i) {
                    match parse(&store.anchors[i]) {
                        Ok(c) => {
                            slot.insert(c);
                        }
                        Err(_) => continue,
                    }
                }
                candidates.push(Node::Anchor(i));
            }
        }
        for (i, c) in self.served.iter().enumerate().skip(1) {
            if c.subject().as_raw() == issuer.as_slice()
                && !path.contains(&Node::Served(i))
                // A served copy of an anchor is tried as the anchor.
                && !self.is_anchor_der(c.as_ref())
            {
                candidates.push(Node::Served(i));
            }
        }
        if candidates.is_empty() && issuer == top_subject {
            self.note_untrusted_root(
                path,
                format!(
                    "the path ends at the self-signed certificate \"{}\", which is not in the trust store",
                    self.cert(top).subject()
                ),
            );
        }
        for candidate in candidates {
            // Loops: a certificate with the same subject and key as one already on the path
            // (a cross-signed copy) adds nothing.
            let looping = {
                let c = self.cert(candidate);
                path.iter().any(|&n| {
                    let p = self.cert(n);
                    p.subject().as_raw() == c.subject().as_raw()
                        && p.public_key().raw == c.public_key().raw
                })
            };
            if looping && matches!(candidate, Node::Served(_)) {
                continue;
            }
            if matches!(candidate, Node::Served(_)) && path.len() >= MAX_CHAIN_DEPTH {
                self.too_deep = true;
                continue;
            }
            if self.tried >= MAX_CANDIDATES_TRIED {
                self.exhausted = true;
                return None;
            }
            self.tried += 1;
            let link = self
                .store
                .links
                .verify(self.cert(top), self.cert(candidate).public_key());
            let mut defects = Vec::new();
            match link {
                Link::Invalid => {
                    if matches!(candidate, Node::Anchor(_)) {
                        self.note_untrusted_root(
                            path,
                            format!(
                                "the signature on \"{}\" does not verify with the trusted root \"{}\" (a root with the same name but another key)",
                                self.cert(top).subject(),
                                self.cert(candidate).subject()
                            ),
                        );
                    }
                    continue;
                }
                Link::Unverifiable(algorithm) => {
                    let insecure = matches!(
                        self.cert(top)
                            .signature_algorithm
                            .algorithm
                            .to_id_string()
                            .as_str(),
                        "1.2.840.113549.1.1.2" | "1.2.840.113549.1.1.3" | "1.2.840.113549.1.1.4"
                    );
                    defects.push(Defect::Unverifiable {
                        subject: self.cert(top).subject().to_string(),
                        issuer: self.cert(candidate).subject().to_string(),
                        algorithm,
                        insecure,
                    });
                }
                Link::Valid => {}
            }
            path.push(candidate);
            let found = match candidate {
                Node::Anchor(_) => {
                    let mut all = self.pending.clone();
                    all.extend(defects);
                    all.extend(self.check_path(path));
                    if all.is_empty() {
                        Some(path.clone())
                    } else {
                        let better = self
                            .best_anchored
                            .as_ref()
                            .is_none_or(|(_, d)| all.len() < d.len());
                        if better {
                            self.best_anchored = Some((path.clone(), all));
                        }
                        None
                    }
                }
                Node::Served(_) => {
                    // An unverifiable link is followed only to report the path it would
                    // make: such a path is never trusted.
                    let pushed = defects.len();
                    self.pending.extend(defects);
                    let found = self.descend(path);
                    self.pending.truncate(self.pending.len() - pushed);
                    found
                }
            };
            path.pop();
            if found.is_some() {
                return found;
            }
            if self.exhausted {
                return None;
            }
        }
        None
    }

    fn note_untrusted_root(&mut self, path: &[Node], reason: String) {
        let longer = self
            .untrusted_root
            .as_ref()
            .is_none_or(|(p, _)| path.len() > p.len());
        if longer {
            self.untrusted_root = Some((path.to_vec(), reason));
        }
    }

    /// The checks on a path from the leaf to an anchor, signatures aside: validity of the
    /// issuing certificates, intermediates are CAs allowed to sign certificates for servers,
    /// path lengths, and the leaf is not a CA.
    fn check_path(&self, path: &[Node]) -> Vec<Defect> {
        let mut defects = Vec::new();
        let leaf = self.cert(path[0]);
        if leaf.subject().as_raw() != leaf.issuer().as_raw() && cert_is_ca(leaf) {
            defects.push(Defect::LeafIsCa {
                subject: leaf.subject().to_string(),
            });
        }
        let last = path.len() - 1;
        for (k, &node) in path.iter().enumerate().skip(1) {
            let c = self.cert(node);
            let subject = c.subject().to_string();
            let not_before = c.validity().not_before.timestamp();
            let not_after = c.validity().not_after.timestamp();
            if self.now > not_after {
                defects.push(Defect::Expired {
                    subject: subject.clone(),
                    not_after: rfc3339(not_after),
                });
            } else if self.now < not_before {
                defects.push(Defect::NotYetValid {
                    subject: subject.clone(),
                    not_before: rfc3339(not_before),
                });
            }
            let constraints = c.basic_constraints().ok().flatten().map(|b| b.value);
            if k < last {
                if !constraints.is_some_and(|b| b.ca) {
                    defects.push(Defect::NotCa {
                        subject: subject.clone(),
                    });
                }
                if let Ok(Some(ku)) = c.key_usage() {
                    if !ku.value.key_cert_sign() {
                        defects.push(Defect::NoKeyCertSign {
                            subject: subject.clone(),
                        });
                    }
                }
                if let Ok(Some(eku)) = c.extended_key_usage() {
                    let e = eku.value;
                    if !e.server_auth && !e.any {
                        let mut names: Vec<String> = [
                            (e.client_auth, "clientAuth"),
                            (e.code_signing, "codeSigning"),
                            (e.email_protection, "emailProtection"),
                            (e.time_stamping, "timeStamping"),
                            (e.ocsp_signing, "OCSPSigning"),
                        ]
                        .iter()
                        .filter(|(set, _)| *set)
                        .map(|(_, n)| n.to_string())
                        .collect();
                        names.extend(e.other.iter().map(|oid| oid.to_id_string()));
                        if names.is_empty() {
                            names.push("no purpose".into());
                        }
                        defects.push(Defect::EkuExcludesServerAuth {
                            subject: subject.clone(),
                            eku: names,
                        });
                    }
                }
            }
            // Intermediates below this CA on the path (the leaf is not counted).
            let below = k - 1;
            if let Some(limit) = constraints.and_then(|b| b.path_len_constraint) {
                if usize::try_from(limit).is_ok_and(|l| below > l) {
                    defects.push(Defect::PathLenExceeded {
                        subject,
                        limit,
                        below,
                    });
                }
            }
        }
        defects
    }

    fn issuers(&self, path: &[Node]) -> Vec<IssuerCert> {
        path.iter()
            .skip(1)
            .map(|&n| {
                let c = self.cert(n);
                let oid = c.signature_algorithm.algorithm.to_id_string();
                let (signature_algorithm, signature_hash) = describe_signature(c, &oid);
                let (key_algorithm, key_bits, _) = describe_key(c.public_key());
                IssuerCert {
                    subject: c.subject().to_string(),
                    anchor: matches!(n, Node::Anchor(_)),
                    signature_algorithm,
                    signature_hash,
                    key_algorithm,
                    key_bits,
                }
            })
            .collect()
    }

    fn subjects(&self, path: &[Node]) -> Vec<String> {
        path.iter()
            .map(|&n| self.cert(n).subject().to_string())
            .collect()
    }

    fn outcome(&self, found: Option<Vec<Node>>, source: ChainSource) -> TrustOutcome {
        let result = |trusted: bool,
                      failure: Option<ChainFailure>,
                      reason: Option<String>,
                      defects: Vec<Defect>,
                      path: &[Node]| TrustOutcome {
            trusted,
            reason,
            failure,
            defects,
            issuers: self.issuers(path),
            path: self.subjects(path),
            candidates_tried: self.tried,
            path_der: path
                .iter()
                .map(|&n| self.cert(n).as_ref().to_vec())
                .collect(),
        };
        if let Some(path) = found {
            return result(true, None, None, Vec::new(), &path);
        }
        if let Some((path, defects)) = &self.best_anchored {
            let reason = defects
                .iter()
                .map(Defect::describe)
                .collect::<Vec<_>>()
                .join("; ");
            return result(
                false,
                Some(ChainFailure::Invalid),
                Some(reason),
                defects.clone(),
                path,
            );
        }
        if self.exhausted {
            return result(
                false,
                Some(ChainFailure::Invalid),
                Some(format!(
                    "no valid path found after trying {MAX_CANDIDATES_TRIED} candidate issuers among the {} certificates {}: serve only the gateway certificate and its own intermediates",
                    self.served.len() - 1,
                    match source {
                        ChainSource::Server => "the server sent",
                        ChainSource::File => "of the file",
                    }
                )),
                Vec::new(),
                &self.longest,
            );
        }
        if let Some((path, reason)) = &self.untrusted_root {
            return result(
                false,
                Some(ChainFailure::Untrusted),
                Some(reason.clone()),
                Vec::new(),
                path,
            );
        }
        if self.too_deep {
            return result(
                false,
                Some(ChainFailure::Invalid),
                Some(format!(
                    "no path to a trusted root within {MAX_CHAIN_DEPTH} certificates"
                )),
                Vec::new(),
                &self.longest,
            );
        }
        let top = self.cert(*self.longest.last().unwrap_or(&Node::Served(0)));
        let reason = format!(
            "the issuer \"{}\" of \"{}\" is missing: {} and it is not in the trust store",
            top.issuer(),
            top.subject(),
            match source {
                ChainSource::Server => "the server did not send it",
                ChainSource::File => "the file does not hold it",
            }
        );
        result(
            false,
            Some(ChainFailure::Incomplete),
            Some(reason),
            Vec::new(),
            &self.longest,
        )
    }
}

fn cert_is_ca(cert: &X509Certificate<'_>) -> bool {
    cert.basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca)
}

/// Where the certificates besides the leaf come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainSource {
    /// Sent by a server in the TLS handshake.
    Server,
    /// Read from a certificate file.
    File,
}

#[cfg(test)]
mod path_tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    use time::Duration;

    fn key() -> KeyPair {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key")
    }

    fn params(name: &str, ca: bool) -> CertificateParams {
        let sans = if ca {
            vec![]
        } else {
            vec!["gateway.example.com".to_string()]
        };
        let mut p = CertificateParams::new(sans).expect("params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::days(1);
        p.not_after = now + Duration::days(365);
        if ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        } else {
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        }
        p
    }

    /// A certificate with these parameters and key, signed by (issuer parameters, key).
    fn sign(p: &CertificateParams, key: &KeyPair, by: (&CertificateParams, &KeyPair)) -> Vec<u8> {
        p.signed_by(key, &Issuer::from_params(by.0, by.1))
            .expect("sign")
            .der()
            .to_vec()
    }

    fn self_signed(p: &CertificateParams, key: &KeyPair) -> Vec<u8> {
        p.self_signed(key).expect("self-sign").der().to_vec()
    }

    /// Root (trusted) → "Issuing CA" → leaf.
    struct Pki {
        root: (CertificateParams, KeyPair),
        root_der: Vec<u8>,
        int: (CertificateParams, KeyPair),
        int_der: Vec<u8>,
        leaf_der: Vec<u8>,
    }

    fn pki_with(int_params: CertificateParams) -> Pki {
        let root = (params("Test Root", true), key());
        let root_der = self_signed(&root.0, &root.1);
        let int = (int_params, key());
        let int_der = sign(&int.0, &int.1, (&root.0, &root.1));
        let leaf_der = sign(
            &params("gateway.example.com", false),
            &key(),
            (&int.0, &int.1),
        );
        Pki {
            root,
            root_der,
            int,
            int_der,
            leaf_der,
        }
    }

    fn pki() -> Pki {
        pki_with(params("Issuing CA", true))
    }

    fn store(anchors: &[&Vec<u8>]) -> TrustStore {
        let mut s = TrustStore::empty();
        for a in anchors {
            s.add_der((*a).clone());
        }
        s
    }

    fn eval(store: &TrustStore, leaf: &[u8], served: &[&Vec<u8>]) -> TrustOutcome {
        let served: Vec<Vec<u8>> = served.iter().map(|d| (*d).clone()).collect();
        store.evaluate_from(
            leaf,
            &served,
            ChainSource::Server,
            OffsetDateTime::now_utc(),
        )
    }

    #[test]
    fn a_good_chain_is_trusted_in_any_order_with_extra_certificates() {
        let p = pki();
        let s = store(&[&p.root_der]);
        let ok = eval(&s, &p.leaf_der, &[&p.int_der]);
        assert!(ok.trusted, "{ok:?}");
        assert_eq!(ok.path.len(), 3, "{:?}", ok.path);
        assert_eq!(ok.issuers.len(), 2);
        assert!(ok.issuers[1].anchor);
        let stranger = self_signed(&params("Unrelated CA", true), &key());
        let shuffled = eval(&s, &p.leaf_der, &[&stranger, &p.root_der, &p.int_der]);
        assert!(shuffled.trusted, "{shuffled:?}");
        assert_eq!(shuffled.path, ok.path);
    }

    #[test]
    fn the_builder_backtracks_past_an_expired_copy_of_the_intermediate() {
        let p = pki();
        let mut old = p.int.0.clone();
        let now = OffsetDateTime::now_utc();
        old.not_before = now - Duration::days(800);
        old.not_after = now - Duration::days(10);
        // Same name and key as the good intermediate, expired, sent first.
        let expired = sign(&old, &p.int.1, (&p.root.0, &p.root.1));
        let s = store(&[&p.root_der]);
        let out = eval(&s, &p.leaf_der, &[&expired, &p.int_der]);
        assert!(out.trusted, "{out:?}");
        // Alone, the expired one is a chain_invalid naming it.
        let out = eval(&s, &p.leaf_der, &[&expired]);
        assert!(!out.trusted);
        assert_eq!(out.failure, Some(ChainFailure::Invalid));
        assert!(
            matches!(&out.defects[..], [Defect::Expired { subject, .. }] if subject.contains("Issuing CA")),
            "{:?}",
            out.defects
        );
    }

    #[test]
    fn a_cross_signed_path_is_found_past_an_untrusted_new_root() {
        // Leaf ← Issuing CA ← New Root; New Root is self-signed (untrusted) and cross-signed
        // by Old Root (trusted).
        let old_root = (params("Old Root", true), key());
        let old_root_der = self_signed(&old_root.0, &old_root.1);
        let new_root = (params("New Root", true), key());
        let new_root_self = self_signed(&new_root.0, &new_root.1);
        let new_root_cross = sign(&new_root.0, &new_root.1, (&old_root.0, &old_root.1));
        let int = (params("Issuing CA", true), key());
        let int_der = sign(&int.0, &int.1, (&new_root.0, &new_root.1));
        let leaf = sign(
            &params("gateway.example.com", false),
            &key(),
            (&int.0, &int.1),
        );
        let s = store(&[&old_root_der]);
        let out = eval(&s, &leaf, &[&int_der, &new_root_self, &new_root_cross]);
        assert!(out.trusted, "{out:?}");
        assert_eq!(out.path.len(), 4, "{:?}", out.path);
        assert!(out.path[3].contains("Old Root"));
        // Without the cross-signed copy the path ends at a root nobody trusts.
        let out = eval(&s, &leaf, &[&int_der, &new_root_self]);
        assert_eq!(out.failure, Some(ChainFailure::Untrusted), "{out:?}");
        assert!(out
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("New Root")));
    }

    #[test]
    fn a_missing_intermediate_is_incomplete_not_untrusted() {
        let p = pki();
        let out = eval(&store(&[&p.root_der]), &p.leaf_der, &[]);
        assert_eq!(out.failure, Some(ChainFailure::Incomplete), "{out:?}");
        let why = out.reason.expect("reason");
        assert!(
            why.contains("Issuing CA") && why.contains("did not send it"),
            "{why}"
        );
    }

    #[test]
    fn a_served_ca_certificate_as_the_leaf_is_invalid() {
        let p = pki();
        let s = store(&[&p.root_der]);
        let out = eval(&s, &p.int_der, &[&p.leaf_der]);
        assert!(!out.trusted);
        assert!(
            matches!(&out.defects[..], [Defect::LeafIsCa { subject }] if subject.contains("Issuing CA")),
            "{:?}",
            out.defects
        );
        // A self-signed gateway certificate with CA:TRUE, pinned, is not that.
        let pinned = self_signed(&params("gateway.example.com", true), &key());
        assert!(eval(&store(&[&pinned]), &pinned, &[]).trusted);
    }

    #[test]
    fn intermediates_must_be_cas_allowed_to_sign_for_servers() {
        let mut not_ca = params("Issuing CA", true);
        not_ca.is_ca = IsCa::ExplicitNoCa;
        let mut no_cert_sign = params("Issuing CA", true);
        no_cert_sign.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let mut client_only = params("Issuing CA", true);
        client_only.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let mut with_server = params("Issuing CA", true);
        with_server.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let mut not_yet = params("Issuing CA", true);
        not_yet.not_before = OffsetDateTime::now_utc() + Duration::days(3);
        type Check = fn(&Defect) -> bool;
        let cases: Vec<(CertificateParams, Check)> = vec![
            (not_ca, |d| matches!(d, Defect::NotCa { .. })),
            (no_cert_sign, |d| matches!(d, Defect::NoKeyCertSign { .. })),
            (
                client_only,
                |d| matches!(d, Defect::EkuExcludesServerAuth { eku, .. } if eku == &["clientAuth".to_string()]),
            ),
            (not_yet, |d| matches!(d, Defect::NotYetValid { .. })),
        ];
        for (int_params, check) in cases {
            let p = pki_with(int_params);
            let out = eval(&store(&[&p.root_der]), &p.leaf_der, &[&p.int_der]);
            assert_eq!(out.failure, Some(ChainFailure::Invalid), "{out:?}");
            assert_eq!(out.defects.len(), 1, "{:?}", out.defects);
            assert!(check(&out.defects[0]), "{:?}", out.defects);
            assert!(out.defects[0].subject().contains("Issuing CA"));
        }
        let p = pki_with(with_server);
        assert!(eval(&store(&[&p.root_der]), &p.leaf_der, &[&p.int_der]).trusted);
    }

    #[test]
    fn path_length_constraints_are_respected() {
        // Root (pathLen 0) → Issuing CA → leaf: one intermediate below a root allowing none.
        let mut root_p = params("Test Root", true);
        root_p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let root = (root_p, key());
        let root_der = self_signed(&root.0, &root.1);
        let int = (params("Issuing CA", true), key());
        let int_der = sign(&int.0, &int.1, (&root.0, &root.1));
        let leaf = sign(
            &params("gateway.example.com", false),
            &key(),
            (&int.0, &int.1),
        );
        let out = eval(&store(&[&root_der]), &leaf, &[&int_der]);
        assert!(
            matches!(&out.defects[..], [Defect::PathLenExceeded { limit: 0, below: 1, subject }] if subject.contains("Test Root")),
            "{out:?}"
        );
        // Directly under the root, the leaf is fine.
        let direct = sign(
            &params("gateway.example.com", false),
            &key(),
            (&root.0, &root.1),
        );
        assert!(eval(&store(&[&root_der]), &direct, &[]).trusted);
    }

    #[test]
    fn an_unchanged_chain_is_verified_once_and_judged_the_same() {
        let p = pki();
        let s = store(&[&p.root_der]);
        let first = eval(&s, &p.leaf_der, &[&p.int_der]);
        assert!(first.trusted, "{first:?}");
        assert_eq!(
            s.link_cache().verified(),
            2,
            "leaf by intermediate, intermediate by root"
        );
        let again = eval(&s, &p.leaf_der, &[&p.int_der]);
        assert_eq!(again, first);
        assert_eq!(
            s.link_cache().verified(),
            2,
            "the second check verified nothing"
        );
        // The time is judged on every evaluation, cached signatures or not.
        let later = s.evaluate_from(
            &p.leaf_der,
            std::slice::from_ref(&p.int_der),
            ChainSource::Server,
            OffsetDateTime::now_utc() + Duration::days(400),
        );
        assert!(!later.trusted, "{later:?}");
    }

    #[test]
    fn a_cached_verdict_is_never_lent_to_other_bytes_or_another_key() {
        let p = pki();
        // The trusted root and an impostor with its name and another key, both anchors: the
        // intermediate's link to each is its own entry.
        let impostor = (params("Test Root", true), key());
        let impostor_der = self_signed(&impostor.0, &impostor.1);
        let s = store(&[&impostor_der, &p.root_der]);
        assert!(eval(&s, &p.leaf_der, &[&p.int_der]).trusted);
        let verified = s.link_cache().verified();
        assert_eq!(
            verified, 3,
            "leaf; intermediate by the impostor (invalid) and by the root"
        );
        assert!(eval(&s, &p.leaf_der, &[&p.int_der]).trusted);
        assert_eq!(s.link_cache().verified(), verified);
        // Only the impostor: the intermediate's cached invalid link to it stays invalid.
        let only_impostor = store(&[&impostor_der]);
        assert!(!eval(&only_impostor, &p.leaf_der, &[&p.int_der]).trusted);
        // The leaf with one byte of its signature changed, after the good leaf was cached.
        let mut forged = p.leaf_der.clone();
        let last = forged.len() - 1;
        forged[last] ^= 0x01;
        assert!(
            parse(&forged).is_ok(),
            "still a certificate, with a wrong signature"
        );
        let out = eval(&s, &forged, &[&p.int_der]);
        assert!(!out.trusted, "{out:?}");
        assert!(
            s.link_cache().verified() > verified,
            "the changed certificate was verified, not looked up"
        );
    }

    #[test]
    fn the_link_cache_is_bounded() {
        let p = pki();
        let s = store(&[&p.root_der]);
        for i in 0..LINK_CACHE_ENTRIES + 40 {
            let leaf = sign(
                &params(&format!("host{i}.example.com"), false),
                &key(),
                (&p.root.0, &p.root.1),
            );
            assert!(eval(&s, &leaf, &[]).trusted);
            assert!(s.link_cache().len() <= LINK_CACHE_ENTRIES);
        }
        assert_eq!(s.link_cache().len(), LINK_CACHE_ENTRIES);
        assert_eq!(s.link_cache().verified(), (LINK_CACHE_ENTRIES + 40) as u64);
        // The oldest were evicted: the first leaf is verified again.
        let first = sign(
            &params("host0.example.com", false),
            &key(),
            (&p.root.0, &p.root.1),
        );
        assert!(eval(&s, &first, &[]).trusted);
        assert_eq!(s.link_cache().verified(), (LINK_CACHE_ENTRIES + 41) as u64);
    }

    #[test]
    fn a_forged_signature_under_a_trusted_name_is_untrusted() {
        let p = pki();
        // Another key under the trusted root's name.
        let impostor = (params("Test Root", true), key());
        let forged = sign(
            &params("gateway.example.com", false),
            &key(),
            (&impostor.0, &impostor.1),
        );
        let out = eval(&store(&[&p.root_der]), &forged, &[]);
        assert!(!out.trusted);
        assert_eq!(out.failure, Some(ChainFailure::Untrusted), "{out:?}");
    }

    #[test]
    fn an_unverifiable_signature_is_never_trusted() {
        let p = pki();
        // Replace the leaf's signature algorithm (outer and inner) with an unknown OID of the
        // same length: ecdsa-with-SHA256 is 1.2.840.10045.4.3.2; make it ...4.3.9.
        let from = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
        let to = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x09];
        let mut forged = p.leaf_der.clone();
        let mut replaced = 0;
        let mut i = 0;
        while i + from.len() <= forged.len() {
            if forged[i..i + from.len()] == from {
                forged[i..i + from.len()].copy_from_slice(&to);
                replaced += 1;
            }
            i += 1;
        }
        assert_eq!(
            replaced, 2,
            "the algorithm appears in the TBS and outside it"
        );
        let out = eval(&store(&[&p.root_der]), &forged, &[&p.int_der]);
        assert!(!out.trusted, "{out:?}");
        assert_eq!(out.failure, Some(ChainFailure::Invalid));
        assert!(
            matches!(&out.defects[..], [Defect::Unverifiable { algorithm, insecure: false, .. }] if algorithm == "1.2.840.10045.4.3.9"),
            "{:?}",
            out.defects
        );
    }

    #[test]
    fn a_hostile_many_candidates_chain_stays_within_the_bound() {
        // Four keys under one name "Mesh CA"; a certificate for every ordered pair (key i,
        // signed by key j): 12 certificates, each a valid issuer of the others, none reaching
        // an anchor. Unbounded, the search tries about 12 + 3 × (9 + 2 × (6 + 3)) = 93
        // candidates; the bound stops it at MAX_CANDIDATES_TRIED.
        let keys: Vec<KeyPair> = (0..4).map(|_| key()).collect();
        let mesh = params("Mesh CA", true);
        let mut served = Vec::new();
        for (i, ki) in keys.iter().enumerate() {
            for (j, kj) in keys.iter().enumerate() {
                if i != j {
                    served.push(sign(&mesh, ki, (&mesh, kj)));
                }
            }
        }
        let leaf = sign(
            &params("gateway.example.com", false),
            &key(),
            (&mesh, &keys[0]),
        );
        let p = pki();
        let s = store(&[&p.root_der]);
        let refs: Vec<&Vec<u8>> = served.iter().collect();
        let started = std::time::Instant::now();
        let out = eval(&s, &leaf, &refs);
        let took = started.elapsed();
        assert!(!out.trusted);
        assert_eq!(out.candidates_tried, MAX_CANDIDATES_TRIED, "{out:?}");
        assert_eq!(out.failure, Some(ChainFailure::Invalid));
        assert!(
            out.reason
                .as_deref()
                .is_some_and(|r| r.contains("after trying 64 candidate issuers")),
            "{out:?}"
        );
        assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
        // What the server sends beyond MAX_SERVED_CERTIFICATES is not even looked at.
        let many: Vec<&Vec<u8>> = std::iter::repeat_n(&p.int_der, 100).collect();
        let out = eval(&s, &p.leaf_der, &many);
        assert!(out.trusted, "{out:?}");
        assert!(out.candidates_tried <= 2, "{out:?}");
    }
}
