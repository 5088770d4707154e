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

use serde::{Deserialize, Serialize};

use cemwatch_shared::{FindingCode, Severity, TcpState};

use crate::fleet::Latest;

/// What a check watches: the agent-facing gateway listener, or what the gateway needs from
/// inside (the SMP's 4726 and 443, checked from the DMZ).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The gateway listener agents connect to.
    #[default]
    Gateway,
    /// The SMP as the gateway reaches it from the DMZ.
    Smp,
}

/// Thresholds of the diagnosis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Fraction of probes that must agree for a fleet-wide diagnosis (default 0.5).
    pub quorum: f64,
    /// Largest fraction of sites whose failures still count as local (default 0.5).
    pub local_sites_max: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            quorum: 0.5,
            local_sites_max: 0.5,
        }
    }
}

/// The diagnosis of one check.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Everything right.
    Healthy,
    /// A certificate defect the failing probes agree on.
    CertProblem(FindingCode),
    /// The gateway answers on a legacy port, not the policy port.
    ListenerOnLegacyPort,
    /// Internet vantages fail; the DMZ reaches the listener.
    PerimeterBlocked,
    /// Nothing answers from any vantage.
    GatewayDown,
    /// Failures confined to a minority of sites.
    LocalNetwork,
    /// DMZ checks of the SMP fail.
    GatewayCannotReachSmp,
    /// No fresh result.
    #[default]
    NoData,
}

impl Kind {
    /// Parses a label back into a kind.
    pub fn from_label(label: &str) -> Option<Self> {
        if let Some(code) = label.strip_prefix("cert_problem:") {
            return FindingCode::from_name(code).map(Kind::CertProblem);
        }
        Some(match label {
            "healthy" => Kind::Healthy,
            "listener_on_legacy_port" => Kind::ListenerOnLegacyPort,
            "perimeter_blocked" => Kind::PerimeterBlocked,
            "gateway_down" => Kind::GatewayDown,
            "local_network" => Kind::LocalNetwork,
            "gateway_cannot_reach_smp" => Kind::GatewayCannotReachSmp,
            "no_data" => Kind::NoData,
            _ => return None,
        })
    }
}

/// Certificate codes a `cert_problem` can name: the served certificate's defects, and what the
/// TLS stage says about a gateway that answers (its key not proven, legacy TLS only, the
/// agent certificate refused or expiring).
pub const CERT_CODES: [FindingCode; 17] = [
    FindingCode::CertUntrusted,
    FindingCode::CertNameMismatch,
    FindingCode::CertSanMissing,
    FindingCode::ThumbprintMismatch,
    FindingCode::CertExpired,
    FindingCode::CertNotYetValid,
    FindingCode::CertExpiring,
    FindingCode::EkuMissingServerAuth,
    FindingCode::SignatureSha1,
    FindingCode::SignatureInsecure,
    FindingCode::KeyTooSmall,
    FindingCode::KeyNotRsa,
    FindingCode::HandshakeKeyMismatch,
    FindingCode::ClientCertRejected,
    FindingCode::ClientCertExpired,
    FindingCode::ClientCertExpiring,
    FindingCode::TlsLegacy,
];

const NETWORK_CODES: [FindingCode; 6] = [
    FindingCode::DnsUnresolved,
    FindingCode::TcpRefused,
    FindingCode::TcpFiltered,
    FindingCode::TcpUnreachable,
    FindingCode::TlsHandshakeFailed,
    FindingCode::ListenerOnLegacyPort,
];

impl Kind {
    /// The label: `healthy`, `cert_problem:thumbprint_mismatch`, `perimeter_blocked`, ...
    pub fn label(self) -> String {
        match self {
            Kind::Healthy => "healthy".into(),
            Kind::CertProblem(code) => format!("cert_problem:{}", code.as_str()),
            Kind::ListenerOnLegacyPort => "listener_on_legacy_port".into(),
            Kind::PerimeterBlocked => "perimeter_blocked".into(),
            Kind::GatewayDown => "gateway_down".into(),
            Kind::LocalNetwork => "local_network".into(),
            Kind::GatewayCannotReachSmp => "gateway_cannot_reach_smp".into(),
            Kind::NoData => "no_data".into(),
        }
    }

    /// Every label the state-set metric carries, in a stable order.
    pub fn all_labels() -> Vec<String> {
        let mut out: Vec<String> = [
            Kind::Healthy,
            Kind::ListenerOnLegacyPort,
            Kind::PerimeterBlocked,
            Kind::GatewayDown,
            Kind::LocalNetwork,
            Kind::GatewayCannotReachSmp,
            Kind::NoData,
        ]
        .iter()
        .map(|k| k.label())
        .collect();
        out.extend(CERT_CODES.iter().map(|c| Kind::CertProblem(*c).label()));
        out
    }

    /// The severity a dashboard colours it with.
    pub fn severity(self) -> Severity {
        match self {
            Kind::Healthy => Severity::Ok,
            Kind::CertProblem(code) => code.severity(),
            Kind::NoData => Severity::Warn,
            _ => Severity::Fail,
        }
    }
}

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
        self.latest.tls_completed
    }
}

/// A diagnosis with its explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// The label (`healthy`, `cert_problem:<code>`, ...).
    pub diagnosis: String,
    /// The kind.
    #[serde(skip)]
    pub kind: Kind,
    /// `ok`, `warn` or `fail`.
    pub severity: Severity,
    /// What the fleet sees, with counts.
    pub summary: String,
    /// What to do.
    pub remedy: String,
    /// The sites concerned, when the problem is not everywhere.
    pub sites: Vec<String>,
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
            "(no site)".to_string()
        } else {
            o.site.to_string()
        }
    })
    .collect()
}

/// Diagnoses one check from its fresh observations.
pub fn diagnose(
    role: Role,
    port: u16,
    observations: &[Observation<'_>],
    t: Thresholds,
) -> Diagnosis {
    let make = |kind: Kind, summary: String, remedy: String, sites: Vec<String>| Diagnosis {
        diagnosis: kind.label(),
        kind,
        severity: kind.severity(),
        summary,
        remedy,
        sites,
    };
    let n = observations.len();
    if n == 0 {
        return make(
            Kind::NoData,
            "no fresh result from any probe".into(),
            "Check that probes are connected (cemwatch probe list) and that their labels select this check.".into(),
            vec![],
        );
    }
    let bad: Vec<&Observation<'_>> = observations.iter().filter(|o| o.bad()).collect();
    if bad.is_empty() {
        return make(
            Kind::Healthy,
            format!("all {n} probes ok"),
            String::new(),
            vec![],
        );
    }
    let all_sites = sites_of(observations.iter());
    let net_bad: Vec<&Observation<'_>> = bad.iter().copied().filter(|o| o.network_bad()).collect();
    let cert_bad: Vec<&Observation<'_>> =
        bad.iter().copied().filter(|o| !o.network_bad()).collect();

    if role == Role::Smp && !net_bad.is_empty() {
        let sites = sites_of(net_bad.iter().copied());
        return make(
            Kind::GatewayCannotReachSmp,
            format!(
                "{} of {n} DMZ probes cannot reach the SMP on port {port} ({})",
                net_bad.len(),
                describe_states(&net_bad)
            ),
            format!(
                "The gateway cannot reach the SMP: open TCP {port} (and 4726/443) from the Internet Gateway server to the SMP on the internal firewall (DMZ to internal), and check the NSAppIdentity credentials in Gateway Manager (Servers tab)."
            ),
            sites.into_iter().collect(),
        );
    }

    // The gateway's certificate answering on a legacy port explains the network failures.
    let legacy: Vec<&Observation<'_>> = bad
        .iter()
        .copied()
        .filter(|o| o.latest.codes.contains(&FindingCode::ListenerOnLegacyPort))
        .collect();
    if !legacy.is_empty() && legacy.len() as f64 >= t.quorum * net_bad.len().max(1) as f64 {
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
        return make(
            Kind::ListenerOnLegacyPort,
            format!(
                "{} of {n} probes find the gateway's listener on port {ports}, not on {port} (the CEM policy port)",
                legacy.len()
            ),
            format!(
                "Set the agent listener port in Gateway Manager (General tab) to {port} and restart the Internet Gateway service; or, if {ports} is intended, set the CEM Settings policy port to it. The perimeter firewall must allow the same port."
            ),
            vec![],
        );
    }

    if cert_bad.len() >= net_bad.len() {
        let mut counts: BTreeMap<FindingCode, usize> = BTreeMap::new();
        for o in &cert_bad {
            for code in o.latest.codes.iter().filter(|c| CERT_CODES.contains(c)) {
                *counts.entry(*code).or_default() += 1;
            }
        }
        let top = counts
            .iter()
            .max_by_key(|(code, count)| (**count, code.severity(), std::cmp::Reverse(**code)))
            .map(|(code, _)| *code);
        if let Some(code) = top {
            let seeing: Vec<&Observation<'_>> = cert_bad
                .iter()
                .copied()
                .filter(|o| o.latest.codes.contains(&code))
                .collect();
            let sites = sites_of(seeing.iter().copied());
            let partial = sites.len() < all_sites.len();
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
            return make(
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
            );
        }
    }

    // Network failures: tell a local fault, the perimeter and the gateway apart.
    let internet: Vec<&Observation<'_>> = observations
        .iter()
        .filter(|o| !o.is_dmz() && !o.is_lan())
        .collect();
    let dmz_reaches: Vec<&Observation<'_>> = observations
        .iter()
        .filter(|o| o.is_dmz() && o.reaches_listener())
        .collect();
    let internet_failing: Vec<&Observation<'_>> = internet
        .iter()
        .copied()
        .filter(|o| o.network_bad())
        .collect();
    let internet_sites = sites_of(internet.iter().copied());
    let mut failing_sites = BTreeSet::new();
    for site in &internet_sites {
        let at: Vec<&&Observation<'_>> = internet
            .iter()
            .filter(|o| {
                (if o.site.is_empty() {
                    "(no site)"
                } else {
                    o.site
                }) == site
            })
            .collect();
        let failing = at.iter().filter(|o| o.network_bad()).count();
        if failing > 0 && failing as f64 >= t.quorum * at.len() as f64 {
            failing_sites.insert(site.clone());
        }
    }
    let majority_failing =
        !internet.is_empty() && internet_failing.len() as f64 > t.quorum * internet.len() as f64;
    let few_sites = failing_sites.len() < internet_sites.len()
        && failing_sites.len() as f64 <= t.local_sites_max * internet_sites.len() as f64;
    if !majority_failing || few_sites {
        let sites: BTreeSet<String> = if failing_sites.is_empty() {
            sites_of(net_bad.iter().copied())
        } else {
            failing_sites
        };
        let list = sites.iter().cloned().collect::<Vec<_>>().join(", ");
        return make(
            Kind::LocalNetwork,
            format!(
                "{} of {n} probes fail ({}), confined to {list}; the gateway answers elsewhere",
                net_bad.len(),
                describe_states(&net_bad)
            ),
            format!(
                "Check the network at {list} (uplink, proxy, local firewall or DNS): the gateway works from the other sites."
            ),
            sites.into_iter().collect(),
        );
    }
    if !dmz_reaches.is_empty() {
        let states = describe_states(&internet_failing);
        let how = if internet_failing
            .iter()
            .all(|o| o.latest.tcp_state == TcpState::Filtered)
        {
            "drops"
        } else if internet_failing
            .iter()
            .all(|o| o.latest.tcp_state == TcpState::Refused)
        {
            "rejects (or translates to a closed port)"
        } else {
            "blocks"
        };
        return make(
            Kind::PerimeterBlocked,
            format!(
                "{} of {} internet probes fail on port {port} ({states}) while the DMZ probe reaches the listener: the perimeter firewall {how} it",
                internet_failing.len(),
                internet.len()
            ),
            format!(
                "Open TCP {port} inbound (internet to DMZ) to the gateway on the perimeter firewall; if it does NAT, translate {port} to the port the gateway listens on."
            ),
            vec![],
        );
    }
    let dmz_seen = observations.iter().any(|o| o.is_dmz());
    make(
        Kind::GatewayDown,
        format!(
            "{} of {n} probes cannot reach the gateway on port {port} ({}){}",
            net_bad.len(),
            describe_states(&net_bad),
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
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::LegacyObservation;

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

    #[test]
    fn labels_round_trip_and_cover_every_kind() {
        let labels = Kind::all_labels();
        assert_eq!(labels.len(), 7 + CERT_CODES.len());
        for l in &labels {
            assert_eq!(
                Kind::from_label(l).map(Kind::label).as_deref(),
                Some(l.as_str())
            );
        }
    }
}
