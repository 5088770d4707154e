//! Judging a round: each answer against the expectation (the thumbprint, the port), the
//! dissenters grouped by site and code with the remedy for each.

use std::collections::BTreeMap;

use cemwatch_shared::{FindingCode, Severity, Thumbprint};

use crate::model::round::{DissentGroup, Dissenter, DissentingNode, Round, RoundStatus};

/// Why one node's answer (or the whole answer, for a result that names no nodes) does not
/// confirm the expectation: the thumbprint served there, then its failures.
fn node_dissent(
    round: &Round,
    thumbprint: Option<&str>,
    codes: &[FindingCode],
    why: &mut Vec<String>,
) {
    if let Some(expected) = &round.expect_thumbprint {
        let seen = thumbprint.and_then(|t| Thumbprint::parse(t).ok());
        let matches = match expected.kind() {
            cemwatch_shared::ThumbprintKind::Sha1 => seen.as_ref() == Some(expected),
            // The fleet view keeps SHA-1 thumbprints; a SHA-256 expectation is judged by the
            // probe's own thumbprint_mismatch finding against the policy instead.
            cemwatch_shared::ThumbprintKind::Sha256 => {
                !codes.contains(&FindingCode::ThumbprintMismatch)
            }
        };
        if !matches {
            why.push(FindingCode::ThumbprintMismatch.as_str().to_string());
        }
    }
    let ignore_policy_thumbprint = round.expect_thumbprint.is_some();
    for code in codes {
        if code.severity() != Severity::Fail {
            continue;
        }
        if ignore_policy_thumbprint && *code == FindingCode::ThumbprintMismatch {
            continue; // judged against the expectation above
        }
        if !why.contains(&code.as_str().to_string()) {
            why.push(code.as_str().to_string());
        }
    }
}

/// Judges each answer of a round against its expectation. With several addresses behind the
/// name, an answer confirms only when every node it reached (completed TLS with) serves what
/// is expected; nodes it could not reach dissent only when it reached none.
pub fn evaluate(round: &Round) -> RoundStatus {
    let mut confirmed = 0;
    let mut dissenters = Vec::new();
    let mut at_nodes: BTreeMap<String, DissentingNode> = BTreeMap::new();
    for (probe, latest) in &round.results {
        let mut why: Vec<String> = Vec::new();
        let mut nodes = Vec::new();
        let reached: Vec<_> = latest.nodes.iter().filter(|n| n.tls_completed).collect();
        if latest.nodes.len() > 1 && !reached.is_empty() {
            for n in reached {
                let mut here = Vec::new();
                node_dissent(round, n.thumbprint.as_deref(), &n.codes, &mut here);
                if here.is_empty() {
                    continue;
                }
                let d = at_nodes
                    .entry(n.address.clone())
                    .or_insert_with(|| DissentingNode {
                        address: n.address.clone(),
                        codes: Vec::new(),
                        thumbprints: Vec::new(),
                        probes: Vec::new(),
                    });
                for c in &here {
                    if !d.codes.contains(c) {
                        d.codes.push(c.clone());
                    }
                    if !why.contains(c) {
                        why.push(c.clone());
                    }
                }
                if let Some(t) = n.thumbprint.as_ref().filter(|t| !d.thumbprints.contains(t)) {
                    d.thumbprints.push(t.clone());
                }
                d.probes.push(probe.clone());
                nodes.push(n.address.clone());
            }
        } else {
            node_dissent(round, latest.thumbprint.as_deref(), &latest.codes, &mut why);
        }
        if let Some(port) = round.expect_port {
            if latest.port != port {
                why.push("wrong_port".to_string());
            }
        }
        if why.is_empty() {
            confirmed += 1;
        } else {
            dissenters.push(Dissenter {
                probe: probe.clone(),
                site: round.asked.get(probe).cloned().unwrap_or_default(),
                codes: why,
                thumbprint: latest.thumbprint.clone(),
                port: latest.port,
                tcp_state: latest.tcp_state.as_str().to_string(),
                nodes,
            });
        }
    }
    let mut groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for d in &dissenters {
        for code in &d.codes {
            groups
                .entry((d.site.clone(), code.clone()))
                .or_default()
                .push(d.probe.clone());
        }
    }
    let remedy_for = |code: &str| {
        match FindingCode::from_name(code) {
        Some(FindingCode::ThumbprintMismatch) => {
            "These probes see another certificate: a gateway node or load-balancer backend still serves the old one; import the new certificate there (Gateway Manager) and restart the service.".to_string()
        }
        Some(c) => c.remedy().to_string(),
        None if code == "wrong_port" => {
            "The CEM policy port (this check's port) is not the expected port: update the check and the CEM Settings policy together.".to_string()
        }
        None => String::new(),
    }
    };
    RoundStatus {
        round: round.id,
        check: round.check.clone(),
        started_at_ms: round.started_ms,
        expect_thumbprint: round.expect_thumbprint.as_ref().map(|t| t.to_string()),
        expect_port: round.expect_port,
        eligible: round.asked.len() as u64,
        reported: round.results.len() as u64,
        confirmed,
        dissenting: dissenters.len() as u64,
        pending: round
            .asked
            .keys()
            .filter(|p| !round.results.contains_key(*p))
            .cloned()
            .collect(),
        groups: groups
            .into_iter()
            .map(|((site, code), probes)| DissentGroup {
                remedy: remedy_for(&code),
                site,
                code,
                probes,
            })
            .collect(),
        dissenters,
        nodes: at_nodes.into_values().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::latest::{fixtures, Latest, NodeObservation};

    const NEW: &str = "1111111111111111111111111111111111111111";
    const OLD: &str = "2222222222222222222222222222222222222222";

    fn node(address: &str, thumbprint: Option<&str>, codes: &[FindingCode]) -> NodeObservation {
        fixtures::node(address, thumbprint.unwrap_or(""), "", codes)
    }

    fn answer(nodes: Vec<NodeObservation>) -> Latest {
        fixtures::of_nodes(nodes)
    }

    fn round(answers: Vec<(&str, Latest)>) -> Round {
        Round {
            id: 1,
            check: "gateway".into(),
            started_ms: 0,
            expect_thumbprint: Some(Thumbprint::parse(NEW).expect("thumbprint")),
            expect_port: None,
            asked: answers
                .iter()
                .map(|(p, _)| (p.to_string(), "lyon".to_string()))
                .collect(),
            results: answers
                .into_iter()
                .map(|(p, l)| (p.to_string(), l))
                .collect(),
        }
    }

    #[test]
    fn a_stale_node_makes_every_probe_reaching_it_dissent_and_is_named() {
        let stale = || {
            answer(vec![
                node("192.0.2.1", Some(NEW), &[]),
                node("192.0.2.2", Some(OLD), &[FindingCode::ThumbprintMismatch]),
            ])
        };
        let only_new = answer(vec![node("192.0.2.1", Some(NEW), &[])]);
        let status = evaluate(&round(vec![
            ("p1", stale()),
            ("p2", stale()),
            ("p3", only_new),
        ]));
        assert_eq!((status.confirmed, status.dissenting), (1, 2));
        assert_eq!(status.nodes.len(), 1);
        let n = &status.nodes[0];
        assert_eq!(n.address, "192.0.2.2");
        assert_eq!(n.codes, vec!["thumbprint_mismatch"]);
        assert_eq!(n.thumbprints, vec![OLD]);
        assert_eq!(n.probes, vec!["p1", "p2"]);
        assert_eq!(status.dissenters[0].nodes, vec!["192.0.2.2"]);
    }

    #[test]
    fn a_node_down_does_not_dissent_while_another_serves_the_new_certificate() {
        let a = answer(vec![
            node("192.0.2.1", Some(NEW), &[]),
            node("192.0.2.9", None, &[FindingCode::TcpRefused]),
        ]);
        let status = evaluate(&round(vec![("p1", a)]));
        assert_eq!((status.confirmed, status.dissenting), (1, 0));
        // Reaching no node at all is dissent, with the network's codes.
        let none = answer(vec![
            node("192.0.2.8", None, &[FindingCode::TcpRefused]),
            node("192.0.2.9", None, &[FindingCode::TcpRefused]),
        ]);
        let status = evaluate(&round(vec![("p1", none)]));
        assert_eq!(status.dissenting, 1);
        assert!(status.dissenters[0]
            .codes
            .contains(&"tcp_refused".to_string()));
    }
}
