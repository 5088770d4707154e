//! Judging a round: each answer against the expectation (the thumbprint, the port), the
//! dissenters grouped by site and code with the remedy for each.

use std::collections::BTreeMap;

use cemwatch_shared::{FindingCode, Severity, Thumbprint};

use crate::model::round::{DissentGroup, Dissenter, Round, RoundStatus};

/// Judges each answer of a round against its expectation.
pub fn evaluate(round: &Round) -> RoundStatus {
    let mut confirmed = 0;
    let mut dissenters = Vec::new();
    for (probe, latest) in &round.results {
        let mut why: Vec<String> = Vec::new();
        if let Some(expected) = &round.expect_thumbprint {
            let seen = latest
                .thumbprint
                .as_deref()
                .and_then(|t| Thumbprint::parse(t).ok());
            let matches = match expected.kind() {
                cemwatch_shared::ThumbprintKind::Sha1 => seen.as_ref() == Some(expected),
                // The fleet view keeps SHA-1 thumbprints; a SHA-256 expectation is judged by the
                // probe's own thumbprint_mismatch finding against the policy instead.
                cemwatch_shared::ThumbprintKind::Sha256 => {
                    !latest.codes.contains(&FindingCode::ThumbprintMismatch)
                }
            };
            if !matches {
                why.push(FindingCode::ThumbprintMismatch.as_str().to_string());
            }
        }
        if let Some(port) = round.expect_port {
            if latest.port != port {
                why.push("wrong_port".to_string());
            }
        }
        let ignore_policy_thumbprint = round.expect_thumbprint.is_some();
        for code in &latest.codes {
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
    }
}
