//! A simulated fleet's identities: the coordinator's own CA (loaded from, or created in, its
//! data directory) issues one client certificate per probe from a certificate request, and
//! each probe is registered in the coordinator's store with the row enrolment writes
//! (`store::insert_probe`). Issuing runs on a few threads; all probes share one key, whose
//! request the CA verifies anew for every certificate, as it does at enrolment.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustls::client::{ClientSessionMemoryCache, ResolvesClientCert, Resumption};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use cemwatch_coordinator::quic::ca::CoordinatorCa;
use cemwatch_coordinator::store;
use cemwatch_shared::wire::{Labels, ALPN};

/// Sites the simulated probes are spread over (the coordinator's default cap on site labels).
pub const SITES: usize = 50;
/// Lifetime of the simulated probes' certificates (the coordinator's default).
pub const CERT_TTL: Duration = Duration::from_secs(7 * 86_400);

/// The simulated probes' identities.
#[derive(Debug)]
pub struct Fleet {
    /// Probe names, `sim-000000` on.
    pub names: Vec<String>,
    /// Labels per probe.
    pub labels: Vec<Labels>,
    /// Client certificates (DER), one per probe.
    pub certs: Vec<Vec<u8>>,
    /// The shared private key (PKCS#8 DER).
    pub key_der: Vec<u8>,
    /// The coordinator CA (DER), which the probes pin.
    pub ca_der: Vec<u8>,
    /// Time spent issuing and registering.
    pub took: Duration,
}

/// The name of simulated probe `i`.
pub fn probe_name(i: usize) -> String {
    format!("sim-{i:06}")
}

/// Issues `n` certificates with the CA in `data_dir` and registers the probes in its store.
pub fn provision(data_dir: &Path, n: usize, threads: usize) -> Result<Fleet> {
    let started = Instant::now();
    let ca = CoordinatorCa::load_or_create(data_dir, &[]).context("coordinator CA")?;
    let key = rcgen::KeyPair::generate().context("probe key")?;
    let key_pem = key.serialize_pem();
    let (_, csr) = cemwatch_probe::agent::enroll::key_and_csr("sim", Some(&key_pem))?;
    let names: Vec<String> = (0..n).map(probe_name).collect();
    let labels: Vec<Labels> = (0..n)
        .map(|i| {
            [
                ("site".to_string(), format!("site-{:02}", i % SITES)),
                ("vantage".to_string(), "internet".to_string()),
            ]
            .into_iter()
            .collect()
        })
        .collect();
    let threads = threads.clamp(1, 8);
    let chunk = n.div_ceil(threads).max(1);
    let issued: Vec<Result<Vec<cemwatch_coordinator::quic::ca::IssuedCert>>> =
        std::thread::scope(|s| {
            let handles: Vec<_> = names
                .chunks(chunk)
                .map(|part| {
                    let (ca, csr) = (&ca, &csr);
                    s.spawn(move || {
                        part.iter()
                            .map(|name| {
                                ca.issue_client(csr, name, CERT_TTL)
                                    .map_err(anyhow::Error::from)
                            })
                            .collect::<Result<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("an issuing thread panicked"))?
                })
                .collect()
        });
    let mut certs = Vec::with_capacity(n);
    for part in issued {
        certs.extend(part?);
    }
    let mut db = store::open(data_dir)?;
    let tx = db.transaction()?;
    let now = store::now_ms();
    for ((name, labels), cert) in names.iter().zip(&labels).zip(&certs) {
        store::insert_probe(
            &tx,
            name,
            labels,
            now,
            &cert.serial,
            cert.not_after,
            "cemwatch-bench",
        )?;
    }
    tx.commit()?;
    Ok(Fleet {
        names,
        labels,
        certs: certs.into_iter().map(|c| c.der).collect(),
        key_der: key.serialize_der(),
        ca_der: ca.ca_der().to_vec(),
        took: started.elapsed(),
    })
}

/// Always presents one probe's certificate.
#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl ResolvesClientCert for OneCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// QUIC client configurations, one per probe: the probe's certificate, the pinned CA, the
/// probes' transport settings and, with `resumption`, a session cache of its own (a ticket
/// carries the identity it was issued to, so probes must never share one).
pub fn client_configs(fleet: &Fleet, resumption: bool) -> Result<Vec<quinn::ClientConfig>> {
    let provider = cemwatch_transport::tls::provider();
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            fleet.key_der.clone(),
        )))
        .context("probe key")?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(fleet.ca_der.clone()))?;
    let first = Arc::new(CertifiedKey::new(Vec::new(), key.clone()));
    let mut template = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(OneCert(first)));
    template.alpn_protocols = vec![ALPN.to_vec()];
    let transport = Arc::new(cemwatch_transport::quic::transport_config());
    fleet
        .certs
        .iter()
        .map(|der| {
            let mut tls = template.clone();
            tls.client_auth_cert_resolver = Arc::new(OneCert(Arc::new(CertifiedKey::new(
                vec![CertificateDer::from(der.clone())],
                key.clone(),
            ))));
            tls.resumption = if resumption {
                Resumption::store(Arc::new(ClientSessionMemoryCache::new(1)))
            } else {
                Resumption::disabled()
            };
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
                .map_err(|e| anyhow::anyhow!("QUIC client configuration: {e}"))?;
            let mut config = quinn::ClientConfig::new(Arc::new(crypto));
            config.transport_config(transport.clone());
            Ok(config)
        })
        .collect()
}
