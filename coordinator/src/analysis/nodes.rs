//! The nodes behind one gateway name, as the fleet sees them: each address (an Internet Gateway
//! node, a load balancer member, IPv4 beside IPv6) with the verdicts, codes and certificates of
//! the probes that reached it; and the certificates each site sees there, which tell a
//! TLS-inspecting proxy at some sites from the gateway itself. Pure functions of the latest
//! results and their sites.

use std::collections::{BTreeMap, BTreeSet};

use cemwatch_shared::{FindingCode, Severity};

use crate::model::latest::Latest;
use crate::model::summary::{NodeSummary, VerdictCounts, NO_SITE};

/// Codes by which a probe disowns the certificate it is served: not from a CA it trusts, or
/// not the one in the CEM policy (a proxy's substitute is one or the other).
const DISOWNED: [FindingCode; 4] = [
    FindingCode::CertUntrusted,
    FindingCode::ThumbprintMismatch,
    FindingCode::ChainInvalid,
    FindingCode::ChainIncomplete,
];

/// The address under which nodes past the cap are counted.
pub const OTHER_NODE: &str = "other";

/// One address as the fleet sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeTally {
    /// The IP address.
    pub address: String,
    /// Probes that tried it.
    pub probes: u64,
    /// Their verdicts there.
    pub verdicts: VerdictCounts,
    /// Finding codes there → probes.
    pub codes: BTreeMap<FindingCode, u64>,
    /// Certificates served there → probes.
    pub thumbprints: BTreeMap<String, u64>,
    /// Probes that completed TLS there.
    pub reached: u64,
    /// Other addresses → probes that tried both this one and that one.
    pub peers: BTreeMap<String, u64>,
}

impl NodeTally {
    /// The certificate most probes see there.
    pub fn thumbprint(&self) -> Option<&str> {
        self.thumbprints
            .iter()
            .max_by_key(|(t, n)| (**n, std::cmp::Reverse(t.as_str())))
            .map(|(t, _)| t.as_str())
    }

    /// Codes more than half of the probes that tried it see there.
    pub fn majority_codes(&self) -> BTreeSet<FindingCode> {
        self.codes
            .iter()
            .filter(|(_, n)| **n * 2 > self.probes)
            .map(|(c, _)| *c)
            .collect()
    }
}

fn bump(v: &mut VerdictCounts, s: Severity) {
    match s {
        Severity::Ok => v.ok += 1,
        Severity::Warn => v.warn += 1,
        Severity::Fail => v.fail += 1,
    }
}

/// Every address the results name, most tried first (then by address).
pub fn tally<'a>(results: impl IntoIterator<Item = &'a Latest>) -> Vec<NodeTally> {
    let mut by: BTreeMap<&str, NodeTally> = BTreeMap::new();
    for l in results {
        for n in &l.nodes {
            let others = l.nodes.iter().filter(|o| o.address != n.address);
            let t = by.entry(n.address.as_str()).or_insert_with(|| NodeTally {
                address: n.address.clone(),
                ..NodeTally::default()
            });
            t.probes += 1;
            bump(&mut t.verdicts, n.verdict);
            let codes: BTreeSet<&FindingCode> = n.codes.iter().collect();
            for c in codes {
                *t.codes.entry(*c).or_default() += 1;
            }
            if let Some(tp) = &n.thumbprint {
                *t.thumbprints.entry(tp.clone()).or_default() += 1;
            }
            if n.tls_completed {
                t.reached += 1;
            }
            for o in others {
                *t.peers.entry(o.address.clone()).or_default() += 1;
            }
        }
    }
    let mut out: Vec<NodeTally> = by.into_values().collect();
    out.sort_by(|a, b| b.probes.cmp(&a.probes).then(a.address.cmp(&b.address)));
    out
}

/// The per-node lines of a check's summary: at most `cap` addresses, the rest counted together
/// under [`OTHER_NODE`] (a hostile or confused probe can name any address).
pub fn summaries(tallies: &[NodeTally], cap: usize) -> Vec<NodeSummary> {
    let mut out: Vec<NodeSummary> = Vec::new();
    let mut other: Option<NodeSummary> = None;
    for (i, t) in tallies.iter().enumerate() {
        let line = NodeSummary {
            address: t.address.clone(),
            probes: t.probes,
            reached: t.reached,
            verdicts: t.verdicts.clone(),
            thumbprint: t.thumbprint().map(str::to_string),
            thumbprints: t.thumbprints.clone(),
            codes: t
                .codes
                .iter()
                .map(|(c, n)| (c.as_str().to_string(), *n))
                .collect(),
        };
        if i < cap.max(1) {
            out.push(line);
        } else {
            let o = other.get_or_insert_with(|| NodeSummary {
                address: OTHER_NODE.into(),
                ..NodeSummary::default()
            });
            o.probes += line.probes;
            o.reached += line.reached;
            o.verdicts.ok += line.verdicts.ok;
            o.verdicts.warn += line.verdicts.warn;
            o.verdicts.fail += line.verdicts.fail;
        }
    }
    out.extend(other);
    out
}

/// A node whose failures the other nodes of the name do not share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outlier {
    /// The address.
    pub address: String,
    /// The codes most of its probes see there that the healthy nodes do not show.
    pub codes: Vec<FindingCode>,
    /// Probes that tried it, and how many of them see the first code.
    pub probes: u64,
    /// Of them, those seeing its first code.
    pub seeing: u64,
    /// The certificate most of them see there.
    pub thumbprint: Option<String>,
}

/// The nodes that fail while others of the same name do not: `None` unless at least one node
/// shows codes (seen by most of its probes) that a healthy node does not, where most of the
/// failing node's probes tried that healthy node too. Without probes in common the two are
/// seen from different places (split DNS: the DMZ resolves the gateway's internal address,
/// the internet its public one), and the difference may be the path, not the node.
pub fn outliers(tallies: &[NodeTally]) -> Option<(Vec<Outlier>, Vec<&NodeTally>)> {
    let tried: Vec<&NodeTally> = tallies.iter().filter(|t| t.probes > 0).collect();
    if tried.len() < 2 {
        return None;
    }
    let majority: Vec<BTreeSet<FindingCode>> = tried.iter().map(|t| t.majority_codes()).collect();
    let common: BTreeSet<FindingCode> = majority
        .iter()
        .skip(1)
        .fold(majority[0].clone(), |acc, m| &acc & m);
    let mut faulty = Vec::new();
    let mut healthy = Vec::new();
    for (t, m) in tried.iter().zip(&majority) {
        let mut own: Vec<FindingCode> = m.difference(&common).copied().collect();
        if own.is_empty() {
            healthy.push(*t);
            continue;
        }
        own.sort_by_key(|c| (std::cmp::Reverse(c.severity()), *c));
        faulty.push(Outlier {
            address: t.address.clone(),
            seeing: t.codes.get(&own[0]).copied().unwrap_or(0),
            codes: own,
            probes: t.probes,
            thumbprint: t.thumbprint().map(str::to_string),
        });
    }
    let by_address: BTreeMap<&str, &NodeTally> =
        tried.iter().map(|t| (t.address.as_str(), *t)).collect();
    faulty.retain(|o| {
        let probes = by_address.get(o.address.as_str()).map(|t| &t.peers);
        healthy.iter().any(|h| {
            probes
                .and_then(|p| p.get(&h.address))
                .is_some_and(|both| both * 2 > o.probes)
        })
    });
    (!faulty.is_empty() && !healthy.is_empty()).then_some((faulty, healthy))
}

/// Sites whose probes see, at every node they reach, a certificate from another issuer than
/// the rest of the fleet sees at the same node, and never a certificate the rest sees: a
/// TLS-inspecting proxy on their path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interception {
    /// The intercepted sites.
    pub sites: Vec<String>,
    /// The issuers their probes see instead (the proxy's CA).
    pub issuers: Vec<String>,
    /// The issuer the rest of the fleet sees.
    pub fleet_issuers: Vec<String>,
    /// Probes at the intercepted sites.
    pub probes: u64,
}

/// The interception the results show, if any (see [`Interception`]). Needs at least one site
/// seeing the gateway's own certificate. The gateway's issuer at an address is the one the
/// probes judge good there; when they judge every issuer alike, the one most sites see, and
/// the intercepted sites must then be fewer than half of the sites that saw a certificate.
pub fn interception<'a>(
    results: impl IntoIterator<Item = (&'a str, &'a Latest)>,
) -> Option<Interception> {
    // Per address, issuer → (sites seeing it, sites judging it good there); per site, its
    // (address, issuer, thumbprint)s.
    type Sites<'a> = (BTreeSet<&'a str>, BTreeSet<&'a str>);
    let mut issuers_at: BTreeMap<&str, BTreeMap<&str, Sites<'a>>> = BTreeMap::new();
    type Seen<'a> = Vec<(&'a str, &'a str, &'a str)>;
    let mut by_site: BTreeMap<&str, (Seen<'a>, u64)> = BTreeMap::new();
    for (site, l) in results {
        let site = if site.is_empty() { NO_SITE } else { site };
        let entry = by_site.entry(site).or_default();
        entry.1 += 1;
        for n in &l.nodes {
            if let (Some(issuer), Some(tp)) = (n.issuer.as_deref(), n.thumbprint.as_deref()) {
                let sites = issuers_at
                    .entry(n.address.as_str())
                    .or_default()
                    .entry(issuer)
                    .or_default();
                sites.0.insert(site);
                if !n.codes.iter().any(|c| DISOWNED.contains(c)) {
                    sites.1.insert(site);
                }
                entry.0.push((n.address.as_str(), issuer, tp));
            }
        }
    }
    // The gateway's issuer at each address: the one most sites judge good there (a proxy's
    // certificate is untrusted, or not the policy's), then the one most sites see.
    let mut judged = true;
    let fleet_issuer: BTreeMap<&str, &str> = issuers_at
        .iter()
        .filter_map(|(addr, issuers)| {
            let best = issuers
                .iter()
                .max_by_key(|(i, (seen, good))| (good.len(), seen.len(), std::cmp::Reverse(**i)))?;
            let rivals_good = issuers
                .iter()
                .filter(|(i, _)| *i != best.0)
                .any(|(_, (_, good))| !good.is_empty());
            if best.1 .1.is_empty() || rivals_good {
                judged = false;
            }
            Some((*addr, *best.0))
        })
        .collect();
    let with_cert: Vec<&str> = by_site
        .iter()
        .filter(|(_, (seen, _))| !seen.is_empty())
        .map(|(s, _)| *s)
        .collect();
    let foreign = |seen: &Seen<'_>| {
        seen.iter()
            .all(|(addr, issuer, _)| fleet_issuer.get(addr) != Some(issuer))
    };
    let intercepted: Vec<&str> = with_cert
        .iter()
        .copied()
        .filter(|s| foreign(&by_site[s].0))
        .collect();
    // Without a judgement (every certificate judged alike), the majority is the gateway's:
    // the intercepted sites must then be a minority.
    let minority = intercepted.len() * 2 < with_cert.len();
    if intercepted.is_empty() || intercepted.len() == with_cert.len() || (!judged && !minority) {
        return None;
    }
    // What the other sites see: the gateway's own certificates.
    let genuine: BTreeSet<&str> = with_cert
        .iter()
        .filter(|s| !intercepted.contains(s))
        .flat_map(|s| by_site[s].0.iter().map(|(_, _, tp)| *tp))
        .collect();
    let substituted = intercepted
        .iter()
        .flat_map(|s| by_site[s].0.iter())
        .all(|(_, _, tp)| !genuine.contains(tp));
    if !substituted {
        return None;
    }
    let issuers: BTreeSet<&str> = intercepted
        .iter()
        .flat_map(|s| by_site[s].0.iter().map(|(_, i, _)| *i))
        .collect();
    let fleet_issuers: BTreeSet<&str> = fleet_issuer.values().copied().collect();
    Some(Interception {
        sites: intercepted.iter().map(|s| s.to_string()).collect(),
        issuers: issuers.iter().map(|s| s.to_string()).collect(),
        fleet_issuers: fleet_issuers.iter().map(|s| s.to_string()).collect(),
        probes: intercepted.iter().map(|s| by_site[s].1).sum(),
    })
}

/// A node that switched certificates: most of its probes now see `to`, where they saw `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// The check.
    pub check: String,
    /// The node's address.
    pub address: String,
    /// The certificate it served.
    pub from: String,
    /// The certificate it serves now.
    pub to: String,
}

/// The switches since `served` (check, address → the certificate most probes saw there), which
/// it then holds the new state of. A node first seen is recorded, not a switch; a node no
/// probe reaches keeps its last certificate (so that a node down and back with the same one is
/// no switch); [`OTHER_NODE`] is never one.
pub fn switches(
    served: &mut BTreeMap<(String, String), String>,
    check: &str,
    tallies: &[NodeTally],
) -> Vec<Switch> {
    let mut out = Vec::new();
    for t in tallies.iter().filter(|t| t.address != OTHER_NODE) {
        let Some(now) = t.thumbprint() else {
            continue;
        };
        let key = (check.to_string(), t.address.clone());
        match served.get(&key) {
            Some(before) if before != now => {
                out.push(Switch {
                    check: check.to_string(),
                    address: t.address.clone(),
                    from: before.clone(),
                    to: now.to_string(),
                });
                served.insert(key, now.to_string());
            }
            Some(_) => {}
            None => {
                served.insert(key, now.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::latest::fixtures::{node, of_nodes};

    fn latest(nodes: Vec<crate::model::latest::NodeObservation>) -> Latest {
        of_nodes(nodes)
    }

    const CA: &str = "CN=Contoso Issuing CA";
    const PROXY: &str = "CN=Fabrikam Inspection CA";

    #[test]
    fn a_node_with_the_old_certificate_is_the_outlier() {
        let fleet: Vec<Latest> = (0..6)
            .map(|_| {
                latest(vec![
                    node("192.0.2.1", "NEW", CA, &[]),
                    node("192.0.2.2", "OLD", CA, &[FindingCode::ThumbprintMismatch]),
                ])
            })
            .collect();
        let t = tally(&fleet);
        assert_eq!(t.len(), 2);
        let (faulty, healthy) = outliers(&t).expect("an outlier");
        assert_eq!(faulty.len(), 1);
        assert_eq!(faulty[0].address, "192.0.2.2");
        assert_eq!(faulty[0].codes, vec![FindingCode::ThumbprintMismatch]);
        assert_eq!((faulty[0].seeing, faulty[0].probes), (6, 6));
        assert_eq!(faulty[0].thumbprint.as_deref(), Some("OLD"));
        assert_eq!(healthy[0].address, "192.0.2.1");
    }

    #[test]
    fn nodes_that_agree_have_no_outlier() {
        // Both nodes expiring: a gateway problem, not a node's.
        let fleet: Vec<Latest> = (0..4)
            .map(|_| {
                latest(vec![
                    node("192.0.2.1", "A", CA, &[FindingCode::CertExpiring]),
                    node("192.0.2.2", "A", CA, &[FindingCode::CertExpiring]),
                ])
            })
            .collect();
        assert_eq!(outliers(&tally(&fleet)), None);
        // One address only: nothing to compare with.
        let one: Vec<Latest> = (0..4)
            .map(|_| {
                latest(vec![node(
                    "192.0.2.1",
                    "A",
                    CA,
                    &[FindingCode::CertExpired],
                )])
            })
            .collect();
        assert_eq!(outliers(&tally(&one)), None);
        // Split DNS: internet probes see the public address (filtered), the DMZ probe the
        // internal one (fine). No probe tried both: the path, not a node.
        let mut split: Vec<Latest> = (0..6)
            .map(|_| {
                latest(vec![node(
                    "203.0.113.10",
                    "",
                    "",
                    &[FindingCode::TcpFiltered],
                )])
            })
            .collect();
        split.push(latest(vec![node("10.0.0.10", "A", CA, &[])]));
        assert_eq!(outliers(&tally(&split)), None);
        // Every node failing differently from none healthy: not a node problem either.
        let all_bad: Vec<Latest> = (0..4)
            .map(|_| {
                latest(vec![
                    node("192.0.2.1", "", "", &[FindingCode::TcpRefused]),
                    node("192.0.2.2", "B", CA, &[FindingCode::CertExpired]),
                ])
            })
            .collect();
        assert_eq!(outliers(&tally(&all_bad)), None);
    }

    #[test]
    fn a_minority_of_probes_failing_at_a_node_is_not_the_node() {
        // One probe of five sees a failure at .2 (its own network): the node is fine.
        let mut fleet: Vec<Latest> = (0..4)
            .map(|_| {
                latest(vec![
                    node("192.0.2.1", "A", CA, &[]),
                    node("192.0.2.2", "A", CA, &[]),
                ])
            })
            .collect();
        fleet.push(latest(vec![
            node("192.0.2.1", "A", CA, &[]),
            node("192.0.2.2", "", "", &[FindingCode::TcpFiltered]),
        ]));
        assert_eq!(outliers(&tally(&fleet)), None);
    }

    #[test]
    fn a_node_switches_when_most_of_its_probes_see_the_new_certificate() {
        let fleet = |new_at_b: usize| -> Vec<Latest> {
            (0..4)
                .map(|i| {
                    let b = if i < new_at_b { "NEW" } else { "OLD" };
                    latest(vec![
                        node("192.0.2.1", "NEW", CA, &[]),
                        node("192.0.2.2", b, CA, &[]),
                    ])
                })
                .collect()
        };
        let mut served = BTreeMap::new();
        // First sight: recorded, no switch.
        assert!(switches(&mut served, "gw", &tally(&fleet(0))).is_empty());
        assert_eq!(served.len(), 2);
        // One probe of four sees the new one: the node still serves the old one for most.
        assert!(switches(&mut served, "gw", &tally(&fleet(1))).is_empty());
        let s = switches(&mut served, "gw", &tally(&fleet(3)));
        assert_eq!(
            s,
            vec![Switch {
                check: "gw".into(),
                address: "192.0.2.2".into(),
                from: "OLD".into(),
                to: "NEW".into(),
            }]
        );
        // Once.
        assert!(switches(&mut served, "gw", &tally(&fleet(4))).is_empty());
        // A node down keeps its certificate: back with the same one is no switch.
        let down: Vec<Latest> = (0..4)
            .map(|_| {
                latest(vec![
                    node("192.0.2.1", "NEW", CA, &[]),
                    node("192.0.2.2", "", "", &[FindingCode::TcpRefused]),
                ])
            })
            .collect();
        assert!(switches(&mut served, "gw", &tally(&down)).is_empty());
        assert!(switches(&mut served, "gw", &tally(&fleet(4))).is_empty());
        let probe = crate::model::event::node_event_probe("192.0.2.2");
        assert_eq!(probe, "node:192.0.2.2");
        assert!(cemwatch_shared::ProbeName::parse(&probe).is_err());
    }

    #[test]
    fn summaries_are_capped_with_the_rest_as_other() {
        let fleet: Vec<Latest> = (0..3)
            .map(|i| {
                latest(
                    (0..=i)
                        .map(|j| node(&format!("192.0.2.{j}"), "A", CA, &[]))
                        .collect(),
                )
            })
            .collect();
        let s = summaries(&tally(&fleet), 2);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].address, "192.0.2.0");
        assert_eq!(s[0].probes, 3);
        assert_eq!(s[2].address, OTHER_NODE);
        assert_eq!(s[2].probes, 1);
    }

    fn site_fleet(intercepted: &[&str]) -> Vec<(String, Latest)> {
        let mut out = Vec::new();
        for site in ["paris", "lyon", "berlin", "madrid", "rome"] {
            for _ in 0..2 {
                let l = if intercepted.contains(&site) {
                    latest(vec![
                        node("192.0.2.1", "MINTED", PROXY, &[FindingCode::CertUntrusted]),
                        node("192.0.2.2", "MINTED", PROXY, &[FindingCode::CertUntrusted]),
                    ])
                } else {
                    latest(vec![
                        node("192.0.2.1", "GW", CA, &[]),
                        node("192.0.2.2", "GW", CA, &[]),
                    ])
                };
                out.push((site.to_string(), l));
            }
        }
        out
    }

    #[test]
    fn a_site_behind_an_inspecting_proxy_is_intercepted() {
        let fleet = site_fleet(&["lyon"]);
        let i = interception(fleet.iter().map(|(s, l)| (s.as_str(), l))).expect("interception");
        assert_eq!(i.sites, vec!["lyon"]);
        assert_eq!(i.issuers, vec![PROXY]);
        assert_eq!(i.fleet_issuers, vec![CA]);
        assert_eq!(i.probes, 2);
        // Two sites of five: still a minority.
        let two = site_fleet(&["lyon", "rome"]);
        let i = interception(two.iter().map(|(s, l)| (s.as_str(), l))).expect("interception");
        assert_eq!(i.sites, vec!["lyon", "rome"]);
    }

    #[test]
    fn no_interception_without_a_foreign_issuer_or_a_majority() {
        assert_eq!(
            interception(site_fleet(&[]).iter().map(|(s, l)| (s.as_str(), l))),
            None
        );
        // Three sites of five, their probes disowning the proxy's certificate: still told.
        let most = site_fleet(&["lyon", "rome", "paris"]);
        let i = interception(most.iter().map(|(s, l)| (s.as_str(), l))).expect("interception");
        assert_eq!(i.sites, vec!["lyon", "paris", "rome"]);
        // When every probe accepts what it sees (a proxy CA in the probes' trust store, no
        // policy thumbprint), the issuer most sites see is taken for the gateway's: a minority
        // of sites is named; a majority behind proxies reads as the rest being intercepted,
        // and an even split is not told at all.
        let accepted = |fleet: Vec<(String, Latest)>| -> Vec<(String, Latest)> {
            fleet
                .into_iter()
                .map(|(s, mut l)| {
                    for n in &mut l.nodes {
                        n.codes.clear();
                    }
                    (s, l)
                })
                .collect()
        };
        let one = accepted(site_fleet(&["lyon"]));
        let i = interception(one.iter().map(|(s, l)| (s.as_str(), l))).expect("interception");
        assert_eq!(i.sites, vec!["lyon"]);
        let most = accepted(site_fleet(&["lyon", "rome", "paris"]));
        let i = interception(most.iter().map(|(s, l)| (s.as_str(), l))).expect("interception");
        assert_eq!(i.sites, vec!["berlin", "madrid"]);
        let mut even = accepted(site_fleet(&["lyon", "rome"]));
        even.retain(|(s, _)| s != "paris");
        assert_eq!(
            interception(even.iter().map(|(s, l)| (s.as_str(), l))),
            None
        );
        // A node serving another CA's certificate to everyone is the node, not the path.
        let fleet: Vec<(String, Latest)> = ["paris", "lyon", "rome"]
            .iter()
            .map(|s| {
                (
                    s.to_string(),
                    latest(vec![
                        node("192.0.2.1", "GW", CA, &[]),
                        node("192.0.2.2", "OTHER", PROXY, &[FindingCode::CertUntrusted]),
                    ]),
                )
            })
            .collect();
        assert_eq!(
            interception(fleet.iter().map(|(s, l)| (s.as_str(), l))),
            None
        );
    }
}
