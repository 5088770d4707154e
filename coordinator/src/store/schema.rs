//! The schema and its migrations: the tables, `open` (WAL, full sync, foreign keys) and the
//! move from the first layout to version 2, in one transaction that re-checks the version
//! under the lock.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::{Result, StoreError};

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS probes (
    name TEXT PRIMARY KEY,
    labels TEXT NOT NULL,
    enrolled_at INTEGER NOT NULL,
    cert_serial TEXT NOT NULL,
    cert_not_after INTEGER NOT NULL,
    last_seen INTEGER,
    agent_version TEXT,
    revoked_at INTEGER
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL,
    labels TEXT NOT NULL,
    name TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    used_by TEXT
);
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY,
    probe TEXT NOT NULL,
    seq INTEGER NOT NULL,
    round INTEGER,
    received_at INTEGER NOT NULL,
    results NOT NULL
);
CREATE TABLE IF NOT EXISTS latest (
    probe TEXT NOT NULL,
    check_name TEXT NOT NULL,
    report_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    round INTEGER,
    produced_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    codes TEXT NOT NULL,
    PRIMARY KEY (probe, check_name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS probe_seqs (
    probe TEXT PRIMARY KEY,
    ranges TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS probe_keys (
    name TEXT PRIMARY KEY,
    key_sha256 BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    probe TEXT NOT NULL,
    check_name TEXT NOT NULL,
    from_verdict TEXT,
    to_verdict TEXT NOT NULL,
    codes TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
CREATE INDEX IF NOT EXISTS events_check ON events (check_name, id);
CREATE INDEX IF NOT EXISTS latest_report ON latest (report_id);
CREATE INDEX IF NOT EXISTS events_probe ON events (probe, id);
CREATE INDEX IF NOT EXISTS probes_revoked ON probes (name) WHERE revoked_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_states (
    probe TEXT PRIMARY KEY,
    condition TEXT NOT NULL,
    gateway TEXT,
    port INTEGER,
    thumbprint TEXT,
    since_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    line TEXT,
    state TEXT NOT NULL
) WITHOUT ROWID;
"#;

/// Path of the database in a data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("cemwatch.sqlite")
}

/// Page size of a new database, bytes; an existing database keeps the one it was created with
/// (SQLite changes it only with a `VACUUM` outside WAL mode, which the coordinator never runs on
/// its own). Reports only append, so a commit writes the few last pages of `reports` whole:
/// at SQLite's default of 4 KiB the writer made 0.42 `pwrite` a report (a WAL frame's header
/// and page, then the checkpoint's copy), at 16 KiB 0.13. Measured in alternating runs of
/// `cemwatch-bench --probes 20000 --scenarios ac --hold 3s --saturate 25s --no-baseline
/// --skip-footprint` with `perf stat -e syscalls:sys_enter_pwrite64` on the coordinator:
/// 52,610-54,652 reports/s at 16 KiB against 45,439-45,570 at 4 KiB (0.018-0.019 against
/// 0.022 ms of CPU a report); 64 KiB gave 50,783-55,818, no clearer gain for four times the
/// bytes a lone report's commit writes. SQLite's automatic checkpoint comes every 1,000 WAL
/// pages, so the WAL file grows to about 16 MiB between checkpoints (4 MiB at 4 KiB).
pub(crate) const PAGE_SIZE: i64 = 16 * 1024;

/// Opens (and migrates) the database.
pub fn open(data_dir: &Path) -> Result<Connection> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Open {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let path = db_path(data_dir);
    let conn = Connection::open(&path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&conn).map_err(|e| StoreError::Schema {
        path: path.clone(),
        source: Box::new(e),
    })?;
    Ok(conn)
}

/// The schema's version (`PRAGMA user_version`). 4: a report's results stored compressed
/// (LZ4, [`crate::store::results::compress`]) when that is smaller; rows of version 3 (plain)
/// are read as they are, told apart by their first byte. 3: a report's results stored as the postcard
/// bytes the probe sent ([`crate::store::results`]); rows of version 2 keep their JSON text
/// and are read as they are, and the `results` view (JSON only) is gone. 2: reports appended
/// with their results as JSON, the ledger's checkpoint tables (see [`crate::store::ledger`]).
/// 0 or 1: reports, results and latest results rewritten in place per report (before 0.1.0),
/// migrated on open.
pub const SCHEMA_VERSION: i64 = 4;

pub(crate) fn migrate(conn: &Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version >= SCHEMA_VERSION {
        conn.execute_batch(SCHEMA)?;
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let outcome = (|| -> Result<()> {
        // Another process may have migrated while this one waited for the lock.
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version >= SCHEMA_VERSION {
            conn.execute_batch(SCHEMA)?;
            return Ok(());
        }
        let old: bool = conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'results'",
                [],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false);
        if old {
            migrate_v1(conn)?;
        } else {
            // From version 2: its rows stay as they are (JSON text is read beside postcard);
            // the view that read them as JSON goes.
            conn.execute_batch("DROP VIEW IF EXISTS results;")?;
            conn.execute_batch(SCHEMA)?;
        }
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(())
    })();
    match outcome {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(())
}

/// From the first layout (reports, results and latest keyed by probe) to version 2, in the
/// caller's transaction: each report's results become its `results` JSON array, in the order
/// reports were received; the latest results point at their report; the stored sequence
/// numbers become each probe's ranges; the checkpoint covers everything migrated.
pub(crate) fn migrate_v1(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "ALTER TABLE reports RENAME TO reports_v1;
         ALTER TABLE results RENAME TO results_v1;
         ALTER TABLE latest RENAME TO latest_v1;",
    )?;
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(
        "INSERT INTO reports (probe, seq, round, received_at, results)
             SELECT r.probe, r.seq, r.round, r.received_at,
                    COALESCE((SELECT json_group_array(json_object(
                                  'check', s.check_name,
                                  'produced_at_ms', s.produced_at,
                                  'result', json(s.result)))
                                FROM results_v1 AS s
                               WHERE s.probe = r.probe AND s.seq = r.seq), '[]')
               FROM reports_v1 AS r
              ORDER BY r.received_at, r.probe, r.seq;
         CREATE INDEX migrate_reports_probe_seq ON reports (probe, seq);
         INSERT INTO latest (probe, check_name, report_id, seq, round, produced_at, received_at, verdict, codes)
             SELECT l.probe, l.check_name, n.id, l.seq, l.round, l.produced_at, l.received_at, l.verdict, l.codes
               FROM latest_v1 AS l JOIN reports AS n ON n.probe = l.probe AND n.seq = l.seq;
         DROP INDEX migrate_reports_probe_seq;",
    )?;
    let mut seqs: std::collections::BTreeMap<String, crate::store::ledger::SeqSet> =
        Default::default();
    {
        let mut stmt = conn.prepare("SELECT probe, seq FROM reports_v1 ORDER BY probe, seq")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let probe: String = row.get(0)?;
            let seq: i64 = row.get(1)?;
            seqs.entry(probe).or_default().insert(seq as u64);
        }
    }
    for (probe, set) in &seqs {
        conn.execute(
            "INSERT INTO probe_seqs (probe, ranges) VALUES (?1, ?2)",
            params![probe, serde_json::to_string(set)?],
        )?;
    }
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('checkpoint', (SELECT COALESCE(MAX(id), 0) FROM reports))",
        [],
    )?;
    conn.execute_batch("DROP TABLE reports_v1; DROP TABLE results_v1; DROP TABLE latest_v1;")?;
    tracing::info!(
        probes = seqs.len(),
        "store migrated to schema version {SCHEMA_VERSION}"
    );
    Ok(())
}

#[cfg(test)]
mod migration_tests {
    use super::*;
    use crate::store::{Ingested, Writer};
    use cemwatch_shared::wire::Report;

    /// The migrated JSON rows read check by check, as the `results` view of schema 2 did.
    const MIGRATED_V1_RESULTS: &str = "WITH results AS (
        SELECT r.probe AS probe, r.seq AS seq,
               json_extract(e.value, '$.check') AS check_name,
               json_extract(e.value, '$.result.verdict') AS verdict,
               (SELECT COALESCE(group_concat(json_extract(f.value, '$.code'), ','), '')
                  FROM json_each(e.value, '$.result.findings') AS f) AS codes,
               json_extract(e.value, '$.result') AS result,
               r.id AS report_id
          FROM reports AS r, json_each(r.results) AS e) ";

    /// The first layout's report tables, as 0.1.0 pre-releases created them.
    const V1: &str = r#"
CREATE TABLE reports (probe TEXT NOT NULL, seq INTEGER NOT NULL, round INTEGER,
    received_at INTEGER NOT NULL, PRIMARY KEY (probe, seq)) WITHOUT ROWID;
CREATE TABLE results (probe TEXT NOT NULL, seq INTEGER NOT NULL, check_name TEXT NOT NULL,
    produced_at INTEGER NOT NULL, verdict TEXT NOT NULL, codes TEXT NOT NULL,
    result TEXT NOT NULL, PRIMARY KEY (probe, seq, check_name)) WITHOUT ROWID;
CREATE TABLE latest (probe TEXT NOT NULL, check_name TEXT NOT NULL, seq INTEGER NOT NULL,
    round INTEGER, produced_at INTEGER NOT NULL, received_at INTEGER NOT NULL,
    verdict TEXT NOT NULL, codes TEXT NOT NULL, result TEXT NOT NULL,
    PRIMARY KEY (probe, check_name)) WITHOUT ROWID;
"#;

    /// A stored result as far as the migration reads it (the rest of a check result is
    /// carried over as is).
    fn result_json(verdict: &str, code: Option<&str>) -> String {
        let findings: Vec<serde_json::Value> = code
            .map(|c| serde_json::json!({"code": c, "detail": "detail"}))
            .into_iter()
            .collect();
        serde_json::json!({"verdict": verdict, "findings": findings, "started_at": "x"}).to_string()
    }

    #[test]
    fn a_new_store_has_the_large_page_and_an_old_one_keeps_its_own() {
        let page = |db: &Connection| -> i64 {
            db.pragma_query_value(None, "page_size", |r| r.get(0))
                .expect("page_size")
        };
        let new = tempfile::tempdir().expect("tempdir");
        drop(open(new.path()).expect("open"));
        assert_eq!(page(&open(new.path()).expect("reopen")), PAGE_SIZE);

        // A store made by a release that used SQLite's default page (4 KiB) opens, keeps its
        // page and its rows, and takes new reports.
        let old = tempfile::tempdir().expect("tempdir");
        {
            let db = Connection::open(db_path(old.path())).expect("open");
            db.pragma_update(None, "page_size", 4096)
                .expect("page_size");
            db.pragma_update(None, "journal_mode", "WAL").expect("wal");
            db.execute_batch(SCHEMA).expect("schema");
            db.pragma_update(None, "user_version", SCHEMA_VERSION)
                .expect("version");
            db.execute(
                "INSERT INTO reports (probe, seq, round, received_at, results) VALUES ('p', 1, NULL, 1, x'01')",
                [],
            )
            .expect("row");
        }
        let db = open(old.path()).expect("open old");
        assert_eq!(page(&db), 4096);
        db.execute(
            "INSERT INTO reports (probe, seq, round, received_at, results) VALUES ('p', 2, NULL, 2, x'01')",
            [],
        )
        .expect("new row");
        let rows: i64 = db
            .query_row("SELECT count(*) FROM reports", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 2);
        drop(db);
        assert_eq!(page(&open(old.path()).expect("reopen old")), 4096);
    }

    #[tokio::test]
    async fn a_first_layout_store_is_migrated_without_losing_a_report() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = Connection::open(db_path(dir.path())).expect("open");
            db.execute_batch(V1).expect("v1");
            // p1: seqs 1, 2, 3 and 7 (a gap from a spool overflow); p2: seq 1.
            for (probe, seq, at) in [
                ("p1", 1, 10),
                ("p1", 2, 20),
                ("p1", 3, 30),
                ("p1", 7, 70),
                ("p2", 1, 15),
            ] {
                db.execute(
                    "INSERT INTO reports (probe, seq, round, received_at) VALUES (?1, ?2, NULL, ?3)",
                    params![probe, seq, at],
                )
                .expect("report");
            }
            let (ok, bad) = (
                result_json("ok", None),
                result_json("fail", Some("cert_expired")),
            );
            for (probe, seq, at, json, verdict, codes) in [
                ("p1", 3, 29, &ok, "ok", ""),
                ("p1", 7, 69, &bad, "fail", "cert_expired"),
                ("p2", 1, 14, &ok, "ok", ""),
            ] {
                db.execute(
                    "INSERT INTO results VALUES (?1, ?2, 'gateway', ?3, ?4, ?5, ?6)",
                    params![probe, seq, at, verdict, codes, json],
                )
                .expect("result");
            }
            db.execute(
                "INSERT INTO latest VALUES ('p1', 'gateway', 7, NULL, 69, 70, 'fail', 'cert_expired', ?1)",
                [&bad],
            )
            .expect("latest");
            db.execute(
                "INSERT INTO latest VALUES ('p2', 'gateway', 1, NULL, 14, 15, 'ok', '', ?1)",
                [&ok],
            )
            .expect("latest");
        }
        let db = open(dir.path()).expect("migrated");
        let version: i64 = db
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        let reports: Vec<(String, i64, i64)> = db
            .prepare("SELECT probe, seq, received_at FROM reports ORDER BY id")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(
            reports,
            vec![
                ("p1".into(), 1, 10),
                ("p2".into(), 1, 15),
                ("p1".into(), 2, 20),
                ("p1".into(), 3, 30),
                ("p1".into(), 7, 70)
            ],
            "every report, in the order received"
        );
        let results: Vec<(String, i64, String, String, String)> = db
            .prepare(
                &format!("{MIGRATED_V1_RESULTS}SELECT probe, seq, check_name, verdict, codes FROM results ORDER BY report_id"),
            )
            .expect("prepare")
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(results.len(), 3, "{results:?}");
        assert_eq!(
            results[2],
            (
                "p1".into(),
                7,
                "gateway".into(),
                "fail".into(),
                "cert_expired".into()
            )
        );
        let latest: Vec<(String, i64, String)> = db
            .prepare(&format!(
                "{MIGRATED_V1_RESULTS}SELECT l.probe, l.seq, s.result FROM latest AS l
                   JOIN results AS s ON s.report_id = l.report_id AND s.check_name = l.check_name
                  ORDER BY l.probe"
            ))
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(latest.len(), 2, "{latest:?}");
        assert_eq!((latest[0].0.as_str(), latest[0].1), ("p1", 7));
        assert!(latest[0].2.contains("cert_expired"), "{latest:?}");
        drop(db);
        // Dedupe carries over: every old seq is a duplicate, the gap is not.
        let writer = Writer::start(dir.path()).expect("writer");
        for (probe, seq, expected) in [
            ("p1", 1, Ingested::Duplicate),
            ("p1", 3, Ingested::Duplicate),
            ("p1", 7, Ingested::Duplicate),
            ("p1", 5, Ingested::Stored),
            ("p2", 1, Ingested::Duplicate),
            ("p2", 2, Ingested::Stored),
        ] {
            let r = Report {
                seq,
                round: None,
                results: vec![],
            };
            assert_eq!(
                writer.report(probe, r).await.expect("commit"),
                expected,
                "{probe} seq {seq}"
            );
        }
    }
}

#[cfg(test)]
mod schema2_tests {
    use super::*;
    use crate::store::{insert_probe, read::load_probes, Ingested, Writer};
    use cemwatch_shared::wire::{Labels, Report};

    fn report(seq: u64, verdict: &str) -> Report {
        crate::store::test_report(seq, verdict, seq * 1000)
    }

    /// Starts the writer on an old store holding report 1 of `p1` (a `fail`, no checkpoint
    /// covering it): that seq must be replayed (a duplicate), report 2 (`ok`) stored; then the
    /// writer stops and its last checkpoint makes report 2 the latest result.
    async fn replay_then_store(dir: &std::path::Path, old_row: &str) -> Connection {
        let writer = Writer::start(dir).expect("writer");
        assert_eq!(
            writer
                .report("p1", report(1, "fail"))
                .await
                .expect("commit"),
            Ingested::Duplicate,
            "the {old_row}'s seq, replayed"
        );
        assert_eq!(
            writer.report("p1", report(2, "ok")).await.expect("commit"),
            Ingested::Stored
        );
        drop(writer);
        let db = open(dir).expect("open");
        let version: i64 = db
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        let waited = std::time::Instant::now();
        while db
            .query_row("SELECT seq FROM latest", [], |r| r.get::<_, i64>(0))
            .optional()
            .expect("latest")
            != Some(2)
        {
            assert!(waited.elapsed().as_secs() < 10, "no checkpoint");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        db
    }

    /// The fleet loads with report 2 as the latest result, and with the old row (report 1)
    /// when the latest result points at it.
    fn latest_reads_both_rows(db: &Connection, old_row: &str) {
        let probes = load_probes(db).expect("fleet");
        assert_eq!(
            probes["p1"].latest["gateway"].seq, 2,
            "the new row is the latest"
        );
        db.execute("UPDATE latest SET report_id = 1, seq = 1", [])
            .unwrap_or_else(|e| panic!("point latest at the {old_row}: {e}"));
        let probes = load_probes(db).expect("fleet");
        let latest = &probes["p1"].latest["gateway"];
        assert_eq!(latest.seq, 1);
        assert_eq!(latest.verdict, cemwatch_shared::Severity::Fail);
    }

    /// A store of schema 2 (results as JSON text, the `results` view) opens at the current
    /// schema: its JSON rows stay and are read (latest results, replay, deduplication), new
    /// rows are postcard bytes, the view is gone.
    #[tokio::test]
    async fn a_schema_2_store_keeps_its_json_rows_readable_beside_postcard_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = open(dir.path()).expect("open");
            insert_probe(&db, "p1", &Labels::new(), 1, "01", i64::MAX, "test").expect("probe");
            let old = report(1, "fail");
            let json = serde_json::to_string(&old.results).expect("json");
            db.execute_batch(
                "CREATE VIEW results AS SELECT r.probe AS probe FROM reports AS r; PRAGMA user_version = 2;",
            )
            .expect("schema 2");
            db.execute(
                "INSERT INTO reports (probe, seq, round, received_at, results) VALUES ('p1', 1, NULL, 5, ?1)",
                [&json],
            )
            .expect("a JSON row");
            // No checkpoint covers it: the ledger replays it from its JSON.
        }
        {
            let db = open(dir.path()).expect("open");
            let view: Option<i64> = db
                .query_row(
                    "SELECT 1 FROM sqlite_master WHERE name = 'results'",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .expect("query");
            // Opening migrated it (the writer below opens it again).
            assert_eq!(view, None, "the JSON view is gone");
        }
        let db = replay_then_store(dir.path(), "JSON row").await;
        let kinds: Vec<(i64, String)> = db
            .prepare("SELECT seq, typeof(results) FROM reports ORDER BY id")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(kinds, vec![(1, "text".into()), (2, "blob".into())]);
        latest_reads_both_rows(&db, "JSON row");
    }

    /// A store of schema 3 (plain postcard rows) opens as schema 4: its plain rows are read
    /// (replay, latest results) beside the compressed rows written after.
    #[tokio::test]
    async fn a_schema_3_store_keeps_its_plain_rows_readable_beside_compressed_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = open(dir.path()).expect("open");
            insert_probe(&db, "p1", &Labels::new(), 1, "01", i64::MAX, "test").expect("probe");
            let plain = crate::store::results::encode(&report(1, "fail").results).expect("encode");
            db.execute_batch("PRAGMA user_version = 3;")
                .expect("schema 3");
            db.execute(
                "INSERT INTO reports (probe, seq, round, received_at, results) VALUES ('p1', 1, NULL, 5, ?1)",
                [&plain],
            )
            .expect("a plain row");
        }
        let db = replay_then_store(dir.path(), "plain row").await;
        let rows: Vec<(i64, Vec<u8>)> = db
            .prepare("SELECT seq, results FROM reports ORDER BY id")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(rows.len(), 2);
        assert_ne!(rows[0].1[0], crate::store::results::COMPRESSED, "plain");
        assert_eq!(
            rows[1].1[0],
            crate::store::results::COMPRESSED,
            "compressed"
        );
        for (seq, blob) in &rows {
            let verdict = if *seq == 1 { "fail" } else { "ok" };
            assert_eq!(
                crate::store::results::decode_bytes(blob).expect("reads"),
                report(*seq as u64, verdict).results
            );
        }
        latest_reads_both_rows(&db, "plain row");
    }
}
