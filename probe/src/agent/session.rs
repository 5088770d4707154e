//! One connection to a coordinator: `Hello`, then the plan, then reports out of the spool
//! (a bounded window in flight) and acknowledgements, `ProbeNow` rounds, certificate renewal,
//! and the management agent's CEM state when an agent log is followed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use tokio::sync::{mpsc, watch};

use cemwatch_shared::wire::{Plan, ToCoordinator, ToProbe};
use cemwatch_shared::AgentCemState;

use super::Shared;
use cemwatch_transport::frame::{read_frame, write_frame};
use cemwatch_transport::protocol::WINDOW;

/// How long a refused probe waits for the coordinator's close code after its `Refused` frame.
const REFUSAL_CLOSE_WAIT: Duration = Duration::from_secs(3);

/// Whether a certificate is past half its lifetime (time to renew).
pub fn needs_renewal(cert_der: &[u8]) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    cemwatch_transport::x509::past_half_life(cert_der, now)
}

/// How often to look at the certificate's age: a tenth of its lifetime, between 5 s and 1 h.
pub fn renewal_check_interval(cert_der: &[u8]) -> Duration {
    let Ok(cert) = crate::check::cert::parse(cert_der) else {
        return Duration::from_secs(3600);
    };
    let life = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
        .max(0) as u64;
    Duration::from_secs((life / 10).clamp(5, 3600))
}

/// Runs one session until the connection ends.
pub async fn run(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    plan_tx: &watch::Sender<Option<Plan>>,
    now_tx: &mpsc::Sender<(u64, Vec<String>)>,
) -> Result<()> {
    let (mut send, mut recv) = conn.open_bi().await?;
    write_frame(
        &mut send,
        &ToCoordinator::Hello {
            probe: shared.identity.name.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            labels: shared.identity.labels.clone(),
        },
    )
    .await?;

    let in_flight: Arc<Mutex<BTreeSet<u64>>> = Arc::default();

    // Reader: plan, acks, probe-now, renewed certificates.
    let reader = {
        let shared = shared.clone();
        let in_flight = in_flight.clone();
        let plan_tx = plan_tx.clone();
        let now_tx = now_tx.clone();
        async move {
            loop {
                let frame = read_frame::<ToProbe>(&mut recv).await?;
                match frame {
                    None => return Err(anyhow!("the coordinator closed the stream")),
                    Some(ToProbe::Plan(plan)) => {
                        tracing::info!(
                            generation = plan.generation,
                            checks = plan.checks.len(),
                            "plan received"
                        );
                        if let Err(e) = shared.state.save_plan(&plan) {
                            tracing::warn!(error = %e, "cannot save the plan; it applies until restart");
                        }
                        shared.reconnect_spread_ms.store(
                            plan.reconnect_spread_ms,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        plan_tx.send_replace(Some(plan));
                    }
                    Some(ToProbe::Ack { seq }) => {
                        if let Ok(mut set) = in_flight.lock() {
                            set.remove(&seq);
                        }
                        let acked = shared.spool.lock().map(|mut s| s.ack(seq)).unwrap_or(false);
                        if acked {
                            shared
                                .stats
                                .acked
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        shared.spool_changed.notify_one();
                    }
                    Some(ToProbe::ProbeNow { round, checks }) => {
                        tracing::info!(round, "probe-now requested");
                        let _ = now_tx.send((round, checks)).await;
                    }
                    Some(ToProbe::Renewed { cert_der }) => {
                        match shared.state.save_certificate(&cert_der) {
                            Ok(()) => tracing::info!("client certificate renewed"),
                            Err(e) => {
                                tracing::error!(error = %e, "cannot save the renewed certificate")
                            }
                        }
                    }
                    Some(ToProbe::Refused { reason }) => {
                        // The coordinator closes the connection with a code that says why once
                        // it knows this frame arrived; wait for it (bounded), so the caller can
                        // tell a refused certificate from a refused rate by the code.
                        let _ = tokio::time::timeout(REFUSAL_CLOSE_WAIT, conn.closed()).await;
                        return Err(anyhow!("the coordinator refused this probe: {reason}"));
                    }
                    Some(ToProbe::Enrolled { .. }) => {
                        return Err(anyhow!("unexpected enrolment answer on a probe session"))
                    }
                }
            }
        }
    };

    // Writer: pending reports within the window; renewal requests; the agent's CEM state on
    // connection and whenever it changes.
    let writer = {
        let shared = shared.clone();
        let mut agent_rx = shared.agent_state.subscribe();
        async move {
            let mut renewal_checked = None::<std::time::Instant>;
            // How often to look at the certificate's age: from the certificate, read here and
            // again only when a look is due (not on every wake of this loop), so a renewed
            // certificate sets the next interval.
            let mut renewal_every = shared
                .state
                .cert_der()
                .ok()
                .map(|c| renewal_check_interval(&c))
                .unwrap_or(Duration::from_secs(3600));
            let mut agent_sent: Option<AgentCemState> = None;
            loop {
                let agent = agent_rx.borrow_and_update().clone();
                let refused = shared
                    .agent_state_refused
                    .load(std::sync::atomic::Ordering::Relaxed);
                if let Some(state) = agent.filter(|s| !refused && agent_sent.as_ref() != Some(s)) {
                    write_frame(&mut send, &ToCoordinator::AgentState(state.clone())).await?;
                    tracing::debug!(state = state.condition.as_str(), "agent CEM state sent");
                    agent_sent = Some(state);
                }
                if renewal_checked.is_none_or(|t| t.elapsed() > renewal_every) {
                    renewal_checked = Some(std::time::Instant::now());
                    if let (Ok(cert), Ok((key_pem, _))) =
                        (shared.state.cert_der(), shared.state.key())
                    {
                        renewal_every = renewal_check_interval(&cert);
                        if needs_renewal(&cert) {
                            let (_, csr) =
                                super::enroll::key_and_csr(&shared.identity.name, Some(&key_pem))?;
                            tracing::info!(
                                "client certificate past half its life: asking for a new one"
                            );
                            write_frame(&mut send, &ToCoordinator::Renew { csr_der: csr }).await?;
                        }
                    }
                }
                let pending = shared.spool.lock().map(|s| s.pending()).unwrap_or_default();
                for seq in pending {
                    let room = in_flight
                        .lock()
                        .map(|s| s.len() < WINDOW && !s.contains(&seq))
                        .unwrap_or(false);
                    if !room {
                        continue;
                    }
                    let frame = shared
                        .spool
                        .lock()
                        .map_err(|_| anyhow!("spool lock poisoned"))?
                        .frame(seq);
                    match frame {
                        Ok(Some(bytes)) => {
                            send.write_all(&bytes).await?;
                            if let Ok(mut s) = in_flight.lock() {
                                s.insert(seq);
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(seq, error = %e, "dropping a damaged spooled report");
                            if let Ok(mut s) = shared.spool.lock() {
                                s.discard(seq);
                            }
                        }
                    }
                }
                tokio::select! {
                    _ = shared.spool_changed.notified() => {}
                    _ = agent_rx.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(5).min(renewal_every)) => {}
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), anyhow::Error>(())
        }
    };
    tokio::select! {
        r = reader => r,
        w = writer => w,
    }
}
