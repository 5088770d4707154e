//! Retention: reports and events older than `[store] keep` are deleted, and when the store's
//! data outgrows `[store] max_size` the oldest reports go first whatever their age. Pruning
//! runs on the writer's connection in steps of [`PRUNE_CHUNK`] rows, each its own short
//! transaction queued behind the reports already waiting, so ingest is never held up by more
//! than one step (a few milliseconds). Never deleted: a report the latest result of some probe
//! and check still points to (the fleet view is loaded from them), and reports after the last
//! checkpoint (replayed into the ledger after a crash).
//!
//! A step reads only what it may delete. Reports are appended with their commit time, so age
//! falls with the id: [`old_reports_end`] finds where the old reports end by a binary search
//! over ids (about log2(rows) B-tree seeks: 21 at a million rows), and the delete scans
//! ids below that end only. Filtering on `received_at` alone read the whole table at every
//! step, 10 s apart, on the writer's thread: measured at 15.8% of the writer's CPU (6% of the
//! coordinator's) under saturating ingest with a table of a million rows, and growing with
//! the table.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::store::Result;

/// Rows deleted per step.
pub const PRUNE_CHUNK: i64 = 2_000;

/// What one step deleted, and whether there is more to delete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Reports deleted.
    pub reports: u64,
    /// Events deleted.
    pub events: u64,
    /// Whether another step would delete more.
    pub more: bool,
}

/// Bytes of the store holding data (pages in use, free pages excluded).
pub fn used_bytes(conn: &Connection) -> Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(((pages - free).max(0) as u64) * size as u64)
}

/// The id from which on every report was received at or after `cutoff_ms`, as far as the
/// order of ids says: found by a binary search over ids, each probe one seek to the first
/// report at or after an id. Reports are committed with the wall clock's time, so their ages
/// fall with their ids; after the clock is stepped back the order is imperfect, and a report
/// older than the cutoff found above the end is kept until a later step finds it below,
/// never deleted early (the delete checks each report's age as well). 0 when there are no
/// reports. With it, the virtual-machine steps its statements took.
pub(crate) fn old_reports_end(conn: &Connection, cutoff_ms: i64) -> Result<(i64, i32)> {
    // Two statements: SQLite reads a lone MIN or MAX of the rowid with one seek, but both in
    // one statement with a scan of the whole table.
    let mut first = conn.prepare_cached("SELECT MIN(id) FROM reports")?;
    let mut last = conn.prepare_cached("SELECT MAX(id) FROM reports")?;
    let lo: Option<i64> = first.query_row([], |r| r.get(0))?;
    let hi: Option<i64> = last.query_row([], |r| r.get(0))?;
    let mut steps = first.reset_status(rusqlite::StatementStatus::VmStep)
        + last.reset_status(rusqlite::StatementStatus::VmStep);
    let (Some(mut lo), Some(last)) = (lo, hi) else {
        return Ok((0, steps));
    };
    // Invariant: every report below `lo` is old; the first report at or after `hi` (if any)
    // is not.
    let mut hi = last.saturating_add(1);
    let mut first_from = conn
        .prepare_cached("SELECT id, received_at FROM reports WHERE id >= ?1 ORDER BY id LIMIT 1")?;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let found: Option<(i64, i64)> = first_from
            .query_row([mid], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match found {
            Some((id, at)) if at < cutoff_ms => lo = id.saturating_add(1),
            _ => hi = mid,
        }
    }
    steps += first_from.reset_status(rusqlite::StatementStatus::VmStep);
    Ok((lo, steps))
}

/// One step: reports received before `cutoff_ms` (all eligible reports, oldest first, while
/// the store uses more than `max_size` bytes), and events before `cutoff_ms`.
pub fn prune_step(conn: &mut Connection, cutoff_ms: i64, max_size: u64) -> Result<Pruned> {
    let over = used_bytes(conn)? > max_size;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (reports, _) = prune_reports(&tx, over, cutoff_ms)?;
    let events = tx
        .prepare_cached(
            "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < ?1 ORDER BY id LIMIT ?2)",
        )?
        .execute(params![cutoff_ms, PRUNE_CHUNK])? as u64;
    for (name, n) in [("reports_pruned", reports), ("events_pruned", events)] {
        if n > 0 {
            crate::store::probes::bump(&tx, name, n as i64)?;
        }
    }
    tx.commit()?;
    Ok(Pruned {
        reports,
        events,
        more: reports == PRUNE_CHUNK as u64 || events == PRUNE_CHUNK as u64,
    })
}

/// Deletes up to [`PRUNE_CHUNK`] eligible reports (covered by the last checkpoint, no latest
/// result's report; old, or any age when `over`), oldest first; the reports deleted and the
/// virtual-machine steps of the search and the delete (what they read: a test holds it to
/// what may be deleted).
pub(crate) fn prune_reports(conn: &Connection, over: bool, cutoff_ms: i64) -> Result<(u64, i32)> {
    let checkpoint: i64 = conn
        .query_row("SELECT value FROM meta WHERE key = 'checkpoint'", [], |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or(0);
    // Ids below `end` may be deleted: up to the checkpoint, and where the old ones end.
    let mut end = checkpoint.saturating_add(1);
    let mut steps = 0;
    if !over {
        let (old_end, searched) = old_reports_end(conn, cutoff_ms)?;
        end = end.min(old_end);
        steps += searched;
    }
    let mut delete = conn.prepare_cached(
        "DELETE FROM reports WHERE id IN (
             SELECT r.id FROM reports AS r
              WHERE r.id < ?1
                AND (?2 OR r.received_at < ?3)
                AND NOT EXISTS (SELECT 1 FROM latest AS l WHERE l.report_id = r.id)
              ORDER BY r.id LIMIT ?4)",
    )?;
    let deleted = delete.execute(params![end, over, cutoff_ms, PRUNE_CHUNK])? as u64;
    // Read and reset: the cached statement would keep counting from one step to the next.
    steps += delete.reset_status(rusqlite::StatementStatus::VmStep);
    Ok((deleted, steps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::open;

    /// Appends reports received at the given times (ms), in this order, and a checkpoint
    /// covering them all.
    fn append(db: &Connection, received: impl IntoIterator<Item = i64>) {
        let mut insert = db
            .prepare(
                "INSERT INTO reports (probe, seq, round, received_at, results) VALUES ('p', ?1, NULL, ?2, X'00')",
            )
            .expect("prepare");
        for (seq, at) in received.into_iter().enumerate() {
            insert.execute(params![seq as i64, at]).expect("insert");
        }
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('checkpoint', (SELECT MAX(id) FROM reports)) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [],
        )
        .expect("checkpoint");
    }

    /// The ids of the reports left, in order.
    fn reports_left(db: &Connection) -> Vec<i64> {
        db.prepare("SELECT id FROM reports ORDER BY id")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<std::result::Result<_, _>>()
            .expect("ids")
    }

    /// What a step reads is what it may delete: with 20,000 recent reports and none old, the
    /// search and the delete take a few hundred virtual-machine steps, where a filter on the
    /// age alone reads every row (120,021 steps), and so does a MIN and MAX of the ids in one
    /// statement; with 100 old ones first, it deletes those 100 and reads little more.
    #[test]
    fn a_step_reads_the_old_reports_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path()).expect("open");
        let now = 1_000_000_000i64;
        append(&db, std::iter::repeat_n(now, 20_000));
        assert_eq!(old_reports_end(&db, now - 1).expect("end").0, 1);
        let (deleted, steps) = prune_reports(&db, false, now - 1).expect("prune");
        assert_eq!(deleted, 0);
        assert!(steps < 400, "nothing old, yet {steps} steps");

        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path()).expect("open");
        append(
            &db,
            (0..100)
                .map(|i| now - 10_000 + i)
                .chain(std::iter::repeat_n(now, 20_000)),
        );
        assert_eq!(old_reports_end(&db, now - 1).expect("end").0, 101);
        let (deleted, steps) = prune_reports(&db, false, now - 1).expect("prune");
        assert_eq!(deleted, 100);
        assert!(
            steps < 100 * 30 + 400,
            "100 old reports deleted in {steps} steps"
        );
        let left: i64 = db
            .query_row("SELECT COUNT(*) FROM reports", [], |r| r.get(0))
            .expect("count");
        assert_eq!(left, 20_000);
    }

    /// A clock stepped back: a report older than the cutoff after newer ones is kept (never
    /// one newer than the cutoff deleted); reports past the checkpoint and latest results'
    /// reports are kept whatever their age; over `max_size` age does not matter.
    #[test]
    fn out_of_order_times_delete_nothing_new_and_the_latest_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path()).expect("open");
        // ids 1-3 old, 4 new, 5 old again (the clock stepped back), 6 new.
        append(&db, [10, 20, 30, 1_000, 40, 2_000]);
        db.execute(
            "INSERT INTO latest (probe, check_name, report_id, seq, round, produced_at, received_at, verdict, codes) VALUES ('p', 'c', 2, 1, NULL, 0, 20, 'ok', '')",
            [],
        )
        .expect("latest");
        // The search stops at the first new report it meets: 4 (5 is found above it).
        assert_eq!(old_reports_end(&db, 500).expect("end").0, 4);
        let (deleted, _) = prune_reports(&db, false, 500).expect("prune");
        let ids = reports_left(&db);
        assert!(
            ids.contains(&2),
            "the latest result's report stays: {ids:?}"
        );
        assert!(
            ids.contains(&4) && ids.contains(&6),
            "new reports stay: {ids:?}"
        );
        assert_eq!(deleted as usize, 6 - ids.len());
        assert!(
            !ids.contains(&1) && !ids.contains(&3),
            "old ones go: {ids:?}"
        );

        // Over max_size: every eligible report, new or old, up to the checkpoint.
        db.execute("UPDATE meta SET value = 4 WHERE key = 'checkpoint'", [])
            .expect("checkpoint");
        prune_reports(&db, true, 0).expect("prune");
        let ids = reports_left(&db);
        assert_eq!(
            ids,
            vec![2, 5, 6],
            "4 went (over size), 5 and 6 are past the checkpoint"
        );
    }
}
