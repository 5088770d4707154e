//! Verdict transitions, as the store keeps them and the API lists them.

use serde::{Deserialize, Serialize};

/// Filters of `/api/v1/events`.
#[derive(Debug, Deserialize)]
pub struct EventQuery {
    /// Only events at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// Only events before this time (Unix ms).
    pub until_ms: Option<i64>,
    /// Only this check.
    pub check: Option<String>,
    /// Only this probe.
    pub probe: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Only events older than this one (its id): the next page after a full one.
    pub before_id: Option<i64>,
}

/// A verdict transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Id.
    pub id: i64,
    /// When, Unix ms.
    pub at_ms: i64,
    /// Probe.
    pub probe: String,
    /// Check.
    pub check: String,
    /// Previous verdict (none for a first result).
    pub from: Option<String>,
    /// New verdict.
    pub to: String,
    /// Finding codes of the new result.
    pub codes: Vec<String>,
}
