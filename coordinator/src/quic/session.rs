//! A probe's session: the plan, reports committed then acknowledged (paced by the report rate
//! limit), renewals, the agent's CEM state, `ProbeNow` requests and plan pushes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use cemwatch_shared::wire::{Labels, Report, ToCoordinator, ToProbe};
use cemwatch_shared::AgentCemState;
use cemwatch_transport::frame::{read_payload, read_prefix, write_frame, TransportError};
use cemwatch_transport::protocol::CloseCode;
use cemwatch_transport::x509::past_half_life;

use crate::quic::error::{QuicError, Result};
use crate::quic::live::{Hub, Live, ProbeNowRequest};
use crate::quic::refusal::reject_frame;
use crate::store;
use crate::store::Ingested;
use crate::telemetry::Refusal;

/// Encoded bytes of received frames one connection may hold decoded and not yet committed (a
/// probe that follows the protocol sends at most 64 unacknowledged reports of a few KiB). Past
/// it the session stops reading its stream, and QUIC flow control holds the probe back.
pub const QUEUED_BYTES_PER_CONNECTION: usize = 2 << 20;

/// Encoded bytes of received frames all connections together may hold decoded and not yet
/// committed: what bounds the memory of frames in flight whatever every peer sends. Decoded, a
/// report of many results takes up to about six times its encoded size (measured by
/// `hostile_probe::a_probe_flooding_agent_states_and_full_size_reports_harms_no_other_probe`:
/// 2 MiB of queued 1 MiB reports raised the coordinator's peak RSS by about 110 MiB, commit
/// included), so 32 MiB here is about 200 MiB at worst.
pub const QUEUED_BYTES_ALL: usize = 32 << 20;

/// At most one agent state a probe sends is recorded per this interval (each one is a write to
/// the store); a newer one arriving sooner replaces the one waiting, which is recorded when the
/// interval has passed: only the latest state matters.
pub const AGENT_STATE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// The memory a received frame holds until it is handled: its share of the connection's and of
/// the coordinator's budget.
struct Budget {
    _connection: tokio::sync::OwnedSemaphorePermit,
    _all: tokio::sync::OwnedSemaphorePermit,
}

/// Reads one frame within the budgets: the length first, then permits for that many bytes from
/// the connection's and the coordinator's budget (waiting while they are spent, which stops
/// reading and so lets flow control push back), then the payload.
async fn read_budgeted(
    recv: &mut quinn::RecvStream,
    max_frame: usize,
    connection: &Arc<tokio::sync::Semaphore>,
    all: &Arc<tokio::sync::Semaphore>,
) -> std::result::Result<Option<(ToCoordinator, Budget)>, TransportError> {
    let Some(len) = read_prefix(recv, max_frame).await? else {
        return Ok(None);
    };
    let permits = len.clamp(1, QUEUED_BYTES_PER_CONNECTION) as u32;
    let (Ok(c), Ok(a)) = (
        connection.clone().acquire_many_owned(permits).await,
        all.clone().acquire_many_owned(permits).await,
    ) else {
        return Ok(None);
    };
    let frame = read_payload::<ToCoordinator>(recv, len).await?;
    Ok(Some((
        frame,
        Budget {
            _connection: c,
            _all: a,
        },
    )))
}

pub(super) async fn session(
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
pub(super) async fn record_agent_state(hub: &Hub, name: &str, state: AgentCemState) {
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
/// Issues a probe a new certificate, when the one it connected with is past half its life (as
/// the probe asks) and it has not been given one on this connection yet; any other `Renew` is a
/// probe minting certificates (each one a signature and an fsync), so it is dropped and counted.
pub(super) async fn renew(
    hub: &Hub,
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    name: &str,
    csr_der: Vec<u8>,
    renewed: &mut bool,
) -> Result<()> {
    let now = crate::store::now_ms() / 1000;
    let due = conn
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|chain| chain.first().map(|c| past_half_life(c.as_ref(), now)))
        .unwrap_or(false);
    if *renewed || !due {
        hub.metrics.frame_rejected("unexpected");
        tracing::debug!(
            probe = name,
            already = *renewed,
            due,
            "a renewal asked for out of turn: not issued"
        );
        return Ok(());
    }
    *renewed = true;
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

pub(super) async fn session_loop(
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
    let (frame_tx, mut frame_rx) =
        mpsc::channel::<Box<std::result::Result<(ToCoordinator, Budget), TransportError>>>(8);
    let max_frame = hub.config.borrow().limits.max_frame_bytes;
    let budget = Arc::new(tokio::sync::Semaphore::new(QUEUED_BYTES_PER_CONNECTION));
    let all = hub.queued_bytes.clone();
    let reader_fut = async move {
        loop {
            match read_budgeted(&mut recv, max_frame, &budget, &all).await {
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
    // One renewal per connection at most (a probe asks once its certificate is past half-life).
    let mut renewed = false;
    let mut commits: JoinSet<(u64, Result<Ingested, crate::store::StoreError>, Report)> =
        JoinSet::new();
    // Agent states: when the last was recorded, and the newest one waiting for its turn.
    let mut agent_recorded: Option<tokio::time::Instant> = None;
    let mut agent_waiting: Option<AgentCemState> = None;
    let outcome = loop {
        tokio::select! {
            frame = frame_rx.recv() => match frame.map(|f| *f) {
                None => break Ok(()),
                Some(Err(e)) => {
                    reject_frame(hub, conn, &e);
                    break Err(e.into());
                }
                Some(Ok((ToCoordinator::Report(mut report), budget))) => {
                    // Only results of checks in this probe's plan are kept: check names become
                    // fleet-view keys, metric labels and event rows, so a probe must not choose
                    // them. The report itself is still committed (its seq acknowledged).
                    let before = report.results.len();
                    {
                        let config = hub.config.borrow();
                        report.results.retain(|r| {
                            config.checks.iter().any(|c| c.name == r.check && c.selects(labels))
                        });
                    }
                    let dropped = before - report.results.len();
                    if dropped > 0 {
                        hub.metrics.results_dropped.inc_by(dropped as u64);
                        tracing::debug!(probe = name, dropped, "results of checks outside the probe's plan dropped");
                    }
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
                        // The frame's bytes are spent until it is committed.
                        drop(budget);
                        (seq, outcome, report)
                    });
                }
                // Rare messages are handled in boxed futures: the session's task is as large as
                // its largest state, kept for every connection for as long as it lives.
                Some(Ok((ToCoordinator::Renew { csr_der }, _))) => Box::pin(renew(hub, conn, send, name, csr_der, &mut renewed)).await?,
                Some(Ok((ToCoordinator::AgentState(state), _))) => {
                    let due = agent_recorded.is_none_or(|at| at.elapsed() >= AGENT_STATE_INTERVAL);
                    if due {
                        agent_recorded = Some(tokio::time::Instant::now());
                        Box::pin(record_agent_state(hub, name, state)).await;
                    } else {
                        if agent_waiting.replace(state).is_some() {
                            hub.metrics.frame_rejected("paced");
                        }
                    }
                }
                Some(Ok((other, _))) => {
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
            _ = tokio::time::sleep_until(agent_recorded.map_or_else(tokio::time::Instant::now, |at| at + AGENT_STATE_INTERVAL)), if agent_waiting.is_some() => {
                if let Some(state) = agent_waiting.take() {
                    agent_recorded = Some(tokio::time::Instant::now());
                    Box::pin(record_agent_state(hub, name, state)).await;
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
