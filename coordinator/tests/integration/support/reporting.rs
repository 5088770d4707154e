//! Three real probes (p1, p2, p3) reporting once a second, and their report latency
//! (produced on the probe -> committed in the store) before and during whatever a test does to
//! the coordinator: the flood, the HTTP hammer, a hostile probe.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cemwatch_tests::process::{eventually, Proc};

use super::fixtures::Lab;
use super::processes::{enroll_ok, run_probe, token, Coordinator};
use super::store::{count, rss_kib, store, stored_reports};

/// Unix milliseconds now (the store's clock).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Enrols p1, p2 and p3 with `labels`, runs them, and waits until each has reported.
pub(crate) fn start(lab: &Lab, coord: &Coordinator, config: &Path, labels: &str) -> Vec<Proc> {
    let mut probes = Vec::new();
    for name in ["p1", "p2", "p3"] {
        let state = lab.dir.path().join(name);
        enroll_ok(coord.quic, &token(config, labels, name, "1h"), &state);
        probes.push(run_probe(name, &state, &lab.ca_file, &[]));
    }
    eventually("three probes reporting", Duration::from_secs(60), || {
        let n = count(
            &store(lab),
            "SELECT COUNT(DISTINCT probe) FROM reports WHERE probe IN ('p1', 'p2', 'p3')",
            [],
        );
        (n == 3).then_some(())
    })
    .expect("reporting");
    probes
}

/// Four seconds of the probes reporting undisturbed: the window (Unix ms) to compare with.
pub(crate) fn calm() -> (i64, i64) {
    let from = now_ms();
    std::thread::sleep(Duration::from_secs(4));
    (from, now_ms())
}

/// The probes' latencies in two windows.
pub(crate) struct Latency {
    /// Before, sorted (ms).
    pub calm: Vec<i64>,
    /// During, sorted (ms).
    pub during: Vec<i64>,
    /// Reports per probe during.
    pub per_probe: Vec<(String, i64)>,
}

impl Latency {
    /// Reads both windows from the store.
    pub(crate) fn measure(lab: &Lab, calm: (i64, i64), during: (i64, i64)) -> Self {
        let (calm, _) = latencies(lab, calm.0, calm.1);
        let (during, per_probe) = latencies(lab, during.0, during.1);
        Self {
            calm,
            during,
            per_probe,
        }
    }

    /// One line for the test's output.
    pub(crate) fn line(&self) -> String {
        format!(
            "  real probes' report latency: before p50={} ms p99={} ms (n={}); during p50={} ms p99={} ms (n={}); reports during {:?}",
            percentile(&self.calm, 0.5),
            percentile(&self.calm, 0.99),
            self.calm.len(),
            percentile(&self.during, 0.5),
            percentile(&self.during, 0.99),
            self.during.len(),
            self.per_probe
        )
    }

    /// The probes kept reporting through `secs` seconds of `what`, in time (p99 under 5 s).
    pub(crate) fn assert_kept_reporting(&self, secs: i64, what: &str) {
        for (probe, n) in &self.per_probe {
            assert!(
                *n >= secs / 3,
                "{probe} reported only {n} times in {secs} s of {what}"
            );
        }
        assert!(
            percentile(&self.during, 0.99) < 5_000,
            "p99 report latency during {what}: {:?}",
            self.during
        );
    }
}

/// Samples `pid`'s RSS every 100 ms until `until`; the thread returns the peak (KiB).
pub(crate) fn peak_rss(pid: u32, until: Instant) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while Instant::now() < until {
            peak = peak.max(rss_kib(pid).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(100));
        }
        peak
    })
}

/// The `p` quantile (0 to 1) of `sorted` (-1 when empty).
pub(crate) fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Report latencies (ms from production on the probe to commit) of probes p1, p2 and p3 between
/// `from` and `to` (Unix ms, commit time), sorted; and the reports per probe.
fn latencies(lab: &Lab, from: i64, to: i64) -> (Vec<i64>, Vec<(String, i64)>) {
    let db = store(lab);
    let mut all: Vec<i64> = stored_reports(
        &db,
        "probe IN ('p1', 'p2', 'p3') AND received_at BETWEEN ?1 AND ?2",
        [from, to],
    )
    .into_iter()
    .flat_map(|(_, _, received, results)| {
        results
            .into_iter()
            .map(move |r| received - r.produced_at_ms as i64)
    })
    .collect();
    all.sort_unstable();
    let per_probe = ["p1", "p2", "p3"]
        .iter()
        .map(|p| {
            let n = count(
                &db,
                "SELECT COUNT(*) FROM reports WHERE probe = ?1 AND received_at BETWEEN ?2 AND ?3",
                rusqlite::params![p, from, to],
            );
            (p.to_string(), n)
        })
        .collect();
    (all, per_probe)
}
