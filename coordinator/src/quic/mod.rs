//! The QUIC server probes report to. One bidirectional stream per connection: enrolment on a
//! connection without a client certificate; otherwise `Hello` (whose name must match the
//! certificate), the plan, reports committed then acknowledged, `ProbeNow` rounds, renewals.
//! A malformed frame closes that connection with a reason and a counter; nothing else stops.

pub mod ca;
mod error;
pub mod session_keys;
pub mod verifier;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use cemwatch_shared::token::EnrollToken;
use cemwatch_shared::wire::{Labels, Plan, Report, ToCoordinator, ToProbe};
use cemwatch_shared::{AgentCemState, ProbeName, Thumbprint};
use cemwatch_transport::frame::{read_frame_max, write_frame, TransportError};
use cemwatch_transport::protocol::CloseCode;

use crate::admission::{Admission, Limiter};
use crate::config::limits::LimitsConfig;
use crate::config::Config;
use crate::model::round::Round;
use crate::quic::ca::CoordinatorCa;
use crate::registry::Registry;
use crate::store;
use crate::store::{Ingested, TokenRefusal};
use crate::telemetry::{Enrolment, Metrics, Refusal};
use cemwatch_transport::x509::name_and_expiry;
pub use error::QuicError;
use error::Result;
use rustls::pki_types::CertificateDer;

/// A `ProbeNow` request for one session: the round and its checks (boxed: see [`Live`]).
type ProbeNowRequest = Box<(u64, Vec<String>)>;

/// A live probe connection.
#[derive(Debug, Clone)]
struct Live {
    id: usize,
    conn: quinn::Connection,
    /// Boxed: a channel allocates a block of 32 slots when it is made, which for the unboxed
    /// request cost every connection 1 KiB.
    probe_now: mpsc::Sender<ProbeNowRequest>,
}

/// Everything connection handlers share.
#[derive(Debug)]
pub struct Hub {
    /// Current configuration.
    pub config: watch::Receiver<Arc<Config>>,
    /// Configuration generation (increases on each reload).
    pub generation: Arc<AtomicU64>,
    /// Every probe: the store and the views of who is known and of the fleet.
    pub registry: Arc<Registry>,
    /// The CA.
    pub ca: Arc<CoordinatorCa>,
    /// Metrics.
    pub metrics: Metrics,
    /// Connection and report limits (see `limits`).
    pub limiter: Limiter,
    live: Mutex<HashMap<String, Live>>,
    rounds: Mutex<std::collections::BTreeMap<u64, Round>>,
    /// Answers counted per round still being asked (see [`ROUND_WINDOW`]).
    round_answers: Arc<Mutex<HashMap<u64, Arc<AtomicUsize>>>>,
    connections: AtomicUsize,
    next_id: AtomicUsize,
    next_round: AtomicU64,
}

impl Hub {
    /// A hub.
    pub fn new(
        config: watch::Receiver<Arc<Config>>,
        generation: Arc<AtomicU64>,
        registry: Arc<Registry>,
        ca: Arc<CoordinatorCa>,
        metrics: Metrics,
    ) -> Self {
        Self {
            config,
            generation,
            registry,
            ca,
            limiter: { Limiter::new() },
            metrics,
            live: Mutex::new(HashMap::new()),
            rounds: Mutex::new(std::collections::BTreeMap::new()),
            round_answers: Arc::new(Mutex::new(HashMap::new())),
            connections: AtomicUsize::new(0),
            next_id: AtomicUsize::new(1),
            next_round: AtomicU64::new(1),
        }
    }

    /// Closes the live connection of a revoked probe.
    pub fn disconnect(&self, name: &str, reason: &str) {
        let live = self.live.lock().remove(name);
        if let Some(live) = live {
            live.conn
                .close(CloseCode::CertificateRefused.varint(), reason.as_bytes());
            tracing::info!(probe = name, reason, "connection closed");
        }
    }

    /// Asks every connected probe (or those `eligible` says yes to) to run `checks` now.
    /// Returns the round id and the probes asked. Beyond [`ROUND_WINDOW`] probes the requests
    /// go out as answers come back (see there), from a task of their own.
    pub fn start_round(
        &self,
        checks: Vec<String>,
        eligible: impl Fn(&str) -> bool,
    ) -> (u64, Vec<String>) {
        let round = self.next_round.fetch_add(1, Ordering::SeqCst);
        let targets: Vec<(String, mpsc::Sender<ProbeNowRequest>)> = self
            .live
            .lock()
            .iter()
            .filter(|(n, _)| eligible(n))
            .map(|(n, l)| (n.clone(), l.probe_now.clone()))
            .collect();
        let runtime = tokio::runtime::Handle::try_current();
        let (Ok(runtime), true) = (runtime, targets.len() > ROUND_WINDOW) else {
            let mut asked = Vec::new();
            for (name, tx) in targets {
                if tx.try_send(Box::new((round, checks.clone()))).is_ok() {
                    asked.push(name);
                }
            }
            return (round, asked);
        };
        let asked = targets.iter().map(|(n, _)| n.clone()).collect();
        let answered = Arc::new(AtomicUsize::new(0));
        self.round_answers.lock().insert(round, answered.clone());
        let answers = self.round_answers.clone();
        runtime.spawn(async move {
            pace_round(round, &checks, targets, &answered).await;
            answers.lock().remove(&round);
        });
        (round, asked)
    }

    /// Starts a `ProbeNow` round of `check` on every connected probe whose labels select it.
    pub fn start_check_round(
        &self,
        check: &str,
        expect_thumbprint: Option<Thumbprint>,
        expect_port: Option<u16>,
    ) -> Result<Round, String> {
        let config = self.config.borrow().clone();
        let Some(check_config) = config.checks.iter().find(|c| c.name == check) else {
            let names: Vec<&str> = config.checks.iter().map(|c| c.name.as_str()).collect();
            return Err(format!(
                "no check named {check:?}; the configured checks are: {}",
                names.join(", ")
            ));
        };
        let labels: HashMap<String, Labels> = self
            .registry
            .fleet()
            .probes
            .iter()
            .map(|(n, v)| (n.clone(), v.labels.clone()))
            .collect();
        let eligible = |name: &str| labels.get(name).is_some_and(|l| check_config.selects(l));
        let (id, asked) = self.start_round(vec![check.to_string()], eligible);
        self.metrics.rounds.inc();
        let round = Round {
            id,
            check: check.to_string(),
            started_ms: store::now_ms(),
            expect_thumbprint,
            expect_port,
            asked: asked
                .into_iter()
                .map(|n| {
                    let l = labels.get(&n).cloned().unwrap_or_default();
                    (n, l)
                })
                .collect(),
            results: std::collections::BTreeMap::new(),
        };
        {
            let mut rounds = self.rounds.lock();
            rounds.insert(id, round.clone());
            while rounds.len() > 100 {
                rounds.pop_first();
            }
        }
        tracing::info!(
            round = id,
            check,
            probes = round.asked.len(),
            "probe-now round started"
        );
        Ok(round)
    }

    /// A round's current state.
    pub fn round(&self, id: u64) -> Option<Round> {
        self.rounds.lock().get(&id).cloned()
    }

    fn record_round(&self, probe: &str, report: &Report) {
        let Some(id) = report.round else { return };
        let answered = self.round_answers.lock().get(&id).cloned();
        if let Some(answered) = answered {
            answered.fetch_add(1, Ordering::Relaxed);
        }
        let mut rounds = self.rounds.lock();
        let Some(round) = rounds.get_mut(&id) else {
            return;
        };
        for entry in report.results.iter().filter(|e| e.check == round.check) {
            round.results.insert(
                probe.to_string(),
                crate::model::latest::Latest::from_result(
                    report.seq,
                    Some(id),
                    entry.produced_at_ms as i64,
                    &entry.result,
                ),
            );
        }
    }

    /// Names of probes with a live connection.
    pub fn connected(&self) -> Vec<String> {
        self.live.lock().keys().cloned().collect()
    }

    fn plan_for(&self, labels: &Labels) -> Plan {
        let config = self.config.borrow().clone();
        // The fleet that would come back after a restart: every enrolled probe (or every
        // connected one, when more are connected, as with shared-CA probes).
        let enrolled = self.registry.auth().known.len();
        let connected = self.live.lock().len();
        let fleet = enrolled.max(connected);
        Plan {
            generation: self.generation.load(Ordering::SeqCst),
            checks: config.plan_for(labels),
            reconnect_spread_ms: config.limits.reconnect_spread(fleet).as_millis() as u64,
        }
    }
}

/// `ProbeNow` requests a round keeps outstanding: asked, not answered yet. Asked all at once,
/// a fleet of 100,000 answers all at once: the answers pile up in the coordinator's socket
/// far beyond what it commits per second, overflow it, and come back only after QUIC's
/// retransmission timeouts, which stretched a round to 50 s. In a window, the answers arrive at
/// the rate they are committed. A round over fewer probes is asked at once, as before.
pub const ROUND_WINDOW: usize = 2048;
/// When no answer came for this long while the window is full (probes that do not answer), the
/// next window's worth is asked anyway.
pub const ROUND_STALL: Duration = Duration::from_secs(2);

/// Sends a round's requests, keeping at most [`ROUND_WINDOW`] unanswered.
async fn pace_round(
    round: u64,
    checks: &[String],
    targets: Vec<(String, mpsc::Sender<ProbeNowRequest>)>,
    answered: &AtomicUsize,
) {
    let (mut sent, mut credit) = (0usize, 0usize);
    let mut last = (0usize, tokio::time::Instant::now());
    for (_, tx) in targets {
        loop {
            let a = answered.load(Ordering::Relaxed);
            if sent.saturating_sub(a + credit) < ROUND_WINDOW {
                break;
            }
            let now = tokio::time::Instant::now();
            if a != last.0 {
                last = (a, now);
            } else if now.duration_since(last.1) >= ROUND_STALL {
                credit += ROUND_WINDOW;
                last.1 = now;
                continue;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let _ = tx.try_send(Box::new((round, checks.to_vec())));
        sent += 1;
    }
}

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
fn refuse_busy(hub: &Hub, incoming: quinn::Incoming) {
    hub.metrics.refused(Refusal::Busy);
    incoming.refuse();
}

/// The accept-loop hook: lets `incoming` through, or answers it with a Retry or a refusal
/// (counted) and returns `None`.
fn admit(
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

/// Accepts connections until the endpoint closes.
pub async fn serve(endpoint: quinn::Endpoint, hub: Arc<Hub>) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES_IN_FLIGHT));
    let waiting = Arc::new(AtomicUsize::new(0));
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
            match connected {
                Ok(conn) => {
                    if let Err(e) = handle(&hub, conn).await {
                        tracing::debug!(%remote, error = %format!("{e:#}"), "connection ended");
                    }
                }
                Err(e) => {
                    hub.metrics.handshakes_failed.inc();
                    tracing::debug!(%remote, error = %e, "handshake failed");
                }
            }
            hub.connections.fetch_sub(1, Ordering::Relaxed);
        };
        tokio::spawn(fut);
    }
}

fn reject_frame(hub: &Hub, conn: &quinn::Connection, e: &TransportError) {
    let reason = match e {
        TransportError::Wire(w) => w.reason(),
        TransportError::Truncated => "malformed",
        _ => return,
    };
    hub.metrics.frame_rejected(reason);
    tracing::info!(remote = %conn.remote_address(), error = %e, "closing a connection that sent a bad frame");
    conn.close(
        CloseCode::Protocol.varint(),
        format!("bad frame: {e}").as_bytes(),
    );
}

async fn refuse(
    hub: &Hub,
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    metric: Refusal,
    reason: String,
) -> Result<()> {
    refuse_with(hub, conn, send, CloseCode::Refused, metric, reason).await
}

/// Sends `Refused` with the reason, waits (bounded) until the peer has it, then closes with
/// `code`, by which the probe tells a refused certificate from a refused rate.
async fn refuse_with(
    hub: &Hub,
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    code: CloseCode,
    metric: Refusal,
    reason: String,
) -> Result<()> {
    hub.metrics.refused(metric);
    let _ = write_frame(
        send,
        &ToProbe::Refused {
            reason: reason.clone(),
        },
    )
    .await;
    let _ = send.finish();
    // `stopped` completes once the peer acknowledged the whole stream (or the connection
    // ended): closing earlier would discard the frame.
    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
    conn.close(code.varint(), reason.as_bytes());
    Err(QuicError::Refused(reason))
}

async fn handle(hub: &Arc<Hub>, conn: quinn::Connection) -> Result<()> {
    let identity = conn
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|chain| chain.first().and_then(|c| name_and_expiry(c.as_ref())));
    let (mut send, mut recv) = tokio::time::timeout(Duration::from_secs(10), conn.accept_bi())
        .await
        .map_err(|_| QuicError::Timeout("no stream opened within 10 s"))??;
    let first = match tokio::time::timeout(
        Duration::from_secs(10),
        read_frame_max::<ToCoordinator>(&mut recv, cemwatch_transport::protocol::MAX_FIRST_FRAME),
    )
    .await
    {
        Err(_) => return Err(QuicError::Timeout("no first frame within 10 s")),
        Ok(Err(e)) => {
            reject_frame(hub, &conn, &e);
            return Err(e.into());
        }
        Ok(Ok(None)) => return Ok(()),
        Ok(Ok(Some(frame))) => frame,
    };
    match (identity, first) {
        (
            None,
            ToCoordinator::Enroll {
                token,
                name,
                csr_der,
                agent_version,
            },
        ) => {
            // Boxed: a connection's task is as large as its largest state, and enrolment, done
            // once per probe, would otherwise size the task of every session.
            Box::pin(enrol(
                hub,
                &conn,
                &mut send,
                &token,
                &name,
                &csr_der,
                &agent_version,
            ))
            .await
        }
        (
            Some((name, not_after)),
            ToCoordinator::Hello {
                probe,
                agent_version,
                labels,
            },
        ) => {
            // A resumed TLS session skips the certificate verifier (the certificate comes from
            // the session ticket), so revocation, removal and expiry are checked here again.
            let refusal = hub
                .registry
                .auth()
                .recheck(&name, not_after, store::now_ms() / 1000);
            if let Err(refused) = refusal {
                return Box::pin(refuse_with(
                    hub,
                    &conn,
                    &mut send,
                    CloseCode::CertificateRefused,
                    refused.reason(),
                    refused.to_string(),
                ))
                .await;
            }
            if probe != name {
                return Box::pin(refuse(
                    hub,
                    &conn,
                    &mut send,
                    Refusal::IdentityMismatch,
                    format!("this connection's certificate is for {name:?}, not {probe:?}"),
                ))
                .await;
            }
            Box::pin(crate::quic::adopt_on_hello(
                hub,
                &conn,
                &name,
                &labels,
                &agent_version,
            ))
            .await?;
            session(hub, conn, send, recv, name, agent_version).await
        }
        (None, _) => {
            Box::pin(refuse(
                hub,
                &conn,
                &mut send,
                Refusal::NoCertificate,
                "no client certificate: enrol first with `cemwatch-probe enroll`".into(),
            ))
            .await
        }
        (Some((name, _)), _) => {
            hub.metrics.frame_rejected("unexpected");
            Box::pin(refuse(
                hub,
                &conn,
                &mut send,
                Refusal::BadCertificate,
                format!("probe {name:?} must start with Hello"),
            ))
            .await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn enrol(
    hub: &Arc<Hub>,
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    token: &str,
    requested: &str,
    csr_der: &[u8],
    agent_version: &str,
) -> Result<()> {
    let token: EnrollToken = match token.parse() {
        Ok(t) => t,
        Err(e) => {
            hub.metrics.enrolment(Enrolment::TokenMalformed);
            return refuse(hub, conn, send, Refusal::EnrolmentRefused, e.to_string()).await;
        }
    };
    if token.ca_pin != hub.ca.pin() {
        hub.metrics.enrolment(Enrolment::TokenUnknown);
        return refuse(
            hub,
            conn,
            send,
            Refusal::EnrolmentRefused,
            "this token was issued by another coordinator".into(),
        )
        .await;
    }
    let requested = match ProbeName::parse(requested) {
        Ok(name) => name.into_string(),
        Err(e) => {
            hub.metrics.enrolment(Enrolment::BadName);
            return refuse(
                hub,
                conn,
                send,
                Refusal::EnrolmentRefused,
                format!("probe name {e}"),
            )
            .await;
        }
    };
    let ca = hub.ca.clone();
    let ttl = hub.config.borrow().server.probe_cert_ttl;
    let csr = csr_der.to_vec();
    let outcome = hub
        .registry
        .enrol(
            token.id.clone(),
            token.secret.clone(),
            requested,
            agent_version.to_string(),
            move |name| {
                let cert = ca.issue_client(&csr, name, ttl)?;
                let (serial, not_after) = (cert.serial.clone(), cert.not_after);
                Ok::<_, ca::CaError>((cert, serial, not_after))
            },
        )
        .await;
    match outcome {
        Ok(Ok((grant, cert))) => {
            hub.metrics.enrolment(Enrolment::Enrolled);
            tracing::info!(probe = %grant.name, "probe enrolled");
            write_frame(
                send,
                &ToProbe::Enrolled {
                    name: grant.name,
                    cert_der: cert.der,
                    labels: grant.labels,
                },
            )
            .await?;
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
            Ok(())
        }
        Ok(Err(refusal)) => {
            hub.metrics.enrolment(match refusal {
                TokenRefusal::Unknown => Enrolment::TokenUnknown,
                TokenRefusal::Used => Enrolment::TokenUsed,
                TokenRefusal::Expired => Enrolment::TokenExpired,
                TokenRefusal::NameTaken(_) => Enrolment::NameTaken,
            });
            refuse(
                hub,
                conn,
                send,
                Refusal::EnrolmentRefused,
                refusal.to_string(),
            )
            .await
        }
        Err(e) => {
            hub.metrics.enrolment(Enrolment::Error);
            refuse(
                hub,
                conn,
                send,
                Refusal::EnrolmentRefused,
                format!("enrolment failed: {e:#}"),
            )
            .await
        }
    }
}

async fn session(
    hub: &Arc<Hub>,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    name: String,
    agent_version: String,
) -> Result<()> {
    let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
    let (now_tx, mut now_rx) = mpsc::channel::<ProbeNowRequest>(8);
    let previous = hub.live.lock().insert(
        name.clone(),
        Live {
            id,
            conn: conn.clone(),
            probe_now: now_tx,
        },
    );
    if let Some(old) = previous {
        old.conn.close(
            CloseCode::Replaced.varint(),
            b"replaced by a newer connection",
        );
    }
    let labels = hub
        .registry
        .connected(&name, &agent_version, store::now_ms());
    tracing::info!(probe = %name, remote = %conn.remote_address(), "probe connected");
    let result = session_loop(hub, &conn, &mut send, recv, &name, &labels, &mut now_rx).await;
    let still_ours = {
        let mut live = hub.live.lock();
        let ours = live.get(&name).is_some_and(|l| l.id == id);
        if ours {
            live.remove(&name);
        }
        ours
    };
    if still_ours {
        hub.registry.disconnected(&name);
    }
    tracing::info!(probe = %name, "probe disconnected");
    result
}

/// Keeps a probe's agent state: in the store (so a restart loses nothing), then in the fleet
/// view. It is state, not an event: it needs no acknowledgement, and a store failure only costs
/// the copy on disk (the probe sends it again on its next connection).
async fn record_agent_state(hub: &Hub, name: &str, state: AgentCemState) {
    let state = state.bounded();
    let received = store::now_ms();
    let condition = state.condition.as_str();
    let port = state.condition.port();
    let (previous, not_stored) = hub.registry.agent_state(name, state, received).await;
    if let Some(e) = not_stored {
        tracing::warn!(probe = name, error = %format!("{e:#}"), "agent state not stored; kept in memory");
    }
    if previous == Some(condition) {
        tracing::debug!(probe = name, condition, ?port, "agent CEM state received");
    } else {
        tracing::info!(
            probe = name,
            condition,
            ?port,
            was = previous.unwrap_or("unknown"),
            "agent CEM state changed"
        );
    }
}

/// Issues a renewed client certificate over the live session.
async fn renew(
    hub: &Hub,
    send: &mut quinn::SendStream,
    name: &str,
    csr_der: Vec<u8>,
) -> Result<()> {
    let ttl = hub.config.borrow().server.probe_cert_ttl;
    match hub.ca.issue_client(&csr_der, name, ttl) {
        Ok(cert) => {
            hub.registry
                .renewed(name, cert.serial.clone(), cert.not_after)
                .await?;
            tracing::info!(probe = name, "client certificate renewed");
            write_frame(send, &ToProbe::Renewed { cert_der: cert.der }).await?;
        }
        Err(e) => tracing::warn!(probe = name, error = %format!("{e:#}"), "cannot renew"),
    }
    Ok(())
}

async fn session_loop(
    hub: &Arc<Hub>,
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    mut recv: quinn::RecvStream,
    name: &str,
    labels: &Labels,
    now_rx: &mut mpsc::Receiver<ProbeNowRequest>,
) -> Result<()> {
    write_frame(send, &ToProbe::Plan(hub.plan_for(labels))).await?;
    let mut config_rx = hub.config.clone();
    config_rx.borrow_and_update();

    // Frames are read by their own task so that a partly read frame is never lost to select!.
    // Frames travel boxed: the channel keeps a block of 32 slots per connection for as long as
    // it lives, and a slot the size of the largest message would cost every connection 3.5 KiB.
    let (frame_tx, mut frame_rx) = mpsc::channel::<Box<Result<ToCoordinator, TransportError>>>(64);
    let max_frame = hub.config.borrow().limits.max_frame_bytes;
    let reader_fut = async move {
        loop {
            match read_frame_max::<ToCoordinator>(&mut recv, max_frame).await {
                Ok(Some(frame)) => {
                    if frame_tx.send(Box::new(Ok(frame))).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = frame_tx.send(Box::new(Err(e))).await;
                    return;
                }
            }
        }
    };
    let reader = tokio::spawn(reader_fut);
    let mut commits: JoinSet<(u64, Result<Ingested, crate::store::StoreError>, Report)> =
        JoinSet::new();
    let outcome = loop {
        tokio::select! {
            frame = frame_rx.recv() => match frame.map(|f| *f) {
                None => break Ok(()),
                Some(Err(e)) => {
                    reject_frame(hub, conn, &e);
                    break Err(e.into());
                }
                Some(Ok(ToCoordinator::Report(report))) => {
                    // Beyond the probe's report rate the commit waits its turn (the probe's
                    // window of unacknowledged reports then holds it back); a flood far beyond
                    // what the protocol allows closes the connection.
                    let limits = hub.config.borrow().limits;
                    let now = std::time::Instant::now();
                    let delay = match hub.limiter.pace_report(name, &limits, now) {
                        Ok(delay) => {
                            if !delay.is_zero() {
                                hub.metrics.reports_throttled.inc();
                            }
                            delay
                        }
                        Err(e) => {
                            hub.metrics.refused(Refusal::ReportRate);
                            conn.close(CloseCode::Refused.varint(), e.to_string().as_bytes());
                            break Err(e.into());
                        }
                    };
                    let registry = hub.registry.clone();
                    let probe = name.to_string();
                    commits.spawn(async move {
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let seq = report.seq;
                        let (outcome, report) = registry.report(&probe, report).await;
                        (seq, outcome, report)
                    });
                }
                // Rare messages are handled in boxed futures: the session's task is as large as
                // its largest state, kept for every connection for as long as it lives.
                Some(Ok(ToCoordinator::Renew { csr_der })) => Box::pin(renew(hub, send, name, csr_der)).await?,
                Some(Ok(ToCoordinator::AgentState(state))) => Box::pin(record_agent_state(hub, name, state)).await,
                Some(Ok(other)) => {
                    hub.metrics.frame_rejected("unexpected");
                    let reason = format!("unexpected message in a session: {}", match other {
                        ToCoordinator::Hello { .. } => "Hello",
                        ToCoordinator::Enroll { .. } => "Enroll",
                        _ => "other",
                    });
                    conn.close(CloseCode::UnsupportedMessage.varint(), reason.as_bytes());
                    break Err(QuicError::Protocol(reason));
                }
            },
            Some(done) = commits.join_next(), if !commits.is_empty() => {
                let Ok((seq, outcome, report)) = done else { continue };
                match outcome {
                    Ok(Ingested::Stored) => {
                        hub.metrics.reports_received.inc();
                        let cap = hub.config.borrow().server.max_sites;
                        let site = hub.metrics.site_label(labels.get("site").map(String::as_str).unwrap_or(""), cap);
                        for entry in &report.results {
                            let tls = entry.result.tls.as_ref().filter(|t| t.completed).map(|t| t.duration_ms);
                            if entry.result.tcp.state == cemwatch_shared::TcpState::Open {
                                hub.metrics.observe(&entry.check, &site, entry.result.tcp.duration_ms, tls);
                            }
                        }
                        hub.record_round(name, &report);
                        write_frame(send, &ToProbe::Ack { seq }).await?;
                    }
                    Ok(Ingested::Duplicate) => {
                        hub.metrics.reports_duplicate.inc();
                        write_frame(send, &ToProbe::Ack { seq }).await?;
                    }
                    Err(e) => {
                        // Not acknowledged: the probe keeps it and sends it again.
                        tracing::error!(probe = name, seq, error = %format!("{e:#}"), "report not committed");
                    }
                }
            },
            changed = config_rx.changed() => {
                if changed.is_ok() {
                    write_frame(send, &ToProbe::Plan(hub.plan_for(labels))).await?;
                }
            },
            request = now_rx.recv() => {
                if let Some((round, checks)) = request.map(|r| *r) {
                    write_frame(send, &ToProbe::ProbeNow { round, checks }).await?;
                }
            },
        }
    };
    reader.abort();
    outcome
}

/// Records a probe that enrolled at another coordinator sharing this CA on its first `Hello`
/// here (the verifier let it through because `trust_shared_ca_probes` is on), with the labels
/// it reports and its certificate's serial and expiry. Does nothing for a known probe.
pub async fn adopt_on_hello(
    hub: &Hub,
    conn: &quinn::Connection,
    name: &str,
    labels: &Labels,
    agent_version: &str,
) -> Result<()> {
    let (known, adopt) = {
        let auth = hub.registry.auth();
        (auth.known.contains(name), auth.adopt_unknown)
    };
    if known {
        return Ok(());
    }
    if !adopt {
        return Err(QuicError::Refused(format!(
            "probe {name:?} is not enrolled here (trust_shared_ca_probes is off)"
        )));
    }
    let (serial, not_after) = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| {
            let cert = cemwatch_transport::x509::parse(chain.first()?.as_ref()).ok()?;
            Some((
                hex::encode_upper(cert.raw_serial()),
                cert.validity().not_after.timestamp(),
            ))
        })
        .ok_or_else(|| {
            QuicError::Refused(format!("probe {name:?} presented no readable certificate"))
        })?;
    let recorded = hub
        .registry
        .adopt(name, labels, agent_version, serial, not_after)
        .await?;
    if recorded {
        tracing::info!(
            probe = name,
            ?labels,
            "probe enrolled at another coordinator sharing this CA: recorded on its first Hello"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(rxs: &mut [mpsc::Receiver<ProbeNowRequest>]) -> usize {
        rxs.iter_mut().filter_map(|rx| rx.try_recv().ok()).count()
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_round_is_asked_as_answers_come_back() {
        let n = ROUND_WINDOW * 3;
        let (mut targets, mut rxs) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (tx, rx) = mpsc::channel(8);
            targets.push((format!("p{i}"), tx));
            rxs.push(rx);
        }
        let answered = Arc::new(AtomicUsize::new(0));
        let pacer = {
            let answered = answered.clone();
            tokio::spawn(async move {
                pace_round(7, &["gateway".to_string()], targets, &answered).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            received(&mut rxs),
            ROUND_WINDOW,
            "one window asked at first"
        );
        // 1,000 answers make room for 1,000 more.
        answered.fetch_add(1000, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(received(&mut rxs), 1000);
        // Probes that never answer do not hold the round: after ROUND_STALL without an answer,
        // another window's worth is asked.
        tokio::time::sleep(ROUND_STALL + Duration::from_millis(50)).await;
        assert_eq!(received(&mut rxs), ROUND_WINDOW);
        tokio::time::sleep(ROUND_STALL * 2).await;
        assert_eq!(received(&mut rxs), n - 2 * ROUND_WINDOW - 1000);
        pacer.await.expect("the pacer ends once everyone is asked");
    }
}
