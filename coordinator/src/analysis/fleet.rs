//! The fleet view in memory: every probe with its labels, connection state and latest result
//! per check, loaded from the store at start (a restart loses nothing) and updated after each
//! commit. Summaries count only fresh results: a probe not heard from within the staleness
//! window is excluded and counted as stale. Each probe also carries the latest CEM state of the
//! management agent on its endpoint, when it follows the agent's log (see [`crate::analysis::agents`]).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::arrived::Arrived;
use cemwatch_shared::Severity;

use crate::analysis::agents;

use crate::analysis::diagnose;
use crate::analysis::diagnose::Observation;
use crate::analysis::nodes;
use crate::config::{CheckConfig, Config};
use crate::model::probe::AgentView;
use crate::model::probe::{ProbeState, Probes};
use crate::model::summary::CertificateSeen;
use crate::model::summary::CheckSummary;
use crate::model::summary::FleetSummary;
use crate::model::summary::PortConsistency;
use crate::model::summary::VerdictCounts;
use crate::model::summary::NO_SITE;

/// The fleet.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    /// Probes by name.
    pub probes: Probes,
}

fn bump(v: &mut VerdictCounts, s: Severity) {
    match s {
        Severity::Ok => v.ok += 1,
        Severity::Warn => v.warn += 1,
        Severity::Fail => v.fail += 1,
    }
}

impl Fleet {
    /// Records a committed report.
    /// A result newer than the one held is taken from the report
    /// ([`Latest::take`](crate::model::latest::Latest::take)), not
    /// copied, unless the report answers a round, whose results are kept apart once it is
    /// acknowledged: those are copied. Names are copied only for a probe or a check seen for
    /// the first time.
    pub fn record(&mut self, probe: &str, report: &mut Arrived, now_ms: i64) {
        let view = match self.probes.get_mut(probe) {
            Some(view) => view,
            None => self.probes.entry(probe.to_string()).or_default(),
        };
        view.last_seen_ms = now_ms;
        let answers_round = report.round.is_some();
        for entry in &mut report.results {
            let produced = entry.produced_at_ms as i64;
            let held = view.latest.get_mut(&entry.check);
            if held.as_ref().is_some_and(|l| l.produced_at_ms > produced) {
                continue;
            }
            let latest = if answers_round {
                entry.latest.clone()
            } else {
                entry.latest.take()
            };
            match held {
                Some(l) => *l = latest,
                None => {
                    view.latest.insert(entry.check.clone(), latest);
                }
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
            .filter(|(_, v)| v.is_fresh(now_ms, stale_after))
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
            let site = if o.site.is_empty() { NO_SITE } else { o.site };
            bump(sites.entry(site.to_string()).or_default(), l.verdict);
            // Each certificate the probe sees, at any node, counts the probe once; the probe
            // sees the policy's certificate when every node it reached serves it.
            let mut seen: BTreeMap<&str, i64> = BTreeMap::new();
            for n in &l.nodes {
                if let (Some(t), Some(na)) = (&n.thumbprint, n.not_after) {
                    seen.insert(t.as_str(), na);
                }
            }
            if let (true, Some(t), Some(na)) = (seen.is_empty(), &l.thumbprint, l.not_after) {
                seen.insert(t.as_str(), na);
            }
            for (t, na) in &seen {
                certs
                    .entry(t.to_string())
                    .or_insert_with(|| CertificateSeen {
                        thumbprint_sha1: t.to_string(),
                        not_after: *na,
                        observers: 0,
                        nodes: 0,
                    })
                    .observers += 1;
            }
            if !seen.is_empty() {
                with_cert += 1;
                if policy
                    .as_deref()
                    .is_some_and(|p| seen.len() == 1 && seen.contains_key(p))
                {
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
        ports.listeners = listener_votes;
        let probe_verdicts = if config.server.per_probe_metrics {
            obs.iter()
                .map(|o| (o.probe.to_string(), o.latest.verdict))
                .collect()
        } else {
            Vec::new()
        };
        let facts = diagnose::Facts::of(check.role, check.port, &obs, config.diagnosis);
        for t in &facts.nodes {
            if let Some(c) = t.thumbprint().and_then(|tp| certs.get_mut(tp)) {
                c.nodes += 1;
            }
        }
        let node_lines = nodes::summaries(&facts.nodes, config.server.max_sites);
        let mut certificates: Vec<CertificateSeen> = certs.into_values().collect();
        certificates.sort_by_key(|c| std::cmp::Reverse(c.observers));
        let detail = diagnose::diagnose_facts(&facts);
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
            nodes: node_lines,
            probe_verdicts,
        }
    }

    /// Summarises the fleet for the configured checks.
    pub fn summary(&self, config: &Config, now_ms: i64) -> FleetSummary {
        let stale_after = config.server.stale_after;
        let mut out = FleetSummary::default();
        for view in self.probes.values().filter(|v| !v.revoked) {
            match view.state(now_ms, stale_after) {
                ProbeState::Connected => out.probes.connected += 1,
                ProbeState::Disconnected => out.probes.disconnected += 1,
                ProbeState::Stale => out.probes.stale += 1,
            }
        }
        out.checks = config
            .checks
            .iter()
            .map(|c| self.check_summary(config, c, now_ms))
            .collect();
        out.agents = agents::summarize(&self.probes, config, now_ms);
        out
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    fn arrived(seq: u64, round: Option<u64>, produced: u64) -> Arrived {
        let mut report = crate::store::test_report(seq, "fail", produced);
        report.round = round;
        let mut arrived = Arrived::of_report(&report);
        arrived.results[0].latest.thumbprint = Some(format!("{seq:040X}"));
        arrived
    }

    /// A newer result is moved into the fleet view whole (the report keeps its scalar facts
    /// only); a round's answer is copied (the round keeps it too); an older result changes
    /// nothing and is left in the report.
    #[test]
    fn newer_results_are_taken_round_answers_copied_older_ones_left() {
        let mut fleet = Fleet::default();
        let mut first = arrived(1, None, 100);
        let whole = first.results[0].latest.clone();
        fleet.record("p", &mut first, 5);
        assert_eq!(fleet.probes["p"].latest["gateway"], whole);
        let left = &first.results[0].latest;
        assert_eq!(left.thumbprint, None, "taken");
        assert_eq!(
            (left.seq, left.verdict, left.tcp_state, left.tcp_ms),
            (1, whole.verdict, whole.tcp_state, whole.tcp_ms),
            "the scalar facts stay: the session's metrics read them after the commit"
        );
        assert_eq!(fleet.probes["p"].last_seen_ms, 5);

        let mut round = arrived(2, Some(9), 200);
        let answer = round.clone();
        fleet.record("p", &mut round, 6);
        assert_eq!(round, answer, "a round's answer stays whole");
        assert_eq!(
            fleet.probes["p"].latest["gateway"],
            answer.results[0].latest
        );

        let mut older = arrived(3, None, 150);
        let before = older.clone();
        fleet.record("p", &mut older, 7);
        assert_eq!(older, before, "an older result is not taken");
        assert_eq!(fleet.probes["p"].latest["gateway"].seq, 2);
        assert_eq!(fleet.probes["p"].last_seen_ms, 7);
    }
}
