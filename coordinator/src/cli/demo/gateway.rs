//! The demo's gateway simulator: a CEM Internet Gateway on loopback that serves a split-domain
//! SAN certificate (the SMP name and the gateway name) issued by its own demo CA, plus the SMP's
//! 4726 and 443 bindings for the DMZ checks, put into one of the guide's failure modes, and into
//! another while it runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::ValueEnum;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
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

/// A running simulator. Its scenario can change while it runs ([`GatewaySim::set_scenario`]):
/// the listeners on the policy and legacy ports close and open again, and each new connection
/// gets the certificate of the scenario of the moment.
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
    /// The demo root CA, PEM: what every managed endpoint trusts.
    pub ca_pem: String,
    /// A second root CA, PEM, that issues the certificate of [`Scenario::UntrustedRoot`]:
    /// every site trusts it but branch-lyon, where it was never distributed.
    pub new_root_pem: String,
    /// The certificate the SMP's bindings serve.
    pub smp_thumbprint: String,
    certs: Arc<Certs>,
    scenario: watch::Sender<Scenario>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for GatewaySim {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The certificates of every scenario, made once at start.
#[derive(Debug)]
struct Certs {
    /// The bound certificate, in the policy (healthy, legacy port, gateway down).
    good: Served,
    /// Renewed and bound, while the policy names `good`.
    renewed: Served,
    /// Expires in 12 days.
    expiring: Served,
    /// Lacks the SMP name.
    san_missing: Served,
    /// Issued by the new root CA.
    new_root: Served,
}

impl Certs {
    /// What the gateway serves in `s`, and the thumbprint the CEM policy holds.
    fn of(&self, s: Scenario) -> (&Served, &str) {
        match s {
            Scenario::ThumbprintMismatch => (&self.renewed, &self.good.thumbprint),
            Scenario::CertExpiring => (&self.expiring, &self.expiring.thumbprint),
            Scenario::SanMissing => (&self.san_missing, &self.san_missing.thumbprint),
            Scenario::UntrustedRoot => (&self.new_root, &self.new_root.thumbprint),
            Scenario::Healthy | Scenario::ListenerOnLegacyPort | Scenario::GatewayDown => {
                (&self.good, &self.good.thumbprint)
            }
        }
    }
}

/// Which of the gateway's two ports a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Policy,
    Legacy,
}

impl Port {
    /// Whether the gateway listens on this port in `s`.
    fn listens(self, s: Scenario) -> bool {
        match s {
            Scenario::GatewayDown => false,
            Scenario::ListenerOnLegacyPort => self == Port::Legacy,
            _ => self == Port::Policy,
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

fn tls_config(served: &Served) -> Result<Arc<rustls::ServerConfig>> {
    let key = PrivateKeyDer::from_pem_slice(served.key_pem.as_bytes()).context("demo key")?;
    let config = rustls::ServerConfig::builder_with_provider(cemwatch_transport::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(served.chain.clone(), key)?;
    Ok(Arc::new(config))
}

/// Answers one connection as the gateway does: TLS, then a short HTTP answer.
fn answer(tcp: tokio::net::TcpStream, config: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        if let Ok(Ok(mut tls)) =
            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
        {
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_millis(100), tls.read(&mut buf)).await;
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
            let _ = tls.shutdown().await;
        }
    });
}

/// The SMP's bindings: always up, always the same certificate.
fn serve_fixed(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Ok((tcp, _)) = listener.accept().await {
                answer(tcp, config.clone());
            }
        }
    })
}

/// One of the gateway's ports, following the scenario: closed (connections refused) when the
/// scenario has nothing listen there, bound again on the same port when it has.
fn serve_switching(
    port: Port,
    listener: tokio::net::TcpListener,
    configs: Arc<BTreeMap<Scenario, Arc<rustls::ServerConfig>>>,
    mut scenario: watch::Receiver<Scenario>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(addr) = listener.local_addr() else {
            return;
        };
        let mut listener = Some(listener);
        loop {
            let now = *scenario.borrow_and_update();
            if !port.listens(now) {
                listener = None;
            } else if listener.is_none() {
                // The same port again (tokio sets SO_REUSEADDR, so connections of the last
                // listener in TIME_WAIT do not hold it); retried briefly if it is still busy.
                for _ in 0..50 {
                    match tokio::net::TcpListener::bind(addr).await {
                        Ok(l) => {
                            listener = Some(l);
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                if listener.is_none() {
                    tracing::error!(%addr, "the demo gateway cannot listen on its port again");
                }
            }
            match &listener {
                Some(l) => tokio::select! {
                    accepted = l.accept() => {
                        if let (Ok((tcp, _)), Some(config)) = (accepted, configs.get(&now)) {
                            answer(tcp, config.clone());
                        }
                    }
                    changed = scenario.changed() => if changed.is_err() { return },
                },
                None => {
                    if scenario.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

impl GatewaySim {
    /// Starts the simulator in `scenario`.
    pub async fn start(scenario: Scenario) -> Result<Self> {
        let ca = demo_ca("Example Internal Root CA")?;
        let new_ca = demo_ca("Example Internal Root CA 2025")?;
        let certs = Arc::new(Certs {
            good: leaf(&ca, &[SMP, GATEWAY], keys::GATEWAY_KEY, 365)?,
            renewed: leaf(&ca, &[SMP, GATEWAY], keys::RENEWED_KEY, 730)?,
            expiring: leaf(&ca, &[SMP, GATEWAY], keys::GATEWAY_KEY, 12)?,
            san_missing: leaf(&ca, &[GATEWAY], keys::GATEWAY_KEY, 365)?,
            new_root: leaf(&new_ca, &[SMP, GATEWAY], keys::RENEWED_KEY, 365)?,
        });
        let mut configs = BTreeMap::new();
        for s in Scenario::value_variants() {
            configs.insert(*s, tls_config(certs.of(*s).0)?);
        }
        let configs = Arc::new(configs);
        // Bound now and kept: a port is released only while a scenario has nothing listen
        // there, and bound again by the same task.
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
        let (tx, rx) = watch::channel(scenario);
        let good = tls_config(&certs.good)?;
        let tasks = vec![
            serve_switching(Port::Policy, policy, configs.clone(), rx.clone()),
            serve_switching(Port::Legacy, legacy, configs, rx),
            // The SMP's bindings serve the same SAN certificate (the guide binds it in IIS too).
            serve_fixed(smp_agent, good.clone()),
            serve_fixed(smp_https, good),
        ];
        Ok(Self {
            policy_port,
            legacy_port,
            smp_agent_port,
            smp_https_port,
            ca_pem: ca.pem,
            new_root_pem: new_ca.pem,
            smp_thumbprint: certs.good.thumbprint.clone(),
            certs,
            scenario: tx,
            tasks,
        })
    }

    /// The scenario now.
    pub fn scenario(&self) -> Scenario {
        *self.scenario.borrow()
    }

    /// Puts the simulator into `scenario`: new connections see it at once.
    pub fn set_scenario(&self, scenario: Scenario) {
        self.scenario.send_replace(scenario);
    }

    /// The thumbprint the (simulated) CEM policy holds in the scenario now.
    pub fn policy_thumbprint(&self) -> String {
        self.certs.of(self.scenario()).1.to_string()
    }

    /// The thumbprint of the certificate the gateway serves in the scenario now.
    pub fn served_thumbprint(&self) -> String {
        self.certs.of(self.scenario()).0.thumbprint.clone()
    }
}
