//! Live connections and rounds: the hub every connection handler shares (configuration,
//! registry, CA, metrics, limits), the probes connected now, and `ProbeNow` rounds asked in a
//! window so a large fleet's answers arrive at the rate they are committed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use cemwatch_shared::wire::{Labels, Plan, ToProbe};
use cemwatch_shared::Thumbprint;
use cemwatch_transport::protocol::CloseCode;

use crate::admission::Limiter;
use crate::config::Config;
use crate::model::arrived::Arrived;
use crate::model::round::Round;
use crate::quic::asks::{Asks, Frame};
use crate::quic::ca::CoordinatorCa;
use crate::quic::error::Result;
use crate::registry::Registry;
use crate::store;
use crate::telemetry::Metrics;

/// A live probe connection.
#[derive(Debug, Clone)]
pub(super) struct Live {
    pub(super) id: usize,
    pub(super) conn: quinn::Connection,
    /// Where `ProbeNow` frames for the session go (see [`Asks`] for why not a channel).
    pub(super) asks: Arc<Asks>,
}

/// A round counts as in flight (so no other round of its check starts) until every asked
/// probe answered or this long after its start: a probe's check takes at most its connect and
/// handshake timeouts (15 s by default) per port, and a paced round of 100,000 probes goes out
/// in a few seconds.
pub const ROUND_IN_FLIGHT_MAX: Duration = Duration::from_secs(60);

/// Why a round was not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundRefused {
    /// The check is not configured (the message lists those that are).
    UnknownCheck(String),
    /// A round of this check is in flight, or the last one started less than
    /// `rounds.min_interval` ago.
    TooSoon {
        /// When to ask again.
        retry_after: Duration,
        /// The previous round of the check.
        previous: u64,
        /// Whether it still waits for answers.
        in_flight: bool,
    },
}

/// Encoded bytes of received frames all connections together may hold decoded and not yet
/// committed: what bounds the memory of frames in flight whatever every peer sends. The budget
/// counts encoded bytes; a decoded report is larger by a factor not measured separately (the
/// README's worst-case table assumes six). What was measured:
/// `hostile_probe::a_probe_flooding_agent_states_and_full_size_reports_harms_no_other_probe`
/// saw the peak RSS rise by about 110 MiB with one connection's 2 MiB budget full of 1 MiB
/// reports, decoding, the commit's JSON, SQLite's cache and the allocator together.
pub const QUEUED_BYTES_ALL: usize = 32 << 20;

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
    pub(super) live: Mutex<HashMap<String, Live>>,
    rounds: Mutex<std::collections::BTreeMap<u64, Round>>,
    /// Per check: when its last round started, and its id.
    last_round: Mutex<HashMap<String, (std::time::Instant, u64)>>,
    /// Answers counted per round still being asked (see [`ROUND_WINDOW`]).
    round_answers: Arc<Mutex<HashMap<u64, Arc<AtomicUsize>>>>,
    pub(super) connections: AtomicUsize,
    /// Handshakes completed and their measured cost ([`crate::quic::capacity`]).
    pub(super) handshakes: crate::quic::capacity::HandshakeMeter,
    /// Connections past their handshake without a client certificate.
    pub(super) unauthenticated: AtomicUsize,
    /// Encoded bytes of received frames not yet handled, all sessions together
    /// ([`QUEUED_BYTES_ALL`] permits).
    pub(super) queued_bytes: Arc<tokio::sync::Semaphore>,
    pub(super) next_id: AtomicUsize,
    next_round: AtomicU64,
}

impl Hub {
    /// A hub. Round ids start at the current time in Unix ms.
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
            last_round: Mutex::new(HashMap::new()),
            round_answers: Arc::new(Mutex::new(HashMap::new())),
            connections: AtomicUsize::new(0),
            handshakes: crate::quic::capacity::HandshakeMeter::default(),
            unauthenticated: AtomicUsize::new(0),
            queued_bytes: Arc::new(tokio::sync::Semaphore::new(QUEUED_BYTES_ALL)),
            next_id: AtomicUsize::new(1),
            // Round ids start at the coordinator's start time in Unix ms, so they never repeat
            // across restarts (a coordinator makes far fewer than one round per millisecond).
            next_round: AtomicU64::new(crate::store::now_ms().max(1) as u64),
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
        let targets: Vec<(String, Arc<Asks>)> = self
            .live
            .lock()
            .iter()
            .filter(|(n, _)| eligible(n))
            .map(|(n, l)| (n.clone(), l.asks.clone()))
            .collect();
        // The frame is encoded once and shared by every session asked.
        let frame: Frame = match cemwatch_shared::wire::encode(&ToProbe::ProbeNow { round, checks })
        {
            Ok(bytes) => bytes.into(),
            Err(e) => {
                tracing::error!(round, error = %e, "a ProbeNow frame cannot be encoded: nobody asked");
                return (round, Vec::new());
            }
        };
        let runtime = tokio::runtime::Handle::try_current();
        let (Ok(runtime), true) = (runtime, targets.len() > ROUND_WINDOW) else {
            let mut asked = Vec::new();
            for (name, asks) in targets {
                if asks.offer(&frame) {
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
            pace_round(round, &frame, targets, &answered).await;
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
    ) -> Result<Round, RoundRefused> {
        let config = self.config.borrow().clone();
        let Some(check_config) = config.checks.iter().find(|c| c.name == check) else {
            let names: Vec<&str> = config.checks.iter().map(|c| c.name.as_str()).collect();
            return Err(RoundRefused::UnknownCheck(format!(
                "no check named {check:?}; the configured checks are: {}",
                names.join(", ")
            )));
        };
        // One round per check in flight, and rounds.min_interval between two starts: each
        // round makes every eligible probe check the production gateway at once.
        let now = std::time::Instant::now();
        {
            let mut last = self.last_round.lock();
            if let Some((at, previous)) = last.get(check) {
                let since = now.duration_since(*at);
                let in_flight = since < ROUND_IN_FLIGHT_MAX
                    && self
                        .rounds
                        .lock()
                        .get(previous)
                        .is_some_and(|r| r.results.len() < r.asked.len());
                let mut wait = config.rounds.min_interval.saturating_sub(since);
                if in_flight {
                    wait = wait.max(ROUND_IN_FLIGHT_MAX - since);
                }
                if in_flight || !wait.is_zero() {
                    self.metrics.http_refused("round_rate");
                    return Err(RoundRefused::TooSoon {
                        retry_after: wait.max(Duration::from_secs(1)),
                        previous: *previous,
                        in_flight,
                    });
                }
            }
            // Claimed before the round starts, so two requests at once cannot both pass.
            last.insert(check.to_string(), (now, u64::MAX));
        }
        let sites: HashMap<String, String> = self
            .registry
            .fleet()
            .probes
            .iter()
            .filter(|(_, v)| check_config.selects(&v.labels))
            .map(|(n, v)| (n.clone(), v.labels.get("site").cloned().unwrap_or_default()))
            .collect();
        let eligible = |name: &str| sites.contains_key(name);
        let (id, asked) = self.start_round(vec![check.to_string()], eligible);
        self.last_round.lock().insert(check.to_string(), (now, id));
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
                    let site = sites.get(&n).cloned().unwrap_or_default();
                    (n, site)
                })
                .collect(),
            results: std::collections::BTreeMap::new(),
        };
        {
            let mut rounds = self.rounds.lock();
            rounds.insert(id, round.clone());
            while rounds.len() > config.rounds.keep {
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

    /// Counts a report's answer to the round it names: only from a probe the round asked (a
    /// probe that was not asked, or guessed an id, is ignored). Ids are unique across restarts
    /// (see [`Hub::new`]), so an answer spooled for an earlier coordinator's round cannot count
    /// for a new one: an answer carrying this id was produced after the probe was asked.
    pub(super) fn record_round(&self, probe: &str, report: &Arrived) {
        let Some(id) = report.round else { return };
        let mut rounds = self.rounds.lock();
        let Some(round) = rounds.get_mut(&id) else {
            return;
        };
        if !round.asked.contains_key(probe) {
            tracing::debug!(
                probe,
                round = id,
                "an answer to a round that did not ask this probe: not counted"
            );
            return;
        }
        let answered = self.round_answers.lock().get(&id).cloned();
        if let Some(answered) = answered {
            answered.fetch_add(1, Ordering::Relaxed);
        }
        for entry in report.results.iter().filter(|e| e.check == round.check) {
            // Summarised with the report's round, which is this one.
            round
                .results
                .insert(probe.to_string(), entry.latest.clone());
        }
    }

    /// Names of probes with a live connection.
    pub fn connected(&self) -> Vec<String> {
        self.live.lock().keys().cloned().collect()
    }

    pub(super) fn plan_for(&self, labels: &Labels) -> Plan {
        // Read in place (no await while it is held): a copy of the whole configuration per
        // connection was a reconnect storm's cost for nothing.
        let config = self.config.borrow();
        // The fleet that would come back after a restart: every enrolled probe (or every
        // connected one, when more are connected, as with shared-CA probes).
        let enrolled = self.registry.auth().known.len();
        let connected = self.live.lock().len();
        let fleet = enrolled.max(connected);
        Plan {
            generation: self.generation.load(Ordering::SeqCst),
            checks: config.plan_for(labels),
            reconnect_spread_ms: crate::quic::capacity::spread(
                fleet,
                self.handshakes.capacity(crate::quic::capacity::cores()),
                config.limits.reconnects_per_second,
            )
            .as_millis() as u64,
        }
    }
}

/// `ProbeNow` requests a round keeps outstanding: asked, not answered yet. Asked all at once,
/// a fleet of 100,000 answers all at once: the answers pile up in the coordinator's socket
/// far beyond what it commits per second, overflow it, and come back only after QUIC's
/// retransmission timeouts, which stretched a round to 50 s. In a window, the answers arrive at
/// the rate they are committed. A round over fewer probes is asked at once, as before.
///
/// This is the window a round starts with; from then on it follows what is measured in the
/// round ([`round_window`]).
pub const ROUND_WINDOW: usize = 2048;

/// Bounds of the measured round window: at least enough to keep every core's sessions busy
/// at any pace, at most what the coordinator's socket buffers (16 MiB each) hold of answers
/// arriving at once (a round answer is 1 to 3 KiB on the wire: 16,384 × 1 KiB = 16 MiB).
pub const ROUND_WINDOW_MIN: usize = 512;
/// See [`ROUND_WINDOW_MIN`].
pub const ROUND_WINDOW_MAX: usize = 16_384;

/// The least time a window covers: a quarter of a second of answers.
pub const ROUND_WINDOW_SPAN_MIN: Duration = Duration::from_millis(250);

/// The round window for answers committed at `per_second`, each taking at least `latency`
/// (request, check, report, commit, acknowledgement; the fastest answer of the round so far):
/// twice what is in flight at that rate (Little's law: rate × latency), so that the window is
/// never what holds the round back, and at least [`ROUND_WINDOW_SPAN_MIN`] of answers. The
/// fastest answer, not the average, so that answers queueing at a busy coordinator do not
/// widen the window that made them queue.
///
/// Why not a fixed quarter second of answers, as before: when the window is what bounds the
/// round, the rate measured is window / latency, so a quarter second of it is window × 0.25 /
/// latency, which shrinks the window at every step once answers take longer than 250 ms
/// (arithmetic, with the last case of this function's test; the shrinking itself was not
/// observed). A 20,000-probe round took 3.26 s against the baseline's 1.37 s with the
/// coordinator's core a fifth idle under the old rule, and 3.07 s against 1.34 s with the core
/// busy under this one: the round is now bound by the coordinator's CPU, not the window.
pub fn round_window(per_second: f64, latency: Option<Duration>) -> usize {
    if !per_second.is_finite() || per_second <= 0.0 {
        return ROUND_WINDOW;
    }
    let span = latency
        .map_or(ROUND_WINDOW_SPAN_MIN, |l| l * 2)
        .max(ROUND_WINDOW_SPAN_MIN);
    ((per_second * span.as_secs_f64()) as usize).clamp(ROUND_WINDOW_MIN, ROUND_WINDOW_MAX)
}

/// When no answer came for this long while the window is full (probes that do not answer), the
/// next window's worth is asked anyway.
pub const ROUND_STALL: Duration = Duration::from_secs(2);

/// Sends a round's requests to `targets`, keeping at most a window unanswered (see [`pace`]).
pub(super) async fn pace_round(
    round: u64,
    frame: &Frame,
    targets: Vec<(String, Arc<Asks>)>,
    answered: &AtomicUsize,
) {
    let sent = pace(targets, answered, |(_, asks)| {
        asks.offer(frame);
    })
    .await;
    tracing::debug!(round, sent, "round asked");
}

/// Asks each of `targets` in turn (`ask`), keeping at most a window unanswered, where
/// `answered` counts the answers that came back: [`ROUND_WINDOW`] at first, then
/// [`round_window`] of the answer rate measured every 200 ms of the round and of the fastest
/// answer: answers come back roughly in the order asked, so when the `n`-th answer arrives,
/// the time since the `n`-th request is a sample of the time an answer takes. Returns how many
/// were asked.
///
/// Public so that the benchmark's raw-QUIC baseline paces its rounds by the same rule: the
/// round's ratio then compares the work per answer, not a window against a flood.
pub async fn pace<T>(
    targets: impl IntoIterator<Item = T>,
    answered: &AtomicUsize,
    mut ask: impl FnMut(T),
) -> usize {
    let targets = targets.into_iter();
    let (mut sent, mut credit) = (0usize, 0usize);
    let mut last = (0usize, tokio::time::Instant::now());
    let mut window = ROUND_WINDOW;
    let mut rate_mark = (0usize, tokio::time::Instant::now());
    // When each request went out (8 bytes per probe asked), and the fastest answer seen.
    let mut sent_at: Vec<tokio::time::Instant> = Vec::with_capacity(targets.size_hint().0);
    let (mut fastest, mut sampled): (Option<Duration>, usize) = (None, 0);
    for target in targets {
        loop {
            let a = answered.load(Ordering::Relaxed);
            let now = tokio::time::Instant::now();
            if a > sampled {
                sampled = a;
                if let Some(at) = sent_at.get(a.min(sent).saturating_sub(1)) {
                    let took = now.duration_since(*at);
                    fastest = Some(fastest.map_or(took, |f| f.min(took)));
                }
            }
            let span = now.duration_since(rate_mark.1);
            if span >= Duration::from_millis(200) {
                let rate = a.saturating_sub(rate_mark.0) as f64 / span.as_secs_f64();
                if a > rate_mark.0 {
                    window = round_window(rate, fastest);
                }
                rate_mark = (a, now);
            }
            if sent.saturating_sub(a + credit) < window {
                break;
            }
            if a != last.0 {
                last = (a, now);
            } else if now.duration_since(last.1) >= ROUND_STALL {
                credit += window;
                last.1 = now;
                continue;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        ask(target);
        sent_at.push(tokio::time::Instant::now());
        sent += 1;
    }
    tracing::debug!(sent, window, ?fastest, "paced");
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_round_window_covers_twice_the_answers_in_flight_within_its_bounds() {
        assert_eq!(
            round_window(0.0, None),
            ROUND_WINDOW,
            "nothing measured yet"
        );
        assert_eq!(round_window(f64::NAN, None), ROUND_WINDOW);
        let ms = Duration::from_millis;
        assert_eq!(
            round_window(1_000.0, None),
            ROUND_WINDOW_MIN,
            "a quarter second of 1,000 a second is under the floor"
        );
        assert_eq!(
            round_window(12_000.0, None),
            3_000,
            "no latency yet: 250 ms"
        );
        assert_eq!(
            round_window(12_000.0, Some(ms(50))),
            3_000,
            "fast answers: still at least a quarter second"
        );
        assert_eq!(
            round_window(12_000.0, Some(ms(200))),
            4_800,
            "answers taking 200 ms: twice the 2,400 in flight"
        );
        assert_eq!(round_window(1e9, Some(ms(200))), ROUND_WINDOW_MAX);
        // The feedback that shrank the quarter-second window: answers taking 400 ms at a
        // window-bound rate of 2,048 / 0.4 s = 5,120 a second keep a window of 4,096, twice
        // the 2,048 in flight, where a quarter second of them was 1,280.
        assert_eq!(round_window(5_120.0, Some(ms(400))), 4_096);
    }

    fn test_hub(dir: &std::path::Path) -> Hub {
        let config = Config::from_toml(
            "[[check]]\nname = \"gateway\"\nhost = \"gw.example.com\"\n",
            "test.toml",
            dir,
        )
        .expect("config");
        let writer = crate::store::Writer::start(dir).expect("writer");
        let registry = Arc::new(Registry::new(
            crate::analysis::fleet::Fleet::default(),
            crate::registry::AuthState::default(),
            writer,
        ));
        let ca = Arc::new(CoordinatorCa::load_or_create(dir, &[]).expect("ca"));
        let (_tx, rx) = watch::channel(Arc::new(config));
        Hub::new(
            rx,
            Arc::new(AtomicU64::new(1)),
            registry,
            ca,
            Metrics::new(),
        )
    }

    fn answer(round: u64) -> Arrived {
        use cemwatch_shared::model::{DnsResult, DnsSource, Durations, TcpResult, TcpState};
        let result = cemwatch_shared::CheckResult {
            target: cemwatch_shared::Target {
                host: "gw.example.com".into(),
                port: 8443,
            },
            expectations: cemwatch_shared::Expectations::default(),
            started_at: "2026-12-02T00:00:00Z".into(),
            verdict: cemwatch_shared::Severity::Ok,
            findings: vec![],
            dns: DnsResult {
                host: "gw.example.com".into(),
                source: DnsSource::Override,
                addresses: vec!["127.0.0.1:8443".into()],
                duration_ms: 0.1,
                error: None,
            },
            tcp: TcpResult {
                state: TcpState::Open,
                address: Some("127.0.0.1:8443".into()),
                duration_ms: 0.1,
                error: None,
            },
            tls: None,
            certificate: None,
            legacy_ports: vec![],
            durations: Durations::default(),
            addresses: vec![],
            skipped_addresses: vec![],
        };
        Arrived::of_report(&cemwatch_shared::wire::Report {
            seq: 1,
            round: Some(round),
            results: vec![cemwatch_shared::wire::CheckReport {
                check: "gateway".into(),
                produced_at_ms: 1,
                result,
            }],
        })
    }

    #[tokio::test]
    async fn only_asked_probes_answer_a_round_and_ids_do_not_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = test_hub(dir.path());
        let first_id = hub.next_round.load(Ordering::SeqCst);
        assert!(
            first_id as i64 > crate::store::now_ms() - 60_000,
            "ids start at the start time, not at 1: {first_id}"
        );
        let mut asked = std::collections::BTreeMap::new();
        asked.insert("asked".to_string(), String::new());
        hub.rounds.lock().insert(
            first_id,
            Round {
                id: first_id,
                check: "gateway".into(),
                started_ms: 0,
                expect_thumbprint: None,
                expect_port: None,
                asked,
                results: Default::default(),
            },
        );
        hub.record_round("stranger", &answer(first_id));
        hub.record_round("asked", &answer(first_id));
        hub.record_round("asked", &answer(first_id + 1));
        let round = hub.round(first_id).expect("round");
        assert_eq!(
            round.results.keys().collect::<Vec<_>>(),
            vec!["asked"],
            "the unasked probe's answer is not counted"
        );
        // A second coordinator started later numbers its rounds after the first one's.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let later = test_hub(tempfile::tempdir().expect("tempdir").path());
        assert!(later.next_round.load(Ordering::SeqCst) > first_id);
    }

    fn received(rxs: &mut [crate::quic::asks::AsksReceiver]) -> usize {
        rxs.iter_mut().filter_map(|rx| rx.try_next()).count()
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_round_is_asked_as_answers_come_back() {
        let n = ROUND_WINDOW * 3;
        let (mut targets, mut rxs) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (tx, rx) = Asks::new();
            targets.push((format!("p{i}"), tx));
            rxs.push(rx);
        }
        let answered = Arc::new(AtomicUsize::new(0));
        let pacer = {
            let answered = answered.clone();
            tokio::spawn(async move {
                let frame: Frame = Arc::from(&b"ProbeNow"[..]);
                pace_round(7, &frame, targets, &answered).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            received(&mut rxs),
            ROUND_WINDOW,
            "one window asked at first"
        );
        // 100 answers make room for 100 more.
        answered.fetch_add(100, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(received(&mut rxs), 100);
        // After 200 ms the window follows the answers measured: 100 in 0.2 s is 500 a second,
        // a window of ROUND_WINDOW_MIN. 2,000 more answers leave 48 outstanding: the pacer asks
        // until 512 are.
        tokio::time::sleep(Duration::from_millis(160)).await;
        answered.fetch_add(2000, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(received(&mut rxs), ROUND_WINDOW_MIN - 48);
        // Probes that never answer do not hold the round: after ROUND_STALL without an answer,
        // another window's worth is asked, until everyone is.
        tokio::time::sleep(ROUND_STALL * 6).await;
        assert_eq!(
            received(&mut rxs),
            n - ROUND_WINDOW - 100 - (ROUND_WINDOW_MIN - 48)
        );
        pacer.await.expect("the pacer ends once everyone is asked");
    }
}
