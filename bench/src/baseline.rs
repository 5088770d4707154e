//! The raw baseline: a minimal quinn server with the coordinator's TLS identity (mutual TLS
//! against the same CA), the coordinator's transport settings, its TLS session resumption
//! (ticket keys and stateless-reset keys that survive a restart) and its sockets (one per core
//! sharing the port), which only reads frames and acknowledges them: it reads the length
//! prefix, answers the first frame with a canned plan and every later one with an `Ack` of the
//! sequence number it reads out of the frame. No decoding, no store, no aggregation.
//!
//! On SIGUSR1 it asks every connection for a round at once (`ProbeNow`, round ids 1, 2, ...),
//! and answers the report like any other; killed and started again on the same port, it takes
//! the reconnect storm. It runs as its own process (`cemwatch-bench baseline-server`), pinned
//! like the coordinator, so both are measured the same way.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use rustls::pki_types::CertificateDer;
use tokio::sync::watch;

use cemwatch_coordinator::config::limits::LimitsConfig;
use cemwatch_coordinator::quic::ca::CoordinatorCa;
use cemwatch_coordinator::quic::capacity;
use cemwatch_coordinator::quic::session_keys::SessionKeys;
use cemwatch_shared::wire::{self, Plan, ToProbe, ALPN, PREFIX_LEN};

use crate::frames::report_seq;

/// How the baseline server runs.
#[derive(Debug, Clone)]
pub struct BaselineOptions {
    /// Where the coordinator's CA is (the server identity and the client CA).
    pub ca_dir: std::path::PathBuf,
    /// Where the baseline's own session secret is (not the coordinator's: the fleet's first
    /// connection to the coordinator is a full handshake, as without the baseline).
    pub keys_dir: std::path::PathBuf,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The fleet its plans size the reconnect spread for, as the coordinator does with its
    /// enrolled probes: fleet / its own measured handshake capacity
    /// (`cemwatch_coordinator::quic::capacity`, the same meter and rule).
    pub fleet: usize,
    /// UDP sockets sharing the port (0: one per core).
    pub sockets: usize,
    /// The check a round asks for.
    pub check: String,
}

/// Serves until killed; logs `listening for quic on ADDR` on standard error.
pub fn run(opts: &BaselineOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("async runtime")?;
    runtime.block_on(serve(opts))
}

async fn serve(opts: &BaselineOptions) -> Result<()> {
    let ca = CoordinatorCa::load_or_create(&opts.ca_dir, &[])?;
    let keys = SessionKeys::load_or_create(&opts.keys_dir)?;
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
    // The coordinator's resumption: stateless tickets from a key that survives a restart.
    tls.ticketer = keys.ticketer();
    tls.send_tls13_tickets = 4;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| anyhow!("QUIC TLS configuration: {e}"))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(cemwatch_transport::quic::server_transport_config()));
    let count = match opts.sockets {
        0 => cemwatch_coordinator::quic::sockets::sockets_for_cores(),
        n => n,
    };
    // The coordinator's sockets: as many, with the same buffers.
    let sockets = cemwatch_coordinator::quic::sockets::bind(opts.listen, count)?;
    let runtime = quinn::default_runtime().ok_or_else(|| anyhow!("no async runtime"))?;
    let endpoints = sockets
        .into_iter()
        .map(|socket| {
            quinn::Endpoint::new(
                keys.endpoint_config(),
                Some(config.clone()),
                socket,
                runtime.clone(),
            )
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let addr = endpoints.first().context("no socket")?.local_addr()?;
    eprintln!("listening for quic on {addr} ({count} sockets)");
    // The plan's reconnect spread follows the handshake capacity this server measures, with
    // the coordinator's meter and rule.
    let meter = Arc::new(capacity::HandshakeMeter::default());
    let sampler = meter.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(capacity::SAMPLE_EVERY);
        loop {
            every.tick().await;
            match capacity::process_cpu() {
                Some(cpu) => {
                    if let Some(per) = sampler.sample(cpu) {
                        eprintln!("handshake burst: {:.3} ms CPU per handshake", per * 1e3);
                    }
                }
                None => return,
            }
        }
    });
    let cap = LimitsConfig::default().reconnects_per_second;
    let fleet = opts.fleet;
    let plan_meter = meter.clone();
    let plan = Arc::new(move || {
        wire::encode(&ToProbe::Plan(Plan {
            generation: 1,
            checks: Vec::new(),
            reconnect_spread_ms: capacity::spread(
                fleet,
                plan_meter.capacity(capacity::cores()),
                cap,
            )
            .as_millis() as u64,
        }))
    });
    // The current round's `ProbeNow` frame; every connection watches it.
    let (round_tx, round_rx) = watch::channel::<Option<Arc<Vec<u8>>>>(None);
    let check = opts.check.clone();
    tokio::spawn(async move {
        let Ok(mut usr1) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        else {
            return;
        };
        let mut id = 0u64;
        while usr1.recv().await.is_some() {
            id += 1;
            let frame = wire::encode(&ToProbe::ProbeNow {
                round: id,
                checks: vec![check.clone()],
            });
            if let Ok(frame) = frame {
                round_tx.send_replace(Some(Arc::new(frame)));
                eprintln!("round {id} asked");
            }
        }
    });
    let mut loops = tokio::task::JoinSet::new();
    for endpoint in endpoints {
        let (plan, round_rx, meter) = (plan.clone(), round_rx.clone(), meter.clone());
        loops.spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let plan = plan.clone();
                let rounds = round_rx.clone();
                let meter = meter.clone();
                tokio::spawn(async move {
                    let _ = connection(incoming, &*plan, &meter, rounds).await;
                });
            }
        });
    }
    while loops.join_next().await.is_some() {}
    Ok(())
}

async fn connection(
    incoming: quinn::Incoming,
    plan: &(dyn Fn() -> std::result::Result<Vec<u8>, wire::WireError> + Send + Sync),
    meter: &capacity::HandshakeMeter,
    mut rounds: watch::Receiver<Option<Arc<Vec<u8>>>>,
) -> Result<()> {
    let conn = incoming.await?;
    meter.completed();
    conn.set_receive_window(cemwatch_transport::quic::session_window());
    let (mut send, mut recv) = conn.accept_bi().await?;
    rounds.borrow_and_update();
    let mut buf: Vec<u8> = Vec::new();
    let mut first = true;
    loop {
        // Every complete frame received so far.
        let mut used = 0;
        while buf.len() - used >= PREFIX_LEN {
            let mut prefix = [0u8; PREFIX_LEN];
            prefix.copy_from_slice(&buf[used..used + PREFIX_LEN]);
            let len = wire::payload_len(prefix)?;
            if buf.len() - used < PREFIX_LEN + len {
                break;
            }
            let payload = &buf[used + PREFIX_LEN..used + PREFIX_LEN + len];
            used += PREFIX_LEN + len;
            if first {
                first = false;
                send.write_all(&plan()?).await?;
                continue;
            }
            let seq = report_seq(payload).ok_or_else(|| anyhow!("not a report"))?;
            send.write_all(&wire::encode(&ToProbe::Ack { seq })?)
                .await?;
        }
        buf.drain(..used);
        tokio::select! {
            chunk = recv.read_chunk(64 * 1024, true) => match chunk {
                Ok(Some(c)) => buf.extend_from_slice(&c.bytes),
                _ => return Ok(()),
            },
            changed = rounds.changed(), if !first => {
                if changed.is_err() {
                    return Ok(());
                }
                let frame = rounds.borrow_and_update().clone();
                if let Some(frame) = frame {
                    send.write_all(&frame).await?;
                }
            }
        }
    }
}
