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

use std::fmt;
use std::io::Read as _;
use std::path::Path;

use rustls_pki_types::pem::{PemObject, SectionKind};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::{Class, Tag};
use x509_parser::der_parser::ber::{BerObject, BerObjectContent};
use x509_parser::der_parser::der::parse_der;

use cemwatch_shared::finding::verdict;
use cemwatch_shared::{CertificateInfo, Expectations, Finding, FindingCode, Severity};

use crate::check::cert::{self, ChainSource, TrustStore};
use crate::check::triage;

/// The largest file `inspect` reads: far above any certificate file, far below trouble.
pub const MAX_FILE_SIZE: u64 = 4 * 1024 * 1024;

/// Why a file could not be inspected. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}; give the path of the .pfx (or .cer, .crt, .pem) file to inspect")]
    Read {
        /// The file.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The file is larger than any certificate file.
    #[error("{path} is {size} bytes, larger than any certificate file ({MAX_FILE_SIZE} bytes at most): give the .pfx (or .cer, .crt, .pem) file itself")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size in bytes.
        size: u64,
    },
    /// The file is empty.
    #[error("{path} is empty: export the certificate again (as .pfx with its private key)")]
    Empty {
        /// The file.
        path: String,
    },
    /// The content is neither PKCS#12, PEM nor DER.
    #[error("{path} is not a certificate file: it is neither PKCS#12 (.pfx, .p12), PEM (-----BEGIN CERTIFICATE-----) nor a DER X.509 certificate; give the .pfx exported with the private key")]
    Unrecognized {
        /// The file.
        path: String,
    },
    /// The file ends before its own ASN.1 header says it does.
    #[error("{path} is truncated: it is {format} whose header declares {declared} bytes, but the file has {actual}; copy or export it again")]
    Truncated {
        /// The file.
        path: String,
        /// The format the header announces.
        format: FileFormat,
        /// Bytes declared by the header.
        declared: usize,
        /// Bytes in the file.
        actual: usize,
    },
    /// The file is damaged.
    #[error("{path} is {format} but cannot be read ({reason}): the file is damaged; copy or export it again")]
    Corrupt {
        /// The file.
        path: String,
        /// The format.
        format: FileFormat,
        /// What the parser said.
        reason: String,
    },
    /// A PKCS#12 file needs a password and none was given.
    #[error("{path} is protected by a password: give it with --password-env VAR (the name of an environment variable holding the password) or --password-file PATH")]
    PasswordRequired {
        /// The file.
        path: String,
    },
    /// The given password does not open the PKCS#12 file.
    #[error("the password does not open {path} (its integrity check failed): check the password that --password-env or --password-file gives; if it is right, the file is damaged: export it again")]
    WrongPassword {
        /// The file.
        path: String,
    },
    /// The PKCS#12 file uses a scheme this build cannot read.
    #[error("{path} uses a PKCS#12 protection this tool cannot read ({reason}): export it again with AES-256 (Windows: \"AES256-SHA256\"; openssl 3: `openssl pkcs12 -export`) or TripleDES-SHA1")]
    Unsupported {
        /// The file.
        path: String,
        /// What is not supported.
        reason: String,
    },
    /// The file holds no certificate.
    #[error("{path} holds no certificate ({found}): give the .pfx exported with the certificate and its private key, or the certificate file (.cer, .crt, .pem)")]
    NoCertificate {
        /// The file.
        path: String,
        /// What the file holds instead.
        found: String,
    },
    /// A PEM private key is encrypted.
    #[error("{path} holds an encrypted private key, which inspect does not decrypt: inspect the .pfx you will import instead (`openssl pkcs12 -export -in cert.pem -inkey key.pem -out gateway.pfx`), or decrypt the key first (`openssl pkey -in key.pem -out key-plain.pem`)")]
    EncryptedPemKey {
        /// The file.
        path: String,
    },
}

/// The format of a certificate file, as detected from its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// PKCS#12 (.pfx, .p12): what ITMS imports.
    Pkcs12,
    /// PEM text: certificates, optionally a private key.
    Pem,
    /// One DER X.509 certificate (.cer, .crt).
    Der,
}

impl FileFormat {
    /// The lower-case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Pkcs12 => "pkcs12",
            FileFormat::Pem => "pem",
            FileFormat::Der => "der",
        }
    }

    /// What a person calls it.
    pub fn describe(self) -> &'static str {
        match self {
            FileFormat::Pkcs12 => "PKCS#12 (.pfx)",
            FileFormat::Pem => "PEM",
            FileFormat::Der => "DER X.509 (.cer)",
        }
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A PKCS#12 password. Its `Debug` form never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: String) -> Self {
        Self(password)
    }

    /// Reads a password file: its content less one line ending.
    pub fn from_file_content(content: &str) -> Self {
        let trimmed = content
            .strip_suffix("\r\n")
            .or_else(|| content.strip_suffix('\n'))
            .unwrap_or(content);
        Self(trimmed.to_string())
    }

    fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// How a private key is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEncoding {
    /// PKCS#8 `PrivateKeyInfo` ("PRIVATE KEY"; the form inside PKCS#12).
    Pkcs8,
    /// PKCS#1 `RSAPrivateKey` ("RSA PRIVATE KEY").
    Pkcs1,
    /// SEC1 `ECPrivateKey` ("EC PRIVATE KEY").
    Sec1,
}

/// A private key found in the file. Its `Debug` form never shows the key.
#[derive(Clone)]
pub struct PrivateKeyMaterial {
    encoding: KeyEncoding,
    der: Vec<u8>,
    local_key_id: Option<Vec<u8>>,
}

impl PrivateKeyMaterial {
    /// How the key is encoded.
    pub fn encoding(&self) -> KeyEncoding {
        self.encoding
    }

    /// The key as rustls takes it (for `check --client-cert`).
    pub(crate) fn to_rustls(&self) -> rustls_pki_types::PrivateKeyDer<'static> {
        use rustls_pki_types::{PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
        match self.encoding {
            KeyEncoding::Pkcs8 => PrivatePkcs8KeyDer::from(self.der.clone()).into(),
            KeyEncoding::Pkcs1 => PrivatePkcs1KeyDer::from(self.der.clone()).into(),
            KeyEncoding::Sec1 => PrivateSec1KeyDer::from(self.der.clone()).into(),
        }
    }
}

impl fmt::Debug for PrivateKeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKeyMaterial")
            .field("encoding", &self.encoding)
            .field("der", &"<redacted>")
            .finish()
    }
}

/// What a certificate file holds.
#[derive(Debug, Clone)]
pub struct Contents {
    /// The detected format.
    pub format: FileFormat,
    /// Certificates (DER) in file order, duplicates removed.
    pub certificates: Vec<Vec<u8>>,
    /// The PKCS#12 `localKeyId` of each certificate (pairs a certificate with its key).
    cert_key_ids: Vec<Option<Vec<u8>>>,
    /// Private keys.
    pub keys: Vec<PrivateKeyMaterial>,
}

/// Reads a file, refusing anything larger than [`MAX_FILE_SIZE`].
pub fn read_file(path: &Path) -> Result<Vec<u8>, InspectError> {
    let shown = path.display().to_string();
    let read_err = |e: std::io::Error| InspectError::Read {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if meta.is_dir() {
        return Err(InspectError::Read {
            path: shown,
            reason: "it is a directory".into(),
        });
    }
    if meta.len() > MAX_FILE_SIZE {
        return Err(InspectError::TooLarge {
            path: shown,
            size: meta.len(),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(InspectError::TooLarge {
            path: shown,
            size: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// The outer `SEQUENCE` header of a DER document: (header length, content length, the tag
/// of the first element). `None` when `bytes` does not start like DER.
fn der_outline(bytes: &[u8]) -> Option<(usize, Option<usize>, Option<u8>)> {
    if bytes.len() < 2 || bytes[0] != 0x30 {
        return None;
    }
    let first = bytes[1];
    let (header, length) = if first < 0x80 {
        (2, Some(usize::from(first)))
    } else if first == 0x80 {
        // BER indefinite length.
        (2, None)
    } else {
        let n = usize::from(first & 0x7f);
        if n > 4 || bytes.len() < 2 + n {
            return None;
        }
        let length = bytes[2..2 + n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (2 + n, Some(length))
    };
    Some((header, length, bytes.get(header).copied()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Detects the format from the content and reads the certificates and keys. `path` is only
/// used in messages; `password` is only used for PKCS#12.
pub fn load(
    path: &str,
    bytes: &[u8],
    password: Option<&Password>,
) -> Result<Contents, InspectError> {
    let path = path.to_string();
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(InspectError::Empty { path });
    }
    if let Some((header, length, inner)) = der_outline(bytes) {
        let format = match inner {
            Some(0x02) => Some(FileFormat::Pkcs12),
            Some(0x30) => Some(FileFormat::Der),
            _ => None,
        };
        if let Some(format) = format {
            if let Some(length) = length {
                let declared = header.saturating_add(length);
                if declared > bytes.len() {
                    return Err(InspectError::Truncated {
                        path,
                        format,
                        declared,
                        actual: bytes.len(),
                    });
                }
            }
            return match format {
                FileFormat::Pkcs12 => load_pkcs12(path, bytes, password),
                _ => load_der(path, bytes),
            };
        }
    }
    if contains(bytes, b"-----BEGIN ") {
        return load_pem(path, bytes);
    }
    Err(InspectError::Unrecognized { path })
}

fn load_der(path: String, bytes: &[u8]) -> Result<Contents, InspectError> {
    cert::parse(bytes).map_err(|e| InspectError::Corrupt {
        path,
        format: FileFormat::Der,
        reason: e.to_string(),
    })?;
    Ok(Contents {
        format: FileFormat::Der,
        certificates: vec![bytes.to_vec()],
        cert_key_ids: vec![None],
        keys: Vec::new(),
    })
}

fn load_pem(path: String, bytes: &[u8]) -> Result<Contents, InspectError> {
    let (certificates, keys) = pem_items(&path, bytes)?;
    if certificates.is_empty() {
        let found = if keys.is_empty() {
            "no \"-----BEGIN CERTIFICATE-----\" block".to_string()
        } else {
            "only a private key".to_string()
        };
        return Err(InspectError::NoCertificate { path, found });
    }
    Ok(Contents {
        format: FileFormat::Pem,
        cert_key_ids: vec![None; certificates.len()],
        certificates,
        keys,
    })
}

/// The private keys of a PEM file that may hold no certificate (a separate key file).
pub(crate) fn load_pem_keys(
    path: &str,
    bytes: &[u8],
) -> Result<Vec<PrivateKeyMaterial>, InspectError> {
    pem_items(path, bytes).map(|(_, keys)| keys)
}

type PemItems = (Vec<Vec<u8>>, Vec<PrivateKeyMaterial>);

fn pem_items(path: &str, bytes: &[u8]) -> Result<PemItems, InspectError> {
    let path = path.to_string();
    if contains(bytes, b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || contains(bytes, b"Proc-Type: 4,ENCRYPTED")
    {
        return Err(InspectError::EncryptedPemKey { path });
    }
    let mut certificates: Vec<Vec<u8>> = Vec::new();
    let mut keys = Vec::new();
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        let (kind, der) = item.map_err(|e| InspectError::Corrupt {
            path: path.clone(),
            format: FileFormat::Pem,
            reason: pem_problem(&e),
        })?;
        let encoding = match kind {
            SectionKind::Certificate => {
                cert::parse(&der).map_err(|e| InspectError::Corrupt {
                    path: path.clone(),
                    format: FileFormat::Pem,
                    reason: format!("certificate {}: {e}", certificates.len() + 1),
                })?;
                if !certificates.contains(&der) {
                    certificates.push(der);
                }
                continue;
            }
            SectionKind::PrivateKey => KeyEncoding::Pkcs8,
            SectionKind::RsaPrivateKey => KeyEncoding::Pkcs1,
            SectionKind::EcPrivateKey => KeyEncoding::Sec1,
            _ => continue,
        };
        let key = PrivateKeyMaterial {
            encoding,
            der,
            local_key_id: None,
        };
        public_of_key(&key).map_err(|reason| InspectError::Corrupt {
            path: path.clone(),
            format: FileFormat::Pem,
            reason: format!("the private key is unreadable: {reason}"),
        })?;
        keys.push(key);
    }
    Ok((certificates, keys))
}

fn pem_problem(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "a PEM block has no \"-----END {}-----\" line",
            String::from_utf8_lossy(end_marker)
        ),
        Error::IllegalSectionStart { .. } => "a \"-----BEGIN\" line is malformed".into(),
        Error::Base64Decode(why) => format!("a PEM block is not valid base64 ({why})"),
        other => format!("a PEM block is damaged ({other:?})"),
    }
}

fn load_pkcs12(
    path: String,
    bytes: &[u8],
    password: Option<&Password>,
) -> Result<Contents, InspectError> {
    use p12_keystore::error::Error as P12Error;
    let given = password.map(Password::as_str).unwrap_or("");
    let archive = match p12_keystore::Pkcs12Archive::from_pkcs12(bytes, given) {
        Ok(archive) => archive,
        // A wrong password fails the MAC; without a MAC it fails decryption (bad padding).
        Err(P12Error::MacError(_) | P12Error::UnpadError | P12Error::Pkcs5Error(_)) => {
            return Err(match password {
                None => InspectError::PasswordRequired { path },
                Some(_) => InspectError::WrongPassword { path },
            })
        }
        Err(
            e @ (P12Error::UnsupportedEncryptionScheme
            | P12Error::UnsupportedMacAlgorithm
            | P12Error::UnsupportedContentType
            | P12Error::UnsupportedCertificateType),
        ) => {
            return Err(InspectError::Unsupported {
                path,
                reason: e.to_string(),
            })
        }
        Err(e) => {
            return Err(InspectError::Corrupt {
                path,
                format: FileFormat::Pkcs12,
                reason: e.to_string(),
            })
        }
    };
    let mut certificates: Vec<Vec<u8>> = Vec::new();
    let mut cert_key_ids: Vec<Option<Vec<u8>>> = Vec::new();
    for bag in &archive.certs {
        let der = bag.cert.as_der().to_vec();
        if let Some(i) = certificates.iter().position(|c| *c == der) {
            if cert_key_ids[i].is_none() {
                cert_key_ids[i] = bag.local_key_id.clone();
            }
            continue;
        }
        cert::parse(&der).map_err(|e| InspectError::Corrupt {
            path: path.clone(),
            format: FileFormat::Pkcs12,
            reason: format!("certificate {}: {e}", certificates.len() + 1),
        })?;
        certificates.push(der);
        cert_key_ids.push(bag.local_key_id.clone());
    }
    let keys = archive
        .keys
        .iter()
        .map(|bag| PrivateKeyMaterial {
            encoding: KeyEncoding::Pkcs8,
            der: bag.key.as_der().to_vec(),
            local_key_id: bag.local_key_id.as_ref().map(|id| id.as_ref().to_vec()),
        })
        .collect::<Vec<_>>();
    if certificates.is_empty() {
        let found = if keys.is_empty() {
            "it is an empty PKCS#12 file".to_string()
        } else {
            "only a private key".to_string()
        };
        return Err(InspectError::NoCertificate { path, found });
    }
    Ok(Contents {
        format: FileFormat::Pkcs12,
        certificates,
        cert_key_ids,
        keys,
    })
}

/// The public half of a key: enough to tell whether a key and a certificate belong together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA modulus and public exponent, without leading zero bytes.
    Rsa {
        /// Modulus.
        modulus: Vec<u8>,
        /// Public exponent.
        exponent: Vec<u8>,
    },
    /// An elliptic-curve public point (SEC1 encoding).
    Ec(Vec<u8>),
    /// An Ed25519 public key.
    Ed25519(Vec<u8>),
}

impl PublicKey {
    /// What a person calls it: `RSA 2048 bits`, `EC P-256`, `Ed25519`.
    pub fn describe(&self) -> String {
        match self {
            PublicKey::Rsa { modulus, .. } => {
                let bits = match modulus.first() {
                    Some(&top) => modulus.len() * 8 - top.leading_zeros() as usize,
                    None => 0,
                };
                format!("RSA {bits} bits")
            }
            PublicKey::Ec(point) => match point.len() {
                65 => "EC P-256".into(),
                97 => "EC P-384".into(),
                133 => "EC P-521".into(),
                n => format!("EC ({n}-byte point)"),
            },
            PublicKey::Ed25519(_) => "Ed25519".into(),
        }
    }
}

fn unsigned(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

fn der_object(bytes: &[u8]) -> Result<BerObject<'_>, String> {
    match parse_der(bytes) {
        Ok((_, object)) => Ok(object),
        Err(e) => Err(format!("malformed ASN.1 ({e})")),
    }
}

fn sequence<'a, 'b>(object: &'b BerObject<'a>, what: &str) -> Result<&'b [BerObject<'a>], String> {
    object
        .as_sequence()
        .map(Vec::as_slice)
        .map_err(|_| format!("{what} is not an ASN.1 SEQUENCE"))
}

fn integer<'a>(object: Option<&BerObject<'a>>, what: &str) -> Result<&'a [u8], String> {
    match object.map(|o| &o.content) {
        Some(BerObjectContent::Integer(bytes)) => Ok(bytes),
        _ => Err(format!("{what} is missing")),
    }
}

fn octets<'a>(object: Option<&BerObject<'a>>, what: &str) -> Result<&'a [u8], String> {
    match object.map(|o| &o.content) {
        Some(BerObjectContent::OctetString(bytes)) => Ok(bytes),
        _ => Err(format!("{what} is missing")),
    }
}

/// `RSAPrivateKey ::= SEQUENCE { version, modulus, publicExponent, ... }` (PKCS#1).
fn rsa_public_of_pkcs1(der: &[u8]) -> Result<PublicKey, String> {
    let object = der_object(der)?;
    let items = sequence(&object, "the RSA private key")?;
    Ok(PublicKey::Rsa {
        modulus: unsigned(integer(items.get(1), "the RSA modulus")?),
        exponent: unsigned(integer(items.get(2), "the RSA public exponent")?),
    })
}

/// The `[1] publicKey BIT STRING` of a SEC1 `ECPrivateKey`, or of a PKCS#8 v2 document.
fn tagged_public_key(items: &[BerObject<'_>]) -> Option<Vec<u8>> {
    items.iter().find_map(|item| {
        if item.class() != Class::ContextSpecific || item.tag() != Tag(1) {
            return None;
        }
        let inner = match &item.content {
            BerObjectContent::Tagged(_, _, inner) => {
                return inner.as_slice().ok().map(<[u8]>::to_vec)
            }
            BerObjectContent::Unknown(any) => any.data,
            _ => return None,
        };
        // Explicitly tagged: the content is a whole BIT STRING; implicitly tagged, the bits.
        match parse_der(inner) {
            Ok((_, bits)) if matches!(bits.content, BerObjectContent::BitString(..)) => {
                bits.as_slice().ok().map(<[u8]>::to_vec)
            }
            _ => inner.split_first().map(|(_, rest)| rest.to_vec()),
        }
    })
}

/// `ECPrivateKey ::= SEQUENCE { version, privateKey, [0] parameters, [1] publicKey }` (SEC1).
fn ec_public_of_sec1(der: &[u8]) -> Result<Option<PublicKey>, String> {
    let object = der_object(der)?;
    let items = sequence(&object, "the EC private key")?;
    octets(items.get(1), "the EC private scalar")?;
    Ok(tagged_public_key(items).map(PublicKey::Ec))
}

/// The public key of a private key; `Ok(None)` when it cannot be derived (an algorithm
/// cemwatch does not know, or an EC key stored without its public point).
fn public_of_key(key: &PrivateKeyMaterial) -> Result<Option<PublicKey>, String> {
    match key.encoding {
        KeyEncoding::Pkcs1 => rsa_public_of_pkcs1(&key.der).map(Some),
        KeyEncoding::Sec1 => ec_public_of_sec1(&key.der),
        KeyEncoding::Pkcs8 => {
            let object = der_object(&key.der)?;
            let items = sequence(&object, "the PKCS#8 private key")?;
            let algorithm = items
                .get(1)
                .and_then(|a| a.as_sequence().ok())
                .and_then(|a| a.first())
                .and_then(|oid| oid.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .ok_or("the PKCS#8 key algorithm is missing")?;
            let private = octets(items.get(2), "the PKCS#8 private key data")?;
            match algorithm.as_str() {
                "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => {
                    rsa_public_of_pkcs1(private).map(Some)
                }
                "1.2.840.10045.2.1" => match ec_public_of_sec1(private)? {
                    Some(public) => Ok(Some(public)),
                    None => Ok(tagged_public_key(items).map(PublicKey::Ec)),
                },
                "1.3.101.112" => {
                    let seed_object = der_object(private)?;
                    let seed = octets(Some(&seed_object), "the Ed25519 seed")?;
                    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed)
                        .map_err(|_| "the Ed25519 seed is not 32 bytes".to_string())?;
                    use ring::signature::KeyPair as _;
                    Ok(Some(PublicKey::Ed25519(
                        pair.public_key().as_ref().to_vec(),
                    )))
                }
                _ => Ok(None),
            }
        }
    }
}

/// The public key of a certificate, `None` for algorithms cemwatch does not compare.
fn public_of_cert(cert: &X509Certificate<'_>) -> Option<PublicKey> {
    let spki = cert.public_key();
    match spki.algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => Some(PublicKey::Rsa {
                modulus: unsigned(rsa.modulus),
                exponent: unsigned(rsa.exponent),
            }),
            _ => None,
        },
        "1.2.840.10045.2.1" => Some(PublicKey::Ec(spki.subject_public_key.data.to_vec())),
        "1.3.101.112" => Some(PublicKey::Ed25519(spki.subject_public_key.data.to_vec())),
        _ => None,
    }
}

fn is_ca(cert: &X509Certificate<'_>) -> bool {
    cert.basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca)
}

fn is_self_signed(cert: &X509Certificate<'_>) -> bool {
    cert.subject().as_raw() == cert.issuer().as_raw()
}

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
}

impl InspectResult {
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
    let outcome = trust.evaluate_from(leaf_der, &others, ChainSource::File);

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
    if !outcome.trusted {
        let extra = trust.len().saturating_sub(trust.platform_count());
        findings.push(Finding::new(
            FindingCode::ChainIncomplete,
            format!(
                "the chain in the file ({}) does not reach a trusted root: {} (trust store: {} platform roots, {} from --ca-file)",
                plural(contents.certificates.len(), "certificate"),
                outcome.reason.as_deref().unwrap_or("no path"),
                trust.platform_count(),
                extra
            ),
        ));
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
