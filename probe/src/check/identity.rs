//! The agent's own certificate, presented when a gateway asks for a client certificate
//! (`check --client-cert`, `run --client-cert`). It is read with `inspect`'s loader (a .pfx with
//! its password, or PEM certificate and key), paired with its private key, and kept on the
//! endpoint: it never travels in a plan or a report (only its subject and thumbprint do).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use cemwatch_shared::{Finding, FindingCode};

use super::cert;
use crate::certfile::{self as inspect, Password};

/// A client certificate with its private key and the chain to present.
#[derive(Clone)]
pub struct ClientIdentity {
    source: String,
    certified: Arc<CertifiedKey>,
    subject: String,
    thumbprint_sha1: String,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("source", &self.source)
            .field("subject", &self.subject)
            .field("thumbprint_sha1", &self.thumbprint_sha1)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ClientIdentity {
    /// Reads the certificate file (`.pfx`/`.p12` with `password`, PEM or DER) and, when given,
    /// a separate PEM key file; pairs a certificate with a private key.
    pub fn load(
        cert_path: &Path,
        key_path: Option<&Path>,
        password: Option<&Password>,
    ) -> anyhow::Result<Self> {
        let shown = cert_path.display().to_string();
        let bytes = inspect::read_file(cert_path).context("--client-cert")?;
        let mut contents = inspect::load(&shown, &bytes, password).context("--client-cert")?;
        let mut source = shown.clone();
        if let Some(key_path) = key_path {
            let key_shown = key_path.display().to_string();
            let key_bytes = inspect::read_file(key_path).context("--client-key")?;
            let keys = inspect::load_pem_keys(&key_shown, &key_bytes).context("--client-key")?;
            if keys.is_empty() {
                bail!("--client-key {key_shown}: the file holds no PEM private key (\"-----BEGIN PRIVATE KEY-----\", RSA or EC): give the agent certificate's key in PEM, or a .pfx with --client-cert alone");
            }
            contents.keys.extend(keys);
            source = format!("{shown} with the key {key_shown}");
        }
        if contents.keys.is_empty() {
            bail!(
                "--client-cert {shown}: the file holds no private key, and an agent certificate is presented with its key: give a .pfx exported with \"Yes, export the private key\", or the key with --client-key KEY.pem"
            );
        }
        let mut unusable = Vec::new();
        for key in &contents.keys {
            let signer = match rustls::crypto::ring::sign::any_supported_type(&key.to_rustls()) {
                Ok(s) => s,
                Err(e) => {
                    unusable.push(format!("a key TLS cannot sign with ({e})"));
                    continue;
                }
            };
            for (i, der) in contents.certificates.iter().enumerate() {
                let candidate =
                    CertifiedKey::new(vec![CertificateDer::from(der.clone())], signer.clone());
                if candidate.keys_match().is_ok() {
                    let chain = chain_from(i, &contents.certificates);
                    let certified = CertifiedKey::new(chain_der(&chain), signer);
                    return Self::new(source, chain, certified);
                }
            }
        }
        let why = if unusable.is_empty() {
            "no certificate in it belongs to the private key (their public keys differ)".to_string()
        } else {
            unusable.join("; ")
        };
        bail!("--client-cert {source}: {why}: give the agent's certificate together with its own private key")
    }

    /// An identity from a chain (leaf first) and its key, for tests and embedders.
    pub fn from_parts(
        source: &str,
        chain: Vec<Vec<u8>>,
        key: &rustls::pki_types::PrivateKeyDer<'_>,
    ) -> anyhow::Result<Self> {
        let signer = rustls::crypto::ring::sign::any_supported_type(key)
            .map_err(|e| anyhow::anyhow!("{source}: TLS cannot sign with this key ({e})"))?;
        let certified = CertifiedKey::new(chain_der(&chain), signer);
        certified.keys_match().map_err(|e| {
            anyhow::anyhow!("{source}: the key does not belong to the certificate ({e})")
        })?;
        Self::new(source.to_string(), chain, certified)
    }

    fn new(source: String, chain: Vec<Vec<u8>>, certified: CertifiedKey) -> anyhow::Result<Self> {
        let leaf = chain.first().context("no certificate")?;
        let parsed = cert::parse(leaf).with_context(|| format!("{source}: the certificate"))?;
        Ok(Self {
            subject: parsed.subject().to_string(),
            thumbprint_sha1: cert::thumbprint_sha1(leaf),
            source,
            certified: Arc::new(certified),
        })
    }

    /// Where it came from (the file, and the key file when separate).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The certificate's subject and thumbprint, as reports show it.
    pub fn describe(&self) -> String {
        format!("{} (thumbprint {})", self.subject, self.thumbprint_sha1)
    }

    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }

    /// The leaf, DER.
    pub fn leaf_der(&self) -> &[u8] {
        self.certified
            .cert
            .first()
            .map(|c| c.as_ref())
            .unwrap_or_default()
    }

    /// Findings about the certificate itself at `now`: expired or not yet valid (it would be
    /// refused), or fewer than `min_days_left` days left. Reported before it is presented.
    pub fn findings(&self, now: OffsetDateTime, min_days_left: u32) -> Vec<Finding> {
        let Ok(info) = cert::analyze(self.leaf_der(), now) else {
            return Vec::new();
        };
        let now_unix = now.unix_timestamp();
        let what = format!(
            "the agent certificate {} ({})",
            self.describe(),
            self.source
        );
        if info.not_after_unix < now_unix {
            vec![Finding::new(
                FindingCode::ClientCertExpired,
                format!(
                    "{what} expired on {}: the gateway will refuse it",
                    info.not_after
                ),
            )]
        } else if info.not_before_unix > now_unix {
            vec![Finding::new(
                FindingCode::ClientCertExpired,
                format!(
                    "{what} is not valid before {}: the gateway will refuse it",
                    info.not_before
                ),
            )]
        } else if info.days_left < i64::from(min_days_left) {
            vec![Finding::new(
                FindingCode::ClientCertExpiring,
                format!(
                    "{what} expires on {} ({} days left)",
                    info.not_after, info.days_left
                ),
            )]
        } else {
            Vec::new()
        }
    }
}

fn chain_der(chain: &[Vec<u8>]) -> Vec<CertificateDer<'static>> {
    chain
        .iter()
        .map(|d| CertificateDer::from(d.clone()))
        .collect()
}

/// The leaf at `leaf`, then its issuers among `certs` in order (self-signed roots included,
/// unrelated certificates left out).
fn chain_from(leaf: usize, certs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let parsed: Vec<_> = certs.iter().map(|d| cert::parse(d).ok()).collect();
    let mut order = vec![leaf];
    let mut current = leaf;
    while let Some(Some(c)) = parsed.get(current) {
        if c.subject().as_raw() == c.issuer().as_raw() {
            break;
        }
        let issuer = c.issuer().as_raw();
        let next = (0..certs.len()).find(|j| {
            !order.contains(j)
                && parsed[*j]
                    .as_ref()
                    .is_some_and(|p| p.subject().as_raw() == issuer)
        });
        match next {
            Some(j) => {
                order.push(j);
                current = j;
            }
            None => break,
        }
    }
    order.into_iter().map(|i| certs[i].clone()).collect()
}
