//! The pages' markup: plain data in, HTML out (maud escapes every value; text from outside goes
//! through [`Text`] first).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use maud::{html, Markup, DOCTYPE};

use cemwatch_shared::Severity;

use crate::analysis::agents::{
    AgentEntry, REMEDY_CONNECT_TIMEOUT, REMEDY_HANDSHAKE_ERROR, REMEDY_NO_CEM_ACTIVITY,
    REMEDY_STALE_THUMBPRINT, REMEDY_WRONG_PORT,
};
use crate::model::event::Event;
use crate::model::latest::Latest;
use crate::model::probe::{ProbeState, ProbeView};
use crate::model::round::RoundStatus;
use crate::model::summary::{days_left, AgentSummary, CheckSummary, FleetSummary, VerdictCounts};

use super::svg::{self, Timeline};
use super::{slug, Context, Filter, Text, SORTS};

/// One probe's result in a check's table.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) probe: String,
    pub(crate) site: String,
    pub(crate) vantage: String,
    pub(crate) latest: Latest,
}

/// Per certificate (thumbprint), the sites whose probes see it and how many.
pub(crate) type SeenBy = BTreeMap<String, BTreeMap<String, u64>>;

/// One probe in the probes' pages.
#[derive(Debug, Clone)]
pub(crate) struct ProbeLine {
    pub(crate) name: String,
    pub(crate) state: ProbeState,
    pub(crate) view: ProbeView,
}

fn layout(title: &str, cx: &Context, refresh: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (Text(title)) " · cemwatch" }
                link rel="stylesheet" href="/assets/cemwatch.css";
                script src="/assets/cemwatch.js" defer {}
            }
            body data-refresh=(if refresh { "5" } else { "0" }) {
                header {
                    nav aria-label="Pages" {
                        a.brand href="/" { "cemwatch" }
                        a href="/" { "Fleet" }
                        a href="/probes" { "Probes" }
                        @if cx.demo.is_some() { span.tag.demo { "demo" } }
                    }
                }
                main id="main" data-rendered=(cx.now_ms) { (body) }
                footer {
                    p {
                        "Rendered " (when(cx.now_ms)) ". "
                        "The same data as JSON: " a href="/api/v1/fleet" { "/api/v1/fleet" } ", for Prometheus: " a href="/metrics" { "/metrics" } "."
                    }
                }
            }
        }
    }
}

fn when(ms: i64) -> Markup {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let iso = at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let text = at
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
        ))
        .unwrap_or_default();
    html! { time datetime=(iso) { (text) } }
}

fn ago(now_ms: i64, then_ms: i64) -> String {
    if then_ms <= 0 {
        return "never".into();
    }
    let s = (now_ms - then_ms).max(0) / 1000;
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7_199 => format!("{} min ago", s / 60),
        7_200..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// A verdict as a word in a coloured tag (the word carries it; the colour repeats it).
fn verdict(v: Severity) -> Markup {
    html! { span class=(format!("tag {}", v.as_str())) { (v.as_str().to_uppercase()) } }
}

fn state_tag(s: ProbeState) -> Markup {
    let class = match s {
        ProbeState::Connected => "ok",
        ProbeState::Disconnected => "warn",
        ProbeState::Stale => "fail",
    };
    html! { span class=(format!("tag {class}")) { (s.as_str()) } }
}

fn badge(c: &CheckSummary) -> Markup {
    let sev = c.detail.severity;
    html! {
        p class=(format!("badge {}", sev.as_str())) data-diagnosis=(c.diagnosis) {
            span.sev { (sev.as_str().to_uppercase()) }
            " "
            span.label { (Text(&c.diagnosis)) }
        }
    }
}

fn counts(v: &VerdictCounts) -> Markup {
    html! {
        span.counts {
            span.ok { "ok " b { (v.ok) } }
            " · " span.warn { "warn " b { (v.warn) } }
            " · " span.fail { "fail " b { (v.fail) } }
        }
    }
}

/// Days left of the policy's certificate when a probe sees it, else of the most observed one.
fn check_days_left(c: &CheckSummary, now_ms: i64) -> Option<i64> {
    c.certificates
        .iter()
        .find(|x| c.is_policy(&x.thumbprint_sha1) == Some(true))
        .or_else(|| c.certificates.first())
        .map(|x| days_left(x.not_after, now_ms))
}

fn facts(c: &CheckSummary, cx: &Context) -> Markup {
    let worst = c.worst_sites(5);
    html! {
        dl.facts {
            dt { "Verdicts" } dd data-verdicts=(format!("{} {} {}", c.verdicts.ok, c.verdicts.warn, c.verdicts.fail)) { (counts(&c.verdicts)) " of " (c.verdicts.total()) " fresh results" }
            dt { "Policy certificate" }
            dd {
                @match c.thumbprint_match_ratio {
                    Some(r) => { b { (format!("{:.0}%", r * 100.0)) } " of probes see the policy's certificate" }
                    None => span.muted { @if c.policy_thumbprint.is_some() { "no probe has seen a certificate" } @else { "the check names no policy thumbprint" } },
                }
            }
            dt { "Days left" }
            dd {
                @match check_days_left(c, cx.now_ms) {
                    Some(d) if d < 0 => span.fail { "expired " (-d) " days ago" },
                    Some(d) => { b { (d) } " days" },
                    None => span.muted { "no certificate seen" },
                }
            }
            dt { "Ports" } dd.mono { (c.ports_line()) }
            dt { "Worst sites" }
            dd {
                @if worst.is_empty() { span.muted { "none: no site fails or warns" } }
                @for (i, (site, v)) in worst.iter().enumerate() {
                    @if i > 0 { ", " }
                    (Text(site)) " " (v.fail) " fail/" (v.warn) " warn of " (v.total())
                }
            }
        }
    }
}

fn diagnosis(c: &CheckSummary) -> Markup {
    html! {
        (badge(c))
        p.summary { (Text(&c.detail.summary)) }
        @if !c.detail.remedy.is_empty() {
            p.remedy { strong { "Remedy: " } span data-remedy { (Text(&c.detail.remedy)) } }
        }
    }
}

fn round_control(c: &CheckSummary, cx: &Context) -> Markup {
    let id = slug(&c.check);
    html! {
        @if cx.operate {
            form.round method="post" action="/api/v1/rounds" {
                input type="hidden" name="check" value=(c.check);
                div.field {
                    label for=(format!("tp-{id}")) { "Thumbprint every probe must see (optional)" }
                    input id=(format!("tp-{id}")) name="expect_thumbprint" type="text" autocomplete="off" spellcheck="false" placeholder="SHA-1 as in the CEM policy";
                }
                div.field {
                    label for=(format!("port-{id}")) { "Port (optional)" }
                    input id=(format!("port-{id}")) name="expect_port" type="number" min="1" max="65535" placeholder=(c.ports.policy_port);
                }
                button type="submit" { "Ask every probe to check " (c.check) " now" }
            }
        } @else {
            p.muted {
                "To ask every probe to check now after a change, run: "
                code { "cemwatch verify --api " (cx.api) " --check " (c.check) }
                " (starting a round from this page needs the operate role)."
            }
        }
    }
}

fn demo_panel(cx: &Context) -> Markup {
    let Some(demo) = &cx.demo else {
        return html! {};
    };
    let current = demo.current();
    html! {
        section.demo aria-labelledby="demo-h" {
            h2 id="demo-h" { "Demo" }
            p { "The gateway simulator runs the scenario " b data-scenario=(current) { (current) } "." }
            @if cx.operate {
                form.scenario method="post" action="/demo/scenario" {
                    label for="scenario" { "Put the simulator into" }
                    select id="scenario" name="scenario" {
                        @for (name, what) in demo.scenarios() {
                            option value=(name) selected[name == current] { (name) ": " (what) }
                        }
                    }
                    button type="submit" { "Switch" }
                }
            }
        }
    }
}

/// `/`.
pub(crate) fn fleet(
    cx: &Context,
    s: &FleetSummary,
    timelines: &[Timeline],
    events: &[Event],
) -> Markup {
    let body = html! {
        h1 { "Fleet" }
        p.probes data-probes=(format!("{} {} {}", s.probes.connected, s.probes.disconnected, s.probes.stale)) {
            a href="/probes" { "Probes" } ": "
            b { (s.probes.connected) } " connected, "
            b { (s.probes.disconnected) } " disconnected, "
            b { (s.probes.stale) } " stale"
        }
        (demo_panel(cx))
        @for (c, t) in s.checks.iter().zip(timelines) {
            section.check id=(format!("check-{}", slug(&c.check))) aria-labelledby=(format!("h-{}", slug(&c.check))) {
                h2 id=(format!("h-{}", slug(&c.check))) {
                    a href=(format!("/checks/{}", slug(&c.check))) { (c.check) }
                    " " span.target { (Text(&c.target)) }
                }
                (diagnosis(c))
                (facts(c, cx))
                (svg::timeline(&c.check, t))
                (round_control(c, cx))
            }
        }
        (agents(&s.agents, s.probes.connected + s.probes.disconnected, cx))
        section aria-labelledby="events-h" {
            h2 id="events-h" { "Last events" }
            (event_table(events, cx.now_ms))
        }
    };
    let worst = s
        .checks
        .iter()
        .map(|c| c.detail.severity)
        .max()
        .unwrap_or(Severity::Ok);
    layout(&format!("Fleet: {}", worst.as_str()), cx, true, body)
}

fn agents(a: &AgentSummary, fresh: u64, cx: &Context) -> Markup {
    let rows: [(&str, u64, Severity, &str); 4] = [
        ("cem_connected", a.state("cem_connected"), Severity::Ok, ""),
        (
            "handshake_error",
            a.state("handshake_error"),
            Severity::Fail,
            REMEDY_HANDSHAKE_ERROR,
        ),
        (
            "connect_timeout",
            a.state("connect_timeout"),
            Severity::Fail,
            REMEDY_CONNECT_TIMEOUT,
        ),
        (
            "no_cem_activity",
            a.state("no_cem_activity"),
            Severity::Warn,
            REMEDY_NO_CEM_ACTIVITY,
        ),
    ];
    html! {
        section.agents aria-labelledby="agents-h" {
            h2 id="agents-h" { "Management agents' own CEM state" }
            @if let Some(demo) = &cx.demo {
                @for note in demo.notes() { p.note data-demo-note { (Text(&note)) } }
            }
            @if a.reporting == 0 {
                p.muted { "No probe reports its management agent's CEM state (run probes on managed endpoints with --agent-log)." }
            } @else {
                p { b { (a.reporting) } " of " (fresh) " probes report the CEM state of the management agent beside them, read from its Agent.log." }
                table {
                    thead { tr { th scope="col" { "state" } th scope="col" { "agents" } th scope="col" { "what to do" } } }
                    tbody {
                        @for (name, n, sev, remedy) in rows {
                            tr data-agent-state=(name) {
                                th scope="row" { (name) }
                                td.num { @if n > 0 { span class=(sev.as_str()) { b { (n) } } } @else { "0" } }
                                td { @if n > 0 { (remedy) } }
                            }
                        }
                        @for c in &a.checks {
                            tr {
                                th scope="row" { "wrong port (" (c.check) ")" }
                                td.num { @if c.port_mismatch > 0 { span.fail { b { (c.port_mismatch) } } } @else { "0" } }
                                td { @if c.port_mismatch > 0 { (REMEDY_WRONG_PORT) } @else { "policy port " (c.policy_port) } }
                            }
                            @if c.policy_thumbprint.is_some() {
                                tr {
                                    th scope="row" { "stale thumbprint (" (c.check) ")" }
                                    td.num { @if c.thumbprint_mismatch > 0 { span.fail { b { (c.thumbprint_mismatch) } } } @else { "0" } }
                                    td { @if c.thumbprint_mismatch > 0 { (REMEDY_STALE_THUMBPRINT) } }
                                }
                            }
                        }
                        @if a.log_unavailable > 0 {
                            tr { th scope="row" { "log unavailable" } td.num { span.warn { b { (a.log_unavailable) } } } td { "These probes cannot read the agent's log (missing or unreadable)." } }
                        }
                    }
                }
            }
        }
    }
}

fn event_table(events: &[Event], now_ms: i64) -> Markup {
    html! {
        @if events.is_empty() {
            p.muted { "No verdict has changed yet." }
        } @else {
            div.scroll {
                table.events {
                    thead { tr { th scope="col" { "when" } th scope="col" { "probe" } th scope="col" { "check" } th scope="col" { "change" } th scope="col" { "findings" } } }
                    tbody {
                        @for e in events {
                            tr {
                                td { (ago(now_ms, e.at_ms)) }
                                td { a href=(format!("/probes/{}", slug(&e.probe))) { (Text(&e.probe)) } }
                                td { a href=(format!("/checks/{}", slug(&e.check))) { (Text(&e.check)) } }
                                td { (Text(e.from.as_deref().unwrap_or("(first)"))) " → " span class=(format!("tag {}", slug(&e.to))) { (Text(&e.to)) } }
                                td.mono { (Text(&e.codes.join(", "))) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `/checks/NAME`.
pub(crate) fn check(
    cx: &Context,
    c: &CheckSummary,
    t: &Timeline,
    rows: &[Row],
    (matching, total): (usize, usize),
    (vantages, seen_by): (&BTreeMap<String, VerdictCounts>, &SeenBy),
    filter: &Filter,
) -> Markup {
    let sort_link = |col: &str| {
        let mut q: Vec<(&str, String)> = vec![("sort", col.to_string())];
        if let Some(v) = filter.verdict {
            q.push(("verdict", v.as_str().into()));
        }
        if let Some(code) = filter.code {
            q.push(("code", code.as_str().into()));
        }
        if let Some(site) = &filter.site {
            q.push(("site", site.clone()));
        }
        format!(
            "/checks/{}?{}",
            slug(&c.check),
            serde_urlencoded::to_string(&q).unwrap_or_default()
        )
    };
    let header = |col: &'static str, label: &'static str| {
        html! {
            th scope="col" aria-sort=(match (filter.sort == col, col) {
                (false, _) => "none",
                (true, "probe" | "site") => "ascending",
                (true, _) => "descending",
            }) {
                a href=(sort_link(col)) { (label) }
            }
        }
    };
    let body = html! {
        p.crumbs { a href="/" { "Fleet" } " › " (c.check) }
        h1 { (c.check) " " span.target { (Text(&c.target)) } }
        (diagnosis(c))
        (facts(c, cx))
        (svg::timeline(&c.check, t))
        (round_control(c, cx))
        section aria-labelledby="sites-h" {
            h2 id="sites-h" { "Per site" }
            (svg::site_grid(c))
        }
        section aria-labelledby="vantage-h" {
            h2 id="vantage-h" { "Per vantage" }
            @if vantages.is_empty() { p.muted { "No fresh result." } } @else {
                table {
                    thead { tr { th scope="col" { "vantage" } th scope="col" { "ok" } th scope="col" { "warn" } th scope="col" { "fail" } } }
                    tbody {
                        @for (v, n) in vantages {
                            tr { th scope="row" { (Text(if v.is_empty() { "(none)" } else { v })) } td.num { (n.ok) } td.num { (n.warn) } td.num { (n.fail) } }
                        }
                    }
                }
            }
        }
        @if c.nodes.len() > 1 {
            section aria-labelledby="nodes-h" {
                h2 id="nodes-h" { "Per gateway node" }
                table {
                    thead { tr { th scope="col" { "address" } th scope="col" { "ok" } th scope="col" { "warn" } th scope="col" { "fail" } th scope="col" { "reached" } th scope="col" { "certificate" } th scope="col" { "findings" } } }
                    tbody {
                        @for n in &c.nodes {
                            tr {
                                th scope="row" { (Text(&n.address)) }
                                td.num { (n.verdicts.ok) } td.num { (n.verdicts.warn) } td.num { (n.verdicts.fail) }
                                td.num { (n.reached) " of " (n.probes) }
                                td.mono { (Text(n.thumbprint.as_deref().unwrap_or("none"))) }
                                td {
                                    @for (i, (code, count)) in n.codes.iter().enumerate() {
                                        @if i > 0 { ", " }
                                        (Text(code)) " (" (count) ")"
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="certs-h" {
            h2 id="certs-h" { "Certificates seen" }
            (svg::certificates(c, cx.now_ms))
            @if !seen_by.is_empty() {
                h3 { "Who sees which certificate" }
                table {
                    thead { tr { th scope="col" { "certificate" } th scope="col" { "sites (probes)" } } }
                    tbody {
                        @for (thumbprint, sites) in seen_by {
                            tr {
                                td.mono { (Text(thumbprint)) }
                                td {
                                    @for (i, (site, n)) in sites.iter().enumerate() {
                                        @if i > 0 { ", " }
                                        a href=(format!("/checks/{}?site={}", slug(&c.check), slug(site))) { (Text(if site.is_empty() { "(no site)" } else { site })) }
                                        " (" (n) ")"
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !c.codes.is_empty() {
            section aria-labelledby="codes-h" {
                h2 id="codes-h" { "Findings" }
                table {
                    thead { tr { th scope="col" { "code" } th scope="col" { "probes" } th scope="col" { "what it means" } } }
                    tbody {
                        @for (code, n) in &c.codes {
                            tr {
                                th scope="row" { a href=(format!("/checks/{}?code={}", slug(&c.check), slug(code))) { (Text(code)) } }
                                td.num { (n) }
                                td { (cemwatch_shared::FindingCode::from_name(code).map(|f| f.title()).unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="probes-h" {
            h2 id="probes-h" { "Probes" }
            form.filter method="get" action=(format!("/checks/{}", slug(&c.check))) {
                div.field {
                    label for="f-verdict" { "Verdict" }
                    select id="f-verdict" name="verdict" {
                        option value="" { "any" }
                        @for v in [Severity::Ok, Severity::Warn, Severity::Fail] {
                            option value=(v.as_str()) selected[filter.verdict == Some(v)] { (v.as_str()) }
                        }
                    }
                }
                div.field {
                    label for="f-site" { "Site" }
                    select id="f-site" name="site" {
                        option value="" { "any" }
                        @for site in c.sites.keys() {
                            option value=(site) selected[filter.site.as_deref() == Some(site.as_str())] { (Text(site)) }
                        }
                    }
                }
                div.field {
                    label for="f-code" { "Finding" }
                    select id="f-code" name="code" {
                        option value="" { "any" }
                        @for code in c.codes.keys() {
                            option value=(code) selected[filter.code.map(|f| f.as_str()) == Some(code.as_str())] { (Text(code)) }
                        }
                    }
                }
                div.field {
                    label for="f-sort" { "Sort by" }
                    select id="f-sort" name="sort" {
                        @for s in SORTS { option value=(s) selected[filter.sort == s] { (s) } }
                    }
                }
                button type="submit" { "Show" }
            }
            p data-shown=(matching) {
                (matching) " of " (total) " probes with a fresh result."
                @if rows.len() < matching { " The first " (rows.len()) " are listed: filter by verdict, site or finding to see the others." }
            }
            div.scroll {
                table.probes {
                    thead {
                        tr {
                            (header("probe", "probe")) (header("site", "site"))
                            th scope="col" { "vantage" }
                            (header("verdict", "verdict"))
                            th scope="col" { "findings" }
                            th scope="col" { "port / TCP" }
                            (header("tcp_ms", "TCP ms")) (header("tls_ms", "TLS ms"))
                            th scope="col" { "certificate" }
                            th scope="col" { "produced" }
                        }
                    }
                    tbody {
                        @for r in rows {
                            tr {
                                td { a href=(format!("/probes/{}", slug(&r.probe))) { (Text(&r.probe)) } }
                                td { (Text(&r.site)) }
                                td { (Text(&r.vantage)) }
                                td { (verdict(r.latest.verdict)) }
                                td.mono { (r.latest.codes.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")) }
                                td.mono { (r.latest.port) " " (r.latest.tcp_state.as_str()) }
                                td.num { (format!("{:.1}", r.latest.tcp_ms)) }
                                td.num { (format!("{:.1}", r.latest.tls_ms)) }
                                td.mono { (Text(&r.latest.thumbprint.as_deref().map(short).unwrap_or_default())) }
                                td { (ago(cx.now_ms, r.latest.produced_at_ms)) }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(&c.check, cx, true, body)
}

fn short(thumbprint: &str) -> String {
    thumbprint.chars().take(12).collect::<String>() + "…"
}

/// `/probes`.
pub(crate) fn probes(cx: &Context, list: &[ProbeLine], total: usize, next: Option<&str>) -> Markup {
    let body = html! {
        p.crumbs { a href="/" { "Fleet" } " › Probes" }
        h1 { "Probes" }
        p data-count=(total) {
            (total) " probes enrolled (revoked probes are not listed)"
            @if list.len() < total { "; " (list.len()) " on this page" }
            "."
        }
        div.scroll {
            table.probes {
                thead {
                    tr {
                        th scope="col" { "probe" } th scope="col" { "state" } th scope="col" { "last contact" }
                        th scope="col" { "labels" } th scope="col" { "version" } th scope="col" { "latest results" }
                    }
                }
                tbody {
                    @for p in list {
                        tr {
                            td { a href=(format!("/probes/{}", slug(&p.name))) { (Text(&p.name)) } }
                            td { (state_tag(p.state)) }
                            td { (ago(cx.now_ms, p.view.last_seen_ms)) }
                            td.mono { (Text(&labels(&p.view))) }
                            td { (Text(p.view.agent_version.as_deref().unwrap_or("?"))) }
                            td {
                                @for (check, l) in &p.view.latest {
                                    span.result { (Text(check)) " " (verdict(l.verdict)) } " "
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next { p { a rel="next" href=(next) { "Next page" } } }
    };
    layout("Probes", cx, true, body)
}

fn labels(v: &ProbeView) -> String {
    v.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `/probes/NAME`.
pub(crate) fn probe(
    cx: &Context,
    p: &ProbeLine,
    agent: Option<&AgentEntry>,
    events: &[Event],
) -> Markup {
    let v = &p.view;
    let body = html! {
        p.crumbs { a href="/" { "Fleet" } " › " a href="/probes" { "Probes" } " › " (Text(&p.name)) }
        h1 { (Text(&p.name)) " " (state_tag(p.state)) }
        dl.facts {
            dt { "State" } dd { (p.state.as_str()) @if v.revoked { " (revoked)" } }
            dt { "Last contact" } dd { (ago(cx.now_ms, v.last_seen_ms)) @if v.last_seen_ms > 0 { " (" (when(v.last_seen_ms)) ")" } }
            @if v.connected && v.connected_since_ms > 0 {
                dt { "Connected since" } dd { (when(v.connected_since_ms)) }
            }
            dt { "Labels" } dd.mono { (Text(&labels(v))) }
            dt { "Version" } dd { (Text(v.agent_version.as_deref().unwrap_or("not known yet"))) }
        }
        section aria-labelledby="results-h" {
            h2 id="results-h" { "Latest results" }
            @if v.latest.is_empty() { p.muted { "No result yet." } }
            @for (check, l) in &v.latest {
                article.result {
                    h3 { a href=(format!("/checks/{}", slug(check))) { (Text(check)) } " " (verdict(l.verdict)) }
                    p {
                        "Produced " (ago(cx.now_ms, l.produced_at_ms)) "; port " (l.port) ": TCP " (l.tcp_state.as_str())
                        ", TLS " (if l.tls_completed { "completed" } else { "not completed" })
                        @if let Some(t) = &l.thumbprint { "; certificate " code { (Text(t)) } }
                        @if let Some(n) = l.not_after { ", " (days_left(n, cx.now_ms)) " days left" }
                        @if let Some(r) = l.round { "; answered round " a href=(format!("/rounds/{r}")) { (r) } }
                    }
                    @for legacy in &l.legacy {
                        p.muted { "Legacy port " (legacy.port) ": TCP " (legacy.tcp.as_str()) @if legacy.gateway_listener { ", the gateway's certificate answers there" } }
                    }
                    @if l.codes.is_empty() { p.muted { "No finding." } } @else {
                        ul.findings {
                            @for code in &l.codes {
                                li {
                                    (verdict(code.severity())) " " code { (code.as_str()) } ": " (code.title())
                                    br;
                                    span.remedy { "Remedy: " (code.remedy()) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="agent-h" {
            h2 id="agent-h" { "Management agent" }
            @match agent {
                None => p.muted { "This probe does not report the CEM state of a management agent." },
                Some(a) => {
                    p {
                        b { (Text(&a.condition)) }
                        @if a.gateway.is_some() || a.port.is_some() {
                            " at " (Text(a.gateway.as_deref().unwrap_or("?"))) @if let Some(port) = a.port { ":" (port) }
                        }
                        @if let Some(n) = a.attempts { ", " (n) " attempts" }
                        ", since " (ago(cx.now_ms, a.since_ms as i64))
                        @if !a.current { " (not current: not counted)" }
                    }
                    @if let Some(t) = &a.thumbprint { p { "Validated thumbprint " code { (Text(t)) } } }
                }
            }
        }
        section aria-labelledby="events-h" {
            h2 id="events-h" { "Last events" }
            (event_table(events, cx.now_ms))
        }
        p.muted { "Spool drops are not sent to the coordinator: the probe logs each one and keeps their count in its spool folder (the file named dropped)." }
    };
    layout(&p.name, cx, true, body)
}

/// `/rounds/ID`.
pub(crate) fn round(cx: &Context, r: &RoundStatus) -> Markup {
    let done = r.pending.is_empty();
    let body = html! {
        p.crumbs { a href="/" { "Fleet" } " › " a href=(format!("/checks/{}", slug(&r.check))) { (r.check) } " › round " (r.round) }
        h1 { "Round " (r.round) " of " (r.check) }
        p {
            "Started " (ago(cx.now_ms, r.started_at_ms))
            @if let Some(t) = &r.expect_thumbprint { "; every probe must see " code { (Text(t)) } }
            @if let Some(p) = r.expect_port { "; on port " (p) }
            "."
        }
        p {
            label for="progress" { "Answers" } " "
            progress id="progress" max=(r.eligible.max(1)) value=(r.reported) { (r.reported) " of " (r.eligible) }
            " " b data-reported=(r.reported) { (r.reported) } " of " (r.eligible) " probes answered; "
            span.ok { b { (r.confirmed) } " confirmed" } ", "
            span.fail { b { (r.dissenting) } " dissenting" }
            @if done { " — complete." } @else { " — waiting for " (r.pending.len()) "." }
        }
        @if !r.groups.is_empty() {
            h2 { "Dissenting probes" }
            table {
                thead { tr { th scope="col" { "site" } th scope="col" { "code" } th scope="col" { "probes" } th scope="col" { "remedy" } } }
                tbody {
                    @for g in &r.groups {
                        tr { td { (Text(&g.site)) } td.mono { (Text(&g.code)) } td { (Text(&g.probes.join(", "))) } td { (Text(&g.remedy)) } }
                    }
                }
            }
        }
        @if !done {
            p.muted { "Waiting for: " (Text(&r.pending.join(", "))) }
        }
    };
    layout(&format!("Round {}", r.round), cx, !done, body)
}

/// An error page: the status, what was wrong, a link back.
pub(crate) fn error(status: StatusCode, message: &str, back: &str, back_label: &str) -> Markup {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("error")
    );
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · cemwatch" }
                link rel="stylesheet" href="/assets/cemwatch.css";
            }
            body data-refresh="0" {
                main id="main" {
                    h1 { (title) }
                    p.error { (Text(message)) }
                    p { a href=(back) { "Back to " (back_label) } }
                }
            }
        }
    }
}
