//! The fleet view in memory: every probe with its labels, connection state and latest result
//! per check, loaded from the store at start (a restart loses nothing) and updated after each
//! commit. Summaries count only fresh results: a probe not heard from within the staleness
//! window is excluded and counted as stale.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Result;
use rusqlite::Connection;
use serde::Serialize;

use cemwatch_shared::wire::{Labels, Report};
use cemwatch_shared::{CheckResult, FindingCode, Severity};

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
}

impl Latest {
    fn from_result(seq: u64, round: Option<u64>, produced_at_ms: i64, r: &CheckResult) -> Self {
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
}

/// The fleet.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    /// Probes by name.
    pub probes: HashMap<String, ProbeView>,
}

/// Probe counts by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProbeCounts {
    /// With a live connection.
    pub connected: u64,
    /// Without a connection but heard from within the staleness window.
    pub disconnected: u64,
    /// Not heard from within the staleness window (results excluded).
    pub stale: u64,
}

/// Verdict counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerdictCounts {
    /// Ok.
    pub ok: u64,
    /// Warn.
    pub warn: u64,
    /// Fail.
    pub fail: u64,
}

/// A certificate served, and how many probes see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateSeen {
    /// SHA-1 thumbprint.
    pub thumbprint_sha1: String,
    /// Not after, Unix seconds.
    pub not_after: i64,
    /// Probes seeing it.
    pub observers: u64,
}

/// One check across the fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckSummary {
    /// Check name.
    pub check: String,
    /// Fresh results by verdict.
    pub verdicts: VerdictCounts,
    /// Probes reporting each finding code.
    pub codes: BTreeMap<String, u64>,
    /// Certificates served.
    pub certificates: Vec<CertificateSeen>,
}

/// The fleet at a glance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FleetSummary {
    /// Probes by state.
    pub probes: ProbeCounts,
    /// Per check.
    pub checks: Vec<CheckSummary>,
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
                },
            );
        }
        let mut stmt =
            conn.prepare("SELECT probe, check_name, seq, round, produced_at, result FROM latest")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let probe: String = row.get(0)?;
            let check: String = row.get(1)?;
            let seq: i64 = row.get(2)?;
            let round: Option<i64> = row.get(3)?;
            let produced: i64 = row.get(4)?;
            let json: String = row.get(5)?;
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

    /// Whether a probe's results count.
    pub fn is_fresh(view: &ProbeView, now_ms: i64, stale_after: Duration) -> bool {
        !view.revoked
            && (view.connected || now_ms - view.last_seen_ms <= stale_after.as_millis() as i64)
    }

    /// Summarises the fleet for the given checks (the configured ones, in order).
    pub fn summary(&self, checks: &[String], now_ms: i64, stale_after: Duration) -> FleetSummary {
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
        for check in checks {
            let mut s = CheckSummary {
                check: check.clone(),
                ..CheckSummary::default()
            };
            let mut certs: BTreeMap<String, CertificateSeen> = BTreeMap::new();
            for view in self.probes.values() {
                if !Self::is_fresh(view, now_ms, stale_after) {
                    continue;
                }
                let Some(latest) = view.latest.get(check) else {
                    continue;
                };
                match latest.verdict {
                    Severity::Ok => s.verdicts.ok += 1,
                    Severity::Warn => s.verdicts.warn += 1,
                    Severity::Fail => s.verdicts.fail += 1,
                }
                for code in &latest.codes {
                    *s.codes.entry(code.as_str().to_string()).or_default() += 1;
                }
                if let (Some(t), Some(na)) = (&latest.thumbprint, latest.not_after) {
                    certs
                        .entry(t.clone())
                        .or_insert_with(|| CertificateSeen {
                            thumbprint_sha1: t.clone(),
                            not_after: na,
                            observers: 0,
                        })
                        .observers += 1;
                }
            }
            s.certificates = certs.into_values().collect();
            s.certificates
                .sort_by_key(|c| std::cmp::Reverse(c.observers));
            out.checks.push(s);
        }
        out
    }
}
