//! The pages' pictures, drawn on the server as inline SVG (no script, no external file): a
//! verdict timeline per check rebuilt from the store's verdict transitions, the share of probes
//! per certificate, and a site × verdict grid. Each picture carries a `<title>` and a `<desc>`
//! that say in words what it shows, and every count is also written as text: colour is never
//! the only carrier of a verdict.

use std::collections::BTreeMap;

use maud::{html, Markup};

use cemwatch_shared::Severity;

use crate::model::event::Event;
use crate::model::summary::{CheckSummary, VerdictCounts};

use super::Text;

/// The verdicts in the order the pictures stack them.
const VERDICTS: [Severity; 3] = [Severity::Ok, Severity::Warn, Severity::Fail];

/// The verdict counts of one check over time: `buckets` equal spans ending at `now_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Timeline {
    /// Start of the window, Unix ms.
    pub(crate) start_ms: i64,
    /// End of the window (now), Unix ms.
    pub(crate) end_ms: i64,
    /// Counts at the end of each span, oldest first.
    pub(crate) buckets: Vec<VerdictCounts>,
    /// Transitions inside the window.
    pub(crate) transitions: usize,
}

/// The shortest window drawn (a young coordinator shows its last ten minutes).
pub(crate) const MIN_WINDOW_MS: i64 = 10 * 60 * 1000;
/// The longest window drawn: the last six hours.
pub(crate) const MAX_WINDOW_MS: i64 = 6 * 3600 * 1000;

fn parse_verdict(text: &str) -> Option<Severity> {
    VERDICTS.into_iter().find(|v| v.as_str() == text)
}

fn bump(v: &mut VerdictCounts, s: Severity) {
    match s {
        Severity::Ok => v.ok += 1,
        Severity::Warn => v.warn += 1,
        Severity::Fail => v.fail += 1,
    }
}

impl Timeline {
    /// Rebuilds the timeline from `events` (one check's transitions, any order) and `current`
    /// (each fresh probe's verdict now). A probe's verdict before its first transition in the
    /// window is that transition's `from` (nothing, for its first result); a probe without a
    /// transition in the window held its current verdict throughout. The window spans from the
    /// oldest transition to now, between [`MIN_WINDOW_MS`] and [`MAX_WINDOW_MS`].
    pub(crate) fn build(
        events: &[Event],
        current: &[(&str, Severity)],
        now_ms: i64,
        buckets: usize,
    ) -> Self {
        let buckets = buckets.max(1);
        let oldest = events.iter().map(|e| e.at_ms).min().unwrap_or(now_ms);
        let span = (now_ms - oldest).clamp(MIN_WINDOW_MS, MAX_WINDOW_MS);
        let start_ms = now_ms - span;
        let mut by_probe: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
        for e in events
            .iter()
            .filter(|e| e.at_ms >= start_ms && e.at_ms <= now_ms)
        {
            by_probe.entry(e.probe.as_str()).or_default().push(e);
        }
        for list in by_probe.values_mut() {
            list.sort_by_key(|e| (e.at_ms, e.id));
        }
        let transitions = by_probe.values().map(Vec::len).sum();
        let now: std::collections::HashMap<&str, Severity> =
            current.iter().map(|(p, v)| (*p, *v)).collect();
        let mut out = vec![VerdictCounts::default(); buckets];
        for (i, counts) in out.iter_mut().enumerate() {
            let at = start_ms + span * (i as i64 + 1) / buckets as i64;
            for (probe, list) in &by_probe {
                let verdict = match list.iter().rev().find(|e| e.at_ms <= at) {
                    Some(e) => parse_verdict(&e.to),
                    None => list
                        .first()
                        .and_then(|e| e.from.as_deref())
                        .and_then(parse_verdict),
                };
                // A probe whose results stopped counting (stale, revoked) drops out now.
                let verdict = if i + 1 == buckets {
                    now.get(probe).copied()
                } else {
                    verdict
                };
                if let Some(v) = verdict {
                    bump(counts, v);
                }
            }
            for (probe, v) in current {
                if !by_probe.contains_key(probe) {
                    bump(counts, *v);
                }
            }
        }
        Self {
            start_ms,
            end_ms: now_ms,
            buckets: out,
            transitions,
        }
    }
}

fn minutes(ms: i64) -> String {
    let m = ms / 60_000;
    if m >= 120 {
        format!("{} h", m / 60)
    } else {
        format!("{m} min")
    }
}

const W: u32 = 600;
const H: u32 = 90;

/// The timeline as stacked bars (ok at the bottom, then warn, then fail), with its words.
pub(crate) fn timeline(check: &str, t: &Timeline) -> Markup {
    let max = t
        .buckets
        .iter()
        .map(VerdictCounts::total)
        .max()
        .unwrap_or(0)
        .max(1);
    let n = t.buckets.len().max(1) as u32;
    let bar = W / n;
    let now = t.buckets.last().cloned().unwrap_or_default();
    let span = minutes(t.end_ms - t.start_ms);
    let title = format!("Verdicts of {check} over the last {span}");
    let desc = format!(
        "{} transitions in the last {span}; now {} ok, {} warn, {} fail",
        t.transitions, now.ok, now.warn, now.fail
    );
    let mut rects: Vec<(&str, u32, u32, u32, u32)> = Vec::new();
    for (i, b) in t.buckets.iter().enumerate() {
        let x = i as u32 * bar;
        let mut y = H;
        for (v, count) in [
            (Severity::Ok, b.ok),
            (Severity::Warn, b.warn),
            (Severity::Fail, b.fail),
        ] {
            if count == 0 {
                continue;
            }
            let h = ((count as f64 / max as f64) * H as f64).round().max(1.0) as u32;
            let top = y.saturating_sub(h);
            rects.push((v.as_str(), x, top, bar.saturating_sub(1).max(1), y - top));
            y = top;
        }
    }
    html! {
        figure.picture {
            svg.timeline role="img" aria-label=(title) viewBox=(format!("0 0 {W} {}", H + 16)) width="100%" {
                title { (Text(&title)) }
                desc { (Text(&desc)) }
                @for (class, x, y, w, h) in &rects {
                    rect class=(class) x=(x) y=(y) width=(w) height=(h) {}
                }
                line.axis x1="0" y1=(H) x2=(W) y2=(H) {}
                text.axis x="0" y=(H + 13) { (format!("−{span}")) }
                text.axis x=(W) y=(H + 13) text-anchor="end" { "now" }
            }
            figcaption { (Text(&desc)) }
        }
    }
}

/// The share of probes per certificate, as one bar split by certificate, and its legend.
pub(crate) fn certificates(c: &CheckSummary, now_ms: i64) -> Markup {
    let total: u64 = c.certificates.iter().map(|x| x.observers).sum();
    if total == 0 {
        return html! { p.muted { "No probe has seen a certificate yet." } };
    }
    let mut x = 0u32;
    let mut segments: Vec<(String, u32, u32)> = Vec::new();
    for (i, cert) in c.certificates.iter().enumerate() {
        let w = ((cert.observers as f64 / total as f64) * W as f64).round() as u32;
        let class = match c.is_policy(&cert.thumbprint_sha1) {
            Some(true) => "ok".to_string(),
            Some(false) => "fail".to_string(),
            None => format!("c{}", i % 4),
        };
        segments.push((class, x, w.max(1)));
        x += w;
    }
    let desc: Vec<String> = c
        .certificates
        .iter()
        .map(|cert| {
            format!(
                "{} seen by {} of {total} probes",
                cert.thumbprint_sha1, cert.observers
            )
        })
        .collect();
    html! {
        figure.picture {
            svg.share role="img" aria-label="Share of probes per certificate" viewBox=(format!("0 0 {W} 24")) width="100%" {
                title { "Share of probes per certificate" }
                desc { (Text(&desc.join("; "))) }
                @for (class, x, w) in &segments {
                    rect class=(class) x=(x) y="0" width=(w) height="24" {}
                }
            }
            figcaption {
                table {
                    thead { tr { th scope="col" { "certificate (SHA-1)" } th scope="col" { "probes" } th scope="col" { "share" } th scope="col" { "days left" } th scope="col" { "policy" } } }
                    tbody {
                        @for cert in &c.certificates {
                            tr {
                                td.mono { (Text(&cert.thumbprint_sha1)) }
                                td.num { (cert.observers) }
                                td.num { (format!("{:.0}%", cert.observers as f64 * 100.0 / total as f64)) }
                                td.num { (crate::model::summary::days_left(cert.not_after, now_ms)) }
                                td {
                                    @match c.is_policy(&cert.thumbprint_sha1) {
                                        Some(true) => span.tag.ok { "the policy's" },
                                        Some(false) => span.tag.fail { "not the policy's" },
                                        None => span.muted { "no policy thumbprint" },
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Sites × verdicts: one row per site (worst first), each cell shaded by its share of the
/// site's results and labelled with its count.
pub(crate) fn site_grid(c: &CheckSummary) -> Markup {
    if c.sites.is_empty() {
        return html! { p.muted { "No fresh result from any site." } };
    }
    let mut sites: Vec<(&String, &VerdictCounts)> = c.sites.iter().collect();
    sites.sort_by_key(|(s, v)| (std::cmp::Reverse((v.fail, v.warn)), s.as_str()));
    let row = 22u32;
    let label = 160u32;
    let cell = 80u32;
    let height = row * (sites.len() as u32 + 1);
    let desc: Vec<String> = sites
        .iter()
        .map(|(s, v)| format!("{s}: {} ok, {} warn, {} fail", v.ok, v.warn, v.fail))
        .collect();
    html! {
        figure.picture {
            svg.grid role="img" aria-label="Results per site and verdict" viewBox=(format!("0 0 {} {height}", label + 3 * cell)) width="100%" {
                title { "Results per site and verdict" }
                desc { (Text(&desc.join("; "))) }
                @for (j, v) in VERDICTS.iter().enumerate() {
                    text.head x=(label + j as u32 * cell + cell / 2) y="15" text-anchor="middle" { (v.as_str()) }
                }
                @for (i, (site, counts)) in sites.iter().enumerate() {
                    @let y = row * (i as u32 + 1);
                    text x="0" y=(y + 15) { (Text(site)) }
                    @for (j, v) in VERDICTS.iter().enumerate() {
                        @let n = match v { Severity::Ok => counts.ok, Severity::Warn => counts.warn, Severity::Fail => counts.fail };
                        @let share = if counts.total() == 0 { 0.0 } else { n as f64 / counts.total() as f64 };
                        rect class=(v.as_str()) x=(label + j as u32 * cell + 1) y=(y + 1) width=(cell - 2) height=(row - 2) fill-opacity=(format!("{:.2}", 0.12 + 0.88 * share)) {}
                        text.count x=(label + j as u32 * cell + cell / 2) y=(y + 15) text-anchor="middle" { (n) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, at_ms: i64, probe: &str, from: Option<&str>, to: &str) -> Event {
        Event {
            id,
            at_ms,
            probe: probe.into(),
            check: "gateway".into(),
            from: from.map(str::to_string),
            to: to.into(),
            codes: vec![],
        }
    }

    #[test]
    fn the_timeline_replays_transitions_and_holds_quiet_probes() {
        let now = 100 * 60_000;
        // p1 turns from ok to fail half-way; p2 reports for the first time at 3/4; p3 has no
        // transition in the window and is ok throughout.
        let events = [
            event(2, now - 5 * 60_000, "p1", Some("ok"), "fail"),
            event(3, now - 2 * 60_000, "p2", None, "warn"),
        ];
        let current = [
            ("p1", Severity::Fail),
            ("p2", Severity::Warn),
            ("p3", Severity::Ok),
        ];
        let t = Timeline::build(&events, &current, now, 10);
        assert_eq!(
            t.end_ms - t.start_ms,
            MIN_WINDOW_MS,
            "a young window is ten minutes"
        );
        assert_eq!(t.transitions, 2);
        let first = &t.buckets[0];
        assert_eq!(
            (first.ok, first.warn, first.fail),
            (2, 0, 0),
            "p1 and p3 ok, p2 not yet"
        );
        let mid = &t.buckets[5];
        assert_eq!(
            (mid.ok, mid.warn, mid.fail),
            (1, 0, 1),
            "p1 failed at the mid-point"
        );
        let last = t.buckets.last().expect("buckets");
        assert_eq!((last.ok, last.warn, last.fail), (1, 1, 1));
    }

    #[test]
    fn a_probe_that_stopped_counting_drops_out_at_the_end() {
        let now = 100 * 60_000;
        let events = [event(1, now - 60_000, "gone", Some("ok"), "fail")];
        let t = Timeline::build(&events, &[], now, 4);
        assert_eq!(t.buckets[0].ok, 1);
        assert_eq!(t.buckets.last().map(VerdictCounts::total), Some(0));
    }

    #[test]
    fn old_transitions_stretch_the_window_up_to_six_hours() {
        let now = 1_000 * 60_000;
        let events = [event(1, now - 90 * 60_000, "p", None, "ok")];
        let t = Timeline::build(&events, &[("p", Severity::Ok)], now, 6);
        assert_eq!(t.end_ms - t.start_ms, 90 * 60_000);
        let events = [event(1, now - 9 * 3_600_000, "p", None, "ok")];
        let t = Timeline::build(&events, &[("p", Severity::Ok)], now, 6);
        assert_eq!(t.end_ms - t.start_ms, MAX_WINDOW_MS);
        assert_eq!(t.transitions, 0, "outside the window");
    }

    #[test]
    fn pictures_say_in_words_what_they_draw() {
        let t = Timeline::build(&[], &[("p", Severity::Fail)], 10 * MIN_WINDOW_MS, 3);
        let svg = timeline("gateway", &t).into_string();
        assert!(svg.contains("now 0 ok, 0 warn, 1 fail"), "{svg}");
        assert!(svg.contains("role=\"img\""), "{svg}");
        assert_eq!(svg.matches("class=\"fail\"").count(), 3, "{svg}");
    }
}
