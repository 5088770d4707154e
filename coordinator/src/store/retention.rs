//! Retention: reports and events older than `[store] keep` are deleted, and when the store's
//! data outgrows `[store] max_size` the oldest reports go first whatever their age. Pruning
//! runs on the writer's connection in steps of [`PRUNE_CHUNK`] rows, each its own short
//! transaction queued behind the reports already waiting, so ingest is never held up by more
//! than one step (a few milliseconds). Never deleted: a report the latest result of some probe
//! and check still points to (the fleet view is loaded from them), and reports after the last
//! checkpoint (replayed into the ledger after a crash).

use rusqlite::{params, Connection, TransactionBehavior};

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

/// One step: reports received before `cutoff_ms` (all eligible reports, oldest first, while
/// the store uses more than `max_size` bytes), and events before `cutoff_ms`.
pub fn prune_step(conn: &mut Connection, cutoff_ms: i64, max_size: u64) -> Result<Pruned> {
    let over = used_bytes(conn)? > max_size;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Eligible: covered by the last checkpoint and no latest result's report.
    let reports = tx
        .prepare_cached(
            "DELETE FROM reports WHERE id IN (
                 SELECT r.id FROM reports AS r
                  WHERE r.id <= COALESCE((SELECT value FROM meta WHERE key = 'checkpoint'), 0)
                    AND (?1 OR r.received_at < ?2)
                    AND NOT EXISTS (SELECT 1 FROM latest AS l WHERE l.report_id = r.id)
                  ORDER BY r.id LIMIT ?3)",
        )?
        .execute(params![over, cutoff_ms, PRUNE_CHUNK])? as u64;
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
