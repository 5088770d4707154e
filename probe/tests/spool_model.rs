//! The on-disk spool against a model of a few lines: random sequences of appends, acks (of
//! pending, already acknowledged and never issued sequence numbers) and reopens with other
//! bounds (reports and bytes). After every step the pending set, the drop count and the last
//! sequence number must be the model's, and no sequence number is ever issued twice.

use std::collections::{BTreeMap, BTreeSet};

use cemwatch_probe::agent::spool::{Spool, SpoolLimits};
use cemwatch_shared::wire::{self, Report, ToCoordinator};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        round: Option<u64>,
    },
    /// Acknowledge the pending report at this index (modulo), or an unknown number when none.
    AckPending(usize),
    /// Acknowledge a number that may or may not have been issued.
    AckAny(u64),
    Reopen {
        max_reports: usize,
        max_bytes: Option<u64>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => proptest::option::of(0u64..1000).prop_map(|round| Op::Append { round }),
        3 => any::<usize>().prop_map(Op::AckPending),
        1 => (0u64..64).prop_map(Op::AckAny),
        1 => (1usize..12, proptest::option::of(40u64..400))
            .prop_map(|(max_reports, max_bytes)| Op::Reopen { max_reports, max_bytes }),
    ]
}

/// What the spool must hold.
#[derive(Debug)]
struct Model {
    next: u64,
    pending: BTreeMap<u64, u64>,
    dropped: u64,
    limits: SpoolLimits,
}

fn frame_size(seq: u64, round: Option<u64>) -> u64 {
    wire::encode(&ToCoordinator::Report(Report {
        seq,
        round,
        results: vec![],
    }))
    .map(|f| f.len() as u64)
    .unwrap_or(0)
}

impl Model {
    fn append(&mut self, round: Option<u64>) -> u64 {
        let seq = self.next;
        self.next += 1;
        let size = frame_size(seq, round);
        loop {
            let bytes: u64 = self.pending.values().sum();
            let over_count = self.pending.len() + 1 > self.limits.max_reports;
            let over_bytes = bytes + size > self.limits.max_bytes && !self.pending.is_empty();
            if !(over_count || over_bytes) {
                break;
            }
            let Some(oldest) = self.pending.keys().next().copied() else {
                break;
            };
            self.pending.remove(&oldest);
            self.dropped += 1;
        }
        self.pending.insert(seq, size);
        seq
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        // Failing cases are kept beside this file and replayed first.
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_spool_behaves_like_its_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = SpoolLimits { max_reports: 8, max_bytes: u64::MAX };
        let mut spool = Spool::open(dir.path(), limits).expect("open");
        let mut model = Model { next: 1, pending: BTreeMap::new(), dropped: 0, limits };
        let mut issued = BTreeSet::new();
        for op in ops {
            match op {
                Op::Append { round } => {
                    let seq = spool.append(round, vec![]);
                    prop_assert_eq!(seq, model.append(round));
                    prop_assert!(issued.iter().all(|s| *s < seq), "sequence {} reused or out of order", seq);
                    issued.insert(seq);
                }
                Op::AckPending(i) => {
                    let pending: Vec<u64> = model.pending.keys().copied().collect();
                    let seq = if pending.is_empty() { model.next + 5 } else { pending[i % pending.len()] };
                    let expected = model.pending.remove(&seq).is_some();
                    prop_assert_eq!(spool.ack(seq), expected);
                }
                Op::AckAny(seq) => {
                    let expected = model.pending.remove(&seq).is_some();
                    prop_assert_eq!(spool.ack(seq), expected);
                }
                Op::Reopen { max_reports, max_bytes } => {
                    drop(spool);
                    let limits = SpoolLimits { max_reports, max_bytes: max_bytes.unwrap_or(u64::MAX) };
                    spool = Spool::open(dir.path(), limits).expect("reopen");
                    model.limits = limits;
                }
            }
            let pending: Vec<u64> = model.pending.keys().copied().collect();
            prop_assert_eq!(spool.pending(), pending);
            prop_assert_eq!(spool.dropped(), model.dropped);
            prop_assert_eq!(spool.produced(), model.next - 1);
            prop_assert_eq!(spool.len(), model.pending.len());
        }
        // Everything still pending is readable and is the report it claims to be.
        for seq in spool.pending() {
            let frame = spool.frame(seq).expect("read").expect("present");
            let decoded: ToCoordinator = wire::decode(&frame[wire::PREFIX_LEN..]).expect("decode");
            let is_it = matches!(decoded, ToCoordinator::Report(Report { seq: s, .. }) if s == seq);
            prop_assert!(is_it, "spooled frame {} holds another report", seq);
        }
    }
}
