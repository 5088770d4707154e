//! The fleet simulator: N probes with real QUIC connections and their own client certificates,
//! multiplexed over a few client endpoints (one UDP socket each) in one process. Each probe
//! speaks the probe protocol (`Hello`, then the plan, reports with sequence numbers, `Ack`s,
//! answers to `ProbeNow`) and reconnects like the real agent: at once after a session that
//! held, otherwise with the agent's own jittered exponential backoff.
//!
//! What the probes do is steered through a [`Mode`] that every probe watches; what they see
//! is counted in [`Counters`] and timed in histograms, so a scenario reads its figures from
//! there while the coordinator's figures come from `/proc`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use tokio::sync::watch;

use cemwatch_probe::agent::backoff;
use cemwatch_shared::wire::{self, FrameDecoder, Labels, ToCoordinator, ToProbe, SERVER_NAME};
use cemwatch_transport::protocol::{reconnect_spread, RECONNECT_SPREAD_MIN};

use crate::frames;
use crate::hist::Histogram;

/// What every probe does between protocol events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Hold the connection; answer `ProbeNow`.
    Idle,
    /// One report per probe every `interval`, at a random phase.
    Steady {
        /// Time between a probe's reports.
        interval: Duration,
    },
    /// Keep `window` reports unacknowledged at all times in each of the first `probes` probes.
    Saturate {
        /// Reports in flight per probe.
        window: usize,
        /// How many probes take part.
        probes: usize,
    },
    /// Send one report now (the `u64` tells one nudge from the next).
    Nudge(u64),
}

/// What the probes saw.
#[derive(Debug, Default)]
pub struct Counters {
    /// Probes with a session (plan received) right now.
    pub connected: AtomicUsize,
    /// Sessions established.
    pub sessions: AtomicU64,
    /// Connection attempts refused by the server.
    pub refused: AtomicU64,
    /// Connection attempts that timed out.
    pub timeouts: AtomicU64,
    /// Other failed attempts.
    pub failed: AtomicU64,
    /// Sessions that ended (connection lost, reset, closed).
    pub lost: AtomicU64,
    /// Reports sent.
    pub sent: AtomicU64,
    /// Reports acknowledged (committed).
    pub acked: AtomicU64,
    /// Reports still unacknowledged when a probe stopped.
    pub forgotten: AtomicU64,
}

/// A `ProbeNow` round being timed.
#[derive(Debug, Default)]
pub struct RoundClock {
    /// When the round was asked for.
    pub started: Option<Instant>,
    /// The round id, once known.
    pub id: Option<u64>,
    /// Time from `started` to each acknowledged answer.
    pub acks: Vec<Duration>,
    /// Answers sent.
    pub answered: u64,
}

/// State shared by the simulator and its probes.
#[derive(Debug)]
pub struct Sim {
    /// Where the probes connect.
    pub target: RwLock<SocketAddr>,
    /// Client endpoints the connections are spread over.
    pub endpoints: Vec<quinn::Endpoint>,
    /// One client configuration per probe.
    pub configs: Vec<quinn::ClientConfig>,
    /// Probe names.
    pub names: Vec<String>,
    /// Probe labels.
    pub labels: Vec<Labels>,
    /// The encoded results every report carries.
    pub results: RwLock<Arc<Vec<u8>>>,
    /// What the probes do.
    pub mode: watch::Sender<Mode>,
    /// Set to stop every probe (connections are closed).
    pub stop: watch::Sender<bool>,
    /// Counts.
    pub counters: Counters,
    /// Report → Ack latency of every acknowledged report.
    pub latency: Histogram,
    /// The round being timed.
    pub round: Mutex<RoundClock>,
    /// When the current reconnect storm started; sessions after it are timed.
    pub storm_started: Mutex<Option<Instant>>,
    /// Time from the storm's start to each probe's first new session in it (see `returned`).
    pub reconnects: Mutex<Vec<Duration>>,
    /// Which probes are back in the current storm: a probe whose session is lost again and
    /// that comes back a second time is counted once.
    returned: Vec<std::sync::atomic::AtomicBool>,
    /// How long a connection attempt may take (the agent's default).
    pub connect_timeout: Duration,
    /// Longest backoff (the agent's default).
    pub max_backoff: Duration,
    /// While set, at most [`PACED_HANDSHAKES`] connection attempts run at once (the fleet is
    /// being set up, not stormed).
    pub pacing: std::sync::atomic::AtomicBool,
    /// The reconnect spread of the last plan a probe received, ms.
    pub plan_spread_ms: AtomicU64,
    /// Where each probe is ([`Phase`]), so that a storm that leaves probes out can say where
    /// they are.
    pub phases: Vec<std::sync::atomic::AtomicU8>,
    pace: tokio::sync::Semaphore,
}

/// Where a simulated probe is, for the storm's account of the probes not back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Waiting before an attempt (a backoff, or a moment of the reconnect spread).
    Waiting = 0,
    /// A connection attempt (the handshake) under way.
    Connecting = 1,
    /// Connected, its `Hello` sent, waiting for the plan.
    AwaitingPlan = 2,
    /// In a session (the plan received) that began before the current storm, or outside one.
    Session = 3,
    /// In a session that began during the current storm: back.
    Back = 4,
}

impl Phase {
    /// The phases of a probe not back, with how the storm's note names them.
    pub const NOT_BACK: [(Phase, &'static str); 4] = [
        (Phase::Waiting, "waiting to reconnect"),
        (Phase::Connecting, "connecting"),
        (Phase::AwaitingPlan, "connected and waiting for a plan"),
        (Phase::Session, "in a session from before the restart"),
    ];
}

/// Connection attempts at once while the simulator sets the fleet up.
pub const PACED_HANDSHAKES: usize = 128;

impl Sim {
    /// A simulator for these probes, with `endpoints` client endpoints on loopback.
    pub fn new(
        configs: Vec<quinn::ClientConfig>,
        names: Vec<String>,
        labels: Vec<Labels>,
        results: Vec<u8>,
        endpoints: usize,
    ) -> Result<Arc<Self>> {
        let runtime = quinn::default_runtime().ok_or_else(|| anyhow!("no async runtime"))?;
        let n = configs.len();
        let endpoints = (0..endpoints.max(1))
            .map(|_| {
                let socket = udp_socket(SocketAddr::from(([127, 0, 0, 1], 0)))?;
                Ok(quinn::Endpoint::new(
                    quinn::EndpointConfig::default(),
                    None,
                    socket,
                    runtime.clone(),
                )?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Self {
            target: RwLock::new(SocketAddr::from(([127, 0, 0, 1], 0))),
            endpoints,
            configs,
            names,
            labels,
            results: RwLock::new(Arc::new(results)),
            mode: watch::channel(Mode::Idle).0,
            stop: watch::channel(false).0,
            counters: Counters::default(),
            latency: Histogram::new(),
            round: Mutex::new(RoundClock::default()),
            storm_started: Mutex::new(None),
            reconnects: Mutex::new(Vec::new()),
            connect_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
            pacing: std::sync::atomic::AtomicBool::new(true),
            plan_spread_ms: AtomicU64::new(0),
            phases: (0..n)
                .map(|_| std::sync::atomic::AtomicU8::new(Phase::Waiting as u8))
                .collect(),
            returned: (0..n)
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            pace: tokio::sync::Semaphore::new(PACED_HANDSHAKES),
        }))
    }

    fn set_phase(&self, i: usize, phase: Phase) {
        if let Some(p) = self.phases.get(i) {
            p.store(phase as u8, Ordering::Relaxed);
        }
    }

    /// How many probes are in each phase.
    pub fn phase_counts(&self) -> [usize; 5] {
        let mut counts = [0usize; 5];
        for p in &self.phases {
            if let Some(c) = counts.get_mut(usize::from(p.load(Ordering::Relaxed))) {
                *c += 1;
            }
        }
        counts
    }

    /// Number of probes.
    pub fn len(&self) -> usize {
        self.configs.len()
    }

    /// Starts counting a storm's returns afresh: no probe is back yet.
    pub fn storm_begins(&self) {
        for r in &self.returned {
            r.store(false, Ordering::Relaxed);
        }
        if let Ok(mut r) = self.reconnects.lock() {
            r.clear();
        }
    }

    /// Whether there are no probes.
    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }

    /// Starts every probe against `target`; returns their tasks.
    pub fn start(self: &Arc<Self>, target: SocketAddr) -> tokio::task::JoinSet<()> {
        if let Ok(mut t) = self.target.write() {
            *t = target;
        }
        self.stop.send_replace(false);
        self.mode.send_replace(Mode::Idle);
        let mut set = tokio::task::JoinSet::new();
        for i in 0..self.len() {
            set.spawn(probe(self.clone(), i));
        }
        set
    }

    /// Probes with a session right now.
    pub fn connected(&self) -> usize {
        self.counters.connected.load(Ordering::Relaxed)
    }

    /// Reports acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.counters.acked.load(Ordering::Relaxed)
    }

    /// Reports sent so far.
    pub fn sent(&self) -> u64 {
        self.counters.sent.load(Ordering::Relaxed)
    }

    /// Waits until `want` probes have a session, or `within` passes; returns the time taken.
    pub async fn wait_connected(&self, want: usize, within: Duration) -> Result<Duration> {
        let started = Instant::now();
        while self.connected() < want {
            if started.elapsed() > within {
                return Err(anyhow!(
                    "only {} of {want} probes connected within {within:?} ({} refused, {} timed out, {} failed)",
                    self.connected(),
                    self.counters.refused.load(Ordering::Relaxed),
                    self.counters.timeouts.load(Ordering::Relaxed),
                    self.counters.failed.load(Ordering::Relaxed),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(started.elapsed())
    }

    /// Waits until every report sent has been acknowledged (or `within` passes).
    pub async fn drain(&self, within: Duration) -> bool {
        let started = Instant::now();
        while self.acked() + self.counters.forgotten.load(Ordering::Relaxed) < self.sent() {
            if started.elapsed() > within {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

/// A UDP socket with buffers as large as the kernel allows (up to 8 MiB): thousands of
/// connections share it, and the default buffer drops bursts.
pub fn udp_socket(addr: SocketAddr) -> Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let r = socket2::SockRef::from(&socket);
    let _ = r.set_recv_buffer_size(8 << 20);
    let _ = r.set_send_buffer_size(8 << 20);
    Ok(socket)
}

enum Ended {
    Stopped,
    Lost,
}

async fn probe(sim: Arc<Sim>, i: usize) {
    let mut stop = sim.stop.subscribe();
    let mut failures = 0u32;
    let mut next_seq = 1u64;
    // The coordinator's reconnect spread, from its last plan, as the agent keeps it.
    let mut spread = RECONNECT_SPREAD_MIN;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    loop {
        if *stop.borrow() {
            return;
        }
        let target = sim
            .target
            .read()
            .map(|t| *t)
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
        let endpoint = &sim.endpoints[i % sim.endpoints.len()];
        let started = Instant::now();
        sim.set_phase(i, Phase::Connecting);
        let permit = if sim.pacing.load(Ordering::Relaxed) {
            sim.pace.acquire().await.ok()
        } else {
            None
        };
        let attempt = match endpoint.connect_with(sim.configs[i].clone(), target, SERVER_NAME) {
            Ok(connecting) => Some(tokio::time::timeout(sim.connect_timeout, connecting).await),
            Err(_) => None,
        };
        drop(permit);
        match attempt {
            Some(Ok(Ok(conn))) => {
                let ended = session(
                    &sim,
                    i,
                    &conn,
                    &mut stop,
                    &mut next_seq,
                    &mut in_flight,
                    &mut spread,
                )
                .await;
                match ended {
                    Ended::Stopped => {
                        sim.counters
                            .forgotten
                            .fetch_add(in_flight.len() as u64, Ordering::Relaxed);
                        conn.close(0u32.into(), b"benchmark done");
                        return;
                    }
                    Ended::Lost => {
                        sim.counters.lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if started.elapsed() > Duration::from_secs(30) {
                    // A session that held: reconnect within the agent's spread, as it does.
                    failures = 0;
                    sim.set_phase(i, Phase::Waiting);
                    tokio::select! {
                        _ = tokio::time::sleep(random_phase(spread)) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            }
            Some(Ok(Err(
                quinn::ConnectionError::ConnectionClosed(_)
                | quinn::ConnectionError::ApplicationClosed(_),
            ))) => {
                sim.counters.refused.fetch_add(1, Ordering::Relaxed);
            }
            Some(Ok(Err(_))) | None => {
                sim.counters.failed.fetch_add(1, Ordering::Relaxed);
            }
            Some(Err(_)) => {
                sim.counters.timeouts.fetch_add(1, Ordering::Relaxed);
            }
        }
        sim.set_phase(i, Phase::Waiting);
        failures = failures.saturating_add(1);
        let pause = backoff(failures, sim.max_backoff);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
}

struct InFlight {
    seq: u64,
    sent: Instant,
    round: Option<u64>,
}

impl Sim {
    /// The encoded check results every simulated report carries.
    fn results(&self) -> Result<Arc<Vec<u8>>> {
        self.results
            .read()
            .map(|r| r.clone())
            .map_err(|_| anyhow!("results lock poisoned"))
    }
}

async fn send_report(
    sim: &Sim,
    send: &mut quinn::SendStream,
    next_seq: &mut u64,
    round: Option<u64>,
    in_flight: &mut VecDeque<InFlight>,
) -> Result<()> {
    let results = sim.results()?;
    let seq = *next_seq;
    *next_seq += 1;
    let frame = frames::report_frame(seq, round, &results)?;
    send.write_all(&frame).await?;
    sim.counters.sent.fetch_add(1, Ordering::Relaxed);
    in_flight.push_back(InFlight {
        seq,
        sent: Instant::now(),
        round,
    });
    Ok(())
}

/// Sends again what a lost connection left unacknowledged, as the agent does from its spool
/// (the coordinator drops what it had already committed).
async fn resend(
    sim: &Sim,
    send: &mut quinn::SendStream,
    in_flight: &VecDeque<InFlight>,
) -> Result<()> {
    let results = sim.results()?;
    for f in in_flight {
        send.write_all(&frames::report_frame(f.seq, f.round, &results)?)
            .await?;
    }
    Ok(())
}

fn random_phase(interval: Duration) -> Duration {
    cemwatch_probe::agent::schedule::random_below(interval)
}

async fn session(
    sim: &Sim,
    i: usize,
    conn: &quinn::Connection,
    stop: &mut watch::Receiver<bool>,
    next_seq: &mut u64,
    in_flight: &mut VecDeque<InFlight>,
    spread: &mut Duration,
) -> Ended {
    let Ok((mut send, mut recv)) = conn.open_bi().await else {
        return Ended::Lost;
    };
    let hello = wire::encode(&ToCoordinator::Hello {
        probe: sim.names[i].clone(),
        agent_version: "cemwatch-bench".into(),
        labels: sim.labels[i].clone(),
    });
    let Ok(hello) = hello else { return Ended::Lost };
    if send.write_all(&hello).await.is_err() {
        return Ended::Lost;
    }
    let mut decoder = FrameDecoder::new();
    sim.set_phase(i, Phase::AwaitingPlan);
    // The session starts with the plan.
    let plan = loop {
        if let Some(frame) = decoder.next_frame::<ToProbe>() {
            break frame;
        }
        tokio::select! {
            chunk = recv.read_chunk(4096, true) => match chunk {
                Ok(Some(c)) => decoder.push(&c.bytes),
                _ => return Ended::Lost,
            },
            _ = stop.changed() => return Ended::Stopped,
        }
    };
    match plan {
        Ok(ToProbe::Plan(plan)) => {
            *spread = reconnect_spread(plan.reconnect_spread_ms);
            sim.plan_spread_ms
                .store(spread.as_millis() as u64, Ordering::Relaxed);
        }
        _ => return Ended::Lost,
    }
    sim.counters.connected.fetch_add(1, Ordering::Relaxed);
    sim.counters.sessions.fetch_add(1, Ordering::Relaxed);
    match sim.storm_started.lock().ok().and_then(|s| *s) {
        Some(t0) => {
            sim.set_phase(i, Phase::Back);
            let first = sim
                .returned
                .get(i)
                .is_some_and(|r| !r.swap(true, Ordering::Relaxed));
            if first {
                if let Ok(mut r) = sim.reconnects.lock() {
                    r.push(t0.elapsed());
                }
            }
        }
        None => sim.set_phase(i, Phase::Session),
    }
    if resend(sim, &mut send, in_flight).await.is_err() {
        sim.counters.connected.fetch_sub(1, Ordering::Relaxed);
        return Ended::Lost;
    }
    let ended = session_loop(
        sim, i, &mut send, &mut recv, decoder, stop, next_seq, in_flight,
    )
    .await;
    sim.counters.connected.fetch_sub(1, Ordering::Relaxed);
    ended
}

#[allow(clippy::too_many_arguments)]
async fn session_loop(
    sim: &Sim,
    i: usize,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    mut decoder: FrameDecoder,
    stop: &mut watch::Receiver<bool>,
    next_seq: &mut u64,
    in_flight: &mut VecDeque<InFlight>,
) -> Ended {
    let mut mode_rx = sim.mode.subscribe();
    let mut mode = *mode_rx.borrow_and_update();
    let mut due = match mode {
        Mode::Steady { interval } => Some(tokio::time::Instant::now() + random_phase(interval)),
        _ => None,
    };
    loop {
        if let Mode::Saturate { window, probes } = mode {
            while i < probes && in_flight.len() < window {
                if send_report(sim, send, next_seq, None, in_flight)
                    .await
                    .is_err()
                {
                    return Ended::Lost;
                }
            }
        }
        let sleep_until =
            due.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            chunk = recv.read_chunk(4096, true) => {
                match chunk {
                    Ok(Some(c)) => decoder.push(&c.bytes),
                    _ => return Ended::Lost,
                }
                while let Some(frame) = decoder.next_frame::<ToProbe>() {
                    match frame {
                        Ok(ToProbe::Ack { seq }) => {
                            let Some(pos) = in_flight.iter().position(|f| f.seq == seq) else {
                                continue;
                            };
                            let Some(f) = in_flight.remove(pos) else { continue };
                            let took = f.sent.elapsed();
                            sim.latency.record(took);
                            sim.counters.acked.fetch_add(1, Ordering::Relaxed);
                            if f.round.is_some() {
                                if let Ok(mut r) = sim.round.lock() {
                                    if let Some(t0) = r.started {
                                        r.acks.push(t0.elapsed());
                                    }
                                }
                            }
                        }
                        Ok(ToProbe::ProbeNow { round, .. }) => {
                            if let Ok(mut r) = sim.round.lock() {
                                r.answered += 1;
                            }
                            if send_report(sim, send, next_seq, Some(round), in_flight).await.is_err() {
                                return Ended::Lost;
                            }
                        }
                        Ok(ToProbe::Plan(_)) => {}
                        Ok(_) | Err(_) => return Ended::Lost,
                    }
                }
            }
            changed = mode_rx.changed() => {
                if changed.is_err() {
                    return Ended::Stopped;
                }
                mode = *mode_rx.borrow_and_update();
                due = match mode {
                    Mode::Steady { interval } => Some(tokio::time::Instant::now() + random_phase(interval)),
                    _ => None,
                };
                if let Mode::Nudge(_) = mode {
                    if send_report(sim, send, next_seq, None, in_flight).await.is_err() {
                        return Ended::Lost;
                    }
                }
            }
            _ = tokio::time::sleep_until(sleep_until), if due.is_some() => {
                if let Mode::Steady { interval } = mode {
                    due = Some(sleep_until + interval);
                }
                if send_report(sim, send, next_seq, None, in_flight).await.is_err() {
                    return Ended::Lost;
                }
            }
            _ = stop.changed() => return Ended::Stopped,
        }
    }
}
