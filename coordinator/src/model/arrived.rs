//! A report as the coordinator keeps it once received: the summary the ledger, the fleet view,
//! the metrics and rounds read, made once from the view of its frame
//! ([`cemwatch_shared::view`]) without the text of its results, which the store keeps as the
//! bytes received.

use cemwatch_shared::view::{CheckReportView, ReportView};
use cemwatch_shared::wire::Report;

use crate::model::latest::Latest;

/// A received report, summarised.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrived {
    /// The probe's sequence number.
    pub seq: u64,
    /// The round it answers.
    pub round: Option<u64>,
    /// Its results, summarised, in the order sent.
    pub results: Vec<ArrivedResult>,
}

/// One check's result in a received report.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrivedResult {
    /// The check's name.
    pub check: String,
    /// When the probe produced it.
    pub produced_at_ms: u64,
    /// What the fleet view keeps of it (verdict, codes, certificate, nodes...). Once
    /// committed, the fleet view may have taken it ([`Latest::take`]): only its scalar facts
    /// (the TCP outcome and times the metrics read among them) are left, and a round's answer
    /// is copied instead.
    pub latest: Latest,
    /// The TLS handshake's duration, when it completed.
    pub handshake_ms: Option<f64>,
}

impl Arrived {
    /// The summary of a report read from its frame.
    pub fn of(report: &ReportView<'_>) -> Self {
        Self {
            seq: report.seq,
            round: report.round,
            results: report
                .results
                .iter()
                .map(|r| ArrivedResult::of(report.seq, report.round, r))
                .collect(),
        }
    }

    /// The summary of a report held owned (the same rule, through its view).
    pub fn of_report(report: &Report) -> Self {
        Self::of(&ReportView::from(report))
    }
}

impl ArrivedResult {
    fn of(seq: u64, round: Option<u64>, r: &CheckReportView<'_>) -> Self {
        Self {
            check: r.check.to_string(),
            produced_at_ms: r.produced_at_ms,
            latest: Latest::from_view(seq, round, r.produced_at_ms as i64, &r.result),
            handshake_ms: r.result.tls.as_ref().and_then(|t| t.completed_ms()),
        }
    }
}
