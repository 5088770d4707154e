//! The fleet at a glance, as the API serves it and `cemwatch status` and the metrics read it:
//! plain data, computed by `analysis` from the fleet view.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use cemwatch_shared::Severity;

use crate::model::diagnosis::Diagnosis;

/// The `site` of a probe without a `site` label, wherever sites are listed.
pub const NO_SITE: &str = "(no site)";

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
    /// Probes seeing it (at any node).
    pub observers: u64,
    /// Nodes (addresses of the name) most of whose probes see it: during a rollover, the
    /// nodes already switched to the new certificate and those still on the old one.
    #[serde(default)]
    pub nodes: u64,
}

/// One address of the gateway name (a gateway node, a load balancer member) as the fleet sees
/// it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSummary {
    /// The IP address (`other`: the nodes past `[server] max_sites`, counted together).
    pub address: String,
    /// Probes that tried it.
    pub probes: u64,
    /// Of them, those that completed TLS there.
    pub reached: u64,
    /// Their verdicts there.
    pub verdicts: VerdictCounts,
    /// The certificate most of them see there.
    pub thumbprint: Option<String>,
    /// Every certificate seen there → probes.
    pub thumbprints: BTreeMap<String, u64>,
    /// Finding codes there → probes.
    pub codes: BTreeMap<String, u64>,
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
    /// Where the listener was found: port → probes that completed TLS there (the policy port)
    /// or recognised the gateway's certificate there (a legacy port). `listener_port` is the
    /// most voted.
    #[serde(default)]
    pub listeners: BTreeMap<u16, u64>,
}

/// One check across the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckSummary {
    /// Check name.
    pub check: String,
    /// Gateway or SMP.
    pub role: crate::model::check::Role,
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
    /// Each address of the gateway name, most tried first.
    #[serde(default)]
    pub nodes: Vec<NodeSummary>,
    /// Each fresh probe's verdict, when `[server] per_probe_metrics` is on (for the per-probe
    /// series; not part of the API's summary).
    #[serde(skip)]
    pub probe_verdicts: Vec<(String, Severity)>,
}

impl CheckSummary {
    /// The port-consistency line, as `status` and the page show it: `policy 8443 · listener
    /// 8443 · internet: 8443 connected 20 · dmz: 8443 connected 2`.
    pub fn ports_line(&self) -> String {
        let side = |t: &BTreeMap<u16, BTreeMap<String, u64>>| {
            t.iter()
                .map(|(port, states)| {
                    let s: Vec<String> = states.iter().map(|(k, v)| format!("{k} {v}")).collect();
                    format!("{port} {}", s.join("/"))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let listener = self
            .ports
            .listener_port
            .map(|p| p.to_string())
            .unwrap_or_else(|| "not found".into());
        let mut line = format!("policy {} · listener {listener}", self.ports.policy_port);
        if !self.ports.internet.is_empty() {
            line.push_str(&format!(" · internet: {}", side(&self.ports.internet)));
        }
        if !self.ports.dmz.is_empty() {
            line.push_str(&format!(" · dmz: {}", side(&self.ports.dmz)));
        }
        line
    }

    /// The sites with failures or warnings, worst first (failures, then warnings), at most `n`.
    pub fn worst_sites(&self, n: usize) -> Vec<(&str, &VerdictCounts)> {
        let mut worst: Vec<(&str, &VerdictCounts)> = self
            .sites
            .iter()
            .filter(|(_, v)| v.fail + v.warn > 0)
            .map(|(s, v)| (s.as_str(), v))
            .collect();
        worst.sort_by_key(|(_, v)| std::cmp::Reverse((v.fail, v.warn)));
        worst.truncate(n);
        worst
    }

    /// Whether `thumbprint` is the one in the CEM policy (`None`: the check names none).
    pub fn is_policy(&self, thumbprint: &str) -> Option<bool> {
        self.policy_thumbprint
            .as_deref()
            .map(|p| p.eq_ignore_ascii_case(thumbprint))
    }
}

impl VerdictCounts {
    /// Results counted.
    pub fn total(&self) -> u64 {
        self.ok + self.warn + self.fail
    }
}

/// Whole days until `not_after` (Unix seconds) at `now_ms`, negative once expired.
pub fn days_left(not_after: i64, now_ms: i64) -> i64 {
    (not_after - now_ms / 1000).div_euclid(86_400)
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

/// One agent, as an example of a condition or a problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentExample {
    /// The probe on the agent's endpoint.
    pub probe: String,
    /// Its `site` label.
    pub site: String,
    /// The agent's condition (`cem_connected`, `handshake_error`, ...).
    pub condition: String,
    /// The gateway it logged, when it did.
    pub gateway: Option<String>,
    /// The port it logged, when it did.
    pub port: Option<u16>,
    /// The thumbprint it validated, when logged.
    pub thumbprint: Option<String>,
    /// Consecutive attempts (handshake errors, timeouts).
    pub attempts: Option<u32>,
    /// Since when, Unix ms.
    pub since_ms: u64,
}

/// Agents connected in CEM mode to one gateway and port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayAgents {
    /// The gateway host as logged (lower case), or `other`.
    pub gateway: String,
    /// The port as logged (`None`: the line named none, or the `other` entry).
    pub port: Option<u16>,
    /// Agents connected there.
    pub agents: u64,
    /// The sum of the pairs beyond [`MAX_GATEWAY_LABELS`].
    #[serde(default)]
    pub other: bool,
}

impl GatewayAgents {
    /// The `gateway` and `port` metric labels (`unknown` port when none was logged; `other`
    /// for both in the overflow entry).
    pub fn labels(&self) -> (String, String) {
        if self.other {
            return ("other".into(), "other".into());
        }
        let port = self
            .port
            .map(|p| p.to_string())
            .unwrap_or_else(|| "unknown".into());
        (self.gateway.clone(), port)
    }
}

/// The agents about one gateway check, against its CEM policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCheckSummary {
    /// The check.
    pub check: String,
    /// Its gateway host.
    pub gateway: String,
    /// The policy port (the check's port).
    pub policy_port: u16,
    /// The policy thumbprint (the check's `expect_thumbprint`).
    pub policy_thumbprint: Option<String>,
    /// Agents whose state is about this gateway.
    pub agents: u64,
    /// Agents that logged another port than the policy's.
    pub port_mismatch: u64,
    /// Agents that validated another thumbprint than the policy's.
    pub thumbprint_mismatch: u64,
    /// Some agents on the wrong port.
    pub wrong_port: Vec<AgentExample>,
    /// Some agents with a stale thumbprint.
    pub stale_thumbprint: Vec<AgentExample>,
}

/// The fleet's agents at a glance (fresh probes with a current agent state only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentSummary {
    /// Fresh probes reporting their agent's state.
    pub reporting: u64,
    /// Agents per condition; every condition is listed, zeros included.
    pub states: BTreeMap<String, u64>,
    /// Reporting probes that cannot read the agent's log (missing or unreadable).
    pub log_unavailable: u64,
    /// Agents connected in CEM mode per gateway and port, most first.
    pub connected: Vec<GatewayAgents>,
    /// Per gateway check: agents against its policy.
    pub checks: Vec<AgentCheckSummary>,
    /// Some agents in SSL handshake errors.
    pub handshake_errors: Vec<AgentExample>,
    /// Some agents in connection timeouts.
    pub connect_timeouts: Vec<AgentExample>,
    /// Some agents with no CEM activity.
    pub no_cem_activity: Vec<AgentExample>,
}

impl AgentSummary {
    /// The count of one condition.
    pub fn state(&self, name: &str) -> u64 {
        self.states.get(name).copied().unwrap_or(0)
    }
}
