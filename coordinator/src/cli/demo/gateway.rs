//! The demo's gateway simulator: a CEM Internet Gateway on loopback that serves a split-domain
//! SAN certificate (the SMP name and the gateway name) issued by its own demo CA, plus the SMP's
//! 4726 and 443 bindings for the DMZ checks, each put into one of the guide's failure modes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use super::keys;
use super::Scenario;

/// The gateway's external name.
pub const GATEWAY: &str = "gateway.example.com";
/// The SMP's internal name.
pub const SMP: &str = "smp.example.net";

/// A certificate and its key.
#[derive(Debug, Clone)]
pub struct Served {
    /// Chain (leaf first).
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 key.
    pub key_pem: String,
    /// SHA-1 thumbprint of the leaf.
    pub thumbprint: String,
}

/// A running simulator.
#[derive(Debug)]
pub struct GatewaySim {
    /// The port in the CEM policy (where the gateway should listen).
    pub policy_port: u16,
    /// The legacy port (443 in production).
    pub legacy_port: u16,
    /// The SMP's agent site binding (4726 in production).
    pub smp_agent_port: u16,
    /// The SMP's HTTPS binding (443 in production).
    pub smp_https_port: u16,
    /// The thumbprint registered in the (simulated) CEM policy.
    pub policy_thumbprint: String,
    /// The demo root CA, PEM: what managed endpoints trust.
    pub ca_pem: String,
    /// The certificate the gateway serves.
    pub served_thumbprint: String,
    /// The certificate the SMP's bindings serve.
    pub smp_thumbprint: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for GatewaySim {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct DemoCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

fn demo_ca(name: &str) -> Result<DemoCa> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "Example Corp (cemwatch demo)");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now + time::Duration::days(3650);
    let cert = params.self_signed(&key)?;
    Ok(DemoCa {
        pem: cert.pem(),
        der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    })
}

fn leaf(ca: &DemoCa, sans: &[&str], key_pem: &str, days_left: i64) -> Result<Served> {
    let key = KeyPair::from_pem(key_pem).context("demo key")?;
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, sans.last().copied().unwrap_or(GATEWAY));
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days_left);
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &ca.issuer)?;
    let thumbprint = cemwatch_transport::x509::thumbprint_sha1(cert.der());
    Ok(Served {
        chain: vec![cert.der().clone(), ca.der.clone()],
        key_pem: key_pem.to_string(),
        thumbprint,
    })
}

/// A listener on a free loopback port, kept bound so nothing else can take the port.
async fn listen() -> Result<tokio::net::TcpListener> {
    Ok(tokio::net::TcpListener::bind("127.0.0.1:0").await?)
}

async fn serve_tls(listener: tokio::net::TcpListener, served: &Served) -> Result<JoinHandle<()>> {
    let key = PrivateKeyDer::from_pem_slice(served.key_pem.as_bytes()).context("demo key")?;
    let config = rustls::ServerConfig::builder_with_provider(cemwatch_transport::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(served.chain.clone(), key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    Ok(tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(Ok(mut tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                {
                    let mut buf = [0u8; 1024];
                    let _ =
                        tokio::time::timeout(Duration::from_millis(100), tls.read(&mut buf)).await;
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    }))
}

impl GatewaySim {
    /// Starts the simulator in `scenario`.
    pub async fn start(scenario: Scenario) -> Result<Self> {
        let ca = demo_ca("Example Internal Root CA")?;
        let good = leaf(&ca, &[SMP, GATEWAY], keys::GATEWAY_KEY, 365)?;
        let mut policy_thumbprint = good.thumbprint.clone();
        let served = match scenario {
            Scenario::ThumbprintMismatch => {
                // Renewed certificate bound; the policy still names the old one.
                let renewed = leaf(&ca, &[SMP, GATEWAY], keys::RENEWED_KEY, 730)?;
                policy_thumbprint = good.thumbprint.clone();
                renewed
            }
            Scenario::CertExpiring => {
                let s = leaf(&ca, &[SMP, GATEWAY], keys::GATEWAY_KEY, 12)?;
                policy_thumbprint = s.thumbprint.clone();
                s
            }
            Scenario::SanMissing => {
                let s = leaf(&ca, &[GATEWAY], keys::GATEWAY_KEY, 365)?;
                policy_thumbprint = s.thumbprint.clone();
                s
            }
            _ => good.clone(),
        };
        // Bound now and kept: a port is never released and bound again (another process could
        // take it in between). Ports where nothing must listen are closed by dropping theirs.
        let (policy, legacy, smp_agent, smp_https) = (
            listen().await?,
            listen().await?,
            listen().await?,
            listen().await?,
        );
        let policy_port = policy.local_addr()?.port();
        let legacy_port = legacy.local_addr()?.port();
        let smp_agent_port = smp_agent.local_addr()?.port();
        let smp_https_port = smp_https.local_addr()?.port();
        let mut tasks = Vec::new();
        match scenario {
            Scenario::GatewayDown => {}
            Scenario::ListenerOnLegacyPort => tasks.push(serve_tls(legacy, &served).await?),
            _ => tasks.push(serve_tls(policy, &served).await?),
        }
        // The SMP's bindings serve the same SAN certificate (the guide binds it in IIS too).
        tasks.push(serve_tls(smp_agent, &good).await?);
        tasks.push(serve_tls(smp_https, &good).await?);
        Ok(Self {
            policy_port,
            legacy_port,
            smp_agent_port,
            smp_https_port,
            policy_thumbprint,
            ca_pem: ca.pem,
            served_thumbprint: served.thumbprint,
            smp_thumbprint: good.thumbprint,
            tasks,
        })
    }
}
