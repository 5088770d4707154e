//! A test PKI. Modern certificates come from rcgen with RSA keys made by `openssl genpkey`
//! (ring signs with RSA but does not generate RSA keys). Legacy certificates (SHA-1 or MD5
//! signatures, RSA-1024 keys) come from the `openssl` command, because rcgen and ring refuse
//! to make them.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

/// Runs `openssl` with `args`, feeding `stdin`, and returns its standard output.
pub fn openssl(args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `openssl`: install it (apt-get install openssl)")?;
    if let Some(mut input) = child.stdin.take() {
        if let Some(data) = stdin {
            input.write_all(data)?;
        }
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// A fresh RSA private key of `bits`, PKCS#8 PEM.
pub fn rsa_key_pem(bits: u32) -> Result<String> {
    let bits = format!("rsa_keygen_bits:{bits}");
    let out = openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", &bits], None)?;
    Ok(String::from_utf8(out)?)
}

/// SHA-1 of DER in the Windows form.
pub fn sha1_hex(der: &[u8]) -> String {
    hex_upper(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref())
}

/// SHA-256 of DER, upper-case hex.
pub fn sha256_hex(der: &[u8]) -> String {
    hex_upper(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn pem_of(der: &[u8], label: &str) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                b64.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A certificate authority (root or intermediate).
#[derive(Debug)]
pub struct Ca {
    /// Common name.
    pub name: String,
    /// Certificate, DER.
    pub cert_der: Vec<u8>,
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PKCS#8 PEM.
    pub key_pem: String,
    /// Certificates between this CA and its root (empty for a root), nearest first.
    pub parents: Vec<Vec<u8>>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "cemwatch test PKI");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(3650);
    params
}

impl Ca {
    /// A new self-signed root CA with an RSA-2048 key.
    pub fn root(name: &str) -> Result<Self> {
        let key_pem = rsa_key_pem(2048)?;
        let key = KeyPair::from_pem(&key_pem)?;
        let params = ca_params(name);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            name: name.into(),
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_pem,
            parents: Vec::new(),
            issuer: Issuer::new(params, key),
        })
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, name: &str) -> Result<Self> {
        let key_pem = rsa_key_pem(2048)?;
        let key = KeyPair::from_pem(&key_pem)?;
        let params = ca_params(name);
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut parents = vec![self.cert_der.clone()];
        parents.extend(self.parents.iter().cloned());
        Ok(Self {
            name: name.into(),
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_pem,
            parents,
            issuer: Issuer::new(params, key),
        })
    }

    /// Writes the CA certificate as PEM into `dir` and returns the path.
    pub fn write_pem(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(format!("{}.pem", self.name.replace(' ', "-")));
        std::fs::write(&path, &self.cert_pem)?;
        Ok(path)
    }

    /// An empty CRL of this CA (DER), current for a week.
    pub fn crl_der(&self) -> Result<Vec<u8>> {
        let now = OffsetDateTime::now_utc();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(7),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.der().to_vec())
    }

    /// Issues a leaf certificate with rcgen.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Leaf> {
        let mut params = CertificateParams::new(spec.sans.clone())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            spec.sans
                .first()
                .cloned()
                .unwrap_or_else(|| "no-name".into()),
        );
        params.distinguished_name = dn;
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        params.use_authority_key_identifier_extension = true;
        if let Some(url) = &spec.crl_url {
            params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: vec![url.clone()],
            }];
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match spec.eku {
            Eku::ServerAuth => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Eku::ClientOnly => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Eku::Absent => vec![],
        };
        let (key, key_pem) = match spec.key {
            KeyKind::Rsa2048 => {
                let pem = rsa_key_pem(2048)?;
                (KeyPair::from_pem(&pem)?, pem)
            }
            KeyKind::EcdsaP256 => {
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                let pem = key.serialize_pem();
                (key, pem)
            }
        };
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut chain = vec![cert.der().to_vec()];
        if spec.send_intermediates {
            if !self.parents.is_empty() {
                chain.push(self.cert_der.clone());
            }
            chain.extend(
                self.parents
                    .iter()
                    .take(self.parents.len().saturating_sub(1))
                    .cloned(),
            );
        }
        Ok(Leaf::new(chain, key_pem))
    }

    /// Issues a leaf with the `openssl` command: for SHA-1/MD5 signatures and RSA keys under
    /// 2048 bits, which rcgen and ring refuse to make.
    pub fn issue_legacy(&self, sans: &[&str], digest: &str, key_bits: u32) -> Result<Leaf> {
        let dir = tempfile::tempdir()?;
        let ca_cert = dir.path().join("ca.pem");
        let ca_key = dir.path().join("ca.key");
        let key = dir.path().join("leaf.key");
        let csr = dir.path().join("leaf.csr");
        let ext = dir.path().join("ext.cnf");
        let out = dir.path().join("leaf.pem");
        std::fs::write(&ca_cert, &self.cert_pem)?;
        std::fs::write(&ca_key, &self.key_pem)?;
        let key_pem = rsa_key_pem(key_bits)?;
        std::fs::write(&key, &key_pem)?;
        let san = sans
            .iter()
            .map(|s| format!("DNS:{s}"))
            .collect::<Vec<_>>()
            .join(",");
        std::fs::write(
            &ext,
            format!("subjectAltName={san}\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n"),
        )?;
        let p = |p: &Path| p.display().to_string();
        let subj = format!("/CN={}", sans.first().copied().unwrap_or("legacy"));
        openssl(
            &[
                "req",
                "-new",
                "-key",
                &p(&key),
                "-subj",
                &subj,
                "-out",
                &p(&csr),
            ],
            None,
        )?;
        let digest_flag = format!("-{digest}");
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &p(&csr),
                "-CA",
                &p(&ca_cert),
                "-CAkey",
                &p(&ca_key),
                "-set_serial",
                "4242",
                &digest_flag,
                "-days",
                "365",
                "-extfile",
                &p(&ext),
                "-out",
                &p(&out),
            ],
            None,
        )?;
        let pem = std::fs::read(&out)?;
        let der = CertificateDer::from_pem_slice(&pem)
            .context("openssl wrote no certificate")?
            .as_ref()
            .to_vec();
        Ok(Leaf::new(vec![der], key_pem))
    }
}

/// Which key a leaf gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA 2048 (what the CEM profile wants).
    Rsa2048,
    /// ECDSA P-256 (not RSA).
    EcdsaP256,
}

/// Which Extended Key Usage a leaf gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eku {
    /// Server Authentication.
    ServerAuth,
    /// Client Authentication only.
    ClientOnly,
    /// No EKU extension at all.
    Absent,
}

/// What a leaf certificate looks like.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// Subject Alternative Names (DNS names or IP addresses).
    pub sans: Vec<String>,
    /// Not valid before.
    pub not_before: OffsetDateTime,
    /// Not valid after.
    pub not_after: OffsetDateTime,
    /// Extended Key Usage.
    pub eku: Eku,
    /// Key type.
    pub key: KeyKind,
    /// Whether the server sends the intermediates with the leaf.
    pub send_intermediates: bool,
    /// A CRL distribution point URL, when the leaf names one.
    pub crl_url: Option<String>,
}

impl LeafSpec {
    /// A certificate that meets every CEM requirement for these names: RSA 2048, SHA-256,
    /// Server Authentication, valid from yesterday for a year.
    pub fn good(sans: &[&str]) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            sans: sans.iter().map(|s| s.to_string()).collect(),
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(365),
            eku: Eku::ServerAuth,
            key: KeyKind::Rsa2048,
            send_intermediates: true,
            crl_url: None,
        }
    }
}

/// A leaf certificate with its key, and the chain a server sends.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Leaf first, then the intermediates the server sends.
    pub chain: Vec<Vec<u8>>,
    /// Private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl Leaf {
    fn new(chain: Vec<Vec<u8>>, key_pem: String) -> Self {
        Self { chain, key_pem }
    }

    /// The leaf, DER.
    pub fn der(&self) -> &[u8] {
        &self.chain[0]
    }

    /// The leaf and chain, PEM.
    pub fn chain_pem(&self) -> String {
        self.chain
            .iter()
            .map(|d| pem_of(d, "CERTIFICATE"))
            .collect()
    }

    /// The leaf's thumbprint in the Windows form.
    pub fn thumbprint(&self) -> String {
        sha1_hex(self.der())
    }

    /// The chain for rustls.
    pub fn rustls_chain(&self) -> Vec<CertificateDer<'static>> {
        self.chain
            .iter()
            .map(|d| CertificateDer::from(d.clone()))
            .collect()
    }

    /// The key for rustls.
    pub fn rustls_key(&self) -> Result<PrivateKeyDer<'static>> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).context("leaf key is not PEM")
    }
}

/// Encodes DER as PEM with the given label.
pub fn to_pem(der: &[u8], label: &str) -> String {
    pem_of(der, label)
}

/// How a .pfx is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PfxEncryption {
    /// What OpenSSL 3 and current Windows write: PBES2 with AES-256-CBC, HMAC-SHA256 MAC.
    Modern,
    /// What older Windows and OpenSSL 1.x wrote: RC2-40 for the certificates, 3DES for the
    /// key, SHA-1 MAC (`openssl pkcs12 -legacy`).
    Legacy,
    /// 3DES for both certificates and key, SHA-1 MAC (Windows' "TripleDES-SHA1").
    TripleDes,
}

fn write_temp(dir: &Path, name: &str, content: &[u8]) -> Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, content)?;
    Ok(path.display().to_string())
}

/// A .pfx of `leaf` with its key and the chain it carries, made by `openssl pkcs12 -export`.
pub fn pfx(leaf: &Leaf, password: &str, encryption: PfxEncryption) -> Result<Vec<u8>> {
    pfx_with_openssl(leaf, password, encryption, true)
}

/// A .pfx of `leaf` and its chain without the private key (`openssl pkcs12 -export -nokeys`).
pub fn pfx_without_key(leaf: &Leaf, password: &str) -> Result<Vec<u8>> {
    pfx_with_openssl(leaf, password, PfxEncryption::Modern, false)
}

fn pfx_with_openssl(
    leaf: &Leaf,
    password: &str,
    encryption: PfxEncryption,
    with_key: bool,
) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let cert = write_temp(
        dir.path(),
        "leaf.pem",
        to_pem(leaf.der(), "CERTIFICATE").as_bytes(),
    )?;
    let key = write_temp(dir.path(), "leaf.key", leaf.key_pem.as_bytes())?;
    let chain: String = leaf.chain[1..]
        .iter()
        .map(|d| to_pem(d, "CERTIFICATE"))
        .collect();
    let chain = write_temp(dir.path(), "chain.pem", chain.as_bytes())?;
    let out = dir.path().join("out.pfx").display().to_string();
    let pass = format!("pass:{password}");
    let mut args = vec![
        "pkcs12", "-export", "-in", &cert, "-out", &out, "-passout", &pass,
    ];
    if with_key {
        args.extend(["-inkey", &key]);
    } else {
        args.push("-nokeys");
    }
    if leaf.chain.len() > 1 {
        args.extend(["-certfile", &chain]);
    }
    match encryption {
        PfxEncryption::Modern => {}
        PfxEncryption::Legacy => args.push("-legacy"),
        PfxEncryption::TripleDes => args.extend([
            "-certpbe",
            "PBE-SHA1-3DES",
            "-keypbe",
            "PBE-SHA1-3DES",
            "-macalg",
            "sha1",
        ]),
    }
    openssl(&args, None)?;
    Ok(std::fs::read(&out)?)
}

/// A .pfx that pairs `leaf` (and its chain) with `key_pem`, a PKCS#8 key of another
/// certificate. `openssl pkcs12 -export` refuses to make one, so p12-keystore writes it.
pub fn pfx_with_key(leaf: &Leaf, key_pem: &str, password: &str) -> Result<Vec<u8>> {
    let key = match PrivateKeyDer::from_pem_slice(key_pem.as_bytes()) {
        Ok(PrivateKeyDer::Pkcs8(der)) => der.secret_pkcs8_der().to_vec(),
        _ => bail!("the key is not a PKCS#8 PEM key"),
    };
    let key = p12_keystore::PrivateKey::from_der(&key)?;
    let certs = leaf
        .chain
        .iter()
        .map(|der| p12_keystore::Certificate::from_der(der))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let chain = p12_keystore::PrivateKeyChain::new(b"cemwatch-test".as_slice(), key, certs);
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(
        "gateway",
        p12_keystore::KeyStoreEntry::PrivateKeyChain(chain),
    );
    Ok(store.writer(password).write()?)
}

/// The SHA-1 fingerprint `openssl x509 -fingerprint -sha1 -noout` prints for a DER
/// certificate, colons removed: the independent reference for thumbprints.
pub fn openssl_thumbprint(der: &[u8]) -> Result<String> {
    let out = openssl(
        &["x509", "-inform", "DER", "-noout", "-fingerprint", "-sha1"],
        Some(der),
    )?;
    let text = String::from_utf8(out)?;
    let (_, hex) = text
        .trim()
        .split_once('=')
        .context("openssl printed no fingerprint")?;
    Ok(hex.replace(':', ""))
}
