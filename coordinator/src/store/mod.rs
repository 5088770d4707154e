//! The embedded store: SQLite in WAL mode in the data directory. It holds probes, tokens,
//! revocations, every report received with its results (deduplicated on `(probe, seq)`), the
//! latest result per probe and check, verdict transitions, persistent counters and the latest
//! CEM state of each probe's management agent. Reports are committed before they are
//! acknowledged, in groups (one transaction for many reports), by one writer thread; a report
//! costs one row appended to `reports` (the `results` view lists their results one per row),
//! and what is kept per probe is written at checkpoints ([`crate::store::ledger`]).

mod error;
pub mod ledger;
mod probes;
pub mod read;
pub mod results;
pub mod retention;
mod schema;
mod writer;

use std::time::{SystemTime, UNIX_EPOCH};

pub use error::{Result, StoreError};
pub use probes::{
    adopt, agent_states, auth_sets, bind_key, counter, create_token, enrol, insert_probe,
    list_probes, probe, probe_keys, revoke, revoke_unseen, save_agent_state, set_certificate,
    Grant, ProbeRow, TokenRefusal,
};
pub use schema::{db_path, open, SCHEMA_VERSION};
pub use writer::{
    CommitHook, CommitPath, Ingested, Mailbox, Outcome, Reader, Writer, CHECKPOINT_AFTER_REPORTS,
    CHECKPOINT_EVERY, CHECKPOINT_WHEN_IDLE, GROUP_COMMIT_MAX, LINGER, LINGER_FROM,
    WRITER_CACHE_KIB,
};

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use cemwatch_shared::wire::{Labels, Report};
    use cemwatch_shared::AgentCemState;

    fn report(seq: u64) -> Report {
        Report {
            seq,
            round: None,
            results: vec![],
        }
    }

    fn arrived(seq: u64) -> crate::model::arrived::Arrived {
        crate::model::arrived::Arrived::of_report(&report(seq))
    }

    fn stored(seq: u64) -> crate::store::results::Encoded {
        crate::store::results::Encoded::of_results(&report(seq).results).expect("encode")
    }

    #[tokio::test]
    async fn a_commit_path_hands_outcomes_back_in_order_after_the_hook_saw_what_was_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = Writer::start(dir.path()).expect("writer");
        let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<(String, u64)>::new()));
        let hook_seen = seen.clone();
        writer.on_commit(Box::new(move |reports, _now| {
            let mut seen = hook_seen.lock();
            seen.extend(reports.iter().map(|(p, r)| (p.to_string(), r.seq)));
        }));
        let path = writer.path("p1");
        let other = writer.path("p2");
        let seqs = [1u64, 2, 1, 3, 2, 4];
        for seq in seqs {
            path.submit(arrived(seq), stored(seq)).expect("submit");
        }
        other.submit(arrived(1), stored(1)).expect("submit");
        let mut got: Vec<(u64, Ingested)> = Vec::new();
        let mut group = Vec::new();
        while got.len() < seqs.len() {
            tokio::time::timeout(Duration::from_secs(10), path.mailbox().ready())
                .await
                .expect("outcomes arrive");
            path.mailbox().take(&mut group);
            for (outcome, report) in group.drain(..) {
                got.push((report.seq, outcome.expect("committed")));
            }
        }
        use Ingested::{Duplicate, Stored};
        assert_eq!(
            got,
            vec![
                (1, Stored),
                (2, Stored),
                (1, Duplicate),
                (3, Stored),
                (2, Duplicate),
                (4, Stored)
            ],
            "in the order submitted, each with its own outcome"
        );
        tokio::time::timeout(Duration::from_secs(10), other.mailbox().ready())
            .await
            .expect("the other path's outcome arrives");
        other.mailbox().take(&mut group);
        assert_eq!(group.len(), 1, "only its own outcome");
        let mut seen = seen.lock().clone();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("p1".to_string(), 1),
                ("p1".to_string(), 2),
                ("p1".to_string(), 3),
                ("p1".to_string(), 4),
                ("p2".to_string(), 1)
            ],
            "the hook saw every stored report once, and no duplicate, before its outcome"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn key_bindings_sent_together_each_get_their_own_outcome_and_are_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = Writer::start(dir.path()).expect("writer");
        let key = |i: u8| [i; 32];
        // A few hundred at once, as a fleet connecting (how many share a commit is the
        // writer's timing; each must get its own answer whatever the grouping).
        let mut joins = Vec::new();
        for i in 0..200u8 {
            let w = writer.clone();
            joins.push(tokio::spawn(async move {
                w.bind_key(format!("p{i}"), key(i), false).await
            }));
        }
        for (i, j) in joins.into_iter().enumerate() {
            let bound = j.await.expect("task").expect("bound");
            assert_eq!(bound, key(i as u8), "p{i} bound to its own key");
        }
        // Sent together: a second key for p1 without `replace` keeps the first; with it, the
        // new key wins; a new probe is bound.
        let (a, b, c) = tokio::join!(
            writer.bind_key("p1".into(), key(250), false),
            writer.bind_key("p2".into(), key(251), true),
            writer.bind_key("new".into(), key(252), false),
        );
        assert_eq!(a.expect("answered"), key(1), "the first binding holds");
        assert_eq!(b.expect("answered"), key(251), "an enrolment replaces it");
        assert_eq!(c.expect("answered"), key(252));
        drop(writer);
        let db = open(dir.path()).expect("reopen");
        let keys = probe_keys(&db).expect("keys");
        assert_eq!(keys.len(), 201, "every binding is in the store");
        assert_eq!(keys["p1"], key(1));
        assert_eq!(keys["p2"], key(251));
        assert_eq!(keys["p199"], key(199));
        assert_eq!(keys["new"], key(252));
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

/// A report of one `gateway` result for the store's tests.
#[cfg(test)]
pub(crate) fn test_report(seq: u64, verdict: &str, produced: u64) -> cemwatch_shared::wire::Report {
    use cemwatch_shared::wire::{CheckReport, Report};
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

#[cfg(test)]
mod ledger_tests {
    use super::test_report as report;
    use super::*;
    use rusqlite::Connection;
    use std::time::{Duration, Instant};

    use cemwatch_shared::wire::Labels;

    /// Retention deletes old reports and events but never a latest result's report nor one
    /// after the last checkpoint; a pruned report resent is still a duplicate; the fleet
    /// loads the same afterwards; a store over max_size loses its oldest reports first.
    #[tokio::test]
    async fn retention_prunes_old_reports_and_keeps_what_the_fleet_and_replay_need() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = open(dir.path()).expect("open");
            insert_probe(&db, "p1", &Labels::new(), 1, "01", i64::MAX, "test").expect("probe");
        }
        let writer = Writer::start(dir.path()).expect("writer");
        for seq in 1..=50u64 {
            let verdict = if seq % 10 == 0 { "fail" } else { "ok" };
            writer
                .report("p1", report(seq, verdict, seq))
                .await
                .expect("stored");
        }
        // The writer falls idle and checkpoints.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let latest_before = read::load_probes(&open(dir.path()).expect("open")).expect("fleet");
        // Everything is older than a cutoff in the future.
        let pruned = writer
            .exec(|db| retention::prune_step(db, i64::MAX, u64::MAX))
            .await
            .expect("prune");
        assert_eq!(pruned.reports, 49, "all but the latest result's report");
        assert!(
            pruned.events >= 9,
            "the verdict transitions went too: {pruned:?}"
        );
        assert!(!pruned.more);
        // Reports after the last checkpoint are not touched.
        writer
            .report("p1", report(51, "ok", 51))
            .await
            .expect("stored");
        let pruned = writer
            .exec(|db| retention::prune_step(db, i64::MAX, u64::MAX))
            .await
            .expect("prune");
        assert_eq!(pruned.reports, 0, "report 51 is after the checkpoint");
        // A pruned report resent is a duplicate, not a new result.
        assert_eq!(
            writer.report("p1", report(7, "ok", 7)).await.expect("ok"),
            Ingested::Duplicate
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        let db = open(dir.path()).expect("open");
        assert_eq!(counter(&db, "reports_pruned").expect("counter"), 49);
        let after = read::load_probes(&db).expect("fleet");
        assert_eq!(
            after["p1"].latest["gateway"].seq, 51,
            "the fleet still loads with its latest result"
        );
        assert!(latest_before["p1"].latest.contains_key("gateway"));

        // Over max_size, age does not matter: with a cutoff in the past nothing is old, but a
        // limit below the store's size takes every eligible report.
        tokio::time::sleep(Duration::from_millis(600)).await;
        for seq in 52..=60u64 {
            writer
                .report("p1", report(seq, "ok", seq))
                .await
                .expect("stored");
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        let pruned = writer
            .exec(|db| retention::prune_step(db, 0, 1))
            .await
            .expect("prune");
        assert_eq!(
            pruned.reports, 10,
            "50 to 59: every report but the latest one (60)"
        );
        assert_eq!(pruned.events, 0, "events go by age only");
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
        // The replay was checkpointed before the writer returned: the fleet view, loaded at
        // once as the coordinator loads it, holds the replayed results.
        {
            let db = open(dir.path()).expect("open");
            assert_eq!(
                checkpointed(&db),
                (2, 2),
                "the replay checkpointed at start"
            );
            let probes = read::load_probes(&db).expect("fleet");
            assert_eq!(probes["p1"].latest["gateway"].seq, 2);
            assert_eq!(probes["p2"].latest["gateway"].seq, 1);
        }
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
        // The report after the crash reached the checkpoint tables too (once the writer fell
        // idle), and the fleet sees the latest result of each probe.
        let p1_seq = |db: &Connection| -> i64 {
            db.query_row("SELECT seq FROM latest WHERE probe = 'p1'", [], |r| {
                r.get(0)
            })
            .expect("p1's latest")
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while p1_seq(&db) != 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(checkpointed(&db), (2, 2), "one row of each per probe");
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
