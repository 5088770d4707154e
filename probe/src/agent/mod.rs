//! The probe agent: receives its plan from the coordinator, runs the checks on schedule,
//! spools every result before sending it, deletes it only after the coordinator's `Ack`,
//! reconnects with backoff and jitter, fails over along the ordered coordinator list, renews
//! its certificate over the live connection, and answers `ProbeNow` at once. With an agent log
//! configured, it also follows the management agent's log beside the scheduler and sends the
//! agent's CEM state on every connection and whenever it changes.

pub mod enroll;
pub mod schedule;
pub mod session;
pub mod spool;
pub mod state;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::sync::{mpsc, watch, Notify, Semaphore};

use cemwatch_shared::wire::{Plan, SERVER_NAME};
use cemwatch_shared::AgentCemState;

use crate::agentlog::{self, AgentLogConfig};
use crate::check::TrustStore;
use cemwatch_transport::protocol::{self, reconnect_spread, CloseCode, Ended};
use cemwatch_transport::quic;
use spool::{Spool, SpoolLimits};
use state::{Identity, StateDir};

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The state directory made by `enroll`.
    pub state_dir: PathBuf,
    /// Coordinators in order of preference; empty: the one the probe enrolled with.
    pub coordinators: Vec<String>,
    /// Trust anchors for the gateway checks (platform store plus CA files).
    pub trust: Arc<TrustStore>,
    /// Spool bounds.
    pub spool_limits: SpoolLimits,
    /// Most checks running at once.
    pub max_concurrent_checks: usize,
    /// How long to wait for the coordinator's handshake.
    pub connect_timeout: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Local DNS overrides (`--resolve`), taking precedence over the plan's.
    pub overrides: Vec<crate::check::ResolveOverride>,
    /// The management agent's log to follow, if any. Its position is saved in the state
    /// directory unless `state_file` says otherwise.
    pub agent_log: Option<AgentLogConfig>,
    /// The agent certificate checks present when a gateway asks for a client certificate
    /// (`run --client-cert`); it stays on the endpoint, never in a plan.
    pub client_identity: Option<Arc<crate::check::ClientIdentity>>,
    /// Whether checks fetch the CRLs of the path (`run --no-revocation` turns it off).
    pub revocation: bool,
    /// Which addresses of a gateway name checks look at (`run --address-family`).
    pub address_family: cemwatch_shared::AddressFamily,
    /// The most addresses of one name a check looks at (`run --max-addresses`).
    pub max_addresses: usize,
}

impl AgentConfig {
    /// Defaults for a state directory.
    pub fn new(state_dir: PathBuf, trust: Arc<TrustStore>) -> Self {
        Self {
            state_dir,
            coordinators: Vec::new(),
            trust,
            spool_limits: SpoolLimits::default(),
            max_concurrent_checks: 4,
            connect_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
            overrides: Vec::new(),
            agent_log: None,
            client_identity: None,
            revocation: true,
            address_family: cemwatch_shared::AddressFamily::Any,
            max_addresses: cemwatch_shared::model::DEFAULT_MAX_ADDRESSES,
        }
    }
}

/// Counters of an agent, for logs and tests.
#[derive(Debug, Default)]
pub struct AgentStats {
    /// Reports acknowledged by a coordinator.
    pub acked: AtomicU64,
    /// Successful connections.
    pub connections: AtomicU64,
    /// Failed connection attempts.
    pub connect_failures: AtomicU64,
}

/// State shared by the agent's tasks.
#[derive(Debug)]
pub struct Shared {
    /// Who we are.
    pub identity: Identity,
    /// Where we keep things.
    pub state: StateDir,
    /// Unacknowledged reports.
    pub spool: Mutex<Spool>,
    /// Signalled when the spool gains a report or loses one.
    pub spool_changed: Notify,
    /// Trust anchors for checks.
    pub trust: Arc<TrustStore>,
    /// Bounds concurrent checks.
    pub check_slots: Semaphore,
    /// Local DNS overrides, before the plan's.
    pub overrides: Vec<crate::check::ResolveOverride>,
    /// The agent certificate checks present when asked for one.
    pub client_identity: Option<Arc<crate::check::ClientIdentity>>,
    /// Whether checks fetch the CRLs of the path.
    pub revocation: bool,
    /// Which addresses of a gateway name checks look at.
    pub address_family: cemwatch_shared::AddressFamily,
    /// The most addresses of one name a check looks at.
    pub max_addresses: usize,
    /// Counters.
    pub stats: AgentStats,
    /// The management agent's CEM state, when an agent log is followed (`None` until the first
    /// poll, and always without an agent log). Sessions subscribe to it.
    pub agent_state: watch::Sender<Option<AgentCemState>>,
    /// Set when a coordinator closed a session over the agent state message (one older than
    /// the message): from then on sessions do not send it, so reports keep flowing.
    pub agent_state_refused: AtomicBool,
    /// The reconnect spread of the last plan, milliseconds (see [`reconnect_spread`]).
    pub reconnect_spread_ms: AtomicU64,
}

/// Runs the agent until `shutdown` becomes `true`.
pub async fn run(config: AgentConfig, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    let state = StateDir::new(&config.state_dir);
    let identity = state.identity()?;
    let saved_spread = state.plan().map(|p| p.reconnect_spread_ms).unwrap_or(0);
    let coordinators = if config.coordinators.is_empty() {
        identity.coordinators.clone()
    } else {
        config.coordinators.clone()
    };
    if coordinators.is_empty() {
        bail!("no coordinator to report to: give --coordinator HOST:PORT");
    }
    // Fail now, not at the first connection, when the state directory is incomplete.
    state.ca_der()?;
    state.cert_der()?;
    state.key()?;
    let spool =
        Spool::open(&state.spool(), config.spool_limits).context("cannot open the spool")?;
    tracing::info!(
        probe = %identity.name,
        pending = spool.len(),
        dropped = spool.dropped(),
        "probe agent starting"
    );
    let shared = Arc::new(Shared {
        identity,
        state,
        spool: Mutex::new(spool),
        spool_changed: Notify::new(),
        trust: config.trust.clone(),
        check_slots: Semaphore::new(config.max_concurrent_checks.max(1)),
        overrides: config.overrides.clone(),
        client_identity: config.client_identity.clone(),
        revocation: config.revocation,
        address_family: config.address_family,
        max_addresses: config.max_addresses,
        stats: AgentStats::default(),
        agent_state: watch::Sender::new(None),
        agent_state_refused: AtomicBool::new(false),
        reconnect_spread_ms: AtomicU64::new(saved_spread),
    });
    let (plan_tx, plan_rx) = watch::channel::<Option<Plan>>(shared.state.plan());
    let (now_tx, now_rx) = mpsc::channel(16);
    let scheduler = tokio::spawn(schedule::run(shared.clone(), plan_rx, now_rx));
    let agent_log = config.agent_log.clone().map(|mut log_config| {
        if log_config.state_file.is_none() {
            log_config.state_file = Some(shared.state.root().join(agentlog::STATE_FILE));
        }
        let shared = shared.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { agentlog::run(log_config, &shared.agent_state, stop).await })
    });

    let mut index = 0usize;
    let mut failed_passes = 0u32;
    let mut client_config: ConfigCache = None;
    while !*shutdown.borrow() {
        let coordinator = &coordinators[index % coordinators.len()];
        let started = Instant::now();
        match connect(
            &shared,
            &mut client_config,
            coordinator,
            config.connect_timeout,
        )
        .await
        {
            Ok((endpoint, conn)) => {
                shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                tracing::info!(coordinator = %coordinator, "connected");
                let session = session::run(&shared, &conn, &plan_tx, &now_tx);
                tokio::pin!(session);
                let end = tokio::select! {
                    end = &mut session => end,
                    _ = shutdown.changed() => {
                        // Graceful stop: no new checks, then give the coordinator a moment to
                        // acknowledge what is spooled. What is left stays on disk for next time.
                        scheduler.abort();
                        let drained = tokio::select! {
                            _ = &mut session => false,
                            _ = drained(&shared) => true,
                            _ = tokio::time::sleep(DRAIN_TIMEOUT) => false,
                        };
                        let left = shared.spool.lock().map(|s| s.len()).unwrap_or(0);
                        tracing::info!(drained, left, "stopping: spool flushed as far as possible");
                        conn.close(CloseCode::Done.varint(), b"probe shutting down");
                        Ok(())
                    }
                };
                match end {
                    Ok(()) => tracing::info!(coordinator = %coordinator, "session ended"),
                    Err(e) => {
                        // The connection's own close code says more than the failed read.
                        let closed = conn.close_reason();
                        if closed.as_ref().is_some_and(refuses_agent_state)
                            && !shared.agent_state_refused.swap(true, Ordering::Relaxed)
                        {
                            tracing::error!(
                                coordinator = %coordinator,
                                "the coordinator does not know the agent CEM state message (it is older than this probe): upgrade it; until this probe restarts it reports without the agent's state"
                            );
                        }
                        match closed.as_ref().and_then(explain_refusal) {
                            Some(why) => tracing::error!(coordinator = %coordinator, "{why}"),
                            None => {
                                let why = closed
                                    .map(|c| c.to_string())
                                    .unwrap_or_else(|| format!("{e:#}"));
                                tracing::warn!(coordinator = %coordinator, error = %why, "session ended")
                            }
                        }
                    }
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
                if started.elapsed() > Duration::from_secs(30) {
                    // A session that held: start again from the preferred coordinator, at a
                    // random moment of the reconnect spread, since its end was likely the
                    // whole fleet's (a coordinator restart) and a fleet coming back in one wave
                    // overflows the coordinator before admission control sees it.
                    index = 0;
                    failed_passes = 0;
                    let spread =
                        reconnect_spread(shared.reconnect_spread_ms.load(Ordering::Relaxed));
                    tokio::select! {
                        _ = tokio::time::sleep(schedule::random_below(spread)) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
            }
            Err(e) => {
                shared
                    .stats
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(coordinator = %coordinator, error = %format!("{e:#}"), "cannot connect");
            }
        }
        index += 1;
        let pause = if index % coordinators.len() == 0 {
            failed_passes = failed_passes.saturating_add(1);
            backoff(failed_passes, config.max_backoff)
        } else {
            Duration::from_millis(200)
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => {}
        }
    }
    drop(plan_tx);
    scheduler.abort();
    let _ = scheduler.await;
    if let Some(task) = agent_log {
        // It saves its position on the way out.
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            tracing::warn!("the agent log follower did not stop in time");
        }
    }
    Ok(())
}

/// How long a stopping probe waits for its spool to be acknowledged.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

async fn drained(shared: &Shared) {
    loop {
        if shared.spool.lock().map(|s| s.is_empty()).unwrap_or(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Exponential backoff with jitter: 0.5 s doubling up to `max`, each wait between 50% and
/// 150% of the step, so a fleet that lost its coordinator does not come back in one wave.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let step = Duration::from_millis(500).saturating_mul(1u32 << failures.min(10));
    let step = step.min(max);
    step / 2 + schedule::random_below(step)
}

/// The client configuration of the last connection, kept while the certificate is the same:
/// its TLS session cache lets a reconnect resume the session (no signature, no chain to verify
/// on either side), which is what makes a fleet's reconnect after a coordinator restart cheap.
/// A renewed certificate gets a new configuration (a ticket carries the identity it was issued
/// to).
type ConfigCache = Option<(Vec<u8>, quinn::ClientConfig)>;

async fn connect(
    shared: &Shared,
    cache: &mut ConfigCache,
    coordinator: &str,
    timeout: Duration,
) -> Result<(quinn::Endpoint, quinn::Connection)> {
    let addr = enroll::resolve_coordinator(coordinator).await?;
    let cert = shared.state.cert_der()?;
    let config = match cache {
        Some((der, config)) if *der == cert => config.clone(),
        _ => {
            let ca = shared.state.ca_der()?;
            let (_, key) = shared.state.key()?;
            let config = quic::mtls_client_config(&ca, vec![cert.clone().into()], key)?;
            *cache = Some((cert, config.clone()));
            config
        }
    };
    let endpoint = quic::client_endpoint(addr)?;
    let connecting = endpoint.connect_with(config, addr, SERVER_NAME)?;
    let conn = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {timeout:?}"))?
        .map_err(|e| anyhow::anyhow!(explain_refusal(&e).unwrap_or_else(|| e.to_string())))?;
    Ok((endpoint, conn))
}

/// Whether a session ended because the coordinator does not take a message it was sent in a
/// session, which is what a coordinator older than `ToCoordinator::AgentState` does with it.
pub fn refuses_agent_state(closed: &quinn::ConnectionError) -> bool {
    matches!(
        protocol::ended(closed),
        Ended::Closed(CloseCode::UnsupportedMessage, _)
    )
}

/// Turns a refusal of this probe's certificate, or of the coordinator's by this probe, into
/// what the operator must do; `None` for other ends (lost, timed out, rate limits). Judged by
/// codes, never by text: the TLS alert of a refused handshake, or the coordinator's
/// [`CloseCode::CertificateRefused`] after `Hello`, which is how a resumed TLS session (no
/// certificate verification in the handshake) learns it was revoked. In TLS 1.3 the server
/// judges the client certificate after the client considers the handshake done, so the refusal
/// may arrive as the end of a session rather than a failed connect.
pub fn explain_refusal(closed: &quinn::ConnectionError) -> Option<String> {
    let enrol_again = "it was revoked, expired or is unknown there; enrol again with a new token (`cemwatch token create`)";
    match protocol::ended(closed) {
        Ended::Closed(CloseCode::CertificateRefused, reason) => Some(format!(
            "the coordinator refused this probe's certificate ({reason}): {enrol_again}"
        )),
        Ended::CertificateAlert(alert) => Some(format!(
            "the coordinator refused this probe's certificate (TLS alert {alert}): {enrol_again}"
        )),
        Ended::PeerCertificateRejected(alert) => Some(format!(
            "this probe refused the coordinator's certificate (TLS alert {alert}): it is not signed by the CA pinned at enrolment; check that the address is the coordinator's, or enrol again with a token from this coordinator"
        )),
        Ended::Closed(..) | Ended::Other => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app_close(code: CloseCode, reason: &str) -> quinn::ConnectionError {
        quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: code.varint(),
            reason: reason.to_string().into(),
        })
    }

    #[test]
    fn an_older_coordinators_refusal_of_the_agent_state_is_recognised_by_its_code() {
        assert!(refuses_agent_state(&app_close(
            CloseCode::UnsupportedMessage,
            "unexpected message in a session: other"
        )));
        assert!(!refuses_agent_state(&app_close(
            CloseCode::Done,
            "probe revoked"
        )));
        assert!(!refuses_agent_state(&app_close(
            CloseCode::Protocol,
            "unexpected message in a session"
        )));
        assert!(!refuses_agent_state(&quinn::ConnectionError::TimedOut));
    }

    #[test]
    fn refusals_after_a_resumed_handshake_are_explained_by_their_code() {
        let why = explain_refusal(&app_close(
            CloseCode::CertificateRefused,
            "probe \"p1\" was revoked",
        ))
        .expect("explained");
        assert!(why.contains("enrol again"), "{why}");
        assert!(why.contains("p1"), "{why}");
        // A rate-limit refusal whose text mentions certificates is not a certificate refusal.
        assert_eq!(
            explain_refusal(&app_close(CloseCode::Refused, "certificate refused")),
            None
        );
        assert_eq!(explain_refusal(&quinn::ConnectionError::TimedOut), None);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let max = Duration::from_secs(60);
        for failures in 0..20 {
            let step = Duration::from_millis(500)
                .saturating_mul(1u32 << failures.min(10))
                .min(max);
            let b = backoff(failures, max);
            assert!(b >= step / 2 && b < step / 2 + step, "{failures}: {b:?}");
        }
        let samples: std::collections::HashSet<_> = (0..20).map(|_| backoff(5, max)).collect();
        assert!(samples.len() > 1, "jittered");
    }
}
