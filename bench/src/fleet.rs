//! The fleet benchmark: the simulator against a raw-QUIC baseline, then against a real
//! `cemwatch serve` process, in one run, with the same probes and the same load.
//!
//! Scenarios: (a) connect N probes and hold them; (b) steady reporting at an interval;
//! (c) saturating ingest; (d) a `ProbeNow` round across all N; (e) SIGKILL of the
//! coordinator, restart, and the reconnect storm until all N are back. The baseline runs every
//! scenario: (d) on SIGUSR1, paced by the coordinator's rule (`quic::pace`), and (e) killed and
//! started again on its port, with the same session resumption. Figures of the server come
//! from `/proc` (CPU = utime + stime of all its threads; RSS); latencies and counts come from
//! the probes (report sent → `Ack` received, and the coordinator acknowledges only after the
//! commit).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use cemwatch_tests::process::{free_udp_port, http_get, http_post_json, Proc};

use crate::procstat::{self, Sample};
use crate::provision;
use crate::report::{fmt_count, fmt_ms, Row};
use crate::sim::{Mode, Sim};

/// The check every simulated probe reports.
pub const CHECK: &str = "gateway";

/// How the fleet benchmark runs.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Simulated probes.
    pub probes: usize,
    /// Client endpoints (UDP sockets) the probes share; 0 picks one per 1,000 probes.
    pub endpoints: usize,
    /// How long (a) holds the connected fleet before measuring memory.
    pub hold: Duration,
    /// How long (b) reports steadily.
    pub steady: Duration,
    /// Time between one probe's reports in (b).
    pub interval: Duration,
    /// How long (c) saturates ingest (after a warm-up).
    pub saturate: Duration,
    /// Reports in flight per probe in (c).
    pub window: usize,
    /// Probes that take part in (c).
    pub saturate_probes: usize,
    /// Most time for connecting N, a round, or a reconnect storm.
    pub deadline: Duration,
    /// Run the raw baseline first.
    pub baseline: bool,
    /// Probes keep TLS session tickets for their reconnects.
    pub resumption: bool,
    /// Pin servers to CPUs 0 to `server_cores - 1` and the load generator to the others.
    pub pin: bool,
    /// Cores the servers run on.
    pub server_cores: usize,
    /// UDP sockets both servers bind (0: one per core).
    pub quic_sockets: usize,
    /// Where `cemwatch` is.
    pub coordinator_bin: PathBuf,
    /// The encoded results every report carries.
    pub results: Vec<u8>,
    /// Which scenarios run (letters `a` to `e`; `a` always runs, it connects the fleet).
    pub scenarios: String,
}

impl FleetOptions {
    fn runs(&self, scenario: char) -> bool {
        scenario == 'a' || self.scenarios.contains(scenario)
    }
}

/// A server process under test.
struct Server {
    proc: Proc,
    quic: SocketAddr,
    http: Option<SocketAddr>,
    empty: Sample,
}

impl Server {
    fn sample(&self) -> Result<Sample> {
        procstat::sample_pid(self.proc.pid())
    }
}

fn pinned(opts: &FleetOptions, program: &Path) -> Command {
    if opts.pin {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &format!("0-{}", opts.server_cores.max(1) - 1)])
            .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn start_baseline(opts: &FleetOptions, work: &Path, port: u16) -> Result<Server> {
    let exe = std::env::current_exe()?;
    let mut cmd = pinned(opts, &exe);
    cmd.arg("baseline-server")
        .arg("--data-dir")
        .arg(work.join("data"))
        .arg("--keys-dir")
        .arg(work.join("baseline"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--fleet", &opts.probes.to_string()])
        .args(["--sockets", &opts.quic_sockets.to_string()])
        .args(["--check", CHECK]);
    let mut proc = Proc::spawn("baseline", cmd)?;
    let quic = proc.listening("quic")?;
    std::thread::sleep(Duration::from_millis(300));
    let empty = procstat::sample_pid(proc.pid())?;
    Ok(Server {
        proc,
        quic,
        http: None,
        empty,
    })
}

/// Writes the coordinator's configuration. With `limits`, the connection and report limits of a
/// `[limits]` table (coordinators that have one) are opened wide for the simulated fleet, which
/// comes from one address at rates no real probe has.
fn write_config(
    dir: &Path,
    quic_port: u16,
    n: usize,
    limits: bool,
    sockets: usize,
) -> Result<PathBuf> {
    let max = (2 * n).max(200_000);
    let mut text = format!(
        "[server]\nquic_listen = \"127.0.0.1:{quic_port}\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nstale_after = \"10m\"\nquic_sockets = {sockets}\n"
    );
    if limits {
        text.push_str(&format!(
            "\n[limits]\nmax_connections = {max}\nnew_connections_per_second = 1000000.0\nnew_connections_burst = 1000000\naddress_validation = \"never\"\nreports_per_second = 1000000.0\nreport_burst = 1000000\n"
        ));
    } else {
        text.push_str(&format!("max_connections = {max}\n"));
    }
    text.push_str(&format!(
        "\n[[check]]\nname = \"{CHECK}\"\nhost = \"gateway.example.com\"\nport = 8443\nlegacy_ports = []\ninterval = \"1h\"\n"
    ));
    let path = dir.join("cemwatch.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn start_coordinator(opts: &FleetOptions, config: &Path) -> Result<Server> {
    let mut cmd = pinned(opts, &opts.coordinator_bin);
    cmd.args(["serve", "--config"]).arg(config);
    let mut proc = Proc::spawn("coordinator", cmd)?;
    let quic = proc.listening("quic")?;
    let http = proc.listening("http")?;
    let empty = procstat::sample_pid(proc.pid())?;
    Ok(Server {
        proc,
        quic,
        http: Some(http),
        empty,
    })
}

/// Starts a coordinator on `work`, with a `[limits]` table when it knows one.
fn configure_and_start(
    opts: &FleetOptions,
    work: &Path,
    quic_port: u16,
) -> Result<(PathBuf, Server)> {
    let config = write_config(work, quic_port, opts.probes, true, opts.quic_sockets)?;
    match start_coordinator(opts, &config) {
        Ok(server) => Ok((config, server)),
        Err(e) if format!("{e:#}").contains("limits") => {
            let config = write_config(work, quic_port, opts.probes, false, opts.quic_sockets)?;
            Ok((config.clone(), start_coordinator(opts, &config)?))
        }
        Err(e) => Err(e),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("blocking task: {e}"))?
}

/// What one measured window saw.
struct Window {
    server: (Sample, Sample),
    loadgen: (Sample, Sample),
    acked: u64,
    seconds: f64,
}

impl Window {
    fn rate(&self) -> f64 {
        self.acked as f64 / self.seconds.max(1e-9)
    }
    fn cpu_per_1k(&self) -> Option<f64> {
        (self.acked > 0)
            .then(|| self.server.1.cpu_since(&self.server.0) / (self.acked as f64 / 1000.0))
    }
}

async fn measure(sim: &Sim, server: &Server, seconds: Duration) -> Result<Window> {
    sim.latency.reset();
    let a0 = sim.acked();
    let s0 = server.sample()?;
    let l0 = procstat::sample("self")?;
    tokio::time::sleep(seconds).await;
    let s1 = server.sample()?;
    let l1 = procstat::sample("self")?;
    let a1 = sim.acked();
    Ok(Window {
        seconds: s1.at.duration_since(s0.at).as_secs_f64(),
        server: (s0, s1),
        loadgen: (l0, l1),
        acked: a1 - a0,
    })
}

fn per_probe_kib(server: &Server, now: &Sample, probes: usize) -> Option<f64> {
    (probes > 0).then(|| now.rss_kib.saturating_sub(server.empty.rss_kib) as f64 / probes as f64)
}

fn latency_row(sim: &Sim, row: &mut Row) {
    row.p50_ms = sim.latency.quantile(0.50).map(|d| d.as_secs_f64() * 1000.0);
    row.p99_ms = sim.latency.quantile(0.99).map(|d| d.as_secs_f64() * 1000.0);
}

/// (a): connect every probe, hold, measure memory.
async fn connect_and_hold(
    opts: &FleetOptions,
    sim: &Arc<Sim>,
    server: &Server,
    who: &'static str,
) -> Result<(tokio::task::JoinSet<()>, Row)> {
    let before = server.sample()?;
    let drops0 = procstat::udp_rcvbuf_errors();
    sim.pacing.store(true, Ordering::Relaxed);
    let tasks = sim.start(server.quic);
    let took = sim.wait_connected(sim.len(), opts.deadline).await?;
    sim.pacing.store(false, Ordering::Relaxed);
    let after = server.sample()?;
    let n = sim.len();
    println!(
        "  {who}: {} probes connected in {:.1} s ({} handshakes/s; server {:.2} ms CPU per connection; {} refused, {} timed out, {} UDP receive-buffer drops)",
        fmt_count(n as u64),
        took.as_secs_f64(),
        fmt_count((n as f64 / took.as_secs_f64().max(1e-9)) as u64),
        after.cpu_since(&before) * 1000.0 / n.max(1) as f64,
        sim.counters.refused.load(Ordering::Relaxed),
        sim.counters.timeouts.load(Ordering::Relaxed),
        procstat::udp_rcvbuf_errors().saturating_sub(drops0),
    );
    let w = measure(sim, server, opts.hold).await?;
    let now = w.server.1;
    let row = Row {
        server: who,
        scenario: "a: connect N and hold".into(),
        probes: sim.connected(),
        rss_mib: now.rss_mib(),
        rss_per_probe_kib: per_probe_kib(server, &now, sim.connected()),
        server_cores: Some(w.server.1.cores_since(&w.server.0)),
        loadgen_cores: Some(w.loadgen.1.cores_since(&w.loadgen.0)),
        note: format!(
            "connect {:.1} s; idle CPU {:.1}% of a core",
            took.as_secs_f64(),
            w.server.1.cores_since(&w.server.0) * 100.0
        ),
        ..Row::default()
    };
    row.print();
    Ok((tasks, row))
}

/// (b) and (c): reports under a mode, measured over `seconds` after a warm-up.
async fn ingest(
    sim: &Arc<Sim>,
    server: &Server,
    who: &'static str,
    scenario: String,
    mode: Mode,
    seconds: Duration,
    scrape_midway: bool,
) -> Result<Row> {
    sim.mode.send_replace(mode);
    let warmup = (seconds / 5).clamp(Duration::from_millis(500), Duration::from_secs(3));
    tokio::time::sleep(warmup).await;
    let scrape = if scrape_midway {
        server.http.map(|http| {
            let wait = seconds / 2;
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let started = Instant::now();
                let got = blocking(move || http_get(http, "/metrics")).await;
                got.map(|(status, body)| (status, body.len(), started.elapsed()))
            })
        })
    } else {
        None
    };
    let drops0 = procstat::udp_rcvbuf_errors();
    let w = measure(sim, server, seconds).await?;
    let mut row = Row {
        server: who,
        scenario,
        probes: sim.connected(),
        reports_per_s: Some(w.rate()),
        cpu_per_1k: w.cpu_per_1k(),
        rss_mib: w.server.1.rss_mib(),
        rss_per_probe_kib: per_probe_kib(server, &w.server.1, sim.connected()),
        server_cores: Some(w.server.1.cores_since(&w.server.0)),
        loadgen_cores: Some(w.loadgen.1.cores_since(&w.loadgen.0)),
        ..Row::default()
    };
    latency_row(sim, &mut row);
    let drops = procstat::udp_rcvbuf_errors().saturating_sub(drops0);
    row.note = format!(
        "{} reports acknowledged in {:.1} s; {drops} UDP receive-buffer drops",
        fmt_count(w.acked),
        w.seconds
    );
    if let Some(scrape) = scrape {
        match scrape.await.map_err(|e| anyhow!("{e}"))? {
            Ok((200, bytes, took)) => row.note.push_str(&format!(
                "; a /metrics scrape midway took {} ({} bytes)",
                fmt_ms(took.as_secs_f64() * 1000.0),
                fmt_count(bytes as u64)
            )),
            Ok((status, _, _)) => row.note.push_str(&format!("; /metrics answered {status}")),
            Err(e) => row.note.push_str(&format!("; /metrics failed: {e:#}")),
        }
    }
    sim.mode.send_replace(Mode::Idle);
    if !sim.drain(Duration::from_secs(60)).await {
        row.note.push_str("; NOT DRAINED within 60 s");
    }
    row.print();
    Ok(row)
}

/// (d): a `ProbeNow` round across the fleet, timed until 95% and 100% are committed: asked
/// with `POST /api/v1/rounds` of the coordinator, or with SIGUSR1 of the baseline (which asks
/// every connection at once).
async fn round(
    opts: &FleetOptions,
    sim: &Arc<Sim>,
    server: &Server,
    who: &'static str,
) -> Result<Row> {
    let s0 = server.sample()?;
    let l0 = procstat::sample("self")?;
    sim.latency.reset();
    let started = Instant::now();
    if let Ok(mut r) = sim.round.lock() {
        *r = crate::sim::RoundClock {
            started: Some(started),
            ..Default::default()
        };
    }
    let (id, eligible) = match server.http {
        Some(http) => {
            let body = format!("{{\"check\": \"{CHECK}\"}}");
            let (status, answer) =
                blocking(move || http_post_json(http, "/api/v1/rounds", &body)).await?;
            if status != 201 {
                bail!("POST /api/v1/rounds answered {status}: {answer}");
            }
            let json: serde_json::Value = serde_json::from_str(&answer)?;
            let id = json["round"].as_u64().context("no round id")?;
            let eligible = json["eligible"].as_u64().context("no eligible count")? as usize;
            (id, eligible)
        }
        None => {
            let eligible = sim.connected();
            let ok = Command::new("kill")
                .args(["-USR1", &server.proc.pid().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                bail!("cannot signal the baseline for a round");
            }
            (1, eligible)
        }
    };
    let answered_post = started.elapsed();
    let deadline = started + opts.deadline;
    loop {
        let done = sim.round.lock().map(|r| r.acks.len()).unwrap_or(0);
        if done >= eligible || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let s1 = server.sample()?;
    let l1 = procstat::sample("self")?;
    let mut acks = sim.round.lock().map(|r| r.acks.clone()).unwrap_or_default();
    acks.sort();
    let at = |q: f64| -> Option<Duration> {
        let k = ((q * eligible as f64).ceil() as usize).max(1);
        acks.get(k - 1).copied()
    };
    let (t95, t100) = (at(0.95), at(1.0));
    let mut row = Row {
        server: who,
        scenario: "d: ProbeNow round".into(),
        probes: eligible,
        reports_per_s: t100.map(|t| eligible as f64 / t.as_secs_f64().max(1e-9)),
        cpu_per_1k: (!acks.is_empty()).then(|| s1.cpu_since(&s0) / (acks.len() as f64 / 1000.0)),
        rss_mib: s1.rss_mib(),
        rss_per_probe_kib: per_probe_kib(server, &s1, sim.connected()),
        server_cores: Some(s1.cores_since(&s0)),
        loadgen_cores: Some(l1.cores_since(&l0)),
        round_95_s: t95.map(|t| t.as_secs_f64()),
        round_100_s: t100.map(|t| t.as_secs_f64()),
        peak_rss_mib: Some(s1.hwm_kib as f64 / 1024.0),
        ..Row::default()
    };
    latency_row(sim, &mut row);
    row.note = match server.http {
        Some(http) => {
            let check = blocking(move || http_get(http, &format!("/api/v1/rounds/{id}"))).await?;
            let reported = serde_json::from_str::<serde_json::Value>(&check.1)
                .ok()
                .and_then(|v| v["reported"].as_u64())
                .unwrap_or(0);
            format!(
                "round {id}: {} eligible, {} committed and acknowledged, the API counts {} reported; POST answered after {}",
                fmt_count(eligible as u64),
                fmt_count(acks.len() as u64),
                fmt_count(reported),
                fmt_ms(answered_post.as_secs_f64() * 1000.0),
            )
        }
        None => format!(
            "round {id}: {} connections asked (paced as the coordinator paces), {} acknowledged",
            fmt_count(eligible as u64),
            fmt_count(acks.len() as u64),
        ),
    };
    if t100.is_none() {
        row.note
            .push_str(&format!("; NOT COMPLETE within {:?}", opts.deadline));
    }
    row.print();
    Ok(row)
}

/// (e): SIGKILL the server, start it again (`restart`, on the same port), time the reconnect
/// storm.
async fn storm(
    opts: &FleetOptions,
    sim: &Arc<Sim>,
    server: Server,
    who: &'static str,
    restart: impl FnOnce() -> Result<Server> + Send + 'static,
) -> Result<(Server, Row)> {
    // The whole fleet, not the probes connected at the kill: a probe lost before it (in an
    // overloaded run) comes back into this storm too, and was counted beyond them ("99,891 of
    // 99,890 back").
    let n = sim.len();
    let c0 = (
        sim.counters.refused.load(Ordering::Relaxed),
        sim.counters.timeouts.load(Ordering::Relaxed),
        sim.counters.failed.load(Ordering::Relaxed),
    );
    let mut old = server;
    // Sessions are timed from the kill: a probe can be back before the benchmark has seen the
    // new process listen (its packet met the new process, it drew an early moment of its
    // spread), and timed from then it was never counted back (8 of 20,000 in some runs of
    // the baseline, whose start the benchmark sees about 300 ms late).
    sim.storm_begins();
    let killed = Instant::now();
    if let Ok(mut s) = sim.storm_started.lock() {
        *s = Some(killed);
    }
    old.proc.kill9();
    let new = blocking(restart).await?;
    let restarted = killed.elapsed();
    let l0 = procstat::sample("self")?;
    let drops0 = procstat::udp_rcvbuf_errors();
    let port = new.quic.port();
    let (server_drops0, other_drops0) = procstat::udp_drops(port);
    let t0 = Instant::now();
    // Every probe's next packet reaches the new process: a report falls due for all of them.
    sim.mode.send_replace(Mode::Nudge(1));
    let deadline = t0 + opts.deadline;
    loop {
        let back = sim.reconnects.lock().map(|r| r.len()).unwrap_or(0);
        if back >= n || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sim.mode.send_replace(Mode::Idle);
    if let Ok(mut s) = sim.storm_started.lock() {
        *s = None;
    }
    let s1 = new.sample()?;
    let l1 = procstat::sample("self")?;
    // The storm's figures are from the moment the new process was seen listening, as
    // before; a probe back earlier counts as back at once.
    let mut times: Vec<Duration> = sim
        .reconnects
        .lock()
        .map(|r| r.iter().map(|t| t.saturating_sub(restarted)).collect())
        .unwrap_or_default();
    times.sort();
    let at = |q: f64| -> Option<Duration> {
        let k = ((q * n as f64).ceil() as usize).max(1);
        times.get(k - 1).copied()
    };
    let (server_drops1, other_drops1) = procstat::udp_drops(port);
    let reconnect_ms = s1.cpu_since(&new.empty) * 1000.0 / times.len().max(1) as f64;
    let refused = sim.counters.refused.load(Ordering::Relaxed) - c0.0;
    let timeouts = sim.counters.timeouts.load(Ordering::Relaxed) - c0.1;
    let failed = sim.counters.failed.load(Ordering::Relaxed) - c0.2;
    let mut row = Row {
        server: who,
        scenario: "e: kill -9, restart, reconnect storm".into(),
        probes: sim.connected(),
        cpu_per_1k: None,
        rss_mib: s1.rss_mib(),
        rss_per_probe_kib: per_probe_kib(&new, &s1, sim.connected()),
        server_cores: Some(s1.cores_since(&new.empty)),
        loadgen_cores: Some(l1.cores_since(&l0)),
        storm_50_s: at(0.5).map(|t| t.as_secs_f64()),
        storm_95_s: at(0.95).map(|t| t.as_secs_f64()),
        storm_100_s: at(1.0).map(|t| t.as_secs_f64()),
        storm_back: Some(times.len() as u64),
        cpu_per_reconnect_ms: (!times.is_empty()).then_some(reconnect_ms),
        peak_rss_mib: Some(s1.hwm_kib as f64 / 1024.0),
        ..Row::default()
    };
    row.note = format!(
        "{} of {} back; restart took {} (kill to listening); the plans spread the return over {:.1} s; attempts refused {refused}, timed out {timeouts}, failed {failed}; {who} {:.2} ms CPU per reconnect; {} UDP receive-buffer drops ({} at the {who}'s sockets, {} elsewhere: the load generator's sockets)",
        fmt_count(times.len() as u64),
        fmt_count(n as u64),
        fmt_ms(restarted.as_secs_f64() * 1000.0),
        sim.plan_spread_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        s1.cpu_since(&new.empty) * 1000.0 / times.len().max(1) as f64,
        procstat::udp_rcvbuf_errors().saturating_sub(drops0),
        server_drops1.saturating_sub(server_drops0),
        other_drops1.saturating_sub(other_drops0),
    );
    if let Some(http) = new.http {
        if let Ok((200, metrics)) = blocking(move || http_get(http, "/metrics")).await {
            let reasons: Vec<String> = metrics
                .lines()
                .filter_map(|l| l.strip_prefix("cemwatch_connections_refused_total{reason=\""))
                .filter_map(|l| l.split_once("\"} "))
                .filter(|(_, v)| v.trim() != "0")
                .map(|(r, v)| format!("{r} {}", v.trim()))
                .collect();
            row.note.push_str(&format!(
                "; the coordinator's refusals by reason: {}",
                if reasons.is_empty() {
                    "none".to_string()
                } else {
                    reasons.join(", ")
                }
            ));
        }
    }
    if times.len() < n {
        row.note
            .push_str(&format!("; NOT ALL BACK within {:?}", opts.deadline));
        // Where the probes that are not back are.
        let counts = sim.phase_counts();
        let wheres: Vec<String> = crate::sim::Phase::NOT_BACK
            .iter()
            .filter(|(phase, _)| counts[*phase as usize] > 0)
            .map(|(phase, name)| format!("{} {name}", counts[*phase as usize]))
            .collect();
        if !wheres.is_empty() {
            row.note
                .push_str(&format!(" (the rest: {})", wheres.join(", ")));
        }
    }
    row.print();
    Ok((new, row))
}

async fn stop(sim: &Arc<Sim>, tasks: tokio::task::JoinSet<()>) {
    sim.stop.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), tasks.join_all()).await;
    // Let the close frames leave.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// (b): steady reporting against `server`, one report per probe every `--interval`: the same
/// offered load for both servers, to be chosen below what both can take (at 100,000 probes
/// every 10 s the coordinator cannot), so that CPU per report compares unsaturated; in (c) the
/// slower server is the one saturated. A `/metrics` scrape midway, of the coordinator.
async fn steady(
    opts: &FleetOptions,
    sim: &Arc<Sim>,
    server: &Server,
    name: &'static str,
) -> Result<Row> {
    ingest(
        sim,
        server,
        name,
        format!("b: steady, one report per probe every {:?}", opts.interval),
        Mode::Steady {
            interval: opts.interval,
        },
        opts.steady,
        server.http.is_some(),
    )
    .await
}

/// (c): saturating ingest against `server`.
async fn saturate(
    opts: &FleetOptions,
    sim: &Arc<Sim>,
    server: &Server,
    name: &'static str,
) -> Result<Row> {
    ingest(
        sim,
        server,
        name,
        format!(
            "c: saturating ingest ({} probes x {} in flight)",
            fmt_count(opts.saturate_probes.min(sim.len()) as u64),
            opts.window
        ),
        Mode::Saturate {
            window: opts.window,
            probes: opts.saturate_probes,
        },
        opts.saturate,
        false,
    )
    .await
}

/// Runs the fleet benchmark in `work` (a fresh directory); returns every row.
pub async fn run(opts: &FleetOptions, work: &Path) -> Result<Vec<Row>> {
    let n = opts.probes;
    let data_dir = work.join("data");
    std::fs::create_dir_all(&data_dir)?;
    let threads = if opts.pin { 1 } else { 2 };
    let fleet = {
        let dd = data_dir.clone();
        blocking(move || provision::provision(&dd, n, threads)).await?
    };
    let configs = provision::client_configs(&fleet, opts.resumption)?;
    println!(
        "  provisioned {} probes (certificates issued by the coordinator CA, rows in its store) in {:.1} s",
        fmt_count(n as u64),
        fleet.took.as_secs_f64()
    );
    let endpoints = if opts.endpoints == 0 {
        n.div_ceil(1_000).clamp(1, 128)
    } else {
        opts.endpoints
    };
    let sim = Sim::new(
        configs,
        fleet.names.clone(),
        fleet.labels.clone(),
        opts.results.clone(),
        endpoints,
    )?;
    println!(
        "  {endpoints} client endpoints (UDP sockets) carry the {} connections",
        fmt_count(n as u64)
    );
    let mut rows = Vec::new();

    if opts.baseline {
        println!("\nbaseline: a raw quinn server that reads frames and acknowledges them");
        let port = free_udp_port()?;
        let start = {
            let o = opts.clone();
            let w = work.to_path_buf();
            move || start_baseline(&o, &w, port)
        };
        let server = blocking(start.clone()).await?;
        let (tasks, row) = connect_and_hold(opts, &sim, &server, "baseline").await?;
        rows.push(row);
        if opts.runs('b') {
            rows.push(steady(opts, &sim, &server, "baseline").await?);
        }
        if opts.runs('c') {
            rows.push(saturate(opts, &sim, &server, "baseline").await?);
        }
        if opts.runs('d') {
            rows.push(round(opts, &sim, &server, "baseline").await?);
        }
        let mut server = server;
        if opts.runs('e') {
            let (new, row) = storm(opts, &sim, server, "baseline", start).await?;
            server = new;
            rows.push(row);
        }
        stop(&sim, tasks).await;
        server.proc.kill9();
    }

    println!("\ncoordinator: `cemwatch serve`");
    let quic_port = free_udp_port()?;
    let (config, server) = {
        let o = opts.clone();
        let w = work.to_path_buf();
        blocking(move || configure_and_start(&o, &w, quic_port)).await?
    };
    let (tasks, row) = connect_and_hold(opts, &sim, &server, "coordinator").await?;
    rows.push(row);
    if opts.runs('b') {
        rows.push(steady(opts, &sim, &server, "coordinator").await?);
    }
    if opts.runs('c') {
        rows.push(saturate(opts, &sim, &server, "coordinator").await?);
    }
    if opts.runs('d') {
        rows.push(round(opts, &sim, &server, "coordinator").await?);
    }
    let mut server = server;
    if opts.runs('e') {
        let restart = {
            let o = opts.clone();
            move || start_coordinator(&o, &config)
        };
        let (new, row) = storm(opts, &sim, server, "coordinator", restart).await?;
        server = new;
        rows.push(row);
    }
    stop(&sim, tasks).await;
    server.proc.terminate(Duration::from_secs(10));
    Ok(rows)
}
