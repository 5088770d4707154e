//! Reads for the fleet view: what the coordinator loads at start.

use std::collections::BTreeMap;

use crate::store::Result;
use rusqlite::Connection;

use crate::model::event::{Event, EventQuery};
use crate::model::latest::Latest;
use crate::model::probe::{AgentView, ProbeView, Probes};

/// Every probe as the store holds it: labels, last contact, revocation, the agent's latest state
/// and the latest result per check (decoded from the report that carried it). Connections are
/// not stored: every probe starts disconnected.
pub fn load_probes(conn: &Connection) -> Result<Probes> {
    let mut probes = Probes::default();
    for p in super::list_probes(conn)? {
        probes.insert(
            p.name.clone(),
            ProbeView {
                labels: p.labels.into(),
                connected: false,
                last_seen_ms: p.last_seen.unwrap_or(p.enrolled_at),
                agent_version: p.agent_version,
                revoked: p.revoked_at.is_some(),
                latest: BTreeMap::new(),
                connected_since_ms: 0,
                agent: None,
            },
        );
    }
    for (probe, state, received_ms) in super::agent_states(conn)? {
        if let Some(view) = probes.get_mut(&probe) {
            view.agent = Some(AgentView { state, received_ms });
        }
    }
    // A report holds the latest result of one or several checks: decoded once for them all.
    let mut stmt = conn.prepare(
        "SELECT l.report_id, l.probe, l.check_name, l.seq, l.round, l.produced_at, r.results
                   FROM latest AS l JOIN reports AS r ON r.id = l.report_id
                  ORDER BY l.report_id",
    )?;
    let mut rows = stmt.query([])?;
    let mut decoded: Option<(i64, Vec<cemwatch_shared::wire::CheckReport>)> = None;
    while let Some(row) = rows.next()? {
        let report_id: i64 = row.get(0)?;
        let probe: String = row.get(1)?;
        let check: String = row.get(2)?;
        let seq: i64 = row.get(3)?;
        let round: Option<i64> = row.get(4)?;
        let produced: i64 = row.get(5)?;
        if decoded.as_ref().is_none_or(|(id, _)| *id != report_id) {
            let results = match super::results::decode(row.get_ref(6)?) {
                Ok(results) => results,
                Err(e) => {
                    tracing::warn!(report = report_id, probe, error = %e, "a latest result is unreadable; the probe shows without it until it reports again");
                    Vec::new()
                }
            };
            decoded = Some((report_id, results));
        }
        let Some(result) = decoded
            .as_ref()
            .and_then(|(_, results)| results.iter().find(|r| r.check == check))
            .map(|r| &r.result)
        else {
            continue;
        };
        if let Some(view) = probes.get_mut(&probe) {
            view.latest.insert(
                check,
                Latest::from_result(seq as u64, round.map(|r| r as u64), produced, result),
            );
        }
    }
    Ok(probes)
}

/// Verdict transitions matching `q`, newest first (at most 1000; 100 by default), older than
/// `q.before_id` when given. Each combination of filters is its own statement, so that SQLite
/// walks the index that fits (`events_check` or `events_probe`, both ending in the id, or the
/// table itself newest first) and stops after `limit` rows: a filter written as
/// `(?1 IS NULL OR check_name = ?1)` would scan every event.
pub fn events(db: &Connection, q: &EventQuery) -> Result<Vec<Event>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let sql = events_sql(q);
    let mut stmt = db.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        rusqlite::params![
            q.since_ms.unwrap_or(0),
            q.until_ms.unwrap_or(i64::MAX),
            q.before_id.unwrap_or(i64::MAX),
            q.check,
            q.probe,
            limit
        ],
        |r| {
            let codes: String = r.get(6)?;
            Ok(Event {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                probe: r.get(2)?,
                check: r.get(3)?,
                from: r.get(4)?,
                to: r.get(5)?,
                codes: codes
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        },
    )?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The statement for `q`'s filters (parameters ?1 since, ?2 until, ?3 before id, ?4 check,
/// ?5 probe, ?6 limit; those a filter does not use are bound and ignored).
pub(crate) fn events_sql(q: &EventQuery) -> String {
    let mut sql = String::from(
        "SELECT id, at, probe, check_name, from_verdict, to_verdict, codes FROM events WHERE id < ?3",
    );
    if q.since_ms.is_some() {
        sql.push_str(" AND at >= ?1");
    }
    if q.until_ms.is_some() {
        sql.push_str(" AND at < ?2");
    }
    if q.check.is_some() {
        sql.push_str(" AND check_name = ?4");
    }
    if q.probe.is_some() {
        sql.push_str(" AND probe = ?5");
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?6");
    sql
}

/// Every revoked probe's name. Read by the revocation watcher twice a second: through the
/// partial index `probes_revoked` it costs one row per revoked probe (revocations are operator
/// actions: hundreds, not the fleet), and it cannot miss one stamped at the same millisecond as,
/// or earlier than, one seen before, which a "revoked after the last one seen" query did.
pub fn revoked(db: &Connection) -> Result<Vec<String>> {
    let mut stmt = db.prepare_cached("SELECT name FROM probes WHERE revoked_at IS NOT NULL")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(check: Option<&str>, probe: Option<&str>, since: Option<i64>) -> EventQuery {
        EventQuery {
            since_ms: since,
            until_ms: None,
            check: check.map(str::to_string),
            probe: probe.map(str::to_string),
            limit: Some(10),
            before_id: None,
        }
    }

    /// What SQLite plans for `q`: the detail column of EXPLAIN QUERY PLAN.
    fn plan(db: &Connection, q: &EventQuery) -> String {
        let mut stmt = db
            .prepare(&format!("EXPLAIN QUERY PLAN {}", events_sql(q)))
            .expect("explain");
        let rows = stmt
            .query_map(
                rusqlite::params![0i64, i64::MAX, i64::MAX, q.check, q.probe, 10],
                |r| r.get::<_, String>(3),
            )
            .expect("plan");
        rows.map(|r| r.expect("row")).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn event_filters_walk_an_index_and_never_sort_the_table() {
        let dir = tempfile::tempdir().expect("dir");
        let _writer = crate::store::Writer::start(dir.path()).expect("writer");
        let reader = crate::store::Reader::open(dir.path()).expect("reader");
        reader
            .with(|db| {
                for (q, index) in [
                    (query(Some("gateway"), None, None), "events_check"),
                    (query(None, Some("p1"), None), "events_probe"),
                    (query(Some("gateway"), None, Some(5)), "events_check"),
                ] {
                    let p = plan(db, &q);
                    assert!(p.contains(index), "{:?}: {p}", events_sql(&q));
                    assert!(!p.contains("TEMP B-TREE"), "no sort: {p}");
                }
                let p = plan(db, &query(None, None, None));
                assert!(!p.contains("TEMP B-TREE"), "newest first by id: {p}");
                Ok(())
            })
            .expect("plans");
    }

    #[test]
    fn before_id_pages_through_the_events() {
        let dir = tempfile::tempdir().expect("dir");
        let _writer = crate::store::Writer::start(dir.path()).expect("writer");
        let reader = crate::store::Reader::open(dir.path()).expect("reader");
        reader
            .with(|db| {
                for i in 0..25 {
                    db.execute(
                        "INSERT INTO events (at, probe, check_name, from_verdict, to_verdict, codes) VALUES (?1, 'p1', ?2, NULL, 'ok', '')",
                        rusqlite::params![i, if i % 2 == 0 { "gateway" } else { "other" }],
                    )?;
                }
                let mut q = query(Some("gateway"), None, None);
                let mut ids = Vec::new();
                loop {
                    let page = events(db, &q)?;
                    if page.is_empty() {
                        break;
                    }
                    assert!(page.iter().all(|e| e.check == "gateway"));
                    q.before_id = page.last().map(|e| e.id);
                    ids.extend(page.into_iter().map(|e| e.id));
                }
                assert_eq!(ids.len(), 13, "every gateway event once: {ids:?}");
                assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
                Ok(())
            })
            .expect("pages");
    }
}
