//! The raw baseline: a minimal quinn server with the coordinator's TLS identity (mutual TLS
//! against the same CA) and the coordinator's transport settings, which only reads frames and
//! acknowledges them: it reads the length prefix, answers the first frame with a canned plan
//! and every later one with an `Ack` of the sequence number it reads out of the frame. No
//! decoding, no store, no aggregation. It runs as its own process (`cemwatch-bench
//! baseline-server`), pinned like the coordinator, so both are measured the same way.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use rustls::pki_types::CertificateDer;

use cemwatch_coordinator::quic::ca::CoordinatorCa;
use cemwatch_shared::wire::{self, Plan, ToProbe, ALPN, PREFIX_LEN};

use crate::frames::report_seq;

/// Serves until killed; logs `listening for quic on ADDR` on standard error.
pub fn run(data_dir: &Path, listen: SocketAddr) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("async runtime")?;
    runtime.block_on(serve(data_dir, listen))
}

async fn serve(data_dir: &Path, listen: SocketAddr) -> Result<()> {
    let ca = CoordinatorCa::load_or_create(data_dir, &[])?;
    let provider = cemwatch_transport::tls::provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.ca_der().to_vec()))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(ca.server_chain(), ca.server_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| anyhow!("QUIC TLS configuration: {e}"))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(cemwatch_transport::quic::server_transport_config()));
    // The same socket buffer as the coordinator asks for.
    let socket = crate::sim::udp_socket(listen)?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        quinn::default_runtime().ok_or_else(|| anyhow!("no async runtime"))?,
    )?;
    eprintln!("listening for quic on {}", endpoint.local_addr()?);
    let plan = Arc::new(wire::encode(&ToProbe::Plan(Plan {
        generation: 1,
        checks: Vec::new(),
        reconnect_spread_ms: 10_000,
    }))?);
    while let Some(incoming) = endpoint.accept().await {
        let plan = plan.clone();
        tokio::spawn(async move {
            let _ = connection(incoming, &plan).await;
        });
    }
    Ok(())
}

async fn connection(incoming: quinn::Incoming, plan: &[u8]) -> Result<()> {
    let conn = incoming.await?;
    let (mut send, mut recv) = conn.accept_bi().await?;
    let mut payload = Vec::new();
    let mut first = true;
    loop {
        let mut prefix = [0u8; PREFIX_LEN];
        match recv.read_exact(&mut prefix).await {
            Ok(()) => {}
            Err(_) => return Ok(()),
        }
        let len = wire::payload_len(prefix)?;
        payload.resize(len, 0);
        recv.read_exact(&mut payload).await?;
        if first {
            first = false;
            send.write_all(plan).await?;
            continue;
        }
        let seq = report_seq(&payload).ok_or_else(|| anyhow!("not a report"))?;
        send.write_all(&wire::encode(&ToProbe::Ack { seq })?)
            .await?;
    }
}
