//! The accept loop: admission (limits, Retry), a bounded number of handshakes in flight and
//! waiting, then one task per connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use std::time::{Duration, Instant};

use crate::admission::{Admission, Limiter};
use crate::config::limits::LimitsConfig;
use crate::quic::handshake::handle;
use crate::quic::live::Hub;
use crate::telemetry::{Metrics, Refusal};

/// Handshakes run at once. A handshake is CPU work in bursts separated by round trips to the
/// probe; without a bound, tens of thousands at once make each one slower until clients give up
/// and retransmit and nothing completes. The bound also caps the rate at (bound / handshake
/// time): at 128, a reconnect storm whose probes answered slowly (150–200 ms per handshake, as
/// over the internet or from a busy fleet) got under 1,000 handshakes/s on a coordinator with
/// CPU to spare, and attempts waited their 2.5 s out (438,622 refusals for 100,000 probes).
/// 512 keeps the CPU busy at such round trips while a handshake in the queue still completes in
/// well under the probes' 5 s.
pub const MAX_HANDSHAKES_IN_FLIGHT: usize = 512;

/// Connection attempts that may wait for a handshake slot. Beyond it a new attempt is shed at
/// once ([`shed_busy`], counted as `connections_refused_total{reason="busy"}`), instead of
/// waiting past its connect timeout for a handshake that is then wasted. Sized to a few seconds
/// of handshakes, under the probes' 5 s connect timeout.
pub const MAX_HANDSHAKES_WAITING: usize = 4096;

/// Longest time an attempt waits for a handshake slot. Beyond it the attempt is shed
/// (`reason="busy"`) rather than started: the probe gives up 5 s after its first packet, so a
/// handshake begun later than this would likely finish for nobody. Under an overload this keeps
/// the CPU on handshakes that complete (a fleet of 100,000 reconnecting within 10 s, before
/// plans spread their return, saw 587,282 attempts time out on the probes, which retried).
pub const MAX_HANDSHAKE_WAIT: Duration = Duration::from_millis(2500);

/// Sheds an attempt the coordinator has no room for, before any handshake work, counted as
/// `reason="busy"`: its Initial is dropped without an answer (`Incoming::ignore`).
///
/// Why not refused with a close, as the limits below refuse: a refusal is work, and this one
/// comes when the coordinator has no CPU to spare. quinn derives the attempt's Initial keys again,
/// encrypts a CONNECTION_CLOSE and sends it, and the probe, told at once, comes back within its
/// first backoff (0.5-1.5 s) to be refused again. In a reconnect storm on an overloaded core
/// (20,000 probes, 82,956 attempts refused) that was 22% of the coordinator's CPU
/// (`quinn::endpoint::EndpointInner::refuse` in `perf record`), which it then lacked for the
/// handshakes that would succeed. Unanswered, the attempt costs what reading its packet cost,
/// and the probe's QUIC stack retransmits the Initial after its probe timeout (about 1 s, then
/// 2 s, within its 5 s connect timeout): each copy is a new attempt here, let in once there is
/// room, or the probe backs off as from any timeout.
pub(super) fn shed_busy(hub: &Hub, incoming: quinn::Incoming) {
    hub.metrics.refused(Refusal::Busy);
    shed(incoming);
}

/// Drops an attempt without an answer ([`shed_busy`] says why).
fn shed(incoming: quinn::Incoming) {
    incoming.ignore();
}

/// The accept-loop hook: lets `incoming` through, or answers it with a Retry or a refusal
/// (counted) and returns `None`.
pub(super) fn admit(
    limiter: &Limiter,
    incoming: quinn::Incoming,
    limits: &LimitsConfig,
    open: usize,
    metrics: &Metrics,
) -> Option<quinn::Incoming> {
    let decision = limiter.decide(
        limits,
        incoming.remote_address().ip(),
        incoming.remote_address_validated(),
        incoming.may_retry(),
        open,
        Instant::now(),
    );
    match decision {
        Admission::Accept => Some(incoming),
        Admission::Retry => {
            metrics.quic_retries.inc();
            if let Err(e) = incoming.retry() {
                // Cannot happen for an unvalidated address; refuse rather than accept.
                e.into_incoming().refuse();
            }
            None
        }
        Admission::Refuse(reason) => {
            metrics.refused(reason);
            tracing::debug!(remote = %incoming.remote_address(), reason = reason.label(), "connection refused by a limit");
            incoming.refuse();
            None
        }
    }
}

/// Accepts connections on every endpoint (one per socket sharing the port) until they close;
/// the bounds on handshakes in flight and waiting are the coordinator's, shared by all.
pub async fn serve(endpoints: Vec<quinn::Endpoint>, hub: Arc<Hub>) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES_IN_FLIGHT));
    let waiting = Arc::new(AtomicUsize::new(0));
    let mut loops = tokio::task::JoinSet::new();
    let meter = hub.clone();
    let measuring = tokio::spawn(async move {
        let mut every = tokio::time::interval(crate::quic::capacity::SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let cores = crate::quic::capacity::cores();
        loop {
            every.tick().await;
            let Some(cpu) = crate::quic::capacity::process_cpu() else {
                return;
            };
            if let Some(per) = meter.handshakes.sample(cpu) {
                if let Some(capacity) = meter.handshakes.capacity(cores) {
                    let before = meter.metrics.handshake_capacity.get();
                    meter.metrics.handshake_capacity.set(capacity as i64);
                    if before == 0 {
                        tracing::info!(
                            cpu_ms_per_handshake = per * 1e3,
                            cores,
                            capacity_per_second = capacity as u64,
                            "handshake capacity measured; reconnect spreads in plans follow it"
                        );
                    }
                }
            }
        }
    });
    for endpoint in endpoints {
        loops.spawn(accept_loop(
            endpoint,
            hub.clone(),
            handshakes.clone(),
            waiting.clone(),
        ));
    }
    while loops.join_next().await.is_some() {}
    measuring.abort();
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    hub: Arc<Hub>,
    handshakes: Arc<tokio::sync::Semaphore>,
    waiting: Arc<AtomicUsize>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let open = hub.connections.load(Ordering::Relaxed);
        let limits = hub.config.borrow().limits;
        let Some(incoming) = admit(&hub.limiter, incoming, &limits, open, &hub.metrics) else {
            continue;
        };
        if waiting.load(Ordering::Relaxed) >= MAX_HANDSHAKES_WAITING {
            shed_busy(&hub, incoming);
            continue;
        }
        waiting.fetch_add(1, Ordering::Relaxed);
        hub.connections.fetch_add(1, Ordering::Relaxed);
        let hub = hub.clone();
        let (handshakes, waiting) = (handshakes.clone(), waiting.clone());
        let queued = tokio::time::Instant::now();
        let fut = async move {
            let remote = incoming.remote_address();
            let slot = handshakes.acquire_owned().await;
            waiting.fetch_sub(1, Ordering::Relaxed);
            if queued.elapsed() > MAX_HANDSHAKE_WAIT {
                // Its probe is about to give up: a handshake now would be work for nothing,
                // taken from attempts that can still succeed.
                drop(slot);
                shed_busy(&hub, incoming);
                hub.connections.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            let connected = match incoming.accept() {
                Ok(connecting) => connecting.await,
                Err(e) => Err(e),
            };
            drop(slot);
            let accepted = match connected {
                Ok(conn) => {
                    hub.handshakes.completed();
                    match handle(&hub, conn).await {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            tracing::debug!(%remote, error = %format!("{e:#}"), "connection ended");
                            None
                        }
                    }
                }
                Err(e) => {
                    hub.metrics.handshakes_failed.inc();
                    tracing::debug!(%remote, error = %e, "handshake failed");
                    None
                }
            };
            match accepted {
                // The session gets a task of its own, sized for the session alone: this one,
                // with the attempt and the handshake in it, ends here.
                Some(accepted) => {
                    tokio::spawn(accepted.run(hub, remote));
                }
                None => {
                    hub.connections.fetch_sub(1, Ordering::Relaxed);
                }
            }
        };
        tokio::spawn(fut);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use cemwatch_shared::wire::{ALPN, SERVER_NAME};

    use crate::quic::ca::CoordinatorCa;

    /// A server endpoint on loopback with the coordinator's identity (no client certificate
    /// asked: the enrolment client connects to it), and the enrolment client's configuration.
    fn endpoints(dir: &std::path::Path) -> (quinn::Endpoint, SocketAddr, quinn::ClientConfig) {
        let ca = CoordinatorCa::load_or_create(dir, &[]).expect("CA");
        let provider = cemwatch_transport::tls::provider();
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(ca.server_chain(), ca.server_key())
            .expect("server identity");
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("QUIC TLS");
        let server = quinn::Endpoint::server(
            quinn::ServerConfig::with_crypto(Arc::new(crypto)),
            "127.0.0.1:0".parse().expect("address"),
        )
        .expect("server endpoint");
        let addr = server.local_addr().expect("bound");
        let client = cemwatch_transport::quic::enrol_client_config(ca.pin()).expect("client");
        (server, addr, client)
    }

    /// What a client sees of a first attempt that the server answers with `first`, every later
    /// one accepted: the connection's outcome, and the attempts the server had seen by then.
    async fn attempt(first: fn(quinn::Incoming)) -> (Result<(), quinn::ConnectionError>, usize) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (server, addr, client_config) = endpoints(dir.path());
        let seen = Arc::new(AtomicUsize::new(0));
        let counted = seen.clone();
        let accepting = tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                if counted.fetch_add(1, Ordering::Relaxed) == 0 {
                    first(incoming);
                    continue;
                }
                if let Ok(connecting) = incoming.accept() {
                    if let Ok(conn) = connecting.await {
                        conn.close(0u32.into(), b"done");
                    }
                }
                break;
            }
        });
        let client = cemwatch_transport::quic::client_endpoint(addr).expect("client endpoint");
        let outcome = tokio::time::timeout(Duration::from_secs(15), async {
            client
                .connect_with(client_config, addr, SERVER_NAME)
                .expect("connect")
                .await
                .map(|_| ())
        })
        .await
        .expect("the attempt ends within 15 s");
        client.close(0u32.into(), b"");
        if outcome.is_ok() {
            accepting.await.expect("the server");
        } else {
            accepting.abort();
        }
        (outcome, seen.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn a_shed_attempt_gets_no_answer_and_its_retransmission_is_let_in() {
        // Refused with a close (as before), the probe is told at once and does not come back
        // by itself: its connect fails.
        let (refused, seen) = attempt(quinn::Incoming::refuse).await;
        assert!(
            matches!(refused, Err(quinn::ConnectionError::ConnectionClosed(_))),
            "a refusal closes the attempt: {refused:?}"
        );
        assert_eq!(seen, 1, "the refused attempt was the only one");
        // Shed (busy), the attempt is dropped unanswered: the client's QUIC retransmits its
        // Initial after its probe timeout, which arrives as a new attempt and is let in.
        let (shed, seen) = attempt(super::shed).await;
        assert!(shed.is_ok(), "the retransmitted attempt connects: {shed:?}");
        assert_eq!(
            seen, 2,
            "the server saw the shed attempt and its retransmission"
        );
    }
}
