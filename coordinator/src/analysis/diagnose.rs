//! Fleet diagnosis: from the fresh results of one check across the fleet, name the broken place
//! and the fix. The guide's point is that three places must agree (gateway listener, CEM policy,
//! perimeter firewall) and that the console shows nothing when they do not; the fleet's
//! vantages tell them apart:
//!
//! - every failing probe completes TLS and agrees on a certificate defect → `cert_problem:<code>`
//!   (naming the sites when only some see it, such as a root CA missing at one site);
//! - the gateway's certificate answers on a legacy port → `listener_on_legacy_port`;
//! - failures confined to a minority of sites → `local_network`;
//! - internet vantages fail while a DMZ vantage reaches the listener → `perimeter_blocked`;
//! - every vantage fails → `gateway_down`;
//! - DMZ checks of the SMP's ports fail → `gateway_cannot_reach_smp`;
//! - no fresh result → `no_data`.

use std::collections::{BTreeMap, BTreeSet};

use cemwatch_shared::{FindingCode, Severity, TcpState};

use crate::analysis::nodes;
use crate::model::check::Role;
use crate::model::check::Thresholds;
use crate::model::diagnosis::Diagnosis;
use crate::model::diagnosis::Kind;
use crate::model::diagnosis::NodeFault;
use crate::model::diagnosis::CERT_CODES;
use crate::model::latest::Latest;
use crate::model::summary::NO_SITE;

const NETWORK_CODES: [FindingCode; 6] = [
    FindingCode::DnsUnresolved,
    FindingCode::TcpRefused,
    FindingCode::TcpFiltered,
    FindingCode::TcpUnreachable,
    FindingCode::TlsHandshakeFailed,
    FindingCode::ListenerOnLegacyPort,
];

/// One probe's latest result, with its labels.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// Probe name.
    pub probe: &'a str,
    /// `site` label (empty when absent).
    pub site: &'a str,
    /// `vantage` label (`internet`, `dmz`, `lan`; empty when absent: counted as internet).
    pub vantage: &'a str,
    /// Its latest result for the check.
    pub latest: &'a Latest,
}

impl Observation<'_> {
    fn is_dmz(&self) -> bool {
        self.vantage == "dmz"
    }
    fn is_lan(&self) -> bool {
        self.vantage == "lan"
    }
    fn bad(&self) -> bool {
        self.latest.verdict != Severity::Ok
    }
    fn network_bad(&self) -> bool {
        self.latest.codes.iter().any(|c| NETWORK_CODES.contains(c))
    }
    fn reaches_listener(&self) -> bool {
        self.latest.reached_any()
    }
}

fn describe_states(obs: &[&Observation<'_>]) -> String {
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for o in obs {
        *states.entry(o.latest.tcp_state.as_str()).or_default() += 1;
    }
    states
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn sites_of<'a>(obs: impl Iterator<Item = &'a Observation<'a>>) -> BTreeSet<String> {
    obs.map(|o| {
        if o.site.is_empty() {
            NO_SITE.to_string()
        } else {
            o.site.to_string()
        }
    })
    .collect()
}

/// What every rule looks at: the fresh observations of one check and their split into failing
/// ones, failing on the network, and failing on the certificate. Computed once per diagnosis.
#[derive(Debug)]
pub struct Facts<'a> {
    /// The check's role.
    pub role: Role,
    /// The policy port (the check's port).
    pub port: u16,
    /// The thresholds.
    pub t: Thresholds,
    /// Every fresh observation.
    pub all: &'a [Observation<'a>],
    /// Those not ok.
    pub bad: Vec<&'a Observation<'a>>,
    /// Those failing with a network code.
    pub net_bad: Vec<&'a Observation<'a>>,
    /// Those failing without one (a certificate defect).
    pub cert_bad: Vec<&'a Observation<'a>>,
    /// Each address of the name as the observations saw it (the summary's node lines read it
    /// too).
    pub nodes: Vec<nodes::NodeTally>,
}

impl<'a> Facts<'a> {
    /// The facts of `observations`.
    pub fn of(role: Role, port: u16, observations: &'a [Observation<'a>], t: Thresholds) -> Self {
        let bad: Vec<&Observation<'_>> = observations.iter().filter(|o| o.bad()).collect();
        let net_bad = bad.iter().copied().filter(|o| o.network_bad()).collect();
        let cert_bad = bad.iter().copied().filter(|o| !o.network_bad()).collect();
        Self {
            role,
            port,
            t,
            all: observations,
            bad,
            net_bad,
            cert_bad,
            nodes: nodes::tally(observations.iter().map(|o| o.latest)),
        }
    }
}

fn make(kind: Kind, summary: String, remedy: String, sites: Vec<String>) -> Diagnosis {
    Diagnosis {
        diagnosis: kind.label(),
        kind,
        severity: kind.severity(),
        summary,
        remedy,
        sites,
        nodes: Vec::new(),
    }
}

/// A rule: the diagnosis when the facts are its case, `None` to let the next rule judge.
pub type Rule = for<'a> fn(&Facts<'a>) -> Option<Diagnosis>;

/// The rules in the order they are tried; the first that applies wins, and the last always
/// does. The order is the guide's triage order, with the two that look past one address
/// first: no data, an inspecting proxy at some sites (before `healthy`: a probe that trusts
/// the proxy's CA says ok where agents, which pin the gateway's thumbprint, fail), nothing
/// wrong, the SMP from the DMZ, one node of several (before the fleet-wide rules, whose
/// remedies would fix the wrong place),
/// the listener on a legacy port (it explains the network failures), a certificate defect
/// (when it accounts for at least as many probes as the network), then the network: a local
/// fault, the perimeter, the gateway itself.
pub const RULES: [Rule; 10] = [
    no_data,
    tls_intercepted,
    healthy,
    smp_unreachable,
    node_problem,
    listener_on_legacy_port,
    cert_problem,
    local_network,
    perimeter_blocked,
    gateway_down,
];

/// Diagnoses one check from its fresh observations.
pub fn diagnose(
    role: Role,
    port: u16,
    observations: &[Observation<'_>],
    t: Thresholds,
) -> Diagnosis {
    diagnose_facts(&Facts::of(role, port, observations, t))
}

/// Diagnoses one check from its facts, computed once by a caller that reads them too.
pub fn diagnose_facts(facts: &Facts<'_>) -> Diagnosis {
    RULES
        .iter()
        .find_map(|rule| rule(facts))
        .unwrap_or_else(|| fallback(facts))
}

/// Never reached ([`gateway_down`] always applies); kept so `diagnose` has no panic path.
fn fallback(f: &Facts<'_>) -> Diagnosis {
    make(
        Kind::GatewayDown,
        format!("{} of {} probes fail", f.bad.len(), f.all.len()),
        String::new(),
        vec![],
    )
}

/// No fresh result at all.
pub fn no_data(f: &Facts<'_>) -> Option<Diagnosis> {
    f.all.is_empty().then(|| {
        make(
            Kind::NoData,
            "no fresh result from any probe".into(),
            "Check that probes are connected (cemwatch probe list) and that their labels select this check.".into(),
            vec![],
        )
    })
}

/// Every fresh result is ok.
pub fn healthy(f: &Facts<'_>) -> Option<Diagnosis> {
    (!f.all.is_empty() && f.bad.is_empty()).then(|| {
        make(
            Kind::Healthy,
            format!("all {} probes ok", f.all.len()),
            String::new(),
            vec![],
        )
    })
}

/// An SMP check (from the DMZ) fails on the network: the gateway cannot reach the SMP.
pub fn smp_unreachable(f: &Facts<'_>) -> Option<Diagnosis> {
    if f.role != Role::Smp || f.net_bad.is_empty() {
        return None;
    }
    let (n, port) = (f.all.len(), f.port);
    let sites = sites_of(f.net_bad.iter().copied());
    Some(make(
        Kind::GatewayCannotReachSmp,
        format!(
            "{} of {n} DMZ probes cannot reach the SMP on port {port} ({})",
            f.net_bad.len(),
            describe_states(&f.net_bad)
        ),
        format!(
            "The gateway cannot reach the SMP: open TCP {port} (and 4726/443) from the Internet Gateway server to the SMP on the internal firewall (DMZ to internal), and check the NSAppIdentity credentials in Gateway Manager (Servers tab)."
        ),
        sites.into_iter().collect(),
    ))
}

/// Some sites see, at every node, a certificate from another issuer than the rest of the fleet
/// sees there, and never the gateway's own: a TLS-inspecting proxy on their path.
pub fn tls_intercepted(f: &Facts<'_>) -> Option<Diagnosis> {
    let i = nodes::interception(f.all.iter().map(|o| (o.site, o.latest)))?;
    let sites = i.sites.join(", ");
    let port = f.port;
    let mut d = make(
        Kind::TlsIntercepted,
        format!(
            "{} probes at {sites} see a certificate issued by {} where the rest of the fleet sees the gateway's own (issued by {}): TLS to the gateway is intercepted on {} path",
            i.probes,
            i.issuers.join("; "),
            i.fleet_issuers.join("; "),
            if i.sites.len() == 1 { "that site's" } else { "those sites'" }
        ),
        format!(
            "Exempt the gateway's name and port {port} from TLS inspection in the proxy or firewall at {sites} (a bypass rule for the gateway's FQDN, or for its addresses): agents pin the gateway's certificate and never accept one the proxy substitutes, so distributing the proxy's CA will not help and changing the gateway's certificate will not either."
        ),
        i.sites.clone(),
    );
    d.severity = Severity::Fail;
    Some(d)
}

/// Failures (or a certificate) that most probes see at some addresses of the name and not at
/// others: one node (or load balancer member) is broken, forgotten in a rollover or down.
pub fn node_problem(f: &Facts<'_>) -> Option<Diagnosis> {
    let (faulty, healthy) = nodes::outliers(&f.nodes)?;
    let port = f.port;
    let good: Vec<&str> = healthy.iter().map(|t| t.address.as_str()).collect();
    let good_cert = healthy.iter().find_map(|t| t.thumbprint());
    let describe = |o: &nodes::Outlier| {
        format!(
            "{} ({}: {} of {} probes)",
            o.address,
            o.codes
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            o.seeing,
            o.probes
        )
    };
    let remedy_of = |o: &nodes::Outlier| {
        let first = o.codes[0];
        if first == FindingCode::ListenerOnLegacyPort {
            format!(
                "On the gateway node at {}, set the agent listener port to {port} in Gateway Manager (General tab) and restart its Internet Gateway service.",
                o.address
            )
        } else if CERT_CODES.contains(&first) {
            let cert = good_cert
                .map(|t| format!(" (thumbprint {t}, which {} serves)", good.join(", ")))
                .unwrap_or_default();
            format!(
                "Import the gateway's current certificate{cert} on the gateway node at {} (Gateway Manager and the Internet Gateway's IIS binding), then restart its Internet Gateway service; behind a load balancer that terminates TLS, import it on the member or the virtual server at {}.",
                o.address, o.address
            )
        } else {
            format!(
                "The gateway node or load balancer member at {} does not answer as the others on {port}: start its Internet Gateway service and check that it listens on {port}, or take {} out of the name's DNS records (or the load balancer's pool) until it does.",
                o.address, o.address
            )
        }
    };
    let severity = faulty
        .iter()
        .flat_map(|o| o.codes.iter().map(|c| c.severity()))
        .max()
        .unwrap_or(Severity::Fail);
    let mut d = make(
        Kind::NodeProblem,
        format!(
            "{} of {} addresses of the gateway name fail where the others do not: {}; fine: {}",
            faulty.len(),
            faulty.len() + healthy.len(),
            faulty.iter().map(describe).collect::<Vec<_>>().join("; "),
            good.join(", ")
        ),
        faulty.iter().map(remedy_of).collect::<Vec<_>>().join(" "),
        vec![],
    );
    d.severity = severity;
    d.nodes = faulty
        .iter()
        .map(|o| NodeFault {
            address: o.address.clone(),
            codes: o.codes.iter().map(|c| c.as_str().to_string()).collect(),
            thumbprint: o.thumbprint.clone(),
            probes: o.probes,
        })
        .collect();
    Some(d)
}

/// The gateway's certificate answers on a legacy port, for at least a quorum of the network
/// failures: the listener never moved.
pub fn listener_on_legacy_port(f: &Facts<'_>) -> Option<Diagnosis> {
    let legacy: Vec<&Observation<'_>> = f
        .bad
        .iter()
        .copied()
        .filter(|o| o.latest.codes.contains(&FindingCode::ListenerOnLegacyPort))
        .collect();
    if legacy.is_empty() || (legacy.len() as f64) < f.t.quorum * f.net_bad.len().max(1) as f64 {
        return None;
    }
    let (n, port) = (f.all.len(), f.port);
    let ports: BTreeSet<u16> = legacy
        .iter()
        .flat_map(|o| {
            o.latest
                .legacy
                .iter()
                .filter(|l| l.gateway_listener)
                .map(|l| l.port)
        })
        .collect();
    let ports = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    Some(make(
        Kind::ListenerOnLegacyPort,
        format!(
            "{} of {n} probes find the gateway's listener on port {ports}, not on {port} (the CEM policy port)",
            legacy.len()
        ),
        format!(
            "Set the agent listener port in Gateway Manager (General tab) to {port} and restart the Internet Gateway service; or, if {ports} is intended, set the CEM Settings policy port to it. The perimeter firewall must allow the same port."
        ),
        vec![],
    ))
}

/// The failing probes complete TLS and agree on a certificate defect (at least as many as fail
/// on the network): the most reported code, naming the sites when only some see it.
pub fn cert_problem(f: &Facts<'_>) -> Option<Diagnosis> {
    if f.cert_bad.len() < f.net_bad.len() {
        return None;
    }
    let n = f.all.len();
    let mut counts: BTreeMap<FindingCode, usize> = BTreeMap::new();
    for o in &f.cert_bad {
        for code in o.latest.codes.iter().filter(|c| CERT_CODES.contains(c)) {
            *counts.entry(*code).or_default() += 1;
        }
    }
    let code = counts
        .iter()
        .max_by_key(|(code, count)| (**count, code.severity(), std::cmp::Reverse(**code)))
        .map(|(code, _)| *code)?;
    let seeing: Vec<&Observation<'_>> = f
        .cert_bad
        .iter()
        .copied()
        .filter(|o| o.latest.codes.contains(&code))
        .collect();
    let sites = sites_of(seeing.iter().copied());
    let partial = sites.len() < sites_of(f.all.iter()).len();
    let where_ = if partial {
        format!(
            " at {}",
            sites.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    } else {
        String::new()
    };
    let mut remedy = code.remedy().to_string();
    if partial && code == FindingCode::CertUntrusted {
        remedy = format!(
            "The root CA is missing from the trust store of endpoints{where_} only: distribute it there (Trusted Root Certification Authorities); the gateway is fine elsewhere."
        );
    }
    // The gateway sends the same chain everywhere: an issuer missing at some sites only is
    // missing from those sites' trust stores (the root CA, or an intermediate installed
    // there instead of being served).
    if partial && code == FindingCode::ChainIncomplete {
        remedy = format!(
            "An issuer of the gateway certificate is missing from the trust store of endpoints{where_} only: distribute the root CA there (Trusted Root Certification Authorities), and serve the intermediate CA certificates with the gateway certificate; the chain is complete elsewhere."
        );
    }
    Some(make(
        Kind::CertProblem(code),
        format!(
            "{} of {n} probes report {}{where_}",
            seeing.len(),
            code.as_str()
        ),
        remedy,
        if partial {
            sites.into_iter().collect()
        } else {
            vec![]
        },
    ))
}

/// How the internet vantages fare, for the network rules.
struct Internet<'a> {
    all: Vec<&'a Observation<'a>>,
    failing: Vec<&'a Observation<'a>>,
    sites: BTreeSet<String>,
    failing_sites: BTreeSet<String>,
}

impl<'a> Internet<'a> {
    fn of(f: &Facts<'a>) -> Self {
        let all: Vec<&Observation<'_>> = f
            .all
            .iter()
            .filter(|o| !o.is_dmz() && !o.is_lan())
            .collect();
        let failing = all.iter().copied().filter(|o| o.network_bad()).collect();
        let sites = sites_of(all.iter().copied());
        let mut failing_sites = BTreeSet::new();
        for site in &sites {
            let at: Vec<&&Observation<'_>> = all
                .iter()
                .filter(|o| (if o.site.is_empty() { NO_SITE } else { o.site }) == site)
                .collect();
            let failing = at.iter().filter(|o| o.network_bad()).count();
            if failing > 0 && failing as f64 >= f.t.quorum * at.len() as f64 {
                failing_sites.insert(site.clone());
            }
        }
        Self {
            all,
            failing,
            sites,
            failing_sites,
        }
    }

    /// Failures are local: not a majority of the internet probes, or confined to few sites.
    fn local(&self, t: Thresholds) -> bool {
        let majority_failing =
            !self.all.is_empty() && self.failing.len() as f64 > t.quorum * self.all.len() as f64;
        let few_sites = self.failing_sites.len() < self.sites.len()
            && self.failing_sites.len() as f64 <= t.local_sites_max * self.sites.len() as f64;
        !majority_failing || few_sites
    }
}

/// Network failures confined to a minority of probes or of sites: the gateway answers
/// elsewhere.
pub fn local_network(f: &Facts<'_>) -> Option<Diagnosis> {
    let internet = Internet::of(f);
    if !internet.local(f.t) {
        return None;
    }
    let sites: BTreeSet<String> = if internet.failing_sites.is_empty() {
        sites_of(f.net_bad.iter().copied())
    } else {
        internet.failing_sites
    };
    let list = sites.iter().cloned().collect::<Vec<_>>().join(", ");
    Some(make(
        Kind::LocalNetwork,
        format!(
            "{} of {} probes fail ({}), confined to {list}; the gateway answers elsewhere",
            f.net_bad.len(),
            f.all.len(),
            describe_states(&f.net_bad)
        ),
        format!(
            "Check the network at {list} (uplink, proxy, local firewall or DNS): the gateway works from the other sites."
        ),
        sites.into_iter().collect(),
    ))
}

/// Internet vantages fail while a DMZ vantage reaches the listener: the perimeter firewall.
pub fn perimeter_blocked(f: &Facts<'_>) -> Option<Diagnosis> {
    let internet = Internet::of(f);
    let dmz_reaches = f.all.iter().any(|o| o.is_dmz() && o.reaches_listener());
    if internet.local(f.t) || !dmz_reaches {
        return None;
    }
    let port = f.port;
    let states = describe_states(&internet.failing);
    let how = if internet
        .failing
        .iter()
        .all(|o| o.latest.tcp_state == TcpState::Filtered)
    {
        "drops"
    } else if internet
        .failing
        .iter()
        .all(|o| o.latest.tcp_state == TcpState::Refused)
    {
        "rejects (or translates to a closed port)"
    } else {
        "blocks"
    };
    Some(make(
        Kind::PerimeterBlocked,
        format!(
            "{} of {} internet probes fail on port {port} ({states}) while the DMZ probe reaches the listener: the perimeter firewall {how} it",
            internet.failing.len(),
            internet.all.len()
        ),
        format!(
            "Open TCP {port} inbound (internet to DMZ) to the gateway on the perimeter firewall; if it does NAT, translate {port} to the port the gateway listens on."
        ),
        vec![],
    ))
}

/// Whatever is left: the gateway does not answer, from any vantage.
pub fn gateway_down(f: &Facts<'_>) -> Option<Diagnosis> {
    let port = f.port;
    let dmz_seen = f.all.iter().any(|o| o.is_dmz());
    Some(make(
        Kind::GatewayDown,
        format!(
            "{} of {} probes cannot reach the gateway on port {port} ({}){}",
            f.net_bad.len(),
            f.all.len(),
            describe_states(&f.net_bad),
            if dmz_seen {
                ", from the DMZ as well"
            } else {
                "; no DMZ probe reports this check, so the perimeter cannot be ruled out"
            }
        ),
        format!(
            "Start the Internet Gateway service on the gateway server and check that it listens on {port} (Gateway Manager, General tab); Windows Event Viewer (Application log) shows why it does not start, most often a port conflict."
        ),
        vec![],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::latest::LegacyObservation;

    fn latest(codes: &[FindingCode], tcp: TcpState) -> Latest {
        let verdict = codes
            .iter()
            .map(|c| c.severity())
            .max()
            .unwrap_or(Severity::Ok);
        Latest {
            seq: 1,
            round: None,
            produced_at_ms: 0,
            verdict,
            codes: codes.to_vec(),
            thumbprint: None,
            not_after: None,
            tcp_ms: 1.0,
            tls_ms: 1.0,
            port: 8443,
            tcp_state: tcp,
            tls_completed: tcp == TcpState::Open
                && !codes.contains(&FindingCode::TlsHandshakeFailed),
            legacy: vec![],
            nodes: vec![],
        }
    }

    /// (probe, site, vantage, result)
    fn run(fleet: &[(&str, &str, &str, Latest)]) -> Diagnosis {
        let obs: Vec<Observation<'_>> = fleet
            .iter()
            .map(|(p, s, v, l)| Observation {
                probe: p,
                site: s,
                vantage: v,
                latest: l,
            })
            .collect();
        diagnose(Role::Gateway, 8443, &obs, Thresholds::default())
    }

    fn ok() -> Latest {
        latest(&[], TcpState::Open)
    }

    const SITES: [&str; 4] = ["eu", "us", "ap", "lyon"];

    fn internet(make: impl Fn(&str) -> Latest) -> Vec<(String, String, Latest)> {
        let mut out = Vec::new();
        for site in SITES {
            for i in 0..3 {
                out.push((format!("{site}-{i}"), site.to_string(), make(site)));
            }
        }
        out
    }

    fn with_dmz(inet: Vec<(String, String, Latest)>, dmz: Latest) -> Diagnosis {
        let mut all: Vec<(&str, &str, &str, Latest)> = inet
            .iter()
            .map(|(p, s, l)| (p.as_str(), s.as_str(), "internet", l.clone()))
            .collect();
        all.push(("dmz-1", "dmz", "dmz", dmz));
        run(&all)
    }

    /// A named case: (probe, site, vantage, result) rows and the role of the check.
    struct Case {
        name: &'static str,
        role: Role,
        rows: Vec<(String, String, String, Latest)>,
    }

    fn rows(
        inet: Vec<(String, String, Latest)>,
        dmz: Option<Latest>,
    ) -> Vec<(String, String, String, Latest)> {
        let mut out: Vec<_> = inet
            .into_iter()
            .map(|(p, s, l)| (p, s, "internet".to_string(), l))
            .collect();
        if let Some(d) = dmz {
            out.push(("dmz-1".into(), "dmz".into(), "dmz".into(), d));
        }
        out
    }

    impl Case {
        fn observations(&self) -> Vec<Observation<'_>> {
            self.rows
                .iter()
                .map(|(p, s, v, l)| Observation {
                    probe: p,
                    site: s,
                    vantage: v,
                    latest: l,
                })
                .collect()
        }
    }

    /// One case per rule, each the textbook case of exactly that rule.
    fn cases() -> Vec<Case> {
        let filtered = || latest(&[FindingCode::TcpFiltered], TcpState::Filtered);
        let mut legacy = latest(&[FindingCode::ListenerOnLegacyPort], TcpState::Refused);
        legacy.legacy = vec![LegacyObservation {
            port: 443,
            tcp: TcpState::Open,
            gateway_listener: true,
        }];
        vec![
            Case {
                name: "no_data",
                role: Role::Gateway,
                rows: vec![],
            },
            Case {
                name: "tls_intercepted",
                role: Role::Gateway,
                rows: rows(
                    internet(|site| {
                        if site == "lyon" {
                            with_nodes(&[(
                                "192.0.2.1",
                                "MINTED",
                                PROXY,
                                &[FindingCode::CertUntrusted],
                            )])
                        } else {
                            with_nodes(&[("192.0.2.1", "GW", CA, &[])])
                        }
                    }),
                    Some(with_nodes(&[("192.0.2.1", "GW", CA, &[])])),
                ),
            },
            Case {
                name: "healthy",
                role: Role::Gateway,
                rows: rows(internet(|_| ok()), Some(ok())),
            },
            Case {
                name: "node_problem",
                role: Role::Gateway,
                rows: rows(
                    internet(|_| {
                        with_nodes(&[
                            ("192.0.2.1", "GW", CA, &[]),
                            ("192.0.2.2", "OLD", CA, &[FindingCode::ThumbprintMismatch]),
                        ])
                    }),
                    Some(with_nodes(&[("192.0.2.1", "GW", CA, &[])])),
                ),
            },
            Case {
                name: "smp_unreachable",
                role: Role::Smp,
                rows: rows(
                    vec![],
                    Some(latest(&[FindingCode::TcpFiltered], TcpState::Filtered)),
                ),
            },
            Case {
                name: "listener_on_legacy_port",
                role: Role::Gateway,
                rows: rows(internet(|_| legacy.clone()), Some(legacy.clone())),
            },
            Case {
                name: "cert_problem",
                role: Role::Gateway,
                rows: rows(
                    internet(|_| latest(&[FindingCode::ThumbprintMismatch], TcpState::Open)),
                    Some(ok()),
                ),
            },
            Case {
                name: "local_network",
                role: Role::Gateway,
                rows: rows(
                    internet(|site| if site == "lyon" { filtered() } else { ok() }),
                    Some(ok()),
                ),
            },
            Case {
                name: "perimeter_blocked",
                role: Role::Gateway,
                rows: rows(internet(|_| filtered()), Some(ok())),
            },
            Case {
                name: "gateway_down",
                role: Role::Gateway,
                rows: rows(internet(|_| filtered()), Some(filtered())),
            },
        ]
    }

    /// Where the rule of this name stands in [`RULES`].
    fn position(name: &str) -> usize {
        let names = [
            "no_data",
            "tls_intercepted",
            "healthy",
            "smp_unreachable",
            "node_problem",
            "listener_on_legacy_port",
            "cert_problem",
            "local_network",
            "perimeter_blocked",
            "gateway_down",
        ];
        names.iter().position(|n| *n == name).expect("a rule")
    }

    fn rule_named(name: &str) -> Rule {
        RULES[position(name)]
    }

    #[test]
    fn each_rule_applies_to_its_own_case_and_the_first_that_applies_is_the_diagnosis() {
        for case in cases() {
            let obs = case.observations();
            let facts = Facts::of(case.role, 8443, &obs, Thresholds::default());
            let own = rule_named(case.name)(&facts)
                .unwrap_or_else(|| panic!("rule {} declines its own case", case.name));
            // Every rule before it in the order declines the case: that is why it wins.
            for (i, earlier) in RULES.iter().enumerate().take(position(case.name)) {
                assert!(
                    earlier(&facts).is_none(),
                    "rule #{i} takes the case of {} before it",
                    case.name
                );
            }
            assert_eq!(
                diagnose(case.role, 8443, &obs, Thresholds::default()),
                own,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn rules_decline_the_cases_they_do_not_own() {
        // A sample of refusals that carry the meaning of each rule.
        for case in cases() {
            let obs = case.observations();
            let facts = Facts::of(case.role, 8443, &obs, Thresholds::default());
            let applies = |name: &str| rule_named(name)(&facts).is_some();
            match case.name {
                "healthy" => {
                    assert!(
                        !applies("no_data")
                            && !applies("cert_problem")
                            && !applies("smp_unreachable")
                    );
                }
                "cert_problem" => {
                    assert!(!applies("listener_on_legacy_port") && !applies("healthy"));
                }
                "local_network" => assert!(
                    !applies("perimeter_blocked"),
                    "one site is not the perimeter"
                ),
                "perimeter_blocked" => {
                    assert!(!applies("local_network"), "every site is not local")
                }
                "gateway_down" => {
                    assert!(
                        !applies("perimeter_blocked"),
                        "the DMZ fails too: not the perimeter"
                    );
                    assert!(!applies("cert_problem"), "no probe completes TLS");
                }
                "smp_unreachable" => {
                    assert!(applies("gateway_down"), "the catch-all always applies")
                }
                _ => {}
            }
        }
    }

    #[test]
    fn healthy_and_no_data() {
        assert_eq!(with_dmz(internet(|_| ok()), ok()).kind, Kind::Healthy);
        assert_eq!(run(&[]).kind, Kind::NoData);
    }

    #[test]
    fn a_certificate_defect_everywhere_is_a_cert_problem() {
        let d = with_dmz(
            internet(|_| latest(&[FindingCode::ThumbprintMismatch], TcpState::Open)),
            latest(&[FindingCode::ThumbprintMismatch], TcpState::Open),
        );
        assert_eq!(d.kind, Kind::CertProblem(FindingCode::ThumbprintMismatch));
        assert_eq!(d.diagnosis, "cert_problem:thumbprint_mismatch");
        assert!(d.sites.is_empty());
        let d = with_dmz(
            internet(|_| latest(&[FindingCode::CertExpiring], TcpState::Open)),
            ok(),
        );
        assert_eq!(d.kind, Kind::CertProblem(FindingCode::CertExpiring));
        assert_eq!(d.severity, Severity::Warn);
    }

    #[test]
    fn an_untrusted_root_at_one_site_names_the_site_not_the_network() {
        let d = with_dmz(
            internet(|site| {
                if site == "lyon" {
                    latest(&[FindingCode::CertUntrusted], TcpState::Open)
                } else {
                    ok()
                }
            }),
            ok(),
        );
        assert_eq!(d.kind, Kind::CertProblem(FindingCode::CertUntrusted));
        assert_eq!(d.sites, vec!["lyon".to_string()]);
        assert!(d.remedy.contains("lyon"), "{}", d.remedy);
    }

    #[test]
    fn internet_failing_while_the_dmz_reaches_the_listener_is_the_perimeter() {
        let d = with_dmz(
            internet(|_| latest(&[FindingCode::TcpFiltered], TcpState::Filtered)),
            ok(),
        );
        assert_eq!(d.kind, Kind::PerimeterBlocked);
        assert!(d.summary.contains("drops"), "{}", d.summary);
        let d = with_dmz(
            internet(|_| latest(&[FindingCode::TcpRefused], TcpState::Refused)),
            ok(),
        );
        assert_eq!(d.kind, Kind::PerimeterBlocked);
        assert!(d.summary.contains("rejects"), "{}", d.summary);
    }

    #[test]
    fn every_vantage_failing_is_the_gateway() {
        let down = || latest(&[FindingCode::TcpRefused], TcpState::Refused);
        assert_eq!(
            with_dmz(internet(|_| down()), down()).kind,
            Kind::GatewayDown
        );
        // Without a DMZ probe, the perimeter cannot be told apart: the summary says so.
        let inet = internet(|_| down());
        let all: Vec<(&str, &str, &str, Latest)> = inet
            .iter()
            .map(|(p, s, l)| (p.as_str(), s.as_str(), "internet", l.clone()))
            .collect();
        let d = run(&all);
        assert_eq!(d.kind, Kind::GatewayDown);
        assert!(d.summary.contains("no DMZ probe"), "{}", d.summary);
    }

    #[test]
    fn failures_at_one_site_are_local() {
        let d = with_dmz(
            internet(|site| {
                if site == "ap" {
                    latest(&[FindingCode::TcpFiltered], TcpState::Filtered)
                } else {
                    ok()
                }
            }),
            ok(),
        );
        assert_eq!(d.kind, Kind::LocalNetwork);
        assert_eq!(d.sites, vec!["ap".to_string()]);
    }

    #[test]
    fn the_listener_on_a_legacy_port_is_named() {
        let legacy = || {
            let mut l = latest(
                &[FindingCode::ListenerOnLegacyPort, FindingCode::TcpRefused],
                TcpState::Refused,
            );
            l.legacy = vec![LegacyObservation {
                port: 443,
                tcp: TcpState::Open,
                gateway_listener: true,
            }];
            l
        };
        let d = with_dmz(internet(|_| legacy()), legacy());
        assert_eq!(d.kind, Kind::ListenerOnLegacyPort);
        assert!(d.summary.contains("443"), "{}", d.summary);
    }

    #[test]
    fn smp_checks_from_the_dmz_name_the_internal_firewall() {
        let bad = latest(&[FindingCode::TcpFiltered], TcpState::Filtered);
        let obs = [Observation {
            probe: "dmz-1",
            site: "dmz",
            vantage: "dmz",
            latest: &bad,
        }];
        let d = diagnose(Role::Smp, 4726, &obs, Thresholds::default());
        assert_eq!(d.kind, Kind::GatewayCannotReachSmp);
        assert!(d.remedy.contains("4726"));
    }

    /// A result with one entry per (address, thumbprint, issuer, codes) node.
    fn with_nodes(nodes: &[(&str, &str, &str, &[FindingCode])]) -> Latest {
        use crate::model::latest::fixtures;
        fixtures::of_nodes(
            nodes
                .iter()
                .map(|(address, tp, issuer, codes)| fixtures::node(address, tp, issuer, codes))
                .collect(),
        )
    }

    const CA: &str = "CN=Contoso Issuing CA";
    const PROXY: &str = "CN=Fabrikam Inspection CA";

    #[test]
    fn one_node_on_the_old_certificate_is_a_node_problem_not_the_policy() {
        let inet = internet(|_| {
            with_nodes(&[
                ("192.0.2.1", "NEW", CA, &[]),
                ("192.0.2.2", "OLD", CA, &[FindingCode::ThumbprintMismatch]),
            ])
        });
        let d = with_dmz(inet, with_nodes(&[("192.0.2.1", "NEW", CA, &[])]));
        assert_eq!(d.kind, Kind::NodeProblem, "{d:?}");
        assert_eq!(d.diagnosis, "node_problem");
        assert_eq!(d.severity, Severity::Fail);
        assert_eq!(d.nodes.len(), 1);
        assert_eq!(d.nodes[0].address, "192.0.2.2");
        assert_eq!(d.nodes[0].codes, vec!["thumbprint_mismatch"]);
        assert_eq!(d.nodes[0].thumbprint.as_deref(), Some("OLD"));
        assert!(
            d.summary
                .contains("192.0.2.2 (thumbprint_mismatch: 12 of 12 probes)"),
            "{}",
            d.summary
        );
        assert!(
            d.remedy.contains("on the gateway node at 192.0.2.2") && d.remedy.contains("NEW"),
            "{}",
            d.remedy
        );
        // The same defect at every node is the gateway's: the policy or the certificate.
        let all = internet(|_| {
            with_nodes(&[
                ("192.0.2.1", "OLD", CA, &[FindingCode::ThumbprintMismatch]),
                ("192.0.2.2", "OLD", CA, &[FindingCode::ThumbprintMismatch]),
            ])
        });
        let d = with_dmz(all, ok());
        assert_eq!(
            d.kind,
            Kind::CertProblem(FindingCode::ThumbprintMismatch),
            "{d:?}"
        );
    }

    #[test]
    fn one_node_down_names_the_node_not_the_perimeter() {
        let inet = internet(|_| {
            with_nodes(&[
                ("192.0.2.1", "A", CA, &[]),
                ("192.0.2.9", "", "", &[FindingCode::TcpRefused]),
            ])
        });
        let d = with_dmz(inet, ok());
        assert_eq!(d.kind, Kind::NodeProblem, "{d:?}");
        assert_eq!(d.nodes[0].address, "192.0.2.9");
        assert!(
            d.remedy.contains("load balancer member at 192.0.2.9"),
            "{}",
            d.remedy
        );
    }

    #[test]
    fn an_inspecting_proxy_at_one_site_is_interception_not_a_missing_root() {
        let inet = internet(|site| {
            if site == "lyon" {
                with_nodes(&[
                    ("192.0.2.1", "MINTED", PROXY, &[FindingCode::CertUntrusted]),
                    ("192.0.2.2", "MINTED", PROXY, &[FindingCode::CertUntrusted]),
                ])
            } else {
                with_nodes(&[("192.0.2.1", "GW", CA, &[]), ("192.0.2.2", "GW", CA, &[])])
            }
        });
        let d = with_dmz(inet, with_nodes(&[("192.0.2.1", "GW", CA, &[])]));
        assert_eq!(d.kind, Kind::TlsIntercepted, "{d:?}");
        assert_eq!(d.sites, vec!["lyon"]);
        assert!(d.summary.contains(PROXY), "{}", d.summary);
        assert!(
            d.remedy.contains("Exempt the gateway's name and port 8443"),
            "{}",
            d.remedy
        );
        assert!(!d.remedy.contains("Distribute"), "{}", d.remedy);
        // A root missing at one site is not interception: the same certificate, not trusted.
        let missing = internet(|site| {
            if site == "lyon" {
                with_nodes(&[("192.0.2.1", "GW", CA, &[FindingCode::CertUntrusted])])
            } else {
                with_nodes(&[("192.0.2.1", "GW", CA, &[])])
            }
        });
        let d = with_dmz(missing, ok());
        assert_eq!(
            d.kind,
            Kind::CertProblem(FindingCode::CertUntrusted),
            "{d:?}"
        );
    }

    #[test]
    fn labels_round_trip_and_cover_every_kind() {
        let labels = Kind::all_labels();
        assert_eq!(labels.len(), 9 + CERT_CODES.len());
        // Exhaustive: a new kind does not compile until it is listed here, and then fails until
        // it has a label.
        let listed = |k: Kind| match k {
            Kind::Healthy
            | Kind::CertProblem(_)
            | Kind::ListenerOnLegacyPort
            | Kind::PerimeterBlocked
            | Kind::GatewayDown
            | Kind::LocalNetwork
            | Kind::GatewayCannotReachSmp
            | Kind::NodeProblem
            | Kind::TlsIntercepted
            | Kind::NoData => k,
        };
        for k in [
            Kind::Healthy,
            Kind::CertProblem(FindingCode::CertExpired),
            Kind::ListenerOnLegacyPort,
            Kind::PerimeterBlocked,
            Kind::GatewayDown,
            Kind::LocalNetwork,
            Kind::GatewayCannotReachSmp,
            Kind::NodeProblem,
            Kind::TlsIntercepted,
            Kind::NoData,
        ] {
            assert!(!listed(k).label().is_empty(), "{k:?} has no label");
        }
        for l in &labels {
            assert_eq!(
                Kind::from_label(l).map(Kind::label).as_deref(),
                Some(l.as_str())
            );
        }
    }
}
