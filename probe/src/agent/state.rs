//! The probe's state directory: its identity (name, labels, coordinators), the pinned
//! coordinator CA, its private key (never leaves the machine) and client certificate, its last
//! plan, and the spool.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use cemwatch_shared::wire::{Labels, Plan};
use cemwatch_transport::fs::{pem, write_atomic};

/// Who the probe is, as enrolment left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The probe's name in the fleet (its certificate's common name).
    pub name: String,
    /// Labels given by the coordinator (site, vantage, ...).
    pub labels: Labels,
    /// Coordinators to report to, in order of preference (`HOST:PORT`).
    pub coordinators: Vec<String>,
}

/// Paths inside a state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

const IDENTITY: &str = "identity.json";
const CA: &str = "coordinator-ca.pem";
const KEY: &str = "probe.key";
const CERT: &str = "probe.crt";
const PLAN: &str = "plan.json";

impl StateDir {
    /// A state directory at `root` (created when needed).
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The spool directory.
    pub fn spool(&self) -> PathBuf {
        self.root.join("spool")
    }

    /// Whether a probe was enrolled here.
    pub fn is_enrolled(&self) -> bool {
        self.root.join(IDENTITY).exists()
    }

    /// Saves everything enrolment produced.
    pub fn save_enrolment(
        &self,
        identity: &Identity,
        ca_der: &[u8],
        key_pem: &str,
        cert_der: &[u8],
    ) -> Result<()> {
        fs::create_dir_all(&self.root).with_context(|| {
            format!("cannot create the state directory {}", self.root.display())
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700));
        }
        write_atomic(&self.root.join(KEY), key_pem.as_bytes(), true)?;
        write_atomic(
            &self.root.join(CA),
            pem("CERTIFICATE", ca_der).as_bytes(),
            false,
        )?;
        self.save_certificate(cert_der)?;
        // The identity last: its presence means enrolment completed.
        write_atomic(
            &self.root.join(IDENTITY),
            serde_json::to_string_pretty(identity)?.as_bytes(),
            false,
        )?;
        Ok(())
    }

    /// Replaces the client certificate (after renewal).
    pub fn save_certificate(&self, cert_der: &[u8]) -> Result<()> {
        write_atomic(
            &self.root.join(CERT),
            pem("CERTIFICATE", cert_der).as_bytes(),
            false,
        )?;
        Ok(())
    }

    /// Loads the identity.
    pub fn identity(&self) -> Result<Identity> {
        let path = self.root.join(IDENTITY);
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "{} is not an enrolled probe's state directory (no {IDENTITY}): run `cemwatch-probe enroll` first",
                self.root.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))
    }

    /// Loads the pinned coordinator CA (DER).
    pub fn ca_der(&self) -> Result<Vec<u8>> {
        let path = self.root.join(CA);
        let cert = CertificateDer::from_pem_file(&path)
            .with_context(|| format!("cannot read the coordinator CA {}", path.display()))?;
        Ok(cert.as_ref().to_vec())
    }

    /// Loads the client certificate (DER).
    pub fn cert_der(&self) -> Result<Vec<u8>> {
        let path = self.root.join(CERT);
        let cert = CertificateDer::from_pem_file(&path)
            .with_context(|| format!("cannot read the probe certificate {}", path.display()))?;
        Ok(cert.as_ref().to_vec())
    }

    /// Loads the private key (PEM text and parsed).
    pub fn key(&self) -> Result<(String, PrivateKeyDer<'static>)> {
        let path = self.root.join(KEY);
        let pem_text = fs::read_to_string(&path)
            .with_context(|| format!("cannot read the probe key {}", path.display()))?;
        let key = PrivateKeyDer::from_pem_slice(pem_text.as_bytes())
            .with_context(|| format!("{} holds no private key", path.display()))?;
        Ok((pem_text, key))
    }

    /// Saves the last plan, so checks go on while the coordinator is unreachable.
    pub fn save_plan(&self, plan: &Plan) -> Result<()> {
        write_atomic(
            &self.root.join(PLAN),
            serde_json::to_string(plan)?.as_bytes(),
            false,
        )?;
        Ok(())
    }

    /// The last plan, if any.
    pub fn plan(&self) -> Option<Plan> {
        let text = fs::read_to_string(self.root.join(PLAN)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Refuses to overwrite an existing enrolment.
    pub fn ensure_not_enrolled(&self) -> Result<()> {
        if self.is_enrolled() {
            bail!(
                "{} already holds an enrolled probe; use another --state-dir, or delete it to enrol again",
                self.root.display()
            );
        }
        Ok(())
    }
}
