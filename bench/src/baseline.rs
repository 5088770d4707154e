//! The raw baseline: a minimal quinn server with the coordinator's TLS identity (mutual TLS
//! against the same CA), the coordinator's transport settings, its TLS session resumption
//! (ticket keys and stateless-reset keys that survive a restart) and its sockets (one per core
//! sharing the port), which only reads frames and acknowledges them: it reads the length
//! prefix, answers the first frame with a canned plan and every later one with an `Ack` of the
//! sequence number it reads out of the frame. No decoding, no store, no aggregation.
//!
//! On SIGUSR1 it asks every connection for a round (`ProbeNow`, round ids 1, 2, ...), paced by
//! the coordinator's own rule (`quic::pace`: at most a window unanswered, sized from the answers
//! measured), and answers the report like any other. Asked all at once, 100,000 answers
//! overflowed its socket and the round did not complete in 240 s: a flood measures the
//! socket's buffer, not what QUIC costs per answer. Killed and started again on the same port,
//! it takes the reconnect storm. It runs as its own process (`cemwatch-bench
//! baseline-server`), pinned like the coordinator, so both are measured the same way.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use rustls::pki_types::CertificateDer;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

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
    let rounds = Arc::new(Rounds::default());
    let check = opts.check.clone();
    let asker = rounds.clone();
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
            let Ok(frame) = frame else { continue };
            let (answered, targets) = asker.start(frame);
            eprintln!("round {id} asked of {}", targets.len());
            // The coordinator's pacing (`quic::pace`): at most a window unanswered.
            tokio::spawn(async move {
                cemwatch_coordinator::quic::pace(targets, &answered, |n: Arc<Notify>| {
                    n.notify_one()
                })
                .await;
            });
        }
    });
    let mut loops = tokio::task::JoinSet::new();
    for endpoint in endpoints {
        let (plan, rounds, meter) = (plan.clone(), rounds.clone(), meter.clone());
        loops.spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let plan = plan.clone();
                let rounds = rounds.clone();
                let meter = meter.clone();
                tokio::spawn(async move {
                    let _ = connection(incoming, &*plan, &meter, &rounds).await;
                });
            }
        });
    }
    while loops.join_next().await.is_some() {}
    Ok(())
}

/// The connections a round can ask, and the round under way.
#[derive(Default)]
struct Rounds {
    state: parking_lot::Mutex<RoundState>,
}

#[derive(Default)]
struct RoundState {
    /// Each live connection's wake-up, by an id of its own.
    live: std::collections::HashMap<u64, Arc<Notify>>,
    next_id: u64,
    /// The round's `ProbeNow` frame and the count of its answers.
    current: Option<(Arc<Vec<u8>>, Arc<AtomicUsize>)>,
}

impl Rounds {
    /// A new connection's id and wake-up.
    fn join(&self) -> (u64, Arc<Notify>) {
        let mut state = self.state.lock();
        let id = state.next_id;
        state.next_id += 1;
        let notify = Arc::new(Notify::new());
        state.live.insert(id, notify.clone());
        (id, notify)
    }

    fn leave(&self, id: u64) {
        self.state.lock().live.remove(&id);
    }

    /// Starts a round of `frame`: its answer count and every live connection to ask.
    fn start(&self, frame: Vec<u8>) -> (Arc<AtomicUsize>, Vec<Arc<Notify>>) {
        let mut state = self.state.lock();
        let answered = Arc::new(AtomicUsize::new(0));
        state.current = Some((Arc::new(frame), answered.clone()));
        (answered, state.live.values().cloned().collect())
    }

    fn current(&self) -> Option<(Arc<Vec<u8>>, Arc<AtomicUsize>)> {
        self.state.lock().current.clone()
    }
}

/// Takes a connection out of [`Rounds`] when it ends, however it ends.
struct Leave<'a>(&'a Rounds, u64);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.leave(self.1);
    }
}

async fn connection(
    incoming: quinn::Incoming,
    plan: &(dyn Fn() -> std::result::Result<Vec<u8>, wire::WireError> + Send + Sync),
    meter: &capacity::HandshakeMeter,
    rounds: &Rounds,
) -> Result<()> {
    let conn = incoming.await?;
    meter.completed();
    conn.set_receive_window(cemwatch_transport::quic::session_window());
    let (mut send, mut recv) = conn.accept_bi().await?;
    let (id, asked) = rounds.join();
    let _leave = Leave(rounds, id);
    let mut buf: Vec<u8> = Vec::new();
    let mut first = true;
    // The round asked of this connection and not answered yet: its answer count.
    let mut answering: Option<Arc<AtomicUsize>> = None;
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
            if let Some(answered) = answering.take() {
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }
        buf.drain(..used);
        tokio::select! {
            chunk = recv.read_chunk(64 * 1024, true) => match chunk {
                Ok(Some(c)) => buf.extend_from_slice(&c.bytes),
                _ => return Ok(()),
            },
            () = asked.notified(), if !first => {
                if let Some((frame, answered)) = rounds.current() {
                    send.write_all(&frame).await?;
                    answering = Some(answered);
                }
            }
        }
    }
}
