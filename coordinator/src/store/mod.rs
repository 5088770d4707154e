//! The embedded store: SQLite in WAL mode in the data directory. It holds probes, tokens,
//! revocations, every report received with its results (deduplicated on `(probe, seq)`), the
//! latest result per probe and check, verdict transitions, persistent counters and the latest
//! CEM state of each probe's management agent. Reports are committed before they are
//! acknowledged, in groups (one transaction for many reports), by one writer thread; a report
//! costs one row appended to `reports` (the `results` view lists their results one per row),
//! and what is kept per probe is written at checkpoints ([`crate::store::ledger`]).

mod error;
pub mod ledger;
pub mod read;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

use cemwatch_shared::wire::{Labels, Report};
use cemwatch_shared::AgentCemState;

use crate::store::ledger::{Entry, Ledger};
pub use error::{Result, StoreError};

const SCHEMA: &str = r#"
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
    results TEXT NOT NULL
);
CREATE VIEW IF NOT EXISTS results AS
    SELECT r.probe AS probe,
           r.seq AS seq,
           json_extract(e.value, '$.check') AS check_name,
           json_extract(e.value, '$.produced_at_ms') AS produced_at,
           json_extract(e.value, '$.result.verdict') AS verdict,
           (SELECT COALESCE(group_concat(json_extract(f.value, '$.code'), ','), '')
              FROM json_each(e.value, '$.result.findings') AS f) AS codes,
           json_extract(e.value, '$.result') AS result,
           r.id AS report_id
      FROM reports AS r, json_each(r.results) AS e;
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

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Path of the database in a data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("cemwatch.sqlite")
}

/// Opens (and migrates) the database.
pub fn open(data_dir: &Path) -> Result<Connection> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Open {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let path = db_path(data_dir);
    let conn = Connection::open(&path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&conn).map_err(|e| StoreError::Schema {
        path: path.clone(),
        source: Box::new(e),
    })?;
    Ok(conn)
}

/// The schema's version (`PRAGMA user_version`). 2: reports appended with their results, the
/// ledger's checkpoint tables (see [`crate::store::ledger`]). 0 or 1: reports, results and latest
/// results rewritten in place per report (before 0.1.0), migrated on open.
pub const SCHEMA_VERSION: i64 = 2;

fn migrate(conn: &Connection) -> Result<()> {
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
fn migrate_v1(conn: &Connection) -> Result<()> {
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

/// A stored probe.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProbeRow {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// Enrolment time, Unix ms.
    pub enrolled_at: i64,
    /// Current certificate serial.
    pub cert_serial: String,
    /// Current certificate expiry, Unix seconds.
    pub cert_not_after: i64,
    /// Last contact, Unix ms.
    pub last_seen: Option<i64>,
    /// Agent version.
    pub agent_version: Option<String>,
    /// Revocation time, Unix ms.
    pub revoked_at: Option<i64>,
}

fn labels_json(labels: &Labels) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".into())
}

fn row_to_probe(row: &rusqlite::Row<'_>) -> rusqlite::Result<ProbeRow> {
    let labels: String = row.get(1)?;
    Ok(ProbeRow {
        name: row.get(0)?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        enrolled_at: row.get(2)?,
        cert_serial: row.get(3)?,
        cert_not_after: row.get(4)?,
        last_seen: row.get(5)?,
        agent_version: row.get(6)?,
        revoked_at: row.get(7)?,
    })
}

const PROBE_COLUMNS: &str =
    "name, labels, enrolled_at, cert_serial, cert_not_after, last_seen, agent_version, revoked_at";

/// All probes, by name.
pub fn list_probes(conn: &Connection) -> Result<Vec<ProbeRow>> {
    let mut stmt = conn.prepare(&format!("SELECT {PROBE_COLUMNS} FROM probes ORDER BY name"))?;
    let rows = stmt.query_map([], row_to_probe)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// One probe.
pub fn probe(conn: &Connection, name: &str) -> Result<Option<ProbeRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {PROBE_COLUMNS} FROM probes WHERE name = ?1"),
            [name],
            row_to_probe,
        )
        .optional()?)
}

/// Revokes a probe. Returns false when no such probe exists.
pub fn revoke(conn: &Connection, name: &str) -> Result<bool> {
    let n = conn.execute(
        "UPDATE probes SET revoked_at = COALESCE(revoked_at, ?2) WHERE name = ?1",
        params![name, now_ms()],
    )?;
    Ok(n > 0)
}

/// Revokes a probe this coordinator has never seen: with coordinators sharing a CA, a probe
/// enrolled elsewhere would otherwise be accepted here on failover. Records the name as
/// revoked (no labels, no certificate); an existing probe is revoked as by [`revoke`].
pub fn revoke_unseen(conn: &Connection, name: &str) -> Result<()> {
    if !revoke(conn, name)? {
        let now = now_ms();
        conn.execute(
            "INSERT OR IGNORE INTO probes (name, labels, enrolled_at, cert_serial, cert_not_after, revoked_at) VALUES (?1, '{}', ?2, '', 0, ?2)",
            params![name, now],
        )?;
    }
    Ok(())
}

/// Records a probe that enrolled at another coordinator sharing this CA, on its first `Hello`
/// here, with the labels it reports. Returns false when the probe was already known.
pub fn adopt(
    conn: &Connection,
    name: &str,
    labels: &Labels,
    agent_version: &str,
    cert_serial: &str,
    cert_not_after: i64,
) -> Result<bool> {
    let now = now_ms();
    let n = conn.execute(
        "INSERT OR IGNORE INTO probes (name, labels, enrolled_at, cert_serial, cert_not_after, last_seen, agent_version) VALUES (?1, ?2, ?3, ?4, ?5, ?3, ?6)",
        params![name, labels_json(labels), now, cert_serial, cert_not_after, agent_version],
    )?;
    Ok(n > 0)
}

/// Sets the certificate a probe holds (after a renewal).
pub fn set_certificate(conn: &Connection, name: &str, serial: &str, not_after: i64) -> Result<()> {
    conn.execute(
        "UPDATE probes SET cert_serial = ?2, cert_not_after = ?3 WHERE name = ?1",
        params![name, serial, not_after],
    )?;
    Ok(())
}

/// Names of known and of revoked probes.
pub fn auth_sets(conn: &Connection) -> Result<(HashSet<String>, HashSet<String>)> {
    let mut known = HashSet::new();
    let mut revoked = HashSet::new();
    let mut stmt = conn.prepare("SELECT name, revoked_at FROM probes")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        let revoked_at: Option<i64> = row.get(1)?;
        if revoked_at.is_some() {
            revoked.insert(name.clone());
        }
        known.insert(name);
    }
    Ok((known, revoked))
}

fn hash_secret(secret: &str) -> Vec<u8> {
    cemwatch_transport::x509::sha256(secret.as_bytes()).to_vec()
}

/// `bytes` random bytes in hex; an error when the system's random source fails (a token made
/// of zeros would be guessable).
fn random_hex(bytes: usize) -> Result<String> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| StoreError::Random("token"))?;
    Ok(hex::encode(buf))
}

/// Creates a token; returns `(id, secret)`.
pub fn create_token(
    conn: &Connection,
    labels: &Labels,
    name: Option<&str>,
    ttl: Duration,
) -> Result<(String, String)> {
    let id = random_hex(8)?;
    let secret = random_hex(16)?;
    let now = now_ms();
    conn.execute(
        "INSERT INTO tokens (id, secret_hash, labels, name, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, hash_secret(&secret), labels_json(labels), name, now, now + ttl.as_millis() as i64],
    )?;
    Ok((id, secret))
}

/// Why a token was refused (reasons are metric labels too).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    /// No such token, or a wrong secret.
    #[error("unknown token: create one with `cemwatch token create`")]
    Unknown,
    /// Used before.
    #[error("this token was already used (tokens are single-use): create a new one with `cemwatch token create`")]
    Used,
    /// Expired.
    #[error("this token has expired: create a new one with `cemwatch token create`")]
    Expired,
    /// The requested name belongs to another probe.
    #[error("a probe named {0:?} is already enrolled: choose another --name, or revoke the old probe first")]
    NameTaken(String),
}

impl TokenRefusal {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenRefusal::Unknown => "token_unknown",
            TokenRefusal::Used => "token_used",
            TokenRefusal::Expired => "token_expired",
            TokenRefusal::NameTaken(_) => "name_taken",
        }
    }
}

/// A token's stored columns: secret hash, labels, fixed name, expiry, use time.
type TokenRow = (Vec<u8>, String, Option<String>, i64, Option<i64>);

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The probe's name.
    pub name: String,
    /// Its labels.
    pub labels: Labels,
}

/// Checks and consumes a token and records the new probe, in one transaction. `issue` makes
/// the certificate once the name is settled; nothing is written if it fails.
pub fn enrol(
    conn: &mut Connection,
    id: &str,
    secret: &str,
    requested_name: &str,
    agent_version: &str,
    issue: impl FnOnce(&str) -> Result<(String, i64)>,
) -> Result<Result<Grant, TokenRefusal>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let row: Option<TokenRow> = tx
        .query_row(
            "SELECT secret_hash, labels, name, expires_at, used_at FROM tokens WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((hash, labels, fixed_name, expires_at, used_at)) = row else {
        return Ok(Err(TokenRefusal::Unknown));
    };
    if hash != hash_secret(secret) {
        return Ok(Err(TokenRefusal::Unknown));
    }
    if used_at.is_some() {
        return Ok(Err(TokenRefusal::Used));
    }
    let now = now_ms();
    if now > expires_at {
        return Ok(Err(TokenRefusal::Expired));
    }
    let name = fixed_name.unwrap_or_else(|| requested_name.to_string());
    let exists: bool = tx
        .query_row("SELECT 1 FROM probes WHERE name = ?1", [&name], |_| {
            Ok(true)
        })
        .optional()?
        .unwrap_or(false);
    if exists {
        return Ok(Err(TokenRefusal::NameTaken(name)));
    }
    let (serial, not_after) = issue(&name)?;
    tx.execute(
        "UPDATE tokens SET used_at = ?2, used_by = ?3 WHERE id = ?1",
        params![id, now, name],
    )?;
    let labels: Labels = serde_json::from_str(&labels).unwrap_or_default();
    insert_probe(&tx, &name, &labels, now, &serial, not_after, agent_version)?;
    tx.commit()?;
    Ok(Ok(Grant { name, labels }))
}

/// Records an enrolled probe: its name, labels, enrolment time (Unix ms), certificate serial
/// (hex) and expiry (Unix seconds). Enrolment calls it once the token is consumed; fleet
/// simulators (`cemwatch-bench`) call it to register many probes whose certificates they had
/// the CA issue directly, so both go through the same row.
pub fn insert_probe(
    conn: &Connection,
    name: &str,
    labels: &Labels,
    enrolled_at_ms: i64,
    cert_serial: &str,
    cert_not_after: i64,
    agent_version: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO probes (name, labels, enrolled_at, cert_serial, cert_not_after, agent_version) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        name,
        labels_json(labels),
        enrolled_at_ms,
        cert_serial,
        cert_not_after,
        agent_version
    ])?;
    Ok(())
}

/// A persistent counter's value.
pub fn counter(conn: &Connection, name: &str) -> Result<i64> {
    Ok(conn
        .query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or(0))
}

/// Keeps `state` as the latest agent state of `probe`, received at `received_ms`. The columns
/// are for queries by hand (`sqlite3 cemwatch.sqlite 'SELECT probe, condition, port FROM
/// agent_states'`); `state` holds the whole state as JSON.
pub fn save_agent_state(
    conn: &Connection,
    probe: &str,
    state: &AgentCemState,
    received_ms: i64,
) -> Result<()> {
    let c = &state.condition;
    conn.execute(
        "INSERT OR REPLACE INTO agent_states (probe, condition, gateway, port, thumbprint, since_ms, received_ms, line, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            probe,
            c.as_str(),
            c.gateway(),
            c.port(),
            c.validated_thumbprint().map(|t| t.to_string()),
            i64::try_from(state.since_ms).unwrap_or(i64::MAX),
            received_ms,
            state.line,
            serde_json::to_string(state)?,
        ],
    )?;
    Ok(())
}

/// Every stored agent state: `(probe, state, received_ms)`. A row this version cannot read is
/// skipped with a warning (the probe sends its state again when it connects).
pub fn agent_states(conn: &Connection) -> Result<Vec<(String, AgentCemState, i64)>> {
    let mut stmt = conn.prepare("SELECT probe, state, received_ms FROM agent_states")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (probe, json, received_ms) = row?;
        match serde_json::from_str::<AgentCemState>(&json) {
            Ok(state) => out.push((probe, state, received_ms)),
            Err(e) => {
                tracing::warn!(probe, error = %e, "skipping a stored agent state this version cannot read")
            }
        }
    }
    Ok(out)
}

/// The outcome of one report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// New: committed.
    Stored,
    /// Seen before: dropped (and counted).
    Duplicate,
}

/// Work for the writer thread.
enum Job {
    Report {
        probe: String,
        report: Box<Report>,
        reply: oneshot::Sender<(Result<Ingested, String>, Box<Report>)>,
    },
    Exec(Box<dyn FnOnce(&mut Connection) + Send>),
    Seen {
        probe: String,
        agent_version: String,
        at_ms: i64,
    },
}

/// The single writer: commits reports in groups, and runs other writes in order.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: std_mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Report { probe, report, .. } => write!(f, "Report({probe}, {})", report.seq),
            Job::Exec(_) => f.write_str("Exec"),
            Job::Seen { probe, .. } => write!(f, "Seen({probe})"),
        }
    }
}

/// Most reports committed in one transaction. Under light load a transaction holds what has
/// arrived (often one report); under saturation larger groups amortise the commit (WAL append,
/// fsync, index update) over more reports.
pub const GROUP_COMMIT_MAX: usize = 2048;
/// Page cache of the writer's connection, KiB.
pub const WRITER_CACHE_KIB: i64 = 16 * 1024;

impl Writer {
    /// Starts the writer thread on its own connection.
    pub fn start(data_dir: &Path) -> Result<Self> {
        let mut conn = open(data_dir)?;
        let ledger = Ledger::load(&conn)?;
        // SQLite's default page cache (2 MiB) is smaller than the pages a checkpoint of a large
        // fleet touches (the latest results and sequence numbers of 100,000 probes are about
        // 10 MB); reports only append, so their pages need no cache. 16 MiB holds them.
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB.wrapping_neg())?;
        let (tx, rx) = std_mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("cemwatch-store".into())
            .spawn(move || writer_loop(&mut conn, ledger, rx))
            .map_err(StoreError::Thread)?;
        Ok(Self { tx })
    }

    /// Commits a report; resolves once it is durable (or known to be a duplicate).
    pub async fn report(&self, probe: &str, report: Report) -> Result<Ingested> {
        self.commit(probe, report).await.0
    }

    /// Commits a report and hands it back with the outcome, so that the caller can use it
    /// after the commit without keeping a copy while it waits.
    pub async fn commit(&self, probe: &str, report: Report) -> (Result<Ingested>, Report) {
        let (reply, rx) = oneshot::channel();
        let job = Job::Report {
            probe: probe.to_string(),
            report: Box::new(report),
            reply,
        };
        let stopped = || StoreError::WriterStopped;
        let lost = || Report {
            seq: 0,
            round: None,
            results: Vec::new(),
        };
        match self.tx.send(job) {
            Ok(()) => {}
            Err(std_mpsc::SendError(Job::Report { report, .. })) => {
                return (Err(stopped()), *report)
            }
            Err(_) => return (Err(stopped()), lost()),
        }
        match rx.await {
            Ok((Ok(outcome), report)) => (Ok(outcome), *report),
            Ok((Err(e), report)) => (Err(StoreError::Commit(e)), *report),
            Err(_) => (Err(stopped()), lost()),
        }
    }

    /// Records that a probe connected (its last contact and agent version), without waiting:
    /// the row is updated in the next group commit, with reports, rather than in a transaction
    /// (and an fsync) of its own per connection, which made a reconnecting fleet wait on the
    /// disk one probe at a time.
    pub fn seen(&self, probe: &str, agent_version: &str) {
        let _ = self.tx.send(Job::Seen {
            probe: probe.to_string(),
            agent_version: agent_version.to_string(),
            at_ms: now_ms(),
        });
    }

    /// Checks and consumes an enrolment token, has `issue` make the certificate once the name
    /// is settled (returning it with its serial and expiry), and records the probe, all in one
    /// transaction: nothing is written when the token is refused or `issue` fails.
    pub async fn enrol<C: Send + 'static>(
        &self,
        token_id: String,
        secret: String,
        requested_name: String,
        agent_version: String,
        issue: impl FnOnce(&str) -> Result<(C, String, i64)> + Send + 'static,
    ) -> Result<Result<(Grant, C), TokenRefusal>> {
        self.exec(move |db| {
            let mut issued = None;
            let grant = enrol(
                db,
                &token_id,
                &secret,
                &requested_name,
                &agent_version,
                |name| {
                    let (cert, serial, not_after) = issue(name)?;
                    issued = Some(cert);
                    Ok((serial, not_after))
                },
            )?;
            Ok(match grant {
                Ok(grant) => Ok((
                    grant,
                    issued.ok_or_else(|| {
                        StoreError::Corrupt("enrolment recorded no certificate".into())
                    })?,
                )),
                Err(refusal) => Err(refusal),
            })
        })
        .await
    }

    /// Records a probe adopted from a coordinator sharing this CA ([`adopt`]); false when it
    /// was known already.
    pub async fn adopt(
        &self,
        name: String,
        labels: Labels,
        agent_version: String,
        cert_serial: String,
        cert_not_after: i64,
    ) -> Result<bool> {
        self.exec(move |db| {
            adopt(
                db,
                &name,
                &labels,
                &agent_version,
                &cert_serial,
                cert_not_after,
            )
        })
        .await
    }

    /// Records a probe's renewed certificate: its serial (hex) and expiry (Unix seconds).
    pub async fn renew_cert(&self, name: String, serial: String, not_after: i64) -> Result<()> {
        self.exec(move |db| set_certificate(db, &name, &serial, not_after))
            .await
    }

    /// Keeps the latest agent state of a probe ([`save_agent_state`]).
    pub async fn save_agent_state(
        &self,
        probe: String,
        state: AgentCemState,
        received_ms: i64,
    ) -> Result<()> {
        self.exec(move |db| save_agent_state(db, &probe, &state, received_ms))
            .await
    }

    /// Runs `f` on the writer's connection, in order with reports.
    async fn exec<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Exec(Box::new(move |conn| {
                let _ = reply.send(f(conn));
            })))
            .map_err(|_| StoreError::WriterStopped)?;
        rx.await.map_err(|_| StoreError::WriterStopped)?
    }
}

/// Longest time between checkpoints while reports keep arriving (see [`crate::store::ledger`]).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);
/// A checkpoint is also written once the writer has had nothing to do for this long.
pub const CHECKPOINT_WHEN_IDLE: Duration = Duration::from_millis(200);

fn writer_loop(conn: &mut Connection, mut ledger: Ledger, rx: std_mpsc::Receiver<Job>) {
    let mut pending: Vec<Job> = Vec::new();
    let mut last_checkpoint = Instant::now();
    loop {
        let first = if ledger.is_dirty() {
            match rx.recv_timeout(CHECKPOINT_WHEN_IDLE) {
                Ok(job) => Some(job),
                Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(job) => Some(job),
                Err(_) => break,
            }
        };
        let Some(first) = first else {
            checkpoint(conn, &mut ledger);
            last_checkpoint = Instant::now();
            continue;
        };
        pending.push(first);
        while pending.len() < GROUP_COMMIT_MAX {
            match rx.try_recv() {
                Ok(job) => pending.push(job),
                Err(_) => break,
            }
        }
        let mut batch: Batch = Vec::new();
        for job in pending.drain(..) {
            match job {
                Job::Report {
                    probe,
                    report,
                    reply,
                } => batch.push((probe, report, reply)),
                Job::Seen {
                    probe,
                    agent_version,
                    at_ms,
                } => ledger.seen(&probe, &agent_version, at_ms),
                Job::Exec(f) => {
                    flush(conn, &mut ledger, &mut batch);
                    f(conn);
                }
            }
        }
        flush(conn, &mut ledger, &mut batch);
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            checkpoint(conn, &mut ledger);
            last_checkpoint = Instant::now();
        }
    }
    // The last senders are gone (the coordinator stops): leave a checkpoint so that the next
    // start has nothing to replay.
    checkpoint(conn, &mut ledger);
}

fn checkpoint(conn: &mut Connection, ledger: &mut Ledger) {
    if !ledger.is_dirty() {
        return;
    }
    let started = Instant::now();
    let outcome = (|| -> Result<usize> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let probes = ledger.checkpoint(&tx)?;
        tx.commit()?;
        Ok(probes)
    })();
    match outcome {
        Ok(probes) => tracing::debug!(
            probes,
            took_ms = started.elapsed().as_millis() as u64,
            "store checkpoint"
        ),
        Err(e) => {
            // Nothing is lost: the reports are committed; the next start (or the next
            // checkpoint, after a reload) replays them.
            tracing::warn!(error = %format!("{e:#}"), "cannot write the store checkpoint; will retry");
            reload(conn, ledger);
        }
    }
}

/// After a failed transaction the ledger may hold what was not committed: read it again from
/// the store (the checkpoint and the reports after it).
fn reload(conn: &Connection, ledger: &mut Ledger) {
    match Ledger::load(conn) {
        Ok(fresh) => *ledger = fresh,
        Err(e) => tracing::error!(error = %format!("{e:#}"), "cannot reload the store ledger"),
    }
}

type Batch = Vec<(
    String,
    Box<Report>,
    oneshot::Sender<(Result<Ingested, String>, Box<Report>)>,
)>;

fn flush(conn: &mut Connection, ledger: &mut Ledger, batch: &mut Batch) {
    if batch.is_empty() {
        return;
    }
    let outcome = (|| -> Result<Vec<Ingested>> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_ms();
        let mut outcomes = Vec::with_capacity(batch.len());
        let (mut stored, mut duplicate) = (0i64, 0i64);
        for (probe, report, _) in batch.iter() {
            let o = ingest(&tx, ledger, probe, report, now)?;
            match o {
                Ingested::Stored => stored += 1,
                Ingested::Duplicate => duplicate += 1,
            }
            outcomes.push(o);
        }
        if stored > 0 {
            bump(&tx, "reports_stored", stored)?;
        }
        if duplicate > 0 {
            bump(&tx, "reports_duplicate", duplicate)?;
        }
        tx.commit()?;
        Ok(outcomes)
    })();
    match outcome {
        Ok(outcomes) => {
            for ((_, report, reply), o) in batch.drain(..).zip(outcomes) {
                let _ = reply.send((Ok(o), report));
            }
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot commit reports; probes will resend them");
            reload(conn, ledger);
            for (_, report, reply) in batch.drain(..) {
                let _ = reply.send((Err(format!("{e:#}")), report));
            }
        }
    }
}

fn bump(tx: &rusqlite::Transaction<'_>, name: &str, by: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = value + ?2",
    )?
    .execute(
        params![name, by],
    )?;
    Ok(())
}

/// One report: a duplicate is known from the ledger; a new one is one row appended to
/// `reports`, plus an event per verdict transition.
fn ingest(
    tx: &rusqlite::Transaction<'_>,
    ledger: &mut Ledger,
    probe: &str,
    report: &Report,
    now: i64,
) -> Result<Ingested> {
    if !ledger.is_new(probe, report.seq) {
        return Ok(Ingested::Duplicate);
    }
    let json = serde_json::to_string(&report.results)?;
    tx.prepare_cached(
        "INSERT INTO reports (probe, seq, round, received_at, results) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        probe,
        report.seq as i64,
        report.round.map(|r| r as i64),
        now,
        json
    ])?;
    let id = tx.last_insert_rowid();
    let entries: Vec<Entry<'_>> = report.results.iter().map(Entry::of).collect();
    for t in ledger.apply(probe, report.seq, report.round, id, now, &entries) {
        tx.prepare_cached(
            "INSERT INTO events (at, probe, check_name, from_verdict, to_verdict, codes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![now, probe, t.check, t.from, t.to, t.codes])?;
    }
    Ok(Ingested::Stored)
}

/// A read connection for the API and summaries.
#[derive(Debug)]
pub struct Reader {
    conn: Mutex<Connection>,
}

impl Reader {
    /// Opens a read connection.
    pub fn open(data_dir: &Path) -> Result<Self> {
        Ok(Self {
            conn: Mutex::new(open(data_dir)?),
        })
    }

    /// Runs `f` with the connection.
    pub fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&self.conn.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cemwatch_shared::wire::Report;

    fn report(seq: u64) -> Report {
        Report {
            seq,
            round: None,
            results: vec![],
        }
    }

    #[tokio::test]
    async fn a_report_is_stored_once_and_its_duplicates_are_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = Writer::start(dir.path()).expect("writer");
        assert_eq!(
            writer.report("p1", report(1)).await.expect("ok"),
            Ingested::Stored
        );
        assert_eq!(
            writer.report("p1", report(1)).await.expect("ok"),
            Ingested::Duplicate
        );
        assert_eq!(
            writer.report("p2", report(1)).await.expect("ok"),
            Ingested::Stored,
            "seq is per probe"
        );
        // Many at once go through group commit and keep their own outcomes.
        let mut handles = Vec::new();
        for seq in [2u64, 3, 2, 4, 3] {
            let w = writer.clone();
            handles.push(tokio::spawn(async move {
                w.report("p1", report(seq)).await.expect("ok")
            }));
        }
        let mut outcomes = Vec::new();
        for h in handles {
            outcomes.push(h.await.expect("join"));
        }
        assert_eq!(
            outcomes.iter().filter(|o| **o == Ingested::Stored).count(),
            3
        );
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == Ingested::Duplicate)
                .count(),
            2
        );
        let db = open(dir.path()).expect("open");
        let stored: i64 = db
            .query_row("SELECT COUNT(*) FROM reports WHERE probe = 'p1'", [], |r| {
                r.get(0)
            })
            .expect("count");
        assert_eq!(stored, 4);
        assert_eq!(counter(&db, "reports_duplicate").expect("counter"), 3);
        assert_eq!(counter(&db, "reports_stored").expect("counter"), 5);
    }

    #[test]
    fn tokens_are_single_use_and_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = open(dir.path()).expect("open");
        let labels: Labels = [("site".to_string(), "eu".to_string())].into();
        let (id, secret) =
            create_token(&db, &labels, None, Duration::from_secs(60)).expect("token");
        let issue = |_: &str| Ok(("01".to_string(), 0));
        let grant = enrol(&mut db, &id, &secret, "p1", "v", issue)
            .expect("db")
            .expect("granted");
        assert_eq!(grant.name, "p1");
        assert_eq!(grant.labels, labels);
        assert_eq!(
            enrol(&mut db, &id, &secret, "p2", "v", issue).expect("db"),
            Err(TokenRefusal::Used)
        );
        assert_eq!(
            enrol(&mut db, &id, "wrong", "p2", "v", issue).expect("db"),
            Err(TokenRefusal::Unknown)
        );
        let (id2, secret2) =
            create_token(&db, &labels, None, Duration::from_millis(1)).expect("token");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            enrol(&mut db, &id2, &secret2, "p3", "v", issue).expect("db"),
            Err(TokenRefusal::Expired)
        );
        let (id3, secret3) =
            create_token(&db, &labels, None, Duration::from_secs(60)).expect("token");
        assert_eq!(
            enrol(&mut db, &id3, &secret3, "p1", "v", issue).expect("db"),
            Err(TokenRefusal::NameTaken("p1".into()))
        );
        // A refused enrolment leaves the token usable.
        assert!(enrol(&mut db, &id3, &secret3, "p4", "v", issue)
            .expect("db")
            .is_ok());
    }

    #[tokio::test]
    async fn agent_states_survive_a_restart_and_the_latest_wins() {
        use cemwatch_shared::{AgentCondition, AgentLogStatus, SinceSource, Thumbprint};
        let dir = tempfile::tempdir().expect("tempdir");
        let labels: Labels = [("site".to_string(), "eu".to_string())].into();
        {
            let db = open(dir.path()).expect("open");
            assert!(adopt(&db, "laptop-1", &labels, "v", "0A", 1).expect("db"));
            assert!(adopt(&db, "laptop-2", &labels, "v", "0B", 1).expect("db"));
        }
        let timeout = AgentCemState {
            condition: AgentCondition::ConnectTimeout {
                gateway: Some("gateway.example.com".into()),
                port: Some(443),
                attempts: 3,
            },
            since_ms: 1_700_000_000_000,
            since_source: SinceSource::Logged,
            line: Some("WARN Connection timeout connecting to gateway.example.com:443".into()),
            log: AgentLogStatus::Following,
        };
        let connected = AgentCemState {
            condition: AgentCondition::CemConnected {
                gateway: "gateway.example.com".into(),
                port: Some(8443),
                thumbprint: Some(
                    Thumbprint::parse("3a7f9c2b11d04e5f66a7b8c9d0e1f2a3b4c5d6e7").expect("tp"),
                ),
            },
            since_ms: 1_700_000_100_000,
            since_source: SinceSource::Read,
            line: Some("CEM mode active. Connected to gateway: gateway.example.com:8443".into()),
            log: AgentLogStatus::Following,
        };
        let writer = Writer::start(dir.path()).expect("writer");
        for (probe, state, at) in [
            ("laptop-1", timeout.clone(), 10),
            ("laptop-1", connected.clone(), 20),
            ("laptop-2", timeout.clone(), 30),
        ] {
            writer
                .exec(move |db| save_agent_state(db, probe, &state, at))
                .await
                .expect("saved");
        }
        drop(writer);

        // A restart: a new connection, the fleet loaded from the store.
        let db = open(dir.path()).expect("reopen");
        let probes = read::load_probes(&db).expect("load");
        let agent = |name: &str| {
            probes
                .get(name)
                .and_then(|v| v.agent.clone())
                .map(|a| (a.state, a.received_ms))
        };
        assert_eq!(agent("laptop-1"), Some((connected, 20)), "the latest wins");
        assert_eq!(agent("laptop-2"), Some((timeout, 30)));
        let (condition, port): (String, Option<u16>) = db
            .query_row(
                "SELECT condition, port FROM agent_states WHERE probe = 'laptop-2'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("columns");
        assert_eq!((condition.as_str(), port), ("connect_timeout", Some(443)));

        // A row this version cannot read is skipped, not fatal.
        db.execute(
            "UPDATE agent_states SET state = '{\"condition\": \"from_the_future\"}' WHERE probe = 'laptop-2'",
            [],
        )
        .expect("damage");
        let probes = read::load_probes(&db).expect("load");
        assert!(probes["laptop-2"].agent.is_none());
        assert!(probes["laptop-1"].agent.is_some());
    }

    #[test]
    fn probes_from_a_shared_ca_are_adopted_once_and_unseen_ones_can_be_revoked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path()).expect("open");
        let labels: Labels = [("site".to_string(), "eu".to_string())].into();
        assert!(adopt(&db, "p1", &labels, "v", "0A", 1).expect("db"));
        assert!(
            !adopt(&db, "p1", &Labels::new(), "v", "0B", 2).expect("db"),
            "once"
        );
        let p1 = probe(&db, "p1").expect("db").expect("recorded");
        assert_eq!(p1.labels, labels, "the first Hello's labels stay");
        assert_eq!(p1.cert_serial, "0A");
        assert!(p1.last_seen.is_some());

        revoke_unseen(&db, "p2").expect("db");
        revoke_unseen(&db, "p1").expect("db");
        let (known, revoked) = auth_sets(&db).expect("db");
        assert!(known.contains("p2") && revoked.contains("p2"));
        assert!(revoked.contains("p1"));
        assert!(
            !adopt(&db, "p2", &labels, "v", "0C", 3).expect("db"),
            "a revoked name is never adopted"
        );
        assert!(probe(&db, "p2")
            .expect("db")
            .expect("row")
            .revoked_at
            .is_some());
    }
}

#[cfg(test)]
mod migration_tests {
    use super::*;

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
                "SELECT probe, seq, check_name, verdict, codes FROM results ORDER BY report_id",
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
            .prepare(
                "SELECT l.probe, l.seq, s.result FROM latest AS l
                   JOIN results AS s ON s.report_id = l.report_id AND s.check_name = l.check_name
                  ORDER BY l.probe",
            )
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
mod ledger_tests {
    use super::*;
    use cemwatch_shared::wire::{CheckReport, Report};

    fn report(seq: u64, verdict: &str, produced: u64) -> Report {
        let json = serde_json::json!({
            "target": {"host": "gw.example.com", "port": 443},
            "expectations": cemwatch_shared::Expectations::default(),
            "started_at": "2026-11-25T00:00:00Z",
            "verdict": verdict,
            "findings": [],
            "dns": {"host": "gw.example.com", "addresses": [], "duration_ms": 0.0, "source": "system"},
            "tcp": {"state": "open", "duration_ms": 1.0},
            "durations": {"dns_ms": 0.0, "tcp_ms": 0.0, "tls_ms": 0.0, "legacy_ms": 0.0, "total_ms": 0.0}
        });
        let result = serde_json::from_value(json).expect("a check result");
        Report {
            seq,
            round: None,
            results: vec![CheckReport {
                check: "gateway".into(),
                produced_at_ms: produced,
                result,
            }],
        }
    }

    /// A crash between commits and the checkpoint: everything after the last checkpoint is
    /// replayed when the store opens again.
    #[tokio::test]
    async fn reports_after_the_last_checkpoint_are_replayed_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = open(dir.path()).expect("open");
            for name in ["p1", "p2"] {
                insert_probe(&db, name, &Labels::new(), 1, "01", i64::MAX, "test").expect("probe");
            }
        }
        {
            let writer = Writer::start(dir.path()).expect("writer");
            writer.report("p1", report(1, "ok", 100)).await.expect("1");
            writer
                .report("p1", report(2, "fail", 200))
                .await
                .expect("2");
            writer.report("p2", report(1, "ok", 150)).await.expect("3");
        }
        // Wait for the writer's final checkpoint, then forget it as a crash would have.
        let db = open(dir.path()).expect("open");
        read::load_probes(&db).expect("loads");
        let deadline = Instant::now() + Duration::from_secs(10);
        while checkpointed(&db) != (2, 2) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            checkpointed(&db),
            (2, 2),
            "the writer checkpointed at its end"
        );
        db.execute_batch(
            "DELETE FROM latest; DELETE FROM probe_seqs; UPDATE meta SET value = 0 WHERE key = 'checkpoint';",
        )
        .expect("forget the checkpoint");
        drop(db);

        let writer = Writer::start(dir.path()).expect("writer after the crash");
        assert_eq!(
            writer
                .report("p1", report(2, "fail", 200))
                .await
                .expect("dup"),
            Ingested::Duplicate
        );
        assert_eq!(
            writer
                .report("p1", report(3, "fail", 300))
                .await
                .expect("3"),
            Ingested::Stored
        );
        // The replay did not write events again: ok (p1), fail (p1), ok (p2) only.
        let db = open(dir.path()).expect("open");
        let events: i64 = db
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .expect("events");
        assert_eq!(events, 3);
        // The replayed ledger reached the checkpoint tables again, and the fleet sees the
        // latest result of each probe.
        let deadline = Instant::now() + Duration::from_secs(10);
        while checkpointed(&db) != (2, 2) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(checkpointed(&db), (2, 2), "the replay was checkpointed");
        let probes = read::load_probes(&db).expect("fleet");
        let p1 = &probes["p1"].latest["gateway"];
        assert_eq!((p1.seq, p1.produced_at_ms), (3, 300));
        assert_eq!(probes["p2"].latest["gateway"].seq, 1);
    }

    /// Rows in the checkpoint tables: latest results, sequence-number sets.
    fn checkpointed(db: &Connection) -> (i64, i64) {
        db.query_row(
            "SELECT (SELECT COUNT(*) FROM latest), (SELECT COUNT(*) FROM probe_seqs)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("count")
    }
}
