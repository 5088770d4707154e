//! Certificate files as Windows and ITMS use them: PKCS#12 (modern AES and legacy 3DES/RC2
//! encryption), PEM (certificates and an optional key) or DER, the format detected from the
//! content, never from the extension; bounded in size; the private key matched to its
//! certificate. `inspect` judges what this reads; `check --client-cert` presents it.
//!
//! Passwords never appear in errors, results or `Debug` output.

use std::fmt;
use std::io::Read as _;
use std::path::Path;

use rustls_pki_types::pem::{PemObject, SectionKind};
use serde::{Deserialize, Serialize};
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::{Class, Tag};
use x509_parser::der_parser::ber::{BerObject, BerObjectContent};
use x509_parser::der_parser::der::parse_der;

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

    pub(crate) fn as_str(&self) -> &str {
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
    pub(crate) local_key_id: Option<Vec<u8>>,
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
    pub(crate) cert_key_ids: Vec<Option<Vec<u8>>>,
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
pub(crate) fn der_outline(bytes: &[u8]) -> Option<(usize, Option<usize>, Option<u8>)> {
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

pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
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

pub(crate) fn load_der(path: String, bytes: &[u8]) -> Result<Contents, InspectError> {
    cemwatch_transport::x509::parse(bytes).map_err(|e| InspectError::Corrupt {
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

pub(crate) fn load_pem(path: String, bytes: &[u8]) -> Result<Contents, InspectError> {
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
pub fn load_pem_keys(path: &str, bytes: &[u8]) -> Result<Vec<PrivateKeyMaterial>, InspectError> {
    pem_items(path, bytes).map(|(_, keys)| keys)
}

pub(crate) type PemItems = (Vec<Vec<u8>>, Vec<PrivateKeyMaterial>);

pub(crate) fn pem_items(path: &str, bytes: &[u8]) -> Result<PemItems, InspectError> {
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
                cemwatch_transport::x509::parse(&der).map_err(|e| InspectError::Corrupt {
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

pub(crate) fn pem_problem(e: &rustls_pki_types::pem::Error) -> String {
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

pub(crate) fn load_pkcs12(
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
        cemwatch_transport::x509::parse(&der).map_err(|e| InspectError::Corrupt {
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

pub(crate) fn unsigned(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

pub(crate) fn der_object(bytes: &[u8]) -> Result<BerObject<'_>, String> {
    match parse_der(bytes) {
        Ok((_, object)) => Ok(object),
        Err(e) => Err(format!("malformed ASN.1 ({e})")),
    }
}

pub(crate) fn sequence<'a, 'b>(
    object: &'b BerObject<'a>,
    what: &str,
) -> Result<&'b [BerObject<'a>], String> {
    object
        .as_sequence()
        .map(Vec::as_slice)
        .map_err(|_| format!("{what} is not an ASN.1 SEQUENCE"))
}

pub(crate) fn integer<'a>(object: Option<&BerObject<'a>>, what: &str) -> Result<&'a [u8], String> {
    match object.map(|o| &o.content) {
        Some(BerObjectContent::Integer(bytes)) => Ok(bytes),
        _ => Err(format!("{what} is missing")),
    }
}

pub(crate) fn octets<'a>(object: Option<&BerObject<'a>>, what: &str) -> Result<&'a [u8], String> {
    match object.map(|o| &o.content) {
        Some(BerObjectContent::OctetString(bytes)) => Ok(bytes),
        _ => Err(format!("{what} is missing")),
    }
}

/// `RSAPrivateKey ::= SEQUENCE { version, modulus, publicExponent, ... }` (PKCS#1).
pub(crate) fn rsa_public_of_pkcs1(der: &[u8]) -> Result<PublicKey, String> {
    let object = der_object(der)?;
    let items = sequence(&object, "the RSA private key")?;
    Ok(PublicKey::Rsa {
        modulus: unsigned(integer(items.get(1), "the RSA modulus")?),
        exponent: unsigned(integer(items.get(2), "the RSA public exponent")?),
    })
}

/// The `[1] publicKey BIT STRING` of a SEC1 `ECPrivateKey`, or of a PKCS#8 v2 document.
pub(crate) fn tagged_public_key(items: &[BerObject<'_>]) -> Option<Vec<u8>> {
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
pub(crate) fn ec_public_of_sec1(der: &[u8]) -> Result<Option<PublicKey>, String> {
    let object = der_object(der)?;
    let items = sequence(&object, "the EC private key")?;
    octets(items.get(1), "the EC private scalar")?;
    Ok(tagged_public_key(items).map(PublicKey::Ec))
}

/// The public key of a private key; `Ok(None)` when it cannot be derived (an algorithm
/// cemwatch does not know, or an EC key stored without its public point).
pub(crate) fn public_of_key(key: &PrivateKeyMaterial) -> Result<Option<PublicKey>, String> {
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
pub(crate) fn public_of_cert(cert: &X509Certificate<'_>) -> Option<PublicKey> {
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

pub(crate) fn is_ca(cert: &X509Certificate<'_>) -> bool {
    cert.basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca)
}

pub(crate) fn is_self_signed(cert: &X509Certificate<'_>) -> bool {
    cert.subject().as_raw() == cert.issuer().as_raw()
}
