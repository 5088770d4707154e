//! What the coordinator stored and what the probes still hold, read directly: the store
//! (SQLite, beside the running coordinator), the probes' spools, the coordinator's memory.

use std::path::Path;
use std::time::Duration;

use super::fixtures::Lab;

/// The coordinator's process RSS in KiB (Linux), from /proc/PID/status.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The store, opened read-only beside the running coordinator.
pub(crate) fn store(lab: &Lab) -> rusqlite::Connection {
    let path = lab.dir.path().join("data").join("cemwatch.sqlite");
    let db =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the store");
    db.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    db
}

/// One number from the store.
pub(crate) fn count(db: &rusqlite::Connection, sql: &str, params: impl rusqlite::Params) -> i64 {
    db.query_row(sql, params, |r| r.get(0)).expect("query")
}

/// The sequence numbers still in a probe's spool (`STATE/spool/SEQ.report`).
pub(crate) fn spooled(state: &Path) -> Vec<i64> {
    std::fs::read_dir(state.join("spool"))
        .expect("spool")
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".report")
                .and_then(|s| s.parse().ok())
        })
        .collect()
}

/// The sequence numbers of `probe`'s reports in the store, in order.
pub(crate) fn stored_seqs(db: &rusqlite::Connection, probe: &str) -> Vec<i64> {
    db.prepare("SELECT seq FROM reports WHERE probe = ?1 ORDER BY seq")
        .expect("prepare")
        .query_map([probe], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// Reports the store dropped as duplicates (its `reports_duplicate` counter).
pub(crate) fn duplicates_dropped(db: &rusqlite::Connection) -> i64 {
    db.query_row(
        "SELECT COALESCE((SELECT value FROM counters WHERE name = 'reports_duplicate'), 0)",
        [],
        |r| r.get(0),
    )
    .expect("the duplicates counter")
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
pub(crate) fn latencies(lab: &Lab, from: i64, to: i64) -> (Vec<i64>, Vec<(String, i64)>) {
    let db = store(lab);
    let mut stmt = db
        .prepare(
            "SELECT r.received_at - s.produced_at FROM reports r JOIN results s ON r.probe = s.probe AND r.seq = s.seq \
             WHERE r.probe IN ('p1', 'p2', 'p3') AND r.received_at BETWEEN ?1 AND ?2",
        )
        .expect("prepare");
    let mut all: Vec<i64> = stmt
        .query_map([from, to], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
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
