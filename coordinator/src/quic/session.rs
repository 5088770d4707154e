//! A probe's session: the plan, reports committed then acknowledged (paced by the report rate
//! limit), renewals, the agent's CEM state, `ProbeNow` requests and plan pushes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use std::collections::VecDeque;

use cemwatch_shared::wire::{Labels, ToCoordinator, ToProbe};

use crate::model::arrived::Arrived;
use cemwatch_shared::AgentCemState;
use cemwatch_transport::frame::{write_frame, TransportError};
use cemwatch_transport::protocol::CloseCode;
use cemwatch_transport::x509::past_half_life;

use crate::quic::asks::{Asks, AsksReceiver, Frame};
use crate::quic::error::{QuicError, Result};
use crate::quic::live::{Hub, Live};
use crate::quic::refusal::reject_frame;
use crate::store;
use crate::store::results::Encoded;
use crate::store::{Ingested, Outcome};
use crate::telemetry::Refusal;

/// Encoded bytes of received frames one connection may hold decoded and not yet committed (a
/// probe that follows the protocol sends at most 64 unacknowledged reports of a few KiB). Past
/// it the session stops reading its stream, and QUIC flow control holds the probe back.
pub const QUEUED_BYTES_PER_CONNECTION: usize = 2 << 20;

/// At most one agent state a probe sends is recorded per this interval (each one is a write to
/// the store); a newer one arriving sooner replaces the one waiting, which is recorded when the
/// interval has passed: only the latest state matters.
pub const AGENT_STATE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// The memory a received frame holds until it is handled: its share of the coordinator's
/// budget (a permit), and its length, counted against the connection's.
struct Budget {
    _all: tokio::sync::OwnedSemaphorePermit,
    bytes: usize,
}

/// A frame as received: decoded, with a report's results as they are to be stored (cut from
/// the frame's bytes, see [`store::results`]), and the budget it holds.
struct Received {
    frame: Inbound,
    budget: Budget,
}

/// A frame as received: a report read in place and summarised, with its results as they are
/// to be stored (cut from the frame), or any other message, decoded.
enum Inbound {
    Report(Box<Arrived>, Encoded),
    Other(ToCoordinator),
}

/// Most bytes asked of the stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// The bytes received on a connection's stream that do not make a whole frame yet. Empty
/// between frames, when it holds no allocation (an idle connection costs nothing here).
#[derive(Default)]
struct Incoming {
    buf: Vec<u8>,
}

impl Incoming {
    /// The payload length of the frame at the front, when it is all here; an announced length
    /// beyond `max_frame` is refused before its bytes are waited for.
    fn complete(&self, max_frame: usize) -> std::result::Result<Option<usize>, TransportError> {
        let Some(prefix) = self
            .buf
            .first_chunk::<{ cemwatch_shared::wire::PREFIX_LEN }>()
        else {
            return Ok(None);
        };
        let len = cemwatch_shared::wire::payload_len_max(*prefix, max_frame)?;
        Ok((self.buf.len() >= cemwatch_shared::wire::PREFIX_LEN + len).then_some(len))
    }

    /// Takes the front frame's payload (of `len` bytes, as [`Self::complete`] said).
    fn take(&mut self, len: usize) -> Vec<u8> {
        let end = cemwatch_shared::wire::PREFIX_LEN + len;
        let payload = self.buf[cemwatch_shared::wire::PREFIX_LEN..end].to_vec();
        if end == self.buf.len() {
            self.buf = Vec::new();
        } else {
            self.buf.drain(..end);
        }
        payload
    }
}

/// The next frame of the stream, within the coordinator's budget. Cancel-safe, so that the
/// session awaits it in its `select!` beside everything else (no reader task, no channel): a
/// chunk read is appended before anything else can be awaited, and a frame leaves the buffer
/// only once its budget is held. `Ok(None)` when the peer finished the stream between frames.
async fn next_frame(
    recv: &mut quinn::RecvStream,
    incoming: &mut Incoming,
    max_frame: usize,
    all: &Arc<tokio::sync::Semaphore>,
) -> std::result::Result<Option<Received>, TransportError> {
    loop {
        if let Some(len) = incoming.complete(max_frame)? {
            let permits = len.clamp(1, QUEUED_BYTES_PER_CONNECTION) as u32;
            let Ok(permit) = all.clone().acquire_many_owned(permits).await else {
                return Ok(None);
            };
            let payload = incoming.take(len);
            // A report is read in place: its summary is all the session and the writer need,
            // and its results are stored as they came.
            let frame = match cemwatch_shared::view::decode_report(&payload)? {
                Some(view) => {
                    let arrived = Box::new(Arrived::of(&view));
                    // A report that decoded has the shape whose results are cut from it.
                    let stored = Encoded::from_report_frame(payload).ok_or_else(|| {
                        cemwatch_shared::wire::WireError::Malformed(
                            "a report whose results cannot be cut from its frame".into(),
                        )
                    })?;
                    Inbound::Report(arrived, stored)
                }
                None => Inbound::Other(cemwatch_shared::wire::decode(&payload)?),
            };
            return Ok(Some(Received {
                frame,
                budget: Budget {
                    _all: permit,
                    bytes: len,
                },
            }));
        }
        match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => incoming.buf.extend_from_slice(&chunk.bytes),
            Ok(None) if incoming.buf.is_empty() => return Ok(None),
            Ok(None) => return Err(TransportError::Truncated),
            Err(e) => return Err(TransportError::Read(e)),
        }
    }
}

/// A connection whose `Hello` was accepted: the session it is to run ([`Accepted::run`]).
pub(super) struct Accepted {
    pub(super) conn: quinn::Connection,
    pub(super) send: quinn::SendStream,
    pub(super) recv: quinn::RecvStream,
    pub(super) name: String,
    pub(super) agent_version: String,
}

impl Accepted {
    /// The session, to be spawned as its own task (one that holds the session's state only,
    /// not the handshake's): it runs until the connection ends, and then counts the
    /// connection closed in `hub.connections`. A plain function returning the future, not an
    /// `async fn`, so that its arguments are not kept twice in the task.
    #[allow(clippy::manual_async_fn)]
    pub(super) fn run(
        mut self,
        hub: Arc<Hub>,
        remote: std::net::SocketAddr,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        async move {
            let ended = session(&hub, &mut self).await;
            if let Err(e) = ended {
                tracing::debug!(%remote, error = %format!("{e:#}"), "connection ended");
            }
            hub.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

async fn session(hub: &Arc<Hub>, accepted: &mut Accepted) -> Result<()> {
    let Accepted {
        conn,
        send,
        recv,
        name,
        agent_version,
    } = accepted;
    let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
    let (asks, asked) = Asks::new();
    let previous = hub.live.lock().insert(
        name.clone(),
        Live {
            id,
            conn: conn.clone(),
            asks,
        },
    );
    if let Some(old) = previous {
        old.conn.close(
            CloseCode::Replaced.varint(),
            b"replaced by a newer connection",
        );
    }
    let labels = hub.registry.connected(name, agent_version, store::now_ms());
    tracing::info!(probe = %name, remote = %conn.remote_address(), "probe connected");
    let result = session_loop(hub, conn, send, recv, name, &labels, &asked).await;
    let still_ours = {
        let mut live = hub.live.lock();
        let ours = live.get(name.as_str()).is_some_and(|l| l.id == id);
        if ours {
            live.remove(name.as_str());
        }
        ours
    };
    if still_ours {
        hub.registry.disconnected(name);
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

/// Hands a report to the connection's commit path; its budget stays spent until the outcome
/// comes back.
fn submit(
    path: &store::CommitPath,
    report: Arrived,
    stored: Encoded,
    budget: Budget,
    committing: &mut VecDeque<Budget>,
) -> Result<()> {
    match path.submit(report, stored) {
        Ok(()) => {
            committing.push_back(budget);
            Ok(())
        }
        Err(_) => Err(QuicError::Store(crate::store::StoreError::WriterStopped)),
    }
}

/// Appends the frame of `ToProbe::Ack { seq }` to `out` without a buffer of its own.
pub(super) fn push_ack(out: &mut Vec<u8>, seq: u64) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0u8; cemwatch_shared::wire::PREFIX_LEN]);
    let mut buf = std::mem::take(out);
    buf = postcard::to_extend(&cemwatch_shared::wire::PROTOCOL_VERSION, buf)
        .and_then(|b| postcard::to_extend(&ToProbe::Ack { seq }, b))
        .map_err(|e| QuicError::Protocol(format!("cannot encode an Ack: {e}")))?;
    let len = (buf.len() - start - cemwatch_shared::wire::PREFIX_LEN) as u32;
    buf[start..start + cemwatch_shared::wire::PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
    *out = buf;
    Ok(())
}

/// The outcomes of one group commit for this connection: counters and timings once for the
/// group, the rounds the reports answer, and every acknowledgement in one write (one packet
/// where they fit). A report the store could not commit is not acknowledged: the probe keeps
/// it and sends it again.
async fn acknowledge(
    hub: &Hub,
    send: &mut quinn::SendStream,
    name: &str,
    labels: &Labels,
    group: &mut Vec<Outcome>,
    committing: &mut VecDeque<Budget>,
    acks: &mut Vec<u8>,
) -> Result<()> {
    acks.clear();
    let (mut stored, mut duplicate) = (0u64, 0u64);
    let mut site: Option<String> = None;
    for (outcome, report) in group.iter() {
        // The frame's bytes were spent until it was committed.
        committing.pop_front();
        match outcome {
            Ok(Ingested::Stored) => {
                stored += 1;
                for entry in &report.results {
                    // The scalar facts are what the fleet view leaves in a result it took.
                    if entry.latest.tcp_state != cemwatch_shared::TcpState::Open {
                        continue;
                    }
                    let site = site.get_or_insert_with(|| {
                        let cap = hub.config.borrow().server.max_sites;
                        hub.metrics
                            .site_label(labels.get("site").map(String::as_str).unwrap_or(""), cap)
                    });
                    hub.metrics.observe(
                        &entry.check,
                        site,
                        entry.latest.tcp_ms,
                        entry.handshake_ms,
                    );
                }
                hub.record_round(name, report);
                push_ack(acks, report.seq)?;
            }
            Ok(Ingested::Duplicate) => {
                duplicate += 1;
                push_ack(acks, report.seq)?;
            }
            Err(e) => {
                tracing::error!(probe = name, seq = report.seq, error = %e, "report not committed");
            }
        }
    }
    group.clear();
    if stored > 0 {
        hub.metrics.reports_received.inc_by(stored);
    }
    if duplicate > 0 {
        hub.metrics.reports_duplicate.inc_by(duplicate);
    }
    if !acks.is_empty() {
        send.write_all(acks).await?;
    }
    Ok(())
}

/// What is left to await once the loop has woken. The loop's `select!` handles a frame
/// without awaiting and yields only this, small, so that no frame is held across an await (it
/// would be kept in every session's task, for as long as the connection lives).
enum Todo {
    Later(Option<Later>),
    Acknowledge,
    Plan(bool),
    ProbeNow(Frame),
}

/// Work a received frame leaves to be awaited, small (the frame itself is gone by then).
enum Later {
    Renew(Vec<u8>),
    AgentState(Box<AgentCemState>),
}

/// A session's reports and agent states that wait their turn.
#[derive(Default)]
struct Waiting {
    /// Reports held back by the report rate limit, in order, with when each may go.
    delayed: VecDeque<(tokio::time::Instant, Arrived, Encoded, Budget)>,
    /// When the last agent state was recorded.
    agent_recorded: Option<tokio::time::Instant>,
    /// The newest agent state waiting for its turn.
    agent_waiting: Option<Box<AgentCemState>>,
}

impl Waiting {
    /// When the next agent state may be recorded (`now` for the first).
    fn agent_turn(&self, now: tokio::time::Instant) -> tokio::time::Instant {
        self.agent_recorded
            .map_or(now, |at| at + AGENT_STATE_INTERVAL)
    }

    /// Submits the delayed reports whose turn has come, in order; an agent state whose turn
    /// has come is returned, to be recorded.
    fn release(
        &mut self,
        path: &store::CommitPath,
        committing: &mut VecDeque<Budget>,
    ) -> Result<Option<Later>> {
        let now = tokio::time::Instant::now();
        while self.delayed.front().is_some_and(|d| d.0 <= now) {
            if let Some((_, report, stored, budget)) = self.delayed.pop_front() {
                submit(path, report, stored, budget, committing)?;
            }
        }
        let agent_due = self.agent_turn(now) <= now;
        match self.agent_waiting.take() {
            Some(state) if agent_due => {
                self.agent_recorded = Some(now);
                Ok(Some(Later::AgentState(state)))
            }
            other => {
                self.agent_waiting = other;
                Ok(None)
            }
        }
    }

    /// When the first of them is due.
    fn due(&self) -> Option<tokio::time::Instant> {
        let report = self.delayed.front().map(|d| d.0);
        let agent = self
            .agent_waiting
            .as_ref()
            .map(|_| self.agent_turn(tokio::time::Instant::now()));
        match (report, agent) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Handles a received report: kept to the probe's plan, paced, handed to the commit path.
/// `Err` ends the session.
#[allow(clippy::too_many_arguments)]
fn on_report(
    hub: &Hub,
    conn: &quinn::Connection,
    name: &str,
    labels: &Labels,
    path: &store::CommitPath,
    mut report: Arrived,
    mut stored: Encoded,
    budget: Budget,
    committing: &mut VecDeque<Budget>,
    waiting: &mut Waiting,
) -> Result<()> {
    // Only results of checks in this probe's plan are kept: check names become fleet-view
    // keys, metric labels and event rows, so a probe must not choose them. The report itself
    // is still committed (its seq acknowledged).
    let before = report.results.len();
    let dropped = {
        let config = hub.config.borrow();
        let planned = |check: &str| {
            config
                .checks
                .iter()
                .any(|c| c.name == check && c.selects(labels))
        };
        report.results.retain(|r| planned(&r.check));
        let dropped = before - report.results.len();
        if dropped > 0 {
            // The bytes received are no longer the results kept.
            stored = stored.retain(planned).map_err(QuicError::Store)?;
        }
        dropped
    };
    if dropped > 0 {
        hub.metrics.results_dropped.inc_by(dropped as u64);
        tracing::debug!(
            probe = name,
            dropped,
            "results of checks outside the probe's plan dropped"
        );
    }
    // Beyond the probe's report rate the commit waits its turn (the probe's window of
    // unacknowledged reports then holds it back); a flood far beyond what the protocol allows
    // closes the connection.
    let limits = hub.config.borrow().limits;
    let delay = match hub
        .limiter
        .pace_report(name, &limits, std::time::Instant::now())
    {
        Ok(delay) => {
            if !delay.is_zero() {
                hub.metrics.reports_throttled.inc();
            }
            delay
        }
        Err(e) => {
            hub.metrics.refused(Refusal::ReportRate);
            conn.close(CloseCode::Refused.varint(), e.to_string().as_bytes());
            return Err(e.into());
        }
    };
    if delay.is_zero() && waiting.delayed.is_empty() {
        submit(path, report, stored, budget, committing)
    } else {
        waiting
            .delayed
            .push_back((tokio::time::Instant::now() + delay, report, stored, budget));
        Ok(())
    }
}

/// Handles a received frame; what is left to await comes back as [`Later`]. `Err` ends the
/// session (`Ok(None)` from the stream: the probe finished it, which ends it cleanly).
#[allow(clippy::too_many_arguments)]
fn on_frame(
    hub: &Hub,
    conn: &quinn::Connection,
    name: &str,
    labels: &Labels,
    path: &store::CommitPath,
    received: Received,
    committing: &mut VecDeque<Budget>,
    waiting: &mut Waiting,
) -> Result<Option<Later>> {
    let Received { frame, budget } = received;
    let frame = match frame {
        Inbound::Report(report, stored) => {
            on_report(
                hub, conn, name, labels, path, *report, stored, budget, committing, waiting,
            )?;
            return Ok(None);
        }
        Inbound::Other(frame) => frame,
    };
    match frame {
        // Reports are read in place (`Inbound::Report`); one decoded owned is summarised and
        // encoded for the store the same way.
        ToCoordinator::Report(report) => {
            let stored = Encoded::of_results(&report.results).map_err(QuicError::Store)?;
            on_report(
                hub,
                conn,
                name,
                labels,
                path,
                Arrived::of_report(&report),
                stored,
                budget,
                committing,
                waiting,
            )?;
            Ok(None)
        }
        ToCoordinator::Renew { csr_der } => Ok(Some(Later::Renew(csr_der))),
        ToCoordinator::AgentState(state) => {
            let now = tokio::time::Instant::now();
            if waiting.agent_turn(now) <= now {
                waiting.agent_recorded = Some(now);
                Ok(Some(Later::AgentState(Box::new(state))))
            } else {
                if waiting.agent_waiting.replace(Box::new(state)).is_some() {
                    hub.metrics.frame_rejected("paced");
                }
                Ok(None)
            }
        }
        other => {
            hub.metrics.frame_rejected("unexpected");
            let reason = format!(
                "unexpected message in a session: {}",
                match other {
                    ToCoordinator::Hello { .. } => "Hello",
                    ToCoordinator::Enroll { .. } => "Enroll",
                    _ => "other",
                }
            );
            conn.close(CloseCode::UnsupportedMessage.varint(), reason.as_bytes());
            Err(QuicError::Protocol(reason))
        }
    }
}

pub(super) async fn session_loop(
    hub: &Arc<Hub>,
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    name: &str,
    labels: &Labels,
    asked: &AsksReceiver,
) -> Result<()> {
    write_frame(send, &ToProbe::Plan(hub.plan_for(labels))).await?;
    let mut config_rx = hub.config.clone();
    config_rx.borrow_and_update();

    // Frames are read in the loop below ([`next_frame`], cancel-safe); the stream is read
    // only while the connection's frames waiting for their commit (or their turn under the
    // report rate) hold less than QUEUED_BYTES_PER_CONNECTION, so QUIC flow control holds a
    // probe back beyond it (one chunk of READ_CHUNK and one frame at most past the budget).
    let max_frame = hub.config.borrow().limits.max_frame_bytes;
    let all = hub.queued_bytes.clone();
    let mut incoming = Incoming::default();
    // One renewal per connection at most (a probe asks once its certificate is past half-life).
    let mut renewed = false;
    // The connection's commit path: reports go to the writer's next group commit, their
    // outcomes come back once per group, in order; `committing` holds the budget of each
    // report submitted and not yet committed, in the same order.
    let path = hub.registry.commit_path(name);
    let mut committing: VecDeque<Budget> = VecDeque::new();
    let mut group: Vec<Outcome> = Vec::new();
    let mut waiting = Waiting::default();
    // The acknowledgements of a group, written at once.
    let mut acks: Vec<u8> = Vec::new();
    loop {
        let held: usize = committing.iter().map(|b| b.bytes).sum::<usize>()
            + waiting.delayed.iter().map(|d| d.3.bytes).sum::<usize>();
        let due = waiting.due();
        let todo = tokio::select! {
            frame = next_frame(recv, &mut incoming, max_frame, &all), if held < QUEUED_BYTES_PER_CONNECTION => match frame {
                Ok(None) => return Ok(()),
                Err(e) => {
                    reject_frame(hub, conn, &e);
                    return Err(e.into());
                }
                Ok(Some(received)) => Todo::Later(on_frame(
                    hub,
                    conn,
                    name,
                    labels,
                    &path,
                    received,
                    &mut committing,
                    &mut waiting,
                )?),
            },
            _ = path.mailbox().ready(), if !committing.is_empty() => Todo::Acknowledge,
            _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => Todo::Later(waiting.release(&path, &mut committing)?),
            changed = config_rx.changed() => Todo::Plan(changed.is_ok()),
            frame = asked.next() => Todo::ProbeNow(frame),
        };
        let later = match todo {
            Todo::Later(later) => later,
            Todo::Acknowledge => {
                path.mailbox().take(&mut group);
                acknowledge(
                    hub,
                    send,
                    name,
                    labels,
                    &mut group,
                    &mut committing,
                    &mut acks,
                )
                .await?;
                None
            }
            Todo::Plan(changed) => {
                if changed {
                    write_frame(send, &ToProbe::Plan(hub.plan_for(labels))).await?;
                }
                None
            }
            Todo::ProbeNow(frame) => {
                send.write_all(&frame).await?;
                None
            }
        };
        // Rare work, in boxed futures: the session's task is as large as its largest state.
        match later {
            None => {}
            Some(Later::Renew(csr_der)) => {
                Box::pin(renew(hub, conn, send, name, csr_der, &mut renewed)).await?
            }
            Some(Later::AgentState(state)) => Box::pin(record_agent_state(hub, name, *state)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_appended_to_one_buffer_are_the_codec_s_frames() {
        let mut out = Vec::new();
        let mut expected = Vec::new();
        for seq in [0u64, 1, 127, 128, 300, u64::MAX] {
            push_ack(&mut out, seq).expect("encode");
            expected.extend(cemwatch_shared::wire::encode(&ToProbe::Ack { seq }).expect("encode"));
        }
        assert_eq!(out, expected);
        let mut decoder = cemwatch_shared::wire::FrameDecoder::new();
        decoder.push(&out);
        let mut seqs = Vec::new();
        while let Some(frame) = decoder.next_frame::<ToProbe>() {
            match frame.expect("a frame") {
                ToProbe::Ack { seq } => seqs.push(seq),
                other => panic!("not an Ack: {other:?}"),
            }
        }
        assert_eq!(seqs, vec![0, 1, 127, 128, 300, u64::MAX]);
    }
}
