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

/// A stored report: probe, seq, received at (Unix ms) and its results, decoded as the
/// coordinator reads them (postcard, or JSON in rows of schema 2).
pub(crate) type StoredReport = (String, i64, i64, Vec<cemwatch_shared::wire::CheckReport>);

/// The reports whose rows match `filter` (an SQL condition on `reports`, `1` for all), with
/// their results decoded.
pub(crate) fn stored_reports(
    db: &rusqlite::Connection,
    filter: &str,
    params: impl rusqlite::Params,
) -> Vec<StoredReport> {
    let mut stmt = db
        .prepare(&format!(
            "SELECT probe, seq, received_at, results FROM reports WHERE {filter} ORDER BY id"
        ))
        .expect("prepare");
    let mut rows = stmt.query(params).expect("query");
    let mut out = Vec::new();
    while let Some(row) = rows.next().expect("row") {
        let results =
            cemwatch_coordinator::store::results::decode(row.get_ref(3).expect("results"))
                .expect("stored results decode");
        out.push((
            row.get(0).expect("probe"),
            row.get(1).expect("seq"),
            row.get(2).expect("received_at"),
            results,
        ));
    }
    out
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
