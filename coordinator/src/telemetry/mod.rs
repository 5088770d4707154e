//! Prometheus metrics. Names are `pub const`s so tests import them rather than retype them.
//! Ingest counters are counters; fleet gauges are recomputed from the fleet view at each
//! scrape, so series of probes and checks that went away disappear.

pub mod reasons;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use cemwatch_shared::AgentCondition;

use crate::config::Config;
use crate::model::diagnosis::Kind;
use crate::model::summary::AgentSummary;
use crate::model::summary::FleetSummary;
pub use reasons::{Enrolment, Refusal, FRAME_REASONS};

/// Probes known to this coordinator, by `state` (`connected`, `disconnected`, `stale`).
pub const PROBES: &str = "cemwatch_probes";
/// Fresh results per `check` and `verdict`.
pub const CHECK_PROBES: &str = "cemwatch_check_probes";
/// Probes currently reporting each finding `code`, per `check`.
pub const CHECK_FINDINGS: &str = "cemwatch_check_findings";
/// Reports committed.
pub const REPORTS_RECEIVED: &str = "cemwatch_reports_received_total";
/// Reports dropped because `(probe, seq)` was already committed.
pub const REPORTS_DUPLICATE: &str = "cemwatch_reports_duplicate_total";
/// Frames turned away, by `reason`.
pub const FRAMES_REJECTED: &str = "cemwatch_frames_rejected_total";
/// Connections turned away, by `reason`.
pub const CONNECTIONS_REFUSED: &str = "cemwatch_connections_refused_total";
/// Enrolments, by `outcome`.
pub const ENROLMENTS: &str = "cemwatch_enrolments_total";
/// Fresh results per `check`, `site` (capped, overflow `other`) and `verdict`.
pub const CHECK_SITE_PROBES: &str = "cemwatch_check_site_probes";
/// Probes per `check`, gateway node (`address`: each address of the name, capped like sites,
/// overflow `other`) and their `verdict` there.
pub const NODE_PROBES: &str = "cemwatch_node_probes";
/// Nodes (addresses of the name) most of whose probes see each certificate, per `check` and
/// `thumbprint_sha1`: a rollover's progress in nodes.
pub const CERT_NODES: &str = "cemwatch_certificate_nodes";
/// Fleet diagnosis as a state set: one series per `diagnosis`, 1 for the current one.
pub const FLEET_DIAGNOSIS: &str = "cemwatch_fleet_diagnosis";
/// Not-after of each certificate served, per `check` and `thumbprint_sha1`.
pub const CERT_NOT_AFTER: &str = "cemwatch_certificate_not_after_timestamp_seconds";
/// Probes seeing each certificate, per `check` and `thumbprint_sha1`.
pub const CERT_OBSERVERS: &str = "cemwatch_certificate_observers";
/// Probes seeing the policy's certificate (`match` = `true`/`false`), per `check`; divide for
/// the ratio (counts add up across coordinators, ratios do not).
pub const THUMBPRINT_MATCHES: &str = "cemwatch_thumbprint_match_probes";
/// Fraction of probes seeing the policy's certificate, per `check` (one coordinator's view).
pub const THUMBPRINT_MATCH_RATIO: &str = "cemwatch_thumbprint_match_ratio";
/// TCP outcomes per `check`, `vantage`, `port` and `state`: the port-consistency view.
pub const PORT_PROBES: &str = "cemwatch_port_probes";
/// The port in the CEM policy, per `check`.
pub const POLICY_PORT: &str = "cemwatch_policy_port";
/// Probes finding the gateway's listener on each `port`, per `check`.
pub const LISTENER_PROBES: &str = "cemwatch_listener_probes";
/// TCP connect time, per `check` and `site`.
pub const TCP_CONNECT_DURATION: &str = "cemwatch_tcp_connect_duration_seconds";
/// TLS handshake time, per `check` and `site`.
pub const TLS_HANDSHAKE_DURATION: &str = "cemwatch_tls_handshake_duration_seconds";
/// Per-probe verdicts (only with `per_probe_metrics = true`): 1 per `probe`, `check`, `verdict`.
pub const PROBE_CHECK_VERDICT: &str = "cemwatch_probe_check_verdict";
/// `ProbeNow` rounds started.
pub const ROUNDS: &str = "cemwatch_rounds_total";
/// Connection attempts answered with a QUIC Retry (address validation).
pub const QUIC_RETRIES: &str = "cemwatch_quic_retries_total";
/// Reconnections per second the coordinator can take, measured from its handshakes' CPU time
/// (0 until a burst of handshakes was seen); the reconnect spread plans give follows it.
pub const HANDSHAKE_CAPACITY: &str = "cemwatch_handshake_capacity_per_second";
/// QUIC handshakes that failed (refused certificates, peers that gave up or refused us).
pub const HANDSHAKES_FAILED: &str = "cemwatch_quic_handshakes_failed_total";
/// Reports delayed by the per-probe report rate limit.
pub const REPORTS_THROTTLED: &str = "cemwatch_reports_throttled_total";
/// Results dropped because their check is not in the probe's plan (a hostile or confused
/// probe cannot grow the fleet view, the metrics' label sets or the events with names of its
/// own).
/// 1 while the revocation watcher cannot read the store (revoked probes then stay connected
/// until it can), 0 otherwise.
pub const REVOCATIONS_UNREADABLE: &str = "cemwatch_revocations_unreadable";
/// Reports and events deleted by retention (`[store] keep`, `max_size`), by `what`.
pub const STORE_PRUNED: &str = "cemwatch_store_pruned_total";
/// HTTP connections and requests turned away, by reason (the reasons are [`HTTP_REASONS`]).
pub const HTTP_REFUSED: &str = "cemwatch_http_refused_total";
/// The reasons of [`HTTP_REFUSED`]: `connections` (http.max_connections), `tls` (the HTTPS
/// handshake failed or was too slow), `busy` (http.max_concurrent_requests), `timeout`
/// (http.request_timeout), `unauthenticated` (no credentials where a role is needed),
/// `credentials` (wrong ones), `forbidden` (a role too weak), `round_rate` (a round too soon).
pub const HTTP_REASONS: [&str; 8] = [
    "connections",
    "tls",
    "busy",
    "timeout",
    "unauthenticated",
    "credentials",
    "forbidden",
    "round_rate",
];
pub const RESULTS_DROPPED: &str = "cemwatch_results_dropped_total";
/// Management agents per CEM `state` (`cem_connected`, `handshake_error`, `connect_timeout`,
/// `no_cem_activity`), from the fresh probes that follow the agent's log.
pub const AGENTS: &str = "cemwatch_agents";
/// Agents connected in CEM mode per `gateway` and `port` as they logged them (pairs capped at
/// [`crate::analysis::agents::MAX_GATEWAY_LABELS`]; the rest in `gateway="other",port="other"`).
pub const AGENTS_CONNECTED: &str = "cemwatch_agents_connected";
/// Agents whose logged port differs from the policy port of the gateway `check` whose host
/// they logged: the guide's silent port mismatch.
pub const AGENTS_PORT_MISMATCH: &str = "cemwatch_agents_port_mismatch";
/// Agents whose validated thumbprint differs from the policy thumbprint of the gateway `check`.
pub const AGENTS_THUMBPRINT_MISMATCH: &str = "cemwatch_agents_thumbprint_mismatch";

/// The coordinator's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reports committed.
    pub reports_received: IntCounter,
    /// Duplicate reports dropped.
    pub reports_duplicate: IntCounter,
    /// Frames rejected by reason.
    pub frames_rejected: IntCounterVec,
    /// Connections refused by reason.
    pub connections_refused: IntCounterVec,
    /// Enrolments by outcome.
    pub enrolments: IntCounterVec,
    /// Connection attempts answered with a QUIC Retry.
    pub quic_retries: IntCounter,
    /// Failed QUIC handshakes.
    pub handshakes_failed: IntCounter,
    /// Measured handshake capacity, per second (0: not measured yet).
    pub handshake_capacity: prometheus::IntGauge,
    /// Reports delayed by the report rate limit.
    pub reports_throttled: IntCounter,
    /// Results dropped because their check is not in the probe's plan.
    pub results_dropped: IntCounter,
    /// HTTP connections and requests turned away, by reason.
    pub http_refused: IntCounterVec,
    /// Rows deleted by retention, by `what` (`reports`, `events`).
    pub store_pruned: IntCounterVec,
    /// Whether the revocation watcher cannot read the store.
    pub revocations_unreadable: prometheus::IntGauge,
    /// Probes by state.
    pub probes: IntGaugeVec,
    /// Fresh results by check and verdict.
    pub check_probes: IntGaugeVec,
    /// Findings by check and code.
    pub check_findings: IntGaugeVec,
    /// Per check, site and verdict.
    pub check_site_probes: IntGaugeVec,
    /// Diagnosis state set.
    pub fleet_diagnosis: IntGaugeVec,
    /// Certificate not-after.
    pub cert_not_after: IntGaugeVec,
    /// Certificate observers.
    pub cert_observers: IntGaugeVec,
    /// [`CERT_NODES`].
    pub cert_nodes: IntGaugeVec,
    /// [`NODE_PROBES`].
    pub node_probes: IntGaugeVec,
    /// Probes seeing (or not) the policy certificate.
    pub thumbprint_matches: IntGaugeVec,
    /// Ratio of the above.
    pub thumbprint_match_ratio: GaugeVec,
    /// Port consistency.
    pub port_probes: IntGaugeVec,
    /// Policy port.
    pub policy_port: IntGaugeVec,
    /// Where the listener was found.
    pub listener_probes: IntGaugeVec,
    /// TCP connect time.
    pub tcp_connect: HistogramVec,
    /// TLS handshake time.
    pub tls_handshake: HistogramVec,
    /// Per-probe verdicts.
    pub probe_check_verdict: IntGaugeVec,
    /// Rounds started.
    pub rounds: IntCounter,
    /// Agents by CEM state.
    pub agents: IntGaugeVec,
    /// Connected agents by gateway and port.
    pub agents_connected: IntGaugeVec,
    /// Agents on another port than the policy's, per check.
    pub agents_port_mismatch: IntGaugeVec,
    /// Agents with another thumbprint than the policy's, per check.
    pub agents_thumbprint_mismatch: IntGaugeVec,
    sites: Arc<Mutex<HashSet<String>>>,
    scrape: Arc<Mutex<()>>,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str) -> HistogramVec {
    let buckets = vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets),
        &["check", "site"],
    )
    .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let m = Self {
            reports_received: counter(
                &registry,
                REPORTS_RECEIVED,
                "Reports committed to the store.",
            ),
            reports_duplicate: counter(
                &registry,
                REPORTS_DUPLICATE,
                "Reports dropped because (probe, seq) was already committed.",
            ),
            frames_rejected: counter_vec(
                &registry,
                FRAMES_REJECTED,
                "Frames turned away, by reason.",
                &["reason"],
            ),
            connections_refused: counter_vec(
                &registry,
                CONNECTIONS_REFUSED,
                "Connections turned away, by reason.",
                &["reason"],
            ),
            enrolments: counter_vec(
                &registry,
                ENROLMENTS,
                "Enrolment attempts, by outcome.",
                &["outcome"],
            ),
            quic_retries: counter(
                &registry,
                QUIC_RETRIES,
                "Connection attempts answered with a QUIC Retry (address validation).",
            ),
            handshakes_failed: counter(
                &registry,
                HANDSHAKES_FAILED,
                "QUIC handshakes that failed (refused certificates, peers that gave up).",
            ),
            reports_throttled: counter(
                &registry,
                REPORTS_THROTTLED,
                "Reports delayed by the per-probe report rate limit.",
            ),
            results_dropped: counter(
                &registry,
                RESULTS_DROPPED,
                "Results dropped because their check is not in the reporting probe's plan.",
            ),
            http_refused: counter_vec(
                &registry,
                HTTP_REFUSED,
                "HTTP connections and requests turned away, by reason.",
                &["reason"],
            ),
            handshake_capacity: {
                let g = prometheus::IntGauge::new(
                    HANDSHAKE_CAPACITY,
                    "Reconnections per second the coordinator can take, measured from the CPU time of its handshakes (0 until measured); plans spread a restart's reconnections to fit it.",
                )
                .expect("valid metric");
                registry.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            revocations_unreadable: {
                let g = prometheus::IntGauge::new(
                    REVOCATIONS_UNREADABLE,
                    "1 while the revocation watcher cannot read the store (revoked probes stay connected until it can).",
                )
                .expect("valid metric");
                registry.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            store_pruned: counter_vec(
                &registry,
                STORE_PRUNED,
                "Reports and events deleted by retention ([store] keep and max_size).",
                &["what"],
            ),
            probes: gauge_vec(
                &registry,
                PROBES,
                "Probes known to this coordinator, by state.",
                &["state"],
            ),
            check_probes: gauge_vec(
                &registry,
                CHECK_PROBES,
                "Probes whose fresh result has this verdict, per check.",
                &["check", "verdict"],
            ),
            check_findings: gauge_vec(
                &registry,
                CHECK_FINDINGS,
                "Probes currently reporting this finding code, per check.",
                &["check", "code"],
            ),
            check_site_probes: gauge_vec(&registry, CHECK_SITE_PROBES, "Probes whose fresh result has this verdict, per check and site (sites capped; the rest in other).", &["check", "site", "verdict"]),
            fleet_diagnosis: gauge_vec(&registry, FLEET_DIAGNOSIS, "Fleet diagnosis per check as a state set: 1 for the current diagnosis, 0 for the others.", &["check", "diagnosis"]),
            cert_not_after: gauge_vec(&registry, CERT_NOT_AFTER, "Not-after of each certificate served, Unix seconds.", &["check", "thumbprint_sha1"]),
            cert_observers: gauge_vec(&registry, CERT_OBSERVERS, "Probes currently seeing each certificate (at any node of the name).", &["check", "thumbprint_sha1"]),
            cert_nodes: gauge_vec(&registry, CERT_NODES, "Gateway nodes (addresses of the name) most of whose probes see each certificate.", &["check", "thumbprint_sha1"]),
            node_probes: gauge_vec(&registry, NODE_PROBES, "Probes whose fresh result has this verdict at each gateway node (address of the name; capped like sites, the rest in other).", &["check", "address", "verdict"]),
            thumbprint_matches: gauge_vec(&registry, THUMBPRINT_MATCHES, "Probes that saw a certificate, by whether it is the one in the CEM policy.", &["check", "match"]),
            thumbprint_match_ratio: {
                let g = GaugeVec::new(Opts::new(THUMBPRINT_MATCH_RATIO, "Fraction of probes seeing the certificate in the CEM policy."), &["check"]).expect("valid metric");
                registry.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            port_probes: gauge_vec(&registry, PORT_PROBES, "TCP outcome per port and vantage: the policy port and the legacy ports.", &["check", "vantage", "port", "state"]),
            policy_port: gauge_vec(&registry, POLICY_PORT, "The port in the CEM policy (configuration).", &["check"]),
            listener_probes: gauge_vec(&registry, LISTENER_PROBES, "Probes finding the gateway's listener (TLS with its certificate) on each port.", &["check", "port"]),
            tcp_connect: histogram(&registry, TCP_CONNECT_DURATION, "TCP connect time on the policy port."),
            tls_handshake: histogram(&registry, TLS_HANDSHAKE_DURATION, "TLS handshake time on the policy port."),
            probe_check_verdict: gauge_vec(&registry, PROBE_CHECK_VERDICT, "Per-probe verdict (only with per_probe_metrics = true).", &["probe", "check", "verdict"]),
            rounds: counter(&registry, ROUNDS, "ProbeNow rounds started."),
            agents: gauge_vec(&registry, AGENTS, "Management agents per CEM state, from the fresh probes that follow the agent's log.", &["state"]),
            agents_connected: gauge_vec(&registry, AGENTS_CONNECTED, "Management agents connected in CEM mode, per gateway and port as logged (pairs capped; the rest in other).", &["gateway", "port"]),
            agents_port_mismatch: gauge_vec(&registry, AGENTS_PORT_MISMATCH, "Management agents whose logged port differs from the policy port of this gateway check.", &["check"]),
            agents_thumbprint_mismatch: gauge_vec(&registry, AGENTS_THUMBPRINT_MISMATCH, "Management agents whose validated thumbprint differs from the policy thumbprint of this gateway check.", &["check"]),
            sites: Arc::default(),
            scrape: Arc::default(),
            registry: registry.clone(),
        };
        for reason in Refusal::ALL {
            m.connections_refused.with_label_values(&[reason.label()]);
        }
        for outcome in Enrolment::ALL {
            m.enrolments.with_label_values(&[outcome.label()]);
        }
        for reason in FRAME_REASONS {
            m.frames_rejected.with_label_values(&[reason]);
        }
        for reason in HTTP_REASONS {
            m.http_refused.with_label_values(&[reason]);
        }
        for what in ["reports", "events"] {
            m.store_pruned.with_label_values(&[what]);
        }
        m
    }

    /// Counts an HTTP connection or request turned away (`reason` is one of [`HTTP_REASONS`]).
    pub fn http_refused(&self, reason: &'static str) {
        debug_assert!(HTTP_REASONS.contains(&reason), "{reason}");
        self.http_refused.with_label_values(&[reason]).inc();
    }

    /// Counts a connection turned away.
    pub fn refused(&self, reason: Refusal) {
        self.connections_refused
            .with_label_values(&[reason.label()])
            .inc();
    }

    /// Counts an enrolment attempt.
    pub fn enrolment(&self, outcome: Enrolment) {
        self.enrolments.with_label_values(&[outcome.label()]).inc();
    }

    /// Counts a rejected frame (`reason` is one of [`FRAME_REASONS`]).
    pub fn frame_rejected(&self, reason: &'static str) {
        self.frames_rejected.with_label_values(&[reason]).inc();
    }

    /// The `site` label value: the site itself for the first `cap` distinct sites, `other`
    /// beyond, so a fleet with many sites cannot grow the series without bound.
    pub fn site_label(&self, site: &str, cap: usize) -> String {
        let site = if site.is_empty() { "none" } else { site };
        let mut known = self.sites.lock();
        if known.contains(site) {
            return site.to_string();
        }
        if known.len() < cap {
            known.insert(site.to_string());
            return site.to_string();
        }
        "other".into()
    }

    /// Records a result's timings.
    pub fn observe(&self, check: &str, site: &str, tcp_ms: f64, tls_ms: Option<f64>) {
        self.tcp_connect
            .with_label_values(&[check, site])
            .observe(tcp_ms / 1000.0);
        if let Some(ms) = tls_ms {
            self.tls_handshake
                .with_label_values(&[check, site])
                .observe(ms / 1000.0);
        }
    }

    /// Recomputes the fleet gauges from a summary and renders everything. Gauges are reset
    /// first, so series of probes, sites and certificates that went away disappear.
    pub fn render_fleet(&self, summary: &FleetSummary, config: &Config) -> String {
        let _one_at_a_time = self.scrape.lock();
        let cap = config.server.max_sites;
        self.probes.reset();
        self.probes
            .with_label_values(&["connected"])
            .set(summary.probes.connected as i64);
        self.probes
            .with_label_values(&["disconnected"])
            .set(summary.probes.disconnected as i64);
        self.probes
            .with_label_values(&["stale"])
            .set(summary.probes.stale as i64);
        for g in [
            &self.check_probes,
            &self.check_findings,
            &self.check_site_probes,
            &self.fleet_diagnosis,
            &self.cert_not_after,
            &self.cert_observers,
            &self.cert_nodes,
            &self.node_probes,
            &self.thumbprint_matches,
            &self.port_probes,
            &self.policy_port,
            &self.listener_probes,
            &self.probe_check_verdict,
            &self.agents,
            &self.agents_connected,
            &self.agents_port_mismatch,
            &self.agents_thumbprint_mismatch,
        ] {
            g.reset();
        }
        self.set_agents(&summary.agents);
        self.thumbprint_match_ratio.reset();
        let all = Kind::all_labels();
        for c in &summary.checks {
            let check = c.check.as_str();
            for (verdict, n) in [
                ("ok", c.verdicts.ok),
                ("warn", c.verdicts.warn),
                ("fail", c.verdicts.fail),
            ] {
                self.check_probes
                    .with_label_values(&[check, verdict])
                    .set(n as i64);
            }
            for (code, n) in &c.codes {
                self.check_findings
                    .with_label_values(&[check, code.as_str()])
                    .set(*n as i64);
            }
            // Sites: the largest first keep their label, the rest are summed into `other`.
            let mut sites: Vec<(&String, &crate::model::summary::VerdictCounts)> =
                c.sites.iter().collect();
            sites.sort_by_key(|(name, v)| {
                (std::cmp::Reverse(v.ok + v.warn + v.fail), (*name).clone())
            });
            let mut other = crate::model::summary::VerdictCounts::default();
            let mut per_site: BTreeMap<String, crate::model::summary::VerdictCounts> =
                BTreeMap::new();
            for (i, (name, v)) in sites.into_iter().enumerate() {
                if i < cap {
                    per_site.insert(name.clone(), v.clone());
                } else {
                    other.ok += v.ok;
                    other.warn += v.warn;
                    other.fail += v.fail;
                }
            }
            if other.ok + other.warn + other.fail > 0 {
                per_site.insert("other".into(), other);
            }
            for (site, v) in &per_site {
                for (verdict, n) in [("ok", v.ok), ("warn", v.warn), ("fail", v.fail)] {
                    self.check_site_probes
                        .with_label_values(&[check, site.as_str(), verdict])
                        .set(n as i64);
                }
            }
            for label in &all {
                let on = i64::from(*label == c.diagnosis);
                self.fleet_diagnosis
                    .with_label_values(&[check, label.as_str()])
                    .set(on);
            }
            for cert in &c.certificates {
                let t = cert.thumbprint_sha1.as_str();
                self.cert_not_after
                    .with_label_values(&[check, t])
                    .set(cert.not_after);
                self.cert_observers
                    .with_label_values(&[check, t])
                    .set(cert.observers as i64);
                self.cert_nodes
                    .with_label_values(&[check, t])
                    .set(cert.nodes as i64);
            }
            // Nodes: already capped by the summary (`[server] max_sites`, the rest `other`).
            for n in &c.nodes {
                for (verdict, count) in [
                    ("ok", n.verdicts.ok),
                    ("warn", n.verdicts.warn),
                    ("fail", n.verdicts.fail),
                ] {
                    self.node_probes
                        .with_label_values(&[check, n.address.as_str(), verdict])
                        .set(count as i64);
                }
            }
            if let Some(policy) = &c.policy_thumbprint {
                let seen: u64 = c.certificates.iter().map(|x| x.observers).sum();
                let matching: u64 = c
                    .certificates
                    .iter()
                    .filter(|x| &x.thumbprint_sha1 == policy)
                    .map(|x| x.observers)
                    .sum();
                self.thumbprint_matches
                    .with_label_values(&[check, "true"])
                    .set(matching as i64);
                self.thumbprint_matches
                    .with_label_values(&[check, "false"])
                    .set((seen - matching) as i64);
            }
            if let Some(ratio) = c.thumbprint_match_ratio {
                self.thumbprint_match_ratio
                    .with_label_values(&[check])
                    .set(ratio);
            }
            self.policy_port
                .with_label_values(&[check])
                .set(i64::from(c.ports.policy_port));
            for (vantage, table) in [("internet", &c.ports.internet), ("dmz", &c.ports.dmz)] {
                for (port, states) in table {
                    for (state, n) in states {
                        self.port_probes
                            .with_label_values(&[check, vantage, &port.to_string(), state.as_str()])
                            .set(*n as i64);
                    }
                }
            }
            for (probe, verdict) in &c.probe_verdicts {
                self.probe_check_verdict
                    .with_label_values(&[probe, check, verdict.as_str()])
                    .set(1);
            }
            for (port, n) in &c.ports.listeners {
                self.listener_probes
                    .with_label_values(&[check, &port.to_string()])
                    .set(*n as i64);
            }
        }
        self.render()
    }

    /// Sets the agent gauges from the summary (after the reset): every state, zeros included;
    /// the capped gateway pairs; both mismatch counts for every gateway check.
    fn set_agents(&self, agents: &AgentSummary) {
        for state in AgentCondition::NAMES {
            self.agents
                .with_label_values(&[state])
                .set(agents.state(state) as i64);
        }
        for pair in &agents.connected {
            let (gateway, port) = pair.labels();
            self.agents_connected
                .with_label_values(&[gateway.as_str(), port.as_str()])
                .set(pair.agents as i64);
        }
        for c in &agents.checks {
            self.agents_port_mismatch
                .with_label_values(&[c.check.as_str()])
                .set(c.port_mismatch as i64);
            self.agents_thumbprint_mismatch
                .with_label_values(&[c.check.as_str()])
                .set(c.thumbprint_mismatch as i64);
        }
    }

    /// Renders the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::probe::AgentView;
    use cemwatch_shared::{AgentCemState, AgentLogStatus, SinceSource};
    use std::path::Path;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn agent_gauges_are_recomputed_at_every_scrape() {
        let config = Config::from_toml(
            "[[check]]\nname = \"gateway\"\nhost = \"gw.example.com\"\nport = 8443\n",
            "test.toml",
            Path::new("/tmp"),
        )
        .expect("config");
        let now = crate::store::now_ms();
        let mut fleet = crate::analysis::fleet::Fleet::default();
        for (name, condition) in [
            (
                "a",
                AgentCondition::CemConnected {
                    gateway: "gw.example.com".into(),
                    port: Some(8443),
                    thumbprint: None,
                },
            ),
            (
                "b",
                AgentCondition::ConnectTimeout {
                    gateway: Some("gw.example.com".into()),
                    port: Some(443),
                    attempts: 3,
                },
            ),
        ] {
            let view = fleet.probes.entry(name.into()).or_default();
            view.connected = true;
            view.last_seen_ms = now;
            view.agent = Some(AgentView {
                state: AgentCemState {
                    condition,
                    since_ms: 0,
                    since_source: SinceSource::Read,
                    line: None,
                    log: AgentLogStatus::Following,
                },
                received_ms: now,
            });
        }
        let metrics = Metrics::new();
        let text = metrics.render_fleet(&fleet.summary(&config, now), &config);
        let agents = |state: &str| value(&text, &format!("{AGENTS}{{state=\"{state}\"}}"));
        assert_eq!(agents("cem_connected"), Some(1.0), "{text}");
        assert_eq!(agents("connect_timeout"), Some(1.0));
        assert_eq!(agents("handshake_error"), Some(0.0), "zeros are series too");
        assert_eq!(agents("no_cem_activity"), Some(0.0));
        assert_eq!(
            value(
                &text,
                &format!("{AGENTS_CONNECTED}{{gateway=\"gw.example.com\",port=\"8443\"}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                &format!("{AGENTS_PORT_MISMATCH}{{check=\"gateway\"}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                &format!("{AGENTS_THUMBPRINT_MISMATCH}{{check=\"gateway\"}}")
            ),
            Some(0.0)
        );

        // The connected agent's probe goes stale: its gateway series disappears.
        if let Some(v) = fleet.probes.get_mut("a") {
            v.connected = false;
            v.last_seen_ms = now - 86_400_000;
        }
        let text = metrics.render_fleet(&fleet.summary(&config, now), &config);
        assert_eq!(agents_of(&text, "cem_connected"), Some(0.0));
        assert!(!text.contains(&format!("{AGENTS_CONNECTED}{{")), "{text}");
    }

    fn agents_of(text: &str, state: &str) -> Option<f64> {
        value(text, &format!("{AGENTS}{{state=\"{state}\"}}"))
    }
}
