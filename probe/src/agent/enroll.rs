//! Enrolment: the probe makes its key locally, sends a certificate request with the token over
//! a QUIC connection whose server is trusted only through the token's CA pin, and stores the
//! certificate it gets back. The private key never leaves the machine.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use cemwatch_shared::token::EnrollToken;
use cemwatch_shared::wire::{ToCoordinator, ToProbe, SERVER_NAME};

use super::state::{Identity, StateDir};
use cemwatch_transport::frame::{read_frame, write_frame};
use cemwatch_transport::{quic, x509};

/// Resolves `HOST:PORT` (the first address).
pub async fn resolve_coordinator(text: &str) -> Result<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !text.contains(':') {
        bail!("coordinator {text:?} has no port: write HOST:PORT, for example coordinator.example.com:4433");
    }
    tokio::net::lookup_host(text)
        .await
        .with_context(|| format!("cannot resolve the coordinator {text:?}"))?
        .next()
        .ok_or_else(|| anyhow!("the coordinator {text:?} resolves to no address"))
}

/// A fresh key pair and a certificate request for `name`.
pub fn key_and_csr(name: &str, key_pem: Option<&str>) -> Result<(String, Vec<u8>)> {
    let key = match key_pem {
        Some(pem) => rcgen::KeyPair::from_pem(pem).context("the probe key is unreadable")?,
        None => rcgen::KeyPair::generate().context("cannot generate a key")?,
    };
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, name);
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .context("cannot make the certificate request")?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// The default probe name: the host name.
pub fn default_name() -> String {
    let from_file = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    from_file
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "probe".to_string())
}

/// Enrols with the coordinator at `coordinator` and saves the identity in `state_dir`.
pub async fn enroll(
    coordinator: &str,
    token: &EnrollToken,
    name: &str,
    state_dir: &Path,
    timeout: Duration,
) -> Result<Identity> {
    let state = StateDir::new(state_dir);
    state.ensure_not_enrolled()?;
    let addr = resolve_coordinator(coordinator).await?;
    let (key_pem, csr_der) = key_and_csr(name, None)?;
    let endpoint = quic::client_endpoint(addr)?;
    let config = quic::enrol_client_config(token.ca_pin)?;
    let connecting = endpoint
        .connect_with(config, addr, SERVER_NAME)
        .with_context(|| format!("cannot connect to {coordinator}"))?;
    let conn = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| anyhow!("no answer from the coordinator at {coordinator} within {timeout:?}: check the address and that UDP to it is open"))?
        .map_err(|e| anyhow!("cannot connect to the coordinator at {coordinator}: {e}"))?;
    let ca_der = conn
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|chain| {
            chain
                .iter()
                .find(|c| x509::sha256(c.as_ref()) == token.ca_pin)
                .map(|c| c.as_ref().to_vec())
        })
        .ok_or_else(|| anyhow!("the coordinator did not present the pinned CA"))?;
    let (mut send, mut recv) = conn.open_bi().await.context("cannot open a stream")?;
    write_frame(
        &mut send,
        &ToCoordinator::Enroll {
            token: token.to_string(),
            name: name.to_string(),
            csr_der,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        },
    )
    .await?;
    let reply = tokio::time::timeout(timeout, read_frame::<ToProbe>(&mut recv))
        .await
        .map_err(|_| {
            anyhow!("the coordinator did not answer the enrolment within {timeout:?}")
        })??;
    let result = match reply {
        Some(ToProbe::Enrolled {
            name,
            cert_der,
            labels,
        }) => {
            let identity = Identity {
                name,
                labels,
                coordinators: vec![coordinator.to_string()],
            };
            state.save_enrolment(&identity, &ca_der, &key_pem, &cert_der)?;
            Ok(identity)
        }
        Some(ToProbe::Refused { reason }) => {
            Err(anyhow!("the coordinator refused the enrolment: {reason}"))
        }
        Some(other) => Err(anyhow!("unexpected answer to the enrolment: {other:?}")),
        None => Err(anyhow!(
            "the coordinator closed the connection without answering"
        )),
    };
    conn.close(0u32.into(), b"enrolled");
    endpoint.wait_idle().await;
    result
}
