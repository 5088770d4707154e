//! The enrolment CA: created on first start in the data directory (nothing to prepare), it
//! issues the coordinator's server certificate and the probes' short-lived client
//! certificates from their certificate requests. Its SHA-256 is the pin enrolment tokens carry.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use cemwatch_shared::wire::SERVER_NAME;
use cemwatch_transport::fs::write_atomic;
use cemwatch_transport::x509::sha256;

/// Why the CA (or the session key beside it) could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A CA file could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A CA file is there but unusable (restore it from a backup, or remove both files to make
    /// a new CA, which every probe must then enrol with again).
    #[error("{} is not usable: {reason}", path.display())]
    Unusable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rcgen refused to make a key or certificate.
    #[error("cannot make a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A probe's certificate request is not a valid, signed request.
    #[error("the certificate request is invalid: {0}")]
    Request(String),
    /// The system's random source failed.
    #[error("the system's random source failed: no {0} made")]
    Random(&'static str),
    /// The new CA could not be written.
    #[error(transparent)]
    Write(#[from] cemwatch_transport::fs::WriteError),
}

type Result<T, E = CaError> = std::result::Result<T, E>;

/// The coordinator's CA and server identity.
#[derive(Debug)]
pub struct CoordinatorCa {
    issuer: Issuer<'static, KeyPair>,
    ca_der: Vec<u8>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key_der: Vec<u8>,
}

/// A certificate issued to a probe.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate (DER).
    pub der: Vec<u8>,
    /// Serial number, hex.
    pub serial: String,
    /// Not valid after, Unix seconds.
    pub not_after: i64,
}

/// A random 127-bit certificate serial; an error when the system's random source fails
/// (certificates with equal serials from one CA are ambiguous to revocation).
fn random_serial() -> Result<Vec<u8>> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Random("certificate serial"))?;
    bytes[0] &= 0x7f; // positive
    Ok(bytes.to_vec())
}

fn ca_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("ca");
    (dir.join("ca.key"), dir.join("ca.pem"))
}

impl CoordinatorCa {
    /// Loads the CA from `data_dir`, creating it on first start, and issues a fresh server
    /// certificate for [`SERVER_NAME`] plus `server_names`.
    pub fn load_or_create(data_dir: &Path, server_names: &[String]) -> Result<Self> {
        let (key_path, cert_path) = ca_paths(data_dir);
        let (key, cert_pem) = if key_path.exists() && cert_path.exists() {
            let read = |path: &Path| {
                std::fs::read_to_string(path).map_err(|source| CaError::File {
                    path: path.to_path_buf(),
                    source,
                })
            };
            let key_pem = read(&key_path)?;
            let cert_pem = read(&cert_path)?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Unusable {
                path: key_path.clone(),
                reason: format!("not a key: {e}"),
            })?;
            (key, cert_pem)
        } else {
            let dir = key_path.parent().map(Path::to_path_buf).unwrap_or_default();
            std::fs::create_dir_all(&dir).map_err(|source| CaError::File {
                path: dir.clone(),
                source,
            })?;
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "cemwatch coordinator CA");
            dn.push(DnType::OrganizationName, "cemwatch");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let now = OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::hours(1);
            params.not_after = now + time::Duration::days(365 * 20);
            params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
            let cert = params.self_signed(&key)?;
            write_atomic(&key_path, key.serialize_pem().as_bytes(), true)?;
            write_atomic(&cert_path, cert.pem().as_bytes(), false)?;
            tracing::info!(path = %cert_path.display(), "created the coordinator CA");
            (key, cert.pem())
        };
        let ca_der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map(|c: CertificateDer<'static>| c.as_ref().to_vec())
            .map_err(|e| CaError::Unusable {
                path: cert_path.clone(),
                reason: format!("no certificate in it: {e}"),
            })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| CaError::Unusable {
            path: cert_path.clone(),
            reason: format!("the CA certificate is unreadable: {e}"),
        })?;

        let server_key = KeyPair::generate()?;
        let mut names = vec![SERVER_NAME.to_string()];
        names.extend(server_names.iter().cloned());
        let mut params = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, SERVER_NAME);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(365);
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        let server_cert = params.signed_by(&server_key, &issuer)?;
        Ok(Self {
            server_chain: vec![
                server_cert.der().clone(),
                CertificateDer::from(ca_der.clone()),
            ],
            server_key_der: server_key.serialize_der(),
            issuer,
            ca_der,
        })
    }

    /// The CA certificate (DER).
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// SHA-256 of the CA certificate: the pin tokens carry.
    pub fn pin(&self) -> [u8; 32] {
        sha256(&self.ca_der)
    }

    /// The server certificate chain (server, CA).
    pub fn server_chain(&self) -> Vec<CertificateDer<'static>> {
        self.server_chain.clone()
    }

    /// The server key.
    pub fn server_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()))
    }

    /// Issues a client certificate for `name` from a certificate request (whose signature
    /// proves the probe holds the key). The request's own subject and extensions are ignored.
    pub fn issue_client(&self, csr_der: &[u8], name: &str, ttl: Duration) -> Result<IssuedCert> {
        let der = rustls_pki_types::CertificateSigningRequestDer::from(csr_der.to_vec());
        let mut csr = CertificateSigningRequestParams::from_der(&der)
            .map_err(|e| CaError::Request(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "cemwatch probes");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        // Backdated a little for clock skew, but never by a large part of a short lifetime:
        // probes renew at half-life.
        let backdate = (ttl.as_secs() / 10).min(300) as i64;
        params.not_before = now - time::Duration::seconds(backdate);
        params.not_after = now + time::Duration::seconds(ttl.as_secs() as i64);
        let serial = random_serial()?;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.use_authority_key_identifier_extension = true;
        csr.params = params.clone();
        let cert = csr.signed_by(&self.issuer)?;
        Ok(IssuedCert {
            der: cert.der().to_vec(),
            serial: hex::encode_upper(&serial),
            not_after: params.not_after.unix_timestamp(),
        })
    }
}
