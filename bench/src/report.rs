//! How figures are printed: one block per scenario as it ends, then a table of every row and
//! the coordinator/baseline ratios.

/// Figures of one scenario against one server.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// `coordinator` or `baseline`.
    pub server: &'static str,
    /// Which scenario.
    pub scenario: String,
    /// Probes connected.
    pub probes: usize,
    /// Reports committed (acknowledged) per second.
    pub reports_per_s: Option<f64>,
    /// Server CPU seconds per 1,000 reports.
    pub cpu_per_1k: Option<f64>,
    /// Server CPU use, in cores.
    pub server_cores: Option<f64>,
    /// Load generator CPU use, in cores.
    pub loadgen_cores: Option<f64>,
    /// Server resident memory, MiB.
    pub rss_mib: f64,
    /// Server resident memory per connected probe above the empty process, KiB.
    pub rss_per_probe_kib: Option<f64>,
    /// Report → Ack latency, median, ms.
    pub p50_ms: Option<f64>,
    /// Report → Ack latency, 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Round: time until 95% committed, s.
    pub round_95_s: Option<f64>,
    /// Round: time until all committed, s.
    pub round_100_s: Option<f64>,
    /// Storm: time until half are back, s.
    pub storm_50_s: Option<f64>,
    /// Storm: time until 95% are back, s.
    pub storm_95_s: Option<f64>,
    /// Storm: time until all are back, s.
    pub storm_100_s: Option<f64>,
    /// Storm: probes back at least once (a probe back and lost again still counts).
    pub storm_back: Option<u64>,
    /// Storm: server CPU per reconnect, ms.
    pub cpu_per_reconnect_ms: Option<f64>,
    /// Server peak resident memory (since it started), MiB.
    pub peak_rss_mib: Option<f64>,
    /// Anything else worth saying.
    pub note: String,
}

/// `1234567` as `1,234,567`.
pub fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Milliseconds with a sensible precision.
pub fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

impl Row {
    /// Prints the row as a block.
    pub fn print(&self) {
        println!("  [{}] {}", self.server, self.scenario);
        println!(
            "    probes connected          {}",
            fmt_count(self.probes as u64)
        );
        if let Some(r) = self.reports_per_s {
            println!("    reports/s committed       {}", fmt_count(r as u64));
        }
        if let Some(c) = self.cpu_per_1k {
            println!("    CPU s per 1,000 reports   {c:.3}");
        }
        println!(
            "    server RSS                {:.1} MiB ({} KiB per connected probe above the empty process)",
            self.rss_mib,
            opt(self.rss_per_probe_kib, |k| format!("{k:.1}"))
        );
        println!(
            "    CPU use                   server {} cores, load generator {} cores",
            opt(self.server_cores, |c| format!("{c:.2}")),
            opt(self.loadgen_cores, |c| format!("{c:.2}"))
        );
        if self.p50_ms.is_some() {
            println!(
                "    report→commit (Ack) p50/p99 {} / {}",
                opt(self.p50_ms, fmt_ms),
                opt(self.p99_ms, fmt_ms)
            );
        }
        if self.round_100_s.is_some() || self.round_95_s.is_some() {
            println!(
                "    round committed           95% in {} s, 100% in {} s",
                opt(self.round_95_s, |s| format!("{s:.2}")),
                opt(self.round_100_s, |s| format!("{s:.2}"))
            );
        }
        if self.storm_50_s.is_some() {
            println!(
                "    reconnect storm           50% in {} s, 95% in {} s, 100% in {} s",
                opt(self.storm_50_s, |s| format!("{s:.2}")),
                opt(self.storm_95_s, |s| format!("{s:.2}")),
                opt(self.storm_100_s, |s| format!("{s:.2}"))
            );
        }
        if !self.note.is_empty() {
            println!("    {}", self.note);
        }
    }
}

/// Prints every row as a Markdown table.
pub fn table(rows: &[Row]) {
    println!("| server | scenario | probes | reports/s | CPU s/1k reports | RSS MiB | KiB/probe | p50 | p99 | round 95% / 100% | storm 50% / 95% / 100% |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} |",
            r.server,
            r.scenario,
            fmt_count(r.probes as u64),
            opt(r.reports_per_s, |v| fmt_count(v as u64)),
            opt(r.cpu_per_1k, |v| format!("{v:.3}")),
            r.rss_mib,
            opt(r.rss_per_probe_kib, |v| format!("{v:.1}")),
            opt(r.p50_ms, fmt_ms),
            opt(r.p99_ms, fmt_ms),
            match (r.round_95_s, r.round_100_s) {
                (None, None) => "-".into(),
                (a, b) => format!(
                    "{} / {} s",
                    opt(a, |s| format!("{s:.2}")),
                    opt(b, |s| format!("{s:.2}"))
                ),
            },
            match r.storm_50_s {
                None => "-".into(),
                Some(_) => format!(
                    "{} / {} / {} s",
                    opt(r.storm_50_s, |s| format!("{s:.2}")),
                    opt(r.storm_95_s, |s| format!("{s:.2}")),
                    opt(r.storm_100_s, |s| format!("{s:.2}"))
                ),
            },
        );
    }
}

fn find<'a>(rows: &'a [Row], server: &str, scenario: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.server == server && r.scenario.starts_with(scenario))
}

/// A figure at `n` probes and, below 100,000, its linear extrapolation to 100,000.
fn at_fleet(v: f64, n: usize, unit: &str) -> String {
    if n >= 100_000 || n == 0 {
        format!("{v:.2} {unit}")
    } else {
        format!(
            "{v:.2} {unit} ({:.1} {unit} extrapolated to 100,000)",
            v * 100_000.0 / n as f64
        )
    }
}

/// One ratio line: the ratio, its target, and both absolute figures.
fn ratio_line(what: &str, c: f64, b: f64, target: &str, figures: String) {
    println!("{what:<46} {:>5.2}  ({target}; {figures})", c / b.max(1e-9));
}

/// Why a scenario's figures cannot be compared (it did not complete), if so.
fn unfinished(rows: &[Row], scenario: &str) -> Option<String> {
    let problems: Vec<String> = ["coordinator", "baseline"]
        .iter()
        .filter_map(|server| find(rows, server, scenario))
        .flat_map(problems)
        .collect();
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Prints the coordinator/baseline ratios of every scenario both ran, with the absolute
/// figures beside them (times also extrapolated to 100,000 when `n` is smaller). A scenario
/// either server did not complete gets no ratio: its figures measure the failure, not the
/// server.
pub fn ratios(rows: &[Row], n: usize) {
    for scenario in ["b:", "c:", "d:", "e:"] {
        if let Some(why) = unfinished(rows, scenario) {
            println!(
                "scenario {} ratios: not comparable, {why}",
                scenario.trim_end_matches(':')
            );
        }
    }
    let both = |scenario: &str, f: fn(&Row) -> Option<f64>| {
        if unfinished(rows, scenario).is_some() {
            return (None, None);
        }
        (
            find(rows, "coordinator", scenario).and_then(f),
            find(rows, "baseline", scenario).and_then(f),
        )
    };
    if let (Some(c), Some(b)) = both("c:", |r| r.reports_per_s) {
        ratio_line(
            "ingest rate, coordinator / baseline:",
            c,
            b,
            "target at least 0.50",
            format!(
                "{} / {} reports/s",
                fmt_count(c as u64),
                fmt_count(b as u64)
            ),
        );
    }
    if let (Some(c), Some(b)) = both("c:", |r| r.cpu_per_1k) {
        ratio_line(
            "CPU per report, coordinator / baseline:",
            c,
            b,
            "target at most 2",
            format!("{c:.3} / {b:.3} s per 1,000"),
        );
    }
    if let (Some(c), Some(b)) = both("b:", |r| r.cpu_per_1k) {
        ratio_line(
            "CPU per report, same steady load (b):",
            c,
            b,
            "no target; the target is (c)'s",
            format!("{c:.3} / {b:.3} s per 1,000"),
        );
    }
    if let (Some(c), Some(b)) = both("a:", |r| r.rss_per_probe_kib) {
        ratio_line(
            "memory per connection, coordinator / baseline:",
            c,
            b,
            "target at most 1.1",
            format!("{c:.1} / {b:.1} KiB"),
        );
    }
    if let (Some(c), Some(b)) = both("d:", |r| r.round_100_s) {
        ratio_line(
            "round time (100%), coordinator / baseline:",
            c,
            b,
            "target at most 1.5",
            format!(
                "coordinator {}, baseline {}",
                at_fleet(c, n, "s"),
                at_fleet(b, n, "s")
            ),
        );
    }
    if let (Some(c), Some(b)) = both("d:", |r| r.cpu_per_1k) {
        ratio_line(
            "CPU per round report, coordinator / baseline:",
            c,
            b,
            "no target",
            format!("{c:.3} / {b:.3} s per 1,000"),
        );
    }
    if let (Some(c), Some(b)) = both("e:", |r| r.storm_100_s) {
        ratio_line(
            "storm time (100%), coordinator / baseline:",
            c,
            b,
            "target at most 1.2",
            format!(
                "coordinator {}, baseline {}",
                at_fleet(c, n, "s"),
                at_fleet(b, n, "s")
            ),
        );
    }
    if let (Some(c), Some(b)) = both("e:", |r| r.cpu_per_reconnect_ms) {
        ratio_line(
            "CPU per reconnect, coordinator / baseline:",
            c,
            b,
            "no target",
            format!("{c:.2} / {b:.2} ms"),
        );
    }
}

/// Prints the figures per server core, so that machines of other sizes compare: reports/s
/// per core and reconnects/s per core of CPU the servers had.
pub fn per_core(rows: &[Row], cores: usize) {
    let cores = cores.max(1);
    println!(
        "per server core ({cores} core{} given to the servers):",
        if cores == 1 { "" } else { "s" }
    );
    for r in rows {
        if let Some(rate) = r.reports_per_s {
            println!(
                "  [{}] {}: {} reports/s per core given, {} per core used ({:.2} cores used)",
                r.server,
                r.scenario,
                fmt_count((rate / cores as f64) as u64),
                fmt_count((rate / r.server_cores.unwrap_or(0.0).max(1e-3)) as u64),
                r.server_cores.unwrap_or(0.0)
            );
        }
        if let Some(ms) = r.cpu_per_reconnect_ms {
            println!(
                "  [{}] {}: {} reconnects/s per core of CPU ({ms:.2} ms each)",
                r.server,
                r.scenario,
                fmt_count((1000.0 / ms.max(1e-6)) as u64),
            );
        }
    }
}

/// Scenarios that did not complete (no report acknowledged, a round or a storm unfinished,
/// reports never acknowledged): the figures are printed all the same, and the run fails.
pub fn incomplete(rows: &[Row]) -> Vec<String> {
    rows.iter().flat_map(problems).collect()
}

/// What did not complete in one scenario's row.
fn problems(r: &Row) -> Vec<String> {
    let mut out = Vec::new();
    {
        let what = format!("[{}] {}", r.server, r.scenario);
        if r.reports_per_s.is_some_and(|v| v <= 0.0) {
            out.push(format!("{what}: no report acknowledged"));
        }
        if r.scenario.starts_with("d:") && r.round_100_s.is_none() {
            out.push(format!("{what}: the round did not complete"));
        }
        if r.scenario.starts_with("e:")
            && (r.storm_100_s.is_none() || r.note.contains("NOT ALL BACK"))
        {
            out.push(format!("{what}: not every probe came back"));
        }
        if r.note.contains("NOT DRAINED") {
            out.push(format!("{what}: reports left unacknowledged"));
        }
    }
    out
}

/// Prints each target of issue 8 with the figure measured at `n` probes and, when `n` is
/// below 100,000, the linear extrapolation to 100,000 (memory grows per connection; a round
/// and a storm are CPU-bound on one core, so their time grows with the count).
pub fn targets(rows: &[Row], n: usize) {
    const FLEET: f64 = 100_000.0;
    let scale = FLEET / n.max(1) as f64;
    let extrapolated = n < 100_000;
    let how = |v: String| {
        if extrapolated {
            format!("{v} (extrapolated linearly from {})", fmt_count(n as u64))
        } else {
            v
        }
    };
    if let Some(a) = find(rows, "coordinator", "a:") {
        // Idle connections that have never reported cost less than connections of a fleet that
        // reports (the latest result per probe, the store's page cache, buffers that stay):
        // judge with the larger of (a) and (b).
        let steady = find(rows, "coordinator", "b:").and_then(|b| b.rss_per_probe_kib);
        let per_probe = a
            .rss_per_probe_kib
            .unwrap_or(0.0)
            .max(steady.unwrap_or(0.0));
        let empty_mib = a.rss_mib - a.rss_per_probe_kib.unwrap_or(0.0) * a.probes as f64 / 1024.0;
        let at_fleet = empty_mib + per_probe * FLEET / 1024.0;
        println!(
            "100,000 connected probes under 4 GiB RSS: {} at {per_probe:.1} KiB per probe ({}) -> {}",
            how(format!("{:.2} GiB", at_fleet / 1024.0)),
            if steady.is_some_and(|s| s >= a.rss_per_probe_kib.unwrap_or(0.0)) {
                "while reporting, scenario b"
            } else {
                "connected, scenario a"
            },
            if at_fleet < 4096.0 { "met" } else { "MISSED" }
        );
        if let Some(peak) = find(rows, "coordinator", "d:").and_then(|d| d.peak_rss_mib) {
            let per_probe = (peak - empty_mib).max(0.0) * 1024.0 / a.probes.max(1) as f64;
            let at_fleet = empty_mib + per_probe * FLEET / 1024.0;
            println!(
                "100,000 probes under 4 GiB at the peak of a round: {} at {per_probe:.1} KiB per probe (peak RSS {peak:.0} MiB) -> {}",
                how(format!("{:.2} GiB", at_fleet / 1024.0)),
                if at_fleet < 4096.0 { "met" } else { "MISSED" }
            );
        }
    }
    if let Some(d) = find(rows, "coordinator", "d:") {
        match d.round_100_s {
            Some(t) => {
                let at_fleet = t * scale;
                println!(
                    "ProbeNow round over 100,000 committed in under 5 s: {} -> {}",
                    how(format!("{at_fleet:.1} s")),
                    if at_fleet < 5.0 { "met" } else { "MISSED" }
                );
            }
            None => println!("ProbeNow round over 100,000 committed in under 5 s: the round did not complete -> MISSED"),
        }
    }
    if let Some(e) = find(rows, "coordinator", "e:") {
        match e.storm_100_s {
            Some(t) if e.note.contains("NOT ALL BACK") => println!(
                "reconnect storm of 100,000 absorbed in under 30 s: not all probes came back ({t:.1} s to the last one seen) -> MISSED"
            ),
            Some(t) => {
                let at_fleet = t * scale;
                println!(
                    "reconnect storm of 100,000 absorbed in under 30 s without collapse: {} -> {}",
                    how(format!("{at_fleet:.1} s")),
                    if at_fleet < 30.0 { "met" } else { "MISSED" }
                );
            }
            None => println!(
                "reconnect storm of 100,000 absorbed in under 30 s: only {} of the probes came back ({}) -> MISSED",
                fmt_count(e.storm_back.unwrap_or(e.probes as u64)),
                e.storm_50_s
                    .map(|t| format!("half of them after {t:.1} s"))
                    .unwrap_or_else(|| "fewer than half".into())
            ),
        }
    }
    if let Some(why) = unfinished(rows, "c:") {
        println!("ingest at least 50% of the raw baseline: not comparable ({why}) -> MISSED");
    } else if let (Some(c), Some(b)) = (
        find(rows, "coordinator", "c:").and_then(|r| r.reports_per_s),
        find(rows, "baseline", "c:").and_then(|r| r.reports_per_s),
    ) {
        let ratio = c / b.max(1e-9);
        println!(
            "ingest at least 50% of the raw baseline: {:.0}% -> {}",
            ratio * 100.0,
            if ratio >= 0.5 { "met" } else { "MISSED" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_either_server_did_not_complete_is_not_compared() {
        let row = |server: &'static str, note: &str| Row {
            server,
            scenario: "c: saturating ingest".into(),
            reports_per_s: Some(1000.0),
            note: note.into(),
            ..Row::default()
        };
        let done = vec![row("coordinator", ""), row("baseline", "")];
        assert_eq!(unfinished(&done, "c:"), None);
        let failed = vec![
            row("coordinator", ""),
            row("baseline", "; NOT DRAINED within 60 s"),
        ];
        let why = unfinished(&failed, "c:").expect("not comparable");
        assert!(
            why.contains("[baseline] c: saturating ingest: reports left unacknowledged"),
            "{why}"
        );
        assert_eq!(
            unfinished(&failed, "d:"),
            None,
            "another scenario is unaffected"
        );
    }

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(fmt_count(0), "0");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_count(1000), "1,000");
        assert_eq!(fmt_count(1234567), "1,234,567");
    }
}
