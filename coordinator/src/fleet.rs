//! The fleet view in memory: every probe with its labels, connection state and latest result
//! per check, loaded from the store at start (a restart loses nothing) and updated after each
//! commit. Summaries count only fresh results: a probe not heard from within the staleness
//! window is excluded and counted as stale. Each probe also carries the latest CEM state of the
//! management agent on its endpoint, when it follows the agent's log (see [`crate::agents`]).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Result;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use cemwatch_shared::wire::{Labels, Report};
use cemwatch_shared::{CheckResult, FindingCode, Severity, TcpState};

use crate::agents::{self, AgentSummary, AgentView};
use crate::config::{CheckConfig, Config};
use crate::diagnose::{self, Diagnosis, Observation};

/// The latest result of one probe for one check, summarised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latest {
    /// Report sequence number.
    pub seq: u64,
    /// Round, when it answered a `ProbeNow`.
    pub round: Option<u64>,
    /// When the probe produced it, Unix ms.
    pub produced_at_ms: i64,
    /// Verdict.
    pub verdict: Severity,
    /// Finding codes.
    pub codes: Vec<FindingCode>,
    /// Served certificate thumbprint.
    pub thumbprint: Option<String>,
    /// Served certificate not-after, Unix seconds.
    pub not_after: Option<i64>,
    /// TCP connect time, ms.
    pub tcp_ms: f64,
    /// TLS handshake time, ms.
    pub tls_ms: f64,
    /// The port checked (the policy port at the time).
    pub port: u16,
    /// TCP outcome on that port.
    pub tcp_state: TcpState,
    /// Whether TLS completed there.
    pub tls_completed: bool,
    /// Legacy ports tried.
    pub legacy: Vec<LegacyObservation>,
}

/// What a probe saw on a legacy port.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LegacyObservation {
    /// The port.
    pub port: u16,
    /// TCP outcome.
    pub tcp: TcpState,
    /// The gateway's certificate answered there.
    pub gateway_listener: bool,
}

impl Latest {
    /// Summarises a result.
    pub fn from_result(seq: u64, round: Option<u64>, produced_at_ms: i64, r: &CheckResult) -> Self {
        Self {
            seq,
            round,
            produced_at_ms,
            verdict: r.verdict,
            codes: r.findings.iter().map(|f| f.code).collect(),
            thumbprint: r.certificate.as_ref().map(|c| c.thumbprint_sha1.clone()),
            not_after: r.certificate.as_ref().map(|c| c.not_after_unix),
            tcp_ms: r.tcp.duration_ms,
            tls_ms: r.tls.as_ref().map(|t| t.duration_ms).unwrap_or(0.0),
            port: r.target.port,
            tcp_state: r.tcp.state,
            tls_completed: r.tls.as_ref().is_some_and(|t| t.completed),
            legacy: r
                .legacy_ports
                .iter()
                .map(|l| LegacyObservation {
                    port: l.port,
                    tcp: l.tcp,
                    gateway_listener: l.gateway_listener,
                })
                .collect(),
        }
    }
}

/// One probe as the coordinator sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProbeView {
    /// Labels (site, vantage, ...).
    pub labels: Labels,
    /// A live connection right now.
    pub connected: bool,
    /// Last contact, Unix ms.
    pub last_seen_ms: i64,
    /// Agent version.
    pub agent_version: Option<String>,
    /// Revoked.
    pub revoked: bool,
    /// Latest result per check.
    pub latest: BTreeMap<String, Latest>,
    /// When the current connection began, Unix ms (0: not connected since the start).
    pub connected_since_ms: i64,
    /// The latest CEM state of the management agent on the probe's endpoint, when it sent one.
    pub agent: Option<AgentView>,
}

/// The fleet.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    /// Probes by name.
    pub probes: HashMap<String, ProbeView>,
}

/// Probe counts by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeCounts {
    /// With a live connection.
    pub connected: u64,
    /// Without a connection but heard from within the staleness window.
    pub disconnected: u64,
    /// Not heard from within the staleness window (results excluded).
    pub stale: u64,
}

/// Verdict counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictCounts {
    /// Ok.
    pub ok: u64,
    /// Warn.
    pub warn: u64,
    /// Fail.
    pub fail: u64,
}

/// A certificate served, and how many probes see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateSeen {
    /// SHA-1 thumbprint.
    pub thumbprint_sha1: String,
    /// Not after, Unix seconds.
    pub not_after: i64,
    /// Probes seeing it.
    pub observers: u64,
}

/// Port consistency of a gateway: the policy port, where the listener was observed, and what
/// the network does to each port from each vantage (counts of TCP outcomes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortConsistency {
    /// The port in the CEM policy (configuration).
    pub policy_port: u16,
    /// Where probes found the gateway's listener (`None`: nowhere).
    pub listener_port: Option<u16>,
    /// Internet vantages: port → TCP outcome → probes.
    pub internet: BTreeMap<u16, BTreeMap<String, u64>>,
    /// DMZ vantages: port → TCP outcome → probes.
    pub dmz: BTreeMap<u16, BTreeMap<String, u64>>,
}

/// One check across the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckSummary {
    /// Check name.
    pub check: String,
    /// Gateway or SMP.
    pub role: diagnose::Role,
    /// `host:port` checked.
    pub target: String,
    /// The fleet diagnosis label.
    pub diagnosis: String,
    /// The diagnosis with its explanation and remedy.
    pub detail: Diagnosis,
    /// Fresh results by verdict.
    pub verdicts: VerdictCounts,
    /// Probes reporting each finding code.
    pub codes: BTreeMap<String, u64>,
    /// Fresh results per site.
    pub sites: BTreeMap<String, VerdictCounts>,
    /// Certificates served, most observed first.
    pub certificates: Vec<CertificateSeen>,
    /// The thumbprint in the CEM policy (configuration), if set.
    pub policy_thumbprint: Option<String>,
    /// Fraction of probes (that saw a certificate) seeing the policy's certificate.
    pub thumbprint_match_ratio: Option<f64>,
    /// Policy port, observed listener, what the network does.
    pub ports: PortConsistency,
}

/// The fleet at a glance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetSummary {
    /// Probes by state.
    pub probes: ProbeCounts,
    /// Per check.
    pub checks: Vec<CheckSummary>,
    /// The management agents' own CEM state (probes that follow the agent's log).
    #[serde(default)]
    pub agents: AgentSummary,
}

fn bump(v: &mut VerdictCounts, s: Severity) {
    match s {
        Severity::Ok => v.ok += 1,
        Severity::Warn => v.warn += 1,
        Severity::Fail => v.fail += 1,
    }
}

impl Fleet {
    /// Loads the fleet from the store.
    pub fn load(conn: &Connection) -> Result<Self> {
        let mut fleet = Fleet::default();
        for p in crate::store::list_probes(conn)? {
            fleet.probes.insert(
                p.name.clone(),
                ProbeView {
                    labels: p.labels,
                    connected: false,
                    last_seen_ms: p.last_seen.unwrap_or(p.enrolled_at),
                    agent_version: p.agent_version,
                    revoked: p.revoked_at.is_some(),
                    latest: BTreeMap::new(),
                    connected_since_ms: 0,
                    agent: None,
                },
            );
        }
        for (probe, state, received_ms) in crate::store::agent_states(conn)? {
            if let Some(view) = fleet.probes.get_mut(&probe) {
                view.agent = Some(AgentView { state, received_ms });
            }
        }
        let mut stmt = conn.prepare(
            "SELECT l.probe, l.check_name, l.seq, l.round, l.produced_at,
                        (SELECT json_extract(e.value, '$.result') FROM json_each(r.results) AS e
                          WHERE json_extract(e.value, '$.check') = l.check_name LIMIT 1)
                   FROM latest AS l JOIN reports AS r ON r.id = l.report_id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let probe: String = row.get(0)?;
            let check: String = row.get(1)?;
            let seq: i64 = row.get(2)?;
            let round: Option<i64> = row.get(3)?;
            let produced: i64 = row.get(4)?;
            let Some(json) = row.get::<_, Option<String>>(5)? else {
                continue;
            };
            let Ok(result) = serde_json::from_str::<CheckResult>(&json) else {
                continue;
            };
            if let Some(view) = fleet.probes.get_mut(&probe) {
                view.latest.insert(
                    check,
                    Latest::from_result(seq as u64, round.map(|r| r as u64), produced, &result),
                );
            }
        }
        Ok(fleet)
    }

    /// Records a committed report.
    pub fn record(&mut self, probe: &str, report: &Report, now_ms: i64) {
        let view = self.probes.entry(probe.to_string()).or_default();
        view.last_seen_ms = now_ms;
        for entry in &report.results {
            let produced = entry.produced_at_ms as i64;
            let newer = view
                .latest
                .get(&entry.check)
                .is_none_or(|l| l.produced_at_ms <= produced);
            if newer {
                view.latest.insert(
                    entry.check.clone(),
                    Latest::from_result(report.seq, report.round, produced, &entry.result),
                );
            }
        }
    }

    /// Records the latest agent state of a probe (already bounded by [`AgentCemState::bounded`]).
    /// Returns the condition it replaces, if any.
    pub fn record_agent(
        &mut self,
        probe: &str,
        state: cemwatch_shared::AgentCemState,
        received_ms: i64,
    ) -> Option<&'static str> {
        let view = self.probes.entry(probe.to_string()).or_default();
        view.agent
            .replace(AgentView { state, received_ms })
            .map(|old| old.state.condition.as_str())
    }

    /// Whether a probe's results count.
    pub fn is_fresh(view: &ProbeView, now_ms: i64, stale_after: Duration) -> bool {
        !view.revoked
            && (view.connected || now_ms - view.last_seen_ms <= stale_after.as_millis() as i64)
    }

    /// The fresh observations of one check.
    pub fn observations<'a>(
        &'a self,
        check: &str,
        now_ms: i64,
        stale_after: Duration,
    ) -> Vec<Observation<'a>> {
        let mut out: Vec<Observation<'a>> = self
            .probes
            .iter()
            .filter(|(_, v)| Self::is_fresh(v, now_ms, stale_after))
            .filter_map(|(name, v)| {
                v.latest.get(check).map(|latest| Observation {
                    probe: name.as_str(),
                    site: v.labels.get("site").map(String::as_str).unwrap_or(""),
                    vantage: v.labels.get("vantage").map(String::as_str).unwrap_or(""),
                    latest,
                })
            })
            .collect();
        out.sort_by(|a, b| a.probe.cmp(b.probe));
        out
    }

    /// Summarises one check.
    pub fn check_summary(&self, config: &Config, check: &CheckConfig, now_ms: i64) -> CheckSummary {
        let obs = self.observations(&check.name, now_ms, config.server.stale_after);
        let mut verdicts = VerdictCounts::default();
        let mut codes: BTreeMap<String, u64> = BTreeMap::new();
        let mut sites: BTreeMap<String, VerdictCounts> = BTreeMap::new();
        let mut certs: BTreeMap<String, CertificateSeen> = BTreeMap::new();
        let mut ports = PortConsistency {
            policy_port: check.port,
            ..PortConsistency::default()
        };
        let policy = check.expect_thumbprint.as_ref().map(|t| t.to_string());
        let (mut with_cert, mut matching) = (0u64, 0u64);
        let mut listener_votes: BTreeMap<u16, u64> = BTreeMap::new();
        for o in &obs {
            let l = o.latest;
            bump(&mut verdicts, l.verdict);
            for code in &l.codes {
                *codes.entry(code.as_str().to_string()).or_default() += 1;
            }
            let site = if o.site.is_empty() {
                "(no site)"
            } else {
                o.site
            };
            bump(sites.entry(site.to_string()).or_default(), l.verdict);
            if let (Some(t), Some(na)) = (&l.thumbprint, l.not_after) {
                certs
                    .entry(t.clone())
                    .or_insert_with(|| CertificateSeen {
                        thumbprint_sha1: t.clone(),
                        not_after: na,
                        observers: 0,
                    })
                    .observers += 1;
                with_cert += 1;
                if policy.as_deref() == Some(t.as_str()) {
                    matching += 1;
                }
            }
            let table = if o.vantage == "dmz" {
                &mut ports.dmz
            } else {
                &mut ports.internet
            };
            *table
                .entry(l.port)
                .or_default()
                .entry(l.tcp_state.as_str().to_string())
                .or_default() += 1;
            for leg in &l.legacy {
                *table
                    .entry(leg.port)
                    .or_default()
                    .entry(leg.tcp.as_str().to_string())
                    .or_default() += 1;
                if leg.gateway_listener {
                    *listener_votes.entry(leg.port).or_default() += 1;
                }
            }
            if l.tls_completed {
                *listener_votes.entry(l.port).or_default() += 1;
            }
        }
        ports.listener_port = listener_votes
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(p, _)| *p);
        let mut certificates: Vec<CertificateSeen> = certs.into_values().collect();
        certificates.sort_by_key(|c| std::cmp::Reverse(c.observers));
        let detail = diagnose::diagnose(check.role, check.port, &obs, config.diagnosis);
        CheckSummary {
            check: check.name.clone(),
            role: check.role,
            target: format!("{}:{}", check.host, check.port),
            diagnosis: detail.diagnosis.clone(),
            detail,
            verdicts,
            codes,
            sites,
            certificates,
            thumbprint_match_ratio: match (&policy, with_cert) {
                (Some(_), n) if n > 0 => Some(matching as f64 / n as f64),
                _ => None,
            },
            policy_thumbprint: policy,
            ports,
        }
    }

    /// Summarises the fleet for the configured checks.
    pub fn summary(&self, config: &Config, now_ms: i64) -> FleetSummary {
        let stale_after = config.server.stale_after;
        let mut out = FleetSummary::default();
        for view in self.probes.values().filter(|v| !v.revoked) {
            if view.connected {
                out.probes.connected += 1;
            } else if Self::is_fresh(view, now_ms, stale_after) {
                out.probes.disconnected += 1;
            } else {
                out.probes.stale += 1;
            }
        }
        out.checks = config
            .checks
            .iter()
            .map(|c| self.check_summary(config, c, now_ms))
            .collect();
        out.agents = agents::summarize(self, config, now_ms);
        out
    }
}
