//! `cemwatch status` and `cemwatch verify`: the fleet at a glance for a person, and the
//! post-change verification that asks every eligible probe to check now and waits for a quorum.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use cemwatch_shared::Severity;

use crate::api::{RoundRequest, RoundStatus};
use crate::client::Api;
use crate::fleet::{CheckSummary, FleetSummary};

/// Exit code of `verify` and `status` on bad input.
pub const EXIT_BAD_INPUT: u8 = 3;

struct Paint(bool);

impl Paint {
    fn c(&self, code: &str, t: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{t}\x1b[0m")
        } else {
            t.to_string()
        }
    }
    fn sev(&self, s: Severity, t: &str) -> String {
        self.c(
            match s {
                Severity::Ok => "32",
                Severity::Warn => "33",
                Severity::Fail => "31",
            },
            t,
        )
    }
}

/// Whether to colour standard output.
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn days_left(not_after: i64) -> i64 {
    (not_after - crate::store::now_ms() / 1000).div_euclid(86_400)
}

fn render_ports(c: &CheckSummary) -> String {
    let side = |t: &BTreeMap<u16, BTreeMap<String, u64>>| {
        t.iter()
            .map(|(port, states)| {
                let s: Vec<String> = states.iter().map(|(k, v)| format!("{k} {v}")).collect();
                format!("{port} {}", s.join("/"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let listener = c
        .ports
        .listener_port
        .map(|p| p.to_string())
        .unwrap_or_else(|| "not found".into());
    let mut line = format!("policy {} · listener {listener}", c.ports.policy_port);
    if !c.ports.internet.is_empty() {
        line.push_str(&format!(" · internet: {}", side(&c.ports.internet)));
    }
    if !c.ports.dmz.is_empty() {
        line.push_str(&format!(" · dmz: {}", side(&c.ports.dmz)));
    }
    line
}

/// Renders the fleet for a person.
pub fn render_status(s: &FleetSummary, api: &str, color: bool) -> String {
    let p = Paint(color);
    let mut o = format!(
        "{}  {api}\nprobes: {} connected, {} disconnected, {} stale\n",
        p.c("1", "cemwatch status"),
        s.probes.connected,
        s.probes.disconnected,
        s.probes.stale
    );
    for c in &s.checks {
        let sev = c.detail.severity;
        o.push_str(&format!(
            "\n{}  {}  {}\n",
            p.c("1", &c.check),
            c.target,
            p.sev(
                sev,
                &format!("{}  {}", sev.as_str().to_uppercase(), c.diagnosis)
            )
        ));
        o.push_str(&format!("  {}\n", c.detail.summary));
        if !c.detail.remedy.is_empty() {
            o.push_str(&format!("  {} {}\n", p.c("2", "remedy:"), c.detail.remedy));
        }
        o.push_str(&format!(
            "  verdicts      ok {}  warn {}  fail {}\n",
            c.verdicts.ok, c.verdicts.warn, c.verdicts.fail
        ));
        if !c.codes.is_empty() {
            let codes: Vec<String> = c.codes.iter().map(|(k, v)| format!("{k} {v}")).collect();
            o.push_str(&format!("  findings      {}\n", codes.join(", ")));
        }
        for cert in &c.certificates {
            let policy = if c.policy_thumbprint.as_deref() == Some(cert.thumbprint_sha1.as_str()) {
                " (the policy's)"
            } else if c.policy_thumbprint.is_some() {
                " (NOT the policy's)"
            } else {
                ""
            };
            o.push_str(&format!(
                "  certificate   {}{policy}  seen by {} probes, {} days left\n",
                cert.thumbprint_sha1,
                cert.observers,
                days_left(cert.not_after)
            ));
        }
        if let Some(r) = c.thumbprint_match_ratio {
            o.push_str(&format!(
                "  policy match  {:.0}% of probes see the policy's certificate\n",
                r * 100.0
            ));
        }
        o.push_str(&format!("  ports         {}\n", render_ports(c)));
        let mut worst: Vec<(&String, &crate::fleet::VerdictCounts)> = c
            .sites
            .iter()
            .filter(|(_, v)| v.fail + v.warn > 0)
            .collect();
        worst.sort_by_key(|(_, v)| std::cmp::Reverse(v.fail * 1000 + v.warn));
        if !worst.is_empty() {
            let list: Vec<String> = worst
                .iter()
                .take(5)
                .map(|(site, v)| {
                    format!(
                        "{site} {} fail/{} warn of {}",
                        v.fail,
                        v.warn,
                        v.ok + v.warn + v.fail
                    )
                })
                .collect();
            o.push_str(&format!("  worst sites   {}\n", list.join(", ")));
        }
    }
    o
}

/// `cemwatch status`.
pub async fn status(api_url: &str, json: bool) -> Result<u8> {
    let api = Api::parse(api_url)?;
    let summary: FleetSummary = api.get("/api/v1/fleet").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", render_status(&summary, api_url, colour()));
    }
    let worst = summary
        .checks
        .iter()
        .map(|c| c.detail.severity)
        .max()
        .unwrap_or(Severity::Ok);
    Ok(worst.exit_code())
}

/// What `verify` concluded.
#[derive(Debug, Serialize)]
pub struct Verdict {
    /// `confirmed` or `not_confirmed`.
    pub result: &'static str,
    /// Why.
    pub reason: String,
    /// The quorum asked for.
    pub quorum: f64,
    /// Confirmations needed.
    pub needed: u64,
    /// The round as last seen.
    pub round: RoundStatus,
}

/// Options of `verify`.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// API address.
    pub api: String,
    /// Check.
    pub check: String,
    /// Expected thumbprint.
    pub expect_thumbprint: Option<String>,
    /// Expected port.
    pub expect_port: Option<u16>,
    /// Fraction of eligible probes that must confirm.
    pub quorum: f64,
    /// Deadline.
    pub timeout: Duration,
    /// JSON output.
    pub json: bool,
}

/// `cemwatch verify`: 0 confirmed, 1 not confirmed.
pub async fn verify(opts: VerifyOptions) -> Result<u8> {
    let api = Api::parse(&opts.api)?;
    let request = RoundRequest {
        check: opts.check.clone(),
        expect_thumbprint: opts.expect_thumbprint.clone(),
        expect_port: opts.expect_port,
    };
    let mut status: RoundStatus = api.post("/api/v1/rounds", &request).await?;
    let eligible = status.eligible;
    let needed = ((opts.quorum * eligible as f64) - 1e-9).ceil().max(1.0) as u64;
    let bar = if opts.json || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(eligible);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} round {prefix} [{bar:30}] {pos}/{len} reported · {msg} · {elapsed}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(status.round.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    };
    let deadline = Instant::now() + opts.timeout;
    let reason = loop {
        bar.set_position(status.reported);
        bar.set_message(format!(
            "{} confirmed, {} dissenting (need {needed} of {eligible})",
            status.confirmed, status.dissenting
        ));
        if eligible == 0 {
            break format!(
                "no connected probe runs check {:?}: nothing can confirm it",
                opts.check
            );
        }
        if status.confirmed >= needed {
            break String::new();
        }
        if status.dissenting > eligible - needed {
            break format!(
                "{} probes dissent: the quorum of {needed} of {eligible} can no longer be reached",
                status.dissenting
            );
        }
        if status.reported == eligible {
            break format!("every probe answered; only {} confirmed", status.confirmed);
        }
        if Instant::now() >= deadline {
            break format!(
                "deadline of {:?} passed with {} of {eligible} probes answered",
                opts.timeout, status.reported
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        status = api.get(&format!("/api/v1/rounds/{}", status.round)).await?;
    };
    bar.finish_and_clear();
    let ok = reason.is_empty();
    let verdict = Verdict {
        result: if ok { "confirmed" } else { "not_confirmed" },
        reason: if ok {
            format!(
                "{} of {eligible} probes confirmed (quorum {needed})",
                status.confirmed
            )
        } else {
            reason
        },
        quorum: opts.quorum,
        needed,
        round: status,
    };
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
    } else {
        print!("{}", render_verdict(&verdict, colour()));
    }
    Ok(if ok { 0 } else { 1 })
}

/// Renders the end of a verification for a person.
pub fn render_verdict(v: &Verdict, color: bool) -> String {
    let p = Paint(color);
    let r = &v.round;
    let mut o = String::new();
    let what = match (&r.expect_thumbprint, r.expect_port) {
        (Some(t), Some(port)) => format!("certificate {t} on port {port}"),
        (Some(t), None) => format!("certificate {t}"),
        (None, Some(port)) => format!("port {port}"),
        (None, None) => "a passing check".into(),
    };
    let head = if v.result == "confirmed" {
        p.sev(Severity::Ok, "CONFIRMED")
    } else {
        p.sev(Severity::Fail, "NOT CONFIRMED")
    };
    o.push_str(&format!("{head}  {}: {what}\n  {}\n", r.check, v.reason));
    o.push_str(&format!(
        "  round {}: {} eligible, {} answered, {} confirmed, {} dissenting, {} pending\n",
        r.round,
        r.eligible,
        r.reported,
        r.confirmed,
        r.dissenting,
        r.pending.len()
    ));
    if !r.groups.is_empty() {
        o.push_str("dissenters\n");
        for g in &r.groups {
            let site = if g.site.is_empty() {
                "(no site)"
            } else {
                &g.site
            };
            o.push_str(&format!(
                "  {site:<14} {:<24} {}\n",
                g.code,
                g.probes.join(", ")
            ));
            if !g.remedy.is_empty() {
                o.push_str(&format!(
                    "  {:<14} {} {}\n",
                    "",
                    p.c("2", "remedy:"),
                    g.remedy
                ));
            }
        }
    }
    if !r.pending.is_empty() && v.result != "confirmed" {
        o.push_str(&format!("  no answer from: {}\n", r.pending.join(", ")));
    }
    o
}
