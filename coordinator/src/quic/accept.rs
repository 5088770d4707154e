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

/// Connection attempts that may wait for a handshake slot. Beyond it a new attempt is refused
/// at once (counted as `connections_refused_total{reason="busy"}`), and the probe comes back
/// after its jittered backoff, instead of waiting past its connect timeout for a handshake
/// that is then wasted. Sized to a few seconds of handshakes, under the probes' 5 s connect
/// timeout.
pub const MAX_HANDSHAKES_WAITING: usize = 4096;

/// Longest time an attempt waits for a handshake slot. Beyond it the attempt is refused
/// (`reason="busy"`) rather than started: the probe gives up 5 s after its first packet, so a
/// handshake begun later than this would likely finish for nobody. Under an overload this keeps
/// the CPU on handshakes that complete (a fleet of 100,000 reconnecting within 10 s, before
/// plans spread their return, saw 587,282 attempts time out on the probes, which retried).
pub const MAX_HANDSHAKE_WAIT: Duration = Duration::from_millis(2500);

/// Refuses an attempt before any handshake work, counted as `reason="busy"`.
pub(super) fn refuse_busy(hub: &Hub, incoming: quinn::Incoming) {
    hub.metrics.refused(Refusal::Busy);
    incoming.refuse();
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
            refuse_busy(&hub, incoming);
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
                refuse_busy(&hub, incoming);
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
