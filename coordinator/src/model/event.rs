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

/// The code of an event that is a node's certificate switch, not a verdict transition: its
/// `probe` is `node:ADDR` ([`node_event_probe`]), `from` and `to` are SHA-1 thumbprints.
pub const NODE_SWITCHED: &str = "node_switched";

/// The probe column of a node's switch in the event log: `node:ADDR` (a probe name has no
/// `:`, so the two never mix).
pub fn node_event_probe(address: &str) -> String {
    format!("node:{address}")
}

/// A verdict transition, or a node's certificate switch (code [`NODE_SWITCHED`]).
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
    /// Previous verdict (none for a first result); for a node switch, the certificate it
    /// served.
    pub from: Option<String>,
    /// New verdict; for a node switch, the certificate it serves now.
    pub to: String,
    /// Finding codes of the new result.
    pub codes: Vec<String>,
}
