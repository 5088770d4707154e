//! The management agents' own CEM state across the fleet. Probes that run on managed endpoints
//! follow the agent's `Agent.log` and send its state (`ToCoordinator::AgentState`) on every
//! connection and whenever it changes; the coordinator keeps the latest per probe (in the store
//! and in the fleet view) and aggregates the fresh ones here: how many agents are in each
//! condition, to which gateway and port the connected ones are connected, and which disagree
//! with the CEM policy as the configuration holds it (the gateway checks' `port` and
//! `expect_thumbprint`):
//!
//! - **wrong port**: the port the agent logged (connected, handshake error or timeout) is not the
//!   policy port of the gateway check whose host is the gateway it logged: the guide's silent
//!   port mismatch, which the SMP console never reports;
//! - **stale thumbprint**: the thumbprint the agent logged as validated is not the policy's: the
//!   agent works from an outdated CEM policy, or reached a gateway that still serves the old
//!   certificate.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use cemwatch_shared::{AgentCemState, AgentCondition, AgentLogStatus, SinceSource};

use crate::config::{CheckConfig, Config};
use crate::model::check::Role;
use crate::model::probe::{ProbeState, ProbeView, Probes};
use crate::model::summary::AgentCheckSummary;
use crate::model::summary::AgentExample;
use crate::model::summary::AgentSummary;
use crate::model::summary::GatewayAgents;

/// How long a probe that reconnected may take to send its agent's state again before the state
/// it sent on an earlier connection stops counting (it sends one within seconds when it still
/// follows the log; a probe restarted without `--agent-log` sends none).
pub const AGENT_STATE_GRACE: Duration = Duration::from_secs(60);
/// Most `gateway:port` pairs named in metrics and the API; the rest are summed into `other`
/// (the pairs come from endpoints' logs, so they must not grow the series without bound).
pub const MAX_GATEWAY_LABELS: usize = 20;
/// Most example agents listed per problem in the API and `cemwatch status`.
pub const MAX_EXAMPLES: usize = 5;
/// What to do about agents in SSL handshake errors (the guide: the port is right, the
/// certificate trust chain is not).
pub const REMEDY_HANDSHAKE_ERROR: &str = "The port is right, the certificate is not accepted: distribute the gateway certificate's root CA to these endpoints, or update the thumbprint in the CEM Settings policy to the certificate the gateway serves.";
/// What to do about agents in connection timeouts (the guide's silent port mismatch).
pub const REMEDY_CONNECT_TIMEOUT: &str = "Repeated timeouts with no SSL handshake: the port in the CEM Settings policy does not match the Gateway Manager listener port, or the perimeter firewall drops it; compare the policy's Port field with the listener (Gateway Manager, General tab).";
/// What to do about agents with no CEM activity.
pub const REMEDY_NO_CEM_ACTIVITY: &str = "No CEM connection attempt logged: check that the CEM Settings policy is applied (the resource's Applied Policies tab); if it is, the agent has not processed it yet: wait 5 minutes or trigger an update from the console.";
/// What to do about agents on another port than the policy's.
pub const REMEDY_WRONG_PORT: &str = "These agents use another port than the CEM Settings policy: they hold an outdated policy, or the policy's Port field is not what this check says; fix the policy and push a configuration update to the agents.";
/// What to do about agents that validated another thumbprint than the policy's.
pub const REMEDY_STALE_THUMBPRINT: &str = "These agents validated another certificate than the one in the CEM Settings policy: they hold an outdated policy (push a configuration update), or a gateway node still serves the old certificate.";

/// A host as compared and shown: lower case, without a trailing dot.
pub fn host_key(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a probe's agent state counts now: it has one, and it is not from an earlier
/// connection of a probe that has been connected for longer than [`AGENT_STATE_GRACE`] without
/// sending it again. (Freshness of the probe itself is [`ProbeView::is_fresh`].)
pub fn is_current(view: &ProbeView, now_ms: i64) -> bool {
    let Some(agent) = &view.agent else {
        return false;
    };
    let superseded = view.connected
        && agent.received_ms < view.connected_since_ms
        && now_ms - view.connected_since_ms > AGENT_STATE_GRACE.as_millis() as i64;
    !superseded
}

/// The gateway checks an agent's state is about: those whose host is the gateway it logged;
/// when it logged no host (a timeout line naming only a port), the one gateway check when there
/// is exactly one.
pub fn checks_for<'a>(
    condition: &AgentCondition,
    checks: &'a [CheckConfig],
) -> Vec<&'a CheckConfig> {
    if matches!(condition, AgentCondition::NoCemActivity) {
        return Vec::new();
    }
    let gateways = checks.iter().filter(|c| c.role == Role::Gateway);
    match condition.gateway() {
        Some(host) => {
            let host = host_key(host);
            gateways.filter(|c| host_key(&c.host) == host).collect()
        }
        None => {
            let all: Vec<&CheckConfig> = gateways.collect();
            if all.len() == 1 {
                all
            } else {
                Vec::new()
            }
        }
    }
}

/// Whether the agent's logged port differs from the check's policy port (unknown port: no).
pub fn port_mismatch(condition: &AgentCondition, check: &CheckConfig) -> bool {
    condition.port().is_some_and(|p| p != check.port)
}

/// Whether the thumbprint the agent validated differs from the check's policy thumbprint. Only
/// thumbprints of the same kind are compared (a SHA-1 policy against a SHA-1 log line).
pub fn thumbprint_mismatch(condition: &AgentCondition, check: &CheckConfig) -> bool {
    match (condition.validated_thumbprint(), &check.expect_thumbprint) {
        (Some(seen), Some(policy)) => seen.kind() == policy.kind() && seen != policy,
        _ => false,
    }
}

/// One agent as an example of its condition.
fn example(probe: &str, view: &ProbeView, state: &AgentCemState) -> AgentExample {
    {
        AgentExample {
            probe: probe.to_string(),
            site: view.labels.get("site").cloned().unwrap_or_default(),
            condition: state.condition.as_str().to_string(),
            gateway: state.condition.gateway().map(str::to_string),
            port: state.condition.port(),
            thumbprint: state
                .condition
                .validated_thumbprint()
                .map(|t| t.to_string()),
            attempts: state.condition.attempts(),
            since_ms: state.since_ms,
        }
    }
}

fn push_example(list: &mut Vec<AgentExample>, example: AgentExample) {
    if list.len() < MAX_EXAMPLES {
        list.push(example);
    }
}

/// Keeps the `cap` largest pairs by name and sums the rest into one `other` entry.
pub fn cap_gateways(
    counts: BTreeMap<(String, Option<u16>), u64>,
    cap: usize,
) -> Vec<GatewayAgents> {
    let mut pairs: Vec<((String, Option<u16>), u64)> = counts.into_iter().collect();
    pairs.sort_by(|(ka, na), (kb, nb)| nb.cmp(na).then_with(|| ka.cmp(kb)));
    let mut out: Vec<GatewayAgents> = Vec::new();
    let mut rest = 0u64;
    for (i, ((gateway, port), agents)) in pairs.into_iter().enumerate() {
        if i < cap {
            out.push(GatewayAgents {
                gateway,
                port,
                agents,
                other: false,
            });
        } else {
            rest += agents;
        }
    }
    if rest > 0 {
        out.push(GatewayAgents {
            gateway: "other".into(),
            port: None,
            agents: rest,
            other: true,
        });
    }
    out
}

/// The fresh probes with a current agent state, by name.
fn reporting<'a>(
    probes: &'a Probes,
    config: &Config,
    now_ms: i64,
) -> Vec<(&'a str, &'a ProbeView, &'a AgentCemState)> {
    let mut out: Vec<(&str, &ProbeView, &AgentCemState)> = probes
        .iter()
        .filter(|(_, v)| v.is_fresh(now_ms, config.server.stale_after))
        .filter(|(_, v)| is_current(v, now_ms))
        .filter_map(|(name, v)| v.agent.as_ref().map(|a| (name.as_str(), v, &a.state)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(b.0));
    out
}

/// Aggregates the agents of the fresh probes against the configured gateway checks.
pub fn summarize(probes: &Probes, config: &Config, now_ms: i64) -> AgentSummary {
    let mut out = AgentSummary {
        states: AgentCondition::NAMES
            .iter()
            .map(|n| (n.to_string(), 0))
            .collect(),
        ..AgentSummary::default()
    };
    let mut checks: Vec<AgentCheckSummary> = config
        .checks
        .iter()
        .filter(|c| c.role == Role::Gateway)
        .map(|c| AgentCheckSummary {
            check: c.name.clone(),
            gateway: host_key(&c.host),
            policy_port: c.port,
            policy_thumbprint: c.expect_thumbprint.as_ref().map(|t| t.to_string()),
            agents: 0,
            port_mismatch: 0,
            thumbprint_mismatch: 0,
            wrong_port: Vec::new(),
            stale_thumbprint: Vec::new(),
        })
        .collect();
    let mut connected: BTreeMap<(String, Option<u16>), u64> = BTreeMap::new();
    for (probe, view, state) in reporting(probes, config, now_ms) {
        out.reporting += 1;
        *out.states
            .entry(state.condition.as_str().to_string())
            .or_default() += 1;
        if state.log != AgentLogStatus::Following {
            out.log_unavailable += 1;
        }
        let example = || example(probe, view, state);
        match &state.condition {
            AgentCondition::CemConnected { gateway, port, .. } => {
                *connected.entry((host_key(gateway), *port)).or_default() += 1;
            }
            AgentCondition::HandshakeError { .. } => {
                push_example(&mut out.handshake_errors, example())
            }
            AgentCondition::ConnectTimeout { .. } => {
                push_example(&mut out.connect_timeouts, example())
            }
            AgentCondition::NoCemActivity => push_example(&mut out.no_cem_activity, example()),
        }
        for check in checks_for(&state.condition, &config.checks) {
            let Some(summary) = checks.iter_mut().find(|s| s.check == check.name) else {
                continue;
            };
            summary.agents += 1;
            if port_mismatch(&state.condition, check) {
                summary.port_mismatch += 1;
                push_example(&mut summary.wrong_port, example());
            }
            if thumbprint_mismatch(&state.condition, check) {
                summary.thumbprint_mismatch += 1;
                push_example(&mut summary.stale_thumbprint, example());
            }
        }
    }
    out.connected = cap_gateways(connected, MAX_GATEWAY_LABELS);
    out.checks = checks;
    out
}

/// One probe's agent state in the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentEntry {
    /// The probe on the agent's endpoint.
    pub probe: String,
    /// Its `site` label.
    pub site: String,
    /// Its `vantage` label.
    pub vantage: String,
    /// The probe's own state: `connected`, `disconnected` or `stale`.
    pub probe_state: String,
    /// Whether this state counts in the aggregates (a fresh probe, and not a state from an
    /// earlier connection that the probe has stopped sending).
    pub current: bool,
    /// When the coordinator received it, Unix ms.
    pub received_ms: i64,
    /// `cem_connected`, `handshake_error`, `connect_timeout` or `no_cem_activity`.
    pub condition: String,
    /// The gateway it logged.
    pub gateway: Option<String>,
    /// The port it logged.
    pub port: Option<u16>,
    /// The thumbprint it validated.
    pub thumbprint: Option<String>,
    /// Consecutive attempts (handshake errors, timeouts).
    pub attempts: Option<u32>,
    /// Since when, Unix ms.
    pub since_ms: u64,
    /// Where `since_ms` comes from.
    pub since_source: SinceSource,
    /// The log line that set the condition.
    pub line: Option<String>,
    /// Whether the probe can read the log.
    pub log: AgentLogStatus,
    /// Gateway checks whose policy port differs from the logged port.
    pub port_mismatch: Vec<String>,
    /// Gateway checks whose policy thumbprint differs from the validated one.
    pub thumbprint_mismatch: Vec<String>,
}

/// The probes (revoked ones excluded) that sent their agent's state, by name, after `after`,
/// at most `limit` (and whether more follow); `condition`, when given, keeps only that condition.
pub fn entries(
    probes: &Probes,
    config: &Config,
    now_ms: i64,
    condition: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> (Vec<AgentEntry>, bool) {
    let stale_after = config.server.stale_after;
    let matching = probes.iter().filter(|(_, v)| {
        !v.revoked
            && v.agent
                .as_ref()
                .is_some_and(|a| condition.is_none_or(|want| want == a.state.condition.as_str()))
    });
    let (page, more) = crate::model::page::by_name(matching, after, limit);
    let out: Vec<AgentEntry> = page
        .into_iter()
        .filter_map(|(name, v)| {
            let agent = v.agent.as_ref()?;
            let c = &agent.state.condition;
            let state = v.state(now_ms, stale_after);
            let fresh = state != ProbeState::Stale;
            let checks = checks_for(c, &config.checks);
            Some(AgentEntry {
                probe: name.clone(),
                site: v.labels.get("site").cloned().unwrap_or_default(),
                vantage: v.labels.get("vantage").cloned().unwrap_or_default(),
                probe_state: state.as_str().to_string(),
                current: fresh && is_current(v, now_ms),
                received_ms: agent.received_ms,
                condition: c.as_str().to_string(),
                gateway: c.gateway().map(str::to_string),
                port: c.port(),
                thumbprint: c.validated_thumbprint().map(|t| t.to_string()),
                attempts: c.attempts(),
                since_ms: agent.state.since_ms,
                since_source: agent.state.since_source,
                line: agent.state.line.clone(),
                log: agent.state.log.clone(),
                port_mismatch: checks
                    .iter()
                    .filter(|k| port_mismatch(c, k))
                    .map(|k| k.name.clone())
                    .collect(),
                thumbprint_mismatch: checks
                    .iter()
                    .filter(|k| thumbprint_mismatch(c, k))
                    .map(|k| k.name.clone())
                    .collect(),
            })
        })
        .collect();
    (out, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probes of a test fleet.
    #[derive(Default)]
    struct Fixture {
        probes: Probes,
    }
    use crate::model::probe::AgentView;
    use cemwatch_shared::agent_state::{MAX_EVIDENCE_LEN, MAX_GATEWAY_LEN};
    use cemwatch_shared::Thumbprint;
    use std::path::Path;

    const POLICY: &str = "5F3C9A0B1C2D3E4F5A6B7C8D9E0F1A2B3C4D5E6F";
    const OLD: &str = "3A7F9C2B11D04E5F66A7B8C9D0E1F2A3B4C5D6E7";
    const NOW: i64 = 1_764_000_000_000;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[server]\nstale_after = \"1m\"\n\n[[check]]\nname = \"gateway\"\nhost = \"Gateway.Example.com\"\nport = 8443\nexpect_thumbprint = \"{POLICY}\"\n\n[[check]]\nname = \"smp\"\nhost = \"smp.example.net\"\nport = 4726\nrole = \"smp\"\n{extra}"
        );
        Config::from_toml(&text, "test.toml", Path::new("/tmp")).expect("config")
    }

    fn connected(gateway: &str, port: Option<u16>, thumbprint: Option<&str>) -> AgentCondition {
        AgentCondition::CemConnected {
            gateway: gateway.into(),
            port,
            thumbprint: thumbprint.map(|t| Thumbprint::parse(t).expect("thumbprint")),
        }
    }

    fn timeout(gateway: Option<&str>, port: Option<u16>) -> AgentCondition {
        AgentCondition::ConnectTimeout {
            gateway: gateway.map(str::to_string),
            port,
            attempts: 3,
        }
    }

    fn state(condition: AgentCondition) -> AgentCemState {
        AgentCemState {
            condition,
            since_ms: 1_763_999_000_000,
            since_source: SinceSource::Logged,
            line: Some("a line".into()),
            log: AgentLogStatus::Following,
        }
    }

    fn add(fleet: &mut Fixture, name: &str, site: &str, condition: AgentCondition) {
        let view = fleet.probes.entry(name.to_string()).or_default();
        std::sync::Arc::make_mut(&mut view.labels).insert("site".into(), site.into());
        view.connected = true;
        view.connected_since_ms = NOW - 1_000;
        view.last_seen_ms = NOW;
        view.agent = Some(AgentView {
            state: state(condition),
            received_ms: NOW - 500,
        });
    }

    #[test]
    fn conditions_gateways_and_mismatches_are_counted() {
        let config = config("");
        let mut fleet = Fixture::default();
        add(
            &mut fleet,
            "a",
            "eu",
            connected("gateway.example.com", Some(8443), Some(POLICY)),
        );
        // Another spelling of the same host is the same gateway.
        add(
            &mut fleet,
            "b",
            "eu",
            connected("GATEWAY.example.com.", Some(8443), None),
        );
        add(
            &mut fleet,
            "c",
            "us",
            connected("gateway.example.com", Some(8443), Some(OLD)),
        );
        add(
            &mut fleet,
            "d",
            "us",
            connected("gateway.example.com", Some(443), None),
        );
        add(
            &mut fleet,
            "e",
            "ap",
            timeout(Some("gateway.example.com"), Some(443)),
        );
        // A timeout naming only the port is about the one gateway check.
        add(&mut fleet, "f", "ap", timeout(None, Some(443)));
        add(
            &mut fleet,
            "g",
            "ap",
            AgentCondition::HandshakeError {
                gateway: Some("gateway.example.com".into()),
                port: Some(8443),
                attempts: 2,
            },
        );
        add(&mut fleet, "h", "lyon", AgentCondition::NoCemActivity);
        // A gateway no check watches: counted as connected, judged against nothing.
        add(
            &mut fleet,
            "i",
            "lyon",
            connected("elsewhere.example.org", Some(443), Some(OLD)),
        );

        let s = summarize(&fleet.probes, &config, NOW);
        assert_eq!(s.reporting, 9);
        assert_eq!(s.state("cem_connected"), 5);
        assert_eq!(s.state("connect_timeout"), 2);
        assert_eq!(s.state("handshake_error"), 1);
        assert_eq!(s.state("no_cem_activity"), 1);
        assert_eq!(s.states.len(), AgentCondition::NAMES.len());
        assert_eq!(
            s.connected
                .iter()
                .map(|g| (g.labels(), g.agents))
                .collect::<Vec<_>>(),
            vec![
                (("gateway.example.com".into(), "8443".into()), 3),
                (("elsewhere.example.org".into(), "443".into()), 1),
                (("gateway.example.com".into(), "443".into()), 1),
            ]
        );
        assert_eq!(s.checks.len(), 1, "SMP checks are not agent gateways");
        let gw = &s.checks[0];
        assert_eq!(gw.check, "gateway");
        assert_eq!(gw.agents, 7, "a-g");
        assert_eq!(gw.port_mismatch, 3, "d, e, f");
        let wrong: Vec<&str> = gw.wrong_port.iter().map(|e| e.probe.as_str()).collect();
        assert_eq!(wrong, ["d", "e", "f"]);
        assert_eq!(gw.thumbprint_mismatch, 1);
        assert_eq!(gw.stale_thumbprint[0].probe, "c");
        assert_eq!(gw.stale_thumbprint[0].thumbprint.as_deref(), Some(OLD));
        assert_eq!(s.handshake_errors[0].probe, "g");
        assert_eq!(s.handshake_errors[0].attempts, Some(2));
        assert_eq!(s.connect_timeouts.len(), 2);
        assert_eq!(s.no_cem_activity[0].site, "lyon");
    }

    #[test]
    fn a_hostless_line_is_not_guessed_onto_one_of_several_gateways() {
        let config =
            config("\n[[check]]\nname = \"gateway-b\"\nhost = \"gw-b.example.com\"\nport = 9443\n");
        let mut fleet = Fixture::default();
        add(&mut fleet, "f", "ap", timeout(None, Some(443)));
        add(
            &mut fleet,
            "g",
            "ap",
            timeout(Some("gw-b.example.com"), Some(443)),
        );
        let s = summarize(&fleet.probes, &config, NOW);
        let by_check: BTreeMap<&str, (u64, u64)> = s
            .checks
            .iter()
            .map(|c| (c.check.as_str(), (c.agents, c.port_mismatch)))
            .collect();
        assert_eq!(by_check["gateway"], (0, 0));
        assert_eq!(by_check["gateway-b"], (1, 1));
    }

    #[test]
    fn thumbprints_are_compared_only_with_a_policy_of_the_same_kind() {
        let sha256 = "AB".repeat(32);
        let mut config = config("");
        let mut fleet = Fixture::default();
        add(
            &mut fleet,
            "c",
            "us",
            connected("gateway.example.com", Some(8443), Some(OLD)),
        );
        assert_eq!(
            summarize(&fleet.probes, &config, NOW).checks[0].thumbprint_mismatch,
            1
        );
        config.checks[0].expect_thumbprint = Some(Thumbprint::parse(&sha256).expect("sha256"));
        assert_eq!(
            summarize(&fleet.probes, &config, NOW).checks[0].thumbprint_mismatch,
            0
        );
        config.checks[0].expect_thumbprint = None;
        assert_eq!(
            summarize(&fleet.probes, &config, NOW).checks[0].thumbprint_mismatch,
            0
        );
    }

    #[test]
    fn stale_revoked_and_superseded_states_do_not_count() {
        let config = config("");
        let mut fleet = Fixture::default();
        add(
            &mut fleet,
            "fresh",
            "eu",
            timeout(Some("gateway.example.com"), Some(443)),
        );
        add(
            &mut fleet,
            "stale",
            "eu",
            timeout(Some("gateway.example.com"), Some(443)),
        );
        add(
            &mut fleet,
            "revoked",
            "eu",
            timeout(Some("gateway.example.com"), Some(443)),
        );
        add(
            &mut fleet,
            "old",
            "eu",
            timeout(Some("gateway.example.com"), Some(443)),
        );
        add(
            &mut fleet,
            "new",
            "eu",
            timeout(Some("gateway.example.com"), Some(443)),
        );
        let grace = AGENT_STATE_GRACE.as_millis() as i64;
        if let Some(v) = fleet.probes.get_mut("stale") {
            v.connected = false;
            v.last_seen_ms = NOW - 120_000;
        }
        if let Some(v) = fleet.probes.get_mut("revoked") {
            v.revoked = true;
        }
        // Reconnected long ago and never sent its state again: no longer following the log.
        let sent_on_an_earlier_connection = |v: &mut ProbeView, connected_since_ms: i64| {
            v.connected_since_ms = connected_since_ms;
            if let Some(a) = v.agent.as_mut() {
                a.received_ms = connected_since_ms - 1_000;
            }
        };
        if let Some(v) = fleet.probes.get_mut("old") {
            sent_on_an_earlier_connection(v, NOW - grace - 1);
        }
        // Reconnected a moment ago: its state will come; the last one counts meanwhile.
        if let Some(v) = fleet.probes.get_mut("new") {
            sent_on_an_earlier_connection(v, NOW - 10);
        }
        let s = summarize(&fleet.probes, &config, NOW);
        assert_eq!(s.reporting, 2, "fresh and new");
        assert_eq!(s.checks[0].port_mismatch, 2);
        let (listed, more) = entries(&fleet.probes, &config, NOW, None, None, 1000);
        assert!(!more);
        let current: Vec<(&str, bool, &str)> = listed
            .iter()
            .map(|e| (e.probe.as_str(), e.current, e.probe_state.as_str()))
            .collect();
        assert_eq!(
            current,
            vec![
                ("fresh", true, "connected"),
                ("new", true, "connected"),
                ("old", false, "connected"),
                ("stale", false, "stale"),
            ],
            "revoked probes are not listed"
        );
        assert_eq!(listed[0].port_mismatch, vec!["gateway".to_string()]);
        assert!(entries(
            &fleet.probes,
            &config,
            NOW,
            Some("cem_connected"),
            None,
            1000
        )
        .0
        .is_empty());
        assert_eq!(
            entries(
                &fleet.probes,
                &config,
                NOW,
                Some("connect_timeout"),
                None,
                1000
            )
            .0
            .len(),
            4
        );
    }

    #[test]
    fn gateway_pairs_are_capped_into_other() {
        let mut counts = BTreeMap::new();
        for i in 0..(MAX_GATEWAY_LABELS as u16 + 5) {
            counts.insert(
                (format!("gw{i:02}.example.com"), Some(8443)),
                1 + u64::from(i),
            );
        }
        let capped = cap_gateways(counts, MAX_GATEWAY_LABELS);
        assert_eq!(capped.len(), MAX_GATEWAY_LABELS + 1);
        assert_eq!(capped[0].gateway, "gw24.example.com", "the largest first");
        let other = capped.last().expect("other");
        assert!(other.other);
        assert_eq!(other.labels(), ("other".into(), "other".into()));
        assert_eq!(other.agents, 1 + 2 + 3 + 4 + 5, "the five smallest");
        let total: u64 = capped.iter().map(|g| g.agents).sum();
        assert_eq!(total, (1..=25).sum::<u64>(), "nothing lost");
        assert!(cap_gateways(BTreeMap::new(), 3).is_empty());
    }

    #[test]
    fn states_from_the_network_are_bounded() {
        let long_host = "h".repeat(1000);
        let mut s = state(connected(&long_host, Some(8443), None));
        s.line = Some("é".repeat(MAX_EVIDENCE_LEN));
        s.log = AgentLogStatus::Unreadable {
            error: "x".repeat(10_000),
        };
        let s = s.bounded();
        assert_eq!(s.condition.gateway().map(str::len), Some(MAX_GATEWAY_LEN));
        let line = s.line.expect("line");
        assert!(line.len() <= MAX_EVIDENCE_LEN && line.chars().all(|c| c == 'é'));
        match s.log {
            AgentLogStatus::Unreadable { error } => assert_eq!(error.len(), MAX_EVIDENCE_LEN),
            other => panic!("{other:?}"),
        }
    }
}
