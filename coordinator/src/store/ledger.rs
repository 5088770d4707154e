//! What the store's writer keeps in memory so that a report costs one append to the store.
//!
//! Every report is appended to `reports` (rowid order, so the append touches the table's last
//! page only) in the transaction that commits it, with the verdict transitions it causes. What
//! used to be rewritten in place for every report, per probe (the sequence numbers already
//! stored, which deduplicate resent reports; the latest result per check; the last contact),
//! lives here and is written to its own tables at a *checkpoint*, in key order, once for many
//! reports: every 30 s or 250,000 reports under load, when the writer falls idle, at start (what
//! was replayed) and at shutdown. A checkpoint records the last report it covers; after a crash
//! the reports appended since are replayed into the ledger when the store opens, so nothing
//! committed is forgotten.

use std::collections::{BTreeSet, HashMap};

use crate::store::{Result, StoreError};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use crate::model::arrived::ArrivedResult;

/// Most ranges a probe's [`SeqSet`] keeps. A probe that follows the protocol leaves a gap only
/// when its spool overflowed, so it has a handful; a peer that sends every other number cannot
/// grow the set without bound: beyond this the two oldest ranges are joined, and a report that
/// later arrives in the joined gap is counted as a duplicate.
pub const MAX_RANGES: usize = 1024;

/// Probes one part of a checkpoint writes ([`Ledger::checkpoint_part`]): three rows each at
/// most. Derived from the profile of (b) at 20,000 probes every 2 s (checkpoints 9% of the
/// samples of a coordinator using 0.6 cores: 0.055 cores, 110 ms every 2 s for 20,000 probes,
/// about 5.5 us a probe), a group commit waits about 11 ms at most behind a part, where it
/// would wait about 0.55 s behind a checkpoint of 100,000 in one transaction.
pub const CHECKPOINT_CHUNK: usize = 2_000;

/// The sequence numbers stored for one probe: sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqSet(Vec<(u64, u64)>);

impl SeqSet {
    /// Whether `seq` is in the set.
    pub fn contains(&self, seq: u64) -> bool {
        let i = self.0.partition_point(|r| r.1 < seq);
        self.0.get(i).is_some_and(|r| r.0 <= seq)
    }

    /// Adds `seq`; false when it was there already.
    pub fn insert(&mut self, seq: u64) -> bool {
        let i = self.0.partition_point(|r| r.1 < seq);
        if self.0.get(i).is_some_and(|r| r.0 <= seq) {
            return false;
        }
        let joins_prev = i > 0 && self.0[i - 1].1.checked_add(1) == Some(seq);
        let joins_next = self
            .0
            .get(i)
            .is_some_and(|r| seq.checked_add(1) == Some(r.0));
        match (joins_prev, joins_next) {
            (true, true) => {
                self.0[i - 1].1 = self.0[i].1;
                self.0.remove(i);
            }
            (true, false) => self.0[i - 1].1 = seq,
            (false, true) => self.0[i].0 = seq,
            (false, false) => {
                self.0.insert(i, (seq, seq));
                if self.0.len() > MAX_RANGES {
                    self.0[1].0 = self.0[0].0;
                    self.0.remove(0);
                }
            }
        }
        true
    }

    /// The ranges.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }
}

/// The latest result of one check from one probe, as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// The `reports` row that carries it.
    pub report_id: i64,
    /// Its report's sequence number.
    pub seq: u64,
    /// Its report's round.
    pub round: Option<u64>,
    /// When the probe produced it, Unix ms.
    pub produced_at: i64,
    /// When it was committed, Unix ms.
    pub received_at: i64,
    /// Its verdict.
    pub verdict: String,
    /// Its finding codes, comma-separated.
    pub codes: String,
}

#[derive(Debug, Default)]
struct ProbeLedger {
    seqs: SeqSet,
    latest: HashMap<String, Mark, foldhash::fast::RandomState>,
    last_seen: Option<i64>,
    agent_version: Option<String>,
    dirty_seqs: bool,
    dirty_checks: BTreeSet<String>,
    dirty_seen: bool,
    /// In [`Ledger`]'s dirty set (so that a report need not look its name up there).
    dirty: bool,
}

/// A verdict transition to record as an event.
#[derive(Debug, PartialEq, Eq)]
pub struct Transition {
    /// The check.
    pub check: String,
    /// The verdict before (none for a check's first result from this probe).
    pub from: Option<String>,
    /// The verdict now.
    pub to: String,
    /// Its finding codes.
    pub codes: String,
}

/// One check result of a report, as much as the ledger needs.
#[derive(Debug)]
pub struct Entry<'a> {
    /// The check.
    pub check: &'a str,
    /// When produced, Unix ms.
    pub produced_at: i64,
    /// Verdict.
    pub verdict: &'a str,
    /// Finding codes.
    pub codes: Codes<'a>,
}

/// An entry's finding codes: as a report's summary holds them, or comma-separated as the store
/// keeps them (a report replayed at start). A report's codes are compared with the ones held
/// without being joined, and written only when they changed: most reports repeat them. Joining
/// them for every report (`Entry::of`) was 1.8% of the samples of `perf record` of
/// `cemwatch-bench store-path`, whose writer thread had 44% of them: 4% of the writer.
#[derive(Debug, Clone, Copy)]
pub enum Codes<'a> {
    /// As a summary holds them.
    List(&'a [cemwatch_shared::FindingCode]),
    /// Comma-separated.
    Joined(&'a str),
}

impl Codes<'_> {
    /// Whether these are the codes that `joined` (comma-separated) names, in order.
    pub fn is(&self, joined: &str) -> bool {
        match self {
            Codes::Joined(s) => *s == joined,
            Codes::List(list) => {
                let mut rest = joined;
                for (i, code) in list.iter().enumerate() {
                    if i > 0 {
                        match rest.strip_prefix(',') {
                            Some(r) => rest = r,
                            None => return false,
                        }
                    }
                    match rest.strip_prefix(code.as_str()) {
                        Some(r) => rest = r,
                        None => return false,
                    }
                }
                rest.is_empty()
            }
        }
    }

    /// Writes them comma-separated into `out`, replacing what it held.
    pub fn write_to(&self, out: &mut String) {
        out.clear();
        match self {
            Codes::Joined(s) => out.push_str(s),
            Codes::List(list) => {
                for (i, code) in list.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(code.as_str());
                }
            }
        }
    }

    /// Them comma-separated.
    pub fn joined(&self) -> String {
        let mut out = String::new();
        self.write_to(&mut out);
        out
    }
}

impl<'a> Entry<'a> {
    /// The ledger's view of a check result.
    pub fn of(result: &'a ArrivedResult) -> Self {
        Entry {
            check: &result.check,
            produced_at: result.produced_at_ms as i64,
            verdict: result.latest.verdict.as_str(),
            codes: Codes::List(&result.latest.codes),
        }
    }
}

/// The writer's memory of the fleet's stored reports.
#[derive(Debug, Default)]
pub struct Ledger {
    probes: HashMap<String, ProbeLedger, foldhash::fast::RandomState>,
    dirty: BTreeSet<String>,
    /// The checkpoint under way, written [`CHECKPOINT_CHUNK`] probes at a time: the last
    /// report it covers, and the probes it has still to write.
    writing: Option<(i64, BTreeSet<String>)>,
    /// The last report reflected here.
    pub last_report_id: i64,
    /// The last report reflected in the checkpoint tables.
    pub checkpointed_id: i64,
}

/// Report rows the ledger reads back: id, probe, seq, round, received_at, results (postcard
/// bytes, or JSON text in rows written before schema 3).
type ReportRow = (i64, String, i64, Option<i64>, i64, rusqlite::types::Value);

/// What the ledger keeps of one stored check result: check, produced at, verdict, codes.
type Replayed = (String, i64, String, String);

/// The ledger's view of a stored report's results. A row that cannot be read replays as no
/// results (its seq is still a duplicate), as before: the report is in the store either way.
fn replay_entries(id: i64, value: &rusqlite::types::Value) -> Vec<Replayed> {
    use rusqlite::types::{Value, ValueRef};
    let of_slim = |e: SlimEntry| {
        let codes: Vec<&str> = e.result.findings.iter().map(|f| f.code.as_str()).collect();
        let codes = codes.join(",");
        (e.check, e.produced_at_ms as i64, e.result.verdict, codes)
    };
    match value {
        Value::Text(json) => serde_json::from_str::<Vec<SlimEntry>>(json)
            .unwrap_or_default()
            .into_iter()
            .map(of_slim)
            .collect(),
        Value::Blob(bytes) => match crate::store::results::decode(ValueRef::Blob(bytes)) {
            Ok(results) => results
                .iter()
                .map(|r| {
                    let codes: Vec<&str> =
                        r.result.findings.iter().map(|f| f.code.as_str()).collect();
                    (
                        r.check.clone(),
                        r.produced_at_ms as i64,
                        r.result.verdict.as_str().to_string(),
                        codes.join(","),
                    )
                })
                .collect(),
            Err(e) => {
                tracing::warn!(report = id, error = %e, "a stored report's results are unreadable; replayed without them");
                Vec::new()
            }
        },
        _ => Vec::new(),
    }
}

/// The fields of a stored check result the ledger reads back.
#[derive(Debug, Deserialize)]
struct SlimEntry {
    check: String,
    produced_at_ms: u64,
    result: SlimResult,
}

#[derive(Debug, Deserialize)]
struct SlimResult {
    verdict: String,
    #[serde(default)]
    findings: Vec<SlimFinding>,
}

#[derive(Debug, Deserialize)]
struct SlimFinding {
    code: String,
}

impl Ledger {
    /// Loads the last checkpoint and replays the reports appended after it.
    pub fn load(conn: &Connection) -> Result<Self> {
        let mut ledger = Ledger::default();
        {
            let mut stmt = conn.prepare("SELECT probe, ranges FROM probe_seqs")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let probe: String = row.get(0)?;
                let ranges: String = row.get(1)?;
                let seqs: SeqSet = serde_json::from_str(&ranges).map_err(|e| {
                    StoreError::Corrupt(format!(
                        "the stored sequence numbers of probe {probe:?} are unreadable: {e}"
                    ))
                })?;
                ledger.probes.entry(probe).or_default().seqs = seqs;
            }
            let mut stmt = conn.prepare(
                "SELECT probe, check_name, report_id, seq, round, produced_at, received_at, verdict, codes FROM latest",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let probe: String = row.get(0)?;
                let check: String = row.get(1)?;
                let mark = Mark {
                    report_id: row.get(2)?,
                    seq: row.get::<_, i64>(3)? as u64,
                    round: row.get::<_, Option<i64>>(4)?.map(|r| r as u64),
                    produced_at: row.get(5)?,
                    received_at: row.get(6)?,
                    verdict: row.get(7)?,
                    codes: row.get(8)?,
                };
                ledger
                    .probes
                    .entry(probe)
                    .or_default()
                    .latest
                    .insert(check, mark);
            }
        }
        ledger.checkpointed_id = conn
            .query_row("SELECT value FROM meta WHERE key = 'checkpoint'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .unwrap_or(0);
        ledger.last_report_id = ledger.checkpointed_id;
        let mut stmt = conn.prepare(
            "SELECT id, probe, seq, round, received_at, results FROM reports WHERE id > ?1 ORDER BY id",
        )?;
        // One row at a time: a replay covers up to `CHECKPOINT_AFTER_REPORTS` reports.
        let rows = stmt.query_map([ledger.checkpointed_id], |r| {
            Ok::<ReportRow, _>((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?;
        let mut replayed = 0usize;
        for row in rows {
            let (id, probe, seq, round, received_at, results) = row?;
            replayed += 1;
            let kept = replay_entries(id, &results);
            let entries: Vec<Entry<'_>> = kept
                .iter()
                .map(|(check, produced_at, verdict, codes)| Entry {
                    check,
                    produced_at: *produced_at,
                    verdict,
                    codes: Codes::Joined(codes),
                })
                .collect();
            ledger.is_new(&probe, seq as u64);
            ledger.apply(
                &probe,
                seq as u64,
                round.map(|r| r as u64),
                id,
                received_at,
                &entries,
            );
        }
        if replayed > 0 {
            tracing::info!(
                reports = replayed,
                "replayed the reports committed after the last checkpoint"
            );
        }
        Ok(ledger)
    }

    /// Whether `seq` from `probe` is new; if so it is now recorded as stored.
    pub fn is_new(&mut self, probe: &str, seq: u64) -> bool {
        let p = self.probe_mut(probe);
        let new = p.seqs.insert(seq);
        if new {
            p.dirty_seqs = true;
        }
        new
    }

    /// The probe's entry, marked dirty. Called twice per report: the name is copied only the
    /// first time a probe is seen and the first time it changes after a checkpoint, and the
    /// dirty set is looked at only then (the entry's flag says whether it is in it).
    fn probe_mut(&mut self, probe: &str) -> &mut ProbeLedger {
        if !self.probes.contains_key(probe) {
            self.probes
                .insert(probe.to_string(), ProbeLedger::default());
        }
        let p = self.probes.get_mut(probe).expect("the entry was just made");
        if !p.dirty {
            p.dirty = true;
            self.dirty.insert(probe.to_string());
        }
        p
    }

    /// Records a stored report (row `id`, committed at `received_at`) and returns the verdict
    /// transitions it causes. A result older than the one held is kept in history only.
    pub fn apply(
        &mut self,
        probe: &str,
        seq: u64,
        round: Option<u64>,
        id: i64,
        received_at: i64,
        entries: &[Entry<'_>],
    ) -> Vec<Transition> {
        self.last_report_id = self.last_report_id.max(id);
        let p = self.probe_mut(probe);
        p.last_seen = Some(p.last_seen.unwrap_or(0).max(received_at));
        p.dirty_seen = true;
        let mut transitions = Vec::new();
        for e in entries {
            // One lookup: a check seen before is updated in place (no name copied, its
            // verdict and codes written only when they changed, as most reports repeat them).
            // `from` is the transition to record: Some(previous verdict, none for a first
            // result) when the verdict changed.
            let from = match p.latest.get_mut(e.check) {
                Some(m) if m.produced_at > e.produced_at => continue,
                Some(m) => {
                    m.report_id = id;
                    m.seq = seq;
                    m.round = round;
                    m.produced_at = e.produced_at;
                    m.received_at = received_at;
                    if !e.codes.is(&m.codes) {
                        e.codes.write_to(&mut m.codes);
                    }
                    (m.verdict != e.verdict)
                        .then(|| Some(std::mem::replace(&mut m.verdict, e.verdict.to_string())))
                }
                None => {
                    p.latest.insert(
                        e.check.to_string(),
                        Mark {
                            report_id: id,
                            seq,
                            round,
                            produced_at: e.produced_at,
                            received_at,
                            verdict: e.verdict.to_string(),
                            codes: e.codes.joined(),
                        },
                    );
                    Some(None)
                }
            };
            if let Some(from) = from {
                transitions.push(Transition {
                    check: e.check.to_string(),
                    from,
                    to: e.verdict.to_string(),
                    codes: e.codes.joined(),
                });
            }
            if !p.dirty_checks.contains(e.check) {
                p.dirty_checks.insert(e.check.to_string());
            }
        }
        transitions
    }

    /// Records a probe's connection (its last contact and agent version).
    pub fn seen(&mut self, probe: &str, agent_version: &str, at_ms: i64) {
        let p = self.probe_mut(probe);
        p.last_seen = Some(p.last_seen.unwrap_or(0).max(at_ms));
        p.agent_version = Some(agent_version.to_string());
        p.dirty_seen = true;
    }

    /// Whether anything is not in the checkpoint yet.
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
            || self.writing.is_some()
            || self.checkpointed_id != self.last_report_id
    }

    /// Whether a checkpoint is under way (some of its probes written, not all).
    pub fn checkpointing(&self) -> bool {
        self.writing.is_some()
    }

    /// Probes with changes not in the checkpoint yet.
    pub fn dirty_probes(&self) -> usize {
        self.dirty.len() + self.writing.as_ref().map_or(0, |w| w.1.len())
    }

    /// Writes the next part of a checkpoint in `tx`, starting one when none is under way: at
    /// most [`CHECKPOINT_CHUNK`] probes, in key order, so that the group commits between the
    /// parts wait for one part at most. The last part records the last report the checkpoint
    /// covers, the last one committed when it started: every probe changed by then is written,
    /// some with changes made since (a replay applies those again, which changes nothing).
    /// Returns the probes written and whether the checkpoint is complete. The caller commits;
    /// on failure it must reload the ledger ([`Ledger::load`]), which replays what is missing.
    pub fn checkpoint_part(&mut self, tx: &Transaction<'_>) -> Result<(usize, bool)> {
        let (covers, mut pending) = match self.writing.take() {
            Some(writing) => writing,
            None => (self.last_report_id, std::mem::take(&mut self.dirty)),
        };
        let mut part = Vec::with_capacity(pending.len().min(CHECKPOINT_CHUNK));
        while part.len() < CHECKPOINT_CHUNK {
            let Some(name) = pending.pop_first() else {
                break;
            };
            part.push(name);
        }
        self.write_probes(tx, &part)?;
        if !pending.is_empty() {
            self.writing = Some((covers, pending));
            return Ok((part.len(), false));
        }
        tx.prepare_cached(
            "INSERT INTO meta (key, value) VALUES ('checkpoint', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1",
        )?
        .execute([covers])?;
        self.checkpointed_id = covers;
        Ok((part.len(), true))
    }

    /// Writes the rows of `names` that changed since they were last written.
    fn write_probes(&mut self, tx: &Transaction<'_>, names: &[String]) -> Result<()> {
        for name in names {
            let Some(p) = self.probes.get_mut(name) else {
                continue;
            };
            p.dirty = false;
            if p.dirty_seqs {
                tx.prepare_cached(
                    "INSERT INTO probe_seqs (probe, ranges) VALUES (?1, ?2) ON CONFLICT(probe) DO UPDATE SET ranges = ?2",
                )?
                .execute(params![name, serde_json::to_string(&p.seqs)?])?;
                p.dirty_seqs = false;
            }
            for check in std::mem::take(&mut p.dirty_checks) {
                let Some(m) = p.latest.get(&check) else {
                    continue;
                };
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO latest (probe, check_name, report_id, seq, round, produced_at, received_at, verdict, codes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    name,
                    check,
                    m.report_id,
                    m.seq as i64,
                    m.round.map(|r| r as i64),
                    m.produced_at,
                    m.received_at,
                    m.verdict,
                    m.codes
                ])?;
            }
            if p.dirty_seen {
                if let Some(at) = p.last_seen {
                    tx.prepare_cached(
                        "UPDATE probes SET last_seen = MAX(COALESCE(last_seen, 0), ?2), agent_version = COALESCE(?3, agent_version) WHERE name = ?1",
                    )?
                    .execute(params![name, at, p.agent_version])?;
                }
                p.dirty_seen = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn codes(picks: &[usize]) -> Vec<cemwatch_shared::FindingCode> {
        let all = cemwatch_shared::FindingCode::ALL;
        picks.iter().map(|i| all[i % all.len()]).collect()
    }

    fn joined_by_hand(codes: &[cemwatch_shared::FindingCode]) -> String {
        codes
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    proptest! {
        /// A summary's codes compare with the comma-separated ones held as joining them would,
        /// and are written as joining them would (the first code of one list may be a prefix
        /// of another's, and an empty list names "").
        #[test]
        fn codes_compare_and_write_as_their_joined_text(
            a in proptest::collection::vec(0usize..200, 0..5),
            b in proptest::collection::vec(0usize..200, 0..5),
        ) {
            let (a, b) = (codes(&a), codes(&b));
            let (ja, jb) = (joined_by_hand(&a), joined_by_hand(&b));
            prop_assert_eq!(Codes::List(&a).is(&jb), ja == jb);
            prop_assert_eq!(Codes::List(&a).is(&ja), true);
            prop_assert_eq!(Codes::Joined(&ja).is(&jb), ja == jb);
            prop_assert_eq!(Codes::List(&a).joined(), ja.clone());
            let mut out = jb.clone();
            Codes::List(&a).write_to(&mut out);
            prop_assert_eq!(out, ja);
        }

        #[test]
        fn a_seq_set_agrees_with_a_plain_set(seqs in proptest::collection::vec(0u64..300, 0..400)) {
            let mut set = SeqSet::default();
            let mut model = BTreeSet::new();
            for s in seqs {
                prop_assert_eq!(set.insert(s), model.insert(s));
                for probe in 0..300u64 {
                    prop_assert_eq!(set.contains(probe), model.contains(&probe));
                }
                let r = set.ranges();
                for w in r.windows(2) {
                    prop_assert!(w[0].1 + 1 < w[1].0, "ranges sorted, disjoint, not adjacent: {:?}", r);
                }
            }
        }
    }

    #[test]
    fn a_seq_set_stays_bounded_against_a_peer_that_skips_every_other_number() {
        let mut set = SeqSet::default();
        for s in 0..(3 * MAX_RANGES as u64) {
            set.insert(2 * s);
        }
        assert_eq!(set.ranges().len(), MAX_RANGES);
        // The newest numbers are exact; the oldest gaps were joined.
        let top = 2 * (3 * MAX_RANGES as u64 - 1);
        assert!(set.contains(top) && !set.contains(top - 1));
        assert!(set.contains(1), "joined gaps count as stored");
        assert!(!set.contains(u64::MAX) && set.insert(u64::MAX));
        assert!(!set.insert(u64::MAX));
    }
}
