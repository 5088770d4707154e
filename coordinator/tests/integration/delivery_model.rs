//! At-least-once on the wire, exactly once in the store: a probe's real spool and the
//! coordinator's real store (SQLite, `(probe, seq)` deduplication) against a model, under
//! random sequences of results produced, deliveries whose acknowledgements are lost (so the
//! probe sends them again), probe restarts with other spool bounds, and a final drain.
//! Every produced report must end up stored exactly once or be counted as dropped by a full
//! spool; duplicates are dropped and counted, never stored twice.

use std::collections::BTreeSet;

use cemwatch_coordinator::store;

use cemwatch_coordinator::store::{Ingested, Writer};
use cemwatch_probe::agent::spool::{Spool, SpoolLimits};
use cemwatch_shared::wire::{self, ToCoordinator, PREFIX_LEN};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Produce,
    /// Send the `n` oldest pending reports; each acknowledgement is lost when its bit is set.
    Deliver {
        n: usize,
        lost_acks: u32,
    },
    Restart {
        max_reports: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Produce),
        3 => (1usize..6, any::<u32>()).prop_map(|(n, lost_acks)| Op::Deliver { n, lost_acks }),
        1 => (2usize..10).prop_map(|max_reports| Op::Restart { max_reports }),
    ]
}

fn deliver(rt: &tokio::runtime::Runtime, writer: &Writer, spool: &Spool, seq: u64) -> Ingested {
    let frame = spool.frame(seq).expect("read").expect("pending");
    let Ok(ToCoordinator::Report(report)) = wire::decode::<ToCoordinator>(&frame[PREFIX_LEN..])
    else {
        panic!("spooled frame {seq} is not a report");
    };
    assert_eq!(report.seq, seq);
    rt.block_on(writer.report("model-probe", report))
        .expect("commit")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        // Failing cases are kept beside this file and replayed first.
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_report_is_stored_once_or_counted_as_dropped(
        ops in proptest::collection::vec(op(), 1..30)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let data = tempfile::tempdir().expect("tempdir");
        let probe_dir = tempfile::tempdir().expect("tempdir");
        let writer = Writer::start(data.path()).expect("store");
        let limits = |max_reports| SpoolLimits { max_reports, max_bytes: u64::MAX };
        let mut spool = Spool::open(probe_dir.path(), limits(6)).expect("spool");

        let mut produced = Vec::new();
        let mut stored = BTreeSet::new();
        let mut duplicates = 0u64;
        // Reports that left the spool without an acknowledgement: dropped by a full spool.
        let mut dropped: BTreeSet<u64> = BTreeSet::new();
        for op in ops {
            let before: BTreeSet<u64> = spool.pending().into_iter().collect();
            let mut acked = BTreeSet::new();
            match op {
                Op::Produce => {
                    let seq = spool.append(None, vec![]);
                    prop_assert!(produced.last().is_none_or(|last| seq > *last), "sequence reused");
                    produced.push(seq);
                }
                Op::Deliver { n, lost_acks } => {
                    for (i, seq) in spool.pending().into_iter().take(n).enumerate() {
                        let outcome = deliver(&rt, &writer, &spool, seq);
                        let expected = if stored.insert(seq) {
                            Ingested::Stored
                        } else {
                            duplicates += 1;
                            Ingested::Duplicate
                        };
                        prop_assert_eq!(outcome, expected);
                        if lost_acks & (1 << i) == 0 {
                            prop_assert!(spool.ack(seq));
                            acked.insert(seq);
                        }
                    }
                }
                Op::Restart { max_reports } => {
                    drop(spool);
                    spool = Spool::open(probe_dir.path(), limits(max_reports)).expect("reopen");
                }
            }
            let after: BTreeSet<u64> = spool.pending().into_iter().collect();
            dropped.extend(before.difference(&after).filter(|s| !acked.contains(s)));
        }
        prop_assert_eq!(dropped.len() as u64, spool.dropped(), "every drop is counted");
        // Drain: the probe reconnects and everything pending goes through.
        for seq in spool.pending() {
            let outcome = deliver(&rt, &writer, &spool, seq);
            if !stored.insert(seq) {
                duplicates += 1;
                prop_assert_eq!(outcome, Ingested::Duplicate);
            }
            prop_assert!(spool.ack(seq));
        }
        prop_assert!(spool.is_empty());
        drop(writer);

        let db = store::open(data.path()).expect("open");
        let rows: Vec<i64> = db
            .prepare("SELECT seq FROM reports WHERE probe = 'model-probe' ORDER BY seq")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let rows: BTreeSet<u64> = rows.into_iter().map(|s| s as u64).collect();
        prop_assert_eq!(&rows, &stored, "the store holds each delivered report once");
        let counted = store::counter(&db, "reports_duplicate").expect("counter");
        prop_assert_eq!(counted as u64, duplicates);
        // Nothing is silently lost: what was never stored was dropped by a full spool, and
        // counted.
        for seq in &produced {
            prop_assert!(
                stored.contains(seq) || dropped.contains(seq),
                "report {} was lost: stored {:?}, dropped {:?}", seq, stored, dropped
            );
        }
    }
}
