//! `cemwatch demo`: a coordinator, a gateway simulator and a few dozen real probe agents in one
//! process on free loopback ports, with a temporary data directory. Probes enrol with tokens
//! and report over QUIC with mutual TLS exactly as in production; `--scenario` puts the
//! simulator into one of the guide's failure modes. Most internet probes also follow a sample
//! `Agent.log` of the management agent on their endpoint ([`demo_agent`]), so the fleet's agent
//! CEM state shows too: every state, agents on the wrong port and agents with a stale
//! thumbprint. The scenario can be switched live from the status page (the Demo panel), and the
//! terminal shows one line per change instead of the whole status on a timer.

pub mod gateway;
pub mod keys;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::ValueEnum;
use tokio::sync::watch;

use cemwatch_probe::agent::{self, AgentConfig};
use cemwatch_probe::agentlog::sample::{self, SampleState};
use cemwatch_probe::agentlog::AgentLogConfig;
use cemwatch_probe::check::TrustStore;
use cemwatch_shared::token::EnrollToken;
use cemwatch_shared::wire::Labels;

use crate::app as server;
use crate::app::Running;
use crate::config::{CheckConfig, Config, ServerConfig};
use crate::model::check::Role;
use crate::store;
use gateway::{GatewaySim, GATEWAY, SMP};

/// The simulator's failure modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Scenario {
    /// Everything right.
    Healthy,
    /// A renewed certificate is bound; the CEM policy still has the old thumbprint.
    ThumbprintMismatch,
    /// Gateway Manager was not restarted: the listener is still on the legacy port.
    ListenerOnLegacyPort,
    /// The certificate expires in 12 days.
    CertExpiring,
    /// The gateway's certificate comes from a new root CA that never reached one site (branch-lyon).
    UntrustedRoot,
    /// The bound certificate lacks the SMP name.
    SanMissing,
    /// Nothing answers on the gateway's ports.
    GatewayDown,
}

/// Internet sites of the demo fleet.
pub const SITES: [&str; 4] = ["eu-west", "us-east", "ap-south", "branch-lyon"];

/// The thumbprint of the certificate before the last renewal: what agents with an outdated CEM
/// policy still validate.
pub const OLD_THUMBPRINT: &str = "3A7F9C2B11D04E5F66A7B8C9D0E1F2A3B4C5D6E7";

/// The port agents with an outdated CEM policy still use (the Gateway Manager's default).
pub const OLD_PORT: u16 = 443;

/// The management agent on a demo probe's endpoint, as its `Agent.log` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoAgent {
    /// Connected in CEM mode on the policy port; the policy's thumbprint validated.
    Connected,
    /// Connected in CEM mode on the policy port; this agent version logs no thumbprint.
    ConnectedQuiet,
    /// Connected on the policy port, but it validated the old certificate's thumbprint
    /// ([`OLD_THUMBPRINT`]): its CEM policy is stale.
    StaleThumbprint,
    /// Connection timeouts on [`OLD_PORT`] while the policy says the gateway's port: the
    /// guide's silent port mismatch.
    WrongPort,
    /// SSL handshake errors on the policy port.
    HandshakeError,
    /// No CEM activity: the agent has not processed the CEM policy yet.
    NoCemActivity,
}

/// The agent of the demo's internet probe number `i`, if its endpoint is a managed one: the
/// first six probes cover every state, then the cycle of eight repeats (two of every eight
/// probes run on endpoints without an agent).
pub fn demo_agent(i: usize) -> Option<DemoAgent> {
    const CYCLE: [Option<DemoAgent>; 8] = [
        Some(DemoAgent::Connected),
        Some(DemoAgent::WrongPort),
        Some(DemoAgent::StaleThumbprint),
        Some(DemoAgent::HandshakeError),
        Some(DemoAgent::NoCemActivity),
        Some(DemoAgent::ConnectedQuiet),
        None,
        None,
    ];
    CYCLE[i % CYCLE.len()]
}

/// Writes the `Agent.log` of a demo agent into `dir`, its last entry `minutes_ago` before now,
/// and returns its path.
pub fn write_agent_log(
    dir: &std::path::Path,
    agent: DemoAgent,
    sim: &GatewaySim,
    minutes_ago: i64,
) -> Result<PathBuf> {
    let at = time::OffsetDateTime::now_utc() - time::Duration::minutes(minutes_ago);
    let policy = sim.policy_thumbprint();
    let (state, port) = match agent {
        DemoAgent::Connected => (
            SampleState::Connected {
                thumbprint: Some(&policy),
            },
            sim.policy_port,
        ),
        DemoAgent::ConnectedQuiet => (SampleState::Connected { thumbprint: None }, sim.policy_port),
        DemoAgent::StaleThumbprint => (
            SampleState::Connected {
                thumbprint: Some(OLD_THUMBPRINT),
            },
            sim.policy_port,
        ),
        DemoAgent::WrongPort => (SampleState::ConnectTimeout, OLD_PORT),
        DemoAgent::HandshakeError => (SampleState::HandshakeError, sim.policy_port),
        DemoAgent::NoCemActivity => (SampleState::NoCemActivity, sim.policy_port),
    };
    let path = dir.join("Agent.log");
    std::fs::write(&path, sample::agent_log(state, GATEWAY, port, at))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Failure mode.
    pub scenario: Scenario,
    /// Internet probes (two DMZ probes come on top).
    pub probes: usize,
    /// Check interval.
    pub interval: Duration,
    /// HTTP listen address (port 0 for any).
    pub http_listen: SocketAddr,
    /// Stop after this long (`None`: until Ctrl-C).
    pub duration: Option<Duration>,
}

/// A running demo.
#[derive(Debug)]
pub struct Demo {
    /// The coordinator.
    pub coordinator: Running,
    /// The simulator.
    pub gateway: Arc<GatewaySim>,
    /// The scenario switch (the page's Demo panel uses the same).
    pub controls: Arc<Controls>,
    /// Stops the probes.
    stop: watch::Sender<bool>,
    probes: Vec<tokio::task::JoinHandle<()>>,
    /// The temporary data directory (deleted on drop).
    pub dir: tempfile::TempDir,
}

fn labels(site: &str, vantage: &str) -> Labels {
    [
        ("site".to_string(), site.to_string()),
        ("vantage".to_string(), vantage.to_string()),
    ]
    .into_iter()
    .collect()
}

/// The demo's configuration.
pub fn demo_config(
    sim: &GatewaySim,
    data_dir: PathBuf,
    http: SocketAddr,
    interval: Duration,
) -> Config {
    let policy = sim.policy_thumbprint();
    let check = |name: &str, host: &str, port: u16, select: Labels| CheckConfig {
        name: name.into(),
        host: host.into(),
        port,
        legacy_ports: if host == GATEWAY {
            vec![sim.legacy_port]
        } else {
            vec![]
        },
        expect_thumbprint: cemwatch_shared::Thumbprint::parse(if host == GATEWAY {
            &policy
        } else {
            &sim.smp_thumbprint
        })
        .ok(),
        require_san: vec![if host == GATEWAY {
            SMP.into()
        } else {
            GATEWAY.into()
        }],
        min_days_left: 30,
        interval,
        connect_timeout: Duration::from_secs(2),
        handshake_timeout: Duration::from_secs(5),
        resolve: vec![format!("{host}:*:127.0.0.1")],
        select,
        role: if host == GATEWAY {
            Role::Gateway
        } else {
            Role::Smp
        },
    };
    let dmz: Labels = [("vantage".to_string(), "dmz".to_string())]
        .into_iter()
        .collect();
    Config {
        server: ServerConfig {
            quic_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_listen: http,
            data_dir,
            stale_after: interval * 3 + Duration::from_secs(5),
            probe_cert_ttl: Duration::from_secs(7 * 86_400),
            server_names: vec![],
            max_sites: 50,
            per_probe_metrics: false,
            trust_shared_ca_probes: false,
            quic_sockets: 1,
        },
        diagnosis: crate::model::check::Thresholds::default(),
        limits: crate::config::limits::LimitsConfig::default(),
        http: crate::config::http::HttpConfig::default(),
        rounds: crate::config::http::RoundsConfig::default(),
        store: crate::config::store::StoreConfig::default(),
        checks: vec![
            check("gateway", GATEWAY, sim.policy_port, Labels::new()),
            check("smp-agent-site", SMP, sim.smp_agent_port, dmz.clone()),
            check("smp-https", SMP, sim.smp_https_port, dmz),
        ],
    }
}

impl Demo {
    /// Starts everything and enrols the probes.
    pub async fn start(opts: &DemoOptions) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("cemwatch-demo-")
            .tempdir()?;
        let gateway = Arc::new(GatewaySim::start(opts.scenario).await?);
        let config = demo_config(
            &gateway,
            dir.path().join("coordinator"),
            opts.http_listen,
            opts.interval,
        );
        let coordinator = server::start(config, None).await?;
        let demo_ca = dir.path().join("demo-root-ca.pem");
        std::fs::write(&demo_ca, &gateway.ca_pem)?;
        let new_root = dir.path().join("demo-new-root-ca.pem");
        std::fs::write(&new_root, &gateway.new_root_pem)?;

        let mut fleet: Vec<(String, Labels, Option<DemoAgent>)> = (0..opts.probes)
            .map(|i| {
                let site = SITES[i % SITES.len()];
                (
                    format!("{site}-{:02}", i / SITES.len() + 1),
                    labels(site, "internet"),
                    demo_agent(i),
                )
            })
            .collect();
        fleet.push(("dmz-01".into(), labels("dmz", "dmz"), None));
        fleet.push(("dmz-02".into(), labels("dmz", "dmz"), None));

        let (stop, stop_rx) = watch::channel(false);
        let db = store::open(&dir.path().join("coordinator"))?;
        let pin = coordinator.hub.ca.pin();
        let quic = coordinator.quic_addr.to_string();
        let mut probes = Vec::new();
        let mut agent_logs = Vec::new();
        for (i, (name, labels, agent)) in fleet.into_iter().enumerate() {
            let (id, secret) =
                store::create_token(&db, &labels, Some(&name), Duration::from_secs(600))?;
            let token = EnrollToken {
                id,
                secret,
                ca_pin: pin,
            };
            let state_dir = dir.path().join("probes").join(&name);
            agent::enroll::enroll(&quic, &token, &name, &state_dir, Duration::from_secs(10))
                .await
                .with_context(|| format!("demo probe {name} could not enrol"))?;
            let mut trust = TrustStore::empty();
            trust.add_file(&demo_ca)?;
            // The new root CA never reached branch-lyon (Scenario::UntrustedRoot).
            let site = labels.get("site").cloned().unwrap_or_default();
            if site != "branch-lyon" {
                trust.add_file(&new_root)?;
            }
            let agent_log = match agent {
                Some(agent) => {
                    let log = write_agent_log(&state_dir, agent, &gateway, 1 + i as i64)?;
                    agent_logs.push((state_dir.clone(), agent, 1 + i as i64));
                    Some(AgentLogConfig::new(log))
                }
                None => None,
            };
            let mut config = AgentConfig::new(state_dir, Arc::new(trust));
            config.max_backoff = Duration::from_secs(5);
            config.agent_log = agent_log;
            let rx = stop_rx.clone();
            probes.push(tokio::spawn(async move {
                if let Err(e) = agent::run(config, rx).await {
                    tracing::error!(probe = %name, error = %format!("{e:#}"), "demo probe stopped");
                }
            }));
        }
        let controls = Arc::new(Controls {
            gateway: gateway.clone(),
            hub: coordinator.hub.clone(),
            config_tx: coordinator.config_tx.clone(),
            agent_logs,
            internet_probes: opts.probes,
        });
        let _ = coordinator.pages.demo.set(controls.clone());
        Ok(Self {
            coordinator,
            gateway,
            controls,
            stop,
            probes,
            dir,
        })
    }

    /// Puts the simulator into `scenario` (as the page's Demo panel does).
    pub fn switch(&self, scenario: Scenario) -> Result<()> {
        self.controls.switch_to(scenario)
    }

    /// Waits until the fleet has settled: every check has results and no diagnosis has changed
    /// for two seconds (at most `within`).
    pub async fn settle(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let mut last = Snapshot::of(self);
        let mut since = tokio::time::Instant::now();
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = Snapshot::of(self);
            if now.diagnoses != last.diagnoses {
                since = tokio::time::Instant::now();
                last = now;
                continue;
            }
            let complete = now.diagnoses.values().all(|(d, _)| d != "no_data");
            if complete && since.elapsed() >= Duration::from_secs(2) {
                return;
            }
        }
    }

    /// Waits until every probe is connected, then asks them all to check at once, so the first
    /// summary is complete without waiting a whole interval.
    pub async fn first_round(&self, expected: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.coordinator.hub.connected().len() < expected
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.coordinator.hub.start_round(Vec::new(), |_| true);
    }

    /// Stops the probes, then the coordinator.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for p in self.probes {
            let _ = tokio::time::timeout(Duration::from_secs(3), p).await;
        }
        self.coordinator.shutdown().await;
    }
}

/// One screen of fleet summary (the same view as `cemwatch status`).
pub fn render_summary(running: &Running) -> String {
    let s = crate::http::handlers::summary(&running.hub);
    crate::cli::status::render_status(
        &s,
        &format!("http://{}", running.http_addr),
        cemwatch_transport::host::colour(),
    )
}

/// A scenario's name as `--scenario` spells it.
pub fn scenario_name(s: Scenario) -> String {
    s.to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// The demo's scenario switch: the simulator, the policy thumbprint in the configuration, the
/// sample agent logs (their "validated" thumbprint follows the policy), then a round so the
/// fleet shows the change within seconds.
#[derive(Debug)]
pub struct Controls {
    gateway: Arc<GatewaySim>,
    hub: Arc<crate::quic::Hub>,
    config_tx: watch::Sender<Arc<Config>>,
    agent_logs: Vec<(PathBuf, DemoAgent, i64)>,
    internet_probes: usize,
}

impl Controls {
    /// Switches to `scenario`.
    pub fn switch_to(&self, scenario: Scenario) -> Result<()> {
        self.gateway.set_scenario(scenario);
        let mut config = (**self.hub.config.borrow()).clone();
        let policy = cemwatch_shared::Thumbprint::parse(&self.gateway.policy_thumbprint())
            .map_err(|e| anyhow::anyhow!("the demo's policy thumbprint: {e}"))?;
        for check in config.checks.iter_mut().filter(|c| c.host == GATEWAY) {
            check.expect_thumbprint = Some(policy.clone());
        }
        server::apply_config(&self.hub, &self.config_tx, config);
        for (dir, agent, minutes) in &self.agent_logs {
            write_agent_log(dir, *agent, &self.gateway, *minutes)?;
        }
        // The probes get their new plans first (the policy thumbprint), then check at once.
        let hub = self.hub.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            hub.start_round(Vec::new(), |_| true);
        });
        Ok(())
    }

    /// Where the agents' states come from, in words.
    pub fn agents_note(&self) -> String {
        let following = (0..self.internet_probes)
            .filter(|i| demo_agent(*i).is_some())
            .count();
        format!(
            "The management agents' CEM states are samples: {following} of the {} internet probes follow an Agent.log that the demo wrote, \
             each with one state in turn (connected; connection timeouts on port {OLD_PORT}, an outdated policy port; connected with the old thumbprint {OLD_THUMBPRINT}; \
             SSL handshake errors; no CEM activity; connected without a logged thumbprint). So even the healthy scenario shows agents in error states: they do not come from the gateway.",
            self.internet_probes
        )
    }
}

impl crate::http::pages::DemoControl for Controls {
    fn scenarios(&self) -> Vec<(String, String)> {
        Scenario::value_variants()
            .iter()
            .filter_map(|s| s.to_possible_value())
            .map(|v| {
                (
                    v.get_name().to_string(),
                    v.get_help().map(|h| h.to_string()).unwrap_or_default(),
                )
            })
            .collect()
    }

    fn current(&self) -> String {
        scenario_name(self.gateway.scenario())
    }

    fn notes(&self) -> Vec<String> {
        vec![self.agents_note()]
    }

    fn switch(&self, scenario: &str) -> Result<(), String> {
        let s = Scenario::from_str(scenario, false).map_err(|_| {
            format!(
                "{scenario:?} is not a scenario; use one of {}",
                Scenario::value_variants()
                    .iter()
                    .map(|s| scenario_name(*s))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        self.switch_to(s).map_err(|e| format!("{e:#}"))
    }
}

/// What the terminal follows: the scenario, each check's diagnosis, the connected probes.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The simulator's scenario.
    pub scenario: Scenario,
    /// Per check: its diagnosis label and summary.
    pub diagnoses: BTreeMap<String, (String, String)>,
    /// Connected probes.
    pub connected: BTreeSet<String>,
}

impl Snapshot {
    /// The demo now.
    pub fn of(demo: &Demo) -> Self {
        let s = crate::http::handlers::summary(&demo.coordinator.hub);
        Self {
            scenario: demo.gateway.scenario(),
            diagnoses: s
                .checks
                .into_iter()
                .map(|c| (c.check, (c.diagnosis, c.detail.summary)))
                .collect(),
            connected: demo.coordinator.hub.connected().into_iter().collect(),
        }
    }

    /// One line per change from `self` to `next`.
    pub fn changes(&self, next: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        if self.scenario != next.scenario {
            out.push(format!(
                "scenario {} -> {}",
                scenario_name(self.scenario),
                scenario_name(next.scenario)
            ));
        }
        for (check, (label, summary)) in &next.diagnoses {
            match self.diagnoses.get(check) {
                Some((before, _)) if before == label => {}
                Some((before, _)) => out.push(format!("{check}: {before} -> {label}: {summary}")),
                None => out.push(format!("{check}: {label}: {summary}")),
            }
        }
        for p in next.connected.difference(&self.connected) {
            out.push(format!("probe {p} joined"));
        }
        for p in self.connected.difference(&next.connected) {
            out.push(format!("probe {p} left"));
        }
        out
    }
}

/// Runs the demo until Ctrl-C (or the duration): the page's address first, the fleet once it
/// has settled, then one line per change.
pub async fn run(opts: DemoOptions) -> Result<()> {
    let demo = Demo::start(&opts).await?;
    let http = demo.coordinator.http_addr;
    println!("open http://{http}/");
    println!(
        "cemwatch demo: scenario {}, {} probes (switch scenarios live on the page)",
        scenario_name(opts.scenario),
        opts.probes + 2
    );
    println!(
        "  gateway simulator  {GATEWAY} -> 127.0.0.1:{} (policy port; legacy port {})",
        demo.gateway.policy_port, demo.gateway.legacy_port
    );
    println!("  metrics            http://{http}/metrics");
    println!("  fleet API          http://{http}/api/v1/fleet");
    println!("  data directory     {}", demo.dir.path().display());
    println!("  agent logs         {}", demo.controls.agents_note());
    println!();
    demo.first_round(opts.probes + 2).await;
    demo.settle(Duration::from_secs(20)).await;
    println!("{}", render_summary(&demo.coordinator));
    // The state changes are told from is taken before the line that invites them: a scenario
    // switched the moment the line appears is a change, not part of the starting state.
    let mut last = Snapshot::of(&demo);
    println!("changes from now on, one line each (Ctrl-C to stop):");
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = Snapshot::of(&demo);
                let at = time::OffsetDateTime::now_utc();
                for line in last.changes(&now) {
                    println!("{:02}:{:02}:{:02}  {line}", at.hour(), at.minute(), at.second());
                }
                last = now;
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    break;
                }
            }
            _ = cemwatch_transport::host::shutdown_signal() => break,
        }
    }
    demo.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(scenario: Scenario, gateway: &str, connected: &[&str]) -> Snapshot {
        Snapshot {
            scenario,
            diagnoses: [(
                "gateway".to_string(),
                (gateway.to_string(), format!("{gateway} summary")),
            )]
            .into_iter()
            .collect(),
            connected: connected.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_change_is_one_line_and_no_change_is_none() {
        let a = snapshot(Scenario::Healthy, "healthy", &["p1", "p2"]);
        assert!(a.changes(&a).is_empty());
        let b = snapshot(Scenario::GatewayDown, "gateway_down", &["p2", "p3"]);
        assert_eq!(
            a.changes(&b),
            vec![
                "scenario healthy -> gateway-down",
                "gateway: healthy -> gateway_down: gateway_down summary",
                "probe p3 joined",
                "probe p1 left",
            ]
        );
    }

    #[test]
    fn every_scenario_has_a_name_and_words_for_the_page() {
        for s in Scenario::value_variants() {
            let v = s.to_possible_value().expect("value");
            assert!(!v.get_name().is_empty());
            assert!(v.get_help().is_some(), "{s:?} says what it simulates");
            assert_eq!(Scenario::from_str(v.get_name(), false).ok(), Some(*s));
        }
    }
}
