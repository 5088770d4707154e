//! Reads for the fleet view: what the coordinator loads at start.

use std::collections::BTreeMap;

use crate::store::Result;
use rusqlite::Connection;

use cemwatch_shared::CheckResult;

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
                labels: p.labels,
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
    let mut stmt = conn.prepare(
        "SELECT l.probe, l.check_name, l.seq, l.round, l.produced_at,
                        (SELECT json_extract(e.value, '$.result') FROM json_each(r.results) AS e
                          WHERE json_extract(e.value, '$.check') = l.check_name LIMIT 1)
                   FROM latest AS l JOIN reports AS r ON r.id = l.report_id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let probe: String = row.get(0)?;
        let check: String = row.get(1)?;
        let seq: i64 = row.get(2)?;
        let round: Option<i64> = row.get(3)?;
        let produced: i64 = row.get(4)?;
        let Some(json) = row.get::<_, Option<String>>(5)? else {
            continue;
        };
        let Ok(result) = serde_json::from_str::<CheckResult>(&json) else {
            continue;
        };
        if let Some(view) = probes.get_mut(&probe) {
            view.latest.insert(
                check,
                Latest::from_result(seq as u64, round.map(|r| r as u64), produced, &result),
            );
        }
    }
    Ok(probes)
}

/// Verdict transitions matching `q`, newest first (at most 1000; 100 by default).
pub fn events(db: &Connection, q: &EventQuery) -> Result<Vec<Event>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let mut stmt = db.prepare_cached(
        "SELECT id, at, probe, check_name, from_verdict, to_verdict, codes FROM events
         WHERE at >= ?1 AND at < ?2 AND (?3 IS NULL OR check_name = ?3) AND (?4 IS NULL OR probe = ?4)
         ORDER BY id DESC LIMIT ?5",
    )?;
    let rows = stmt.query_map(
        rusqlite::params![
            q.since_ms.unwrap_or(0),
            q.until_ms.unwrap_or(i64::MAX),
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

/// Every revoked probe's name. Read by the revocation watcher twice a second: through the
/// partial index `probes_revoked` it costs one row per revoked probe (revocations are operator
/// actions: hundreds, not the fleet), and it cannot miss one stamped at the same millisecond as,
/// or earlier than, one seen before, which a "revoked after the last one seen" query did.
pub fn revoked(db: &Connection) -> Result<Vec<String>> {
    let mut stmt = db.prepare_cached("SELECT name FROM probes WHERE revoked_at IS NOT NULL")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
