//! `cemwatch status` and `cemwatch verify`: the fleet at a glance for a person (the checks, then
//! the management agents' own CEM state), and the post-change verification that asks every
//! eligible probe to check now and waits for a quorum.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;

use cemwatch_shared::Severity;

use crate::analysis::agents;

use cemwatch_transport::host::Paint;

use crate::cli::client::{Api, ApiOptions, Posted};
use crate::model::round::{RoundRequest, RoundStatus};
use crate::model::summary::FleetSummary;
use crate::model::summary::{AgentExample, AgentSummary};

/// Exit code of `verify` and `status` on bad input.
pub const EXIT_BAD_INPUT: u8 = 3;

fn days_left(not_after: i64) -> i64 {
    crate::model::summary::days_left(not_after, crate::store::now_ms())
}

/// A duration in a few characters (`45s`, `12m`, `3h`, `2d`).
fn short_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7_199 => format!("{}m", s / 60),
        7_200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn endpoint(gateway: Option<&str>, port: Option<u16>) -> String {
    match (gateway, port) {
        (Some(g), Some(p)) => format!("{g}:{p}"),
        (Some(g), None) => g.to_string(),
        (None, Some(p)) => format!("port {p}"),
        (None, None) => String::new(),
    }
}

/// Groups `(key, item)` pairs by key, keys in first-seen order: `key: a, b; other: c` (no key:
/// just the items).
fn grouped(pairs: Vec<(String, String)>) -> String {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (key, item) in pairs {
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, items)) => items.push(item),
            None => groups.push((key, vec![item])),
        }
    }
    groups
        .into_iter()
        .map(|(key, items)| {
            if key.is_empty() {
                items.join(", ")
            } else {
                format!("{key}: {}", items.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The examples grouped by where the agents connect, each `probe (N attempts, for 5m)`, with
/// `…` when there are more than shown.
fn examples(list: &[AgentExample], total: u64, now_ms: i64) -> String {
    let pairs = list
        .iter()
        .map(|e| {
            let mut facts = Vec::new();
            if let Some(n) = e.attempts {
                facts.push(format!("{n} attempts"));
            }
            facts.push(format!(
                "for {}",
                short_duration(now_ms - e.since_ms as i64)
            ));
            (
                endpoint(e.gateway.as_deref(), e.port),
                format!("{} ({})", e.probe, facts.join(", ")),
            )
        })
        .collect();
    more(grouped(pairs), total > list.len() as u64)
}

fn more(mut text: String, more: bool) -> String {
    if more {
        if !text.is_empty() {
            text.push_str(", ");
        }
        text.push('…');
    }
    text
}

/// Renders the agents block of `status`: the management agents' own CEM state, from the probes
/// that follow the agent's log; `fresh` is the number of fresh probes.
pub fn render_agents(a: &AgentSummary, fresh: u64, color: bool, now_ms: i64) -> String {
    let p = Paint::new(color);
    let head = p.bold("agents");
    if a.reporting == 0 {
        return format!(
            "\n{head}  no probe reports its management agent's CEM state (run probes on managed endpoints with --agent-log)\n"
        );
    }
    let mut o = format!(
        "\n{head}  {} of {fresh} probes report their management agent's CEM state\n",
        a.reporting
    );
    let bad = |n: u64, s: Severity| {
        let text = format!("{n:>4}");
        if n > 0 {
            p.severity(s, &text)
        } else {
            text
        }
    };
    let connected: Vec<String> = a
        .connected
        .iter()
        .map(|g| {
            let (gateway, port) = g.labels();
            let at = if g.other {
                "other gateways".to_string()
            } else if g.port.is_some() {
                format!("{gateway}:{port}")
            } else {
                format!("{gateway} (port not logged)")
            };
            format!("{at} {}", g.agents)
        })
        .collect();
    let n = a.state("cem_connected");
    o.push_str(&format!(
        "  {:<17}{}  {}\n",
        "cem_connected",
        p.severity(Severity::Ok, &format!("{n:>4}")),
        connected.join(", ")
    ));
    for (name, list, severity, remedy) in [
        (
            "handshake_error",
            &a.handshake_errors,
            Severity::Fail,
            agents::REMEDY_HANDSHAKE_ERROR,
        ),
        (
            "connect_timeout",
            &a.connect_timeouts,
            Severity::Fail,
            agents::REMEDY_CONNECT_TIMEOUT,
        ),
        (
            "no_cem_activity",
            &a.no_cem_activity,
            Severity::Warn,
            agents::REMEDY_NO_CEM_ACTIVITY,
        ),
    ] {
        let n = a.state(name);
        o.push_str(&format!(
            "  {name:<17}{}  {}\n",
            bad(n, severity),
            examples(list, n, now_ms)
        ));
        if n > 0 {
            o.push_str(&format!("  {:<22} {} {remedy}\n", "", p.dim("remedy:")));
        }
    }
    for c in &a.checks {
        let wrong = c
            .wrong_port
            .iter()
            .map(|e| {
                let on = e.port.map(|p| format!("on {p}")).unwrap_or_default();
                (on, e.probe.clone())
            })
            .collect();
        let wrong = more(grouped(wrong), c.port_mismatch > c.wrong_port.len() as u64);
        let mut line = format!("{}: policy port {}", c.check, c.policy_port);
        if !wrong.is_empty() {
            line.push_str(&format!("; {wrong}"));
        }
        o.push_str(&format!(
            "  {:<17}{}  {line}\n",
            "wrong port",
            bad(c.port_mismatch, Severity::Fail)
        ));
        if c.port_mismatch > 0 {
            o.push_str(&format!(
                "  {:<22} {} {}\n",
                "",
                p.dim("remedy:"),
                agents::REMEDY_WRONG_PORT
            ));
        }
        let Some(policy) = &c.policy_thumbprint else {
            continue;
        };
        let stale = c
            .stale_thumbprint
            .iter()
            .map(|e| {
                let validated = format!("validated {}", e.thumbprint.as_deref().unwrap_or("?"));
                (validated, e.probe.clone())
            })
            .collect();
        let stale = more(
            grouped(stale),
            c.thumbprint_mismatch > c.stale_thumbprint.len() as u64,
        );
        let mut line = format!("{}: policy {policy}", c.check);
        if !stale.is_empty() {
            line.push_str(&format!("; {stale}"));
        }
        o.push_str(&format!(
            "  {:<17}{}  {line}\n",
            "stale thumbprint",
            bad(c.thumbprint_mismatch, Severity::Fail)
        ));
        if c.thumbprint_mismatch > 0 {
            o.push_str(&format!(
                "  {:<22} {} {}\n",
                "",
                p.dim("remedy:"),
                agents::REMEDY_STALE_THUMBPRINT
            ));
        }
    }
    if a.log_unavailable > 0 {
        o.push_str(&format!(
            "  {:<17}{}  probes that cannot read the agent's log (missing or unreadable): see /api/v1/agents\n",
            "log unavailable",
            bad(a.log_unavailable, Severity::Warn)
        ));
    }
    o
}

/// Renders the fleet for a person.
pub fn render_status(s: &FleetSummary, api: &str, color: bool) -> String {
    let p = Paint::new(color);
    let mut o = format!(
        "{}  {api}\nprobes: {} connected, {} disconnected, {} stale\n",
        p.bold("cemwatch status"),
        s.probes.connected,
        s.probes.disconnected,
        s.probes.stale
    );
    for c in &s.checks {
        let sev = c.detail.severity;
        o.push_str(&format!(
            "\n{}  {}  {}\n",
            p.bold(&c.check),
            c.target,
            p.severity(
                sev,
                &format!("{}  {}", sev.as_str().to_uppercase(), c.diagnosis)
            )
        ));
        o.push_str(&format!("  {}\n", c.detail.summary));
        if !c.detail.remedy.is_empty() {
            o.push_str(&format!("  {} {}\n", p.dim("remedy:"), c.detail.remedy));
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
            // During a rollover (two certificates served), the share of probes and of nodes
            // on each.
            let share = if c.certificates.len() > 1 {
                let probes: u64 = c.verdicts.total().max(1);
                let nodes = c
                    .nodes
                    .iter()
                    .filter(|n| n.address != "other")
                    .count()
                    .max(1);
                format!(
                    " ({:.0}% of probes, {} of {nodes} nodes)",
                    cert.observers as f64 * 100.0 / probes as f64,
                    cert.nodes
                )
            } else {
                String::new()
            };
            o.push_str(&format!(
                "  certificate   {}{policy}  seen by {} probes{share}, {} days left\n",
                cert.thumbprint_sha1,
                cert.observers,
                days_left(cert.not_after)
            ));
        }
        // One line per node when the name has several addresses.
        if c.nodes.len() > 1 {
            for n in &c.nodes {
                // What most of its probes see there.
                let verdict = [
                    (n.verdicts.ok, Severity::Ok),
                    (n.verdicts.warn, Severity::Warn),
                    (n.verdicts.fail, Severity::Fail),
                ]
                .into_iter()
                .max_by_key(|(count, sev)| (*count, *sev))
                .map(|(_, sev)| sev)
                .unwrap_or(Severity::Ok);
                let codes: Vec<String> = n.codes.iter().map(|(k, v)| format!("{k} {v}")).collect();
                o.push_str(&format!(
                    "  node          {:<16} {}  {}  reached by {} of {} probes{}\n",
                    n.address,
                    p.severity(verdict, &format!("{:<4}", verdict.as_str())),
                    n.thumbprint.as_deref().unwrap_or("no certificate"),
                    n.reached,
                    n.probes,
                    if codes.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", codes.join(", "))
                    }
                ));
            }
        }
        if let Some(r) = c.thumbprint_match_ratio {
            o.push_str(&format!(
                "  policy match  {:.0}% of probes see the policy's certificate\n",
                r * 100.0
            ));
        }
        o.push_str(&format!("  ports         {}\n", c.ports_line()));
        let worst = c.worst_sites(5);
        if !worst.is_empty() {
            let list: Vec<String> = worst
                .iter()
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
    o.push_str(&render_agents(
        &s.agents,
        s.probes.connected + s.probes.disconnected,
        color,
        crate::store::now_ms(),
    ));
    o
}

/// `cemwatch status`.
pub async fn status(options: &ApiOptions, json: bool) -> Result<u8> {
    let api = Api::new(options)?;
    let api_url = options.url.as_str();
    let summary: FleetSummary = api.get("/api/v1/fleet").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!(
            "{}",
            render_status(&summary, api_url, cemwatch_transport::host::colour())
        );
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
    /// How to reach the API.
    pub api: ApiOptions,
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
    let api = Api::new(&opts.api)?;
    let request = RoundRequest {
        check: opts.check.clone(),
        expect_thumbprint: opts.expect_thumbprint.clone(),
        expect_port: opts.expect_port,
    };
    // A round of this check in flight, or one started moments ago, is answered 429: wait as
    // the coordinator says, within the deadline.
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let mut status: RoundStatus = loop {
        match api.try_post("/api/v1/rounds", &request).await? {
            Posted::Done(status) => break status,
            Posted::TooSoon {
                retry_after,
                message,
            } => {
                if tokio::time::Instant::now() + retry_after > deadline {
                    bail!(
                        "/api/v1/rounds: {message} (past --timeout {} s)",
                        opts.timeout.as_secs()
                    );
                }
                if !opts.json {
                    eprintln!("{message}; waiting {} s", retry_after.as_secs());
                }
                tokio::time::sleep(retry_after).await;
            }
        }
    };
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
        print!(
            "{}",
            render_verdict(&verdict, cemwatch_transport::host::colour())
        );
    }
    Ok(if ok { 0 } else { 1 })
}

/// Renders the end of a verification for a person.
pub fn render_verdict(v: &Verdict, color: bool) -> String {
    let p = Paint::new(color);
    let r = &v.round;
    let mut o = String::new();
    let what = match (&r.expect_thumbprint, r.expect_port) {
        (Some(t), Some(port)) => format!("certificate {t} on port {port}"),
        (Some(t), None) => format!("certificate {t}"),
        (None, Some(port)) => format!("port {port}"),
        (None, None) => "a passing check".into(),
    };
    let head = if v.result == "confirmed" {
        p.severity(Severity::Ok, "CONFIRMED")
    } else {
        p.severity(Severity::Fail, "NOT CONFIRMED")
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
                crate::model::summary::NO_SITE
            } else {
                &g.site
            };
            o.push_str(&format!(
                "  {site:<14} {:<24} {}\n",
                g.code,
                g.probes.join(", ")
            ));
            if !g.remedy.is_empty() {
                o.push_str(&format!("  {:<14} {} {}\n", "", p.dim("remedy:"), g.remedy));
            }
        }
    }
    if !r.nodes.is_empty() {
        o.push_str("dissenting nodes\n");
        for n in &r.nodes {
            o.push_str(&format!(
                "  {:<16} {:<24} {} ({} probes)\n",
                n.address,
                n.codes.join(", "),
                if n.thumbprints.is_empty() {
                    "no certificate".to_string()
                } else {
                    format!("serves {}", n.thumbprints.join(", "))
                },
                n.probes.len()
            ));
        }
        o.push_str(&format!(
            "  {} {}\n",
            p.dim("remedy:"),
            "import the expected certificate on each node above (Gateway Manager and the Internet Gateway's IIS binding) and restart its Internet Gateway service; the other nodes of the name already serve it."
        ));
    }
    if !r.pending.is_empty() && v.result != "confirmed" {
        o.push_str(&format!("  no answer from: {}\n", r.pending.join(", ")));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::summary::{AgentCheckSummary, GatewayAgents};

    const NOW: i64 = 1_764_000_000_000;

    fn example(probe: &str, condition: &str, port: u16, attempts: Option<u32>) -> AgentExample {
        AgentExample {
            probe: probe.into(),
            site: "eu".into(),
            condition: condition.into(),
            gateway: Some("gw.example.com".into()),
            port: Some(port),
            thumbprint: None,
            attempts,
            since_ms: (NOW - 5 * 60_000) as u64,
        }
    }

    fn summary() -> AgentSummary {
        let mut a = AgentSummary {
            reporting: 9,
            log_unavailable: 1,
            ..AgentSummary::default()
        };
        for (state, n) in [
            ("cem_connected", 5),
            ("handshake_error", 1),
            ("connect_timeout", 2),
            ("no_cem_activity", 1),
        ] {
            a.states.insert(state.into(), n);
        }
        a.connected = vec![
            GatewayAgents {
                gateway: "gw.example.com".into(),
                port: Some(8443),
                agents: 4,
                other: false,
            },
            GatewayAgents {
                gateway: "gw.example.com".into(),
                port: None,
                agents: 1,
                other: false,
            },
        ];
        a.handshake_errors = vec![example("h1", "handshake_error", 8443, Some(2))];
        a.connect_timeouts = vec![
            example("t1", "connect_timeout", 443, Some(3)),
            example("t2", "connect_timeout", 443, Some(7)),
        ];
        let mut stale = example("s1", "cem_connected", 8443, None);
        stale.thumbprint = Some("3A7F".into());
        a.checks = vec![AgentCheckSummary {
            check: "gateway".into(),
            gateway: "gw.example.com".into(),
            policy_port: 8443,
            policy_thumbprint: Some("5F3C".into()),
            agents: 8,
            port_mismatch: 2,
            thumbprint_mismatch: 1,
            wrong_port: a.connect_timeouts.clone(),
            stale_thumbprint: vec![stale],
        }];
        a
    }

    fn line<'a>(text: &'a str, start: &str) -> &'a str {
        text.lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no {start:?} line in:\n{text}"))
    }

    #[test]
    fn the_agents_block_names_states_gateways_and_mismatches() {
        let text = render_agents(&summary(), 12, false, NOW);
        assert!(text.contains("agents  9 of 12 probes report"), "{text}");
        assert_eq!(
            line(&text, "cem_connected"),
            "  cem_connected       5  gw.example.com:8443 4, gw.example.com (port not logged) 1"
        );
        assert_eq!(
            line(&text, "handshake_error"),
            "  handshake_error     1  gw.example.com:8443: h1 (2 attempts, for 5m)"
        );
        assert_eq!(
            line(&text, "connect_timeout"),
            "  connect_timeout     2  gw.example.com:443: t1 (3 attempts, for 5m), t2 (7 attempts, for 5m)",
            "grouped by where they connect"
        );
        assert_eq!(
            line(&text, "no_cem_activity"),
            "  no_cem_activity     1  …",
            "a count without examples says there are more"
        );
        assert_eq!(
            line(&text, "wrong port"),
            "  wrong port          2  gateway: policy port 8443; on 443: t1, t2"
        );
        assert_eq!(
            line(&text, "stale thumbprint"),
            "  stale thumbprint    1  gateway: policy 5F3C; validated 3A7F: s1"
        );
        assert!(line(&text, "log unavailable").contains("   1  "));
        assert_eq!(
            text.matches("remedy:").count(),
            5,
            "handshake, timeout, no CEM activity, wrong port, stale thumbprint:\n{text}"
        );
        assert!(text.contains(agents::REMEDY_WRONG_PORT));
        assert!(!text.contains('\x1b'), "no colour when asked for none");
        assert!(render_agents(&summary(), 12, true, NOW).contains("\x1b[31m   2\x1b[0m"));
    }

    #[test]
    fn no_problem_no_remedy_and_no_agents_says_how_to_get_them() {
        let mut a = summary();
        a.states.insert("handshake_error".into(), 0);
        a.states.insert("connect_timeout".into(), 0);
        a.states.insert("no_cem_activity".into(), 0);
        a.handshake_errors.clear();
        a.connect_timeouts.clear();
        a.checks[0].port_mismatch = 0;
        a.checks[0].wrong_port.clear();
        a.checks[0].thumbprint_mismatch = 0;
        a.checks[0].stale_thumbprint.clear();
        a.log_unavailable = 0;
        let text = render_agents(&a, 12, false, NOW);
        assert!(!text.contains("remedy:"), "{text}");
        assert_eq!(
            line(&text, "wrong port"),
            "  wrong port          0  gateway: policy port 8443"
        );
        assert!(!text.contains("log unavailable"));
        let none = render_agents(&AgentSummary::default(), 12, false, NOW);
        assert!(none.contains("--agent-log"), "{none}");
        assert_eq!(none.lines().filter(|l| !l.is_empty()).count(), 1);
    }

    #[test]
    fn examples_group_by_key_and_say_when_there_are_more() {
        let pairs = vec![
            ("a:1".to_string(), "p1".to_string()),
            ("b:2".to_string(), "p2".to_string()),
            ("a:1".to_string(), "p3".to_string()),
        ];
        assert_eq!(grouped(pairs), "a:1: p1, p3; b:2: p2");
        assert_eq!(grouped(vec![(String::new(), "p".into())]), "p");
        assert_eq!(more("x".into(), true), "x, …");
        assert_eq!(more(String::new(), true), "…");
        assert_eq!(more("x".into(), false), "x");
    }

    #[test]
    fn a_verdict_names_the_dissenting_nodes_with_their_remedy() {
        use crate::model::round::{DissentingNode, RoundStatus};
        let round = RoundStatus {
            round: 4,
            check: "gateway".into(),
            started_at_ms: NOW,
            expect_thumbprint: Some("1111".into()),
            expect_port: None,
            eligible: 2,
            reported: 2,
            confirmed: 0,
            dissenting: 2,
            pending: vec![],
            dissenters: vec![],
            groups: vec![],
            nodes: vec![DissentingNode {
                address: "192.0.2.2".into(),
                codes: vec!["thumbprint_mismatch".into()],
                thumbprints: vec!["2222".into()],
                probes: vec!["p1".into(), "p2".into()],
            }],
        };
        let text = render_verdict(
            &Verdict {
                result: "not_confirmed",
                reason: "every probe answered; only 0 confirmed".into(),
                quorum: 1.0,
                needed: 2,
                round,
            },
            false,
        );
        let line = line(&text, "192.0.2.2");
        assert!(
            line.contains("thumbprint_mismatch")
                && line.contains("serves 2222")
                && line.contains("2 probes"),
            "{text}"
        );
        assert!(
            text.contains("import the expected certificate on each node above"),
            "{text}"
        );
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(45_000), "45s");
        assert_eq!(short_duration(12 * 60_000), "12m");
        assert_eq!(short_duration(3 * 3_600_000), "3h");
        assert_eq!(short_duration(3 * 86_400_000), "3d");
        assert_eq!(short_duration(-5), "0s", "a clock ahead of ours");
    }
}
