//! Probes, tokens and their state as rows: enrolment (a token consumed and the probe recorded in
//! one transaction), adoption, revocation, certificates, the agents' CEM state, counters.

use std::collections::HashSet;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use cemwatch_shared::wire::Labels;
use cemwatch_shared::AgentCemState;

use crate::store::{now_ms, Result, StoreError};

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

pub(crate) fn labels_json(labels: &Labels) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".into())
}

pub(crate) fn row_to_probe(row: &rusqlite::Row<'_>) -> rusqlite::Result<ProbeRow> {
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

pub(crate) const PROBE_COLUMNS: &str =
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

/// The key each probe is bound to (the SHA-256 of its certificate's public key).
pub fn probe_keys(conn: &Connection) -> Result<std::collections::HashMap<String, [u8; 32]>> {
    let mut out = std::collections::HashMap::new();
    let mut stmt = conn.prepare("SELECT name, key_sha256 FROM probe_keys")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        let key: Vec<u8> = row.get(1)?;
        if let Ok(k) = <[u8; 32]>::try_from(key.as_slice()) {
            out.insert(name, k);
        }
    }
    Ok(out)
}

/// Binds probe `name` to `key`: at enrolment (`replace`, the new key is the probe's), or on a
/// probe's first `Hello` when none is recorded (a probe enrolled before keys were recorded, or
/// at another coordinator sharing the CA). Returns the key the probe is bound to afterwards.
pub fn bind_key(conn: &Connection, name: &str, key: &[u8; 32], replace: bool) -> Result<[u8; 32]> {
    let sql = if replace {
        "INSERT INTO probe_keys (name, key_sha256) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET key_sha256 = ?2"
    } else {
        "INSERT OR IGNORE INTO probe_keys (name, key_sha256) VALUES (?1, ?2)"
    };
    conn.execute(sql, params![name, key.as_slice()])?;
    let bound: Vec<u8> = conn.query_row(
        "SELECT key_sha256 FROM probe_keys WHERE name = ?1",
        [name],
        |r| r.get(0),
    )?;
    Ok(<[u8; 32]>::try_from(bound.as_slice()).unwrap_or([0; 32]))
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

pub(crate) fn hash_secret(secret: &str) -> Vec<u8> {
    cemwatch_transport::x509::sha256(secret.as_bytes()).to_vec()
}

/// `bytes` random bytes in hex; an error when the system's random source fails (a token made
/// of zeros would be guessable).
pub(crate) fn random_hex(bytes: usize) -> Result<String> {
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
pub(crate) type TokenRow = (Vec<u8>, String, Option<String>, i64, Option<i64>);

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

/// Adds `by` to a persistent counter, in `tx`.
pub(crate) fn bump(tx: &rusqlite::Transaction<'_>, name: &str, by: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = value + ?2",
    )?
    .execute(params![name, by])?;
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
